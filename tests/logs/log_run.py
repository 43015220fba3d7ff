"""The run the log tests write: three layers, three recordings, a sentinel
step, histograms, findings and (optionally) the heatmap, through
`DiagnosticsWriter` alone (no TensorBoard reader imported here, so a
subprocess can check what writing imports)."""

import numpy as np

from keras_actloss.diagnostics.records import (
    LayerInfo,
    LayerStats,
    SentinelEvent,
    StepStats,
)
from keras_actloss.findings import Finding
from keras_actloss.logs.writer import DiagnosticsWriter

LAYERS = [
    LayerInfo("dense", "Dense", "relu", True, 0),
    LayerInfo("outer/act", "Activation", "tanh", False, 1),
    LayerInfo("dense_1", "Dense", None, True, 2),
]
FINDINGS = [
    Finding(
        "dead_relu",
        "dense",
        10,
        0.8125,
        'Dead `units` | pipes, "quotes".',
        "Use Leaky ReLU.",
    ),
    Finding("exploding_gradients", None, 10, 1.2345678901234567e-05, "Boom.", "Clip."),
    Finding(
        "softmax_with_binary_crossentropy",
        "dense_1",
        None,
        None,
        "Pre.",
        "Fix.",
        "warning",
    ),
]


def stats_at(step):
    """Recording with values that differ per layer and step; some None."""
    return StepStats(
        step=step,
        global_norm=1.5 + step,
        layers=[
            LayerStats(
                "dense",
                grad_norm=0.25 * step,
                grad_rms=1e-3,
                grad_max=0.5,
                update_ratio=1e-3 * (step + 1),
                zero_fraction=0.5,
                dead_fraction=0.125,
            ),
            LayerStats("outer/act", saturation=0.0625 * step),
            LayerStats(
                "dense_1", grad_norm=2.0, grad_rms=3e-2, grad_max=1.0, update_ratio=2e-3
            ),
        ],
    )


def write_run(log_dir, heatmap=False):
    with DiagnosticsWriter(log_dir) as writer:
        writer.write_layers(LAYERS, step=0)
        writer.write_layout(LAYERS)
        for step in (0, 5, 10):
            writer.write_stats(stats_at(step))
        writer.write_sentinel(SentinelEvent(7, 42.0, False))
        writer.write_histograms(
            5, {"dense": np.arange(4.0), "dense_1": np.array([1.0, np.nan])}
        )
        writer.write_findings(FINDINGS)
        if heatmap:
            writer.write_heatmap(
                10, ["dense", "dense_1"], [0, 5, 10], [[0, 1.25, 2.5], [2, 2, 2]]
            )
