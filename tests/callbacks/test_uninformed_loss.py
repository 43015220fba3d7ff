"""`_callback_support.uninformed_loss`: the loss of a prediction that knows
nothing, which `HealthRules` compares the first steps' loss with.

No TensorFlow import here: this module also runs in `.ci/run`'s JAX stage.
"""

import math

import keras
import pytest

import keras_actloss
from keras_actloss.callbacks._callback_support import uninformed_loss


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
    ],
)
def test_unknown(units, activation, loss):
    assert uninformed_loss(model(units, activation, loss)) is None


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
