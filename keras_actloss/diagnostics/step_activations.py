"""The activation counts of one training step, in one vector.

`GradientDiagnostics` calls `activation_vector` inside the real training
step on every backend (the TensorFlow hooks and the JAX ones) on the kept
outputs of the monitored layers, with the primitives of
`diagnostics.step_stats` (shared constants on TensorFlow, where every graph
op costs tracing time). The host takes the fractions
(`diagnostics.step_reader.activation_fields`).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

from keras import ops

from keras_actloss.diagnostics import stats
from keras_actloss.diagnostics.step_stats import _backend_primitives, _rank
from keras_actloss.tensor_types import Tensor


class ActivationEntry(NamedTuple):
    """A layer's part of `activation_vector`: `units` active counts (one
    per unit; 0 when the profile has no inactive region) among the
    vectors, and among the scalars after them the saturated count if
    `saturation`, then the element count unless `per_sample` (the
    elements per sample, when static) gives it. `samples`: the samples
    its units saw in the step, when counted apart from the step's batch
    (its largest call's, static), else None."""

    layer: int
    units: int
    saturation: bool
    per_sample: int | None
    samples: int | None = None


def unit_gradients(plans, grads: list, variables: list) -> dict[int, Tensor]:
    """Layer index -> the gradient of its `unit_variable` (one element per
    unit), for the layers judged by sign (`LayerInfo.units_by_sign`) among
    `plans`, from a step's `grads` of `variables` (None where a variable
    got none)."""
    wanted = {
        id(plan.unit_variable): i
        for i, plan in enumerate(plans)
        if plan.unit_variable is not None
    }
    return {
        wanted[id(v)]: g
        for g, v in zip(grads, variables)
        if id(v) in wanted and g is not None and _rank(g.shape) == 1
    }


def flow_layout(plans) -> tuple[tuple[int, int], ...]:
    """`(layer index, units)` of the plans with a `flow_variable` of a
    static length, in plan order: the layout of `unit_flow`'s vector."""
    out = []
    for i, plan in enumerate(plans):
        variable = plan.flow_variable
        if variable is not None and len(variable.shape) == 1 and variable.shape[0]:
            out.append((i, int(variable.shape[0])))
    return tuple(out)


def unit_flow(plans, layout: tuple, grads: list, variables: list) -> Tensor | None:
    """`[n]` float32, 1 where the gradient of a unit's `flow_variable` is
    not 0 in the step (the unit passed some gradient back), else 0, for
    the layers of `layout` (`flow_layout`; 0 for a layer whose variable got
    no gradient). None for an empty layout. One concat, one comparison and
    one cast: it runs on every step."""
    if not layout:
        return None
    by_variable = {id(v): g for g, v in zip(grads, variables) if g is not None}
    parts = []
    for i, units in layout:
        grad = by_variable.get(id(plans[i].flow_variable))
        if grad is None or _rank(grad.shape) != 1 or grad.shape[0] != units:
            grad = ops.zeros((units,), "float32")
        parts.append(ops.cast(grad, "float32"))
    prim = _backend_primitives()
    joined = prim.concat(parts)
    return ops.cast(ops.not_equal(joined, prim.constant(0.0, "float32")), "float32")


def activation_vector(
    outputs: dict[int, list],
    plans,
    elements: bool = False,
    batch: int | None = None,
    unit_grads: dict | None = None,
) -> tuple:
    """The activation counts of the kept layer outputs, in one vector.

    Per layer, `stats.activation_counts` (with the shared constants and
    counts of `step_stats`' primitives), summed over its calls in the step
    (a shared layer's every use). The per-unit counts of every layer come
    first, then one stack of the layers' scalars: no reshape per layer. A
    layer whose unit count is not static, or not the same in every call,
    is left out. The counts add up across replicas; the host
    takes the fractions (`step_reader.activation_fields`).

    Args:
        outputs: Layer index -> what the step kept of its calls (the
            outputs, `plan.measured` of each).
        plans: The monitored layers, with `profile`, `channel_axis`,
            `measured` and `counted` (the elements that count, when not
            all).
        elements: Whether to count every layer's elements in the step even
            when static shapes give them per sample, and note the samples
            of its largest call (calls of a layer on batches other than the
            step's, as a GAN's generator on its latents). Defaults to
            `False`: so only for a layer whose calls all have a static
            batch size other than `batch`.
        batch: The static batch size of the step's data (None: unknown, as
            in a TensorFlow step, where a layer's outputs from the data have
            none either). Defaults to `None`.
        unit_grads: `unit_gradients` of the step. A layer judged by sign
            counts, per unit, its elements above 0 plus 1 when its gradient
            is not 0 there: 0 for a unit both at most 0 on every element and
            without gradient (dead behind a ReLU). Left out without its
            gradient. Defaults to `None`.

    Returns:
        The `[k]` float32 vector (None when empty) and its layout, a tuple
        of `ActivationEntry`.
    """
    prim = _backend_primitives()
    vectors, scalars, layout = [], [], []
    for i, plan in enumerate(plans):
        calls = [plan.measured(x) for x in outputs.get(i, ())]
        calls = [x for x in calls if _rank(x.shape)]
        if not calls:
            continue
        profile = plan.profile
        axes = [plan.channel_axis % len(x.shape) for x in calls]
        units = {x.shape[a] for x, a in zip(calls, axes)}
        if profile.inactive_below is None:
            units = {0}
        if len(units) != 1 or None in units:
            continue
        (units,) = units
        passed = None
        if plan.unit_variable is not None:
            passed = (unit_grads or {}).get(i)
            if passed is None or passed.shape[0] != units:
                continue
        sizes = [x.shape[1:] for x in calls]
        batches = {x.shape[0] for x in calls}
        apart = None not in batches and (elements or batches != {batch})
        per_sample = None
        if not apart and all(None not in s for s in sizes):
            per_sample = sum(math.prod(s) for s in sizes)
        counted = [plan.counted(x) for x in calls]
        if counted[0] is not None:
            per_sample = None  # Its elements are counted in the step.
        counts = [
            stats.activation_counts(
                x,
                profile,
                a,
                per_sample is None,
                prim.constant,
                prim.count,
                prim.floor_ratio,
            )
            for x, a in zip(calls, axes)
        ]
        for c, mask in zip(counts, counted):
            if mask is not None:
                c["elements"] = prim.count(mask, tuple(range(len(mask.shape))))
        summed = {k: _summed(c[k] for c in counts) for k in counts[0]}
        if passed is not None:
            zero = prim.constant(0.0, "float32")
            flowing = ops.cast(ops.not_equal(passed, zero), "float32")
            summed["active_per_unit"] = summed["active_per_unit"] + flowing
        if units:
            vectors.append(summed["active_per_unit"])
        saturation = "saturated" in summed
        if saturation:
            scalars.append(summed["saturated"])
        if per_sample is None:
            scalars.append(summed["elements"])
        samples = max(batches) if apart else None
        layout.append(ActivationEntry(i, units, saturation, per_sample, samples))
    if scalars:
        vectors.append(
            ops.stack(scalars) if len(scalars) > 1 else prim.flat(scalars[0])
        )
    if not vectors:
        return None, tuple(layout)
    return prim.concat(vectors), tuple(layout)


def _summed(counts) -> Tensor:
    return functools.reduce(ops.add, counts)


def joined(first, first_layout: tuple, second, second_layout: tuple) -> tuple:
    """Two `activation_vector` results (vector or None, layout) as one: the
    per-unit counts of both, then the scalars of both, in `activation_vector`'s
    layout."""
    if second is None:
        return first, first_layout
    if first is None:
        return second, second_layout
    n, m = (sum(entry.units for entry in lay) for lay in (first_layout, second_layout))
    parts = [first[:n], second[:m], first[n:], second[m:]]
    return ops.concatenate(parts, 0), (*first_layout, *second_layout)
