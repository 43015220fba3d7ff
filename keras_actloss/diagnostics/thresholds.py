"""Thresholds of the health rules, each default with its reason.

`keras_actloss.diagnostics.rules.HealthRules` reads them;
`GradientDiagnostics(thresholds=...)` accepts a dict of the fields to change.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Thresholds of the health rules, with the reason for each default.

    Pass a dict of the fields to change to `GradientDiagnostics(thresholds=...)`;
    `Thresholds.from_value` validates it.

    Examples:

    >>> t = keras_actloss.diagnostics.thresholds.Thresholds.from_value({"patience": 5})
    >>> t.patience, t.dead_fraction
    (5, 0.5)

    Attributes:
        patience: Consecutive recordings a condition must hold before it is
            reported (vanishing, dead, saturated, update ratio). One
            recording can be an unlucky batch; three in a row is a trend.
            Defaults to `3`.
        vanishing_ratio: An early layer is vanishing when its gradient RMS and
            max-abs are below this fraction of those of the layers near the
            output (median of the last quarter, at least two), and the next
            layer's RMS is below its square root (the decay is progressive).
            Healthy ReLU, tanh and batch-normalized nets stay within about 30x
            across depth; a sigmoid multiplies the backward signal by at most
            0.25 per layer, so four sigmoid layers already give 100x.
            Defaults to `1e-2`.
        vanishing_rms: ...and its gradient RMS is below this absolute value
            (healthy layers of a cross-entropy classifier are around 1e-3 to
            1e-2), so a layer that is merely quieter than a loud output layer
            is not flagged. Defaults to `3e-4`.
        vanishing_min_layers: Fewest layers with gradients for the depth
            comparison; below it a "first vs last" ratio is noise and input
            scaling, not depth. Defaults to `4`.
        vanishing_reference_rms: The layers near the output must still have
            at least this gradient RMS (they are still learning); below it
            every layer is quiet and nothing is vanishing relative to
            anything. Defaults to `1e-7`.
        converged_loss_ratio: No vanishing or saturation is reported while
            the loss is below this fraction of the first recorded loss: the
            model has converged, small gradients are expected and saturated
            hidden units are doing their job. Defaults to `1e-3`.
        exploding_growth: The global gradient norm is exploding when it is
            this many times its early baseline (median of the first
            `baseline_recordings` recordings) for `exploding_patience`
            observations in a row: two orders of magnitude, well beyond the
            drift of healthy training. Defaults to `100.0`.
        exploding_spike_growth: A single observation this many times the
            baseline is reported at once. Defaults to `1e4`.
        exploding_norm: Absolute ceiling on the global gradient norm
            (persisting like `exploding_growth`); high enough that unscaled
            regression targets in the hundreds do not trip it. Defaults to
            `1e6`.
        exploding_update_ratio: A layer's `||delta w|| / ||w||` above this for
            `patience` recordings means each step rewrites the weights
            entirely: the learning rate is too high. Healthy training is
            around `1e-3`. Defaults to `1.0`.
        exploding_patience: Consecutive observations (recordings and
            sentinel events) above the growth or norm limit. Defaults to `2`.
        baseline_recordings: Recordings that form the gradient-norm
            baseline. Defaults to `3`.
        dead_fraction: A ReLU layer is dying when at least this fraction of
            its units are zero for every sample of the recorded batch. Half
            the units gone is half the layer's capacity lost. Defaults to
            `0.5`.
        min_samples: Dead units are only judged on recorded batches of at
            least this many samples. A healthy unit active on half the
            samples is zero on all of 8 with probability 0.5^8 = 0.4% (one
            active on 20%: 17%), on a single sample with probability 50%.
            Defaults to `8`.
        saturation: A hidden sigmoid/tanh layer is saturated when at least
            this fraction of its outputs are in the flat tails (derivative
            below 4% of its peak for sigmoid, 2% for tanh), where it passes
            almost no gradient. Defaults to `0.5`.
    """

    patience: int = 3
    vanishing_ratio: float = 1e-2
    vanishing_rms: float = 3e-4
    vanishing_min_layers: int = 4
    vanishing_reference_rms: float = 1e-7
    converged_loss_ratio: float = 1e-3
    exploding_growth: float = 100.0
    exploding_spike_growth: float = 1e4
    exploding_norm: float = 1e6
    exploding_update_ratio: float = 1.0
    exploding_patience: int = 2
    baseline_recordings: int = 3
    dead_fraction: float = 0.5
    min_samples: int = 8
    saturation: float = 0.5

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            _check_threshold(field.name, field.type, value)

    @classmethod
    def from_value(cls, value: None | dict | Thresholds) -> Thresholds:
        """Returns `Thresholds` from None (defaults), a dict or an instance."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise ValueError(
                "Argument `thresholds` must be None, a dict or a `Thresholds`. "
                f"Received: thresholds={value!r}"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ValueError(
                f"Unknown keys in argument `thresholds`: {unknown}. Expected "
                f"keys among {sorted(names)}. Received: thresholds={value!r}"
            )
        return cls(**value)


_FRACTIONS = ("vanishing_ratio", "converged_loss_ratio", "dead_fraction", "saturation")
_GROWTHS = ("exploding_growth", "exploding_spike_growth")


def _check_threshold(name: str, kind: str, value) -> None:
    if kind == "int":
        ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        ok = ok and value >= 1
        expected = "an integer >= 1"
    else:
        ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
        ok = ok and math.isfinite(value) and value > 0
        expected = "a finite number > 0"
        if name in _FRACTIONS:
            ok, expected = ok and value <= 1, "a number in (0, 1]"
        elif name in _GROWTHS:
            ok, expected = ok and value > 1, "a finite number > 1"
    if not ok:
        raise ValueError(
            f"Threshold `{name}` must be {expected}. Received: {name}={value!r}"
        )
