"""A full step's weight and update rows on JAX, reduced by the host.

`JaxTrainHooks` (`_jax_hooks`) records a full step's two rows of the
weights (`_jax_stats.weight_rows`: the weights' norms and their update's)
from the training state that goes into and out of the step, in two small
jitted programs of their own: in the step, XLA would copy every weight on
every step to keep the values from before the update. The step donates
its state, so `weights_before` copies its trainable values before it runs,
and `with_weight_rows` reduces those at the traced step's positions with
the state that came out (`_rows`): a copy of the weights and two small
dispatches per full step, nothing on the others.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from keras_actloss.diagnostics import step_stats


def trainable(state) -> list:
    """The trainable values of a training state (its first part)."""
    first = state[0] if isinstance(state, (tuple, list)) and state else None
    return list(first) if isinstance(first, (tuple, list)) else []


# `_weight_positions` until the step is traced (its weights are copied).
UNTRACED = "untraced"


def weights_before(positions, state) -> list | None:
    """Copies of the trainable values of `state` before a full step, or
    None when the step reduces its weights itself (`positions` None)."""
    values = trainable(state)
    if positions is None or not values:
        return None
    return _copies(values)


def with_weight_rows(out: dict, positions, before: list | None, state) -> dict:
    """The full step's statistics `out` with the two rows of the weights at
    `positions` (the traced step's), from `before` (`weights_before`)."""
    if before is None or not isinstance(positions, list):
        return out
    after = trainable(state)
    weights, updates = _rows(
        [before[j] for j in positions], [after[j] for j in positions]
    )
    return {**out, "weights": weights, "updates": updates}


@jax.jit
def _copies(values: list) -> list:
    return [jax.numpy.copy(v) for v in values]


# The segment ids of the last model's small weights (`_rows`).
_segment_ids: dict[tuple, object] = {}


def _rows(before: list, after: list) -> tuple:
    """`weight_rows(before, after)`'s two rows (`_reduce_rows`)."""
    small = tuple(
        math.prod(value.shape)
        for value in before
        if not step_stats.is_large(value.shape)
    )
    ids = _segment_ids.get(small)
    if ids is None and small:
        # An argument, made once (for the last model only): as a constant
        # of the program XLA would fold it, slowly for many weights.
        ids = np.repeat(np.arange(len(small), dtype="int32"), small)
        _segment_ids.clear()
        ids = _segment_ids[small] = jax.device_put(ids)
    return _reduce_rows(before, after, ids)


@jax.jit
def _reduce_rows(before: list, after: list, ids) -> tuple:
    """`weight_rows(before, after)`'s two rows, in the columns of
    `step_stats.norm_row`'s layout: a large weight's column its norm, one
    reduction of its own; a small one's its sum of squares, all of them
    joined in one vector with one segment sum per row (`ids`: each
    element's weight among the small ones).

    Not `weight_rows` itself: its several operations per small weight took
    seconds to compile for a CNN's hundreds of weights, once a process.
    Nor one segment sum of every weight: XLA's CPU scatter adds a segment's
    elements one after the other, and for an MLP with one large weight
    these rows took longer than its training step.
    """
    layout = step_stats.norm_row(before, norms=False).layout
    large = [i for i, norm in zip(layout.order, layout.norms) if norm]
    small = layout.order[len(large) :]
    joined = [
        jnp.concatenate([jnp.ravel(v[i]).astype("float32") for i in small])
        for v in (before, after)
        if small
    ]
    rows = []
    for update in (False, True):
        parts = []
        if large:
            sums = [jnp.sum(_squares(before[i], after[i], update)) for i in large]
            parts.append(jnp.sqrt(jnp.stack(sums)))
        if small:
            squares = _squares(*joined, update)
            parts.append(jax.ops.segment_sum(squares, ids, len(small)))
        rows.append(jnp.concatenate(parts) if parts else jnp.zeros((0,), "float32"))
    return tuple(rows)


def _squares(before, after, update: bool):
    """The squares of `before` (float32), or of its change to `after`."""
    b = before.astype("float32")
    return jnp.square(after.astype("float32") - b) if update else b * b
