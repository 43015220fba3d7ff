"""Vanishing gradients: a deep sigmoid network, and the fix (ReLU).

Each sigmoid multiplies the backward signal by at most 0.25, so the first
layers of a deep sigmoid stack get gradients orders of magnitude smaller than
the last ones and stop learning. GradientDiagnostics flags
`vanishing_gradients` on the early layers; the same network with ReLU trains.

Run: python examples/vanishing_gradients.py [--tiny] [--logdir runs/vanishing_gradients]
"""

import keras
import numpy as np
from _common import fit_and_diagnose, parse_args, seed

import keras_actloss


def make_model(activation: str, depth: int = 8) -> keras.Model:
    init = "glorot_uniform" if activation == "sigmoid" else "he_normal"
    model = keras.Sequential([keras.Input((16,))])
    for _ in range(depth):
        model.add(keras.layers.Dense(32, activation, kernel_initializer=init))
    model.add(keras.layers.Dense(1))  # logits
    model.compile(
        optimizer=keras.optimizers.SGD(0.05),
        loss=keras_actloss.losses.BinaryCrossentropy(from_logits=True),
    )
    return model


if __name__ == "__main__":
    args = parse_args(__doc__)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512 if args.tiny else 4096, 16)).astype("float32")
    y = (x @ rng.normal(size=16) > 0).astype("float32")[:, None]
    epochs = 3 if args.tiny else 10

    seed()
    found = fit_and_diagnose(
        make_model("sigmoid"), x, y, "8 sigmoid layers", epochs, args.logdir
    )
    assert "vanishing_gradients" in {f.mode for f in found}
    seed()
    fixed = fit_and_diagnose(make_model("relu"), x, y, "fix: ReLU", epochs, args.logdir)
    assert not fixed
