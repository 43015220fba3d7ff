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


# The log folders each example writes under `--logdir` (one per run).
RUNS = {
    "choosing_loss_and_activation.py": [],
    "dead_relu.py": ["fix_leaky_relu_lr_0_001", "relu_adam_lr_0_2"],
    "exploding_gradients.py": [
        "fix_batch_normalization",
        "fix_clipnorm_1",
        "fix_lr_0_01",
        "sgd_lr_0_1",
    ],
    "quickstart.py": ["train"],
    "vanishing_gradients.py": ["8_sigmoid_layers", "fix_relu"],
}


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs_tiny(script, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--tiny", "--logdir", "logs"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    # Every run's logs in the folder given (nothing left in the system's temp).
    logs = tmp_path / "logs"
    runs = sorted(p.name for p in logs.iterdir()) if logs.exists() else []
    assert runs == RUNS[script]
