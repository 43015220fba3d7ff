"""Small models of every kind for the callback tests (imported by them)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np

MODEL_KINDS = ("sequential", "functional", "subclassed", "nested")
# Monitored layer names per model kind, in model order.
LAYER_NAMES = {
    "sequential": ["hidden", "squash", "out"],
    "functional": ["hidden", "squash", "out"],
    "subclassed": ["hidden", "squash", "out"],
    "nested": ["block/hidden", "block/squash", "out"],
}


class ThreeLayers(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(8, activation="relu", name="hidden")
        self.squash = keras.layers.Dense(4, activation="tanh", name="squash")
        self.out = keras.layers.Dense(1, name="out")

    def call(self, x):
        return self.out(self.squash(self.hidden(x)))


def relu_classifier(inputs: int) -> keras.Sequential:
    """Dense(64, relu) -> Dense(64, relu) -> Dense(4, softmax), a
    classifier of 4 classes over `inputs` features."""
    return keras.Sequential(
        [
            keras.Input((inputs,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(4, activation="softmax"),
        ]
    )


def build_model(kind: str, inputs: int = 6) -> keras.Model:
    """Dense(8, relu) -> Dense(4, tanh) -> Dense(1), built four ways."""

    def layers():
        return [
            keras.layers.Dense(8, activation="relu", name="hidden"),
            keras.layers.Dense(4, activation="tanh", name="squash"),
        ]

    if kind == "sequential":
        return keras.Sequential(
            [keras.Input((inputs,)), *layers(), keras.layers.Dense(1, name="out")]
        )
    if kind == "functional":
        x = inp = keras.Input((inputs,))
        for layer in layers():
            x = layer(x)
        return keras.Model(inp, keras.layers.Dense(1, name="out")(x))
    if kind == "subclassed":
        model = ThreeLayers()
        model(np.zeros((1, inputs), "float32"))
        return model
    if kind == "nested":
        block = keras.Sequential([keras.Input((inputs,)), *layers()], name="block")
        return keras.Sequential(
            [keras.Input((inputs,)), block, keras.layers.Dense(1, name="out")]
        )
    raise ValueError(kind)


def kernels(model, names):
    """The Dense layers' [kernel, bias] by monitored name."""
    found = {}

    def walk(layer, prefix):
        for child in getattr(layer, "layers", []):
            name = prefix + child.name
            if isinstance(child, keras.layers.Dense):
                found[name] = child
            walk(child, name + "/")

    walk(model, "")
    return [found[n] for n in names]


def weights(model) -> list[np.ndarray]:
    return [v.numpy().astype("float64") for v in model.trainable_variables]


class WeightsPerStep(keras.callbacks.Callback):
    """The trainable weights before every step (NumPy, float64)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_train_batch_begin(self, batch, logs=None):
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:
            sync()  # On JAX the weights wait in the fit's state.
        self.seen.append(weights(self.model))


def run_script(source: str, backend: str = "tensorflow", **env: str) -> dict:
    """Runs `source` in a fresh process of `backend` (for settings, such as
    logical devices, that must come before the backend initialises), with
    the environment variables `env` added; returns the JSON object its last
    output line prints."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", **env)
    done = subprocess.run(
        [sys.executable, "-c", source],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
