"""Pure data shaping of the Gradient Health dashboard."""

from __future__ import annotations

import math

import numpy as np
import pytest

from keras_actloss.logs import reader, tags
from keras_actloss.tensorboard_plugin import data


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


def _reference_bucket(steps, values, groups, log_scale):
    """Loop version of `bucket_series`: mean per group, non-finite wins."""
    cells = []
    for first, last in groups:
        inside = [v for s, v in zip(steps, values) if first <= s <= last]
        if not inside:
            cells.append(None)
        elif any(math.isnan(v) for v in inside):
            cells.append(math.nan)
        elif any(math.isinf(v) for v in inside):
            cells.append(next(v for v in inside if math.isinf(v)))
        elif log_scale:
            # Geometric mean: the product's n-th root (0 if any value is 0).
            cells.append(float(np.prod(inside)) ** (1 / len(inside)))
        else:
            cells.append(sum(inside) / len(inside))
    return cells


def _assert_cells(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        if e is None or (isinstance(e, float) and math.isnan(e)):
            assert a is e or (a is not None and math.isnan(a)), (a, e)
        else:
            assert a == pytest.approx(e, rel=5e-4), (a, e)  # 4 significant digits


def test_decode_table_maps_columns_by_header():
    header = list(reversed(tags.LAYER_COLUMNS))  # any column order
    table = np.array(
        [[c.encode() for c in header], [b"True", b"relu", b"Dense", b"d\xc3\xa9"]],
        dtype=object,
    )
    assert reader.decode_table(table) == [
        {
            "layer": "dé",
            "class_name": "Dense",
            "activation": "relu",
            "has_trainable_weights": "True",
        }
    ]


@pytest.mark.parametrize(
    "array", [np.array(b"scalar"), np.array([b"a", b"b"]), np.zeros((0, 3))]
)
def test_decode_table_ignores_non_tables(array):
    assert reader.decode_table(array) == []


@pytest.mark.parametrize(
    "text, number, step",
    [
        ("3", 3.0, 3),
        ("1e-07", 1e-07, None),
        ("", None, None),
        ("None", None, None),
        ("abc", None, None),
        ("inf", math.inf, None),
        ("-2.0", -2.0, -2),
    ],
)
def test_parse_number_and_step(text, number, step):
    assert data.parse_number(text) == number
    assert data.parse_step(text) == step


@pytest.mark.parametrize("n, max_columns", [(1, 500), (7, 3), (500, 500), (1234, 500)])
def test_column_groups_tile_the_steps(n, max_columns, rng):
    distinct = np.sort(rng.choice(10 * n, size=n, replace=False))
    repeated = rng.permutation(np.concatenate([distinct, distinct[: n // 2]]))
    groups = data.column_groups(repeated, max_columns)
    assert groups.tolist() == _reference_groups(distinct.tolist(), max_columns)


def test_column_groups_of_nothing():
    assert data.column_groups([]).shape == (0, 2)


@pytest.mark.parametrize("log_scale", [False, True])
def test_bucket_series_matches_loop_reference(log_scale, rng):
    steps = np.sort(rng.choice(2000, size=600, replace=False))
    values = 10.0 ** rng.uniform(-8, 2, size=600)
    values[[5, 6, 300]] = [math.nan, math.inf, -math.inf]
    values[100] = 0.0
    groups = data.column_groups(steps[::3], 50)  # some steps fall between groups
    got = data.bucket_series(steps, values, groups, log_scale)
    _assert_cells(got, _reference_bucket(steps, values, groups.tolist(), log_scale))


def test_bucket_series_missing_and_non_finite_cells():
    groups = np.array([[0, 1], [2, 3], [4, 5], [6, 7]])
    steps = [0, 1, 2, 3, 4, 6, 7]
    values = [1.0, 3.0, math.inf, 5.0, 0.0, math.nan, math.inf]
    cells = data.bucket_series(steps, values, groups, log_scale=True)
    # sqrt(1 * 3); inf wins over 5; a zero gives a zero geometric mean; NaN
    # wins over inf.
    assert cells[0] == pytest.approx(math.sqrt(3), rel=5e-4)
    assert cells[1] == math.inf
    assert cells[2] == 0.0
    assert math.isnan(cells[3])
    assert data.bucket_series([1], [2.0], np.array([[2, 3]])) == [None]
