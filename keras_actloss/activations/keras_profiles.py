"""Profiles of the Keras activations that keras_actloss does not implement.

With `profiles.py`, every name in `keras.activations` has a profile, so the
callback can watch any Keras activation: where its output says the gradient
is exactly zero (dead) or flat (saturated). Regions are in output terms, as
the callback sees only outputs.

Thresholds (hand computed; "largest derivative" is its supremum, or 1 where
that is unbounded, as for `exponential`):

- `softsign'(x) = (1 - |y|)^2`: 0.01 at `|y| = 0.9`.
- `log_sigmoid'(x) = 1 - exp(y)`: 0.01 at `y = log(0.99) = -0.01005`.
- `softplus'(x) = 1 - exp(-y)`: 0.01 at `y = -log(0.99) = 0.01005`.
- `exponential'(x) = y`: 0.01 at `y = 0.01`.
- `squareplus'(x) = 4y^2 / (4y^2 + b)`: `0.04 / 4.04 = 0.0099` at `y = 0.1`
  (`b = 4`).
- `mish`'s minimum is `-0.308843413` (at `x = -1.19243`, numeric);
  `hard_silu`'s is `-0.375` (at `x = -1.5`: `-1.5 * 1.5 / 6`).

Some Keras activations have flat regions no output test can find, and their
profiles leave them out: the far negative tails of the non-monotonic gates
(`gelu`, `mish`; outputs there are near 0, like outputs near `x = 0`) and
`tanh_shrink`'s flat centre (`|y| < 3.4e-4`, derivative `tanh(x)^2` below
0.01).
"""

from __future__ import annotations

import dataclasses
import math

from keras_actloss import profiles as _p
from keras_actloss.profiles import ActivationProfile

INF = math.inf
MISH_MIN = -0.30884342  # below the true minimum, -0.308843413
HARD_SILU_MIN = -0.375
FLAT = 0.01  # Saturation threshold: 1% of the largest derivative.
LOG_099 = math.log(0.99)


def _dead_at_zero(name: str, family: str, low: float, text: str) -> ActivationProfile:
    """An activation whose zero outputs (only) have a zero derivative."""
    return ActivationProfile(
        name=name,
        family=family,
        output_range=(low, INF),
        zero_centred=family == _p.SHRINK,
        inactive_from=0.0,
        inactive_below=0.0,
        inactive_gradient=0.0,
        description=text,
    )


def shrink_profile(name: str = "hard_shrink", threshold: float = 0.5):
    """Profile of `hard_shrink` / `soft_shrink`: inputs within the threshold give 0."""
    kind = "Hard" if name == "hard_shrink" else "Soft"
    return _dead_at_zero(
        name,
        _p.SHRINK,
        -INF,
        f"{kind} shrink: |x| <= {float(threshold)} gives 0 with zero derivative.",
    )


def threshold_profile(threshold: float = 0.0, default_value: float = 0.0):
    """Profile of `threshold(x, threshold, default_value)`.

    Inputs at or below `threshold` give `default_value` with a zero
    derivative. When `default_value <= threshold` every other output is
    larger, so the dead region is "outputs <= default_value"; otherwise it is
    that one value.
    """
    value = float(default_value)
    return ActivationProfile(
        name="threshold",
        family=_p.RELU_FAMILY,
        output_range=(min(value, float(threshold)), INF),
        zero_centred=False,
        inactive_from=-INF if value <= threshold else value,
        inactive_below=value,
        inactive_gradient=0.0,
        description=(
            f"Threshold: x <= {float(threshold)} gives {value} with zero derivative."
        ),
    )


def celu_profile(alpha: float = 1.0) -> ActivationProfile:
    """Profile of CELU: ELU with the exponent scaled by `1 / alpha`."""
    alpha = float(alpha)
    return ActivationProfile(
        name="celu",
        family=_p.RELU_FAMILY,
        output_range=(-alpha, INF),
        zero_centred=True,
        inactive_below=0.0,
        inactive_gradient=None,
        # celu'(x) = e^(x / alpha) = y / alpha + 1: 0.01 at y = -0.99 alpha.
        saturation_bounds=(-(1.0 - FLAT) * alpha, INF),
        saturation_gradient=FLAT,
        description=f"CELU: smooth negative part saturating at {-alpha}.",
    )


def squareplus_profile(b: float = 4.0) -> ActivationProfile:
    """Profile of squareplus; flat (1% slope) below `y = 0.1` for `b = 4`."""
    # Where 4y^2 / (4y^2 + b) = 0.0099 as for b = 4: y = 0.1 * sqrt(b / 4).
    bound = 0.1 * math.sqrt(float(b) / 4.0)
    return ActivationProfile(
        name="squareplus",
        family=_p.RELU_FAMILY,
        output_range=(0.0, INF),
        zero_centred=False,
        saturation_bounds=(bound, INF),
        saturation_gradient=0.04 / 4.04,
        description="Squareplus: smooth ReLU; flat for large negative inputs.",
    )


def keras_only_profiles() -> dict[str, ActivationProfile]:
    """The profiles of the Keras activations we do not implement, by name."""
    hard_silu = _dead_at_zero(
        "hard_silu",
        _p.SWISH,
        HARD_SILU_MIN,
        "Hard SiLU: x * relu6(x + 3) / 6; x <= -3 gives 0 with zero derivative.",
    )
    return {
        "celu": celu_profile(),
        "hard_shrink": shrink_profile("hard_shrink"),
        "soft_shrink": shrink_profile("soft_shrink"),
        "threshold": threshold_profile(),
        "squareplus": squareplus_profile(),
        "hard_silu": hard_silu,
        "hard_swish": dataclasses.replace(hard_silu, name="hard_swish"),
        "sparse_plus": ActivationProfile(
            name="sparse_plus",
            family=_p.RELU_FAMILY,
            output_range=(0.0, INF),
            zero_centred=False,
            inactive_below=0.0,
            inactive_gradient=0.0,
            description="Sparse plus: x <= -1 gives 0 with zero derivative.",
        ),
        "hard_tanh": ActivationProfile(
            name="hard_tanh",
            family=_p.TANH,
            output_range=(-1.0, 1.0),
            zero_centred=True,
            saturation_bounds=(-1.0, 1.0),
            saturation_gradient=0.0,
            description="Hard tanh: clipped to [-1, 1], zero derivative there.",
        ),
        "sparse_sigmoid": ActivationProfile(
            name="sparse_sigmoid",
            family=_p.SIGMOID,
            output_range=(0.0, 1.0),
            zero_centred=False,
            saturation_bounds=(0.0, 1.0),
            saturation_gradient=0.0,
            description="Sparse sigmoid: piecewise linear, zero derivative at 0 and 1.",
        ),
        "softsign": ActivationProfile(
            name="softsign",
            family=_p.TANH,
            output_range=(-1.0, 1.0),
            zero_centred=True,
            saturation_bounds=(-0.9, 0.9),
            saturation_gradient=FLAT,
            description="Softsign: like tanh with polynomial tails; flat beyond +-0.9.",
        ),
        "log_sigmoid": ActivationProfile(
            name="log_sigmoid",
            family=_p.LOG,
            output_range=(-INF, 0.0),
            zero_centred=False,
            saturation_bounds=(-INF, LOG_099),
            saturation_gradient=FLAT,
            description="Log-sigmoid: log-probabilities; flat near 0.",
        ),
        "log_softmax": ActivationProfile(
            name="log_softmax",
            family=_p.LOG,
            output_range=(-INF, 0.0),
            zero_centred=False,
            description="Log-softmax: log-probabilities along one axis.",
        ),
        "exponential": ActivationProfile(
            name="exponential",
            family=_p.EXPONENTIAL,
            output_range=(0.0, INF),
            zero_centred=False,
            saturation_bounds=(FLAT, INF),
            saturation_gradient=FLAT,
            description="Exponential: derivative equals the output; flat near 0.",
        ),
        "mish": ActivationProfile(
            name="mish",
            family=_p.SWISH,
            output_range=(MISH_MIN, INF),
            zero_centred=False,
            description="Mish: x * tanh(softplus(x)), a smooth gate like swish.",
        ),
        "glu": ActivationProfile(
            name="glu",
            family=_p.SWISH,
            output_range=(-INF, INF),
            zero_centred=False,
            description="GLU: one half of the axis gated by the sigmoid of the other.",
        ),
        "sparsemax": ActivationProfile(
            name="sparsemax",
            family=_p.SOFTMAX,
            output_range=(0.0, 1.0),
            zero_centred=False,
            produces_probabilities=True,
            description="Sparsemax: a sparse probability distribution along one axis.",
        ),
        "tanh_shrink": ActivationProfile(
            name="tanh_shrink",
            family=_p.SHRINK,
            output_range=(-INF, INF),
            zero_centred=True,
            description="Tanh shrink: x - tanh(x); flat only very near 0.",
        ),
    }
