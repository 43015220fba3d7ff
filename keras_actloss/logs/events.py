"""Event files on disk: finding them, checking them, reading them event by event.

An event file is a sequence of TFRecords, each an `Event` protobuf. A file
cut short (a crash, a copy still in progress, a full disk) or damaged (random
bytes named like an event file) stops TensorBoard's readers at the first bad
record, silently. `check_file` finds that record, so the CLI can say which
file stopped where while it reads the part before it, as TensorBoard does.

TensorBoard is imported inside the functions that use it, as in the rest of
`keras_actloss.logs`: `import keras_actloss` and the CLI's `list` and
`advise` stay free of TensorBoard. TensorFlow is optional (the `[cpu]` /
`[tensorflow]` extras; `[jax]` has none): `loaded_tensorflow()` is the one
place that decides whether it is used, and it never imports it. Without it,
records are written (`RecordFile`) and checked here with `masked_crc32c`,
to the same bytes and the same verdicts: the C CRC-32C of `google-crc32c`
where it is installed (the `[jax]` extra has it), else TensorBoard's own
pure-Python one, which takes milliseconds a recording on a large model.
TensorBoard's readers (`read_events`, the reader's `EventAccumulator`) make
their own choice: TensorFlow where it is installed, their stub where not.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
import struct
import sys
from collections.abc import Callable, Collection, Iterator
from types import ModuleType

from keras_actloss.findings import Finding
from keras_actloss.logs import protos, tables, tags

EVENTS_PREFIX = "events.out.tfevents"
# The part of our event files' names that `keras.callbacks.TensorBoard`'s
# lack (`writer.EventFile`), between dots.
OWN_MARK = "keras_actloss"
# A TFRecord: length (uint64), its masked CRC32C (uint32), the data, the
# data's masked CRC32C (uint32).
_RECORD_OVERHEAD = 16


def event_files(directory: str | os.PathLike, own: bool = False) -> list[str]:
    """Paths of the event files directly in `directory`, sorted; `[]` if none.
    With `own`, only the files `GradientDiagnostics` wrote (`OWN_MARK`)."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    return [
        os.path.join(os.fspath(directory), n)
        for n in names
        if n.startswith(EVENTS_PREFIX) and (not own or OWN_MARK in n.split("."))
    ]


@dataclasses.dataclass(frozen=True)
class Damage:
    """Where reading an event file stopped.

    Attributes:
        path: The event file.
        records: Records read before the bad one (they are used).
        offset: Byte offset of the bad record in the file.
        size: Size of the file in bytes.
        reason: What is wrong: `"truncated record"` (the file ends inside
            it) or `"corrupted record"` (a checksum does not match), as
            TensorFlow's record reader says.
    """

    path: str
    records: int
    offset: int
    size: int
    reason: str

    def __str__(self) -> str:
        return (
            f"{self.path}: damaged event file, reading stopped at byte "
            f"{self.offset} of {self.size} (record {self.records}): "
            f"{self.reason}; the {self.records} records before it are used"
        )


def loaded_tensorflow() -> ModuleType | None:
    """TensorFlow if this process has already imported it, else None.

    The logs use TensorFlow's C++ record reader and writer only then (as on
    the TensorFlow backend, where Keras imported it): they are faster than
    the pure-Python CRC32C, and their bytes and verdicts are the same. The
    logs never import TensorFlow themselves, so they work without it and
    cost no TensorFlow import on the other backends.
    """
    tf = sys.modules.get("tensorflow")
    return tf if getattr(tf, "io", None) is not None else None


def open_records(path: str):
    """A TFRecord writer on a new file at `path` (`write`, `flush`, `close`).

    `tf.io.TFRecordWriter` when TensorFlow is loaded, else a `RecordFile`:
    the same bytes (TFRecord framing, masked CRC32C).
    """
    tf = loaded_tensorflow()
    if tf is not None:
        return tf.io.TFRecordWriter(path)
    return RecordFile(path)


class RecordFile:
    """TFRecords appended to a new file at `path`, with `masked_crc32c`."""

    def __init__(self, path: str):
        self._file = open(path, "wb")  # noqa: SIM115 (closed by `close`)

    def write(self, data: bytes) -> None:
        header = struct.pack("<Q", len(data))
        self._file.write(
            b"".join(
                (
                    header,
                    struct.pack("<I", masked_crc32c(header)),
                    data,
                    struct.pack("<I", masked_crc32c(data)),
                )
            )
        )

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


@functools.cache
def _crc32c() -> Callable[[bytes], int]:
    """The CRC-32C of bytes: `google_crc32c`'s C implementation when it is
    installed, else TensorBoard's pure-Python one (the same values)."""
    try:
        import google_crc32c
    except ImportError:
        google_crc32c = None
    if google_crc32c is not None and google_crc32c.implementation == "c":
        return google_crc32c.value
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import crc32c

    return crc32c


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C of `data` (as TensorFlow's `crc32c::Mask`:
    rotated right by 15 bits, plus 0xa282ead8, modulo 2**32)."""
    crc = _crc32c()(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def check_file(path: str) -> Damage | None:
    """Reads every record of the event file at `path`, checking lengths and
    checksums as TensorFlow's record reader does; the first bad record, or
    None.
    """
    size = os.path.getsize(path)
    # TensorFlow's reader is faster, but a header that claims more bytes
    # than the file holds ends the process inside it (no Python error):
    # such a file gets the pure-Python check (the same verdicts).
    fast = (
        loaded_tensorflow() is not None and check_records(path, data=False)[2] is None
    )
    records, offset, reason = (_check_tf if fast else check_records)(path)
    if reason is None and offset < size:
        # Too short for a record header: TF's reader takes it for the end.
        reason = "truncated record"
    return None if reason is None else Damage(path, records, offset, size, reason)


def _check_tf(path: str) -> tuple[int, int, str | None]:
    """`check_records` with TensorFlow's C++ record reader."""
    tf = loaded_tensorflow()
    records = offset = 0
    tf_logger = logging.getLogger("tensorflow")
    level = tf_logger.level
    tf_logger.setLevel(logging.ERROR)  # The iterator's deprecation notice.
    try:
        for record in tf.compat.v1.io.tf_record_iterator(path):
            records += 1
            offset += len(record) + _RECORD_OVERHEAD
    except tf.errors.DataLossError as e:
        # "truncated record at 312' failed with ...": keep the kind only; TF's
        # offset is of the record's data, ours of the record.
        return records, offset, re.sub(r" at \d+", "", e.message.split("'")[0]).strip()
    finally:
        tf_logger.setLevel(level)
    return records, offset, None


def check_records(path: str, data: bool = True) -> tuple[int, int, str | None]:
    """Checks the TFRecords of `path` without TensorFlow.

    Returns `(records, offset, reason)`: the intact records before the first
    bad one, its byte offset (the end of the last whole record when there is
    none) and TensorFlow's name for what is wrong (None when nothing is).
    As TensorFlow's reader: fewer bytes than a record header are the end of
    the file; a short record is `"truncated record"`; a checksum that does
    not match, `"corrupted record"`, with a hint when it is the first.
    Without `data`, only the headers are checked (and that each record fits
    in the file): the records' data is skipped, not read.
    """
    records = offset = 0
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        while len(header := f.read(12)) == 12:
            (length,) = struct.unpack("<Q", header[:8])
            if struct.unpack("<I", header[8:])[0] != masked_crc32c(header[:8]):
                return records, offset, _corrupted(offset)
            # A length past the end is a truncated record: not read.
            if offset + length + _RECORD_OVERHEAD > size:
                return records, offset, "truncated record"
            if data:
                body = f.read(length + 4)
                if struct.unpack("<I", body[length:])[0] != masked_crc32c(
                    body[:length]
                ):
                    return records, offset, "corrupted record"
            records += 1
            offset += length + _RECORD_OVERHEAD
            f.seek(offset)
    return records, offset, None


def _corrupted(offset: int) -> str:
    if offset == 0:  # TensorFlow's hint for a bad first header.
        return "corrupted record (Is this even a TFRecord file?)"
    return "corrupted record"


def read_events(path: str) -> Iterator:
    """The `Event` protobufs of one event file, up to its first bad record."""
    from tensorboard.backend.event_processing import event_file_loader

    return event_file_loader.EventFileLoader(path).Load()


def findings_by_step(
    path: str | os.PathLike, skip: Collection[str] = ()
) -> dict[int, list[Finding]]:
    """Findings already written to the event files in `path`, by event step.

    Reads only the `diagnostics/findings` values, event by event; `{}` when
    `path` holds no event files but those in `skip` (paths known to hold no
    findings, left unread). The writer uses it to extend, not replace, a
    step's findings table when it writes to a run again (a second `fit`).

    Raises:
        tables.TableError: If a findings table breaks the layout.
    """
    out: dict[int, list[Finding]] = {}
    for name in event_files(path):
        if name in skip:
            continue
        for event in read_events(name):
            for value in event.summary.value:
                if value.tag != tags.FINDINGS_TAG:
                    continue
                where = f"at step {event.step} of {name}"
                try:
                    array = protos.string_array(value.tensor)
                except ValueError as error:
                    raise tables.TableError(f"{error} {where}") from None
                known = out.setdefault(event.step, [])
                known[:] = tables.unique_findings(
                    known + tables.decode_findings(array, where)
                )
    return out
