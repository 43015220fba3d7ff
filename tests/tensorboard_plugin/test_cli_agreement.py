"""`keras-actloss report` and the Gradient Health dashboard agree on a run.

Both decode the tables with `keras_actloss.logs.tables` and draw long runs
with `keras_actloss.logs.downsample`; these tests read the same event files
through the CLI's reader and through the plugin's routes over TensorBoard's
data provider, and compare.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from gh_logs import (
    PluginClient,
    make_plugin,
    write_large_run,
    write_plain_run,
    write_run,
)
from tensorboard.plugins.text import summary_v2 as text

from keras_actloss import cli
from keras_actloss.diagnostics.records import LayerStats, StepStats
from keras_actloss.findings import Finding
from keras_actloss.logs import downsample, heatmap, reader, tables, tags
from keras_actloss.logs.writer import DiagnosticsWriter, EventFile


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("agree")
    write_run(str(root / "exp"))
    write_plain_run(str(root / "plain"))
    return root


@pytest.fixture(scope="module")
def client(logdir):
    return PluginClient(make_plugin(str(logdir)))


def _health(client, run, query=""):
    response = client.get("/health", f"run={run}{query}")
    assert response.status_code == 200
    return json.loads(response.get_data(as_text=True))


def test_same_findings_in_the_same_order(logdir, client):
    cli_findings = reader.read_run(str(logdir / "exp")).findings
    shown = _health(client, "exp/train")["findings"]
    assert [f.pop("section") for f in shown] == [None, "grad_norm", "grad_norm"]
    # Both as JSON: NaN is "NaN" in the CLI's strict JSON and in TensorBoard's.
    assert shown == cli.json_safe([f.to_dict() for f in cli_findings])
    assert [f["severity"] for f in shown] == ["warning", "failure", "failure"]


def test_same_layers_in_model_order(logdir, client):
    run = reader.read_run(str(logdir / "exp"))
    shown = _health(client, "exp/train")["layers"]
    assert [row["layer"] for row in shown] == [info.name for info in run.layers]
    table = tables.layers_table(run.layers)
    assert shown == [dict(zip(table[0], row)) for row in table[1:]]


def test_same_verdict_on_a_run_without_our_data(logdir, client, capsys):
    assert not reader.read_run(str(logdir / "plain")).has_data
    payload = _health(client, "plain")
    assert payload == {
        "run": "plain",
        "has_data": False,
        "message": tags.NO_DATA_MESSAGE,
    }
    assert cli.main(["report", str(logdir / "plain")]) == cli.EXIT_NO_DATA
    assert capsys.readouterr().out == f"== run: plain\n{tags.NO_DATA_MESSAGE}\n"


def test_same_cells_for_a_long_run_as_the_heatmap_image(tmp_path):
    # 1234 steps of 3 layers (`grad_norm` = (step + 1) * (layer + 1)), with a
    # spike the image and the dashboard must both keep.
    steps = np.arange(1234)
    layers = ["a", "b", "c"]
    write_large_run(str(tmp_path / "long"), steps, layers)
    with DiagnosticsWriter(str(tmp_path / "long")) as writer:
        writer.write_stats(StepStats(77, 1.0, layers=[LayerStats("b", grad_norm=1e9)]))
    matrix = (steps[np.newaxis, :] + 1.0) * np.arange(1, 4)[:, np.newaxis]
    matrix[1, 77] = 1e9
    payload = _health(PluginClient(make_plugin(str(tmp_path))), "long/train")
    (norms,) = [h for h in payload["heatmaps"] if h["section"] == tags.GRAD_NORM]
    assert norms["layers"] == layers
    image_cells = downsample.downsample_columns(matrix, heatmap.MAX_COLUMNS)
    assert image_cells.shape == (3, 500) == np.shape(norms["values"])
    np.testing.assert_allclose(norms["values"], image_cells, rtol=5e-4)
    # 1234 = 500 * 2 + 234: 234 columns of 3 steps first, so step 77 is in
    # column 77 // 3 = 25.
    assert norms["values"][1][25] == 1e9 == image_cells[1, 25]
    image, _ = heatmap.render_heatmap(matrix, cell_height=1, cell_width=1)
    assert image.shape[1] == 500 + heatmap.GAP + heatmap.BAR_WIDTH


def test_same_error_for_a_table_without_a_column(tmp_path, capsys):
    with DiagnosticsWriter(str(tmp_path / "r")) as writer:
        writer.write_findings([Finding("dead_relu", "d", 4, 0.5, "m", "f")])
    table = tables.findings_table([Finding("dead_relu", "d", 4, 0.5, "m", "f")])
    events = EventFile(str(tmp_path / "r" / "train"))
    events.write(text.text_pb(tags.FINDINGS_TAG, table[:, 1:]), 4)  # no `mode`
    events.close()
    expected = (
        f"to have the columns {list(tags.FINDING_COLUMNS)}. Missing: ['mode']; "
        f"received header: {list(tags.FINDING_COLUMNS[1:])}"
    )
    payload = _health(PluginClient(make_plugin(str(tmp_path))), "r/train")
    assert payload["has_data"] is False
    assert payload["message"] == (
        "Expected the `diagnostics/findings` table at step 4 of run 'r/train' "
        + expected
    )
    code = cli.main(["report", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE
    assert err == (
        "keras-actloss report: error: Expected the `diagnostics/findings` table "
        f"at step 4 of {tmp_path / 'r' / 'train'} {expected}\n"
    )
