"""The logs without TensorFlow: write, read, report and the dashboard.

Two kinds of test:

- In every environment, the `no_tensorflow` fixture (conftest.py) makes
  `import tensorflow` fail for the test (as where it is not installed), so
  the writer and the readers must take their TensorFlow-free paths; where
  TensorFlow is installed, the files are also compared byte for byte with
  what TensorFlow's record writer makes.
- In an environment without TensorFlow (`.ci/run`'s JAX stage: `jax`,
  `keras`, `tensorboard` and this package with `--no-deps`,
  `KERAS_BACKEND=jax`), the same round trip runs for real and must leave
  `tensorflow` out of `sys.modules`. Elsewhere those tests
  (`without_tensorflow`) skip.

The run is `test_log_roundtrip.write_run`'s, with its heatmap image.
"""

import importlib.util
import json
import os
import struct
import subprocess
import sys
import zlib

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing import data_provider
from tensorboard.backend.event_processing import plugin_event_multiplexer as pem
from tensorboard.plugins import base_plugin
from tensorboard.util import tensor_util
from test_log_roundtrip import EXPECTED_TAGS, FINDINGS, LAYERS, accumulator, write_run
from werkzeug import test as werkzeug_test

from keras_actloss.logs import events, reader, tags
from keras_actloss.logs.heatmap import render_heatmap
from keras_actloss.logs.writer import EventFile
from keras_actloss.tensorboard_plugin import plugin as plugin_lib

HEATMAP = [[0, 1.25, 2.5], [2, 2, 2]]  # `write_run(heatmap=True)`'s norms.

# `keras-actloss report` on `write_run`'s run: the per-layer table (first,
# last, min and max of `grad_norm/<layer>` = 0.25 * step at steps 0, 5, 10;
# the last zero/dead/saturated fractions of `stats_at(10)`), then the
# findings in step order (the one without a step first), exit code 1 for the
# two of severity "failure".
REPORT = """\
== run: run
layer      grad first  grad last  grad min  grad max  zero  dead   saturated
---------  ----------  ---------  --------  --------  ----  -----  ---------
dense      0           2.5        0         2.5       0.5   0.125  -
outer/act  -           -          -         -         -     -      0.625
dense_1    2           2          2         2         -     -      -

- [warning] softmax_with_binary_crossentropy in dense_1, before training
    Pre.
    Fix: Fix.
- [failure] dead_relu in dense, step 10 (value 0.8125)
    Dead `units` | pipes, "quotes".
    Fix: Use Leaky ReLU.
- [failure] exploding_gradients in model, step 10 (value 1.23e-05)
    Boom.
    Fix: Clip.
"""


def decode_png(png: bytes) -> np.ndarray:
    """Pixels of an 8-bit RGB PNG with unfiltered rows, read by the PNG
    specification's chunk layout (not by the encoder's code)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = {}, 8
    while pos < len(png):
        (size,) = struct.unpack(">I", png[pos : pos + 4])
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + size]
        (crc,) = struct.unpack(">I", png[pos + 8 + size : pos + 12 + size])
        assert zlib.crc32(kind + data) == crc, kind
        chunks[kind] = chunks.get(kind, b"") + data
        pos += 12 + size
    width, height, depth, colour, *_ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (depth, colour) == (8, 2)  # 8-bit truecolour
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8)
    rows = rows.reshape(height, 1 + 3 * width)
    assert not rows[:, 0].any()  # filter type 0 on every row
    return rows[:, 1:].reshape(height, width, 3)


def check_round_trip(log_dir: str) -> None:
    """Writes `write_run`'s run with its heatmap and reads it back three ways."""
    run_dir = os.path.join(log_dir, "run")
    write_run(run_dir, heatmap=True)
    # TensorBoard's own reader: the exact tags, the image decodes.
    acc = accumulator(run_dir)
    assert set(acc.Tags()["tensors"]) == EXPECTED_TAGS | {tags.HEATMAP_TAG}
    (event,) = acc.Tensors(tags.HEATMAP_TAG)
    width, height, png = tensor_util.make_ndarray(event.tensor_proto)
    expected, _ = render_heatmap(HEATMAP)
    assert (int(width), int(height)) == (expected.shape[1], expected.shape[0])
    np.testing.assert_array_equal(decode_png(png), expected)
    # Our reader.
    run = reader.read_run(run_dir)
    assert (run.layers, run.findings) == (LAYERS, [FINDINGS[2], *FINDINGS[:2]])
    assert run.series("grad_norm", "dense") == [(0, 0.0), (5, 1.25), (10, 2.5)]
    assert run.has_heatmap and run.has_data and run.damaged == []
    (path,) = events.event_files(run.path)
    assert events.check_file(path) is None
    # The Gradient Health dashboard over TensorBoard's data provider.
    health = dashboard_health(log_dir, "run/train")
    assert [row["layer"] for row in health["layers"]] == [i.name for i in LAYERS]
    assert [f["mode"] for f in health["findings"]] == [f.mode for f in run.findings]


def dashboard_health(log_dir: str, run: str) -> dict:
    """The plugin's `/health` answer for `run`, as the dashboard gets it."""
    multiplexer = pem.EventMultiplexer(tensor_size_guidance={"scalars": 0, "text": 0})
    multiplexer.AddRunsFromDirectory(log_dir)
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, log_dir)
    context = base_plugin.TBContext(logdir=log_dir, data_provider=provider)
    plugin = plugin_lib.GradientHealthLoader().load(context)
    app = plugin.get_plugin_apps()["/health"]
    response = werkzeug_test.Client(app).open("/health", query_string=f"run={run}")
    assert response.status_code == 200
    return json.loads(response.get_data(as_text=True))


def report(log_dir: str) -> subprocess.CompletedProcess:
    """`keras-actloss report log_dir` in a new process, as a user runs it."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, "-m", "keras_actloss", "report", log_dir],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


# ---------------------------------------------------------- every environment
def test_round_trip_with_import_tensorflow_failing(tmp_path, no_tensorflow):
    assert events.loaded_tensorflow() is None
    check_round_trip(str(tmp_path))


def test_report_exit_code_and_output(tmp_path, no_tensorflow):
    write_run(str(tmp_path / "run"), heatmap=True)
    result = report(str(tmp_path))
    assert result.returncode == 1, result.stderr
    assert result.stdout == REPORT
    assert "keras-actloss report:" not in result.stderr  # no warning, no error


@pytest.fixture(params=["google_crc32c", "tensorboard"])
def crc_implementation(request, monkeypatch):
    """`events.masked_crc32c` on each CRC-32C: `google_crc32c`'s C one
    (skipped where it is not installed) and TensorBoard's pure-Python one
    (as where `google_crc32c` is not installed: its import fails)."""
    if request.param == "google_crc32c":
        crc = pytest.importorskip("google_crc32c")
        if crc.implementation != "c":
            pytest.skip("google_crc32c without its C extension")
    else:
        monkeypatch.setitem(sys.modules, "google_crc32c", None)
    events._crc32c.cache_clear()
    yield request.param
    events._crc32c.cache_clear()


def test_masked_crc32c_of_the_check_string(crc_implementation):
    from tensorboard.compat.tensorflow_stub import pywrap_tensorflow

    implementation = events._crc32c()
    assert (implementation is pywrap_tensorflow.crc32c) == (
        crc_implementation == "tensorboard"
    )
    # CRC-32C's check value: 0xE3069283 for b"123456789" (RFC 3720, B.4's
    # polynomial; the catalogue's CRC-32/ISCSI). Masked as TensorFlow's
    # crc32c::Mask: rotated right by 15 bits, plus 0xA282EAD8 mod 2**32.
    assert implementation(b"123456789") == 0xE3069283
    rotated = (0xE3069283 >> 15) | ((0xE3069283 << 17) & 0xFFFFFFFF)
    assert events.masked_crc32c(b"123456789") == (rotated + 0xA282EAD8) % 2**32
    # And TensorBoard's own masked CRC on empty, short and long data.
    for data in (b"", b"\x00", bytes(range(256)) * 41):
        assert events.masked_crc32c(data) == pywrap_tensorflow.masked_crc32c(data)


def test_record_file_bytes_equal_tensorboards(tmp_path, crc_implementation):
    # TensorBoard's own record writer is the reference for the framing.
    from tensorboard.summary.writer.record_writer import RecordWriter

    records = [b"", b"\x0a\x03\x0a\x01a", bytes(range(256)) * 40]
    ours = events.RecordFile(str(tmp_path / "ours"))
    with open(tmp_path / "tensorboard", "wb") as f:
        theirs = RecordWriter(f)
        for record in records:
            ours.write(record)
            theirs.write(record)
        ours.close()
    assert (tmp_path / "ours").read_bytes() == (tmp_path / "tensorboard").read_bytes()
    assert events.check_records(str(tmp_path / "ours")) == (
        3,
        sum(len(r) + 16 for r in records),
        None,
    )


def test_event_file_bytes_equal_tensorflows(tmp_path, request, crc_implementation):
    # The same events through TensorFlow's record writer and through ours
    # (`events.RecordFile`): the same bytes (framing and masked CRC32C).
    tf = pytest.importorskip("tensorflow")
    summaries = [b"", b"\x0a\x03\x0a\x01a", bytes(range(256)) * 40]

    def written(directory):
        os.makedirs(directory)
        file = EventFile(directory)
        for step, summary in enumerate(summaries):
            file.write_serialized(summary, step * 1000, wall_time=1795462000.5)
        file.close()
        with open(file.path, "rb") as f:
            return f.read()

    assert events.loaded_tensorflow() is tf
    with_tf = written(str(tmp_path / "tf"))
    request.getfixturevalue("no_tensorflow")
    assert events.loaded_tensorflow() is None
    assert written(str(tmp_path / "tensorboard")) == with_tf


# ------------------------------------------------ environment without TensorFlow
@pytest.mark.without_tensorflow
def test_environment_has_no_tensorflow():
    assert importlib.util.find_spec("tensorflow") is None
    assert keras.backend.backend() != "tensorflow"
    assert "tensorflow" not in sys.modules


@pytest.mark.without_tensorflow
def test_round_trip_imports_no_tensorflow(tmp_path):
    check_round_trip(str(tmp_path))
    result = report(str(tmp_path))
    assert (result.returncode, result.stdout, result.stderr) == (1, REPORT, "")
    assert "tensorflow" not in sys.modules
    assert events.loaded_tensorflow() is None
