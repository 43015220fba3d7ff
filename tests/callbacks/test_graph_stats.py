"""Tests for the TensorFlow-side helpers of keras_actloss.callbacks._graph_reads
(the shared statistics are tested in tests/diagnostics/test_step_stats.py, the
shared host functions in test_step_rows.py)."""

import keras
import numpy as np
import tensorflow as tf

from keras_actloss.callbacks._graph_reads import _additive_updates, _read_in


def _updates_of(write):
    """`_additive_updates` for five variables, each written by `write(i, v)`.

    Returns the update tensors' values (None where there is none).
    """
    variables = [
        tf.Variable(np.full((2, 3), float(i + 1), "float32")) for i in range(5)
    ]
    delta = tf.constant(np.arange(6, dtype="float32").reshape(2, 3))

    @tf.function
    def step():
        reads = [tf.convert_to_tensor(v) for v in variables]
        graph = tf.compat.v1.get_default_graph()
        start = len(graph.get_operations())
        for i, v in enumerate(variables):
            write(i, v, delta)
        found = _additive_updates(reads, graph.get_operations()[start:])
        return [tf.zeros([0]) if u is None else u for u in found]

    return [None if u.shape == (0,) else u.numpy() for u in step()]


def test_additive_updates_finds_one_additive_update():
    def write(i, v, delta):
        if i == 0:
            v.assign_sub(delta * 0.5)  # The SGD update.
        elif i == 1:
            v.assign_add(delta)  # SGD with momentum adds the velocity.
        elif i == 2:
            v.assign(v - delta)  # An assign: no update tensor.
        elif i == 3:
            v.assign_sub(delta * 0.25)  # AdamW: weight decay, then the update.
            v.assign_add(delta)
        # Variable 4 is only read.

    found = _updates_of(write)
    delta = np.arange(6, dtype="float32").reshape(2, 3)
    np.testing.assert_array_equal(found[0], delta * 0.5)
    np.testing.assert_array_equal(found[1], delta)
    assert found[2] is None and found[4] is None
    # The signed sum of several additive updates: -0.25 delta + delta.
    np.testing.assert_allclose(found[3], 0.75 * delta)


def test_additive_updates_ignores_updates_it_cannot_see_into():
    def write(i, v, delta):
        if i == 0:  # Inside a cond: the handle goes into the If op.
            tf.cond(tf.reduce_sum(delta) > 0, lambda: v.assign_sub(delta), lambda: v)
        elif i == 1:  # A sparse update.
            v.scatter_sub(tf.IndexedSlices(delta[:1], tf.constant([0])))
        elif i == 2:  # An additive update plus an assign (a constraint).
            v.assign_sub(delta)
            v.assign(tf.clip_by_value(v, -1.0, 1.0))

    assert _updates_of(write)[:3] == [None, None, None]


def test_read_in_finds_the_forward_pass_read_of_a_variable():
    """The weights before the update are the layers' own reads (no graph op
    of ours): this fails when TensorFlow's capture of a variable handle or
    `Tensor.consumers` change, instead of silently adding the reads back."""
    dense = keras.layers.Dense(3)
    dense.build((None, 2))
    unread = keras.Variable(np.ones((2, 2), "float32"))
    written = keras.Variable(np.ones((3,), "float32"))
    found = {}

    @tf.function
    def step(x):
        y = dense(x) + written
        written.assign_add(tf.ones((3,)))  # Its read precedes a write.
        graph = tf.compat.v1.get_default_graph()
        ops = len(graph.get_operations())
        kernel, bias = (_read_in(graph, v) for v in (dense.kernel, dense.bias))
        found["new ops"] = len(graph.get_operations()) - ops
        found["unread"] = _read_in(graph, unread)
        found["written"] = _read_in(graph, written)
        found["types"] = {t.op.type for t in (kernel, bias)}
        return y, kernel, bias

    _, kernel, bias = step(tf.ones((4, 2)))
    assert found == {
        "new ops": 0,
        "unread": None,
        "written": None,
        "types": {"ReadVariableOp"},
    }
    np.testing.assert_array_equal(kernel, dense.kernel.numpy())
    np.testing.assert_array_equal(bias, dense.bias.numpy())
