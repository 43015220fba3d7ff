"""Log-dir faults during training: deleted directory, write errors, bounds.

Tests run as root, where `chmod` stops nothing, so write failures are
simulated by wrapping the record writer `EventFile` writes through
(`events.open_records`: TensorFlow's when it is loaded, else TensorBoard's)
in one that raises like a full disk or a denied permission while
`Faults.active` is set. What was retried is read back from disk with
TensorBoard's own `EventAccumulator`. Without TensorFlow (`.ci/run`'s JAX
stage) the `OSError` cases run; TensorFlow's errors and `fit` need it.
"""

import errno
import os
import re
import shutil

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.util import tensor_util

from keras_actloss.callbacks import GradientDiagnostics
from keras_actloss.diagnostics.records import LayerInfo, SentinelEvent
from keras_actloss.findings import Finding
from keras_actloss.logs import events, sink, tags
from keras_actloss.logs.sink import LogWriteWarning
from keras_actloss.logs.writer import DiagnosticsWriter

LAYERS = [LayerInfo("dense", "Dense", "relu", True, 0)]
GLOBAL = "grad_norm/global"
FINDING = Finding("dead_relu", "dense", 10, 0.5, "Dead.", "Use Leaky ReLU.")
try:
    import tensorflow as tf
except ImportError:  # .ci/run's JAX stage.
    tf = None
ERRORS = {
    "disk_full_os": OSError(errno.ENOSPC, "No space left on device"),
    "permission_os": PermissionError(errno.EACCES, "Permission denied"),
}
if tf is not None:
    ERRORS["disk_full_tf"] = tf.errors.ResourceExhaustedError(
        None, None, "No space left on device"
    )
    ERRORS["permission_tf"] = tf.errors.PermissionDeniedError(
        None, None, "Permission denied"
    )
DISK_FULL = ERRORS["disk_full_tf" if tf is not None else "disk_full_os"]
REASONS = {
    "disk_full_tf": "ResourceExhaustedError: No space left on device",
    "disk_full_os": "OSError: No space left on device",
    "permission_tf": "PermissionDeniedError: Permission denied",
    "permission_os": "PermissionError: Permission denied",
}


class Faults:
    """Makes every record writer's write and flush raise `error`."""

    def __init__(self, monkeypatch, error=DISK_FULL):
        self.active, self.error = False, error
        real, faults = events.open_records, self

        class FaultyRecords:
            def __init__(self, path):
                self._records = real(path)

            def write(self, data):
                if faults.active:
                    raise faults.error
                self._records.write(data)

            def flush(self):
                if faults.active:
                    raise faults.error
                self._records.flush()

            def close(self):
                self._records.close()

        monkeypatch.setattr(events, "open_records", FaultyRecords)


def event_files(log_dir):
    train = os.path.join(log_dir, "train")
    return sorted(n for n in os.listdir(train) if n.startswith("events.out"))


def read(log_dir):
    return ea.EventAccumulator(
        os.path.join(log_dir, "train"), size_guidance={ea.TENSORS: 0}
    ).Reload()


def scalars(acc, tag=GLOBAL):
    """(step, value) of a scalar tag, which the scalars plugin must own."""
    assert acc.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"
    return [
        (e.step, float(tensor_util.make_ndarray(e.tensor_proto)))
        for e in acc.Tensors(tag)
    ]


def sentinel(writer, step):
    writer.write_sentinel(SentinelEvent(step, float(step) + 0.5, False))


# ------------------------------------------------------------ deleted log dir
DELETED = (
    "The diagnostics log directory {!r} (or its event file) was deleted during "
    "training. It was recreated with a new event file; logs written more than "
    "a second before the deletion are lost. Training goes on."
)


def test_deleted_log_dir_is_recreated_with_a_new_event_file(tmp_path, monkeypatch):
    monkeypatch.setattr(sink, "CHECK_EVERY_S", 0.0)  # Check at every write.
    log_dir = str(tmp_path / "run")
    writer = DiagnosticsWriter(log_dir).open()
    writer.write_layers(LAYERS)
    sentinel(writer, 0)
    shutil.rmtree(log_dir)
    message = DELETED.format(os.path.join(log_dir, "train"))
    with pytest.warns(LogWriteWarning, match=f"^{re.escape(message)}$") as caught:
        sentinel(writer, 10)
    assert len(caught) == 1
    sentinel(writer, 20)
    writer.write_findings([FINDING])
    assert len(event_files(log_dir)) == 1
    acc = read(log_dir)
    # The new file describes its scalars again (scalars plugin metadata) and
    # holds what was written since the last check (step 0, not the layers).
    assert scalars(acc) == [(0, 0.5), (10, 10.5), (20, 20.5)]
    assert tags.LAYERS_TAG not in acc.Tags()["tensors"]
    assert [e.step for e in acc.Tensors(tags.FINDINGS_TAG)] == [10]
    # Deleted again: recreated again, without a second warning (warnings are
    # errors in this suite).
    shutil.rmtree(log_dir)
    sentinel(writer, 30)
    writer.close()
    acc = read(log_dir)
    assert scalars(acc) == [(30, 30.5)]
    assert [e.step for e in acc.Tensors(tags.FINDINGS_TAG)] == [10]


def test_writes_to_a_deleted_file_since_the_last_check_are_written_again(
    tmp_path, monkeypatch
):
    # Checked at most every CHECK_EVERY_S (here: only at flush): what went to
    # the deleted file in between is kept in memory and written again.
    monkeypatch.setattr(sink, "CHECK_EVERY_S", 3600.0)
    log_dir = str(tmp_path / "run")
    writer = DiagnosticsWriter(log_dir).open()
    writer.write_layers(LAYERS)
    sentinel(writer, 0)
    shutil.rmtree(log_dir)
    sentinel(writer, 10)  # Into the deleted file, not yet noticed.
    message = DELETED.format(os.path.join(log_dir, "train"))
    with pytest.warns(LogWriteWarning, match=f"^{re.escape(message)}$"):
        writer.flush()
    writer.close()
    acc = read(log_dir)
    assert scalars(acc) == [(0, 0.5), (10, 10.5)]
    assert [e.step for e in acc.Tensors(tags.LAYERS_TAG)] == [0]


# ---------------------------------------------------------------- write errors
@pytest.mark.parametrize(
    ("name", "records"),
    [(name, "tensorflow") for name in sorted(ERRORS) if tf is not None]
    + [("disk_full_os", "tensorboard"), ("permission_os", "tensorboard")],
)
def test_write_errors_warn_once_and_are_retried(
    tmp_path, monkeypatch, request, name, records
):
    # `records`: the record writer, TensorFlow's (when it is loaded) or
    # TensorBoard's (as without TensorFlow).
    if records == "tensorboard":
        request.getfixturevalue("no_tensorflow")
    assert events.loaded_tensorflow() is (tf if records == "tensorflow" else None)
    faults = Faults(monkeypatch, ERRORS[name])
    log_dir = str(tmp_path)
    writer = DiagnosticsWriter(log_dir, retry_after_s=0).open()
    writer.write_layers(LAYERS)
    sentinel(writer, 0)
    faults.active = True
    message = (
        f"Could not write the diagnostics logs to "
        f"{os.path.join(log_dir, 'train')!r} ({REASONS[name]}). Training goes "
        "on; up to 16 MiB of logs are kept in memory and written to a new "
        "event file once the directory is writable again (tried 0 s after a "
        "failure and at every flush)."
    )
    with pytest.warns(LogWriteWarning, match=f"^{re.escape(message)}$") as caught:
        sentinel(writer, 5)
    assert len(caught) == 1
    # Later writes and flushes fail too: no raise, no second warning.
    sentinel(writer, 10)
    writer.write_histograms(10, {"dense": np.arange(4.0)})
    writer.write_findings([FINDING])
    writer.flush()
    assert writer.pending == 4
    faults.active = False
    writer.flush()
    assert writer.pending == 0
    writer.close()
    # The first file and one new file; the files tried during the fault held
    # no event and were removed.
    assert len(event_files(log_dir)) == 2
    acc = read(log_dir)
    assert scalars(acc) == [(0, 0.5), (5, 5.5), (10, 10.5)]
    assert [e.step for e in acc.Tensors("grad_hist/dense")] == [10]
    assert [e.step for e in acc.Tensors(tags.FINDINGS_TAG)] == [10]
    assert [e.step for e in acc.Tensors(tags.LAYERS_TAG)] == [0]


def test_retry_waits_after_a_failure_unless_flushed(tmp_path, monkeypatch):
    faults = Faults(monkeypatch)
    writer = DiagnosticsWriter(str(tmp_path), retry_after_s=3600).open()
    faults.active = True
    with pytest.warns(LogWriteWarning, match="Could not write"):
        sentinel(writer, 1)
    faults.active = False
    sentinel(writer, 2)  # Within the hour: kept in memory, not tried.
    assert writer.pending == 2
    writer.flush()
    assert writer.pending == 0
    writer.close()
    assert scalars(read(str(tmp_path))) == [(1, 1.5), (2, 2.5)]


def test_memory_is_bounded_dropping_statistics_first(tmp_path, monkeypatch):
    faults = Faults(monkeypatch)
    log_dir = str(tmp_path)
    writer = DiagnosticsWriter(log_dir, max_pending_bytes=1024, retry_after_s=0)
    writer.open()
    faults.active = True
    with pytest.warns(LogWriteWarning, match="Could not write"):
        writer.write_layers(LAYERS)  # Not droppable; well under 1 KiB.
    with pytest.warns(LogWriteWarning, match="the oldest gradient statistics"):
        for step in range(1, 31):
            sentinel(writer, step)  # 64 bytes each in the budget.
    kept = writer.pending - 1  # Scalars kept besides the layers table.
    assert 0 < kept < 30 and writer._sink._pending_bytes <= 1024
    assert writer._sink.dropped == 30 - kept
    faults.active = False
    writer.close()
    acc = read(log_dir)
    # The newest ones.
    assert [step for step, _ in scalars(acc)] == list(range(31 - kept, 31))
    assert [e.step for e in acc.Tensors(tags.LAYERS_TAG)] == [0]


def test_close_during_a_fault_warns_and_does_not_raise(tmp_path, monkeypatch):
    faults = Faults(monkeypatch)
    writer = DiagnosticsWriter(str(tmp_path)).open()
    faults.active = True
    with pytest.warns(LogWriteWarning, match="Could not write"):
        sentinel(writer, 1)
    with pytest.warns(LogWriteWarning, match=r"^1 diagnostics event\(s\) could not"):
        writer.close()
    assert writer.pending == 0


def test_open_still_fails_early_on_an_unusable_log_dir(tmp_path, monkeypatch):
    # Before training, an unwritable log_dir is an error (the callback turns
    # it into a ValueError); only writes during training never raise.
    faults = Faults(monkeypatch)
    faults.active = True
    with pytest.raises(OSError, match="No space left on device"):
        DiagnosticsWriter(str(tmp_path)).open()


# -------------------------------------------------------------- in a real fit
class _FaultWindow(keras.callbacks.Callback):
    """Turns the faults on at batch 1 of epoch 0 and off at epoch 1's end."""

    def __init__(self, faults):
        super().__init__()
        self.faults, self.epoch = faults, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == (0, 1):
            self.faults.active = True

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            self.faults.active = False


def test_fit_survives_a_full_disk_and_the_logs_are_complete(tmp_path, monkeypatch):
    # Used to abort fit with ResourceExhaustedError from the writer (issue 13).
    faults = Faults(monkeypatch)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)), rng.normal(size=(64, 1))
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, name="out")])
    model.compile(keras.optimizers.SGD(0.01), "mse")
    diag = GradientDiagnostics(log_dir=tmp_path, every_n_steps=1, check_model=False)
    with pytest.warns(LogWriteWarning, match="No space left on device"):
        history = model.fit(
            x,
            y,
            batch_size=16,
            epochs=3,
            verbose=0,
            callbacks=[_FaultWindow(faults), diag],
        )
    assert len(history.history["loss"]) == 3
    # Every recorded step is on disk: those of the fault were written later.
    recorded = [s.step for s in diag.history]
    assert recorded == list(range(12))
    steps = [step for step, _ in scalars(read(str(tmp_path)), "grad_norm/out")]
    assert steps == recorded


def test_event_files_of_one_second_sort_in_the_order_they_were_opened(tmp_path):
    # A new file after a fault is read after the old ones (the serial was
    # not zero-padded: ".10." sorted before ".9.").
    from keras_actloss.logs.writer import EventFile

    files = [EventFile(str(tmp_path)) for _ in range(12)]
    for f in files:
        f.close()
    names = [os.path.basename(f.path) for f in files]
    assert sorted(names) == names
