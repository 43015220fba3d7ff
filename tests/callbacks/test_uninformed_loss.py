"""`_callback_support.uninformed_loss`: the loss of a prediction that knows
nothing, which `HealthRules` compares the first steps' loss with; and
`target_scale`, the scale of a regression model's targets, which it names
as the cause of an explosion; and `clipping`, the optimizer's gradient
clipping, which a fix that advises clipping names; and `output_bias`, an
output layer's bias that saturates it from the start; and `weight_gain`,
how far the kernels are over He's scale.

No TensorFlow import here: this module also runs in `.ci/run`'s JAX stage.
"""

import math
import warnings

import keras
import numpy as np
import pytest

import keras_actloss
from keras_actloss.advisor.layer_checks import unbounded_recurrences
from keras_actloss.callbacks import _model_plan
from keras_actloss.callbacks._callback_support import (
    _hooks_class,
    clipping,
    kernel_scales,
    label_classes,
    layers_of,
    output_bias,
    relu_shrink,
    target_scale,
    traced_label_checks,
    uninformed_focus,
    uninformed_loss,
    value_rows,
    weight_decay,
    weight_gain,
)
from keras_actloss.callbacks._step_rows import kept_arrays, pack_kept
from keras_actloss.profiles import EXPONENTIAL, SOFTMAX


def model(units, activation, loss, outputs=1):
    inputs = keras.Input((4,))
    heads = [
        keras.layers.Dense(units, activation=activation, name=f"out_{i}")(inputs)
        for i in range(outputs)
    ]
    m = keras.Model(inputs, heads if outputs > 1 else heads[0])
    m.compile(optimizer="adam", loss=loss)
    return m


CLASSES = "cross-entropy over {} classes"
BINARY = "binary cross-entropy, probability 0.5"


@pytest.mark.parametrize(
    "units, activation, loss, expected, what",
    [
        # ln(C) for C classes; the softmax's or the logits' alike.
        (5, "softmax", "sparse_categorical_crossentropy", math.log(5), CLASSES),
        (3, "softmax", keras.losses.CategoricalCrossentropy(), math.log(3), CLASSES),
        (
            10,
            None,
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            math.log(10),
            CLASSES,
        ),
        (
            4,
            "softmax",
            keras_actloss.losses.CategoricalCrossentropy(),
            math.log(4),
            CLASSES,
        ),
        # ln 2 for each binary output, whatever their number (the mean).
        (1, "sigmoid", "binary_crossentropy", math.log(2), BINARY),
        (6, "sigmoid", keras.losses.BinaryCrossentropy(), math.log(2), BINARY),
        (
            3,
            "softmax",
            keras.losses.CategoricalCrossentropy(reduction="mean"),
            math.log(3),
            CLASSES,
        ),
    ],
)
def test_cross_entropies(units, activation, loss, expected, what):
    level, said = uninformed_loss(model(units, activation, loss))
    assert level == pytest.approx(expected)
    assert said == what.format(units)


@pytest.mark.parametrize(
    "units, loss, function, focus",
    [
        (1, "binary_focal_crossentropy", keras.losses.binary_focal_crossentropy, 0.25),
        (
            1,
            keras.losses.BinaryFocalCrossentropy(gamma=1.0),
            lambda y, p: keras.losses.binary_focal_crossentropy(y, p, gamma=1.0),
            0.5,
        ),
        (
            1,
            keras_actloss.losses.BinaryFocalCrossentropy(from_logits=True),
            keras.losses.binary_focal_crossentropy,
            0.25,
        ),
        (
            3,
            keras.losses.CategoricalFocalCrossentropy(),
            keras.losses.categorical_focal_crossentropy,
            (2 / 3) ** 2,
        ),
        (
            4,
            keras_actloss.losses.SparseCategoricalFocalCrossentropy(alpha=0.5),
            lambda y, p: keras.losses.categorical_focal_crossentropy(y, p, alpha=0.5),
            (3 / 4) ** 2,
        ),
    ],
)
def test_focal_losses(units, loss, function, focus):
    # The level is Keras's own focal loss at the prediction that knows
    # nothing (probability 0.5, or 1/C for C classes), for any label.
    logits = getattr(loss, "from_logits", False)
    m = model(units, None if logits else "sigmoid" if units == 1 else "softmax", loss)
    level, said = uninformed_loss(m)
    p = np.full((2, max(units, 1)), 0.5 if units == 1 else 1 / units, "float32")
    y = np.eye(units)[[0, units - 1]] if units > 1 else np.array([[0.0], [1.0]])
    expected = keras.ops.convert_to_numpy(function(y.astype("float32"), p))
    np.testing.assert_allclose([level, level], expected, rtol=1e-5)
    assert "focal loss" in said
    assert uninformed_focus(m) == pytest.approx(focus)


@pytest.mark.parametrize(
    "units, loss",
    [
        # Per-class factors, or class balancing: the level depends on the
        # labels.
        (3, keras_actloss.losses.SparseCategoricalFocalCrossentropy(alpha=[1, 2, 3])),
        (1, keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True)),
    ],
)
def test_focal_losses_weighted_by_class_are_unknown(units, loss):
    m = model(units, "sigmoid" if units == 1 else "softmax", loss)
    assert uninformed_loss(m) is None
    assert uninformed_focus(m) == 1.0


def test_cross_entropy_keeps_all_of_itself():
    assert uninformed_focus(model(3, "softmax", "categorical_crossentropy")) == 1.0


@pytest.mark.parametrize(
    "units, activation, loss",
    [
        # A regression loss: the level depends on the targets.
        (1, None, "mse"),
        (1, None, keras.losses.Huber()),
        # Weighted classes change the level.
        (
            3,
            "softmax",
            keras_actloss.losses.CategoricalCrossentropy(class_weights=[1, 2, 3]),
        ),
        # Another loss than cross-entropy.
        (3, "softmax", keras.losses.KLDivergence()),
        # Summed over the batch, or not reduced: not the mean's level.
        (3, "softmax", keras.losses.SparseCategoricalCrossentropy(reduction="sum")),
        (1, "sigmoid", keras.losses.BinaryCrossentropy(reduction="none")),
        # A loss that expects probabilities from an output not in [0, 1]
        # (`linear_output_probability_loss`): it clips the outputs.
        (1, None, "binary_crossentropy"),
        (1, "tanh", keras.losses.BinaryCrossentropy()),
        (1, "relu", "binary_crossentropy"),
        (3, None, "categorical_crossentropy"),
        (3, "linear", keras.losses.SparseCategoricalCrossentropy()),
        # A softmax over one unit: always 1 (`softmax_single_unit`).
        (1, "softmax", "binary_crossentropy"),
    ],
)
def test_unknown(units, activation, loss):
    assert uninformed_loss(model(units, activation, loss)) is None


@pytest.mark.parametrize(
    "weights, expected",
    [
        # `compile(loss_weights=...)` multiplies the one output's loss.
        ([10.0], 10 * math.log(4)),
        (0.5, 0.5 * math.log(4)),
        ({"out_0": 2.0}, 2 * math.log(4)),
        (None, math.log(4)),
        ([0.0], None),
    ],
)
def test_loss_weights(weights, expected):
    m = model(4, "softmax", "sparse_categorical_crossentropy")
    m.compile(optimizer="adam", loss=m.loss, loss_weights=weights)
    with warnings.catch_warnings():
        # Keras's `get_compile_config` warns on JAX (NumPy 2, the optimizer's
        # variables): not through us.
        warnings.simplefilter("error")
        found = uninformed_loss(m)
    if expected is None:
        assert found is None
        return
    level, said = found
    assert level == pytest.approx(expected)
    weighted = f", weighted {expected / math.log(4):.3g}"
    assert said == CLASSES.format(4) + ("" if weights is None else weighted)


@pytest.mark.parametrize(
    "weighting",
    [
        {"loss_weights": [10.0]},
        {"sample_weight": 10.0},
        {"class_weight": {3: 100.0}},
    ],
    ids=["loss_weights", "sample_weight", "class_weight"],
)
def test_a_weighted_loss_is_not_an_extreme_start(weighting):
    # Probed: a healthy 4-class classifier whose loss Keras weights 10x (or
    # whose class 3 weighs 100 on balanced classes) starts at about 10x
    # ln 4 (14.5-15.9) and learns (accuracy 0.84-0.88); it was reported as
    # "outputs extreme and wrong from the start" at step 4. The weights
    # scale the level of a prediction that knows nothing: `loss_weights`
    # by its value (known when compiled), sample and class weights by their
    # mean over the batch (seen in the step: not judged).
    from keras_actloss.callbacks import GradientDiagnostics

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 8)).astype("float32")
    y = np.argmax(x[:, :4], axis=1)
    m = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(4, activation="softmax"),
        ]
    )
    m.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss="sparse_categorical_crossentropy",
        loss_weights=weighting.get("loss_weights"),
    )
    fit = {}
    if "sample_weight" in weighting:
        fit["sample_weight"] = np.full(len(x), weighting["sample_weight"], "float32")
    if "class_weight" in weighting:
        fit["class_weight"] = {0: 1.0, 1: 1.0, 2: 1.0, **weighting["class_weight"]}
    diag = GradientDiagnostics(check_model=False)
    history = m.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=[diag], **fit)
    # Weighted 10x or more from the start: over 5x ln 4 on every first step.
    assert min(s.loss for s in diag.history[:5]) > 5 * math.log(4)
    assert diag.findings == []
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]


def test_a_clipped_output_is_not_an_explosion():
    # A linear output under binary cross-entropy on probabilities: the loss
    # clips the outputs outside [0, 1] (to 1e-7 from either end, a loss of
    # up to -ln(1e-7) = 16.1), so from the first step it is several times
    # ln 2 with the gradient norm at about 1-5: `check_model` names the
    # cause, and the extreme-start rule, which would read that loss as
    # weights far too large, does not judge it.
    from keras_actloss.callbacks import GradientDiagnostics, GradientHealthWarning

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(256, 8)).astype("float32")
    y = (x[:, :1] > 0).astype("float32")
    m = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    m.compile(optimizer="adam", loss="binary_crossentropy")
    diag = GradientDiagnostics()
    with pytest.warns(GradientHealthWarning):
        m.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[diag])
    losses = [s.loss for s in diag.history[:5]]
    assert len(losses) == 5 and min(losses) > 5 * math.log(2)
    assert {f.mode for f in diag.findings} == {"linear_output_probability_loss"}


@pytest.mark.parametrize(
    "regularizer",
    [
        {"kernel_regularizer": keras.regularizers.L2(1e-2)},
        {"bias_regularizer": "l1"},
        {"activity_regularizer": "l2"},
    ],
)
def test_regularized(regularizer):
    # The penalty adds to the loss the rules compare with ln(C).
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="relu", **regularizer)(inputs)
    m = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    assert uninformed_loss(m) is None


def test_several_outputs():
    m = model(3, "softmax", "sparse_categorical_crossentropy", outputs=2)
    assert uninformed_loss(m) is None


def test_not_compiled():
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    assert uninformed_loss(m) is None


# Targets of about 300 +- 100 (the probe whose SGD run exploded), one column.
_TARGETS = np.array([[200.0], [300.0], [400.0], [300.0]], "float32")
# Hand calculation: mean 300, population std sqrt((100^2 + 0 + 100^2 + 0) / 4)
# = 70.7; the larger of |mean| and std.
_TARGETS_SCALE = 300.0


@pytest.mark.parametrize(
    "loss",
    [
        "mse",
        "mean_absolute_error",
        keras.losses.Huber(),
        keras_actloss.losses.MeanSquaredError(),
        keras_actloss.losses.get("huber"),
    ],
)
def test_target_scale_of_a_regression(loss):
    m = model(1, None, loss)
    assert target_scale(m, _TARGETS) == pytest.approx(_TARGETS_SCALE)
    # Labels of shape (batch,), as `fit(x, y)` with a 1-D `y` passes them.
    assert target_scale(m, _TARGETS[:, 0]) == pytest.approx(_TARGETS_SCALE)


def test_target_scale_is_the_largest_column():
    # Column 0: mean 0, std 1 -> 1; column 1: mean -5, std 20 -> 20.
    labels = np.array([[1.0, 15.0], [-1.0, -25.0]], "float32")
    m = model(2, None, "mse")
    assert target_scale(m, labels) == pytest.approx(20.0)
    assert np.max(np.maximum(np.abs(labels.mean(0)), labels.std(0))) == 20.0


@pytest.mark.parametrize(
    "units, activation, loss, labels",
    [
        # Classification losses: labels are classes, not targets to scale.
        (5, "softmax", "sparse_categorical_crossentropy", [[3.0], [4.0]]),
        (1, "sigmoid", "binary_crossentropy", [[0.0], [1.0]]),
        # A loss not profiled (no label format known).
        (1, None, keras.losses.LogCosh(), _TARGETS),
        # Not finite, or no labels kept.
        (1, None, "mse", [[np.nan], [300.0]]),
        (1, None, "mse", None),
    ],
)
def test_no_target_scale(units, activation, loss, labels):
    labels = None if labels is None else np.asarray(labels, "float32")
    assert target_scale(model(units, activation, loss), labels) is None


def test_no_target_scale_for_several_outputs_without_labels_per_output():
    # One array for two outputs: `check_model` spreads it over neither.
    assert target_scale(model(1, None, "mse", outputs=2), _TARGETS) is None


def test_target_scale_of_several_outputs_is_the_largest_regression_one():
    # Two regression outputs, labels per output as `fit` takes them (a list
    # in output order, a dict by output name): the larger scale, 300
    # (`_TARGETS`) against 2 (hand calculation: mean 0, std 2).
    m = model(1, None, "mse", outputs=2)
    small = np.array([[2.0], [-2.0], [2.0], [-2.0]], "float32")
    assert target_scale(m, [small, _TARGETS]) == pytest.approx(_TARGETS_SCALE)
    assert target_scale(m, {"out_0": _TARGETS, "out_1": small}) == pytest.approx(
        _TARGETS_SCALE
    )
    assert target_scale(m, [small, None]) == pytest.approx(2.0)
    # A classifier's labels are not targets: only the regression output's.
    inputs = keras.Input((4,))
    mixed = keras.Model(
        inputs,
        [
            keras.layers.Dense(1, name="value")(inputs),
            keras.layers.Dense(3, activation="softmax", name="kind")(inputs),
        ],
    )
    mixed.compile(loss=["mse", "sparse_categorical_crossentropy"])
    classes = np.array([[2.0], [1.0], [0.0], [2.0]], "float32")
    assert target_scale(mixed, [small, classes]) == pytest.approx(2.0)
    assert target_scale(mixed, {"kind": classes}) is None


def test_pack_kept():
    a, b = np.ones((2, 1), "float32"), np.zeros((2, 3), "float32")
    assert pack_kept(0, [a]) is a  # One label tensor: its array.
    assert pack_kept([0], [a]) is a  # `fit(x, [y])`.
    assert pack_kept({"out": 0}, [a]) == {"out": a}  # Names its output.
    assert pack_kept(None, [None]) is None
    assert pack_kept([0, 0], [None, None]) is None
    packed = pack_kept({"x": 0, "y": 0}, [a, None])  # Sorted keys' order.
    assert set(packed) == {"x", "y"} and packed["x"] is a and packed["y"] is None
    packed = pack_kept((0, 0), [a, b])
    assert packed[0] is a and packed[1] is b
    assert [len(x) for x in kept_arrays(packed)] == [2, 2]
    assert kept_arrays({"x": a, "y": None})[0] is a
    assert kept_arrays(a)[0] is a and kept_arrays(None) == []


@pytest.mark.parametrize(
    "optimizer, expected",
    [
        (keras.optimizers.Adam(global_clipnorm=1.0), "global_clipnorm=1"),
        (keras.optimizers.SGD(clipnorm=0.5), "clipnorm=0.5"),
        (keras.optimizers.RMSprop(clipvalue=2.0), "clipvalue=2"),
        (keras.optimizers.Adam(), None),
        # Under loss scaling: the clipping of the optimizer it wraps.
        (
            keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(clipnorm=1.0)),
            "clipnorm=1",
        ),
    ],
)
def test_clipping(optimizer, expected):
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    m.compile(optimizer=optimizer, loss="mse")
    found = clipping(m)
    # A `Clipping` (name and value) that reads as the argument.
    assert (found if found is None else str(found)) == expected
    if found is not None:
        name, value = expected.split("=")
        assert found == (name, float(value))


@pytest.mark.parametrize(
    "optimizer, expected",
    [
        (keras.optimizers.AdamW(), 0.004),  # Its default.
        (keras.optimizers.SGD(weight_decay=10.0), 10.0),
        (keras.optimizers.Adam(), None),
        (keras.optimizers.Adam(weight_decay=0.0), None),
        (
            keras.optimizers.LossScaleOptimizer(
                keras.optimizers.AdamW(weight_decay=0.1)
            ),
            0.1,
        ),
    ],
)
def test_weight_decay(optimizer, expected):
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    m.compile(optimizer=optimizer, loss="mse")
    assert weight_decay(m) == pytest.approx(expected)


@pytest.mark.parametrize(
    "loss, jit, expected",
    [
        (keras_actloss.losses.Hinge(), True, "hinge"),
        # Not compiled with XLA or jit: the check raises at the step.
        (keras_actloss.losses.Hinge(), False, None),
        (keras_actloss.losses.Hinge(check_labels=False), True, None),
        (keras.losses.Hinge(), True, None),
        # One of several outputs' losses.
        (["mse", keras_actloss.losses.MeanSquaredError()], True, None),
        (
            ["mse", keras_actloss.losses.BinaryCrossentropy()],
            True,
            "binary_crossentropy",
        ),
    ],
)
def test_traced_label_checks(loss, jit, expected):
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, "tanh")])
    m.compile(optimizer="sgd", loss=loss, jit_compile=jit)
    assert traced_label_checks(m) == expected


def test_layers_of():
    # The exponential layers, and the softmax layers with weights that are
    # not outputs (the output's softmax and a `Softmax` layer, as in
    # attention, are not).
    inputs = keras.Input((4,))
    h = keras.layers.Dense(8, "exponential", name="exp")(inputs)
    h = keras.layers.Dense(8, "softmax", name="hidden")(h)
    h = keras.layers.Softmax(name="weights")(h)
    outputs = keras.layers.Dense(3, "softmax", name="out")(h)
    plans = _model_plan.plan_layers(keras.Model(inputs, outputs))
    assert layers_of(plans, EXPONENTIAL) == ("exp",)
    assert layers_of(plans, SOFTMAX, hidden=True) == ("hidden",)
    assert layers_of(plans, SOFTMAX) == ("hidden", "out")


def test_no_clipping_when_not_compiled():
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    assert clipping(m) is None


def test_the_fit_gives_the_rules_the_clipping():
    from keras_actloss.callbacks import GradientDiagnostics

    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    m.compile(optimizer=keras.optimizers.SGD(clipnorm=0.25), loss="mse")
    diag = GradientDiagnostics(check_model=False)
    m.fit(np.ones((8, 4)), np.ones((8, 1)), callbacks=[diag], verbose=0)
    assert diag._rules.clipping == ("clipnorm", 0.25)
    assert diag._rules.weight_decay is None
    m.compile(optimizer=keras.optimizers.AdamW(weight_decay=0.5), loss="mse")
    diag = GradientDiagnostics(check_model=False)
    m.fit(np.ones((8, 4)), np.ones((8, 1)), callbacks=[diag], verbose=0)
    assert diag._rules.weight_decay == 0.5


def test_the_fit_tells_a_heavy_weight_decay_before_its_first_step():
    # AdamW at 1e-2 with weight_decay 50: half of every weight a step.
    from keras_actloss.callbacks import GradientDiagnostics, GradientHealthWarning

    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    m.compile(optimizer=keras.optimizers.AdamW(1e-2, weight_decay=50.0), loss="mse")
    diag = GradientDiagnostics()
    with pytest.warns(GradientHealthWarning, match="heavy_weight_decay"):
        m.fit(np.ones((8, 4)), np.ones((8, 1)), callbacks=[diag], verbose=0)
    (told,) = [f for f in diag.findings if f.mode == "heavy_weight_decay"]
    assert (told.step, told.layer, told.value) == (None, None, pytest.approx(0.5))


def test_the_fit_gives_the_rules_what_check_model_names():
    # A dropout of rate 0.95 (`extreme_dropout`) and a hidden layer whose
    # kernel starts at zeros, as the next one's, which weighs its units
    # alike (`symmetric_units`; 'hidden' is weighed by a random kernel):
    # the rules name them in the failures they lead to; 0.5 is not extreme.
    from keras_actloss.callbacks import GradientDiagnostics

    m = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="tanh", name="zeros"),
            keras.layers.Dropout(0.95, name="drop"),
            keras.layers.Dense(8, activation="relu", name="hidden"),
            keras.layers.Dropout(0.5, name="kept"),
            keras.layers.Dense(1, name="out"),
        ]
    )
    m.get_layer("zeros").kernel.assign(np.zeros((4, 8), "float32"))
    m.get_layer("hidden").kernel.assign(np.zeros((8, 8), "float32"))
    m.compile(optimizer="sgd", loss="mse")
    diag = GradientDiagnostics()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.fit(np.ones((8, 4)), np.ones((8, 1)), callbacks=[diag], verbose=0)
    assert diag._rules.told_causes == {
        "symmetric_units": (("zeros", 8.0),),  # its 8 units
        "constant_normalization": (),
        "extreme_dropout": (("drop", pytest.approx(0.95)),),
        "linear_output_probability_loss": (),  # A linear output under MSE.
    }


def test_the_fit_gives_the_rules_its_constant_normalizations():
    # A LayerNormalization over the one channel of a sequence
    # (`constant_normalization`), and one over 4 channels.
    from keras_actloss.callbacks import GradientDiagnostics

    inputs = keras.Input((5, 1))
    x = keras.layers.LayerNormalization(name="one")(inputs)
    x = keras.layers.Conv1D(4, 1, activation="relu")(x)
    x = keras.layers.LayerNormalization(name="four")(x)
    m = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(x)))
    m.compile(optimizer="sgd", loss="mse")
    diag = GradientDiagnostics()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.fit(np.ones((8, 5, 1)), np.ones((8, 1)), callbacks=[diag], verbose=0)
    assert diag._rules.told_causes["constant_normalization"] == (("one", None),)


@pytest.mark.parametrize(
    "activation, bias, expected",
    [
        # The largest in size, signed; at least 10 (sigmoid(-10) = 4.5e-5).
        ("sigmoid", [-30.0], -30.0),
        ("tanh", [2.0, -12.0, 11.0], -12.0),
        ("sigmoid", [-9.9], None),
        # Softmax: the spread between classes (a shift changes nothing).
        ("softmax", [30.0, 0.0, 0.0], -30.0),
        ("softmax", [100.0, 95.0, 99.0], None),
        # No activation to saturate.
        (None, [-30.0], None),
        ("relu", [-30.0], None),
    ],
)
def test_output_bias(activation, bias, expected):
    m = model(len(bias), activation, "mse")
    m.get_layer("out_0").bias.assign(np.array(bias, "float32"))
    with warnings.catch_warnings():
        # Read at the start of `fit`: no warning of its own (NumPy 2 warned
        # that TensorFlow's variable takes no `copy`, which
        # `ops.convert_to_numpy` passes; pytest's settings ignore it).
        warnings.simplefilter("error")
        found = output_bias(m, _model_plan.plan_layers(m))
    if expected is None:
        assert found is None
    else:
        assert found == ("out_0", activation, pytest.approx(expected))


def test_no_output_bias_of_several_outputs():
    m = model(2, "sigmoid", "mse", outputs=2)
    m.get_layer("out_0").bias.assign(np.array([-30.0, 0.0], "float32"))
    assert output_bias(m, _model_plan.plan_layers(m)) is None


def test_weight_gain():
    # Kernels set to constants, so each RMS is that constant: 'first'
    # (Dense 4 -> 8) at 2.0, He's RMS sqrt(2 / 4) = 0.7071: 2.828x; 'conv'
    # (3x3 from 2 channels, fan-in 18, He's 0.3333) at 0.1: 0.3x, counted
    # as 1; 'last' (Dense from the 5 x 2 x 4 = 40 flattened features, He's
    # sqrt(2 / 40) = 0.2236) at 0.6: 2.683x. In all 2.828 x 2.683 = 7.59,
    # the most in 'first'. Biases (one axis) and an embedding's table do
    # not count.
    ids = keras.Input((7,), dtype="int32")
    table = keras.layers.Embedding(50, 8, name="table")(ids)
    first = keras.layers.Dense(8, activation="relu", name="first")
    conv = keras.layers.Conv2D(4, 3, name="conv")
    last = keras.layers.Dense(3, name="last")
    x = first(keras.layers.Reshape((7, 8, 1))(table)[:, :, :4, 0])
    x = conv(keras.layers.Reshape((7, 4, 2))(x))
    m = keras.Model(ids, last(keras.layers.Flatten()(x)))
    m.get_layer("table").embeddings.assign(np.full((50, 8), 50.0, "float32"))
    first.kernel.assign(np.full((4, 8), 2.0, "float32"))
    first.bias.assign(np.full((8,), 100.0, "float32"))
    conv.kernel.assign(np.full((3, 3, 2, 4), 0.1, "float32"))
    last.kernel.assign(np.full((40, 3), 0.6, "float32"))
    # The backend's hooks read the mean squares (on JAX's CPU backend by
    # NumPy, not by a compiled program per kernel shape).
    mean_squares = _hooks_class().mean_squares
    gain, layer = weight_gain(_model_plan.plan_layers(m), mean_squares)
    assert gain == pytest.approx(2.0 / math.sqrt(2 / 4) * 0.6 / math.sqrt(2 / 40))
    assert layer == "first"
    assert weight_gain([], mean_squares) is None


@pytest.mark.parametrize(
    "normalization, expected, layer",
    [
        # 'a' (Dense 8 -> 8, He's RMS 0.5) at 2.0: 4x; 'b' and 'c' (8 -> 8)
        # at 1.5: 3x each; 'out' (8 -> 2) at 0.5: 1x. A normalization after
        # 'a' sets the scale of its outputs whatever 'a' did: the largest
        # product between normalizations is 'b' and 'c''s, 3 x 3 = 9 (probed:
        # a BatchNormalization MLP whose kernels are drawn with stddev 1
        # counted 544x over 4 layers, 5.76x a span, and started at about the
        # loss of knowing nothing).
        ("BatchNormalization", 9.0, "b"),
        ("LayerNormalization", 9.0, "b"),
        (None, 36.0, "a"),  # No normalization: 4 x 3 x 3.
    ],
)
def test_weight_gain_starts_again_after_a_normalization(normalization, expected, layer):
    inputs = keras.Input((8,))
    x = keras.layers.Dense(8, activation="relu", name="a")(inputs)
    if normalization:
        x = getattr(keras.layers, normalization)(name="norm")(x)
    for name in ("b", "c"):
        x = keras.layers.Dense(8, activation="relu", name=name)(x)
    m = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    for name, value in (("a", 2.0), ("b", 1.5), ("c", 1.5), ("out", 0.5)):
        kernel = m.get_layer(name).kernel
        kernel.assign(np.full(kernel.shape, value, "float32"))
    gain = weight_gain(_model_plan.plan_layers(m), _hooks_class().mean_squares)
    assert gain == (pytest.approx(expected), layer)


def test_relu_shrink():
    # Kernels set to constants, each RMS that constant, on 8 inputs: 'a'
    # (ReLU, 8 -> 8, He's RMS sqrt(2 / 8) = 0.5) at 0.25: 0.5x; 'b' (ReLU,
    # 8 -> 4) at 0.125: 0.25x; 'c' (ReLU, 4 -> 4, He's 0.7071) at 1.0:
    # 1.41x, counted as 1; 'six' (ReLU6: capped) and 'out' (linear) at
    # 0.01 not counted. The signal shrinks to 0.5 x 0.25 = 0.125 through
    # the 3 ReLU layers.
    specs = [
        ("a", 8, "relu", 0.25),
        ("b", 4, "relu", 0.125),
        ("c", 4, "relu", 1.0),
        ("six", 4, "relu6", 0.01),
        ("out", 2, None, 0.01),
    ]
    inputs = keras.Input((8,))
    x = inputs
    for name, units, activation, _ in specs:
        x = keras.layers.Dense(units, activation=activation, name=name)(x)
    m = keras.Model(inputs, x)
    for name, _, _, value in specs:
        kernel = m.get_layer(name).kernel
        kernel.assign(np.full(kernel.shape, value, "float32"))
    scales = kernel_scales(_model_plan.plan_layers(m), _hooks_class().mean_squares)
    shrink, count = relu_shrink(scales)
    assert shrink == pytest.approx(0.125)
    assert count == 3
    assert relu_shrink([]) is None
    assert relu_shrink(None) is None


@pytest.mark.parametrize(
    "activation, wrap, compounded",
    [("relu", False, True), ("linear", True, True), ("tanh", False, False)],
)
def test_weight_gain_of_a_recurrent_kernel_compounds_over_its_time_steps(
    activation, wrap, compounded
):
    # A SimpleRNN of 4 units over 10 time steps, its recurrent kernel a
    # constant 1.2 x He's RMS (sqrt(2 / 4)): it multiplies an unbounded
    # signal once a step, 1.2 ** 10 = 6.19x in all; a tanh's is bounded,
    # counted once. The input kernel and the head at He's scale: 1x.
    he = math.sqrt(2 / 4)
    rnn = keras.layers.SimpleRNN(4, activation=activation, name="rnn")
    inputs = keras.Input((10, 4))
    outputs = keras.layers.Dense(4, name="head")(
        (keras.layers.Bidirectional(rnn, merge_mode="sum") if wrap else rnn)(inputs)
    )
    m = keras.Model(inputs, outputs)
    for layer in m.layers[1:]:
        for variable in layer.weights:
            value = he if variable.name == "kernel" else 0.0
            if variable.name == "recurrent_kernel":
                value = 1.2 * he
            variable.assign(np.full(variable.shape, value, "float32"))
    gain, layer = weight_gain(
        _model_plan.plan_layers(m),
        _hooks_class().mean_squares,
        unbounded_recurrences(m),
    )
    cells = 2 if wrap else 1
    assert gain == pytest.approx((1.2**10 if compounded else 1.2) ** cells, rel=1e-5)
    assert layer.endswith("simple_rnn_cell")


@pytest.mark.parametrize(
    "units, activation, loss, labels, expected",
    [
        # Sparse: one integer a sample, as (batch,) or (batch, 1).
        (5, "softmax", "sparse_categorical_crossentropy", [3, 0, 4], [3, 0, 4]),
        (5, "softmax", "sparse_categorical_crossentropy", [[3.0], [1.0]], [3, 1]),
        # One-hot (smoothed too): the largest column.
        (3, "softmax", "categorical_crossentropy", [[0, 0, 1], [1, 0, 0]], [2, 0]),
        (3, "softmax", "categorical_crossentropy", [[0.1, 0.8, 0.1]], [1]),
        # Binary: 0 or 1 a sample; soft labels over 0.5.
        (1, "sigmoid", "binary_crossentropy", [[0.0], [1.0], [0.9]], [0, 1, 1]),
    ],
)
def test_label_classes(units, activation, loss, labels, expected):
    found = label_classes(model(units, activation, loss), np.asarray(labels))
    assert found.tolist() == expected


@pytest.mark.parametrize(
    "units, activation, loss, labels",
    [
        # A regression's targets.
        (1, None, "mse", [[0.5], [2.0]]),
        # Several binary columns (multi-label), sparse labels per position
        # (token tags), a negative or fractional class, a NaN.
        (3, "sigmoid", "binary_crossentropy", [[0, 1, 1], [1, 0, 0]]),
        (5, "softmax", "sparse_categorical_crossentropy", [[1, 2], [3, 4]]),
        (5, "softmax", "sparse_categorical_crossentropy", [[-1.0], [2.0]]),
        (5, "softmax", "sparse_categorical_crossentropy", [[1.5], [2.0]]),
        (1, "sigmoid", "binary_crossentropy", [[np.nan], [1.0]]),
        # No labels kept.
        (5, "softmax", "sparse_categorical_crossentropy", None),
    ],
)
def test_no_label_classes(units, activation, loss, labels):
    labels = None if labels is None else np.asarray(labels, "float32")
    assert label_classes(model(units, activation, loss), labels) is None


def test_no_label_classes_for_several_outputs():
    # Classes of two heads would mix: not read.
    m = model(3, "softmax", "sparse_categorical_crossentropy", outputs=2)
    assert label_classes(m, [np.array([0, 1]), np.array([2, 1])]) is None


def test_value_rows_of_features_and_regression_targets():
    # Features (4 columns), then a regression's targets as a fifth.
    x = np.arange(12, dtype="float32").reshape(3, 4)
    y = np.array([[0.5], [1.5], [2.5]], "float32")
    rows, features = value_rows(model(1, None, "mse"), x, y)
    np.testing.assert_array_equal(rows, np.hstack([x, y]))
    assert features == 4
    # A classifier's labels are classes (`label_classes`): features only.
    rows, features = value_rows(
        model(3, "softmax", "sparse_categorical_crossentropy"), x, y[:, 0]
    )
    np.testing.assert_array_equal(rows, x)
    assert features == 4


def test_no_value_rows():
    m = model(1, None, "mse")
    # Inputs of rank 3 (sequences, images), none kept, not finite.
    assert value_rows(m, np.zeros((4, 2, 3), "float32"), None) is None
    assert value_rows(m, None, None) is None
    assert value_rows(m, np.array([[np.nan] * 4], "float32"), None) is None
    # Ids an embedding looks up.
    inputs = keras.Input((5,), dtype="int32")
    ids = keras.Model(inputs, keras.layers.Embedding(10, 2)(inputs))
    ids.compile(optimizer="adam", loss="mse")
    assert value_rows(ids, np.zeros((4, 5), "float32"), None) is None
