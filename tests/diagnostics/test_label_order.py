"""The `unshuffled_data` warning: a classifier's batches in label order."""

import math

import numpy as np
import pytest

from keras_actloss import findings as F
from keras_actloss.diagnostics.label_order import (
    _SHUFFLE_FIX,
    LabelOrder,
    ValueOrder,
    homogeneity_z,
    narrow_share,
)
from keras_actloss.diagnostics.records import (
    LayerInfo,
    LayerStats,
    SentinelEvent,
    StepStats,
)
from keras_actloss.diagnostics.rules import HealthRules


def wilson_hilferty(chi2, df):
    """The standard normal deviate of a chi-square statistic by the
    Wilson-Hilferty approximation: ((chi2/df)^(1/3) - (1 - 2/(9 df))) /
    sqrt(2/(9 df))."""
    return ((chi2 / df) ** (1 / 3) - (1 - 2 / (9 * df))) / math.sqrt(2 / (9 * df))


@pytest.mark.parametrize(
    "table, chi2, df",
    [
        # Rows of 30, columns of 30: every expected count 15, each cell 5
        # off it: 4 * 25 / 15.
        ([[10, 20], [20, 10]], 4 * 25 / 15, 1),
        # Pure batches of 32 of two classes, 64 of each: every cell 16 off
        # its expected 16, 8 cells: 8 * 256 / 16 = 128 (= the 128 labels).
        ([[32, 0], [0, 32], [32, 0], [0, 32]], 128.0, 3),
        # A class never seen is left out: as the table without it.
        ([[10, 0, 20], [20, 0, 10]], 4 * 25 / 15, 1),
    ],
)
def test_homogeneity_z(table, chi2, df):
    assert homogeneity_z(table) == pytest.approx(wilson_hilferty(chi2, df))


def test_homogeneity_z_of_identical_batches_is_negative():
    # chi2 = 0, df = 1: (0 - (1 - 2/9)) / sqrt(2/9) = -1.65.
    assert homogeneity_z([[8, 8], [8, 8]]) == pytest.approx(wilson_hilferty(0, 1))
    assert homogeneity_z([[8, 8], [8, 8]]) == pytest.approx(-1.650, abs=1e-3)


@pytest.mark.parametrize("table", [[[16, 16]], [[32], [32]], [[0, 0], [5, 5]]])
def test_no_homogeneity_z_for_one_batch_or_one_class(table):
    assert homogeneity_z(table) is None


def sorted_batches(sizes, rows=32):
    """The classes of consecutive batches of `rows` samples of a dataset
    sorted by class, `sizes[c]` samples of class c."""
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return [labels[i : i + rows] for i in range(0, len(labels), rows)]


def test_sorted_batches_are_told_once_two_classes_came():
    # Class 0 has 100 samples: batches 0-2 hold it alone (one class,
    # nothing to tell), batch 3 holds 4 of it and 28 of class 1 (88%, not
    # pure): 3 pure batches of 4 (`_PURE_SHARE`), two classes.
    order = LabelOrder()
    batches = sorted_batches([100, 300])
    for step in range(3):
        order.add(step, batches[step])
        assert order.ordered() is None
    order.add(3, batches[3])
    first, count, classes, z = order.ordered()
    assert (first, count, classes) == (0, 4, 2)
    # Rows 32, 32, 32 and [4, 28]; columns 100 and 28 of 128.
    table = np.array([[32, 0], [32, 0], [32, 0], [4, 28]])
    expected = np.outer(table.sum(1), table.sum(0)) / table.sum()
    chi2 = ((table - expected) ** 2 / expected).sum()
    assert z == pytest.approx(wilson_hilferty(chi2, 3))
    assert z > 6


def test_fewer_than_four_batches_are_not_judged():
    order = LabelOrder()
    for step, classes in enumerate(([0] * 32, [1] * 32, [0] * 32)):
        order.add(step, classes)
    assert order.ordered() is None


def test_shuffled_batches_mostly_of_one_class_are_not_told():
    # 95% and 5%: most batches of 32 are 90% one class or more (pure), but
    # their classes are independent of the batch.
    rng = np.random.default_rng(0)
    order = LabelOrder()
    for step in range(200):
        order.add(step, (rng.random(32) < 0.05).astype(int))
        assert order.ordered() is None


def test_a_stream_of_mixed_batches_is_not_told():
    # A new task's batches, each of its 4 classes shuffled.
    rng = np.random.default_rng(1)
    order = LabelOrder()
    for step in range(64):
        order.add(step, rng.integers(0, 4, 32) + (4 if step >= 32 else 0))
        assert order.ordered() is None


def test_small_batches_are_not_kept():
    # A batch of 1 holds one class whatever the order.
    order = LabelOrder()
    for step in range(40):
        order.add(step, [step // 20] * 7)
    assert order.ordered() is None


def recording(step, classes, activity=None, loss=1.0):
    """A recording of `mlp` at `step` with these label classes (or None),
    dense_0's 4 units' activity (`activity`, default all active)."""
    layers = [
        LayerStats(
            "dense_0",
            grad_rms=1e-2,
            grad_max=4e-2,
            unit_activity=activity or [9, 9, 9, 9],
        ),
        LayerStats("dense_1", grad_rms=1.8e-2, grad_max=7e-2),
    ]
    stats = StepStats(step=step, global_norm=1.0, loss=loss, layers=layers)
    stats.batch_size = 32
    stats.label_classes = None if classes is None else np.asarray(classes)
    return stats


def mlp():
    return [
        LayerInfo("dense_0", "Dense", "relu", True, 0),
        LayerInfo("dense_1", "Dense", "softmax", True, 1),
    ]


def test_rules_tell_unshuffled_data_as_a_warning():
    rules = HealthRules(mlp())
    batches = sorted_batches([160, 160])
    found = []
    for step in range(10):
        found += [(f, step) for f in rules.observe(recording(step, batches[step]))]
    ((finding, at),) = found
    # Steps 0-4 of class 0, 5-9 of class 1: two classes from step 5.
    assert (finding.mode, finding.layer, finding.step, at) == (
        F.UNSHUFFLED_DATA,
        None,
        0,
        5,
    )
    assert finding.severity == F.WARNING
    assert finding.fix == _SHUFFLE_FIX
    assert finding.message == (
        "The batches come in label order, not shuffled: most of the last 6 "
        "recorded batches (steps 0-5) hold one class each, 2 classes over "
        f"them, {finding.value:.3g} standard deviations from what batches of "
        "a shuffled dataset hold: the model fits one class after another and "
        "forgets the others, and each batch's loss and accuracy are those of "
        "its own class."
    )
    # 5 batches [32, 0] and one [0, 32]: each class in batches of its own,
    # for which chi2 is the count of labels (here 192).
    table = np.array([[32, 0]] * 5 + [[0, 32]])
    expected = np.outer(table.sum(1), table.sum(0)) / table.sum()
    chi2 = ((table - expected) ** 2 / expected).sum()
    assert chi2 == pytest.approx(192.0)
    assert finding.value == pytest.approx(wilson_hilferty(chi2, 5))


def test_units_silent_on_the_batches_of_sorted_data_are_a_warning():
    # From step 100 (past the first steps' settling), classes sorted in
    # runs of 8 batches; 3 of dense_0's 4 units inactive from step 108 on:
    # over 128 samples (4 recordings) and 5 steps (`patience_steps`) at
    # step 112, told as a warning naming the order.
    rules = HealthRules(mlp())
    found = []
    for step in range(100, 113):
        classes = [(step - 100) // 8] * 32
        activity = [0, 0, 0, 9] if step >= 108 else None
        found += rules.observe(recording(step, classes, activity))
    assert [(f.mode, f.layer, f.step) for f in found] == [
        (F.UNSHUFFLED_DATA, None, 100),
        (F.DEAD_RELU, "dense_0", 108),
    ]
    dead = found[1]
    assert dead.severity == F.WARNING
    assert dead.message == (
        "75% of the units of layer 'dense_0' output zero for every one of the "
        "128 samples of the last 4 recorded batches (steps 109-112): the "
        "batches come in the data's order (`unshuffled_data`), so these units "
        "may be silent only on the samples of these batches; units silent on "
        "all of the data are dead and get no gradient."
    )
    assert dead.fix.startswith(_SHUFFLE_FIX + " If they stay silent: use Leaky")


def test_narrow_share():
    # Column 0 sorted over 4 batches of 0-7, 8-15, ...: within each the
    # variance of 8 consecutive integers, (8^2 - 1) / 12 = 5.25; over all
    # 32, (32^2 - 1) / 12 = 85.25. Column 1 the same 8 values in each
    # batch: 1 of it. Column 2 constant: left out.
    batches = [
        np.stack([np.arange(8 * b, 8 * b + 8), np.arange(8), np.ones(8)], axis=1)
        for b in range(4)
    ]
    share, column = narrow_share(batches)
    assert column == 0
    assert share == pytest.approx(5.25 / 85.25)


@pytest.mark.parametrize("batches", [[np.ones((8, 2))], [np.ones((8, 2))] * 3])
def test_no_narrow_share(batches):
    # One batch; or every column alike in every row.
    assert narrow_share(batches) is None


def test_sorted_features_are_told_at_the_fourth_batch():
    # x sorted over 4 batches of 32: each a slice of a quarter of the
    # range, spreading 1/16 of the variance over the 4 together.
    x = np.linspace(-3, 3, 128)[:, None]
    order = ValueOrder()
    for step in range(3):
        order.add(step, x[32 * step : 32 * step + 32])
        assert order.ordered() is None
    order.add(3, x[96:])
    first, batches, share, column = order.ordered()
    assert (first, batches, column) == (0, 4, 0)
    assert share == pytest.approx(
        narrow_share([x[i : i + 32] for i in range(0, 128, 32)])[0]
    )
    assert share == pytest.approx(1 / 16, rel=0.01)


def test_shuffled_features_and_a_new_task_are_not_told():
    # Shuffled rows of 16 features: each batch spreads about 31/32 of the
    # variance. Then a new task's rows, shifted by 3 spreads, shuffled:
    # the 4 batches either side of the change about 0.3 of it.
    rng = np.random.default_rng(0)
    order = ValueOrder()
    for step in range(64):
        order.add(step, rng.normal(size=(32, 16)) + (3.0 if step >= 32 else 0.0))
        assert order.ordered() is None


def test_rows_of_other_columns_start_again():
    order = ValueOrder()
    x = np.linspace(-3, 3, 128)[:, None]
    for step in range(3):
        order.add(step, x[32 * step : 32 * step + 32])
    order.add(3, np.hstack([x[96:], x[96:]]))
    assert order.ordered() is None  # One batch of 2 columns kept.


@pytest.mark.parametrize("ordered", [True, False])
def test_rules_tell_sorted_values_and_hold_the_climb(ordered):
    # A regressor fed x sorted: told at the fourth recording (steps 0-3),
    # naming the column; then a loss 5x where training began for 16 steps
    # (as the batches move on) is not told as a divergence. Fed the same
    # values shuffled: nothing told of the order, and the climb is.
    rng = np.random.default_rng(0)
    x = np.linspace(-3, 3, 128)[:, None]
    if not ordered:
        x = rng.permutation(x)
    rules = HealthRules(mlp())
    found = []
    for step in range(4):
        stats = recording(step, None, loss=0.1)
        stats.value_rows, stats.value_features = x[32 * step : 32 * step + 32], 1
        found += rules.observe(stats)
    losses = [0.1] * 16 + [0.5] * 16
    for step, loss in enumerate(losses, start=4):
        found += rules.observe_step(SentinelEvent(step, 1.0, False, loss=loss))
    if not ordered:
        assert [(f.mode, f.step) for f in found] == [(F.EXPLODING_GRADIENTS, 20)]
        return
    ((finding,),) = [found]
    assert (finding.mode, finding.step, finding.severity) == (
        F.UNSHUFFLED_DATA,
        0,
        F.WARNING,
    )
    assert finding.message.startswith(
        "The batches come in the data's order, not shuffled: over the last 4 "
        "recorded batches (steps 0-3), the values of feature 0 of the inputs "
        f"spread within a batch {finding.value:.2g} of their variance over "
        "those batches together"
    )
    assert finding.value == pytest.approx(1 / 16, rel=0.01)


def test_a_new_fit_judges_the_order_afresh():
    # Sorted classes: ordered, told once. A new fit (`forget_order`) on
    # shuffled batches: not ordered; on sorted ones again: ordered, not
    # told twice.
    rules = HealthRules(mlp())
    batches = sorted_batches([160, 160])
    told = []
    for step in range(6):
        told += rules.observe(recording(step, batches[step]))
    assert [f.mode for f in told] == [F.UNSHUFFLED_DATA] and rules.data_ordered
    rules.forget_order()
    rng = np.random.default_rng(0)
    for step in range(6, 12):
        told += rules.observe(recording(step, rng.integers(0, 2, 32)))
    assert not rules.data_ordered
    rules.forget_order()
    for step in range(12, 18):
        told += rules.observe(recording(step, batches[step - 12]))
    assert rules.data_ordered
    assert [f.mode for f in told] == [F.UNSHUFFLED_DATA]
