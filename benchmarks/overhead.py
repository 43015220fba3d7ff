"""Overhead of GradientDiagnostics on `model.fit`, against a plain `fit`.

Runs, in one process and interleaved, a plain `fit`, `fit` with
`GradientDiagnostics` at its default settings, with full statistics every
step (`every_n_steps=1`), and with `keras.callbacks.TensorBoard(
histogram_freq=1)` for comparison, on an MLP and a small CNN at batch size
128 on random MNIST-shaped data (a cached `tf.data.Dataset`).

How it measures, to keep the noise of a shared CPU out of the ratios while
giving every setting the same work:

- One model per setting, built from the same seed and data. Each is warmed
  up before timing: a first `fit` traces the train functions (the callback
  keeps them for later `fit`s of the same model; its one-off cost is
  printed apart) and further warm-up `fit`s reach steady state.
- Then `--pairs` rounds; in each round every setting runs one timed `fit`
  of `--epochs` x `--steps` steps, in an order rotated from round to round
  (so no setting always runs first or right after another). Each timed
  `fit` includes the callback's own `on_train_begin`/`on_train_end`.
- The garbage collector is run before and disabled during each timed `fit`.
- Printed per setting: the median over rounds of `time(setting) /
  time(plain)` from the same round, with min and max.

Two more measurements, each on fresh models and callbacks, plain and
default settings alternated in `--long-pairs` rounds:

- A long run: one `fit` of `--long-steps` steps (default 2000) of each of
  `--long-models` (default the MLP and the CNN: steps of well under a
  millisecond and of tens of milliseconds on JAX's CPU backend), so the
  dense recordings at the start of training (and the tracing of both train
  functions) are part of the cost; and, from the same fits, the time of
  its second half (from the start of its middle batch to the end of the
  `fit`): what the callback costs once those one-off costs are paid. Also
  in absolute terms (seconds added to the fit, milliseconds added to a
  step of its second half): what it adds to a model of any step time.
- Time to first step: the first `fit` (1 epoch of `--first-steps` steps at
  batch 32) of a MobileNetV2 (alpha 0.35, 32x32 inputs, 10 classes), which
  includes tracing the train functions; each `fit` in a process of its own
  (this script, `--first-one SETTING`), as a user's first `fit` runs: what
  a process compiles once (a helper program of the callback's, reused by
  every later model in the process) counts too.

Both as wall time and as the process's CPU time (all its threads: on a
shared machine other work stretches the wall time of a fit far more than
its CPU time; a compilation on a thread of its own counts in full).

Results are printed and written to `benchmarks/RESULTS.md` (section
`overhead`, or `overhead-jax` with `--backend jax`; the first fits to
`overhead-first` or `overhead-first-jax`; a part run with 0 pairs leaves
its section as it is).

`--backend jax` runs the same table on Keras's JAX backend (no TensorFlow
needed): the data are NumPy arrays instead of a `tf.data.Dataset`, and the
`keras.callbacks.TensorBoard` setting is left out (it needs TensorFlow on
every backend); the `batch_end` setting, a callback that does nothing after
each batch, shows what any callback with a batch-end hook costs there
(Keras then waits for each step's logs before it dispatches the next).

TensorFlow's thread pools are left at their defaults (the same for all
settings) unless `--threads N` pins both to N.

Usage:

```
python benchmarks/overhead.py [--backend tensorflow|jax] [--pairs 15] [--steps 100]
    [--epochs 2] [--warmup 2] [--long-steps 2000] [--long-models mlp,cnn]
    [--long-pairs 5] [--first-steps 30]
    [--no-write]
```
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def _backend() -> str:
    """`--backend` (before Keras is imported, which fixes the backend)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--backend", choices=("tensorflow", "jax"), default=None)
    chosen = parser.parse_known_args()[0].backend
    return chosen or os.environ.get("KERAS_BACKEND", "tensorflow")


os.environ["KERAS_BACKEND"] = _backend()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
JAX = os.environ["KERAS_BACKEND"] == "jax"

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_actloss.callbacks import GradientDiagnostics  # noqa: E402

try:
    from benchmarks._results import write_section  # noqa: E402
except ImportError:  # Run as `python benchmarks/overhead.py`.
    from _results import write_section  # noqa: E402

BATCH = 128
INPUT_SHAPES = {"mlp": (784,), "cnn": (28, 28, 1)}
# Keras's TensorBoard callback needs TensorFlow, on every backend. On JAX,
# `batch_end` (a callback that does nothing after each batch) shows what
# any such callback costs there: Keras then waits for every step's logs
# instead of dispatching the next step while one runs.
SETTINGS = ("plain", "default", "every_step") + (
    ("batch_end",) if JAX else ("tensorboard",)
)


class BatchEnd(keras.callbacks.Callback):
    """Does nothing after each batch (the `batch_end` setting)."""

    def on_train_batch_end(self, batch, logs=None):
        pass


def clock() -> tuple[float, float]:
    """Wall and process CPU seconds (all threads: the callback's, Keras's,
    TensorFlow's or XLA's) now."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    """Wall and CPU seconds since `start` (a `clock()`)."""
    return tuple(now - then for now, then in zip(clock(), start))


class LaterSteps(keras.callbacks.Callback):
    """Wall and CPU seconds from the start of batch `start` to the end of
    training (`seconds`, None if that batch did not run).

    No batch-end hook: on JAX Keras still dispatches steps ahead.
    """

    def __init__(self, start: int):
        super().__init__()
        self.start, self.at, self.seconds = start, None, None

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.start:
            self.at = clock()

    def on_train_end(self, logs=None):
        if self.at is not None:
            self.seconds = since(self.at)


def mlp() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="mlp",
    )


def cnn() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="cnn",
    )


def data(model_name: str, steps: int):
    """Random MNIST-shaped batches, as a cached in-memory `tf.data.Dataset`
    (on JAX: the NumPy arrays, fitted unshuffled).

    Not NumPy arrays on TensorFlow: `fit` would reshuffle 40 MB per epoch in
    background threads, which on 2 cores makes epoch times vary widely.
    tf.data's injected prefetch and autotuning are off for the same reason:
    with them whole `fit`s of the plain MLP ran at one of two speeds at
    random.
    """
    rng = np.random.default_rng(0)
    x = rng.random((steps * BATCH, *INPUT_SHAPES[model_name]), dtype="float32")
    y = rng.integers(0, 10, size=steps * BATCH)
    if JAX:
        return x, y
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_optimization.inject_prefetch = False
    options.autotune.enabled = False
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).cache()
    return dataset.with_options(options)


def callbacks(setting: str, log_dir: str) -> list:
    if setting == "plain":
        return []
    if setting == "default":
        return [GradientDiagnostics(log_dir=log_dir, check_model=False)]
    if setting == "every_step":
        return [
            GradientDiagnostics(log_dir=log_dir, every_n_steps=1, check_model=False)
        ]
    if setting == "batch_end":
        return [BatchEnd()]
    return [keras.callbacks.TensorBoard(log_dir=log_dir, histogram_freq=1)]


def timed_fit(model, dataset, epochs: int, cbs: list) -> float:
    """Seconds of one `fit`, with the garbage collector off while it runs."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        if isinstance(dataset, tuple):  # JAX: NumPy arrays.
            x, y = dataset
            model.fit(
                x,
                y,
                batch_size=BATCH,
                epochs=epochs,
                verbose=0,
                callbacks=cbs,
                shuffle=False,
            )
        else:
            model.fit(dataset, epochs=epochs, verbose=0, callbacks=cbs, shuffle=False)
        return time.perf_counter() - start
    finally:
        gc.enable()


def measure(build, args, root: str) -> tuple[dict, dict]:
    """Per-setting timed `fit`s (one per round) and first-`fit` times."""
    dataset = data(build().name, args.steps)
    runs, first = {}, {}
    for setting in SETTINGS:
        keras.utils.set_random_seed(0)
        model = build()
        model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
        cbs = callbacks(setting, os.path.join(root, f"{model.name}-{setting}"))
        first[setting] = timed_fit(model, dataset, 1, cbs)
        runs[setting] = (model, cbs)
    for _ in range(args.warmup):
        for setting in SETTINGS:
            model, cbs = runs[setting]
            timed_fit(model, dataset, args.epochs, cbs)
    times = {s: [] for s in SETTINGS}
    for r in range(args.pairs):
        shift = r % len(SETTINGS)
        for setting in SETTINGS[shift:] + SETTINGS[:shift]:
            model, cbs = runs[setting]
            times[setting].append(timed_fit(model, dataset, args.epochs, cbs))
    return times, first


def report(name: str, times: dict, first: dict, steps: int) -> list[str]:
    """Prints and returns the table rows of one model."""
    plain = times["plain"]
    seconds = statistics.median(plain)
    print(f"{name}: plain fit {seconds:.2f} s ({1000 * seconds / steps:.2f} ms/step)")
    rows = []
    for setting in SETTINGS[1:]:
        ratios = [t / p for t, p in zip(times[setting], plain)]
        extra = first[setting] - first["plain"]
        print(
            f"  {setting:12s} median ratio {statistics.median(ratios):.3f}x "
            f"(min {min(ratios):.3f}, max {max(ratios):.3f}); "
            f"first fit {extra:+.2f} s"
        )
        rows.append(
            f"| {name} | {setting} | {1000 * seconds / steps:.2f} ms | "
            f"{statistics.median(ratios):.3f}x | {min(ratios):.3f}-"
            f"{max(ratios):.3f} |"
        )
    return rows


def mobilenet() -> keras.Model:
    return keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10
    )


FRESH_COLUMNS = (
    "wall time, and the process's CPU time over all its threads, less "
    "disturbed by other work on a shared machine"
)
FRESH_HEAD = (
    "| run | plain | wall ratio | min-max | CPU ratio | min-max |\n"
    "| --- | --- | --- | --- | --- | --- |\n"
)


def first_fit(setting: str, steps: int) -> None:
    """`--first-one`: prints the wall and CPU seconds of the first `fit` in
    this process of a fresh MobileNetV2 with `setting`'s callbacks."""
    rng = np.random.default_rng(0)
    x = rng.random((steps * 32, 32, 32, 3), dtype="float32")
    y = rng.integers(0, 10, size=steps * 32)
    keras.utils.set_random_seed(0)
    model = mobilenet()
    model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    log_dir = tempfile.mkdtemp(prefix="overhead-first-")
    try:
        cbs = callbacks(setting, log_dir)
        wall, cpu = timed_fit_arrays(model, x, y, cbs, batch_size=32, epochs=1)
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
    print(f"first-fit {wall} {cpu}")


def first_fit_pairs(pairs: int, steps: int) -> dict[str, list[tuple]]:
    """`first_fit`'s wall and CPU seconds, plain and default settings, each
    in a fresh process, alternating which runs first."""
    times = {"plain": [], "default": []}
    for r in range(pairs):
        order = ("plain", "default") if r % 2 == 0 else ("default", "plain")
        for setting in order:
            command = [sys.executable, os.path.abspath(__file__), "--first-one"]
            command += [setting, "--first-steps", str(steps)]
            command += ["--backend", os.environ["KERAS_BACKEND"]]
            out = subprocess.run(command, capture_output=True, text=True, check=True)
            line = [x for x in out.stdout.splitlines() if x.startswith("first-fit ")]
            times[setting].append(tuple(float(v) for v in line[-1].split()[1:]))
    return times


def fresh_pairs(
    build, x, y, pairs: int, later: int | None = None, **fit
) -> tuple[dict[str, list[tuple]], dict[str, list[tuple]]]:
    """Wall and CPU seconds of a first `fit` of a fresh model, plain and
    with the default callback, alternating which runs first; and, with
    `later`, those from the start of batch `later` to the end of the `fit`
    (the steps after the tracing and the dense recordings at the start)."""
    times = {"plain": [], "default": []}
    tails = {"plain": [], "default": []}
    for r in range(pairs):
        order = ("plain", "default") if r % 2 == 0 else ("default", "plain")
        for setting in order:
            keras.backend.clear_session()
            keras.utils.set_random_seed(0)
            model = build()
            model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
            log_dir = tempfile.mkdtemp(prefix="overhead-fresh-")
            cbs = callbacks(setting, log_dir)
            mark = LaterSteps(later if later is not None else -1)
            times[setting].append(timed_fit_arrays(model, x, y, cbs + [mark], **fit))
            if mark.seconds is not None:
                tails[setting].append(mark.seconds)
            shutil.rmtree(log_dir, ignore_errors=True)
    return times, tails


def timed_fit_arrays(model, x, y, cbs: list, **fit) -> tuple[float, float]:
    """Wall and CPU seconds of one `fit`, the garbage collector off."""
    gc.collect()
    gc.disable()
    try:
        start = clock()
        model.fit(x, y, verbose=0, callbacks=cbs, shuffle=False, **fit)
        return since(start)
    finally:
        gc.enable()


def ratio_row(label: str, times: dict) -> str:
    """The table row of `times` (wall and CPU seconds per setting): the
    median of the paired ratios default / plain, with min and max, of each."""
    cells = []
    for i in (0, 1):
        ratios = [d[i] / p[i] for d, p in zip(times["default"], times["plain"])]
        cells.append(
            f"{statistics.median(ratios):.3f}x | {min(ratios):.3f}-{max(ratios):.3f}"
        )
    plain = statistics.median(t[0] for t in times["plain"])
    line = f"| {label} | plain {plain:.1f} s | {cells[0]} | {cells[1]} |"
    print(line)
    return line


def absolute_line(label: str, whole: dict, tail: dict, tail_steps: int) -> str:
    """The callback's cost in seconds (medians of the paired wall-time
    differences, default - plain) of the long fit of `label` and, from its
    second half, of a step: what it adds to a run of any step time."""
    added = statistics.median(
        d[0] - p[0] for d, p in zip(whole["default"], whole["plain"])
    )
    per_step = statistics.median(
        (d[0] - p[0]) / tail_steps for d, p in zip(tail["default"], tail["plain"])
    )
    line = (
        f"In absolute terms (medians of the paired wall-time differences): the "
        f"callback added {added:.2f} s to the long fit of the {label}, and "
        f"{per_step * 1e3:.3f} ms a step to its second half."
    )
    print(line)
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=15, help="timed rounds")
    parser.add_argument("--steps", type=int, default=100, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per fit")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up rounds")
    parser.add_argument("--threads", type=int, default=0, help="0: TF default")
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--long-steps", type=int, default=2000)
    parser.add_argument("--long-models", default="mlp,cnn")
    parser.add_argument("--long-pairs", type=int, default=5, help="0: skip")
    parser.add_argument("--first-steps", type=int, default=30)
    parser.add_argument("--first-pairs", type=int, default=3, help="0: skip")
    parser.add_argument("--backend", choices=("tensorflow", "jax"), default=None)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--first-one", choices=("plain", "default"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.first_one:
        first_fit(args.first_one, args.first_steps)
        return
    if args.threads and JAX:
        parser.error("--threads pins TensorFlow's thread pools: not with --backend jax")
    if args.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    print(
        f"keras {keras.__version__} ({keras.backend.backend()}), batch {BATCH}, "
        f"{args.steps} steps x "
        f"{args.epochs} epochs per timed fit, {args.warmup} warm-up and "
        f"{args.pairs} timed rounds (order rotated), gc off in timed fits, "
        + ("" if JAX else f"TF threads {args.threads or 'default'}, ")
        + f"{os.cpu_count()} CPUs"
    )
    builders = {"mlp": mlp, "cnn": cnn}
    root = tempfile.mkdtemp(prefix="overhead-")
    rows = []
    try:
        for name in args.models.split(",") if args.pairs else ():
            times, first = measure(builders[name], args, root)
            rows += report(name, times, first, args.steps * args.epochs)
            keras.backend.clear_session()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    fresh, absolute = [], []
    rng = np.random.default_rng(0)
    for name in args.long_models.split(",") if args.long_pairs else ():
        n = args.long_steps * BATCH
        x = rng.random((n, *INPUT_SHAPES[name]), dtype="float32")
        y = rng.integers(0, 10, size=n)
        half = args.long_steps // 2
        fit = {"batch_size": BATCH, "epochs": 1}
        whole, tail = fresh_pairs(
            builders[name], x, y, args.long_pairs, later=half, **fit
        )
        label = f"{name.upper()}, one fit of {args.long_steps} steps (batch {BATCH})"
        fresh.append(ratio_row(label, whole))
        fresh.append(ratio_row(f"{label}: its steps from {half} on", tail))
        absolute.append(
            absolute_line(name.upper(), whole, tail, args.long_steps - half)
        )
    first = None
    if args.first_pairs:
        first = ratio_row(
            f"MobileNetV2 (alpha 0.35, 32x32), first fit of {args.first_steps} "
            "steps (batch 32)",
            first_fit_pairs(args.first_pairs, args.first_steps),
        )
    command = f"`python benchmarks/overhead.py {' '.join(sys.argv[1:])}`\n\n"
    body = (
        command + "Steady state (warmed-up models; median of paired ratios against "
        "a plain `fit` in the same round):\n\n"
        "| model | setting | plain step | ratio | min-max |\n"
        "| --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n\n"
        "Fresh models and callbacks (default settings against a plain `fit`; "
        f"{FRESH_COLUMNS}):\n\n{FRESH_HEAD}"
        + "\n".join(fresh)
        + "".join(f"\n\n{line}" for line in absolute)
    )
    if args.no_write:
        return
    suffix, title = ("-jax", " on JAX") if JAX else ("", "")
    if rows or fresh:
        write_section(
            f"overhead{suffix}", f"Overhead of GradientDiagnostics{title}", body
        )
    if first:
        write_section(
            f"overhead-first{suffix}",
            f"Time to first step with GradientDiagnostics{title}",
            command + "Each `fit` the first in a process of its own, plain and "
            "default settings alternated (`--first-one`; median of the paired "
            f"ratios; {FRESH_COLUMNS}):\n\n{FRESH_HEAD}{first}",
        )


if __name__ == "__main__":
    main()
