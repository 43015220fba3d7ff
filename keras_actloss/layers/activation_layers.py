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
from keras_actloss.tensor_types import Tensor, is_integral, is_real


def _check_float(name: str, value: Any, *, minimum: float, strict: bool) -> float:
    """Returns `value` as a float, or raises a Keras-style ValueError."""
    ok = is_real(value)
    ok = ok and math.isfinite(value)
    ok = ok and (value > minimum if strict else value >= minimum)
    if not ok:
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise ValueError(
            f"Argument `{name}` must be a finite float {bound}. "
            f"Received: {name}={value!r}"
        )
    return float(value)


def build_at_init(layer: keras.layers.Layer, base: type) -> None:
    """Marks a weightless layer built, unless a subclass overrides `build`.

    As Keras's layers: building at `__init__` is only safe when `build` is
    `base`'s, otherwise the subclass's `build` would never run.
    """
    if type(layer).build is base.build:
        layer.built = True


class _Elementwise(keras.layers.Layer):
    """Base of the weightless element-wise layers: masking, shape, profile.

    Built at construction (they have no weights), except in a subclass that
    overrides `build`, which then runs on first call as usual.
    """

    _profile_name = ""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True
        build_at_init(self, keras.layers.Layer)

    def compute_output_shape(self, input_shape):
        return input_shape

    def activation_profile(self) -> ActivationProfile:
        """The `ActivationProfile` of this layer, given its configuration."""
        return profiles.BUILTIN_PROFILES[self._profile_name]


def _check_relu_argument(name: str, value: Any, allow_none: bool = False) -> Any:
    """Keras's `ReLU` checks and messages, plus: a finite number, not a bool."""
    if value is None and allow_none:
        return None
    number = is_real(value)
    if value is None or (number and value < 0):
        what = "a negative value" if allow_none else "None or a negative value"
        raise ValueError(
            f"{name} of a ReLU layer cannot be {what}. Received: {name}={value}"
        )
    if not number or not math.isfinite(value):
        raise ValueError(
            f"Argument `{name}` must be a finite float >= 0. Received: {name}={value!r}"
        )
    return value if type(value) in (int, float) else float(value)  # NumPy's


@register("layer", profile=profiles.BUILTIN_PROFILES["relu"])
class ReLU(_Elementwise):
    """Rectified linear unit layer, `max(x, 0)`, with Keras's variants.

    The default for hidden layers. Same arguments, numbers, errors and
    config as `keras.layers.ReLU`; see `keras_actloss.activations.relu`.
    Stricter than Keras: arguments must be finite numbers (not bools or
    strings).

    Examples:

    >>> np.round(keras_actloss.layers.ReLU()(np.array([-1.0, 2.0])), 4)
    array([0., 2.], dtype=float32)
    >>> layer = keras_actloss.layers.ReLU(max_value=8, threshold=5)
    >>> np.round(layer(np.array([6.0, 5.0, 10.0])), 4)
    array([6., 0., 8.], dtype=float32)

    Args:
        max_value: Float >= 0 or None, the largest output. Defaults to
            `None` (no cap).
        negative_slope: Float >= 0, slope below `threshold`. Defaults to
            `0.0`.
        threshold: Float >= 0, inputs at or below it are damped. Defaults to
            `0.0`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.
    """

    def __init__(
        self,
        max_value: float | None = None,
        negative_slope: float = 0.0,
        threshold: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.max_value = _check_relu_argument("max_value", max_value, True)
        self.negative_slope = _check_relu_argument("negative_slope", negative_slope)
        self.threshold = _check_relu_argument("threshold", threshold)

    def call(self, inputs: Tensor) -> Tensor:
        return activations.relu(
            inputs,
            negative_slope=self.negative_slope,
            max_value=self.max_value,
            threshold=self.threshold,
        )

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "max_value": self.max_value,
                "negative_slope": self.negative_slope,
                "threshold": self.threshold,
            }
        )
        return config

    def activation_profile(self) -> ActivationProfile:
        # A threshold moves where the inactive region starts, not its outputs
        # (0, or negative with a slope), so the profile does not depend on it.
        return profiles.relu_profile(self.negative_slope, self.max_value)


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

    Stricter than Keras: `negative_slope` must be a finite number (Keras
    accepts `nan` and `inf`).

    Args:
        negative_slope: Finite float >= 0. Defaults to `0.2`, as
            `keras.activations.leaky_relu` (Keras's `LeakyReLU` layer uses
            `0.3`).
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.
    """

    def __init__(self, negative_slope: float = 0.2, **kwargs):
        super().__init__(**kwargs)
        if negative_slope is None:
            raise ValueError(
                "The negative_slope value of a Leaky ReLU layer cannot be None "
                "or negative value. Expected a float. Received: "
                "negative_slope=None"
            )
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

    See `keras_actloss.activations.elu`. Stricter than Keras: `alpha` must
    be a finite number > 0 (Keras does not check it).

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
    See `keras_actloss.activations.softmax`. Stricter than Keras: `axis` is
    checked at construction (Keras fails at the first call).

    Examples:

    >>> layer = keras_actloss.layers.Softmax()
    >>> np.round(layer(np.array([1.0, 2.0, 1.0]), mask=np.array([1, 1, 0])), 4)
    array([0.2689, 0.7311, 0.    ], dtype=float32)

    Args:
        axis: Integer, or tuple / list of integers, the axes the
            probabilities sum to 1 along. Defaults to `-1`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Logits.
        mask: Optional boolean (or 0/1) tensor broadcastable to `inputs`
            NumPy-style (each dimension 1 or the input's; not more
            dimensions); False / 0 marks positions to exclude. Other masks
            raise a `ValueError`, as in Keras.
    """

    _profile_name = "softmax"

    def __init__(self, axis: int | tuple[int, ...] | list[int] = -1, **kwargs):
        super().__init__(**kwargs)
        axes = list(axis) if isinstance(axis, (tuple, list)) else [axis]
        if not axes or not all(is_integral(a) for a in axes):
            raise ValueError(
                "Argument `axis` must be an integer or a non-empty tuple / list "
                f"of integers. Received: axis={axis!r}"
            )
        # NumPy's integers as Python's (the config is JSON).
        if isinstance(axis, (tuple, list)):
            self.axis = type(axis)(int(a) for a in axis)
        else:
            self.axis = int(axis)

    def call(self, inputs: Tensor, mask: Tensor | None = None) -> Tensor:
        return activations.masked_softmax(inputs, mask, axis=self.axis)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"axis": self.axis})
        return config
