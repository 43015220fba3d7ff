"""Tests for `start_rules`: a classifier's outputs extreme from the first step.

Step sequences are built by hand; the numbers of `HUGE` are those of
`tests/scenarios/cases.py`'s `huge_init_adam` on TensorFlow (`cases.confirm`,
a plain `tf.GradientTape` loop), and each expected value is computed in the
comment beside it.
"""

import math

import keras
import pytest

from keras_actloss import findings as F
from keras_actloss.callbacks._model_plan import plan_layers
from keras_actloss.diagnostics.records import LayerInfo, LayerStats, StepStats
from keras_actloss.diagnostics.rule_support import FIXES
from keras_actloss.diagnostics.rules import HealthRules, SentinelEvent
from keras_actloss.diagnostics.start_rules import (
    _BIAS_FIX,
    _INIT_FIX,
    _TANH_BIAS_FIX,
    normalized_head,
)

LN3 = math.log(3)
UNINFORMED = (LN3, "cross-entropy over 3 classes")
# (global norm, loss) of steps 0-4 of four ReLU layers with kernels of
# stddev 1 under Adam: the loss 326-782x ln(3).
HUGE = [(1690.0, 602.0), (1200.0, 358.4), (2630.0, 858.6), (2600.0, 831.6)]
HUGE.append((2890.0, 740.4))


def rules_for(uninformed=UNINFORMED, layers=None):
    layers = layers or [
        LayerInfo("dense_0", "Dense", "relu", True, 0),
        LayerInfo("dense_1", "Dense", "softmax", True, 1),
    ]
    rules = HealthRules(layers)
    rules.uninformed_loss = uninformed
    return rules


def steps(rules, pairs, start=0):
    """`observe_step` over (norm, loss) pairs; (finding, step) in order."""
    found = []
    for i, (norm, loss) in enumerate(pairs):
        event = SentinelEvent(start + i, norm, False, None, 1e-3, loss)
        found += [(f, start + i) for f in rules.observe_step(event)]
    return found


class TestExtremeStart:
    def test_reported_at_the_fifth_step(self):
        rules = rules_for()
        assert steps(rules, HUGE[:4]) == []
        ((finding, reported),) = steps(rules, HUGE[4:], start=4)
        assert (finding.mode, finding.layer, finding.step, reported) == (
            F.EXPLODING_GRADIENTS,
            None,
            0,
            4,
        )
        assert finding.severity == F.FAILURE
        assert finding.fix == _INIT_FIX
        # The median loss 740.4 over ln(3) = 673.9; the least, 358.4, is
        # 326.2x it.
        assert finding.value == pytest.approx(740.4 / LN3)
        assert f"{358.4 / LN3:.3g}" == "326"
        assert finding.message == (
            "The loss of 5 steps from the start (steps 0-4) was 358-859, at least "
            "326x that of a prediction that knows nothing (1.1: cross-entropy "
            "over 3 classes), with the global gradient norm at 1.2e+03-2.89e+03: "
            "the outputs are extreme and wrong from the start, the signal blown "
            "up through the layers by initial weights far too large, and the "
            "model barely moves off them."
        )

    @pytest.mark.parametrize("loss, reported", [(3.0, False), (3.6, True)])
    def test_under_a_focal_loss_extreme_is_the_cross_entropys(self, loss, reported):
        # Binary focal loss, gamma 2: 0.5^2 ln 2 = 0.173 at probability 0.5,
        # which keeps `uninformed_focus` 0.25 of its cross-entropy, while a
        # confidently wrong answer keeps nearly all of it. Extreme from
        # 5 x 0.173 / 0.25 = 3.47 (5 ln 2, binary cross-entropy's): a start
        # of 3.0 (17x the focal level, outputs about 3 logits off) is not.
        rules = rules_for(uninformed=(0.25 * math.log(2), "binary focal loss"))
        rules.uninformed_focus = 0.25
        found = steps(rules, [(1.0, loss)] * 5)
        assert [(f.mode, s) for f, s in found] == (
            [(F.EXPLODING_GRADIENTS, 4)] if reported else []
        )
        assert 5 * math.log(2) == pytest.approx(3.466, abs=1e-3)

    def test_an_output_bias_that_saturates_it_is_named(self):
        # The output layer's own bias saturates its softmax (set by the
        # callback, `output_bias`; probed: a sigmoid output with bias -30
        # was told "initial weights far too large" and to clip gradients):
        # `saturated_activations` of that layer, with the bias fix.
        rules = rules_for()
        rules.output_bias = ("dense_1", "softmax", -30.0)
        ((finding, reported),) = steps(rules, HUGE)
        assert (finding.mode, finding.layer, finding.step, reported) == (
            F.SATURATED_ACTIVATIONS,
            "dense_1",
            0,
            4,
        )
        assert finding.severity == F.FAILURE
        assert finding.fix.startswith("Initialise the output layer's bias at 0")
        assert finding.value == pytest.approx(740.4 / LN3)
        assert finding.message.endswith(
            "over 3 classes), with the global gradient norm at 1.2e+03-2.89e+03: "
            "the biases of the output layer 'dense_1' (30 apart between "
            "classes) set its softmax in the flat tail for every sample from "
            "the start: its outputs are extreme and wrong, and the model "
            "barely moves off them."
        )

    @pytest.mark.parametrize(
        "activation, bias, setting, fix",
        [
            (
                "tanh",
                -30.0,
                "the bias of the output layer 'out' (-30) sets its tanh",
                _TANH_BIAS_FIX,
            ),
            (
                "sigmoid",
                -30.0,
                "the bias of the output layer 'out' (-30) sets its sigmoid",
                _BIAS_FIX,
            ),
        ],
    )
    def test_zero_gradients_from_an_output_bias_name_it(
        self, activation, bias, setting, fix
    ):
        # Probed: a tanh output with bias -30 under hinge, a sigmoid one
        # under MSE (losses with no loss of knowing nothing here): every
        # gradient 0 from step 0, told as vanishing gradients of no layer
        # with the generic fix. The output's own bias is the cause, whatever
        # the loss: named (the gradients vanish, all of them) at the fifth
        # step, with the bias fix.
        rules = rules_for(
            uninformed=None,
            layers=[
                LayerInfo("dense_0", "Dense", "relu", True, 0),
                LayerInfo("out", "Dense", activation, True, 1),
            ],
        )
        rules.output_bias = ("out", activation, bias)
        found = steps(rules, [(0.0, 1.0)] * 8)
        assert [(f.mode, f.layer, f.step, s) for f, s in found] == [
            (F.VANISHING_GRADIENTS, None, 0, 4)
        ]
        assert found[0][0].message.endswith(
            "This was so from the first step, before any update: "
            f"{setting} in the flat tail for every sample, where it passes no "
            "gradient."
        )
        assert found[0][0].fix == fix

    def test_zero_gradients_later_are_not_the_output_bias(self):
        # The same bias, but gradients until step 3: the zero gradients from
        # step 4 are not the start's (the bias was learnt around, or the
        # steps threw the output there): told as they are.
        rules = rules_for(uninformed=None)
        rules.output_bias = ("dense_1", "softmax", -30.0)
        found = steps(rules, [(1.0, 1.0)] * 4 + [(0.0, 1.0)] * 6)
        assert [(f.mode, f.layer, f.step, s) for f, s in found] == [
            (F.VANISHING_GRADIENTS, None, 4, 8)
        ]
        assert "bias" not in found[0][0].message
        assert found[0][0].fix != _BIAS_FIX

    @pytest.mark.parametrize(
        "loss, found",
        # 5 * ln(3) = 5.493: the limit, at each of the first 5 steps.
        [(5.49, False), (5.50, True)],
    )
    def test_limit(self, loss, found):
        rules = rules_for()
        pairs = [(1.0, 100.0)] * 4 + [(1.0, loss)]
        assert bool(steps(rules, pairs)) == found

    @pytest.mark.parametrize(
        "gain, sums, found",
        [
            # `huge_init_adam`'s kernels: 8x He's scale in three 64-wide
            # layers (1/sqrt(2/64) = 5.66) and the output, 508 in all.
            ((508.0, "dense_0"), 0, True),
            # A classifier fitted to a loss of 1e-3, fed a new task:
            # kernels at 1.0-1.3x He's, 1.34 in all (probed).
            ((1.34, "dense_1"), 0, False),
            ((9.9, "dense_1"), 0, False),  # Under `_BLOWN_UP_GAIN` (10).
            ((10.0, "dense_1"), 0, True),
            # Four residual sums with no normalization blow the signal up
            # at Keras's scale too.
            ((1.0, "dense_1"), 4, True),
        ],
    )
    def test_the_weights_must_be_able_to_blow_the_signal_up(self, gain, sums, found):
        rules = rules_for()
        rules.weight_gain = gain
        rules.residual_sums = sums
        reported = steps(rules, HUGE)
        assert [f.mode for f, _ in reported] == (
            [F.EXPLODING_GRADIENTS] if found else []
        )
        if found and sums == 0:
            assert reported[0][0].message.endswith(
                "initial weights far too large (their scale over He's, which "
                "keeps a ReLU layer's signal at its inputs', multiplies to "
                f"{gain[0]:.3g} over the layers, the most in layer "
                f"'{gain[1]}'), and the model barely moves off them."
            )

    def test_a_recurrent_kernel_is_named_with_its_fix(self):
        # Round 15 R1: a ReLU SimpleRNN whose recurrent kernel (1.41x He's,
        # orthogonal gain 2) compounds over 30 time steps: 3.28e4 in all
        # (`weight_gain`), the loss 103-300x knowing nothing at steps 0-4.
        rules = rules_for(
            layers=[
                LayerInfo("rnn/simple_rnn_cell", "SimpleRNNCell", "relu", True, 0),
                LayerInfo("out", "Dense", "softmax", True, 1),
            ]
        )
        rules.weight_gain = (3.28e4, "rnn/simple_rnn_cell")
        (found, step), *others = steps(rules, HUGE)
        assert (found.mode, step, others) == (F.EXPLODING_GRADIENTS, 4, [])
        assert found.message.endswith(
            "initial weights far too large (their scale over He's, which keeps a "
            "ReLU layer's signal at its inputs', multiplies to 3.28e+04 over the "
            "layers, the most in the recurrent layer 'rnn/simple_rnn_cell', whose "
            "recurrent kernel multiplies the signal at each of its time steps), "
            "and the model barely moves off them."
        )
        assert found.fix == _INIT_FIX

    @pytest.mark.parametrize(
        "gain, losses, told",
        [
            # Other draws of the same RNN's data (`cases.reseed`, shifts 1
            # and 4), both backends: the losses of steps 0-4 (1.5-5.5x ln 2,
            # at step 4 of the second 1.49x), the norm 82-396; over ln 2
            # still after 128 steps. Their medians 1.32 and 1.65.
            (3.28e4, [1.73, 1.57, 1.17, 1.32, 1.19], True),
            (3.28e4, [3.77, 3.82, 1.65, 1.50, 1.03], True),
            # Shift 11 (TensorFlow): the median 0.777, 1.12x ln 2 (0.693).
            (3.28e4, [0.777, 1.065, 0.771, 0.831, 0.771], True),
            (1e3, [0.763] * 5, True),  # At `_HUGE_GAIN`, 1.1x ln 2 = 0.7625.
            (999.0, [1.73, 1.57, 1.17, 1.32, 1.19], False),  # 5x needed.
            # The median 0.75, 1.08x ln 2: about where a fresh model starts.
            (3.28e4, [1.73, 0.7, 0.75, 0.72, 1.19], False),
        ],
    )
    def test_a_huge_gain_is_told_from_a_lower_start(self, gain, losses, told):
        rules = rules_for(
            (math.log(2), "cross-entropy over 2 classes"),
            layers=[
                LayerInfo("rnn/simple_rnn_cell", "SimpleRNNCell", "relu", True, 0),
                LayerInfo("out", "Dense", "softmax", True, 1),
            ],
        )
        rules.weight_gain = (gain, "rnn/simple_rnn_cell")
        norms = [161.0, 134.0, 85.6, 82.1, 89.2]
        found = steps(rules, list(zip(norms, losses)))
        assert [(f.mode, f.step, s) for f, s in found] == (
            [(F.EXPLODING_GRADIENTS, 0, 4)] if told else []
        )
        if told and losses[0] == 1.73:
            # Not "extreme" under 5x.
            assert found[0][0].message.startswith(
                "The loss of 5 steps from the start (steps 0-4) was 1.17-1.73, "
                "at least 1.69x that of a prediction that knows nothing (0.693: "
                "cross-entropy over 2 classes), with the global gradient norm at "
                "82.1-161: the outputs are wrong from the start, the signal "
                "blown up through the layers by initial weights far too large"
            )

    def test_a_fresh_classifier_is_not(self):
        # About ln(3) at the start, as Keras's default initialisation gives.
        rules = rules_for()
        assert steps(rules, [(1.0, 1.1)] * 20) == []

    def test_only_the_first_steps(self):
        # Extreme from step 5 on (a learning-rate jump): other rules' case.
        rules = rules_for()
        assert steps(rules, [(1.0, 1.1)] * 5 + [(1.0, 600.0)] * 5) == []

    def test_not_without_an_uninformed_level(self):
        # A regression loss, or several outputs: the callback sets None.
        rules = rules_for(None)
        assert steps(rules, HUGE) == []

    def test_non_finite_losses_are_not_counted(self):
        rules = rules_for()
        pairs = [*HUGE[:4], (2890.0, math.inf)]
        found = steps(rules, pairs)
        assert F.EXPLODING_GRADIENTS not in {f.mode for f, _ in found}

    def test_unstandardized_inputs_are_named(self):
        # A recording with inputs of scale 255 (> input_scale 2) before step
        # 4: the inputs are the cause, a warning (such models still learn
        # under Adam on TensorFlow: a CNN on raw pixels, 0.99 accuracy).
        rules = rules_for()
        found = steps(rules, HUGE[:4])
        stats = StepStats(
            step=3,
            global_norm=2600.0,
            loss=831.6,
            layers=[LayerStats("dense_0", grad_rms=1.0, grad_max=4.0)],
            input_scale=255.0,
        )
        found += [(f, 3) for f in rules.observe(stats)]
        found += steps(rules, HUGE[4:], start=4)
        ((finding, reported),) = found
        assert (finding.mode, finding.severity, finding.step, reported) == (
            F.UNSTANDARDIZED_INPUTS,
            F.WARNING,
            0,
            4,
        )
        assert finding.value == 255.0
        assert finding.fix == FIXES[F.UNSTANDARDIZED_INPUTS]
        assert finding.message.endswith(
            "and the inputs are not standardized (a feature's mean or spread "
            "is 255, against about 1): large inputs make the outputs extreme "
            "and wrong from the start."
        )


class TestZeroGradientsAfterAnExtremeStart:
    # Keras's JAX cross-entropy clips the probabilities: the saturated
    # outputs give every gradient exactly 0 (measured on `huge_init_adam`:
    # the loss 10.6-11.2, 9.7x ln(3)).

    def test_not_reported_again(self):
        rules = rules_for()
        found = steps(rules, [(0.0, 10.6)] * 12)
        assert [(f.mode, f.step, s) for f, s in found] == [
            (F.EXPLODING_GRADIENTS, 0, 4)
        ]
        assert "every gradient exactly 0 (a saturated output whose " in (
            found[0][0].message
        )

    def test_told_as_zero_gradients_where_the_start_is_not(self):
        # Kernels at about He's scale (1.34 in all): the extreme start is
        # not told (a fitted model meeting new data), so the zero gradients
        # are, from step 0, at the fifth step. Probed (JAX): a ReLU
        # SimpleRNN whose recurrent kernel's gain 1.6 blows its signal up
        # over 60 time steps, the loss 6-9x ln(2) and every gradient 0 for
        # 128 steps, was told nothing: the start's loss level, set though
        # not told, silenced them.
        rules = rules_for()
        rules.weight_gain = (1.34, "dense_1")
        found = steps(rules, [(0.0, 10.6)] * 12)
        assert [(f.mode, f.step, s) for f, s in found] == [
            (F.VANISHING_GRADIENTS, 0, 4)
        ]
        assert found[0][0].message.endswith(
            "This was so from the first step, before any update: the model as "
            "initialised passes no gradient (an output saturated by large "
            "initial weights, a large output bias or unscaled inputs, or a loss "
            "that is not differentiable in the predictions, such as one that "
            "rounds them)."
        )

    def test_reported_once_the_loss_is_below_the_extreme(self):
        # Zero gradients later at a loss of 3 (2.7x ln(3), under 5x): not the
        # extreme start's; 5 in a row (steps 10-14) are reported.
        rules = rules_for()
        pairs = HUGE + [(1.0, 3.0)] * 5 + [(0.0, 3.0)] * 5
        found = steps(rules, pairs)
        assert [(f.mode, f.step, s) for f, s in found] == [
            (F.EXPLODING_GRADIENTS, 0, 4),
            (F.VANISHING_GRADIENTS, 10, 14),
        ]


LN2 = math.log(2)
# (global norm, loss) of steps 0-8 of a ReLU SimpleRNN whose recurrent
# kernel's gain 1.6 blows its signal up over 60 time steps, under Adam on
# TensorFlow (probed): the loss 28.4 (41x ln 2) at step 0, the norm down
# 158x to 12.9 by step 7, the losses of steps 5-7 still over ln 2.
DAMPED = [
    (2030.0, 28.4),
    (382.0, 7.01),
    (317.0, 6.28),
    (195.0, 1.78),
    (38.6, 0.773),
    (40.7, 1.43),
    (41.9, 1.19),
    (12.9, 0.977),
    (16.0, 0.757),
]
RNN_LAYERS = [
    LayerInfo("rnn", "SimpleRNN", "relu", True, 0, 1),
    LayerInfo("out", "Dense", "softmax", True, 1, 0),
]


def recorded(rules, pairs, input_scale=None):
    """`observe` of a recording at every step (norm, loss), the first layer's
    gradient RMS 10x the second's: the exploding findings, (finding, step)."""
    found = []
    for step, (norm, loss) in enumerate(pairs):
        layers = [
            LayerStats(info.name, grad_rms=norm / (10 * i + 1), grad_max=norm)
            for i, info in enumerate(rules.layers)
        ]
        stats = StepStats(
            step=step,
            global_norm=norm,
            loss=loss,
            learning_rate=1e-3,
            layers=layers,
            input_scale=input_scale,
        )
        found += [
            (f, step) for f in rules.observe(stats) if f.mode == F.EXPLODING_GRADIENTS
        ]
    return found


class TestDampedStart:
    def test_a_recurrent_layer_blown_up_from_the_start(self):
        rules = rules_for((LN2, "cross-entropy over 2 classes"), RNN_LAYERS)
        ((finding, reported),) = recorded(rules, DAMPED)
        assert (finding.layer, finding.step, reported) == ("rnn", 0, 7)
        assert finding.severity == F.FAILURE
        assert finding.value == pytest.approx(28.4 / LN2)
        # 2030 / 12.9 = 157.4; the losses of steps 5-7 0.977-1.43.
        assert finding.message == (
            "The loss of step 0 was 28.4, 41x that of a prediction that knows "
            "nothing (0.693: cross-entropy over 2 classes), with the global "
            "gradient norm at 2.03e+03; by step 7 the norm fell 157x to 12.9, "
            "yet the loss of the last 3 steps (0.977-1.43) is no lower than "
            "knowing nothing: the initial weights blew the signal up in the "
            "recurrent layer 'rnn', over its time steps (the gradients "
            "exploded), the optimizer damped them, and the model has learnt "
            "nothing since."
        )
        assert finding.fix.startswith("Check the weight initialisation")

    def test_not_a_recurrent_layer(self):
        # The loudest layer a Dense one: the model is named.
        rules = rules_for((LN2, "cross-entropy over 2 classes"))
        ((finding, _),) = recorded(rules, DAMPED)
        assert finding.layer is None
        assert "the initial weights blew the signal up (the gradients" in (
            finding.message
        )

    @pytest.mark.parametrize(
        "case",
        [
            "learns",  # The losses from step 4 under ln 2 (0.5).
            "fell 99x",  # The norm at least 20.6 after step 0 (2030 / 98.5).
            "start 4.9x",  # The first loss 3.4, under 5 ln 2 (3.47).
            "unstandardized",  # Inputs at scale 255: `_extreme_start`'s case.
            # Every gradient 0 from step 1 (Keras's JAX cross-entropy of a
            # saturated output): `ZeroGradientRules`' case.
            "zero",
        ],
    )
    def test_not_told(self, case):
        pairs = list(DAMPED)
        if case == "learns":
            pairs = pairs[:4] + [(norm, 0.5) for norm, _ in pairs[4:]]
        elif case == "fell 99x":
            pairs = [(max(norm, 20.6), loss) for norm, loss in pairs]
        elif case == "start 4.9x":
            pairs[0] = (2030.0, 3.4)
        elif case == "zero":
            pairs = pairs[:1] + [(0.0, loss) for _, loss in pairs[1:]]
        rules = rules_for((LN2, "cross-entropy over 2 classes"), RNN_LAYERS)
        scale = 255.0 if case == "unstandardized" else None
        assert recorded(rules, pairs, scale) == []


def info(name, class_name, distance, weights=True, activation=None):
    return LayerInfo(name, class_name, activation, weights, 0, distance)


# The top of `keras.applications.EfficientNetB0` as planned: the classifier
# (distance 0) after dropout (1), pooling (2), swish (3), the last batch
# normalization (4) and the 1x1 convolution before it (5).
EFFICIENT_TOP = [
    info("top_conv", "Conv2D", 5),
    info("top_bn", "BatchNormalization", 4),
    info("predictions", "Dense", 0, activation="softmax"),
]


class TestNormalizedHead:
    def test_a_head_after_the_last_normalization(self):
        assert normalized_head(EFFICIENT_TOP)

    def test_the_order_of_the_list_does_not_matter(self):
        assert normalized_head(EFFICIENT_TOP[::-1])

    def test_a_softmax_layer_after_the_head(self):
        # `Dense` (1) then `Activation("softmax")` (0, no weights: left out).
        layers = [
            info("bn", "BatchNormalization", 3),
            info("logits", "Dense", 1),
            info("softmax", "Activation", 0, weights=False, activation="softmax"),
        ]
        assert normalized_head(layers)

    @pytest.mark.parametrize(
        "layers",
        [
            # A second layer with weights between the normalization and the
            # head: weights before the head can blow its inputs up.
            [
                info("bn", "BatchNormalization", 2),
                info("d1", "Dense", 1),
                info("out", "Dense", 0),
            ],
            # A branch with weights beside the normalization at its distance.
            [
                info("bn", "BatchNormalization", 2),
                info("side", "Dense", 2),
                info("out", "Dense", 0),
            ],
            # Two layers nearest the outputs (two heads, or siblings).
            [
                info("bn", "BatchNormalization", 2),
                info("a", "Dense", 0),
                info("b", "Dense", 0),
            ],
            # No normalization, or the graph unknown (a subclassed model).
            [info("d0", "Dense", 1), info("out", "Dense", 0)],
            [info("bn", "BatchNormalization", None), info("out", "Dense", None)],
            [info("out", "Dense", 0)],
        ],
    )
    def test_not_normalized(self, layers):
        assert not normalized_head(layers)


def _plans(model):
    return [plan.info for plan in plan_layers(model)]


def _resnet_v1_top():
    # Two normalized branches added, ReLU, pooling, then the classifier.
    inputs = keras.Input((8, 8, 4))
    a = keras.layers.BatchNormalization()(
        keras.layers.Conv2D(4, 3, padding="same")(inputs)
    )
    b = keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 1)(inputs))
    h = keras.layers.Activation("relu")(keras.layers.Add()([a, b]))
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))


def _nested_base():
    # A convolutional base ending in normalization, ReLU and pooling, nested
    # in a `Sequential` with a classifier (the transfer-learning shape).
    base = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
        ],
        name="base",
    )
    return keras.Sequential([keras.Input((8, 8, 3)), base, keras.layers.Dense(2)])


def _sequential(*layers):
    return keras.Sequential([keras.Input((6,)), *layers])


D, BN, LN = (
    keras.layers.Dense,
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
)


@pytest.mark.parametrize(
    "build, expected",
    [
        (_resnet_v1_top, True),
        (_nested_base, True),
        (
            lambda: _sequential(
                D(8), BN(), keras.layers.ReLU(), D(3, activation="softmax")
            ),
            True,
        ),
        (lambda: _sequential(D(8), LN(), keras.layers.Dropout(0.1), D(3)), True),
        (
            lambda: _sequential(
                D(8),
                keras.layers.Activation("swish"),
                D(3),
                keras.layers.Activation("softmax"),
            ),
            False,
        ),
        (
            lambda: _sequential(
                D(8), BN(), D(8, activation="relu"), D(3, activation="softmax")
            ),
            False,
        ),
    ],
    ids=[
        "resnet_v1_top",
        "nested_base",
        "bn_relu",
        "layer_norm",
        "no_norm",
        "dense_after_bn",
    ],
)
def test_normalized_head_of_a_model(build, expected):
    assert normalized_head(_plans(build())) is expected


class TestExtremeStartOfANormalizedHead:
    def test_not_judged(self):
        # The steps of `TestExtremeStart` (326x ln(3) and more), a head fed by
        # a normalization: no finding (`healthy_normalized_head` measures one
        # that learns from a loss 13-20x ln 2).
        rules = rules_for(layers=EFFICIENT_TOP)
        assert steps(rules, HUGE) == []


class TestTinyInputs:
    """Inputs reaching the first layers at 1/50 of unit scale or under
    (`StartRules._tiny_inputs`), judged at the first recording that reads
    them."""

    @staticmethod
    def _recordings(rules, scales):
        found = []
        for step, scale in enumerate(scales):
            stats = StepStats(step=step, global_norm=1.0, loss=1.0, input_scale=scale)
            found += [(f, step) for f in rules.observe(stats)]
        return found

    def test_told_with_the_layers_that_scale_them(self):
        # 0.47 / 255 = 0.00184 <= 0.02: images in [0, 1] rescaled again.
        rules = rules_for()
        rules.input_preprocessing = "'rescaling' (x 0.00392)"
        ((finding, step),) = self._recordings(rules, [None, 0.00184, 0.00184])
        assert (finding.mode, finding.severity, step) == (
            F.UNSTANDARDIZED_INPUTS,
            F.WARNING,
            1,
        )
        assert finding.value == 0.00184
        assert finding.message == (
            "The inputs reach the first layers through 'rescaling' (x 0.00392) "
            "at a scale of 0.00184 (a feature's largest mean or spread, against "
            "about 1 when standardized): a kernel's gradient is its inputs times "
            "the error, so the first layers' kernels get gradients that small "
            "and barely learn."
        )
        assert finding.fix == (
            "Check that the data is not scaled twice ('rescaling' (x 0.00392) "
            "after a scaling already done on the data); s"
            + FIXES[F.UNSTANDARDIZED_INPUTS][1:]
        )

    def test_without_preprocessing_layers(self):
        ((finding, _),) = self._recordings(rules_for(), [0.02])
        assert finding.message.startswith(
            "The inputs reach the first layers at a scale of 0.02 "
        )
        assert finding.fix == FIXES[F.UNSTANDARDIZED_INPUTS]

    @pytest.mark.parametrize(
        "scales", [[0.021], [0.5, 0.001], [0.0]], ids=["over", "later", "zero"]
    )
    def test_not_over_the_limit_nor_after_the_first_reading(self, scales):
        # 0.021 > 0.02; the first recording's scale alone is judged (a
        # later one is of new data, `NormRules.inputs_changed`); inputs all
        # 0 have no scale to tell.
        assert self._recordings(rules_for(), scales) == []
