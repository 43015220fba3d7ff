"""Cost of the traced label checks on `model.fit`: `check_labels` on vs off.

Times `fit` of a small MLP (784-128-out, batch 128, random MNIST-shaped
data) with each loss that checks label values inside the compiled step,
once with `check_labels=True` (the default: a graph assertion per step)
and once with `check_labels=False`, on the TensorFlow backend without XLA
(Keras's default on CPU). A small model is the worst case: the checks cost
the same per label whatever the model.

How it measures: one model per setting, same seed and data, each warmed up
by a first `fit` (tracing) and `--warmup` more. Then `--pairs` rounds; in
each round every setting runs one timed `fit` of `--steps` steps, in an
order rotated from round to round, with the garbage collector run before
and disabled during the `fit`. Printed per loss: the median over rounds of
`time(on) / time(off)` from the same round, with min and max, of wall
time and of the process's CPU time (all threads): on a shared machine,
other work stretches wall time far more than it changes the CPU time the
checks cost.

The cost of the checks alone is measured too: a `tf.function` of the loss
on one batch, called `--calls` times per repeat, best CPU time of
`--repeats` (as `timeit` advises), with and without the checks,
interleaved; the difference is their cost per step, to compare with the
step time printed.

With `--write`, the results replace this benchmark's section of
`benchmarks/RESULTS.md` (with the date, versions and machine).

Usage:

```
python benchmarks/label_checks.py [--pairs 15] [--steps 100] [--warmup 2]
    [--calls 200] [--repeats 15] [--write]
```
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_actloss import losses  # noqa: E402

try:
    from benchmarks._results import write_section  # noqa: E402
except ImportError:  # Run as `python benchmarks/label_checks.py`.
    from _results import write_section  # noqa: E402

BATCH = 128


def _labels(kind: str, rng: np.random.Generator, n: int) -> np.ndarray:
    if kind == "sparse":
        return rng.integers(0, 10, n).astype("int32")
    if kind == "one_hot":
        return np.eye(10, dtype="float32")[rng.integers(0, 10, n)]
    return rng.integers(0, 2, (n, 1)).astype("float32")


# name: (loss class, output units, output activation, label kind)
LOSSES = {
    "SparseCategoricalCrossentropy": (
        losses.SparseCategoricalCrossentropy,
        10,
        "softmax",
        "sparse",
    ),
    "CategoricalCrossentropy": (
        losses.CategoricalCrossentropy,
        10,
        "softmax",
        "one_hot",
    ),
    "BinaryCrossentropy": (losses.BinaryCrossentropy, 1, "sigmoid", "binary"),
}


def _model(name: str, check_labels: bool) -> keras.Model:
    loss_class, units, activation, _ = LOSSES[name]
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(units, activation=activation),
        ]
    )
    model.compile(
        optimizer="adam",
        loss=loss_class(check_labels=check_labels),
        jit_compile=False,
    )
    return model


def _timed_fit(model, x, y) -> tuple[float, float]:
    """Wall and CPU (process, all threads) seconds of one `fit`."""
    gc.collect()
    gc.disable()
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False)
        return time.perf_counter() - wall, time.process_time() - cpu
    finally:
        gc.enable()


def loss_call_us(calls: int, repeats: int) -> dict[tuple[str, bool], float]:
    """Best CPU time of one traced loss call on a batch, in us."""
    import tensorflow as tf

    rng = np.random.default_rng(1)
    out = {}
    for name, (loss_class, units, _, kind) in LOSSES.items():
        labels = tf.constant(_labels(kind, rng, BATCH))
        probs = tf.nn.softmax(tf.constant(rng.normal(size=(BATCH, units)), "float32"))
        if units == 1:
            probs = tf.sigmoid(probs)
        calls_of = {
            on: tf.function(loss_class(check_labels=on)) for on in (True, False)
        }
        times = {on: [] for on in calls_of}
        for call in calls_of.values():
            call(labels, probs)
        for _ in range(repeats):  # Interleaved, best of `repeats`.
            for on, call in calls_of.items():
                start = time.process_time()
                for _ in range(calls):
                    call(labels, probs)
                times[on].append((time.process_time() - start) / calls * 1e6)
        for on in calls_of:
            out[(name, on)] = min(times[on])
    return out


def run(pairs: int, steps: int, warmup: int) -> dict[tuple[str, bool], list]:
    """`{(loss, checks on): [(wall, cpu) of each round]}`."""
    rng = np.random.default_rng(0)
    n = steps * BATCH
    x = rng.normal(size=(n, 784)).astype("float32")
    settings = [(name, on) for name in LOSSES for on in (True, False)]
    data = {name: _labels(LOSSES[name][3], rng, n) for name in LOSSES}
    models = {s: _model(s[0], s[1]) for s in settings}
    for (name, _), model in models.items():
        for _ in range(1 + warmup):
            _timed_fit(model, x, data[name])
    times: dict[tuple[str, bool], list] = {s: [] for s in settings}
    for round_ in range(pairs):
        order = settings[round_ % len(settings) :] + settings[: round_ % len(settings)]
        for s in order:
            times[s].append(_timed_fit(models[s], x, data[s[0]]))
    return times


def _ratios(times, name: str, index: int) -> str:
    on, off = times[(name, True)], times[(name, False)]
    values = [a[index] / b[index] for a, b in zip(on, off)]
    return f"{statistics.median(values):.3f} [{min(values):.3f}, {max(values):.3f}]"


def _report(times, calls, args) -> str:
    lines = [
        f"pairs={args.pairs}, steps={args.steps} of batch {BATCH}, "
        f"warmup={args.warmup}. Fit ratios: time(check_labels=True) / "
        "time(check_labels=False) in the same round, median [min, max], of "
        "wall time and of process CPU time (all threads; less disturbed by "
        "other work on a shared machine). Loss call: best CPU time of "
        f"{args.repeats} x {args.calls} calls of a `tf.function` of the loss.",
        "",
        "| loss | fit wall ratio | fit CPU ratio | fit step, checks off "
        "(wall / CPU us) | loss call on / off (CPU us) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in LOSSES:
        off = times[(name, False)]
        wall = statistics.median(t[0] for t in off) / args.steps * 1e6
        cpu = statistics.median(t[1] for t in off) / args.steps * 1e6
        lines.append(
            f"| {name} | {_ratios(times, name, 0)} | {_ratios(times, name, 1)} | "
            f"{wall:.0f} / {cpu:.0f} | {calls[(name, True)]:.0f} / "
            f"{calls[(name, False)]:.0f} |"
        )
    return "\n".join(lines)


def _write(report: str, args) -> None:
    command = (
        "`python benchmarks/label_checks.py "
        f"--pairs {args.pairs} --steps {args.steps} --warmup {args.warmup} "
        f"--calls {args.calls} --repeats {args.repeats} --write`"
    )
    write_section("label_checks", "Label checks in `fit`", f"{command}\n\n{report}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=15)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    times = run(args.pairs, args.steps, args.warmup)
    calls = loss_call_us(args.calls, args.repeats)
    report = _report(times, calls, args)
    report += f"\n\nLoad average (1 min) at the start: {load:.1f}."
    print(report)
    if args.write:
        _write(report, args)


if __name__ == "__main__":
    main()
