"""Rules that turn recorded statistics into findings.

`HealthRules` watches the `StepStats` the callback records (and the every-step
`SentinelEvent`s) and reports each failure mode once per layer, when it first
appears. The rules follow the mechanisms in the source notes rather than
single numbers, because the crude versions misfire on healthy models:

- **Vanishing gradients**: each saturating layer multiplies the backward
  signal by at most 0.25 (sigmoid) or 1 (tanh), so in a deep stack the layers
  near the input get gradients orders of magnitude smaller than the layers
  near the output. Flagged when an early layer's gradient RMS *and* max-abs
  are tiny relative to the layers near the output, the decay is progressive
  (the next layer is well below the output layers too), its RMS is small in
  absolute terms, the layers near the output are still learning (and the loss
  has not converged), the model has enough layers for a depth effect, and all
  of this persists. A converged model (tiny gradients everywhere), a shallow
  model, and a lone quiet first layer (tiny inputs, sparse embedding
  gradients) are not flagged.
- **Exploding gradients**: a learning rate that is too high feeds back into
  itself, so the global gradient norm grows by orders of magnitude over its
  own early baseline (or passes an absolute ceiling), recording after
  recording; or each update changes a layer's weights by more than their own
  size. A single spike is not an explosion unless it is huge.
- **Dead ReLU**: a unit that is zero for every sample gets no gradient and
  never recovers. Judged on the fraction of *dead units* over a batch large
  enough to tell, never on the fraction of zero elements (about half of a
  healthy ReLU layer's outputs are zero). Only activations whose inactive
  region has a zero gradient (ReLU, not Leaky ReLU or ELU) can die.
- **Saturated activations**: hidden sigmoid/tanh layers with most outputs in
  the flat tails pass almost no gradient. The output layer is exempt: a
  confident sigmoid or softmax output is what training is for.
- **Non-finite**: a NaN or infinite gradient or loss, reported at once.
  It is the last finding of a run: afterwards the weights are NaN and every
  statistic describes a broken model (a NaN kernel makes a ReLU layer output
  zeros that look like dead units), so nothing else is reported.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from keras_actloss import findings as F
from keras_actloss.diagnostics.records import (
    LayerInfo,
    LayerStats,
    SentinelEvent,
    StepStats,
)
from keras_actloss.diagnostics.thresholds import Thresholds
from keras_actloss.findings import Finding

__all__ = ["FIXES", "HealthRules", "Thresholds", "can_die", "vanishing_layers"]

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
}


def _finite(*values) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def _layer_stats_finite(ls: LayerStats) -> bool:
    values = (ls.grad_norm, ls.grad_rms, ls.grad_max)
    return all(v is None or math.isfinite(v) for v in values)


def can_die(activation: str | None) -> bool:
    """Whether units of this activation can die (zero gradient when inactive).

    Uses the registered activation profile; an unknown name the callback
    still measured dead units for is trusted to be ReLU-like.
    """
    if activation is None:
        return False
    from keras_actloss import registry

    profile = registry.get_profile("activation", activation)
    return True if profile is None else profile.can_die


def vanishing_layers(
    stats: StepStats, layers: list[LayerInfo], t: Thresholds
) -> dict[str, tuple[float, float]] | None:
    """Early layers whose gradients vanish at one recording.

    Returns `{layer: (grad_rms, ratio_to_reference)}` for the layers meeting
    the condition, or None when the recording cannot be judged (too few
    layers with gradients, or the layers near the output are quiet).
    """
    weighted = {info.name for info in layers if info.has_trainable_weights}
    rows = [
        ls
        for ls in stats.layers
        if ls.layer in weighted and _finite(ls.grad_rms, ls.grad_max)
    ]
    n = len(rows)
    if n < t.vanishing_min_layers:
        return None
    reference = rows[-max(2, n // 4) :]
    ref_rms = float(np.median([ls.grad_rms for ls in reference]))
    ref_max = float(np.median([ls.grad_max for ls in reference]))
    if ref_rms < t.vanishing_reference_rms:
        return None
    ratios = [ls.grad_rms / ref_rms for ls in rows]
    found = {}
    for i, ls in enumerate(rows[: n // 2]):
        # Exactly zero is a cut (dead units upstream, unused branch), not a
        # shrinking signal; and a depth effect is progressive: the next layer
        # is well below the output layers too, unlike a lone quiet first
        # layer fed with tiny inputs.
        if (
            ls.grad_rms > 0
            and ratios[i] < t.vanishing_ratio
            and ls.grad_max < t.vanishing_ratio * ref_max
            and ls.grad_rms < t.vanishing_rms
            and ratios[i + 1] < math.sqrt(t.vanishing_ratio)
        ):
            found[ls.layer] = (ls.grad_rms, ratios[i])
    return found


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


class HealthRules:
    """Judges a training run's recordings and reports new findings.

    Stateful: feed it every `StepStats` (and `SentinelEvent`) in step order;
    each call returns only the findings that are new, one per (mode, layer),
    with `step` = the first step of the streak that confirmed it.

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
        self.thresholds = Thresholds.from_value(thresholds)
        if output_layers is None:
            last = max(
                (i for i, info in enumerate(self.layers) if info.has_trainable_weights),
                default=-1,
            )
            output_layers = [info.name for info in self.layers[max(last, 0) :]]
        self.output_layers = frozenset(output_layers)
        self._info = {info.name: info for info in self.layers}
        # Layers whose units can die, looked up once (not per recording).
        self._mortal = {i.name for i in self.layers if can_die(i.activation)}
        self._streaks = _Streaks()
        self._reported: set[tuple[str, str | None]] = set()
        self._baseline: list[float] = []
        self._baseline_median: float | None = None  # Of `_baseline`, cached.
        self._first_loss: float | None = None
        self.findings: list[Finding] = []

    def observe(self, stats: StepStats) -> list[Finding]:
        """Judges one full recording; returns the new findings."""
        new: list[Finding] = []
        if self._broken():
            return new
        loss_bad = stats.loss is not None and not math.isfinite(stats.loss)
        bad_layers = [ls.layer for ls in stats.layers if not _layer_stats_finite(ls)]
        if stats.non_finite or not _finite(stats.global_norm) or loss_bad or bad_layers:
            layer = bad_layers[0] if bad_layers else None
            self._non_finite(new, stats.step, layer, stats.global_norm, stats.loss)
            return self._emit(new)
        if stats.loss is not None and self._first_loss is None:
            self._first_loss = stats.loss
        self._exploding_norm(new, stats.step, stats.global_norm, recording=True)
        self._update_ratios(new, stats)
        self._vanishing(new, stats)
        self._dead_units(new, stats)
        self._saturation(new, stats)
        return self._emit(new)

    def observe_sentinel(self, event: SentinelEvent) -> list[Finding]:
        """Judges one every-step sentinel event; returns the new findings."""
        new: list[Finding] = []
        if self._broken():
            return new
        if event.non_finite or not _finite(event.global_norm):
            self._non_finite(new, event.step, event.layer, event.global_norm, None)
        else:
            self._exploding_norm(new, event.step, event.global_norm, recording=False)
        return self._emit(new)

    def norm_limit(self) -> float:
        """Global norm above which a step counts towards an explosion.

        The every-step sentinel can compare against it in the graph.
        """
        t = self.thresholds
        baseline = self._baseline_norm()
        if baseline is None:
            return t.exploding_norm
        return min(t.exploding_growth * baseline, t.exploding_norm)

    def _baseline_norm(self) -> float | None:
        """Median global norm of the early recordings (None before any)."""
        if self._baseline_median is None and self._baseline:
            self._baseline_median = float(np.median(self._baseline))
        return self._baseline_median

    def _broken(self) -> bool:
        """Whether a non-finite value was reported: the weights are (or soon
        will be) NaN, so every later statistic describes a broken model, and
        judging it would only add consequences (a NaN kernel outputs zeros
        that look like dead units) to the cause."""
        return any(key[0] == F.NON_FINITE for key in self._reported)

    # Rules.

    def _non_finite(self, new, step, layer, norm, loss) -> None:
        where = f"in layer '{layer}'" if layer else "in the model"
        what = f"global gradient norm {norm}" + (
            "" if loss is None else f", loss {loss}"
        )
        message = (
            f"Non-finite gradients {where} at step {step} ({what}): the weights "
            "will become NaN and training cannot recover."
        )
        self._add(new, F.NON_FINITE, layer, step, norm, message)

    def _exploding_norm(self, new, step, norm, recording) -> None:
        t = self.thresholds
        limit = self.norm_limit()
        baseline = self._baseline_norm()
        key = (F.EXPLODING_GRADIENTS, None)
        count, start = self._streaks.update(key, norm > limit, step)
        spike = baseline is not None and norm >= t.exploding_spike_growth * baseline
        if spike or count >= t.exploding_patience:
            growth = (
                ""
                if not baseline
                else f", {norm / baseline:.3g}x its early {baseline:.3g}"
            )
            message = (
                f"The global gradient norm reached {norm:.3g} at step {step}"
                f"{growth}: the gradients are exploding and training diverges."
            )
            self._add(new, F.EXPLODING_GRADIENTS, None, start, norm, message)
        early = len(self._baseline) < t.baseline_recordings
        if recording and count == 0 and norm > 0 and early:
            self._baseline.append(norm)
            self._baseline_median = None

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
            if count >= t.patience:
                message = (
                    f"Each update changes the weights of layer '{ls.layer}' by "
                    f"{ratio:.3g} times their own norm ({count} recordings in a row): "
                    "the steps are far too large and training is unstable."
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
            if hit and count >= t.patience:
                rms, ratio = found[ls.layer]
                message = (
                    f"Layer '{ls.layer}' gets gradients with RMS {rms:.3g}, "
                    f"{ratio:.2g} times those of the layers near the output, for "
                    f"{count} recordings in a row: the early layers have almost "
                    "stopped learning (saturating activations shrink the gradient "
                    "at every layer it passes through)."
                )
                self._add(new, F.VANISHING_GRADIENTS, ls.layer, start, rms, message)

    def _dead_units(self, new, stats: StepStats) -> None:
        t = self.thresholds
        if stats.batch_size is not None and stats.batch_size < t.min_samples:
            return
        for ls in stats.layers:
            if ls.dead_fraction is None or ls.layer not in self._mortal:
                continue
            key = (F.DEAD_RELU, ls.layer)
            hit = ls.dead_fraction >= t.dead_fraction
            count, start = self._streaks.update(key, hit, stats.step)
            if count >= t.patience:
                message = (
                    f"{ls.dead_fraction:.0%} of the units of layer '{ls.layer}' output "
                    f"zero for every sample ({count} recordings in a row): these "
                    "ReLU units are dead, get no gradient and will not recover."
                )
                self._add(new, F.DEAD_RELU, ls.layer, start, ls.dead_fraction, message)

    def _saturation(self, new, stats: StepStats) -> None:
        t = self.thresholds
        converged = self._converged(stats)
        for ls in stats.layers:
            if ls.saturation is None or ls.layer in self.output_layers:
                continue
            key = (F.SATURATED_ACTIVATIONS, ls.layer)
            hit = ls.saturation >= t.saturation and not converged
            count, start = self._streaks.update(key, hit, stats.step)
            if count >= t.patience:
                activation = getattr(self._info.get(ls.layer), "activation", None)
                message = (
                    f"{ls.saturation:.0%} of the outputs of hidden layer '{ls.layer}'"
                    f" ({activation or 'saturating activation'}) are in the flat "
                    f"tails ({count} recordings in a row): its gradient is nearly "
                    "zero there, so it and the layers before it learn very slowly."
                )
                self._add(
                    new,
                    F.SATURATED_ACTIVATIONS,
                    ls.layer,
                    start,
                    ls.saturation,
                    message,
                )

    # Bookkeeping.

    def _add(self, new, mode, layer, step, value, message) -> None:
        if (mode, layer) in self._reported:
            return
        self._reported.add((mode, layer))
        value = None if value is None else float(value)
        new.append(Finding(mode, layer, int(step), value, message, FIXES[mode]))

    def _emit(self, new: list[Finding]) -> list[Finding]:
        self.findings.extend(new)
        return new
