"""What each loss expects: label format, logits or probabilities, outputs.

One `LossProfile` per loss, registered with the loss itself and under the
names and aliases Keras uses (`"mse"`, `"kld"`, `"BinaryCrossentropy"`, ...),
so a model compiled with a Keras loss can be reasoned about too.
`profile(x)` resolves `from_logits` for a concrete loss object: a
cross-entropy with probabilities pairs with a sigmoid or softmax output, the
same loss with logits pairs with a linear output.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import keras

from keras_actloss import registry
from keras_actloss.profiles import LossProfile

# Unbounded output activations that suit regression targets.
UNBOUNDED = ("linear", "relu", "leaky_relu", "prelu", "elu", "swish", "softplus")

MSE = LossProfile(
    name="mean_squared_error",
    task="regression",
    label_format="continuous",
    expects="values",
    output_activations=UNBOUNDED,
    description="Squared error; fits the mean, sensitive to outliers.",
)
MAE = dataclasses.replace(
    MSE,
    name="mean_absolute_error",
    robust_to_outliers=True,
    description="Absolute error; fits the median, robust to outliers.",
)
HUBER = dataclasses.replace(
    MSE,
    name="huber",
    robust_to_outliers=True,
    description="Quadratic for small errors, linear for large; robust to outliers.",
)
HINGE = LossProfile(
    name="hinge",
    task="margin",
    label_format="signed",
    expects="values",
    output_activations=("linear", "tanh"),
    description="Maximum-margin loss on -1/1 labels and unbounded scores.",
)
BCE = LossProfile(
    name="binary_crossentropy",
    task="binary",
    label_format="binary",
    expects="probabilities",
    from_logits=False,
    output_activations=("sigmoid",),
    description="Cross-entropy for binary or multi-label 0/1 targets.",
)
CCE = LossProfile(
    name="categorical_crossentropy",
    task="multiclass",
    label_format="one_hot",
    expects="probabilities",
    from_logits=False,
    output_activations=("softmax",),
    description="Cross-entropy for one class out of many, one-hot labels.",
)
SCCE = dataclasses.replace(
    CCE,
    name="sparse_categorical_crossentropy",
    label_format="sparse",
    description="Cross-entropy for one class out of many, integer labels.",
)


def _focal(base: LossProfile, name: str, labels: str) -> LossProfile:
    """The profile of the focal variant of the cross-entropy `base`."""
    return dataclasses.replace(
        base,
        name=name,
        description=f"Focal cross-entropy for {labels}; focuses on hard samples.",
    )


BFCE = _focal(BCE, "binary_focal_crossentropy", "0/1 targets")
CFCE = _focal(CCE, "categorical_focal_crossentropy", "one-hot labels")
SFCE = _focal(SCCE, "sparse_categorical_focal_crossentropy", "integer labels")
KLD = LossProfile(
    name="kl_divergence",
    task="distribution",
    label_format="distribution",
    expects="probabilities",
    output_activations=("softmax",),
    description="Kullback-Leibler divergence between two distributions.",
)
POISSON = LossProfile(
    name="poisson",
    task="regression",
    label_format="count",
    expects="values",
    output_activations=("exponential", "softplus"),
    description="Poisson negative log-likelihood of counts; predicts a rate above 0.",
    prediction_range=(0.0, math.inf),
)

# Keras's names and aliases for the same losses (function names, class names
# and the short aliases `keras.losses.get` accepts).
KERAS_NAMES = {
    MSE: ("mean_squared_error", "mse", "MSE", "MeanSquaredError"),
    MAE: ("mean_absolute_error", "mae", "MAE", "MeanAbsoluteError"),
    HUBER: ("huber", "huber_loss", "Huber"),
    HINGE: ("hinge", "Hinge"),
    BCE: ("binary_crossentropy", "bce", "BCE", "BinaryCrossentropy"),
    CCE: ("categorical_crossentropy", "CategoricalCrossentropy"),
    SCCE: ("sparse_categorical_crossentropy", "SparseCategoricalCrossentropy"),
    BFCE: ("binary_focal_crossentropy", "BinaryFocalCrossentropy"),
    CFCE: ("categorical_focal_crossentropy", "CategoricalFocalCrossentropy"),
    KLD: (
        "kl_divergence",
        "kld",
        "KLD",
        "kullback_leibler_divergence",
        "KLDivergence",
    ),
    POISSON: ("poisson", "Poisson"),
}


def with_logits(base: LossProfile, from_logits: bool | None) -> LossProfile:
    """Returns `base` resolved for `from_logits`.

    Losses without a `from_logits` argument are returned unchanged. With
    logits, `expects` becomes `"logits"` and the loss pairs with a linear
    output; with probabilities it pairs with the base's activation.
    """
    if base.from_logits is None or from_logits is None:
        return base
    if from_logits:
        return dataclasses.replace(
            base, from_logits=True, expects="logits", output_activations=("linear",)
        )
    return dataclasses.replace(
        base,
        from_logits=False,
        expects="probabilities",
        output_activations=_PROBABILITY_OUTPUTS[base.name],
    )


_PROBABILITY_OUTPUTS = {
    p.name: p.output_activations for p in (BCE, CCE, SCCE, BFCE, CFCE, SFCE)
}


def _by_name(name: str) -> LossProfile | None:
    for key in (name, name.split(">")[-1]):
        for kind in ("loss_function", "loss"):
            found = registry.get_profile(kind, key)
            if found is not None:
                return found
    lowered = name.split(">")[-1].lower()
    for kind in ("loss_function", "loss"):
        for key, value in registry.profiles(kind).items():
            if key.lower() == lowered:
                return value
    return None


def _from_logits_of(obj: Any) -> bool | None:
    if hasattr(obj, "from_logits"):
        return bool(obj.from_logits)
    if isinstance(obj, keras.losses.Loss):
        return obj.get_config().get("from_logits")
    return None


def profile(x: Any) -> LossProfile | None:
    """Returns the profile of a loss, resolved for its `from_logits`.

    Accepts our loss classes, instances, functions and names
    (`"huber"`, `"keras_actloss>Huber"`), Keras loss instances (reading
    `from_logits` from their config), Keras loss classes and functions, and
    Keras's names and aliases (`"mse"`, `"binary_crossentropy"`).

    Examples:

    >>> p = keras_actloss.losses.profile(
    ...     keras.losses.BinaryCrossentropy(from_logits=True))
    >>> p.expects, p.output_activations
    ('logits', ('linear',))
    >>> keras_actloss.losses.profile("mse").task
    'regression'

    Args:
        x: A loss name, class, instance or function.

    Returns:
        A `LossProfile`, or None for a loss this package does not know.
    """
    if isinstance(x, str):
        return _by_name(x)
    base = None
    for kind in ("loss", "loss_function"):
        name = registry.name_of(kind, x)
        if name is not None:
            base = registry.get_profile(kind, name)
            break
    if base is None and _is_keras_object(x):
        base = _keras_profile(x)
    if base is None:
        return None
    if isinstance(x, type):
        return base
    return with_logits(base, _from_logits_of(x))


def _is_keras_object(x: Any) -> bool:
    owner = type(x) if isinstance(x, keras.losses.Loss) else x
    module = getattr(owner, "__module__", None) or ""
    return module.split(".")[0] == "keras"


def _keras_profile(x: Any) -> LossProfile | None:
    if isinstance(x, keras.losses.Loss):
        name = type(x).__name__
        if name == "LossFunctionWrapper":
            name = getattr(getattr(x, "fn", None), "__name__", "")
        return _by_name(name)
    return _by_name(getattr(x, "__name__", ""))


for _profile, _names in KERAS_NAMES.items():
    for _name in _names:
        if registry.get_profile("loss", _name) is None:
            registry.set_profile("loss", _name, _profile)
