"""The scenarios of `cases.py` really are what they claim, without the callback.

`cases.confirm` trains each scenario in a plain `tf.GradientTape` loop (same
seed, model, batches and learning rates as `fit`) and measures it; these tests
check, per failure scenario, that the named mode is there from the named onset
and that the other training failure modes are not, and that every healthy
control trains (its loss on the training set falls well below the initial
one) with none of them. `cases.confirm` needs TensorFlow; the zero-gradient
scenario is checked on every backend by `sgd_by_hand` (the backend's own
autodiff), since it is the one scenario that must fail the same way on
both.
"""

import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.scenarios import cases  # noqa: E402

# `cases.confirm` trains in a `tf.GradientTape` loop (`sgd_by_hand`, below,
# runs on every backend).
confirm_on_tensorflow = pytest.mark.skipif(
    cases.BACKEND != "tensorflow",
    reason=f"cases.confirm is a tf.GradientTape loop; backend={cases.BACKEND}",
)


def finite(c, steps) -> bool:
    return not any(c.non_finite[s] for s in steps)


@confirm_on_tensorflow
@pytest.mark.parametrize("name, steps", [("dead_relu", 16), ("dead_relu_batch8", 32)])
def test_dead_relu(name, steps):
    c = cases.confirm(cases.BY_NAME[name])
    # The ReLU layer outputs 0 for every unit and every training sample, from
    # step 0 to the end (16 steps; 32 on batches of 8); no gradient reaches
    # its weights.
    (relu,) = c.dead
    assert c.dead[relu] == [1.0] * steps
    assert all(c.layer_rms[relu][s] == 0.0 for s in range(len(c.losses)))
    assert finite(c, range(len(c.losses)))
    assert c.final_loss > 0.98 * c.initial_loss  # Nothing is learnt.


@confirm_on_tensorflow
def test_dead_relu_output():
    case = cases.BY_NAME["dead_relu_output"]
    c = cases.confirm(case)
    # Gradients until step 2; after its update the output is 0 for every
    # sample: every gradient exactly 0 from step 3 to the end (16 steps).
    assert all(norm > 0 for norm in c.global_norm[:3])
    assert c.global_norm[3:] == [0.0] * 13
    # Predictions of 0 everywhere: the mean squared error is the mean of
    # the squared targets, and more than at the start.
    y = case.build().y
    assert c.final_loss == pytest.approx(float(np.mean(np.square(y))), rel=1e-6)
    assert c.final_loss > c.initial_loss
    assert finite(c, range(len(c.losses)))


@confirm_on_tensorflow
def test_saturated_output_mse():
    c = cases.confirm(cases.BY_NAME["saturated_output_mse"])
    steps = range(len(c.losses))
    # No gradient exactly 0, but every global norm below 1e-9 of the loss's
    # square root
    # (sigmoid(-30) = 9.4e-14 is the output and its derivative), at every
    # step; the loss never moves: the half of the samples labelled 1 cost 1
    # each, to float32 precision.
    assert min(c.global_norm) > 0.0
    ratios = [n / np.sqrt(loss) for n, loss in zip(c.global_norm, c.losses)]
    assert max(ratios) < 1e-9
    y = cases.BY_NAME["saturated_output_mse"].build().y
    assert c.final_loss == pytest.approx(float(np.mean(y)), rel=1e-6)
    assert c.initial_loss == pytest.approx(c.final_loss, rel=1e-6)
    assert finite(c, steps)


@confirm_on_tensorflow
def test_updates_clipped_away():
    c = cases.confirm(cases.BY_NAME["updates_clipped_away"])
    steps = range(len(c.losses))
    # Every layer's gradient (before clipping) of RMS 1e-3 or more at every
    # step: nothing vanishes there. Each update changes a layer's weights by
    # under 1e-9 of their norm (SGD's 0.05 x the clipped norm 1e-8, against
    # norms of about 2-6), so the loss ends where it began (within 1e-6)
    # and no unit is dead.
    for name in c.weighted:
        assert min(c.layer_rms[name]) > 1e-3
        assert 0.0 < max(c.update_ratio[name]) < 1e-9
    assert c.final_loss == pytest.approx(c.initial_loss, rel=1e-6)
    assert max(c.max_dead(s) for s in steps) < 0.5
    assert finite(c, steps)


@confirm_on_tensorflow
def test_saturated_head_of_two():
    c = cases.confirm(cases.BY_NAME["saturated_head_of_two"])
    steps = range(len(c.losses))
    # The flag head's layers: gradients under 1e-9 of the loss's square root
    # at every step (sigmoid(-30) = 9.4e-14 is its output and its
    # derivative), and none exactly 0; Adam moves their weights by under a
    # millionth of their norm (its epsilon, 1e-7, dwarfs such a gradient).
    for name in ("flag", "flag_hidden"):
        rms = np.array(c.layer_rms[name])
        assert rms.min() > 0.0
        assert (rms / np.sqrt(c.losses)).max() < 1e-9
        assert max(c.update_ratio[name]) < 1e-6
    # The classifier head learns: gradients of order 0.01 and more, weights
    # moving by over a percent of their norm a step, and the loss falls by
    # a third of its initial level, all of it the classifier's (the flag's
    # mean squared error stays the share of samples flagged 1).
    for name in ("cls", "trunk"):
        assert min(c.layer_rms[name]) > 1e-3
        assert min(c.update_ratio[name]) > 1e-2
    flagged = float(np.mean(cases.BY_NAME["saturated_head_of_two"].build().y["flag"]))
    assert c.initial_loss - c.final_loss > 0.3 * (c.initial_loss - flagged)
    assert c.final_loss > flagged
    assert finite(c, steps)


@confirm_on_tensorflow
def test_vanishing_sigmoid():
    c = cases.confirm(cases.BY_NAME["vanishing_sigmoid"])
    steps = range(len(c.losses))
    # First layer's gradient RMS ~3e-7 of the output layer's, at every step.
    assert max(c.rms_ratio(s) for s in steps) < 1e-5
    # Not saturation: no sigmoid output of the hidden layers is near 0 or 1.
    assert max(c.max_saturated(s) for s in steps) < 0.01
    assert finite(c, steps)
    assert c.final_loss > 0.7 * c.initial_loss


@confirm_on_tensorflow
@pytest.mark.parametrize("steps", [4, 8])
def test_vanishing_sigmoid_in_executions_trains_as_without(steps):
    # The same steps as `vanishing_sigmoid`: `steps_per_execution` changes
    # only how often Keras returns to Python.
    name = f"vanishing_sigmoid_spe{steps}"
    a = cases.confirm(cases.BY_NAME["vanishing_sigmoid"])
    b = cases.confirm(cases.BY_NAME[name])
    assert b.losses == a.losses
    assert cases.BY_NAME[name].build().model.steps_per_execution == steps


@confirm_on_tensorflow
def test_dead_relu_spe8_trains_as_without():
    a = cases.confirm(cases.BY_NAME["dead_relu"])
    b = cases.confirm(cases.BY_NAME["dead_relu_spe8"])
    # The same steps (its layers get other names).
    assert b.losses == a.losses
    assert list(b.dead.values()) == list(a.dead.values())
    assert cases.BY_NAME["dead_relu_spe8"].build().model.steps_per_execution == 8


@confirm_on_tensorflow
def test_saturated_tanh():
    c = cases.confirm(cases.BY_NAME["saturated_tanh"])
    steps = range(len(c.losses))
    (tanh,) = c.saturated
    # ~97% of the hidden tanh layer's outputs are +-1 on the training set.
    assert min(c.saturated[tanh][s] for s in steps) > 0.95
    # Its gradient is ~20-60x below the output layer's: weakened by the
    # saturation, but 1e4x more than in the vanishing scenario (not vanishing).
    ratios = [c.rms_ratio(s) for s in steps]
    assert min(ratios) > 1e-3 and max(ratios) < 0.1
    # The ReLU layer after it is alive, and nothing explodes.
    assert max(c.max_dead(s) for s in steps) < 0.1
    assert max(c.global_norm) < 3 * c.global_norm[0]
    assert finite(c, steps)


@confirm_on_tensorflow
def test_saturated_elu():
    c = cases.confirm(cases.BY_NAME["saturated_elu"])
    steps = range(len(c.losses))
    first, _ = c.weighted
    # The ELU layer's gradient is at most e^-30 = 9e-14 of the output
    # layer's (its derivative at the pre-activations, all near -30; exactly
    # 0 here, see the scenario), and its weights do not move.
    ratios = [c.rms_ratio(s) for s in steps]
    assert max(ratios) < 1e-9
    assert max(c.update_ratio[first]) < 1e-6
    # The output layer gets one input for every sample (-1 from each unit):
    # the model learns the classes' frequencies at best; the loss stays
    # above 0.9 (ln 3 = 1.10 knows nothing).
    assert c.final_loss > 0.9
    assert c.final_accuracy < 0.5
    assert finite(c, steps)


@confirm_on_tensorflow
def test_saturated_tanh_stack():
    c = cases.confirm(cases.BY_NAME["saturated_tanh_stack"])
    twin = cases.confirm(cases.BY_NAME["healthy_deep_tanh"])
    steps = range(len(c.losses))
    # The seven tanh layers after the first: 70-75% of their outputs are
    # +-1 on the training set at every step (71.5-74.5%), under the
    # saturation limit (75%); Keras's default initialisation leaves none.
    hidden = list(c.saturated)[1:]
    assert len(hidden) == 7
    assert all(0.7 < c.saturated[n][s] < 0.75 for n in hidden for s in steps)
    assert max(twin.max_saturated(s) for s in range(len(twin.losses))) < 0.01
    # Their gradient RMS grows at every one of them back to the input, over
    # 20x from the last to the first of them at every step (34-135x: six
    # layers, about 2x each).
    for s in steps:
        rms = [c.layer_rms[n][s] for n in hidden]
        assert all(far > near for far, near in zip(rms, rms[1:])), (s, rms)
        assert rms[0] > 20 * rms[-1], (s, rms)
    # Not an explosion over time, nor dead units, nor NaN...
    assert max(c.global_norm) < 3 * c.global_norm[0]
    assert finite(c, steps)
    # ...but it learns far less: after the same 64 steps its loss on the
    # training set is over 10x its twin's.
    assert len(c.losses) == len(twin.losses) == 64
    assert c.final_loss > 10 * twin.final_loss
    assert c.final_accuracy < 0.8 < 0.95 < twin.final_accuracy


@confirm_on_tensorflow
def test_nan_batch():
    c = cases.confirm(cases.BY_NAME["nan_batch"])
    assert c.first_non_finite() == cases.NAN_STEP == 7
    # NaN weights from then on. Their gradients are NaN, or finite where the
    # traced step's fused MatMul+BiasAdd+ReLU maps NaN to 0 (oneDNN on some
    # CPUs): the layer then outputs 0 everywhere.
    assert all(c.weights_finite[:7]) and not any(c.weights_finite[7:])
    # Healthy until then: no growth of the gradient norm, no dead units.
    assert max(c.global_norm[:7]) < 2 * c.global_norm[0] < 4
    assert max(c.max_dead(s) for s in range(7)) == 0.0


@confirm_on_tensorflow
def test_explode_to_nan():
    c = cases.confirm(cases.BY_NAME["explode_to_nan"])
    g = c.global_norm
    # Huge from step 0 (~1.5e6), ~1e9x larger at step 1, NaN at step 2.
    assert g[0] > 1e5 and g[1] > 1e8 * g[0]
    assert c.first_non_finite() == 2
    assert math.isnan(g[2]) and not math.isfinite(c.losses[2])
    # Not dead units: every ReLU unit is active on some sample while finite.
    assert max(c.max_dead(s) for s in range(3)) == 0.0


@confirm_on_tensorflow
def test_explode_finite():
    c = cases.confirm(cases.BY_NAME["explode_finite"])
    g = np.array(c.global_norm)
    # Grows 3.4-7.1x every step from step 0, by ~5e9 over 16 steps; finite.
    growth = g[1:] / g[:-1]
    assert growth.min() > 3 and growth.max() < 8
    assert g[-1] > 1e9 * g[0]
    assert finite(c, range(16)) and math.isfinite(c.final_loss)


@confirm_on_tensorflow
def test_exploding_rnn():
    c = cases.confirm(cases.BY_NAME["exploding_rnn"])
    gru = c.weighted[0]
    # Step 0: a global norm beyond 1e4 (through 100 time steps of a
    # recurrent kernel 8x orthogonal); its SGD update changes the GRU's
    # weights by over 100x their norm; after it, updates under 1e-3.
    assert c.global_norm[0] > 1e4
    assert c.update_ratio[gru][0] > 100
    assert max(c.update_ratio[gru][1:]) < 1e-3
    # The loss stays at chance (ln 4 = 1.386) and the model learns nothing.
    assert c.final_loss > 0.95 * math.log(4)
    assert c.final_accuracy < 0.35
    assert finite(c, range(len(c.losses)))


@confirm_on_tensorflow
def test_churning_rnn_regression():
    c = cases.confirm(cases.BY_NAME["churning_rnn_regression"])
    # The same batches with targets of unit spread (the sum of 5 normals
    # over sqrt(5)).
    twin = cases.confirm(
        cases.Case("twin", lambda: cases.churning_rnn_regression(5**-0.5), {})
    )

    def median_update(conf):
        """Each step's median over the layers of its update ratio."""
        ratios = [conf.update_ratio[name] for name in conf.weighted]
        return [np.median(step) for step in zip(*ratios)]

    # Steps 0-4: each update changes the median layer's weights by more
    # than a quarter of their norm (measured 0.32-2.0); the twin's, by
    # under 0.05 at every step (0.003-0.034).
    assert min(median_update(c)[:5]) > 0.25
    assert max(median_update(twin)) < 0.05
    # The loss of knowing nothing: the targets' mean square (their mean
    # is about 0). The twin learns, ending under a fifth of it (0.15);
    # this one never falls under a quarter of it (0.33 at best) and ends
    # over half of it (0.8), all of its values finite.
    y = cases.churning_rnn_regression().y
    y_twin = cases.churning_rnn_regression(5**-0.5).y
    assert twin.final_loss < 0.2 * float(np.mean(y_twin**2))
    uninformed = float(np.mean(y**2))
    assert min(c.losses) > 0.25 * uninformed
    assert c.final_loss > 0.5 * uninformed
    assert finite(c, range(len(c.losses)))


@confirm_on_tensorflow
def test_exploding_relu_rnn():
    c = cases.confirm(cases.BY_NAME["exploding_relu_rnn"])
    # The same batches with the recurrent kernel at Keras's gain (1): its
    # loss stays near that of knowing nothing (ln 2) and falls below it.
    twin = cases.confirm(
        cases.Case("twin", lambda: cases.exploding_relu_rnn(gain=1.0), {})
    )
    uninformed = math.log(2)
    assert max(twin.losses) < 1.25 * uninformed
    assert twin.final_loss < uninformed
    # Steps 0-4: the loss over 10x that, the global norm over 1e3x the
    # twin's; it ends no better than knowing nothing.
    assert min(c.losses[:5]) > 10 * uninformed
    assert min(c.global_norm[:5]) > 1e3 * max(twin.global_norm[:5])
    assert c.final_loss > uninformed and c.final_accuracy < 0.6
    assert finite(c, range(len(c.losses)))


@confirm_on_tensorflow
def test_closed_gates_lstm():
    c = cases.confirm(cases.BY_NAME["closed_gates_lstm"])
    steps = range(len(c.losses))
    # The LSTM's gradient RMS (4e-8 to 2e-7) under 1e-4 of the output
    # layer's (its bias's error signal, 1e-3 to 3e-2) at every step.
    assert max(c.rms_ratio(s) for s in steps) < 1e-4
    assert max(c.layer_rms["lstm"]) < 1e-6
    # The loss stays at ln 2 (the prior of two balanced classes), the
    # model at chance.
    assert c.final_loss > 0.99 * math.log(2)
    assert c.final_accuracy < 0.6
    assert finite(c, steps)


@confirm_on_tensorflow
def test_bad_batch():
    c = cases.confirm(cases.BY_NAME["bad_batch"])
    step = cases.BAD_BATCH_STEP
    g, losses = np.array(c.global_norm), np.array(c.losses)
    norm_level, loss_level = np.median(g[120:step]), np.median(losses[120:step])
    # The batch's gradient 500x and more the level of the 30 steps before;
    # its update changed every layer's weights by more than their norm
    # (3.3-5.6x), the steps before and after it by under a third.
    assert g[step] > 500 * norm_level
    ratios = np.array(list(c.update_ratio.values()))
    assert ratios[:, step].min() > 3
    assert ratios[:, :step].max() < 0.3 and ratios[:, step + 1 :].max() < 1
    # The loss of each of the next 3 batches 50x its level and more, over
    # where training began; still 10x ten steps on, and the training set's
    # loss at the end over its initial one: thrown off by one step.
    assert losses[step + 1 : step + 4].min() > 50 * loss_level
    assert losses[step + 1 : step + 4].min() > c.initial_loss
    assert np.median(losses[step + 6 : step + 16]) > 10 * loss_level
    assert c.final_loss > c.initial_loss
    # Not dead units (at most 4 of a layer's 32 on the training set, under
    # half), nothing non-finite.
    assert max(c.max_dead(s) for s in range(len(losses))) <= 4 / 32
    assert finite(c, range(len(losses)))


@confirm_on_tensorflow
def test_huge_init_adam():
    c = cases.confirm(cases.BY_NAME["huge_init_adam"])
    steps = range(len(c.losses))
    uninformed = math.log(3)  # Cross-entropy of knowing nothing, 3 classes.
    # The loss of every step is over 90x that (326-782x at steps 0-4):
    # outputs extreme and wrong from the start, and they stay so.
    assert min(c.losses[:5]) > 300 * uninformed
    assert min(c.losses) > 90 * uninformed
    # Not an explosion over time: the norm stays within 2x of step 0's, and
    # no update changes a layer's weights by even 1% of their norm.
    assert max(c.global_norm) < 2 * c.global_norm[0]
    assert max(max(r) for r in c.update_ratio.values()) < 0.01
    # No dead units, nothing saturates (ReLU), nothing is NaN.
    assert max(c.max_dead(s) for s in steps) == 0.0
    assert finite(c, steps)


@confirm_on_tensorflow
def test_thrown_tanh_adam():
    c = cases.confirm(cases.BY_NAME["thrown_tanh_adam"])
    # The same model and batches at lr 1e-3: it learns.
    twin = cases.confirm(cases.Case("twin", lambda: cases.thrown_tanh_adam(1e-3), {}))
    steps = range(len(c.losses))
    # Adam's first update changes every layer's weights by over 5x their
    # norm (5.7-8.1; the twin's at most 0.01), every later one by less
    # than their norm.
    assert min(r[0] for r in c.update_ratio.values()) > 5
    assert max(max(r[1:]) for r in c.update_ratio.values()) < 1
    assert max(r[0] for r in twin.update_ratio.values()) <= 0.01
    # The loss of each of steps 1-5 is over 3x step 0's (1.14: 4.85-25.9),
    # and after 32 steps the training set's loss is over twice its first
    # (2.98 against 1.29) while the twin's fell under half (0.55).
    assert min(c.losses[1:6]) > 3 * c.losses[0]
    assert c.final_loss > 2 * c.initial_loss
    assert twin.final_loss < 0.5 * twin.initial_loss
    # From step 1 on, most of a hidden layer's outputs sit in the flat
    # tails (77-96% of the second's), almost none at step 0 (0.006%) nor
    # in the twin.
    assert c.max_saturated(0) < 1e-3
    assert min(c.max_saturated(s) for s in steps[1:]) > 0.75
    assert max(twin.max_saturated(s) for s in steps) < 1e-3
    assert finite(c, steps)


def _one_hot_share(setup) -> float:
    """The share of the queries of the case's attention layer whose largest
    weight is at least 0.99, from Keras's own softmax
    (`return_attention_scores`), on the whole training set."""
    attention = setup.model.get_layer("attention")
    _, scores = attention(setup.x, setup.x, return_attention_scores=True)
    return float(np.mean(np.max(np.asarray(scores), axis=-1) >= 0.99))


@confirm_on_tensorflow
def test_saturated_attention():
    case = cases.BY_NAME["saturated_attention"]
    twin = cases.BY_NAME["healthy_attention_routing"]
    # At the initial weights over 3/4 of the queries are one-hot (0.91);
    # with Keras's kernels none is.
    assert _one_hot_share(case.build()) > 0.75
    assert _one_hot_share(twin.build()) == 0.0
    c, t = cases.confirm(case), cases.confirm(twin)
    # The twin learns to look at token 0 (loss 0.82 to 0.02); with the
    # one-hot attention the loss stays near chance (ln 2 = 0.693 for two
    # balanced classes; 0.64 after 128 steps).
    assert t.final_loss < 0.1
    assert c.final_loss > 0.85 * math.log(2)
    assert c.final_accuracy < 0.7
    assert finite(c, range(len(c.losses)))


@confirm_on_tensorflow
def test_attention_adam_high():
    c = cases.confirm(cases.BY_NAME["attention_adam_high"])
    # The same model and batches at lr 1e-3: it learns.
    twin = cases.confirm(
        cases.Case("twin", lambda: cases.attention_adam_high(1e-3), {})
    )
    uninformed = math.log(4)  # Cross-entropy of knowing nothing, 4 classes.
    # Adam's first update changes every layer's weights by a tenth of their
    # norm or more (0.14-0.70; the twin's at most 0.01), and the next loss
    # is over 5x the first.
    assert min(r[0] for r in c.update_ratio.values()) > 0.1
    assert max(r[0] for r in twin.update_ratio.values()) <= 0.01
    assert c.losses[1] > 5 * c.losses[0]
    # Steps 1-3: the median layer's update 0.32, 0.25 and 0.18 of its
    # weights (over 0.15), the loss 7.1x, 3.0x and 2.0x the first step's
    # (over 1.5x): steps far too large, exploding gradients from step 0.
    for step in (1, 2, 3):
        assert np.median([r[step] for r in c.update_ratio.values()]) > 0.15
        assert c.losses[step] > 1.5 * c.losses[0]
    # From step 5 the first block's gradients (and the embedding's) are at
    # most 1e-2 of their level in the first 3 steps (median over the steps
    # left), the output layer's not: the lower layers stopped learning.
    steps = slice(5, None)

    def fallen(result, name):
        rms = result.layer_rms[name]
        return float(np.median(rms[steps])) / max(rms[:3])

    first = [n for n in c.weighted if n == "embed" or n.startswith("block_1")]
    assert len(first) == 6
    assert max(fallen(c, n) for n in first) <= 1e-2
    assert fallen(c, "out") > 5e-2
    assert min(fallen(twin, n) for n in twin.weighted) > 0.1
    # The loss is back at chance and stays there; the twin's falls.
    assert 0.9 < np.median(c.losses[steps]) / uninformed < 1.2
    assert c.final_accuracy < 0.4 and twin.final_accuracy > 0.55
    assert twin.final_loss < 0.75 * uninformed
    # Not dead units (at most 48% of a layer) nor NaN.
    assert max(c.max_dead(s) for s in range(len(c.losses))) < 0.5
    assert finite(c, range(len(c.losses)))


@confirm_on_tensorflow
def test_lr_jump():
    case = cases.BY_NAME["lr_jump"]
    c = cases.confirm(case)
    g = np.array(c.global_norm)
    dead = [c.max_dead(s) for s in range(250)]
    assert c.learning_rate[149] == pytest.approx(0.05)
    assert c.learning_rate[150] == pytest.approx(50.0)
    # Healthy before the jump: loss halved, norms ~1, no dead unit.
    assert np.mean(c.losses[125:150]) < 0.5 * np.mean(c.losses[:25])
    assert g[:151].max() < 2 and max(dead[:151]) == 0.0
    # Explosion: each of steps 151-154 has a ~1e3-1e10x larger norm (~1e21).
    assert all(g[s] > 100 * g[s - 1] for s in range(151, 155))
    assert g[154] > 1e20
    # Its square overflows float32, though every gradient element is finite.
    assert g[154] ** 2 > np.finfo("float32").max
    # The second ReLU layer dies: >= 50% dead from step 152, all from 155.
    assert dead[151] < 0.5 <= dead[152]
    assert dead[155:] == [1.0] * 95
    # Afterwards the norm is back to ~1 (only the output bias learns), the
    # loss stays ~10x its value at the jump, and nothing is NaN.
    assert g[155:].max() < 2
    assert np.mean(c.losses[200:]) > 10 * c.losses[150]
    assert finite(c, range(250))


@confirm_on_tensorflow
def test_lr_jump_adam_bn():
    c = cases.confirm(cases.BY_NAME["lr_jump_adam_bn"])
    ratios = np.array(list(c.update_ratio.values()))  # [layers, steps]
    level = np.mean(c.losses[140:150])
    assert c.learning_rate[149] == pytest.approx(1e-3)
    assert c.learning_rate[150] == pytest.approx(1.0)
    # Healthy before the jump: the loss fell, updates under 2% of the weights.
    assert level < 0.9 * c.initial_loss and ratios[:, :150].max() < 0.02
    # Step 150 moves two layers by more than their weights' norm, and the
    # next steps' median update is still over 10% of the weights ...
    assert (ratios[:, 150] > 1).sum() >= 2
    assert np.median(ratios[:, 151:156], axis=0).min() > 0.1
    # ... while the loss is over 3x its level only at steps 151-152, the
    # norm under 3x its level: neither the norm rule nor the loss rule sees it.
    assert [s for s in range(150, 175) if c.losses[s] > 3 * level] == [151, 152]
    assert max(c.global_norm[150:175]) < 3 * np.mean(c.global_norm[140:150])
    # Nothing learnt is kept: the loss ends above where training began.
    assert c.final_loss > c.initial_loss
    assert finite(c, range(175))


@confirm_on_tensorflow
def test_lr_jump_adam_bn_spe4_trains_as_without():
    a = cases.confirm(cases.BY_NAME["lr_jump_adam_bn"])
    b = cases.confirm(cases.BY_NAME["lr_jump_adam_bn_spe4"])
    # The same steps (the scheduler sets the rate at the epoch's start,
    # where an execution starts: 25 steps an epoch, 4 an execution).
    assert b.losses == a.losses
    assert b.learning_rate == a.learning_rate
    name = "lr_jump_adam_bn_spe4"
    assert cases.BY_NAME[name].build().model.steps_per_execution == 4


@confirm_on_tensorflow
def test_layer_dies_late():
    c = cases.confirm(cases.BY_NAME["layer_dies_late"])
    g = np.array(c.global_norm)
    at = cases.DIE_STEP  # 500 of 640
    first, second, last = c.dead  # The three ReLU layers, in order.
    # Healthy until then: loss < 5% of its start, under 10% dead units.
    assert np.mean(c.losses[at - 10 : at]) < 0.05 * c.initial_loss
    assert max(c.max_dead(s) for s in range(at)) < 0.1
    # From the step on, the last ReLU layer is dead on every training
    # sample to the end, and no layer before it gets a gradient.
    assert c.dead[last][at:] == [1.0] * (640 - at)
    for name in (first, second, last):
        assert c.layer_rms[name][at:] == [0.0] * (640 - at)
    assert max(c.dead[first][at:] + c.dead[second][at:]) < 0.1
    # The global norm stays level: within 10x of every norm of the 32 steps
    # before, and not 10x below their median (no jump), the output layer
    # still learning; the loss goes back to its start.
    before = g[at - 32 : at]
    assert g[at : at + 10].max() < 10 * before.max()
    assert g[at : at + 10].min() > np.median(before) / 10
    assert np.mean(c.losses[at:]) > 0.9 * c.initial_loss
    assert finite(c, range(640))


@confirm_on_tensorflow
def test_units_die_late():
    c = cases.confirm(cases.BY_NAME["units_die_late"])
    g = np.array(c.global_norm)
    at = cases.DIE_STEP
    first, second, last = c.dead
    assert max(c.max_dead(s) for s in range(at)) < 0.1
    # From the step on, 40 of the last ReLU layer's 64 units (and the few
    # already dead) are dead on every training sample to the end; every
    # layer still gets a gradient.
    assert min(c.dead[last][at:]) >= cases.SILENCED_UNITS / 64
    for name in c.layer_rms:
        assert min(c.layer_rms[name][at:]) > 0
    assert max(c.dead[first][at:] + c.dead[second][at:]) < 0.1
    # The global norm stays level (no jump of 10x either way), and the
    # model still learns: the loss ends within 2x of its level before.
    before = g[at - 32 : at]
    assert g[at : at + 10].max() < 10 * before.max()
    assert g[at : at + 10].min() > np.median(before) / 10
    assert c.final_loss < 2 * np.mean(c.losses[at - 10 : at]) + 0.01
    assert finite(c, range(640))


@confirm_on_tensorflow
def test_units_die_gradually():
    c = cases.confirm(cases.BY_NAME["units_die_gradually"])
    g = np.array(c.global_norm)
    at, half = cases.DIE_STEP, cases.HALF_SILENCED_STEP
    first, second, last = c.dead
    assert max(c.max_dead(s) for s in range(at)) < 0.1
    # The last ReLU layer's dead units (on the whole training set) rise a
    # few at a time: never more than 3 more than the step before; under
    # half of its 64 units until step 560, at least half from then on.
    dead = np.round(np.array(c.dead[last]) * 64)
    assert np.diff(dead).max() <= 3
    assert dead[:half].max() < 32 <= dead[half:].min()
    assert dead[-1] >= cases.SILENCED_UNITS
    for name in c.layer_rms:
        assert min(c.layer_rms[name][at:]) > 0
    assert max(c.dead[first][at:] + c.dead[second][at:]) < 0.1
    # The global norm stays level (no jump of 10x either way).
    before = g[at - 32 : at]
    assert g[at:].max() < 10 * before.max()
    assert g[at:].min() > np.median(before) / 10
    assert finite(c, range(640))


@confirm_on_tensorflow
@pytest.mark.parametrize("case", cases.HEALTHY, ids=lambda case: case.name)
def test_healthy_control_trains(case):
    c = cases.confirm(case)
    steps = range(len(c.losses))
    assert finite(c, steps)
    initial = c.initial_loss
    if case.name == "healthy_normalized_head":
        # At their initial moving statistics its batch normalizations leave
        # the wide layer's outputs as small as they come, so the whole set's
        # initial loss (inference) is near ln 2 (0.86): judged against the
        # first batch's in training (9.4), which the outputs start from.
        initial = c.losses[0]
    if case.loss_floor is None:
        assert c.final_loss < 0.3 * initial
    else:
        # Noisy targets: the loss falls to near their noise's floor (3.1 for
        # `healthy_noisier_later`, whose first loss is 4.8).
        assert c.final_loss < min(1.1 * case.loss_floor, initial)
    if case.name == "healthy_new_task_stream":
        # Two tasks taking turns in an unshuffled stream, each batch of one
        # undoing some of the other: 0.78 of the set right after 8 epochs
        # (0.54 after the first; 0.88 after 16).
        assert c.final_accuracy > 0.75
    elif c.final_accuracy is not None:
        assert c.final_accuracy > 0.9
    # None of the failure mechanisms: no layer has >= 50% dead units, the
    # first layer's gradient is within 100x of the last's, and the gradient
    # norm grows less than 10x over its first steps' (recurrent nets: ~4-6x
    # as they start to fit).
    assert max(c.max_dead(s) for s in steps) < 0.5
    if case.name == "healthy_small_embedding":
        # Its first layer is a table of 1000 rows: a batch's gradient reaches
        # only the rows of its 320 tokens, each through a mean over 10
        # positions, so the table's RMS is about 4e-3 of the output layer's
        # at its lowest: a lookup's sparsity, not depth.
        assert min(c.rms_ratio(s) for s in steps) > 1e-3
    else:
        assert min(c.rms_ratio(s) for s in steps) > 1e-2
    if case.name == "healthy_new_task_stream":
        # What it is for: the first batch of the new task (step 16) takes
        # the norm 100x over the fitted task's, and no step after it grows
        # 10x over it (new data, no explosion).
        norms = np.asarray(c.global_norm)
        assert norms[16] > 100 * norms[:16].max()
        assert norms[17:].max() < 10 * norms[16]
    else:
        assert max(c.global_norm) < 10 * max(c.global_norm[:8])
    saturated = max(c.max_saturated(s) for s in steps)
    if case.name == "healthy_unstandardized_tanh":
        # Raw features put about half the tanh outputs at +-1, yet it trains.
        assert 0.3 < saturated < 0.7
    else:
        assert saturated < 0.05


def sgd_by_hand(case):
    """Trains `case` (plain SGD, no momentum) by hand on the backend's own
    autodiff (`tf.GradientTape` or `jax.value_and_grad`), with the compiled
    loss function, the same batches and learning rates: per step the
    global gradient norm (float64) and the loss, and the model's
    probabilities on the training set at the end. Runs on both backends
    (`cases.confirm` is TensorFlow only)."""
    import keras

    setup = case.build()
    model, bs = setup.model, setup.batch_size
    loss_fn = keras.losses.get(model.loss)
    variables = model.trainable_variables
    norms, losses = [], []
    for epoch in range(setup.epochs):
        lr = setup.schedule(epoch)
        for start in range(0, len(setup.x), bs):
            xb, yb = setup.x[start : start + bs], setup.y[start : start + bs]
            loss, grads = _loss_and_grads(model, loss_fn, xb, yb)
            grads = [np.asarray(g, dtype="float64") for g in grads]
            norms.append(math.sqrt(sum(float(np.sum(g * g)) for g in grads)))
            losses.append(float(loss))
            for v, g in zip(variables, grads):
                v.assign(np.asarray(v.numpy()) - lr * g.astype("float32"))
    return norms, losses, np.asarray(model.predict(setup.x, verbose=0))


def _loss_and_grads(model, loss_fn, xb, yb):
    from keras import ops

    from tests.backend_support import BACKEND

    if BACKEND == "jax":
        import jax

        non_trainable = [v.value for v in model.non_trainable_variables]

        def loss(trainable):
            y_pred, _ = model.stateless_call(
                trainable, non_trainable, xb, training=True
            )
            return ops.mean(loss_fn(yb, y_pred))

        trainable = [v.value for v in model.trainable_variables]
        return jax.value_and_grad(loss)(trainable)
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = ops.mean(loss_fn(yb, model(xb, training=True)))
    return loss, tape.gradient(loss, model.trainable_variables)


def test_zero_gradients():
    # Both backends: the averaged softmax heads are no softmax op whose
    # logits the loss could take, so it clips the probabilities.
    norms, losses, probs = sgd_by_hand(cases.BY_NAME["zero_gradients"])
    # Learning at lr 0.05 (steps 0-15) and at the step 16 of lr 50 itself.
    assert min(norms[:17]) > 0.1 and max(losses[:17]) < 1.5
    # From step 17 to the end (48 steps) every gradient is exactly 0, and
    # the loss stays high (~9-14, -log(1e-7) = 16 on a wrong sample).
    assert norms[17:] == [0.0] * 31
    assert min(losses[17:]) > 5
    # Every averaged probability is in the clipped tails [0, 1e-7] or
    # [1 - 1e-7, 1], where the clip has no gradient.
    eps = 1e-7
    assert np.all((probs <= eps) | (probs >= 1 - eps))
