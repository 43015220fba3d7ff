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
from keras_actloss.logs import tags
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


def test_report_names_nested_runs_by_their_path(tmp_path, capsys):
    # Two experiments with a run of the same name each: named by their path
    # under the log dir (as TensorBoard names them), not both `seed1`; a
    # log dir that is a run itself keeps its own name.
    write_run(tmp_path / "expA" / "seed1", [DEAD])
    write_run(tmp_path / "expB" / "seed1", [])
    code, out, _ = run_main(["report", str(tmp_path), "--json"], capsys)
    assert [r["run"] for r in json.loads(out)["runs"]] == ["expA/seed1", "expB/seed1"]
    code, out, _ = run_main(["report", str(tmp_path / "expB" / "seed1")], capsys)
    assert out.startswith("== run: seed1\n")


def test_report_of_a_file_says_a_directory_is_expected(tmp_path, capsys):
    path = tmp_path / "events.out"
    path.write_bytes(b"")
    code, out, err = run_main(["report", str(path)], capsys)
    message = _one_line_error(code, out, err, "report")
    assert message == (
        "Expected a log directory (the `log_dir` GradientDiagnostics wrote "
        f"to, or a directory above it), not a file. Received: logdir={str(path)!r}"
    )


def test_demo_into_a_file_fails_before_training(tmp_path, capsys):
    path = tmp_path / "afile"
    path.write_text("")
    code, out, err = run_main(["demo", "--tiny", "--logdir", str(path)], capsys)
    message = _one_line_error(code, out, err, "demo")
    assert message == (
        "Expected a directory for the demo's logs, not a file. "
        f"Received: logdir={str(path)!r}"
    )


def test_report_missing_and_empty_logdir(tmp_path, capsys):
    missing = str(tmp_path / "nope")
    code, out, err = run_main(["report", missing], capsys)
    message = _one_line_error(code, out, err, "report")
    assert message == f"No such log directory: {missing!r}"
    empty = str(tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    code, out, err = run_main(["report", empty], capsys)
    message = _one_line_error(code, out, err, "report")
    assert message.startswith(f"No TensorBoard event files found under {empty!r}.")


def test_advise_npy(tmp_path, capsys):
    path = tmp_path / "labels.npy"
    np.save(path, np.eye(4)[np.arange(40) % 4])  # one-hot, 4 classes
    code, out, _ = run_main(["advise", str(path)], capsys)
    assert code == cli.EXIT_OK
    assert "CategoricalCrossentropy" in out and "softmax" in out
    code, out, _ = run_main(["advise", str(path), "--json"], capsys)
    assert json.loads(out)["output_units"] == 4


def test_advise_errors(tmp_path, capsys):
    missing = tmp_path / "missing.npy"
    code, out, err = run_main(["advise", str(missing)], capsys)
    assert _one_line_error(code, out, err, "advise") == (
        f"No such labels file: {missing}"
    )
    bad = tmp_path / "nan.npy"
    np.save(bad, np.array([0.0, np.nan]))
    code, out, err = run_main(["advise", str(bad)], capsys)
    assert "NaN" in _one_line_error(code, out, err, "advise")


def test_list_shows_every_registered_name(capsys):
    code, out, _ = run_main(["list"], capsys)
    assert code == cli.EXIT_OK
    activations_part, losses_part = out.split("\n\n")
    rows = {line.split()[0]: line for line in activations_part.splitlines()[2:]}
    assert set(rows) == set(registry.entries("activation"))
    rows = {line.split()[0]: line for line in losses_part.splitlines()[2:]}
    assert set(rows) == set(registry.entries("loss"))


def test_list_prints_zero_centred_and_robust_to_outliers(capsys):
    # The profiles' `zero_centred` and `robust_to_outliers` fields.
    code, out, _ = run_main(["list"], capsys)
    activations_part, losses_part = out.split("\n\n")
    lines = activations_part.splitlines()
    assert lines[0].split()[:5] == [
        "activation",
        "output",
        "range",
        "zero-centred",
        "notes",
    ]
    column = lines[0].index("zero-centred")
    centred = {line.split()[0]: line[column:].split()[0] for line in lines[2:]}
    assert (centred["tanh"], centred["relu"], centred["sigmoid"]) == ("yes", "no", "no")
    lines = losses_part.splitlines()
    assert lines[0].endswith("robust to outliers")
    robust = {line.split()[0]: line.split()[-1] for line in lines[2:]}
    assert robust["Huber"] == robust["MeanAbsoluteError"] == "yes"
    assert robust["MeanSquaredError"] == robust["BinaryCrossentropy"] == "no"


def test_installed_console_script(tmp_path):
    # The script beside this Python first (a virtualenv not on PATH).
    script = os.path.join(os.path.dirname(sys.executable), "keras-actloss")
    if not os.path.exists(script):
        script = shutil.which("keras-actloss") or script
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


# -- Reliability: exit codes, damaged files, strict JSON, one-line errors ------


def _one_line_error(code, out, err, command):
    """An error: exit 2, nothing on stdout, one line on stderr, no traceback."""
    assert code == cli.EXIT_USAGE
    assert out == ""
    assert err.count("\n") == 1 and err.startswith(f"keras-actloss {command}: error: ")
    assert "Traceback" not in err
    return err[len(f"keras-actloss {command}: error: ") : -1]


def _event_file(run_dir):
    (name,) = os.listdir(run_dir / "train")
    return str(run_dir / "train" / name)


def test_report_random_bytes_is_no_data_with_a_warning(tmp_path, capsys):
    train = tmp_path / "junk" / "train"
    train.mkdir(parents=True)
    path = str(train / "events.out.tfevents.1700000000.host.1.v2")
    with open(path, "wb") as f:
        f.write(np.random.default_rng(0).bytes(400))
    code, out, err = run_main(["report", str(tmp_path)], capsys)
    assert code == cli.EXIT_NO_DATA == 3
    assert out == f"== run: junk\n{tags.NO_DATA_MESSAGE}\n"
    assert "healthy" not in out
    assert err == (
        f"keras-actloss report: warning: {path}: damaged event file, reading "
        "stopped at byte 0 of 400 (record 0): corrupted record (Is this even a "
        "TFRecord file?); the 0 records before it are used\n"
    )


def test_report_truncated_file_warns_and_reads_the_rest(tmp_path, capsys):
    write_run(tmp_path / "bad", [DEAD])
    path = _event_file(tmp_path / "bad")
    size = os.path.getsize(path)
    with open(path, "ab") as f:
        f.write(b"\x30\x00\x00")  # a record cut short after 3 bytes
    code, out, err = run_main(["report", str(tmp_path)], capsys)
    # The findings before the damage are read: the failure still counts.
    assert code == cli.EXIT_FAILURES
    assert "dead_relu in dense, step 4 (value 0.75)" in out
    # header, layers, 3 recordings, findings: 6 records before the damage.
    assert err == (
        f"keras-actloss report: warning: {path}: damaged event file, reading "
        f"stopped at byte {size} of {size + 3} (record 6): truncated record; "
        "the 6 records before it are used\n"
    )


def test_report_keras_tensorboard_logs_only(tmp_path, capsys):
    import keras

    pytest.importorskip("tensorflow")  # `keras.callbacks.TensorBoard` needs it.

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    callback = keras.callbacks.TensorBoard(str(tmp_path / "tb"))
    x, y = np.zeros((4, 3)), np.zeros((4, 1))
    model.fit(x, y, batch_size=2, epochs=1, verbose=0, callbacks=[callback])
    code, out, err = run_main(["report", str(tmp_path / "tb")], capsys)
    assert (code, err) == (cli.EXIT_NO_DATA, "")
    assert out == f"== run: tb\n{tags.NO_DATA_MESSAGE}\n"
    code, out, _ = run_main(["report", str(tmp_path / "tb"), "--json"], capsys)
    payload = json.loads(out)
    assert (code, payload["exit_code"], payload["failed"]) == (3, 3, False)
    assert payload["runs"] == [
        {
            "run": "tb",
            "has_data": False,
            "has_steps": False,
            "layers": [],
            "findings": [],
            "damaged": [],
        }
    ]


@pytest.mark.parametrize(
    "findings, expected", [([DEAD], cli.EXIT_FAILURES), ([RISK], cli.EXIT_NO_DATA)]
)
def test_report_exit_code_with_a_run_without_data(tmp_path, capsys, findings, expected):
    # Failures win; else one run without data is not a healthy report.
    write_run(tmp_path / "a", findings)
    (tmp_path / "b" / "train").mkdir(parents=True)
    with open(tmp_path / "b" / "train" / "events.out.tfevents.1.h.v2", "wb"):
        pass  # an empty event file: no data, no damage
    code, out, err = run_main(["report", str(tmp_path)], capsys)
    assert (code, err) == (expected, "")
    assert out.endswith(f"== run: b\n{tags.NO_DATA_MESSAGE}\n")


@pytest.mark.parametrize(
    "findings, expected",
    [([], cli.EXIT_NO_DATA), ([RISK], cli.EXIT_NO_DATA), ([DEAD], cli.EXIT_FAILURES)],
)
def test_report_run_without_a_training_step_is_not_healthy(
    tmp_path, capsys, findings, expected
):
    # A `fit` of 0 epochs (or whose data ran out at once) writes its layers
    # table, and the findings made before training, and no step.
    with DiagnosticsWriter(tmp_path / "empty") as writer:
        writer.write_layers(LAYERS, step=0)
        writer.write_findings(findings)
    code, out, err = run_main(["report", str(tmp_path / "empty")], capsys)
    assert (code, err) == (expected, "")
    assert tags.NO_STEPS_MESSAGE in out
    assert "look healthy" not in out
    assert ("deep_saturating_stack" in out) == (findings == [RISK])
    code, out, _ = run_main(["report", str(tmp_path / "empty"), "--json"], capsys)
    (run,) = json.loads(out)["runs"]
    assert (code, run["has_data"], run["has_steps"]) == (expected, True, False)
    # A run with steps: has_steps.
    write_run(tmp_path / "ok", [])
    code, out, _ = run_main(["report", str(tmp_path / "ok"), "--json"], capsys)
    assert (code, json.loads(out)["runs"][0]["has_steps"]) == (cli.EXIT_OK, True)


def test_report_of_a_fit_of_no_epochs(tmp_path, capsys):
    import keras

    from keras_actloss.callbacks import GradientDiagnostics

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    diag = GradientDiagnostics(log_dir=tmp_path / "run")
    x, y = np.zeros((4, 3)), np.zeros((4, 1))
    model.fit(x, y, epochs=0, verbose=0, callbacks=[diag])
    code, out, _ = run_main(["report", str(tmp_path / "run")], capsys)
    assert code == cli.EXIT_NO_DATA
    assert out.endswith(f"{tags.NO_STEPS_MESSAGE}\n")


def _strict_json(text):
    def refuse(name):
        raise AssertionError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_report_json_is_strict(tmp_path, capsys):
    nan = Finding("non_finite", "dense", 2, float("nan"), "NaN.", "Lower it.")
    write_run(tmp_path / "r", [nan], norms=(1.0, float("inf"), float("nan")))
    code, out, _ = run_main(["report", str(tmp_path), "--json"], capsys)
    payload = _strict_json(out)
    assert code == cli.EXIT_FAILURES
    (run,) = payload["runs"]
    assert run["findings"][0]["value"] == "NaN"
    dense = run["layers"][0]
    assert (dense["grad_norm_first"], dense["grad_norm_last"]) == (1.0, "NaN")
    assert (dense["grad_norm_min"], dense["grad_norm_max"]) == (1.0, 1.0)
    assert cli.json_safe([float("inf"), -float("inf"), None, 2.5]) == [
        "Infinity",
        "-Infinity",
        None,
        2.5,
    ]


@pytest.mark.parametrize("column", ["mode", "severity"])
def test_report_findings_table_without_a_column(tmp_path, capsys, column):
    from tensorboard.plugins.text import summary_v2 as text

    from keras_actloss.logs import tables
    from keras_actloss.logs.writer import EventFile

    write_run(tmp_path / "r", [])
    table = tables.findings_table([DEAD])
    keep = [i for i, c in enumerate(table[0]) if c != column]
    events = EventFile(str(tmp_path / "r" / "train"))
    events.write(text.text_pb("diagnostics/findings", table[:, keep]), 4)
    events.close()
    code, out, err = run_main(["report", str(tmp_path)], capsys)
    message = _one_line_error(code, out, err, "report")
    header = [c for c in tags.FINDING_COLUMNS if c != column]
    assert message == (
        "Expected the `diagnostics/findings` table at step 4 of "
        f"{tmp_path / 'r' / 'train'} to have the columns "
        f"{list(tags.FINDING_COLUMNS)}. Missing: ['{column}']; received "
        f"header: {header}"
    )


def test_report_layers_table_without_a_column(tmp_path, capsys):
    from tensorboard.plugins.text import summary_v2 as text

    from keras_actloss.logs import tables
    from keras_actloss.logs.writer import EventFile

    events = EventFile(str(tmp_path))
    events.write(
        text.text_pb("diagnostics/layers", tables.layers_table(LAYERS)[:, 1:]), 0
    )
    events.close()
    code, out, err = run_main(["report", str(tmp_path)], capsys)
    assert "Missing: ['layer']" in _one_line_error(code, out, err, "report")


def test_advise_npy_header_claiming_a_huge_shape(tmp_path, capsys):
    path = tmp_path / "huge.npy"
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**12,)}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(b"\x00" * 80)
    code, out, err = run_main(["advise", str(path)], capsys)
    assert _one_line_error(code, out, err, "advise") == (
        f"Could not read {path} as a .npy array: its header claims shape "
        "(1000000000000,) of float64 (8000000000000 bytes), the file holds 80 "
        "bytes of data (at most 8000000000 are read)"
    )


@pytest.mark.parametrize("content", [b"", b"not numpy at all", b"\x93NUMPY\x01\x00"])
def test_advise_file_that_is_not_npy(tmp_path, capsys, content):
    path = tmp_path / "labels.npy"
    path.write_bytes(content)
    code, out, err = run_main(["advise", str(path)], capsys)
    message = _one_line_error(code, out, err, "advise")
    assert message.startswith(f"Could not read {path} as a .npy array: ")


def test_help_documents_the_exit_codes(capsys):
    for argv in (["--help"], ["report", "--help"]):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 0
        help_text = capsys.readouterr().out
        assert "exit codes:" in help_text
        for code, meaning in cli.EXIT_CODES.items():
            assert f"  {code}  {meaning}" in help_text
    assert sorted(cli.EXIT_CODES) == [0, 1, 2, 3]
