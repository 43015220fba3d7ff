"""The `keras-actloss` command line, through `main(argv)` and as a script."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from keras_actloss import cli, registry
from keras_actloss.diagnostics.records import LayerInfo, LayerStats, StepStats
from keras_actloss.findings import FAILURE, WARNING, Finding
from keras_actloss.logs.writer import DiagnosticsWriter

LAYERS = [
    LayerInfo("dense", "Dense", "relu", True, 0),
    LayerInfo("output", "Dense", "linear", True, 1),
]
DEAD = Finding(
    "dead_relu", "dense", 4, 0.75, "75% of units are dead.", "Use Leaky ReLU.", FAILURE
)
RISK = Finding(
    "deep_saturating_stack", "dense", None, None, "Risky.", "Use ReLU.", WARNING
)


def write_run(path, findings, norms=(1.0, 0.5, 0.25)):
    """A run with three recording steps; dense's grad norm follows `norms`."""
    with DiagnosticsWriter(path) as writer:
        writer.write_layers(LAYERS, step=0)
        for step, norm in zip((0, 2, 4), norms):
            writer.write_stats(
                StepStats(
                    step=step,
                    global_norm=norm * 2,
                    layers=[
                        LayerStats(
                            "dense",
                            grad_norm=norm,
                            zero_fraction=0.5,
                            dead_fraction=step / 8,
                        ),
                        LayerStats("output", grad_norm=norm / 10),
                    ],
                )
            )
        writer.write_findings(findings)
    return str(path)


def run_main(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_report_table_findings_and_failure_exit(tmp_path, capsys):
    write_run(tmp_path / "bad", [DEAD])
    code, out, _ = run_main(["report", str(tmp_path)], capsys)
    assert code == cli.EXIT_FAILURES
    assert "== run: bad" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line}
    # dense: first 1.0, last 0.25, min 0.25, max 1.0; zero 0.5; dead 4/8.
    assert rows["dense"][1:7] == ["1", "0.25", "0.25", "1", "0.5", "0.5"]
    assert rows["output"][1:5] == ["0.1", "0.025", "0.025", "0.1"]
    assert "dead_relu in dense, step 4 (value 0.75)" in out
    assert "Fix: Use Leaky ReLU." in out


def test_report_warnings_only_exits_zero(tmp_path, capsys):
    write_run(tmp_path / "ok", [RISK])
    code, out, _ = run_main(["report", str(tmp_path / "ok")], capsys)
    assert code == cli.EXIT_OK
    assert "[warning] deep_saturating_stack in dense, before training" in out


def test_report_healthy_run(tmp_path, capsys):
    write_run(tmp_path / "ok", [])
    code, out, _ = run_main(["report", str(tmp_path)], capsys)
    assert code == cli.EXIT_OK
    assert "No findings" in out


def test_report_json_round_trips_findings(tmp_path, capsys):
    write_run(tmp_path / "a", [DEAD])
    write_run(tmp_path / "b", [])
    code, out, _ = run_main(["report", str(tmp_path), "--json"], capsys)
    payload = json.loads(out)
    assert code == cli.EXIT_FAILURES and payload["failed"] is True
    assert [r["run"] for r in payload["runs"]] == ["a", "b"]
    assert [Finding.from_dict(f) for f in payload["runs"][0]["findings"]] == [DEAD]
    assert payload["runs"][1]["findings"] == []
    assert [row["layer"] for row in payload["runs"][0]["layers"]] == [
        "dense",
        "output",
    ]


def test_report_missing_and_empty_logdir(tmp_path, capsys):
    code, _, err = run_main(["report", str(tmp_path / "nope")], capsys)
    assert code == cli.EXIT_USAGE and "nope" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_main(["report", str(tmp_path / "empty")], capsys)
    assert code == cli.EXIT_USAGE and "empty" in err


def test_advise_npy(tmp_path, capsys):
    path = tmp_path / "labels.npy"
    np.save(path, np.eye(4)[np.arange(40) % 4])  # one-hot, 4 classes
    code, out, _ = run_main(["advise", str(path)], capsys)
    assert code == cli.EXIT_OK
    assert "CategoricalCrossentropy" in out and "softmax" in out
    code, out, _ = run_main(["advise", str(path), "--json"], capsys)
    assert json.loads(out)["output_units"] == 4


def test_advise_errors(tmp_path, capsys):
    code, _, err = run_main(["advise", str(tmp_path / "missing.npy")], capsys)
    assert code == cli.EXIT_USAGE and "missing.npy" in err
    bad = tmp_path / "nan.npy"
    np.save(bad, np.array([0.0, np.nan]))
    code, _, err = run_main(["advise", str(bad)], capsys)
    assert code == cli.EXIT_USAGE and "y" in err


def test_list_shows_every_registered_name(capsys):
    code, out, _ = run_main(["list"], capsys)
    assert code == cli.EXIT_OK
    first_words = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert set(registry.entries("activation")) <= first_words
    assert set(registry.entries("loss")) <= first_words


def test_installed_console_script(tmp_path):
    script = shutil.which("keras-actloss") or os.path.join(
        os.path.dirname(sys.executable), "keras-actloss"
    )
    assert os.path.exists(script), "the package must install `keras-actloss`"
    write_run(tmp_path / "bad", [DEAD])
    result = subprocess.run(
        [script, "report", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1, result.stderr
    assert "dead_relu in dense" in result.stdout


@pytest.mark.parametrize("argv", [[], ["nonsense"]])
def test_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2


def test_python_dash_m_runs_the_cli():
    result = subprocess.run(
        [sys.executable, "-m", "keras_actloss", "list"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "SparseCategoricalCrossentropy" in result.stdout
