"""Loss classes give the same numbers as Keras's classes of the same name."""

import itertools

import keras
import numpy as np
import pytest

from keras_actloss import losses
from tests.backend_support import FLOAT64, needs_float64, traced

REDUCTIONS = ["sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", None]
TOL = {"float32": {"rtol": 1e-6, "atol": 1e-7}, "float64": {"rtol": 1e-12, "atol": 0}}

# (name, kwargs, labels, predictions); the class name is the same in Keras.
CASES = [
    ("MeanSquaredError", {}, "targets", "values"),
    ("MeanAbsoluteError", {}, "targets", "values"),
    ("Huber", {"delta": 0.7}, "targets", "values"),
    ("Hinge", {}, "signed", "values"),
    ("Hinge", {}, "binary", "values"),
    ("KLDivergence", {}, "dist", "probs"),
    ("BinaryCrossentropy", {}, "binary", "sigmoid"),
    ("BinaryCrossentropy", {"from_logits": True}, "binary", "logits"),
    ("BinaryCrossentropy", {"label_smoothing": 0.2}, "binary", "sigmoid"),
    (
        "BinaryCrossentropy",
        {"from_logits": True, "label_smoothing": 0.1},
        "binary",
        "logits",
    ),
    ("CategoricalCrossentropy", {}, "one_hot", "probs"),
    ("CategoricalCrossentropy", {"from_logits": True}, "one_hot", "logits"),
    ("CategoricalCrossentropy", {"label_smoothing": 0.3}, "one_hot", "probs"),
    (
        "CategoricalCrossentropy",
        {"from_logits": True, "label_smoothing": 0.3},
        "one_hot",
        "logits",
    ),
    ("SparseCategoricalCrossentropy", {}, "sparse", "probs"),
    ("SparseCategoricalCrossentropy", {"from_logits": True}, "sparse", "logits"),
    ("SparseCategoricalCrossentropy", {}, "sparse_column", "probs"),
    (
        "SparseCategoricalCrossentropy",
        {"from_logits": True, "ignore_class": 0},
        "sparse",
        "logits",
    ),
]


def make_data(rng, dtype, n=8, c=3):
    logits = rng.normal(scale=2.0, size=(n, c))
    one_hot = np.eye(c)[rng.integers(0, c, n)]
    binary = rng.integers(0, 2, (n, c)).astype(float)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    dist = np.exp(rng.normal(size=(n, c)))
    arrays = {
        "targets": rng.normal(size=(n, c)),
        "values": rng.normal(size=(n, c)),
        "signed": 2 * binary - 1,
        "binary": binary,
        "logits": logits,
        "sigmoid": 1 / (1 + np.exp(-logits)),
        "probs": e / e.sum(-1, keepdims=True),
        "dist": dist / dist.sum(-1, keepdims=True),
        "one_hot": one_hot,
        "sparse": one_hot.argmax(-1).astype(float),
        "sparse_column": one_hot.argmax(-1)[:, None].astype(float),
    }
    return {k: v.astype(dtype) for k, v in arrays.items()}


def case_id(case):
    name, kwargs, labels, _ = case
    args = ",".join(f"{k}={v}" for k, v in kwargs.items())
    return f"{name}({args})-{labels}"


@pytest.mark.parametrize("dtype", ["float32", FLOAT64])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_same_numbers_as_keras(rng, case, dtype):
    name, kwargs, labels, preds = case
    for weighted, reduction in itertools.product([False, True], REDUCTIONS):
        d = make_data(rng, dtype)
        weights = rng.uniform(0.1, 2.0, size=8).astype(dtype) if weighted else None
        ours = getattr(losses, name)(reduction=reduction, dtype=dtype, **kwargs)
        theirs = getattr(keras.losses, name)(reduction=reduction, dtype=dtype, **kwargs)
        actual = ours(d[labels], d[preds], sample_weight=weights)
        expected = theirs(d[labels], d[preds], sample_weight=weights)
        assert actual.dtype == expected.dtype
        message = f"{dtype}, sample_weight={weighted}, reduction={reduction}"
        np.testing.assert_allclose(actual, expected, **TOL[dtype], err_msg=message)


@pytest.mark.parametrize("case", CASES[:: len(CASES) // 6], ids=case_id)
def test_same_numbers_as_keras_traced(rng, case):
    name, kwargs, labels, preds = case
    d = make_data(rng, "float32")
    ours, theirs = (
        getattr(losses, name)(**kwargs),
        getattr(keras.losses, name)(**kwargs),
    )
    actual = traced(ours)(d[labels], d[preds])
    np.testing.assert_allclose(actual, theirs(d[labels], d[preds]), rtol=1e-6)


@needs_float64
def test_keras_functions_agree_with_ours(rng):
    d = make_data(rng, "float64")
    pairs = [
        ("mean_squared_error", {}, "targets", "values"),
        ("mean_absolute_error", {}, "targets", "values"),
        ("huber", {"delta": 0.3}, "targets", "values"),
        ("hinge", {}, "binary", "values"),
        ("kl_divergence", {}, "dist", "probs"),
        ("binary_crossentropy", {"label_smoothing": 0.1}, "binary", "sigmoid"),
        ("categorical_crossentropy", {"from_logits": True}, "one_hot", "logits"),
        ("sparse_categorical_crossentropy", {}, "sparse", "probs"),
    ]
    for name, kwargs, labels, preds in pairs:
        actual = getattr(losses, name)(d[labels], d[preds], **kwargs)
        expected = getattr(keras.losses, name)(d[labels], d[preds], **kwargs)
        np.testing.assert_allclose(actual, expected, rtol=1e-12, err_msg=name)


@needs_float64
def test_class_weighted_loss_reduces_like_sample_weights(rng):
    # With one weight per sample, class weights equal a sample_weight of
    # w[y] under "sum_over_batch_size": both scale each sample's loss.
    d = make_data(rng, "float64")
    w = np.array([0.5, 2.0, 4.0])
    y = d["sparse"]
    ours = losses.SparseCategoricalCrossentropy(class_weights=w, dtype="float64")
    keras_loss = keras.losses.SparseCategoricalCrossentropy(dtype="float64")
    np.testing.assert_allclose(
        ours(y, d["probs"]),
        keras_loss(y, d["probs"], sample_weight=w[y.astype(int)]),
        rtol=1e-12,
    )


def test_class_weights_in_config_round_trip():
    loss = losses.CategoricalCrossentropy(class_weights=np.array([1.0, 2.5]))
    config = loss.get_config()
    assert config["class_weights"] == [1.0, 2.5]
    assert losses.CategoricalCrossentropy.from_config(config).class_weights == [
        1.0,
        2.5,
    ]


def test_dtype_policy_is_serialised():
    loss = losses.MeanSquaredError(dtype=keras.DTypePolicy("float64"))
    restored = losses.MeanSquaredError.from_config(loss.get_config())
    assert restored.dtype == "float64"


def test_training_with_class_weights_lowers_the_loss(rng):
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0.8).astype("float32")[:, None]  # imbalanced: ~20% positives
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    loss = losses.BinaryCrossentropy(from_logits=True, class_weights=[1.0, 4.0])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=loss)
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=5, batch_size=16, verbose=0)
    assert model.evaluate(x, y, verbose=0) < before


@pytest.mark.parametrize(
    "fn, kwargs",
    [
        (losses.huber, {"delta": 2.0}),
        (losses.binary_crossentropy, {"from_logits": True}),
        (keras.losses.mean_squared_error, {}),
    ],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_loss_function_wrapper_round_trips(fn, kwargs, rng, tmp_path):
    loss = losses.LossFunctionWrapper(fn, reduction="sum", name="wrapped", **kwargs)
    config = loss.get_config()
    restored = losses.LossFunctionWrapper.from_config(config)
    assert restored.fn is fn and restored.get_config() == config
    serialized = keras.saving.serialize_keras_object(loss)
    assert serialized["registered_name"] == "keras_actloss>LossFunctionWrapper"
    assert keras.saving.deserialize_keras_object(serialized).fn is fn
    # Inside a compiled model saved to `.keras` (no custom_objects on load).
    x = rng.normal(size=(8, 3)).astype("float32")
    y = rng.integers(0, 2, (8, 2)).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss=loss, jit_compile=False)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.loss.fn is fn
    want = model.evaluate(x, y, verbose=0)
    assert loaded.evaluate(x, y, verbose=0) == want
    # The number itself: the function summed over the batch ("sum").
    np.testing.assert_allclose(want, np.sum(fn(y, model(x), **kwargs)), rtol=1e-5)


def test_loss_function_wrapper_with_unknown_function_raises():
    config = losses.LossFunctionWrapper(losses.huber).get_config()
    config["fn"] = "no_such_loss"
    with pytest.raises(ValueError, match="Received: fn='no_such_loss'"):
        losses.LossFunctionWrapper.from_config(config)
