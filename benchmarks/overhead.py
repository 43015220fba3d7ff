"""Overhead of GradientDiagnostics on `model.fit`, against a plain `fit`.

Runs, in one process and alternating, a plain `fit`, `fit` with
`GradientDiagnostics` at its default settings, with full statistics every
step (`every_n_steps=1`), and with `keras.callbacks.TensorBoard(
histogram_freq=1)` for comparison, on an MLP and a small CNN at batch size
128 on random MNIST-shaped data. Each run builds a fresh model, fits one
short warm-up epoch (which traces the train functions; the callback keeps
them for later `fit`s of the same model), then times a `fit` of several
epochs. Prints, per model and setting, the median over the pairs of
`time(setting) / time(plain)` from the same round, and the one-off tracing
cost of the first `fit`.

Usage:

```
python benchmarks/overhead.py [--pairs 5] [--steps 100] [--epochs 3]
```
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_actloss.callbacks import GradientDiagnostics  # noqa: E402

BATCH = 128
SETTINGS = ("plain", "default", "every_step", "tensorboard")


def mlp() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="mlp",
    )


def cnn() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="cnn",
    )


def data(model_name: str, steps: int):
    rng = np.random.default_rng(0)
    shape = (784,) if model_name == "mlp" else (28, 28, 1)
    x = rng.random((steps * BATCH, *shape), dtype="float32")
    y = rng.integers(0, 10, size=steps * BATCH)
    return x, y


def callbacks(setting: str, log_dir: str) -> list:
    if setting == "plain":
        return []
    if setting == "default":
        return [GradientDiagnostics(log_dir=log_dir, check_model=False)]
    if setting == "every_step":
        return [
            GradientDiagnostics(log_dir=log_dir, every_n_steps=1, check_model=False)
        ]
    return [keras.callbacks.TensorBoard(log_dir=log_dir, histogram_freq=1)]


def run(build, setting: str, x, y, epochs: int) -> tuple[float, float]:
    """Returns (first fit with tracing, timed fit) in seconds."""
    keras.utils.set_random_seed(0)
    model = build()
    model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    with tempfile.TemporaryDirectory() as log_dir:
        cbs = callbacks(setting, log_dir)
        start = time.perf_counter()
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=cbs)
        first = time.perf_counter() - start
        start = time.perf_counter()
        model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0, callbacks=cbs)
        timed = time.perf_counter() - start
    keras.backend.clear_session()
    return first, timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    print(
        f"keras {keras.__version__}, batch {BATCH}, {args.steps} steps x "
        f"{args.epochs} epochs per timed fit, {args.pairs} rounds, "
        f"{os.cpu_count()} CPUs"
    )
    for build in (mlp, cnn):
        name = build().name
        x, y = data(name, args.steps)
        times = {s: [] for s in SETTINGS}
        firsts = {s: [] for s in SETTINGS}
        for _ in range(args.pairs):
            for setting in SETTINGS:
                first, timed = run(build, setting, x, y, args.epochs)
                times[setting].append(timed)
                firsts[setting].append(first)
        plain = times["plain"]
        step_ms = 1000 * statistics.median(plain) / (args.steps * args.epochs)
        seconds = statistics.median(plain)
        print(f"{name}: plain fit {seconds:.2f} s ({step_ms:.2f} ms/step)")
        for setting in SETTINGS[1:]:
            ratios = [t / p for t, p in zip(times[setting], plain)]
            extra = statistics.median(firsts[setting]) - statistics.median(
                firsts["plain"]
            )
            print(
                f"  {setting:12s} median ratio {statistics.median(ratios):.3f}x "
                f"(min {min(ratios):.3f}, max {max(ratios):.3f}); "
                f"first fit +{extra:.2f} s"
            )


if __name__ == "__main__":
    main()
