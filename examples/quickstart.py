"""Quick start: pick the output layer and loss, train with diagnostics, report.

1. `keras_actloss.advise(y)` recommends the output activation and loss.
2. `keras_actloss.check_model` confirms the compiled model matches the labels.
3. `GradientDiagnostics` watches the real gradients while `fit` runs and
   writes TensorBoard logs; `keras-actloss report LOGDIR` reads them back.

Run: python examples/quickstart.py [--tiny] [--logdir runs/quickstart]
"""

import tempfile

import keras
import numpy as np
from _common import parse_args

import keras_actloss
from keras_actloss.callbacks import GradientDiagnostics

if __name__ == "__main__":
    args = parse_args(__doc__)
    logdir = args.logdir or tempfile.mkdtemp(prefix="keras-actloss-quickstart-")
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    n = 512 if args.tiny else 4096
    x = rng.normal(size=(n, 10)).astype("float32")
    y = np.argmax(x[:, :3] + 0.1 * rng.normal(size=(n, 3)), axis=1)  # 3 classes

    rec = keras_actloss.advise(y)
    print(rec, "\n")

    model = keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dense(64),
            keras_actloss.layers.ReLU(),
            keras.layers.Dense(64),
            keras_actloss.layers.ReLU(),
            keras.layers.Dense(rec.output_units, activation=rec.output_activation),
        ]
    )
    model.compile(optimizer="adam", loss=rec.loss, metrics=rec.metrics)
    assert keras_actloss.check_model(model, y) == []

    diag = GradientDiagnostics(log_dir=logdir)
    model.fit(
        x, y, epochs=2 if args.tiny else 5, batch_size=64, verbose=2, callbacks=[diag]
    )
    print("findings:", diag.findings or "none")

    from keras_actloss import cli

    cli.report(logdir)
    print(f"\nTensorBoard: tensorboard --logdir {logdir}")
