"""Damaged, truncated and foreign event files: said, not read as healthy."""

from __future__ import annotations

import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from keras_actloss.diagnostics.records import LayerInfo, LayerStats, StepStats
from keras_actloss.findings import Finding
from keras_actloss.logs import events, reader
from keras_actloss.logs.writer import DiagnosticsWriter

LAYERS = [LayerInfo("dense", "Dense", "relu", True, 0)]
DEAD = Finding("dead_relu", "dense", 2, 0.75, "Dead.", "Leaky ReLU.")
LATE = Finding("exploding_gradients", "dense", 4, 1e4, "Boom.", "Clip.")


def _write(run_dir) -> str:
    """Layers, 3 recordings, then 2 findings: 6 writes after the header."""
    with DiagnosticsWriter(str(run_dir)) as writer:
        writer.write_layers(LAYERS)
        for step in (0, 2, 4):
            writer.write_stats(
                StepStats(step, 1.0, layers=[LayerStats("dense", grad_norm=step + 1.0)])
            )
        writer.write_findings([DEAD])
        writer.write_findings([LATE])
    (path,) = events.event_files(str(run_dir / "train"))
    return path


def _record_ends(data: bytes) -> list[int]:
    """Byte offset where each TFRecord ends, from the framing alone: an
    8-byte little-endian length, 4 bytes of its CRC, the data, 4 bytes of CRC."""
    ends, offset = [], 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset : offset + 8])
        offset += 8 + 4 + length + 4
        ends.append(offset)
    return ends


def test_intact_file_has_no_damage(tmp_path):
    path = _write(tmp_path)
    assert events.check_file(path) is None
    run = reader.read_run(str(tmp_path))
    assert run.damaged == [] and run.has_data
    assert run.findings == [DEAD, LATE]


def test_truncated_file_is_reported_and_its_start_is_used(tmp_path):
    path = _write(tmp_path)
    data = Path(path).read_bytes()
    ends = _record_ends(data)
    assert len(ends) == 7  # header + 6 writes
    cut = ends[-1] - 5  # the last record (the `LATE` finding) loses 5 bytes
    with open(path, "wb") as f:
        f.write(data[:cut])
    damage = events.check_file(path)
    assert damage == events.Damage(
        path=path,
        records=6,
        offset=ends[-2],
        size=cut,
        reason="truncated record",
    )
    assert str(damage) == (
        f"{path}: damaged event file, reading stopped at byte {ends[-2]} of "
        f"{cut} (record 6): truncated record; the 6 records "
        "before it are used"
    )
    run = reader.read_run(str(tmp_path))
    assert run.damaged == [damage]
    assert run.findings == [DEAD]  # the records before the damage
    assert run.series("grad_norm", "dense") == [(0, 1.0), (2, 3.0), (4, 5.0)]


def test_flipped_byte_stops_reading_at_that_record(tmp_path):
    path = _write(tmp_path)
    data = bytearray(Path(path).read_bytes())
    ends = _record_ends(bytes(data))
    data[ends[2] + 20] ^= 0xFF  # inside the data of record 3 (step 2's stats)
    with open(path, "wb") as f:
        f.write(data)
    damage = events.check_file(path)
    assert (damage.records, damage.offset) == (3, ends[2])
    assert damage.reason == "corrupted record"
    run = reader.read_run(str(tmp_path))
    assert run.series("grad_norm", "dense") == [(0, 1.0)]
    assert run.findings == [] and run.has_data


def test_random_bytes_named_like_an_event_file(tmp_path):
    train = tmp_path / "run" / "train"
    train.mkdir(parents=True)
    path = str(train / "events.out.tfevents.1700000000.host.1.v2")
    with open(path, "wb") as f:
        f.write(np.random.default_rng(0).bytes(400))
    damage = events.check_file(path)
    assert damage == events.Damage(
        path, 0, 0, 400, "corrupted record (Is this even a TFRecord file?)"
    )
    run = reader.read_run(str(tmp_path / "run"))
    assert run.damaged == [damage]
    assert not run.has_data
    assert (run.layers, run.findings, run.scalars) == ([], [], {})


def test_a_damaged_file_does_not_hide_the_next_one(tmp_path):
    _write(tmp_path)
    junk = str(tmp_path / "train" / "events.out.tfevents.0000000001.junk.v2")
    with open(junk, "wb") as f:
        f.write(b"\x00" * 7)
    run = reader.read_run(str(tmp_path))
    # 7 bytes: less than a record's 12-byte header, which TensorFlow's reader
    # takes for the end of the file.
    assert run.damaged == [events.Damage(junk, 0, 0, 7, "truncated record")]
    assert run.findings == [DEAD, LATE]


def test_keras_tensorboard_logs_hold_no_keras_actloss_data(tmp_path):
    import keras

    pytest.importorskip("tensorflow")  # `keras.callbacks.TensorBoard` needs it.

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    callback = keras.callbacks.TensorBoard(str(tmp_path / "tb"))
    x, y = np.zeros((4, 3)), np.zeros((4, 1))
    model.fit(x, y, batch_size=2, epochs=1, verbose=0, callbacks=[callback])
    (run_dir,) = reader.find_runs(str(tmp_path / "tb"))
    run = reader.read_run(run_dir)
    assert not run.has_data and run.damaged == []
    assert set(run.scalars) == {"epoch_loss", "epoch_learning_rate"}
    assert (run.layers, run.findings) == ([], [])


@pytest.mark.parametrize("calls", [1, 2])
def test_a_nan_finding_is_written_and_read_once(tmp_path, calls):
    # `nan != nan`, so comparing Findings with `==` saw a NaN finding as new
    # each time: the writer wrote it again and the reader listed it twice.
    nan = Finding("non_finite", "dense", 3, math.nan, "NaN.", "Lower the rate.")
    for _ in range(calls):  # a second writer is a second `fit`
        with DiagnosticsWriter(str(tmp_path)) as writer:
            writer.write_findings([nan])
            writer.write_findings([Finding(**{**nan.to_dict(), "value": math.nan})])
    (found,) = reader.read_run(str(tmp_path)).findings
    assert found.mode == "non_finite" and math.isnan(found.value)
    written = [
        v
        for path in events.event_files(str(tmp_path / "train"))
        for e in events.read_events(path)
        for v in e.summary.value
        if v.tag == "diagnostics/findings"
    ]
    assert len(written) == 1
    # A second writer has nothing new to write, so it opens no file.
    assert len(os.listdir(tmp_path / "train")) == 1


def _flip(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0xFF
    return bytes(out)


# Damaged copies of `_write`'s file, from its bytes and record ends.
DAMAGE = {
    "intact": lambda d, e: d,
    "empty": lambda d, e: b"",
    "short_header": lambda d, e: d[:11],
    "header_only": lambda d, e: d[:12],
    "cut_in_first": lambda d, e: d[: e[0] - 1],
    "cut_after_first": lambda d, e: d[: e[0] + 3],
    "cut_in_second_header": lambda d, e: d[: e[0] + 12],
    "cut_in_last": lambda d, e: d[: e[-1] - 4],
    "length_flipped": lambda d, e: _flip(d, 3),
    "length_crc_flipped": lambda d, e: _flip(d, 10),
    "first_data_flipped": lambda d, e: _flip(d, 20),
    "first_data_crc_flipped": lambda d, e: _flip(d, e[0] - 1),
    "second_length_flipped": lambda d, e: _flip(d, e[0]),
    "third_data_flipped": lambda d, e: _flip(d, e[2] + 20),
    "last_crc_flipped": lambda d, e: _flip(d, e[-1] - 1),
    "zeros_appended": lambda d, e: d + b"\x00" * 20,
    "random": lambda d, e: np.random.default_rng(0).bytes(400),
    "zeros": lambda d, e: b"\x00" * 40,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_check_without_tensorflow_agrees_with_tensorflows_reader(tmp_path, damage):
    # `check_file` checks with TensorFlow's record reader when TensorFlow is
    # loaded and with `check_records` (TensorBoard's CRC32C) when it is not:
    # the same records, offset and reason on every kind of damage.
    pytest.importorskip("tensorflow")
    path = _write(tmp_path)
    data = Path(path).read_bytes()
    Path(path).write_bytes(DAMAGE[damage](data, _record_ends(data)))
    assert events.check_records(path) == events._check_tf(path)


def test_a_header_claiming_more_than_the_file_is_read_without_tensorflow(
    tmp_path,
):
    # The last record's header, with a valid checksum, claims 1e12 bytes:
    # TensorFlow's record reader ends the process on it (no Python error),
    # so `check_file` checks such a file in pure Python (the records before
    # it intact, then a truncated one) and the run is read from a copy of
    # its intact records. In a subprocess with TensorFlow loaded, so a
    # regression cannot take the test run down.
    pytest.importorskip("tensorflow")
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    path = _write(tmp_path)
    data = Path(path).read_bytes()
    ends = _record_ends(data)
    last = ends[-2]  # Where the last record (the second findings table) starts.
    length = struct.pack("<Q", 10**12)
    header = length + struct.pack("<I", masked_crc32c(length))
    Path(path).write_bytes(data[:last] + header + data[last + 12 :])
    script = (
        "import os, sys, tensorflow\n"
        "from keras_actloss.logs import events, reader\n"
        "d = events.check_file(sys.argv[1])\n"
        "print(d.records, d.offset, d.reason)\n"
        "run = reader.read_run(os.path.dirname(os.path.dirname(sys.argv[1])))\n"
        "print(len(run.damaged), run.scalars['grad_norm/dense'], len(run.findings))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, path],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    # The writes before the last: the layers, the 3 recordings, 1 finding.
    assert out.stdout.split("\n")[-3:] == [
        f"{len(ends) - 1} {last} truncated record",
        "1 [(0, 1.0), (2, 3.0), (4, 5.0)] 1",
        "",
    ]
    assert events.check_records(path) == (len(ends) - 1, last, "truncated record")
