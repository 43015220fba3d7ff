"""The `keras-actloss` command line: report, demo, advise, list.

Examples:

```
keras-actloss report runs/            # health table + findings, exit 1 on failures
keras-actloss report runs/exp1 --json
keras-actloss demo --logdir runs/demo  # trains each failure mode and its fix
keras-actloss advise labels.npy        # which output activation and loss
keras-actloss list                     # registered activations and losses
```

Exit codes (`EXIT_CODES`): 0 healthy, 1 a finding of severity "failure",
2 a usage or input error (one line on stderr, no traceback), 3 a run without
keras-actloss data. `report --json` writes strict JSON: NaN and infinities
are the strings `"NaN"`, `"Infinity"`, `"-Infinity"` (as TensorBoard's own
JSON, and the Gradient Health dashboard's, write them).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence

import numpy as np

from keras_actloss import activations, demo, losses, registry
from keras_actloss.advisor import advise
from keras_actloss.findings import FAILURE, Finding
from keras_actloss.logs import reader, tags

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_USAGE = 2
EXIT_NO_DATA = 3
EXIT_CODES = {
    EXIT_OK: "every run healthy (warnings allowed)",
    EXIT_FAILURES: 'a run has a finding of severity "failure"',
    EXIT_USAGE: "usage or input error (bad path, unreadable file or table)",
    EXIT_NO_DATA: (
        "a run holds no keras-actloss data, or recorded no training step "
        "(and none has failures)"
    ),
}
# The largest labels file `advise` loads (10**9 float64 labels = 8 GB).
MAX_LABEL_BYTES = 8 * 10**9


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value == 0 or 1e-3 <= abs(value) < 1e4:
        return f"{value:.4g}"
    return f"{value:.2e}"


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned plain-text table."""
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def format_findings(findings: Sequence[Finding], has_steps: bool = True) -> str:
    """The findings, one paragraph each; without any, the run is healthy
    only if it recorded a training step (`has_steps`)."""
    if not findings:
        if not has_steps:
            return tags.NO_STEPS_MESSAGE
        return "No findings: gradients and activations look healthy."
    lines = [] if has_steps else [tags.NO_STEPS_MESSAGE]
    for f in findings:
        where = f.layer or "model"
        when = "before training" if f.step is None else f"step {f.step}"
        value = "" if f.value is None else f" (value {_fmt(f.value)})"
        lines.append(f"- [{f.severity}] {f.mode} in {where}, {when}{value}")
        lines.append(f"    {f.message}")
        lines.append(f"    Fix: {f.fix}")
    return "\n".join(lines)


HEALTH_COLUMNS = (
    ("layer", "layer"),
    ("grad_norm_first", "grad first"),
    ("grad_norm_last", "grad last"),
    ("grad_norm_min", "grad min"),
    ("grad_norm_max", "grad max"),
    ("zero_fraction", "zero"),
    ("dead_fraction", "dead"),
    ("saturation", "saturated"),
)


def format_run(
    name: str,
    rows: Sequence[dict],
    findings: Sequence[Finding],
    has_steps: bool = True,
) -> str:
    header = [title for _, title in HEALTH_COLUMNS]
    body = [
        [row["layer"]] + [_fmt(row.get(key)) for key, _ in HEALTH_COLUMNS[1:]]
        for row in rows
    ]
    return "\n".join(
        [
            f"== run: {name}",
            format_table(header, body),
            "",
            format_findings(findings, has_steps),
        ]
    )


def json_safe(value):
    """`value` with every NaN and infinity as a string, for strict JSON.

    Examples:

    >>> json_safe({"a": [1.0, float("nan")], "b": -float("inf"), "c": None})
    {'a': [1.0, 'NaN'], 'b': '-Infinity', 'c': None}
    """
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def report_exit_code(runs: Sequence[reader.RunLog]) -> int:
    """1 if a run has a failure, else 3 if a run has no data (or recorded
    no training step), else 0."""
    if any(f.severity == FAILURE for run in runs for f in run.findings):
        return EXIT_FAILURES
    if not all(run.has_data and run.has_steps for run in runs):
        return EXIT_NO_DATA
    return EXIT_OK


def _run_json(run: reader.RunLog) -> dict:
    return {
        "run": run.name,
        "has_data": run.has_data,
        "has_steps": run.has_steps,
        "layers": reader.summarize(run),
        "findings": [f.to_dict() for f in run.findings],
        "damaged": [str(d) for d in run.damaged],
    }


def _run_text(run: reader.RunLog) -> str:
    if not run.has_data:
        return f"== run: {run.name}\n{tags.NO_DATA_MESSAGE}"
    return format_run(run.name, reader.summarize(run), run.findings, run.has_steps)


def report(logdir: str, as_json: bool = False, out=None, err=None) -> int:
    """Prints the health report of every run under `logdir`.

    A damaged or truncated event file gives a warning on `err` naming the
    file and where reading stopped; the part before is used.

    Returns:
        The exit code: `EXIT_FAILURES` (1) if a run has a finding of severity
        "failure", else `EXIT_NO_DATA` (3) if a run holds no keras-actloss
        data or recorded no training step, else `EXIT_OK` (0).

    Raises:
        FileNotFoundError, ValueError: If `logdir` holds no run or a table
            of a run breaks the layout (`tables.TableError`).
    """
    out, err = out or sys.stdout, err or sys.stderr
    runs = [
        reader.read_run(path, name=reader.run_name(path, logdir))
        for path in reader.find_runs(logdir)
    ]
    for damage in (d for run in runs for d in run.damaged):
        err.write(f"keras-actloss report: warning: {damage}\n")
    code = report_exit_code(runs)
    if as_json:
        payload = {
            "logdir": logdir,
            "exit_code": code,
            "failed": code == EXIT_FAILURES,
            "runs": [_run_json(run) for run in runs],
        }
        json.dump(json_safe(payload), out, indent=2, allow_nan=False)
        out.write("\n")
    else:
        out.write("\n\n".join(map(_run_text, runs)) + "\n")
    return code


def _npy_header(f) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a `.npy` header (NumPy's public header readers)."""
    readers = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    version = np.lib.format.read_magic(f)
    if version not in readers:
        raise ValueError(f"unsupported .npy format version {version}")
    shape, _, dtype = readers[version](f)
    return shape, dtype


def load_labels(path: str) -> np.ndarray:
    """Loads a `.npy` labels file, checking its header against its size first.

    Raises:
        FileNotFoundError: If there is no such file.
        ValueError: If it is not a `.npy` array, its header claims more data
            than the file holds, or more than `MAX_LABEL_BYTES`.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such labels file: {path}")
    try:
        with open(path, "rb") as f:
            shape, dtype = _npy_header(f)
            offset, size = f.tell(), os.fstat(f.fileno()).st_size
    except (ValueError, EOFError, SyntaxError, OSError) as e:
        raise ValueError(f"Could not read {path} as a .npy array: {e}") from None
    claimed = math.prod(shape) * dtype.itemsize
    if claimed > size - offset or claimed > MAX_LABEL_BYTES:
        raise ValueError(
            f"Could not read {path} as a .npy array: its header claims shape "
            f"{shape} of {dtype} ({claimed} bytes), the file holds "
            f"{size - offset} bytes of data (at most {MAX_LABEL_BYTES} are read)"
        )
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        raise ValueError(f"Could not read {path} as a .npy array: {e}") from None


def advise_file(path: str, task: str | None, as_json: bool, out=None) -> int:
    out = out or sys.stdout
    rec = advise(load_labels(path), task=task)
    out.write(json.dumps(rec.to_dict(), indent=2) if as_json else str(rec))
    out.write("\n")
    return EXIT_OK


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def list_registered(out=None) -> int:
    out = out or sys.stdout
    rows = []
    for name in sorted(registry.entries("activation")):
        p = activations.profile(name)
        lo, hi = p.output_range
        rows.append(
            [name, f"({_fmt(lo)}, {_fmt(hi)})", _yes(p.zero_centred), p.description]
        )
    header = ["activation", "output range", "zero-centred", "notes"]
    out.write(format_table(header, rows) + "\n\n")
    rows = []
    for name in sorted(registry.entries("loss")):
        p = losses.profile(name)
        robust = _yes(p.robust_to_outliers)
        rows.append([name, p.task, p.label_format, p.expects, robust])
    header = ["loss", "task", "labels", "expects", "robust to outliers"]
    out.write(format_table(header, rows) + "\n")
    return EXIT_OK


def run_demo(logdir: str, tiny: bool = False, out=None) -> int:
    """Trains every demo scenario, prints the report and how to open TensorBoard."""
    out = out or sys.stdout
    if os.path.exists(logdir) and not os.path.isdir(logdir):
        # Before the first training's progress line, not in the middle of it.
        raise ValueError(
            f"Expected a directory for the demo's logs, not a file. "
            f"Received: logdir={logdir!r}"
        )
    demo.train_all(logdir, tiny=tiny, out=out)
    out.write("\n")
    report(logdir, out=out)
    out.write(
        f"\nLook at it in TensorBoard:\n    tensorboard --logdir {logdir}\n"
        "and open the 'Gradient Health' tab (or Scalars / Text).\n"
    )
    return EXIT_OK


def _exit_codes_help() -> str:
    lines = [f"  {code}  {meaning}" for code, meaning in EXIT_CODES.items()]
    return "exit codes:\n" + "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-actloss",
        description="Activation/loss advice and gradient health reports for Keras.",
        epilog=_exit_codes_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "report",
        help="health report of GradientDiagnostics logs",
        description="Per-run health table and findings of GradientDiagnostics "
        "logs. Damaged or truncated event files are read up to the damage, "
        "with a warning on stderr. --json writes strict JSON (NaN and "
        'infinities as the strings "NaN", "Infinity", "-Infinity").',
        epilog=_exit_codes_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("logdir", help="a run directory or a directory of runs")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser("demo", help="train each failure mode and its fix")
    p.add_argument("--logdir", default="runs/keras-actloss-demo")
    p.add_argument(
        "--tiny", action="store_true", help="very small sizes (for CI smoke runs)"
    )
    p = sub.add_parser("advise", help="recommend output activation and loss")
    p.add_argument("labels", help="a .npy file of training labels")
    p.add_argument("--task", default=None, help="force a task")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("list", help="registered activations and losses")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `keras-actloss` console script."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "report":
            return report(args.logdir, as_json=args.json)
        if args.command == "demo":
            return run_demo(args.logdir, tiny=args.tiny)
        if args.command == "advise":
            return advise_file(args.labels, args.task, args.json)
        return list_registered()
    except (OSError, ValueError, MemoryError) as e:
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"keras-actloss {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
