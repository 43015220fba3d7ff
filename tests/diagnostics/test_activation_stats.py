"""Tests for keras_actloss.diagnostics.stats (the activation counts the
callback computes in its train step) against NumPy references."""

import dataclasses
import functools

import keras
import numpy as np
import pytest
from keras import ops

from keras_actloss import activations
from keras_actloss.diagnostics import stats


def _np(x):
    return ops.convert_to_numpy(x)


def test_prelu_counts_only_exact_zeros(rng):
    # PReLU (slopes at 0 as initialised): a unit is inactive where its
    # output is exactly 0; once a slope is learned, negative outputs pass a
    # gradient and count as active.
    prelu = activations.profile("prelu")
    x = rng.normal(size=(16, 4)).astype("float32")
    x[:, 0] = np.minimum(x[:, 0], 0.0) * 0.25  # a learned slope: negative
    x[:, 1] = 0.0  # dead: its slope 0 and its inputs negative
    x[:, 2] = np.maximum(x[:, 2], 0.0)
    counts = stats.activation_counts(x, prelu)
    np.testing.assert_allclose(
        _np(counts["active_per_unit"]), np.count_nonzero(x != 0.0, axis=0)
    )
    expected_dead = np.mean(np.all(x == 0.0, axis=0))
    assert expected_dead == pytest.approx(1 / 4)
    np.testing.assert_allclose(_np(stats.dead_fraction(x, prelu)), expected_dead)


def test_relu_zero_and_dead_fractions(rng):
    relu = activations.profile("relu")
    x = np.maximum(rng.normal(size=(16, 6)), 0.0).astype("float32")
    x[:, [1, 4]] = 0.0  # two dead units
    expected_zero = np.mean(x == 0.0)
    expected_dead = np.mean(np.all(x == 0.0, axis=0))
    assert expected_dead == pytest.approx(2 / 6)
    np.testing.assert_allclose(_np(stats.zero_fraction(x, relu)), expected_zero)
    np.testing.assert_allclose(_np(stats.dead_fraction(x, relu)), expected_dead)


def test_dead_units_over_positions_and_channel_axis(rng):
    relu = activations.profile("relu")
    # Channels-last feature map: a unit is dead only if zero at every sample
    # and position.
    x = np.maximum(rng.normal(size=(4, 5, 5, 3)), 0.0).astype("float32")
    x[..., 0] = 0.0
    x[:, :, :, 2] = 0.0
    x[0, 2, 2, 2] = 1.0  # one active position keeps unit 2 alive
    np.testing.assert_allclose(_np(stats.dead_fraction(x, relu)), 1 / 3)
    # The same map channels-first.
    x_first = np.transpose(x, (0, 3, 1, 2))
    np.testing.assert_allclose(
        _np(stats.dead_fraction(x_first, relu, channel_axis=1)), 1 / 3
    )
    counts = stats.activation_counts(x, relu)
    np.testing.assert_array_equal(
        _np(counts["active_per_unit"]), (x > 0).sum(axis=(0, 1, 2))
    )


def test_leaky_relu_counts_negative_outputs_as_inactive():
    profile = activations.profile("leaky_relu")
    x = np.array([[-0.1, 2.0], [-0.3, -0.2]], "float32")
    assert profile.inactive_below == 0.0  # from the profile
    np.testing.assert_allclose(_np(stats.zero_fraction(x, profile)), 3 / 4)


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_saturation_fraction_uses_profile_bounds(rng, name):
    profile = activations.profile(name)
    low, high = profile.saturation_bounds
    fn = {"sigmoid": lambda z: 1 / (1 + np.exp(-z)), "tanh": np.tanh}[name]
    x = fn(rng.normal(scale=4.0, size=(32, 8))).astype("float32")
    expected = np.mean((x <= low) | (x >= high))
    assert 0.0 < expected < 1.0
    np.testing.assert_allclose(_np(stats.saturation_fraction(x, profile)), expected)
    assert "inactive" not in stats.activation_counts(x, profile)


def test_relu6_saturates_above_six_only():
    profile = activations.profile("relu6")
    assert profile.saturation_bounds == (-np.inf, 6.0)
    # Outputs of ReLU6: 0 (inactive, not saturated), 6 (saturated).
    x = np.array([[0.0, 6.0, 3.0], [6.0, 0.0, 5.9]], "float32")
    np.testing.assert_array_equal(
        _np(stats.saturated_mask(x, profile)),
        [[False, True, False], [True, False, False]],
    )
    # 2 of 6 elements at 6.
    np.testing.assert_allclose(_np(stats.saturation_fraction(x, profile)), 2 / 6)


def test_relu6_counts_by_sign_and_cap_match_comparisons(rng):
    # float32 outputs in [0, 6]: counted as sums of sign(x) and
    # floor(x / 6), which must equal the comparisons x > 0 and x >= 6,
    # also just below the cap and at 0.
    profile = activations.profile("relu6")
    x = np.clip(rng.normal(scale=4.0, size=(8, 3, 3, 5)), 0.0, 6.0).astype("float32")
    x[0, 0, 0, :] = np.nextafter(np.float32(6.0), np.float32(0.0))
    x[1, 0, 0, :] = np.float32(1e-30)
    x[..., 4] = 0.0  # A unit with no active element.
    counts = stats.activation_counts(x, profile)
    np.testing.assert_array_equal(
        _np(counts["active_per_unit"]), (x > 0).sum(axis=(0, 1, 2))
    )
    assert _np(counts["saturated"]) == (x >= 6.0).sum()
    assert 0 < (x >= 6.0).sum() < x.size
    # The same counts from float64 outputs (compared, not counted by sign).
    counts64 = stats.activation_counts(x.astype("float64"), profile)
    np.testing.assert_array_equal(
        _np(counts64["active_per_unit"]), _np(counts["active_per_unit"])
    )


def test_a_relu_with_a_negative_threshold_is_not_counted_by_sign():
    # keras.activations.relu(x, threshold=-1) outputs x on [-1, 0):
    # negative outputs, inactive as the comparison x > 0 says, not of
    # sign -1.
    relu = functools.partial(keras.activations.relu, threshold=-1.0)
    profile = activations.profile(relu)
    assert profile.output_range[0] == -1.0
    x = _np(relu(np.array([[-2.0, -0.5, 0.0, 2.0]], "float32")))
    np.testing.assert_array_equal(x, [[0.0, -0.5, 0.0, 2.0]])
    counts = stats.activation_counts(x, profile)
    np.testing.assert_array_equal(_np(counts["active_per_unit"]), [0, 0, 0, 1])


def test_bounds_infinite_on_both_sides_saturate_nothing():
    profile = dataclasses.replace(
        activations.profile("sigmoid"), saturation_bounds=(-np.inf, np.inf)
    )
    x = np.array([[-1e30, 0.0, 1e30]], "float32")
    np.testing.assert_array_equal(_np(stats.saturated_mask(x, profile)), [[False] * 3])


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_data_saturation_counts_data_in_the_tails(rng, name):
    # Images in the activation's output range, half of the pixels at its
    # bounds: binary pixels as a generator ending in `name` should make.
    profile = activations.profile(name)
    low, high = profile.output_range
    x = rng.uniform(low, high, size=(8, 4, 4, 1))
    x[:4] = np.where(x[:4] > (low + high) / 2, high, low)
    tail_low, tail_high = profile.saturation_bounds
    expected = np.mean((x <= tail_low) | (x >= tail_high))
    assert 0.5 <= expected < 0.6  # The binary half, a few of the others.
    assert stats.data_saturation(x, profile) == pytest.approx(expected)


def test_data_saturation_needs_data_the_activation_could_make():
    sigmoid, tanh, relu = (activations.profile(n) for n in ("sigmoid", "tanh", "relu"))
    # Standardized features leave [0, 1]: no sigmoid or tanh could make them.
    features = np.array([[-0.7, 0.2], [1.3, 0.4]])
    assert stats.data_saturation(features, sigmoid) is None
    assert stats.data_saturation(features, tanh) is None
    # -1 and 1 are in tanh's range, in its tails (|x| >= 0.99); 0.5 is not.
    assert stats.data_saturation(np.array([[-1.0, 1.0, 0.5, 0.5]]), tanh) == 0.5
    # Not finite, empty, or an activation without saturation: no answer.
    assert stats.data_saturation(np.array([[0.0, np.nan]]), sigmoid) is None
    assert stats.data_saturation(np.zeros((0, 2)), sigmoid) is None
    assert stats.data_saturation(np.array([[0.0, 1.0]]), relu) is None
