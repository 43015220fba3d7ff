"""Every-step judging and full recordings of `GradientDiagnostics`.

Two mixins of the callback. `StepSchedule` keeps the step count (moved to
the optimizer that really counts the steps once a step is traced) and
decides whether a batch off the recording schedule may run the cheap
every-step train function yet (`_sentinel_pays`, from the timings of the
full one). `StepJudging` reads what the batch that just ran left in the
hooks and hands it to the rules: the ring of every-step rows, read at an
alarm and every `QUIET_READ` quiet steps otherwise, and a full recording's
statistics, written to the logs with the step of the largest global norm
since the last write; a jump starts a burst of dense recording
(`StepSchedule._burst`).
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings

import keras
import numpy as np

from keras_actloss.callbacks._callback_support import (
    data_saturations,
    feature_inputs,
    gate_saturations,
    input_scale,
    input_scales,
    label_classes,
    preprocessed,
    recording_gap,
    step_stats,
    target_scale,
    value_rows,
)
from keras_actloss.callbacks._model_plan import host_rate
from keras_actloss.callbacks._reporting import GradientHealthWarning
from keras_actloss.callbacks._step_rows import (
    FULL,
    LABEL_ROWS,
    SENTINEL,
    kept_arrays,
)
from keras_actloss.diagnostics.records import SentinelEvent

# The kinds of noisy burst, each with its own back-off (`StepSchedule._burst`):
# a noisy jump of the every-step norms, and a recording that shows a failure
# not confirmed yet, such as most of a ReLU layer's units inactive
# (`HealthRules.suspected`).
JUMP, SUSPECTED, LOSS = "jump", "suspected", "loss"


@dataclasses.dataclass
class _Calm:
    """The back-off of one kind of noisy burst: none starts before `until`,
    and `gap` steps of calm follow the next; `found` is the number of
    findings when its last burst started."""

    gap: int
    until: int | None = None
    found: int = 0


class StepSchedule:
    """Mixin of `GradientDiagnostics`: the step count and the train function.

    Relies on the attributes `GradientDiagnostics` sets: `params`,
    `every_n_steps`, `findings`, `history`, `_rules`, the class attributes
    `SENTINEL_SAVING`, `RENT_STEPS` and `DENSE_STEPS`, and `_hooks`,
    `_step`, `_spe`, `_stride`, `_origin`, `_next`, `_burst_end`, `_calms`,
    `_guessed`, `_mode`, `_batches`, `_rate_variables`, `_host_rate`,
    `_batch_start`, `_first_batch`, `_full_batch`, `_paid` and `_rented`.
    """

    def _start_schedule(self) -> None:
        """A schedule with nothing recorded yet (hooks set up afresh)."""
        self._origin = self._next = None
        # Dense recording after a jump (`_burst`): until `_burst_end`; a
        # noisy one starts none before the `until` of its kind's `_Calm`.
        self._burst_end = None
        found = len(self.findings)
        self._calms = {
            kind: _Calm(self.every_n_steps, found=found)
            for kind in (JUMP, SUSPECTED, LOSS)
        }
        # Timings of the full train function's first use.
        self._first_batch = self._full_batch = None
        self._paid, self._rented = 0.0, 0

    def _resync_step(self) -> None:
        """Moves the step count and schedule to the step counter after a
        fit's first batch: with several optimizers hooked, the first traced
        batch tells which one counts the steps, and how many times it
        applies in one."""
        if not self._hooks.counter_known:
            return  # No optimizer applied gradients yet.
        self._guessed = False
        # The counter's optimizer may apply several times a step (a WGAN's
        # critic): its count then moves that many steps per batch.
        self._stride = self._spe * max(1, self._hooks.counter_applies)
        self._rules.execution_steps = self._stride
        self._rules.separate_losses = self._hooks.separate_losses
        shift = self._hooks.step_count() - (self._step + self._stride)
        self._origin += shift
        self._shift(shift)

    def _realign(self) -> None:
        """Moves the step count, and the steps planned from it, to the
        optimizer's at an epoch end: Keras counts `steps_per_execution`
        steps for every batch callback, also for an epoch's last execution
        that ran fewer (an epoch of 25 steps in executions of 4)."""
        if self._stride > 1 and self._step is not None and not self._guessed:
            self._shift(self._hooks.step_count() - self._step)

    def _shift(self, shift: int) -> None:
        self._step += shift
        self._next += shift
        if self._burst_end is not None:
            self._burst_end += shift
        for calm in self._calms.values():
            if calm.until is not None:
                calm.until += shift

    def _gap(self, last: int) -> int:
        """Steps from a recording at `last` to the next: 1 within a burst
        (after a jump in this step too), else `recording_gap` from the start
        of training."""
        if self._burst_end is not None and last + 1 < self._burst_end:
            return 1
        return recording_gap(last, self._origin, self.every_n_steps, self.DENSE_STEPS)

    def _burst(
        self, start: int, noisy: bool, kind: str = JUMP, batch: int | None = None
    ) -> None:
        """Records every step from `start` for as long as the rules need to
        confirm a failure (`patience_steps`, and `min_samples` samples for
        dead units at the last recorded batch size, up to 32 recordings
        after a jump and all of them when `SUSPECTED`, one per execution of
        `steps_per_execution` steps).

        A noisy one (`HealthRules.jump_noisy`: the global norm's level or
        the silent units, which small batches make spiky; `kind` `LOSS`:
        the loss high two steps in a row, `HealthRules.loss_jumped`;
        `SUSPECTED`: a recording with most of a ReLU layer's units
        inactive, or every optimizer group's gradients collapsed) starts a
        burst only `every_n_steps` after the last noisy one of its kind,
        and twice as long after each that found nothing (at most 16
        times): a healthy run with spiky norms or sparse layers does not
        record most of its steps, and a fruitless burst of one kind holds
        back no burst of the other (units dying after a spike of the
        norms). The learning rate, an explosion and a gradient tensor
        falling to 0 always start one. `DENSE_STEPS = 0` (recordings every
        `every_n_steps` only): none. `batch`: the batch size of the
        recording that asks (default: the last kept in `history`).
        """
        if not self.DENSE_STEPS:
            return
        calm = self._calms[kind]
        if noisy:
            if calm.until is not None and start < calm.until:
                return
            fruitless = len(self.findings) == calm.found
            if calm.until is not None and fruitless:
                calm.gap = min(2 * calm.gap, 16 * self.every_n_steps)
            elif not fruitless:
                calm.gap = self.every_n_steps
            calm.until = start + calm.gap
        calm.found = len(self.findings)
        t = self._rules.thresholds
        if batch is None and self.history:
            batch = self.history[-1].batch_size
        steps = max(2 * self.DENSE_STEPS, t.patience_steps)
        if batch:
            # At most 4 times the dense start after a jump (a batch of 1
            # would need 128), but all of them when most of a layer's units
            # were inactive (`SUSPECTED`): the dead units' window needs
            # those samples. One recording per batch callback of `_stride`
            # steps, from the next.
            needed = math.ceil(t.min_samples / batch)
            if kind != SUSPECTED:
                needed = min(needed, 8 * self.DENSE_STEPS)
            steps = max(steps, (needed + 1) * self._stride - 1)
        self._burst_end = max(self._burst_end or 0, start + steps)
        self._next = min(self._next, start)

    def _watch_rate(self) -> None:
        """Records the coming execution in full (`_burst`) when the learning
        rate (`_rate_variables`, read by the host) rose `jump_factor` times
        since the last execution: a callback raised it at its start. The
        every-step rows show the jump only after the execution, and the
        steps that blow up under the new rate are its first."""
        rate = host_rate(self._rate_variables, self._hooks.value)
        before, self._host_rate = self._host_rate, rate
        factor = self._rules.thresholds.jump_factor
        if before is not None and 0 < factor * before <= rate < math.inf:
            self._burst(self._step, noisy=False)

    def _time_batch(self) -> None:
        """Notes the first full batch (tracing included) and the latest.
        After a full execution the hooks start their sums over the next
        one's steps afresh (`end_execution`)."""
        if self._mode != FULL:
            return
        self._hooks.end_execution()
        if self._hooks.traced(SENTINEL):
            return
        seconds = time.perf_counter() - self._batch_start
        if self._first_batch is None:
            self._first_batch = seconds
        else:
            self._full_batch = seconds

    def _planned_steps(self) -> int | None:
        """The steps this `fit` runs (`steps` x `epochs` of `params`), or
        None when Keras does not know them."""
        params = self.params or {}
        steps, epochs = params.get("steps"), params.get("epochs")
        return steps * epochs if steps and epochs else None

    def _sentinel_pays(self) -> bool:
        """Whether tracing the every-step train function saves time.

        Until it is traced, steps off the recording schedule can run the
        full train function (and read only its every-step part). Tracing a
        second function costs about as much as the first took beyond a
        step; the cheap step saves about `SENTINEL_SAVING` of a full one.
        It is traced once the steps left in this `fit` would save more than
        that, or once the full steps off the schedule cost as much as it
        (so a run of many short fits pays at most twice the trace), or
        after `RENT_STEPS` of them. In a short first `fit` (of a large
        model, say) it is left out. (On JAX one compiled function serves
        both kinds of step: it counts as traced from the first step.)
        """
        if self._hooks.traced(SENTINEL):
            return True
        if self._first_batch is None or self._full_batch is None:
            return False  # Not measured yet: one more full step.
        planned = self._planned_steps()
        if planned is None:
            return True  # A run of unknown length: assume a long one.
        saving = self.SENTINEL_SAVING * self._full_batch
        remaining = planned - self._batches * self._spe
        trace = max(self._first_batch - self._full_batch, 0.0)
        self._paid += saving
        self._rented += 1
        return (
            remaining * saving > trace
            or self._paid >= trace
            or self._rented >= self.RENT_STEPS
        )


class StepJudging:
    """Mixin of `GradientDiagnostics`: judges the steps that ran, records.

    Relies on the attributes `GradientDiagnostics` sets: `history`, the
    class attribute `QUIET_READ`, and `_hooks`, `_rules`, `_writer`,
    `_names`, `_step`, `_spe`, `_quiet`, `_peak`,
    `_input_scale`, `_input_scales`, `_upstream_scales`, `_inputs_reach`,
    `_data_saturation`,
    `_kept_step`, `_last_histogram` and `_warned_no_gradients`; and on
    `Reporting`'s `_handle`, `_label_checks` and `_histogram_due`, and
    `StepSchedule`'s `_burst`.
    """

    def _check_steps(self) -> None:
        """Judges the steps of the batch that just ran (not recorded).

        A quiet step (its norm and learning rate within the rules' alarm
        bounds, checked on the host) waits in the ring, read every
        `QUIET_READ` steps; any other step is judged at once, with the
        steps before it (a full step off the schedule has no alarm: its
        row, the vector's prefix, is judged at once).
        """
        hooks = self._hooks
        if self._spe == 1 and hooks.quiet():
            self._quiet += 1
            if self._quiet >= self.QUIET_READ:
                self._read_quiet()
            return
        self._read_all()

    def _read_all(self) -> None:
        """Judges every step not read yet, one by one."""
        self._observe_steps(self._hooks.read_steps())
        self._all_read()

    def _read_quiet(self) -> None:
        """Hands the quiet steps waiting in the ring to the rules."""
        steps = self._hooks.read_quiet()
        self._rules.observe_quiet(steps)
        if steps:
            step, norm, rate, loss = max(steps, key=lambda s: s[1])[:4]
            self._note_peak(SentinelEvent(step, norm, False, None, rate, loss))
        self._all_read()

    def _all_read(self) -> None:
        """After a read of the ring: no quiet step waits; the alarm bounds
        follow the rules' new state."""
        self._quiet = 0
        self._hooks.set_bounds(self._rules.alarm_bounds())

    def _note_peak(self, event: SentinelEvent) -> None:
        """Keeps the finite step with the largest norm since the last write."""
        if self._peak is None or event.global_norm > self._peak.global_norm:
            self._peak = event

    def _observe_steps(self, steps: list[tuple], recorded: int | None = None) -> None:
        """Judges every step's global gradient norm as soon as it ran.

        A jump (`HealthRules.jumped`) starts a burst of dense recording
        from the next step (`_burst`). A non-finite step is written at
        once, unless it is the step `recorded` in full (written with its
        statistics).
        """
        new = []
        if self._hooks.sample_weighted:
            # `fit`'s sample or class weights scale the loss by their mean:
            # no level of a prediction that knows nothing is known.
            self._rules.uninformed_loss = None
        for step, norm, counted, skipped, layer, rate, loss, *units in steps:
            if skipped:  # A loss-scale overflow the optimizer skipped.
                new += self._rules.observe_overflow(step, rate, loss, units[-1])
            else:
                name = self._names[layer] if 0 <= layer < len(self._names) else None
                # Dynamic loss scaling skips a non-finite step's update.
                skips = counted and self._hooks.loss_scaled
                finite = None
                if counted and step == self._kept_step:
                    finite = self._batch_finite()
                event = SentinelEvent(
                    step,
                    norm,
                    counted,
                    name,
                    rate,
                    loss,
                    *units,
                    update_skipped=skips,
                    data_finite=finite,
                )
                new += self._rules.observe_step(event)
                if counted:
                    if self._writer is not None and step != recorded:
                        self._writer.write_sentinel(event)
                else:
                    self._note_peak(event)
            if self._rules.jumped:
                kind = LOSS if self._rules.loss_jumped else JUMP
                self._burst(step + 1, self._rules.jump_noisy, kind)
        self._handle(new)

    def _batch_finite(self) -> bool | None:
        """Whether the kept rows of the last full step's batch (its inputs
        and labels) are finite: False when one is not, True when all are
        and they are the whole batch (fewer rows than `LABEL_ROWS`), None
        when not known."""
        kept = kept_arrays(self._hooks.read_inputs())
        kept += kept_arrays(self._hooks.read_labels())
        if not kept:
            return None
        if not all(np.isfinite(a).all() for a in kept):
            return False
        return True if all(len(a) < LABEL_ROWS for a in kept) else None

    def _judge_unseen(self, loss) -> None:
        """Judges the first execution of a model that was built in it (on
        TensorFlow: Keras's own train function ran it, before the hooks
        could go in), from what it left: a non-finite `loss` in its logs,
        or on TensorFlow trainable weights it made non-finite, is reported
        as a non-finite step at the first of its steps, as the sentinel
        would have, and the later consequences (a layer of NaN weights
        outputs zeros that look like dead units) are then not judged."""
        loss = None if loss is None else float(np.asarray(loss))
        finite = loss is None or math.isfinite(loss)
        if finite and keras.backend.backend() == "tensorflow":
            weights = self.model.trainable_variables
            finite = all(np.isfinite(w.numpy()).all() for w in weights)
        if finite:
            return
        step = max(0, self._hooks.step_count() - self._stride)
        event = SentinelEvent(step, math.nan, True, None, None, loss)
        new = self._rules.observe_step(event)
        if self._writer is not None:
            self._writer.write_sentinel(event)
        self._handle(new)

    def _no_gradients(self) -> None:
        """Warns once that a recording found no gradients to record."""
        if self._warned_no_gradients:
            return
        self._warned_no_gradients = True
        warnings.warn(
            "GradientDiagnostics saw no gradients at step "
            f"{self._step - 1}: the model's `train_step` passed none to the "
            f"optimizers it watches ({self._hooks.hooked_names()}), so nothing "
            "is recorded for it. A custom `train_step` that updates the "
            "weights with an optimizer held elsewhere needs it in "
            "`GradientDiagnostics(optimizers=[...])`; a model without "
            "trainable weights has no gradients to record.",
            GradientHealthWarning,
            stacklevel=2,
        )

    def _write_peak(self, recorded: int | None) -> None:
        """Writes the largest global norm of the steps since the last write,
        unless it is the step just recorded in full."""
        peak, self._peak = self._peak, None
        if self._writer is not None and peak is not None and peak.step != recorded:
            self._writer.write_sentinel(peak)

    def _scaled(self, inputs) -> tuple:
        """`(features, scale, by layer, upstream)` of a kept batch of
        `inputs` (`read_inputs`), as the first layers with weights see them:
        for a model of one input, the batch through its preprocessing (None
        for ids, `feature_inputs`) and its `input_scale`; for one of several,
        no features (its recurrent gates are not judged), the largest of
        its inputs' scales, each first layer's and each layer's of the
        inputs it is computed from (`input_scales`; None for one input)."""
        if self._inputs_reach is not None:
            return None, *input_scales(self.model, inputs, *self._inputs_reach)
        features = preprocessed(self._preprocessing, feature_inputs(self.model, inputs))
        return features, input_scale(features), {}, None

    def _data_rows(self, step: int) -> tuple:
        """The classes of the recorded batch's kept labels and its kept
        features and regression targets (`StepStats`' `label_classes`,
        `value_rows`, `value_features`), judged for the order of the data
        (`LabelOrderRules.observe_order`) before the step's norm; a model
        whose first recording has neither is not read again."""
        if self._reads_data is False:
            return None, None, 0
        labels = self._hooks.read_labels()
        classes = label_classes(self.model, labels)
        # Inputs of features only (a batch of images is not read).
        inputs = getattr(self.model, "inputs", None) or []
        found = None
        if len(inputs) == 1 and len(inputs[0].shape) == 2:
            found = value_rows(self.model, self._hooks.read_inputs(), labels)
        rows, features = (None, 0) if found is None else found
        self._reads_data = classes is not None or found is not None
        self._handle(self._rules.observe_order(step, classes, rows, features))
        return classes, rows, features

    def _record(self) -> bool:
        """Reads the full statistics of the last step; False if skipped."""
        data = self._hooks.read_full()
        if data is None:
            self._no_gradients()
            return True  # Nothing to record; keep to the schedule.
        step = int(data["step"])
        # A loss-scale overflow, or a non-finite step whose update loss
        # scaling skipped (written as an event): record the next step.
        skipped = data["skipped"] or (self._hooks.loss_scaled and data["non_finite"])
        rows = (None, None, 0) if skipped else self._data_rows(step)
        self._observe_steps(data["steps"], recorded=None if skipped else step)
        self._all_read()
        if skipped:
            return False
        due = self._histogram_due(step)
        samples = self._hooks.read_samples() if due else {}
        if self._input_scale is None:
            inputs, labels = self._hooks.read_inputs(), self._hooks.read_labels()
            features, self._input_scale, self._input_scales, self._upstream_scales = (
                self._scaled(inputs)
            )
            fractions = gate_saturations(self._gates, features)
            self._handle(self._rules.input_gates(step, self._input_scale, fractions))
            self._data_saturation = data_saturations(
                self._hooks.plans, [*kept_arrays(inputs), *kept_arrays(labels)]
            )
            self._rules.target_scale = target_scale(self.model, labels)
        elif self._gates or self._rules.wants_inputs():
            # New data came (did the inputs change scale with it?), or
            # the inputs reach recurrent gates first (a batch of sequences
            # is small): read them.
            features, scale, *_ = self._scaled(self._hooks.read_inputs())
            if self._rules.wants_inputs():
                self._handle(self._rules.inputs_changed(step, scale, self._input_scale))
            if self._gates:
                fractions = gate_saturations(self._gates, features)
                self._handle(
                    self._rules.gates_changed(step, scale, self._input_scale, fractions)
                )
        stats = step_stats(
            data,
            self._names,
            samples,
            self._input_scale,
            self._data_saturation,
            self._hooks.apply_groups,
            self._input_scales,
            self._upstream_scales,
        )
        stats.label_classes, stats.value_rows, stats.value_features = rows
        new = self._rules.observe(stats)
        if self._rules.suspected or self._rules.gates_pending:
            self._burst(step + 1, True, SUSPECTED, stats.batch_size)
        new += self._label_checks()
        if self._writer is not None:
            self._write_peak(step)
            self._writer.write_stats(stats)
            if samples:
                self._writer.write_histograms(
                    step, {self._names[i]: v for i, v in samples.items()}
                )
                self._last_histogram = step
        # What only the rules and the writer read is not kept in `history`
        # (a long run holds thousands of recordings).
        for layer in stats.layers:
            layer.grad_values = layer.unit_activity = None
        stats.execution_rms, stats.label_classes, stats.value_rows = {}, None, None
        self.history.append(stats)
        self._handle(new)
        return True
