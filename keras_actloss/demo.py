"""`keras-actloss demo`: each failure mode from the source notes, and its fix.

The source notes name three ways gradient descent fails, each with a fix:

| problem                | fix                                          |
|------------------------|----------------------------------------------|
| gradients vanish       | ReLU instead of sigmoid/tanh                 |
| gradients explode      | lower learning rate, batch norm, clipping    |
| ReLU layers die        | Leaky ReLU, lower learning rate              |

The demo trains a small model into each failure on synthetic data, then the
same model with the fix, each with `GradientDiagnostics` logging to its own
run under `logdir` (replacing that run's event files from an earlier demo),
and returns the findings of each run; the CLI (`keras_actloss.cli.run_demo`)
prints the report.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import warnings
from collections.abc import Callable

import keras
import numpy as np

from keras_actloss import layers as actloss_layers
from keras_actloss import losses as actloss_losses
from keras_actloss.callbacks import GradientDiagnostics
from keras_actloss.logs import events, tags


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One training run of the demo.

    Attributes:
        run: Run directory name under the demo's logdir.
        title: What is trained, in a few words.
        expected: Finding modes the run is meant to produce, including the
            `check_model` warnings made before training (empty for a fix).
        build: `build(tiny) -> (model, x, y, epochs)`; the model is compiled.
    """

    run: str
    title: str
    expected: tuple[str, ...]
    build: Callable[[bool], tuple]


def _classification_data(tiny: bool, features: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = 512 if tiny else 2048
    x = rng.normal(size=(n, features)).astype("float32")
    w = rng.normal(size=(features,))
    y = (np.tanh(x @ w) + 0.3 * np.sin(3 * x[:, 0]) > 0).astype("float32")
    return x, y[:, None]


def _regression_data(tiny: bool, features: int = 16, seed: int = 1):
    rng = np.random.default_rng(seed)
    n = 512 if tiny else 2048
    x = rng.normal(size=(n, features)).astype("float32")
    y = (x @ rng.normal(size=(features,))).astype("float32")
    return x, y[:, None]


def _mlp(hidden: list, inputs: int):
    """Hidden layers, then a linear output unit (logits or a regression value)."""
    model = keras.Sequential([keras.Input((inputs,)), *hidden])
    model.add(keras.layers.Dense(1, name="output"))
    return model


def _dense(units: int, i: int, activation=None, init: str = "he_normal"):
    return keras.layers.Dense(
        units, activation, kernel_initializer=init, name=f"dense_{i}"
    )


def _epochs(tiny: bool) -> int:
    return 3 if tiny else 6


def _vanishing(activation: str):
    def build(tiny: bool):
        x, y = _classification_data(tiny)
        init = "glorot_uniform" if activation == "sigmoid" else "he_normal"
        hidden = [_dense(32, i, activation, init) for i in range(8)]
        model = _mlp(hidden, x.shape[1])
        model.compile(
            optimizer=keras.optimizers.SGD(0.05),
            loss=actloss_losses.BinaryCrossentropy(from_logits=True),
        )
        return model, x, y, _epochs(tiny)

    return build


def _exploding(learning_rate: float, clipnorm=None, batch_norm: bool = False):
    def build(tiny: bool):
        x, y = _regression_data(tiny)
        hidden = []
        for i in range(3):
            hidden.append(_dense(64, i))
            if batch_norm:
                hidden.append(keras.layers.BatchNormalization(name=f"batch_norm_{i}"))
            hidden.append(actloss_layers.ReLU(name=f"relu_{i}"))
        model = _mlp(hidden, x.shape[1])
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate, clipnorm=clipnorm),
            loss=actloss_losses.MeanSquaredError(),
        )
        return model, x, y, _epochs(tiny)

    return build


def _dead(leaky: bool, learning_rate: float):
    def build(tiny: bool):
        x, y = _classification_data(tiny)
        hidden = []
        for i in range(3):
            hidden.append(_dense(64, i))
            if leaky:
                hidden.append(actloss_layers.LeakyReLU(0.1, name=f"leaky_relu_{i}"))
            else:
                hidden.append(actloss_layers.ReLU(name=f"relu_{i}"))
        model = _mlp(hidden, x.shape[1])
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss=actloss_losses.BinaryCrossentropy(from_logits=True),
        )
        return model, x, y, _epochs(tiny)

    return build


SCENARIOS = (
    Scenario(
        "vanishing-deep-sigmoid",
        "8 sigmoid hidden layers, SGD",
        # check_model warns before training; the callback confirms it.
        ("deep_saturating_stack", "vanishing_gradients"),
        _vanishing("sigmoid"),
    ),
    Scenario("vanishing-fix-relu", "same net with ReLU", (), _vanishing("relu")),
    Scenario(
        "exploding-high-lr",
        "ReLU regression, SGD lr=0.1",
        ("exploding_gradients", "non_finite"),
        _exploding(0.1),
    ),
    Scenario("exploding-fix-lower-lr", "same, lr=0.01", (), _exploding(0.01)),
    Scenario(
        "exploding-fix-batch-norm",
        # At 0.1 the hidden layers hold, but the output layer's updates
        # outgrow its weights (1.5-1.9x) and the loss can spike 7x.
        "batch normalization, lr=0.05",
        (),
        _exploding(0.05, batch_norm=True),
    ),
    Scenario(
        "exploding-fix-clipping",
        "same lr=0.1, clipnorm=1",
        (),
        _exploding(0.1, clipnorm=1.0),
    ),
    Scenario(
        "dead-relu",
        # At 0.2 the first step also throws the loss 25x (an explosion
        # told beside the dead units on some backends and data sizes).
        "ReLU classifier, Adam lr=0.1",
        ("dead_relu",),
        _dead(leaky=False, learning_rate=0.1),
    ),
    Scenario(
        "dead-fix-leaky-relu",
        "Leaky ReLU, Adam lr=0.001",
        (),
        _dead(leaky=True, learning_rate=1e-3),
    ),
)


class _Progress(keras.callbacks.Callback):
    """Prints one dot per epoch on the scenario's line."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        self.out.write(f" {loss:.3g}" if loss is not None else " .")
        self.out.flush()


def train_scenario(scenario: Scenario, logdir: str, tiny: bool = False, out=None):
    """Trains one scenario with `GradientDiagnostics`; returns its findings."""
    out = out or sys.stdout
    keras.utils.set_random_seed(0)
    model, x, y, epochs = scenario.build(tiny)
    run_dir = os.path.join(logdir, scenario.run)
    # An earlier demo's run: replaced, not mixed into this one's report.
    for path in events.event_files(os.path.join(run_dir, tags.TRAIN_SUBDIR)):
        os.remove(path)
    diag = GradientDiagnostics(log_dir=run_dir, every_n_steps=5)
    with warnings.catch_warnings():
        # The report below prints every finding; no need to warn as well.
        warnings.simplefilter("ignore")
        callbacks = [diag, _Progress(out)]
        model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=callbacks)
    return diag.findings


def train_all(logdir: str, tiny: bool = False, out=None) -> dict[str, list]:
    """Trains every scenario; returns `{run: findings}`, printing progress."""
    out = out or sys.stdout
    out.write(f"keras-actloss demo: {len(SCENARIOS)} trainings, logs in {logdir}\n")
    results = {}
    for i, scenario in enumerate(SCENARIOS, 1):
        start = time.perf_counter()
        out.write(f"[{i}/{len(SCENARIOS)}] {scenario.run}: {scenario.title} ... loss")
        out.flush()
        results[scenario.run] = train_scenario(scenario, logdir, tiny=tiny, out=out)
        modes = sorted({f.mode for f in results[scenario.run]}) or ["healthy"]
        out.write(f"  ({time.perf_counter() - start:.1f} s) -> {', '.join(modes)}\n")
    return results
