"""Health rules for a learning rate that rises until training diverges.

A schedule that keeps raising the rate (a warm-up to a peak too high, a
cyclical or one-cycle schedule, an exponential range test) makes the
steps grow smoothly: no single step jumps by `jump_factor`, and the
gradient norm grows with the loss, not 100x over its recent level, so the
jump and norm rules of `step_rules` tell it late. What shows it is the
loss, judged on every step: the median of the last `_WINDOW` steps'
losses at `_LOSS_RISE` times its lowest or more and at least halfway back
to where training began (half of what the model learned undone), while
the rate is `_RATE_RISE` times its first or more (the schedule raised it)
and `_STILL_RISING` times what it was at that lowest or more, on
`_RISE_STEPS` of the last `_WINDOW` steps (a loss that diverges swings).
SGD at `1e-3 * 1.05**step` (probed): the median from 0.69 at step 126
(rate 0.47) to 1.41 at step 162 (rate 2.7), told at 164 (exploding
gradients were told at 193, NaN at 225); on easier data from 0.40 at 134
(rate 0.69) to 0.86 at 142 and 1.27 at 144 (rate 1.1), swinging between
0.6 and 2 until it blew up at 164. Reported as the model's
`exploding_gradients`, naming the rate where the loss was lowest.

A rate that jumped (`jump_factor` times in one step) since that lowest
is the jump rules' (`NormRules`), which watch the steps after it. A rate
that does not rise (constant, decayed) leaves this rule silent: a loss
that rises with new data is not the schedule's.
"""

from __future__ import annotations

import collections

from keras_actloss import findings as F
from keras_actloss.diagnostics.rule_support import RuleFamily, _finite, _median

_WINDOW = 5
_LOSS_RISE = 2.0
_UNDONE = 0.5
_RATE_RISE = 3.0
_STILL_RISING = 1.5
_RISE_STEPS = 3


class RisingRateRules(RuleFamily):
    """A rising learning rate that makes training diverge (see the module).
    Mixed into `HealthRules`; uses `_start`, `_first_rate`, `_last_rate`,
    `_rate_change` and its own state, set up by `_reset_rise`."""

    def _reset_rise(self) -> None:
        # The last steps' losses, the lowest median of them and the step
        # and rate there, and the last steps' (step, hit) of the rule.
        self._rise_losses: collections.deque = collections.deque(maxlen=_WINDOW)
        self._rise_low: tuple[float, int, float] | None = None
        self._rise_hits: collections.deque = collections.deque(maxlen=_WINDOW)

    @property
    def _rise_streak(self) -> list[int]:
        """The steps of the last `_WINDOW` on which the rule held."""
        return [step for step, hit in self._rise_hits if hit]

    def _rise_step(self, step: int, loss) -> None:
        """Notes one step's loss at its learning rate (`_last_rate`): the
        lowest median, and whether the rule holds. Every step, quiet ones
        included (`observe_quiet`); while it held on one of the last
        steps, `alarm_bounds` has the next judged one by one (`_rising`)."""
        rate, first = self._last_rate, self._first_rate
        if not _finite(loss, rate, first) or rate <= 0:
            return
        losses = self._rise_losses
        losses.append(loss)
        if len(losses) < _WINDOW:
            return
        level = _median(losses)
        low = self._rise_low
        if low is None or level < low[0]:
            self._rise_low = low = (level, step, rate)
        began, jump = self._start(), self._rate_change
        hit = (
            _finite(began)
            and level >= _LOSS_RISE * low[0]
            and level >= low[0] + _UNDONE * (began - low[0])
            and rate >= _RATE_RISE * first
            and rate >= _STILL_RISING * low[2]
            and (jump is None or jump[0] <= low[1])
        )
        self._rise_hits.append((step, hit))

    def _rising(self, new, step: int, loss) -> None:
        """Judges one step's loss (`_rise_step`); reports once the rule
        held on `_RISE_STEPS` of the last `_WINDOW` steps, this one too."""
        self._rise_step(step, loss)
        steps = self._rise_streak
        if len(steps) < _RISE_STEPS or steps[-1] != step or self._exploded():
            return
        level, began = _median(self._rise_losses), self._start()
        lowest, at, then = self._rise_low
        rate = self._last_rate
        message = (
            f"The loss rose to {level:.3g} (the median of the last {_WINDOW} "
            f"steps), {level / lowest:.3g}x its lowest ({lowest:.3g}, at step "
            f"{at}; {began:.3g} where training began), while the learning "
            f"rate rose {rate / then:.3g}x since then (from {then:.3g} to "
            f"{rate:.3g}): the schedule raises the rate past what the model "
            "can take, and training diverges."
        )
        fix = (
            f"Cap the learning rate at about {then:.2g}, where the loss was "
            "lowest, or lower: end the warm-up or the schedule's rise there "
            "(in a learning-rate range test, a tenth of the rate where the "
            "loss was lowest is a safe choice)."
        )
        self._add(new, F.EXPLODING_GRADIENTS, None, steps[0], level, message, fix)
