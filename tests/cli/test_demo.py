"""`keras-actloss demo`: each scenario gives its failure, and the report agrees."""

import io
import math

from keras_actloss import cli, demo
from keras_actloss.logs import reader


def _key(finding):
    # A mode's model-wide finding (layer None) sorts first.
    return (finding.mode, finding.layer or "", finding.step)


def _value(finding):
    """The finding's value, NaN as a string (NaN equals nothing)."""
    value = finding.value
    return "nan" if value is not None and math.isnan(value) else value


def test_demo_findings_and_report_match(tmp_path):
    out = io.StringIO()
    results = demo.train_all(str(tmp_path), tiny=True, out=out)

    # Each failure scenario shows exactly its failure; each fix is healthy.
    for scenario in demo.SCENARIOS:
        modes = {f.mode for f in results[scenario.run]}
        assert modes == set(scenario.expected), scenario.run

    # The event files hold exactly the findings the callback reported.
    for run_dir in reader.find_runs(str(tmp_path)):
        logged = reader.read_run(run_dir)
        expected = results[logged.name]
        assert sorted(map(_key, logged.findings)) == sorted(map(_key, expected))
        assert sorted(map(_value, logged.findings), key=str) == sorted(
            map(_value, expected), key=str
        )

    report = io.StringIO()
    assert cli.report(str(tmp_path), out=report) == cli.EXIT_FAILURES
    text = report.getvalue()
    for scenario in demo.SCENARIOS:
        assert f"== run: {scenario.run}" in text
    assert "[8/8] dead-fix-leaky-relu" in out.getvalue()


def test_demo_main_prints_tensorboard_command(tmp_path, capsys, monkeypatch):
    # One scenario is enough to check the command's output around the report.
    monkeypatch.setattr(demo, "SCENARIOS", demo.SCENARIOS[:2])
    assert cli.main(["demo", "--tiny", "--logdir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "== run: vanishing-deep-sigmoid" in printed
    assert f"tensorboard --logdir {tmp_path}" in printed


def test_a_second_demo_replaces_the_first_ones_runs(tmp_path, monkeypatch):
    # The README's command run twice into `runs/demo`: the report reads the
    # second demo's findings once, not both demos' mixed.
    monkeypatch.setattr(demo, "SCENARIOS", demo.SCENARIOS[:1])
    first = demo.train_all(str(tmp_path), tiny=True, out=io.StringIO())
    second = demo.train_all(str(tmp_path), tiny=True, out=io.StringIO())
    (run_dir,) = reader.find_runs(str(tmp_path))
    logged = reader.read_run(run_dir)
    expected = second["vanishing-deep-sigmoid"]
    assert len(expected) == len(first["vanishing-deep-sigmoid"]) > 0
    assert sorted(map(_key, logged.findings)) == sorted(map(_key, expected))
