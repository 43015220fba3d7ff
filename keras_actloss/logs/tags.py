"""The event-file layout written by `GradientDiagnostics`.

This module is the contract between the writer, the reader, the CLI report
and the TensorBoard dashboard. Everything is written under `<log_dir>/train`
(so a log dir can be shared with `keras.callbacks.TensorBoard`), with
`step` = the 0-based optimizer iteration of the training step.

Scalars, at every recording step (every `every_n_steps` steps, and at any
step where the every-step sentinel saw an explosion or a non-finite value):

- `grad_norm/global`: L2 norm of all gradients together.
- `grad_norm/<layer>`, `grad_rms/<layer>`, `grad_max/<layer>`,
  `update_ratio/<layer>`: for layers with trainable weights.
- `zero_fraction/<layer>`, `dead_fraction/<layer>`: for layers whose output
  goes through a ReLU-family activation; `dead_fraction/<layer>` also for a
  linear layer inside a layer of the user's own, judged by sign (its units
  at most 0 on every sample of the batch and without gradient).
- `saturation/<layer>`: for layers whose output goes through sigmoid or tanh.

Histograms: `grad_hist/<layer>` every `histogram_every_n_steps` steps.

Text:

- `diagnostics/layers`: written once per `fit`, a 2-D string table with the
  header `LAYER_COLUMNS` and one row per monitored layer in model order.
- `diagnostics/findings`: at each finding's step (step 0 for findings made
  before training), a 2-D string table with the header `FINDING_COLUMNS` and
  one row per finding.

Images (only with `heatmap_image=True`): `diagnostics/grad_norm_heatmap`.

Plus a Custom Scalars layout (one chart per section, every layer in it).
"""

from __future__ import annotations

TRAIN_SUBDIR = "train"

GLOBAL = "global"

GRAD_NORM = "grad_norm"
GRAD_RMS = "grad_rms"
GRAD_MAX = "grad_max"
UPDATE_RATIO = "update_ratio"
ZERO_FRACTION = "zero_fraction"
DEAD_FRACTION = "dead_fraction"
SATURATION = "saturation"
GRAD_HIST = "grad_hist"

# LayerStats attribute -> tag section, in display order.
SCALAR_SECTIONS = {
    "grad_norm": GRAD_NORM,
    "grad_rms": GRAD_RMS,
    "grad_max": GRAD_MAX,
    "update_ratio": UPDATE_RATIO,
    "zero_fraction": ZERO_FRACTION,
    "dead_fraction": DEAD_FRACTION,
    "saturation": SATURATION,
}

LAYERS_TAG = "diagnostics/layers"
FINDINGS_TAG = "diagnostics/findings"
HEATMAP_TAG = "diagnostics/grad_norm_heatmap"

LAYER_COLUMNS = ("layer", "class_name", "activation", "has_trainable_weights")
FINDING_COLUMNS = ("mode", "layer", "step", "value", "severity", "message", "fix")


def scalar_tag(section: str, layer: str) -> str:
    """Returns the tag of one layer's scalar, e.g. `grad_norm/dense_1`."""
    return f"{section}/{layer}"


def split_tag(tag: str) -> tuple[str, str] | None:
    """Splits `section/layer` into its parts; None for other tags."""
    section, sep, layer = tag.partition("/")
    if not sep or section not in (*SCALAR_SECTIONS.values(), GRAD_HIST):
        return None
    return section, layer


def is_diagnostics_tag(tag: str) -> bool:
    """Whether `tag` is one only `GradientDiagnostics` writes: a table of
    `diagnostics/...` or a `grad_norm/...` scalar. A run with none of them
    holds no keras-actloss data (say, `keras.callbacks.TensorBoard` logs only).

    Examples:

    >>> is_diagnostics_tag("grad_norm/global"), is_diagnostics_tag("epoch_loss")
    (True, False)
    """
    if tag in (LAYERS_TAG, FINDINGS_TAG):
        return True
    parts = split_tag(tag)
    return parts is not None and parts[0] == GRAD_NORM


NO_DATA_MESSAGE = (
    f"No keras-actloss data: no `{GRAD_NORM}/<layer>` scalars, no "
    f"`{LAYERS_TAG}` or `{FINDINGS_TAG}` table. Train with "
    "`keras_actloss.callbacks.GradientDiagnostics(log_dir=...)` to record it."
)
# A run whose `fit` began but recorded no training step (0 epochs, or data
# that ran out before the first step): nothing to call healthy.
NO_STEPS_MESSAGE = (
    f"No training step recorded (no `{GRAD_NORM}/<layer>` scalars): nothing "
    "to judge. Did `fit` run 0 epochs, or its data run out before the first "
    "step?"
)
