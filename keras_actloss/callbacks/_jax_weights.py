"""A full step's weight and update rows on JAX, reduced by the host.

`JaxTrainHooks` (`_jax_hooks`) records a full step's two rows of the
weights (`_jax_stats.weight_rows`: the weights' norms and their update's)
from the training state that goes into and out of the step, outside it: in
the step, XLA would copy every weight on every step to keep the values
from before the update. The step donates its state, so `weights_before`
copies its trainable values before it runs, and `with_weight_rows` reduces
those at the traced step's positions with the state that came out: a copy
of the weights and their reduction per full step, nothing on the others.

Weights on one CPU device (JAX's CPU backend: they are host memory) are
copied and reduced by NumPy (`_host_rows`), which compiles nothing; others
(an accelerator's, or sharded over several devices) by two small jitted
programs on their devices (`_copies`, `_rows`), compiled once a process:
a MobileNet-size model's reduction took longer to compile than NumPy
takes for all the full steps of a run. The same for the kernels' mean
squares before training (`mean_squares`).
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
    None when the step reduces its weights itself (`positions` None):
    NumPy arrays for values on one CPU device (`on_host`), else device
    arrays."""
    values = trainable(state)
    if positions is None or not values:
        return None
    if on_host(values):
        return [np.array(v) for v in values]
    return _copies(values)


def on_host(values: list) -> bool:
    """Whether every value is a JAX array on one CPU device."""
    for value in values:
        devices = value.devices() if isinstance(value, jax.Array) else ()
        if len(devices) != 1 or next(iter(devices)).platform != "cpu":
            return False
    return True


def with_weight_rows(out: dict, positions, before: list | None, state) -> dict:
    """The full step's statistics `out` with the two rows of the weights at
    `positions` (the traced step's), from `before` (`weights_before`);
    reduced at once, before the next step donates the state that came
    out."""
    if before is None or not isinstance(positions, list):
        return out
    after = trainable(state)
    before, after = [before[j] for j in positions], [after[j] for j in positions]
    if all(isinstance(b, np.ndarray) for b in before):
        weights, updates = _host_rows(before, after)
    else:
        weights, updates = _rows(before, after)
    return {**out, "weights": weights, "updates": updates}


def _host_rows(before: list[np.ndarray], after: list) -> tuple[np.ndarray, ...]:
    """`_rows` by NumPy: `before` host copies, `after` arrays on the CPU
    (read where they are). float32, as the step computes; infinities and
    NaN propagate, as there, without NumPy's warnings."""
    layout = step_stats.row_layout([b.shape for b in before])
    weights, updates = [], []
    with np.errstate(all="ignore"):
        for i, norm in zip(layout.order, layout.norms):
            b = np.asarray(before[i], "float32").ravel()
            d = np.asarray(after[i], "float32").ravel() - b
            for row, x in ((weights, b), (updates, d)):
                square = np.dot(x, x)
                row.append(np.sqrt(square) if norm else square)
    return np.array(weights, "float32"), np.array(updates, "float32")


def mean_squares(values: list) -> list[float]:
    """`TrainHooks.mean_squares` on JAX: by NumPy for values on one CPU
    device (`on_host`), else by one jitted program on their devices. Not a
    mean and a square per value: JAX compiles each operation for each
    shape, and a MobileNet-size model's few dozen kernel shapes took over
    a second to compile before its first step."""
    if not values:
        return []
    if on_host(values):
        with np.errstate(all="ignore"):
            return [float(np.mean(np.square(np.asarray(v, "float32")))) for v in values]
    return [float(m) for m in np.asarray(_mean_squares(values))]


@jax.jit
def _mean_squares(values: list):
    return jnp.stack([jnp.mean(jnp.square(v.astype("float32"))) for v in values])


@jax.jit
def _copies(values: list) -> list:
    return [jax.numpy.copy(v) for v in values]


# The segment ids of the last model's small weights (`_rows`).
_segment_ids: dict[tuple, object] = {}


def _rows(before: list, after: list) -> tuple:
    """`weight_rows(before, after)`'s two rows (`_reduce_rows`)."""
    layout = step_stats.row_layout([value.shape for value in before])
    at = layout.order[sum(layout.norms) :]
    small = tuple(math.prod(before[i].shape) for i in at)
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
    layout = step_stats.row_layout([v.shape for v in before])
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
