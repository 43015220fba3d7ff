"""Choosing the output activation and loss from the labels, and checking a model.

`keras_actloss.advise(y)` reads the labels (binary, integer classes, one-hot,
multi-hot, distributions, continuous with or without outliers, -1/+1) and
recommends the output layer and loss. `keras_actloss.check_model(model, y)`
finds the classic mismatches in a compiled model, such as a softmax output
trained with binary cross-entropy.

Run: python examples/choosing_loss_and_activation.py [--tiny]
"""

import keras
import numpy as np
from _common import parse_args

import keras_actloss


def labels(n: int, rng) -> dict:
    classes = rng.integers(0, 4, size=n)
    regression = rng.normal(size=(n, 1))
    regression[: n // 20] *= 50  # a few wild outliers
    dist = rng.dirichlet(np.ones(3), size=n)
    return {
        "binary 0/1": rng.integers(0, 2, size=(n, 1)),
        "integer classes": classes,
        "one-hot": np.eye(4)[classes],
        "multi-hot": rng.integers(0, 2, size=(n, 5)),
        "distributions": dist,
        "continuous": rng.normal(size=(n, 1)),
        "continuous with outliers": regression,
        "-1/+1": rng.choice([-1.0, 1.0], size=(n, 1)),
    }


def classifier(output: keras.layers.Layer, loss) -> keras.Model:
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(16, activation="relu"), output]
    )
    model.compile(optimizer="adam", loss=loss)
    return model


if __name__ == "__main__":
    args = parse_args(__doc__)
    rng = np.random.default_rng(0)
    for kind, y in labels(100 if args.tiny else 1000, rng).items():
        rec = keras_actloss.advise(y)
        print(f"\n== {kind}\n{rec}")

    y = rng.integers(0, 4, size=(64,))
    wrong = classifier(
        keras.layers.Dense(4, activation="softmax"),
        keras_actloss.losses.BinaryCrossentropy(),
    )
    print("\n== softmax output with binary cross-entropy and integer labels")
    found = keras_actloss.check_model(wrong, y)
    for finding in found:
        print(f"  {finding}")
    assert found

    right = classifier(
        keras.layers.Dense(4, activation="softmax"),
        keras_actloss.losses.SparseCategoricalCrossentropy(),
    )
    print("\n== fixed: softmax with sparse categorical cross-entropy")
    assert keras_actloss.check_model(right, y) == []
    print("  no findings")
