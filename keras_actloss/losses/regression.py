"""Per-sample regression and margin losses: MSE, MAE, Huber, hinge.

Each function returns one loss value per sample (the mean over the last
axis), with the same semantics as the Keras function of the same name.
"""

from __future__ import annotations

from keras import ops

from keras_actloss.losses import validation
from keras_actloss.losses.profiles import HINGE, HUBER, MAE, MSE
from keras_actloss.registry import register
from keras_actloss.tensor_types import Tensor, is_real


def _prepare(y_true: Tensor, y_pred: Tensor) -> tuple[Tensor, Tensor]:
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.cast(y_true, y_pred.dtype)
    return validation.match_ranks(y_true, y_pred)


@register("loss_function", profile=MSE)
def mean_squared_error(y_true: Tensor, y_pred: Tensor) -> Tensor:
    """Mean squared error per sample.

    The default regression loss: large errors dominate, so it fits the
    conditional mean but is sensitive to outliers.

    Formula:

    ```
    loss = mean((y_true - y_pred) ** 2, axis=-1)
    ```

    Examples:

    >>> y_true = np.array([[0.0, 1.0], [2.0, 2.0]])
    >>> y_pred = np.array([[1.0, 1.0], [0.0, 2.0]])
    >>> np.round(keras_actloss.losses.mean_squared_error(y_true, y_pred), 4)
    array([0.5, 2. ])

    Args:
        y_true: Targets, shape `(batch_size, d0, ..., dN)`.
        y_pred: Predictions of the same shape.

    Returns:
        Loss per sample, shape `(batch_size, d0, ..., dN-1)`.
    """
    y_true, y_pred = _prepare(y_true, y_pred)
    return ops.mean(ops.square(y_pred - y_true), axis=-1)


@register("loss_function", profile=MAE)
def mean_absolute_error(y_true: Tensor, y_pred: Tensor) -> Tensor:
    """Mean absolute error per sample.

    Robust to outliers (every error counts linearly); fits the conditional
    median. Its gradient has constant size, so it converges less smoothly than
    MSE near the optimum.

    Formula:

    ```
    loss = mean(abs(y_true - y_pred), axis=-1)
    ```

    Examples:

    >>> y_true = np.array([[0.0, 1.0], [2.0, 2.0]])
    >>> y_pred = np.array([[1.0, 1.0], [0.0, 2.0]])
    >>> np.round(keras_actloss.losses.mean_absolute_error(y_true, y_pred), 4)
    array([0.5, 1. ])

    Args:
        y_true: Targets, shape `(batch_size, d0, ..., dN)`.
        y_pred: Predictions of the same shape.

    Returns:
        Loss per sample, shape `(batch_size, d0, ..., dN-1)`.
    """
    y_true, y_pred = _prepare(y_true, y_pred)
    return ops.mean(ops.abs(y_pred - y_true), axis=-1)


@register("loss_function", profile=HUBER)
def huber(y_true: Tensor, y_pred: Tensor, delta: float = 1.0) -> Tensor:
    """Huber loss per sample: quadratic for small errors, linear for large.

    Combines MSE's smooth optimum with MAE's robustness to outliers. Errors
    larger than `delta` count linearly. With a very large `delta` it equals
    half the MSE.

    Formula:

    ```
    e = y_pred - y_true
    loss = mean(0.5 * e**2               if abs(e) <= delta
                delta * (abs(e) - 0.5 * delta)  otherwise, axis=-1)
    ```

    Examples:

    >>> y_true = np.array([[0.0, 0.0]])
    >>> y_pred = np.array([[0.5, 3.0]])
    >>> # hand computed: (0.5 * 0.25 + 1 * (3 - 0.5)) / 2 = 1.3125
    >>> np.round(keras_actloss.losses.huber(y_true, y_pred), 4)
    array([1.3125])

    Args:
        y_true: Targets, shape `(batch_size, d0, ..., dN)`.
        y_pred: Predictions of the same shape.
        delta: Positive float, the error size where the loss turns from
            quadratic to linear. Defaults to `1.0`.

    Returns:
        Loss per sample, shape `(batch_size, d0, ..., dN-1)`.

    Reference:
    - [Huber, 1964](https://doi.org/10.1214/aoms/1177703732)
    """
    if is_real(delta):
        validation.validate_delta(delta)
    y_true, y_pred = _prepare(y_true, y_pred)
    delta = ops.convert_to_tensor(delta, dtype=y_pred.dtype)
    abs_error = ops.abs(y_pred - y_true)
    half = ops.convert_to_tensor(0.5, dtype=y_pred.dtype)
    quadratic = half * ops.square(abs_error)
    linear = delta * abs_error - half * ops.square(delta)
    return ops.mean(ops.where(abs_error <= delta, quadratic, linear), axis=-1)


@register("loss_function", profile=HINGE)
def hinge(y_true: Tensor, y_pred: Tensor, check_labels: bool = True) -> Tensor:
    """Hinge loss per sample, for maximum-margin binary classification.

    Penalises predictions on the wrong side of the margin; correct predictions
    beyond the margin cost nothing. Pair it with a linear (or tanh) output
    producing a score, not a probability.

    Labels must be -1/1; 0/1 labels are converted to -1/1 (when every label
    is 0 or 1, as in Keras). Other label values raise a `ValueError` in
    eager calls, fail a graph assertion with the same message in `model.fit`
    and make the loss NaN under XLA (see `keras_actloss.losses.validation`).

    Formula:

    ```
    loss = mean(maximum(1 - y_true * y_pred, 0), axis=-1)
    ```

    Examples:

    >>> y_true = np.array([[1.0, -1.0]])
    >>> y_pred = np.array([[0.5, 0.5]])
    >>> # hand computed: (max(1 - 0.5, 0) + max(1 + 0.5, 0)) / 2 = 1.0
    >>> np.round(keras_actloss.losses.hinge(y_true, y_pred), 4)
    array([1.])

    Args:
        y_true: Labels -1/1 (or 0/1), shape `(batch_size, d0, ..., dN)`.
        y_pred: Scores of the same shape.
        check_labels: Whether to check the label values. Defaults to `True`.

    Returns:
        Loss per sample, shape `(batch_size, d0, ..., dN-1)`.
    """
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.cast(y_true, y_pred.dtype)
    if check_labels:
        y_true = validation.check_hinge_labels(y_true)
    is_binary = ops.all(ops.logical_or(ops.equal(y_true, 0), ops.equal(y_true, 1)))
    y_true = ops.cond(is_binary, lambda: 2.0 * y_true - 1.0, lambda: y_true)
    return ops.mean(ops.maximum(1.0 - y_true * y_pred, 0.0), axis=-1)
