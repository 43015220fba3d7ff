"""Health rules judged on the updates of full recordings.

An update that changes a layer's weights by more than their own norm
(`exploding_update_ratio`) is a step far too large: reported after
`patience` recordings, after two with the loss risen (`_blown_up`), after
one that threw the loss up for good (`_thrown`), or at once within the
steps watched after a learning-rate jump up (`_watched_update`); one of
10x the weights and 1 or more per weight replaced them, an explosion at
once (`_wiped`). The rule
family `UpdateRules` is mixed into `HealthRules`, whose state it uses.
"""

from __future__ import annotations

import math

import numpy as np

from keras_actloss import findings as F
from keras_actloss.diagnostics.records import StepStats
from keras_actloss.diagnostics.rule_support import (
    _INIT_FIX,
    _UNSTABLE,
    RuleFamily,
    _finite,
    per_weight,
)
from keras_actloss.diagnostics.step_rules import (
    _DIVERGE_RISE,
    _UNDONE,
    _UNDONE_RISE,
    _WATCH_STEPS,
)

# Within the steps watched after a learning-rate jump up, with the loss up:
# the median layer's update ratio that is an explosion (100x a healthy 1e-3).
_WATCH_RATIO = 0.1

# With no loss of the jumped optimizer's own to watch, weights that grew by
# more than `exploding_update_ratio` times their norm since the jump tell
# the explosion alone, when that norm was within this factor of the
# layer's first one: a layer initialised near 0 (LayerScale, ReZero, a
# zero head) grows many times its norm in healthy training.
_SETTLED = 2.0


# One update (or the growth of a layer's weights between two recordings)
# of at least `_WIPE_RATIO` times the weights' norm, and of `_WIPE_RMS` or
# more per weight (RMS), replaces an initialised layer's weights (RMS
# `_WIPE_FROM` or more before it): an explosion at once, with no patience
# (`UpdateRules._wiped`). A GRU whose recurrent kernel is 8x Keras's
# orthogonal one: a global norm of 1e5 at step 0 and one SGD update of
# 274x its weights (210 per weight), then small gradients through its
# saturated gates and the loss at chance. Healthy steps change weights by
# about 0.001 of their norm; a layer initialised near 0 (LayerScale,
# ReZero, a zero head) can move by many times its norm, by little per
# weight.
_WIPE_RATIO = 10.0
_WIPE_RMS = 1.0
_WIPE_FROM = 1e-2

# After an update that threw the weights off (`UpdateRules._thrown`), a
# recording whose loss dipped under `_DIVERGE_RISE` times where training
# began but stayed this many times it neither counts nor ends the watch:
# Adam at a rate of 1 on a tanh MLP (JAX, seed shift 23) had 7.4, 4.2, 5.1,
# 7.8 and 7.2 after a start at 1.41 (4.2 is 2.97x).
_THROWN_HELD = 2.0

# Each update changing the median layer's weights by this share of their
# norm or more, for `patience` recordings over `patience_steps` steps, with
# the loss at each over half of where training began: every step rewrites
# much of the weights and the loss cannot settle (`UpdateRules._churning`).
# Healthy runs probed (84 probes and the 21 healthy scenarios, both
# backends): at most 0.053 held over such a streak (a tied autoencoder's
# first steps; Adam at 0.03 on an MLP 0.042), typically 0.001-0.03. A GRU
# regressor of targets of spread 27 under SGD at 0.05: 0.4-1.7 from step 2,
# its loss at the level of knowing nothing for 190 steps while its weights
# grew to 75x their first norm, and no other rule told it (the norm
# 10-40x its first steps', the updates over the weights' norm only on
# every other recording); an LSTM in its place: 0.27-0.93 at steps 2-6
# (the scenario `churning_rnn_regression`: 0.32-2.0 at steps 0-4, told
# otherwise only at step 28, by a spike of the norm).
_CHURN_RATIO = 0.15
# The streaks' key of `_churning` (its finding names no layer).
_CHURN = "churning_updates"
# ...and of its streaks with the loss at `_UNDONE_RISE` times where training
# began or more, told after `patience` recordings in a row whatever steps
# they span: a loss well above its start, not one bad batch's. Healthy runs
# probed (90 probes and the 21 healthy scenarios, both backends) with the
# loss at 1.5x its start on 3 recordings in a row: at most 0.019 (a GRU
# under SGD), most never so; a BatchNorm ResNet under SGD at 0.4 (momentum
# 0.9), told dying units, 0.042.
# Adam at 0.1 on a LayerNorm MLP (JAX): updates 0.63, 0.39, 0.26, 0.18 and
# 0.13 of the weights at steps 0-4 (they grew, which shrank the steps),
# losses 1.8x-3.4x the start at steps 1-3, and stuck above the level of
# knowing nothing afterwards, its units dying; told otherwise at step 35.
_CHURN_RISEN = "churning_updates_risen"

# A layer whose weights shrank this many times since its first recording
# has updates over the limit because its weights collapse, not because the
# steps blow them up (`UpdateRules._shrunk`).
_SHRUNK = 10.0


def _oversized(layer: str, ratio: float, detail: str) -> str:
    """The head of a finding of updates over the limit: layer, ratio and
    (in brackets) how many recordings and layers."""
    return (
        f"Each update changes the weights of layer '{layer}' by {ratio:.3g} "
        f"times their own norm ({detail})"
    )


class UpdateRules(RuleFamily):
    """Updates too large for the weights they change, judged on each
    recording (`_update_ratios`). Mixed into `HealthRules`; a condition is
    reported once it holds for `patience` recordings spanning
    `patience_steps` steps (`_confirmed`), or sooner (see the module).
    """

    def _update_ratios(self, new, stats: StepStats) -> None:
        t = self.thresholds
        self._watched_update(new, stats)
        self._wiped(new, stats)
        for ls in stats.layers:
            if _finite(ls.weight_norm):
                self._weight_marks[ls.layer] = (stats.step, ls.weight_norm)
                if ls.weight_norm > 0:
                    self._first_weight_norms.setdefault(ls.layer, ls.weight_norm)
        blown, judged = [], 0
        for ls in stats.layers:
            ratio = ls.update_ratio
            if ratio is None or not math.isfinite(ratio):
                # Finite weights and gradients whose update is not: the
                # optimizer's step broke them (`NonFiniteRules`).
                broken = _finite(ls.grad_norm, ls.weight_norm) and ls.weight_norm > 0
                if broken and self._broken_update is None:
                    self._broken_update = (stats.step, ls.layer)
                continue
            judged += 1
            # The recording's largest update, for the cause of a non-finite
            # step that follows (`NonFiniteRules`).
            last = self._last_update
            if last is None or last[0] != stats.step or ratio > last[2]:
                self._last_update = (stats.step, ls.layer, ratio)
            key = (F.EXPLODING_GRADIENTS, ls.layer)
            shrunk = _finite(ls.weight_norm) and self._shrunk(ls.layer) is not None
            oversized = ratio > t.exploding_update_ratio and not shrunk
            count, start = self._streaks.update(key, oversized, stats.step)
            if count == 1:
                self._update_losses[ls.layer] = stats.loss
            level = self._update_losses.get(ls.layer) if count > 1 else None
            if level is not None and self._risen(stats.loss, level):
                blown.append((ratio, ls.layer, start, count, level))
            elif self._confirmed(count, start, stats.step):
                message = (
                    _oversized(
                        ls.layer,
                        ratio,
                        f"{count} recordings in a row, steps {start}-{stats.step}",
                    )
                    + _UNSTABLE
                )
                self._add(new, F.EXPLODING_GRADIENTS, ls.layer, start, ratio, message)
        self._thrown(new, stats)
        self._churning(new, stats)
        last = self._last_update
        # The largest update since a step that came with new data
        # (`NormRules._new_data`).
        arrival = self._arrival
        if arrival is not None and last and last[0] == stats.step >= arrival.step:
            arrival.update = max(arrival.update or 0.0, last[2])
        # The last update larger than the weights, for the cause of gradients
        # that fall to 0 after it (`ZeroGradientRules`); the first of a run,
        # for the loss after it (`_thrown`).
        if last and last[0] == stats.step and last[2] > t.exploding_update_ratio:
            self._last_oversized = last
            if self._throw is None:
                self._throw, self._thrown_losses = last, []
                self._thrown_waited = False
            peak = self._run_peak
            if peak is None or last[2] > peak[2]:
                self._run_peak = last
        elif judged:
            self._run_peak = None
        if blown:
            self._blown_up(new, stats, blown, judged)

    def _shrunk(self, layer: str) -> float | None:
        """How many times `layer`'s weights shrank since its first recording
        (to the last one with finite weights), when `_SHRUNK` or more: its
        updates outgrow weights that collapse (weight decay far too strong,
        SGD at 0.05 with `weight_decay` 10: the output layer's norm from
        0.97 to 1e-4 in 13 steps while its gradients stayed at 0.03, each
        update 1.9x its weights), not weights that the steps blow up; the
        vanishing gradients and dead units that follow are the failure.
        None otherwise."""
        first, mark = self._first_weight_norms.get(layer), self._weight_marks.get(layer)
        if first is None or mark is None or mark[1] * _SHRUNK > first:
            return None
        return first / mark[1] if mark[1] > 0 else math.inf

    def _churning(self, new, stats: StepStats) -> None:
        """Reports `patience` recordings over `patience_steps` steps whose
        median layer's update changed its weights by `_CHURN_RATIO` of
        their norm or more, with the loss at each over `_UNDONE` of where
        training began (`_start`): each step rewrites much of the weights,
        so the loss cannot settle lower, however far the norm grew. With
        the loss at `_UNDONE_RISE` times that start or more, `patience`
        recordings in a row suffice, whatever steps they span. Layers
        whose weights were near 0 at their first recording (RMS under
        `_WIPE_FROM`: zero-initialised, a LayerScale) are not counted: they
        grow many times their norm in healthy training."""
        if self._exploded():
            return
        ratios = []
        for ls in stats.layers:
            root, first = per_weight(ls), self._first_weight_norms.get(ls.layer)
            if root is None or not _finite(ls.update_ratio, first):
                continue
            if first / root >= _WIPE_FROM:
                ratios.append((ls.update_ratio, ls.layer))
        start, loss = self._start(), stats.loss
        median = float(np.median([r for r, _ in ratios])) if ratios else 0.0
        # Over half of where training began (`_UNDONE`; a loss that goes
        # negative: at or above it): the loss of a model that learns
        # nothing goes up and down around its start.
        kept = _finite(loss, start) and (
            loss > _UNDONE * start if start > 0 else loss >= start
        )
        hit = median >= _CHURN_RATIO and kept
        risen = hit and start > 0 and loss >= _UNDONE_RISE * start
        count, begin = self._streaks.update((_CHURN, None), hit, stats.step)
        ups, first = self._streaks.update((_CHURN_RISEN, None), risen, stats.step)
        if not (hit and self._confirmed(count, begin, stats.step)):
            if not (risen and ups >= self._patience()):
                return
            count, begin = ups, first
        top, layer = max(ratios)
        where = (
            f"rose to {loss / start:.2g} times where training began ({loss:.3g} "
            f"against {start:.3g})"
            if risen
            else f"stayed near or above where training began ({loss:.3g} "
            f"against {start:.3g})"
        )
        message = (
            f"Each update changed the weights of the median layer by "
            f"{median:.2g} of their norm (up to {top:.2g}, layer '{layer}'; "
            f"healthy steps change about 0.001) for {count} recordings in a "
            f"row (steps {begin}-{stats.step}), while the loss {where}: "
            "the steps are far too large and training is unstable; each "
            "rewrites much of the weights, so the loss cannot settle lower."
        )
        self._add(new, F.EXPLODING_GRADIENTS, None, begin, median, message)

    def _wiped(self, new, stats: StepStats) -> None:
        """Reports at once a recording whose update changed an initialised
        layer's weights by `_WIPE_RATIO` times their norm and by
        `_WIPE_RMS` per weight, or after which its weights are that much
        larger than at the last recording with a step whose global norm
        was over the explosion limit between them (`_surged`; such a step
        is not recorded: its jump starts a burst from the next): the
        layer's weights were replaced by the step, whatever the loss and
        the gradients did after it (through saturated units they can be
        small). Weights changed from outside (a weight edit, a restore)
        with no such step are not judged so. The layer with the largest
        such change; none once an explosion was reported."""
        if self._exploded():
            return
        found = None
        for ls in stats.layers:
            root = per_weight(ls)
            if root is None or not _finite(ls.weight_norm) or ls.weight_norm <= 0:
                continue
            candidates = []
            if _finite(ls.update_ratio):
                size = ls.update_ratio * ls.weight_norm
                candidates.append((ls.update_ratio, size, stats.step, None))
            mark = self._weight_marks.get(ls.layer)
            surged = self._surged is not None and mark is not None
            if surged and mark[0] <= self._surged < stats.step and mark[1] > 0:
                candidates.append(
                    (ls.weight_norm / mark[1], ls.weight_norm, mark[0], mark[1])
                )
            for ratio, size, at, before in candidates:
                base = ls.weight_norm if before is None else before
                if (
                    ratio >= _WIPE_RATIO
                    and size / root >= _WIPE_RMS
                    and base / root >= _WIPE_FROM
                    and (found is None or ratio > found[0])
                ):
                    found = (ratio, size / root, at, before, ls)
        if found is None:
            return
        ratio, rms, at, before, ls = found
        if before is None:
            head = (
                f"The update of step {at} changed the weights of layer "
                f"'{ls.layer}' by {ratio:.3g} times their own norm ({rms:.3g} per "
                "weight, RMS)"
            )
        else:
            head = (
                f"The weights of layer '{ls.layer}' grew from norm {before:.3g} "
                f"(step {at}) to {ls.weight_norm:.3g} (step {stats.step}), "
                f"{ratio:.3g}x ({rms:.3g} per weight, RMS)"
            )
        message = (
            f"{head}: updates that large replace the layer's weights; the "
            "gradients exploded."
        )
        fix = self._explosion_fix(ls.layer)
        first = self._norms.first
        if (
            before is None
            and first is not None
            and at == first[0]
            and self._norms.huge_from_start(self.thresholds.exploding_norm)
        ):
            # The first update, of a norm no healthy model has at its first
            # step: the initial weights' gradients, not the step size (an
            # embedding and SimpleRNN classifier whose recurrent kernel is
            # drawn with stddev 1, under SGD: the embedding moved 1.7e6x).
            weights = self._weights_cause()
            if weights:
                message += " It was the first update, so " + weights
                fix = _INIT_FIX
        # The growth is of the steps from the mark to this one: the last of
        # them (a burst's recording follows the jump of the norm at once).
        step = at if before is None else stats.step - 1
        self._add(new, F.EXPLODING_GRADIENTS, ls.layer, step, ratio, message, fix)

    def _thrown(self, new, stats: StepStats) -> None:
        """Reports one update larger than the weights (`_throw`, the first
        of a run of recordings with one) after which the recorded loss
        stayed `_DIVERGE_RISE` times where training began (`_start`) for
        `patience` recordings over `patience_steps` steps, from the first
        recording after it or the next (the loss still rising at the
        first, over where training began): that step threw
        the model off, as Adam's first step at a rate of 1 does to a tanh
        MLP (every weight moved by about the rate: updates of 6-8 times the
        weights, then under 1x; the loss from 1.8 to 7-18 and its hidden
        units in the flat tails). A recording in between whose loss is
        `_THROWN_HELD` times where training began or more is not counted
        (a thrown model's loss varies by batch). A single bad batch's
        update, after which the loss comes back, is not reported; nor one
        whose explosion is (any layer's)."""
        throw = self._throw
        if throw is None or stats.step <= throw[0]:
            return
        # A multiple of the start means nothing for a loss that starts at or
        # under 0 (a cosine similarity, a log-density).
        start, loss = self._start(), stats.loss
        known = _finite(start, loss) and start > 0
        risen = known and loss >= _DIVERGE_RISE * start
        losses = self._thrown_losses
        # The first recording after it may find the loss on its way up,
        # over where training began but not yet `_DIVERGE_RISE` times it
        # (Adam's next updates at a rate of 1 are large too: a tanh MLP's
        # loss 1.04, 3.06 after the throw, then 7.8-9.1).
        rising = known and not losses and loss > start and not self._thrown_waited
        held = known and bool(losses) and loss >= _THROWN_HELD * start
        if self._exploded() or not (risen or rising or held):
            self._throw = None
            return
        if held and not risen:
            losses.append((stats.step, loss, False))
            return
        if not risen:
            self._thrown_waited = True
            return
        losses.append((stats.step, loss, True))
        step, layer, ratio = throw
        first = losses[0][0]
        if not self._confirmed(sum(up for *_, up in losses), first, stats.step):
            return
        levels = [level for _, level, _ in losses]
        message = (
            f"The update of step {step} changed the weights of layer '{layer}' "
            f"by {ratio:.3g} times their own norm, and the loss has stayed at "
            f"{min(levels):.3g}-{max(levels):.3g} since (steps {first}-"
            f"{stats.step}; {start:.3g} where training began)" + _UNSTABLE
        )
        self._add(new, F.EXPLODING_GRADIENTS, layer, step, ratio, message)
        self._throw = None

    def _blown_up(self, new, stats: StepStats, blown: list, judged: int) -> None:
        """Reports, without waiting for `patience`, updates over
        `exploding_update_ratio` for 2 recordings in a row while the loss
        rose `_DIVERGE_RISE` times its level where they began (and above
        where training began): the step size blows the model up (from the
        first step, SGD far too fast even with `clipnorm`). One finding, on
        the layer with the largest update; the others over the limit are
        not reported again."""
        ratio, layer, start, count, level = max(blown)
        detail = (
            f"{len(blown)} of {judged} layers over "
            f"{self.thresholds.exploding_update_ratio:g}x, {count} recordings in a "
            f"row, steps {start}-{stats.step}"
        )
        message = (
            _oversized(layer, ratio, detail)
            + f" and the loss rose from {level:.3g} to {stats.loss:.3g}"
            + _UNSTABLE
        )
        at, value = start, ratio
        throw = self._run_peak
        earlier = throw is not None and start <= throw[0] < stats.step
        if (
            earlier
            and throw[2] > ratio
            and throw[1] not in {b[1] for b in blown}
            and (F.EXPLODING_GRADIENTS, throw[1]) not in self._reported
        ):
            # The run began with a larger update of a layer whose streak it
            # ended (its gradients fell to 0 after it): that layer first.
            # An SGD GRU with recurrent stddev 2: 1.5e7x its weights at step
            # 0, then exactly 0 gradient; the output layer's 5-9x.
            at, layer, value = throw
            message = (
                f"The update of step {at} changed the weights of layer "
                f"'{layer}' by {value:.3g} times their own norm; since, "
                + message[0].lower()
                + message[1:]
            )
        fix = self._explosion_fix(layer)
        self._add(new, F.EXPLODING_GRADIENTS, layer, at, value, message, fix)
        self._reported.update((F.EXPLODING_GRADIENTS, b[1]) for b in blown)

    def _watched_update(self, new, stats: StepStats) -> None:
        """Reports at once, within the steps watched after a learning-rate
        jump up (`RateWatch`), a recording whose update of some layer
        exceeds `exploding_update_ratio` with the loss `exploding_loss_rise`
        times its level before the jump (or unknown), at it or at a later
        recording (a step's loss is of the weights before its update: a
        cosine-similarity regressor at -0.93 whose rate jumped 500x, the
        output layer moved 1.08x its norm, -0.097 at the next step), or
        whose median layer's update is `_WATCH_RATIO` of its weights, or
        whose weights grew by more than `exploding_update_ratio` times
        their norm since the last recording before the jump
        (`_grown_weights`), with the
        loss 3 times that level and above where training began
        (`_diverged`). The jump explains it, so one recording is enough:
        Adam and BatchNorm bring the loss and the norm back within a step
        or two while the updates stay far too large. Names the layer with
        the largest update (or growth) and ends the watch."""
        watch = self._watch
        if watch is None or not 0 <= stats.step - watch.step <= _WATCH_STEPS:
            return
        limit = self.thresholds.exploding_update_ratio
        ratios = sorted(
            (ls.update_ratio, ls.layer)
            for ls in stats.layers
            if _finite(ls.update_ratio)
        )
        if not ratios:
            return
        ratio, layer = ratios[-1]
        before, after = watch.rates
        loss, level = stats.loss, watch.loss
        # A layer whose weights were still near 0 (zero-initialised, as a
        # residual block's last normalization scale) can move by more than
        # their norm in healthy training: only with the loss up as well,
        # when it is the loss of the optimizer whose rate jumped.
        rising = level is None or not watch.own_loss or self._loss_rising(loss, level)
        over = sum(1 for r, _ in ratios if r > limit) if rising else 0
        # A step's loss is of the weights before its update: an update over
        # the limit shows in the loss of the steps after it.
        earlier = None
        if rising and not over and _finite(loss, level):
            earlier = watch.oversized
        if ratio > limit and (watch.oversized is None or ratio > watch.oversized[2]):
            watch.oversized = (stats.step, layer, ratio)
        jumped = (
            f"The learning rate jumped from {before:.3g} to {after:.3g} at step "
            f"{watch.step}, and "
        )
        # Only with the loss diverged as well, at this step or one since the
        # jump (a recording of an execution of several steps may come after
        # Adam brought it back): the weights' growth alone is no explosion
        # (a zero-initialised layer grows from nearly nothing).
        risen, risen_at = loss, ""
        if watch.peak is not None and _finite(loss) and watch.peak[0] > loss:
            risen, risen_at = watch.peak[0], f" (step {watch.peak[1]})"
        grown = None
        if over or earlier:
            pass
        elif level is None or not watch.own_loss:
            # No loss of its own to watch (a custom `train_step` on JAX, a
            # GAN's generator): the growth of weights that had settled near
            # their first norm (not a zero-initialised layer's) is enough.
            grown = self._grown_weights(stats, settled=True)
            risen = None
        elif _finite(risen, level) and self._diverged(risen):
            grown = self._grown_weights(stats)
        if over:
            message = jumped + (
                f"the update of step {stats.step} changed the weights of layer "
                f"'{layer}' by {ratio:.3g} times their own norm ({over} of "
                f"{len(ratios)} layers over {limit:g}x)"
            )
        elif earlier:
            at, layer, ratio = earlier
            message = jumped + (
                f"the update of step {at} changed the weights of layer '{layer}' "
                f"by {ratio:.3g} times their own norm; the loss rose from "
                f"{level:.3g} to {loss:.3g} after it (step {stats.step})"
            )
        elif grown is not None:
            ratio, layer, (mark, before_norm), now = grown
            message = jumped + (
                f"the weights of layer '{layer}' grew from norm {before_norm:.3g} "
                f"(step {mark}) to {now:.3g} (step {stats.step}): the updates "
                f"at the new rate changed them by at least {ratio:.3g} times "
                "their own norm"
            )
            if risen is not None:
                message += (
                    f", and the loss rose from {level:.3g} to {risen:.3g}{risen_at}"
                )
        else:
            median = float(np.median([r for r, _ in ratios]))
            if not (median >= _WATCH_RATIO and self._diverged(loss)):
                return
            message = jumped + (
                f"at step {stats.step} the loss was {loss:.3g} (its level before "
                f"the jump {level:.3g}) while the median layer's update "
                f"changed its weights by {median:.2g} of their norm (up to "
                f"{ratio:.2g}, layer '{layer}'; healthy steps change about 0.001)"
            )
        message += _UNSTABLE
        if earlier:
            step = earlier[0]
        else:
            step = watch.step if grown is not None else stats.step
        self._add(new, F.EXPLODING_GRADIENTS, layer, step, ratio, message)
        self._watch = None

    def _grown_weights(self, stats: StepStats, settled: bool = False) -> tuple | None:
        """The layer whose weights grew the most, relative to their norm,
        between the last recording before the watched jump and this one,
        when more than `exploding_update_ratio`: (growth, layer, (step,
        norm) before, norm now), else None. With `settled`, only of a
        layer whose weights before were within `_SETTLED` times their first
        recorded norm (not one growing from a zero or small
        initialisation).

        The recordings need not include the jumped step itself: its update
        is at least the growth of the weights' norm across it (triangle
        inequality), so a step that throws the weights far out is seen
        even when every gradient after it is exactly 0 (an output it
        saturated), with no update left to measure.
        """
        marks, watch = self._weight_marks, self._watch
        found = None
        for ls in stats.layers:
            mark = marks.get(ls.layer)
            if mark is None or mark[0] > watch.step or not _finite(ls.weight_norm):
                continue
            before = mark[1]
            first = self._first_weight_norms.get(ls.layer)
            if settled and not (
                _finite(first) and first / _SETTLED <= before <= first * _SETTLED
            ):
                continue
            growth = (ls.weight_norm - before) / before if before > 0 else 0.0
            if growth > self.thresholds.exploding_update_ratio and (
                found is None or growth > found[0]
            ):
                found = (growth, ls.layer, mark, ls.weight_norm)
        return found
