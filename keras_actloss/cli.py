"""The `keras-actloss` command line: report, demo, advise, list.

Examples:

```
keras-actloss report runs/            # health table + findings, exit 1 on failures
keras-actloss report runs/exp1 --json
keras-actloss demo --logdir runs/demo  # trains each failure mode and its fix
keras-actloss advise labels.npy        # which output activation and loss
keras-actloss list                     # registered activations and losses
```
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence

from keras_actloss.findings import FAILURE, Finding

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_USAGE = 2


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


def format_findings(findings: Sequence[Finding]) -> str:
    if not findings:
        return "No findings: gradients and activations look healthy."
    lines = []
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


def format_run(name: str, rows: Sequence[dict], findings: Sequence[Finding]) -> str:
    header = [title for _, title in HEALTH_COLUMNS]
    body = [
        [row["layer"]] + [_fmt(row.get(key)) for key, _ in HEALTH_COLUMNS[1:]]
        for row in rows
    ]
    return "\n".join(
        [f"== run: {name}", format_table(header, body), "", format_findings(findings)]
    )


def report(logdir: str, as_json: bool = False, out=None) -> int:
    """Prints the health report of every run under `logdir`.

    Returns:
        `1` if any run has a finding of severity "failure", else `0`.
    """
    from keras_actloss.logs import reader

    out = out or sys.stdout
    runs = [reader.read_run(path) for path in reader.find_runs(logdir)]
    failed = any(f.severity == FAILURE for run in runs for f in run.findings)
    if as_json:
        payload = {
            "logdir": logdir,
            "failed": failed,
            "runs": [
                {
                    "run": run.name,
                    "layers": reader.summarize(run),
                    "findings": [f.to_dict() for f in run.findings],
                }
                for run in runs
            ],
        }
        json.dump(payload, out, indent=2)
        out.write("\n")
    else:
        blocks = [format_run(r.name, reader.summarize(r), r.findings) for r in runs]
        out.write("\n\n".join(blocks) + "\n")
    return EXIT_FAILURES if failed else EXIT_OK


def advise_file(path: str, task: str | None, as_json: bool, out=None) -> int:
    import numpy as np

    from keras_actloss.advisor import advise

    out = out or sys.stdout
    try:
        labels = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"No such labels file: {path}") from None
    except ValueError as e:
        raise ValueError(f"Could not read {path} as a .npy array: {e}") from None
    rec = advise(labels, task=task)
    out.write(json.dumps(rec.to_dict(), indent=2) if as_json else str(rec))
    out.write("\n")
    return EXIT_OK


def list_registered(out=None) -> int:
    from keras_actloss import activations, losses, registry

    out = out or sys.stdout
    rows = []
    for name in sorted(registry.entries("activation")):
        p = activations.profile(name)
        lo, hi = p.output_range
        rows.append([name, f"({_fmt(lo)}, {_fmt(hi)})", p.description])
    out.write(format_table(["activation", "output range", "notes"], rows) + "\n\n")
    rows = []
    for name in sorted(registry.entries("loss")):
        p = losses.profile(name)
        rows.append([name, p.task, p.label_format, p.expects])
    out.write(format_table(["loss", "task", "labels", "expects"], rows) + "\n")
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-actloss",
        description="Activation/loss advice and gradient health reports for Keras.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("report", help="health report of GradientDiagnostics logs")
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
            from keras_actloss import demo

            return demo.run(args.logdir, tiny=args.tiny)
        if args.command == "advise":
            return advise_file(args.labels, args.task, args.json)
        return list_registered()
    except (FileNotFoundError, ValueError) as e:
        print(f"keras-actloss {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
