"""Rules that turn recorded statistics into findings.

`HealthRules` watches every training step's global gradient norm (a
`SentinelEvent` per step) and the full `StepStats` the callback records,
and reports each failure mode once per layer, when it first appears. The
rules follow the mechanisms in the source notes rather than single numbers,
because the crude versions misfire on healthy models:

- **Vanishing gradients**: each saturating layer multiplies the backward
  signal by at most 0.25 (sigmoid) or 1 (tanh), so in a deep stack the layers
  far from the loss get gradients orders of magnitude smaller than the layers
  near it. Flagged when a far layer's gradient RMS *and* max-abs are tiny
  relative to the layers nearest the output, the decay is progressive (the
  layers one step closer to the loss in the layer graph are well below the
  output layers too: parallel branches such as an attention block's query
  and key are siblings, not a deeper chain), its RMS is small in absolute
  terms, the layers near the output are still learning (and the loss has
  not converged), the model has enough layers for a depth effect, and all of
  this persists. A quiet ReLU branch whose layers behind it get a loud
  gradient through another path (a U-Net's bottleneck beside its skip
  connections) is a branch the gradient goes around, not vanishing, unless
  saturating hidden activations lie between it and the output. At the
  extreme, every gradient is exactly zero while the loss is still high: the
  global norm is 0 (or below float32's smallest normal number) for
  `patience_steps` steps in a row, judged on every step, and the loss is
  finite, above 1e-6 and above `converged_loss_ratio` of its early level
  (median of the first `baseline_steps` steps). Nothing learns any more;
  typically a softmax/sigmoid output saturated to
  probabilities of exactly 0 and 1 in float32 (derivative 0) under a loss
  that takes the probabilities and clips them (to [1e-7, 1 - 1e-7]: the
  loss stays finite, ~16 per wrong sample), often after a jump of the
  learning rate. Reported as the model's (layer None) `vanishing_gradients`,
  with that fix. A loss that reached 0 (a hinge whose margins all hold) or
  converged to a tiny value has zero gradients legitimately and is not
  reported; neither is a model without trainable weights.
- **Exploding gradients**: a learning rate that is too high feeds back into
  itself, so the global gradient norm grows by orders of magnitude over its
  early baseline and its recent level (or passes an absolute ceiling), step
  after step, usually ending in NaN; or each update changes a layer's
  weights by more than their own size. Judged on every step's norm. A single
  spike is not an explosion unless it is huge; a NaN right after such growth
  is reported as the explosion it ended.
- **Dead ReLU**: a unit that is zero for every sample gets no gradient.
  Judged on the units that were inactive on *every* sample of the last
  recorded batches together (enough samples to tell a dead unit from a rare
  one), never on the fraction of zero elements (about half of a healthy ReLU
  layer's outputs are zero). Only activations whose inactive region has a
  zero gradient (ReLU, not Leaky ReLU or ELU) can die.
- **Saturated activations**: a hidden sigmoid/tanh layer with nearly all of
  its outputs in the flat tails passes almost no gradient. The output layer
  is exempt: a confident sigmoid or softmax output is what training is for.
  A first layer that saturates partly because the inputs are not
  standardized is reported as that cause (`unstandardized_inputs`, a
  warning): such models still learn.
- **Non-finite**: a NaN or infinite gradient or loss, reported at its step.
  It is the last finding of a run: afterwards the weights are NaN and every
  statistic describes a broken model (a NaN kernel makes a ReLU layer output
  zeros that look like dead units), so nothing else is reported.

Conditions that need persistence hold for `patience` recordings in a row
spanning at least `patience_steps` steps, so neither one unlucky batch nor a
burst of dense recordings around one bad step is enough.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable

import numpy as np

from keras_actloss import findings as F
from keras_actloss import registry
from keras_actloss.diagnostics.records import (
    LayerInfo,
    LayerStats,
    SentinelEvent,
    StepStats,
)
from keras_actloss.diagnostics.thresholds import Thresholds
from keras_actloss.findings import Finding

__all__ = [
    "FIXES",
    "HealthRules",
    "NormSeries",
    "Thresholds",
    "UnitActivity",
    "can_die",
    "vanishing_layers",
]

FIXES = {
    F.VANISHING_GRADIENTS: (
        "Use ReLU (or another non-saturating activation) instead of "
        "sigmoid/tanh in the hidden layers, and add batch normalization."
    ),
    F.EXPLODING_GRADIENTS: (
        "Lower the learning rate, clip gradients (e.g. `clipnorm=1.0` in the "
        "optimizer), and add batch normalization."
    ),
    F.DEAD_RELU: (
        "Use Leaky ReLU (or ELU) instead of ReLU, lower the learning rate, and "
        "avoid large negative bias initialisation."
    ),
    F.SATURATED_ACTIVATIONS: (
        "Use ReLU instead of sigmoid/tanh in hidden layers, add batch "
        "normalization, and check the input scaling and weight initialisation."
    ),
    F.NON_FINITE: (
        "Lower the learning rate, clip gradients (`clipnorm=1.0`), and check the "
        "data (NaN/inf inputs or labels) and the loss (log of 0, division by 0)."
    ),
    F.UNSTANDARDIZED_INPUTS: (
        "Standardize the inputs (zero mean, unit variance per feature), e.g. "
        "with a `keras.layers.Normalization` layer adapted to the training data."
    ),
}
# A global norm at or below this is no gradient at all: float32's smallest
# normal number (a float32 sum of squares underflows to 0 well above it).
_ZERO_NORM = float(np.finfo("float32").tiny)
# A loss at or below this has converged, whatever its early level: a clipped
# cross-entropy of a confident right answer is -log(1 - 1e-7) = 1e-7.
_CONVERGED_LOSS = 1e-6
_ZERO_FIX = (
    "If the loss takes probabilities from a softmax or sigmoid output, use a "
    "linear output layer and the loss with `from_logits=True` (e.g. "
    "`keras.losses.SparseCategoricalCrossentropy(from_logits=True)`): a "
    "saturated output gives probabilities of exactly 0 and 1 in float32, whose "
    "gradient is exactly zero (the loss clips them, so it stays finite), while "
    "from logits the gradient is never zero while the loss is high. Lower the "
    "learning rate: a step too large saturates the output."
)
# Steps in a row a norm must stay far below its recent level to be a jump.
_DROP_STEPS = 3
# A NaN after normal gradient norms: the data or the loss, not the step size.
_DATA_FIX = (
    "Check the data (NaN/inf inputs or labels, e.g. with `np.isfinite`) and the "
    "loss (log of 0, division by 0); clip gradients (`clipnorm=1.0`)."
)


def _finite(*values) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def _layer_stats_nan(ls: LayerStats) -> bool:
    """Whether a layer's gradient statistics hold a NaN (an infinite norm
    alone can be a square beyond float32's range)."""
    values = (ls.grad_norm, ls.grad_rms, ls.grad_max)
    return any(v is not None and math.isnan(v) for v in values)


def can_die(activation: str | None) -> bool:
    """Whether units of this activation can die (zero gradient when inactive).

    Uses the registered activation profile; an unknown name the callback
    still measured dead units for is trusted to be ReLU-like.
    """
    if activation is None:
        return False
    profile = registry.get_profile("activation", activation)
    return True if profile is None else profile.can_die


def _saturates(activation: str | None) -> bool:
    profile = activation and registry.get_profile("activation", activation)
    return bool(profile) and profile.saturates


def _distances(layers: list[LayerInfo]) -> dict[str, int]:
    """Each layer's distance from the outputs: from the layer graph when
    every layer has one, else from model order (the last layer is 0)."""
    if layers and all(info.distance is not None for info in layers):
        return {info.name: info.distance for info in layers}
    return {info.name: len(layers) - 1 - i for i, info in enumerate(layers)}


def _squashing(layers: list[LayerInfo], distance: dict[str, int], far: int) -> list:
    """The hidden layers with a saturating activation (sigmoid, tanh) from
    distance `far` to the output, exclusive: the output layer's own
    activation scales every layer's gradient alike."""
    return [
        info.name
        for info in layers
        if _saturates(info.activation) and 0 < distance[info.name] <= far
    ]


def vanishing_layers(
    stats: StepStats, layers: list[LayerInfo], t: Thresholds
) -> dict[str, tuple[float, float]] | None:
    """Layers far from the loss whose gradients vanish at one recording.

    Returns `{layer: (grad_rms, ratio_to_reference)}` for the layers meeting
    the condition, or None when the recording cannot be judged (too few
    layers with gradients, or the layers near the output are quiet).
    """
    weighted = {info.name for info in layers if info.has_trainable_weights}
    distance = _distances(layers)
    rows = [
        ls
        for ls in stats.layers
        if ls.layer in weighted and _finite(ls.grad_rms, ls.grad_max)
    ]
    n = len(rows)
    if n < t.vanishing_min_layers:
        return None
    # Farthest from the loss first; ties (parallel branches) keep model order.
    rows.sort(key=lambda ls: -distance[ls.layer])
    reference = rows[-max(2, n // 4) :]
    ref_rms = float(np.median([ls.grad_rms for ls in reference]))
    ref_max = float(np.median([ls.grad_max for ls in reference]))
    if ref_rms < t.vanishing_reference_rms:
        return None
    ratios = {ls.layer: ls.grad_rms / ref_rms for ls in rows}
    found = {}
    for ls in rows[: n // 2]:
        # Exactly zero is a cut (dead units upstream, unused branch), not a
        # shrinking signal. A depth effect is progressive: the loudest layer
        # one step closer to the loss is well below the output layers too,
        # unlike a lone quiet first layer fed with tiny inputs, or a query
        # projection beside a loud value projection.
        closer = [
            distance[r.layer] for r in rows if distance[r.layer] < distance[ls.layer]
        ]
        level = max(closer, default=None)
        nearest = max(
            (ratios[r.layer] for r in rows if distance[r.layer] == level),
            default=math.inf,
        )
        if (
            ls.grad_rms > 0
            and ratios[ls.layer] < t.vanishing_ratio
            and ls.grad_max < t.vanishing_ratio * ref_max
            and ls.grad_rms < t.vanishing_rms
            and nearest < math.sqrt(t.vanishing_ratio)
            and not _bypassed(ls.layer, rows, ratios, distance, layers, t)
        ):
            found[ls.layer] = (ls.grad_rms, ratios[ls.layer])
    return found


def _bypassed(layer, rows, ratios, distance, layers, t: Thresholds) -> bool:
    """Whether a quiet `layer` is a branch the gradient goes around rather
    than one it cannot reach.

    Vanishing by depth starves every layer behind the one it starves. When
    a layer farther from the loss (behind it, in a chain) gets a loud
    gradient, the gradient reaches the far end of the model by another path
    (a skip connection, a U-Net's concatenation) and this layer's branch is
    just little used: not a failure, unless saturating hidden activations
    between it and the output shrink the gradient on the way (that is the
    mechanism, whatever other paths exist).
    """
    far = distance[layer]
    if _squashing(layers, distance, far):
        return False
    loud = math.sqrt(t.vanishing_ratio)
    return any(ratios[r.layer] >= loud for r in rows if distance[r.layer] > far)


class _Streaks:
    """Consecutive-recording counters keyed by (mode, layer)."""

    def __init__(self):
        self._start: dict[tuple, int] = {}
        self._count: dict[tuple, int] = {}

    def update(self, key: tuple, hit: bool, step: int) -> tuple[int, int]:
        """Records one observation; returns (streak length, streak start)."""
        if not hit:
            self._count.pop(key, None)
            self._start.pop(key, None)
            return 0, step
        self._start.setdefault(key, step)
        self._count[key] = self._count.get(key, 0) + 1
        return self._count[key], self._start[key]

    def reset(self, keys: Iterable[tuple]) -> None:
        for key in list(keys):
            self.update(key, False, 0)

    def keys(self, mode: str) -> list[tuple]:
        return [key for key in self._count if key[0] == mode]


class UnitActivity:
    """Per-unit activity of one layer over its most recent recordings.

    A unit is dead when it was inactive on every sample of the window: the
    fewest most recent recordings (at least `min_recordings`, at most
    `max_recordings`) that together hold at least `min_samples` samples.
    """

    def __init__(
        self, min_samples: int, min_recordings: int = 1, max_recordings: int = 32
    ):
        self.min_samples = min_samples
        self.min_recordings = min_recordings
        self._recent = collections.deque(maxlen=max_recordings)

    def add(self, step: int, samples: int, activity: list[float]) -> None:
        if self._recent and len(self._recent[-1][2]) != len(activity):
            self._recent.clear()  # The layer changed shape: start again.
        self._recent.append((step, samples, activity))

    def dead(self) -> tuple[float, int, int, int] | None:
        """`(dead fraction, samples, recordings, first step)` of the window,
        or None while the recordings hold fewer than `min_samples`."""
        total, alive, units = 0, None, 0
        for k, (step, samples, activity) in enumerate(reversed(self._recent)):
            units = len(activity)
            active = [a > 0 for a in activity]
            alive = active if alive is None else [a or b for a, b in zip(alive, active)]
            total += samples
            if total >= self.min_samples and k + 1 >= self.min_recordings:
                dead = (units - sum(alive)) / units if units else 0.0
                return dead, total, k + 1, step
        return None


def _median(values) -> float | None:
    # Plain Python: it runs after every step, on at most a few dozen values.
    if not values:
        return None
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


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

    def add(self, step: int, norm: float) -> None:
        """Notes a finite step's norm (normal or not) as the last one."""
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

    def recent_loss(self) -> float | None:
        """Median loss of the last `window` normal steps with a loss."""
        return _median(self._losses)

    def add_normal(self, norm: float, loss: float | None = None) -> None:
        if loss is not None and math.isfinite(loss):
            self._losses.append(loss)
        if norm > 0:
            self._recent.append(norm)
            if len(self._early) < self._baseline_size:
                self._early.append(norm)
                self._early_median = None


class HealthRules:
    """Judges a training run's steps and recordings and reports new findings.

    Stateful: feed it every step's `SentinelEvent` (`observe_step`) and every
    full `StepStats` (`observe`) in step order; each call returns only the
    findings that are new, one per (mode, layer), with `step` = the first
    step of the streak that confirmed it. `jumped` tells whether the last
    step's gradient norm or learning rate jumped (the callback then records
    densely for a while).

    Examples:

    >>> from keras_actloss.diagnostics.records import LayerInfo, StepStats
    >>> rules = keras_actloss.diagnostics.rules.HealthRules(
    ...     [LayerInfo("dense", "Dense", "relu", True, 0)])
    >>> rules.observe(StepStats(step=0, global_norm=float("nan")))[0].mode
    'non_finite'

    Args:
        layers: The monitored layers, in model order.
        thresholds: None (defaults), a dict of `Thresholds` fields, or a
            `Thresholds`. Defaults to `None`.
        output_layers: Names of the model's output layers, exempt from the
            saturation rule. Defaults to the layers after which no layer has
            trainable weights.
    """

    def __init__(
        self,
        layers: list[LayerInfo],
        thresholds: None | dict | Thresholds = None,
        output_layers: Iterable[str] | None = None,
    ):
        self.layers = list(layers)
        self.thresholds = t = Thresholds.from_value(thresholds)
        weighted = [
            i for i, info in enumerate(self.layers) if info.has_trainable_weights
        ]
        if output_layers is None:
            last = max(weighted, default=-1)
            output_layers = [info.name for info in self.layers[max(last, 0) :]]
        self.output_layers = frozenset(output_layers)
        # The layers the model's inputs reach first (their saturation can
        # come from unstandardized inputs).
        self.input_layers = (
            frozenset(self.layers[i].name for i in weighted[:1]) - self.output_layers
        )
        self._info = {info.name: info for info in self.layers}
        self._distance = _distances(self.layers)
        self._activity = {
            i.name: UnitActivity(t.min_samples, t.patience)
            for i in self.layers
            if can_die(i.activation)
        }
        self._streaks = _Streaks()
        self._reported: set[tuple[str, str | None]] = set()
        self._norms = NormSeries(t.baseline_steps)
        self._last_step: int | None = None
        self._last_rate: float | None = None
        self._first_loss: float | None = None
        self._trainable = any(info.has_trainable_weights for info in self.layers)
        self._early_losses: list[float] = []
        self._zero_losses = collections.deque(maxlen=32)
        self._zero_peak = 0.0
        # The last jump of the learning rate: (step, rate before, rate after).
        self._rate_change: tuple[int, float, float] | None = None
        self.jumped = False
        self._low = 0
        self.findings: list[Finding] = []

    def observe_step(self, event: SentinelEvent) -> list[Finding]:
        """Judges one training step's global gradient norm; returns the new
        findings."""
        new: list[Finding] = []
        self.jumped = False
        if self._broken() or (
            self._last_step is not None and event.step <= self._last_step
        ):
            return new
        self._last_step = event.step
        self._rate_jump(event.step, event.learning_rate)
        overflow = event.global_norm == math.inf and not event.non_finite
        if event.non_finite or not (_finite(event.global_norm) or overflow):
            self._non_finite_step(new, event)
        else:
            self._exploding_norm(new, event.step, event.global_norm, event.loss)
            self._zero_gradients(new, event.step, event.global_norm, event.loss)
        return self._emit(new)

    def observe_quiet(
        self, steps: Iterable[tuple[int, float, float, float | None]]
    ) -> None:
        """Takes in steps that stayed within `alarm_bounds`: `(step, global
        norm, learning rate, loss)` in step order. Such a step is normal: it ends
        any streak over the limit or far below the recent level, and joins
        the baseline and the recent level. Nothing to report.
        """
        if self._broken():
            return
        key = (F.EXPLODING_GRADIENTS, None)
        for step, norm, rate, loss in steps:
            if self._last_step is not None and step <= self._last_step:
                continue
            self._last_step, self._last_rate, self._low = step, rate, 0
            self._streaks.update(key, False, step)
            self._zero_streak(step, norm, loss)
            self._norms.add_normal(norm, loss)
            self._norms.add(step, norm)

    def alarm_bounds(self) -> tuple[float, float, float, float]:
        """Bounds within which a step needs no judging at once: the squared
        global norm (low, high) and the learning rate (low, high).

        A step outside them may start an explosion or a jump
        (`observe_step` decides); one inside would be judged normal. Before
        the baseline and the recent level exist, every step is outside.
        """
        t = self.thresholds
        early, recent = self._norms.early(), self._norms.recent()
        if early is None or recent is None or self._broken():
            return (0.0, 0.0, 0.0, 0.0)
        high = min(t.jump_factor * recent, t.exploding_growth * early, t.exploding_norm)
        low = recent / t.jump_factor
        rate = self._last_rate
        if rate is None or not math.isfinite(rate) or rate <= 0:
            rates = (0.0, math.inf) if rate == 0 else (0.0, 0.0)
        else:
            # Just inside the jump (a factor of exactly jump_factor jumps).
            rates = (rate / t.jump_factor * 1.001, rate * t.jump_factor / 1.001)
        # Just inside the norm bounds too, so a borderline step is judged.
        return (low * low * 1.001, high * high / 1.001, *rates)

    def observe(self, stats: StepStats) -> list[Finding]:
        """Judges one full recording; returns the new findings.

        Its step's global norm is judged too when `observe_step` has not
        seen that step.
        """
        new: list[Finding] = []
        if self._broken():
            return new
        loss_bad = stats.loss is not None and not math.isfinite(stats.loss)
        bad_layers = [ls.layer for ls in stats.layers if _layer_stats_nan(ls)]
        if stats.non_finite or loss_bad or bad_layers or math.isnan(stats.global_norm):
            layer = bad_layers[0] if bad_layers else None
            event = SentinelEvent(stats.step, stats.global_norm, True, layer)
            self._last_step = max(self._last_step or 0, stats.step)
            self._non_finite_step(new, event, stats.loss)
            return self._emit(new)
        if self._last_step is None or stats.step > self._last_step:
            event = SentinelEvent(
                stats.step,
                stats.global_norm,
                False,
                None,
                stats.learning_rate,
                stats.loss,
            )
            new += self.observe_step(event)
        if stats.loss is not None and self._first_loss is None:
            self._first_loss = stats.loss
        mine: list[Finding] = []
        self._update_ratios(mine, stats)
        self._vanishing(mine, stats)
        self._dead_units(mine, stats)
        self._saturation(mine, stats)
        return new + self._emit(mine)

    def _exploded(self) -> bool:
        return any(key[0] == F.EXPLODING_GRADIENTS for key in self._reported)

    def _broken(self) -> bool:
        """Whether a non-finite value was reported: the weights are (or soon
        will be) NaN, so every later statistic describes a broken model, and
        judging it would only add consequences (a NaN kernel outputs zeros
        that look like dead units) to the cause."""
        return any(key[0] == F.NON_FINITE for key in self._reported)

    # Every step.

    def _rate_jump(self, step: int, rate: float | None) -> None:
        """Flags a learning rate that changed by `jump_factor` in one step."""
        last, self._last_rate = self._last_rate, rate
        if _finite(rate, last) and rate > 0 and last > 0:
            factor = self.thresholds.jump_factor
            self.jumped = rate >= factor * last or last >= factor * rate
            if self.jumped:
                self._rate_change = (step, last, rate)

    def _zero_streak(self, step: int, norm: float, loss: float | None) -> tuple:
        """Counts a step towards a run of zero gradients while the loss is
        high; returns (streak length, streak start)."""
        if len(self._early_losses) < self.thresholds.baseline_steps and _finite(loss):
            self._early_losses.append(loss)
        early = _median(self._early_losses)
        hit = (
            self._trainable
            and norm <= _ZERO_NORM
            and _finite(loss, early)
            and loss > _CONVERGED_LOSS
            and loss > self.thresholds.converged_loss_ratio * early
        )
        # Its own key: the per-layer vanishing rule resets its streaks.
        count, start = self._streaks.update(("zero_gradients", None), hit, step)
        if not hit:
            self._zero_losses.clear()
            self._zero_peak = 0.0
        else:
            self._zero_losses.append(loss)
            self._zero_peak = max(self._zero_peak, norm)
        return count, start

    def _zero_gradients(self, new, step: int, norm: float, loss=None) -> None:
        """Reports every gradient zero for `patience_steps` steps in a row
        while the loss stays high: training has stopped."""
        count, start = self._zero_streak(step, norm, loss)
        reported = (F.VANISHING_GRADIENTS, None) in self._reported
        if count < self.thresholds.patience_steps or reported:
            return
        zero = "exactly 0" if self._zero_peak == 0 else f"below {_ZERO_NORM:.2g}"
        message = (
            f"The global gradient norm was {zero} for {count} steps in a row "
            f"(steps {start}-{step}) while the loss stayed at about "
            f"{_median(self._zero_losses):.3g} (against "
            f"{_median(self._early_losses):.3g} in the first steps): no "
            "gradient reaches any weight, so training has stopped."
        )
        change = self._rate_change
        if change is not None and start - self.thresholds.patience_steps <= change[0]:
            message += (
                f" The learning rate jumped from {change[1]:.3g} to "
                f"{change[2]:.3g} at step {change[0]}."
            )
        self._add(
            new, F.VANISHING_GRADIENTS, None, start, self._zero_peak, message, _ZERO_FIX
        )

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
        recent = None
        rising = self._loss_rising(loss)
        if over and norm <= t.exploding_norm:
            # Beyond the early baseline: the norm may have drifted up with
            # healthy training; an explosion is beyond its recent level too,
            # and the loss goes up with it.
            recent = series.recent()
            over = rising and (recent is None or norm > t.exploding_growth * recent)
        key = (F.EXPLODING_GRADIENTS, None)
        count, start = self._streaks.update(key, over, step)
        early = series.early()
        spike = (
            early is not None
            and norm >= t.exploding_spike_growth * early
            and (rising or norm > t.exploding_norm)
        )
        if spike or count >= t.exploding_patience:
            growth = "" if not early else f", {norm / early:.3g}x its early {early:.3g}"
            if norm == math.inf:
                growth += " (beyond float32's range)"
            message = (
                f"The global gradient norm reached {norm:.3g} at step {step}"
                f"{growth}: the gradients are exploding and training diverges."
            )
            self._add(new, F.EXPLODING_GRADIENTS, None, start, norm, message)
        if not over:
            if recent is None:
                recent = series.recent() if series.last is not None else None
            self._norm_jump(norm, recent)
            series.add_normal(norm, loss)
        elif count == 1:
            self.jumped = True
        series.add(step, norm)

    def _loss_rising(self, loss: float | None) -> bool:
        """Whether `loss` is `exploding_loss_rise` times its recent level or
        more (or not finite); True when either is unknown."""
        recent = self._norms.recent_loss()
        if loss is None or recent is None or not math.isfinite(loss):
            return True
        # Relative to the level's size, so a negative loss rises too.
        return loss - recent >= (self.thresholds.exploding_loss_rise - 1) * abs(recent)

    def _norm_jump(self, norm: float, recent: float | None) -> None:
        """Flags a norm `jump_factor` above its recent level (a bad batch or
        the start of a blow-up), or below it for `_DROP_STEPS` steps in a
        row (a collapse; one quiet batch is common with small batches)."""
        jump = self.thresholds.jump_factor
        low = bool(recent) and norm * jump <= recent
        self._low = self._low + 1 if low else 0
        if (recent and norm >= jump * recent) or self._low == _DROP_STEPS:
            self.jumped = True

    def _non_finite_step(self, new, event: SentinelEvent, loss=None) -> None:
        """A non-finite step: reported with its cause, an explosion when the
        norm before it was over the limit or had just jumped."""
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
        message = self._non_finite_message(
            event.step, event.layer, event.global_norm, loss
        )
        if grew:
            growth = "" if not early else f", {last / early:.3g}x its early {early:.3g}"
            self._add(
                new,
                F.EXPLODING_GRADIENTS,
                None,
                last_step,
                last,
                f"The global gradient norm grew to {last:.3g} by step "
                f"{last_step}{growth}, and step {event.step} was not finite: "
                "the gradients exploded.",
            )
            message += " It follows the explosion of the gradient norm."
            fix = FIXES[F.EXPLODING_GRADIENTS]
        else:
            before = "" if last is None else f" (last finite norm {last:.3g})"
            message += (
                f" The gradient norms before it were normal{before}: the cause "
                "is likely in the data or the loss, not the step size."
            )
            fix = _DATA_FIX
        self._add(
            new, F.NON_FINITE, event.layer, event.step, event.global_norm, message, fix
        )

    @staticmethod
    def _non_finite_message(step, layer, norm, loss) -> str:
        where = f"in layer '{layer}'" if layer else "in the model"
        what = f"global gradient norm {norm}" + (
            "" if loss is None else f", loss {loss}"
        )
        return (
            f"Non-finite gradients {where} at step {step} ({what}): the weights "
            "will become NaN and training cannot recover."
        )

    # Every recording.

    def _confirmed(self, count: int, start: int, step: int) -> bool:
        """Whether a streak holds for `patience` recordings and steps."""
        t = self.thresholds
        return count >= t.patience and step - start + 1 >= t.patience_steps

    def _update_ratios(self, new, stats: StepStats) -> None:
        t = self.thresholds
        for ls in stats.layers:
            ratio = ls.update_ratio
            if ratio is None or not math.isfinite(ratio):
                continue
            key = (F.EXPLODING_GRADIENTS, ls.layer)
            count, start = self._streaks.update(
                key, ratio > t.exploding_update_ratio, stats.step
            )
            if self._confirmed(count, start, stats.step):
                message = (
                    f"Each update changes the weights of layer '{ls.layer}' by "
                    f"{ratio:.3g} times their own norm ({count} recordings in a row, "
                    f"steps {start}-{stats.step}): the steps are far too large and "
                    "training is unstable."
                )
                self._add(new, F.EXPLODING_GRADIENTS, ls.layer, start, ratio, message)

    def _converged(self, stats: StepStats) -> bool:
        """Whether the loss fell below `converged_loss_ratio` of its first value."""
        return (
            stats.loss is not None
            and self._first_loss is not None
            and stats.loss <= self.thresholds.converged_loss_ratio * self._first_loss
        )

    def _vanishing(self, new, stats: StepStats) -> None:
        t = self.thresholds
        converged = self._converged(stats)
        found = None if converged else vanishing_layers(stats, self.layers, t)
        if found is None:
            self._streaks.reset(self._streaks.keys(F.VANISHING_GRADIENTS))
            return
        for ls in stats.layers:
            hit = ls.layer in found
            key = (F.VANISHING_GRADIENTS, ls.layer)
            count, start = self._streaks.update(key, hit, stats.step)
            if hit and self._confirmed(count, start, stats.step):
                rms, ratio = found[ls.layer]
                message = (
                    f"Layer '{ls.layer}' gets gradients with RMS {rms:.3g}, "
                    f"{ratio:.2g} times those of the layers near the output, for "
                    f"{count} recordings in a row (steps {start}-{stats.step}): "
                    f"it has almost stopped learning ({self._shrinks(ls.layer)})."
                )
                self._add(new, F.VANISHING_GRADIENTS, ls.layer, start, rms, message)

    def _shrinks(self, layer: str) -> str:
        """Why the gradient shrinks between `layer` and the output."""
        squashing = _squashing(self.layers, self._distance, self._distance[layer])
        if squashing:
            return (
                "the saturating activations of "
                + ", ".join(f"'{n}'" for n in squashing[:3])
                + (", ..." if len(squashing) > 3 else "")
                + " shrink the gradient at every layer it passes back through"
            )
        return (
            "the gradient shrinks at every layer it passes back through: check "
            "the weight initialisation, and add normalization or skip connections"
        )

    def _dead_units(self, new, stats: StepStats) -> None:
        t = self.thresholds
        for ls in stats.layers:
            window = self._activity.get(ls.layer)
            if window is None or ls.unit_activity is None or not stats.batch_size:
                continue
            window.add(stats.step, stats.batch_size, ls.unit_activity)
            measured = window.dead()
            if measured is None:
                continue
            dead, samples, recordings, first = measured
            # The streak starts with the first step of its first window.
            key = (F.DEAD_RELU, ls.layer)
            hit = dead >= t.dead_fraction and recordings >= t.patience
            _, start = self._streaks.update(key, hit, first)
            if hit and stats.step - start + 1 >= t.patience_steps:
                message = (
                    f"{dead:.0%} of the units of layer '{ls.layer}' output zero for "
                    f"every one of the {samples} samples of the last {recordings} "
                    f"recorded batches (steps {first}-{stats.step}): these ReLU "
                    "units are dead and get no gradient; they only come back if "
                    "the layers before them change their inputs."
                )
                self._add(new, F.DEAD_RELU, ls.layer, start, dead, message)

    def _saturation(self, new, stats: StepStats) -> None:
        t = self.thresholds
        # Saturation once the weights blew up is a consequence, not news;
        # and a converged model's saturated units are doing their job.
        if self._converged(stats) or self._exploded():
            return
        raw = stats.input_scale is not None and stats.input_scale > t.input_scale
        for ls in stats.layers:
            if ls.saturation is None or ls.layer in self.output_layers:
                continue
            # Large raw inputs still pass a gradient through the outputs left.
            raw_first = raw and ls.layer in self.input_layers
            limits = {
                F.SATURATED_ACTIVATIONS: (
                    t.raw_input_saturation if raw_first else t.saturation
                ),
                F.UNSTANDARDIZED_INPUTS: t.input_saturation if raw_first else None,
            }
            for mode, limit in limits.items():
                key = (mode, ls.layer)
                hit = limit is not None and ls.saturation >= limit
                count, start = self._streaks.update(key, hit, stats.step)
                if self._confirmed(count, start, stats.step):
                    self._add_saturation(new, mode, ls, stats, count, start)

    def _add_saturation(self, new, mode, ls, stats, count, start) -> None:
        activation = getattr(self._info.get(ls.layer), "activation", None)
        where = (
            f"{ls.saturation:.0%} of the outputs of hidden layer '{ls.layer}'"
            f" ({activation or 'saturating activation'}) are in the flat tails "
            f"({count} recordings in a row, steps {start}-{stats.step})"
        )
        if mode == F.SATURATED_ACTIVATIONS:
            message = (
                f"{where}: its gradient is nearly zero there, so it and the layers "
                "before it have almost stopped learning."
            )
            value, severity = ls.saturation, F.FAILURE
        else:
            message = (
                f"{where}, and the inputs are not standardized (a feature's mean "
                f"or spread is {stats.input_scale:.3g}, against about 1): large "
                "inputs push the first layer into its flat tails, where it learns "
                "slowly."
            )
            value, severity = stats.input_scale, F.WARNING
        self._add(new, mode, ls.layer, start, value, message, severity=severity)

    # Bookkeeping.

    def _add(
        self, new, mode, layer, step, value, message, fix=None, severity=F.FAILURE
    ) -> None:
        if (mode, layer) in self._reported:
            return
        self._reported.add((mode, layer))
        value = None if value is None else float(value)
        fix = FIXES[mode] if fix is None else fix
        new.append(Finding(mode, layer, int(step), value, message, fix, severity))

    def _emit(self, new: list[Finding]) -> list[Finding]:
        self.findings.extend(new)
        return new
