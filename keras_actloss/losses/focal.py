"""Per-sample focal cross-entropies: binary, categorical and sparse.

Focal loss multiplies each cross-entropy term by `(1 - p)^gamma`, the
probability the model gives to the wrong answer, so easy, well-classified
samples (most of the majority class) count little and the rare, hard ones
drive the gradient. The binary and categorical functions give Keras's
numbers (same arguments and formulas); Keras has no sparse one. On top of
Keras: `class_weights` and our label-format errors (see
`keras_actloss.losses.validation`).

Reference:
- [Lin et al., 2018](https://arxiv.org/abs/1708.02002)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import keras
from keras import ops

from keras_actloss.losses import validation
from keras_actloss.losses.probabilistic import (
    ClassWeights,
    _binary_loss,
    _categorical_loss,
    _sparse_loss,
    _weights_along,
)
from keras_actloss.losses.profiles import BFCE, CFCE, SFCE
from keras_actloss.registry import register
from keras_actloss.tensor_types import Tensor


@register("loss_function", profile=BFCE)
def binary_focal_crossentropy(
    y_true: Tensor,
    y_pred: Tensor,
    apply_class_balancing: bool = False,
    alpha: float = 0.25,
    gamma: float = 2.0,
    from_logits: bool = False,
    label_smoothing: float = 0.0,
    axis: int = -1,
    class_weights: ClassWeights = None,
) -> Tensor:
    """Binary focal cross-entropy per sample, for 0/1 (or multi-label) targets.

    Use instead of binary cross-entropy when positives are rare: the focal
    factor `(1 - p_t)^gamma` down-weights the many easy negatives. Labels
    outside [0, 1] raise a `ValueError` in eager calls.

    Formula:

    ```
    t = y_true * (1 - label_smoothing) + 0.5 * label_smoothing
    p = sigmoid(y_pred) if from_logits else y_pred
    p_t = t * p + (1 - t) * (1 - p)
    loss = (1 - p_t)^gamma * bce(t, p)
    loss *= alpha * y_true + (1 - alpha) * (1 - y_true)   if apply_class_balancing
    loss *= class_weights[1] * y_true + class_weights[0] * (1 - y_true)
    loss = mean(loss, axis=axis)
    ```

    Examples:

    >>> y_true = np.array([[0.0, 1.0]])
    >>> y_pred = np.array([[0.2, 0.6]])
    >>> # hand computed: (0.2**2 * -log(0.8) + 0.4**2 * -log(0.6)) / 2 = 0.0453
    >>> np.round(keras_actloss.losses.binary_focal_crossentropy(y_true, y_pred), 4)
    array([0.0453])

    Args:
        y_true: Labels in [0, 1], shape `(batch_size, d0, ..., dN)`.
        y_pred: Probabilities, or logits if `from_logits`, same shape.
        apply_class_balancing: Whether to weight positives by `alpha` and
            negatives by `1 - alpha`. Defaults to `False`.
        alpha: Float in [0, 1], the positives' weight when balancing.
            Defaults to `0.25`.
        gamma: Float >= 0, the focusing strength (0 is cross-entropy).
            Defaults to `2.0`.
        from_logits: Whether `y_pred` holds logits. Defaults to `False`.
        label_smoothing: Float in [0, 1]. Defaults to `0.0`.
        axis: Axis the mean is taken over. Defaults to `-1`.
        class_weights: Optional `[weight_of_0, weight_of_1]` (labels before
            smoothing). Defaults to `None`.

    Returns:
        Loss per sample, `y_pred`'s shape without `axis`.
    """
    core = functools.partial(
        _binary_focal_terms,
        apply_class_balancing=apply_class_balancing,
        alpha=alpha,
        gamma=gamma,
        from_logits=from_logits,
    )
    return _binary_loss(
        core,
        y_true,
        y_pred,
        label_smoothing,
        axis,
        class_weights,
        "binary_focal_crossentropy",
    )


def _binary_focal_terms(
    targets: Tensor,
    y_pred: Tensor,
    apply_class_balancing: bool,
    alpha: float,
    gamma: float,
    from_logits: bool,
) -> Tensor:
    """Keras's binary focal terms, elementwise."""
    probs = ops.sigmoid(y_pred) if from_logits else y_pred
    bce = ops.binary_crossentropy(targets, probs, from_logits=False)
    p_t = targets * probs + (1.0 - targets) * (1.0 - probs)
    loss = ops.power(1.0 - p_t, gamma) * bce
    if apply_class_balancing:
        loss = loss * (targets * alpha + (1.0 - targets) * (1.0 - alpha))
    return loss


def _focal_terms(
    targets: Tensor,
    y_pred: Tensor,
    alpha: float | Sequence[float],
    gamma: float,
    from_logits: bool,
    axis: int,
) -> Tensor:
    """Keras's categorical focal terms, summed over `axis`; a list `alpha`
    holds one factor per class (along `axis`)."""
    if from_logits:
        y_pred = ops.softmax(y_pred, axis=axis)
    output = y_pred / ops.sum(y_pred, axis=axis, keepdims=True)
    epsilon = keras.config.epsilon()
    output = ops.clip(output, epsilon, 1.0 - epsilon)
    if validation.is_per_class(alpha):
        alpha = validation.per_class_values(alpha, "alpha")
        validation.check_per_class_length(alpha, output.shape[axis], "alpha")
        alpha = _weights_along(alpha, output, axis)
    terms = ops.power(1.0 - output, gamma) * alpha * (-targets * ops.log(output))
    return ops.sum(terms, axis=axis)


@register("loss_function", profile=CFCE)
def categorical_focal_crossentropy(
    y_true: Tensor,
    y_pred: Tensor,
    alpha: float | Sequence[float] = 0.25,
    gamma: float = 2.0,
    from_logits: bool = False,
    label_smoothing: float = 0.0,
    axis: int = -1,
    class_weights: ClassWeights = None,
) -> Tensor:
    """Categorical focal cross-entropy per sample, for one-hot labels.

    Use instead of categorical cross-entropy when some classes are rare.
    Integer labels raise a `ValueError` naming
    `SparseCategoricalFocalCrossentropy` (static check); a single class
    raises where Keras only warns.

    Formula:

    ```
    t = y_true * (1 - label_smoothing) + label_smoothing / num_classes
    p = softmax(y_pred) if from_logits else y_pred / sum(y_pred)
    loss = sum(alpha * (1 - p)^gamma * -t * log(p), axis=axis)
    loss *= sum(y_true * class_weights, axis=axis)
    ```

    Examples:

    >>> y_true = np.array([[0.0, 1.0, 0.0]])
    >>> y_pred = np.array([[0.1, 0.7, 0.2]])
    >>> # hand computed: 0.25 * 0.3**2 * -log(0.7) = 0.0080
    >>> np.round(keras_actloss.losses.categorical_focal_crossentropy(
    ...     y_true, y_pred), 4)
    array([0.008])

    Args:
        y_true: One-hot labels, same shape as `y_pred`.
        y_pred: Probabilities, or logits if `from_logits`, shape
            `(batch_size, ..., num_classes)`.
        alpha: Float >= 0, a constant factor on every term, or a list of
            them, one per class (as Keras's). Defaults to `0.25`.
        gamma: Float >= 0, the focusing strength (0 with `alpha=1` is
            cross-entropy). Defaults to `2.0`.
        from_logits: Whether `y_pred` holds logits. Defaults to `False`.
        label_smoothing: Float in [0, 1]. Defaults to `0.0`.
        axis: The class axis. Defaults to `-1`.
        class_weights: Optional weight per class; each sample's loss is
            multiplied by the weight of its label. Defaults to `None`.

    Returns:
        Loss per sample, `y_pred`'s shape without `axis`.
    """
    core = functools.partial(
        _focal_terms, alpha=alpha, gamma=gamma, from_logits=from_logits
    )
    return _categorical_loss(
        core,
        y_true,
        y_pred,
        label_smoothing,
        axis,
        class_weights,
        "categorical_focal_crossentropy",
    )


@register("loss_function", profile=SFCE)
def sparse_categorical_focal_crossentropy(
    y_true: Tensor,
    y_pred: Tensor,
    alpha: float | Sequence[float] = 0.25,
    gamma: float = 2.0,
    from_logits: bool = False,
    ignore_class: int | None = None,
    axis: int = -1,
    class_weights: ClassWeights = None,
) -> Tensor:
    """Categorical focal cross-entropy per sample, for integer class labels.

    Equals `categorical_focal_crossentropy` on the one-hot labels (Keras has
    no sparse focal loss). One-hot labels raise a `ValueError` naming
    `CategoricalFocalCrossentropy` (static check); ids outside
    `[0, num_classes)` raise in eager calls.

    Formula:

    ```
    p = softmax(y_pred) if from_logits else y_pred / sum(y_pred)
    loss = alpha * (1 - p[y_true])^gamma * -log(p[y_true])
    loss *= class_weights[y_true]   (0 where ignore_class)
    ```

    Examples:

    >>> y_pred = np.array([[0.1, 0.7, 0.2]])
    >>> # hand computed: 0.25 * 0.3**2 * -log(0.7) = 0.0080
    >>> np.round(keras_actloss.losses.sparse_categorical_focal_crossentropy(
    ...     np.array([1]), y_pred), 4)
    array([0.008])

    Args:
        y_true: Integer class ids, shape `(batch_size, ...)` or with a
            trailing axis of size 1.
        y_pred: Probabilities, or logits if `from_logits`, shape
            `(batch_size, ..., num_classes)`.
        alpha: Float >= 0, a constant factor, or a list of them, one per
            class (the factor of each sample's label). Defaults to `0.25`.
        gamma: Float >= 0, the focusing strength. Defaults to `2.0`.
        from_logits: Whether `y_pred` holds logits. Defaults to `False`.
        ignore_class: Optional class id whose positions get a loss of 0 and
            are left out of the mean. Defaults to `None`.
        axis: The class axis; the last axis only. Defaults to `-1`.
        class_weights: Optional weight per class, multiplying each sample's
            loss by `class_weights[y_true]`. Defaults to `None`.

    Returns:
        Loss per sample, `y_pred`'s shape without `axis`.
    """
    core = functools.partial(
        _sparse_focal_terms, alpha=alpha, gamma=gamma, from_logits=from_logits
    )
    return _sparse_loss(
        core,
        y_true,
        y_pred,
        ignore_class,
        axis,
        class_weights,
        "sparse_categorical_focal_crossentropy",
    )


def _sparse_focal_terms(
    ids: Tensor,
    y_pred: Tensor,
    alpha: float | Sequence[float],
    gamma: float,
    from_logits: bool,
    axis: int,
) -> Tensor:
    """`_focal_terms` of the one-hot labels of the class ids `ids`."""
    ids = ops.cast(ids, "int32")
    one_hot = ops.one_hot(ids, ops.shape(y_pred)[axis], dtype=y_pred.dtype)
    return _focal_terms(one_hot, y_pred, alpha, gamma, from_logits, axis)
