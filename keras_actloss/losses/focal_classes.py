"""Focal loss classes over the functions in `keras_actloss.losses.focal`.

`BinaryFocalCrossentropy` and `CategoricalFocalCrossentropy` take Keras's
arguments and give Keras's numbers; `SparseCategoricalFocalCrossentropy`
(Keras has none) equals the categorical one on one-hot labels. All three add
`class_weights` and check their arguments (Keras does not: ours are
stricter, `alpha` in [0, 1] for the binary loss, `gamma >= 0`). The shared
arguments `reduction`, `name` and `dtype` are documented on
`LossFunctionWrapper`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keras_actloss.losses import profiles, validation
from keras_actloss.losses.base import ArgumentsWrapper
from keras_actloss.losses.focal import (
    binary_focal_crossentropy,
    categorical_focal_crossentropy,
    sparse_categorical_focal_crossentropy,
)
from keras_actloss.registry import register

DEFAULT_REDUCTION = "sum_over_batch_size"


def _focal_arguments(
    alpha: float | Sequence[float],
    gamma: float,
    alpha_max: float | None,
    from_logits: bool,
    per_class: bool = False,
) -> dict[str, Any]:
    """`alpha`, `gamma` (`alpha` at most `alpha_max`, or one per class with
    `per_class`) and `from_logits`, checked."""
    alpha, gamma = validation.validate_focal(alpha, gamma, alpha_max, per_class)
    return {
        "alpha": alpha,
        "gamma": gamma,
        "from_logits": validation.validate_from_logits(from_logits),
    }


@register("loss", profile=profiles.BFCE)
class BinaryFocalCrossentropy(ArgumentsWrapper):
    """Binary focal cross-entropy: BCE that down-weights easy samples.

    For imbalanced binary or multi-label data; see
    `binary_focal_crossentropy`. With `gamma=0` and no balancing it is
    binary cross-entropy.

    Examples:

    >>> loss = keras_actloss.losses.BinaryFocalCrossentropy(gamma=2.0)
    >>> # hand computed: (0.2**2 * -log(0.8) + 0.4**2 * -log(0.6)) / 2 = 0.0453
    >>> round(float(loss(np.array([[0.0, 1.0]]), np.array([[0.2, 0.6]]))), 4)
    0.0453

    Args:
        apply_class_balancing: Whether to weight positives by `alpha` and
            negatives by `1 - alpha`. Defaults to `False`.
        alpha: Float in [0, 1]. Defaults to `0.25`.
        gamma: Float >= 0, the focusing strength. Defaults to `2.0`.
        from_logits: Whether `y_pred` holds logits. Defaults to `False`.
        label_smoothing: Float in [0, 1]. Defaults to `0.0`.
        axis: Axis the mean is taken over. Defaults to `-1`.
        class_weights: Optional `[weight_of_0, weight_of_1]`. Defaults to
            `None`.
    """

    def __init__(
        self,
        apply_class_balancing: bool = False,
        alpha: float = 0.25,
        gamma: float = 2.0,
        from_logits: bool = False,
        label_smoothing: float = 0.0,
        axis: int = -1,
        reduction: str | None = DEFAULT_REDUCTION,
        name: str = "binary_focal_crossentropy",
        dtype: Any = None,
        class_weights: Sequence[float] | None = None,
    ):
        super().__init__(
            binary_focal_crossentropy,
            reduction,
            name,
            dtype,
            apply_class_balancing=validation.validate_from_logits(
                apply_class_balancing, "apply_class_balancing"
            ),
            **_focal_arguments(alpha, gamma, 1.0, from_logits),
            label_smoothing=validation.validate_label_smoothing(label_smoothing),
            axis=validation.validate_axis(axis),
            class_weights=validation.validate_class_weights(class_weights, 2),
        )


@register("loss", profile=profiles.CFCE)
class CategoricalFocalCrossentropy(ArgumentsWrapper):
    """Categorical focal cross-entropy for one-hot labels of rare classes.

    See `categorical_focal_crossentropy`. Integer labels raise a
    `ValueError` naming `SparseCategoricalFocalCrossentropy`.

    Examples:

    >>> loss = keras_actloss.losses.CategoricalFocalCrossentropy()
    >>> # hand computed: 0.25 * 0.3**2 * -log(0.7) = 0.0080
    >>> round(float(loss(np.array([[0.0, 1.0, 0.0]]),
    ...                  np.array([[0.1, 0.7, 0.2]]))), 4)
    0.008

    Args:
        alpha: Float >= 0, a constant factor, or a list of them, one per
            class (the factor of each sample's label). Defaults to `0.25`.
        gamma: Float >= 0, the focusing strength. Defaults to `2.0`.
        from_logits: Whether `y_pred` holds logits. Defaults to `False`.
        label_smoothing: Float in [0, 1], over the classes along `axis`
            (as `CategoricalCrossentropy`'s; Keras's divides by the size of
            the last axis). Defaults to `0.0`.
        axis: The class axis. Defaults to `-1`.
        class_weights: Optional weight per class. Defaults to `None`.
    """

    def __init__(
        self,
        alpha: float | Sequence[float] = 0.25,
        gamma: float = 2.0,
        from_logits: bool = False,
        label_smoothing: float = 0.0,
        axis: int = -1,
        reduction: str | None = DEFAULT_REDUCTION,
        name: str = "categorical_focal_crossentropy",
        dtype: Any = None,
        class_weights: Sequence[float] | None = None,
    ):
        super().__init__(
            categorical_focal_crossentropy,
            reduction,
            name,
            dtype,
            **_focal_arguments(alpha, gamma, None, from_logits, per_class=True),
            label_smoothing=validation.validate_label_smoothing(label_smoothing),
            axis=validation.validate_axis(axis),
            class_weights=validation.validate_class_weights(class_weights),
        )


@register("loss", profile=profiles.SFCE)
class SparseCategoricalFocalCrossentropy(ArgumentsWrapper):
    """Categorical focal cross-entropy for integer labels of rare classes.

    Keras has no sparse focal loss; this equals `CategoricalFocalCrossentropy`
    on the one-hot labels. See `sparse_categorical_focal_crossentropy`.

    Examples:

    >>> loss = keras_actloss.losses.SparseCategoricalFocalCrossentropy(
    ...     class_weights=[1.0, 2.0, 1.0])
    >>> # hand computed: 2 * 0.25 * 0.3**2 * -log(0.7) = 0.0160
    >>> round(float(loss(np.array([1]), np.array([[0.1, 0.7, 0.2]]))), 4)
    0.016

    Args:
        alpha: Float >= 0, a constant factor, or a list of them, one per
            class (the factor of each sample's label). Defaults to `0.25`.
        gamma: Float >= 0, the focusing strength. Defaults to `2.0`.
        from_logits: Whether `y_pred` holds logits. Defaults to `False`.
        ignore_class: Optional class id left out of the loss. Defaults to
            `None`.
        axis: The class axis (last axis only). Defaults to `-1`.
        class_weights: Optional weight per class. Defaults to `None`.
    """

    def __init__(
        self,
        alpha: float | Sequence[float] = 0.25,
        gamma: float = 2.0,
        from_logits: bool = False,
        ignore_class: int | None = None,
        reduction: str | None = DEFAULT_REDUCTION,
        axis: int = -1,
        name: str = "sparse_categorical_focal_crossentropy",
        dtype: Any = None,
        class_weights: Sequence[float] | None = None,
    ):
        super().__init__(
            sparse_categorical_focal_crossentropy,
            reduction,
            name,
            dtype,
            **_focal_arguments(alpha, gamma, None, from_logits, per_class=True),
            ignore_class=validation.validate_ignore_class(ignore_class),
            axis=validation.validate_axis(axis),
            class_weights=validation.validate_class_weights(class_weights),
        )
