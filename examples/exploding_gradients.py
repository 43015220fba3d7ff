"""Exploding gradients: too high a learning rate, and three fixes.

With plain SGD at lr=0.1 on this regression, each update overshoots, the
weights grow, the gradients grow with them, and within a few steps the loss is
NaN. GradientDiagnostics flags `exploding_gradients` (and `non_finite` when
the NaN arrives) at the step it happens. A lower learning rate, batch
normalization or gradient clipping each fix it.

Run: python examples/exploding_gradients.py [--tiny] [--logdir runs/exploding_gradients]
"""

import keras
import numpy as np
from _common import fit_and_diagnose, parse_args, seed

import keras_actloss


def make_model(lr: float, batch_norm: bool = False, clipnorm=None) -> keras.Model:
    model = keras.Sequential([keras.Input((16,))])
    for _ in range(3):
        model.add(keras.layers.Dense(64, kernel_initializer="he_normal"))
        if batch_norm:
            model.add(keras.layers.BatchNormalization())
        model.add(keras_actloss.layers.ReLU())
    model.add(keras.layers.Dense(1))
    model.compile(
        optimizer=keras.optimizers.SGD(lr, clipnorm=clipnorm),
        loss=keras_actloss.losses.MeanSquaredError(),
    )
    return model


if __name__ == "__main__":
    args = parse_args(__doc__)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(512 if args.tiny else 4096, 16)).astype("float32")
    y = (x @ rng.normal(size=16)).astype("float32")[:, None]
    epochs = 3 if args.tiny else 8

    runs = [
        ("SGD lr=0.1", {"lr": 0.1}),
        ("fix: lr=0.01", {"lr": 0.01}),
        ("fix: batch normalization", {"lr": 0.1, "batch_norm": True}),
        ("fix: clipnorm=1", {"lr": 0.1, "clipnorm": 1.0}),
    ]
    for i, (title, kwargs) in enumerate(runs):
        seed()
        found = fit_and_diagnose(make_model(**kwargs), x, y, title, epochs, args.logdir)
        if i == 0:
            assert "exploding_gradients" in {f.mode for f in found}
        else:
            assert not found
