"""In-graph statistics of the instrumented training step.

`TrainHooks` (in `_keras_hooks`, the module that touches Keras internals)
calls these methods from its `optimizer.apply` wrapper while `fit`'s train
function is traced. They build TensorFlow ops on the gradients the optimizer
receives and on the kept layer outputs, and write the results into the
non-trainable variables the host reads when recording. The vector layouts
below are the contract between the graph and `read_full`/`read_sentinel`.
"""

from __future__ import annotations

import math

import numpy as np

from keras_actloss.diagnostics import stats

SENTINEL = "sentinel"
FULL = "full"
# Full statistics plus the gradient samples for histograms: a train function
# of its own, so the other full steps do not copy the gradients.
SAMPLES = "full_samples"
FULL_MODES = (FULL, SAMPLES)

# Under dynamic loss scaling a non-finite step is an overflow that the
# optimizer skips (and halves the scale). It only counts as a real non-finite
# gradient once this many consecutive steps were non-finite: by then the
# scale has been cut by 2**10, far beyond any normal overflow streak.
LOSS_SCALE_PATIENCE = 10

# Label rows kept from a recorded batch for `check_model(model, y=...)`.
LABEL_ROWS = 64

# Per-layer slots of the full-statistics vector, in order.
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
GLOBAL_FIELDS = (
    "step",
    "global_norm",
    "non_finite",
    "skipped",
    "loss",
    "batch_size",
    "learning_rate",
)
# Sentinel vector: max finite norm and its step since the last read, first
# counted non-finite step / layer index / norm, current non-finite streak,
# skipped overflow steps, last step seen.
SENTINEL_FIELDS = (
    "max_norm",
    "max_step",
    "nf_step",
    "nf_layer",
    "nf_norm",
    "streak",
    "skipped",
    "last_step",
)
_SENTINEL_INIT = (-1.0, -1.0, -1.0, -1.0, 0.0, 0.0, 0.0, -1.0)


def _f32(tensor):
    import tensorflow as tf

    return tf.cast(tensor, "float32")


# Below this many elements a tensor's sum of squares uses `tf.nn.l2_loss`;
# from here on a matrix product, which is faster on large tensors.
_DOT_MIN_ELEMENTS = 4096


def _sums_of_squares(tensors: list):
    """`[len(tensors)]` float32 sums of squares, one per float tensor.

    The in-graph equivalent of `stats.sum_of_squares([t])` for each `t`. A
    large tensor goes through one `[1, n] x [n, 1]` matrix product: one
    vectorized read (about 40 us for 200k values on a 2-core CPU, where
    `tf.nn.l2_loss` takes 80-350 us). Small ones use `tf.nn.l2_loss`, whose
    halves are doubled by one multiply for all. NaN and infinity propagate
    as in any sum.
    """
    import tensorflow as tf

    parts, factors = [], []
    for tensor in tensors:
        x = _f32(tensor)
        size = x.shape.num_elements()
        if size is not None and size < _DOT_MIN_ELEMENTS:
            parts.append(tf.nn.l2_loss(x))
            factors.append(2.0)  # Exact: l2_loss is half the sum.
        else:
            flat = tf.reshape(x, [1, -1])
            parts.append(tf.reshape(tf.matmul(flat, flat, transpose_b=True), []))
            factors.append(1.0)
    if not parts:
        return tf.zeros([0], "float32")
    stacked = tf.stack(parts)
    if max(factors) == 1.0:
        return stacked
    return stacked * tf.constant(factors, "float32")


def _handle_of(read):
    """The resource handle a variable read came from, or None."""
    op = read.op
    while op.type == "Identity":
        op = op.inputs[0].op
    return op.inputs[0] if op.type == "ReadVariableOp" else None


_ADDITIVE_UPDATES = ("AssignSubVariableOp", "AssignAddVariableOp")


def _single_updates(reads: list, ops: list) -> list:
    """The tensor each variable was changed by in `ops`, or None.

    `reads` are reads of the variables taken before `ops` (the optimizer's
    `apply`) were traced. When the only op of `ops` that takes a variable's
    handle, besides reads, is one `AssignSubVariableOp` or
    `AssignAddVariableOp`, that op's value is the update, and its norm is
    `||w_after - w_before||` without keeping a copy of the weights. Any
    other use (an assign, a second update, weight decay, a constraint, a
    scatter, the handle passed into a cond or a function) gives None: the
    caller then compares the weights after `ops` with `reads`.
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
        single = len(found) == 1 and found[0].type in _ADDITIVE_UPDATES
        updates.append(found[0].inputs[1] if single else None)
    return updates


class GraphStats:
    """Mixin of `TrainHooks`: the in-graph statistics and their host readers.

    Relies on the attributes `TrainHooks` sets: `_tf`, `optimizer`, `plans`,
    `replicas`, `loss_scaled`, `resets_in_graph`, `_local`, `_present`,
    `_var_layer` and the variables `_sentinel`, `_full`, `_samples`,
    `_labels`.
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

    def _instrumented_apply(self, original, mode, grads, variables, passed):
        tf = self._tf
        scale = self._scale()
        step = tf.cast(tf.convert_to_tensor(self.optimizer.iterations), "float64")
        reduced = self._reduce(grads)
        sentinel = self._update_sentinel(reduced, variables, step, scale)
        if mode not in FULL_MODES:
            return original(grads, passed)
        layer_grads = self._group(reduced, variables)
        before = [tf.convert_to_tensor(v) for v in self._plan_vars()]
        weight_squares = self._layer_sums(_sums_of_squares(before))
        columns = self._grad_columns(layer_grads, weight_squares, scale, sentinel)
        columns += self._activation_columns()
        if mode == SAMPLES and self._samples:
            self._write_samples(layer_grads, scale)
        # The optimizer waits for the weight norms, so the weights are no
        # longer read when it updates them: no copy-on-write of every weight.
        with tf.control_dependencies([weight_squares]):
            grads = [None if g is None else tf.identity(g) for g in grads]
        if tf.executing_eagerly():  # `run_eagerly=True`: no graph to read.
            result = original(grads, passed)
            updates = [None] * len(before)
        else:
            graph = tf.compat.v1.get_default_graph()
            start = len(graph.get_operations())
            result = original(grads, passed)
            updates = _single_updates(before, graph.get_operations()[start:])
        deltas = _sums_of_squares(
            [
                _f32(tf.convert_to_tensor(v)) - _f32(b) if u is None else u
                for v, b, u in zip(self._plan_vars(), before, updates)
            ]
        )
        ratio = tf.math.divide_no_nan(
            tf.sqrt(self._layer_sums(deltas)), tf.sqrt(weight_squares)
        )
        columns.insert(4, self._masked(ratio, [bool(p.variables) for p in self.plans]))
        head = [sentinel["norm"], sentinel["bad"], sentinel["skipped"]]
        head += self._loss_and_batch()
        head.append(tf.cast(self.optimizer.learning_rate, "float32"))
        self._full.assign(self._pack(step, head, sentinel["state"], columns))
        if self.resets_in_graph:
            # The host reads the sentinel with the full statistics: start
            # the next interval here instead of with an eager assign.
            self._sentinel.assign(self._fresh(sentinel["state"]))
        return result

    def _plan_vars(self) -> list:
        """The monitored variables in plan order, as `_layer_sums` expects."""
        return [v for p in self.plans for v in p.variables]

    def _layer_sums(self, per_variable):
        """`[len(plans)]` float32 sums of a per-variable vector by layer.

        `per_variable` follows `_plan_vars()`; one segment sum instead of
        one reduction per layer.
        """
        tf = self._tf
        n = len(self.plans)
        ids = [i for i, p in enumerate(self.plans) for _ in p.variables]
        if not ids:
            return tf.zeros([n], "float32")
        return tf.math.unsorted_segment_sum(per_variable, ids, n)

    def _masked(self, vector, present: list[bool]):
        """`vector` with NaN where `present` is False (float32)."""
        tf = self._tf
        if all(present):
            return vector
        return tf.where(tf.constant(present), vector, float("nan"))

    def _fresh(self, state):
        """The initial sentinel state, keeping the non-finite streak."""
        tf = self._tf
        init = tf.constant(_SENTINEL_INIT, "float64")
        streak = SENTINEL_FIELDS.index("streak")
        mask = tf.constant([i == streak for i in range(len(SENTINEL_FIELDS))])
        return tf.where(mask, state, init)

    def _loss_and_batch(self) -> list:
        """The step's loss (mean over replicas) and global batch size."""
        tf = self._tf
        loss = getattr(self._local, "loss", None)
        self._present[(-1, "loss")] = loss is not None
        loss = tf.constant(float("nan")) if loss is None else loss
        pair = tf.stack(
            [
                tf.cast(tf.reshape(loss, []), "float32"),
                tf.cast(self._local.batch, "float32"),
            ]
        )
        if self.replicas > 1:
            # Keras already divided the loss by the number of replicas.
            pair = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, pair
            )
        return [pair[0], pair[1]]

    def _group(self, grads, variables) -> list[list]:
        groups = [[] for _ in self.plans]
        for g, v in zip(grads, variables):
            index = self._var_layer.get(id(v))
            if index is not None and g is not None:
                groups[index].append(g)
        return groups

    def _update_sentinel(self, grads, variables, step, scale) -> dict:
        """Global norm and non-finite check of this step, into `_sentinel`.

        Runs on every step, so it is written for few graph ops: one
        reduction per variable, then one `where` over the state vector.
        """
        tf = self._tf
        present = [(g, v) for g, v in zip(grads, variables) if g is not None]
        squares = _sums_of_squares([g for g, _ in present])
        norm = tf.sqrt(tf.reduce_sum(squares))
        if scale is not None:
            norm = norm / scale
        finite = tf.math.is_finite(squares)
        bad = tf.logical_not(tf.reduce_all(finite))
        layer_of = tf.constant(
            [float(self._var_layer.get(id(v), -1)) for _, v in present], "float64"
        )
        first_layer = tf.gather(layer_of, tf.argmin(tf.cast(finite, "int32")))
        old = self._sentinel.value()  # One read op, no identity.
        f = dict(zip(SENTINEL_FIELDS, tf.unstack(old)))
        streak, skipped_total = f["streak"], f["skipped"]
        counted, skipped = bad, tf.constant(False)
        if self.loss_scaled:
            streak = tf.where(bad, streak + 1.0, 0.0)
            counted = tf.logical_and(bad, streak >= LOSS_SCALE_PATIENCE)
            skipped = tf.logical_and(bad, tf.logical_not(counted))
            skipped_total = skipped_total + tf.cast(skipped, "float64")
        norm64 = tf.cast(norm, "float64")
        new_max = tf.logical_and(tf.logical_not(bad), norm64 > f["max_norm"])
        first_bad = tf.logical_and(counted, f["nf_step"] < 0)
        keep = tf.constant(True)
        candidate = [norm64, step, step, first_layer, norm64, streak, skipped_total]
        mask = [new_max, new_max, first_bad, first_bad, first_bad, keep, keep]
        state = tf.where(tf.stack(mask + [keep]), tf.stack(candidate + [step]), old)
        self._sentinel.assign(state)
        positions: dict[int, list[int]] = {}
        for k, (_, v) in enumerate(present):
            positions.setdefault(self._var_layer.get(id(v), -1), []).append(k)
        return {
            "norm": norm,
            "bad": tf.cast(counted, "float32"),
            "skipped": tf.cast(skipped, "float32"),
            "squares": squares,
            "positions": positions,
            "state": state,
        }

    def _grad_columns(self, layer_grads, weight_squares, scale, sentinel) -> list:
        """Gradient norm, RMS, max-abs and weight norm, one `[n]` vector each.

        The sums of squares come from the sentinel's per-variable reduction
        (summed by layer in one op), so the gradients are read once more
        only for the max-abs.
        """
        tf = self._tf
        n = len(self.plans)
        has = [bool(g) for g in layer_grads]
        for i in range(n):
            self._present[(i, "grad")] = has[i]
        ids = [i for i in range(n) for _ in sentinel["positions"].get(i, [])]
        index = [k for i in range(n) for k in sentinel["positions"].get(i, [])]
        if not index:
            nan = tf.fill([n], float("nan"))
            return [nan, nan, nan, nan]
        per_variable = tf.gather(sentinel["squares"], index)
        squares = tf.math.unsorted_segment_sum(per_variable, ids, n)
        counts = [float(max(stats.element_count(g), 1)) for g in layer_grads]
        norm = tf.sqrt(squares)
        rms = tf.sqrt(squares / tf.constant(counts, "float32"))
        peak = self._layer_peaks(layer_grads)
        if scale is not None:
            norm, rms, peak = norm / scale, rms / scale, peak / scale
        weight = tf.sqrt(weight_squares)
        return [self._masked(c, has) for c in (norm, rms, peak, weight)]

    def _layer_peaks(self, layer_grads):
        """`[n]` max-abs of each layer's gradients (NaN propagates).

        `max(max(x), -min(x))` is `max(abs(x))` without writing `abs(x)`:
        two read-only reductions per variable.
        """
        tf = self._tf
        ends = []
        for g in layer_grads:
            for x in g:
                ends += [tf.reduce_max(x), -tf.reduce_min(x)]
        ends = [tf.cast(e, "float32") for e in ends]
        width = 2 * max(len(g) for g in layer_grads)
        rows, k = [], 0
        for g in layer_grads:
            size = 2 * len(g)
            rows.append(list(range(k, k + size)) + [len(ends)] * (width - size))
            k += size
        padded = tf.concat([tf.stack(ends), tf.constant([-np.inf], "float32")], 0)
        return tf.reduce_max(tf.gather(padded, rows), axis=1)

    def _activation_columns(self) -> list:
        """Zero, dead and saturated fractions, one `[n]` vector each."""
        tf = self._tf
        outputs = getattr(self._local, "outputs", {})
        slots = []
        for i, plan in enumerate(self.plans):
            out = outputs.get(i)
            self._present[(i, "act")] = out is not None
            if out is not None:
                c = stats.activation_counts(
                    tf.stop_gradient(out), plan.profile, plan.channel_axis
                )
                slots.append((i, c))
        rows = self._activation_values(slots)
        nan = tf.constant(float("nan"), "float32")
        return [
            tf.stack([nan if r[k] is None else r[k] for r in rows]) for k in range(3)
        ]

    def _activation_values(self, slots) -> list:
        """Zero, dead and saturated fractions, summed across replicas first."""
        tf = self._tf
        by_layer = dict(slots)  # One replica: the counts as they are.
        if slots and self.replicas > 1:
            flat = []
            for _, c in slots:
                flat += [tf.reshape(c[k], [-1]) for k in sorted(c)]
            vector = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, tf.concat(flat, axis=0)
            )
            offset = 0
            for i, c in slots:
                summed = {}
                for k in sorted(c):
                    size = int(np.prod(c[k].shape)) if c[k].shape.rank else 1
                    part = vector[offset : offset + size]
                    summed[k] = part if c[k].shape.rank else part[0]
                    offset += size
                by_layer[i] = summed
        values = []
        for i, plan in enumerate(self.plans):
            c = by_layer.get(i)
            zero = dead = sat = None
            if c is not None and "inactive" in c:
                zero = c["inactive"] / c["elements"]
                if plan.profile.can_die:
                    per_unit = c["active_per_unit"]
                    units = per_unit.shape.num_elements()
                    if units is None:
                        units = tf.cast(tf.size(per_unit), "float32")
                    dead = stats.dead_units(per_unit) / units
            if c is not None and "saturated" in c:
                sat = c["saturated"] / c["elements"]
            values.append((zero, dead, sat))
        return values

    def _write_samples(self, layer_grads, scale) -> None:
        tf = self._tf
        for i, var in self._samples.items():
            g = layer_grads[i]
            if not g:
                continue
            flat = tf.concat([tf.reshape(tf.cast(x, "float32"), [-1]) for x in g], 0)
            total = int(flat.shape[0])
            stride = max(1, total // int(var.shape[0]))
            sample = flat[::stride][: int(var.shape[0])]
            if scale is not None:
                sample = sample / scale
            var.assign(sample)

    def _pack(self, step, head, state, columns):
        """The full-statistics vector: step, `head`, sentinel state, layers.

        Layer rows are `LAYER_FIELDS` in order; float32 values are cast to
        float64 once, as one vector.
        """
        tf = self._tf
        layers = tf.reshape(tf.stack(columns, axis=1), [-1])
        return tf.concat(
            [
                tf.reshape(step, [1]),
                tf.cast(tf.stack(head), "float64"),
                state,
                tf.cast(layers, "float64"),
            ],
            axis=0,
        )

    # ------------------------------------------------------------- host side
    def read_full(self) -> dict:
        """The last full-statistics step, as Python values (None = n/a)."""
        # `value()`: one eager op (a read), where `numpy()` adds an identity.
        vector = self._full.value().numpy()
        head = dict(zip(GLOBAL_FIELDS, vector[: len(GLOBAL_FIELDS)].tolist()))
        base = len(GLOBAL_FIELDS)
        copy = vector[base : base + len(SENTINEL_FIELDS)].tolist()
        head["sentinel"] = dict(zip(SENTINEL_FIELDS, copy))
        if not self._present.get((-1, "loss")):
            head["loss"] = None
        layers = []
        base = len(GLOBAL_FIELDS) + len(SENTINEL_FIELDS)
        width = len(LAYER_FIELDS)
        for i in range(len(self.plans)):
            row = vector[base + i * width : base + (i + 1) * width].tolist()
            fields = dict(zip(LAYER_FIELDS, row))
            for key in ("grad_norm", "grad_rms", "grad_max", "weight_norm"):
                if not self._present.get((i, "grad")):
                    fields[key] = None
            if not self._present.get((i, "grad")):
                fields["update_ratio"] = None
            act = self._present.get((i, "act"))
            for key in ("zero_fraction", "dead_fraction", "saturation"):
                if not act or math.isnan(fields[key]):
                    fields[key] = None
            layers.append(fields)
        head["layers"] = layers
        return head

    def read_samples(self) -> dict[int, np.ndarray]:
        """Gradient samples of the last full step, by layer index."""
        return {
            i: var.numpy()
            for i, var in self._samples.items()
            if self._present.get((i, "grad"))
        }

    def read_labels(self):
        """Labels of a recorded batch (float32, up to 64 rows), or None.

        Only kept for a single label tensor, without `tf.distribute`
        replicas and without `jit_compile`.
        """
        if self._labels is None:
            return None
        labels = self._labels.numpy()
        return labels if labels.size else None

    def read_sentinel(self, reset: bool = True) -> dict:
        """The sentinel since the last read; resets it unless `reset=False`."""
        values = dict(zip(SENTINEL_FIELDS, self._sentinel.value().numpy().tolist()))
        if reset:
            fresh = np.array(_SENTINEL_INIT)
            fresh[SENTINEL_FIELDS.index("streak")] = values["streak"]
            self._sentinel.assign(fresh)
        return values
