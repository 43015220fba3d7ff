"""Health rules judged on every training step's global gradient norm.

The callback hands `HealthRules` each step's `SentinelEvent` (and the quiet
steps within its `alarm_bounds`); the rule family here judges that series:
exploding gradients and jumps of the norm or the learning rate
(`NormRules`, on a `norm_series.NormSeries`). The steps on which training
stops, non-finite or with every gradient zero, are judged in
`diagnostics.stop_rules`. They derive from `RuleFamily` and are mixed into
`HealthRules`, whose state (`thresholds`, `_streaks`, `_norms`, ...) they
use.
"""

from __future__ import annotations

import itertools
import math

from keras_actloss import findings as F
from keras_actloss.diagnostics.norm_series import Arrival, RateWatch, Spike
from keras_actloss.diagnostics.records import rates_mark
from keras_actloss.diagnostics.rule_support import (
    _EXPLOSION_STEPS,
    _INIT_FIX,
    _JUMP_FIX,
    _OVERFLOW_RUN_FIX,
    _RESIDUAL_FIX,
    _RESIDUAL_SUMS,
    _SCALE_FIX,
    _SPIKE_FIX,
    FIXES,
    RuleFamily,
    _finite,
    _growth,
    _median,
)
from keras_actloss.findings import Finding

# Steps in a row a norm must stay far below its recent level to be a jump.
_DROP_STEPS = 3
# How much a step over the explosion limit must exceed the one before it for
# `exploding_patience` such steps to be an explosion (one more otherwise).
_GROWTH = 1.5
# After the learning rate jumps up: the steps watched for a diverging loss,
# how many times their levels before the jump the loss must reach (for how
# many steps in a row) and the gradient norm once (`NormRules._diverging`).
_WATCH_STEPS = 10
# Loss-scale overflows in a row within `_WATCH_STEPS` of a learning-rate
# jump up that are an explosion: each halves the scale, so the third means
# gradients 4x past float16's range at the scale that fit before.
_OVERFLOW_RUN = 3
# Once an update was applied, overflows in a row that are an explosion with
# the loss of the last `_DIVERGE_RISE` times its level, and whatever the
# loss. Healthy float16 runs (MLPs with Adam or SGD, a BatchNorm CNN, an
# LSTM, an attention block; batches of 2 to 32) overflowed at most twice in
# a row after their first update (measured, both backends); a rare class
# weighted 99x in batches of 4 overflowed three in a row, its loss 1.5e4x
# its level on each (`healthy_rare_class_weighted`): one more, as the
# explosion rule of the norms asks one more step that does not grow.
_OVERFLOW_RISEN_RUN = 4
_OVERFLOW_GROWTH_RUN = 5
_DIVERGE_RISE = 3.0
# A loss `_DIVERGE_RISE` times its recent level is a jump (`_loss_jump`)
# only from this share of the loss where training began on: a fitted
# model's hard batches are 3x its small loss many times a run (a healthy
# MLP, 2048 steps of batches of 16: 30 more full recordings).
_LOSS_JUMP_SHARE = 0.25
_DIVERGE_STEPS = 3
# After such a jump the loss must also be over this share of where training
# began (`NormRules._diverged`): half of what the model had learned undone.
# A fitted MLP (loss 0.09, 1.57 at the start) whose SGD rate jumped 25x
# under momentum: 0.53, 1.55, 1.53 at 5, 9 and 13 steps on, then half of a
# layer's units dead, told only as those 55 steps later. A warm restart
# takes a fitted model's loss up from 0.001 to a few hundredths.
_UNDONE = 0.5
# ...within this many steps of the jump: a momentum optimizer's loss may
# take some to climb (the same MLP on JAX: 0.46 at 7 steps on, 3.6 at 17).
_DIVERGE_WATCH = 20
# ...or the median loss of the last this many steps over where training
# began and `_UNDONE_RISE` times its level before the jump: the jump undid
# all the model had learned, in batches too noisy to stay 3x up for 3
# steps in a row. Probed (JAX): a text classifier fitted to 0.514 (0.693
# where training began), Adam's rate 100x at step 200: the losses 0.60,
# 0.98, 0.38, 0.95, 1.67 at steps 203-207, held-out accuracy 0.92 to 0.68;
# on TensorFlow the same jump was told at step 207.
_UNDONE_STEPS = 5
_UNDONE_RISE = 1.5
# Steps in a row with the loss `_DIVERGE_RISE` times where training began
# that are a divergence with no learning-rate jump and no norm over the
# limit (`NormRules._climbing`).
_CLIMB_STEPS = 10
# ...once the last recording's largest update moved its layer's weights by
# at least this share of their norm: steps too small to throw the weights
# off leave a loss that rose with the data (time-ordered batches that get
# noisier, unshuffled: 0.001-0.003 under Adam at 1e-3, the loss 3-6x where
# training began for 10 steps while the model fitted the signal). The
# divergences it is for moved the weights 0.8-3.6x their norm a step
# (SGD at 5 on a softmax classifier). The same share tells a streak over
# the explosion limit that came with its batch (`NormRules._arrived`) from
# one the steps drive: a fitted classifier fed a new task, unshuffled, under
# Adam at 1e-3 moved its weights by 0.003 of their norm a step while its
# norm stayed 200x up; one batch of inputs 1000x the others' scale under SGD
# at 0.05 threw them by 0.31 and 0.17 on the next two steps.
_CLIMB_UPDATE = 0.05
# While the batches come in the data's order (`unshuffled_data`), each
# class or stretch that comes is new data, under updates up to this share
# of the weights' norm: a ReLU MLP on 4 classes sorted by label under Adam
# at 3e-2 (fitted to one class, its norm 1e-7, then 49.5 with the next
# class's first batch, falling back within 6 steps) moved its layers by
# 0.05-0.09 a step; the bad batch of `_CLIMB_UPDATE` threw them by 0.17
# and 0.31, the divergences by 0.8 and more.
_ORDERED_UPDATE = 0.15
# A classifier whose loss where training began is under this share of an
# uninformed prediction's began already fitted (`_informed_after_fit`).
_FITTED_START = 0.1


def _beyond(silent: float, share: float = 0.25) -> float:
    """The silent units a step must exceed to jump from `silent`: `share`
    more (a quarter), at least 2 more."""
    return silent + max(2.0, share * silent)


# How far over the last record silent units set a new one: an eighth, so
# units dying a few at a time set one every few steps near half a layer.
_RECORD_SHARE = 0.125


# A global norm at or below this times the square root of the loss is no
# gradient (`negligible`): too small for any step to change the loss within
# float32's precision (a sigmoid output with bias -30 under mean squared
# error: 5e-13 on a loss of 0.5, flat for 192 steps, was not reported). Of
# the root: under mean squared error the gradient grows as the root of the
# loss does (a diverging regression's, whose loss grew 1e12x, fell to
# 1e-9 of the loss itself). Such a step is never quiet (`alarm_bounds`);
# `ZeroGradientRules` judges it.
_NEGLIGIBLE_NORM = 1e-9


def negligible(norm: float, loss: float) -> bool:
    """Whether the global norm `norm` is negligible for the loss `loss`
    (`_NEGLIGIBLE_NORM`)."""
    return norm <= _NEGLIGIBLE_NORM * math.sqrt(abs(loss))


# Inputs after new data came at this many times the first batch's scale
# or more changed with it (`NormRules.inputs_changed`): shuffled i.i.d.
# batches of a classifier's inputs went from 1.88 to 2.06, a broken
# preprocessing step 1.37 to 30.2.
_SCALE_CHANGE = 3.0


class NormRules(RuleFamily):
    """Exploding gradients and jumps, judged on every step's global norm.

    A norm far over its early baseline and its recent level (with the loss
    rising), or over an absolute ceiling, for `exploding_patience` steps in
    a row (growing, else one more) and beyond any such step the norm came
    back down from, or one huge spike, is an explosion; a norm or learning
    rate that jumps by `jump_factor`, a gradient norm falling to exactly 0
    for two steps, or many more units than lately getting no gradient, sets
    `jumped`. Mixed into `HealthRules`.
    """

    @property
    def jump_noisy(self) -> bool:
        """Whether the last step's jump came only from a noisy series (the
        global norm's level, the silent units), not from the learning rate,
        the start of an explosion or a gradient tensor falling to 0."""
        return self.jumped and not self._jump_hard

    def alarm_bounds(self) -> tuple[float, ...]:
        """Bounds within which a step needs no judging at once: the squared
        global norm (low, high), the learning rate (low, high), the count
        of exactly-zero gradient norms (high), the silent units (high) and
        the loss (high, `_loss_high`).

        A step outside them may start an explosion or a jump
        (`observe_step` decides); one inside would be judged normal. Before
        the baseline and the recent level exist, every step is outside.
        """
        t = self.thresholds
        early, recent = self._norms.early(), self._norms.recent()
        if early is None or recent is None or self._broken():
            return (0.0,) * 7
        if self._watch or self._spike or self._climb or self._rise_streak:
            return (0.0,) * 7  # Their steps' losses are watched.
        # `jump_factor` times the recent median: the steps after such a norm
        # are watched (`_spike_thrown`); a jump over every recent norm is
        # also one over the median.
        high = min(t.jump_factor * recent, t.exploding_growth * early, t.exploding_norm)
        low = recent / t.jump_factor
        loss = self._norms.recent_loss()
        if loss is not None and math.isfinite(loss):
            # Twice the negligible norm of the recent loss: one of a loss
            # that fell since is judged too.
            low = max(low, 2 * _NEGLIGIBLE_NORM * math.sqrt(abs(loss)))
        rate = rates_mark(self._last_rates or [self._last_rate])
        if rate is None or not math.isfinite(rate) or rate <= 0:
            rates = (0.0, math.inf) if rate == 0 else (0.0, 0.0)
        else:
            # Just inside the jump (a factor of exactly jump_factor jumps).
            rates = (rate / t.jump_factor * 1.001, rate * t.jump_factor / 1.001)
        loss_high = self._loss_high() / 1.001  # Just inside, as above.
        # Just inside the norm bounds too, so a borderline step is judged.
        return (
            low * low * 1.001,
            high * high / 1.001,
            *rates,
            self._zero_level(),
            self._silent_limit(),
            loss_high,
        )

    def _loss_high(self) -> float:
        """The loss a step may have and be no jump (`_loss_jump`): under
        `_DIVERGE_RISE` times the recent level, or under `_LOSS_JUMP_SHARE`
        of where training began (a fitted model's loss of 0.001 thrice on a
        hard batch undoes nothing); infinite with no positive level."""
        recent, start = self._norms.recent_loss(), self._start()
        if not (_finite(recent, start) and recent > 0 and start > 0):
            return math.inf
        return max(_DIVERGE_RISE * recent, _LOSS_JUMP_SHARE * start)

    def _loss_jump(self, loss) -> None:
        """Flags (a noisy jump, `loss_jumped`) the second step in a row
        whose loss is over `_loss_high` (`_DIVERGE_RISE` times the recent
        level), when nothing else did: something changed the model or its
        data (weights thrown into saturation, a shift in the data) that the
        gradient norm may not show (saturated units pass little gradient).
        One such step is a hard batch, as near convergence one in a few
        dozen is. The callback records the next steps in full (a burst,
        rate-limited as noisy ones are, apart from the others)."""
        high = _finite(loss) and loss >= self._loss_high()
        self._high_losses = self._high_losses + 1 if high else 0
        if self._high_losses == 2 and not self.jumped:
            self.jumped = self.loss_jumped = True

    def _silent_limit(self) -> float:
        """Silent units a step may have and wait (`alarm_bounds`): up to a
        quarter more (at least 2 more) than the most of the recent steps,
        and up to an eighth more (at least 2) than the last record
        (`_silent_mark`): units falling silent a few at a time, too slowly
        for the recent steps to show a jump, set a new record every few
        steps (a jump after the first 32 steps; `_zeros_jump`)."""
        return min(self._spike_limit(), self._record_limit())

    def _spike_limit(self) -> float:
        """Silent units over this are a spike: a quarter (at least 2) over
        the most of the recent steps."""
        return _beyond(max(self._silent_counts, default=0))

    def _record_limit(self) -> float:
        """Silent units over this set a new record: an eighth (at least 2)
        over the last one."""
        return _beyond(self._silent_mark, _RECORD_SHARE)

    def _zero_level(self) -> int:
        """The most exactly-zero gradient norms that two recent steps in a
        row both had (0 before two steps). One step's zeros can be a batch
        that an output head fits exactly (its loss, and so its gradients,
        exactly 0 where its probabilities round to 1); a layer that died
        stays at 0."""
        counts = self._zero_counts
        pairs = zip(counts, itertools.islice(counts, 1, None))
        return max(map(min, pairs), default=0)

    def _zeros_jump(self, norm: float, zeros: int, silent: int = 0) -> None:
        """Flags a step that, like the step before it, has more exactly-zero
        gradient norms than two recent steps in a row had (`_zero_level`),
        or many more silent units: a layer, or many of its units, fell
        silent (they died, or a layer before them stopped passing a
        signal), whatever the global norm does, since the layers still
        learning can keep it level. A step with no gradient (or a NaN) says
        nothing of its layers: it is left out; so are the silent units of
        a step far below its recent level (a batch the model gets right,
        whose small gradients underflow), but not its zero norms, which
        count two steps in a row: a GAN's discriminator whose ReLU layers
        died at once took the global norm 50x down with 11 gradients
        exactly 0 from that step on, a jump missed for 12 steps."""
        if not (norm > 0 and math.isfinite(norm)):
            return
        counts, silents = self._zero_counts, self._silent_counts
        if counts and min(zeros, counts[-1]) > self._zero_level():
            self.jumped = self._jump_hard = True
        recent = self._norms.recent()
        if recent is not None and norm * self.thresholds.jump_factor <= recent:
            counts.append(zeros)
            return
        spike = bool(silents) and silent > self._spike_limit()
        record = silent > self._record_limit()
        if record:
            self._silent_mark = silent
        # A new record (by an eighth) once 32 steps set the level (the
        # counts rise at first, as training finds its sparsity): a few dozen
        # at most in a run, however spiky the counts, so never rate-limited
        # (a hard jump).
        record = record and len(silents) == silents.maxlen
        if spike or record:
            self.jumped = True
            self._jump_hard = self._jump_hard or record
        counts.append(zeros)
        silents.append(silent)

    def _note_rate(self, rate: float | None, rates: tuple | None = None) -> None:
        """Notes a step's learning rate: the last, and the first positive
        one (`_warmed_up`); and `rates`, each optimizer's when the step
        applied several (`SentinelEvent.learning_rates`; None: not known,
        the last stay)."""
        self._last_rate = rate
        if rates is not None:
            self._last_rates = tuple(rates)
        if self._first_rate is None and _finite(rate) and rate > 0:
            self._first_rate = rate

    def _warmed_up(self) -> bool:
        """Whether the learning rate has risen `jump_factor` times over its
        first positive value, at once or step by step (a warm-up)."""
        first, rate = self._first_rate, self._last_rate
        return _finite(first, rate) and rate >= self.thresholds.jump_factor * first

    def _rate_jump(
        self, step: int, rate: float | None, rates: tuple | None = None
    ) -> None:
        """Flags a learning rate that changed by `jump_factor` in one step:
        the step's (its first optimizer's), or, when the step applied
        several optimizers, any one's (`rates`, in the order of the last
        step's, the first's first): a GAN's generator's rate is not its
        discriminator's. The largest change is the one noted. The loss
        noted is the first optimizer's (the first loss a step scales): a
        later one's jump is watched knowing that its own loss is not
        (`RateWatch.own_loss`)."""
        changes = [(self._last_rate, rate)]
        if rates is not None and len(rates) == len(self._last_rates):
            changes += zip(self._last_rates, rates)
        self._note_rate(rate, rates)
        factor = self.thresholds.jump_factor
        jumps = [
            (max(new / last, last / new), k, last, new)
            for k, (last, new) in enumerate(changes)
            if _finite(new, last)
            and new > 0
            and last > 0
            and (new >= factor * last or last >= factor * new)
        ]
        if not jumps:
            return
        _, k, last, rate = max(jumps)
        # Changes 0 and 1 are the step's own rate (the first optimizer's),
        # whose loss is the one noted; with losses of their own (a GAN's),
        # that loss is one network's, which rises as the other learns.
        first = k < 2 and not self.separate_losses
        self._rate_index = k
        self.jumped = self._jump_hard = True
        series = self._norms
        levels = (series.recent(), series.recent_loss())
        self._rate_change = (step, last, rate, levels[1])
        if rate > last:
            self._rate_raised = True
            self._watch = RateWatch(step, (last, rate), *levels, own_loss=first)

    def _diverging(self, new, step: int, norm: float, loss=None) -> None:
        """Reports a loss that stays `_DIVERGE_RISE` times its level, and
        over `_UNDONE` of its level in the first steps of training, for
        `_DIVERGE_STEPS` steps in a row within `_DIVERGE_WATCH` steps of a
        learning-rate jump up, once the gradient norm reached
        `_DIVERGE_RISE` times its level
        since: training diverges with the new step size (normalization can
        hold the norm below the explosion limit). A warm restart raises a
        trained model's loss for a while, not above where training began;
        every gradient 0 after the jump is `ZeroGradientRules`'. Not when
        the loss noted is not the jumped optimizer's own
        (`RateWatch.own_loss`; with `separate_losses` none is): a GAN's
        discriminator's loss rises as its generator catches up after both
        rates restart; the updates judge such a jump."""
        watch = self._watch
        if watch is None or step <= watch.step:
            return
        if step > watch.step + _DIVERGE_WATCH:
            self._watch = None
            return
        if _finite(loss):
            watch.losses.append(loss)
            if watch.peak is None or loss > watch.peak[0]:
                watch.peak = (loss, step)
        if watch.loss is None or not watch.own_loss:
            return  # Still watched for its updates.
        watch.norm_up = watch.norm_up or (
            watch.norm is not None and norm >= _DIVERGE_RISE * watch.norm
        )
        watch.run = watch.run + 1 if self._diverged(loss) else 0
        if watch.run == 1:
            watch.start = step
        undone = self._undone(watch)
        if (watch.run < _DIVERGE_STEPS and undone is None) or not watch.norm_up:
            return
        before, after = watch.rates
        early = _median(self._early_losses)
        jumped = (
            f"after the learning rate jumped from {before:.3g} to {after:.3g} at "
            f"step {watch.step}"
        )
        if watch.run >= _DIVERGE_STEPS:
            start, value = watch.start, loss
            message = (
                f"The loss stayed at {_DIVERGE_RISE:g}x or more its level of "
                f"{watch.loss:.3g} for {watch.run} steps (steps {watch.start}-"
                f"{step}, now {loss:.3g}) {jumped} ({loss / early:.2g}x its "
                f"{early:.3g} at the start of training, with the gradient norm "
                f"up {_DIVERGE_RISE:g}x): the steps are too large and training "
                "diverges."
            )
        else:
            start, value = step - _UNDONE_STEPS + 1, undone
            message = (
                f"The median loss of steps {start}-{step} was {undone:.3g} "
                f"{jumped}: {undone / watch.loss:.2g}x its level of "
                f"{watch.loss:.3g} before the jump and over its {early:.3g} at "
                "the start of training, with the gradient norm up "
                f"{_DIVERGE_RISE:g}x: the steps are too large, and they undid "
                "what the model had learned."
            )
        self._add(new, F.EXPLODING_GRADIENTS, None, start, value, message)
        self._watch = None

    def _undone(self, watch: RateWatch) -> float | None:
        """The median loss of the last `_UNDONE_STEPS` steps at the new rate
        of `watch` when it is over where training began (the median loss of
        its first steps) and `_UNDONE_RISE` times the level before the jump
        (a positive one), else None."""
        recent = watch.losses[-_UNDONE_STEPS:]
        early, level = _median(self._early_losses), watch.loss
        if len(recent) < _UNDONE_STEPS or not _finite(early, level) or level <= 0:
            return None
        median = _median(recent)
        return median if median > early and median >= _UNDONE_RISE * level else None

    def _spike_thrown(self, new, step: int, loss) -> None:
        """Reports a step over the explosion limit (`_spike`, the first of
        its streak), or one under it `jump_factor` times the recent median
        norm, after which the loss of each of the next
        `_DIVERGE_STEPS` steps stayed `_DIVERGE_RISE` times its level
        before it and above where training began (`_risen`): that one
        step's update threw the weights off, however soon the norm came
        back under the limit. One batch of inputs 1000x the others' scale
        at step 150 of an SGD MLP: the norm 1e3x its level at that step,
        3e2x at the next, then 60-70x (under the limit, 100x); the loss of
        the next batches 1.9e3, 96, 88 against 0.45, still 10x 20 steps on,
        and a fifth of a layer's units dead. A fitted ResNet without
        normalization under SGD at 0.02 with momentum (JAX): the norm 42 at
        step 85, 40x its recent level and 20x its early one (under the
        limit), the loss from 0.16 to 8.7-10.9 on the next three steps, then
        at chance for good, its ReLUs dying. A heavy batch of a healthy run
        (a rare class weighted 99x) leaves the loss of the next ones where
        it was. Not a step that came with new data whose updates since were
        small (`_new_data`): the batches after it are new too."""
        spike = self._spike
        if spike is None or step <= spike.step:
            return
        if not self._risen(loss, spike.loss):
            self._spike = None
            return
        spike.risen.append((loss, step))
        if len(spike.risen) < _DIVERGE_STEPS:
            return
        self._spike = None
        if self._new_data(spike.step):
            return
        peak, at = max(spike.risen)
        early = _median(self._early_losses)
        message = (
            f"The global gradient norm jumped to {spike.norm:.3g} at step "
            f"{spike.step}, {spike.norm / spike.recent:.3g}x its recent level "
            f"of {spike.recent:.3g}, and the loss of each of the "
            f"{len(spike.risen)} steps after it stayed at {_DIVERGE_RISE:g}x or "
            f"more its level of {spike.loss:.3g} before it (up to {peak:.3g} at "
            f"step {at}; {early:.3g} where training began): the update of that "
            "one step threw the weights off"
        )
        cause, fix = self._spike_cause(
            spike.step,
            _WATCH_STEPS,
            ", as a batch far from the others' scale (outliers, corrupted or "
            "unscaled values) or a step too large for it does.",
        )
        message += cause
        self._add(
            new, F.EXPLODING_GRADIENTS, None, spike.step, spike.norm, message, fix
        )

    def _spike_cause(self, step: int, within: int, batch: str) -> tuple[str, str]:
        """The end of a one-step spike's message and its fix: within
        `within` steps after a learning-rate jump up, the jump, which made
        the step that large (`_jump_before`), with the rate's fix; else
        `batch` (the sentence's end naming a batch unlike the others) with
        the batch's fix, unless the model's set-up that `check_model` told
        is the likely cause (`_told_cause`: a linear output under a loss
        that takes probabilities, whose clipped outputs pass gradients up
        to 1e7 times the error), which `_add` names with its fix: the
        sentence ends there."""
        jumped = self._jump_before(step, within)
        if jumped:
            return "." + jumped, _JUMP_FIX
        if self._told_cause(F.EXPLODING_GRADIENTS, step, F.FAILURE):
            return ".", _SPIKE_FIX
        return batch, _SPIKE_FIX

    def _runaway(self, step: int, norm: float, loss) -> None:
        """Notes a global norm that grew `sqrt(jump_factor)` times or more
        at each of the last two steps in a row with the loss rising at
        both (`_runaway_at`): an explosion under way when that step's
        recorded update changed most layers by more than their own norm
        (`_runaway_updates`), whatever the baseline (it can begin at the
        first step, where the baseline is being made of those very steps).
        A Gaussian log-likelihood regressor fitted with Adam, trained on
        with SGD at 0.01 and momentum 0.9: the norm 16.9, 181 and 1650 at
        its first three steps, its loss -1.34, 4.29 and 233, each layer's
        update at step 2 1.2-3.6 times its weights, then the loss at 4-11
        (never back under 0) and half a layer dead. The loss is compared by
        its order only, which no constant added to it changes. Not from
        the norms and losses alone, however fast they grow: batches do that
        too, of a new task in a time-ordered stream (0.056, 0.78 and 11.4,
        the loss 0.001, 0.013 and 11.3, the updates 0.3-0.7% of the
        weights), or of a converged model whose loss on most batches is 0
        (the norm from 1e-10 to 5 in two steps). Not beyond a step the norm
        came back down from (heavy-tailed batches, `NormSeries.recovered`)."""
        steps = [*self._last_steps, (step, norm, loss)]
        self._last_steps.append((step, norm, loss))
        self._runaway_at = None
        if len(steps) < 3 or self._exploded():
            return
        (s0, n0, l0), (s1, n1, l1), (s2, n2, l2) = steps
        low = math.sqrt(self.thresholds.jump_factor)
        if (
            (s1, s2) != (s0 + 1, s0 + 2)
            or not _finite(n0, l0, l1, l2)
            or not (0 < low * n0 <= n1 and low * n1 <= n2 and l0 < l1 < l2)
            or n2 <= self._norms.recovered
        ):
            return
        message = (
            f"The global gradient norm grew {n1 / n0:.3g}x at step {s1} and "
            f"{n2 / n1:.3g}x at step {s2} ({n0:.3g}, {n1:.3g}, {n2:.3g}) while "
            f"the loss rose ({l0:.3g}, {l1:.3g}, {l2:.3g})"
        )
        self._runaway_at = (s2, s1, norm, message)

    def _runaway_updates(self, new, stats) -> None:
        """Reports the runaway noted at this recording's step (`_runaway`)
        when the step's update changed most layers (with update ratios) by
        more than `exploding_update_ratio` times their norm."""
        noted, self._runaway_at = self._runaway_at, None
        if noted is None or noted[0] != stats.step or self._exploded():
            return
        limit = self.thresholds.exploding_update_ratio
        ratios = [ls.update_ratio for ls in stats.layers if _finite(ls.update_ratio)]
        over = [r for r in ratios if r > limit]
        if not ratios or 2 * len(over) < len(ratios):
            return
        _, first, norm, message = noted
        message += (
            f", and the update of step {stats.step} changed {len(over)} of "
            f"{len(ratios)} layers by more than {limit:g}x their own norm (up to "
            f"{max(over):.3g}x): each step makes the next larger; the "
            "gradients are exploding and training diverges."
        )
        self._add(new, F.EXPLODING_GRADIENTS, None, first, norm, message)

    def _climb_step(self, step: int, norm: float, loss) -> bool:
        """Counts a step towards a run of losses `_DIVERGE_RISE` times the
        loss where training began (`_climb`; a loss that starts at or under
        0 has no such multiple) with gradients still flowing; returns
        whether the run is `_CLIMB_STEPS` long.

        Not while the median of the first `baseline_steps` losses is that
        multiple of the start: the start (one batch of 32 or more) was then
        an easy batch, or the loss rose at once (an explosion's, judged by
        the other rules), no level to climb from. A step whose norm fell
        `jump_factor` times under the early baseline ends the run: a loss
        stuck high with (almost) no gradient is `ZeroGradientRules`' (a
        saturated or dead output), or vanishing gradients.
        """
        start, early = self._start(), _median(self._early_losses)
        baseline = self._norms.early()
        flowing = baseline is None or norm * self.thresholds.jump_factor >= baseline
        high = (
            flowing
            and _finite(start, loss, early)
            and start > 0
            and early < _DIVERGE_RISE * start <= loss
        )
        if not high:
            self._climb = []
            return False
        self._climb.append((step, loss))
        return len(self._climb) >= _CLIMB_STEPS

    def _climbing(self, new, step: int, norm: float, loss) -> None:
        """Reports a loss that stayed `_DIVERGE_RISE` times where training
        began for `_CLIMB_STEPS` steps in a row (`_climb_step`), when no
        explosion was reported: training diverges with a step size too
        large, though no gradient norm grew over the limit (a softmax
        output fed probabilities, under SGD at 5: the loss from 2.4 to 7-12
        from step 17, the norm at 1-3 throughout, the logits in the
        thousands, until its gradients are exactly 0). Not when the last
        recorded updates were small (`_CLIMB_UPDATE`): the loss rose with
        the batches, not with the steps; when recorded before the run
        began (recordings far apart late in a long run), the run goes on
        and asks for recordings (`jumped`, a noisy jump) to judge it by. A
        healthy run's loss falls below where it began; one batch's loss far
        over it does not last (a rare class weighted 99x). Nor while the
        batches come in the data's order (`unshuffled_data`): each batch's
        loss is that of its own part of the data (probed: sin(2x) fitted on
        x sorted, Adam 1e-2: the loss from 0.019 on the first batches to
        0.16-0.6 at steps 40-49 as x moved on)."""
        if not self._climb_step(step, norm, loss) or self._exploded():
            return
        if self.data_ordered:
            self._climb = []
            return
        update = self._last_update
        if update is not None and update[2] < _CLIMB_UPDATE:
            if update[0] >= self._climb[0][0]:
                self._climb = []
            else:
                self.jumped = True
            return
        first = self._climb[0][0]
        losses = [value for _, value in self._climb]
        start, early = self._start(), self._norms.early()
        level = "" if early is None else f", against {early:.3g} at first"
        message = (
            f"The loss stayed at {_DIVERGE_RISE:g}x or more where training began "
            f"({start:.3g}) for {len(losses)} steps in a row (steps {first}-{step}, "
            f"{min(losses):.3g}-{max(losses):.3g}), while the gradient norm did "
            f"not explode ({norm:.3g}{level}): training diverges, the steps are "
            "too large."
        )
        self._add(new, F.EXPLODING_GRADIENTS, None, first, max(losses), message)
        self._climb = []

    def _overflowing(self, new, step: int, loss=None) -> None:
        """Reports loss-scale overflows in a row (steps whose update the
        optimizer skipped, counted in `_overflows`; the step count stays at
        `step`) as an explosion: under mixed precision the diverging
        gradients leave float16's range before any norm can grow.

        `_OVERFLOW_RUN` of them within `_WATCH_STEPS` steps of a
        learning-rate jump up; `_OVERFLOW_RISEN_RUN` with the loss of the
        last (`loss`, of the forward pass, which loss scaling does not
        touch) `_DIVERGE_RISE` times its recent level;
        `_OVERFLOW_GROWTH_RUN` whatever the loss. Only once an update was
        applied: before it the scale is still searching down from its
        initial value (a run that never ends there is
        `_overflowed_from_start`'s); and not within `_EXPLOSION_STEPS` of an
        explosion reported already (its consequence).
        """
        count = self._overflows
        if count < _OVERFLOW_RUN:
            return
        skipped = (
            f"The {count} batches in a row from step {step} overflowed float16 "
            "under loss scaling (each update skipped, the scale halved each time)"
        )
        watch = self._watch
        if watch is not None and watch.step <= step <= watch.step + _WATCH_STEPS:
            before, after = watch.rates
            message = (
                f"{skipped} after the learning rate jumped from {before:.3g} to "
                f"{after:.3g} at step {watch.step}: the gradients exploded with "
                "the new step size."
            )
            self._add(new, F.EXPLODING_GRADIENTS, None, watch.step, math.inf, message)
            self._watch = None
            return
        if self._norms.first is None or self._explosion_before(step):
            return
        level = self._norms.recent_loss()
        if level is None:
            level = _median(self._early_losses)
        if count >= _OVERFLOW_RISEN_RUN and self._risen(loss, level):
            what = (
                f"while the loss rose to {loss:.3g}, {loss / level:.3g}x its "
                f"recent level of {level:.3g}"
            )
        elif count >= _OVERFLOW_GROWTH_RUN:
            what = f"after updates had been applied at a scale {2**count:g}x larger"
        else:
            return
        # The update of the last step applied, when recorded larger than
        # the weights, is the cause; else the step or the batches' scale.
        update = self._last_update
        last = self._norms.last_step
        if (
            update
            and update[0] == last
            and update[2] > self.thresholds.exploding_update_ratio
        ):
            cause = (
                f", after the update of step {last} changed the weights of layer "
                f"'{update[1]}' by {update[2]:.3g} times their own norm: the "
                "gradients exploded."
            )
            fix = FIXES[F.EXPLODING_GRADIENTS]
        else:
            cause = (
                ": the gradients exploded (too large a step, or batches of a "
                "larger scale than the earlier ones)."
            )
            fix = _OVERFLOW_RUN_FIX
        self._add(
            new,
            F.EXPLODING_GRADIENTS,
            None,
            step,
            math.inf,
            f"{skipped} {what}{cause}",
            fix,
        )

    def _diverged(self, loss) -> bool:
        """Whether `loss` is `_DIVERGE_RISE` times its level before the
        watched jump (`_watch`) and above `_UNDONE` of where training
        began."""
        return self._risen(loss, self._watch.loss, _UNDONE)

    def _ceiling_only(self, norm: float, loss) -> bool:
        """Whether `norm` is over the absolute ceiling while `loss` (known)
        stays under `_DIVERGE_RISE` times its recent level (`_risen`)."""
        recent = self._norms.recent_loss()
        return (
            norm > self.thresholds.exploding_norm
            and _finite(loss, recent)
            and not self._risen(loss, recent)
        )

    def _risen(self, loss, level, share: float = 1.0) -> bool:
        """Whether `loss` is `_DIVERGE_RISE` times `level` and above where
        training began (the median loss of its first steps; above `share`
        of it, for a positive loss). A level at or
        under 0 (a loss that goes negative: cosine similarity, a Gaussian
        log-likelihood) has no such multiple: back above where training
        began is the rise, the training since undone (a cosine-similarity
        regressor at -0.92 whose learning rate jumped 500x: +0.01 at the
        next steps, against -0.04 at the start; told only with 1 added to
        its loss)."""
        early = _median(self._early_losses)
        if not _finite(loss, level, early):
            return False
        if level <= 0:
            return level < early < loss
        return loss - level >= (_DIVERGE_RISE - 1) * level and loss > share * early

    def _limit(self) -> float:
        """Global norm above which a step counts towards an explosion, from
        the early baseline (before the recent level is consulted)."""
        t = self.thresholds
        early = self._norms.early()
        if early is None:
            return t.exploding_norm
        return min(t.exploding_growth * early, t.exploding_norm)

    def _exploding_norm(self, new, step: int, norm: float, loss=None) -> None:
        t = self.thresholds
        series = self._norms
        over = norm > self._limit()
        if over:
            self._surged = step
        recent = None
        rising = self._loss_rising(loss) and not self._informed_after_fit(loss)
        if over and norm <= t.exploding_norm:
            # Beyond the early baseline: the norm may have drifted up with
            # healthy training; an explosion is beyond its recent level too,
            # and the loss goes up with it.
            recent = series.recent()
            over = rising and (recent is None or norm > t.exploding_growth * recent)
        # No higher than steps the norm came back down from: heavy-tailed
        # batches (a rare class weighted 100x in batches of 4), until it
        # goes beyond them.
        over = over and norm > series.recovered
        key = (F.EXPLODING_GRADIENTS, None)
        count, start = self._streaks.update(key, over, step)
        self._note_arrival(step, norm, loss)
        early = series.early()
        spike = (
            early is not None
            and norm >= t.exploding_spike_growth * early
            and (rising or norm > t.exploding_norm)
        )
        # Heavy-tailed batches also come two in a row by chance, at about
        # the same norm: `exploding_patience` steps over the limit are an
        # explosion when the last one grew (`_GROWTH`), one more otherwise.
        grew = count < 2 or norm >= _GROWTH * series.last
        streak = count >= t.exploding_patience + (not grew)
        if streak and norm <= t.exploding_norm:
            streak = not self._new_data(start, count)
        if spike and norm <= t.exploding_norm:
            # As far over the early norm, the same: a loss weighted 1e-4 on
            # the first 10 batches (a warm-up of its weight), then 1; the
            # norm 1e4x its early level and the updates 0.4-1% of the
            # weights, a healthy run.
            spike = not self._new_data(start if count else step, count or 1)
        if spike or streak:
            message = (
                f"The global gradient norm reached {norm:.3g} at step {step}"
                f"{_growth(norm, early)}: the gradients are exploding and "
                "training diverges."
            )
            fix = None
            if series.huge_from_start(t.exploding_norm):
                # Over the ceiling from the first step seen: never healthy.
                first_step, first = series.first
                message = (
                    f"The global gradient norm was already {first:.3g} at the "
                    f"first step (step {first_step}), beyond any healthy "
                    f"model's, and reached {norm:.3g} at step {step}: the "
                    "gradients explode from the start, so "
                )
                weights = self._weights_cause()
                if weights:
                    message += weights
                    fix = _INIT_FIX
                    sums = self.residual_sums
                    if sums >= _RESIDUAL_SUMS:
                        message += (
                            f" The model adds {sums} residual branches to its "
                            "stream and has no normalization layer: each sum "
                            "adds a branch's variance to the stream's, so even "
                            "with Keras's default initialisation its scale "
                            "grows block after block (about 2^(n/2) times "
                            "over n blocks)."
                        )
                        fix = _RESIDUAL_FIX
                else:
                    message += (
                        "the scale of the data or of the initial weights is the "
                        "likely cause (unscaled inputs or regression targets), "
                        "not the step size alone."
                    )
                    fix = _SCALE_FIX
            elif self._ceiling_only(norm, loss):
                # Over the ceiling with the loss under 3x its recent level:
                # Adam's bounded steps fitting unscaled targets (the norm
                # grows with the weights), not a divergence.
                message = (
                    f"The global gradient norm reached {norm:.3g} at step {step}"
                    f"{_growth(norm, early)}, beyond any healthy model's, while "
                    f"the loss did not blow up ({loss:.3g}, against "
                    f"{series.recent_loss():.3g} lately): "
                )
                if self._weights_cause():
                    # A classifier on ids or standardized inputs has no data
                    # of that scale (probed: a token classifier's tanh RNNs,
                    # their kernels 8x mid-run: 7.9e8).
                    inputs = "ids looked up" if self._looked_up() else "standardized"
                    message += (
                        f"a classifier whose inputs are {inputs} has no data "
                        "of that scale, so its weights grew far past what they "
                        "were (steps too large, or weights edited or loaded), "
                        "and the gradients with them."
                    )
                    fix = FIXES[F.EXPLODING_GRADIENTS]
                else:
                    message += (
                        "gradients this large come from the scale of the data "
                        "(unscaled regression targets or inputs), not from a "
                        "step size that diverges."
                    )
                    fix = _SCALE_FIX
            elif spike and count == 1:
                # One step, the steps before it normal: nothing diverges
                # yet (a converged regressor's batch of inputs 1000x the
                # others' under Adam: the loss back within 5 steps, 2-4x
                # its level after).
                cause, fix = self._spike_cause(
                    step,
                    _EXPLOSION_STEPS,
                    ": a batch far from the others' scale (outliers, corrupted "
                    "or unscaled values) or a step far too large, whose update "
                    "can throw the weights off.",
                )
                message = (
                    f"The global gradient norm jumped to {norm:.3g} at step "
                    f"{step}{_growth(norm, early)} in one step{cause}"
                )
            else:
                jumped = self._jump_before(start)
                if jumped:
                    message += jumped
                    fix = _JUMP_FIX
            self._add(new, F.EXPLODING_GRADIENTS, None, start, norm, message, fix)
        if not over:
            if recent is None:
                recent = series.recent() if series.last is not None else None
            self._norm_jump(norm, recent, series.recent_peak())
            level = series.spike_level()
            up = _finite(level, recent) and norm >= t.jump_factor * recent
            if up:
                self._jumped_norm = (step, norm, level)
            # Under the explosion limit, its update may throw the weights
            # off all the same (`_spike_thrown`); not while new data comes
            # (`_arrival`: a batch whose own loss rose with it, and the
            # steps after it while the norm stays up), whose loss stays high
            # while the model adapts (a fitted classifier fed a new task,
            # unshuffled: the norm 13-16x its recent level, the loss from 0.1
            # to 2.2-2.8 with its batches).
            if up and self._spike is None and self._arrival is None:
                self._spike = Spike(step, norm, recent, level)
            series.add_normal(norm, loss)
        else:
            series.add_over(norm)
            if count == 1:
                self.jumped = self._jump_hard = True
                # The next steps' loss is watched (`_spike_thrown`).
                level, before = series.spike_level(), series.recent()
                if _finite(level, before):
                    self._spike = Spike(step, norm, before, level)
        series.add(step, norm)

    def _note_arrival(self, step: int, norm: float, loss) -> None:
        """Keeps `_arrival`: set at a step that came with new data
        (`_arrived`), it stays while the norm stays over `jump_factor`
        times the level before it (the batches are still new: the streaks
        over the explosion limit of those steps are judged by it), and ends
        at a step under that, or a quiet one (`HealthRules.observe_quiet`)."""
        arrival = self._arrival
        jump = self.thresholds.jump_factor
        if arrival is not None and norm <= jump * arrival.level:
            self._arrival = arrival = None
        if arrival is None and self._arrived(step, norm, loss):
            self._arrival = Arrival(step, norm, loss, self._norms.recent())

    def _arrived(self, step: int, norm: float, loss) -> bool:
        """Whether a step came with new data: its norm `jump_factor` times
        the recent level and its loss `_risen` over the recent level, after
        a step at the recent level (no norm climbing to it) and with no
        learning-rate jump in the `_WATCH_STEPS` before it. No step before
        it can have thrown the weights: its batch is unlike the recent ones
        (a bad batch, or new data in a time-ordered stream)."""
        series = self._norms
        before, recent = series.last, series.recent()
        change = self._rate_change
        jump = self.thresholds.jump_factor
        return (
            _finite(before, recent)
            and before <= jump * recent <= norm
            and (change is None or step > change[0] + _WATCH_STEPS)
            and self._risen(loss, series.recent_loss())
        )

    def wants_inputs(self) -> bool:
        """Whether the next full recording's input scale is asked for: new
        data came (`_arrival`) and no recording since was compared, or
        one was, far from the first batch's (`_scale_changed`)."""
        arrival = self._arrival
        fresh = arrival is not None and not arrival.inputs_seen
        return fresh or self._scale_changed is not None

    def inputs_changed(
        self, step: int, scale: float | None, first: float | None
    ) -> list[Finding]:
        """Compares the input scale of the recording at `step` (`scale`,
        `_callback_support.input_scale`) after new data came (`_arrival`)
        with the first recorded batch's (`first`): inputs standardized at
        first and far from it now (over `thresholds.input_scale`, and
        `_SCALE_CHANGE` times the first) at that recording and the next
        changed with the data (a preprocessing step that broke, values in
        another unit), which the jump of the norm tells; an
        `unstandardized_inputs` warning. One batch far from the rest is
        no change of the data: heavy-tailed inputs in batches of 2
        (log-normal scales) had one at 26.7 against the first's 1.03,
        the model training well. Returns the new findings."""
        arrival, limit = self._arrival, self.thresholds.input_scale
        changed = _finite(scale, first) and first <= limit < scale
        changed = changed and scale >= _SCALE_CHANGE * first
        if self._scale_changed is None:
            if arrival is None or arrival.inputs_seen:
                return []
            arrival.inputs_seen = True
            if changed:
                self._scale_changed = (arrival, scale, step)
            return []
        arrival, before, seen = self._scale_changed
        self._scale_changed = None
        if not changed:
            return []
        scale = min(scale, before)
        new: list[Finding] = []
        message = (
            f"From step {arrival.step} the inputs are far from standardized (a "
            f"feature's mean or spread is {scale:.3g} or more at steps {seen} and "
            f"{step}, against {first:.3g} on the first recorded batch), and the "
            "global gradient "
            f"norm jumped {arrival.norm / arrival.level:.3g}x with them at step "
            f"{arrival.step}: the data changed (a preprocessing step that "
            "broke, values in another unit), and the model now learns from "
            "inputs of another scale."
        )
        self._add(
            new,
            F.UNSTANDARDIZED_INPUTS,
            None,
            arrival.step,
            scale,
            message,
            severity=F.WARNING,
        )
        return self._emit(new)

    def _new_data(self, start: int, count: int | None = None) -> bool:
        """Whether the steps over the limit from `start` are new data the
        model adapts to, not an explosion: new data came with its first
        step or one before it (`_arrival`), and every update recorded since
        moved a layer's weights by under `_CLIMB_UPDATE` of their norm,
        steps too small to drive the norm up or throw the weights off
        (`_ORDERED_UPDATE` while the batches come in the data's order:
        each class or stretch is new data when it comes). Before any such
        recording, a streak of `count` steps waits one step past
        `exploding_patience` for the burst that jumps start to record one
        (without recordings it is judged as any other)."""
        arrival = self._arrival
        if arrival is None or start < arrival.step:
            return False
        if arrival.update is None:
            return count is not None and count <= self.thresholds.exploding_patience
        bound = _ORDERED_UPDATE if self.data_ordered else _CLIMB_UPDATE
        return arrival.update < bound

    def _weights_cause(self) -> str:
        """The end of the message of an explosion from the first step when
        the data is not its cause: the model a one-output classifier under
        cross-entropy (`uninformed_loss` known: no regression targets) and
        its inputs standardized (the recorded ones within `input_scale`) or
        ids that an embedding looks up (its first layer's class an
        `Embedding`: their scale does not reach the model); else "". A
        SimpleRNN classifier on standardized inputs whose recurrent kernel
        is drawn with stddev 1: norm 8.9e17 at step 0; an LSTM classifier
        on token ids whose kernels are drawn with stddev 3 and 5: 3.1e7."""
        if self.uninformed_loss is None:
            return ""
        first = self._looked_up()
        if first is not None:
            return (
                "the initial weights are the likely cause: the model's first "
                f"layer '{first}' is an embedding (its inputs are ids "
                "looked up, whose scale does not reach the layers after it) "
                "and a classifier has no regression targets."
            )
        scale = self._input_scale
        if scale is None or scale > self.thresholds.input_scale:
            return ""
        return (
            "the initial weights are the likely cause: the inputs are "
            f"standardized (their largest feature mean or spread {scale:.3g}) "
            "and a classifier has no regression targets."
        )

    def _informed_after_fit(self, loss) -> bool:
        """Whether a one-output classifier began training already fitted
        (the loss where training began under `_FITTED_START` of that of a
        prediction that knows nothing, `uninformed_loss`) and its `loss`
        (known) is still under that level: its early gradient norms are
        those of data it fitted, and a rise of the norm by orders of
        magnitude with the loss is new data, not an explosion. Probed: a
        classifier fitted on 1024 samples went on training unshuffled on
        512 of them, then new ones: the norm from 0.02 to 3-6 (240x), the
        loss up from 0.01 to under ln 4 and falling."""
        uninformed, early = self.uninformed_loss, _median(self._early_losses)
        if uninformed is None or not _finite(loss, early):
            return False
        level = uninformed[0]
        return early < _FITTED_START * level and loss < level

    def _loss_rising(self, loss: float | None, level: float | None = None) -> bool:
        """Whether `loss` is `exploding_loss_rise` times its recent level
        (or `level`) or more (or not finite); True when either is unknown."""
        recent = self._norms.recent_loss() if level is None else level
        if loss is None or recent is None or not math.isfinite(loss):
            return True
        # Relative to the level's size, so a negative loss rises too.
        return loss - recent >= (self.thresholds.exploding_loss_rise - 1) * abs(recent)

    def _norm_jump(self, norm: float, recent: float | None, peak: float | None) -> None:
        """Flags a norm `jump_factor` above every recent one (`peak`: a bad
        batch or the start of a blow-up; near convergence single batches
        often reach 10x the median), or below the recent median for
        `_DROP_STEPS` steps in a row (a collapse; one quiet batch is common
        with small batches)."""
        jump = self.thresholds.jump_factor
        low = bool(recent) and norm * jump <= recent
        self._low = self._low + 1 if low else 0
        if (peak and norm >= jump * peak) or self._low == _DROP_STEPS:
            self.jumped = True
