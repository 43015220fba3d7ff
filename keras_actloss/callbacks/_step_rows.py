"""The rows every instrumented step leaves, and how the host judges them.

Backend-neutral (no TensorFlow, no JAX): the layout of a step's row
(`RING_*`), the logs keys the step's statistics leave the train function
under, the kinds of step (`SENTINEL`, `FULL`), the alarm bounds
(`BOUND_FIELDS`, `within_bounds`), the kept rows (`pack_kept`), and
the host functions both backends' readers share: `fold_rows` judges the
every-step rows, `full_record` builds the record of a full step. The
TensorFlow hooks write the rows in-graph (`_graph_stats.GraphStats`), the
JAX ones return them from the jitted step (`_jax_stats.JaxStats`).
"""

from __future__ import annotations

import math

import keras
import numpy as np

from keras_actloss.diagnostics import step_reader
from keras_actloss.diagnostics.step_stats import RowLayout

SENTINEL = "sentinel"
FULL = "full"

# Under dynamic loss scaling a non-finite step is an overflow that the
# optimizer skips (and halves the scale). It only counts as a real non-finite
# gradient once this many consecutive steps were non-finite: by then the
# scale has been cut by 2**10, far beyond any normal overflow streak once an
# update was applied (before, `fold_rows` also waits for a scale of 1).
LOSS_SCALE_PATIENCE = 10

# Label rows kept from a recorded batch for `check_model(model, y=...)`.
LABEL_ROWS = 64

# A ring row, written on every step: the step, a tick (our own step count,
# only under loss scaling, where a skipped step repeats the step), the loss
# scale (1 without), the learning rate, the loss (this replica's; NaN when
# unknown), the silent units (`step_stats.NormRow.silent`), then `norm_row`
# of the gradients, zero-padded, then the units' flow (`FlowStamps`), then,
# when the step applies several optimizers, each one's learning rate
# (`step_rates`; the learning rate above is the first's).
RING_STEP, RING_TICK, RING_SCALE, RING_LR, RING_LOSS, RING_SILENT, RING_HEAD = range(7)
# The logs key a full step's statistics (a dict of `step_stats.FULL_KEYS`)
# leave the train function under (taken out before Keras sees the logs)...
FULL_LOGS_KEY = "_keras_actloss_full"
# ...and what every step's alarm is judged on: `[5]` float32, the unscaled
# squared global norm, the learning rate, the count of exactly-zero
# gradient norms, the silent units and the loss (`step_stats.alarm`).
ALARM_LOGS_KEY = "_keras_actloss_alarm"
# Alarm bounds the host sets (`set_bounds`): the unscaled squared global
# norm must stay in [low, high], the learning rate in [low, high], the
# count of zero gradient norms at most `zeros_high`, the silent units at
# most `silent_high` and the loss at most `loss_high`.
BOUND_FIELDS = (
    "norm_low",
    "norm_high",
    "rate_low",
    "rate_high",
    "zeros_high",
    "silent_high",
    "loss_high",
)


def within_bounds(
    total: float, rate: float, zeros: float, silent: float, loss: float, bounds
) -> bool:
    """Whether a step's unscaled squared global norm `total`, learning
    `rate`, count of zero gradient norms `zeros`, silent units `silent` and
    `loss` (0 when not known) lie within the alarm `bounds`
    (`BOUND_FIELDS`); False for None bounds (not set yet) and for a NaN,
    which fails every comparison."""
    if bounds is None:
        return False
    low, high, rate_low, rate_high, zeros_high, silent_high, loss_high = bounds
    return (
        low <= total <= high
        and rate_low <= rate <= rate_high
        and zeros <= zeros_high
        and silent <= silent_high
        and loss <= loss_high
    )


def pack_kept(form, arrays: list):
    """The kept rows of a batch's labels (or inputs), one array per tensor
    (None where not kept), as `check_model` takes labels (`y`): the one
    array of a single tensor (also one in a list: `fit(x, [y])`); for
    several, or a dict (by output or input name: it says whose they are),
    `form`, the structure of the batch's tensors (`keras.tree`'s), with
    the arrays in it. None when none is kept."""
    if all(a is None for a in arrays):
        return None
    if form is None or (len(arrays) == 1 and not isinstance(form, dict)):
        return arrays[0]
    leaves = len(keras.tree.flatten(form))  # Those past the holders: None.
    arrays = (list(arrays) + [None] * leaves)[:leaves]
    return keras.tree.pack_sequence_as(form, arrays)


def kept_form(value):
    """The structure of a batch's inputs or labels (`keras.tree`'s), its
    leaves 0; None for none: what `pack_kept` packs their kept rows into."""
    return None if value is None else keras.tree.map_structure(lambda _: 0, value)


def kept_arrays(labels) -> list:
    """The arrays of kept labels or inputs (`pack_kept`), one per tensor
    kept."""
    if labels is None:
        return []
    if isinstance(labels, dict):
        return [a for a in labels.values() if a is not None]
    if isinstance(labels, (list, tuple)):
        return [a for a in labels if a is not None]
    return [labels]


def rate_columns(optimizers: list) -> int:
    """How many learning rates a step's row ends with (`step_rates`): one
    per hooked optimizer when there are several, else none (the row's
    learning rate is the one)."""
    return len(optimizers) if len(optimizers) > 1 else 0


def call_rates(calls: list[tuple], columns: int) -> list:
    """The learning rates a step's row ends with, from its `apply` calls'
    `(optimizer, rate)` in call order: each optimizer's first, then the
    last repeated up to `columns` (an optimizer hooked but not applied in
    the step; a repeat never jumps on its own)."""
    rates: dict[int, object] = {}
    for optimizer, rate in calls:
        rates.setdefault(id(optimizer), rate)
    rates = list(rates.values())[:columns]
    return rates + rates[-1:] * (columns - len(rates)) if columns else []


def step_rates(row, rates: int) -> tuple[float, ...]:
    """The learning rates of a row's optimizers (its last `rates` columns;
    `SentinelEvent.learning_rates`): empty for a step of one optimizer."""
    return tuple(row[len(row) - rates :]) if rates > 1 else ()


def quiet_steps(rows, layout: RowLayout, rates: int = 0) -> list[tuple]:
    """`(step, global norm, learning rate, loss, zeros, silent, rates)` of
    ring rows (a 2-D array, or lists) of quiet steps, in their order: each
    backend's `read_quiet`, in NumPy (`zeros`: the count of exactly-zero
    gradient norms, `silent`: the silent units, `rates`: `step_rates`, the
    rows' last `rates` columns)."""
    rows = np.asarray(rows, "float64")
    if not len(rows):
        return []
    values = rows[:, RING_HEAD : RING_HEAD + len(layout.order)]
    norms = np.sqrt(layout.squares(values).sum(axis=1))
    scale = rows[:, RING_SCALE]
    # NaN at a scale of 0 (`step_reader.unscaled`).
    norms = np.divide(norms, scale, out=np.full_like(norms, np.nan), where=scale != 0)
    return list(
        zip(
            rows[:, RING_STEP].astype(int).tolist(),
            norms.tolist(),
            rows[:, RING_LR].tolist(),
            rows[:, RING_LOSS].tolist(),
            layout.zeros(values).tolist(),
            rows[:, RING_SILENT].astype(int).tolist(),
            [
                step_rates(row, rates)
                for row in rows[:, rows.shape[1] - rates :].tolist()
            ],
        )
    )


def full_record(layout, values: dict, steps: list, loss_known: bool, rows=()) -> dict:
    """`read_full`'s record of a full step (both backends): its head, the
    steps judged up to it, `"layers"` (`step_reader.read_layers`) and
    `"execution_rms"`.

    `values`: the step's `step_stats.FULL_KEYS` as Python lists, with
    `"row"` a host ring row (`RING_*`). `rows`: the ring rows `steps`
    judged before it. The full steps of its execution before it (all of
    them while recordings are dense, with several steps an execution: the
    activation counts' `summed` steps) give `"execution_rms"`, one
    `(step, grad RMS of each layer)` each (`step_reader.grad_rms`): their
    gradients, of which the full step's statistics hold none.
    """
    row, (loss, batch, summed) = values["row"], values["head"]
    step, norm, counted, skipped = steps[-1][:4]
    execution = []
    if summed > 1 and len(rows):
        rows = np.asarray(rows, "float64")
        first = step - round(summed) + 1
        rows = rows[(rows[:, RING_STEP] >= first) & (rows[:, RING_STEP] < step)]
        m = len(layout.grads.order)
        execution = [
            (
                int(r[RING_STEP]),
                step_reader.grad_rms(
                    layout, r[RING_HEAD : RING_HEAD + m], r[RING_SCALE]
                ),
            )
            for r in rows.tolist()
        ]
    head = {
        "loss": loss if loss_known else None,
        "batch_size": batch,
        "activation_steps": summed,
        "learning_rate": row[RING_LR],
        "step": step,
        "global_norm": norm,
        "non_finite": float(counted),
        "skipped": float(skipped),
        "steps": steps,
        "execution_rms": execution,
    }
    values = {
        **values,
        "norms": row[RING_HEAD : RING_HEAD + len(layout.grads.order)],
        "batch_size": batch,
        "summed_steps": summed,
    }
    head["layers"] = step_reader.read_layers(layout, values, row[RING_SCALE])
    head["kernel_share"] = step_reader.kernel_share(layout, values["norms"])
    return head


def fold_rows(
    rows,
    layout: RowLayout,
    layers,
    streak: float,
    patience=None,
    loss_known: bool = False,
    rates: int = 0,
) -> tuple[list[tuple], float]:
    """Judges ring rows (in step order) one step at a time.

    `rows` are lists of floats (or a 2-D array). `layers[i]` is the layer
    index of gradient `i` (tensor order of `layout`), -1 if unmonitored.
    Returns one `(step, norm, counted, skipped, layer, learning_rate, loss,
    zeros, silent, rates)` per row (`zeros`: its count of exactly-zero
    gradient norms, `RowLayout.zeros`; `silent`: its silent units,
    `step_stats.NormRow.silent`; `rates`: `step_rates` of its last `rates`
    columns) and the new non-finite `streak`. With
    `patience` (loss scaling) a non-finite step only counts once it is the
    `patience`-th in a row (before any update was applied, the row's step
    still 0, also at a loss scale of 1 or less: a healthy model whose
    gradients need the scale halved 11 times from Keras's first one
    applied its update at the 11th step); earlier ones are skipped
    overflow steps. But
    when the loss is known (`loss_known`; a row's loss is NaN when it is
    not) and is itself not finite, the step counts at once: the loss scale
    scales only the backward pass, so a NaN or infinite loss came from the
    batch or the forward pass, not from an overflow of the scale.
    `layer` is the first layer with non-finite gradients of a counted
    step, else -1.

    Without loss scaling an infinite norm with no NaN and a finite loss is
    a norm beyond float32's range (its square overflows), not a non-finite
    gradient: its norm is `inf` and it is not counted.

    Plain Python on a few dozen values a row: it runs after every step,
    where NumPy's per-call cost is more than the arithmetic.
    """
    m = len(layout.order)
    out = []
    for row in rows.tolist() if isinstance(rows, np.ndarray) else rows:
        values = row[RING_HEAD : RING_HEAD + m]
        # Norms and sums of squares are >= 0: the total is NaN if any value
        # is, else infinite if any value is.
        total = layout.total(values)
        norm = step_reader.unscaled(math.sqrt(total), row[RING_SCALE])
        bad = not math.isfinite(total)
        if bad and patience is None:
            bad = math.isnan(total) or not math.isfinite(row[RING_LOSS])
        counted, skipped = bad, False
        if patience is not None:
            streak = streak + 1.0 if bad else 0.0
            lost = loss_known and not math.isfinite(row[RING_LOSS])
            # Before any update was applied (the optimizer's step still 0),
            # the optimizer is still finding its scale: its first one, 2^15
            # by default, halved 10 times is 32, where gradients 2e3 and
            # larger still overflow. Overflows count once the scale is 1.
            searching = row[RING_STEP] == 0 and row[RING_SCALE] > 1.0
            counted = bad and (lost or (streak >= patience and not searching))
            skipped = bad and not counted
        layer = -1
        if counted:
            at = layout.first_non_finite(np.array(values))
            layer = layers[at] if at >= 0 else -1
        out.append(
            (
                int(row[RING_STEP]),
                norm,
                counted,
                skipped,
                layer,
                row[RING_LR],
                row[RING_LOSS],
                layout.zeros(values),
                int(row[RING_SILENT]),
                step_rates(row, rates),
            )
        )
    return out, streak


class FlowStamps:
    """What the every-step rows tell of each unit of the layers of `layout`
    (`step_activations.flow_layout`; the rows' columns from `at` on hold
    `step_activations.unit_flow`'s vector): the last step it passed a
    gradient back, the share of the recent steps it did so then (a moving
    average over about `HORIZON` steps, corrected for its start as Adam's
    moments are) and how many steps that share was taken over. A unit
    inactive on the few samples of the recorded batches may have been
    active on any step between them, which its gradient tells, and one
    active on a step in twenty is silent for four steps often
    (`UnitActivity.dead`)."""

    HORIZON = 64

    def __init__(self, layout: tuple, at: int):
        self.layout, self.at = layout, at
        units = sum(n for _, n in layout)
        self._last = np.full(units, -1.0)
        self._share = np.zeros(units)
        self._history = np.zeros(units)
        self._moment = np.zeros(units)
        self._weight = 0.0
        self._seen = 0

    def __len__(self) -> int:
        return len(self._last)

    def note(self, rows: np.ndarray) -> None:
        """Takes the flow of `rows` (a 2-D float array of host rows, in
        step order)."""
        if not len(self._last) or not len(rows):
            return
        flow = rows[:, self.at : self.at + len(self._last)] > 0
        if flow.shape[1] != len(self._last):
            return
        keep = 1.0 - 1.0 / self.HORIZON
        for step, bits in zip(rows[:, RING_STEP].tolist(), flow):
            self._moment *= keep
            self._moment[bits] += 1.0 - keep
            self._weight = keep * self._weight + 1.0 - keep
            self._seen += 1
            self._last[bits] = step
            self._share[bits] = self._moment[bits] / self._weight
            self._history[bits] = self._seen

    def by_layer(self) -> dict[int, tuple[list, list, list]]:
        """Layer index -> `(last step, share, history)` of each of its
        units: the last step it passed a gradient back (-1 for none), the
        share of the steps before then it did, over how many steps."""
        out, at = {}, 0
        for i, units in self.layout:
            part = slice(at, at + units)
            out[i] = tuple(
                a[part].tolist() for a in (self._last, self._share, self._history)
            )
            at += units
        return out
