"""Step columns of a layer x step heatmap, for long runs.

The Gradient Health dashboard and the heatmap image that `GradientDiagnostics`
can write (`keras_actloss.logs.heatmap`) both draw a run with at most
`MAX_COLUMNS` step columns, with the functions here, so they show the same
cells for the same run. The distinct recorded steps are split, in order, into
that many groups of (nearly) equal size, and each cell shows the largest value
recorded in its group of steps: a spike (an exploding gradient, a burst of
dead units) stays visible however long the run. A NaN anywhere in a group wins
the cell, so a non-finite gradient is never hidden.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

MAX_COLUMNS = 500


def column_groups(
    steps: Sequence[int] | np.ndarray, max_columns: int = MAX_COLUMNS
) -> np.ndarray:
    """Splits the distinct recorded steps into at most `max_columns` groups.

    Groups are consecutive runs of distinct steps of nearly equal size (as
    `numpy.array_split` cuts them), so no column is empty however irregular
    the recording was.

    Examples:

    >>> column_groups([0, 5, 10, 15, 20], max_columns=2).tolist()
    [[0, 10], [15, 20]]
    >>> column_groups([3, 1, 3, 2]).tolist()
    [[1, 1], [2, 2], [3, 3]]

    Args:
        steps: Recorded steps, in any order, repeats allowed.
        max_columns: Positive int, the most columns to return. Defaults to
            `MAX_COLUMNS` (500).

    Returns:
        An int64 array of shape `(columns, 2)`: first and last step of each
        column, in step order.
    """
    distinct = np.unique(np.asarray(steps, dtype=np.int64))
    if distinct.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    chunks = np.array_split(distinct, min(max_columns, distinct.size))
    return np.array([[chunk[0], chunk[-1]] for chunk in chunks], dtype=np.int64)


def bucket_max(
    steps: Sequence[int] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    groups: np.ndarray,
) -> list[float | None]:
    """The largest value of one series in each column group of `column_groups`.

    Examples:

    >>> groups = column_groups([0, 1, 2, 3], max_columns=2)
    >>> bucket_max([0, 1, 2, 3], [1.0, 3.0, 5.0, 7.0], groups)
    [3.0, 7.0]
    >>> bucket_max([0, 1, 2], [1.0, float("nan"), float("inf")], groups)
    [nan, inf]
    >>> bucket_max([2, 3], [1.0, 1.0], groups)
    [None, 1.0]

    Args:
        steps: Steps of the series.
        values: Values of the series, same length as `steps`.
        groups: Column groups, shape `(columns, 2)`.

    Returns:
        One entry per column: the maximum (NaN if the group holds a NaN),
        or `None` where the series has no value in that column.
    """
    steps = np.asarray(steps, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    n = len(groups)
    if n == 0:
        return []
    column = np.searchsorted(groups[:, 0], steps, side="right") - 1
    inside = (column >= 0) & (steps <= groups[np.clip(column, 0, None), 1])
    column, values = column[inside], values[inside]
    best = np.full(n, -np.inf)
    np.maximum.at(best, column, np.where(np.isnan(values), -np.inf, values))
    counts = np.bincount(column, minlength=n)
    nan = np.bincount(column, weights=np.isnan(values), minlength=n) > 0
    return [
        None if not count else math.nan if is_nan else float(top)
        for top, count, is_nan in zip(best, counts, nan)
    ]


def downsample_columns(
    values, max_columns: int = MAX_COLUMNS, missing_is_nan: bool = True
) -> np.ndarray:
    """Keeps at most `max_columns` columns of a `[rows, steps]` array.

    The steps are the columns' indices, grouped by `column_groups` and each
    group reduced by `bucket_max`, row by row.

    Examples:

    >>> downsample_columns(np.array([[1.0, 5.0, np.nan, 2.0]]), 2).tolist()
    [[5.0, 2.0]]

    Args:
        values: Array-like of shape `[rows, steps]`.
        max_columns: The most columns to keep. Defaults to `MAX_COLUMNS`.
        missing_is_nan: Whether NaN marks a value that was not recorded (it
            is left out, and a group with no other value stays NaN) rather
            than a NaN that wins its cell. Defaults to `True`, as in the
            heatmap image.

    Returns:
        A float64 array `[rows, min(steps, max_columns)]`; NaN where a row
        has no value in a group.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.shape[1] <= max_columns:
        return values
    columns = np.arange(values.shape[1])
    groups = column_groups(columns, max_columns)
    out = np.full((values.shape[0], len(groups)), np.nan)
    for r, row in enumerate(values):
        keep = ~np.isnan(row) if missing_is_nan else np.ones(row.shape, bool)
        cells = bucket_max(columns[keep], row[keep], groups)
        out[r] = [np.nan if c is None else c for c in cells]
    return out
