"""Reads `GradientDiagnostics` event files back, with TensorBoard's reader.

Used by the CLI report, the tests and anyone who wants the numbers in Python.
Events are loaded with TensorBoard's own `EventAccumulator` (keeping every
event) and tensors decoded with `tensor_util.make_ndarray`: no hand-parsing
of the file format. The layers and findings tables are decoded by
`keras_actloss.logs.tables`, as in the Gradient Health dashboard. Each event
file is first checked record by record (`keras_actloss.logs.events`), so a
damaged or truncated file is reported, not silently cut short. TensorBoard is
imported inside the functions that read, so importing this module is cheap.

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
import tempfile
from collections.abc import Sequence

from keras_actloss.diagnostics.records import LayerInfo
from keras_actloss.findings import Finding
from keras_actloss.logs import events, tables, tags


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
        has_data: Whether the run holds any keras-actloss data
            (`tags.is_diagnostics_tag`); False for the logs of
            `keras.callbacks.TensorBoard` alone.
        has_steps: Whether it recorded a training step (a `grad_norm/...`
            scalar); False for a `fit` of 0 epochs, or whose data ran out
            before its first step, which wrote only its layers table.
        damaged: The event files whose reading stopped early, and where
            (what comes before is used).
    """

    name: str
    path: str
    layers: list[LayerInfo]
    scalars: dict[str, list[tuple[int, float]]]
    findings: list[Finding]
    histogram_tags: list[str] = dataclasses.field(default_factory=list)
    has_heatmap: bool = False
    has_data: bool = True
    has_steps: bool = True
    damaged: list[events.Damage] = dataclasses.field(default_factory=list)

    def series(self, section: str, layer: str) -> list[tuple[int, float]]:
        """`[(step, value), ...]` of `<section>/<layer>` (empty if absent)."""
        return self.scalars.get(tags.scalar_tag(section, layer), [])


def _has_events(path: str) -> bool:
    return bool(events.event_files(path))


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
    if os.path.exists(logdir) and not os.path.isdir(logdir):
        raise ValueError(
            "Expected a log directory (the `log_dir` GradientDiagnostics wrote "
            f"to, or a directory above it), not a file. Received: logdir={logdir!r}"
        )
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


def run_name(run_dir: str | os.PathLike, logdir: str | os.PathLike) -> str:
    """The name of `run_dir`, a run `find_runs(logdir)` found: its path
    relative to `logdir` (`expA/seed1`, with `/`), or `logdir`'s own name
    when it is the run."""
    relative = os.path.relpath(os.fspath(run_dir), os.fspath(logdir))
    if relative == os.curdir:
        return os.path.basename(os.path.normpath(os.path.abspath(logdir)))
    return relative.replace(os.sep, "/")


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


def load(path: str, damaged: Sequence[events.Damage] = ()):
    """An `EventAccumulator` over `path` with every event kept, loaded.

    Like TensorBoard, it reads each event file up to its first bad record.
    A `damaged` file is read from a copy of its intact records only:
    TensorFlow's record reader ends the process on some damage (a header
    that claims more bytes than the file holds).
    """
    from tensorboard.backend.event_processing import event_accumulator as ea

    guidance = {ea.TENSORS: 0, ea.SCALARS: 0, ea.HISTOGRAMS: 0, ea.IMAGES: 0}
    if not damaged:
        return ea.EventAccumulator(path, size_guidance=guidance).Reload()
    intact = {os.path.abspath(d.path): d.offset for d in damaged}
    with tempfile.TemporaryDirectory(prefix="keras-actloss-read-") as copy:
        for name in events.event_files(path):
            with open(name, "rb") as f:
                data = f.read(intact.get(os.path.abspath(name), -1))
            with open(os.path.join(copy, os.path.basename(name)), "wb") as f:
                f.write(data)
        return ea.EventAccumulator(copy, size_guidance=guidance).Reload()


def _plugin_tags(acc, plugin: str) -> set[str]:
    try:
        return set(acc.PluginTagToContent(plugin))
    except KeyError:  # No data of that plugin in the run.
        return set()


def _tables(acc, tag: str) -> list[tuple[int, object]]:
    """`(step, table)` of every event of a text tag, in the order written."""
    from tensorboard.util import tensor_util

    return [
        (e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)
    ]


def _layers(acc, tensor_tags, scalars, where: str) -> list[LayerInfo]:
    if tags.LAYERS_TAG in tensor_tags:
        # The latest `fit`'s table: the last event of the highest step.
        step, table = sorted(_tables(acc, tags.LAYERS_TAG), key=lambda p: p[0])[-1]
        return tables.decode_layers(table, f"at step {step} of {where}")
    names: dict[str, bool] = {}
    for tag in scalars:
        parts = tags.split_tag(tag)
        if parts and parts[1] != tags.GLOBAL:
            weighted = parts[0] == tags.GRAD_NORM
            names[parts[1]] = names.get(parts[1], False) or weighted
    return [LayerInfo(n, "", None, w, i) for i, (n, w) in enumerate(names.items())]


def read_run(run_dir: str | os.PathLike, name: str | None = None) -> RunLog:
    """Reads one run (`run_dir` or `run_dir/train`) into a `RunLog`.

    Damaged or truncated event files are read up to their first bad record
    and listed in `RunLog.damaged`.

    Raises:
        FileNotFoundError: If `run_dir` does not exist.
        ValueError: If it holds no event files.
        tables.TableError: If a layers or findings table breaks the layout.
    """
    from tensorboard.util import tensor_util

    run_dir = os.fspath(run_dir)
    path = _event_dir(run_dir)
    damaged = [d for d in map(events.check_file, events.event_files(path)) if d]
    acc = load(path, damaged)
    tensor_tags = acc.Tags()["tensors"]  # TF2 summaries are tensors.
    scalar_tags = _plugin_tags(acc, "scalars")
    scalars = {}
    for tag in tensor_tags:
        if tag in scalar_tags:
            points = [
                (e.step, float(tensor_util.make_ndarray(e.tensor_proto)))
                for e in acc.Tensors(tag)
            ]
            scalars[tag] = sorted(points, key=lambda p: p[0])
    findings = []
    if tags.FINDINGS_TAG in tensor_tags:
        findings = tables.collect_findings(_tables(acc, tags.FINDINGS_TAG), path)
    return RunLog(
        name=name or os.path.basename(os.path.normpath(run_dir)),
        path=path,
        layers=_layers(acc, tensor_tags, scalars, path),
        scalars=scalars,
        findings=findings,
        histogram_tags=sorted(_plugin_tags(acc, "histograms")),
        has_heatmap=tags.HEATMAP_TAG in tensor_tags,
        has_data=any(map(tags.is_diagnostics_tag, tensor_tags)),
        has_steps=any(map(tags.is_diagnostics_tag, scalars)),
        damaged=damaged,
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
