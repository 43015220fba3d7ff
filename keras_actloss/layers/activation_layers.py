"""Activation layers: thin Keras adapters around `keras_actloss.activations`.

The layers hold no math; they validate their arguments, call the functions,
serialize their configuration and report their `activation_profile()`.
"""

from __future__ import annotations

import math
from typing import Any

import keras

from keras_actloss import activations
from keras_actloss.activations import profiles
from keras_actloss.profiles import ActivationProfile
from keras_actloss.registry import register
from keras_actloss.tensor_types import Tensor


def _check_float(name: str, value: Any, *, minimum: float, strict: bool) -> float:
    """Returns `value` as a float, or raises a Keras-style ValueError."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value)
    ok = ok and (value > minimum if strict else value >= minimum)
    if not ok:
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise ValueError(
            f"Argument `{name}` must be a finite float {bound}. "
            f"Received: {name}={value!r}"
        )
    return float(value)


class _Elementwise(keras.layers.Layer):
    """Base of the weightless element-wise layers: masking, shape, profile."""

    _profile_name = ""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True
        self.built = True

    def compute_output_shape(self, input_shape):
        return input_shape

    def activation_profile(self) -> ActivationProfile:
        """The `ActivationProfile` of this layer, given its configuration."""
        return profiles.BUILTIN_PROFILES[self._profile_name]


@register("layer", profile=profiles.BUILTIN_PROFILES["relu"])
class ReLU(_Elementwise):
    """Rectified linear unit layer, `max(x, 0)`.

    The default for hidden layers. See `keras_actloss.activations.relu`.

    Examples:

    >>> np.round(keras_actloss.layers.ReLU()(np.array([-1.0, 2.0])), 4)
    array([0., 2.], dtype=float32)

    Args:
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.
    """

    _profile_name = "relu"

    def call(self, inputs: Tensor) -> Tensor:
        return activations.relu(inputs)


@register("layer", profile=profiles.BUILTIN_PROFILES["sigmoid"])
class Sigmoid(_Elementwise):
    """Sigmoid layer: outputs in `(0, 1)`, for binary / multi-label outputs.

    See `keras_actloss.activations.sigmoid`.

    Args:
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.
    """

    _profile_name = "sigmoid"

    def call(self, inputs: Tensor) -> Tensor:
        return activations.sigmoid(inputs)


@register("layer", profile=profiles.BUILTIN_PROFILES["tanh"])
class Tanh(_Elementwise):
    """Hyperbolic tangent layer: zero-centred outputs in `(-1, 1)`.

    See `keras_actloss.activations.tanh`.

    Args:
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.
    """

    _profile_name = "tanh"

    def call(self, inputs: Tensor) -> Tensor:
        return activations.tanh(inputs)


@register("layer", profile=profiles.BUILTIN_PROFILES["leaky_relu"])
class LeakyReLU(_Elementwise):
    """Leaky ReLU layer: slope `negative_slope` for negative inputs.

    Use instead of ReLU when units die. See
    `keras_actloss.activations.leaky_relu`.

    Examples:

    >>> np.round(keras_actloss.layers.LeakyReLU(0.5)(np.array([-2.0, 2.0])), 4)
    array([-1.,  2.], dtype=float32)

    Args:
        negative_slope: Finite float >= 0. Defaults to `0.2`, as
            `keras.activations.leaky_relu` (Keras's `LeakyReLU` layer uses
            `0.3`).
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.
    """

    def __init__(self, negative_slope: float = 0.2, **kwargs):
        super().__init__(**kwargs)
        self.negative_slope = _check_float(
            "negative_slope", negative_slope, minimum=0.0, strict=False
        )

    def call(self, inputs: Tensor) -> Tensor:
        return activations.leaky_relu(inputs, negative_slope=self.negative_slope)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"negative_slope": self.negative_slope})
        return config

    def activation_profile(self) -> ActivationProfile:
        return profiles.leaky_relu_profile(self.negative_slope)


@register("layer", profile=profiles.BUILTIN_PROFILES["elu"])
class ELU(_Elementwise):
    """Exponential linear unit layer; negative outputs saturate at `-alpha`.

    See `keras_actloss.activations.elu`.

    Args:
        alpha: Finite float > 0. Defaults to `1.0`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.
    """

    def __init__(self, alpha: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.alpha = _check_float("alpha", alpha, minimum=0.0, strict=True)

    def call(self, inputs: Tensor) -> Tensor:
        return activations.elu(inputs, alpha=self.alpha)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"alpha": self.alpha})
        return config

    def activation_profile(self) -> ActivationProfile:
        return profiles.elu_profile(self.alpha)


@register("layer", profile=profiles.BUILTIN_PROFILES["softmax"])
class Softmax(_Elementwise):
    """Softmax layer: a probability distribution along `axis`.

    Called with a mask (or after a masking layer), masked positions get
    probability 0 and the rest renormalise, as Keras's `Softmax` does.
    See `keras_actloss.activations.softmax`.

    Examples:

    >>> layer = keras_actloss.layers.Softmax()
    >>> np.round(layer(np.array([1.0, 2.0, 1.0]), mask=np.array([1, 1, 0])), 4)
    array([0.2689, 0.7311, 0.    ], dtype=float32)

    Args:
        axis: Integer, the axis the probabilities sum to 1 along. Defaults to
            `-1`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Logits.
        mask: Optional boolean (or 0/1) tensor broadcastable to `inputs`;
            False / 0 marks positions to exclude.
    """

    _profile_name = "softmax"

    def __init__(self, axis: int = -1, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(axis, int) or isinstance(axis, bool):
            raise ValueError(
                f"Argument `axis` must be an integer. Received: axis={axis!r}"
            )
        self.axis = axis

    def call(self, inputs: Tensor, mask: Tensor | None = None) -> Tensor:
        return activations.masked_softmax(inputs, mask, axis=self.axis)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"axis": self.axis})
        return config
