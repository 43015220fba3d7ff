"""Writes `GradientDiagnostics` records to TensorBoard event files.

`DiagnosticsWriter` turns the callback's records into the tag layout of
`keras_actloss.logs.tags`, from the host with explicit steps (a `tf.summary`
call inside a traced function would capture one step at trace time). Each
call builds one `Summary` protobuf (with TensorBoard's own `*_pb` helpers and
plugin metadata, so every tab reads it as its own) and writes it with
`tf.summary.experimental.write_raw_pb`: one event per call, not one
TensorFlow op per value, so recording 50 layers costs about as much as
recording one (about 4 ms for 50 layers x 7 statistics). Every public write
flushes, so a crash loses nothing that was already written. The writer
computes no statistics.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from keras_actloss.diagnostics.records import (
    LayerInfo,
    SentinelEvent,
    StepStats,
)
from keras_actloss.findings import Finding
from keras_actloss.logs import tags
from keras_actloss.logs.heatmap import heatmap_description, render_heatmap

HISTOGRAM_BUCKETS = 30
_LAYER_ATTRS = {"layer": "name"}  # Table column -> `LayerInfo` attribute.


def cell(value) -> str:
    """Text of one table cell: `""` for None, `repr` for floats (exact)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def layers_table(layers: Sequence[LayerInfo]) -> np.ndarray:
    """The `diagnostics/layers` table: header `LAYER_COLUMNS`, one row a layer."""
    attrs = [_LAYER_ATTRS.get(c, c) for c in tags.LAYER_COLUMNS]
    rows = [[cell(getattr(info, a)) for a in attrs] for info in layers]
    return np.array([list(tags.LAYER_COLUMNS), *rows], dtype=object)


def findings_table(findings: Sequence[Finding]) -> np.ndarray:
    """The `diagnostics/findings` table: header `FINDING_COLUMNS`, one row each."""
    rows = [[cell(getattr(f, c)) for c in tags.FINDING_COLUMNS] for f in findings]
    return np.array([list(tags.FINDING_COLUMNS), *rows], dtype=object)


def histogram_buckets(values: np.ndarray, buckets: int = HISTOGRAM_BUCKETS):
    """`[buckets, 3]` (left, right, count) array of the finite values.

    The layout TensorBoard's histogram plugin stores; non-finite values are
    left out (a NaN gradient is reported as a finding instead).
    """
    data = np.asarray(values, dtype=np.float64).ravel()
    data = data[np.isfinite(data)]
    if data.size == 0:
        return np.zeros((buckets, 3))
    low, high = float(data.min()), float(data.max())
    if low == high:
        low, high = low - 0.5, high + 0.5
    counts, edges = np.histogram(data, bins=buckets, range=(low, high))
    return np.stack([edges[:-1], edges[1:], counts.astype(np.float64)], axis=1)


class DiagnosticsWriter:
    """Writes diagnostics to `<log_dir>/train` in the `tags` layout.

    Examples:

    ```python
    with DiagnosticsWriter("runs/exp1") as writer:
        writer.write_layers(layers, step=0)
        writer.write_stats(stats)
    ```

    Args:
        log_dir: Run directory. Event files go to its `train` subdirectory,
            which it can share with `keras.callbacks.TensorBoard`.
    """

    def __init__(self, log_dir: str | os.PathLike):
        if not isinstance(log_dir, (str, os.PathLike)) or not str(log_dir):
            raise ValueError(
                "Argument `log_dir` must be a non-empty path. "
                f"Received: log_dir={log_dir!r}"
            )
        self.log_dir = os.fspath(log_dir)
        self.train_dir = os.path.join(self.log_dir, tags.TRAIN_SUBDIR)
        self._writer = None
        self._findings: dict[int, list[Finding]] | None = None  # By step.
        self._scalar_meta = None  # Scalars plugin metadata, built once.

    def check_writable(self) -> None:
        """Creates `<log_dir>/train` and writes a temporary file there.

        Raises `OSError` (e.g. `PermissionError`, `NotADirectoryError`) when
        the logs cannot be written, so the callback can fail before training
        starts.
        """
        os.makedirs(self.train_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=self.train_dir):
            pass

    def open(self) -> DiagnosticsWriter:
        """Creates the directory and the file writer now (idempotent).

        Raises `OSError` for an unwritable `log_dir` (see `check_writable`).
        """
        if self._writer is None:
            import tensorflow as tf

            self.check_writable()
            self._writer = tf.summary.create_file_writer(self.train_dir)
        return self

    def _write(self, summary, step: int) -> None:
        """Writes one `Summary` protobuf at `step` and flushes."""
        if not summary.value:
            return
        import tensorflow as tf

        self.open()
        # Leaving `as_default()` flushes the writer: no second flush.
        with self._writer.as_default():
            tf.summary.experimental.write_raw_pb(
                summary.SerializeToString(), step=int(step)
            )

    def write_layers(self, layers: Sequence[LayerInfo], step: int = 0) -> None:
        """Writes the `diagnostics/layers` table at `step`."""
        from tensorboard.plugins.text import summary_v2 as text

        self._write(text.text_pb(tags.LAYERS_TAG, layers_table(layers)), step)

    def write_stats(self, stats: StepStats) -> None:
        """Writes the scalars of one recording (None values are skipped)."""
        values = {tags.scalar_tag(tags.GRAD_NORM, tags.GLOBAL): stats.global_norm}
        for ls in stats.layers:
            for attr, section in tags.SCALAR_SECTIONS.items():
                values[tags.scalar_tag(section, ls.layer)] = getattr(ls, attr)
        self._write_scalars(values, stats.step)

    def write_sentinel(self, event: SentinelEvent) -> None:
        """Writes `grad_norm/global` at the sentinel event's step."""
        tag = tags.scalar_tag(tags.GRAD_NORM, tags.GLOBAL)
        self._write_scalars({tag: event.global_norm}, event.step)

    def _write_scalars(self, values: Mapping[str, float | None], step: int) -> None:
        # Same protobuf as `scalar_pb` (float32 scalar tensor, scalars
        # plugin metadata), built directly: ~4 us a value instead of ~60.
        from tensorboard.compat.proto import summary_pb2, types_pb2
        from tensorboard.plugins.scalar import metadata

        if self._scalar_meta is None:
            self._scalar_meta = metadata.create_summary_metadata(
                display_name=None, description=None
            )
        summary = summary_pb2.Summary()
        for tag, value in values.items():
            if value is None:
                continue
            entry = summary.value.add(tag=tag)
            entry.metadata.CopyFrom(self._scalar_meta)
            entry.tensor.dtype = types_pb2.DT_FLOAT
            entry.tensor.tensor_shape.SetInParent()
            entry.tensor.float_val.append(float(value))
        self._write(summary, step)

    def write_histograms(self, step: int, values: Mapping[str, np.ndarray]) -> None:
        """Writes `grad_hist/<layer>` for each `{layer: gradient values}`."""
        from tensorboard.compat.proto import summary_pb2
        from tensorboard.plugins.histogram import metadata
        from tensorboard.util import tensor_util

        summary = summary_pb2.Summary()
        for layer, data in values.items():
            if data is None:
                continue
            summary.value.add(
                tag=tags.scalar_tag(tags.GRAD_HIST, layer),
                metadata=metadata.create_summary_metadata(None, None),
                tensor=tensor_util.make_tensor_proto(
                    histogram_buckets(data), dtype=np.float64
                ),
            )
        self._write(summary, step)

    def write_findings(self, findings: Iterable[Finding]) -> None:
        """Writes findings at their steps (None: step 0).

        Each write of a step holds *every* finding known at that step, this
        run's earlier ones included (read back once from the event files
        already in `train/`): TensorBoard's data server shows only the last
        event of a step, and the reader drops the repeats. A finding already
        written is not written again.
        """
        from tensorboard.plugins.text import summary_v2 as text

        if self._findings is None:
            from keras_actloss.logs.reader import findings_by_step

            self._findings = findings_by_step(self.train_dir)
        touched = set()
        for finding in findings:
            step = 0 if finding.step is None else int(finding.step)
            known = self._findings.setdefault(step, [])
            if finding not in known:
                known.append(finding)
                touched.add(step)
        for step in sorted(touched):
            table = findings_table(self._findings[step])
            self._write(text.text_pb(tags.FINDINGS_TAG, table), step)

    def write_layout(self, layers: Sequence[LayerInfo]) -> None:
        """Writes the Custom Scalars layout: one chart per section."""
        from keras_actloss.logs.layout import layout_summary

        self._write(layout_summary(layers), 0)

    def write_heatmap(
        self,
        step: int,
        layer_names: Sequence[str],
        steps: Sequence[int],
        norms,
    ) -> None:
        """Writes the layer x step gradient-norm heatmap as an image.

        Args:
            step: Step to write the image at.
            layer_names: Row labels, in model order.
            steps: Column steps.
            norms: `[len(layer_names), len(steps)]` gradient norms (NaN for
                missing values).
        """
        import tensorflow as tf

        image, (low, high) = render_heatmap(norms)
        description = heatmap_description(layer_names, steps, low, high)
        self.open()
        with self._writer.as_default():
            tf.summary.image(
                tags.HEATMAP_TAG,
                image[np.newaxis],
                step=int(step),
                description=description,
            )
        self._writer.flush()

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flushes and closes the file writer (idempotent)."""
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None

    def __enter__(self) -> DiagnosticsWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
