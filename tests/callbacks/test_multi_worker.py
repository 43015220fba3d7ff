"""`GradientDiagnostics` under `tf.distribute.MultiWorkerMirroredStrategy`.

Two worker processes on 127.0.0.1 (one CPU replica each) train the same tiny
model with the callback, all writing to the same `log_dir`; the test checks
that both report the same findings and global gradient norms and that only
the chief (worker 0) wrote event files.

Keras 3.15 bug: a plain `model.fit` under this strategy fails with two
workers, with or without the callback, in two places of
`keras/src/backend/tensorflow/trainer.py`:

1. `_maybe_symbolic_build` takes the first distributed batch, a tuple
   `(x, y)` of `PerReplica` values, and calls
   `strategy.reduce("MEAN", batch, axis=None)` on the whole tuple;
   `CollectiveAllReduceStrategy` only reduces a single value, so `fit` dies
   before the first step with `ValueError: Attempt to convert a value
   (PerReplica:{...}) with an unsupported type (<class
   '...values.PerReplica'>) to a Tensor.`
2. `reduce_per_replica` (`reduction="auto"`) reduces every output of
   `train_step` with `strategy.reduce("MEAN", value, axis=0)` under
   multi-worker training, which fails on the scalar loss: `ValueError:
   Invalid reduction dimension 0 for input with 0 dimensions.` (see
   keras-team/keras#20585, tensorflow/tensorflow#72388).

Neither depends on the model or the data: a `tf.data` input with
`steps_per_execution=2` and `jit_compile=False` still dies in (1), and (2)
is on the path of every step. Workaround, the smallest found (two
overrides on a `Sequential` subclass, in the worker script below):

1. builds from the first batch's local values
   (`strategy.experimental_local_results(value)[0]`, only the shapes
   matter) instead of reducing the tuple, and
2. returns `train_step`'s logs with shape `[1]`, so that the axis-0 mean
   is a mean across workers that gives back a scalar.

The callback's own statistics travel with the step's outputs too, and the
same axis-0 mean turned each vector into one number (`TypeError: 'float'
object is not subscriptable` in `read_full`); `TrainHooks` now gives them
a leading axis of 1 under multi-worker training.

Each worker is a `sys.executable` process with its own `TF_CONFIG` (free
ports on 127.0.0.1), `CUDA_VISIBLE_DEVICES=""`, bounded by `TIMEOUT_S` and
killed past it; results come back as JSON files.
"""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

# The workers run TensorFlow's MultiWorkerMirroredStrategy in subprocesses.
pytest.importorskip("tensorflow", reason="multi-worker training is TensorFlow's")

import keras_actloss

REPO = os.path.dirname(os.path.dirname(os.path.abspath(keras_actloss.__file__)))
WORKERS = 2
TIMEOUT_S = 120
NAN_STEP = 2  # The batch with a NaN input (batches of 16, not shuffled).

WORKER = r'''
import json
import os
import sys
import warnings

import numpy as np
import tensorflow as tf
import keras

from keras_actloss.callbacks import GradientDiagnostics


class Model(keras.Sequential):
    """The Keras 3.15 workaround (module docstring of the test)."""

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, it in iterator:
                batch = next(it)
                break
            local = self.distribute_strategy.experimental_local_results
            data_batch = tf.nest.map_structure(lambda v: local(v)[0], batch)
        super()._maybe_symbolic_build(data_batch=data_batch)

    def train_step(self, data):
        logs = super().train_step(data)
        return {k: tf.reshape(v, [1]) for k, v in logs.items()}


log_dir, out, nan_step = sys.argv[1], sys.argv[2], int(sys.argv[3])
strategy = tf.distribute.MultiWorkerMirroredStrategy()
rng = np.random.default_rng(0)
x = rng.normal(size=(64, 4)).astype("float32")
y = rng.normal(size=(64, 1)).astype("float32")
x[16 * nan_step + 3, 1] = np.nan
with strategy.scope():
    keras.utils.set_random_seed(0)
    model = Model(
        [
            keras.Input((4,)),
            keras.layers.Dense(3, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
diag = GradientDiagnostics(log_dir=log_dir, check_model=False)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    history = model.fit(
        x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, callbacks=[diag]
    )
result = {
    "pid": os.getpid(),
    "loss": history.history["loss"],
    "findings": [[f.mode, f.step, f.layer] for f in diag.findings],
    "history": [[s.step, s.global_norm, s.non_finite] for s in diag.history],
}
with open(out, "w") as f:
    json.dump(result, f)
'''


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _tail(path, chars=3000):
    with open(path, errors="replace") as f:
        return f.read()[-chars:]


def _run_workers(tmp_path, log_dir):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(WORKERS)]}
    procs, logs, outs = [], [], []
    try:
        for i in range(WORKERS):
            env = dict(
                os.environ,
                TF_CONFIG=json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": i}}
                ),
                CUDA_VISIBLE_DEVICES="",
                TF_CPP_MIN_LOG_LEVEL="2",
                KERAS_BACKEND="tensorflow",
                PYTHONPATH=os.pathsep.join(
                    [REPO, *filter(None, [os.environ.get("PYTHONPATH")])]
                ),
            )
            outs.append(tmp_path / f"result{i}.json")
            logs.append(tmp_path / f"worker{i}.log")
            with open(logs[i], "w") as log:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, str(script), str(log_dir), str(outs[i])]
                        + [str(NAN_STEP)],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        cwd=tmp_path,
                    )
                )
        # A worker that fails leaves the other waiting on a collective: stop
        # at the first failure and show every worker's output.
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            codes = [proc.poll() for proc in procs]
            if None not in codes or any(codes):
                break
            time.sleep(0.2)
        codes = [proc.poll() for proc in procs]
        if codes != [0] * WORKERS:
            outputs = "\n".join(
                f"--- worker {i} (exit {code}):\n{_tail(path)}"
                for i, (code, path) in enumerate(zip(codes, logs))
            )
            pytest.fail(
                f"workers failed or ran past {TIMEOUT_S} s (exit None: "
                f"killed at the limit or after another failed):\n{outputs}"
            )
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    results = []
    for out in outs:
        with open(out) as f:
            results.append(json.load(f))
    return results


def test_two_workers_agree_and_only_the_chief_writes(tmp_path):
    log_dir = tmp_path / "logs"
    chief, other = _run_workers(tmp_path, log_dir)

    # Both trained the 4 steps and found the NaN batch at its step.
    assert chief["findings"] == other["findings"]
    assert ["non_finite", NAN_STEP] in [f[:2] for f in chief["findings"]]
    assert {f[0] for f in chief["findings"]} == {"non_finite"}
    steps = [h[0] for h in chief["history"]]
    assert steps == [h[0] for h in other["history"]] == [0, 1, 2, 3]
    flags = [h[2] for h in chief["history"]]
    assert flags == [h[2] for h in other["history"]]
    # Step 3 runs on the weights step 2 made NaN: its gradients are NaN,
    # or finite where the traced step's fused MatMul+BiasAdd+ReLU maps NaN
    # to 0 (oneDNN on some CPUs; eager ReLU keeps NaN on the same machine).
    assert flags[: NAN_STEP + 1] == [False, False, True]
    norms = np.array([h[1] for h in chief["history"]], "float64")
    assert np.isfinite(norms[:NAN_STEP]).all() and (norms[:NAN_STEP] > 0).all()
    np.testing.assert_allclose(
        [h[1] for h in other["history"]], norms, rtol=1e-6, atol=0
    )

    # Only the chief wrote: one event file, named with its process id, and
    # each step's global norm once (a second writer would double them). A
    # non-finite step is written twice by any one writer (its every-step
    # event and its full recording), so it is only checked for its value.
    files = os.listdir(log_dir / "train")
    events_files = [f for f in files if f.startswith("events.out.tfevents.")]
    assert len(events_files) == 1, files
    assert f".{chief['pid']}." in events_files[0]
    assert f".{other['pid']}." not in events_files[0]
    acc = event_accumulator.EventAccumulator(
        str(log_dir / "train"), size_guidance={event_accumulator.TENSORS: 0}
    )
    acc.Reload()
    written = {}
    for event in acc.Tensors("grad_norm/global"):
        value = tensor_util.make_ndarray(event.tensor_proto).item()
        written.setdefault(event.step, []).append(value)
    assert sorted(written) == steps
    for step, norm in zip(steps, norms):
        if step < NAN_STEP:
            assert len(written[step]) == 1, (step, written[step])
        np.testing.assert_allclose(written[step], norm, rtol=1e-6, atol=0)
