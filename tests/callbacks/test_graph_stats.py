"""Tests for the TensorFlow-side helpers of keras_actloss.callbacks._graph_stats
(the shared statistics are tested in tests/diagnostics/test_step_stats.py)."""

import numpy as np
import tensorflow as tf

from keras_actloss.callbacks._graph_stats import (
    RING_HEAD,
    _additive_updates,
    fold_rows,
)
from keras_actloss.diagnostics.step_stats import RowLayout


def _ring_rows(steps, squares, scale=1.0, rates=None, losses=None):
    """Ring rows for per-step, per-gradient sums of squares (layout: all
    small, in order)."""
    squares = np.asarray(squares, "float64")
    n = len(steps)
    rates = np.full(n, 0.01) if rates is None else np.asarray(rates, "float64")
    losses = np.full(n, 1.0) if losses is None else np.asarray(losses, "float64")
    head = np.stack([steps, np.full(n, -1.0), np.full(n, scale), rates, losses], axis=1)
    assert head.shape[1] == RING_HEAD
    return np.concatenate([head, squares], axis=1)


def test_fold_rows_judges_every_step():
    layout = RowLayout((0, 1, 2), (False, False, False))
    layers = [0, 0, 1]  # Gradients 0 and 1 belong to layer 0, 2 to layer 1.
    squares = [[1, 0, 3], [9, 16, 0], [np.nan, 1, np.inf], [0, 1, np.inf], [1, 1, 1]]
    rates = [0.1, 0.1, 0.2, 0.2, 0.3]
    # Step 13's only bad column is infinite: non-finite with a NaN loss.
    losses = [1.0, 1.0, 1.0, np.nan, 1.0]
    rows = _ring_rows([10, 11, 12, 13, 14], squares, 2.0, rates, losses)
    out, streak = fold_rows(rows, layout, layers, 0.0)
    # Norms: sqrt(sum of squares) / scale: sqrt(4) / 2, sqrt(25) / 2, ...
    np.testing.assert_allclose(
        [o[1] for o in out], [1.0, 2.5, np.nan, np.inf, 0.866], rtol=1e-3
    )
    assert [o[0] for o in out] == [10, 11, 12, 13, 14]
    assert [o[5] for o in out] == rates
    np.testing.assert_array_equal([o[6] for o in out], losses)
    # Non-finite steps count at once without loss scaling; the layer is that
    # of the first non-finite gradient (gradient 0 -> layer 0, then 2 -> 1).
    assert [o[2:5] for o in out] == [
        (False, False, -1),
        (False, False, -1),
        (True, False, 0),
        (True, False, 1),
        (False, False, -1),
    ]
    assert streak == 0.0


def test_fold_rows_infinite_norm_with_a_finite_loss_is_an_overflow():
    layout = RowLayout((0,), (True,))
    # Norm columns: finite, inf with a finite loss (the norm's square
    # overflowed float32), inf with a NaN loss, NaN with a finite loss.
    rows = _ring_rows(
        range(4), [[3.0], [np.inf], [np.inf], [np.nan]], losses=[1, 2, np.nan, 3]
    )
    out, _ = fold_rows(rows, layout, [0], 0.0)
    assert [o[1] for o in out][:3] == [3.0, np.inf, np.inf]
    assert [o[2] for o in out] == [False, False, True, True]
    # Under loss scaling any infinity is an overflow step to skip.
    out, _ = fold_rows(rows, layout, [0], 0.0, patience=1)
    assert [o[2] for o in out] == [False, True, True, True]


def test_fold_rows_loss_scaling_counts_only_a_streak():
    layout = RowLayout((0,), (True,))
    rows = _ring_rows(range(5), [[3.0], [np.inf], [np.inf], [np.inf], [np.inf]])
    out, streak = fold_rows(rows, layout, [0], 0.0, patience=3)
    # Overflows in a row: the first two are skipped, the third counts.
    assert [o[2:4] for o in out] == [
        (False, False),
        (False, True),
        (False, True),
        (True, False),
        (True, False),
    ]
    assert streak == 4.0
    # A streak carried over from the previous read counts on.
    out, streak = fold_rows(rows[1:2], layout, [0], 2.0, patience=3)
    assert out[0][2:4] == (True, False) and streak == 3.0


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
