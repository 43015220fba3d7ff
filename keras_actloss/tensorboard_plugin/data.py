"""Pure data shaping for the Gradient Health dashboard.

Turns what TensorBoard's data provider returns (scalar series as step/value
pairs, and table cells) into the small JSON-ready shapes the dashboard draws.
Text tables are decoded by `keras_actloss.logs.reader.decode_table`, as in
the CLI. Nothing here imports TensorBoard or reads files: the plugin reads,
these functions shape.

A long run is drawn with at most `MAX_COLUMNS` columns: the distinct recorded
steps are split, in order, into that many groups of (nearly) equal size, and
each cell shows the mean of the values recorded in its group of steps (the
geometric mean on a log scale). A non-finite value anywhere in a group wins
the cell, so a NaN or an overflow is never averaged away.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

MAX_COLUMNS = 500


def parse_number(text: str | None) -> float | None:
    """Parses a table cell as a float; None for empty or `"None"` cells.

    Examples:

    >>> parse_number("1e-07"), parse_number("None"), parse_number("nan")
    (1e-07, None, nan)
    """
    if text is None or text.strip() in ("", "None", "null"):
        return None
    try:
        return float(text)
    except ValueError:
        return None


def parse_step(text: str | None) -> int | None:
    """Parses a table cell as a step; None for empty or non-integer cells.

    Examples:

    >>> parse_step("12"), parse_step("12.0"), parse_step("None")
    (12, 12, None)
    """
    number = parse_number(text)
    if number is None or not math.isfinite(number) or number != int(number):
        return None
    return int(number)


def column_groups(
    steps: Sequence[int] | np.ndarray, max_columns: int = MAX_COLUMNS
) -> np.ndarray:
    """Splits the distinct recorded steps into at most `max_columns` groups.

    Groups are consecutive runs of distinct steps of nearly equal size, so no
    column is empty however irregular the recording was.

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


def bucket_series(
    steps: Sequence[int] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    groups: np.ndarray,
    log_scale: bool = False,
) -> list[float | None]:
    """Averages one series over the column groups of `column_groups`.

    Examples:

    >>> groups = column_groups([0, 1, 2, 3], max_columns=2)
    >>> bucket_series([0, 1, 2, 3], [1.0, 3.0, 5.0, 7.0], groups)
    [2.0, 6.0]
    >>> bucket_series([0, 1, 2], [1.0, 100.0, float("inf")], groups, True)
    [10.0, inf]

    Args:
        steps: Steps of the series.
        values: Values of the series, same length as `steps`.
        groups: Column groups, shape `(columns, 2)`.
        log_scale: Whether to average in log space (geometric mean, 0 if a
            value in the group is 0). Defaults to `False`.

    Returns:
        One entry per column: the mean, `None` where the series has no value
        in that column, or the non-finite value (NaN wins over infinities)
        where the group holds one.
    """
    steps = np.asarray(steps, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    n = len(groups)
    if n == 0:
        return []
    column = np.searchsorted(groups[:, 0], steps, side="right") - 1
    inside = (column >= 0) & (steps <= groups[np.clip(column, 0, None), 1])
    column, values = column[inside], values[inside]
    finite = np.isfinite(values)
    x = values[finite]
    if log_scale:
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.log10(np.abs(x))
    counts = np.bincount(column[finite], minlength=n)
    sums = np.bincount(column[finite], weights=x, minlength=n)
    with np.errstate(divide="ignore", invalid="ignore"):
        means = sums / counts
    if log_scale:
        means = 10.0**means
    cells: list[float | None] = [
        float(f"{m:.4g}") if c else None for m, c in zip(means, counts)
    ]
    for col, value in zip(column[~finite], values[~finite]):
        current = cells[col]
        if current is None or math.isfinite(current) or math.isnan(value):
            cells[col] = float(value)
    return cells
