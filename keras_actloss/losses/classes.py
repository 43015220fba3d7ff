"""Loss classes: `keras.losses.Loss` subclasses over the per-sample functions.

Same arguments and numbers as Keras's classes of the same name. The shared
arguments `reduction`, `name` and `dtype` and the call signature
`loss(y_true, y_pred, sample_weight=None)` are documented once, on
`LossFunctionWrapper`. The classes hold no math: each validates its
arguments, passes them to its function and lists them in `get_config`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keras_actloss.losses import profiles, validation
from keras_actloss.losses.base import ArgumentsWrapper, LossFunctionWrapper
from keras_actloss.losses.probabilistic import (
    binary_crossentropy,
    categorical_crossentropy,
    kl_divergence,
    sparse_categorical_crossentropy,
)
from keras_actloss.losses.regression import (
    hinge,
    huber,
    mean_absolute_error,
    mean_squared_error,
)
from keras_actloss.registry import register

DEFAULT_REDUCTION = "sum_over_batch_size"


@register("loss", profile=profiles.MSE)
class MeanSquaredError(LossFunctionWrapper):
    """Mean of squared errors; see `mean_squared_error`.

    Examples:

    >>> loss = keras_actloss.losses.MeanSquaredError()
    >>> # hand computed: ((1 - 0)**2 + 0) / 2 = 0.5
    >>> round(float(loss(np.array([[0.0, 1.0]]), np.array([[1.0, 1.0]]))), 4)
    0.5
    """

    def __init__(
        self,
        reduction: str | None = DEFAULT_REDUCTION,
        name: str = "mean_squared_error",
        dtype: Any = None,
    ):
        super().__init__(mean_squared_error, reduction, name, dtype)


@register("loss", profile=profiles.MAE)
class MeanAbsoluteError(LossFunctionWrapper):
    """Mean of absolute errors; see `mean_absolute_error`.

    Examples:

    >>> loss = keras_actloss.losses.MeanAbsoluteError()
    >>> # hand computed: (|0 - 2| + 0) / 2 = 1.0
    >>> round(float(loss(np.array([[0.0, 1.0]]), np.array([[2.0, 1.0]]))), 4)
    1.0
    """

    def __init__(
        self,
        reduction: str | None = DEFAULT_REDUCTION,
        name: str = "mean_absolute_error",
        dtype: Any = None,
    ):
        super().__init__(mean_absolute_error, reduction, name, dtype)


@register("loss", profile=profiles.HUBER)
class Huber(ArgumentsWrapper):
    """Huber loss, quadratic below `delta` and linear above; see `huber`.

    Examples:

    >>> loss = keras_actloss.losses.Huber(delta=1.0)
    >>> # hand computed: (0.5 * 0.5**2 + (3 - 0.5)) / 2 = 1.3125
    >>> round(float(loss(np.array([[0.0, 0.0]]), np.array([[0.5, 3.0]]))), 4)
    1.3125

    Args:
        delta: Positive float where the loss turns linear. Defaults to `1.0`.
    """

    def __init__(
        self,
        delta: float = 1.0,
        reduction: str | None = DEFAULT_REDUCTION,
        name: str = "huber_loss",
        dtype: Any = None,
    ):
        super().__init__(
            huber, reduction, name, dtype, delta=validation.validate_delta(delta)
        )


@register("loss", profile=profiles.HINGE)
class Hinge(ArgumentsWrapper):
    """Hinge loss on -1/1 (or 0/1) labels; see `hinge`.

    Label values are checked in eager calls and in `model.fit` (see `hinge`).

    Examples:

    >>> loss = keras_actloss.losses.Hinge()
    >>> # hand computed: (max(1 - 0.5, 0) + max(1 + 0.5, 0)) / 2 = 1.0
    >>> round(float(loss(np.array([[1.0, -1.0]]), np.array([[0.5, 0.5]]))), 4)
    1.0
    """

    def __init__(
        self,
        reduction: str | None = DEFAULT_REDUCTION,
        name: str = "hinge",
        dtype: Any = None,
        check_labels: bool = True,
    ):
        super().__init__(
            hinge,
            reduction,
            name,
            dtype,
            check_labels=validation.validate_check_labels(check_labels),
        )


@register("loss", profile=profiles.KLD)
class KLDivergence(ArgumentsWrapper):
    """Kullback-Leibler divergence between distributions; see `kl_divergence`.

    Examples:

    >>> loss = keras_actloss.losses.KLDivergence()
    >>> # hand computed: 0.5 * log(2) + 0.5 * log(2 / 3) = 0.1438
    >>> round(float(loss(np.array([[0.5, 0.5]]), np.array([[0.25, 0.75]]))), 4)
    0.1438
    """

    def __init__(
        self,
        reduction: str | None = DEFAULT_REDUCTION,
        name: str = "kl_divergence",
        dtype: Any = None,
        check_labels: bool = True,
    ):
        super().__init__(
            kl_divergence,
            reduction,
            name,
            dtype,
            check_labels=validation.validate_check_labels(check_labels),
        )


@register("loss", profile=profiles.BCE)
class BinaryCrossentropy(ArgumentsWrapper):
    """Binary cross-entropy for 0/1 or multi-label targets.

    See `binary_crossentropy` for the formula and for how the labels are
    checked. Prefer `from_logits=True` with a linear output.

    Examples:

    >>> loss = keras_actloss.losses.BinaryCrossentropy(class_weights=[1.0, 3.0])
    >>> # hand computed: -(log(0.8) + 3 * log(0.6)) / 2 = 0.8778
    >>> round(float(loss(np.array([[0.0, 1.0]]), np.array([[0.2, 0.6]]))), 4)
    0.8778

    Args:
        from_logits: Whether `y_pred` holds logits. Defaults to `False`.
        label_smoothing: Float in [0, 1]; squeezes labels towards 0.5.
            Defaults to `0.0`.
        axis: Axis the mean is taken over. Defaults to `-1`.
        class_weights: Optional `[weight_of_0, weight_of_1]`, multiplying each
            element's loss by the weight of its label. Defaults to `None`.
    """

    def __init__(
        self,
        from_logits: bool = False,
        label_smoothing: float = 0.0,
        axis: int = -1,
        reduction: str | None = DEFAULT_REDUCTION,
        name: str = "binary_crossentropy",
        dtype: Any = None,
        class_weights: Sequence[float] | None = None,
        check_labels: bool = True,
    ):
        super().__init__(
            binary_crossentropy,
            reduction,
            name,
            dtype,
            from_logits=validation.validate_from_logits(from_logits),
            label_smoothing=validation.validate_label_smoothing(label_smoothing),
            axis=validation.validate_axis(axis),
            class_weights=validation.validate_class_weights(class_weights, 2),
            check_labels=validation.validate_check_labels(check_labels),
        )


@register("loss", profile=profiles.CCE)
class CategoricalCrossentropy(ArgumentsWrapper):
    """Categorical cross-entropy for one-hot labels.

    See `categorical_crossentropy`. Integer labels raise a `ValueError` that
    points to `SparseCategoricalCrossentropy` (static shape check, also in
    `model.fit`); the label range is checked in eager calls and in
    `model.fit`.

    Examples:

    >>> loss = keras_actloss.losses.CategoricalCrossentropy()
    >>> # hand computed: -log(0.7) = 0.3567
    >>> round(float(loss(np.array([[0.0, 1.0, 0.0]]),
    ...                  np.array([[0.1, 0.7, 0.2]]))), 4)
    0.3567

    Args:
        from_logits: Whether `y_pred` holds logits. Defaults to `False`.
        label_smoothing: Float in [0, 1]; mixes the labels with the uniform
            distribution over the classes along `axis` (Keras's
            `CategoricalCrossentropy` divides by the size of the last axis
            whatever its `axis`; equal at `axis=-1`). Defaults to `0.0`.
        axis: The class axis. Defaults to `-1`.
        class_weights: Optional weight per class; each sample's loss is
            multiplied by the weight of its label. The length is checked
            against the number of classes at call time. Defaults to `None`.
    """

    def __init__(
        self,
        from_logits: bool = False,
        label_smoothing: float = 0.0,
        axis: int = -1,
        reduction: str | None = DEFAULT_REDUCTION,
        name: str = "categorical_crossentropy",
        dtype: Any = None,
        class_weights: Sequence[float] | None = None,
        check_labels: bool = True,
    ):
        super().__init__(
            categorical_crossentropy,
            reduction,
            name,
            dtype,
            from_logits=validation.validate_from_logits(from_logits),
            label_smoothing=validation.validate_label_smoothing(label_smoothing),
            axis=validation.validate_axis(axis),
            class_weights=validation.validate_class_weights(class_weights),
            check_labels=validation.validate_check_labels(check_labels),
        )


@register("loss", profile=profiles.SCCE)
class SparseCategoricalCrossentropy(ArgumentsWrapper):
    """Categorical cross-entropy for integer class labels.

    See `sparse_categorical_crossentropy`. One-hot labels raise a
    `ValueError` that points to `CategoricalCrossentropy` (static shape
    check, also in `model.fit`); class ids are range-checked in eager calls
    and in `model.fit`. With `ignore_class`, the mean is over the positions
    not ignored.

    Examples:

    >>> loss = keras_actloss.losses.SparseCategoricalCrossentropy(
    ...     class_weights=[1.0, 1.0, 2.0])
    >>> # hand computed: (-log(0.7) - 2 * log(0.2)) / 2 = 1.7878
    >>> round(float(loss(np.array([1, 2]),
    ...                  np.array([[0.1, 0.7, 0.2], [0.1, 0.7, 0.2]]))), 4)
    1.7878

    Args:
        from_logits: Whether `y_pred` holds logits. Defaults to `False`.
        ignore_class: Optional class id whose positions are left out of the
            loss. Defaults to `None`.
        axis: The class axis (last axis only, as in Keras). Defaults to `-1`.
        class_weights: Optional weight per class, multiplying each sample's
            loss by `class_weights[y_true]`. Defaults to `None`.
    """

    def __init__(
        self,
        from_logits: bool = False,
        ignore_class: int | None = None,
        reduction: str | None = DEFAULT_REDUCTION,
        axis: int = -1,
        name: str = "sparse_categorical_crossentropy",
        dtype: Any = None,
        class_weights: Sequence[float] | None = None,
        check_labels: bool = True,
    ):
        super().__init__(
            sparse_categorical_crossentropy,
            reduction,
            name,
            dtype,
            from_logits=validation.validate_from_logits(from_logits),
            ignore_class=validation.validate_ignore_class(ignore_class),
            axis=validation.validate_axis(axis),
            class_weights=validation.validate_class_weights(class_weights),
            check_labels=validation.validate_check_labels(check_labels),
        )
