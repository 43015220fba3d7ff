"""Activation statistics as small pure functions.

These functions take tensors (or NumPy arrays) and return scalars or small
vectors built with `keras.ops`, so the same code runs inside the traced
training step (where `GradientDiagnostics` calls `activation_counts` on
the real layer outputs) and on NumPy arrays in tests. They never touch
Keras internals or TensorBoard.

Counts add up across replicas (`activation_counts`); the fractions are
taken from them. The statistics of a whole training step (gradient norms
and extremes in `diagnostics.step_stats`, the activation counts of every
monitored layer in `diagnostics.step_activations`) are combined by layer
on the host by `diagnostics.step_reader`.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from keras_actloss.profiles import ActivationProfile
from keras_actloss.tensor_types import Tensor


def _channel_axis(x: Tensor, channel_axis: int) -> int:
    # The static rank: `ops.shape` adds graph ops for unknown dimensions.
    return channel_axis % len(x.shape)


def active_mask(x: Tensor, profile: ActivationProfile, threshold=None) -> Tensor:
    """Elements of an activation output outside the profile's inactive region.

    For the ReLU family the inactive region is `x <= profile.inactive_below`
    (zero for ReLU, negative for Leaky ReLU and ELU); for the shrink family
    only `[inactive_from, inactive_below]` (the outputs of exactly zero).
    `threshold(value, dtype)`, when given, makes each bound the tensor to
    compare with (a caller that shares them across layers saves graph
    ops).
    """
    bound = threshold or (lambda value, dtype: value)
    active = ops.greater(x, bound(profile.inactive_below, x.dtype))
    if math.isfinite(profile.inactive_from):
        below = ops.less(x, bound(profile.inactive_from, x.dtype))
        active = ops.logical_or(active, below)
    return active


def _counted_by_sign(x: Tensor, profile: ActivationProfile) -> bool:
    """Whether `x`'s active elements are those of sign 1: float32 outputs
    that are never negative, inactive at 0 (ReLU, capped or not)."""
    return (
        keras.backend.standardize_dtype(x.dtype) == "float32"
        and profile.inactive_below == 0.0
        and profile.output_range[0] >= 0.0
    )


def _capped_at(x: Tensor, profile: ActivationProfile) -> float | None:
    """The cap of `x` whose outputs `profile.saturation_bounds` call
    saturated when they reach it (ReLU6's 6) when every output lies in
    `[0, cap]` and `x` is float32: there `floor(x / cap)` is 1 on the
    saturated elements and 0 elsewhere. Else None."""
    low, high = profile.saturation_bounds or (0.0, math.inf)
    inside = profile.output_range[0] >= 0.0 and profile.output_range[1] == high
    capped = low == -math.inf and 0.0 < high < math.inf and inside
    if capped and keras.backend.standardize_dtype(x.dtype) == "float32":
        return high
    return None


def floor_ratio(x: Tensor, cap) -> Tensor:
    """`floor(x / cap)`, a division and a floor. Not `ops.floor_divide`:
    on JAX, that of floats also computes Python's remainder, element by
    element, slower to run and to compile (TensorFlow's `FloorDiv` is one
    graph op, which its step primitives use instead)."""
    return ops.floor(ops.divide(x, cap))


def saturated_mask(x: Tensor, profile: ActivationProfile, threshold=None) -> Tensor:
    """Elements outside the open interval `profile.saturation_bounds`.

    An infinite bound has no tail (ReLU6 saturates above 6 only): no
    comparison is made for it. `threshold` as in `active_mask`.
    """
    bound = threshold or (lambda value, dtype: value)
    low, high = profile.saturation_bounds
    tails = []
    if low > -math.inf:
        tails.append(ops.less_equal(x, bound(low, x.dtype)))
    if high < math.inf:
        tails.append(ops.greater_equal(x, bound(high, x.dtype)))
    if not tails:
        return ops.zeros_like(x, "bool")
    return tails[0] if len(tails) == 1 else ops.logical_or(*tails)


def activation_counts(
    x: Tensor,
    profile: ActivationProfile,
    channel_axis: int = -1,
    elements: bool = True,
    threshold=None,
    count=None,
    ratio=None,
) -> dict[str, Tensor]:
    """Counts behind the activation statistics, summable across replicas.

    Args:
        x: A layer's output after the activation, batch first.
        profile: The activation's profile.
        channel_axis: Axis of the units (last axis for Dense and channels-last
            convolutions). Defaults to `-1`.
        elements: Whether to count the elements too (a caller that knows
            them from static shapes saves the graph ops). Defaults to `True`.
        threshold: As in `active_mask`. Defaults to `None`.
        count: `count(mask, axes)`, the float32 count of a boolean mask's
            True elements along `axes`, and the float32 sum of a float32
            tensor of 0 and 1 (a caller in a traced step passes one
            with fewer graph ops). Defaults to `None`: `keras.ops`.
        ratio: `ratio(x, cap)`, `floor(x / cap)` (the same caller passes
            one graph op). Defaults to `None`: `floor_ratio`.

    Returns:
        A dict of float32 tensors: `"elements"` (scalar, with `elements`),
        and where the
        profile applies, `"active_per_unit"` (vector: active elements per
        unit, over the batch and positions) and `"saturated"` (scalar).
    """
    x = ops.convert_to_tensor(x)
    shape = tuple(x.shape)
    count = count or (lambda mask, axes: ops.sum(ops.cast(mask, "float32"), axes))
    counts = {}
    if not elements:
        pass
    elif all(isinstance(d, int) for d in shape):
        counts["elements"] = ops.convert_to_tensor(float(math.prod(shape)), "float32")
    else:
        counts["elements"] = ops.cast(ops.size(x), "float32")
    bound = threshold or (lambda value, dtype: value)
    # For outputs in `[0, cap]` (float32) the sign and `floor(x / cap)` are
    # the active and saturated elements as 1 and 0: one TensorFlow graph op
    # each (`ratio`: `FloorDiv`) where a comparison needs a cast too. A NaN
    # output makes its unit's count NaN: the host then reports no fraction
    # for the layer and takes no unit for dead.
    if profile.inactive_below is not None:
        axis = _channel_axis(x, channel_axis)
        other = tuple(a for a in range(len(shape)) if a != axis)
        if _counted_by_sign(x, profile):
            active = ops.sign(x)
        else:
            active = active_mask(x, profile, threshold)
        counts["active_per_unit"] = count(active, other)
    if profile.saturation_bounds is not None:
        cap = _capped_at(x, profile)
        if cap is not None:
            saturated = (ratio or floor_ratio)(x, bound(cap, x.dtype))
        else:
            saturated = saturated_mask(x, profile, threshold)
        counts["saturated"] = count(saturated, tuple(range(len(shape))))
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
    return 1.0 - ops.sum(counts["active_per_unit"]) / counts["elements"]


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


def data_saturation(data: np.ndarray, profile: ActivationProfile) -> float | None:
    """The fraction of `data`'s elements in `profile`'s saturating tails,
    when all of them lie in its output range: data the activation could
    have produced (images in `[-1, 1]` for tanh, in `[0, 1]` for sigmoid),
    as the last layer of a generator or a decoder does. None otherwise,
    for data without finite elements, or a profile that does not saturate.

    A host-side check on a kept batch (NumPy).

    Examples:

    >>> tanh = keras_actloss.activations.profile("tanh")
    >>> keras_actloss.diagnostics.stats.data_saturation(
    ...     np.array([[-1.0, -1.0], [0.5, 1.0]]), tanh)
    0.75
    >>> keras_actloss.diagnostics.stats.data_saturation(
    ...     np.array([[-3.0, 1.0]]), tanh) is None
    True
    """
    if profile.saturation_bounds is None:
        return None
    data = np.asarray(data, "float64")
    low, high = profile.output_range
    if not data.size or not np.isfinite(data).all():
        return None
    if data.min() < low or data.max() > high:
        return None
    return float(saturation_fraction(data, profile))


def input_gate_saturation(
    x: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None, blocks: list
) -> float | None:
    """The fraction of the pre-activations that inputs `x` alone give a
    recurrent cell's gates and candidate, `x @ kernel + bias` (the whole of
    them at its first time step, from a zero state), that their activations
    put in their saturating tails. `blocks`: `(activation, profile)` for
    each equal block of the kernel's columns, in order (an LSTM's input,
    forget, candidate and output gates; a GRU's update, reset and candidate;
    a SimpleRNN's one). None when `x`'s last axis is not the kernel's input
    or holds non-finite values.

    A host-side check on a kept batch (NumPy; the activations by
    `keras.ops`). Large raw inputs saturate every gate at once: an LSTM fed
    series of about 500 had 94-98% of them in the tails, and learned
    little.

    Examples:

    >>> sigmoid = keras_actloss.activations.profile("sigmoid")
    >>> float(keras_actloss.diagnostics.stats.input_gate_saturation(
    ...     np.array([[10.0], [0.0]]), np.array([[1.0, 0.1]]), None,
    ...     [(keras.activations.sigmoid, sigmoid)]))
    0.25
    """
    x = np.asarray(x, "float64")
    if x.ndim < 2 or x.shape[-1] != kernel.shape[0] or not np.isfinite(x).all():
        return None
    z = x.reshape(-1, x.shape[-1]) @ np.asarray(kernel, "float64")
    if bias is not None:
        z = z + np.asarray(bias, "float64")
    width = z.shape[1] // len(blocks)
    saturated = 0
    for i, (activation, profile) in enumerate(blocks):
        block = ops.convert_to_tensor(z[:, i * width : (i + 1) * width], "float32")
        mask = saturated_mask(activation(block), profile)
        saturated += int(np.count_nonzero(ops.convert_to_numpy(mask)))
    return saturated / z.size if z.size else None
