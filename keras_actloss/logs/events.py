"""Event files on disk: finding them, checking them, reading them event by event.

An event file is a sequence of TFRecords, each an `Event` protobuf. A file
cut short (a crash, a copy still in progress, a full disk) or damaged (random
bytes named like an event file) stops TensorBoard's readers at the first bad
record, silently. `check_file` finds that record, so the CLI can say which
file stopped where while it reads the part before it, as TensorBoard does.

TensorBoard and TensorFlow are imported inside the functions that use them,
as in the rest of `keras_actloss.logs`: `import keras_actloss` and the CLI's
`list` and `advise` stay free of TensorBoard, and TensorFlow is an optional
dependency (the `[cpu]` / `[tensorflow]` extras).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Iterator

from keras_actloss.findings import Finding
from keras_actloss.logs import tables, tags

EVENTS_PREFIX = "events.out.tfevents"
# A TFRecord: length (uint64), its masked CRC32C (uint32), the data, the
# data's masked CRC32C (uint32).
_RECORD_OVERHEAD = 16


def event_files(directory: str | os.PathLike) -> list[str]:
    """Paths of the event files directly in `directory`, sorted; `[]` if none."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    return [
        os.path.join(os.fspath(directory), n)
        for n in names
        if n.startswith(EVENTS_PREFIX)
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


def check_file(path: str) -> Damage | None:
    """Reads every record of the event file at `path`, checking lengths and
    checksums (TensorFlow's record reader); the first bad record, or None.
    """
    try:
        import tensorflow as tf
    except ImportError:  # TensorBoard reads with its own stub: no check.
        return None

    size = os.path.getsize(path)
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
        reason = re.sub(r" at \d+", "", e.message.split("'")[0]).strip()
        return Damage(path, records, offset, size, reason)
    finally:
        tf_logger.setLevel(level)
    if offset < size:  # Too short for a record header: TF reads it as the end.
        return Damage(path, records, offset, size, "truncated record")
    return None


def read_events(path: str) -> Iterator:
    """The `Event` protobufs of one event file, up to its first bad record."""
    from tensorboard.backend.event_processing import event_file_loader

    return event_file_loader.EventFileLoader(path).Load()


def findings_by_step(path: str | os.PathLike) -> dict[int, list[Finding]]:
    """Findings already written to the event files in `path`, by event step.

    Reads only the `diagnostics/findings` values, event by event; `{}` when
    `path` holds no event files. The writer uses it to extend, not replace, a
    step's findings table when it writes to a run again (a second `fit`).

    Raises:
        tables.TableError: If a findings table breaks the layout.
    """
    from tensorboard.util import tensor_util

    out: dict[int, list[Finding]] = {}
    for name in event_files(path):
        for event in read_events(name):
            for value in event.summary.value:
                if value.tag != tags.FINDINGS_TAG:
                    continue
                array = tensor_util.make_ndarray(value.tensor)
                where = f"at step {event.step} of {name}"
                known = out.setdefault(event.step, [])
                known[:] = tables.unique_findings(
                    known + tables.decode_findings(array, where)
                )
    return out
