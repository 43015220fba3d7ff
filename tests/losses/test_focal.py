"""Focal losses: Keras's numbers, the sparse one, class weights, errors.

The `.keras` round trips, config and `get_config` checks come from the
common suite in `tests/test_registry_losses.py` (the focal losses are
registered).
"""

import keras
import numpy as np
import pytest

from keras_actloss import losses
from tests.backend_support import FLOAT64, needs_float64

EPS = 1e-7  # keras.config.epsilon()


def np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


def np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_binary_focal(y, p, gamma, class_weights=None):
    """Lin et al. eq. 5 per element, written with the true-class probability."""
    p = np.clip(p, EPS, 1 - EPS)
    p_true = np.where(y == 1, p, 1 - p)
    loss = -((1 - p_true) ** gamma) * np.log(p_true)
    if class_weights is not None:
        loss = loss * np.where(y == 1, class_weights[1], class_weights[0])
    return loss.mean(-1)


def np_categorical_focal(labels, probs, alpha, gamma, class_weights=None):
    """Per sample, from integer labels: alpha (1 - p_y)^gamma (-log p_y) w_y
    (a list `alpha`: the label's, alpha_y)."""
    p = np.clip(probs / probs.sum(-1, keepdims=True), EPS, 1 - EPS)
    p_y = np.take_along_axis(p, labels[:, None], -1)[:, 0]
    alpha = np.asarray(alpha)
    alpha = alpha[labels] if alpha.ndim else alpha
    loss = alpha * (1 - p_y) ** gamma * -np.log(p_y)
    if class_weights is not None:
        loss = loss * np.asarray(class_weights)[labels]
    return loss


@pytest.fixture
def data(rng):
    n, c = 16, 4
    labels = rng.integers(0, c, n)
    logits = rng.normal(scale=2.0, size=(n, c))
    return {
        "labels": labels,
        "one_hot": np.eye(c)[labels],
        "logits": logits,
        "probs": np_softmax(logits),
        "binary": rng.integers(0, 2, (n, c)).astype("float64"),
        "sigmoid": np_sigmoid(logits),
        "weights": rng.uniform(0.5, 2.0, n),
    }


BINARY_KWARGS = [
    {},
    {"gamma": 0.5},
    {"gamma": 3.0, "from_logits": True},
    {"apply_class_balancing": True, "alpha": 0.4},
    {"label_smoothing": 0.2, "from_logits": True, "apply_class_balancing": True},
]
CATEGORICAL_KWARGS = [
    {},
    {"alpha": 1.0, "gamma": 1.0},
    {"from_logits": True, "gamma": 3.0},
    {"label_smoothing": 0.3},
    {"label_smoothing": 0.1, "from_logits": True, "alpha": 0.5},
    # Keras takes a list too: one factor per class (4 in `data`).
    {"alpha": [0.1, 0.5, 0.9, 2.0]},
    {"alpha": (0.3, 0.2, 0.1, 0.4), "from_logits": True, "label_smoothing": 0.1},
]
REDUCTIONS = ["sum_over_batch_size", "sum", None]


@pytest.mark.parametrize("kwargs", BINARY_KWARGS, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", ["float32", FLOAT64])
def test_binary_focal_equals_keras(data, kwargs, reduction, dtype):
    y = data["binary"].astype(dtype)
    p = data["logits" if kwargs.get("from_logits") else "sigmoid"].astype(dtype)
    w = data["weights"].astype(dtype)
    ours = losses.BinaryFocalCrossentropy(reduction=reduction, **kwargs)(y, p, w)
    theirs = keras.losses.BinaryFocalCrossentropy(reduction=reduction, **kwargs)(
        y, p, w
    )
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)
    fn = losses.binary_focal_crossentropy(y, p, **kwargs)
    np.testing.assert_allclose(
        fn, keras.losses.binary_focal_crossentropy(y, p, **kwargs), rtol=1e-6
    )


@pytest.mark.parametrize("kwargs", CATEGORICAL_KWARGS, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", ["float32", FLOAT64])
def test_categorical_focal_equals_keras(data, kwargs, reduction, dtype):
    y = data["one_hot"].astype(dtype)
    p = data["logits" if kwargs.get("from_logits") else "probs"].astype(dtype)
    w = data["weights"].astype(dtype)
    ours = losses.CategoricalFocalCrossentropy(reduction=reduction, **kwargs)(y, p, w)
    theirs = keras.losses.CategoricalFocalCrossentropy(reduction=reduction, **kwargs)(
        y, p, w
    )
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)
    fn = losses.categorical_focal_crossentropy(y, p, **kwargs)
    np.testing.assert_allclose(
        fn, keras.losses.categorical_focal_crossentropy(y, p, **kwargs), rtol=1e-6
    )


@needs_float64
def test_per_class_alpha_matches_numpy(data):
    alpha = [0.1, 0.5, 0.9, 2.0]
    labels, probs = data["labels"], data["probs"]
    want = np_categorical_focal(labels, probs, alpha, 2.0, CLASS_WEIGHTS)
    for got in (
        losses.sparse_categorical_focal_crossentropy(
            labels, probs, alpha=np.array(alpha), class_weights=CLASS_WEIGHTS
        ),
        losses.categorical_focal_crossentropy(
            data["one_hot"], probs, alpha=alpha, class_weights=CLASS_WEIGHTS
        ),
    ):
        np.testing.assert_allclose(got, want, rtol=1e-10)
    loss = losses.SparseCategoricalFocalCrossentropy(alpha=alpha)
    np.testing.assert_allclose(
        loss(labels, probs), np_categorical_focal(labels, probs, alpha, 2.0).mean()
    )


def test_per_class_alpha_follows_the_class_axis(data):
    # Classes on axis 1 of (batch, classes, 2): the same losses as with the
    # classes last.
    alpha = [0.1, 0.5, 0.9, 2.0]
    y = np.stack([data["one_hot"], data["one_hot"][::-1]], -1)
    p = np.stack([data["probs"], data["probs"][::-1]], -1)
    got = losses.categorical_focal_crossentropy(y, p, alpha=alpha, axis=1)
    want = losses.categorical_focal_crossentropy(
        np.moveaxis(y, 1, -1), np.moveaxis(p, 1, -1), alpha=alpha
    )
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_per_class_alpha_config_round_trip(data):
    loss = losses.CategoricalFocalCrossentropy(alpha=np.array([0.1, 0.5, 0.9, 2.0]))
    config = loss.get_config()
    assert config["alpha"] == [0.1, 0.5, 0.9, 2.0]
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(again) is losses.CategoricalFocalCrossentropy
    y, p = data["one_hot"], data["probs"]
    np.testing.assert_allclose(again(y, p), loss(y, p))


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("class_weights", [None, [1.0, 3.0, 0.5, 2.0]])
def test_sparse_focal_equals_categorical_on_one_hot(data, from_logits, class_weights):
    p = data["logits" if from_logits else "probs"]
    kwargs = {"from_logits": from_logits, "class_weights": class_weights}
    sparse = losses.sparse_categorical_focal_crossentropy(data["labels"], p, **kwargs)
    dense = losses.categorical_focal_crossentropy(data["one_hot"], p, **kwargs)
    np.testing.assert_allclose(sparse, dense, rtol=1e-12)
    column = losses.SparseCategoricalFocalCrossentropy(**kwargs)(
        data["labels"][:, None], p
    )
    np.testing.assert_allclose(
        column, losses.CategoricalFocalCrossentropy(**kwargs)(data["one_hot"], p)
    )


CLASS_WEIGHTS = [2.0, 0.5, 1.0, 4.0]


@needs_float64
def test_class_weights_match_numpy(data):
    labels, probs = data["labels"], data["probs"]
    want = np_categorical_focal(labels, probs, 0.25, 2.0, CLASS_WEIGHTS)
    for got in (
        losses.sparse_categorical_focal_crossentropy(
            labels, probs, class_weights=CLASS_WEIGHTS
        ),
        losses.categorical_focal_crossentropy(
            data["one_hot"], probs, class_weights=CLASS_WEIGHTS
        ),
    ):
        np.testing.assert_allclose(got, want, rtol=1e-10)
    y, p = data["binary"], data["sigmoid"]
    got = losses.binary_focal_crossentropy(y, p, gamma=1.5, class_weights=[1.0, 5.0])
    np.testing.assert_allclose(got, np_binary_focal(y, p, 1.5, [1.0, 5.0]), rtol=1e-10)
    # Mean reduction of the class-weighted per-sample losses.
    loss = losses.SparseCategoricalFocalCrossentropy(class_weights=CLASS_WEIGHTS)
    np.testing.assert_allclose(loss(labels, probs), want.mean(), rtol=1e-6)


@needs_float64
def test_limits_are_cross_entropy(data):
    # gamma = 0 (and alpha = 1 for the categorical one) is plain cross-entropy.
    y, p = data["binary"], data["sigmoid"]
    np.testing.assert_allclose(
        losses.binary_focal_crossentropy(y, p, gamma=0.0),
        losses.binary_crossentropy(y, p),
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        losses.sparse_categorical_focal_crossentropy(
            data["labels"], data["logits"], alpha=1.0, gamma=0.0, from_logits=True
        ),
        losses.sparse_categorical_crossentropy(
            data["labels"], data["logits"], from_logits=True
        ),
        rtol=1e-6,
    )


def test_focal_down_weights_easy_samples():
    # hand computed: p_true 0.9 -> 0.1**2 * -log(0.9); 0.6 -> 0.4**2 * -log(0.6).
    got = losses.sparse_categorical_focal_crossentropy(
        np.array([0, 0]), np.array([[0.9, 0.1], [0.6, 0.4]]), alpha=1.0
    )
    np.testing.assert_allclose(
        got, [0.01 * -np.log(0.9), 0.16 * -np.log(0.6)], rtol=1e-6
    )


def test_sparse_ignore_class_leaves_positions_out(data):
    labels = data["labels"].copy()
    labels[:4] = -1
    loss = losses.SparseCategoricalFocalCrossentropy(ignore_class=-1)
    keep = labels != -1
    want = np_categorical_focal(labels[keep], data["probs"][keep], 0.25, 2.0)
    np.testing.assert_allclose(loss(labels, data["probs"]), want.mean(), rtol=1e-6)


def test_label_format_errors():
    probs = np.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match="need `SparseCategoricalFocalCrossentropy`"):
        losses.CategoricalFocalCrossentropy()(np.array([0, 2]), probs)
    with pytest.raises(ValueError, match="need `CategoricalFocalCrossentropy`"):
        losses.SparseCategoricalFocalCrossentropy()(np.eye(3)[[0, 2]], probs)
    with pytest.raises(
        ValueError,
        match=r"`sparse_categorical_focal_crossentropy` to hold integer class ids "
        r"in \[0, 3\). Received: y_true with values \[3\]",
    ):
        losses.SparseCategoricalFocalCrossentropy()(np.array([0, 3]), probs)
    with pytest.raises(ValueError, match=r"Received: y_true with values \[2\]"):
        losses.BinaryFocalCrossentropy()(np.array([[0.0, 2.0]]), probs[:1, :2])


@pytest.mark.parametrize(
    "cls, kwargs, received",
    [
        (losses.BinaryFocalCrossentropy, {"alpha": 1.5}, "alpha=1.5"),
        (losses.BinaryFocalCrossentropy, {"gamma": -1.0}, "gamma=-1.0"),
        (losses.CategoricalFocalCrossentropy, {"gamma": "2"}, "gamma='2'"),
        (losses.SparseCategoricalFocalCrossentropy, {"alpha": -0.1}, "alpha=-0.1"),
        (
            losses.CategoricalFocalCrossentropy,
            {"alpha": "0.25"},
            "alpha='0.25'",
        ),
        (
            losses.CategoricalFocalCrossentropy,
            {"alpha": [0.5, -0.1]},
            r"alpha=\[0.5, -0.1\]",
        ),
        (
            losses.SparseCategoricalFocalCrossentropy,
            {"alpha": [[0.5]]},
            r"alpha=\[\[0.5\]\]",
        ),
        # The binary loss's `alpha` weighs positives against negatives.
        (
            losses.BinaryFocalCrossentropy,
            {"alpha": [0.5, 0.5]},
            r"alpha=\[0.5, 0.5\]",
        ),
        (
            losses.BinaryFocalCrossentropy,
            {"apply_class_balancing": 1},
            "apply_class_balancing=1",
        ),
    ],
)
def test_bad_arguments_raise(cls, kwargs, received):
    with pytest.raises(ValueError, match=f"Argument `.*Received: {received}"):
        cls(**kwargs)


def test_alpha_errors_say_what_is_accepted():
    with pytest.raises(ValueError, match="float >= 0 or a list of them, one per class"):
        losses.CategoricalFocalCrossentropy(alpha=None)
    with pytest.raises(ValueError, match="must hold finite, non-negative numbers"):
        losses.SparseCategoricalFocalCrossentropy(alpha=[0.5, float("nan")])
    with pytest.raises(ValueError, match=r"float in \[0, 1\]. Received"):
        losses.BinaryFocalCrossentropy(alpha=(0.5,))


def test_per_class_alpha_of_another_length_raises(data):
    loss = losses.SparseCategoricalFocalCrossentropy(alpha=[0.5, 0.5])
    with pytest.raises(
        ValueError,
        match=r"Expected `alpha` to have one entry per class \(4 classes in "
        r"`y_pred`\). Received: alpha=\[0.5, 0.5\] \(2 entries\)",
    ):
        loss(data["labels"], data["probs"])


def test_names_and_profiles():
    get = losses.get
    assert get("binary_focal_crossentropy") is losses.binary_focal_crossentropy
    assert type(get("keras_actloss>SparseCategoricalFocalCrossentropy")) is (
        losses.SparseCategoricalFocalCrossentropy
    )
    assert type(get("CategoricalFocalCrossentropy")) is (
        losses.CategoricalFocalCrossentropy
    )
    sparse = losses.profile(losses.SparseCategoricalFocalCrossentropy())
    assert sparse.label_format == "sparse" and sparse.output_activations == ("softmax",)
    keras_loss = keras.losses.BinaryFocalCrossentropy(from_logits=True)
    keras_binary = losses.profile(keras_loss)
    assert keras_binary.name == "binary_focal_crossentropy"
    assert keras_binary.expects == "logits"
    assert losses.profile("categorical_focal_crossentropy").label_format == "one_hot"
