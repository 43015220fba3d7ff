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
def relu(x: Tensor) -> Tensor:
    """Rectified linear unit, `max(x, 0)`.

    The default for hidden layers: cheap and non-saturating for positive
    inputs. Units whose inputs stay negative get no gradient and can die.

    Formula:

    ```
    relu(x) = x if x > 0 else 0
    ```

    Examples:

    >>> np.round(keras_actloss.activations.relu(np.array([-1.0, 0.0, 2.0])), 4)
    array([0., 0., 2.])

    Args:
        x: Input tensor.

    Returns:
        A tensor of the same shape and dtype as `x`.
    """
    return ops.relu(x)


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
        A tensor of the same shape and dtype as `x`.

    Reference:
    - [Maas et al., 2013](https://ai.stanford.edu/~amaas/papers/relu_hybrid_icml2013_final.pdf)
    """
    x = ops.convert_to_tensor(x)
    slope = _like(negative_slope, x)
    return ops.relu(x) + slope * ops.minimum(x, ops.zeros_like(x))


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
    # overflow and its (masked) gradient stays finite.
    negative = _like(alpha, x) * ops.expm1(ops.minimum(x, ops.zeros_like(x)))
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


@register("activation", profile=BUILTIN_PROFILES["softmax"])
def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """Softmax: turns logits into a probability distribution along `axis`.

    The output layer for single-label multi-class classification. Computed
    as `exp(x - max(x))` so large logits do not overflow.

    Formula:

    ```
    softmax(x)_i = exp(x_i - max(x)) / sum_j exp(x_j - max(x))
    ```

    Examples:

    >>> np.round(keras_actloss.activations.softmax(np.array([1.0, 2.0, 1.0])), 4)
    array([0.2119, 0.5761, 0.2119])

    Args:
        x: Input tensor.
        axis: Integer, the axis the probabilities sum to 1 along. Defaults to
            `-1`.

    Returns:
        A tensor of the same shape and dtype as `x`.
    """
    return ops.softmax(x, axis=axis)


def masked_softmax(x: Tensor, mask: Tensor | None = None, axis: int = -1) -> Tensor:
    """Softmax in which masked positions (mask False or <= 0.5) get 0.

    A fully masked slice returns all zeros. A mask with fewer dimensions than
    `x` (a per-timestep mask from `Embedding(mask_zero=True)`) masks whole
    trailing slices.

    Examples:

    >>> x = np.array([1.0, 2.0, 1.0])
    >>> mask = np.array([True, True, False])
    >>> np.round(keras_actloss.activations.masked_softmax(x, mask), 4)
    array([0.2689, 0.7311, 0.    ])

    Args:
        x: Input tensor.
        mask: Boolean or numeric tensor broadcastable to `x`, or None.
        axis: Integer, the softmax axis. Defaults to `-1`.

    Returns:
        A tensor of the same shape and dtype as `x`.
    """
    if mask is None:
        return softmax(x, axis=axis)
    x = ops.convert_to_tensor(x)
    mask = ops.convert_to_tensor(mask)
    if keras.backend.standardize_dtype(mask.dtype) != "bool":
        mask = ops.greater(mask, 0.5)
    for _ in range(len(x.shape) - len(mask.shape)):
        mask = ops.expand_dims(mask, -1)
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
