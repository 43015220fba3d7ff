"""Activation functions on `keras.ops`, stable at extreme inputs.

Each function is registered under `keras_actloss` with its profile, so
`Dense(activation=keras_actloss.activations.swish)` saves and loads.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_actloss.activations.profiles import BUILTIN_PROFILES
from keras_actloss.registry import register
from keras_actloss.tensor_types import Tensor


def _floating(x: Tensor) -> Tensor:
    """`x` as is when floating, else cast to `keras.config.floatx()`."""
    if "float" in keras.backend.standardize_dtype(x.dtype):
        return x
    return ops.cast(x, keras.config.floatx())


def _like(value: float | Tensor, x: Tensor) -> float | Tensor:
    """A Python number as is (full precision); a tensor cast to `x.dtype`."""
    if isinstance(value, (int, float)):
        return value
    return ops.cast(value, x.dtype)


@register("activation", profile=BUILTIN_PROFILES["sigmoid"])
def sigmoid(x: Tensor) -> Tensor:
    """Sigmoid activation, `1 / (1 + exp(-x))`.

    Squashes to `(0, 1)`: the output layer for binary and multi-label
    classification. In hidden layers its tails (outputs below 0.01 or above
    0.99) pass almost no gradient.

    Formula:

    ```
    sigmoid(x) = 1 / (1 + exp(-x))
    ```

    Examples:

    >>> np.round(keras_actloss.activations.sigmoid(np.array([-1.0, 0.0, 1.0])), 4)
    array([0.2689, 0.5   , 0.7311])

    Args:
        x: Input tensor.

    Returns:
        A tensor of the same shape and dtype as `x`.
    """
    return ops.sigmoid(x)


@register("activation", profile=BUILTIN_PROFILES["tanh"])
def tanh(x: Tensor) -> Tensor:
    """Hyperbolic tangent activation.

    Like sigmoid but zero-centred, with outputs in `(-1, 1)`; saturates
    (outputs beyond +-0.99) for large inputs.

    Formula:

    ```
    tanh(x) = (exp(x) - exp(-x)) / (exp(x) + exp(-x))
    ```

    Examples:

    >>> np.round(keras_actloss.activations.tanh(np.array([-1.0, 0.0, 1.0])), 4)
    array([-0.7616,  0.    ,  0.7616])

    Args:
        x: Input tensor.

    Returns:
        A tensor of the same shape and dtype as `x`.
    """
    return ops.tanh(x)


@register("activation", profile=BUILTIN_PROFILES["relu"])
def relu(
    x: Tensor,
    negative_slope: float = 0.0,
    max_value: float | None = None,
    threshold: float = 0.0,
) -> Tensor:
    """Rectified linear unit, `max(x, 0)`, with Keras's optional variants.

    The default for hidden layers: cheap and non-saturating for positive
    inputs. Units whose inputs stay negative get no gradient and can die.
    The arguments are those of `keras.activations.relu` and give the same
    numbers: a slope below the threshold (leaky), a cap (`max_value=6` is
    ReLU6) and a threshold below which inputs are damped.

    Formula:

    ```
    relu(x) = min(x, max_value)                 if x > threshold
            = negative_slope * (x - threshold)  otherwise
    ```

    Examples:

    >>> np.round(keras_actloss.activations.relu(np.array([-1.0, 0.0, 2.0])), 4)
    array([0., 0., 2.])
    >>> x = np.array([-10.0, -5.0, 0.0, 5.0, 10.0])
    >>> # hand computed: 0.5 * (x - 5) for x <= 5, capped at 5 above.
    >>> np.round(keras_actloss.activations.relu(
    ...     x, negative_slope=0.5, max_value=5.0, threshold=5.0), 4)
    array([-7.5, -5. , -2.5,  0. ,  5. ])

    Args:
        x: Input tensor.
        negative_slope: Float, slope below `threshold`. Defaults to `0.0`.
        max_value: Float or None, the largest output (None: no cap).
            Defaults to `None`.
        threshold: Float, inputs at or below it are damped (or zeroed).
            Defaults to `0.0`.

    Returns:
        A tensor of the same shape as `x`; of `x`'s dtype, except that
        integer inputs give floats when `negative_slope` is not 0 (as Keras).
    """
    x = ops.convert_to_tensor(x)
    if negative_slope != 0:
        if threshold == 0 and max_value is None:
            # Keras's too: its gradient at 0 is the slope, not 0 (a layer
            # whose pre-activations start at exactly 0 learns).
            return leaky_relu(x, negative_slope)
        x = _floating(x)
    if threshold == 0 and max_value is None:
        positive = ops.relu(x)
    else:
        kept = ops.greater(x, ops.cast(threshold, x.dtype))
        positive = ops.where(kept, x, ops.zeros_like(x))
        if max_value is not None:
            positive = ops.clip(positive, 0, ops.cast(max_value, x.dtype))
    if negative_slope == 0:
        return positive
    return positive - negative_slope * ops.relu(ops.cast(threshold, x.dtype) - x)


@register("activation", profile=BUILTIN_PROFILES["leaky_relu"])
def leaky_relu(x: Tensor, negative_slope: float | Tensor = 0.2) -> Tensor:
    """Leaky ReLU: ReLU with a small slope for negative inputs.

    Keeps a gradient of `negative_slope` for negative inputs, so units do not
    die. `negative_slope` may be a tensor broadcastable to `x` (PReLU passes
    its learned slope).

    Formula:

    ```
    leaky_relu(x) = x if x >= 0 else negative_slope * x
    ```

    Examples:

    >>> np.round(keras_actloss.activations.leaky_relu(np.array([-1.0, 0.0, 2.0])), 4)
    array([-0.2,  0. ,  2. ])

    Args:
        x: Input tensor.
        negative_slope: Float >= 0, slope for negative inputs. Defaults to
            `0.2`, as `keras.activations.leaky_relu`.

    Returns:
        A tensor of the same shape and dtype as `x` (floats for integer
        inputs, as Keras).

    Reference:
    - [Maas et al., 2013](https://ai.stanford.edu/~amaas/papers/relu_hybrid_icml2013_final.pdf)
    """
    x = _floating(ops.convert_to_tensor(x))
    slope = _like(negative_slope, x)
    # `where`, not `minimum`: the kink's gradient is the slope on every backend
    # (JAX's `minimum` splits a tie's gradient between its arguments).
    return ops.relu(x) + slope * ops.where(x > 0, ops.zeros_like(x), x)


@register("activation", profile=BUILTIN_PROFILES["elu"])
def elu(x: Tensor, alpha: float = 1.0) -> Tensor:
    """Exponential linear unit.

    Smooth negative part that saturates at `-alpha`, which pushes mean
    activations towards zero.

    Formula:

    ```
    elu(x) = x if x > 0 else alpha * (exp(x) - 1)
    ```

    Examples:

    >>> np.round(keras_actloss.activations.elu(np.array([-1.0, 0.0, 2.0])), 4)
    array([-0.6321,  0.    ,  2.    ])

    Args:
        x: Input tensor.
        alpha: Float > 0, the value negative inputs saturate to (negated).
            Defaults to `1.0`.

    Returns:
        A tensor of the same shape and dtype as `x`.

    Reference:
    - [Clevert et al., 2016](https://arxiv.org/abs/1511.07289)
    """
    x = ops.convert_to_tensor(x)
    # Where-safe: exp only ever sees x <= 0, so the unused branch cannot
    # overflow and its (masked) gradient stays finite. `where`, not `minimum`:
    # at the kink the gradient is `alpha` on every backend (JAX's `minimum`
    # halves a tie's gradient).
    negative = _like(alpha, x) * ops.expm1(ops.where(x > 0, ops.zeros_like(x), x))
    return ops.where(x > 0, x, negative)


@register("activation", profile=BUILTIN_PROFILES["swish"])
def swish(x: Tensor, beta: float | Tensor = 1.0) -> Tensor:
    """Swish activation, `x * sigmoid(beta * x)`.

    Smooth and non-monotonic; behaves like ReLU for large `x` but keeps a
    small negative response, so units do not die. With `beta=1` it is
    Keras's `silu`.

    Formula:

    ```
    swish(x) = x / (1 + exp(-beta * x))
    ```

    Examples:

    >>> np.round(keras_actloss.activations.swish(np.array([-1.0, 0.0, 1.0])), 4)
    array([-0.2689,  0.    ,  0.7311])

    Args:
        x: Input tensor.
        beta: Float, sharpness of the gate (may be a scalar tensor). Defaults
            to `1.0`.

    Returns:
        A tensor of the same shape and dtype as `x`.

    Reference:
    - [Ramachandran et al., 2017](https://arxiv.org/abs/1710.05941)
    """
    x = ops.convert_to_tensor(x)
    return x * ops.sigmoid(_like(beta, x) * x)


Axis = int | tuple[int, ...] | list[int]


@register("activation", profile=BUILTIN_PROFILES["softmax"])
def softmax(x: Tensor, axis: Axis = -1) -> Tensor:
    """Softmax: turns logits into a probability distribution along `axis`.

    The output layer for single-label multi-class classification. Computed
    as `exp(x - max(x))` so large logits do not overflow. With several axes
    the probabilities sum to 1 over all of them together.

    Formula:

    ```
    softmax(x)_i = exp(x_i - max(x)) / sum_j exp(x_j - max(x))
    ```

    Examples:

    >>> np.round(keras_actloss.activations.softmax(np.array([1.0, 2.0, 1.0])), 4)
    array([0.2119, 0.5761, 0.2119])

    Args:
        x: Input tensor.
        axis: Integer, or tuple / list of integers, the axes the
            probabilities sum to 1 along. Defaults to `-1`.

    Returns:
        A tensor of the same shape and dtype as `x`.
    """
    if isinstance(axis, list):
        axis = tuple(axis)
    if isinstance(axis, tuple) and len(axis) == 1:
        axis = axis[0]
    return ops.softmax(x, axis=axis)


def _check_mask_shape(x: Tensor, mask: Tensor) -> None:
    """Raises unless `mask` broadcasts to `x` NumPy-style, as Keras's `Softmax`."""
    if len(mask.shape) > len(x.shape):
        raise ValueError(
            "The `mask` must be broadcastable to `inputs` and must not have "
            f"more dimensions. Received: inputs.shape={tuple(x.shape)}, "
            f"mask.shape={tuple(mask.shape)}"
        )
    for m_dim, x_dim in zip(mask.shape[::-1], x.shape[::-1]):
        if None not in (m_dim, x_dim) and m_dim not in (1, x_dim):
            raise ValueError(
                "The `mask` must be broadcastable to `inputs`. Each mask "
                "dimension must be 1 or match the corresponding input "
                f"dimension. Received: inputs.shape={tuple(x.shape)}, "
                f"mask.shape={tuple(mask.shape)}"
            )


def masked_softmax(x: Tensor, mask: Tensor | None = None, axis: Axis = -1) -> Tensor:
    """Softmax in which masked positions (mask False or <= 0.5) get 0.

    The math of Keras's `Softmax` layer called with a mask: the mask
    broadcasts NumPy-style (trailing dimensions aligned, each of size 1 or
    equal to the input's), and a fully masked slice returns all zeros.

    Examples:

    >>> x = np.array([1.0, 2.0, 1.0])
    >>> mask = np.array([True, True, False])
    >>> np.round(keras_actloss.activations.masked_softmax(x, mask), 4)
    array([0.2689, 0.7311, 0.    ])

    Args:
        x: Input tensor.
        mask: Boolean or numeric tensor broadcastable to `x`, or None.
        axis: Integer, or tuple / list of integers, the softmax axes.
            Defaults to `-1`.

    Returns:
        A tensor of the same shape and dtype as `x`.

    Raises:
        ValueError: If `mask` has more dimensions than `x`, or a dimension
            that is neither 1 nor the input's (as Keras's `Softmax`).
    """
    if mask is None:
        return softmax(x, axis=axis)
    x = ops.convert_to_tensor(x)
    mask = ops.convert_to_tensor(mask)
    _check_mask_shape(x, mask)
    if keras.backend.standardize_dtype(mask.dtype) != "bool":
        mask = ops.greater(mask, ops.cast(0.5, mask.dtype))
    # The most negative finite value would overflow `x - max`; this one is
    # far below any logit yet safe in float16 too.
    float16 = keras.backend.standardize_dtype(x.dtype) == "float16"
    low = -3e4 if float16 else -1e9
    probs = softmax(ops.where(mask, x, low), axis=axis)
    return ops.where(mask, probs, ops.zeros_like(probs))


@register("activation", profile=BUILTIN_PROFILES["linear"])
def linear(x: Tensor) -> Tensor:
    """Linear (identity) activation.

    For regression outputs and for logits passed to a loss with
    `from_logits=True`.

    Formula:

    ```
    linear(x) = x
    ```

    Examples:

    >>> keras_actloss.activations.linear(np.array([-1.0, 2.0]))
    array([-1.,  2.])

    Args:
        x: Input tensor.

    Returns:
        `x`, unchanged.
    """
    return x
