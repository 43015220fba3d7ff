"""Dead ReLUs: a learning rate that knocks units out, and the fix.

A ReLU unit whose pre-activation is negative for every input outputs zero,
gets zero gradient and never recovers. A large Adam step early in training
pushes many units there. GradientDiagnostics counts units that are zero for
every sample of a batch (not just zero activations: about half of a healthy
ReLU layer's outputs are zero) and flags `dead_relu`. Leaky ReLU keeps a small
gradient for negative inputs; a lower learning rate avoids the big step.

Run: python examples/dead_relu.py [--tiny] [--logdir runs/dead_relu]
"""

import keras
import numpy as np
from _common import fit_and_diagnose, parse_args, seed

import keras_actloss


def make_model(activation, lr: float) -> keras.Model:
    model = keras.Sequential([keras.Input((16,))])
    for _ in range(3):
        model.add(keras.layers.Dense(64, kernel_initializer="he_normal"))
        model.add(activation())
    model.add(keras.layers.Dense(1))  # logits
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras_actloss.losses.BinaryCrossentropy(from_logits=True),
    )
    return model


if __name__ == "__main__":
    args = parse_args(__doc__)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512 if args.tiny else 4096, 16)).astype("float32")
    w = rng.normal(size=16)
    y = (np.tanh(x @ w) + 0.3 * np.sin(3 * x[:, 0]) > 0).astype("float32")[:, None]
    epochs = 3 if args.tiny else 8

    seed()
    model = make_model(keras_actloss.layers.ReLU, lr=0.2)
    found = fit_and_diagnose(model, x, y, "ReLU, Adam lr=0.2", epochs, args.logdir)
    assert "dead_relu" in {f.mode for f in found}
    seed()
    model = make_model(lambda: keras_actloss.layers.LeakyReLU(0.1), lr=1e-3)
    fixed = fit_and_diagnose(
        model, x, y, "fix: Leaky ReLU, lr=0.001", epochs, args.logdir
    )
    assert not fixed
