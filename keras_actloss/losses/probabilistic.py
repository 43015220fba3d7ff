"""Per-sample probabilistic losses: cross-entropies and KL divergence.

Same semantics and numbers as the Keras functions of the same name; the
cross-entropy cores are `keras.ops`'s numerically stable ones (stable
log-sigmoid / log-softmax for logits, probabilities clipped to
`[epsilon, 1 - epsilon]`). On top of Keras: `class_weights` for imbalanced
data and clear errors on the classic label mistakes, also inside `model.fit`
(see `keras_actloss.losses.validation` for what runs where).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import keras
from keras import ops

from keras_actloss.losses import keras_mask, validation
from keras_actloss.losses.profiles import BCE, CCE, KLD, SCCE
from keras_actloss.registry import register
from keras_actloss.tensor_types import Tensor, is_real

ClassWeights = Sequence[float] | None


def _smoothing(label_smoothing: float) -> float:
    if is_real(label_smoothing):
        validation.validate_label_smoothing(label_smoothing)
    return label_smoothing


def _weights_along(weights: list[float], like: Tensor, axis: int) -> Tensor:
    """The weight vector shaped to broadcast along `axis` of `like`."""
    shape = [1] * len(like.shape)
    shape[axis] = len(weights)
    return ops.reshape(ops.convert_to_tensor(weights, dtype=like.dtype), shape)


def _binary_loss(
    core: Callable[[Tensor, Tensor], Tensor],
    y_true: Tensor,
    y_pred: Tensor,
    label_smoothing: float,
    axis: int,
    class_weights: ClassWeights,
    name: str,
    check_labels: bool = True,
) -> Tensor:
    """The labels of a binary loss around `core(targets, y_pred)`, elementwise.

    Checks the arguments and the labels (errors name `name`), smooths the
    labels towards 0.5, weights each element by its label's class weight
    (labels before smoothing) and takes the mean over `axis`.
    """
    label_smoothing = _smoothing(label_smoothing)
    weights = validation.validate_class_weights(class_weights, length=2)
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.cast(y_true, y_pred.dtype)
    if check_labels:
        # Keras's shape check comes before our label check.
        validation.check_same_shape(y_true, y_pred)
        y_true = validation.check_label_range(y_true, name)
    targets = y_true
    if label_smoothing:
        targets = y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing
    loss = core(targets, y_pred)
    if weights is not None:
        loss = loss * (weights[1] * y_true + weights[0] * (1.0 - y_true))
    return ops.mean(loss, axis=axis)


def _categorical_loss(
    core: Callable[..., Tensor],
    y_true: Tensor,
    y_pred: Tensor,
    label_smoothing: float,
    axis: int,
    class_weights: ClassWeights,
    name: str,
    check_labels: bool = True,
) -> Tensor:
    """The one-hot labels of a loss around `core(targets, y_pred, axis=axis)`.

    Checks the arguments, the label shapes and values (errors name `name`),
    mixes the labels with the uniform distribution and multiplies each
    sample's loss by the weight of its label (labels before smoothing).
    """
    axis = validation.validate_axis(axis)
    label_smoothing = _smoothing(label_smoothing)
    weights = validation.validate_class_weights(class_weights)
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.cast(y_true, y_pred.dtype)
    validation.check_one_hot_shapes(y_true, y_pred, axis, name)
    if check_labels:
        y_true = validation.one_hot_width(y_true, y_pred, axis, name)
        y_true = validation.check_label_range(y_true, name)
    targets = y_true
    if label_smoothing:
        classes = ops.cast(ops.shape(y_true)[axis], y_pred.dtype)
        targets = y_true * (1.0 - label_smoothing) + label_smoothing / classes
    loss = core(targets, y_pred, axis=axis)
    if weights is not None:
        validation.check_per_class_length(weights, y_pred.shape[axis])
        loss = loss * ops.sum(y_true * _weights_along(weights, y_true, axis), axis)
    return loss


def _sparse_loss(
    core: Callable[..., Tensor],
    y_true: Tensor,
    y_pred: Tensor,
    ignore_class: int | None,
    axis: int,
    class_weights: ClassWeights,
    name: str,
    check_labels: bool = True,
    zero_ignored_pred: bool = False,
) -> Tensor:
    """The class ids of a loss around `core(ids, y_pred, axis=axis)`.

    Checks the arguments, the label shapes and ids (errors name `name`),
    multiplies each sample's loss by `class_weights[y_true]` and gives the
    positions of `ignore_class` a loss of 0 and a Keras mask, so the mean
    leaves them out. `zero_ignored_pred` also zeroes `y_pred` there first
    (as Keras's sparse cross-entropy does); `core` sees ignored ids as 0.
    """
    axis = validation.validate_axis(axis)
    weights = validation.validate_class_weights(class_weights)
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.convert_to_tensor(y_true)
    validation.check_sparse_shapes(y_true, y_pred, axis, name)
    classes = y_pred.shape[axis]
    if check_labels:
        y_true = validation.check_sparse_values(y_true, classes, ignore_class, name)
    if weights is not None:
        validation.check_per_class_length(weights, classes)
    if len(y_true.shape) == len(y_pred.shape):
        y_true = validation.squeezed_ids(y_true, axis, name, classes)
    if ignore_class is not None:
        valid = ops.not_equal(y_true, ops.cast(ignore_class, y_true.dtype))
        y_true = ops.where(valid, y_true, 0)
        if zero_ignored_pred:
            y_pred = ops.where(ops.expand_dims(valid, axis), y_pred, 0)
    loss = core(y_true, y_pred, axis=axis)
    if check_labels:
        # A traced invalid batch holds poisoned ids (`check_sparse_values`):
        # NaN on every backend (TensorFlow's kernel gives NaN, JAX's one-hot 0).
        known = ops.logical_and(ops.greater_equal(y_true, 0), ops.less(y_true, classes))
        loss = ops.where(known, loss, ops.full_like(loss, float("nan")))
    if weights is not None:
        weight_table = ops.convert_to_tensor(weights, dtype=loss.dtype)
        loss = loss * ops.take(weight_table, ops.cast(y_true, "int32"))
    if ignore_class is not None:
        loss = ops.where(valid, loss, ops.zeros_like(loss))
        keras_mask.attach_mask(loss, valid)
    return loss


@register("loss_function", profile=BCE)
def binary_crossentropy(
    y_true: Tensor,
    y_pred: Tensor,
    from_logits: bool = False,
    label_smoothing: float = 0.0,
    axis: int = -1,
    class_weights: ClassWeights = None,
    check_labels: bool = True,
) -> Tensor:
    """Binary cross-entropy per sample, for 0/1 (or multi-label) targets.

    Use with one sigmoid output per label, or with raw scores and
    `from_logits=True` (more stable). Labels outside [0, 1] (such as -1/+1)
    raise a `ValueError` in eager calls, fail a graph assertion with the same
    message in `model.fit` and make the loss NaN under XLA (see
    `keras_actloss.losses.validation`).

    Formula:

    ```
    t = y_true * (1 - label_smoothing) + 0.5 * label_smoothing
    p = sigmoid(y_pred) if from_logits else clip(y_pred, eps, 1 - eps)
    w = class_weights[1] * y_true + class_weights[0] * (1 - y_true)
    loss = mean(-w * (t * log(p) + (1 - t) * log(1 - p)), axis=axis)
    ```

    Examples:

    >>> y_true = np.array([[0.0, 1.0]])
    >>> y_pred = np.array([[0.2, 0.6]])
    >>> # hand computed: -(log(0.8) + log(0.6)) / 2 = 0.3670
    >>> np.round(keras_actloss.losses.binary_crossentropy(y_true, y_pred), 4)
    array([0.367])
    >>> # positives weighted 3x: -(log(0.8) + 3 * log(0.6)) / 2 = 0.8778
    >>> np.round(keras_actloss.losses.binary_crossentropy(
    ...     y_true, y_pred, class_weights=[1.0, 3.0]), 4)
    array([0.8778])

    Args:
        y_true: Labels in [0, 1], shape `(batch_size, d0, ..., dN)`.
        y_pred: Probabilities, or logits if `from_logits`, same shape.
        from_logits: Whether `y_pred` holds logits. Defaults to `False`.
        label_smoothing: Float in [0, 1]; squeezes labels towards 0.5.
            Defaults to `0.0`.
        axis: Axis the mean is taken over. Defaults to `-1`.
        class_weights: Optional `[weight_of_0, weight_of_1]`; each element's
            loss is multiplied by the weight of its label (soft labels
            interpolate; weights use the labels before smoothing). Defaults to
            `None` (no weighting).
        check_labels: Whether to check the label values. Defaults to `True`.

    Returns:
        Loss per sample, `y_pred`'s shape without `axis`.
    """
    return _binary_loss(
        functools.partial(ops.binary_crossentropy, from_logits=from_logits),
        y_true,
        y_pred,
        label_smoothing,
        axis,
        class_weights,
        "binary_crossentropy",
        check_labels,
    )


@register("loss_function", profile=CCE)
def categorical_crossentropy(
    y_true: Tensor,
    y_pred: Tensor,
    from_logits: bool = False,
    label_smoothing: float = 0.0,
    axis: int = -1,
    class_weights: ClassWeights = None,
    check_labels: bool = True,
) -> Tensor:
    """Categorical cross-entropy per sample, for one-hot (or soft) labels.

    Use with a softmax output over the classes, or with raw scores and
    `from_logits=True`. Integer labels raise a `ValueError` naming
    `SparseCategoricalCrossentropy` (a static shape check, so it also runs in
    `model.fit`); labels outside [0, 1] raise in eager calls, fail a graph
    assertion in `model.fit` and make the loss NaN under XLA.

    Formula:

    ```
    t = y_true * (1 - label_smoothing) + label_smoothing / num_classes
    p = softmax(y_pred) if from_logits else clip(y_pred / sum(y_pred), eps, 1 - eps)
    loss = -sum(t * log(p), axis=axis) * sum(y_true * class_weights, axis=axis)
    ```

    Examples:

    >>> y_true = np.array([[0.0, 1.0, 0.0]])
    >>> y_pred = np.array([[0.1, 0.7, 0.2]])
    >>> # hand computed: -log(0.7) = 0.3567
    >>> np.round(keras_actloss.losses.categorical_crossentropy(y_true, y_pred), 4)
    array([0.3567])

    Args:
        y_true: One-hot labels, same shape as `y_pred`.
        y_pred: Probabilities, or logits if `from_logits`, shape
            `(batch_size, ..., num_classes)`.
        from_logits: Whether `y_pred` holds logits. Defaults to `False`.
        label_smoothing: Float in [0, 1]; mixes the labels with the uniform
            distribution. Defaults to `0.0`.
        axis: The class axis. Defaults to `-1`.
        class_weights: Optional weight per class (length `num_classes`); each
            sample's loss is multiplied by the weight of its label,
            `sum(y_true * class_weights)` (labels before smoothing). Defaults
            to `None`.
        check_labels: Whether to check the label values. Defaults to `True`.

    Returns:
        Loss per sample, `y_pred`'s shape without `axis`.
    """
    return _categorical_loss(
        functools.partial(ops.categorical_crossentropy, from_logits=from_logits),
        y_true,
        y_pred,
        label_smoothing,
        axis,
        class_weights,
        "categorical_crossentropy",
        check_labels,
    )


@register("loss_function", profile=SCCE)
def sparse_categorical_crossentropy(
    y_true: Tensor,
    y_pred: Tensor,
    from_logits: bool = False,
    ignore_class: int | None = None,
    axis: int = -1,
    class_weights: ClassWeights = None,
    check_labels: bool = True,
) -> Tensor:
    """Categorical cross-entropy per sample, for integer class labels.

    Same loss as `categorical_crossentropy` without building one-hot labels.
    One-hot labels raise a `ValueError` naming `CategoricalCrossentropy` (a
    static shape check, also in `model.fit`); class ids that are not integers
    in `[0, num_classes)` raise a `ValueError` in eager calls, fail a graph
    assertion with the same message (before TensorFlow's own kernel sees
    them) in `model.fit`, and give a NaN loss under XLA.

    Formula:

    ```
    p = softmax(y_pred) if from_logits else clip(y_pred, eps, 1 - eps)
    loss = -log(p[y_true]) * class_weights[y_true]   (0 where ignore_class)
    ```

    Examples:

    >>> y_true = np.array([1, 2])
    >>> y_pred = np.array([[0.1, 0.7, 0.2], [0.1, 0.7, 0.2]])
    >>> # hand computed: -log(0.7) = 0.3567, -log(0.2) = 1.6094
    >>> np.round(keras_actloss.losses.sparse_categorical_crossentropy(
    ...     y_true, y_pred), 4)
    array([0.3567, 1.6094])

    Args:
        y_true: Integer class ids, shape `(batch_size, ...)` or with a
            trailing axis of size 1.
        y_pred: Probabilities, or logits if `from_logits`, shape
            `(batch_size, ..., num_classes)`.
        from_logits: Whether `y_pred` holds logits. Defaults to `False`.
        ignore_class: Optional class id (e.g. a "void" label, `-1` or `255`)
            whose positions get a loss of 0 and are left out of the mean.
            Defaults to `None`.
        axis: The class axis; only the last axis is supported, as in Keras.
            Defaults to `-1`.
        class_weights: Optional weight per class (length `num_classes`); each
            sample's loss is multiplied by `class_weights[y_true]`. Defaults to
            `None`.
        check_labels: Whether to check the label values. Defaults to `True`.

    Returns:
        Loss per sample, `y_pred`'s shape without `axis`.
    """
    return _sparse_loss(
        functools.partial(ops.sparse_categorical_crossentropy, from_logits=from_logits),
        y_true,
        y_pred,
        ignore_class,
        axis,
        class_weights,
        "sparse_categorical_crossentropy",
        check_labels,
        zero_ignored_pred=True,
    )


@register("loss_function", profile=KLD)
def kl_divergence(y_true: Tensor, y_pred: Tensor, check_labels: bool = True) -> Tensor:
    """Kullback-Leibler divergence per sample, from `y_true` to `y_pred`.

    Measures how far the predicted distribution is from the target one; use
    with a softmax output when the targets are distributions (distillation,
    soft labels). Both arguments are clipped to `[epsilon, 1]`, as in Keras.
    Labels outside [0, 1] raise in eager calls, fail a graph assertion in
    `model.fit` and make the loss NaN under XLA.

    Formula:

    ```
    loss = sum(y_true * log(y_true / y_pred), axis=-1)
    ```

    Examples:

    >>> y_true = np.array([[0.5, 0.5]])
    >>> y_pred = np.array([[0.25, 0.75]])
    >>> # hand computed: 0.5 * log(2) + 0.5 * log(2 / 3) = 0.1438
    >>> np.round(keras_actloss.losses.kl_divergence(y_true, y_pred), 4)
    array([0.1438])

    Args:
        y_true: Target distributions, shape `(batch_size, ..., num_classes)`.
        y_pred: Predicted distributions of the same shape.
        check_labels: Whether to check the label values. Defaults to `True`.

    Returns:
        Loss per sample, shape `(batch_size, ...)`.

    Reference:
    - [Kullback & Leibler, 1951](https://doi.org/10.1214/aoms/1177729694)
    """
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.cast(y_true, y_pred.dtype)
    if check_labels:
        validation.check_distribution_shapes(y_true, y_pred, "kl_divergence")
        y_true = validation.check_label_range(y_true, "kl_divergence")
    epsilon = keras.config.epsilon()
    y_true = ops.clip(y_true, epsilon, 1.0)
    y_pred = ops.clip(y_pred, epsilon, 1.0)
    return ops.sum(y_true * ops.log(y_true / y_pred), axis=-1)
