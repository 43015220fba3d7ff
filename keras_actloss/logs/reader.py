"""Reads `GradientDiagnostics` event files back, with TensorBoard's reader.

Used by the CLI report, the tests and anyone who wants the numbers in Python.
Events are loaded with TensorBoard's own `EventAccumulator` (keeping every
event) and tensors decoded with `tensor_util.make_ndarray`: no hand-parsing
of the file format, and no TensorFlow import.

Examples:

```python
from keras_actloss.logs import reader
for run_dir in reader.find_runs("runs"):
    run = reader.read_run(run_dir)
    print(run.name, run.series("grad_norm", "dense")[-1], run.findings)
```
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from keras_actloss.diagnostics.records import LayerInfo
from keras_actloss.findings import Finding
from keras_actloss.logs import tags

_EVENTS_PREFIX = "events.out.tfevents"


@dataclasses.dataclass
class RunLog:
    """Everything one run's event files hold.

    Attributes:
        name: The run's name (its directory, relative to the log dir given to
            `find_runs` when known, else the directory's base name).
        path: The directory holding the event files (`<run>/train`).
        layers: Monitored layers in model order (from `diagnostics/layers`,
            else from the scalar tags in order of appearance).
        scalars: `{tag: [(step, value), ...]}`, sorted by step.
        findings: Every finding written, in step order, without duplicates.
        histogram_tags: Tags of the gradient histograms.
        has_heatmap: Whether the heatmap image was written.
    """

    name: str
    path: str
    layers: list[LayerInfo]
    scalars: dict[str, list[tuple[int, float]]]
    findings: list[Finding]
    histogram_tags: list[str] = dataclasses.field(default_factory=list)
    has_heatmap: bool = False

    def series(self, section: str, layer: str) -> list[tuple[int, float]]:
        """`[(step, value), ...]` of `<section>/<layer>` (empty if absent)."""
        return self.scalars.get(tags.scalar_tag(section, layer), [])


def _has_events(path: str) -> bool:
    try:
        return any(name.startswith(_EVENTS_PREFIX) for name in os.listdir(path))
    except OSError:
        return False


def _missing(path: str, what: str) -> FileNotFoundError:
    return FileNotFoundError(f"No such {what}: {path!r}")


def find_runs(logdir: str | os.PathLike) -> list[str]:
    """Run directories under `logdir`, sorted.

    A run is a directory whose `train/` subdirectory holds event files (what
    `GradientDiagnostics(log_dir=run)` writes); `logdir` itself counts when it
    is a run, or when it holds event files directly.

    Raises:
        FileNotFoundError: If `logdir` does not exist.
        ValueError: If no run is found under it.
    """
    logdir = os.fspath(logdir)
    if not os.path.isdir(logdir):
        raise _missing(logdir, "log directory")
    runs = []
    for root, dirs, _ in os.walk(logdir):
        dirs.sort()
        if tags.TRAIN_SUBDIR in dirs and _has_events(
            os.path.join(root, tags.TRAIN_SUBDIR)
        ):
            runs.append(root)
    if not runs and _has_events(logdir):
        runs.append(logdir)
    if not runs:
        raise ValueError(
            f"No TensorBoard event files found under {logdir!r}. Expected a "
            "log directory written by GradientDiagnostics (event files in "
            f"`<run>/{tags.TRAIN_SUBDIR}/`). Received: logdir={logdir!r}"
        )
    return sorted(runs)


def _event_dir(run_dir: str) -> str:
    if not os.path.isdir(run_dir):
        raise _missing(run_dir, "run directory")
    train = os.path.join(run_dir, tags.TRAIN_SUBDIR)
    for path in (train, run_dir):
        if _has_events(path):
            return path
    raise ValueError(
        f"No TensorBoard event files in {run_dir!r} or {train!r}. "
        f"Received: run_dir={run_dir!r}"
    )


def load(path: str):
    """An `EventAccumulator` over `path` with every event kept, loaded."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    guidance = {ea.TENSORS: 0, ea.SCALARS: 0, ea.HISTOGRAMS: 0, ea.IMAGES: 0}
    return ea.EventAccumulator(path, size_guidance=guidance).Reload()


def _plugin_tags(acc, plugin: str) -> set[str]:
    try:
        return set(acc.PluginTagToContent(plugin))
    except KeyError:  # No data of that plugin in the run.
        return set()


def decode_table(array) -> list[dict[str, str]]:
    """Reads a 2-D string table whose first row is its header.

    The reader of the tables `DiagnosticsWriter` writes (`diagnostics/layers`,
    `diagnostics/findings`); the dashboard uses it too.

    Examples:

    >>> decode_table(np.array([[b"layer", b"activation"], [b"d1", b"relu"]]))
    [{'layer': 'd1', 'activation': 'relu'}]

    Args:
        array: A 2-D array of `bytes` or `str` (a text summary's tensor).

    Returns:
        One dict per data row, keyed by the header's column names; `[]` for
        anything that is not a 2-D table.
    """
    table = np.asarray(array, dtype=object)
    if table.ndim != 2 or table.shape[0] == 0:
        return []
    cells = [[_text(cell) for cell in row] for row in table]
    header, rows = cells[0], cells[1:]
    return [dict(zip(header, row)) for row in rows]


def _text(cell) -> str:
    return cell.decode("utf-8", "replace") if isinstance(cell, bytes) else str(cell)


def _table(tensor_proto) -> list[dict[str, str]]:
    """`{column: cell}` for every data row of a table event's tensor."""
    from tensorboard.util import tensor_util

    return decode_table(tensor_util.make_ndarray(tensor_proto))


def _rows(events) -> list[tuple[int, dict[str, str]]]:
    """`(step, {column: cell})` for every data row of every table event."""
    out = []
    for event in sorted(events, key=lambda e: e.step):
        out.extend((event.step, row) for row in _table(event.tensor_proto))
    return out


def findings_by_step(path: str | os.PathLike) -> dict[int, list[Finding]]:
    """Findings already written to the event files in `path`, by event step.

    Reads only the `diagnostics/findings` values, event by event (TensorBoard's
    `EventFileLoader`); `{}` when `path` holds no event files. The writer uses
    it to extend, not replace, a step's findings table when it writes to a
    run again (a second `fit`).
    """
    from tensorboard.backend.event_processing.event_file_loader import (
        EventFileLoader,
    )

    path = os.fspath(path)
    names = sorted(os.listdir(path)) if os.path.isdir(path) else []
    out: dict[int, list[Finding]] = {}
    for name in names:
        if not name.startswith(_EVENTS_PREFIX):
            continue
        for event in EventFileLoader(os.path.join(path, name)).Load():
            for value in event.summary.value:
                if value.tag != tags.FINDINGS_TAG:
                    continue
                known = out.setdefault(event.step, [])
                for row in _table(value.tensor):
                    finding = parse_finding(row)
                    if finding not in known:
                        known.append(finding)
    return out


def _optional(text: str | None, convert):
    return None if text in (None, "", "None") else convert(text)


def parse_finding(row: dict[str, str]) -> Finding:
    """A `Finding` from one row of the `diagnostics/findings` table."""
    return Finding(
        mode=row["mode"],
        layer=_optional(row.get("layer"), str),
        step=_optional(row.get("step"), int),
        value=_optional(row.get("value"), float),
        message=row.get("message", ""),
        fix=row.get("fix", ""),
        severity=row.get("severity") or "failure",
    )


def _layers(acc, tensor_tags, scalars) -> list[LayerInfo]:
    if tags.LAYERS_TAG in tensor_tags:
        events = acc.Tensors(tags.LAYERS_TAG)
        last_step = max(e.step for e in events)
        rows = [r for s, r in _rows(events) if s == last_step]
        return [
            LayerInfo(
                name=r["layer"],
                class_name=r.get("class_name", ""),
                activation=_optional(r.get("activation"), str),
                has_trainable_weights=r.get("has_trainable_weights") == "True",
                depth=i,
            )
            for i, r in enumerate(rows)
        ]
    names: dict[str, bool] = {}
    for tag in scalars:
        parts = tags.split_tag(tag)
        if parts and parts[1] != tags.GLOBAL:
            weighted = parts[0] == tags.GRAD_NORM
            names[parts[1]] = names.get(parts[1], False) or weighted
    return [LayerInfo(n, "", None, w, i) for i, (n, w) in enumerate(names.items())]


def read_run(run_dir: str | os.PathLike, name: str | None = None) -> RunLog:
    """Reads one run (`run_dir` or `run_dir/train`) into a `RunLog`.

    Raises:
        FileNotFoundError: If `run_dir` does not exist.
        ValueError: If it holds no event files.
    """
    run_dir = os.fspath(run_dir)
    path = _event_dir(run_dir)
    acc = load(path)
    tensor_tags = acc.Tags()["tensors"]  # TF2 summaries are tensors.
    scalar_tags = _plugin_tags(acc, "scalars")
    scalars = {}
    from tensorboard.util import tensor_util

    for tag in tensor_tags:
        if tag in scalar_tags:
            points = [
                (e.step, float(tensor_util.make_ndarray(e.tensor_proto)))
                for e in acc.Tensors(tag)
            ]
            scalars[tag] = sorted(points, key=lambda p: p[0])
    findings = []
    if tags.FINDINGS_TAG in tensor_tags:
        for _, row in _rows(acc.Tensors(tags.FINDINGS_TAG)):
            finding = parse_finding(row)
            if finding not in findings:
                findings.append(finding)
    return RunLog(
        name=name or os.path.basename(os.path.normpath(run_dir)),
        path=path,
        layers=_layers(acc, tensor_tags, scalars),
        scalars=scalars,
        findings=findings,
        histogram_tags=sorted(_plugin_tags(acc, "histograms")),
        has_heatmap=tags.HEATMAP_TAG in tensor_tags,
    )


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def summarize(run: RunLog) -> list[dict]:
    """Per-layer health rows for the CLI report, in model order.

    Each row: `layer`, `grad_norm_first`, `grad_norm_last`, `grad_norm_min`,
    `grad_norm_max` (min/max over finite values), and the last recorded
    `zero_fraction`, `dead_fraction`, `saturation`; None where not recorded.
    """
    rows = []
    for info in run.layers:
        norms = [v for _, v in run.series(tags.GRAD_NORM, info.name)]
        finite = _finite(norms)
        row = {
            "layer": info.name,
            "grad_norm_first": norms[0] if norms else None,
            "grad_norm_last": norms[-1] if norms else None,
            "grad_norm_min": min(finite) if finite else None,
            "grad_norm_max": max(finite) if finite else None,
        }
        for section in (tags.ZERO_FRACTION, tags.DEAD_FRACTION, tags.SATURATION):
            series = run.series(section, info.name)
            row[section] = series[-1][1] if series else None
        rows.append(row)
    return rows
