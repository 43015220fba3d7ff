"""Step columns of long runs: one downsampler for the heatmap image and the
Gradient Health dashboard."""

from __future__ import annotations

import math

import numpy as np
import pytest

from keras_actloss.logs import downsample, heatmap


def _reference_groups(distinct_steps, max_columns):
    """Equal-count groups by explicit sizes: the first `n % k` get one more."""
    n = len(distinct_steps)
    k = min(max_columns, n)
    sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
    out, start = [], 0
    for size in sizes:
        out.append([distinct_steps[start], distinct_steps[start + size - 1]])
        start += size
    return out


def _reference_max(steps, values, groups):
    """Loop version of `bucket_max`: the largest value, a NaN wins."""
    cells = []
    for first, last in groups:
        inside = [v for s, v in zip(steps, values) if first <= s <= last]
        if not inside:
            cells.append(None)
        elif any(math.isnan(v) for v in inside):
            cells.append(math.nan)
        else:
            cells.append(max(inside))
    return cells


def _same_cells(actual, expected):
    return len(actual) == len(expected) and all(
        a is e
        or a == e
        or (a is not None and e is not None and math.isnan(a) and math.isnan(e))
        for a, e in zip(actual, expected)
    )


@pytest.mark.parametrize("n, max_columns", [(1, 500), (7, 3), (500, 500), (1234, 500)])
def test_column_groups_tile_the_steps(n, max_columns, rng):
    distinct = np.sort(rng.choice(10 * n, size=n, replace=False))
    repeated = rng.permutation(np.concatenate([distinct, distinct[: n // 2]]))
    groups = downsample.column_groups(repeated, max_columns)
    assert groups.tolist() == _reference_groups(distinct.tolist(), max_columns)


def test_column_groups_of_nothing():
    assert downsample.column_groups([]).shape == (0, 2)
    assert downsample.bucket_max([], [], downsample.column_groups([])) == []


def test_bucket_max_matches_loop_reference(rng):
    steps = np.sort(rng.choice(2000, size=600, replace=False))
    values = 10.0 ** rng.uniform(-8, 2, size=600)
    values[[5, 6, 300, 301]] = [math.nan, math.inf, -math.inf, 0.0]
    groups = downsample.column_groups(steps[::3], 50)  # some steps fall between
    got = downsample.bucket_max(steps, values, groups)
    expected = _reference_max(steps.tolist(), values.tolist(), groups.tolist())
    assert _same_cells(got, expected)


def test_bucket_max_keeps_a_spike_and_non_finite_cells():
    groups = np.array([[0, 1], [2, 3], [4, 5], [6, 7]])
    steps = [0, 1, 2, 3, 4, 6, 7]
    values = [1e-6, 1e3, math.inf, 5.0, -math.inf, math.nan, math.inf]
    cells = downsample.bucket_max(steps, values, groups)
    # A spike of 1e3 among 1e-6 wins (a mean would hide it in a long run);
    # inf is the largest; -inf alone stays -inf; NaN wins over inf.
    assert cells[:3] == [1e3, math.inf, -math.inf]
    assert math.isnan(cells[3])
    assert downsample.bucket_max([1], [2.0], np.array([[2, 3]])) == [None]


def test_downsample_columns_nan_means_missing_in_the_image():
    values = np.array([[1.0, 4.0, np.nan, np.nan, 2.0], [np.nan, 1.0, 9.0, 3.0, 5.0]])
    # 5 columns into 2 groups: [0, 1, 2] and [3, 4].
    np.testing.assert_array_equal(
        downsample.downsample_columns(values, 2), [[4.0, 2.0], [9.0, 5.0]]
    )
    out = downsample.downsample_columns(values, 2, missing_is_nan=False)
    # Here a NaN is a value, and wins its group.
    np.testing.assert_array_equal(out, [[np.nan, np.nan], [np.nan, 5.0]])
    np.testing.assert_array_equal(downsample.downsample_columns(values, 5), values)


def test_heatmap_image_and_dashboard_share_the_column_count():
    assert heatmap.MAX_COLUMNS == downsample.MAX_COLUMNS == 500
