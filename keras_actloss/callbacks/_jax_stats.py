"""Statistics of the instrumented JAX training step and their host readers.

`JaxTrainHooks` (in `_jax_hooks`, the module that touches Keras's JAX
trainer) calls these methods while its train step is traced. The statistics
are `diagnostics.step_stats` (`keras.ops`, shared with TensorFlow); what is
JAX's own is the plumbing: the weights before and after
`optimizer.stateless_apply`, and the step's statistics as a dict that leaves
the jitted step with its logs:

- every step: `"row"`, one float32 vector (one transfer to the host after
  every step) of the fields `ROW_FIELDS`: the optimizer's iterations before
  the update (as `step // 2**20` and `step % 2**20`, both exact in
  float32), the loss scale (1 without), the learning rate, the loss, the
  silent units (`step_stats.NormRow.silent`), then the gradients'
  `step_stats.norm_row` (scaled), the units' flow
  (`step_activations.unit_flow`), the optimizers' learning rates when
  several are hooked (`_step_rows.call_rates`), and last the step's
  `step_stats.alarm` values, which the host compares with its bounds
  after each step (`quiet`: no sum over the row in Python);
- and the rest of `step_stats.FULL_KEYS`, computed on full steps only
  (zeros on the others, see `_Trace.when_full`), but for the `norm_row`s
  of the weights and their update (`weight_rows`), which the host reduces
  from the training state around a full step (`_jax_weights`), or, where
  the weights are not the state's own values (`_state_positions`) or every
  step is full (`all_full`), the step reduces on every step.

The host turns `"row"` into a row of the TensorFlow ring
(`_step_rows.RING_*`, `_read_rows`), judges the steps with the same
`fold_rows` and reads a full step with the same `full_record`.

`_Trace` is what the wrappers of `_jax_hooks` note while one step is
traced, and what these statistics read of it (`when_full`).
"""

from __future__ import annotations

import math

import jax
import keras
import numpy as np
from keras import ops

from keras_actloss.callbacks._model_plan import apply_groups
from keras_actloss.callbacks._step_rows import (
    LABEL_ROWS,
    LOSS_SCALE_PATIENCE,
    RING_HEAD,
    RING_SCALE,
    RING_STEP,
    RING_TICK,
    FlowStamps,
    call_rates,
    fold_rows,
    full_record,
    kept_form,
    pack_kept,
    quiet_steps,
    rate_columns,
    within_bounds,
)
from keras_actloss.diagnostics import step_activations, step_reader, step_stats
from keras_actloss.diagnostics.records import rates_mark

# The every-step part of a step's statistics (a ring row, see `_read_rows`),
# before the gradients' norms; the row ends with `step_stats.alarm`'s
# `_ALARM` values.
ROW_FIELDS = ("step_high", "step_low", "scale", "rate", "loss", "silent")
_ALARM = 5
_STEP_SPLIT = 2**20
# What `JaxStats._merge` joins per variable, in a call's record.
MERGED = ("grads", "variables", "before", "after")
_ROW_SCALE = 2


class _Trace:
    """What the wrappers note while one step is traced (or run eagerly).

    `full` says whether the step records its full statistics: a Python bool
    when the step runs eagerly, else a traced boolean scalar, the argument
    of the one jitted program that serves every step (`when_full`; the
    checks' own program fixes it to False, `_jax_programs._checks_only`).
    """

    def __init__(self, full):
        self.full = full
        self.recording = False
        self.loss_seen = False
        self.outputs: dict[int, list] = {}
        # Outputs outside `compute_loss_and_updates`, gradient stopped, that
        # belong to the step's trace `home` (`_jax_hooks._made_in`).
        self.loose: dict[int, list] = {}
        self.home = None
        # The trace of `compute_loss_and_updates`'s weights (a value of the
        # forward pass under `jax.value_and_grad` belongs to it).
        self.loss_home = None
        # The gradients of the layers judged by sign, for their counts
        # (`step_activations.unit_gradients`).
        self.unit_grads: dict = {}
        self.batch: int | None = None  # The data's (static) batch size.
        # The step's activation counts, made while the step is traced
        # (`JaxPrograms._prepare_counts`), and their layout once called.
        self.count_activations = None
        self.activation_layout = ()
        self.applied: list[dict] = []
        self.applying = False
        # The state's trainable values into and out of the step.
        self.state_in: list = []
        self.state_out: list = []

    def when_full(self, compute):
        """`compute()` on a full step, zeros of its structure otherwise.

        Under `jit` a `jax.lax.cond`: XLA runs only the branch taken, so an
        every-step check does not pay for the full statistics, and one
        compiled program serves both kinds of step (a second program cost a
        second XLA compilation, longer than many short runs).
        """
        if isinstance(self.full, bool):
            return compute() if self.full else _zeros(jax.eval_shape(compute))
        made = []

        def taken():
            out = compute()
            made.append(jax.tree_util.tree_map(_shape, out))
            return out

        def untaken():
            # The taken branch's shapes when it was traced first (as JAX
            # 0.10 traces a cond's true branch first): the statistics are
            # traced once, not once more for their shapes.
            return _zeros(made[0] if made else jax.eval_shape(compute))

        return jax.lax.cond(self.full, taken, untaken)


def weight_rows(before: list, after: list) -> tuple:
    """The `norm_row`s of the weights `before` and of their change."""
    updates = [
        ops.cast(a, "float32") - ops.cast(b, "float32") for a, b in zip(after, before)
    ]
    return step_stats.norm_row(before), step_stats.norm_row(updates)


def _state_positions(trace, before: list, after: list) -> list[int] | None:
    """The positions of the weights `before` and `after` the update in the
    trainable state into and out of the step (`_Trace.state_in`,
    `state_out`), or None unless all are those very values."""
    positions = {id(value): j for j, value in enumerate(trace.state_in)}
    found = [positions.get(id(value)) for value in before]
    if None in found:
        return None
    out = trace.state_out
    if any(j >= len(out) or out[j] is not a for j, a in zip(found, after)):
        return None
    return found


def _shape(x) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(x.shape, x.dtype)


def _zeros(shapes):
    return jax.tree_util.tree_map(lambda s: ops.zeros(s.shape, s.dtype), shapes)


class JaxStats:
    """Mixin of `JaxTrainHooks`: the in-trace statistics and host readers.

    Relies on the attributes `JaxTrainHooks` sets: `plans`,
    `histogram_size`, `loss_scaled`, `_var_layer`, `_grad_layers()`,
    `_var_sizes()`, and
    the host state `_pending` (each step's statistics, device arrays or
    already read rows, not judged yet),
    `_last_full`, `_kept` (the last full step's batch), `_loss_known` and
    `_bounds`; it sets, while tracing,
    `_grad_layout` (the gradients' `RowLayout`), `_layout` (the full
    step's `step_reader.StepLayout`), `_counter` (the step's first
    optimizer), `_grad_variables`, `apply_groups`, `loss_scaled` and
    `_rates` (the rows' learning-rate columns, `rate_columns`) (`_merge`),
    and
    `_weight_positions` (`_state_positions`).
    """

    _grad_layout = step_stats.RowLayout()
    _layout = step_reader.StepLayout()
    _flow = FlowStamps((), RING_HEAD)  # Until the step is traced.
    _rates = 0
    apply_groups: dict[int, int] = {}
    # Every step full (`every_n_steps=1`): the step reduces the weights.
    all_full = False

    # ---------------------------------------------------------- in the trace
    def _activation_counts(self, outputs: dict, elements: bool = False) -> tuple:
        """`step_activations.activation_vector` of the kept outputs (every call
        of a layer in the step, gradient stopped where they were kept): the
        vector (or None) and its layout. `elements`: count the elements in
        the step (calls whose batches differ, as a GAN's)."""
        trace = self._trace
        return step_activations.activation_vector(
            outputs,
            self.plans,
            elements,
            getattr(trace, "batch", None),
            getattr(trace, "unit_grads", None),
        )

    def _merge(self, calls: list[dict]) -> dict:
        """The step's `stateless_apply` calls as one, as TensorFlow's
        `GraphStats._merge`: one call as it is (the host divides by its loss
        scale); several unscaled each, in call order, a variable updated by
        more than one with the sum of its gradients, the weights before its
        first update and after its last (scale 1). The step, learning rate
        and step counter are the first call's; `"rates"` holds each
        optimizer's rate (`call_rates`). Notes the merged variables
        (`_grad_variables`) and whether the step scales the loss."""
        first = calls[0]
        self._rates = rate_columns(self.optimizers)
        rates = call_rates([(c["optimizer"], c["rate"]) for c in calls], self._rates)
        self._counter = first["optimizer"]
        variables = [call["variables"] for call in calls]
        self.apply_groups = apply_groups(self._var_layer, variables)
        self.counter_applies = sum(c["optimizer"] is first["optimizer"] for c in calls)
        self.loss_scaled = any(call["dynamic"] for call in calls)
        if len(calls) == 1:
            self._grad_variables = first["variables"]
            return {**first, "rates": rates}
        merged: dict[int, list] = {}
        for call in calls:
            for g, v, b, a in zip(*(call[k] for k in MERGED)):
                g = ops.cast(g, "float32")
                if call["scaled"]:
                    g = g / call["scale"]
                if id(v) in merged:
                    merged[id(v)][0] = merged[id(v)][0] + g
                    merged[id(v)][3] = a
                else:
                    merged[id(v)] = [g, v, b, a]
        columns = list(zip(*merged.values()))
        self._grad_variables = list(columns[1])
        one = ops.convert_to_tensor(1.0, "float32")
        merged = dict(zip(MERGED, map(list, columns)))
        return {**first, **merged, "scale": one, "rates": rates}

    def _statistics(self, trace, applied, extra, data) -> dict:
        """The named statistics of the step (see the module docstring) from
        its merged `stateless_apply` calls (`_merge`)."""
        gradients = step_stats.norm_row(applied["grads"], silent=True)
        self._grad_layout = gradients.layout
        nan = ops.convert_to_tensor(float("nan"), "float32")
        known = (extra or {}).get("loss")
        loss = nan if known is None else known
        step = applied["step"]
        head = [
            step // _STEP_SPLIT,
            step % _STEP_SPLIT,
            applied["scale"],
            applied["rate"],
            loss,
            gradients.silent,
        ]
        head = ops.stack([ops.cast(v, "float32") for v in head])
        rates = applied["rates"]
        alarm = step_stats.alarm(
            gradients.row,
            gradients.layout,
            applied["scale"],
            rates_mark(rates) if rates else applied["rate"],
            gradients.silent,
            known,
        )
        # The units' flow after the norms (`_step_rows.FlowStamps`).
        layout = step_activations.flow_layout(self.plans)
        at = RING_HEAD + len(gradients.layout.order)
        if (self._flow.layout, self._flow.at) != (layout, at):
            self._flow = FlowStamps(layout, at)
        flow = step_activations.unit_flow(
            self.plans, layout, applied["grads"], self._grad_variables
        )
        parts = [head, gradients.row[0]] + ([] if flow is None else [flow])
        if rates:  # Then the optimizers' rates.
            parts.append(ops.stack([ops.cast(rate, "float32") for rate in rates]))
        row = ops.concatenate([*parts, alarm], 0)
        before, after = applied["before"], applied["after"]
        self._weight_positions = None
        if not self.all_full:
            self._weight_positions = _state_positions(trace, before, after)
        if self._weight_positions is None:
            # Reduced on every step, outside the cond: as its operands the
            # weights before the update would be kept past it all the same.
            weights, updates = weight_rows(before, after)
        else:
            weights, updates = step_stats.norm_row(before, norms=False), None
        return {
            "row": row,
            **trace.when_full(
                lambda: self._full_statistics(
                    trace, applied, extra, data, weights, updates
                )
            ),
        }

    def _full_statistics(self, trace, applied, extra, data, weights, updates) -> dict:
        """The rest of `step_stats.FULL_KEYS` (on full steps, see
        `_Trace.when_full`) with the `norm_row`s of the weights and their
        update (`_statistics`); notes the full step's layout."""
        # The norms are in the row already (`_statistics`).
        gradients = step_stats.norm_row(applied["grads"], extremes=True, norms=False)
        layers, counts = self._grad_layers(), self._var_sizes()
        samples = self._sample_sizes()
        counted = None
        if trace.count_activations is not None:
            trace.unit_grads = step_activations.unit_gradients(
                self.plans, applied["grads"], self._grad_variables
            )
            counted = trace.count_activations()
        self._layout = step_reader.StepLayout(
            can_die=tuple(bool(p.profile and p.profile.can_die) for p in self.plans),
            by_sign=tuple(p.unit_variable is not None for p in self.plans),
            grads=gradients.layout,
            grad_layers=tuple(layers),
            grad_counts=tuple(counts),
            grad_vectors=tuple(len(v.shape) <= 1 for v in self._grad_variables),
            weights=weights.layout,
            weight_layers=tuple(layers),
            activations=trace.activation_layout if counted is not None else (),
            samples=tuple(samples.items()),
        )
        loss = (extra or {}).get("loss", float("nan"))
        batch = float(jax.tree_util.tree_leaves(data)[0].shape[0])
        out = dict(
            extremes=gradients.extremes[0],
            head=ops.stack(
                [ops.cast(loss, "float32"), ops.cast(batch, "float32"), ops.ones(())]
            ),
        )
        if updates is not None:
            out["weights"], out["updates"] = weights.row[0], updates.row[0]
        if counted is not None:
            out["activations"] = counted
        if samples:
            out["sample"] = step_stats.sliced_sample(
                applied["grads"], layers, samples, applied["scale"]
            )
        return out

    def _sample_sizes(self) -> dict[int, int]:
        """Gradient elements sampled per monitored layer with weights, as on
        TensorFlow (`TrainHooks._sample_size`)."""
        if not self.histogram_size:
            return {}
        sizes = {}
        for i, plan in enumerate(self.plans):
            total = sum(math.prod(v.shape) for v in plan.variables)
            if min(total, self.histogram_size):
                sizes[i] = min(total, self.histogram_size)
        return sizes

    # ------------------------------------------------------------- host side
    def reset_sentinel(self) -> None:
        """Starts judging steps after the ones run so far."""
        self._streak = 0.0
        self._pending = []
        self._last_full = None

    def _fold(self, rows: np.ndarray) -> list[tuple]:
        if not len(rows):
            return []
        patience = LOSS_SCALE_PATIENCE if self.loss_scaled else None
        out, self._streak = fold_rows(
            rows,
            self._grad_layout,
            self._grad_layers(),
            self._streak,
            patience,
            self._loss_known,
            self._rates,
        )
        return out

    def quiet(self) -> bool:
        """Whether the last execution was a single step within the alarm
        bounds: it can wait for `read_quiet` (after the quiet steps before
        it, already read into rows). A full step off the recording schedule
        is judged the same, from its every-step part (on TensorFlow, which
        returns no alarm values from a full step, it is judged at once)."""
        pending = self._pending
        self._last_full = None  # Not a recording: its statistics are not read.
        if not pending:
            return False
        # A step's entry is its device arrays until `quiet` reads it, and
        # a step it does not pass has all read: the steps before the last
        # were all read if the one before it was (no scan a step).
        out = pending[-1]
        if not isinstance(out, dict) or (
            len(pending) > 1 and isinstance(pending[-2], dict)
        ):
            return False
        vector = pending[-1] = np.asarray(out["row"])
        return within_bounds(*vector[-_ALARM:].tolist(), self._bounds)

    def read_quiet(self) -> list[tuple[int, float, float, float, int, int]]:
        """`(step, global norm, learning rate, loss, zeros, silent)` of the
        quiet steps not read yet, in step order (`zeros`: the count of
        exactly-zero gradient norms, `silent`: the silent units)."""
        self._last_full = None
        rows = self._host_rows()
        self._streak = 0.0  # Quiet steps are finite.
        return quiet_steps(rows, self._grad_layout, self._rates)

    def _host_rows(self) -> np.ndarray:
        """The every-step rows not read yet, in step order, as host rows
        (`_read_rows`; those `quiet` read are host vectors already); read
        now."""
        pending, self._pending = self._pending, []
        rows = [out["row"] for out in pending if isinstance(out, dict)]
        fetched = iter(jax.device_get(rows))
        rows = _read_rows(
            [next(fetched) if isinstance(out, dict) else out for out in pending]
        )
        self._flow.note(rows)
        return rows

    def set_bounds(self, bounds: tuple[float, ...]) -> None:
        """Sets the alarm bounds (`_step_rows.BOUND_FIELDS`), checked on
        the host after each quiet step."""
        self._bounds = tuple(float(b) for b in bounds)

    def read_steps(self) -> list[tuple]:
        """Every step run since the last read, judged (see `fold_rows`)."""
        self._last_full = None
        return self._fold(self._host_rows())

    def read_full(self) -> dict | None:
        """The last full-statistics step, as Python values (None = n/a), in
        the structure of `RingReader.read_full` (`full_record`)."""
        full, self._last_full = self._last_full, None
        self._kept_full = full
        if full is None:
            return None
        rows = self._host_rows()
        steps = self._fold(rows)
        host = jax.device_get({k: v for k, v in full.items() if k != "sample"})
        values = {k: np.asarray(v, "float64").tolist() for k, v in host.items()}
        values["row"] = _read_rows([host["row"]])[0].tolist()
        values.setdefault("activations", [])
        record = full_record(self._layout, values, steps, self._loss_known, rows)
        record["flow"] = self._flow.by_layer()
        return record

    def read_samples(self) -> dict[int, np.ndarray]:
        """Gradient samples of the last full step, by layer index."""
        full = self._kept_full
        if full is None or "sample" not in full:
            return {}
        return step_reader.split_samples(self._layout, np.asarray(full["sample"]))

    def read_labels(self):
        """Labels of the last full step's batch (float32, up to 64 rows
        each), or None: an array for a single label tensor, else the
        labels' structure with one per tensor (`pack_kept`)."""
        return self._read_kept(1)

    def read_inputs(self):
        """Inputs of the last full step's batch, kept and read like the
        labels."""
        return self._read_kept(0)

    def _read_kept(self, which: int):
        if self._kept is None:
            return None
        value = keras.utils.unpack_x_y_sample_weight(self._kept)[which]
        if value is None:
            return None
        rows = [_rows(x) for x in keras.tree.flatten(value)]
        return pack_kept(kept_form(value), rows)


def _rows(value) -> np.ndarray | None:
    """The first rows (up to `LABEL_ROWS`) of a kept tensor, float32; None
    for a scalar or an empty one."""
    if not getattr(value, "ndim", 0):
        return None
    value = np.asarray(value[:LABEL_ROWS], "float32")
    return value if value.size else None


def _read_rows(vectors: list) -> np.ndarray:
    """Host rows in the `_step_rows` ring layout (`fold_rows`), float64,
    from `"row"` vectors of one length: the step, no tick, the loss scale,
    the learning rate, the loss, the silent units, then each variable's
    gradient norm (scaled), the units' flow (`FlowStamps`) and the
    optimizers' rates (`step_rates`); not the alarm values."""
    if not vectors:
        return np.zeros((0, RING_HEAD))
    values = np.stack(vectors).astype("float64")  # float32: exact in float64.
    rows = np.empty((len(values), values.shape[1] - _ALARM))
    rows[:, RING_STEP] = values[:, 0] * _STEP_SPLIT + values[:, 1]
    rows[:, RING_TICK] = -1.0
    rows[:, RING_SCALE:] = values[:, _ROW_SCALE:-_ALARM]
    return rows
