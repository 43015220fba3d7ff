"""The host side of a full step's statistics, for every backend.

A full training step returns the named tensors of `step_stats` (`FULL_KEYS`);
the callback's backend module only brings them to the host as Python lists
(`values`) and records where the traced step put each figure (a
`StepLayout`). `read_layers` finishes the arithmetic by layer: gradient L2
norm, RMS and max-abs (unscaled), weight norm, update ratio, and the zero,
dead and saturated fractions with each unit's activity. Plain Python floats:
this runs right after a training step, on a few dozen values, where NumPy
calls cost more than they save.
"""

from __future__ import annotations

import dataclasses
import functools
import math

from keras_actloss.diagnostics.step_activations import ActivationEntry
from keras_actloss.diagnostics.step_stats import RowLayout

# Per-layer slots of a recording, in order.
LAYER_FIELDS = (
    "grad_norm",
    "grad_rms",
    "grad_max",
    "weight_norm",
    "update_ratio",
    "zero_fraction",
    "dead_fraction",
    "saturation",
)
ACTIVATION_FIELDS = ("zero_fraction", "dead_fraction", "saturation")
GRADIENT_FIELDS = LAYER_FIELDS[:5]


@dataclasses.dataclass(frozen=True)
class StepLayout:
    """Where a traced full step put each figure (set while it is traced).

    Attributes:
        can_die: Per monitored layer: whether its units can die.
        by_sign: Per monitored layer: whether it is judged by sign
            (`LayerInfo.units_by_sign`): its units' counts tell dead ones,
            not zero outputs (empty: none is).
        grads: The gradients' `RowLayout` (in the every-step row too).
        grad_layers: Per gradient tensor: its layer (-1: not monitored).
        grad_counts: Per gradient tensor: its element count.
        grad_vectors: Per gradient tensor: whether it is of a vector (rank 1
            or 0: a bias, a normalization's scale or offset); empty when not
            known.
        weights: The `RowLayout` of `"weights"` and `"updates"`.
        weight_layers: Per weight tensor: its layer (-1: not monitored).
        activations: The layout of `"activations"`.
        samples: `(layer, size)` of each part of `"sample"`, in order.
    """

    can_die: tuple[bool, ...] = ()
    by_sign: tuple[bool, ...] = ()
    grads: RowLayout = RowLayout()
    grad_layers: tuple[int, ...] = ()
    grad_counts: tuple[int, ...] = ()
    grad_vectors: tuple[bool, ...] = ()
    weights: RowLayout = RowLayout()
    weight_layers: tuple[int, ...] = ()
    activations: tuple[ActivationEntry, ...] = ()
    samples: tuple[tuple[int, int], ...] = ()


@functools.lru_cache(maxsize=8)
def _plan(layout: StepLayout) -> dict:
    """Per-layer column lists of `layout` (cached: once per traced step).

    `"grads"`, `"weights"`: `(column, is_norm)` of each layer's tensors;
    `"peaks"`: `(row column, max column, min column)` of each layer's
    gradients; `"counts"`: each layer's gradient elements (at least 1).
    """
    n = len(layout.can_die)
    plan = {key: [[] for _ in range(n)] for key in ("grads", "weights", "peaks")}
    counts = [0] * n
    m = len(layout.grads.order)
    for c, (k, norm) in enumerate(zip(layout.grads.order, layout.grads.norms)):
        i = layout.grad_layers[k]
        if i >= 0:
            plan["grads"][i].append((c, norm))
            plan["peaks"][i].append((c, c, m + c))
            counts[i] += layout.grad_counts[k]
    for c, (k, norm) in enumerate(zip(layout.weights.order, layout.weights.norms)):
        i = layout.weight_layers[k]
        if i >= 0:
            plan["weights"][i].append((c, norm))
    plan["counts"] = [max(c, 1) for c in counts]
    return plan


def _squares(values: list, columns: list) -> float:
    return sum(values[c] * values[c] if norm else values[c] for c, norm in columns)


def peak(norms: list, extremes: list, columns: list) -> float:
    """Max-abs over gradients from their max and min; NaN if any has a NaN
    (which the extremes may miss, the norm does not)."""
    out = -math.inf
    for norm, high, low in columns:
        if math.isnan(norms[norm]):
            return math.nan
        out = max(out, extremes[high], -extremes[low])
    return out


def activation_fields(
    layout: StepLayout, counts: list, batch: float, summed: float = 1.0
) -> dict[int, tuple]:
    """`(zero, dead, saturated, units, samples)` by layer index, from the
    `"activations"` counts (a Python list) of a batch of `batch` samples:
    the zero, dead and saturated fractions (None where they do not apply;
    no zero fraction for a layer judged by sign, whose outputs are linear)
    and, for layers whose units can die, the per-unit activity counts (over
    `samples` samples when not the batch's, `ActivationEntry.samples` in
    each of the `summed` steps the counts add up)."""
    fields, at = {}, 0
    scalars = iter(counts[sum(entry.units for entry in layout.activations) :])
    for i, units, saturation, per_sample, samples in layout.activations:
        active = counts[at : at + units]
        at += units
        sat = next(scalars) if saturation else None
        elements = next(scalars) if per_sample is None else batch * per_sample
        zero = dead = mortal = None
        if units:
            if elements and not (layout.by_sign and layout.by_sign[i]):
                zero = 1.0 - sum(active) / elements
            if layout.can_die[i]:
                dead, mortal = active.count(0.0) / units, active
        if sat is not None:
            # None where no element counted (an attention whose queries
            # each saw one key or none).
            sat = sat / elements if elements else None
        if samples is not None:
            samples = int(round(samples * summed))
        fields[i] = (zero, dead, sat, mortal, samples)
    return fields


def read_layers(layout: StepLayout, values: dict, scale: float) -> list[dict]:
    """The per-layer fields (`LAYER_FIELDS`, `"unit_activity"` and
    `"unit_samples"`) of a full step, None where they do not apply.

    Args:
        layout: The traced step's `StepLayout`.
        values: Python lists: `"norms"` (the gradient columns of the
            every-step row), `"extremes"`, `"weights"`, `"updates"`,
            `"activations"`, and the floats `"batch_size"` and
            `"summed_steps"` (the steps the activations add up, 1 when
            absent).
        scale: The loss scale the gradients carry (1 without).
    """
    plan = _plan(layout)
    norms, extremes = values["norms"], values["extremes"]
    activations = activation_fields(
        layout,
        values["activations"],
        values["batch_size"],
        values.get("summed_steps", 1.0),
    )
    layers = []
    for i in range(len(layout.can_die)):
        *fractions, units, samples = activations.get(i, (None,) * 5)
        fields = dict(zip(ACTIVATION_FIELDS, fractions))
        fields.update(dict.fromkeys(GRADIENT_FIELDS))
        if plan["grads"][i]:
            grads = _squares(norms, plan["grads"][i])
            weight = math.sqrt(_squares(values["weights"], plan["weights"][i]))
            deltas = _squares(values["updates"], plan["weights"][i])
            fields.update(
                grad_norm=unscaled(math.sqrt(grads), scale),
                grad_rms=unscaled(math.sqrt(grads / plan["counts"][i]), scale),
                grad_max=unscaled(peak(norms, extremes, plan["peaks"][i]), scale),
                weight_norm=weight,
                update_ratio=math.sqrt(deltas) / weight if weight > 0 else 0.0,
            )
        for name in ACTIVATION_FIELDS:
            if fields[name] is not None and math.isnan(fields[name]):
                fields[name] = None
        layers.append({name: fields[name] for name in LAYER_FIELDS})
        layers[-1]["unit_activity"] = units
        layers[-1]["unit_samples"] = samples
    return layers


def kernel_share(layout: StepLayout, norms: list) -> float | None:
    """The share of a step's squared gradient norm in its tensors that are
    not vectors (`StepLayout.grad_vectors`: kernels, embeddings), from its
    gradient columns (`norms`); None when not known, or without both kinds
    or any gradient. Kernels carry most of it where signals reach them (a
    kernel's gradient is its inputs times the error, a bias's the error
    alone)."""
    if not layout.grad_vectors:
        return None
    kernels, total = [], []
    for c, (k, norm) in enumerate(zip(layout.grads.order, layout.grads.norms)):
        total.append((c, norm))
        if not layout.grad_vectors[k]:
            kernels.append((c, norm))
    whole = _squares(norms, total)
    if not kernels or len(kernels) == len(total) or not whole > 0:
        return None
    return _squares(norms, kernels) / whole


def unscaled(value: float, scale: float) -> float:
    """`value`, of gradients that carry the loss scale `scale`, without it;
    NaN at a scale of 0 (a loss scale halved at every overflow until it
    underflowed: the gradients tell nothing more)."""
    return value / scale if scale else math.nan


def grad_rms(layout: StepLayout, norms: list, scale: float) -> list[float | None]:
    """Each layer's gradient RMS from one step's gradient columns of the
    every-step row (`norms`, carrying the loss scale `scale`), None for a
    layer without gradients in the step: a full step's `grad_rms`
    (`read_layers`) for any step."""
    plan = _plan(layout)
    return [
        unscaled(math.sqrt(_squares(norms, columns) / count), scale)
        if columns
        else None
        for columns, count in zip(plan["grads"], plan["counts"])
    ]


def split_samples(layout: StepLayout, values) -> dict:
    """The `"sample"` vector cut into each layer's gradient sample, by
    layer index (layers without gradients in the step left out)."""
    present = set(layout.grad_layers)
    out, at = {}, 0
    for i, size in layout.samples:
        if i in present:
            out[i] = values[at : at + size]
        at += size
    return out
