"""Thresholds of the health rules, each default with its reason.

`keras_actloss.diagnostics.rules.HealthRules` reads them;
`GradientDiagnostics(thresholds=...)` accepts a dict of the fields to change.
"""

from __future__ import annotations

import dataclasses
import math

from keras_actloss.tensor_types import is_integral, is_real


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
        patience_steps: ...and the steps those recordings must span (first
            to last, inclusive). While recordings are dense (every step at
            the start of training and after a jump) this keeps a bad batch
            and the few steps it disturbs from being enough; at one
            recording in `every_n_steps` it always holds. Every gradient
            exactly zero is judged on every step: it must last this many
            steps in a row. Defaults to `5`.
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
            the loss is below this fraction of the loss where training
            began (the first step's, or on batches of fewer than 32
            samples the median of the first steps' over 32 samples): the
            model has converged, small gradients are expected and saturated
            hidden units are doing their job. Every gradient exactly zero
            is only reported while the loss is above this fraction of its
            early level (median of the first `baseline_steps` steps) and
            above 1e-6: a loss that reached 0 or converged has zero
            gradients legitimately. Defaults to `1e-3`.
        exploding_growth: The global gradient norm is exploding when it is
            this many times both its early baseline (median of the first
            `baseline_steps` steps) and its recent level (median of the
            last 32 normal steps) for `exploding_patience` steps in a row:
            two orders of magnitude, well beyond the drift of healthy
            training. A non-finite step right after a step over this limit
            is reported as the explosion's end. Defaults to `100.0`.
        exploding_spike_growth: A single step this many times the early
            baseline is reported at once. Defaults to `1e4`.
        exploding_loss_rise: A step counts towards an explosion by growth
            (`exploding_growth`, `exploding_spike_growth`; not the absolute
            ceiling) only when its loss is at least this many times the
            recent loss level (median of the last 32 normal steps), or not
            finite: gradients that grow by orders of magnitude while the
            loss falls are a model leaving a plateau (a deep sigmoid stack
            waking up), not training diverging. Defaults to `1.1`.
        exploding_norm: Absolute ceiling on the global gradient norm
            (persisting like `exploding_growth`); high enough that unscaled
            regression targets in the hundreds do not trip it. Defaults to
            `1e6`.
        exploding_update_ratio: A layer's `||delta w|| / ||w||` above this for
            `patience` recordings means each step rewrites the weights
            entirely: the learning rate is too high (not once the layer's
            weights shrank 10x since its first recording: weights that
            collapse, as under a weight decay far too strong). Healthy
            training is around `1e-3`. Defaults to `1.0`.
        exploding_patience: Consecutive steps above the growth or norm
            limit, the last 1.5x the one before it; one more step when the
            norm did not grow so (heavy-tailed batches, such as a rare
            class weighted 100x in small batches, come two in a row by
            chance). Steps no higher than a step over the limit that the
            norm came back down from do not count. Defaults to `2`.
        baseline_steps: Steps whose global gradient norm forms the early
            baseline (steps over the limit are left out). Defaults to `5`.
        jump_factor: A step whose global gradient norm is this many times
            above or below its recent level, or whose learning rate changed
            by this factor, is a jump: `GradientDiagnostics` then records
            densely again, so a collapse that follows is judged within a few
            steps. With a NaN right after such a jump, the NaN is reported
            as the end of an explosion. Defaults to `10.0`.
        dead_fraction: A ReLU layer is dying when at least this fraction of
            its units were zero for every sample of the last recorded
            batches (at least `min_samples` samples). Half the units gone is
            half the layer's capacity lost. Defaults to `0.5`.
        min_samples: Samples (of the most recent recordings together) a dead
            unit must be inactive on. A healthy unit active on a tenth of
            the samples is zero on all of 128 with probability
            0.9^128 = 1e-6; on one batch of 32, 3%. Defaults to `128`.
        saturation: A hidden sigmoid/tanh layer is saturated when at least
            this fraction of its outputs are in the flat tails (derivative
            below 4% of its peak for sigmoid, 2% for tanh): it passes the
            backward signal through at most a quarter of its outputs and
            has almost stopped learning. Models whose first tanh layer had
            two thirds of its outputs there (raw inputs) still trained to
            their usual accuracy. An attention layer is saturated when at
            least this fraction of its queries (of those that see two keys
            or more) are one-hot (a largest weight of 0.99 or more) on every
            recording from its first, while a classifier's loss is not
            under 0.8 of knowing nothing's: attention may learn to look at
            one key. Defaults to `0.75`.
        input_saturation: The first hidden layer with at least this
            fraction of saturated outputs, fed with inputs that are not
            standardized, is reported as `unstandardized_inputs` (a
            warning, with the fix the user can act on). Defaults to `0.5`.
        raw_input_saturation: ...and only counts as `saturated_activations`
            from this fraction on: its weight gradients are the backward
            signal times the large inputs, so the outputs left unsaturated
            still let it learn. Defaults to `0.95`.
        input_scale: Inputs are not standardized when a feature's mean or
            standard deviation (over the recorded batch) is above this in
            absolute value; standardized features sit near 0 and 1.
            Defaults to `2.0`.
        fitted_loss_ratio: No saturation (nor `unstandardized_inputs`) is
            reported while the recent loss (median of the last 32 normal
            steps) is at most this fraction of the early loss (median of the
            first `baseline_steps` steps, and their first), nor are dead
            units of a layer whose units died settling in the first steps:
            the model has learned, and units pushed into the tails as its
            weights keep growing, or switched off as it fitted, did not stop
            it. A tanh regression MLP trained at batch 8 for 6000 steps
            had 78% of its second layer's outputs in the flat tails by step
            5500, its loss at 3-11% of the early loss (epoch means) from
            step 320 on; a 3-class tanh MLP under Adam at 0.05 had 85% of
            its second layer's outputs there from step 121, its loss at
            about a third of the early loss and falling, to a better
            accuracy than at Adam's default rate. Defaults to `0.5`.
    """

    patience: int = 3
    vanishing_ratio: float = 1e-2
    vanishing_rms: float = 3e-4
    vanishing_min_layers: int = 4
    vanishing_reference_rms: float = 1e-7
    converged_loss_ratio: float = 1e-3
    exploding_growth: float = 100.0
    exploding_spike_growth: float = 1e4
    exploding_loss_rise: float = 1.1
    exploding_norm: float = 1e6
    exploding_update_ratio: float = 1.0
    exploding_patience: int = 2
    baseline_steps: int = 5
    jump_factor: float = 10.0
    patience_steps: int = 5
    dead_fraction: float = 0.5
    min_samples: int = 128
    saturation: float = 0.75
    input_saturation: float = 0.5
    raw_input_saturation: float = 0.95
    input_scale: float = 2.0
    fitted_loss_ratio: float = 0.5

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            _check_threshold(field.name, field.type, value)
            # NumPy's numbers (a sweep's) held as Python's (the class is frozen).
            number = int(value) if field.type == "int" else float(value)
            object.__setattr__(self, field.name, number)

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


_FRACTIONS = (
    "vanishing_ratio",
    "converged_loss_ratio",
    "dead_fraction",
    "saturation",
    "input_saturation",
    "raw_input_saturation",
    "fitted_loss_ratio",
)
_GROWTHS = ("exploding_growth", "exploding_spike_growth", "jump_factor")


def _check_threshold(name: str, kind: str, value) -> None:
    if kind == "int":
        ok = is_integral(value) and value >= 1
        expected = "an integer >= 1"
    else:
        ok = is_real(value) and math.isfinite(value) and value > 0
        expected = "a finite number > 0"
        if name in _FRACTIONS:
            ok, expected = ok and value <= 1, "a number in (0, 1]"
        elif name in _GROWTHS:
            ok, expected = ok and value > 1, "a finite number > 1"
    if not ok:
        raise ValueError(
            f"Threshold `{name}` must be {expected}. Received: {name}={value!r}"
        )
