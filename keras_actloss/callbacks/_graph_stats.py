"""In-graph statistics of the instrumented training step.

`TrainHooks` (in `_keras_hooks`, the module that touches Keras internals)
calls these methods from its `optimizer.apply` wrappers and at the end of
the traced step while `fit`'s train function is traced. They build
TensorFlow ops on the gradients the optimizers receive in the step (all
their `apply` calls together) and on the kept layer outputs: a ring of
per-step gradient norms
in a non-trainable variable, and a vector of full statistics that the train
function returns. The layouts below are the contract between the graph and
the host readers `read_steps`/`read_full`, which finish the arithmetic
in NumPy.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from keras_actloss.diagnostics import stats

SENTINEL = "sentinel"
FULL = "full"

# Under dynamic loss scaling a non-finite step is an overflow that the
# optimizer skips (and halves the scale). It only counts as a real non-finite
# gradient once this many consecutive steps were non-finite: by then the
# scale has been cut by 2**10, far beyond any normal overflow streak.
LOSS_SCALE_PATIENCE = 10

# Label rows kept from a recorded batch for `check_model(model, y=...)`.
LABEL_ROWS = 64

# Per-layer slots of a recording, in order. The host derives them from
# per-variable norms and extremes and per-unit activation counts.
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
_HOST_LAYER_FIELDS = (
    "grad_norm",
    "grad_rms",
    "grad_max",
    "weight_norm",
    "update_ratio",
)
# A ring row, written on every step: the step, a tick (our own step count,
# only under loss scaling, where a skipped step repeats the step), the loss
# scale (1 without), the learning rate, the loss (this replica's; NaN when
# unknown), then `_norm_row` of the gradients, zero-padded.
RING_STEP, RING_TICK, RING_SCALE, RING_LR, RING_LOSS, RING_HEAD = range(6)
# Head of the full-statistics vector, after its ring row and the gradients'
# max and min (see `GraphStats._full_reader`).
FULL_HEAD = ("loss", "batch_size", "learning_rate")
# The logs keys the statistics vector (the ring row, then on full steps the
# full statistics) and the gradient samples leave the train function under
# (taken out before Keras sees the logs).
FULL_LOGS_KEY = "_keras_actloss_full"
SAMPLE_LOGS_KEY = "_keras_actloss_sample"
# ...and what every step's alarm is judged on: `[2]` float32, the unscaled
# squared global norm and the learning rate.
ALARM_LOGS_KEY = "_keras_actloss_alarm"
# Alarm bounds the host sets (`set_bounds`): the unscaled squared global
# norm must stay in [low, high] and the learning rate in [low, high].
BOUND_FIELDS = ("norm_low", "norm_high", "rate_low", "rate_high")


def within_bounds(total: float, rate: float, bounds) -> bool:
    """Whether a step's unscaled squared global norm `total` and learning
    `rate` lie within the alarm `bounds` (`BOUND_FIELDS`); False for None
    bounds (not set yet) and for a NaN, which fails every comparison."""
    if bounds is None:
        return False
    low, high, rate_low, rate_high = bounds
    return low <= total <= high and rate_low <= rate <= rate_high


def _f32(tensor):
    import tensorflow as tf

    return tf.cast(tensor, "float32")


# Below this many elements a tensor's sum of squares is taken with the other
# small ones in one segment sum; from here on it gets its own L2 norm.
_NORM_MIN_ELEMENTS = 4096


def _large(variable) -> bool:
    """Whether `_norm_row` gives `variable`'s values a norm of their own."""
    shape = tuple(variable.shape)
    return None in shape or math.prod(shape) >= _NORM_MIN_ELEMENTS


@dataclasses.dataclass(frozen=True)
class RowLayout:
    """Where `_norm_row` put each tensor.

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

    def first_non_finite(self, values: np.ndarray) -> int:
        """The first tensor (in tensor order) whose column is not finite."""
        bad = ~np.isfinite(np.asarray(values)[: len(self.order)])
        return min((self.order[k] for k in np.flatnonzero(bad)), default=-1)


def _norm_row(tensors: list, extremes: bool = False, joined: bool = False):
    """`[1, m]` float32 norms of `tensors`, their `RowLayout`, and extremes.

    Written for few graph ops on every step. A large tensor gets one L2 norm
    (`EuclideanNorm` of a `[1, n]` view: one vectorized read, faster than
    `tf.nn.l2_loss` or a reduction of `tf.square` in a running train step on
    a 2-core CPU). The small ones are concatenated and squared once, and a
    segment sum gives each its sum of squares. NaN and infinity propagate.

    With `extremes`, the third value is a `[1, 2m]` row of each tensor's max
    then min, in the same column order (None otherwise). A NaN in a tensor
    does not always reach its extremes: take the norm's.

    With `joined`, a fourth value: every element of `tensors` in one `[n]`
    vector, tensor after tensor in the layout's column order (from the
    views the norms read: one concat and no op per tensor).
    """
    import tensorflow as tf

    norms, highs, lows, large, large_at, small, small_at = [], [], [], [], [], [], []
    # One constant each, shared by every tensor: fewer ops to trace.
    flat_shape, row_shape, axis = (tf.constant(v) for v in ([-1], [1, -1], [1]))
    for i, tensor in enumerate(tensors):
        x = _f32(tensor)
        size = x.shape.num_elements()
        if size is not None and size < _NORM_MIN_ELEMENTS:
            small.append(x if x.shape.rank == 1 else tf.reshape(x, flat_shape))
            small_at.append(i)
            continue
        view = tf.reshape(x, row_shape)
        large.append(view)
        norms.append(tf.raw_ops.EuclideanNorm(input=view, axis=axis, keep_dims=True))
        if extremes:
            highs.append(tf.raw_ops.Max(input=view, axis=axis, keep_dims=True))
            lows.append(tf.raw_ops.Min(input=view, axis=axis, keep_dims=True))
        large_at.append(i)
    if small:
        k = len(small)
        sizes = [x.shape.num_elements() for x in small]
        flat = tf.concat(small, 0) if k > 1 else small[0]
        # Unsorted: XLA (`jit_compile=True`) has no sorted segment ops.
        ids = np.repeat(np.arange(k, dtype="int32"), sizes)
        norms.append(
            tf.reshape(tf.math.unsorted_segment_sum(tf.square(flat), ids, k), [1, k])
        )
        if extremes:
            highs.append(tf.reshape(tf.math.unsorted_segment_max(flat, ids, k), [1, k]))
            lows.append(tf.reshape(tf.math.unsorted_segment_min(flat, ids, k), [1, k]))
    layout = RowLayout(
        tuple(large_at + small_at), (True,) * len(large_at) + (False,) * len(small)
    )
    row = _concat_row(norms)
    out = row, layout, (_concat_row(highs + lows) if extremes else None)
    if not joined:
        return out
    views = [tf.reshape(flat, [1, -1])] if small else []
    views = large + views
    if not views:
        return (*out, tf.zeros([0]))
    return (*out, tf.reshape(tf.concat(views, 1) if len(views) > 1 else views[0], [-1]))


def _concat_row(parts: list):
    import tensorflow as tf

    if not parts:
        return tf.zeros([1, 0], "float32")
    return tf.concat(parts, 1) if len(parts) > 1 else parts[0]


def fold_rows(
    rows, layout: RowLayout, layers, streak: float, patience=None
) -> tuple[list[tuple], float]:
    """Judges ring rows (in step order) one step at a time.

    `rows` are lists of floats (or a 2-D array). `layers[i]` is the layer
    index of gradient `i` (tensor order of `layout`), -1 if unmonitored.
    Returns one `(step, norm, counted, skipped, layer, learning_rate, loss)`
    per row and the new non-finite `streak`. With `patience` (loss scaling) a
    non-finite step only counts once it is the `patience`-th in a row;
    earlier ones are skipped overflow steps. `layer` is the first layer with
    non-finite gradients of a counted step, else -1.

    Without loss scaling an infinite norm with no NaN and a finite loss is
    a norm beyond float32's range (its square overflows), not a non-finite
    gradient: its norm is `inf` and it is not counted.

    Plain Python on a few dozen values a row: it runs after every step,
    where NumPy's per-call cost is more than the arithmetic.
    """
    m, norms = len(layout.order), layout.norms
    out = []
    for row in rows.tolist() if isinstance(rows, np.ndarray) else rows:
        values = row[RING_HEAD : RING_HEAD + m]
        # Norms and sums of squares are >= 0: the total is NaN if any value
        # is, else infinite if any value is.
        total = math.fsum(v * v if n else v for v, n in zip(values, norms))
        norm = math.sqrt(total) / row[RING_SCALE]
        bad = not math.isfinite(total)
        if bad and patience is None:
            bad = math.isnan(total) or not math.isfinite(row[RING_LOSS])
        counted, skipped = bad, False
        if patience is not None:
            streak = streak + 1.0 if bad else 0.0
            counted = bad and streak >= patience
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
            )
        )
    return out, streak


def layer_sums(values, layers, n: int) -> np.ndarray:
    """`[n]` sums of per-tensor `values` by layer index (-1: dropped)."""
    layers = np.asarray(layers, "int64")
    keep = layers >= 0
    return np.bincount(layers[keep], np.asarray(values)[keep], minlength=n)


def _handle_of(read):
    """The resource handle a variable read came from, or None."""
    op = read.op
    while op.type == "Identity":
        op = op.inputs[0].op
    return op.inputs[0] if op.type == "ReadVariableOp" else None


_ADDITIVE_UPDATES = {"AssignSubVariableOp": -1.0, "AssignAddVariableOp": 1.0}


def _additive_updates(reads: list, ops: list) -> list:
    """The tensor each variable was changed by in `ops`, or None.

    `reads` are reads of the variables taken before `ops` (the optimizer's
    `apply`) were traced. When the only ops of `ops` that take a variable's
    handle, besides reads, are `AssignSubVariableOp`s and
    `AssignAddVariableOp`s (an update, and weight decay with AdamW), their
    signed sum is the change, and its norm is `||w_after - w_before||`
    without keeping a copy of the weights. Any other use (an assign, a
    constraint, a scatter, the handle passed into a cond or a function)
    gives None: the caller then compares the weights after `ops` with
    `reads`.
    """
    users: dict[str, list] = {}
    for op in ops:
        if op.type != "ReadVariableOp":
            for t in op.inputs:
                users.setdefault(t.name, []).append(op)
    updates = []
    for read in reads:
        handle = _handle_of(read)
        found = [] if handle is None else users.get(handle.name, [])
        if not found or any(op.type not in _ADDITIVE_UPDATES for op in found):
            updates.append(None)
            continue
        if len(found) == 1:  # Its sign does not change the norm.
            updates.append(found[0].inputs[1])
            continue
        signed = [_ADDITIVE_UPDATES[op.type] * _f32(op.inputs[1]) for op in found]
        updates.append(sum(signed[1:], signed[0]))
    return updates


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


class GraphStats:
    """Mixin of `TrainHooks`: the in-graph statistics and their host readers.

    Every step writes one row into the ring variable `_ring` (the step, the
    learning rate, the loss and the gradient norms of `_norm_row`) and
    returns its alarm values (`_alarm`: squared global norm, learning rate)
    with its logs, which the host checks against the rules' bounds
    (`quiet`); the host reads the ring, and judges the steps in it
    (`fold_rows`), after an alarm and every
    `GradientDiagnostics.QUIET_READ` steps otherwise. A full step instead
    returns, with its logs, a vector of its ring row, the gradients' max and
    min, the loss, batch size and learning rate, per-variable weight and
    update norms, and per-unit activation counts. Norms, RMS, max-abs,
    ratios and activation fractions by layer are computed on the host, so
    the graph keeps few ops.

    Relies on the attributes `TrainHooks` sets: `_tf`, `plans`, `replicas`,
    `loss_scaled`, `ring_rows`, `_local`, `_present`, `_var_layer`,
    `_sample_sizes`, `_last_full`, `_last_sample`, `counter_known`,
    `step_count()` and the variables `_ring`, `_tick`, `_labels`, `_inputs`;
    it sets `_counter` (the step's first optimizer's iterations) and
    `loss_scaled` (whether a step's optimizer scales the loss).
    """

    def _reduce(self, grads: list) -> list:
        """Dense gradients summed across replicas (None kept in place)."""
        tf = self._tf
        dense = [None if g is None else tf.convert_to_tensor(g) for g in grads]
        if self.replicas == 1:
            return dense
        present = [g for g in dense if g is not None]
        summed = iter(
            tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, present
            )
        )
        return [None if g is None else next(summed) for g in dense]

    def _instrumented_apply(self, original, mode, call, grads, passed):
        """The optimizer's `apply`, noting `call` (an `AppliedCall`) for the
        statistics of the step (`_finish_step`).

        On a `FULL` step the first call of the step reads every monitored
        weight before the update, and the update ops of every call are kept
        for `_additive_updates`.
        """
        tf = self._tf
        applied = self._local.applied
        first = not applied
        applied.append(call)
        if mode != FULL:
            return original(grads, passed)
        if first:
            before = [tf.convert_to_tensor(v) for v in self._plan_vars()]
            self._local.before = before
            self._local.weights, self._weight_layout, _ = _norm_row(before)
        # The optimizer waits for the weight norms, so the large weights are
        # no longer read when it updates them: no copy-on-write of them.
        # (Through the gradients: measured faster than a control dependency
        # on every op of `apply`.) A small weight is copied at worst; its
        # read still comes before its update (TensorFlow orders the ops on
        # a variable as written).
        with tf.control_dependencies([self._local.weights]):
            grads = [
                tf.identity(g) if g is not None and _large(v) else g
                for g, v in zip(grads, call.variables)
            ]
        if tf.executing_eagerly():  # `run_eagerly=True`: no graph to read.
            self._local.span = None
            return original(grads, passed)
        graph = tf.compat.v1.get_default_graph()
        start = len(graph.get_operations())
        result = original(grads, passed)
        if not first:
            start = self._local.span[0]
        self._local.span = (start, len(graph.get_operations()))
        return result

    def _finish_step(self, mode) -> None:
        """The statistics of the step, from every `apply` call it made.

        Every step writes its ring row; an every-step (sentinel) step
        returns only its alarm with the logs, a `FULL` step the row and the
        per-layer statistics. Two train functions (one
        per mode) rather than one with a `tf.cond`: measured, the branches
        cost about a third of a small model's step even when not taken.
        Nothing when no optimizer received gradients.

        With one call, its gradients go in as they are (the host divides by
        the loss scale); with several, they are unscaled here and a variable
        updated by more than one gets the sum of its gradients. The step
        counter is the first call's optimizer's.
        """
        calls = getattr(self._local, "applied", [])
        if not calls:
            return
        self._counter = calls[0].optimizer.iterations
        self.loss_scaled = any(call.dynamic for call in calls)
        if len(calls) == 1:
            (call,) = calls
            grads, variables, scale = call.grads, call.variables, call.scale
        else:
            grads, variables = self._merge(calls)
            scale = None
        full = mode == FULL
        row, gradients = self._write_ring(grads, variables, scale, calls[0], full)
        self._local.sample = None
        if not full:
            # Only the alarm's two values leave the step: a step that raises
            # it is read from the ring (`read_steps`).
            self._local.full = None
            self._local.alarm = gradients
            return
        self._local.full = row[0]
        self._full_statistics(row, gradients, grads, variables, scale)

    def _merge(self, calls) -> tuple[list, list]:
        """The unscaled gradients of several `apply` calls and their
        variables, in call order; one sum per variable."""
        merged: dict[int, list] = {}
        for call in calls:
            for g, v in zip(call.grads, call.variables):
                if g is None:
                    continue
                if call.scale is not None:
                    g = _f32(g) / call.scale
                if id(v) in merged:
                    merged[id(v)][0] = _f32(merged[id(v)][0]) + _f32(g)
                else:
                    merged[id(v)] = [g, v]
        return [g for g, _ in merged.values()], [v for _, v in merged.values()]

    def _full_statistics(self, row, gradients, grads, variables, scale) -> None:
        """The full-statistics vector of the step (see `_full_reader`).

        `gradients`: the extremes and joined elements of the gradients in
        the ring row, from its `_norm_row` (`_write_ring`).
        """
        tf = self._tf
        layer_grads = self._group(grads, variables)
        for i, g in enumerate(layer_grads):
            self._present[(i, "grad")] = bool(g)
        before = self._local.before
        extremes, joined = gradients
        layout = self._grad_layout
        counts = self._activation_counts()
        summed = tf.concat(
            [self._loss_and_batch()] + ([] if counts is None else [counts]), 0
        )
        if self.replicas > 1:
            summed = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, summed
            )
        self._local.sample = self._sample_vector(joined, layout, scale)
        span = self._local.span
        if span is None:
            updates = [None] * len(before)
        else:
            ops = tf.compat.v1.get_default_graph().get_operations()
            updates = _additive_updates(before, ops[span[0] : span[1]])
        # Variables changed other than by additive updates are compared with
        # their reads from before the update (kept alive, so copied).
        deltas, _, _ = _norm_row(
            [
                u if u is not None else _f32(tf.convert_to_tensor(v)) - _f32(b)
                for v, b, u in zip(self._plan_vars(), before, updates)
            ]
        )
        head = [summed[:2], tf.reshape(tf.cast(row[0, RING_LR], "float32"), [1])]
        weights = self._local.weights
        vector = tf.concat([extremes[0], *head, weights[0], deltas[0], summed[2:]], 0)
        # Leaves the graph as an output of the train function (no variable
        # read on the host); `TrainHooks._make` adds it to the step's logs.
        self._local.full = tf.concat([row[0], tf.cast(vector, "float64")], 0)

    def _write_ring(self, grads, variables, scale, call, full: bool = False):
        """Writes this step's ring row (`RING_*` layout), with the step and
        learning rate `call` (the step's first `AppliedCall`) read.

        Runs on every step, so it is written for few graph ops: the norms
        of `_norm_row`, one concat, one scatter into the row of this step.
        Returns the row `[1, w]` and, with `full`, the extremes and joined
        elements of its gradients from the same `_norm_row`, else the
        step's alarm values (`_alarm`).
        """
        tf = self._tf
        present = [(g, v) for g, v in zip(grads, variables) if g is not None]
        norms, layout, extremes, *joined = _norm_row(
            [g for g, _ in present], extremes=full, joined=full
        )
        width = int(self._ring.shape[1])
        if RING_HEAD + len(present) > width:
            raise RuntimeError(
                "GradientDiagnostics: the optimizers received gradients for "
                f"{len(present)} variables, more than the model's "
                f"{width - RING_HEAD} trainable variables."
            )
        self._grad_layout = layout
        self._grad_layers = [self._var_layer.get(id(v), -1) for _, v in present]
        # The variables' static shapes: a gradient's may be unknown.
        self._grad_counts = [int(np.prod(v.shape)) for _, v in present]
        iterations = call.step
        head = [tf.reshape(tf.cast(iterations, "float64"), [1, 1])]
        if self._tick is not None:
            # A skipped overflow step repeats the step: count our own ticks.
            tick = self._tick.assign_add(1)
            head.append(tf.reshape(tf.cast(tick, "float64"), [1, 1]))
            index = tick
        else:
            head.append(tf.constant([[-1.0]], "float64"))
            index = iterations
        if scale is None:
            head.append(tf.constant([[1.0]], "float64"))
        else:
            head.append(tf.reshape(tf.cast(scale, "float64"), [1, 1]))
        head.append(tf.reshape(tf.cast(call.rate, "float64"), [1, 1]))
        loss = getattr(self._local, "loss", None)
        loss = tf.constant(float("nan")) if loss is None else loss
        head.append(tf.reshape(tf.cast(loss, "float64"), [1, 1]))
        pad = width - RING_HEAD - len(present)
        parts = head + [tf.cast(norms, "float64")]
        if pad:
            parts.append(tf.zeros([1, pad], "float64"))
        row = tf.concat(parts, 1)
        at = tf.reshape(tf.math.floormod(index, self.ring_rows), [1])
        self._ring.scatter_update(tf.IndexedSlices(row, at))
        if full:
            return row, (extremes, joined[0])
        return row, self._alarm(norms, layout, scale, call.rate)

    def _alarm(self, norms, layout: RowLayout, scale, rate):
        """`[2]` float32: the step's unscaled squared global norm and its
        learning rate, which the host checks against the rules' bounds
        (`quiet`). A few ops on the row's float32 norms: comparing in the
        graph against bounds held in a variable cost several times more
        on a small model's step. A NaN or infinity fails the host's
        comparisons, so it raises the alarm; a step that does is judged
        from its float64 ring row.
        """
        tf = self._tf
        values = norms[0]
        if any(layout.norms):
            squares = values * values
            if not all(layout.norms):
                squares = tf.where(tf.constant(layout.norms), squares, values)
        else:
            squares = values
        total = tf.reduce_sum(squares)
        if scale is not None:
            total = total / tf.square(_f32(scale))
        return tf.stack([total, _f32(rate)])

    def _plan_vars(self) -> list:
        """The monitored variables in plan order."""
        return [v for p in self.plans for v in p.variables]

    def _loss_and_batch(self):
        """`[2]`: this replica's loss and batch size (summed across replicas
        by the caller: Keras already divided the loss by their number)."""
        tf = self._tf
        loss = getattr(self._local, "loss", None)
        self._present[(-1, "loss")] = loss is not None
        loss = tf.constant(float("nan")) if loss is None else loss
        return tf.stack(
            [
                tf.cast(tf.reshape(loss, []), "float32"),
                tf.cast(self._local.batch, "float32"),
            ]
        )

    def _group(self, grads, variables) -> list[list]:
        """Each monitored layer's gradients, with the static shapes of their
        variables (a gradient's own shape may be unknown)."""
        tf = self._tf
        groups = [[] for _ in self.plans]
        for g, v in zip(grads, variables):
            index = self._var_layer.get(id(v))
            if index is not None and g is not None:
                if not g.shape.is_fully_defined():
                    g = tf.ensure_shape(g, v.shape)
                groups[index].append(g)
        return groups

    def _activation_counts(self):
        """Activation counts of the kept layer outputs, one `[k]` vector.

        Per layer, in `_act_layout` order: the active elements of each unit
        (ReLU family), the saturated elements (sigmoid/tanh), and the element
        count when it is not static, from `diagnostics.stats.activation_counts`
        (`keras.ops`), summed over the layer's calls in the step (a shared
        layer's every use). The fractions are taken on the host
        (`_activation_fields`). This replica's counts (the caller sums them
        across replicas). A layer whose unit count is not static, or not the
        same in every call, is left out.
        """
        tf = self._tf
        outputs = getattr(self._local, "outputs", {})
        parts, layout = [], []
        for i, plan in enumerate(self.plans):
            profile = plan.profile
            calls = [x for x in outputs.get(i, ()) if x.shape.rank]
            if not calls:
                continue
            axes = [plan.channel_axis % x.shape.rank for x in calls]
            units = {x.shape[a] for x, a in zip(calls, axes)}
            if profile.inactive_below is None:
                units = {0}
            if len(units) != 1 or None in units:
                continue
            (units,) = units
            sizes = [x.shape[1:].num_elements() for x in calls]
            per_sample = None if None in sizes else sum(sizes)
            counts = [
                stats.activation_counts(x, profile, a, per_sample is None)
                for x, a in zip(calls, axes)
            ]
            summed = counts[0]
            if len(counts) > 1:
                summed = {k: tf.add_n([c[k] for c in counts]) for k in summed}
            if units:
                parts.append(summed["active_per_unit"])
            saturation = "saturated" in summed
            if saturation:
                parts.append(tf.reshape(summed["saturated"], [1]))
            if per_sample is None:
                parts.append(tf.reshape(summed["elements"], [1]))
            layout.append((i, units, saturation, per_sample))
        seen = {entry[0] for entry in layout}
        for i in range(len(self.plans)):
            self._present[(i, "act")] = i in seen
        self._act_layout = layout
        if not parts:
            return None
        return tf.concat(parts, 0) if len(parts) > 1 else parts[0]

    def _activation_fields(self, counts: list, batch: float) -> dict[int, tuple]:
        """Zero, dead and saturated fractions and, for layers whose units can
        die, the per-unit activity counts, by layer index (host side).

        `counts` is the `_activation_counts` vector as a Python list: plain
        sums and counts over it are faster than NumPy calls right after a
        training step, when the host's caches are cold.
        """
        fields, at = {}, 0
        for i, units, saturation, per_sample in self._act_layout:
            active = counts[at : at + units]
            at += units
            sat = None
            if saturation:
                sat, at = counts[at], at + 1
            if per_sample is None:
                elements, at = counts[at], at + 1
            else:
                elements = batch * per_sample
            zero = dead = mortal = None
            if units:
                zero = 1.0 - sum(active) / elements
                if self.plans[i].profile.can_die:
                    dead, mortal = active.count(0.0) / units, active
            if sat is not None:
                sat /= elements
            fields[i] = (zero, dead, sat, mortal)
        return fields

    def _sample_vector(self, joined, layout: RowLayout, scale):
        """A strided sample of each layer's gradients, joined (`[S]`).

        One gather of constant positions (`sample_positions`) from `joined`,
        every gradient element in `layout`'s column order (`_norm_row`):
        few graph ops to trace, where a slice of every gradient made a large
        model's first full step take seconds longer to trace and compile.
        Layer `i`'s sample is `_sample_sizes[i]` long; positions a layer's
        gradients do not fill (no gradient) read a zero appended to `joined`.
        """
        tf = self._tf
        if not self._sample_sizes:
            return tf.zeros([0])
        counts = self._grad_counts
        start, at = {}, 0
        for k in layout.order:
            start[k], at = at, at + counts[k]
        mine: dict[int, list[int]] = {}
        for k, layer in enumerate(self._grad_layers):
            mine.setdefault(layer, []).append(k)
        pieces = []
        for i, size in self._sample_sizes.items():
            ks = mine.get(i, [])
            found = sample_positions([counts[k] for k in ks], size)
            pieces += [p + start[k] for k, p in zip(ks, found)]
            taken = sum(len(p) for p in found)
            pieces.append(np.full(size - taken, at))  # The appended zero.
        index = np.concatenate(pieces).astype("int32")
        padded = tf.concat([_f32(joined), tf.zeros([1])], 0)
        sample = tf.gather(padded, index)
        return sample if scale is None else sample / scale

    # ------------------------------------------------------------- host side
    def reset_sentinel(self) -> None:
        """Starts judging steps after the ones run so far."""
        self._streak = 0.0
        self._last_full = self._last_sample = self._last_alarm = None
        if self._tick is not None:
            self._consumed = int(self._tick.numpy())
        elif self.counter_known:
            self._consumed = self.step_count() - 1
        else:  # Nothing was written yet: the ring holds no step.
            self._consumed = -1

    def _ring_key(self) -> int:
        return RING_TICK if self._tick is not None else RING_STEP

    def _take_unread(self, rows: list[list[float]]) -> list[list[float]]:
        """The rows not seen yet, in key order; they count as seen now."""
        key = self._ring_key()
        rows = sorted(
            (r for r in rows if r[key] > self._consumed), key=lambda r: r[key]
        )
        if rows:
            self._consumed = int(rows[-1][key])
        return rows

    def _fold(self, rows: list[list[float]]) -> list[tuple]:
        """Judges the rows not seen yet, in key order (see `fold_rows`)."""
        rows = self._take_unread(rows)
        if not rows:
            return []
        out, self._streak = fold_rows(
            rows,
            self._grad_layout,
            self._grad_layers,
            self._streak,
            LOSS_SCALE_PATIENCE if self.loss_scaled else None,
        )
        return out

    def quiet(self) -> bool:
        """Whether the last execution was a single step whose squared global
        norm and learning rate stayed within the bounds (`set_bounds`): it
        can wait for `read_quiet`. False until bounds are set."""
        alarm, self._last_alarm = self._last_alarm, None
        if alarm is None:
            return False
        return within_bounds(*alarm.numpy().tolist(), self._bounds)

    def read_quiet(self) -> list[tuple[int, float, float, float]]:
        """`(step, global norm, learning rate, loss)` of the quiet steps not read
        yet, from the ring, in step order (all at once, in NumPy)."""
        self._last_full = None
        rows = self._take_unread(self._ring.value().numpy().tolist())
        if not rows:
            return []
        # Quiet steps are finite: they end a streak of loss-scale overflows.
        self._streak = 0.0
        rows = np.array(rows)
        values = rows[:, RING_HEAD : RING_HEAD + len(self._grad_layout.order)]
        norms = np.sqrt(self._grad_layout.squares(values).sum(axis=1))
        norms /= rows[:, RING_SCALE]
        return list(
            zip(
                rows[:, RING_STEP].astype(int).tolist(),
                norms.tolist(),
                rows[:, RING_LR].tolist(),
                rows[:, RING_LOSS].tolist(),
            )
        )

    def set_bounds(self, bounds: tuple[float, float, float, float]) -> None:
        """Sets the alarm bounds (`BOUND_FIELDS`), checked on the host."""
        self._bounds = tuple(float(b) for b in bounds)

    def read_steps(self) -> list[tuple]:
        """Every step run since the last read, judged (see `fold_rows`).

        After a single step the row the train function returned is enough;
        after several (`steps_per_execution`, or rows left unread) the ring
        is read.
        """
        vector, self._last_full = self._last_full, None
        if vector is not None:
            row = vector.numpy()[: int(self._ring.shape[1])].tolist()
            if row[self._ring_key()] == self._consumed + 1:
                return self._fold([row])
        return self._fold(self._ring.value().numpy().tolist())

    def _full_reader(self) -> dict:
        """Positions of `read_full`'s values for the traced layouts (cached).

        The full vector is: the ring row (`w` values), the gradients' max
        and min (`2m`), `FULL_HEAD`, the weight and update norms (`nw`
        each), the activation counts (`_activation_counts`). Each gradient,
        weight and update column is squared if it holds a norm and summed
        into a bucket: layer `i`'s are buckets `i`, `n + i`, `2n + i`;
        unmonitored variables go to bucket `3n`.
        """
        key = (self._grad_layout, self._weight_layout)
        if getattr(self, "_reader_key", None) == key:
            return self._reader
        n, width = len(self.plans), int(self._ring.shape[1])
        grads, weights = self._grad_layout, self._weight_layout
        m, nw = len(grads.order), len(weights.order)
        head = width + 2 * m
        at = head + len(FULL_HEAD)
        plan_layers = [i for i, p in enumerate(self.plans) for _ in p.variables]
        grad_layers = [self._grad_layers[k] for k in grads.order]
        weight_layers = [plan_layers[k] for k in weights.order]
        columns = [
            (RING_HEAD + c, norm, 3 * n if i < 0 else i)
            for c, (norm, i) in enumerate(zip(grads.norms, grad_layers))
        ]
        for shift, offset in ((at, n), (at + nw, 2 * n)):
            columns += [
                (shift + c, norm, offset + i)
                for c, (norm, i) in enumerate(zip(weights.norms, weight_layers))
            ]
        peaks = {}
        for c, i in enumerate(grad_layers):
            if i >= 0:
                # (norm column, max column, min column) of each gradient.
                peaks.setdefault(i, []).append(
                    (RING_HEAD + c, width + c, width + m + c)
                )
        self._reader = {
            "columns": columns,
            "peaks": peaks,
            "counts": np.maximum(
                layer_sums(self._grad_counts, self._grad_layers, n), 1
            ).tolist(),
            "head": head,
            "activations": at + 2 * nw,
        }
        self._reader_key = key
        return self._reader

    @staticmethod
    def _peak(values: list, columns: list) -> float:
        """Max-abs over gradients from their max and min; NaN if any has a
        NaN (which the extremes may miss, the norm does not)."""
        peak = -math.inf
        for norm, high, low in columns:
            if math.isnan(values[norm]):
                return math.nan
            peak = max(peak, values[high], -values[low])
        return peak

    def read_full(self) -> dict | None:
        """The last full-statistics step, as Python values (None = n/a).

        The steps before it that were not read yet (from the ring) and the
        step itself are judged as by `read_steps` and returned under
        `"steps"`. Each layer's `"units"` holds its per-unit activity counts
        (ReLU family). None when the step applied no gradients.
        """
        if self._last_full is None:
            return None
        # One conversion to Python floats: the arithmetic below is on a few
        # dozen values, where NumPy calls cost more than they save.
        values = self._last_full.numpy().tolist()
        self._last_full = None
        width, key = int(self._ring.shape[1]), self._ring_key()
        steps = []
        if values[key] > self._consumed + 1:
            ring = self._ring.value().numpy()
            steps = self._fold([r for r in ring.tolist() if r[key] < values[key]])
        steps += self._fold([values[:width]])
        reader, n = self._full_reader(), len(self.plans)
        sums = [0.0] * (3 * n + 1)
        for c, norm, bucket in reader["columns"]:
            sums[bucket] += values[c] * values[c] if norm else values[c]
        scale = values[RING_SCALE]
        step, norm, counted, skipped = steps[-1][:4]
        head = reader["head"]
        head = dict(zip(FULL_HEAD, values[head : head + len(FULL_HEAD)]))
        head.update(
            step=step,
            global_norm=norm,
            non_finite=float(counted),
            skipped=float(skipped),
            steps=steps,
        )
        if not self._present.get((-1, "loss")):
            head["loss"] = None
        activations = self._activation_fields(
            values[reader["activations"] :], head["batch_size"]
        )
        peaks, counts = reader["peaks"], reader["counts"]
        layers = []
        for i in range(n):
            *fractions, units = activations.get(i, (None,) * 4)
            fields = dict(zip(ACTIVATION_FIELDS, fractions))
            if self._present.get((i, "grad")):
                grads, weights, deltas = sums[i], sums[n + i], sums[2 * n + i]
                weight = math.sqrt(weights)
                fields.update(
                    grad_norm=math.sqrt(grads) / scale,
                    grad_rms=math.sqrt(grads / counts[i]) / scale,
                    grad_max=self._peak(values, peaks[i]) / scale,
                    weight_norm=weight,
                    update_ratio=math.sqrt(deltas) / weight if weight > 0 else 0.0,
                )
            else:
                fields.update(dict.fromkeys(_HOST_LAYER_FIELDS))
            for name in ACTIVATION_FIELDS:
                if fields[name] is not None and math.isnan(fields[name]):
                    fields[name] = None
            layers.append({name: fields[name] for name in LAYER_FIELDS})
            layers[-1]["unit_activity"] = units
        head["layers"] = layers
        return head

    def read_samples(self) -> dict[int, np.ndarray]:
        """Gradient samples of the last full step, by layer index."""
        if self._last_sample is None:
            return {}
        values, out, at = self._last_sample.numpy(), {}, 0
        for i, size in self._sample_sizes.items():
            if self._present.get((i, "grad")):
                out[i] = values[at : at + size]
            at += size
        return out

    def read_labels(self):
        """Labels of a recorded batch (float32, up to 64 rows), or None.

        Only kept for a single label tensor, without `tf.distribute`
        replicas and without `jit_compile`.
        """
        return self._read_kept(self._labels)

    def read_inputs(self):
        """Inputs of a recorded batch (float32, up to 64 rows), or None;
        kept like the labels, for a single input tensor."""
        return self._read_kept(self._inputs)

    @staticmethod
    def _read_kept(variable):
        if variable is None:
            return None
        value = variable.numpy()
        return value if value.size else None
