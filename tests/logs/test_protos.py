"""The writer's `TensorProto`s against TensorBoard's own builders, and a
run written without TensorBoard's `tensor_util` (and its TensorFlow stub)."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from tensorboard.plugins.text import summary_v2 as text
from tensorboard.util import tensor_util

from keras_actloss.logs import protos


@pytest.mark.parametrize(
    "value",
    [
        "| a | b |\n| - | - |",
        "é, ü and ✓",
        b"\x00\xff raw bytes",
        ["12", "7", b"\x89PNG\r\n"],  # The heatmap image: width, height, PNG.
        [],
        np.array([["layer", "mode"], ["dense", "dead_relu"]]),  # A table.
    ],
)
def test_string_tensor_is_tensorboards(value):
    expected = tensor_util.make_tensor_proto(value, dtype=np.object_)
    tensor = protos.string_tensor(value)
    assert tensor == expected
    decoded = protos.string_array(tensor)
    assert decoded.dtype == object
    np.testing.assert_array_equal(decoded, tensor_util.make_ndarray(expected))


def test_string_array_names_a_tensor_without_its_strings():
    tensor = protos.string_tensor([["a", "b"], ["c", "d"]])
    del tensor.string_val[-1]
    expected = r"of 4 values for shape \[2, 2\]. Received: 3 strings"
    with pytest.raises(ValueError, match=expected):
        protos.string_array(tensor)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12.0).reshape(4, 3) / 7,  # Histogram buckets: [k, 3].
        np.array([[np.nan, -np.inf, 1e308]]),
        np.zeros((0, 3)),
        np.float32([1.5, 2.25]),  # Widened to float64.
    ],
)
def test_float64_tensor_is_tensorboards(array):
    tensor = protos.float64_tensor(array)
    expected = tensor_util.make_tensor_proto(array, dtype=np.float64)
    assert tensor.dtype == expected.dtype
    assert tensor.tensor_shape == expected.tensor_shape
    np.testing.assert_array_equal(
        tensor_util.make_ndarray(tensor), tensor_util.make_ndarray(expected)
    )


def test_text_summary_is_text_pb():
    table = "| layer | mode |\n| --- | --- |\n| dense | dead_relu |"
    assert protos.text_summary("diagnostics/findings", table) == text.text_pb(
        "diagnostics/findings", table
    )


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None,
    reason="without TensorFlow, TensorBoard's own record writer imports its "
    "summary package, and with it tensor_util",
)
def test_a_run_is_written_without_tensor_util(tmp_path):
    """Writing every kind of summary (the round-trip run, heatmap included)
    next to TensorFlow, as in a `fit`, imports neither `tensor_util` nor
    TensorBoard's TensorFlow stub (nor `boto3` through it)."""
    tests = os.path.dirname(os.path.abspath(__file__))
    source = f"""
import json, sys
import tensorflow
sys.path.insert(0, {tests!r})
from log_run import write_run
write_run({str(tmp_path)!r}, heatmap=True)
print(json.dumps(sorted(m for m in sys.modules if m.startswith((
    "tensorboard.util.tensor_util", "tensorboard.compat.tensorflow_stub", "boto3")))))
"""
    done = subprocess.run(
        [sys.executable, "-c", source],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
