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

from keras_actloss.callbacks._jax_stats import weight_rows
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


# Most weight elements `_rows` joins in one vector (a transient float32 copy
# of the weights before and after, and their segment ids, kept for the last
# model): a larger model reduces each weight on its own.
FLAT_ROWS_MAX = 2**22
_segment_ids: dict[tuple, object] = {}


def _rows(before: list, after: list) -> tuple:
    """`weight_rows(before, after)`'s two rows (`_reduce_rows`)."""
    sizes = tuple(math.prod(value.shape) for value in before)
    if not sizes or sum(sizes) > FLAT_ROWS_MAX:
        return _reduce_rows(before, after, None)
    ids = _segment_ids.get(sizes)
    if ids is None:
        # An argument, made once (for the last model only): as a constant
        # of the program XLA would fold it for seconds.
        ids = np.repeat(np.arange(len(sizes), dtype="int32"), sizes)
        _segment_ids.clear()
        ids = _segment_ids[sizes] = jax.device_put(ids)
    return _reduce_rows(before, after, ids)


@jax.jit
def _reduce_rows(before: list, after: list, ids) -> tuple:
    """`weight_rows(before, after)`'s two rows, in the columns of
    `step_stats.norm_row`'s layout (a large weight's column its norm, a
    small one's its sum of squares).

    With `ids` (each element's weight) all the weights go in one vector,
    with one segment sum per row: XLA compiles a handful of operations,
    once a process, where `norm_row` has several per weight (a CNN's
    hundreds of weights take seconds to compile). A segment's sum adds its
    squares in order, in float32: a relative error of about 1e-5 on the
    sum of a hundred thousand squares, against about 1e-6.
    """
    if ids is None:
        return tuple(row.row[0] for row in weight_rows(before, after))
    layout = step_stats.norm_row(before, norms=False).layout
    b, a = (
        jnp.concatenate([jnp.ravel(value).astype("float32") for value in values])
        for values in (before, after)
    )
    columns, norms = np.array(layout.order), np.array(layout.norms)
    rows = []
    for squares in (b * b, jnp.square(a - b)):
        sums = jax.ops.segment_sum(squares, ids, len(before))[columns]
        rows.append(jnp.where(norms, jnp.sqrt(sums), sums))
    return tuple(rows)
