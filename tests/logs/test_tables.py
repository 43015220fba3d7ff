"""The layers and findings tables: one encoder, one decoder for CLI and dashboard."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from keras_actloss.diagnostics.records import LayerInfo
from keras_actloss.findings import Finding
from keras_actloss.logs import tables, tags

LAYERS = [
    LayerInfo("dense", "Dense", "relu", True, 0),
    LayerInfo("outer/act", "Activation", None, False, 1),
]
FINDINGS = [
    Finding("dead_relu", "dense", 10, 0.8125, 'Dead | "units".', "Leaky ReLU."),
    Finding("non_finite", None, 7, math.nan, "NaN.", "Lower the rate."),
    Finding("sigmoid_stack", "dense", None, None, "Risk.", "ReLU.", "warning"),
]


def _bytes(table):
    """The table as TensorBoard hands it back: an object array of bytes."""
    return np.array([[str(c).encode() for c in row] for row in table], dtype=object)


def _same(a: list[Finding], b: list[Finding]) -> bool:
    """Equality that treats NaN values as equal."""
    return [tables.cell(x.value) for x in a] == [tables.cell(x.value) for x in b] and [
        {**x.to_dict(), "value": None} for x in a
    ] == [{**x.to_dict(), "value": None} for x in b]


def test_findings_round_trip_exactly():
    decoded = tables.decode_findings(_bytes(tables.findings_table(FINDINGS)))
    assert _same(decoded, FINDINGS)
    assert decoded[0] == FINDINGS[0] and decoded[2] == FINDINGS[2]
    assert math.isnan(decoded[1].value) and decoded[1].layer is None


def test_layers_round_trip_in_model_order():
    assert tables.decode_layers(_bytes(tables.layers_table(LAYERS))) == LAYERS


def test_columns_map_by_header_in_any_order():
    header = list(reversed(tags.LAYER_COLUMNS))
    table = np.array(
        [[c.encode() for c in header], [b"True", b"relu", b"Dense", b"d\xc3\xa9"]],
        dtype=object,
    )
    assert tables.decode_table(table) == [
        {
            "layer": "dé",
            "class_name": "Dense",
            "activation": "relu",
            "has_trainable_weights": "True",
        }
    ]
    assert tables.decode_layers(table) == [LayerInfo("dé", "Dense", "relu", True, 0)]


@pytest.mark.parametrize(
    "array", [np.array(b"scalar"), np.array([b"a", b"b"]), np.zeros((0, 3))]
)
def test_decode_table_ignores_non_tables(array):
    assert tables.decode_table(array) == []


@pytest.mark.parametrize("column", tags.FINDING_COLUMNS)
def test_findings_table_without_a_column_is_an_error(column):
    table = tables.findings_table(FINDINGS[:1])
    keep = [i for i, c in enumerate(table[0]) if c != column]
    header = [c for c in tags.FINDING_COLUMNS if c != column]
    expected = (
        "Expected the `diagnostics/findings` table at step 4 of run 'a' to "
        f"have the columns {list(tags.FINDING_COLUMNS)}. Missing: ['{column}']; "
        f"received header: {header}"
    )
    with pytest.raises(tables.TableError, match=f"^{re.escape(expected)}$"):
        tables.decode_findings(table[:, keep], "at step 4 of run 'a'")


def test_layers_table_without_a_column_is_an_error():
    table = tables.layers_table(LAYERS)[:, 1:]  # no `layer` column
    with pytest.raises(tables.TableError, match=r"Missing: \['layer'\]"):
        tables.decode_layers(table)


@pytest.mark.parametrize(
    "column, text", [("step", "soon"), ("step", "1.5"), ("value", "big")]
)
def test_findings_cell_that_is_not_a_number_is_an_error(column, text):
    table = tables.findings_table(FINDINGS[:1])
    table[1, list(tags.FINDING_COLUMNS).index(column)] = text
    expected = (
        f"Expected a number in column `{column}` of row 1 of the "
        f"`diagnostics/findings` table at step 3. Received: '{text}'"
    )
    with pytest.raises(tables.TableError, match=f"^{re.escape(expected)}$"):
        tables.decode_findings(table, "at step 3")


@pytest.mark.parametrize(
    "text, number, step",
    [
        ("3", 3.0, 3),
        ("-2.0", -2.0, -2),
        ("", None, None),
        ("None", None, None),
        ("null", None, None),
    ],
)
def test_parse_number_and_step(text, number, step):
    assert tables.parse_number(text) == number
    assert tables.parse_step(text) == step


@pytest.mark.parametrize("text", ["1e-07", "inf", "nan"])
def test_parse_step_rejects_non_integers(text):
    with pytest.raises(ValueError, match="not a whole number"):
        tables.parse_step(text)


def test_collect_findings_drops_repeats_and_keeps_the_written_order():
    # The writer rewrites all of a step's findings in each table; a NaN value
    # is the same finding again (`nan != nan` must not make it twice).
    first, nan, warn = FINDINGS[2], FINDINGS[1], FINDINGS[0]
    step0 = tables.findings_table([first])
    step7 = tables.findings_table([nan])
    step7_again = tables.findings_table([nan])
    step10 = tables.findings_table([warn])
    got = tables.collect_findings(
        [(10, step10), (7, step7), (0, step0), (7, step7_again)], "run 'r'"
    )
    assert _same(got, [first, nan, warn])


def test_unique_findings_treats_nan_as_equal():
    again = Finding("non_finite", None, 7, math.nan, "NaN.", "Lower the rate.")
    assert len(tables.unique_findings([FINDINGS[1], again])) == 1
    unique = tables.unique_findings(FINDINGS + FINDINGS)
    assert len(unique) == 3 and all(a is b for a, b in zip(unique, FINDINGS))
