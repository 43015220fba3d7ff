"""Every example runs top to bottom with `--tiny` (each asserts its own story)."""

import os
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))


def test_every_example_is_listed():
    assert SCRIPTS == [
        "choosing_loss_and_activation.py",
        "dead_relu.py",
        "exploding_gradients.py",
        "quickstart.py",
        "vanishing_gradients.py",
    ]


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs_tiny(script, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--tiny"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
