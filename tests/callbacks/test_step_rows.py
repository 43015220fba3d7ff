"""Tests for the host functions of keras_actloss.callbacks._step_rows, shared
by the TensorFlow and JAX hooks."""

import numpy as np
import pytest

from keras_actloss.callbacks._step_rows import (
    RING_HEAD,
    FlowStamps,
    call_rates,
    fold_rows,
    quiet_steps,
    rate_columns,
    within_bounds,
)
from keras_actloss.diagnostics.step_stats import RowLayout


def _ring_rows(steps, squares, scale=1.0, rates=None, losses=None, silent=None):
    """Ring rows for per-step, per-gradient sums of squares (layout: all
    small, in order)."""
    squares = np.asarray(squares, "float64")
    n = len(steps)
    rates = np.full(n, 0.01) if rates is None else np.asarray(rates, "float64")
    losses = np.full(n, 1.0) if losses is None else np.asarray(losses, "float64")
    silent = np.zeros(n) if silent is None else np.asarray(silent, "float64")
    head = np.stack(
        [steps, np.full(n, -1.0), np.full(n, scale), rates, losses, silent], axis=1
    )
    assert head.shape[1] == RING_HEAD
    return np.concatenate([head, squares], axis=1)


def test_fold_rows_judges_every_step():
    layout = RowLayout((0, 1, 2), (False, False, False))
    layers = [0, 0, 1]  # Gradients 0 and 1 belong to layer 0, 2 to layer 1.
    squares = [[1, 0, 3], [9, 16, 0], [np.nan, 1, np.inf], [0, 1, np.inf], [1, 1, 1]]
    rates = [0.1, 0.1, 0.2, 0.2, 0.3]
    # Step 13's only bad column is infinite: non-finite with a NaN loss.
    losses = [1.0, 1.0, 1.0, np.nan, 1.0]
    rows = _ring_rows([10, 11, 12, 13, 14], squares, 2.0, rates, losses, range(5))
    out, streak = fold_rows(rows, layout, layers, 0.0)
    # Norms: sqrt(sum of squares) / scale: sqrt(4) / 2, sqrt(25) / 2, ...
    np.testing.assert_allclose(
        [o[1] for o in out], [1.0, 2.5, np.nan, np.inf, 0.866], rtol=1e-3
    )
    assert [o[0] for o in out] == [10, 11, 12, 13, 14]
    assert [o[5] for o in out] == rates
    np.testing.assert_array_equal([o[6] for o in out], losses)
    # Gradients entirely zero per step (a NaN or infinity is not zero).
    assert [o[7] for o in out] == [1, 1, 0, 1, 0]
    assert [o[8] for o in out] == [0, 1, 2, 3, 4]  # Silent units, as written.
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


def test_rows_of_several_optimizers_end_with_each_ones_rate():
    # Two hooked optimizers: each row ends with two rates, each
    # optimizer's first `apply` in call order (the discriminator's twice
    # in a WGAN's step: its first), the last repeated for one not applied.
    d, g = object(), object()
    assert rate_columns([d]) == 0 and rate_columns([d, g]) == 2
    assert call_rates([(d, 0.1), (d, 0.3), (g, 0.05)], 2) == [0.1, 0.05]
    assert call_rates([(d, 0.1)], 2) == [0.1, 0.1]
    assert call_rates([(d, 0.1)], 0) == []
    layout = RowLayout((0,), (True,))
    rows = _ring_rows([0, 1], [[1.0], [4.0]], rates=[0.1, 0.1])
    rows = np.concatenate([rows, [[0.1, 0.05], [0.1, 50.0]]], axis=1)
    out, _ = fold_rows(rows, layout, [0], 0.0, rates=2)
    assert [o[9] for o in out] == [(0.1, 0.05), (0.1, 50.0)]
    assert [q[6] for q in quiet_steps(rows, layout, rates=2)] == [
        (0.1, 0.05),
        (0.1, 50.0),
    ]
    # One optimizer: no rates beyond the row's own.
    out, _ = fold_rows(rows[:, :-2], layout, [0], 0.0)
    assert [o[9] for o in out] == [(), ()]
    assert [q[6] for q in quiet_steps(rows[:, :-2], layout)] == [(), ()]


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


def test_a_loss_scale_of_zero_gives_nan_norms():
    # A loss scale halved at every overflow until it underflowed to 0: the
    # norms are NaN (0 / 0 here), not a division error.
    layout = RowLayout((0,), (True,))
    rows = _ring_rows([7, 8], [[0.0], [4.0]], scale=0.0)
    out, _ = fold_rows(rows, layout, [0], 0.0, patience=3)
    assert np.isnan([o[1] for o in out]).all()
    assert np.isnan([q[1] for q in quiet_steps(rows, layout)]).all()
    # At a scale of 2 the same rows' norms (a norm column) are 0 and 4 / 2.
    rows = _ring_rows([7, 8], [[0.0], [4.0]], scale=2.0)
    assert [q[1] for q in quiet_steps(rows, layout)] == [0.0, 2.0]


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


def test_fold_rows_loss_scaling_before_any_update_counts_from_a_scale_of_1():
    layout = RowLayout((0,), (True,))
    # Overflows from the first step (the optimizer's step stays 0) while
    # the scale halves from 2^15: the 10th (patience) at scale 2^6 is the
    # optimizer still finding its scale (probed: a healthy regression
    # model applied its update at the 11th batch, at 2^5); it counts from
    # a scale of 1. Past step 0 the 10th counts whatever the scale.
    scales = [2.0 ** (15 - k) for k in range(16)]
    rows = np.concatenate(
        [_ring_rows([0], [[np.inf]], scale=s) for s in scales], axis=0
    )
    out, streak = fold_rows(rows, layout, [0], 0.0, patience=10)
    assert [o[2] for o in out] == [False] * 15 + [True]
    assert streak == 16.0
    rows[:, 0] = 7.0
    out, _ = fold_rows(rows, layout, [0], 0.0, patience=10)
    assert [o[2] for o in out] == [False] * 9 + [True] * 7


def test_fold_rows_loss_scaling_counts_a_non_finite_loss_at_once():
    layout = RowLayout((0,), (True,))
    # Step 1 overflowed (finite loss), step 2's loss is NaN, step 3's loss
    # unknown would be NaN too.
    rows = _ring_rows(
        range(4), [[3.0], [np.inf], [np.nan], [3.0]], losses=[1, 2, np.nan, 1]
    )
    out, streak = fold_rows(rows, layout, [0], 0.0, patience=10, loss_known=True)
    # The loss scale only scales the backward pass: a NaN loss is no
    # overflow, and counts though it is only the 2nd bad step in a row.
    assert [o[2:4] for o in out] == [
        (False, False),
        (False, True),
        (True, False),
        (False, False),
    ]
    assert streak == 0.0
    # With the loss unknown (its column NaN), only the streak counts.
    out, _ = fold_rows(rows, layout, [0], 0.0, patience=10)
    assert [o[2:4] for o in out][2] == (False, True)


def test_within_bounds_checks_every_alarm_value():
    # norm^2, rate, zero gradient tensors, silent units, loss
    bounds = (1.0, 4.0, 0.01, 0.1, 2.0, 10.0, 3.0)
    assert within_bounds(2.0, 0.05, 2.0, 10.0, 3.0, bounds)
    assert not within_bounds(0.5, 0.05, 0.0, 0.0, 1.0, bounds)  # Norm fell.
    assert not within_bounds(5.0, 0.05, 0.0, 0.0, 1.0, bounds)  # Norm rose.
    assert not within_bounds(2.0, 0.2, 0.0, 0.0, 1.0, bounds)  # Rate jumped.
    assert not within_bounds(2.0, 0.05, 3.0, 0.0, 1.0, bounds)  # A gradient fell to 0.
    assert not within_bounds(2.0, 0.05, 0.0, 11.0, 1.0, bounds)  # Units fell silent.
    assert not within_bounds(2.0, 0.05, 0.0, 0.0, 3.5, bounds)  # The loss jumped.
    assert not within_bounds(2.0, 0.05, 0.0, 0.0, float("nan"), bounds)
    assert not within_bounds(float("nan"), 0.05, 0.0, 0.0, 1.0, bounds)
    assert not within_bounds(2.0, 0.05, 0.0, 0.0, 1.0, None)  # Not set yet.


def test_flow_stamps_last_step_share_and_history():
    # Two layers (indices 0 and 3) of 2 and 1 units; the flow columns start
    # after 2 gradient norms. Steps 10-13: unit a on every step, unit b on
    # step 11 only, unit c never.
    flow = [[1, 0, 0], [1, 1, 0], [1, 0, 0], [1, 0, 0]]
    rows = np.concatenate(
        [_ring_rows([10, 11, 12, 13], np.ones((4, 2))), np.asarray(flow, float)], 1
    )
    stamps = FlowStamps(((0, 2), (3, 1)), RING_HEAD + 2)
    assert len(stamps) == 3
    stamps.note(rows[:2])
    stamps.note(rows[2:])
    last, share, history = stamps.by_layer()[0]
    assert last == [13.0, 11.0] and history == [4.0, 2.0]
    # The moving average with weight k = 1 - 1/64 per step, divided by the
    # sum of the weights (1 - k^n): a on every step, 1; b's on step 11 (the
    # 2nd of 4), as of that step: (1 - k) / (1 - k^2) = 1 / (1 + k).
    k = 1 - 1 / FlowStamps.HORIZON
    assert share == pytest.approx([1.0, 1 / (1 + k)], rel=1e-12)
    assert stamps.by_layer()[3] == ([-1.0], [0.0], [0.0])
    # Rows without the flow's columns (another layout) are left out.
    stamps.note(rows[:, : RING_HEAD + 2])
    assert stamps.by_layer()[0][0] == [13.0, 11.0]
