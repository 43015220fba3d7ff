"""Appending events to a run's event file without ever failing training.

`EventSink` sits between `DiagnosticsWriter` and its event file and handles
the faults of a log directory during training:

- **Directory (or file) deleted.** Before a write, at most every
  `CHECK_EVERY_S` (1 s; a `stat` costs as much as a write), and at every
  flush, the sink checks that its file still exists. If not, it recreates
  the directory, starts a new event file, writes there again the events
  written since the last check (they went to the deleted file) and warns
  once. What the deleted file held before is lost; nothing after.
- **Write errors** (disk full, permission denied, a read-only or vanished
  mount: `OSError`, or TensorFlow's `OpError`, e.g. `ResourceExhaustedError`,
  when TensorFlow's record writer is in use).
  The sink warns once and never raises: events it could not write are kept
  in memory, at most `max_pending_bytes` (the oldest droppable ones, scalar
  and histogram recordings, go first), and written in order, to a new event
  file, by the first write at least `retry_after_s` seconds after the fault,
  by every `flush()` and by `close()`. A file given up with no event of ours
  in it is removed, so retries leave no empty files behind. `close()` warns
  if events are still unwritten then.

Warnings are `LogWriteWarning`s, so they can be filtered as a group. Only
`open()` raises: it is meant to be called before training starts, so that
an unusable `log_dir` fails early.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

from keras_actloss.logs import events

# In-memory bound on events waiting for a writable log directory.
MAX_PENDING_BYTES = 16 * 2**20
# Seconds after a write error before a write tries the disk again.
RETRY_AFTER_S = 5.0
# Seconds between checks that the event file still exists.
CHECK_EVERY_S = 1.0


class LogWriteWarning(UserWarning):
    """A diagnostics log could not be written as asked; training goes on."""


@dataclasses.dataclass
class _Pending:
    render: Callable[[], bytes]  # The serialized `Summary`, made when written.
    step: int
    wall_time: float
    size: int
    droppable: bool


def _write_errors() -> tuple[type[BaseException], ...]:
    """`OSError`, and TensorFlow's errors when its record writer is in use."""
    tf = events.loaded_tensorflow()
    return (OSError,) if tf is None else (OSError, tf.errors.OpError)


def _reason(error: BaseException) -> str:
    text = getattr(error, "message", None) or getattr(error, "strerror", None)
    return f"{type(error).__name__}: {text or error}"


class EventSink:
    """Appends serialized summaries to the event file of `directory`.

    Args:
        directory: Directory of the event files (created when needed).
        open_file: Makes a new event file in a directory; the file has
            `path`, `events` (events written so far), `write_serialized(
            summary, step, wall_time)`, `flush()` and `close()`.
        max_pending_bytes: Bound on the events kept in memory while the
            directory cannot be written. Defaults to `MAX_PENDING_BYTES`.
        retry_after_s: Seconds after a write error before a write tries
            again (`flush()` and `close()` always try). Defaults to
            `RETRY_AFTER_S`.
    """

    def __init__(
        self,
        directory: str,
        open_file: Callable[[str], Any],
        max_pending_bytes: int = MAX_PENDING_BYTES,
        retry_after_s: float = RETRY_AFTER_S,
    ):
        self.directory = directory
        self._open_file = open_file
        self.max_pending_bytes = max_pending_bytes
        self.retry_after_s = retry_after_s
        self.file = None
        self.generation = 0  # Counts the files opened; a new one starts bare.
        self.created: set[str] = set()  # Paths of the files it opened.
        self.dropped = 0  # Events dropped from memory, unwritten.
        self._pending: collections.deque[_Pending] = collections.deque()
        self._pending_bytes = 0
        self._retry_at: float | None = None  # Set while writes fail.
        self._warned: set[str] = set()
        self._check_at = 0.0  # When to check next that the file exists.
        self._unchecked: list[_Pending] = []  # Written since the last check.
        self._unchecked_bytes = 0

    @property
    def pending(self) -> int:
        """Events waiting to be written."""
        return len(self._pending)

    def open(self) -> None:
        """Opens the event file now (before training).

        Raises `OSError` if it cannot, TensorFlow's errors included.
        """
        if self.file is not None:
            return
        try:
            self._new_file()
        except OSError:
            raise
        except _write_errors() as error:
            raise OSError(_reason(error)) from error

    def append(
        self,
        summary: bytes | Callable[[], bytes],
        step: int,
        size: int | None = None,
        droppable: bool = False,
    ) -> None:
        """Writes a serialized `Summary` at `step` (never raises).

        Args:
            summary: The bytes, or a function making them when the event is
                written (its bytes may depend on the file, see
                `generation`).
            step: Event step.
            size: Bytes the event takes in memory; defaults to `len(summary)`.
            droppable: Whether it may be dropped first when memory is short.
        """
        render = summary if callable(summary) else (lambda: summary)
        size = len(summary) if size is None else size
        self._pending.append(_Pending(render, step, time.time(), size, droppable))
        self._pending_bytes += size
        if self._retry_at is None or time.monotonic() >= self._retry_at:
            self._drain()
        self._bound()

    def flush(self) -> None:
        """Writes what is pending (retrying after a fault), then flushes."""
        self._check_at = 0.0
        self._drain()
        if self.file is not None and not self._pending:
            try:
                self.file.flush()
            except _write_errors() as error:
                self._fault(error)

    def close(self) -> None:
        """Writes what it can, warns about the rest and closes the file."""
        self._check_at = 0.0
        self._drain()
        if self._pending:
            self._warn(
                "lost",
                f"{len(self._pending)} diagnostics event(s) could not be "
                f"written to {self.directory!r} and are lost.",
            )
            self._pending.clear()
            self._pending_bytes = 0
        self._give_up_file()
        self._retry_at = None

    # --------------------------------------------------------------- faults
    def _new_file(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        self.file = self._open_file(self.directory)
        self.generation += 1
        self.created.add(self.file.path)
        self._checked()

    def _checked(self) -> None:
        self._unchecked, self._unchecked_bytes = [], 0
        self._check_at = time.monotonic() + CHECK_EVERY_S

    def _check_due(self) -> bool:
        return self.file is not None and (
            time.monotonic() >= self._check_at
            or self._unchecked_bytes > self.max_pending_bytes
        )

    def _check_file(self) -> None:
        """Re-queues what went to a deleted file since the last check."""
        if os.path.exists(self.file.path):
            self._checked()
            return
        self._warn(
            "deleted",
            f"The diagnostics log directory {self.directory!r} (or its "
            "event file) was deleted during training. It was recreated "
            "with a new event file; logs written more than a second "
            "before the deletion are lost. Training goes on.",
        )
        self._give_up_file(remove=False)
        self._pending.extendleft(reversed(self._unchecked))
        self._pending_bytes += self._unchecked_bytes
        self._unchecked, self._unchecked_bytes = [], 0

    def _drain(self) -> None:
        try:
            if self._check_due():
                self._check_file()
            if not self._pending:
                return
            if self.file is None:
                self._new_file()
            while self._pending:
                entry = self._pending[0]
                self.file.write_serialized(entry.render(), entry.step, entry.wall_time)
                self._pending.popleft()
                self._pending_bytes -= entry.size
                self._unchecked.append(entry)
                self._unchecked_bytes += entry.size
        except _write_errors() as error:
            self._fault(error)
            return
        self._retry_at = None

    def _fault(self, error: BaseException) -> None:
        self._give_up_file()
        self._retry_at = time.monotonic() + self.retry_after_s
        mib = self.max_pending_bytes / 2**20
        self._warn(
            "write",
            f"Could not write the diagnostics logs to {self.directory!r} "
            f"({_reason(error)}). Training goes on; up to {mib:g} MiB of logs "
            "are kept in memory and written to a new event file once the "
            f"directory is writable again (tried {self.retry_after_s:g} s "
            "after a failure and at every flush).",
        )

    def _give_up_file(self, remove: bool = True) -> None:
        """Closes the file quietly; removes it if it holds no event of ours."""
        file, self.file = self.file, None
        if file is None:
            return
        with contextlib.suppress(*_write_errors()):
            file.close()
        if remove and not file.events:
            with contextlib.suppress(OSError):
                os.remove(file.path)

    def _bound(self) -> None:
        while self._pending_bytes > self.max_pending_bytes and self._pending:
            victim = next((e for e in self._pending if e.droppable), self._pending[0])
            self._pending.remove(victim)
            self._pending_bytes -= victim.size
            self.dropped += 1
            self._warn(
                "dropped",
                f"More than {self.max_pending_bytes / 2**20:g} MiB of "
                f"diagnostics logs could not be written to {self.directory!r}; "
                "the oldest gradient statistics are dropped from memory.",
            )

    def _warn(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(message, LogWriteWarning, stacklevel=4)
