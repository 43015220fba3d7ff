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
import hashlib
import math
import threading
import weakref
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
    needs no tensors): the large ones (`is_large`) first, each a norm, in
    their order, then the small ones, each a sum of squares, those of one
    shape side by side (at the first of them; `norm_row` views a run of
    same-shape kernels as one stack)."""
    large = [i for i, shape in enumerate(shapes) if is_large(shape)]
    small = [i for i, shape in enumerate(shapes) if not is_large(shape)]
    first: dict[tuple, int] = {}
    for i in small:
        first.setdefault(tuple(shapes[i]), i)
    small.sort(key=lambda i: first[tuple(shapes[i])])
    return RowLayout(tuple(large + small), (True,) * len(large) + (False,) * len(small))


# A run of at least this many small kernels of one shape is viewed as one
# stack (two graph ops) instead of a view each.
_STACKED_RUN = 3


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
    concat: Callable  # `(parts)`: vectors one after the other (one: itself)
    segment: Callable  # `(kind, x, ids, k)`: "sum", "max" or "min" by segment


_KERAS_SEGMENTS = {
    "sum": ops.segment_sum,
    "max": ops.segment_max,
    "min": ops.segment_min,
}


_KERAS_PRIMITIVES = _Primitives(
    row=lambda x: ops.reshape(x, (1, -1)),
    flat=lambda x: ops.reshape(x, (-1,)),
    l2=lambda x: ops.sqrt(ops.sum(ops.square(x))),
    max=ops.max,
    min=ops.min,
    gather=lambda x, index: ops.take(x, index, axis=0),
    count=lambda mask, axes: ops.sum(ops.cast(mask, "float32"), axis=axes),
    constant=lambda value, dtype: value,
    floor_ratio=stats.floor_ratio,
    concat=lambda parts: ops.concatenate(parts, 0) if len(parts) > 1 else parts[0],
    segment=lambda kind, x, ids, k: _KERAS_SEGMENTS[kind](x, ids, k),
)

# TensorFlow's primitives by traced graph, then by thread and `xla`: one
# set of constants for every statistic of a traced step.
_TF_PRIMITIVES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _backend_primitives(xla: bool = False) -> _Primitives:
    """The reshapes, reductions, gather, concat, segment reductions and
    counts of `norm_row`, `gradient_sample` and `activation_vector`:
    `keras.ops`, except on TensorFlow.

    There `keras.ops` costs graph ops on every step, and every graph op
    costs tracing time (about half a millisecond each on a 2-core CPU,
    constants included) and graph optimization time when the function
    first runs. Counted in a traced graph (TensorFlow 2.21, Keras 3.15):
    `ops.reshape(x, (1, -1))`, `ops.max(x, axis=1)`, `ops.sum(x,
    axis=(0, 1))` and `ops.concatenate(xs, 0)` are two ops each, a shape
    or axis constant and the op, `ops.segment_sum(x, ids, k)` two (`k`), and
    `ops.greater(x, 0.0)` two, a constant and the comparison; here each
    constant is made once per traced graph (and thread: a replica's), for
    every statistic of the step. The L2 norm is four ops in `keras.ops`
    (`Square`, an axis constant, `Sum`, `Sqrt`) where `EuclideanNorm` is
    one vectorized read (also faster than `tf.nn.l2_loss` in a running
    step on a 2-core CPU), and a reduction over all the axes of a tensor
    needs no reshape of it first; `ops.take` is twelve where `tf.gather`
    is three (it wraps negative positions). With `xla` (a TensorFlow step
    compiled with XLA, which has no `EuclideanNorm`) the L2 norm is
    `Square`, `Sum` and `Sqrt`.
    """
    if keras.backend.backend() != "tensorflow":
        return _KERAS_PRIMITIVES
    import tensorflow as tf

    if tf.executing_eagerly():
        return _tf_primitives(tf, xla, _tf_constants(tf))
    by_graph = _TF_PRIMITIVES.setdefault(tf.compat.v1.get_default_graph(), {})
    mine = by_graph.setdefault(threading.get_ident(), {})
    if xla not in mine:
        if "constant" not in mine:
            mine["constant"] = _tf_constants(tf)
        mine[xla] = _tf_primitives(tf, xla, mine["constant"])
    return mine[xla]


def _tf_constants(tf) -> Callable:
    """`constant(value, dtype)`: one TensorFlow constant per value (a
    Python value, or a NumPy array by its content) and dtype, made under no
    control dependencies (shared by ops under any). The rows of a full step
    have the same small tensors: one array of their segment ids (an element
    per element of them) serves them all, where each row made its own;
    every copy of it is graph that tracing and graph optimization copy and
    scan before the first step."""
    made = {}

    def constant(value, dtype):
        key = value, dtype
        if isinstance(value, np.ndarray):
            key = value.shape, dtype, hashlib.sha1(value.tobytes()).digest()
        if key not in made:
            with tf.control_dependencies(None):
                made[key] = tf.constant(value, dtype)
        return made[key]

    return constant


def _tf_primitives(tf, xla: bool, constant: Callable) -> _Primitives:
    """`_backend_primitives` on TensorFlow, for the graph being traced (or
    eager execution), with its `constant`s (`_tf_constants`)."""
    raw = tf.raw_ops

    def every_axis(x):
        return constant(tuple(range(len(x.shape))), tf.int32)

    def count(mask, axes):
        ones = tf.cast(mask, "float32")
        return raw.Sum(input=ones, axis=constant(tuple(axes), tf.int32))

    def l2(x):
        if not xla:
            return raw.EuclideanNorm(input=x, axis=every_axis(x))
        return raw.Sqrt(x=raw.Sum(input=raw.Square(x=x), axis=every_axis(x)))

    def concat(parts):
        if len(parts) == 1:
            return parts[0]
        return raw.ConcatV2(values=parts, axis=constant(0, tf.int32))

    segments = {
        "sum": raw.UnsortedSegmentSum,
        "max": raw.UnsortedSegmentMax,
        "min": raw.UnsortedSegmentMin,
    }

    def segment(kind, x, ids, k):
        k = constant(k, tf.int32)
        return segments[kind](data=x, segment_ids=ids, num_segments=k)

    return _Primitives(
        row=lambda x: raw.Reshape(tensor=x, shape=constant((1, -1), tf.int32)),
        flat=lambda x: raw.Reshape(tensor=x, shape=constant((-1,), tf.int32)),
        l2=l2,
        max=lambda x: raw.Max(input=x, axis=every_axis(x)),
        min=lambda x: raw.Min(input=x, axis=every_axis(x)),
        gather=tf.gather,
        count=count,
        constant=lambda value, dtype: constant(value, tf.as_dtype(dtype)),
        floor_ratio=lambda x, cap: raw.FloorDiv(x=x, y=cap),
        concat=concat,
        segment=segment,
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
    pad: bool = False,
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
        pad: Whether the joined elements end with one 0 more (the fill of
            `gradient_sample`'s positions past a layer's tensors: one
            copy of every gradient in the step, not two). Defaults to
            `False`.

    Returns:
        A `NormRow`: the `[1, m]` float32 row (None without `norms`), its
        layout, the `[1, 2m]` maxima then minima (or None), the `[n]`
        joined elements (`[n + 1]` with `pad`; or None) and the float32
        count of silent elements (or None).
    """
    prim = _backend_primitives(xla)
    layout = row_layout([x.shape for x in tensors])
    l2s, highs, lows, large = [], [], [], []
    n_large = sum(layout.norms)
    for i in layout.order[:n_large]:
        x = ops.cast(tensors[i], "float32")
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
    small_at = layout.order[n_large:]
    small, vectors = _small_views(tensors, small_at, prim)
    flat = None
    if small:
        k = len(small_at)
        flat = prim.concat(small)
        # Unsorted (`num_segments` given): XLA has no sorted segment ops.
        ids = np.repeat(
            np.arange(k, dtype="int32"),
            [math.prod(tensors[i].shape) for i in small_at],
        )
        # One tensor for the segment ops below (and the other rows of a
        # traced step with the same small tensors), not a constant each.
        ids = ops.convert_to_tensor(prim.constant(ids, "int32"))
        if norms:
            rows.append(prim.segment("sum", ops.square(flat), ids, k))
        if extremes:
            highs.append(prim.segment("max", flat, ids, k))
            lows.append(prim.segment("min", flat, ids, k))
    out = NormRow(_joined_row(rows, prim) if norms else None, layout, None, None)
    if silent:
        out = out._replace(
            silent=_silent_count(vectors, len(vectors) == len(small_at), flat, prim)
        )
    if extremes:
        out = out._replace(extremes=_joined_row(highs + lows, prim))
    if joined:
        views = large + ([flat] if small else [])
        if pad:
            views.append(prim.constant((0.0,), "float32"))
        if not views:
            return out._replace(joined=ops.zeros((0,), "float32"))
        out = out._replace(joined=prim.concat(views))
    return out


def _small_views(tensors: list, small_at: tuple, prim: _Primitives) -> tuple:
    """The float32 vector views of the small tensors at `small_at` (in
    that order, `RowLayout`'s), to be joined, and the vectors among them.

    A vector is its own view; a run of `_STACKED_RUN` or more kernels of
    one shape is one stack's view (two graph ops, which a view per kernel
    would exceed: MobileNetV2 has 38 small kernels of 16 shapes); another
    kernel is a view of its own."""
    views, vectors, j = [], [], 0
    while j < len(small_at):
        x = ops.cast(tensors[small_at[j]], "float32")
        if _rank(x.shape) == 1:
            views.append(x)
            vectors.append(x)
            j += 1
            continue
        run = [x]
        while j + len(run) < len(small_at):
            y = tensors[small_at[j + len(run)]]
            if tuple(y.shape) != tuple(x.shape):
                break
            run.append(ops.cast(y, "float32"))
        if len(run) >= _STACKED_RUN:
            views.append(prim.flat(ops.stack(run)))
        else:
            views += [prim.flat(y) for y in run]
        j += len(run)
    return views, vectors


def _silent_count(vectors: list, only: bool, flat, prim: _Primitives) -> Tensor:
    """Elements exactly 0 of the rank-1 tensors among the small ones
    (`vectors`, float32; `only`: whether every small one is a vector, and
    `flat` their concatenation), as float32.

    Where the small tensors are not all vectors, the vectors get a concat
    of their own: not a mask of the small elements, a constant as large
    as they are in the traced step (all of a model's small kernels')."""
    if not vectors:
        return ops.convert_to_tensor(0.0, "float32")
    if not only:
        flat = prim.concat(vectors)
    return prim.count(ops.equal(flat, prim.constant(0.0, "float32")), (0,))


def _joined_row(parts: list, prim: _Primitives) -> Tensor:
    """The `[1, n]` row of the vectors `parts`, one after the other."""
    if not parts:
        return ops.zeros((1, 0), "float32")
    return prim.row(prim.concat(parts))


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
    `joined` as `norm_row(..., joined=True, pad=True)` gives it: ending
    with the 0 that `index` reads past a layer's tensors.

    One gather of constant positions: a slice of every gradient made a
    large model's first full step take seconds longer to trace on
    TensorFlow.
    """
    if not len(index):
        return ops.zeros((0,), "float32")
    sample = _backend_primitives().gather(joined, index)
    return sample if scale is None else sample / scale
