"""Writes `GradientDiagnostics` records to TensorBoard event files.

`DiagnosticsWriter` turns the callback's records into the tag layout of
`keras_actloss.logs.tags`, from the host with explicit steps (a `tf.summary`
call inside a traced function would capture one step at trace time). Each
call builds one `Summary` protobuf (with TensorBoard's own `*_pb` helpers and
plugin metadata, so every tab reads it as its own) and appends it as one
event to the run's own event file (`EventFile`, TFRecords written by
`keras_actloss.logs.events.open_records`): no TensorFlow op per value or per
call. Scalar values after a tag's first
are joined from cached wire bytes (cheaper than a protobuf call per value).
Every public write flushes, so a crash loses nothing that was already
written. Writes never raise: log-dir faults during training (directory
deleted, disk full, permissions) are handled by `keras_actloss.logs.sink`
(recreate, warn once, keep in memory, retry). The writer computes no
statistics.

TensorBoard is imported inside the methods that write. TensorFlow is not
needed: without it (the `[jax]` extra) the same events are written with
TensorBoard's protobufs and our own TFRecord framing
(`keras_actloss.logs.events.RecordFile`), and the heatmap PNG is encoded in
NumPy (`keras_actloss.logs.heatmap.encode_png`) either way.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import socket
import struct
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from keras_actloss.diagnostics.records import (
    LayerInfo,
    SentinelEvent,
    StepStats,
)
from keras_actloss.findings import Finding
from keras_actloss.logs import events, tags
from keras_actloss.logs.heatmap import (
    encode_png,
    heatmap_description,
    render_heatmap,
)
from keras_actloss.logs.layout import layout_summary
from keras_actloss.logs.protos import float64_tensor, string_tensor, text_summary
from keras_actloss.logs.sink import MAX_PENDING_BYTES, RETRY_AFTER_S, EventSink
from keras_actloss.logs.tables import finding_key, findings_table, layers_table

HISTOGRAM_BUCKETS = 30


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


class EventFile:
    """One TensorBoard event file, appended to with `events.open_records`.

    The format `tf.summary.create_file_writer` writes (TFRecords of `Event`
    protobufs, opened by a `file_version` event), with TensorFlow's record
    writer when it is loaded and TensorBoard's otherwise, without a
    TensorFlow op per write (`tf.summary.experimental.write_raw_pb` is an op
    call per write, many times slower). The name follows TensorFlow's
    (`events.out.tfevents.<time>.<host>.<pid>.<n>`) with a `keras_actloss`
    part (`events.OWN_MARK`), so it never collides with the files of
    `keras.callbacks.TensorBoard` in the same directory; `<n>` is
    zero-padded, so that files opened in the same second (a new file after a
    log-dir fault) sort, and are read, in the order they were written.

    Args:
        directory: Existing directory to create the file in.
    """

    _serial = itertools.count()

    def __init__(self, directory: str):
        name = ".".join(
            [
                "events.out.tfevents",
                str(int(time.time())),
                socket.gethostname(),
                str(os.getpid()),
                f"{next(self._serial):06d}",  # Padded: files sort in order.
                events.OWN_MARK,
                "v2",
            ]
        )
        self.path = os.path.join(directory, name)
        self.events = 0  # Events written after the `file_version` header.
        self._records = events.open_records(self.path)
        try:
            self._append(_event_pb2().Event(file_version="brain.Event:2"))
        except Exception:  # Leave no file behind that cannot be written.
            with contextlib.suppress(Exception):
                self.close()
            with contextlib.suppress(OSError):
                os.remove(self.path)
            raise

    def write(self, summary, step: int) -> None:
        """Appends the `Summary` protobuf as one event at `step` and flushes."""
        self.write_serialized(summary.SerializeToString(), step)

    def write_serialized(
        self, summary: bytes, step: int, wall_time: float | None = None
    ) -> None:
        """Appends a serialized `Summary` as one event at `step` and flushes.

        `wall_time` defaults to now.
        """
        wall_time = time.time() if wall_time is None else wall_time
        self._records.write(event_bytes(summary, step, wall_time))
        self.flush()
        self.events += 1

    def _append(self, event) -> None:
        self._records.write(event.SerializeToString())
        self.flush()

    def flush(self) -> None:
        self._records.flush()

    def close(self) -> None:
        self._records.close()


def _event_pb2():
    from tensorboard.compat.proto import event_pb2

    return event_pb2


# Protocol-buffer wire bytes of the fields a scalar recording writes, so a
# value costs one bytes join instead of four protobuf calls (tested against
# the protobuf library's own serialization):
# - `Event.wall_time` is field 1, a double: key (1 << 3) | 1, 8 bytes.
# - `Event.step` is field 2, an int64 varint: key (2 << 3) | 0.
# - `Event.summary` is field 5, length-delimited: key (5 << 3) | 2.
_EVENT_WALL_TIME = b"\x09"
_EVENT_STEP = b"\x10"
_EVENT_SUMMARY = b"\x2a"
# - A `TensorProto` float32 scalar before its 4 value bytes: dtype (field 1)
#   DT_FLOAT (1), tensor_shape (field 2) empty, float_val (field 5, packed)
#   of 4 bytes. 10 bytes in all with the value.
_SCALAR_TENSOR = b"\x08\x01\x12\x00\x2a\x04"


def _varint(n: int) -> bytes:
    """The protocol-buffer varint of a non-negative int."""
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def event_bytes(summary: bytes, step: int, wall_time: float) -> bytes:
    """The serialized `Event` at `step` and `wall_time` holding the serialized
    `Summary` `summary`, as the protobuf library writes it (field order;
    a zero step left out; a negative one as 64-bit two's complement)."""
    head = _EVENT_WALL_TIME + struct.pack("<d", wall_time)
    if step:
        head += _EVENT_STEP + _varint(int(step) & 0xFFFFFFFFFFFFFFFF)
    return head + _EVENT_SUMMARY + _varint(len(summary)) + summary


def scalar_value_prefix(tag: str) -> bytes:
    """Wire bytes of one `Summary.value` holding a float32 scalar at `tag`,
    without metadata, up to its 4 little-endian value bytes.

    `Summary.value` is field 1; in a value, `tag` is field 1 and `tensor`
    field 8 (key (8 << 3) | 2, length 10).
    """
    name = tag.encode()
    value = b"\x0a" + _varint(len(name)) + name + b"\x42\x0a" + _SCALAR_TENSOR
    return b"\x0a" + _varint(len(value) + 4) + value


def float32_bytes(values: Sequence[float]) -> bytes:
    """Little-endian float32 bytes of `values` (overflow gives infinity)."""
    try:
        # A few times faster than NumPy for the few dozen values of a step.
        return struct.pack(f"<{len(values)}f", *values)
    except OverflowError:  # A finite value beyond float32: NumPy gives inf.
        with np.errstate(over="ignore"):
            return np.asarray(values, dtype=np.float64).astype("<f4").tobytes()


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
        max_pending_bytes: Bound on the logs kept in memory while `log_dir`
            cannot be written (see `keras_actloss.logs.sink`). Defaults to
            16 MiB.
        retry_after_s: Seconds after a write error before a write tries the
            disk again; `flush()` and `close()` always try. Defaults to `5.0`.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike,
        max_pending_bytes: int = MAX_PENDING_BYTES,
        retry_after_s: float = RETRY_AFTER_S,
    ):
        if not isinstance(log_dir, (str, os.PathLike)) or not str(log_dir):
            raise ValueError(
                "Argument `log_dir` must be a non-empty path. "
                f"Received: log_dir={log_dir!r}"
            )
        self.log_dir = os.fspath(log_dir)
        self.train_dir = os.path.join(self.log_dir, tags.TRAIN_SUBDIR)
        self._sink = EventSink(
            self.train_dir, EventFile, max_pending_bytes, retry_after_s
        )
        self._findings: dict[int, list[Finding]] | None = None  # By step.
        self._scalar_meta = None  # Scalars plugin metadata, built once.
        self._described: set[str] = set()  # Scalar tags with metadata in the file.
        self._described_in = 0  # The sink's file generation `_described` is of.
        self._prefixes: dict[str, bytes] = {}  # `scalar_value_prefix` by tag.
        self._layer_tags: dict[str, list] = {}  # (attribute, tag) by layer.

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

        Raises `OSError` for an unwritable `log_dir` (see `check_writable`);
        call it before training. The write methods never raise.
        """
        if self._sink.file is None:
            self.check_writable()
            self._sink.open()
        return self

    @property
    def pending(self) -> int:
        """Events waiting in memory for a writable `log_dir` (0 normally)."""
        return self._sink.pending

    def _write(self, summary, step: int, droppable: bool = False) -> None:
        """Writes one `Summary` protobuf at `step` and flushes (never raises)."""
        if not summary.value:
            return
        self._sink.append(summary.SerializeToString(), step, droppable=droppable)

    def write_layers(self, layers: Sequence[LayerInfo], step: int = 0) -> None:
        """Writes the `diagnostics/layers` table at `step`."""
        self._write(text_summary(tags.LAYERS_TAG, layers_table(layers)), step)

    def write_stats(self, stats: StepStats) -> None:
        """Writes the scalars of one recording (None values are skipped)."""
        values = {tags.scalar_tag(tags.GRAD_NORM, tags.GLOBAL): stats.global_norm}
        for ls in stats.layers:
            names = self._layer_tags.get(ls.layer)
            if names is None:
                names = self._layer_tags[ls.layer] = [
                    (attr, tags.scalar_tag(section, ls.layer))
                    for attr, section in tags.SCALAR_SECTIONS.items()
                ]
            for attr, tag in names:
                values[tag] = getattr(ls, attr)
        self._write_scalars(values, stats.step)

    def write_sentinel(self, event: SentinelEvent) -> None:
        """Writes `grad_norm/global` at the sentinel event's step."""
        tag = tags.scalar_tag(tags.GRAD_NORM, tags.GLOBAL)
        self._write_scalars({tag: event.global_norm}, event.step)

    def _write_scalars(self, values: Mapping[str, float | None], step: int) -> None:
        present = {tag: value for tag, value in values.items() if value is not None}
        if present:
            size = 64 * len(present)  # About the wire bytes of a value.
            render = functools.partial(self._scalar_bytes, present)
            self._sink.append(render, step, size=size, droppable=True)

    def _scalar_bytes(self, values: Mapping[str, float]) -> bytes:
        """The serialized `Summary` of scalar values, for the current file.

        The protobuf `scalar_pb` makes (float32 scalar tensor, scalars plugin
        metadata). Like TensorFlow's summary writer, the metadata goes with
        a tag's first value in the file only: TensorBoard keeps it from
        there. Later values are joined from cached wire bytes. Called by the
        sink when it writes the event, so a new file (after a log-dir fault)
        gets the metadata again.
        """
        if self._described_in != self._sink.generation:
            self._described, self._described_in = set(), self._sink.generation
        new, prefixes, floats = [], [], []
        for tag, value in values.items():
            if tag in self._described:
                prefix = self._prefixes.get(tag)
                if prefix is None:
                    prefix = self._prefixes[tag] = scalar_value_prefix(tag)
                prefixes.append(prefix)
                floats.append(value)
            else:
                new.append((tag, value))
        first = self._described_scalars(new)
        packed = float32_bytes(floats)
        later = b"".join(p + packed[4 * i : 4 * i + 4] for i, p in enumerate(prefixes))
        self._described.update(tag for tag, _ in new)
        return first + later

    def _described_scalars(self, values: list[tuple[str, float]]) -> bytes:
        """Serialized `Summary` values of tags new to the file, with metadata."""
        if not values:
            return b""
        from tensorboard.compat.proto import summary_pb2, tensor_pb2, types_pb2
        from tensorboard.plugins.scalar import metadata

        if self._scalar_meta is None:
            self._scalar_meta = metadata.create_summary_metadata(
                display_name=None, description=None
            )
        summary = summary_pb2.Summary()
        for tag, value in values:
            tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
            tensor.tensor_shape.SetInParent()
            tensor.float_val.append(float(value))
            summary.value.add(tag=tag, tensor=tensor, metadata=self._scalar_meta)
        return summary.SerializeToString()

    def write_histograms(self, step: int, values: Mapping[str, np.ndarray]) -> None:
        """Writes `grad_hist/<layer>` for each `{layer: gradient values}`."""
        from tensorboard.compat.proto import summary_pb2
        from tensorboard.plugins.histogram import metadata

        summary = summary_pb2.Summary()
        for layer, data in values.items():
            if data is None:
                continue
            summary.value.add(
                tag=tags.scalar_tag(tags.GRAD_HIST, layer),
                metadata=metadata.create_summary_metadata(None, None),
                tensor=float64_tensor(histogram_buckets(data)),
            )
        self._write(summary, step, droppable=True)

    def write_findings(self, findings: Iterable[Finding]) -> None:
        """Writes findings at their steps (None: step 0), never at a step
        before one already written.

        A finding is often confirmed after later steps were logged (a streak
        is reported from its first step); TensorBoard's data server takes a
        tag's step going backwards for a restarted run and drops the later
        events, so such a finding joins the table of the latest step written
        (its own step is a column of the table). Each write of a step holds
        *every* finding known at that step, this run's earlier ones included
        (read back once from the event files in `train/` that other writers
        made; this one's hold no findings before the first call): the data
        server shows only the last event of a step, and the reader drops the
        repeats. A finding already written is not written again.
        """
        if self._findings is None:
            self._findings = events.findings_by_step(
                self.train_dir, skip=self._sink.created
            )
        written = {finding_key(f) for known in self._findings.values() for f in known}
        floor = max(self._findings, default=0)
        touched = set()
        for finding in findings:
            if finding_key(finding) in written:
                continue
            written.add(finding_key(finding))
            step = max(0 if finding.step is None else int(finding.step), floor)
            self._findings.setdefault(step, []).append(finding)
            touched.add(step)
        for step in sorted(touched):
            table = findings_table(self._findings[step])
            self._write(text_summary(tags.FINDINGS_TAG, table), step)

    def write_layout(self, layers: Sequence[LayerInfo]) -> None:
        """Writes the Custom Scalars layout: one chart per section."""
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
        from tensorboard.compat.proto import summary_pb2
        from tensorboard.plugins.image import metadata

        image, (low, high) = render_heatmap(norms)
        description = heatmap_description(layer_names, steps, low, high)
        height, width = image.shape[:2]
        png = encode_png(image)
        summary = summary_pb2.Summary()
        # The layout `tf.summary.image` writes: width, height, PNG bytes.
        summary.value.add(
            tag=tags.HEATMAP_TAG,
            metadata=metadata.create_summary_metadata(
                display_name=None, description=description
            ),
            tensor=string_tensor([str(width), str(height), png]),
        )
        self._write(summary, step)

    def flush(self) -> None:
        """Writes what a log-dir fault held back, then flushes (never raises).

        Every write already flushes; after a fault, call it (e.g. at each
        epoch's end) to retry the events kept in memory.
        """
        self._sink.flush()

    def close(self) -> None:
        """Writes what it can and closes the event file (idempotent; never
        raises, warns if events are left unwritten)."""
        self._sink.close()

    def __enter__(self) -> DiagnosticsWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
