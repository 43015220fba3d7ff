"""check_model(): each mistake, correct models, model kinds, bad input."""

import math
import warnings

import keras
import numpy as np
import pytest

import keras_actloss
from keras_actloss import losses
from keras_actloss.advisor import check, check_model, layer_checks, walk
from keras_actloss.callbacks._model_plan import plan_layers
from keras_actloss.findings import FAILURE, WARNING

L = keras.layers
ONE_HOT = np.eye(3)[[0, 1, 2, 1]]
SPARSE = np.array([0, 1, 2, 1])
BINARY = np.array([0, 1, 1, 0])


def seq(*layers, inputs=4):
    return keras.Sequential([keras.Input((inputs,)), *layers])


def compiled(model, loss):
    model.compile(loss=loss)
    return model


def modes(model, y=None):
    return sorted(f.mode for f in check_model(model, y))


# name: (model factory, loss factory, labels or None, expected modes)
MISTAKES = {
    "softmax_bce": (
        lambda: seq(L.Dense(3, activation="softmax")), lambda: "binary_crossentropy",
        None, ["softmax_with_binary_crossentropy"],
    ),
    "softmax_layer_bce_ours": (
        lambda: seq(L.Dense(3), keras_actloss.layers.Softmax()),
        lambda: losses.BinaryCrossentropy(), ONE_HOT,
        ["softmax_with_binary_crossentropy"],
    ),
    "sigmoid_cce": (
        lambda: seq(L.Dense(3, activation="sigmoid")),
        lambda: "categorical_crossentropy", ONE_HOT,
        ["sigmoid_with_categorical_crossentropy"],
    ),
    "sigmoid_scce_keras": (
        lambda: seq(L.Dense(3), L.Activation("sigmoid")),
        lambda: keras.losses.SparseCategoricalCrossentropy(), SPARSE,
        ["sigmoid_with_categorical_crossentropy"],
    ),
    "softmax_single_unit": (
        lambda: seq(L.Dense(1, activation="softmax")), lambda: "binary_crossentropy",
        BINARY, ["softmax_single_unit"],
    ),
    "cce_single_linear_unit": (
        lambda: seq(L.Dense(1)),
        lambda: losses.CategoricalCrossentropy(from_logits=True), None,
        ["categorical_loss_single_unit"],
    ),
    "linear_bce": (
        lambda: seq(L.Dense(1)), lambda: "binary_crossentropy", BINARY,
        ["linear_output_probability_loss"],
    ),
    "relu_cce": (
        lambda: seq(L.Dense(3, activation="relu")),
        lambda: keras.losses.CategoricalCrossentropy(), ONE_HOT,
        ["linear_output_probability_loss"],
    ),
    "linear_kl": (
        lambda: seq(L.Dense(3)), lambda: losses.KLDivergence(), None,
        ["linear_output_probability_loss"],
    ),
    "sigmoid_from_logits": (
        lambda: seq(L.Dense(1, activation="sigmoid")),
        lambda: losses.BinaryCrossentropy(from_logits=True), BINARY,
        ["probability_output_from_logits"],
    ),
    "softmax_from_logits_keras": (
        lambda: seq(L.Dense(3), L.Softmax()),
        lambda: keras.losses.SparseCategoricalCrossentropy(from_logits=True), SPARSE,
        ["probability_output_from_logits"],
    ),
    "sigmoid_cce_from_logits": (
        lambda: seq(L.Dense(3, activation="sigmoid")),
        lambda: losses.CategoricalCrossentropy(from_logits=True), None,
        ["probability_output_from_logits", "sigmoid_with_categorical_crossentropy"],
    ),
    "integer_labels_cce": (
        lambda: seq(L.Dense(3, activation="softmax")),
        lambda: "categorical_crossentropy", SPARSE, ["integer_labels_categorical_loss"],
    ),
    "one_hot_labels_scce": (
        lambda: seq(L.Dense(3, activation="softmax")),
        lambda: losses.SparseCategoricalCrossentropy(), ONE_HOT,
        ["one_hot_labels_sparse_loss"],
    ),
    "sparse_class_count": (
        lambda: seq(L.Dense(3, activation="softmax")),
        lambda: "sparse_categorical_crossentropy", np.array([0, 4, 1]),
        ["class_count_mismatch"],
    ),
    "one_hot_class_count": (
        lambda: seq(L.Dense(4, activation="softmax")),
        lambda: "categorical_crossentropy", ONE_HOT, ["class_count_mismatch"],
    ),
    "bce_with_three_classes": (
        lambda: seq(L.Dense(1, activation="sigmoid")), lambda: "binary_crossentropy",
        SPARSE, ["class_count_mismatch"],
    ),
    "multilabel_columns": (
        lambda: seq(L.Dense(2, activation="sigmoid")), lambda: "binary_crossentropy",
        np.array([[1, 0, 1], [0, 1, 1]]), ["class_count_mismatch"],
    ),
    "signed_labels_sigmoid_bce": (
        lambda: seq(L.Dense(1, activation="sigmoid")), lambda: "binary_crossentropy",
        np.array([-1, 1, 1, -1]), ["labels_outside_unit_interval"],
    ),
    "signed_labels_sigmoid_bce_ours": (
        lambda: seq(L.Dense(2, activation="sigmoid")),
        lambda: losses.BinaryCrossentropy(), np.array([[-1, 1], [1, 1]]),
        ["labels_outside_unit_interval"],
    ),
    "bce_labels_above_one": (
        lambda: seq(L.Dense(1, activation="sigmoid")), lambda: "binary_crossentropy",
        np.array([0.0, 0.5, 2.5, 1.0]), ["labels_outside_unit_interval"],
    ),
    "multi_hot_softmax_cce": (
        lambda: seq(L.Dense(3, activation="softmax")),
        lambda: "categorical_crossentropy", np.array([[1, 0, 1], [0, 1, 0]]),
        ["multi_hot_labels_categorical_loss"],
    ),
    "multi_hot_logits_cce_ours": (
        lambda: seq(L.Dense(3)),
        lambda: losses.CategoricalCrossentropy(from_logits=True),
        np.array([[1, 1, 1], [0, 1, 0]]), ["multi_hot_labels_categorical_loss"],
    ),
    "sigmoid_regression": (
        lambda: seq(L.Dense(1, activation="sigmoid")), lambda: "mse",
        np.array([0.5, 3.0, -1.0, 0.2]), ["bounded_output_regression"],
    ),
    "relu_regression": (
        lambda: seq(L.Dense(1), keras_actloss.layers.ReLU()),
        lambda: losses.Huber(), np.array([-2.0, 3.0, 1.0, 4.0]),
        ["bounded_output_regression"],
    ),
    "tanh_regression": (
        lambda: seq(L.Dense(2, activation="tanh")),
        lambda: keras.losses.MeanAbsoluteError(),
        np.array([[0.5, 0.1], [0.9, 2.0]]), ["bounded_output_regression"],
    ),
    "sigmoid_kl": (
        lambda: seq(L.Dense(3, activation="sigmoid")), lambda: "kld",
        np.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]]), ["sigmoid_with_kl_divergence"],
    ),
    "sigmoid_single_unit_kl_ours": (
        lambda: seq(L.Dense(1), L.Activation("sigmoid")),
        lambda: losses.KLDivergence(), None, ["sigmoid_with_kl_divergence"],
    ),
    "sigmoid_hinge": (
        lambda: seq(L.Dense(1, activation="sigmoid")), lambda: "hinge",
        np.array([-1, 1, 1, -1]), ["nonnegative_output_hinge"],
    ),
    "relu_hinge_ours": (
        lambda: seq(L.Dense(1), keras_actloss.layers.ReLU()),
        lambda: losses.Hinge(), BINARY, ["nonnegative_output_hinge"],
    ),
    "linear_poisson": (
        lambda: seq(L.Dense(1)), lambda: "poisson", np.array([0.0, 3.0, 1.0]),
        ["output_outside_loss_domain"],
    ),
    "tanh_poisson_keras": (
        lambda: seq(L.Dense(2, activation="tanh")), lambda: keras.losses.Poisson(),
        None, ["output_outside_loss_domain"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(MISTAKES))
def test_each_mistake(name):
    build, loss, y, expected = MISTAKES[name]
    model = compiled(build(), loss())
    findings = check_model(model, y)
    assert sorted(f.mode for f in findings) == expected
    for finding in findings:
        assert finding.severity == (WARNING if _logits_kept(finding.mode) else FAILURE)
        assert finding.step is None
        assert finding.layer == model.layers[-1].name
        assert finding.message and finding.fix
        assert finding.mode in check.CHECK_MODES


def _logits_kept(mode: str) -> bool:
    """Whether `mode` is a probability output under a loss from logits whose
    logits TensorFlow's cross-entropy takes from before the activation
    (float32 outputs: the models here)."""
    tensorflow = keras.backend.backend() == "tensorflow"
    return tensorflow and mode == "probability_output_from_logits"


@pytest.mark.parametrize(
    "activation, loss, y",
    [
        ("sigmoid", keras.losses.BinaryCrossentropy, BINARY[:, None]),
        ("softmax", keras.losses.SparseCategoricalCrossentropy, SPARSE),
        ("sigmoid", losses.BinaryCrossentropy, BINARY[:, None]),
    ],
)
def test_a_probability_output_under_a_loss_from_logits(activation, loss, y):
    # What the finding's severity rests on: on TensorFlow, Keras's sigmoid
    # and softmax keep their logits on the output tensor and its
    # cross-entropies take them whatever `from_logits` says (the same loss
    # both ways: a warning); on JAX the loss squashes the probabilities
    # again (another loss: a failure). Fails loudly if Keras changes this.
    units = 1 if activation == "sigmoid" else 3
    x = np.random.default_rng(0).normal(size=(len(y), 4)).astype("float32")
    values = []
    for from_logits in (True, False):
        keras.utils.set_random_seed(1)
        model = compiled(seq(L.Dense(units, activation=activation)), loss(from_logits))
        with warnings.catch_warnings():
            # Keras's "Was this intended?" on TensorFlow.
            warnings.simplefilter("ignore", UserWarning)
            values.append(model.evaluate(x, y, verbose=0))
        if from_logits:
            (finding,) = check_model(model, y)
    tensorflow = keras.backend.backend() == "tensorflow"
    assert (values[0] == values[1]) == tensorflow
    assert finding.mode == "probability_output_from_logits"
    assert finding.severity == (WARNING if tensorflow else FAILURE)
    if tensorflow:
        assert "TensorFlow's cross-entropy takes the logits" in finding.message


def test_a_float16_probability_output_under_a_loss_from_logits():
    # Under mixed precision the float16 output is cast on its way to the
    # loss, and TensorFlow's cross-entropy no longer sees its logits: the
    # probabilities are squashed again there too.
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        x = np.random.default_rng(0).normal(size=(4, 4)).astype("float32")
        values = []
        for from_logits in (True, False):
            keras.utils.set_random_seed(1)
            model = seq(L.Dense(1, activation="sigmoid"))
            compiled(model, keras.losses.BinaryCrossentropy(from_logits=from_logits))
            values.append(model.evaluate(x, BINARY[:, None], verbose=0))
        (finding,) = check_model(
            compiled(model, keras.losses.BinaryCrossentropy(from_logits=True)), BINARY
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert values[0] != values[1]
    assert (finding.mode, finding.severity) == (
        "probability_output_from_logits",
        FAILURE,
    )


def test_signed_labels_finding_text():
    model = compiled(seq(L.Dense(1, activation="sigmoid")), losses.BinaryCrossentropy())
    (finding,) = check_model(model, np.array([-1, 1, 1, -1]))
    assert finding.message == (
        "Labels are -1/+1 but binary_crossentropy expects labels in [0, 1]: a -1 "
        "label asks for an impossible probability, so the loss is wrong "
        "(Keras's losses train on it silently)."
    )
    assert finding.fix == (
        "Map the labels to 0/1 with (y + 1) / 2, or keep -1/+1 and use Hinge "
        "with a linear or tanh output."
    )


def test_multi_hot_finding_points_to_sigmoid_bce_like_advise():
    y = np.array([[1, 0, 1], [0, 1, 0]])
    model = compiled(seq(L.Dense(3, activation="softmax")), "categorical_crossentropy")
    (finding,) = check_model(model, y)
    assert finding.fix.startswith(
        "For several labels per sample use Dense(3, activation='sigmoid') with "
        "BinaryCrossentropy"
    )
    recommendation = keras_actloss.advise(y)
    assert (recommendation.output_activation, recommendation.loss_name) == (
        "sigmoid",
        "BinaryCrossentropy",
    )


def test_one_hot_rows_with_empty_rows_are_not_multi_hot_mistakes():
    # No row with two 1s: a softmax can fit every labelled row.
    y = np.array([[1, 0, 0], [0, 0, 0], [0, 0, 1]])
    model = compiled(seq(L.Dense(3, activation="softmax")), "categorical_crossentropy")
    assert check_model(model, y) == []


def sequence_model(*layers, steps=5, features=4):
    return keras.Sequential([keras.Input((steps, features)), *layers])


TAGS = np.array([[0, 1, 1, 0, 0], [1, 0, 0, 0, 1]])  # (batch, T) 0/1 per token


def test_token_tagging_labels_per_position():
    # (batch, T) labels with a (batch, T, 1) sigmoid output: one 0/1 tag per
    # token, a correct model (was a `class_count_mismatch` failure).
    model = sequence_model(L.Dense(8, activation="relu"), L.Dense(1, "sigmoid"))
    assert check_model(compiled(model, "binary_crossentropy"), TAGS) == []
    assert check_model(compiled(model, losses.BinaryCrossentropy()), TAGS) == []
    # The (batch, T, 1) form of the same labels is read the same way.
    assert check_model(compiled(model, "binary_crossentropy"), TAGS[..., None]) == []
    # Integer tags per token with a softmax over 3 tags per token.
    model = sequence_model(L.Dense(3, activation="softmax"))
    tags = np.array([[0, 2, 1, 0, 0], [1, 2, 0, 0, 1]])
    assert check_model(compiled(model, "sparse_categorical_crossentropy"), tags) == []


def test_token_tagging_mistakes_still_found():
    model = sequence_model(L.Dense(1, activation="sigmoid"))
    found = modes(compiled(model, "binary_crossentropy"), 2 * TAGS - 1)
    assert found == ["labels_outside_unit_interval"]
    model = sequence_model(L.Dense(3, activation="softmax"))
    tags = np.array([[0, 4, 1, 0, 0], [1, 2, 0, 0, 1]])
    (finding,) = check_model(compiled(model, "sparse_categorical_crossentropy"), tags)
    assert finding.mode == "class_count_mismatch"
    assert finding.message == (
        "Labels go up to class 4 (5 classes) but the output has 3 units."
    )


def test_bounded_regression_value_is_fraction_outside():
    model = compiled(seq(L.Dense(1, activation="sigmoid")), "mse")
    # 0.5 and 0.2 fit in [0, 1]; 3.0 and -1.0 do not: 2 of 4.
    (finding,) = check_model(model, np.array([0.5, 3.0, -1.0, 0.2]))
    assert finding.value == 0.5


def test_targets_at_the_bounds_are_reachable():
    model = compiled(seq(L.Dense(1, activation="sigmoid")), "mse")
    assert check_model(model, np.array([0.0, 1.0, 0.25, 0.5])) == []


# name: (model factory, loss factory, labels)
CORRECT = {
    "binary": (
        lambda: seq(L.Dense(8, activation="relu"), L.Dense(1, activation="sigmoid")),
        lambda: "binary_crossentropy", BINARY,
    ),
    "binary_logits": (
        lambda: seq(L.Dense(8, activation="relu"), L.Dense(1)),
        lambda: losses.BinaryCrossentropy(from_logits=True), BINARY,
    ),
    "one_hot": (
        lambda: seq(L.Dense(8, activation="relu"), L.Dense(3, activation="softmax")),
        lambda: "categorical_crossentropy", ONE_HOT,
    ),
    "one_hot_ours": (
        lambda: seq(L.Dense(8), keras_actloss.layers.ReLU(), L.Dense(3),
                    keras_actloss.layers.Softmax()),
        lambda: losses.CategoricalCrossentropy(), ONE_HOT,
    ),
    "sparse": (
        lambda: seq(L.Dense(8, activation="tanh"), L.Dense(3, activation="softmax")),
        lambda: keras.losses.SparseCategoricalCrossentropy(), SPARSE,
    ),
    "sparse_logits": (
        lambda: seq(L.Dense(8, activation="relu"), L.Dense(3)),
        lambda: losses.SparseCategoricalCrossentropy(from_logits=True), SPARSE,
    ),
    "multilabel": (
        lambda: seq(L.Dense(8, activation="relu"), L.Dense(3, activation="sigmoid")),
        lambda: losses.BinaryCrossentropy(), np.array([[1, 0, 1], [0, 0, 1]]),
    ),
    "regression": (
        lambda: seq(L.Dense(8, activation="relu"), L.Dense(2)),
        lambda: "mse", np.array([[-3.5, 20.0], [1.0, 2.0]]),
    ),
    "regression_outliers": (
        lambda: seq(L.Dense(8, activation="elu"), L.Dense(1)),
        lambda: losses.Huber(delta=2.0),
        np.concatenate([np.linspace(-1, 1, 50), [100.0, -80.0]]),
    ),
    "positive_regression_relu": (
        lambda: seq(L.Dense(8, activation="relu"), L.Dense(1, activation="relu")),
        lambda: "mae", np.array([0.0, 3.0, 10.0]),
    ),
    "kl": (
        lambda: seq(L.Dense(8, activation="relu"), L.Dense(3, activation="softmax")),
        lambda: losses.KLDivergence(), np.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]]),
    ),
    "hinge": (
        lambda: seq(L.Dense(8, activation="relu"), L.Dense(1)),
        lambda: "hinge", np.array([-1, 1, 1, -1]),
    ),
    "hinge_tanh": (
        lambda: seq(L.Dense(8, activation="relu"), L.Dense(1, activation="tanh")),
        lambda: losses.Hinge(), np.array([-1, 1, 1, -1]),
    ),
    "three_sigmoid_hidden": (
        lambda: seq(*[L.Dense(4, activation="sigmoid") for _ in range(3)],
                    L.Dense(1, activation="sigmoid")),
        lambda: "binary_crossentropy", BINARY,
    ),
    "leaky_relu_negative_bias": (
        lambda: seq(L.Dense(16, bias_initializer=keras.initializers.Constant(-3.0)),
                    L.LeakyReLU(0.1), L.Dense(1), inputs=8),
        lambda: "mse", None,
    ),
    "relu_bias_normalized": (
        lambda: seq(L.Dense(16, bias_initializer=keras.initializers.Constant(-3.0)),
                    L.BatchNormalization(), L.ReLU(), L.Dense(1), inputs=8),
        lambda: "mse", None,
    ),
    "dropout_after_output": (
        lambda: seq(L.Dense(3, activation="softmax"), L.Dropout(0.1)),
        lambda: "categorical_crossentropy", ONE_HOT,
    ),
    "poisson_exponential": (
        lambda: seq(L.Dense(8, activation="relu"), L.Dense(1, "exponential")),
        lambda: "poisson", np.array([0.0, 3.0, 250.0]),
    ),
    "poisson_softplus": (
        lambda: seq(L.Dense(8, activation="relu"), L.Dense(1, activation="softplus")),
        lambda: keras.losses.Poisson(), np.array([0.0, 1.0, 2.0]),
    ),
    "regression_targets_of_scale_under_100": (
        # Column 0: mean 90, spread 10; column 1: mean 0, spread 99.
        lambda: seq(L.Dense(8, activation="relu"), L.Dense(2)),
        lambda: "mse", np.array([[80.0, -99.0], [100.0, 99.0]]),
    ),
    "custom_loss_is_skipped": (
        lambda: seq(L.Dense(3, activation="softmax")),
        lambda: (lambda y_true, y_pred: keras.ops.mean(y_pred)), ONE_HOT,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CORRECT))
@pytest.mark.parametrize("with_labels", [False, True])
def test_correct_models_give_no_findings(name, with_labels):
    build, loss, y = CORRECT[name]
    model = compiled(build(), loss())
    assert check_model(model, y if with_labels else None) == []


def test_kl_divergence_on_sigmoids_prefers_every_output_at_one():
    # What `sigmoid_with_kl_divergence` rests on: sum(y * log(y / p)) falls
    # as every p rises; by hand, y = (0.2, 0.3, 0.5) and p = 0.99 each give
    # 0.2 ln(0.2 / 0.99) + 0.3 ln(0.3 / 0.99) + 0.5 ln(0.5 / 0.99) = -1.02,
    # below the 0 of the labels' own distribution.
    y = np.array([[0.2, 0.3, 0.5]])
    at_labels = keras.losses.kl_divergence(y, y)
    at_one = keras.losses.kl_divergence(y, np.full((1, 3), 0.99))
    expected = float(np.sum(y * np.log(y / 0.99)))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(at_one), [expected], rtol=1e-5
    )
    assert float(keras.ops.convert_to_numpy(at_one)[0]) < float(
        keras.ops.convert_to_numpy(at_labels)[0]
    )


def test_hinge_on_a_nonnegative_output_finding_text():
    # keras.losses.hinge of a -1 label is max(0, 1 + output): 1 or more for
    # any output of a sigmoid.
    loss = keras.losses.hinge(np.array([[-1.0], [-1.0]]), np.array([[0.0], [1.0]]))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loss), [1.0, 2.0])
    model = compiled(seq(L.Dense(1, activation="sigmoid", name="out")), "hinge")
    (finding,) = check_model(model)
    assert (finding.mode, finding.layer, finding.severity) == (
        "nonnegative_output_hinge",
        "out",
        FAILURE,
    )
    assert finding.message == (
        "Output activation 'sigmoid' has range [0, 1], but hinge reads the sign "
        "of the output against -1/+1 labels (0/1 labels are mapped to -1/+1): an "
        "output never below 0 puts every sample of the negative class on the "
        "wrong side, where its loss never falls below 1 (max(0, 1 + output))."
    )


def test_poisson_on_a_linear_output_finding_text():
    model = compiled(seq(L.Dense(1, name="out")), keras.losses.Poisson())
    (finding,) = check_model(model)
    assert finding.message == (
        "Output activation 'linear' ranges over [-inf, inf], but poisson is "
        "defined only for predictions above 0 (it takes their log): a "
        "prediction below 0 makes the loss NaN, from the first step for a "
        "fresh model."
    )
    assert finding.fix == (
        "Use exponential or softplus as the output activation: its "
        "predictions stay above 0."
    )


@pytest.mark.parametrize("loss", ["mse", "mae", losses.Huber()])
def test_unscaled_regression_targets_warn(loss):
    # Mean 11000, spread 1000 (population): the column's scale 11000.
    y = np.array([10000.0, 12000.0, 10000.0, 12000.0])
    model = compiled(seq(L.Dense(8, activation="relu"), L.Dense(1, name="out")), loss)
    (finding,) = check_model(model, y)
    assert (finding.mode, finding.layer, finding.severity) == (
        "unscaled_regression_targets",
        "out",
        WARNING,
    )
    assert finding.value == 11000.0
    assert "a column's mean or spread is 1.1e+04" in finding.message
    assert finding.fix.startswith("Standardize the regression targets")
    # Standardized, the same targets give nothing.
    assert check_model(model, (y - y.mean()) / y.std()) == []


def test_unscaled_targets_beyond_a_bounded_output_are_told_as_unreachable():
    model = compiled(seq(L.Dense(1, activation="sigmoid")), "mse")
    assert modes(model, np.array([1e4, 2e4])) == ["bounded_output_regression"]


def softmax_mlp(*between, softmax_as_layer=False):
    hidden = (
        [L.Dense(64, name="hidden"), L.Activation("softmax")]
        if softmax_as_layer
        else [L.Dense(64, activation="softmax", name="hidden")]
    )
    return seq(*hidden, *between, L.Dense(3, activation="softmax", name="out"))


@pytest.mark.parametrize(
    "between, as_layer",
    [([], False), ([L.Dropout(0.1)], False), ([L.BatchNormalization()], True)],
)
def test_hidden_softmax_feeding_a_dense_layer_warns(between, as_layer):
    model = compiled(
        softmax_mlp(*between, softmax_as_layer=as_layer), "categorical_crossentropy"
    )
    (finding,) = check_model(model)
    assert (finding.mode, finding.layer, finding.severity, finding.value) == (
        "hidden_softmax",
        "hidden",
        WARNING,
        64.0,
    )
    assert finding.message.startswith(
        "This hidden layer applies a softmax over 64 units and feeds out with it"
    )


def test_hidden_softmax_in_a_nested_model_is_named_by_its_path():
    inner = seq(
        L.Dense(16, activation="softmax", name="soft"), L.Dense(8, activation="relu")
    )
    inner.name = "encoder"
    model = compiled(keras.Sequential([keras.Input((4,)), inner, L.Dense(1)]), "mse")
    assert [(f.mode, f.layer) for f in check_model(model)] == [
        ("hidden_softmax", "encoder/soft")
    ]


def _attention_3d_block():
    # Softmax weights over the time steps, multiplied with the inputs.
    inputs = keras.Input((6, 4))
    weights = L.Permute((2, 1))(
        L.Dense(6, activation="softmax")(L.Permute((2, 1))(inputs))
    )
    outputs = L.Dense(1)(L.Flatten()(L.Multiply()([inputs, weights])))
    return keras.Model(inputs, outputs)


def _gated(to_dense_too):
    inputs = keras.Input((8,))
    gate = L.Dense(8, activation="softmax")(inputs)
    parts = [L.Multiply()([gate, inputs])]
    if to_dense_too:
        parts.append(L.Dense(4)(gate))
    joined = L.Concatenate()(parts) if len(parts) > 1 else parts[0]
    return keras.Model(inputs, L.Dense(1)(joined))


class _SubclassedSoftmax(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = L.Dense(16, activation="softmax")
        self.out = L.Dense(1)

    def call(self, x):
        return self.out(self.hidden(x))


def _subclassed():
    model = _SubclassedSoftmax()
    model(np.zeros((1, 4), "float32"))
    return model


@pytest.mark.parametrize(
    "build",
    [_attention_3d_block, lambda: _gated(False), lambda: _gated(True), _subclassed],
    ids=["attention_3d_block", "gate", "gate_and_dense", "subclassed"],
)
def test_softmax_weighing_other_tensors_is_not_a_hidden_softmax(build):
    assert check_model(compiled(build(), "mse")) == []


def _mlp(*initializers, activation="tanh"):
    return seq(
        *[L.Dense(16, activation, kernel_initializer=i) for i in initializers[:-1]],
        L.Dense(3, "softmax", kernel_initializer=initializers[-1]),
        inputs=8,
    )


@pytest.mark.parametrize(
    "initializers, expected, zero_after",
    [
        # Every kernel zero: both hidden layers' units are copies, and no
        # gradient reaches them (the kernels after them are zero).
        (["zeros", "zeros", "zeros"], ["dense_a", "dense_b"], True),
        # A constant 0.05 everywhere: copies too, with gradients.
        ([keras.initializers.Constant(0.05)] * 3, ["dense_a", "dense_b"], False),
        # Only the first layer zero: the random layer after it weighs its
        # units differently, and they part.
        (["zeros", "glorot_uniform", "glorot_uniform"], [], False),
        # A zero output layer (a common choice) after random layers.
        (["glorot_uniform", "glorot_uniform", "zeros"], [], False),
    ],
)
def test_symmetric_units(initializers, expected, zero_after):
    model = _mlp(*initializers)
    for layer, name in zip(model.layers, ["dense_a", "dense_b", "out"]):
        layer.name = name
    found = check_model(compiled(model, "sparse_categorical_crossentropy"))
    assert [(f.mode, f.layer, f.severity, f.value) for f in found] == [
        ("symmetric_units", name, FAILURE, 16.0) for name in expected
    ]
    for finding in found:
        assert finding.fix == (
            "Initialise kernels with random values (Keras's default "
            "`glorot_uniform`, or `he_normal` before ReLU): a zero or constant "
            "kernel initializer never breaks the symmetry between units. Biases "
            "may start at zero."
        )
        assert ("no gradient reaches this layer" in finding.message) == zero_after


def test_symmetric_units_stay_copies_in_training():
    # What the finding rests on: a fit of the constant-kernel MLP leaves
    # its hidden units identical (every kernel column equal).
    model = compiled(
        _mlp(*[keras.initializers.Constant(0.05)] * 3),
        "sparse_categorical_crossentropy",
    )
    model.optimizer = keras.optimizers.Adam(1e-2)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    model.fit(x, rng.integers(0, 3, 64), batch_size=16, epochs=2, verbose=0)
    kernel = keras.ops.convert_to_numpy(model.layers[0].kernel)
    assert np.ptp(kernel, axis=1).max() < 1e-6
    assert np.abs(kernel - 0.05).max() > 1e-3  # It did train.


def test_a_frozen_model_has_no_trainable_weights():
    model = compiled(seq(L.Dense(8, "relu"), L.Dense(3, "softmax")), "mse")
    model.trainable = False
    model.name = "frozen"
    (finding,) = check_model(model)
    assert (finding.mode, finding.layer, finding.severity) == (
        "no_trainable_weights",
        None,
        FAILURE,
    )
    assert finding.message.startswith(
        "Model 'frozen' has 4 weights and none is trainable"
    )
    model.trainable = True
    model.layers[0].trainable = False  # A frozen base under a head: fine.
    assert check_model(model) == []


@pytest.mark.parametrize(
    "channels, axis, told",
    [(1, -1, True), (1, [1, 2], False), (4, -1, False)],
)
def test_layer_normalization_over_single_values(channels, axis, told):
    # The keras.io timeseries Transformer on one channel: LayerNormalization
    # over the channel axis of (batch, T, 1) outputs its offset, 0 here, for
    # every input (checked on the layer itself).
    inputs = keras.Input((6, channels))
    norm = L.LayerNormalization(axis=axis, name="norm")
    h = norm(inputs)
    model = keras.Model(
        inputs, L.Dense(1)(L.Flatten()(L.Conv1D(4, 1, activation="relu")(h)))
    )
    x = np.random.default_rng(0).normal(size=(2, 6, channels)).astype("float32")
    constant = not np.any(keras.ops.convert_to_numpy(norm(x)))
    assert constant == told
    found = check_model(compiled(model, "mse"))
    assert [(f.mode, f.layer, f.severity) for f in found] == (
        [("constant_normalization", "norm", FAILURE)] if told else []
    )


@pytest.mark.parametrize(
    "dropout, told",
    [
        (L.Dropout(0.99, name="drop"), True),
        (L.Dropout(0.9, name="drop"), True),
        (L.Dropout(0.5, name="drop"), False),
        (L.SpatialDropout1D(0.95, name="drop"), True),
    ],
)
def test_extreme_dropout(dropout, told):
    # Keras's `rate` is the share dropped: at 0.99 one input in a hundred
    # is kept, scaled 100x (checked on the layer itself in training).
    spatial = isinstance(dropout, L.SpatialDropout1D)
    inputs = keras.Input((5, 8) if spatial else (8,))
    h = dropout(L.Dense(8, "relu")(inputs))
    model = compiled(keras.Model(inputs, L.Dense(1)(L.Flatten()(h))), "mse")
    kept = keras.ops.convert_to_numpy(
        dropout(np.ones((200, 5, 8) if spatial else (200, 8), "float32"), training=True)
    )
    assert np.unique(kept).tolist() == [0.0, pytest.approx(1 / (1 - dropout.rate))]
    found = check_model(model)
    if not told:
        assert found == []
        return
    (finding,) = found
    assert (finding.mode, finding.layer, finding.severity, finding.value) == (
        "extreme_dropout",
        "drop",
        WARNING,
        pytest.approx(dropout.rate),
    )
    assert finding.message.startswith(
        f"This dropout layer has rate {dropout.rate:g}: it drops "
        f"{dropout.rate:.0%} of its inputs at every training step (and scales "
        f"the rest {1 / (1 - dropout.rate):.3g}x"
    )


def test_mistake_found_through_dropout_after_output():
    model = compiled(
        seq(L.Dense(3, activation="softmax", name="out"), L.Dropout(0.1)),
        "binary_crossentropy",
    )
    (finding,) = check_model(model)
    assert (finding.mode, finding.layer) == ("softmax_with_binary_crossentropy", "out")


def _functional():
    inputs = keras.Input((4,))
    hidden = L.Dense(8, activation="relu")(inputs)
    return keras.Model(inputs, L.Dense(3, activation="softmax", name="head")(hidden))


class Subclassed(keras.Model):
    def __init__(self, activation):
        super().__init__()
        self.hidden = L.Dense(8, activation="relu")
        self.logits = L.Dense(3)
        self.out = L.Activation(activation, name="out_activation")

    def call(self, x):
        return self.out(self.logits(self.hidden(x)))


def _subclassed(activation):
    model = Subclassed(activation)
    model(np.zeros((1, 4), "float32"))
    return model


@pytest.mark.parametrize(
    "build",
    [
        lambda: seq(L.Dense(8, activation="relu"), L.Dense(3, activation="softmax")),
        _functional,
        lambda: _subclassed("softmax"),
        lambda: seq(keras.Sequential([L.Dense(8, activation="relu"),
                                      L.Dense(3, activation="softmax")])),
    ],
    ids=["sequential", "functional", "subclassed", "nested"],
)  # fmt: skip
def test_model_kinds(build):
    assert modes(compiled(build(), "categorical_crossentropy"), ONE_HOT) == []
    assert modes(compiled(build(), "binary_crossentropy"), ONE_HOT) == [
        "softmax_with_binary_crossentropy"
    ]
    assert modes(compiled(build(), "sparse_categorical_crossentropy"), ONE_HOT) == [
        "one_hot_labels_sparse_loss"
    ]


def test_subclassed_units_from_last_layer_with_units():
    model = compiled(_subclassed("softmax"), "sparse_categorical_crossentropy")
    (finding,) = check_model(model, np.array([0, 5, 1]))
    assert finding.mode == "class_count_mismatch"
    assert finding.layer == "out_activation"
    assert "6 classes" in finding.message and "3 units" in finding.message


class DecoderFirst(keras.Model):
    """An autoencoder whose decoder is set before its encoder: its last
    layer in `model.layers` order is the encoder's 2-unit code."""

    def __init__(self, out_units=6):
        super().__init__()
        self.decoder = keras.Sequential(
            [L.Dense(8, activation="relu"), L.Dense(out_units, activation="sigmoid")],
            name="decoder",
        )
        self.encoder = keras.Sequential(
            [L.Dense(8, activation="relu"), L.Dense(2)], name="encoder"
        )

    def call(self, x):
        return self.decoder(self.encoder(x))


def test_subclassed_output_found_by_its_shape():
    model = DecoderFirst()
    model(np.zeros((1, 6), "float32"))
    (out,) = walk.outputs(model)
    # The symbolic call gives (batch, 6): the decoder's last layer, not the
    # encoder's (batch, 2) code.
    assert (out.layer.name, out.units) == (model.decoder.layers[-1].name, 6)
    # Its labels: the inputs, 6 columns in [0, 1] for a sigmoid with binary
    # cross-entropy, a correct model (the encoder's 2 units would mismatch).
    x = np.array([[0.0, 1.0, 1.0, 0.0, 0.5, 1.0]] * 4, "float32")
    assert check_model(compiled(model, "binary_crossentropy"), x) == []
    # With sigmoid outputs under categorical cross-entropy, the decoder's.
    found = check_model(compiled(model, "categorical_crossentropy"))
    assert [(f.mode, f.layer) for f in found] == [
        ("sigmoid_with_categorical_crossentropy", out.layer.name)
    ]


def test_subclassed_output_shape_is_found_once_per_model():
    class Counted(DecoderFirst):
        calls = 0

        def compute_output_spec(self, *args, **kwargs):
            Counted.calls += 1
            return super().compute_output_spec(*args, **kwargs)

    model = Counted()
    model(np.zeros((1, 6), "float32"))
    before = Counted.calls
    first, second = walk.outputs(model), walk.outputs(model)
    assert first == second and first[0].units == 6
    assert Counted.calls == before + 1


def test_subclassed_output_shape_no_layer_has():
    # The decoder's 6 units summed to one per sample by `call`: no layer
    # makes the (batch, 1) output, so no output layer is checked.
    class Summed(DecoderFirst):
        def call(self, x):
            return keras.ops.sum(super().call(x), axis=-1, keepdims=True)

    model = Summed()
    model(np.zeros((1, 6), "float32"))
    assert walk.outputs(model) == []
    assert check_model(compiled(model, "binary_crossentropy"), np.ones((4, 1))) == []


def _two_outputs():
    inputs = keras.Input((4,))
    hidden = L.Dense(8, activation="relu")(inputs)
    a = L.Dense(3, activation="softmax", name="a")(hidden)
    b = L.Dense(1, activation="sigmoid", name="b")(hidden)
    return keras.Model(inputs, [a, b])


def test_multi_output_dict_and_list_losses():
    y = {"a": ONE_HOT, "b": np.array([0.5, 3.0, 0.1, 0.2])}
    model = compiled(_two_outputs(), {"a": "binary_crossentropy", "b": "mse"})
    found = {(f.mode, f.layer) for f in check_model(model, y)}
    assert found == {
        ("softmax_with_binary_crossentropy", "a"),
        ("bounded_output_regression", "b"),
    }
    model = compiled(_two_outputs(), ["categorical_crossentropy", "mse"])
    assert {(f.mode, f.layer) for f in check_model(model, [ONE_HOT, y["b"]])} == {
        ("bounded_output_regression", "b")
    }
    model = compiled(_two_outputs(), {"a": "categorical_crossentropy", "b": "bce"})
    assert check_model(model, {"a": ONE_HOT, "b": BINARY}) == []


def test_multi_output_labels_of_unknown_layout_are_skipped():
    model = compiled(_two_outputs(), ["categorical_crossentropy", "mse"])
    assert check_model(model, np.array([5.0, 3.0, 0.1, 0.2])) == []


def test_output_made_by_a_bare_op_is_skipped():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.ops.softmax(L.Dense(3)(inputs)))
    assert modes(compiled(model, "categorical_crossentropy"), SPARSE) == [
        "integer_labels_categorical_loss"
    ]


def test_uncompiled_model_gets_structural_checks_only():
    model = seq(*[L.Dense(4, activation="sigmoid") for _ in range(4)], L.Dense(3))
    assert modes(model, ONE_HOT) == ["deep_saturating_stack"]
    assert modes(seq(L.Dense(1, activation="softmax"))) == ["softmax_single_unit"]


@pytest.mark.parametrize(
    "hidden, expected",
    [
        (lambda: [L.Dense(4, activation="sigmoid") for _ in range(4)], 4),
        # A tanh layer counts half a sigmoid layer: 8 tanh reach depth 4.
        (lambda: [L.Dense(4, activation="tanh") for _ in range(8)], 8),
        (lambda: [L.Dense(4, activation="tanh") for _ in range(7)], None),
        (
            # sigmoid + tanh + sigmoid + sigmoid + tanh = 1 + .5 + 1 + 1 + .5 = 4
            lambda: [L.Dense(4), L.Activation("sigmoid"), L.Dense(4),
                     keras_actloss.layers.Tanh(), L.Dense(4, activation="sigmoid"),
                     L.BatchNormalization(), L.Dense(4, activation="sigmoid"),
                     L.Dense(4, activation="tanh")],
            5,
        ),
        (lambda: [L.Dense(4, activation="sigmoid") for _ in range(3)], None),
        (
            lambda: [L.Dense(4, activation="sigmoid"), L.Dense(4, activation="sigmoid"),
                     L.Dense(4, activation="relu"), L.Dense(4, activation="sigmoid"),
                     L.Dense(4, activation="sigmoid")],
            None,
        ),
    ],
    ids=[
        "sigmoid4", "tanh8", "tanh7", "activation_layers", "sigmoid3",
        "broken_by_relu",
    ],
)  # fmt: skip
def test_deep_saturating_stack(hidden, expected):
    model = compiled(seq(*hidden(), L.Dense(1, activation="sigmoid")), "bce")
    findings = check_model(model, BINARY)
    if expected is None:
        assert findings == []
        return
    (finding,) = findings
    assert finding.mode == "deep_saturating_stack"
    assert finding.severity == WARNING
    assert finding.value == expected
    assert finding.layer == model.layers[0].name


@pytest.mark.parametrize(
    "activation, told, untold",
    [
        ("sigmoid", "at most 0.25 for sigmoid", "tanh"),
        # Keras's hard sigmoid, relu6(x + 3) / 6: slope 1/6, not sigmoid's 1/4.
        ("hard_sigmoid", "at most 1/6 for hard_sigmoid", "0.25"),
        ("tanh", "about 0.6 on average for tanh", "sigmoid"),
    ],
)
def test_deep_saturating_stack_quotes_its_own_activations_derivative(
    activation, told, untold
):
    hidden = [L.Dense(4, activation=activation) for _ in range(8)]
    model = compiled(seq(*hidden, L.Dense(1, activation="sigmoid")), "bce")
    (finding,) = check_model(model, BINARY)
    assert finding.mode == "deep_saturating_stack"
    assert f"derivative ({told}), so" in finding.message
    assert untold not in finding.message


@pytest.mark.parametrize(
    "rnn, steps, expected",
    [
        (lambda: L.SimpleRNN(8), 100, 100.0),
        (lambda: L.SimpleRNN(8, activation="sigmoid"), 50, 50.0),
        (lambda: L.SimpleRNN(8), 49, None),
        (lambda: L.SimpleRNN(8, activation="relu"), 100, None),
        (lambda: L.LSTM(8), 100, None),
        (lambda: L.GRU(8), 100, None),
        (lambda: L.Bidirectional(L.SimpleRNN(8)), 60, 60.0),
        (lambda: L.SimpleRNN(8), None, None),
    ],
    ids=[
        "tanh100", "sigmoid50", "tanh49", "relu", "lstm", "gru",
        "bidirectional60", "unknown_length",
    ],
)  # fmt: skip
def test_long_saturating_rnn(rnn, steps, expected):
    # A SimpleRNN with tanh or sigmoid over 50 steps or more: the gradient
    # vanishes through time (measured on a 32-unit tanh SimpleRNN over 100
    # steps: 0.89 a step, see `layer_checks`); gated cells, ReLU and shorter
    # or unknown lengths are not flagged.
    layer = rnn()
    model = compiled(
        sequence_model(layer, L.Dense(1, activation="sigmoid"), steps=steps),
        "bce",
    )
    findings = check_model(model, BINARY)
    if expected is None:
        assert findings == []
        return
    (finding,) = findings
    assert (finding.mode, finding.severity) == ("long_saturating_rnn", WARNING)
    assert (finding.layer, finding.value) == (layer.name, expected)
    assert (
        finding.message.startswith("This SimpleRNN (")
        and f"runs {steps} time" in finding.message
    )
    assert finding.fix.startswith("Use an LSTM or a GRU")


@pytest.mark.parametrize(
    "forget, wrap, expected",
    [
        (-6.0, False, True),
        (-3.0, True, True),
        (-2.9, False, False),
        (1.0, False, False),
    ],
)
def test_closed_forget_gate(forget, wrap, expected):
    # Round 15b R7: an LSTM whose forget gate's biases (the second quarter
    # of its bias: gates i, f, c, o) are -6 keeps sigmoid(-6) = 0.25% of its
    # cell state a step; at -3 (4.7%) and below it is told; Keras's 1 not.
    lstm = L.LSTM(4)
    layer = L.Bidirectional(lstm) if wrap else lstm
    model = compiled(sequence_model(layer, L.Dense(1, activation="sigmoid")), "bce")
    cells = [lstm.cell]
    if wrap:
        cells = [layer.forward_layer.cell, layer.backward_layer.cell]
    for cell in cells:
        bias = np.zeros(16, "float32")
        bias[4:8] = forget
        cell.bias.assign(bias)
    found = check_model(model, BINARY)
    if not expected:
        assert found == []
        return
    kept = 1 / (1 + math.exp(-forget))
    # One finding for a Bidirectional's two directions.
    assert [(f.mode, f.severity, f.layer, f.value) for f in found] == [
        ("closed_forget_gate", WARNING, layer.name, forget)
    ]
    assert found[0].message == (
        f"The forget gate of this LSTM has biases of {forget:.3g} on average: it "
        f"keeps about {kept:.2%} of its cell state a step, so the layer remembers "
        "almost nothing past the last steps and the gradient through time "
        "vanishes."
    )
    assert found[0].fix.startswith("Initialise the forget gate's biases at 1")


def test_long_saturating_rnn_of_a_subclassed_model_once_built():
    # No graph: the length is the one the layer was built with.
    class Reader(keras.Model):
        def __init__(self):
            super().__init__()
            self.rnn = L.SimpleRNN(4)
            self.out = L.Dense(1, activation="sigmoid")

        def call(self, x):
            return self.out(self.rnn(x))

    model = Reader()
    model(np.zeros((2, 80, 3), "float32"))
    found = check_model(compiled(model, "bce"))
    assert [(f.mode, f.value) for f in found] == [("long_saturating_rnn", 80.0)]


def test_deep_stack_in_two_runs_gives_two_findings():
    block = [L.Dense(4, activation="sigmoid") for _ in range(4)]
    other = [L.Dense(4, activation="tanh") for _ in range(8)]
    model = seq(*block, L.Dense(4, activation="relu"), *other, L.Dense(1))
    found = [(f.layer, f.value) for f in check_model(compiled(model, "mse"))]
    assert found == [(block[0].name, 4.0), (other[0].name, 8.0)]


def test_dead_bias_fraction_hand_computed():
    # Columns have norms 5 (3-4-0), 1 and 2; biases -6, -0.5, -2.5:
    # -6 < -5 (at risk), -0.5 > -1 (not), -2.5 < -2 (at risk): 2 of 3.
    kernel = np.array([[3.0, 1.0, 0.0], [4.0, 0.0, 2.0], [0.0, 0.0, 0.0]])
    bias = np.array([-6.0, -0.5, -2.5])
    assert check.dead_bias_fraction(kernel, bias) == pytest.approx(2 / 3)
    assert check.dead_bias_fraction(kernel, np.zeros(3)) == 0.0
    assert check.dead_bias_fraction(kernel, np.zeros(2)) is None


@pytest.mark.parametrize(
    "bias, activation, expected",
    [
        (-1.0, "relu", 1.0),  # the kernel below: every ||w_j|| in [0.59, 0.95]
        (-0.5, "relu", None),
        (0.0, "relu", None),
        (-1.0, "elu", None),
    ],
)
def test_negative_bias_relu(bias, activation, expected):
    # A Glorot-uniform draw (limit sqrt(6 / (8 + 16)) = 0.5) from NumPy, so the
    # kernel is the same on every backend.
    kernel = np.random.default_rng(2).uniform(-0.5, 0.5, (8, 16)).astype("float32")
    init = keras.initializers.Constant(bias)
    dense = L.Dense(16, activation=activation, bias_initializer=init, name="hidden")
    model = compiled(seq(dense, L.Dense(1), inputs=8), "mse")
    dense.kernel.assign(kernel)
    reference = np.mean(bias < -np.linalg.norm(kernel, axis=0))
    with warnings.catch_warnings():
        # Reading the weights warns nothing: NumPy 2 warns on `np.asarray` of
        # a Keras 3.15 variable, and on JAX on `Variable.numpy()` too.
        warnings.simplefilter("error")
        findings = check_model(model)
    if expected is None:
        assert findings == []
        return
    assert reference == expected
    (finding,) = findings
    assert (finding.mode, finding.layer, finding.severity) == (
        "negative_bias_relu",
        "hidden",
        WARNING,
    )
    assert finding.value == pytest.approx(reference)


def test_negative_bias_relu_conv_and_trailing_relu_layer():
    conv = L.Conv2D(4, 3, bias_initializer=keras.initializers.Constant(-2.0), name="c")
    model = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            conv,
            keras_actloss.layers.ReLU(),
            L.Flatten(),
            L.Dense(1),
        ]
    )
    (finding,) = check_model(compiled(model, "mse"))
    assert (finding.mode, finding.layer) == ("negative_bias_relu", "c")


def test_layer_checks_name_nested_layers_by_their_path():
    # Two nested feed-forward blocks, each with a Dense named "ff1"; only the
    # second's biases are negative. The finding names it "ffn1/ff1", as
    # GradientDiagnostics names the layer it watches (`plan_layers`), not
    # the bare "ff1" of both.
    def block(name, bias):
        init = keras.initializers.Constant(bias)
        ff1 = L.Dense(8, activation="relu", bias_initializer=init, name="ff1")
        layers = [keras.Input((4,)), ff1, L.Dense(4, name="ff2")]
        return keras.Sequential(layers, name=name)

    inputs = keras.Input((4,))
    outputs = L.Dense(1)(block("ffn1", -5.0)(block("ffn0", 0.0)(inputs)))
    model = compiled(keras.Model(inputs, outputs), "mse")
    (finding,) = check_model(model)
    assert (finding.mode, finding.layer) == ("negative_bias_relu", "ffn1/ff1")
    planned = [plan.info.name for plan in plan_layers(model)]
    assert {"ffn0/ff1", "ffn1/ff1"} <= set(planned)


# Layers whose kernel is not `(fan_in, units)` as it is: each is built with
# stride 1 and "valid" padding on an input of 5 positions a side, so the
# output position `centre` sees the whole window.
UNIT_KERNEL_LAYERS = {
    "dense": (lambda: L.Dense(4), (3,), ()),
    "conv2d": (lambda: L.Conv2D(4, 3), (5, 5, 3), (1, 1)),
    "depthwise1d": (lambda: L.DepthwiseConv1D(3, depth_multiplier=2), (5, 3), (1,)),
    "depthwise2d": (
        lambda: L.DepthwiseConv2D(3, depth_multiplier=2),
        (5, 5, 3),
        (1, 1),
    ),
    "separable1d": (lambda: L.SeparableConv1D(4, 3, depth_multiplier=2), (5, 3), (1,)),
    "separable2d": (
        lambda: L.SeparableConv2D(4, 3, depth_multiplier=2),
        (5, 5, 3),
        (1, 1),
    ),
    # Output 7 a side: position 3 gets all 3 taps from inputs 1-3.
    "transpose2d": (lambda: L.Conv2DTranspose(4, 3), (5, 5, 3), (3, 3)),
    "transpose1d": (lambda: L.Conv1DTranspose(4, 3), (5, 3), (3,)),
}


@pytest.mark.parametrize("kind", sorted(UNIT_KERNEL_LAYERS))
def test_unit_kernel_columns_are_each_units_weights(kind):
    # The layer itself, linear and without bias, applied to every basis input
    # (one element 1, the rest 0) gives, at an output position that sees its
    # whole window, each unit's weight for that input element: the Jacobian.
    # Its rows' norms are the units' pre-activation spread for standardized
    # inputs, which `unit_kernel`'s column norms must match.
    make, shape, centre = UNIT_KERNEL_LAYERS[kind]
    layer = make()
    layer.use_bias = False
    keras.utils.set_random_seed(3)
    layer.build((None, *shape))
    size = int(np.prod(shape))
    basis = np.eye(size, dtype="float32").reshape(size, *shape)
    out = keras.ops.convert_to_numpy(layer(basis))
    jacobian = out[(slice(None), *centre)].T  # (units, fan_in)
    kernel = layer_checks.unit_kernel(layer)
    np.testing.assert_allclose(
        np.linalg.norm(kernel, axis=0), np.linalg.norm(jacobian, axis=1), rtol=1e-5
    )


@pytest.mark.parametrize(
    "layer",
    [
        lambda bias: L.DepthwiseConv2D(3, bias_initializer=bias, name="c"),
        lambda bias: L.SeparableConv2D(4, 3, bias_initializer=bias, name="c"),
        lambda bias: L.Conv2DTranspose(4, 3, bias_initializer=bias, name="c"),
    ],
    ids=["depthwise", "separable", "transpose"],
)
def test_negative_bias_relu_on_depthwise_separable_and_transposed_convs(layer):
    # Keras's default initialisers give these columns norms of about 1 or less
    # (Glorot uniform over 27 or more inputs and outputs; a separable unit's
    # column is a sum of products of two such kernels): a bias of -5 is below
    # minus every one of them.
    conv = layer(keras.initializers.Constant(-5.0))
    model = keras.Sequential(
        [keras.Input((6, 6, 3)), conv, L.ReLU(), L.Flatten(), L.Dense(1)]
    )
    kernel = layer_checks.unit_kernel(conv)
    assert np.linalg.norm(kernel, axis=0).max() < 5.0
    (finding,) = check_model(compiled(model, "mse"))
    assert (finding.mode, finding.layer, finding.value) == (
        "negative_bias_relu",
        "c",
        1.0,
    )


@pytest.mark.parametrize(
    "model, pattern",
    [
        (
            "not a model",
            r"Expected a Keras model\. Received: model='not a model' of type str",
        ),
        (
            keras.Sequential([L.Dense(2)], name="lazy"),
            r"Expected a built model.*model='lazy'",
        ),
    ],
)
def test_bad_model_raises(model, pattern):
    with pytest.raises(ValueError, match=pattern):
        check_model(model)


def test_unusable_labels_raise():
    model = compiled(seq(L.Dense(1, activation="sigmoid")), "bce")
    with pytest.raises(ValueError, match=r"Expected finite labels `y`"):
        check_model(model, np.array([0.0, np.nan]))


def test_exported_at_top_level():
    assert keras_actloss.advisor.check_model is check_model


def _segmenter(units, activation):
    return seq(
        L.Reshape((4, 4, 1)), L.Conv2D(units, 1, activation=activation), inputs=16
    )


def test_per_position_labels():
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 3, (2, 4, 4))
    model = compiled(_segmenter(3, "softmax"), "sparse_categorical_crossentropy")
    assert check_model(model, mask) == []
    model = compiled(_segmenter(3, "softmax"), "categorical_crossentropy")
    assert modes(model, mask) == ["integer_labels_categorical_loss"]
    assert check_model(model, np.eye(3)[mask]) == []
    model = compiled(_segmenter(1, "sigmoid"), "mse")
    assert modes(model, rng.normal(size=(2, 4, 4, 1))) == ["bounded_output_regression"]


class InlineSoftmax(keras.Model):
    def __init__(self):
        super().__init__()
        self.logits = L.Dense(3)

    def call(self, x):
        return keras.ops.softmax(self.logits(x))


def test_subclassed_linear_last_layer_counts_as_unknown():
    model = InlineSoftmax()
    model(np.zeros((1, 4), "float32"))
    assert check_model(compiled(model, "categorical_crossentropy"), ONE_HOT) == []
    # What does not depend on the activation is still checked.
    model.compile(loss="categorical_crossentropy")
    assert modes(model, SPARSE) == ["integer_labels_categorical_loss"]


def test_labels_as_tensor_or_list():
    model = compiled(seq(L.Dense(3, activation="softmax")), "categorical_crossentropy")
    assert modes(model, keras.ops.convert_to_tensor(SPARSE)) == [
        "integer_labels_categorical_loss"
    ]
    assert modes(model, [0, 1, 2]) == ["integer_labels_categorical_loss"]


def test_integer_classes_under_binary_cross_entropy_name_the_multiclass_loss():
    # 4 integer classes under binary cross-entropy: the fix is the
    # multi-class loss, not "give the output layer 1 units".
    model = compiled(seq(L.Dense(1, activation="sigmoid")), "binary_crossentropy")
    (finding,) = check_model(model, np.array([0, 3, 1, 2]))
    assert finding.mode == "class_count_mismatch"
    assert finding.message == (
        "Labels hold 4 classes but binary cross-entropy needs 0/1 labels."
    )
    assert finding.fix == (
        "For 4 exclusive classes use SparseCategoricalCrossentropy with 4 "
        "softmax output units, or check the labels."
    )


def _decay_optimizers():
    sgd = keras.optimizers.SGD
    adamw = keras.optimizers.AdamW
    halving = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    # (optimizer, the share of every weight its decay takes a step, or
    # None where it is not told: under `DECAY_SHARE`, 1e-2).
    return [
        (adamw(1e-2, weight_decay=50.0), 0.5),
        (sgd(0.1, weight_decay=0.1), 0.01),  # 0.1 * 0.1: the bound itself.
        (sgd(0.1, weight_decay=0.09), None),  # 9e-3.
        (adamw(), None),  # Keras's defaults: 1e-3 * 0.004 = 4e-6.
        (keras.optimizers.Adam(1e-2), None),  # No decay.
        (keras.optimizers.LossScaleOptimizer(adamw(1e-2, weight_decay=5.0)), 0.05),
        (adamw(halving, weight_decay=1.0), 0.1),  # The schedule at step 0.
    ]


@pytest.mark.parametrize("optimizer, share", _decay_optimizers())
def test_heavy_weight_decay(optimizer, share):
    model = seq(L.Dense(8, activation="relu"), L.Dense(1))
    model.compile(optimizer=optimizer, loss="mse")
    found = check_model(model)
    if share is None:
        assert found == []
        return
    (finding,) = found
    assert (finding.mode, finding.layer, finding.severity, finding.step) == (
        "heavy_weight_decay",
        None,
        WARNING,
        None,
    )
    assert finding.value == pytest.approx(share)
    assert finding.fix.startswith("Lower the optimizer's `weight_decay`")
    assert finding.mode in check.CHECK_MODES


def test_heavy_weight_decay_message():
    # 0.01 * 50 = 0.5 of every weight a step: 0.5 ** 100 = 7.9e-31 left
    # after 100 steps of decay alone.
    model = seq(L.Dense(8, activation="relu"), L.Dense(1))
    model.compile(optimizer=keras.optimizers.AdamW(1e-2, weight_decay=50.0), loss="mse")
    (finding,) = check_model(model)
    assert finding.message.startswith(
        "The optimizer's decoupled weight decay takes 0.5 of every weight each "
        "step (learning rate 0.01 times weight_decay 50): on its own it leaves "
        "7.9e-31 of a weight after 100 steps"
    )


def test_no_optimizer_check_before_compile():
    model = seq(L.Dense(8, activation="relu"), L.Dense(1))
    assert check_model(model) == []


class _Unregistered(keras.optimizers.schedules.LearningRateSchedule):
    """A schedule of the user's that Keras cannot rebuild from a config."""

    def __call__(self, step):
        return keras.ops.where(step < 10, 0.0, 0.5)

    def get_config(self):
        return {}


def test_heavy_weight_decay_at_a_schedules_peak():
    # A warm-up from 0 to 1e-2 over 100 steps: nothing at step 0, 0.05 of
    # every weight a step at its peak (1e-2 * 5), read at step 100.
    warm = keras.optimizers.schedules.CosineDecay(
        0.0, 1000, warmup_target=1e-2, warmup_steps=100
    )
    model = seq(L.Dense(8, activation="relu"), L.Dense(1))
    model.compile(optimizer=keras.optimizers.AdamW(warm, weight_decay=5.0), loss="mse")
    (finding,) = check_model(model)
    assert finding.value == pytest.approx(0.05)
    assert finding.message.startswith(
        "The optimizer's decoupled weight decay will take 0.05 of every weight "
        "each step (learning rate 0.01 at step 100 of its schedule times "
        "weight_decay 5)"
    )
    # A schedule Keras cannot rebuild is read at the current step only: 0.
    model.compile(
        optimizer=keras.optimizers.AdamW(_Unregistered(), weight_decay=5.0), loss="mse"
    )
    assert check_model(model) == []
