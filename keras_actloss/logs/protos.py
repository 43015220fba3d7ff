"""`TensorProto`s of the summaries `DiagnosticsWriter` writes.

Built from TensorBoard's protobuf classes alone: its `tensor_util` (and the
text plugin's `text_pb`, which uses it) imports TensorBoard's TensorFlow
stub, and with it `boto3` where that is installed, at the start of the
first `fit`. The readers decode these with `tensor_util.make_ndarray`, as
they decode TensorFlow's own summaries.
"""

from __future__ import annotations

import math

import numpy as np


def string_tensor(values):
    """A `DT_STRING` tensor of a str or bytes (a scalar), or of a sequence
    or array of them (its shape); str is UTF-8 encoded."""
    from tensorboard.compat.proto import tensor_pb2, types_pb2

    if isinstance(values, (str, bytes)):
        shape, items = (), [values]
    else:
        array = np.asarray(values, dtype=object)
        shape, items = array.shape, array.ravel().tolist()
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING)
    tensor.tensor_shape.SetInParent()
    for size in shape:
        tensor.tensor_shape.dim.add(size=size)
    tensor.string_val.extend(v.encode() if isinstance(v, str) else v for v in items)
    return tensor


def string_array(tensor) -> np.ndarray:
    """The `bytes` of a `DT_STRING` tensor, in its shape (object array).

    Raises:
        ValueError: If `tensor` holds no strings for its shape.
    """
    shape = tuple(d.size for d in tensor.tensor_shape.dim)
    values = list(tensor.string_val)
    if len(values) != math.prod(shape):
        raise ValueError(
            f"Expected a string tensor of {math.prod(shape)} values for shape "
            f"{list(shape)}. Received: {len(values)} strings (dtype {tensor.dtype})"
        )
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out.reshape(shape)


def float64_tensor(array) -> object:
    """A `DT_DOUBLE` tensor of `array`'s shape and values."""
    from tensorboard.compat.proto import tensor_pb2, types_pb2

    array = np.ascontiguousarray(array, "<f8")
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_DOUBLE)
    tensor.tensor_shape.SetInParent()
    for size in array.shape:
        tensor.tensor_shape.dim.add(size=size)
    tensor.tensor_content = array.tobytes()
    return tensor


def text_summary(tag: str, text: str, description: str | None = None):
    """A `Summary` of one text-plugin value, as `text_pb` writes it."""
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.text import metadata

    summary = summary_pb2.Summary()
    summary.value.add(
        tag=tag,
        metadata=metadata.create_summary_metadata(
            display_name=None, description=description
        ),
        tensor=string_tensor(text),
    )
    return summary
