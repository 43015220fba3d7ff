"""Tests for the graph-level helpers of keras_actloss.callbacks._graph_stats."""

import numpy as np
import pytest
import tensorflow as tf

from keras_actloss.callbacks._graph_stats import (
    _DOT_MIN_ELEMENTS,
    _single_updates,
    _sums_of_squares,
)

# One shape below the matrix-product threshold (tf.nn.l2_loss), two above.
SHAPES = [(3, 4), (_DOT_MIN_ELEMENTS,), (300, 70)]


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_sums_of_squares_match_numpy(rng, dtype):
    xs = [rng.normal(size=shape).astype(dtype) for shape in SHAPES]
    expected = [np.sum(x.astype("float64") ** 2) for x in xs]
    rtol = 1e-3 if dtype == "float16" else 1e-5
    eager = _sums_of_squares([tf.constant(x) for x in xs])
    traced = tf.function(_sums_of_squares)([tf.constant(x) for x in xs])
    assert eager.dtype == tf.float32 and eager.shape == (len(SHAPES),)
    np.testing.assert_allclose(eager.numpy(), expected, rtol=rtol)
    np.testing.assert_allclose(traced.numpy(), expected, rtol=rtol)
    # Only large tensors (no doubled halves), and only a small one.
    large, small = _sums_of_squares(xs[1:]), _sums_of_squares(xs[:1])
    np.testing.assert_allclose(large.numpy(), expected[1:], rtol=rtol)
    np.testing.assert_allclose(small.numpy(), expected[:1], rtol=rtol)
    assert _sums_of_squares([]).shape == (0,)


def test_sums_of_squares_unknown_shape(rng):
    x = rng.normal(size=(50, 100)).astype("float32")
    spec = tf.TensorSpec([None, None], "float32")
    traced = tf.function(lambda t: _sums_of_squares([t]), input_signature=[spec])
    np.testing.assert_allclose(
        traced(x).numpy(), [np.sum(x.astype("float64") ** 2)], rtol=1e-5
    )


@pytest.mark.parametrize("shape", SHAPES)
def test_sums_of_squares_propagate_non_finite(rng, shape):
    x = rng.normal(size=shape).astype("float32")
    flat = x.reshape(-1)
    flat[1] = np.inf
    assert _sums_of_squares([tf.constant(x)]).numpy()[0] == np.inf
    flat[2] = np.nan
    assert np.isnan(_sums_of_squares([tf.constant(x)]).numpy()[0])


def _updates_of(write):
    """`_single_updates` for five variables, each written by `write(i, v)`.

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
        found = _single_updates(reads, graph.get_operations()[start:])
        return [tf.zeros([0]) if u is None else u for u in found]

    return [None if u.shape == (0,) else u.numpy() for u in step()]


def test_single_updates_finds_one_additive_update():
    def write(i, v, delta):
        if i == 0:
            v.assign_sub(delta * 0.5)  # The SGD update.
        elif i == 1:
            v.assign_add(delta)  # SGD with momentum adds the velocity.
        elif i == 2:
            v.assign(v - delta)  # An assign: no update tensor.
        elif i == 3:
            v.assign_sub(delta)
            v.assign_sub(delta)  # Two updates (e.g. weight decay).
        # Variable 4 is only read.

    found = _updates_of(write)
    delta = np.arange(6, dtype="float32").reshape(2, 3)
    np.testing.assert_array_equal(found[0], delta * 0.5)
    np.testing.assert_array_equal(found[1], delta)
    assert found[2:] == [None, None, None]


def test_single_updates_ignores_updates_it_cannot_see_into():
    def write(i, v, delta):
        if i == 0:  # Inside a cond: the handle goes into the If op.
            tf.cond(tf.reduce_sum(delta) > 0, lambda: v.assign_sub(delta), lambda: v)
        elif i == 1:  # A sparse update.
            v.scatter_sub(tf.IndexedSlices(delta[:1], tf.constant([0])))
        elif i == 2:  # An additive update plus an assign (a constraint).
            v.assign_sub(delta)
            v.assign(tf.clip_by_value(v, -1.0, 1.0))

    assert _updates_of(write)[:3] == [None, None, None]
