"""Tests for keras_actloss.diagnostics.stats against NumPy references."""

import math

import numpy as np
import pytest
from keras import ops

from keras_actloss import activations
from keras_actloss.diagnostics import stats


def _np(x):
    return ops.convert_to_numpy(x)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_norms_match_numpy(rng, dtype):
    a = rng.normal(size=(3, 4)).astype(dtype)
    b = rng.normal(size=(5,)).astype(dtype)
    # Reference: one concatenated vector, norms by np.linalg.norm.
    flat = np.concatenate([a.ravel(), b.ravel()]).astype("float64")
    np.testing.assert_allclose(
        _np(stats.l2_norm([a, None, b])), np.linalg.norm(flat), rtol=1e-6
    )
    np.testing.assert_allclose(
        _np(stats.rms([a, b])), np.linalg.norm(flat) / math.sqrt(flat.size), rtol=1e-6
    )
    np.testing.assert_allclose(
        _np(stats.max_abs([a, b])), np.abs(flat).max(), rtol=1e-6
    )
    np.testing.assert_allclose(
        _np(stats.sum_of_squares([a, b])), np.dot(flat, flat), rtol=1e-6
    )
    assert stats.element_count([a, None, b]) == 17


def test_empty_and_extreme_inputs():
    assert float(_np(stats.l2_norm([None]))) == 0.0
    assert float(_np(stats.max_abs([]))) == 0.0
    # 1e4 squared stays finite in float32: sqrt(2 * 1e8).
    big = np.array([1e4, -1e4], "float32")
    np.testing.assert_allclose(_np(stats.l2_norm([big])), math.sqrt(2e8), rtol=1e-6)


def test_non_finite_values_are_visible():
    nan = np.array([1.0, np.nan], "float32")
    inf = np.array([1.0, -np.inf], "float32")
    assert not bool(_np(stats.all_finite([np.ones(2), nan])))
    assert not bool(_np(stats.all_finite([inf])))
    assert bool(_np(stats.all_finite([np.ones(2), None])))
    assert math.isnan(float(_np(stats.max_abs([np.ones(2), nan]))))
    assert math.isinf(float(_np(stats.l2_norm([inf]))))


def test_update_ratio_matches_numpy(rng):
    before = [rng.normal(size=(4, 3)), rng.normal(size=(3,))]
    after = [w + 0.01 * rng.normal(size=w.shape) for w in before]
    diff = np.concatenate([(a - b).ravel() for a, b in zip(after, before)])
    weight = np.concatenate([b.ravel() for b in before])
    expected = np.sqrt((diff**2).sum()) / np.sqrt((weight**2).sum())
    np.testing.assert_allclose(
        _np(stats.update_ratio(before, after)), expected, rtol=1e-5
    )
    # All-zero weights that do not move: 0, not NaN.
    zeros = [np.zeros(3, "float32")]
    assert float(_np(stats.update_ratio(zeros, zeros))) == 0.0


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
