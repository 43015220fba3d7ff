"""Shared helpers for the examples: the `--tiny` flag and a diagnosed `fit`."""

import argparse
import os
import re
import tempfile
import warnings

import keras

from keras_actloss.callbacks import GradientDiagnostics


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (CI)")
    parser.add_argument("--logdir", default=None, help="TensorBoard log dir")
    return parser.parse_args()


def fit_and_diagnose(model, x, y, title, epochs, logdir=None, batch_size=64):
    """Trains `model` with GradientDiagnostics at its default settings and
    prints what it found. The logs go to a folder of `logdir` named after
    the run (`--logdir`), or to a new temporary folder."""
    if logdir:
        logdir = os.path.join(logdir, re.sub(r"[^a-z0-9]+", "_", title.lower()))
    else:
        logdir = tempfile.mkdtemp(prefix="keras-actloss-")
    diag = GradientDiagnostics(log_dir=logdir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Printed below instead.
        history = model.fit(
            x, y, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=[diag]
        )
    losses = ", ".join(f"{v:.3g}" for v in history.history["loss"])
    print(f"\n== {title}\nloss per epoch: {losses}\nlogs: {logdir}")
    for finding in diag.findings:
        print(f"  {finding}")
    if not diag.findings:
        print("  no findings: training is healthy")
    return diag.findings


def seed(value: int = 0) -> None:
    keras.utils.set_random_seed(value)
