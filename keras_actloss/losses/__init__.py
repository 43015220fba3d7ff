"""Losses: `keras.losses.Loss` classes, per-sample functions and profiles.

Same arguments and numbers as Keras's losses of the same name, plus
`class_weights` on the cross-entropies and clear errors on the classic label
mistakes. Every loss is registered under the package name `keras_actloss`,
so compiled models save to `.keras` and load without `custom_objects`.

Keras does not resolve third-party names in `model.compile(loss="...")`:
pass loss objects (`keras_actloss.losses.Huber()`), or resolve a name first
with `keras_actloss.losses.get("huber")`.
"""

from __future__ import annotations

import inspect
from typing import Any

import keras

from keras_actloss import registry
from keras_actloss.losses.base import LossFunctionWrapper
from keras_actloss.losses.classes import (
    BinaryCrossentropy,
    CategoricalCrossentropy,
    Hinge,
    Huber,
    KLDivergence,
    MeanAbsoluteError,
    MeanSquaredError,
    SparseCategoricalCrossentropy,
)
from keras_actloss.losses.focal import (
    binary_focal_crossentropy,
    categorical_focal_crossentropy,
    sparse_categorical_focal_crossentropy,
)
from keras_actloss.losses.focal_classes import (
    BinaryFocalCrossentropy,
    CategoricalFocalCrossentropy,
    SparseCategoricalFocalCrossentropy,
)
from keras_actloss.losses.probabilistic import (
    binary_crossentropy,
    categorical_crossentropy,
    kl_divergence,
    sparse_categorical_crossentropy,
)
from keras_actloss.losses.profiles import profile
from keras_actloss.losses.regression import (
    hinge,
    huber,
    mean_absolute_error,
    mean_squared_error,
)

# Keras's short aliases for the per-sample functions (lower and upper case,
# as `keras.losses.get` takes them).
_SHORT = {
    "mse": "mean_squared_error",
    "mae": "mean_absolute_error",
    "bce": "binary_crossentropy",
    "kld": "kl_divergence",
}
ALIASES = {
    **_SHORT,
    **{short.upper(): name for short, name in _SHORT.items()},
    "kullback_leibler_divergence": "kl_divergence",
}


def get(identifier: Any) -> Any:
    """Returns a keras-actloss loss from a name, config, class or callable.

    Names of functions (`"huber"`, `"mse"`, `"keras_actloss>huber"`) give the
    per-sample function; class names (`"Huber"`, `"keras_actloss>Huber"`)
    and classes give an instance with default arguments; a config dict gives
    the deserialized instance; any other callable is returned unchanged.

    Examples:

    >>> keras_actloss.losses.get("huber").__name__
    'huber'
    >>> type(keras_actloss.losses.get("keras_actloss>Huber")).__name__
    'Huber'

    Args:
        identifier: None, a name, a config dict, a loss class or a callable.

    Returns:
        A loss function or `keras.losses.Loss` instance, or None.
    """
    if isinstance(identifier, str):
        return _from_name(identifier)
    if inspect.isclass(identifier):
        return identifier()
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(
            identifier, custom_objects=registry.entries("loss")
        )
    return registry.resolve("loss", identifier, "loss")


def _from_name(name: str) -> Any:
    key = (
        name[len(registry.PACKAGE) + 1 :] if name.startswith("keras_actloss>") else name
    )
    key = ALIASES.get(key, key)
    found = registry.entries("loss_function").get(key)
    if found is not None:
        return found
    cls = registry.lookup("loss", key)
    if cls is not None:
        return cls()
    names = sorted(registry.entries("loss_function")) + sorted(registry.entries("loss"))
    raise ValueError(
        "Could not interpret loss identifier. Expected one of "
        f"{names + sorted(ALIASES)} (optionally prefixed with `keras_actloss>`). "
        f"Received: identifier={name!r}"
    )


__all__ = [
    "ALIASES",
    "BinaryCrossentropy",
    "BinaryFocalCrossentropy",
    "CategoricalCrossentropy",
    "CategoricalFocalCrossentropy",
    "Hinge",
    "Huber",
    "KLDivergence",
    "LossFunctionWrapper",
    "MeanAbsoluteError",
    "MeanSquaredError",
    "SparseCategoricalCrossentropy",
    "SparseCategoricalFocalCrossentropy",
    "binary_crossentropy",
    "binary_focal_crossentropy",
    "categorical_crossentropy",
    "categorical_focal_crossentropy",
    "get",
    "hinge",
    "huber",
    "kl_divergence",
    "mean_absolute_error",
    "mean_squared_error",
    "profile",
    "sparse_categorical_crossentropy",
    "sparse_categorical_focal_crossentropy",
]
