"""Detection delay and false alarms of GradientDiagnostics at default settings.

Runs every scenario of `tests/scenarios/cases.py` (the same definitions the
tests use) with `GradientDiagnostics(check_model=False)` and a recorder after
it, and prints per scenario: the expected training failure modes with their
onset step, the step of the first finding of each mode, the step at which it
was reported, the delay (reported - onset) and the false alarms. Then:

- recall: expected modes reported within 10 steps of onset, with a finding
  step not before onset (non-finite: found and reported at the very step),
  over all expected modes;
- false alarms: findings of an unexpected training mode, or of an expected
  mode placed before its onset, on healthy and on failing runs.

A failure that sets in gradually (`Case.lead`: units dying a few at a time)
may have its finding placed up to `lead` steps before its onset: the
finding names the first of the recorded batches that show it.

Only findings with a training mode and severity "failure" count. The results
replace this benchmark's own section of `benchmarks/RESULTS.md` (between
`<!-- detection:start -->` and `<!-- detection:end -->`), with the date,
versions and machine; under `KERAS_BACKEND=jax` its own section
(`detection-jax`).

With `--seed-shift N` (N > 0) the cases draw their initial weights and
data from other seeds (`cases.reseed`) and the table is printed only: a
check that detection does not hang on one draw. Their expected modes and
onsets are the tests' draws': on another a failure may set in later or take
another course, so a miss there is a lead to look into, not a verdict.

Usage:

```
[KERAS_BACKEND=jax] python benchmarks/detection.py [--only NAME ...] [--no-write]
    [--seed-shift N]
```
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from benchmarks._results import write_section  # noqa: E402
from tests.scenarios import cases  # noqa: E402

COLUMNS = (
    "scenario",
    "expected",
    "onset",
    "mode",
    "finding step",
    "reported",
    "delay",
    "in time",
    "false alarms",
)


def _cell(value) -> str:
    return "-" if value is None else str(value)


def _alarm(finding, reported) -> str:
    where = finding.layer or "model"
    return f"{finding.mode} ({where}) step {finding.step}, reported {reported}"


def run(names: list[str] | None) -> tuple[list[list[str]], dict]:
    """Runs the scenarios; returns the table rows and the totals."""
    selected = [c for c in cases.CASES if not names or c.name in names]
    rows, totals = [], {"expected": 0, "detected": 0, "healthy_alarms": 0}
    totals["failing_alarms"] = 0
    for case in selected:
        keras.backend.clear_session(free_memory=False)
        detection = cases.detect(case)
        scores, false = cases.score(case, detection)
        alarms = "; ".join(_alarm(f, s) for f, s in false) or "none"
        key = "healthy_alarms" if case.healthy else "failing_alarms"
        totals[key] += len(false)
        expected = ", ".join(sorted(case.expected)) or "none (healthy)"
        if not scores:
            rows.append([case.name, expected, "-", "-", "-", "-", "-", "-", alarms])
        for i, s in enumerate(scores):
            totals["expected"] += 1
            totals["detected"] += s.detected
            rows.append(
                [
                    case.name if i == 0 else "",
                    expected if i == 0 else "",
                    str(s.onset),
                    s.mode,
                    _cell(s.finding_step),
                    _cell(s.reported_step),
                    _cell(s.delay),
                    "yes" if s.detected else "NO",
                    alarms if i == 0 else "",
                ]
            )
        print(f"{case.name}: {describe(detection)}", flush=True)
    totals["healthy_runs"] = sum(c.healthy for c in selected)
    totals["failing_runs"] = len(selected) - totals["healthy_runs"]
    return rows, totals


def describe(detection) -> str:
    found = [
        f"{f.mode}@{f.layer or 'model'}:{f.step}->{s}" for f, s in detection.training
    ]
    return ", ".join(found) or "no training findings"


def table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def summary(totals: dict) -> str:
    recall = totals["detected"] / totals["expected"] if totals["expected"] else 1.0
    return (
        f"Recall: {totals['detected']}/{totals['expected']} expected modes "
        f"reported within {cases.WINDOW} steps of onset ({recall:.0%}). "
        f"False alarms: {totals['healthy_alarms']} on "
        f"{totals['healthy_runs']} healthy runs, {totals['failing_alarms']} on "
        f"{totals['failing_runs']} failing runs."
    )


def section(rows, totals, names) -> str:
    scope = f" (only {', '.join(names)})" if names else ""
    return "\n".join(
        [
            f"`GradientDiagnostics(check_model=False)` on the scenarios of "
            f"`tests/scenarios/cases.py`{scope}.",
            "",
            table(rows),
            "",
            summary(totals),
            *leads(names),
        ]
    )


def leads(names) -> list[str]:
    """A note on the cases whose findings may precede onset (`Case.lead`)."""
    gradual = [
        f"{c.name} ({c.lead} steps)"
        for c in cases.FAILURES
        if c.lead and (not names or c.name in names)
    ]
    if not gradual:
        return []
    return [
        "",
        "Findings may be placed before onset by the case's lead, for failures "
        "that set in gradually (the finding names the first of the recorded "
        f"batches that show it): {', '.join(gradual)}.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=cases.BY_NAME)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--seed-shift",
        type=int,
        default=0,
        metavar="N",
        help="draw the cases' weights and data from other seeds (printed only; "
        "the expected onsets are those of the tests' draws)",
    )
    args = parser.parse_args()
    cases.reseed(args.seed_shift)
    rows, totals = run(args.only)
    print()
    print(table(rows))
    print()
    print(summary(totals))
    if args.seed_shift:
        print(f"Seed shift {args.seed_shift}: not written to benchmarks/RESULTS.md.")
    elif not args.no_write:
        title = "Detection at default settings (`benchmarks/detection.py`)"
        name = "detection"
        if keras.backend.backend() != "tensorflow":
            title += f" on {keras.backend.backend().upper()}"
            name += f"-{keras.backend.backend()}"
        write_section(name, title, section(rows, totals, args.only))
        print("Wrote benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
