"""One registry for every public keras-actloss object.

`register(kind)` does two things: it registers the object with Keras's
serialization under the package name `keras_actloss` (so `.keras` files load
without `custom_objects`), and it records the object in a lookup table keyed by
kind. That table drives the `get()` functions, the activation and loss
profiles, the CLI's listings and the common tests.

Kinds: `"activation"` (functions), `"layer"`, `"loss"` (classes) and
`"loss_function"` (per-sample functions).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import keras

PACKAGE = "keras_actloss"
KINDS = ("activation", "layer", "loss", "loss_function")

_T = TypeVar("_T")
_TABLE: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
_PROFILES: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}


def register(kind: str, name: str | None = None, profile: Any = None):
    """Decorator that registers a function or class under `keras_actloss`.

    Args:
        kind: One of `"activation"`, `"layer"`, `"loss"`, `"loss_function"`.
        name: Lookup name. Defaults to the object's `__name__`.
        profile: Optional profile object (an `ActivationProfile` or
            `LossProfile`) describing what the object expects and produces.

    Returns:
        The decorator. It returns the object unchanged.
    """
    if kind not in KINDS:
        raise ValueError(
            f"Argument `kind` must be one of {KINDS}. Received: kind={kind!r}"
        )

    def decorator(obj: _T) -> _T:
        key = name or obj.__name__
        keras.saving.register_keras_serializable(package=PACKAGE, name=key)(obj)
        _TABLE[kind][key] = obj
        if profile is not None:
            _PROFILES[kind][key] = profile
        return obj

    return decorator


def lookup(kind: str, identifier: str) -> Any | None:
    """Returns the object registered as `identifier`, or None.

    Accepts plain names (`"swish"`), Keras's registered names
    (`"keras_actloss>swish"`) and case-insensitive class names for classes.
    """
    table = _TABLE[kind]
    key = identifier
    if key.startswith(PACKAGE + ">"):
        key = key[len(PACKAGE) + 1 :]
    if key in table:
        return table[key]
    lowered = {k.lower(): v for k, v in table.items()}
    return lowered.get(key.lower())


def name_of(kind: str, obj: Any) -> str | None:
    """Returns the registered name of `obj` (or of its class), or None."""
    for key, value in _TABLE[kind].items():
        if value is obj or (isinstance(value, type) and isinstance(obj, value)):
            return key
    return None


def entries(kind: str) -> dict[str, Any]:
    """Returns a copy of the `{name: object}` table for `kind`."""
    return dict(_TABLE[kind])


def profiles(kind: str) -> dict[str, Any]:
    """Returns a copy of the `{name: profile}` table for `kind`."""
    return dict(_PROFILES[kind])


def get_profile(kind: str, key: str) -> Any | None:
    """Returns the profile registered for `key`, or None."""
    return _PROFILES[kind].get(key)


def set_profile(kind: str, key: str, profile: Any) -> None:
    """Records a profile for a name that may not be one of our objects.

    Used for the profiles of Keras built-ins of the same name (`"relu"`), so
    `Dense(activation="relu")` can be reasoned about too.
    """
    _PROFILES[kind][key] = profile


def resolve(kind: str, identifier: Any, what: str) -> Callable | Any:
    """Shared body of the `get()` functions.

    Args:
        kind: Registry kind.
        identifier: None, a name, a config dict or the object itself.
        what: Human name for errors (`"activation"`, `"loss"`).
    """
    if identifier is None:
        return None
    if isinstance(identifier, str):
        found = lookup(kind, identifier)
        if found is None:
            raise ValueError(
                f"Could not interpret {what} identifier. Expected one of "
                f"{sorted(_TABLE[kind])} or a `keras_actloss>` name. "
                f"Received: identifier={identifier!r}"
            )
        return found
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    if callable(identifier):
        return identifier
    raise ValueError(
        f"Could not interpret {what} identifier. Expected a string, a config "
        f"dict or a callable. Received: identifier={identifier!r}"
    )
