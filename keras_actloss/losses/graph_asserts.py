"""Label checks inside TensorFlow graphs: the one module that touches TF's
graph internals for the losses.

`assert_labels` adds a `tf.debugging.Assert` that fails with our message
(the text the eager check raises, the offending values quoted the same way),
ordered before anything that reads the labels. When the assertion fails,
TensorFlow raises `InvalidArgumentError`; the message ends with
`assertion failed: [<our message>]`.

XLA (`jit_compile=True`, Keras's default on GPU) drops assertions and cannot
compile the ops that quote the values, so `in_xla()` tells the caller to
poison the loss with NaN instead (see `keras_actloss.losses.validation`).
"""

from __future__ import annotations

from keras_actloss.tensor_types import Tensor

# At most this many offending values are quoted (as in the eager message).
MAX_QUOTED = 5


def in_xla() -> bool:
    """Whether the graph being traced is compiled with XLA (or unknown)."""
    try:
        from tensorflow.python.framework import ops
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # Internals moved: take the path that works in XLA.
        return True
    return control_flow_util.GraphOrParentsInXlaContext(ops.get_default_graph())


def _quoted(values: Tensor) -> Tensor:
    """`[v1, v2, ...]` of the sorted unique values, as the eager check."""
    import tensorflow as tf

    unique = tf.sort(tf.unique(tf.reshape(values, [-1]))[0])
    text = tf.strings.as_string(unique[:MAX_QUOTED], shortest=True)
    joined = tf.strings.reduce_join(text, separator=", ")
    more = tf.where(tf.size(unique) > MAX_QUOTED, ", ...", "")
    return tf.strings.join(["[", joined, more, "]"])


def assert_labels(y_true: Tensor, ok: Tensor, bad: Tensor, message: str) -> Tensor:
    """Returns `y_true` behind an assertion that `ok` holds.

    Args:
        y_true: The labels (a symbolic tensor in a non-XLA graph).
        ok: Scalar boolean, whether the labels are valid.
        bad: Boolean mask of `y_true`'s shape, the values to quote.
        message: The text up to the quoted values
            (`"Expected ... Received: y_true with values "`).

    Returns:
        `y_true`, computed only after the assertion passed.
    """
    import tensorflow as tf

    def fail():
        text = tf.strings.join([message, _quoted(tf.boolean_mask(y_true, bad))])
        with tf.control_dependencies([tf.debugging.Assert(False, [text])]):
            return tf.identity(ok)

    checked = tf.cond(ok, lambda: ok, fail)
    with tf.control_dependencies([checked]):
        return tf.identity(y_true)
