"""Writes a benchmark's section of `benchmarks/RESULTS.md`.

Each benchmark owns one section, between `<!-- NAME:start -->` and
`<!-- NAME:end -->`, replaced whole on every run and headed with the date,
the versions and the machine it ran on. Other sections are left as they are.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
import sys

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
HEADER = (
    "# Benchmark results\n\n"
    "Written by the scripts in `benchmarks/`, one section each; every section "
    "says when, with which versions and on which machine it was measured. "
    "Re-run a script to replace its section.\n"
)


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "-C", os.path.dirname(RESULTS), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment() -> str:
    """One line: date, commit, Python, TensorFlow, JAX (on that backend),
    Keras, NumPy, CPUs and platform."""
    import keras
    import numpy as np

    try:
        import tensorflow as tf

        tf_version = tf.__version__
    except ImportError:
        tf_version = "not installed"
    jax_version = ""
    if keras.backend.backend() == "jax":
        import jax

        jax_version = f"JAX {jax.__version__}, "
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{date}, commit {_commit()}; Python {sys.version.split()[0]}, "
        f"TensorFlow {tf_version}, {jax_version}"
        f"Keras {keras.__version__} ({keras.backend.backend()}), NumPy "
        f"{np.__version__}; {os.cpu_count()} CPUs, {platform.platform()}"
    )


def write_section(name: str, title: str, body: str, path: str = RESULTS) -> None:
    """Replaces (or appends) the section `name` of the results file."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    section = f"{start}\n## {title}\n\n_{environment()}_\n\n{body.strip()}\n{end}\n"
    text = HEADER
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end) + r"\n?", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(path, "w") as f:
        f.write(text)
