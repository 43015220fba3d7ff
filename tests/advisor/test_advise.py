"""advise(): the recommendation for every label kind, forced tasks, errors."""

import json

import keras
import numpy as np
import pytest

import keras_actloss
from keras_actloss import losses
from keras_actloss.advisor import Recommendation, advise, check_model


def _outliers(rng):
    return np.concatenate(
        [rng.normal(5.0, 2.0, 300), [80.0, -90.0, 75.0, 120.0, -60.0]]
    )


# (labels, task, label kind, units, activation, loss class, from_logits, metrics)
CASES = {
    "binary": (
        lambda rng: rng.integers(0, 2, 50),
        "binary", "binary", 1, "sigmoid", losses.BinaryCrossentropy, False,
        ["binary_accuracy"],
    ),
    "integer": (
        lambda rng: rng.integers(0, 5, 50),
        "multiclass", "integer", 5, "softmax", losses.SparseCategoricalCrossentropy,
        False, ["sparse_categorical_accuracy"],
    ),
    "one_hot": (
        lambda rng: np.eye(4)[rng.integers(0, 4, 50)],
        "multiclass", "one_hot", 4, "softmax", losses.CategoricalCrossentropy, False,
        ["categorical_accuracy"],
    ),
    "multi_hot": (
        lambda rng: rng.integers(0, 2, (50, 6)),
        "multilabel", "multi_hot", 6, "sigmoid", losses.BinaryCrossentropy, False,
        ["binary_accuracy"],
    ),
    "distribution": (
        lambda rng: rng.dirichlet(np.ones(3), 50),
        "distribution", "distribution", 3, "softmax", losses.KLDivergence, None,
        ["kl_divergence"],
    ),
    "continuous": (
        lambda rng: rng.normal(3.0, 2.0, 200),
        "regression", "continuous", 1, "linear", losses.MeanSquaredError, None,
        ["mean_absolute_error", "root_mean_squared_error"],
    ),
    "continuous_2d": (
        lambda rng: rng.uniform(-5.0, 5.0, (200, 2)),
        "regression", "continuous", 2, "linear", losses.MeanSquaredError, None,
        ["mean_absolute_error", "root_mean_squared_error"],
    ),
    "continuous_outliers": (
        _outliers,
        "regression", "continuous_outliers", 1, "linear", losses.Huber, None,
        ["mean_absolute_error"],
    ),
    "signed": (
        lambda rng: rng.choice([-1, 1], 50),
        "margin", "signed", 1, "linear", losses.Hinge, None, ["hinge"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_label_kind(name, rng):
    make, task, kind, units, activation, loss_cls, from_logits, metrics = CASES[name]
    rec = advise(make(rng))
    assert isinstance(rec, Recommendation)
    assert (rec.task, rec.label_kind, rec.output_units) == (task, kind, units)
    assert rec.output_activation == activation
    assert type(rec.loss) is loss_cls
    assert rec.from_logits is from_logits
    assert rec.metrics == metrics
    assert rec.why


@pytest.mark.parametrize("name", sorted(CASES))
def test_recommended_model_is_consistent(name, rng):
    """A model built from the recommendation passes check_model and the loss
    gives a finite value on the labels."""
    y = CASES[name][0](rng)
    rec = advise(y)
    model = keras.Sequential([keras.Input((3,)), rec.output_layer()])
    model.compile(loss=rec.loss, metrics=list(rec.metrics))
    assert check_model(model, y) == []
    prediction = model(rng.normal(size=(len(y), 3)).astype("float32"))
    assert np.isfinite(float(rec.loss(y.astype("float32"), prediction)))
    for metric in rec.metrics:
        assert keras.metrics.get(metric) is not None


def test_huber_delta_from_robust_scale(rng):
    y = _outliers(rng)
    mad = np.median(np.abs(y - np.median(y)))
    # delta = 1.345 * (1.4826 * MAD), to 3 significant figures.
    expected = float(f"{1.345 * 1.4826 * mad:.3g}")
    assert advise(y).loss.get_config()["delta"] == pytest.approx(expected)


def test_exported_at_top_level():
    assert keras_actloss.advisor.advise is advise


def test_ambiguous_binary_says_what_was_assumed():
    rec = advise(np.array([[0], [1], [1], [0]]))
    assert rec.task == "binary"
    notes = " ".join(rec.assumptions)
    assert "one label per sample" in notes
    assert "two classes" in notes and "task='multiclass'" in notes


@pytest.mark.parametrize(
    "y, task, units, loss_cls, note",
    [
        (
            [0, 1, 1, 0],
            "multiclass",
            2,
            losses.SparseCategoricalCrossentropy,
            "two classes",
        ),
        ([0, 3, 2, 1], "regression", 1, losses.MeanSquaredError, "forced"),
        ([0.2, 0.9, 0.4], "binary", 1, losses.BinaryCrossentropy, "soft binary"),
        ([0, 1, 1, 0], "margin", 1, losses.Hinge, "-1/+1"),
        ([-1, 1, 1], "margin", 1, losses.Hinge, "margin"),
        (np.eye(3), "distribution", 3, losses.KLDivergence, "one-hot"),
        (np.eye(3), "multilabel", 3, losses.BinaryCrossentropy, "own yes/no"),
        (
            [[0.2, 0.8], [0.5, 0.5]],
            "multiclass",
            2,
            losses.CategoricalCrossentropy,
            "Soft",
        ),
        (
            [[0.2, 0.9], [0.5, 0.1]],
            "multilabel",
            2,
            losses.BinaryCrossentropy,
            "yes/no",
        ),
    ],
)
def test_forced_task(y, task, units, loss_cls, note):
    rec = advise(np.array(y), task=task)
    assert (rec.task, rec.output_units, type(rec.loss)) == (task, units, loss_cls)
    assert note in " ".join(rec.assumptions)
    # A reading of the labels that offered this task is not repeated.
    assert f"pass task={task!r}" not in " ".join(rec.assumptions)


def test_forced_task_replaces_the_reading_it_answers():
    rec = advise(np.array([0, 1, 1, 0]), task="multiclass")
    assert rec.assumptions == ["0/1 labels read as two classes."]
    rec = advise(np.array([[0], [1], [1], [0]]), task="multiclass")
    assert rec.assumptions == [
        "y of shape (4, 1) read as one label per sample (a column).",
        "0/1 labels read as two classes.",
    ]


@pytest.mark.parametrize(
    "y, task, pattern",
    [
        (
            [0, 3, 2],
            "binary",
            r"Labels `y` do not fit task='binary': expected one column of 0/1 "
            r"labels or probabilities\. Received: y with shape \(3,\) read as "
            r"'integer' labels \(values in \[0, 3\]\)",
        ),
        (np.eye(3), "binary", r"Received: y with shape \(3, 3\) read as 'one_hot'"),
        ([0.5, 2.5], "multiclass", r"expected integer class indices or one-hot rows"),
        ([[1, 1], [0, 1]], "multiclass", r"read as 'multi_hot'"),
        ([0, 4, 2], "multilabel", r"task='multilabel'"),
        ([[1, 1], [0, 1]], "distribution", r"non-negative rows that sum to 1"),
        ([0.5, 2.5], "margin", r"expected -1/\+1 \(or 0/1\) labels"),
    ],
)
def test_forced_task_that_does_not_fit_raises(y, task, pattern):
    with pytest.raises(ValueError, match=pattern):
        advise(np.array(y), task=task)


def test_unknown_task_raises():
    with pytest.raises(
        ValueError, match=r"Argument `task` must be one of .*task='clasify'"
    ):
        advise(np.array([0, 1]), task="clasify")


@pytest.mark.parametrize(
    "y, pattern",
    [
        (np.array([1.0, np.nan]), r"Expected finite labels `y`"),
        (np.array([]), r"Expected at least one label in `y`"),
        ([[1, 2], [3]], r"ragged"),
        (["spam", "ham"], r"Expected numeric labels `y`.*StringLookup"),
    ],
)
def test_unusable_labels(y, pattern):
    with pytest.raises(ValueError, match=pattern):
        advise(y)


def test_to_dict_is_json_and_rebuilds_the_loss(rng):
    rec = advise(_outliers(rng))
    data = json.loads(json.dumps(rec.to_dict()))
    assert set(data) == {
        "task", "label_kind", "output_units", "output_activation", "loss",
        "loss_config", "from_logits", "metrics", "why", "assumptions",
    }  # fmt: skip
    assert data["loss"] == "Huber"
    rebuilt = getattr(losses, data["loss"]).from_config(data["loss_config"])
    assert rebuilt.get_config() == rec.loss.get_config()
    assert data["assumptions"] == rec.assumptions


def test_str_for_the_cli():
    text = str(advise(np.array([0, 2, 1, 2])))
    lines = text.splitlines()
    assert lines[0] == "Task:         multiclass (labels: integer)"
    assert lines[1] == 'Output layer: keras.layers.Dense(3, activation="softmax")'
    assert lines[2] == (
        "Loss:         keras_actloss.losses.SparseCategoricalCrossentropy("
        "from_logits=False)"
    )
    assert lines[3] == "Metrics:      ['sparse_categorical_accuracy']"
    assert lines[4].startswith("Why:          One class out of several")
    assert lines[5].startswith("Assumed:      Whole numbers 0..2")


def _imbalanced_sparse(rng, rare=5):
    # 4 classes: class 3 appears `rare` times in 400.
    y = rng.integers(0, 3, 400)
    y[rng.choice(400, rare, replace=False)] = 3
    return y


@pytest.mark.parametrize(
    "make, loss_cls",
    [
        (lambda rng: np.array([1] * 20 + [0] * 380), losses.BinaryCrossentropy),
        (
            lambda rng: np.eye(4)[_imbalanced_sparse(rng)],
            losses.CategoricalCrossentropy,
        ),
        (_imbalanced_sparse, losses.SparseCategoricalCrossentropy),
    ],
    ids=["binary", "one_hot", "sparse"],
)
def test_imbalanced_labels_get_balanced_class_weights(make, loss_cls, rng):
    y = make(rng)
    rec = advise(y)
    assert type(rec.loss) is loss_cls
    ids = y.argmax(-1) if y.ndim == 2 else y
    counts = np.bincount(ids.astype(int))
    # NumPy reference: n / (k * count), to 3 significant figures.
    want = len(ids) / (len(counts) * counts)
    np.testing.assert_allclose(rec.loss.class_weights, want, rtol=5e-3)
    assert "strongly imbalanced" in rec.why and "Class weights" in rec.why
    assert f"{counts.min() / len(ids):.1%}" in rec.why
    assert "class_weights=" in str(rec)


RARE_THIRD = [0] * 300 + [1] * 97 + [2] * 3  # 100:1


@pytest.mark.parametrize(
    "y, loss_cls",
    [
        (np.array([1] * 2 + [0] * 398), losses.BinaryFocalCrossentropy),
        (
            np.array([0] * 300 + [1] * 97 + [2] * 3),
            losses.SparseCategoricalFocalCrossentropy,
        ),
        (
            np.eye(3)[[0] * 300 + [1] * 97 + [2] * 3],
            losses.CategoricalFocalCrossentropy,
        ),
    ],
    ids=["binary", "sparse", "one_hot"],
)
def test_extremely_imbalanced_labels_get_a_focal_loss(y, loss_cls, rng):
    rec = advise(y)
    assert type(rec.loss) is loss_cls and rec.loss.gamma == 2.0
    assert "focal loss" in rec.why and "strongly imbalanced" in rec.why
    model = keras.Sequential([keras.Input((3,)), rec.output_layer()])
    model.compile(loss=rec.loss, metrics=list(rec.metrics))
    assert check_model(model, y) == []
    prediction = model(rng.normal(size=(len(y), 3)).astype("float32"))
    assert np.isfinite(float(rec.loss(y.astype("float32"), prediction)))


def test_mildly_imbalanced_and_soft_labels_are_left_alone(rng):
    y = np.array([1] * 10 + [0] * 90)  # 9:1
    assert advise(y).loss.class_weights is None
    assert "imbalanced" not in advise(y).why
    soft = np.array([0.01] * 99 + [0.9])  # probabilities: classes not counted
    assert advise(soft, task="binary").loss.class_weights is None
