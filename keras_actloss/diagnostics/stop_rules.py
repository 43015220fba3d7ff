"""Health rules for the steps on which training stops.

Judged on every training step's `SentinelEvent`, as the norm rules of
`diagnostics.step_rules`: a non-finite step, reported with its likely cause
(`NonFiniteRules`), and every gradient zero while the loss stays high
(`ZeroGradientRules`). They derive from `RuleFamily` and are mixed into
`HealthRules`, whose state (`thresholds`, `_streaks`, `_norms`, ...) they
use.
"""

from __future__ import annotations

import math

import numpy as np

from keras_actloss import findings as F
from keras_actloss.diagnostics.records import SentinelEvent
from keras_actloss.diagnostics.rule_support import (
    _BAD_DATA_FIX,
    _DATA_FIX,
    _DEAD_OUTPUT_FIX,
    _EXPLOSION_STEPS,
    _FORWARD_FIX,
    _FROM_LOGITS_FIX,
    _JUMP_FIX,
    _LOSS_STOPPED_FIX,
    _OPTIMIZER_FIX,
    _OVERFLOW_FIX,
    _SCALE_FIX,
    _START_SAMPLES,
    _STOPPED_FIX,
    _UNSTABLE,
    _ZERO_FIX,
    _ZERO_START_FIX,
    FIXES,
    RuleFamily,
    _finite,
    _growth,
    _median,
    _named,
)
from keras_actloss.diagnostics.start_rules import (
    _BIAS_FIX,
    _TANH_BIAS_FIX,
    bias_setting,
)
from keras_actloss.diagnostics.step_rules import _DIVERGE_RISE, negligible
from keras_actloss.profiles import TANH

# A loss of this many times that of knowing nothing on every batch is that
# of confidently wrong answers (`ZeroGradientRules._loss_unchanging`).
_WRONG_LOSS = 3.0
# A global norm at or below this is no gradient at all: float32's smallest
# normal number (a float32 sum of squares underflows to 0 well above it).
_ZERO_NORM = float(np.finfo("float32").tiny)
# ...or negligible for the loss (`step_rules.negligible`), before any
# explosion (a diverging model's loss outgrows its gradient's root).
# The streak of steps with every gradient zero (`ZeroGradientRules`), apart
# from the per-layer modes' (`_Streaks`).
_ZERO_KEY = ("zero_gradients", None)
# A non-finite step this many steps or fewer after a learning-rate jump up,
# with normal norms before it, is the jump's (`_non_finite_step`); later,
# a NaN batch after a warm restart is as likely.
_JUMP_NAN_STEPS = 10
# A loss at or below this has converged, whatever its early level: a clipped
# cross-entropy of a confident right answer is -log(1 - 1e-7) = 1e-7.
_CONVERGED_LOSS = 1e-6


class NonFiniteRules(RuleFamily):
    """A NaN or infinite step, reported with its likely cause.

    Mixed into `HealthRules`: an explosion when the norm before the step
    was over the limit or had just jumped, or when an explosion was
    reported within `_EXPLOSION_STEPS` steps before it, or else when the
    recorded update of the step before changed a layer's weights by more
    than `exploding_update_ratio` times their norm; under loss scaling,
    gradients that overflowed float16 at every scale with the loss finite
    are the scale of the data (or of the initial weights), and an explosion
    as well when they did from the first step on; else the data or the
    loss.
    """

    def _non_finite_step(self, new, event: SentinelEvent, loss=None) -> None:
        """A non-finite step: reported with its cause (see the class)."""
        t = self.thresholds
        key = (F.EXPLODING_GRADIENTS, None)
        count, start = self._streaks.update(key, False, event.step)
        (last, last_step), early = self._norms.before(event.step), self._norms.early()
        recent = self._norms.recent()
        grew = last is not None and (
            last > t.exploding_norm
            or (early is not None and last > t.exploding_growth * early)
            or (recent is not None and last >= t.jump_factor * recent)
        )
        message = self._non_finite_message(event, loss)
        # Only a NaN loss whose update loss scaling skipped spares them.
        self._lost |= not (event.update_skipped and not _finite(event.loss))
        # The update just before: larger than the weights, it diverges
        # whatever the norm (under loss scaling the next step overflows);
        # unless an explosion was reported already (then the cause).
        update = self._last_update
        known = self._explosion_before(event.step)
        # An update that broke finite weights, recorded since the last
        # finite step's recording.
        broken = self._broken_update
        if broken is not None and (last is None or broken[0] < last_step):
            broken = None
        # A learning-rate jump up shortly before (`_JUMP_NAN_STEPS`).
        jump = None
        if last is not None and self._rate_change is not None:
            jump = self._jump_since(event.step, _JUMP_NAN_STEPS, hold=False)
        oversized = (
            not grew
            and not known
            and last is not None
            and update is not None
            and update[0] == last_step
            and update[2] > t.exploding_update_ratio
        )
        if grew:
            # Over the ceiling from the first step: the scale, not the step.
            scale = self._norms.huge_from_start(t.exploding_norm)
            fix = _SCALE_FIX if scale else FIXES[F.EXPLODING_GRADIENTS]
            if known is not None:
                fix = known.fix  # The explosion told before: its cause's.
            self._add(
                new,
                F.EXPLODING_GRADIENTS,
                None,
                last_step,
                last,
                f"The global gradient norm grew to {last:.3g} by step "
                f"{last_step}{_growth(last, early)}, and step {event.step} was "
                "not finite: the gradients exploded"
                + (
                    " from the first step on (the scale of the data or of the "
                    "initial weights)."
                    if scale
                    else "."
                ),
                fix,
            )
            message += " It follows the explosion of the gradient norm."
        elif oversized:
            _, layer, ratio = update
            self._add(
                new,
                F.EXPLODING_GRADIENTS,
                layer,
                last_step,
                ratio,
                f"The update of step {last_step} changed the weights of layer "
                f"'{layer}' by {ratio:.3g} times their own norm, and step "
                f"{event.step} was not finite: the steps are far too large and "
                "training diverged.",
            )
            message += (
                f" It follows an update larger than the weights (step {last_step})."
            )
            fix = FIXES[F.EXPLODING_GRADIENTS]
        elif known:
            message += " It follows the explosion reported before it."
            fix = known.fix
        elif last is not None and last <= _ZERO_NORM:
            # After a run of zero gradients (a saturated output): not a
            # normal norm; the explosion that ended in it, when one did.
            start = self._streaks.start(_ZERO_KEY)
            blown = None if start is None else self._explosion_before(start)
            message += (
                f" Every gradient was 0 before it (last finite norm {last:.3g} "
                f"at step {last_step}"
                + ("" if start is None else f", 0 since step {start}")
                + "): training had stopped before it"
                + (
                    f", after the explosion of step {blown.step}."
                    if blown
                    else "; the cause is likely in the data or the loss."
                )
            )
            fix = blown.fix if blown else _DATA_FIX
        elif event.update_skipped and _finite(event.loss):
            before = (
                "no step before it had finite gradients"
                if last is None
                else f"the gradient norms before it were normal (last finite "
                f"norm {last:.3g})"
            )
            message += (
                f" The loss is finite ({event.loss:.3g}) and {before}: the "
                "gradients are beyond float16's range at every loss scale "
                "tried, so the scale of the data"
                + (" or of the initial weights" if last is None else "")
                + " is the likely cause (unscaled inputs or regression targets)."
            )
            if last is None:
                # No update was ever applied: the gradients exploded.
                self._overflowed_from_start(new, event)
                message += " It follows the explosion of the gradients."
            fix = _OVERFLOW_FIX
        elif jump is not None:
            # Normal norms, then a NaN soon after the rate jumped: the first
            # step too large to stay finite (a VAE's `exp(z_log_var)`, Adam
            # at 1 from 1e-3: the norm normal at step 100, NaN at 101).
            change = self._rate_change
            self._add(
                new,
                F.EXPLODING_GRADIENTS,
                None,
                change[0],
                change[2] / change[1],
                f"Step {event.step} was not finite {jump}, with the gradient "
                f"norms normal until then (last finite norm {last:.3g}): the "
                "steps at the new rate are far too large and training diverged.",
                _JUMP_FIX,
            )
            message += f" It came {jump}: the steps are far too large."
            fix = _JUMP_FIX
        elif broken is not None:
            at, layer = broken
            message += (
                f" The update of step {at} made the weights of layer '{layer}' "
                "non-finite from finite gradients (global gradient norm "
                f"{last:.3g} at step {last_step}): the optimizer's step broke "
                "them, not the data or the loss."
            )
            fix = _OPTIMIZER_FIX
        elif last is None:
            message += (
                " No step before it had finite gradients: the cause is likely "
                "in the data, the loss or the initial weights, not the step size."
            )
            message, fix = self._data_or_loss(message, event)
        else:
            message += (
                f" The gradient norms before it were normal (last finite norm "
                f"{last:.3g}): the cause is likely in the data or the loss, not "
                "the step size."
            )
            message, fix = self._data_or_loss(message, event)
        self._add(
            new, F.NON_FINITE, event.layer, event.step, event.global_norm, message, fix
        )

    def _data_or_loss(self, message: str, event: SentinelEvent) -> tuple[str, str]:
        """A non-finite step's message and fix where the data or the loss is
        the likely cause. Where the callback kept the step's batch
        (`SentinelEvent.data_finite`), which one it is: a batch with a NaN
        or infinity in its inputs or labels (probed: one NaN row at step
        12, told to check the data and the loss alike), or a finite batch,
        the model or the loss then the cause (probed: `exp` of a layer of
        large weights, told to check the data). Then naming the layers with
        an exponential activation (`exponential_layers`), which overflows
        with finite data (probed: 5 such layers on standardized inputs, inf
        from the third, were told to check the data), and, with a loss that
        checks its labels in a compiled step (`traced_label_checks`), the
        labels that fail its check, which make it NaN there (probed on JAX:
        hinge labels 0/1/2 were told to check the data for NaN with
        `np.isfinite`)."""
        if event.data_finite is False:
            message += (
                f" The batch of step {event.step} holds NaN or infinite values "
                "in its inputs or labels: the data is the cause."
            )
            return message, _BAD_DATA_FIX
        default = _DATA_FIX
        if event.data_finite:
            message += (
                f" The inputs and labels of step {event.step}'s batch are all "
                "finite: the model's forward pass or the loss made the first "
                "non-finite value."
            )
            default = _FORWARD_FIX
        if self.exponential_layers:
            listed = _named(self.exponential_layers)
            message += (
                f" The exponential activation of {listed} overflows float32 "
                "(to inf) for inputs above about 88, and float16 above about "
                "11: finite data can do this."
            )
            return message, (
                f"Replace the exponential activation of {listed} (ReLU or "
                "softplus), or keep its inputs small (batch normalization "
                "before it, smaller initial weights). " + _DATA_FIX
            )
        loss = self.traced_label_checks
        if loss is None:
            return message, default
        message += (
            f" The loss '{loss}' checks its labels, and in a compiled step "
            "(`jit_compile`), where it cannot raise, makes its value NaN on a "
            "batch whose labels fail the check (a format or value it does not "
            "take, such as a class id out of range): finite labels can do this."
        )
        return message, (
            "Call the loss on a batch outside `fit` (`loss(y, model(x))`): it "
            "raises an error naming the labels that fail its check. " + _DATA_FIX
        )

    def _overflowed_from_start(self, new, event: SentinelEvent) -> None:
        """Reports the explosion behind a run of loss-scale overflows from
        the first step on that stopped training (`event`) with the loss
        finite: the forward pass fit float16 (a loss past it is inf or
        NaN), the backward pass did not at any scale tried."""
        self._add(
            new,
            F.EXPLODING_GRADIENTS,
            None,
            event.step,
            math.inf,
            f"Every step from the first one (step {event.step}) overflowed "
            "float16 under loss scaling, the update skipped and the scale "
            f"halved each time, while the loss stayed finite ({event.loss:.3g}): "
            "the gradients are beyond float16's range at every scale tried, "
            "they exploded from the first step on (the scale of the data or "
            "of the initial weights).",
            _OVERFLOW_FIX,
        )

    def _explosion_before(self, step: int) -> F.Finding | None:
        """The last explosion reported within `_EXPLOSION_STEPS` steps
        before `step` (its finding's step), if any."""
        near = range(step - _EXPLOSION_STEPS, step + 1)
        found = [f for f in self.findings if f.mode == F.EXPLODING_GRADIENTS]
        found = [f for f in found if f.step in near]
        return found[-1] if found else None

    @staticmethod
    def _non_finite_message(event: SentinelEvent, loss=None) -> str:
        """What happened at the non-finite step `event` (with the loss of
        its recording, `loss`, when known); the caller adds the likely
        cause."""
        norm = event.global_norm
        shown = event.loss if loss is None else loss
        if (
            not event.layer
            and _finite(norm)
            and shown is not None
            and not _finite(shown)
        ):
            # Only the loss: a sample's infinite loss whose gradient is
            # finite (the log of a ReLU output of 0) leaves the weights be.
            return (
                f"The loss was not finite at step {event.step} ({shown:.3g}) "
                f"while every gradient was (global gradient norm {norm:.3g}): the "
                "loss of some samples is infinite or NaN (such as the log of 0) "
                "with a finite gradient, so the weights stay finite, but the loss "
                "no longer measures training (nor can anything that watches it, "
                "such as early stopping)."
            )
        what = f"global gradient norm {norm:.3g}" + (
            "" if loss is None else f", loss {loss:.3g}"
        )
        # The layer is the first in model order with a non-finite gradient:
        # a NaN loss makes every layer's so, and says nothing of where.
        if event.layer:
            what += f"; the first layer with one in model order: '{event.layer}'"
        start = f"Non-finite gradients at step {event.step} ({what}): "
        if not event.update_skipped:
            return start + "the weights will become NaN and training cannot recover."
        if event.loss is not None and not np.isfinite(event.loss):
            return start + (
                "loss scaling skipped the update, so the weights are unchanged, "
                f"but the loss itself was {event.loss:.3g}, which no loss scale "
                "causes."
            )
        return start + (
            "loss scaling has skipped every update for many steps in a row and "
            "cut its scale each time: training has stopped."
        )


def _saturated_since(start: int) -> str:
    """The end of a message that reports an explosion as the cause of every
    gradient being exactly 0 from step `start` (a saturated output)."""
    return (
        f"where every gradient has been exactly 0 since step {start} (a "
        "saturated output)" + _UNSTABLE
    )


class ZeroGradientRules(RuleFamily):
    """Every gradient zero for `patience_steps` steps while the loss is high.

    Mixed into `HealthRules`; reported as the model's vanishing gradients,
    or as the output layer's dead units where every output has a ReLU
    activation without a cap (`_floored_outputs`: the gradient is then zero
    only where each output is 0 on every sample), and the oversized update
    just before them, if recorded, as the explosion that saturated the
    output (`_blown_before_zero`).
    """

    def _zero_streak(self, step: int, norm: float, loss: float | None) -> tuple:
        """Counts a step towards a run of zero gradients while the loss is
        high; returns (streak length, streak start)."""
        kept = max(_START_SAMPLES, self.thresholds.baseline_steps)
        if len(self._start_losses) < kept and _finite(loss):
            self._start_losses.append(loss)
        early = _median(self._early_losses)
        key = _ZERO_KEY
        if early is None and not _finite(loss):
            # No loss known in this training (a custom `train_step` whose
            # loss the hooks do not see): every gradient exactly 0 counts
            # only after what stops training, as a fitted model's can be 0
            # too (a hinge loss with every margin met).
            hit = self._trainable and norm <= _ZERO_NORM
            if hit and not self._streaks.count(key):
                self._zero_caused = self._cause_of_zero(step)
            hit = hit and self._zero_caused
        else:
            hit = (
                self._trainable
                and _finite(loss, early)
                and (
                    norm <= _ZERO_NORM
                    or (negligible(norm, loss) and not self._exploded())
                )
                and loss > _CONVERGED_LOSS
                and loss > self.thresholds.converged_loss_ratio * early
            )
        # Its own key: the per-layer vanishing rule resets its streaks.
        count, start = self._streaks.update(key, hit, step)
        if not hit:
            self._zero_losses.clear()
            self._zero_peak = 0.0
        else:
            if _finite(loss):
                self._zero_losses.append(loss)
            self._zero_peak = max(self._zero_peak, norm)
        return count, start

    def _loss_unchanging(self) -> bool:
        """Whether the zero-gradient streak's losses (`patience_steps` of
        them or more) are all exactly equal, and not those of a classifier
        whose every answer is confidently wrong (3x the loss of knowing
        nothing or over it, every batch's samples at the probability clip):
        the same loss on every batch is a loss that does not read the
        predictions (a custom loss returning a constant)."""
        losses = self._zero_losses
        if len(losses) < self.thresholds.patience_steps or len(set(losses)) > 1:
            return False
        uninformed = self.uninformed_loss
        return uninformed is None or losses[0] < _WRONG_LOSS * uninformed[0]

    def _biased_output(self, start: int) -> tuple[str, str, float] | None:
        """`output_bias` (the model's one output layer, whose own bias sets
        its sigmoid, tanh or softmax in a flat tail) when a run of zero
        gradients from `start` began at the first step: the cause, whatever
        the loss (a tanh output under hinge or MSE, a softmax under KL
        divergence)."""
        first = self._norms.first
        if self.output_bias is None or first is None or start != first[0]:
            return None
        return self.output_bias

    def _cause_of_zero(self, start: int) -> bool:
        """Whether something stopped a training whose loss is not known at
        step `start`, the first of a run of exactly-0 gradients: it is the
        first step of training, or follows a learning-rate jump up or an
        explosion reported within `_EXPLOSION_STEPS` steps, or an update
        larger than the weights within `patience_steps` (`_zero_gradients`
        names each)."""
        first = self._norms.first
        return (
            first is None
            or start == first[0]
            or self._jump_since(start, _EXPLOSION_STEPS) is not None
            or self._explosion_before(start) is not None
            or bool(self._oversized_before(start))
        )

    def _zero_gradients(self, new, step: int, norm: float, loss=None) -> None:
        """Reports every gradient zero for `patience_steps` steps in a row
        while the loss stays high: training has stopped."""
        count, start = self._zero_streak(step, norm, loss)
        floored = self._floored_outputs
        mode, layer = F.VANISHING_GRADIENTS, None
        if floored:
            mode, layer = F.DEAD_RELU, floored[0]
        if count < self.thresholds.patience_steps or (mode, layer) in self._reported:
            return
        # Outputs found extreme from the start (`StartRules`) whose loss
        # stays that high: the saturated output they cause.
        extreme = self._extreme_loss
        if extreme is not None and _median(self._zero_losses) >= extreme:
            return
        level = _median(self._zero_losses)
        zero = "exactly 0" if self._zero_peak == 0 else f"below {_ZERO_NORM:.2g}"
        if self._zero_peak > _ZERO_NORM:
            zero = (
                f"at most {self._zero_peak:.2g}, below a billionth of the "
                "square root of the loss (too small for any update to change it),"
            )
        if level is None:
            message = (
                f"The global gradient norm was {zero} for {count} steps in a row "
                f"(steps {start}-{step}; the loss is not known here, a custom "
                "`train_step`'s own): no gradient reaches any weight, so "
                "training has stopped."
            )
        else:
            message = (
                f"The global gradient norm was {zero} for {count} steps in a row "
                f"(steps {start}-{step}) while the loss stayed at about "
                f"{level:.3g} (against "
                f"{_median(self._early_losses):.3g} in the first steps): no "
                "gradient reaches any weight, so training has stopped."
            )
        if floored:
            names = ", ".join(
                f"'{name}' ({self._info[name].activation})" for name in floored
            )
            one = len(floored) == 1
            message += (
                f" The output layer{'' if one else 's'} {names} "
                f"{'is' if one else 'are'} 0, with no gradient, wherever "
                f"{'its' if one else 'their'} input is negative, and "
                f"{'was' if one else 'were'} so for every sample of these "
                f"batches: {'its' if one else 'their'} units are dead."
            )
        # With no loss known, a jump up within `_EXPLOSION_STEPS` is what
        # made this a finding (`_cause_of_zero`): named as far back.
        within = self.thresholds.patience_steps
        if level is None:
            within = max(within, _EXPLOSION_STEPS)
        change = self._rate_change
        if change is not None and start - within <= change[0]:
            message += (
                f" The learning rate jumped from {change[1]:.3g} to "
                f"{change[2]:.3g} at step {change[0]}."
            )
        # A jump up named so: the steps it made large are the likely cause.
        up = self._jump_before(start, within)
        after = self._oversized_before(start)
        if after:
            message += after
            self._blown_before_zero(new, self._last_oversized, start)
        else:
            blown = self._explosion_before(start)
            if blown is not None:
                cause = blown.step
            else:
                cause = self._jumped_before_zero(new, start)
            if cause is None and up:
                cause = self._rate_before_zero(new, start)
            if cause is None:
                cause = self._thrown_before_zero(new, start)
            if cause is not None:
                message += (
                    f" It follows the explosion of step {cause}: the steps threw "
                    "the output into its flat tails."
                )
        # No output saturates where none makes probabilities (probed: a
        # siamese network's shared encoder's dead layer, told with the
        # from_logits fix).
        probability = self.probability_output
        fix = _DEAD_OUTPUT_FIX if floored else _ZERO_FIX
        if not floored and not probability:
            fix = _STOPPED_FIX + " Lower the learning rate: a step too large can "
            fix += "throw the units there."
        if not floored and up:
            fix = _JUMP_FIX + " " + (_FROM_LOGITS_FIX if probability else _STOPPED_FIX)
        # From the first finite step seen: before any update of this training.
        if floored and start == self._norms.first[0]:
            message += " This was so from the first step, before any update."
        elif biased := self._biased_output(start):
            # Named in the message; still vanishing gradients (all of them
            # are, whatever the output's loss), not the saturated output
            # that `StartRules` tells under a loss whose gradient does not
            # vanish there.
            name, activation, bias = biased
            message += (
                " This was so from the first step, before any update: "
                f"{bias_setting(name, activation, bias)} in the flat tail for "
                "every sample, where it passes no gradient."
            )
            fix = _BIAS_FIX if activation != TANH else _TANH_BIAS_FIX
        elif start == self._norms.first[0] and self._loss_unchanging():
            message += (
                " This was so from the first step, before any update, and the "
                f"loss was exactly {level:.7g} on every batch: it does not "
                "depend on the predictions, or on the data."
            )
            fix = _LOSS_STOPPED_FIX
        elif start == self._norms.first[0]:
            message += (
                " This was so from the first step, before any update: the model "
                "as initialised passes no gradient (an output saturated by "
                "large initial weights, a large output bias or unscaled "
                "inputs, or a loss that is not differentiable in the "
                "predictions, such as one that rounds them)."
            )
            fix = _ZERO_START_FIX
        value = 1.0 if floored else self._zero_peak
        self._add(new, mode, layer, start, value, message, fix)

    def _jumped_before_zero(self, new, start: int) -> int | None:
        """Reports the last norm jump (`_jumped_norm`: `jump_factor` times
        the recent median, under the explosion limit) within
        `_EXPLOSION_STEPS` steps before a run of zero gradients from
        `start` as the explosion it ended in, when that norm was also
        `jump_factor` times the early baseline and the loss of the zero
        steps `_DIVERGE_RISE` times the loss where training began and the
        loss level just before the jump (as `_blown_before_zero` does with
        a recorded update). Not a jump after the loss had risen already: a
        time-ordered stream's new task whose saturated softmax passed no
        gradient from its first batch (JAX, seed shift 25 of
        `healthy_new_task_stream`: the loss 0.005, then 11-12.6 with
        zero gradients from step 16, one norm of 7.69 at step 19 among
        them) was told as an explosion at 19. A separable CNN
        under SGD at 0.5 with momentum (JAX): the norm 6.5 and 12.4 at
        steps 12 and 14 (24-45x its early 0.27), the loss 8.7 at step 19
        and 12-13.6 from step 21 with every gradient exactly 0 (Keras's
        cross-entropy on JAX clips the saturated softmax); on TensorFlow
        the same run explodes to NaN. Returns the jump's step when
        reported."""
        jumped, early = self._jumped_norm, self._norms.early()
        began, level = self._start(), _median(self._zero_losses)
        if jumped is None or not _finite(early, began, level):
            return None
        if (F.EXPLODING_GRADIENTS, None) in self._reported:
            return None  # Told long before: not this one's cause.
        step, norm, before = jumped
        if not start - _EXPLOSION_STEPS <= step < start:
            return None
        if norm < self.thresholds.jump_factor * early:
            return None
        if level - began < (_DIVERGE_RISE - 1) * abs(began):
            return None
        if _finite(before) and level - before < (_DIVERGE_RISE - 1) * abs(before):
            return None
        message = (
            f"The global gradient norm jumped to {norm:.3g} at step {step}, "
            f"{norm / early:.3g}x its early level of {early:.3g}, and the loss "
            f"rose from {began:.3g} where training began to about {level:.3g}, "
            + _saturated_since(start)
        )
        self._add(new, F.EXPLODING_GRADIENTS, None, step, norm, message)
        return step

    def _rate_before_zero(self, new, start: int) -> int | None:
        """Reports the learning-rate jump up named before a run of zero
        gradients from `start` (`_jump_before`, within `patience_steps`)
        as the explosion it ended in, when the loss of the zero steps is
        `_DIVERGE_RISE` times its level before the jump: the new steps threw
        the output into its flat tails, where no gradient passes, however
        little the gradient norm grew on the way (as `_jumped_before_zero`
        does with a norm that jumped). A conv autoencoder with a sigmoid
        output under MSE (JAX), Adam's rate 100x at step 200: the loss
        0.0025 before, 0.08 from step 202 (0.18 where training began) with
        every gradient under 1e-13 from step 204, every output pixel in its
        tails; on TensorFlow the same jump raised the loss over where
        training began, told by the updates. Returns the jump's step when
        reported."""
        if (F.EXPLODING_GRADIENTS, None) in self._reported:
            return None  # Told before: not this one's cause.
        step, before, after, level = self._rate_change
        now = _median(self._zero_losses)
        if not _finite(level, now) or level <= 0 or now < _DIVERGE_RISE * level:
            return None
        message = (
            f"The learning rate jumped {after / before:.3g}x, from {before:.3g} "
            f"to {after:.3g} at step {step}, and the loss rose from {level:.3g} "
            f"before it to about {now:.3g}, where every gradient has been next "
            f"to 0 since step {start} (a saturated output)" + _UNSTABLE
        )
        self._add(
            new, F.EXPLODING_GRADIENTS, None, step, after / before, message, _JUMP_FIX
        )
        return step

    def _thrown_before_zero(self, new, start: int) -> int | None:
        """Reports the early update that a run of zero gradients from
        `start` follows as the explosion it ended in, when that update was
        not recorded (`_blown_before_zero` judges one that was): the run
        began before the first `baseline_steps` steps had gradients, the
        level a jump of the norm is judged against (`_jumped_before_zero`),
        not at the first (so after a step with gradients), and the loss of
        a step before it and of the zero steps is `_DIVERGE_RISE` times the
        loss where training began (`_start`): the update before that step
        threw the output into its flat tails. An MLP under SGD at 20 in
        executions of 8 steps (JAX): the loss 1.39 at step 0, 11-13 from
        step 1 on with every gradient exactly 0 (Keras's cross-entropy on
        JAX clips the saturated softmax), the update of step 0 unrecorded
        (an execution's last step is recorded). Returns the step reported."""
        if (F.EXPLODING_GRADIENTS, None) in self._reported:
            return None  # Told before: not this one's cause.
        first = self._norms.first
        began, level = self._start(), _median(self._zero_losses)
        if first is None or not _finite(began, level) or began <= 0:
            return None
        if not first[0] < start < first[0] + self.thresholds.baseline_steps:
            return None
        high = _DIVERGE_RISE * began
        risen = [
            s
            for s, loss in sorted(self._step_losses.items())
            if first[0] < s <= start and loss >= high
        ]
        if level < high or not risen:
            return None
        step, loss = risen[0] - 1, self._step_losses[risen[0]]
        message = (
            f"The loss rose from {began:.3g} where training began to "
            f"{loss:.3g} at step {step + 1}, after the update of step {step}, "
            f"and stayed at about {level:.3g}, " + _saturated_since(start)
        )
        self._add(new, F.EXPLODING_GRADIENTS, None, step, loss / began, message)
        return step

    def _blown_before_zero(self, new, big: tuple, start: int) -> None:
        """Reports the oversized update `big` (step, layer, ratio) that a
        run of zero gradients from `start` follows as the explosion it is,
        as a NaN that follows one is (`NonFiniteRules`), when the loss of
        the zero steps is `_DIVERGE_RISE` times the loss where training
        began (`_start`) and no explosion was reported since shortly
        before: one step threw the weights so far out that the output
        saturated (a learning rate far too large from the start, as SGD at
        3 on a small transformer).
        """
        began, level = self._start(), _median(self._zero_losses)
        if not _finite(began, level) or self._explosion_before(start):
            return
        if level - began < (_DIVERGE_RISE - 1) * abs(began):
            return
        step, layer, ratio = big[:3]
        message = (
            f"The update of step {step} changed the weights of layer '{layer}' "
            f"by {ratio:.3g} times their own norm, and the loss rose from "
            f"{began:.3g} where training began to about {level:.3g}, "
            + _saturated_since(start)
        )
        self._add(new, F.EXPLODING_GRADIENTS, layer, step, ratio, message)
