"""Statistics of one training step, as small pure functions on `keras.ops`.

`GradientDiagnostics` computes these inside the real training step, on every
backend: the TensorFlow hooks (`callbacks._graph_stats`) and the JAX ones
(`callbacks._jax_stats`) pass them the gradients the optimizer receives, the
weights and their updates and the monitored layers' outputs, and return
the results from the step as named tensors. The host finishes the
arithmetic (`diagnostics.step_reader`).

- `norm_row`: a `[1, m]` row of per-tensor norms (an L2 norm for a large
  tensor, a sum of squares for a small one, placed by a `RowLayout`), with
  the tensors' max and min and every element joined, on request;
- `alarm`: the every-step alarm values (unscaled squared global norm,
  learning rate, zero gradient norms, silent units, loss);
- `gradient_sample`: a strided sample of each layer's gradients, one gather
  of positions fixed at trace time (`sample_index`) on TensorFlow, static
  strided slices of the gradients elsewhere (`sliced_sample`);
- and in `diagnostics.step_activations`, `activation_vector`: the
  activation counts of the monitored layers in one vector, placed by
  `ActivationEntry`s (with this module's primitives).

A full step returns the dict `FULL_KEYS`: `"row"` (the every-step row,
its layout backend-specific), `"extremes"` (`[2m]`: the gradients' max,
then min, in row order), `"head"` (`[3]`: loss, batch size, the steps
whose activations are summed, 1 but with several steps per execution), `"weights"`
and `"updates"` (`norm_row`s of the weights before the update and of
their change), `"activations"` (`activation_vector`), `"sample"`
(`gradient_sample`).

Written for few graph ops: they run on every step on TensorFlow, where each
small op costs several microseconds. Only `_backend_primitives` knows the
backend.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import keras
import numpy as np
from keras import ops

from keras_actloss.diagnostics import stats
from keras_actloss.tensor_types import Tensor

FULL_KEYS = ("row", "extremes", "head", "weights", "updates", "activations", "sample")
HEAD_FIELDS = ("loss", "batch_size", "summed_steps")

# Below this many elements a tensor's sum of squares is taken with the other
# small ones in one segment sum; from here on it gets its own L2 norm.
NORM_MIN_ELEMENTS = 4096


def is_large(shape) -> bool:
    """Whether `norm_row` gives a tensor of static `shape` a norm of its own."""
    if _rank(shape) is None:
        return True
    shape = tuple(shape)
    return None in shape or math.prod(shape) >= NORM_MIN_ELEMENTS


def _rank(shape) -> int | None:
    """The rank of a static shape (a tuple, or TensorFlow's `TensorShape`,
    whose rank may be unknown)."""
    return shape.rank if hasattr(shape, "rank") else len(shape)


@dataclasses.dataclass(frozen=True)
class RowLayout:
    """Where `norm_row` put each tensor.

    Column `k` holds tensor `order[k]`: its L2 norm if `norms[k]`, else its
    sum of squares.
    """

    order: tuple[int, ...] = ()
    norms: tuple[bool, ...] = ()

    def squares(self, values: np.ndarray) -> np.ndarray:
        """Sums of squares `[..., len(order)]` in tensor order, float64."""
        values = np.asarray(values, "float64")[..., : len(self.order)]
        squares = np.where(self.norms, values * values, values)
        out = np.empty_like(squares)
        out[..., list(self.order)] = squares
        return out

    def total(self, values: list[float]) -> float:
        """The sum of squares of every tensor from a row's columns (Python
        floats). NaN if any column is, else infinite if any is."""
        return math.fsum(v * v if n else v for v, n in zip(values, self.norms))

    def zeros(self, values: list[float] | np.ndarray) -> int | np.ndarray:
        """How many of a row's columns are exactly 0: tensors that were
        entirely zero (an array of rows: one count per row)."""
        if isinstance(values, np.ndarray):
            return (values[..., : len(self.order)] == 0.0).sum(axis=-1)
        return sum(1 for v in values[: len(self.order)] if v == 0.0)

    def first_non_finite(self, values: np.ndarray) -> int:
        """The first tensor (in tensor order) whose column is not finite."""
        bad = ~np.isfinite(np.asarray(values)[: len(self.order)])
        return min((self.order[k] for k in np.flatnonzero(bad)), default=-1)


def row_layout(shapes: list) -> RowLayout:
    """The `RowLayout` of `norm_row`'s columns for tensors of `shapes` (it
    needs no tensors): the large ones (`is_large`) first, each a norm, then
    the small ones, each a sum of squares, in their order."""
    large = [i for i, shape in enumerate(shapes) if is_large(shape)]
    small = [i for i, shape in enumerate(shapes) if not is_large(shape)]
    return RowLayout(tuple(large + small), (True,) * len(large) + (False,) * len(small))


class _Primitives(NamedTuple):
    row: Callable  # `[1, n]` view
    flat: Callable  # `[n]` view
    l2: Callable  # `[]` L2 norm of a tensor of static rank (all its axes)
    max: Callable  # `[]` max of a tensor of static rank
    min: Callable
    gather: Callable  # `x[index]` of a vector and constant in-range positions
    count: Callable  # float32 count of a boolean mask's True along `axes`
    constant: Callable  # `(value, dtype)`: a scalar to compare with
    floor_ratio: Callable  # `(x, cap)`: `floor(x / cap)`


def _backend_primitives(xla: bool = False) -> _Primitives:
    """The reshapes, reductions, gather and counts of `norm_row`,
    `gradient_sample` and `activation_vector`: `keras.ops`, except on
    TensorFlow.

    There `keras.ops` costs graph ops on every step, and every graph op
    costs tracing time (about half a millisecond each on a 2-core CPU,
    constants included) and graph optimization time when the function
    first runs. Counted in a traced graph (TensorFlow 2.21, Keras 3.15):
    `ops.reshape(x, (1, -1))`, `ops.max(x, axis=1)` and `ops.sum(x,
    axis=(0, 1))` are two ops each, a shape or axis constant and the op,
    and `ops.greater(x, 0.0)` two, a constant and the comparison (the
    constants are shared here: one per value and dtype, axis or shape per
    call); the L2 norm is four (`Square`, an axis constant, `Sum`, `Sqrt`)
    where `EuclideanNorm` is one vectorized read (also faster than
    `tf.nn.l2_loss` in a running step on a 2-core CPU), and a reduction
    over all the axes of a tensor needs no reshape of it first; `ops.take`
    is twelve where `tf.gather` is three (it wraps negative positions).
    Called once per function that uses them: TensorFlow constants belong
    to the graph being traced. With `xla` (a TensorFlow step compiled with
    XLA, which has no `EuclideanNorm`) the L2 norm is `Square`, `Sum` and
    `Sqrt`.
    """
    if keras.backend.backend() != "tensorflow":
        return _Primitives(
            row=lambda x: ops.reshape(x, (1, -1)),
            flat=lambda x: ops.reshape(x, (-1,)),
            l2=lambda x: ops.sqrt(ops.sum(ops.square(x))),
            max=ops.max,
            min=ops.min,
            gather=lambda x, index: ops.take(x, index, axis=0),
            count=lambda mask, axes: ops.sum(ops.cast(mask, "float32"), axis=axes),
            constant=lambda value, dtype: value,
            floor_ratio=stats.floor_ratio,
        )
    import tensorflow as tf

    flat_shape, row_shape = (tf.constant(v) for v in ([-1], [1, -1]))
    raw = tf.raw_ops

    @functools.cache
    def constant(value, dtype):
        return tf.constant(value, dtype)

    def every_axis(x):
        return constant(tuple(range(len(x.shape))), tf.int32)

    def count(mask, axes):
        ones = tf.cast(mask, "float32")
        return raw.Sum(input=ones, axis=constant(tuple(axes), tf.int32))

    def l2(x):
        if not xla:
            return raw.EuclideanNorm(input=x, axis=every_axis(x))
        return raw.Sqrt(x=raw.Sum(input=raw.Square(x=x), axis=every_axis(x)))

    return _Primitives(
        row=lambda x: tf.reshape(x, row_shape),
        flat=lambda x: tf.reshape(x, flat_shape),
        l2=l2,
        max=lambda x: raw.Max(input=x, axis=every_axis(x)),
        min=lambda x: raw.Min(input=x, axis=every_axis(x)),
        gather=tf.gather,
        count=count,
        constant=lambda value, dtype: constant(value, tf.as_dtype(dtype)),
        floor_ratio=lambda x, cap: raw.FloorDiv(x=x, y=cap),
    )


class NormRow(NamedTuple):
    """What `norm_row` returns."""

    row: Tensor  # `[1, m]` float32
    layout: RowLayout
    extremes: Tensor | None  # `[1, 2m]`: maxima, then minima (row order)
    joined: Tensor | None  # `[n]`: every element, in row order
    silent: Tensor | None = None  # `[]`: zero elements of small vectors


def norm_row(
    tensors: list,
    extremes: bool = False,
    joined: bool = False,
    norms: bool = True,
    silent: bool = False,
    xla: bool = False,
    shared: Callable | None = None,
) -> NormRow:
    """Per-tensor norms of `tensors` in one row, with their `RowLayout`.

    A large tensor (`is_large`) gets one L2 norm of a `[1, n]` view. The
    small ones are concatenated and squared once, and a segment sum gives
    each its sum of squares. NaN and infinity propagate.

    Args:
        tensors: Tensors of any shape and float dtype (read as float32).
        extremes: Whether to return each tensor's max and min too. A NaN in
            a tensor does not always reach its extremes: take the norm's.
            Defaults to `False`.
        joined: Whether to return every element of `tensors` in one vector,
            tensor after tensor in the layout's column order (a flat view
            of each large tensor, and one concat). Defaults to `False`.
        norms: Whether to compute the norms (`False`: only the layout and
            what `extremes` and `joined` ask for, for a caller that has the
            row already). Defaults to `True`.
        silent: Whether to count the elements that are exactly 0 in the
            small vectors (rank 1: biases, normalization scales and
            offsets, one element per unit or channel): a unit inactive on
            every sample of the batch gets exactly 0 there. Defaults to
            `False`.
        xla: Whether the step is compiled with XLA (TensorFlow's
            `jit_compile=True`): ops XLA has. Defaults to `False`.
        shared: `shared(ids)`, the tensor of the small tensors' segment
            ids (a NumPy array, one per element): a caller whose rows of one
            traced step have the same small tensors makes them one constant
            (`GraphStats.shared`). Defaults to `None`: one per call.

    Returns:
        A `NormRow`: the `[1, m]` float32 row (None without `norms`), its
        layout, the `[1, 2m]` maxima then minima (or None), the `[n]`
        joined elements (or None) and the float32 count of silent elements
        (or None).
    """
    prim = _backend_primitives(xla)
    l2s, highs, lows, large, small, small_at = [], [], [], [], [], []
    for i, tensor in enumerate(tensors):
        x = ops.cast(tensor, "float32")
        if not is_large(x.shape):
            small.append(x if _rank(x.shape) == 1 else prim.flat(x))
            small_at.append(i)
            continue
        if _rank(x.shape) is None:
            x = prim.flat(x)
        # Reduced over all its axes: no view of it, unless `joined`.
        if joined:
            large.append(x if _rank(x.shape) == 1 else prim.flat(x))
        if norms:
            l2s.append(prim.l2(x))
        if extremes:
            highs.append(prim.max(x))
            lows.append(prim.min(x))
    # Each part a vector: the large tensors' scalars stacked, the small
    # ones' segment reductions; one concat and one `[1, m]` view per row.
    rows, highs, lows = ([ops.stack(p)] if p else [] for p in (l2s, highs, lows))
    if small:
        k = len(small)
        flat = ops.concatenate(small, 0) if k > 1 else small[0]
        # Unsorted (`num_segments` given): XLA has no sorted segment ops.
        ids = np.repeat(
            np.arange(k, dtype="int32"), [math.prod(x.shape) for x in small]
        )
        # One tensor for the segment ops below, not a constant each.
        ids = shared(ids) if shared else ops.convert_to_tensor(ids)
        if norms:
            rows.append(ops.segment_sum(ops.square(flat), ids, k))
        if extremes:
            highs.append(ops.segment_max(flat, ids, k))
            lows.append(ops.segment_min(flat, ids, k))
    layout = row_layout([x.shape for x in tensors])
    out = NormRow(_joined_row(rows, prim) if norms else None, layout, None, None)
    if silent:
        out = out._replace(
            silent=_silent_count(tensors, small_at, small, flat if small else None)
        )
    if extremes:
        out = out._replace(extremes=_joined_row(highs + lows, prim))
    if joined:
        views = large + ([flat] if small else [])
        if not views:
            return out._replace(joined=ops.zeros((0,), "float32"))
        out = out._replace(
            joined=ops.concatenate(views, 0) if len(views) > 1 else views[0]
        )
    return out


def _silent_count(tensors: list, small_at: list[int], small: list, flat) -> Tensor:
    """Elements exactly 0 of the rank-1 tensors among the small ones
    (`small`, float32 views of `tensors` at `small_at`; `flat`, their
    concatenation), as float32.

    Where the small tensors are not all vectors, the vectors get a concat
    of their own: not a mask of the small elements, a constant as large
    as they are in the traced step (all of a model's small kernels')."""
    vectors = [x for i, x in zip(small_at, small) if _rank(tensors[i].shape) == 1]
    if not vectors:
        return ops.convert_to_tensor(0.0, "float32")
    if len(vectors) < len(small):
        flat = ops.concatenate(vectors, 0) if len(vectors) > 1 else vectors[0]
    return ops.sum(ops.cast(ops.equal(flat, 0.0), "float32"))


def _joined_row(parts: list, prim: _Primitives) -> Tensor:
    """The `[1, n]` row of the vectors `parts`, one after the other."""
    if not parts:
        return ops.zeros((1, 0), "float32")
    return prim.row(ops.concatenate(parts, 0) if len(parts) > 1 else parts[0])


def alarm(
    row: Tensor,
    layout: RowLayout,
    scale: Tensor | None,
    rate: Tensor,
    silent: Tensor | None = None,
    loss: Tensor | None = None,
) -> Tensor:
    """`[5]` float32: the unscaled squared global norm, the learning rate,
    how many of the row's columns are exactly 0 (`RowLayout.zeros`),
    `silent` (`NormRow.silent`; 0 when None) and the step's `loss` (0 when
    None: not known).

    From a `norm_row` row (`[1, m]`) of gradients that carry the loss scale
    `scale` (None: unscaled). A NaN or infinity in the gradients reaches the
    norm. The host compares the values with the alarm bounds.
    """
    # On the `[1, m]` row itself: no slice of it.
    zeros = ops.sum(ops.cast(ops.equal(row, 0.0), "float32"))
    if any(layout.norms):
        squares = row * row
        if not all(layout.norms):
            squares = ops.where(np.array([layout.norms]), squares, row)
    else:
        squares = row
    total = ops.sum(squares)
    if scale is not None:
        total = total / ops.square(ops.cast(scale, "float32"))
    silent = 0.0 if silent is None else silent
    silent = ops.cast(silent, "float32")
    loss = ops.cast(0.0 if loss is None else ops.reshape(loss, ()), "float32")
    return ops.stack([total, ops.cast(rate, "float32"), zeros, silent, loss])


def sample_positions(counts: list[int], size: int) -> list[np.ndarray]:
    """Positions of a strided sample of `size` elements across tensors of
    `counts` elements (flattened, one after the other), per tensor.

    The stride is `max(1, sum(counts) // size)`; the sample holds the first
    `min(size, sum(counts))` elements at multiples of it.
    """
    total = sum(counts)
    stride = max(1, total // size) if size else 1
    taken = np.arange(min(size, total), dtype="int64") * stride
    out, start = [], 0
    for n in counts:
        inside = taken[(taken >= start) & (taken < start + n)]
        out.append((inside - start).astype("int32"))
        start += n
    return out


def sample_index(
    counts: list[int], layers: list[int], layout: RowLayout, sizes: dict[int, int]
) -> np.ndarray:
    """Positions in `norm_row(..., joined=True).joined` (plus one zero
    appended) of each layer's gradient sample, joined (trace time).

    Layer `i`'s sample is `sizes[i]` long: `sample_positions` over its
    tensors (`layers[k] == i`, `counts[k]` elements each) in tensor order;
    positions its tensors do not fill read the appended zero.
    """
    start, at = {}, 0
    for k in layout.order:
        start[k], at = at, at + counts[k]
    pieces = [np.zeros(0, "int64")]
    for size, found in _layer_samples(counts, layers, sizes):
        pieces += [p + start[k] for k, p in found]
        pieces.append(np.full(size - sum(len(p) for _, p in found), at))
    return np.concatenate(pieces).astype("int32")


def _layer_samples(counts: list[int], layers: list[int], sizes: dict[int, int]):
    """Per layer `i` of `sizes`, in order: its sample size and, for each of
    its tensors (`layers[k] == i`, in tensor order), `(k, positions)` of its
    part of the layer's strided sample (`sample_positions`)."""
    mine: dict[int, list[int]] = {}
    for k, layer in enumerate(layers):
        mine.setdefault(layer, []).append(k)
    for i, size in sizes.items():
        ks = mine.get(i, [])
        yield size, list(zip(ks, sample_positions([counts[k] for k in ks], size)))


def sliced_sample(
    tensors: list, layers: list[int], sizes: dict[int, int], scale: Tensor | None
) -> Tensor:
    """`gradient_sample`'s vector taken from `tensors` themselves: each
    tensor's part of its layer's strided sample (`sample_positions`) is one
    static strided slice of its flat view, then zeros pad each layer's
    sample to its size; divided by the loss scale `scale` (None: unscaled).

    For XLA backends (JAX): a full step makes no copy of every gradient
    into one vector (as large as the model) and no gather. TensorFlow keeps
    the gather, whose tracing costs a few graph ops where a slice per
    tensor costs several.
    """
    counts = [math.prod(x.shape) for x in tensors]
    pieces = []
    for size, found in _layer_samples(counts, layers, sizes):
        taken = 0
        for k, at in found:
            if not len(at):
                continue
            step = int(at[1] - at[0]) if len(at) > 1 else 1
            flat = ops.reshape(tensors[k], (-1,))[int(at[0]) : int(at[-1]) + 1 : step]
            pieces.append(ops.cast(flat, "float32"))
            taken += len(at)
        if size > taken:
            pieces.append(ops.zeros((size - taken,), "float32"))
    if not pieces:
        return ops.zeros((0,), "float32")
    sample = ops.concatenate(pieces, 0) if len(pieces) > 1 else pieces[0]
    return sample if scale is None else sample / scale


def gradient_sample(joined: Tensor, index: np.ndarray, scale: Tensor | None) -> Tensor:
    """`[len(index)]` float32: the joined gradients at `index`
    (`sample_index`), divided by the loss scale `scale` (None: unscaled).

    One gather of constant positions: a slice of every gradient made a
    large model's first full step take seconds longer to trace on
    TensorFlow.
    """
    if not len(index):
        return ops.zeros((0,), "float32")
    padded = ops.concatenate([ops.cast(joined, "float32"), ops.zeros((1,))], 0)
    sample = _backend_primitives().gather(padded, index)
    return sample if scale is None else sample / scale
