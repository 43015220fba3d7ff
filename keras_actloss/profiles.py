"""What each activation and loss expects and produces.

Profiles are plain data. The registry holds one per registered activation and
loss (and per Keras built-in of the same name), so the rest of the package can
reason about a model without running it: the callback reads which outputs are
dead or saturated, `check_model` reads which output activation pairs with
which loss.
"""

from __future__ import annotations

import dataclasses
import math

INF = math.inf

# Activation families.
RELU_FAMILY = "relu"  # relu, leaky_relu, prelu, elu
SIGMOID = "sigmoid"
TANH = "tanh"
SOFTMAX = "softmax"
LINEAR = "linear"
SWISH = "swish"  # swish, silu, gelu, mish, hard_silu, glu: smooth gates
SHRINK = "shrink"  # hard_shrink, soft_shrink, tanh_shrink
LOG = "log"  # log_sigmoid, log_softmax: log-probabilities
EXPONENTIAL = "exponential"
ACTIVATION_FAMILIES = (
    RELU_FAMILY,
    SIGMOID,
    TANH,
    SOFTMAX,
    LINEAR,
    SWISH,
    SHRINK,
    LOG,
    EXPONENTIAL,
)


@dataclasses.dataclass(frozen=True)
class ActivationProfile:
    """What an activation produces and where its gradient (nearly) vanishes.

    Attributes:
        name: Registered name (`"relu"`, `"leaky_relu"`, ...).
        family: One of `ACTIVATION_FAMILIES`.
        output_range: `(low, high)` bounds of the output (may be infinite).
        zero_centred: Whether outputs are centred on zero.
        produces_probabilities: Whether outputs are probabilities (sigmoid,
            softmax).
        inactive_below: Outputs in `[inactive_from, inactive_below]` are in
            the zero / negative region ("zero activations"): ReLU family,
            shrink functions, hard SiLU, threshold. None when there is none.
        inactive_gradient: Derivative in that region: `0.0` for ReLU (units
            there learn nothing and can die), the slope for Leaky ReLU, None
            when it varies (PReLU, ELU).
        saturation_bounds: Outputs outside the open interval `(low, high)`
            are saturated (sigmoid, tanh, hard tanh, softsign, capped ReLU,
            ...). None when the activation has no flat tail.
        saturation_gradient: Derivative at the saturation bounds, as a
            fraction of the activation's largest derivative, or of 1 where
            that is larger or unbounded (documents the threshold: 0.04 for
            sigmoid at 0.01/0.99; 0.0 where the tail is exactly flat).
        inactive_from: Lower end of the inactive region. `-inf` (every output
            up to `inactive_below`) except where negative outputs are live:
            `0.0` for `hard_shrink`, `soft_shrink` and `hard_silu`, whose
            dead region is the output 0 alone.
        description: One sentence for reports.
    """

    name: str
    family: str
    output_range: tuple[float, float]
    zero_centred: bool
    produces_probabilities: bool = False
    inactive_below: float | None = None
    inactive_gradient: float | None = None
    saturation_bounds: tuple[float, float] | None = None
    saturation_gradient: float | None = None
    description: str = ""
    inactive_from: float = -math.inf

    @property
    def can_die(self) -> bool:
        """True when the inactive region has an exactly zero gradient."""
        return self.inactive_gradient == 0.0

    @property
    def saturates(self) -> bool:
        return self.saturation_bounds is not None


# Loss tasks and label formats.
TASKS = ("regression", "binary", "multiclass", "multilabel", "distribution", "margin")
LABEL_FORMATS = (
    "continuous",
    "count",
    "binary",
    "one_hot",
    "sparse",
    "distribution",
    "signed",
)


@dataclasses.dataclass(frozen=True)
class LossProfile:
    """What a loss expects from labels and predictions.

    Attributes:
        name: Registered name (`"binary_crossentropy"`, ...).
        task: One of `TASKS` the loss is meant for.
        label_format: One of `LABEL_FORMATS`.
        expects: What `y_pred` must be: `"logits"`, `"probabilities"` or
            `"values"` (regression and margin losses).
        from_logits: The instance's `from_logits`, or None if the loss has no
            such argument.
        output_activations: Names of the output activations it pairs with,
            given `from_logits` (e.g. `("sigmoid",)`, or `("linear",)` with
            logits).
        robust_to_outliers: Whether large errors are down-weighted (MAE,
            Huber).
        description: One sentence for reports.
        prediction_range: `(low, high)` open bounds of the predictions the
            loss is defined on: `(0, inf)` for Poisson's rates, whose log it
            takes (a prediction below 0 makes it NaN); the whole line
            for the others (the cross-entropies and KL divergence clip
            their probabilities).
    """

    name: str
    task: str
    label_format: str
    expects: str
    from_logits: bool | None = None
    output_activations: tuple[str, ...] = ()
    robust_to_outliers: bool = False
    description: str = ""
    prediction_range: tuple[float, float] = (-INF, INF)
