"""`GradientDiagnostics` at its default settings on architectures beyond a
stack of layers (`architectures.py`): a VAE with its own `compute_loss`, a
siamese model with a nested shared encoder, two inputs and two outputs,
stacked sigmoid RNNs, a self-attention block, a head on a frozen base.

Judged as `test_detection.py` judges `cases.py`: the healthy ones report no
training failure and the failing ones exactly their modes, in time, here
also on the right layer. Each case is confirmed here, since `cases.confirm`
trains one input on one loss: the healthy ones learn (their loss falls),
the dead layer outputs zero for every training sample of both inputs, the
first RNN's gradient is tiny next to the output layer's, the attention
block's weights turn non-finite at the step its NaN is reported, and half
the base's units output zero for every sample.
"""

import sys
from pathlib import Path

import keras
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from keras_actloss.callbacks import _model_plan  # noqa: E402
from tests.scenarios import architectures, cases  # noqa: E402

# The last epoch's mean loss over the first's, at most: each healthy case
# learns (measured on both backends: VAE 0.84-0.86, siamese 0.64,
# two-in-two-out 0.42-0.44, ReLU SimpleRNNs 0.50-0.64).
LEARNS = {
    "healthy_vae": 0.9,
    "healthy_siamese": 0.75,
    "healthy_two_in_two_out": 0.6,
    "healthy_simple_rnn": 0.75,  # 0.64 on TensorFlow, 0.50 on JAX
}


def describe(detection) -> list[tuple]:
    return [(f.mode, f.layer, f.step, s) for f, s in detection.training]


@pytest.mark.parametrize("name", sorted(LEARNS))
def test_healthy_architecture_is_silent(name):
    detection = cases.detect(architectures.BY_NAME[name])
    assert describe(detection) == []
    first, last = detection.losses[0], detection.losses[-1]
    assert np.isfinite(detection.losses).all()
    assert last <= LEARNS[name] * first


def test_dead_layer_of_a_shared_nested_encoder_is_reported_in_time():
    case = architectures.BY_NAME["dead_shared_encoder"]
    # Confirmed on the case's own build: the layer outputs exactly 0 for
    # every sample of both inputs from step 0 (so it gets no gradient).
    setup = case.build()
    hidden = setup.model.get_layer("encoder").get_layer("hidden")
    for x in setup.x:
        assert not np.any(keras.ops.convert_to_numpy(hidden(x)))
    detection = cases.detect(case)
    # Dense recording from step 0; dead units need 128 samples, 4 recorded
    # batches of 32: reported at step 4, by its path in the nested model.
    assert describe(detection) == [("dead_relu", "encoder/hidden", 0, 4)]
    scores, false = cases.score(case, detection)
    assert [s.detected for s in scores] == [True] and false == []


def test_vanishing_through_stacked_sigmoid_rnns_is_reported_in_time():
    case = architectures.BY_NAME["vanishing_rnn"]
    # Confirmed outside the callback at the initial weights: the first
    # layer's input-kernel gradient RMS is under 1e-2 of the output layer's
    # (measured: 3.6e-3 on TensorFlow, 1.3e-3 on JAX).
    rms = architectures.kernel_gradient_rms(case.build())
    assert rms[0] < 1e-2 * rms[-1]
    detection = cases.detect(case)
    # The first layer, from its first recordings: the loss gradient of an
    # uninformed model cancels at the output on some batches (step 3 on
    # TensorFlow), which neither extends nor breaks the streak.
    assert [(m, layer) for m, layer, _, _ in describe(detection)] == [
        ("vanishing_gradients", "rnn_0/simple_rnn_cell")
    ]
    scores, false = cases.score(case, detection)
    assert [s.detected for s in scores] == [True] and false == []


def test_simple_rnn_activations_are_read_from_the_rnn_outputs():
    setup = architectures.BY_NAME["healthy_simple_rnn"].build()
    plans = {p.info.name: p for p in _model_plan.plan_layers(setup.model)}
    rnn, last = setup.model.get_layer("rnn"), setup.model.get_layer("last")
    # The cell runs inside the RNN's loop: its activation is read from the
    # RNN's output sequence. Not from an RNN that returns its last step
    # only (a unit inactive there may be active before it).
    assert plans["rnn/simple_rnn_cell"].hooked is rnn
    assert plans["rnn/simple_rnn_cell"].profile.name == "relu"
    assert plans["last/simple_rnn_cell"].runner is None
    assert plans["last/simple_rnn_cell"].hooked is last.cell
    # With `return_state`, the first output (the sequence) is the one read.
    pair = [keras.ops.ones((2, 3, 4)), keras.ops.zeros((2, 4))]
    assert plans["rnn/simple_rnn_cell"].activation(pair) is pair[0]
    assert plans["out"].activation(pair) is pair  # Its own outputs, as they are.
    # An LSTM's output mixes its gates and state: not read as an activation.
    lstm = keras.Sequential(
        [keras.Input((3, 2)), keras.layers.LSTM(4, return_sequences=True)]
    )
    (plan,) = _model_plan.plan_layers(lstm)
    assert plan.runner is None


def test_dead_simple_rnn_is_reported_in_time():
    case = architectures.BY_NAME["dead_simple_rnn"]
    # Confirmed on the case's own build: the first RNN outputs exactly 0 at
    # every step of every training sample from step 0.
    setup = case.build()
    rnn, last = setup.model.get_layer("rnn"), setup.model.get_layer("last")
    assert not np.any(keras.ops.convert_to_numpy(rnn(setup.x)))
    # So does the second one, fed zeros (its bias starts at 0): it passes
    # no gradient to its weights either, and returns its last step only.
    assert not np.any(keras.ops.convert_to_numpy(last(rnn(setup.x))))
    detection = cases.detect(case)
    # Dense recording from step 0; dead units need 128 samples, 4 recorded
    # batches of 32: reported at step 4, every unit dead; the second by its
    # gradients, exactly 0 on those batches.
    assert describe(detection) == [
        ("dead_relu", "rnn/simple_rnn_cell", 0, 4),
        ("dead_relu", "last/simple_rnn_cell", 0, 4),
    ]
    assert [f.value for f, _ in detection.training] == [1.0, 1.0]
    assert "Every gradient of layer 'last/simple_rnn_cell'" in (
        detection.training[1][0].message
    )
    scores, false = cases.score(case, detection)
    assert [s.detected for s in scores] == [True] and false == []


def test_dead_rnn_that_returns_its_last_step_is_reported_by_its_gradients():
    case = architectures.BY_NAME["dead_last_step_rnn"]
    # Confirmed on the case's own build: the RNN outputs exactly 0 at every
    # step of every training sample from step 0 (its sequence, asked of the
    # same cell and weights).
    setup = case.build()
    rnn = setup.model.get_layer("rnn")
    steps = keras.layers.RNN(rnn.cell, return_sequences=True)
    assert not np.any(keras.ops.convert_to_numpy(steps(setup.x)))
    detection = cases.detect(case)
    # Its outputs are not measured: every gradient of its weights is exactly
    # 0 on the 4 recorded batches of 32 samples: reported at step 4.
    assert describe(detection) == [("dead_relu", "rnn/simple_rnn_cell", 0, 4)]
    assert detection.training[0][0].value == 1.0
    scores, false = cases.score(case, detection)
    assert [s.detected for s in scores] == [True] and false == []
    # The same model with its bias at 0 learns and is silent.
    healthy = cases.Case(
        "healthy_last_step_rnn", lambda: architectures.last_step_rnn(0.0), {}
    )
    detection = cases.detect(healthy)
    assert describe(detection) == []
    assert detection.losses[-1] <= 0.75 * detection.losses[0]


class _Finite(keras.callbacks.Callback):
    """Whether every weight is finite after each batch, in batch order."""

    def on_train_begin(self, logs=None):
        self.finite = []

    def on_train_batch_end(self, batch, logs=None):
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:
            sync()  # On JAX the weights wait in the fit's state.
        weights = [keras.ops.convert_to_numpy(w) for w in self.model.weights]
        self.finite.append(all(np.isfinite(w).all() for w in weights))


def test_exploding_attention_is_reported_before_its_nan():
    case = architectures.BY_NAME["exploding_attention"]
    # Confirmed without the callback, on the same build and batches: the
    # first update already changes the output layer by more than its own
    # norm, and some later step makes the weights non-finite.
    setup = case.build()
    out = setup.model.get_layer("out").kernel
    before = keras.ops.convert_to_numpy(out)
    finite = _Finite()
    kwargs = setup.fit_kwargs()
    setup.model.fit(setup.x[:32], setup.y[:32], **{**kwargs, "callbacks": [finite]})
    change = keras.ops.convert_to_numpy(out) - before
    assert np.linalg.norm(change) > np.linalg.norm(before)
    setup = case.build()
    setup.model.fit(setup.x, setup.y, **{**kwargs, "callbacks": [finite]})
    nan_step = finite.finite.index(False)
    detection = cases.detect(case)
    assert detection.modes == {"exploding_gradients", "non_finite"}
    scores, _ = cases.score(case, detection)
    assert [s.detected for s in scores] == [True]
    # The NaN is found at the step that made the weights non-finite, and
    # reported then; it follows the explosion, reported first.
    first_nan = detection.first("non_finite")
    assert (first_nan[0].step, first_nan[1]) == (nan_step, nan_step)
    assert detection.first("exploding_gradients")[1] < nan_step
    assert "It follows the explosion" in first_nan[0].message


@pytest.mark.parametrize("frozen", [True, False], ids=["frozen", "trained"])
def test_dead_units_of_a_frozen_base_are_not_a_training_failure(frozen):
    name = "healthy_frozen_base" if frozen else "half_dead_base"
    case = architectures.BY_NAME[name]
    setup = case.build()
    # Confirmed on the build: 32 of the base's 64 units output 0 for every
    # training sample; the other 32 are active on some.
    wide = keras.ops.convert_to_numpy(setup.model.get_layer("base")(setup.x))
    assert (wide > 0).any(axis=0).sum() == 32
    # Frozen, the base is not monitored (its units are fixed features, not
    # something training does or can undo) and the head learns; trained, its
    # dead half, inactive on the first batch already and no unit killed
    # since, is a warning: initialisation's doing, the model learning
    # through the other half (no training failure either way), told once
    # they stayed so over 32 steps, at the first recording from step 31
    # (step 33: past the first 8 steps, recordings are further apart).
    plans = [p.info.name for p in _model_plan.plan_layers(setup.model)]
    assert plans == (["head", "out"] if frozen else ["base/wide", "head", "out"])
    detection = cases.detect(case)
    assert describe(detection) == []
    found = [(f.mode, f.layer, f.severity, f.step, s) for f, s in detection.reported]
    expected = [] if frozen else [("dead_relu", "base/wide", "warning", 0, 33)]
    assert found == expected
    assert detection.losses[-1] <= 0.7 * detection.losses[0]
