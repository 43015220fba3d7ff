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
`time(on) / time(off)` from the same round, with min and max, and the
ratio of the fastest `fit` of each (the least disturbed by other work on a
shared machine).

A noisy machine blurs whole-`fit` ratios, so the cost of the checks alone
is measured too: a `tf.function` of the loss on one batch, called
`--calls` times per repeat, best of `--repeats` (as `timeit` advises),
with and without the checks; the difference is the checks' cost per step,
printed next to the fastest `fit` step time.

With `--append`, a section with the date, versions, machine and results is
appended to `benchmarks/RESULTS.md` (created with a header if missing).

Usage:

```
python benchmarks/label_checks.py [--pairs 15] [--steps 100] [--warmup 2]
    [--calls 200] [--repeats 15] [--append]
```
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_actloss import losses  # noqa: E402

BATCH = 128
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
RESULTS_HEADER = """# Benchmark results

Sections appended by the scripts in `benchmarks/` (and by hand), newest last.
Each says when, on what and with which command it was measured.
"""


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


def _timed_fit(model, x, y) -> float:
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False)
        return time.perf_counter() - start
    finally:
        gc.enable()


def loss_call_us(calls: int, repeats: int) -> dict[str, tuple[float, float]]:
    """Best time of one traced loss call on a batch, `(checks on, off)`, us."""
    import tensorflow as tf

    rng = np.random.default_rng(1)
    out = {}
    for name, (loss_class, units, _, kind) in LOSSES.items():
        labels = tf.constant(_labels(kind, rng, BATCH))
        probs = tf.nn.softmax(tf.constant(rng.normal(size=(BATCH, units)), "float32"))
        if units == 1:
            probs = tf.sigmoid(probs)
        best = []
        for on in (True, False):
            call = tf.function(loss_class(check_labels=on))
            call(labels, probs)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                for _ in range(calls):
                    call(labels, probs)
                times.append((time.perf_counter() - start) / calls * 1e6)
            best.append(min(times))
        out[name] = (best[0], best[1])
    return out


def run(
    pairs: int, steps: int, warmup: int
) -> tuple[dict[str, list[float]], dict[tuple[str, bool], list[float]]]:
    rng = np.random.default_rng(0)
    n = steps * BATCH
    x = rng.normal(size=(n, 784)).astype("float32")
    settings = [(name, on) for name in LOSSES for on in (True, False)]
    data = {name: _labels(LOSSES[name][3], rng, n) for name in LOSSES}
    models = {s: _model(s[0], s[1]) for s in settings}
    for (name, _), model in models.items():
        for _ in range(1 + warmup):
            _timed_fit(model, x, data[name])
    ratios: dict[str, list[float]] = {name: [] for name in LOSSES}
    all_times: dict[tuple[str, bool], list[float]] = {s: [] for s in settings}
    for round_ in range(pairs):
        order = settings[round_ % len(settings) :] + settings[: round_ % len(settings)]
        times = {s: _timed_fit(models[s], x, data[s[0]]) for s in order}
        for s, t in times.items():
            all_times[s].append(t)
        for name in LOSSES:
            ratios[name].append(times[(name, True)] / times[(name, False)])
    return ratios, all_times


def _report(ratios, times, calls, args) -> str:
    lines = [
        f"pairs={args.pairs}, steps={args.steps} of batch {BATCH}, "
        f"warmup={args.warmup}; ratios are time(check_labels=True) / "
        "time(check_labels=False). Loss call: best of "
        f"{args.repeats} x {args.calls} calls of a `tf.function` of the loss.",
        "",
        "| loss | fit ratio median | min | max | ratio of fastest fits "
        "| fastest step off (us) | loss call on / off (us) | checks per step (us) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, values in ratios.items():
        fastest_on, fastest_off = min(times[(name, True)]), min(times[(name, False)])
        on, off = calls[name]
        lines.append(
            f"| {name} | {statistics.median(values):.3f} | {min(values):.3f} | "
            f"{max(values):.3f} | {fastest_on / fastest_off:.3f} | "
            f"{fastest_off / args.steps * 1e6:.0f} | {on:.0f} / {off:.0f} | "
            f"{on - off:.0f} |"
        )
    return "\n".join(lines)


def _append(report: str, args) -> None:
    import tensorflow as tf

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    section = [
        f"\n## Label checks in `fit` ({stamp} UTC)\n",
        f"TensorFlow {tf.__version__} (CPU), Keras {keras.__version__}, "
        f"Python {platform.python_version()}; {platform.machine()}, "
        f"{os.cpu_count()} CPUs (shared), backend {keras.backend.backend()}, "
        "no XLA.",
        "Command: `python benchmarks/label_checks.py "
        f"--pairs {args.pairs} --steps {args.steps} --warmup {args.warmup} "
        f"--calls {args.calls} --repeats {args.repeats}`.\n",
        report,
        "",
    ]
    new = not os.path.exists(RESULTS)
    with open(RESULTS, "a", encoding="utf-8") as out:
        if new:
            out.write(RESULTS_HEADER)
        out.write("\n".join(section))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=15)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--append", action="store_true")
    args = parser.parse_args()
    ratios, times = run(args.pairs, args.steps, args.warmup)
    calls = loss_call_us(args.calls, args.repeats)
    report = _report(ratios, times, calls, args)
    print(report)
    if args.append:
        _append(report, args)


if __name__ == "__main__":
    main()
