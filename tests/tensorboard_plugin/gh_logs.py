"""Event files and plugin clients for the Gradient Health plugin tests.

`write_run` writes a small run with the package's own `DiagnosticsWriter`
(the writer `GradientDiagnostics` uses), so the plugin is tested against the
event layout of `keras_actloss.logs.tags` as it is really written.
`write_large_run` writes the same scalar layout from raw protos, fast enough
for thousands of steps by fifty layers.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
from tensorboard.backend.event_processing import data_provider
from tensorboard.backend.event_processing import plugin_event_multiplexer as pem
from tensorboard.compat.proto import event_pb2, summary_pb2, types_pb2
from tensorboard.plugins import base_plugin
from tensorboard.plugins.scalar import summary_v2 as scalar_summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from werkzeug import test as werkzeug_test

from keras_actloss.diagnostics.records import LayerInfo, LayerStats, StepStats
from keras_actloss.findings import Finding
from keras_actloss.logs import tags
from keras_actloss.logs.writer import DiagnosticsWriter
from keras_actloss.tensorboard_plugin import plugin as plugin_lib

# (name, class_name, activation, has_trainable_weights), in model order,
# which deliberately differs from alphabetical order.
LAYERS = (
    ("stem_conv", "Conv2D", "relu", True),
    ("block_dense", "Dense", "sigmoid", True),
    ("act_flatten", "Flatten", None, False),
    ("head", "Dense", "tanh", True),
)
STEPS = range(10)
FINDINGS = (
    Finding("softmax_with_binary_crossentropy", "head", None, None,
            "Softmax output with binary cross-entropy.", "Use sigmoid.",
            severity="warning"),
    Finding("vanishing_gradients", "stem_conv", 3, 1e-3,
            "Gradient norm fell below 1e-3.", "Use ReLU or batch normalization."),
    Finding("non_finite", "head", 7, math.nan,
            "Gradient became NaN.", "Lower the learning rate."),
)  # fmt: skip


def grad_norm(layer: str, step: int) -> float:
    """The gradient norms `write_run` records."""
    if layer == "stem_conv":
        return 10.0 ** (-step)  # vanishing: 1, 0.1, ..., 1e-9
    if layer == "head" and step == 7:
        return math.nan
    return 0.5 + step  # block_dense and head: 0.5, 1.5, ...


def dead_fraction(step: int) -> float:
    """`stem_conv`'s dead fraction (the only ReLU layer)."""
    return step / 10


def saturation(layer: str, step: int) -> float:
    """Saturation of the sigmoid and tanh layers."""
    return 0.25 if layer == "block_dense" else 1.0 - step / 20


def _layer_stats(name: str, step: int) -> LayerStats:
    stats = LayerStats(layer=name)
    if name == "act_flatten":
        return stats
    stats.grad_norm = grad_norm(name, step)
    if name == "stem_conv":
        stats.dead_fraction = dead_fraction(step)
    else:
        stats.saturation = saturation(name, step)
    return stats


def write_run(run_dir: str) -> None:
    """Writes the small diagnostics run of this module under `run_dir/train`."""
    layers = [LayerInfo(*row, depth=i) for i, row in enumerate(LAYERS)]
    with DiagnosticsWriter(run_dir) as writer:
        writer.write_layers(layers, step=0)
        for step in STEPS:
            stats = [_layer_stats(row[0], step) for row in LAYERS]
            writer.write_stats(StepStats(step=step, global_norm=1.0, layers=stats))
        writer.write_findings(FINDINGS)


def train_run(run_dir: str, epochs: int = 3):
    """Trains a tiny unhealthy model with `GradientDiagnostics` into `run_dir`.

    A ReLU stem, five sigmoid layers (gradients vanish towards the input) and
    a ReLU layer with a -1 bias (dead units), recorded at every step.

    Returns:
        The callback, with its `layers` and `findings`.
    """
    import warnings

    import keras

    from keras_actloss.callbacks import GradientDiagnostics, GradientHealthWarning

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 16)).astype("float32")
    y = (np.tanh(x @ rng.normal(size=16)) > 0).astype("float32")[:, None]
    dense = keras.layers.Dense
    model = keras.Sequential(
        [keras.Input((16,)), dense(32, activation="relu", name="stem")]
        + [dense(32, activation="sigmoid", name=f"sigmoid_{i}") for i in range(5)]
        + [
            dense(32, "relu", bias_initializer=keras.initializers.Constant(-1.0),
                  name="relu_head"),
            dense(1, name="output"),
        ]
    )  # fmt: skip
    model.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    diag = GradientDiagnostics(log_dir=run_dir, every_n_steps=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GradientHealthWarning)
        model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, callbacks=[diag])
    return diag


def write_plain_run(run_dir: str) -> None:
    """A run with only a loss curve: no Gradient Health data.

    The `Summary` that `tf.summary.scalar` writes (`scalar_pb`, TensorBoard's
    TensorFlow-free twin), so it needs no TensorFlow.
    """
    writer = EventFileWriter(run_dir)
    for step in range(3):
        summary = scalar_summary.scalar_pb("epoch_loss", 1.0 / (step + 1))
        writer.add_event(
            event_pb2.Event(step=step, wall_time=time.time(), summary=summary)
        )
    writer.close()


def write_large_run(run_dir: str, steps: np.ndarray, layers: list[str]) -> None:
    """`grad_norm/<layer>` = `(step + 1) * (index + 1)` at every given step.

    Each value is the float32 scalar tensor that `tf.summary.scalar` writes,
    with the scalars plugin's metadata on a tag's first value only (as
    TensorFlow's writer does); one event per step.
    """
    metadata = scalar_summary.scalar_pb("x", 0.0).value[0].metadata
    writer = EventFileWriter(os.path.join(run_dir, tags.TRAIN_SUBDIR))
    for k, step in enumerate(steps):
        summary = summary_pb2.Summary()
        for i, name in enumerate(layers):
            value = summary.value.add(tag=tags.scalar_tag(tags.GRAD_NORM, name))
            if k == 0:
                value.metadata.CopyFrom(metadata)
            value.tensor.dtype = types_pb2.DT_FLOAT
            value.tensor.tensor_shape.SetInParent()
            value.tensor.float_val.append(float((step + 1) * (i + 1)))
        event = event_pb2.Event(step=int(step), wall_time=time.time(), summary=summary)
        writer.add_event(event)
    writer.close()


def make_provider(logdir: str):
    """A real data provider over `logdir`, keeping every scalar and text."""
    multiplexer = pem.EventMultiplexer(tensor_size_guidance={"scalars": 0, "text": 0})
    multiplexer.AddRunsFromDirectory(logdir)
    multiplexer.Reload()
    return data_provider.MultiplexerDataProvider(multiplexer, logdir)


def make_plugin(logdir: str) -> plugin_lib.GradientHealthPlugin:
    context = base_plugin.TBContext(logdir=logdir, data_provider=make_provider(logdir))
    return plugin_lib.GradientHealthLoader().load(context)


class PluginClient:
    """GETs a plugin route through its own WSGI app with werkzeug's Client."""

    def __init__(self, plugin):
        self.apps = plugin.get_plugin_apps()

    def get(self, route: str, query: str = "", method: str = "GET"):
        client = werkzeug_test.Client(self.apps[route])
        return client.open(route, query_string=query, method=method)
