"""The series `diagnostics.step_rules` judges: the recent history of the
global gradient norm (`NormSeries`), the steps watched after a
learning-rate jump up (`RateWatch`), after a step over the explosion
limit (`Spike`) and after a step that came with new data (`Arrival`).
Plain records, no rules."""

from __future__ import annotations

import collections
import dataclasses
import itertools
import math

import numpy as np

from keras_actloss.diagnostics.rule_support import _median

# The last normal steps whose median loss is a spike's level too
# (`NormSeries.spike_level`).
_LOCAL_LOSSES = 4


@dataclasses.dataclass
class RateWatch:
    """The steps after a learning-rate jump up, watched by `_diverging` (the
    loss) and `RecordedGradientRules._watched_update` (the updates)."""

    step: int  # The first step at the new rate.
    rates: tuple[float, float]  # Before and after.
    norm: float | None  # The recent norm and loss levels before the jump.
    loss: float | None
    # Whether the loss is of the optimizer whose rate jumped (not, for a
    # GAN's generator: the loss noted is the discriminator's), and the
    # step's one loss (not with `HealthRules.separate_losses`).
    own_loss: bool = True
    # The norm reached `step_rules._DIVERGE_RISE` x `norm` since; the steps
    # in a row with the loss `_DIVERGE_RISE` x `loss`.
    norm_up: bool = False
    run: int = 0
    start: int = 0
    # The highest loss of a step at the new rate so far, and its step (an
    # update at the new rate is recorded later with several steps per
    # execution, when Adam may have brought the loss back).
    peak: tuple[float, int] | None = None
    # The largest update over `exploding_update_ratio` recorded at the new
    # rate: (step, layer, ratio); the loss it brings shows at a later step.
    oversized: tuple[int, str, float] | None = None
    # The finite losses of the steps at the new rate, in order.
    losses: list[float] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Spike:
    """A step over the explosion limit, and the steps after it whose loss
    `step_rules.NormRules._spike_thrown` watches."""

    step: int
    norm: float
    # The recent norm and loss levels before it.
    recent: float
    loss: float
    # (loss, step) of each step since with the loss risen.
    risen: list[tuple[float, int]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Arrival:
    """A step that came with new data (`step_rules.NormRules._arrived`):
    its norm and loss, the recent norm level before it, and the largest
    update ratio recorded since (`UpdateRules._update_ratios`; None before
    any recording), whose size tells whether the steps can be what drives
    the norm up. Kept while the norm stays up (`_note_arrival`)."""

    step: int
    norm: float
    loss: float
    level: float
    update: float | None = None
    # Whether the inputs of a recording since were compared with the first
    # recorded batch's (`NormRules.inputs_changed`).
    inputs_seen: bool = False


class NormSeries:
    """The recent history of the global gradient norm, for the explosion rule.

    Keeps the early baseline (median of the first `baseline` normal steps)
    and the median of the last `window` normal steps, where a normal step is
    one that was not over the explosion limit.
    """

    def __init__(self, baseline: int, window: int = 32):
        self._baseline_size = baseline
        self._early: list[float] = []
        self._early_median: float | None = None
        self._recent = collections.deque(maxlen=window)
        self._losses = collections.deque(maxlen=window)
        # The last finite norm (over the limit or not) and its step, and
        # the one before them.
        self.last: float | None = None
        self.last_step: int | None = None
        self._previous: tuple[float | None, int | None] = (None, None)
        # The highest norm of the steps over the limit that the series came
        # back from (`add_over`, then `add_normal`), and of the current ones.
        self.recovered = 0.0
        self._over_peak = 0.0
        # The first finite step's (step, norm).
        self.first: tuple[int, float] | None = None

    def huge_from_start(self, ceiling: float) -> bool:
        """Whether no normal step has been seen and the first finite one
        was over `ceiling` (the absolute limit): never a healthy step."""
        return self.early() is None and (self.first or (0, 0.0))[1] > ceiling

    def add(self, step: int, norm: float) -> None:
        """Notes a finite step's norm (normal or not) as the last one."""
        if self.first is None:
            self.first = (step, norm)
        if step != self.last_step:
            self._previous = (self.last, self.last_step)
        self.last, self.last_step = norm, step

    def before(self, step: int) -> tuple[float | None, int | None]:
        """The last finite norm of a step before `step`, and that step."""
        if self.last_step is None or self.last_step < step:
            return self.last, self.last_step
        return self._previous

    def early(self) -> float | None:
        if self._early_median is None and self._early:
            self._early_median = float(np.median(self._early))
        return self._early_median

    def recent(self) -> float | None:
        return _median(self._recent)

    def recent_peak(self) -> float | None:
        """The largest of the last `window` normal steps' norms."""
        return max(self._recent, default=None)

    def recent_loss(self) -> float | None:
        """Median loss of the last `window` normal steps with a loss."""
        return _median(self._losses)

    def spike_level(self) -> float | None:
        """The loss level a spike's next steps are judged against
        (`step_rules.NormRules._spike_thrown`), and a norm jump's zero
        gradients after it (`ZeroGradientRules._jumped_before_zero`): the
        higher of the window's median (`recent_loss`) and the median of its
        last `_LOCAL_LOSSES` losses. A stream whose batches alternate
        between tasks, the model fitted to one only (a time-ordered stream
        on JAX, seed shift 17: 16 batches at a loss of 0.01, then 32 at
        6-12), has a window's median between the two (2.99) that the
        losses of the other task's batches are 3x of whatever a step did;
        the steps just before the spike were at 6.3-8.6 already."""
        level = self.recent_loss()
        local = _median(list(itertools.islice(reversed(self._losses), _LOCAL_LOSSES)))
        if level is None or local is None:
            return level
        return max(level, local)

    def add_over(self, norm: float) -> None:
        """Notes a step over the explosion limit."""
        self._over_peak = max(self._over_peak, norm)

    def add_normal(self, norm: float, loss: float | None = None) -> None:
        self.recovered = max(self.recovered, self._over_peak)
        self._over_peak = 0.0
        if loss is not None and math.isfinite(loss):
            self._losses.append(loss)
        if norm > 0:
            self._recent.append(norm)
            if len(self._early) < self._baseline_size:
                self._early.append(norm)
                self._early_median = None
