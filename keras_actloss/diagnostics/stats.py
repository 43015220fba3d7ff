"""Gradient and activation statistics as small pure functions.

These functions take tensors (or NumPy arrays) and return scalars or small
vectors built with `keras.ops`, so the same code runs inside the traced
training step (where `GradientDiagnostics` calls it on the real gradients and
layer outputs) and on NumPy arrays in tests. They never touch Keras internals
or TensorBoard.

Statistics that must be combined across replicas come in two parts: a
`*_counts` function that returns sums (which add up across replicas) and a
plain function that turns them into the fraction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from keras import ops

from keras_actloss.profiles import ActivationProfile
from keras_actloss.tensor_types import Tensor


def _present(tensors: Sequence[Tensor | None]) -> list[Tensor]:
    return [ops.convert_to_tensor(t) for t in tensors if t is not None]


def sum_of_squares(tensors: Sequence[Tensor | None]) -> Tensor:
    """Sum of the squared elements of several tensors, in float32.

    Formula:

    ```
    sum_of_squares(g_1, ..., g_k) = sum_i sum_j g_i[j] ** 2
    ```

    Examples:

    >>> float(keras_actloss.diagnostics.stats.sum_of_squares(
    ...     [np.array([3.0]), np.array([[4.0]])]))
    25.0

    Args:
        tensors: Tensors of any shape; None entries (variables without a
            gradient) are skipped.

    Returns:
        A float32 scalar; 0 when there is nothing to sum.
    """
    parts = [ops.sum(ops.square(ops.cast(t, "float32"))) for t in _present(tensors)]
    if not parts:
        return ops.zeros((), "float32")
    return ops.sum(ops.stack(parts))


def l2_norm(tensors: Sequence[Tensor | None]) -> Tensor:
    """L2 norm of several tensors taken together (the "global norm").

    Examples:

    >>> float(keras_actloss.diagnostics.stats.l2_norm(
    ...     [np.array([3.0]), np.array([4.0])]))
    5.0

    Args:
        tensors: Tensors of any shape; None entries are skipped.

    Returns:
        A float32 scalar.
    """
    return ops.sqrt(sum_of_squares(tensors))


global_norm = l2_norm


def element_count(tensors: Sequence[Tensor | None]) -> int:
    """Number of elements in several tensors (a Python int, from static shapes)."""
    return sum(math.prod(ops.shape(t)) for t in _present(tensors))


def rms(tensors: Sequence[Tensor | None]) -> Tensor:
    """Root-mean-square of the elements of several tensors taken together.

    Formula:

    ```
    rms = sqrt(sum_of_squares / number_of_elements)
    ```

    Examples:

    >>> round(float(keras_actloss.diagnostics.stats.rms(
    ...     [np.array([3.0, 4.0]), None])), 4)
    3.5355

    Returns:
        A float32 scalar (0 when there are no elements).
    """
    count = element_count(tensors)
    return ops.sqrt(sum_of_squares(tensors) / max(count, 1))


def max_abs(tensors: Sequence[Tensor | None]) -> Tensor:
    """Largest absolute element of several tensors (NaN if any is NaN).

    Examples:

    >>> float(keras_actloss.diagnostics.stats.max_abs(
    ...     [np.array([1.0, -7.0]), np.array([2.0])]))
    7.0

    Returns:
        A float32 scalar; 0 when there are no elements.
    """
    parts = [ops.max(ops.abs(ops.cast(t, "float32"))) for t in _present(tensors)]
    if not parts:
        return ops.zeros((), "float32")
    stacked = ops.stack(parts)
    # `max` may drop NaN on some kernels; keep it visible.
    return ops.where(ops.any(ops.isnan(stacked)), float("nan"), ops.max(stacked))


def all_finite(tensors: Sequence[Tensor | None]) -> Tensor:
    """Whether every element of every tensor is finite (a bool scalar).

    Examples:

    >>> bool(keras_actloss.diagnostics.stats.all_finite(
    ...     [np.array([1.0]), np.array([np.inf])]))
    False
    """
    parts = [ops.all(ops.isfinite(t)) for t in _present(tensors)]
    if not parts:
        return ops.convert_to_tensor(True)
    return ops.all(ops.stack(parts))


def update_ratio(before: Sequence[Tensor], after: Sequence[Tensor]) -> Tensor:
    """Update-to-weight ratio `||w_after - w_before|| / ||w_before||`.

    A healthy step changes weights by roughly 1e-4 to 1e-2 of their norm;
    much smaller means the layer is not learning, much larger means the step
    is too big.

    Examples:

    >>> float(keras_actloss.diagnostics.stats.update_ratio(
    ...     [np.array([3.0, 4.0])], [np.array([3.0, 4.5])]))
    0.1

    Args:
        before: The variables' values before the update.
        after: Their values after it, in the same order.

    Returns:
        A float32 scalar; 0 when the weights are all zero and unchanged.
    """
    deltas = [ops.subtract(a, b) for a, b in zip(after, before)]
    weight = l2_norm(before)
    return ops.divide_no_nan(l2_norm(deltas), weight)


def _channel_axis(x: Tensor, channel_axis: int) -> int:
    return channel_axis % len(ops.shape(x))


def inactive_mask(x: Tensor, profile: ActivationProfile) -> Tensor:
    """Elements of an activation output in the profile's inactive region.

    For the ReLU family that is `x <= profile.inactive_below` (zero for ReLU,
    negative for Leaky ReLU and ELU); for the shrink family only
    `[inactive_from, inactive_below]` (the outputs of exactly zero).
    """
    inactive = ops.less_equal(x, profile.inactive_below)
    if math.isfinite(profile.inactive_from):
        inactive = ops.logical_and(
            inactive, ops.greater_equal(x, profile.inactive_from)
        )
    return inactive


def saturated_mask(x: Tensor, profile: ActivationProfile) -> Tensor:
    """Elements outside the open interval `profile.saturation_bounds`."""
    low, high = profile.saturation_bounds
    return ops.logical_or(ops.less_equal(x, low), ops.greater_equal(x, high))


def activation_counts(
    x: Tensor, profile: ActivationProfile, channel_axis: int = -1
) -> dict[str, Tensor]:
    """Counts behind the activation statistics, summable across replicas.

    Args:
        x: A layer's output after the activation, batch first.
        profile: The activation's profile.
        channel_axis: Axis of the units (last axis for Dense and channels-last
            convolutions). Defaults to `-1`.

    Returns:
        A dict of float32 tensors: `"elements"` (scalar), and where the
        profile applies, `"inactive"` (scalar count of inactive elements),
        `"active_per_unit"` (vector: active elements per unit, over the batch
        and positions) and `"saturated"` (scalar).
    """
    x = ops.convert_to_tensor(x)
    elements = ops.cast(ops.size(x), "float32")
    counts = {"elements": elements}
    if profile.inactive_below is not None:
        active = ops.cast(ops.logical_not(inactive_mask(x, profile)), "float32")
        axis = _channel_axis(x, channel_axis)
        other = tuple(a for a in range(len(ops.shape(x))) if a != axis)
        counts["active_per_unit"] = ops.sum(active, axis=other)
        counts["inactive"] = elements - ops.sum(counts["active_per_unit"])
    if profile.saturation_bounds is not None:
        saturated = ops.cast(saturated_mask(x, profile), "float32")
        counts["saturated"] = ops.sum(saturated)
    return counts


def dead_units(active_per_unit: Tensor) -> Tensor:
    """Number of units with no active element in the batch (float32)."""
    return ops.sum(ops.cast(ops.equal(active_per_unit, 0.0), "float32"))


def zero_fraction(x: Tensor, profile: ActivationProfile) -> Tensor:
    """Fraction of output elements in the inactive (zero) region.

    About half for a healthy ReLU layer; this alone is not a dead ReLU.

    Examples:

    >>> relu = keras_actloss.activations.profile("relu")
    >>> float(keras_actloss.diagnostics.stats.zero_fraction(
    ...     np.array([[0.0, 1.0], [0.0, 0.0]]), relu))
    0.75
    """
    counts = activation_counts(x, profile)
    return counts["inactive"] / counts["elements"]


def dead_fraction(
    x: Tensor, profile: ActivationProfile, channel_axis: int = -1
) -> Tensor:
    """Fraction of units that are inactive for every sample and position.

    A unit (channel on `channel_axis`) is dead on the batch when none of its
    outputs is active. Only meaningful when `profile.can_die`.

    Examples:

    >>> relu = keras_actloss.activations.profile("relu")
    >>> float(keras_actloss.diagnostics.stats.dead_fraction(
    ...     np.array([[0.0, 1.0], [0.0, 0.0]]), relu))
    0.5
    """
    active = activation_counts(x, profile, channel_axis)["active_per_unit"]
    return dead_units(active) / ops.cast(ops.size(active), "float32")


def saturation_fraction(x: Tensor, profile: ActivationProfile) -> Tensor:
    """Fraction of output elements in a saturating tail (sigmoid, tanh).

    Examples:

    >>> sigmoid = keras_actloss.activations.profile("sigmoid")
    >>> float(keras_actloss.diagnostics.stats.saturation_fraction(
    ...     np.array([0.001, 0.5, 0.995, 0.7]), sigmoid))
    0.5
    """
    counts = activation_counts(x, profile)
    return counts["saturated"] / counts["elements"]
