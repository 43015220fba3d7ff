"""Routes of the Gradient Health plugin, over a real data provider."""

from __future__ import annotations

import json
import math
import re
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from gh_logs import (
    FINDINGS,
    LAYERS,
    STEPS,
    PluginClient,
    dead_fraction,
    grad_norm,
    make_plugin,
    make_provider,
    saturation,
    write_large_run,
    write_plain_run,
    write_run,
)
from tensorboard.backend import application
from tensorboard.plugins import base_plugin
from werkzeug import test as werkzeug_test

from keras_actloss.diagnostics.records import LayerInfo
from keras_actloss.logs import tags
from keras_actloss.logs.writer import DiagnosticsWriter
from keras_actloss.tensorboard_plugin import plugin as plugin_lib

RUN = "exp/train"
REL = 5e-4  # the plugin rounds cells to 4 significant digits


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    """`exp/train` has diagnostics data; `plain` has a loss curve only."""
    root = tmp_path_factory.mktemp("gh_logs")
    write_run(str(root / "exp"))
    write_plain_run(str(root / "plain"))
    return str(root)


@pytest.fixture(scope="module")
def client(logdir):
    return PluginClient(make_plugin(logdir))


def _json(response):
    return json.loads(response.get_data(as_text=True))


def _cells(values):
    """JSON cells back to floats (TensorBoard sends NaN as the string "NaN")."""
    return [math.nan if v == "NaN" else v for v in values]


def test_entry_point_loads_the_loader():
    points = metadata.entry_points(group="tensorboard_plugins")
    (point,) = [p for p in points if p.name == plugin_lib.PLUGIN_NAME]
    assert point.load() is plugin_lib.GradientHealthLoader
    loader = application.make_plugin_loader(point.load())
    assert isinstance(loader, base_plugin.TBLoader)


def test_frontend_metadata_is_an_es_module(logdir):
    meta = make_plugin(logdir).frontend_metadata()
    assert meta.es_module_path == "/index.js"
    assert meta.element_name is None
    assert meta.tab_name == "Gradient Health"


def test_routes(client):
    assert set(client.apps) == {"/index.js", "/style.css", "/runs", "/health"}


def test_is_active(logdir, tmp_path):
    assert make_plugin(logdir).is_active()
    write_plain_run(str(tmp_path / "plain"))
    assert not make_plugin(str(tmp_path)).is_active()


def test_runs_lists_every_run_and_which_have_data(client):
    response = client.get("/runs")
    assert response.status_code == 200
    payload = _json(response)
    assert payload["max_columns"] == 500
    assert sorted(payload["runs"], key=lambda r: r["run"]) == [
        {"run": RUN, "has_data": True},
        {"run": "plain", "has_data": False},
    ]


def test_health_layers_in_model_order(client):
    payload = _json(client.get("/health", f"run={RUN}"))
    assert payload["has_data"] is True
    assert "message" not in payload  # It recorded steps (`NO_STEPS_MESSAGE`).
    assert [row["layer"] for row in payload["layers"]] == [r[0] for r in LAYERS]
    assert payload["layers"][1] == {
        "layer": "block_dense",
        "class_name": "Dense",
        "activation": "sigmoid",
        "has_trainable_weights": "True",
    }
    rows = {h["section"]: h["layers"] for h in payload["heatmaps"]}
    # Model order, only layers with the tag, `grad_norm/global` is not a layer.
    assert rows == {
        "grad_norm": ["stem_conv", "block_dense", "head"],
        "dead_fraction": ["stem_conv"],
        "saturation": ["block_dense", "head"],
    }
    assert [h["log_scale"] for h in payload["heatmaps"]] == [True, False, False]


def test_health_one_column_per_step_when_few_steps(client):
    payload = _json(client.get("/health", f"run={RUN}"))
    assert payload["columns"] == [[s, s] for s in STEPS]
    assert payload["recorded_steps"] == len(STEPS)
    heatmaps = {h["section"]: h for h in payload["heatmaps"]}
    norms = heatmaps["grad_norm"]
    for row, layer in enumerate(norms["layers"]):
        expected = [grad_norm(layer, s) for s in STEPS]
        np.testing.assert_allclose(_cells(norms["values"][row]), expected, rtol=REL)
    np.testing.assert_allclose(
        heatmaps["dead_fraction"]["values"][0], [dead_fraction(s) for s in STEPS]
    )
    for row, layer in enumerate(heatmaps["saturation"]["layers"]):
        expected = [saturation(layer, s) for s in STEPS]
        np.testing.assert_allclose(heatmaps["saturation"]["values"][row], expected)


def test_health_buckets_steps_into_requested_columns(client):
    payload = _json(client.get("/health", f"run={RUN}&columns=4"))
    # 10 distinct steps in 4 groups: numpy.array_split sizes 3, 3, 2, 2.
    assert payload["columns"] == [[0, 2], [3, 5], [6, 7], [8, 9]]
    norms = {h["section"]: h for h in payload["heatmaps"]}["grad_norm"]
    stem = norms["values"][0]
    # Each cell is the largest value of its steps: 10^-first step.
    np.testing.assert_allclose(stem, [1.0, 1e-3, 1e-6, 1e-8], rtol=REL)
    head = _cells(norms["values"][2])
    # Steps 6, 7 hold 6.5 and NaN: the NaN wins the cell; 0.5 + step otherwise.
    assert math.isnan(head[2])
    np.testing.assert_allclose([head[0], head[1], head[3]], [2.5, 5.5, 9.5], rtol=REL)
    dead = {h["section"]: h for h in payload["heatmaps"]}["dead_fraction"]
    # step / 10 at the last step of each group.
    np.testing.assert_allclose(dead["values"][0], [0.2, 0.5, 0.7, 0.9], rtol=REL)


def test_health_findings_table(client):
    findings = _json(client.get("/health", f"run={RUN}"))["findings"]
    assert [(f["mode"], f["layer"], f["step"]) for f in findings] == [
        ("softmax_with_binary_crossentropy", "head", None),
        ("vanishing_gradients", "stem_conv", 3),
        ("non_finite", "head", 7),
    ]
    assert findings[1] == {
        "mode": "vanishing_gradients",
        "layer": "stem_conv",
        "step": 3,
        "value": 0.001,
        "severity": "failure",
        "message": FINDINGS[1].message,
        "fix": FINDINGS[1].fix,
        "section": "grad_norm",
    }
    assert findings[0]["value"] is None and findings[0]["section"] is None
    assert findings[2]["value"] == "NaN"


def test_run_without_our_data_says_so(client):
    response = client.get("/health", "run=plain")
    assert response.status_code == 200
    # The same message as `keras-actloss report` prints for such a run.
    assert _json(response) == {
        "run": "plain",
        "has_data": False,
        "message": tags.NO_DATA_MESSAGE,
    }
    assert "GradientDiagnostics(log_dir=...)" in tags.NO_DATA_MESSAGE


@pytest.mark.parametrize(
    "query",
    [
        "",
        "run=",
        "run=..",
        "run=../exp/train",
        "run=exp/../../etc",
        "run=%2Fetc%2Fpasswd",
        "run=exp%5Ctrain",
        "run=exp%00train",
        f"run={RUN}&columns=abc",
        f"run={RUN}&columns=0",
        f"run={RUN}&columns=501",
        f"run={RUN}&columns=-3",
        f"run={RUN}&columns=%C2%B2",
        f"run={RUN}&run=plain",
        f"run={RUN}&tag=x",
    ],
)
def test_health_rejects_malformed_requests(client, query):
    response = client.get("/health", query)
    assert response.status_code == 400
    assert "Expected" in _json(response)["error"]


def test_unknown_run_is_404(client):
    response = client.get("/health", "run=nope/train")
    assert response.status_code == 404
    assert "nope/train" in _json(response)["error"]


@pytest.mark.parametrize("route", ["/health", "/runs", "/index.js"])
def test_only_get(client, route):
    response = client.get(route, f"run={RUN}", method="POST")
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET"


def test_runs_rejects_parameters(client):
    assert client.get("/runs", "path=../../").status_code == 400


def test_static_files_are_offline(client):
    response = client.get("/index.js")
    assert response.status_code == 200
    assert response.mimetype == "text/javascript"
    script = response.get_data(as_text=True)
    assert "export async function render()" in script
    style = client.get("/style.css").get_data(as_text=True)
    static = Path(plugin_lib.__file__).parent / "static"
    assert {p.name for p in static.iterdir()} == {"index.js", "style.css"}
    for text in (script, style):
        # No external scripts, stylesheets or fonts.
        assert not re.search(r"https?:|//[a-z0-9.-]+\.[a-z]{2,}/|@import|url\(", text)


def test_run_without_a_training_step_is_not_called_healthy(tmp_path):
    # A `fit` of 0 epochs writes its layers table and nothing else.
    with DiagnosticsWriter(str(tmp_path / "empty")) as writer:
        writer.write_layers([LayerInfo(*LAYERS[0], depth=0)], step=0)
    client = PluginClient(make_plugin(str(tmp_path)))
    payload = _json(client.get("/health", "run=empty/train"))
    assert payload["has_data"] is True
    assert (payload["recorded_steps"], payload["findings"]) == (0, [])
    assert payload["message"] == tags.NO_STEPS_MESSAGE


def test_large_run_is_bounded_to_500_columns(tmp_path):
    # 2000 steps plus irregular sentinel steps, 50 layers.
    steps = np.unique(np.concatenate([np.arange(2000), [2001, 2017, 4500]]))
    layers = [f"dense_{i}" for i in range(50)]
    write_large_run(str(tmp_path / "big"), steps, layers)
    client = PluginClient(make_plugin(str(tmp_path)))
    payload = _json(client.get("/health", "run=big/train"))
    columns = np.array(payload["columns"])
    assert columns.shape == (500, 2)
    assert payload["recorded_steps"] == steps.size
    # Groups tile the 2003 recorded steps in order: 2003 = 500 * 4 + 3, so
    # 3 groups of 5 steps, then 497 of 4.
    sizes = [np.sum((steps >= a) & (steps <= b)) for a, b in columns]
    assert sizes == [5] * 3 + [4] * 497
    assert columns[0, 0] == 0 and columns[-1, 1] == 4500
    norms = payload["heatmaps"][0]
    assert norms["layers"] == layers
    assert all(len(row) == 500 for row in norms["values"])
    # The last column holds steps 1999, 2001, 2017, 4500; dense_9 records
    # (step + 1) * 10 there, so the cell is the largest: 4501 * 10.
    assert steps[-4:].tolist() == [1999, 2001, 2017, 4500]
    assert norms["values"][9][-1] == 45010.0
    # The first column holds steps 0-4: dense_0 records step + 1, max 5.
    assert norms["values"][0][0] == 5.0
    assert payload["heatmaps"][1]["layers"] == []


def test_tensorboard_app_lists_the_tab_and_serves_the_entry(logdir):
    provider = make_provider(logdir)
    context = base_plugin.TBContext(logdir=logdir, data_provider=provider)
    plugin = plugin_lib.GradientHealthLoader().load(context)
    app = application.TensorBoardWSGI([plugin], data_provider=provider)
    client = werkzeug_test.Client(app)
    listing = json.loads(client.get("/data/plugins_listing").get_data(as_text=True))
    assert listing["gradient_health"]["enabled"] is True
    assert listing["gradient_health"]["tab_name"] == "Gradient Health"
    assert listing["gradient_health"]["loading_mechanism"] == {
        "type": "IFRAME",
        "module_path": "/data/plugin/gradient_health/index.js",
    }
    entry = client.get("/data/plugin_entry.html?name=gradient_health")
    assert entry.status_code == 200
    assert 'import("./index.js")' in entry.get_data(as_text=True)
    base = "/data/plugin/gradient_health"
    assert client.get(f"{base}/health?run={RUN}").status_code == 200
    assert client.get(f"{base}/health?run=..%2F..%2Fetc").status_code == 400
    assert client.get(f"{base}/../../../etc/passwd").status_code == 404


def test_findings_repeated_in_later_tables_are_shown_once(tmp_path):
    # A writer that rewrites every finding so far in each table (robust to
    # TensorBoard keeping only some text events) must not show duplicates.
    first, second = FINDINGS[1], FINDINGS[2]
    with DiagnosticsWriter(str(tmp_path / "cum")) as writer:
        writer.write_findings([first])
        writer.write_findings([first, second])
    client = PluginClient(make_plugin(str(tmp_path)))
    findings = _json(client.get("/health", "run=cum/train"))["findings"]
    assert [(f["mode"], f["step"]) for f in findings] == [
        (first.mode, first.step),
        (second.mode, second.step),
    ]
