"""Activation layers with learnable parameters: `PReLU` and `Swish`."""

from __future__ import annotations

import keras

from keras_actloss import activations
from keras_actloss.activations import profiles
from keras_actloss.layers.activation_layers import (
    _check_float,
    build_at_init,
)
from keras_actloss.profiles import ActivationProfile
from keras_actloss.registry import register
from keras_actloss.tensor_types import Tensor, is_integral


def _check_shared_axes(shared_axes) -> list[int] | None:
    if shared_axes is None:
        return None
    axes = (
        list(shared_axes) if isinstance(shared_axes, (list, tuple)) else [shared_axes]
    )
    for axis in axes:
        if not is_integral(axis) or axis < 1:
            raise ValueError(
                "Argument `shared_axes` must be None, an integer >= 1 or a list "
                "of integers >= 1 (axis 0 is the batch). "
                f"Received: shared_axes={shared_axes!r}"
            )
    return [int(axis) for axis in axes]  # NumPy's as Python's (JSON config).


@register("layer", profile=profiles.prelu_profile())
class PReLU(keras.layers.Layer):
    """Parametric ReLU: Leaky ReLU whose negative slope is learned.

    One slope per unit, or shared across `shared_axes` (e.g. one per channel
    of a convolution with `shared_axes=[1, 2]`), as Keras's `PReLU`.

    Formula:

    ```
    prelu(x) = x if x >= 0 else alpha * x
    ```

    Examples:

    >>> layer = keras_actloss.layers.PReLU(alpha_initializer="ones")
    >>> np.round(layer(np.array([[-2.0, 3.0]])), 4)
    array([[-2.,  3.]], dtype=float32)

    Args:
        alpha_initializer: Initializer for the slopes. Defaults to `"zeros"`,
            as Keras's `PReLU`.
        alpha_regularizer: Regularizer for the slopes. Defaults to `None`.
        alpha_constraint: Constraint for the slopes. Defaults to `None`.
        shared_axes: None, an integer or a list of integers >= 1: axes along
            which slopes are shared. Defaults to `None`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Reference:
    - [He et al., 2015](https://arxiv.org/abs/1502.01852)
    """

    def __init__(
        self,
        alpha_initializer="zeros",
        alpha_regularizer=None,
        alpha_constraint=None,
        shared_axes=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.supports_masking = True
        self.alpha_initializer = keras.initializers.get(alpha_initializer)
        self.alpha_regularizer = keras.regularizers.get(alpha_regularizer)
        self.alpha_constraint = keras.constraints.get(alpha_constraint)
        self.shared_axes = _check_shared_axes(shared_axes)

    def build(self, input_shape):
        shape = list(input_shape[1:])
        for axis in self.shared_axes or []:
            if axis >= len(input_shape):
                raise ValueError(
                    f"Argument `shared_axes` must name axes of the input. "
                    f"Received: shared_axes={self.shared_axes} for an input "
                    f"of shape {tuple(input_shape)}"
                )
            shape[axis - 1] = 1
        self.alpha = self.add_weight(
            shape=tuple(shape),
            name="alpha",
            initializer=self.alpha_initializer,
            regularizer=self.alpha_regularizer,
            constraint=self.alpha_constraint,
        )
        self.built = True

    def call(self, inputs: Tensor) -> Tensor:
        return activations.leaky_relu(inputs, negative_slope=self.alpha)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "alpha_initializer": keras.initializers.serialize(
                    self.alpha_initializer
                ),
                "alpha_regularizer": keras.regularizers.serialize(
                    self.alpha_regularizer
                ),
                "alpha_constraint": keras.constraints.serialize(self.alpha_constraint),
                "shared_axes": self.shared_axes,
            }
        )
        return config

    def activation_profile(self) -> ActivationProfile:
        """The `ActivationProfile` of this layer (`prelu_profile`: its
        units can die while its slopes are all 0, as initialised by
        default)."""
        return profiles.prelu_profile(profiles.prelu_slope_zero(self))


@register("layer", profile=profiles.swish_profile())
class Swish(keras.layers.Layer):
    """Swish layer, `x * sigmoid(beta * x)`, optionally learning `beta`.

    See `keras_actloss.activations.swish`. With `trainable_beta=True` the
    layer holds one scalar weight `beta`, initialised to `beta`.

    Examples:

    >>> np.round(keras_actloss.layers.Swish()(np.array([-1.0, 1.0])), 4)
    array([-0.2689,  0.7311], dtype=float32)

    Args:
        beta: Finite float > 0, sharpness of the gate (initial value when
            learned). Defaults to `1.0`.
        trainable_beta: Bool, whether `beta` is learned. Defaults to `False`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Reference:
    - [Ramachandran et al., 2017](https://arxiv.org/abs/1710.05941)
    """

    def __init__(self, beta: float = 1.0, trainable_beta: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True
        self.beta = _check_float("beta", beta, minimum=0.0, strict=True)
        if not isinstance(trainable_beta, bool):
            raise ValueError(
                "Argument `trainable_beta` must be a bool. "
                f"Received: trainable_beta={trainable_beta!r}"
            )
        self.trainable_beta = trainable_beta
        self.beta_weight = None
        if not trainable_beta:
            build_at_init(self, Swish)

    def build(self, input_shape):
        if self.trainable_beta:
            self.beta_weight = self.add_weight(
                shape=(),
                name="beta",
                initializer=keras.initializers.Constant(self.beta),
            )
        self.built = True

    def call(self, inputs: Tensor) -> Tensor:
        beta = self.beta if self.beta_weight is None else self.beta_weight
        return activations.swish(inputs, beta=beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"beta": self.beta, "trainable_beta": self.trainable_beta})
        return config

    def activation_profile(self) -> ActivationProfile:
        """The `ActivationProfile`; a learned beta leaves the range open."""
        return profiles.swish_profile(None if self.trainable_beta else self.beta)
