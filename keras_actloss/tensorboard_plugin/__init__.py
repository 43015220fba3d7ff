"""Gradient Health: a TensorBoard dashboard for `GradientDiagnostics` logs.

Installed with the package and registered through TensorBoard's
`tensorboard_plugins` entry point, so `tensorboard --logdir <log_dir>` shows
a "Gradient Health" tab: per run, layer-by-step heatmaps of gradient norm
(log colour scale), dead fraction and saturation, markers where findings
begin, and the findings table. It reads the event layout of
`keras_actloss.logs.tags` through TensorBoard's data provider, decodes its
tables and draws long runs with the same code as `keras-actloss report` and
the heatmap image (`keras_actloss.logs.tables`, `keras_actloss.logs.downsample`),
and works offline (plain JavaScript, no build step, nothing fetched from the
internet).
"""

from keras_actloss.logs.downsample import MAX_COLUMNS
from keras_actloss.tensorboard_plugin.plugin import (
    PLUGIN_NAME,
    GradientHealthLoader,
    GradientHealthPlugin,
)

__all__ = ["MAX_COLUMNS", "PLUGIN_NAME", "GradientHealthLoader", "GradientHealthPlugin"]
