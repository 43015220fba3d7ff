"""The `diagnostics/layers` and `diagnostics/findings` text tables, both ways.

`DiagnosticsWriter` writes each table as a 2-D string tensor whose first row
is the header (`tags.LAYER_COLUMNS`, `tags.FINDING_COLUMNS`); the CLI report
(through `keras_actloss.logs.reader`) and the Gradient Health dashboard read
them back with the functions here, so they decode the same cells to the same
values. A table that lacks a column of the contract, or whose `step` or
`value` cell is not a number, raises `TableError`, naming the column and the
row; both readers report that error rather than guess a default.

Cells: `""` (or `"None"`) is None; floats are written with `repr`, so they
read back exactly; `step` is an integer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from keras_actloss.diagnostics.records import LayerInfo
from keras_actloss.findings import Finding
from keras_actloss.logs import tags

_NONE_CELLS = ("", "None", "null")
_LAYER_ATTRS = {"layer": "name"}  # Table column -> `LayerInfo` attribute.


class TableError(ValueError):
    """A `diagnostics/layers` or `diagnostics/findings` table that breaks the
    layout of `keras_actloss.logs.tags`."""


def cell(value) -> str:
    """Text of one table cell: `""` for None, `repr` for floats (exact).

    Examples:

    >>> cell(None), cell(0.1), cell(3), cell(True)
    ('', '0.1', '3', 'True')
    """
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def layers_table(layers: Sequence[LayerInfo]) -> np.ndarray:
    """The `diagnostics/layers` table: header `LAYER_COLUMNS`, one row a layer."""
    attrs = [_LAYER_ATTRS.get(c, c) for c in tags.LAYER_COLUMNS]
    rows = [[cell(getattr(info, a)) for a in attrs] for info in layers]
    return np.array([list(tags.LAYER_COLUMNS), *rows], dtype=object)


def findings_table(findings: Sequence[Finding]) -> np.ndarray:
    """The `diagnostics/findings` table: header `FINDING_COLUMNS`, one row each."""
    rows = [[cell(getattr(f, c)) for c in tags.FINDING_COLUMNS] for f in findings]
    return np.array([list(tags.FINDING_COLUMNS), *rows], dtype=object)


def decode_table(array) -> list[dict[str, str]]:
    """Reads a 2-D string table whose first row is its header.

    Examples:

    >>> decode_table(np.array([[b"layer", b"activation"], [b"d1", b"relu"]]))
    [{'layer': 'd1', 'activation': 'relu'}]

    Args:
        array: A 2-D array of `bytes` or `str` (a text summary's tensor).

    Returns:
        One dict per data row, keyed by the header's column names; `[]` for
        anything that is not a 2-D table.
    """
    table = np.asarray(array, dtype=object)
    if table.ndim != 2 or table.shape[0] == 0:
        return []
    cells = [[_text(c) for c in row] for row in table]
    header, rows = cells[0], cells[1:]
    return [dict(zip(header, row)) for row in rows]


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def parse_number(text: str | None) -> float | None:
    """Parses a cell as a float; None for an empty or `"None"` cell.

    Examples:

    >>> parse_number("1e-07"), parse_number("None"), parse_number("nan")
    (1e-07, None, nan)

    Raises:
        ValueError: If the cell is neither empty nor a number.
    """
    if text is None or text.strip() in _NONE_CELLS:
        return None
    return float(text)


def parse_step(text: str | None) -> int | None:
    """Parses a cell as a step; None for an empty or `"None"` cell.

    Examples:

    >>> parse_step("12"), parse_step("12.0"), parse_step("")
    (12, 12, None)

    Raises:
        ValueError: If the cell is neither empty nor a whole number.
    """
    number = parse_number(text)
    if number is None:
        return None
    if not math.isfinite(number) or number != int(number):
        raise ValueError(f"not a whole number: {text!r}")
    return int(number)


def _checked_rows(array, columns: Sequence[str], tag: str, where: str):
    """The table's rows, after checking its header holds every column."""
    table = np.asarray(array, dtype=object)
    if table.ndim != 2 or table.shape[0] == 0:
        raise TableError(
            f"Expected the `{tag}` text {where} to be a 2-D table with a header "
            f"row. Received: an array of shape {table.shape}"
        )
    header = [_text(c) for c in table[0]]
    missing = [c for c in columns if c not in header]
    if missing:
        raise TableError(
            f"Expected the `{tag}` table {where} to have the columns "
            f"{list(columns)}. Missing: {missing}; received header: {header}"
        )
    return decode_table(table)


def _convert(parse, row: dict, column: str, tag: str, where: str, index: int):
    try:
        return parse(row[column])
    except ValueError:
        raise TableError(
            f"Expected a number in column `{column}` of row {index} of the "
            f"`{tag}` table {where}. Received: {row[column]!r}"
        ) from None


def _optional(text: str) -> str | None:
    return None if text in _NONE_CELLS else text


def decode_findings(array, where: str = "") -> list[Finding]:
    """The findings of one `diagnostics/findings` table, in row order.

    Args:
        array: The table (a text summary's 2-D tensor).
        where: Where the table comes from (`"at step 4 of runs/exp1"`), for
            error messages.

    Raises:
        TableError: If a column of `tags.FINDING_COLUMNS` is missing, or a
            `step` or `value` cell is not a number.
    """
    tag = tags.FINDINGS_TAG
    rows = _checked_rows(array, tags.FINDING_COLUMNS, tag, where)
    return [
        Finding(
            mode=row["mode"],
            layer=_optional(row["layer"]),
            step=_convert(parse_step, row, "step", tag, where, i),
            value=_convert(parse_number, row, "value", tag, where, i),
            message=row["message"],
            fix=row["fix"],
            severity=row["severity"],
        )
        for i, row in enumerate(rows, 1)
    ]


def decode_layers(array, where: str = "") -> list[LayerInfo]:
    """The layers of one `diagnostics/layers` table, in model order.

    Raises:
        TableError: If a column of `tags.LAYER_COLUMNS` is missing.
    """
    rows = _checked_rows(array, tags.LAYER_COLUMNS, tags.LAYERS_TAG, where)
    return [
        LayerInfo(
            name=row["layer"],
            class_name=row["class_name"],
            activation=_optional(row["activation"]),
            has_trainable_weights=row["has_trainable_weights"] == "True",
            depth=i,
        )
        for i, row in enumerate(rows)
        if row["layer"]
    ]


def finding_key(finding: Finding) -> tuple:
    """Identity of a finding; NaN values compare equal (`nan != nan`)."""
    return tuple(cell(getattr(finding, c)) for c in tags.FINDING_COLUMNS)


def unique_findings(findings: Iterable[Finding]) -> list[Finding]:
    """`findings` without repeats (a NaN value equals a NaN value), in order."""
    seen, out = set(), []
    for finding in findings:
        key = finding_key(finding)
        if key not in seen:
            seen.add(key)
            out.append(finding)
    return out


def collect_findings(
    tables: Iterable[tuple[int, object]], where: str = ""
) -> list[Finding]:
    """Every finding of a run's `diagnostics/findings` tables, once each.

    The writer rewrites all of a step's findings each time it adds one, so
    tables repeat rows: the repeats are dropped. Findings come in event step
    order (a finding made before training is written at step 0), and within
    a step in the order written, which is the order they were found.

    Args:
        tables: `(event step, table)` pairs, in the order written.
        where: Where the tables come from, for error messages.

    Returns:
        A list of `Finding`s.
    """
    ordered = sorted(tables, key=lambda pair: pair[0])
    suffix = f" of {where}" if where else ""
    return unique_findings(
        f
        for step, table in ordered
        for f in decode_findings(table, f"at step {step}{suffix}")
    )
