"""Label-kind detection: every kind, ambiguous and unusable labels."""

import keras
import numpy as np
import pytest

from keras_actloss.advisor import labels
from keras_actloss.advisor.labels import describe_labels, robust_outliers


def modified_z(column):
    """Iglewicz & Hoaglin's modified z-score, 0.6745 (x - median) / MAD."""
    median = np.median(column)
    mad = np.median(np.abs(column - median))
    return 0.6745 * (column - median) / mad


@pytest.mark.parametrize(
    "y, kind, n_classes, n_columns",
    [
        (np.array([0, 1, 1, 0]), labels.BINARY, 2, 1),
        (np.array([True, False, True]), labels.BINARY, 2, 1),
        (np.array([[0.0], [1.0], [1.0]]), labels.BINARY, 2, 1),
        (np.array([0, 3, 1, 2]), labels.INTEGER, 4, 1),
        (np.array([2.0, 0.0, 1.0]), labels.INTEGER, 3, 1),
        (np.eye(3)[[0, 1, 2, 1]], labels.ONE_HOT, 3, 3),
        (np.array([[1, 0, 1], [0, 0, 1], [0, 0, 0]]), labels.MULTI_HOT, 3, 3),
        (np.array([[0.2, 0.8], [0.5, 0.5]]), labels.DISTRIBUTION, None, 2),
        (
            np.array([[0.1, 0.2, 0.7], [0, 0, 1]], "float32"),
            labels.DISTRIBUTION,
            None,
            3,
        ),
        (np.array([-1, 1, 1, -1]), labels.SIGNED, 2, 1),
        (np.array([[-1, 1], [1, 1]]), labels.SIGNED, None, 2),
        (np.array([0.5, 2.5, -1.25]), labels.CONTINUOUS, None, 1),
        (np.array([[0.5, 2.5], [-1.0, 3.0]]), labels.CONTINUOUS, None, 2),
        (np.array([-3, 0, 2, 7]), labels.CONTINUOUS, None, 1),
        (np.array([0, 5000, 12]), labels.CONTINUOUS, None, 1),
        (np.array([0.25, 0.75, 0.5]), labels.CONTINUOUS, None, 1),
    ],
)
def test_kinds(y, kind, n_classes, n_columns):
    info = describe_labels(y)
    assert info.kind == kind
    assert info.n_classes == n_classes
    assert info.n_columns == n_columns
    assert info.n_samples == len(y)
    assert info.shape == np.shape(y)


def test_lists_and_tensors_are_read_like_arrays():
    assert describe_labels([0, 2, 1]).kind == labels.INTEGER
    assert (
        describe_labels(keras.ops.convert_to_tensor([[0.0, 1.0], [1.0, 0.0]])).kind
        == labels.ONE_HOT
    )


def test_value_range_and_integer_flag():
    info = describe_labels(np.array([0.5, 2.5, -1.25]))
    assert (info.low, info.high, info.integer_valued) == (-1.25, 2.5, False)


def test_robust_outliers_hand_computed():
    # median 3, |deviations| [2, 1, 0, 1, 97], MAD 1, scale 1.4826;
    # cut-off 3.5 * 1.4826 = 5.19: only 100 is beyond, 1 of 5.
    fraction, scale = robust_outliers(np.array([1.0, 2.0, 3.0, 4.0, 100.0]))
    assert fraction == pytest.approx(0.2)
    assert scale == pytest.approx(1.4826)


def test_robust_outliers_zero_mad_falls_back_to_mean_deviation():
    # median 0, MAD 0; mean |deviation| = 10 / 5 = 2, scale 1.2533 * 2 = 2.5066;
    # cut-off 3.5 * 2.5066 = 8.77 < 10.
    fraction, scale = robust_outliers(np.array([0.0, 0.0, 0.0, 0.0, 10.0]))
    assert (fraction, scale) == (pytest.approx(0.2), pytest.approx(2.5066))
    assert robust_outliers(np.full(30, 4.0)) == (0.0, 0.0)


def test_heavy_outliers_against_modified_z_score(rng):
    clean = rng.normal(10.0, 2.0, size=1000)
    dirty = np.concatenate([clean, rng.choice([-1.0, 1.0], 30) * 200.0])
    for y in (clean, dirty):
        expected = np.mean(np.abs(modified_z(y)) > 3.5)
        assert describe_labels(y).outlier_fraction == pytest.approx(expected, abs=1e-9)
    assert describe_labels(clean).kind == labels.CONTINUOUS
    assert describe_labels(dirty).kind == labels.CONTINUOUS_OUTLIERS
    # 30 of 1030 far points, plus whatever of the Gaussian lies beyond 3.5.
    assert describe_labels(dirty).outlier_fraction >= 30 / 1030


def test_outlier_fraction_threshold_is_strict():
    # 99 values spread 1..99 (MAD 25) and one at 10000: 1 outlier in 100 = 1%,
    # not more than OUTLIER_FRACTION; a second far point makes it 2 in 101.
    base = np.arange(1.0, 100.0)
    assert describe_labels(np.append(base, 1e4)).kind == labels.CONTINUOUS
    assert (
        describe_labels(np.append(base, [1e4, -1e4])).kind == labels.CONTINUOUS_OUTLIERS
    )


def test_outliers_judged_per_column(rng):
    y = np.stack([rng.normal(size=200), rng.normal(size=200)], axis=1)
    y[:10, 1] = 100.0
    info = describe_labels(y)
    assert info.kind == labels.CONTINUOUS_OUTLIERS
    assert info.outlier_fraction == pytest.approx(
        np.mean(np.abs(modified_z(y[:, 1])) > 3.5)
    )


def test_too_few_samples_are_not_judged_for_outliers():
    info = describe_labels(np.array([1.5, 2.5, 3.5, 1000.5]))
    assert info.kind == labels.CONTINUOUS
    assert info.outlier_fraction is None
    assert any("too few" in note for note in info.assumptions)


@pytest.mark.parametrize(
    "y, phrase",
    [
        (np.array([0, 1, 1]), "task='multiclass'"),
        (np.array([[0], [1]]), "one label per sample"),
        (np.array([1, 1, 1]), "Only one value"),
        (np.array([0, 2, 2]), "task='regression'"),
        (np.array([1, 2, 3]), "subtract 1"),
        (np.eye(2), "task='multilabel'"),
        (np.array([0.25, 0.75]), "task='binary'"),
        (np.array([-1, 1]), "0/1"),
        (np.array([-3, 2, 4]), "quantities"),
    ],
)
def test_ambiguous_labels_say_what_was_assumed(y, phrase):
    notes = " ".join(describe_labels(y).assumptions)
    assert phrase in notes


@pytest.mark.parametrize(
    "y, pattern",
    [
        (None, r"Expected labels `y` as an array\. Received: y=None"),
        (np.array([0.0, np.nan, 1.0]), r"Expected finite labels `y`.*1 non-finite"),
        (np.array([0.0, np.inf]), r"Expected finite labels `y`.*Received: y with 1"),
        (
            np.array([]),
            r"Expected at least one label in `y`\. Received: y with shape \(0,\)",
        ),
        (np.zeros((0, 3)), r"Received: y with shape \(0, 3\)"),
        (
            [[0, 1], [1]],
            r"ragged labels cannot be used\. Received: y=\[\[0, 1\], \[1\]\]",
        ),
        (
            np.array(["cat", "dog"]),
            r"Expected numeric labels `y`\. Received: y with dtype <U3",
        ),
        (
            np.array([1, "a"], dtype=object),
            r"Expected numeric labels `y`.*dtype object",
        ),
        (
            np.array([1, None], dtype=object),
            r"Expected finite labels `y`.*1 non-finite",
        ),
        (np.array(3.0), r"one entry per sample.*Received: y=array\(3\.\) \(a scalar\)"),
        (np.zeros((2, 3, 4)), r"Received: y with shape \(2, 3, 4\)\. For per-position"),
        (
            np.array([1 + 2j]),
            r"Expected real-valued labels `y`\. Received: y with dtype complex128",
        ),
    ],
)
def test_unusable_labels_raise(y, pattern):
    with pytest.raises(ValueError, match=pattern):
        describe_labels(y)
