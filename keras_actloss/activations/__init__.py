"""Activation functions, their profiles, and look-up by name.

`get("swish")` or `get("keras_actloss>swish")` returns our function;
`profile(x)` says what an activation (ours or a Keras built-in, given as a
name, a function or a layer) produces and where its gradient vanishes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from keras_actloss import registry
from keras_actloss.activations.functions import (
    elu,
    leaky_relu,
    linear,
    masked_softmax,
    relu,
    sigmoid,
    softmax,
    swish,
    tanh,
)
from keras_actloss.activations.profiles import profile


def get(identifier: Any) -> Callable:
    """Returns the activation function for a name, config or callable.

    Keras does not resolve third-party names in `Dense(activation="...")`;
    this does. Pass the returned function to the layer.

    Examples:

    >>> keras_actloss.activations.get("keras_actloss>swish").__name__
    'swish'
    >>> keras_actloss.activations.get(None) is keras_actloss.activations.linear
    True

    Args:
        identifier: A registered name (`"swish"`, `"keras_actloss>swish"`), a
            serialized config, a callable (returned as is) or None (no
            activation).

    Returns:
        The function; `linear` for None, as `keras.activations.get`.

    Raises:
        ValueError: For unknown names and for anything else.
    """
    if identifier is None:
        return linear
    return registry.resolve("activation", identifier, "activation")


__all__ = [
    "elu",
    "get",
    "leaky_relu",
    "linear",
    "masked_softmax",
    "profile",
    "relu",
    "sigmoid",
    "softmax",
    "swish",
    "tanh",
]
