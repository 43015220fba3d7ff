"""In-graph statistics of the instrumented training step (TensorFlow).

`TrainHooks` (in `_keras_hooks`, the module that touches Keras internals)
calls these methods from its `optimizer.apply` wrappers and at the end of
the traced step while `fit`'s train function is traced. The statistics
themselves are `diagnostics.step_stats` (`keras.ops`, shared with JAX) on
the gradients the optimizers receive in the step (all their `apply` calls
together) and on the kept layer outputs; what is TensorFlow's own is here:
the replica all-reduce, the ring of every-step rows in a non-trainable
variable (with its tick under loss scaling), and what `_graph_reads` finds
in the traced graph (the forward pass's reads, the optimizer's update
ops).

Every step writes one ring row (`_step_rows.RING_*` layout, float64: the
step, tick, loss scale, learning rate, loss, silent units, then the
gradients' `norm_row`, zero-padded) and returns the `[5]` alarm values
under `ALARM_LOGS_KEY`; a full step instead returns under `FULL_LOGS_KEY` the dict
of `step_stats.FULL_KEYS` (its `"row"` the ring row). The host reads them
with the readers `GraphStats` inherits (`_ring_reading.RingReader`).
"""

from __future__ import annotations

import keras
import numpy as np

from keras_actloss.callbacks._graph_reads import _additive_updates, _f32, _read_in
from keras_actloss.callbacks._model_plan import apply_groups, step_counter
from keras_actloss.callbacks._ring_reading import PaddedRows, RingReader
from keras_actloss.callbacks._step_rows import (
    FULL,
    LABEL_ROWS,
    RING_HEAD,
    call_rates,
    kept_form,
)
from keras_actloss.diagnostics import step_activations, step_reader, step_stats
from keras_actloss.diagnostics.records import rates_mark


class GraphStats(RingReader):
    """Mixin of `TrainHooks`: the in-graph statistics and, from
    `RingReader`, their host readers.

    Every step writes one row into the ring variable `_ring` (the step, the
    learning rate, the loss, the silent units and the gradient norms of
    `norm_row`) and returns its alarm values (`step_stats.alarm`: squared
    global norm, learning rate, zero gradient norms, silent units, loss) with
    its logs, which the host checks against the rules' bounds (`quiet`).
    A full step instead returns, with its logs, the named tensors of
    `step_stats.FULL_KEYS`. Norms, RMS, max-abs, ratios and activation
    fractions by layer are computed on the host (`step_reader`), so the
    graph keeps few ops.

    Relies on the attributes `TrainHooks` sets: `_tf`, `plans`, `replicas`,
    `xla` (whether the train function is compiled with XLA),
    `ring_rows`, `_local`, `_var_layer`, `_sample_sizes` and the
    variables `_ring`, `_tick`, `_fresh`, `_summed`, `_inputs` and
    `_labels` (lists, one holder per model input and output; None under
    XLA until made, `_make_kept`), the flags `_keeps`, `_sums` and
    `_kept_made`; it sets `_input_form` and `_label_form` (the structures
    of the step's inputs and labels, `_keep_batch`),
    `_counter` (the step's first optimizer's iterations), `apply_groups`
    (`_model_plan.apply_groups`), `loss_scaled` (whether a step's
    optimizer scales the loss), `_loss_known`, `_layout` (the traced full
    step's `step_reader.StepLayout`), and `_grad_layout`, `_grad_layers`
    (the host readers' too).
    """

    apply_groups: dict[int, int] = {}

    def _reduce(self, grads: list) -> list:
        """Gradients summed across replicas (None kept in place), dense but
        for an embedding's `IndexedSlices` in a single replica without XLA
        (`_for_norms` reads it)."""
        tf = self._tf
        if self.replicas == 1 and not self.xla:
            return [g if _sparse(tf, g) else _dense(tf, g) for g in grads]
        dense = [_dense(tf, g) for g in grads]
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
            before = self._reads_before()
            self._local.before = before
            weights = step_stats.norm_row(before, xla=self.xla)
            self._local.weights, self._weight_layout = weights.row, weights.layout
        # The optimizer waits for the weight norms, so the large weights are
        # no longer read when it updates them: no copy-on-write of them.
        # (Through the gradients: measured faster than a control dependency
        # on every op of `apply`; one `IdentityN` for them all.) A small
        # weight is copied at worst; its read still comes before its update
        # (TensorFlow orders the ops on a variable as written).
        grads = self._after(self._local.weights, grads, call.variables)
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

    def _after(self, weights, grads: list, variables: list) -> list:
        """`grads`, the large ones (`step_stats.is_large`) passed through
        one op that waits for `weights`; an `IndexedSlices` through its
        own `identity`."""
        tf = self._tf
        grads = list(grads)
        large = [
            k
            for k, (g, v) in enumerate(zip(grads, variables))
            if g is not None and step_stats.is_large(v.shape)
        ]
        dense = [k for k in large if not _sparse(tf, grads[k])]
        with tf.control_dependencies([weights]):
            for k in set(large) - set(dense):
                grads[k] = tf.identity(grads[k])
            held = tf.identity_n([grads[k] for k in dense]) if dense else []
        for k, g in zip(dense, held):
            grads[k] = g
        return grads

    def _finish_step(self, mode) -> None:
        """The statistics of the step, from every `apply` call it made.

        Every step writes its ring row; an every-step (sentinel) step
        returns only its alarm with the logs, a `FULL` step the named full
        statistics. Two train functions (one
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
        self._counter = step_counter(calls[0].optimizer)
        self.apply_groups = apply_groups(self._var_layer, [c.variables for c in calls])
        self.counter_applies = sum(c.optimizer is calls[0].optimizer for c in calls)
        self.separate_losses = len(getattr(self._local, "losses", ())) > 1
        self.loss_scaled = any(call.dynamic for call in calls)
        if len(calls) == 1:
            (call,) = calls
            grads, variables, scale = call.grads, call.variables, call.scale
        else:
            grads, variables = self._merge(calls)
            scale = None
        full = mode == FULL
        row, gradients = self._write_ring(grads, variables, scale, calls, full)
        if not full:
            # Only the alarm's two values leave the step: a step that raises
            # it is read from the ring (`read_steps`).
            self._local.full = None
            self._local.alarm = gradients
            return
        # Leaves the graph as outputs of the train function (no variable
        # read on the host); `TrainHooks._make` adds them to the step's logs.
        units = step_activations.unit_gradients(self.plans, grads, variables)
        self._local.full = self._full_statistics(row, gradients, scale, units)

    def _merge(self, calls) -> tuple[list, list]:
        """The unscaled gradients of several `apply` calls and their
        variables, in call order; one sum per variable."""
        merged: dict[int, list] = {}
        for call in calls:
            for g, v in zip(call.grads, call.variables):
                if g is None:
                    continue
                g = _dense(self._tf, g)
                if call.scale is not None:
                    g = _f32(g) / call.scale
                if id(v) in merged:
                    merged[id(v)][0] = _f32(merged[id(v)][0]) + _f32(g)
                else:
                    merged[id(v)] = [g, v]
        return [g for g, _ in merged.values()], [v for _, v in merged.values()]

    def _full_statistics(self, row, gradients, scale, unit_grads) -> dict:
        """The full statistics of the step (`step_stats.FULL_KEYS`).

        `row` is the step's ring row, `gradients` the `NormRow` of its
        gradients (`_write_ring`), `unit_grads` the gradients of the layers
        judged by sign (`step_activations.unit_gradients`). The loss, batch
        size and activation counts are summed across replicas here (the
        gradients already are).
        """
        tf = self._tf
        counts, activations = step_activations.activation_vector(
            getattr(self._local, "outputs", {}),
            self.plans,
            batch=getattr(self._local, "static_batch", None),
            unit_grads=unit_grads,
        )
        head = self._loss_and_batch()
        if self.replicas > 1:
            summed = head if counts is None else tf.concat([head, counts], 0)
            summed = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, summed
            )
            head = summed[:2]
            counts = None if counts is None else summed[2:]
        head = tf.concat([head, tf.ones([1])], 0)  # One step so far.
        counts, head = self._over_execution(counts, head)
        before = self._local.before
        span = self._local.span
        if span is None:
            updates = [None] * len(before)
        else:
            graph_ops = tf.compat.v1.get_default_graph().get_operations()
            updates = _additive_updates(before, graph_ops[span[0] : span[1]])
        # Variables changed other than by additive updates are compared with
        # their reads from before the update (kept alive, so copied).
        deltas = step_stats.norm_row(
            [
                u if u is not None else _f32(tf.convert_to_tensor(v)) - _f32(b)
                for v, b, u in zip(self._plan_vars(), before, updates)
            ],
            xla=self.xla,
        )
        self._layout = step_reader.StepLayout(
            can_die=tuple(bool(p.profile and p.profile.can_die) for p in self.plans),
            by_sign=tuple(p.unit_variable is not None for p in self.plans),
            grads=self._grad_layout,
            grad_layers=tuple(self._grad_layers),
            grad_counts=tuple(self._grad_counts),
            grad_vectors=tuple(self._grad_vectors),
            weights=self._weight_layout,
            weight_layers=tuple(
                i for i, p in enumerate(self.plans) for _ in p.variables
            ),
            activations=activations,
            samples=tuple(self._sample_sizes.items()),
        )
        flat = step_stats._backend_primitives(self.xla).flat  # `[1, m]` rows.
        out = {
            "row": flat(row),
            "extremes": flat(gradients.extremes),
            "head": head,
            "weights": flat(self._local.weights),
            "updates": flat(deltas.row),
        }
        if counts is not None:
            out["activations"] = counts
        if self._sample_sizes:
            index = step_stats.sample_index(
                self._grad_counts,
                self._grad_layers,
                gradients.layout,
                self._sample_sizes,
            )
            out["sample"] = step_stats.gradient_sample(gradients.joined, index, scale)
        return out

    def _over_execution(self, counts, head):
        """The activation counts, batch size and steps summed over the
        steps of the execution so far, with several per execution (`_summed`;
        `_fresh` until its first step: the host sets it after each,
        `end_execution`): a recording then counts every batch of its
        execution. (No `tf.size` of the sum's read: grappler may read the
        variable's shape again, after the update.)

        `_summed` is made before the step is traced, of any shape: a
        variable made while `fit`'s function is first traced makes
        TensorFlow trace it twice. Under XLA, which compiles the step for
        the shapes its variables hold, it is given the traced step's length
        here (a value assigned, not a variable made).
        """
        tf, summed, fresh = self._tf, self._summed, self._fresh
        if not self._sums or counts is None:
            return counts, head
        now = tf.concat([head[1:], counts], 0)
        if self.xla:
            with tf.init_scope():
                summed.assign(tf.zeros(now.shape))
        total = tf.cond(
            fresh.read_value(), lambda: now, lambda: now + summed.read_value()
        )
        total = tf.ensure_shape(total, now.shape)
        summed.assign(total)
        fresh.assign(False)
        return total[2:], tf.concat([head[:1], total[:2]], 0)

    def _keep_batch(self, data) -> None:
        """Copies the first rows (up to `LABEL_ROWS`) of each input and
        label tensor (one holder per model input and output, `_inputs` and
        `_labels`; their structures in `_input_form` and `_label_form`).

        Under XLA, whose variables keep their shape, into `PaddedRows` (for
        a static shape past the batch): made from the data's spec before
        the step is traced (`_make_kept`), else when traced. Rows of
        another shape than their holder's (a later `fit` on other data)
        are not kept.
        """
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        self._input_form, self._label_form = kept_form(x), kept_form(y)
        for kept, value in ((self._inputs, x), (self._labels, y)):
            tensors = [] if value is None else keras.tree.flatten(value)
            for i, tensor in enumerate(tensors[: len(kept)]):
                kept[i] = self._keep_rows(kept[i], tensor)

    def _keep_rows(self, kept, tensor):
        """`_keep_batch`'s copy of `tensor`'s first rows into `kept` (a
        variable, a `PaddedRows` or None: made here); returns the holder.
        Not of a scalar, nor of a sparse or ragged tensor."""
        tf = self._tf
        if not isinstance(tensor, tf.Tensor) or not tensor.shape.rank:
            return kept
        rows = tf.cast(tensor[:LABEL_ROWS], "float32")
        if kept is None:
            if not rows.shape[1:].is_fully_defined():
                return kept
            with tf.init_scope():
                kept = PaddedRows(tf, [LABEL_ROWS, *rows.shape[1:]])
        elif isinstance(kept, PaddedRows) and kept.row_shape != rows.shape[1:]:
            return kept
        kept.assign(rows)
        return kept

    def _make_kept(self, iterator) -> None:
        """Under XLA, the `PaddedRows` of `_keep_batch` made from the data's
        element spec (`iterator.element_spec`: the shapes of a batch) before
        `fit` first traces the step: made in that trace, a variable has
        TensorFlow trace the whole train step twice. Once: a spec it cannot
        read (a shape not static past the batch) leaves them to the
        trace."""
        if self._kept_made:
            return
        self._kept_made = True
        spec = getattr(iterator, "element_spec", None)
        if spec is None:
            return
        x, y, _ = keras.utils.unpack_x_y_sample_weight(spec)
        for kept, value in ((self._inputs, x), (self._labels, y)):
            specs = [] if value is None else keras.tree.flatten(value)
            for i, found in enumerate(specs[: len(kept)]):
                if kept[i] is None:
                    kept[i] = self._padded(found)

    def _padded(self, spec):
        """A `PaddedRows` for the rows of a tensor of `spec`, None for a
        spec without a static shape past the batch."""
        tf = self._tf
        if not isinstance(spec, tf.TensorSpec) or not spec.shape.rank:
            return None
        row = spec.shape[1:]
        return PaddedRows(tf, [LABEL_ROWS, *row]) if row.is_fully_defined() else None

    def end_execution(self) -> None:
        """After a full execution: the next starts its own sums."""
        if self._summed is not None:
            self._fresh.assign(True)

    def _write_ring(self, grads, variables, scale, calls, full: bool = False):
        """Writes this step's ring row (`RING_*` layout), with the step and
        learning rate the step's first `AppliedCall` read, and each of
        `calls`' optimizers' rate (`call_rates`) when several are hooked.

        Runs on every step, so it is written for few graph ops: the norms
        of `norm_row`, one concat, one scatter into the row of this step.
        Returns the row `[1, w]` and, with `full`, the `NormRow` of its
        gradients with their extremes and joined elements, else the step's
        alarm values (`step_stats.alarm`).
        """
        tf = self._tf
        present = [(g, v) for g, v in zip(grads, variables) if g is not None]
        gradients = step_stats.norm_row(
            [self._for_norms(g, v, full) for g, v in present],
            extremes=full,
            joined=full,
            silent=True,
            xla=self.xla,
            pad=full,
        )
        norms, layout = gradients.row, gradients.layout
        width = self._flow.at  # The flow's columns after the norms'.
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
        self._grad_vectors = [len(v.shape) <= 1 for _, v in present]
        call = calls[0]
        iterations = call.step
        # One stack of the head's scalars (`RING_*` order), one reshape.
        head = [tf.cast(iterations, "float64")]
        if self._tick is not None:
            # A skipped overflow step repeats the step: count our own ticks.
            tick = self._tick.assign_add(1)
            head.append(tf.cast(tick, "float64"))
            index = tick
        else:
            head.append(tf.constant(-1.0, "float64"))
            index = iterations
        head.append(tf.constant(1.0, "float64") if scale is None else scale)
        head.append(call.rate)
        loss = getattr(self._local, "loss", None)
        self._loss_known = loss is not None
        head.append(tf.constant(float("nan")) if loss is None else tf.reshape(loss, []))
        head.append(gradients.silent)
        head = [tf.cast(value, "float64") for value in head]
        head = [tf.reshape(tf.stack(head), [1, RING_HEAD])]
        pad = width - RING_HEAD - len(present)
        parts = head + [tf.cast(norms, "float64")]
        if pad:
            parts.append(tf.zeros([1, pad], "float64"))
        flow = step_activations.unit_flow(
            self.plans, self._flow.layout, grads, variables
        )
        if flow is not None:
            parts.append(tf.reshape(tf.cast(flow, "float64"), [1, -1]))
        rates = call_rates([(c.optimizer, c.rate) for c in calls], self._rates)
        if rates:
            rates = [tf.cast(rate, "float32") for rate in rates]
            parts.append(tf.reshape(tf.cast(tf.stack(rates), "float64"), [1, -1]))
        row = tf.concat(parts, 1)
        at = tf.reshape(tf.math.floormod(index, self.ring_rows), [1])
        self._ring.scatter_update(tf.IndexedSlices(row, at))
        if full:
            return row, gradients
        # A few ops on the row's float32 norms: comparing in the graph
        # against bounds held in a variable cost several times more on a
        # small model's step. A step that raises the alarm is judged from
        # its float64 ring row.
        rate = rates_mark(rates) if rates else call.rate
        alarm = step_stats.alarm(norms, layout, scale, rate, gradients.silent, loss)
        return row, alarm

    def _for_norms(self, grad, variable, full: bool):
        """A gradient as `norm_row` reads it. An `IndexedSlices` (an
        embedding's: the rows of a large table that the batch looked up) is
        made dense on a full step (its extremes and samples are of every
        element, zeros included); on the others its rows are summed by index
        (`unique`, `unsorted_segment_sum`): the same norm, zero and
        non-finite as the dense gradient's, without writing the whole table
        on every step. Not for a table too small for a norm of its own
        (`step_stats.is_large`): its rows, of a size known only when the
        step runs, would get one, and the full and the other steps' rows
        must hold it alike (one `RowLayout` reads both); it is made dense.
        """
        tf = self._tf
        if not _sparse(tf, grad):
            return grad
        if full or not step_stats.is_large(variable.shape):
            return _dense(tf, grad)
        rows, at = tf.unique(grad.indices)
        return tf.math.unsorted_segment_sum(grad.values, at, tf.size(rows))

    def _reads_before(self) -> list:
        """Each monitored weight as the step read it before any update.

        A read the step made already (the forward pass's, found among the
        consumers of the variable's captured handle in the graph being
        traced) serves, instead of a read of our own: a graph op less per
        weight, and TensorFlow orders every read of a variable before a
        later update of it as written. Under `tf.distribute` replicas, when
        executing eagerly or when the step made no read of a weight (a
        layer that reads it inside a loop or cond), a read of our own.
        """
        tf = self._tf
        graph = tf.compat.v1.get_default_graph()
        find = self.replicas == 1 and not tf.executing_eagerly()
        find = find and hasattr(graph, "capture")
        reads = []
        for v in self._plan_vars():
            read = _read_in(graph, v) if find else None
            reads.append(tf.convert_to_tensor(v) if read is None else read)
        return reads

    def _plan_vars(self) -> list:
        """The monitored variables in plan order."""
        return [v for p in self.plans for v in p.variables]

    def _loss_and_batch(self):
        """`[2]`: this replica's loss and batch size (summed across replicas
        by the caller: Keras already divided the loss by their number)."""
        tf = self._tf
        loss = getattr(self._local, "loss", None)
        loss = tf.constant(float("nan")) if loss is None else loss
        # A static batch size is a constant (the step's data rarely has
        # one: a fit's last batch may be shorter).
        batch = self._local.static_batch
        if batch is None:
            batch = tf.cast(tf.shape(self._local.first)[0], "float32")
        else:
            batch = step_stats._backend_primitives(self.xla).constant(batch, "float32")
        return tf.stack([tf.cast(tf.reshape(loss, []), "float32"), batch])


def _sparse(tf, grad) -> bool:
    return isinstance(grad, tf.IndexedSlices)


def _dense(tf, grad):
    """`grad` as a dense tensor (None kept)."""
    return None if grad is None else tf.convert_to_tensor(grad)
