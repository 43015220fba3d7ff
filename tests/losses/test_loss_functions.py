"""Per-sample loss functions against independent NumPy references.

The references are written in equivalent but different forms from the code
under test (softplus / log-sum-exp forms for logits, clipped-minimum form for
Huber, expanded square for MSE), so a shared mistake is unlikely.
"""

import itertools

import keras
import numpy as np
import pytest

from keras_actloss import losses
from tests.backend_support import FLOAT64, grad_of_sum, needs_float64

EPS = 1e-7  # keras.config.epsilon(), used by Keras to clip probabilities
DTYPES = ["float32", FLOAT64]
TOL = {
    "float32": {"rtol": 2e-5, "atol": 2e-6},
    "float64": {"rtol": 1e-10, "atol": 1e-12},
}


# ---------------------------------------------------------------- references
def np_mse(t, p):
    return (p**2 - 2 * p * t + t**2).mean(axis=-1)


def np_mae(t, p):
    return np.maximum(p - t, t - p).mean(axis=-1)


def np_huber(t, p, delta):
    e = np.abs(p - t)
    clipped = np.minimum(e, delta)  # quadratic part, then linear remainder
    return (0.5 * clipped**2 + delta * (e - clipped)).mean(axis=-1)


def np_hinge(t, p):
    if np.isin(t, (0, 1)).all():
        t = np.where(t == 0, -1.0, 1.0)
    return np.clip(1 - t * p, 0, None).mean(axis=-1)


def np_bce(t, p, from_logits, smoothing=0.0, weights=None):
    s = t * (1 - smoothing) + 0.5 * smoothing
    if from_logits:
        # -log(sigmoid(x)) = softplus(-x), -log(1 - sigmoid(x)) = softplus(x)
        elem = s * np.logaddexp(0, -p) + (1 - s) * np.logaddexp(0, p)
    else:
        q = np.clip(p, EPS, 1 - EPS)
        elem = -(s * np.log(q) + (1 - s) * np.log1p(-q))
    if weights is not None:
        elem = elem * np.where(t == 1, weights[1], weights[0])
    return elem.mean(axis=-1)


def np_log_probs(p, from_logits):
    if from_logits:
        m = p.max(axis=-1, keepdims=True)
        return p - m - np.log(np.exp(p - m).sum(axis=-1, keepdims=True))
    return np.log(np.clip(p / p.sum(axis=-1, keepdims=True), EPS, 1 - EPS))


def np_cce(t, p, from_logits, smoothing=0.0, weights=None):
    c = t.shape[-1]
    s = t * (1 - smoothing) + smoothing / c
    loss = -np.einsum("...c,...c->...", s, np_log_probs(p, from_logits))
    if weights is not None:
        loss = loss * np.asarray(weights)[t.argmax(axis=-1)]
    return loss


def np_scce(y, p, from_logits, weights=None):
    if from_logits:
        logp = np_log_probs(p, True)
    else:
        # Keras clips (without renormalising) then takes a log-softmax.
        logp = np_log_probs(np.log(np.clip(p, EPS, 1 - EPS)), True)
    picked = -np.take_along_axis(logp, y[..., None].astype(int), axis=-1)[..., 0]
    if weights is not None:
        picked = picked * np.asarray(weights)[y.astype(int)]
    return picked


def np_kld(t, p):
    t, p = np.clip(t, EPS, 1), np.clip(p, EPS, 1)
    return (t * (np.log(t) - np.log(p))).sum(axis=-1)


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def data(rng, dtype, n=6, c=4):
    logits = rng.normal(scale=3.0, size=(n, c)).astype(dtype)
    one_hot = np.eye(c, dtype=dtype)[rng.integers(0, c, n)]
    return {
        "values": rng.normal(size=(n, c)).astype(dtype),
        "targets": rng.normal(size=(n, c)).astype(dtype),
        "binary": rng.integers(0, 2, (n, c)).astype(dtype),
        "logits": logits,
        "probs": softmax(logits).astype(dtype),
        "sigmoid": (1 / (1 + np.exp(-logits))).astype(dtype),
        "one_hot": one_hot,
        "sparse": one_hot.argmax(-1).astype(dtype),
        "dist": softmax(rng.normal(size=(n, c))).astype(dtype),
    }


def check(actual, expected, dtype):
    actual = keras.ops.convert_to_numpy(actual)
    assert actual.dtype == np.dtype(dtype)
    np.testing.assert_allclose(actual, expected, **TOL[dtype])


# ------------------------------------------------------------------- values
@pytest.mark.parametrize("dtype", DTYPES)
def test_regression_functions_match_references(rng, dtype):
    d = data(rng, dtype)
    t, p = d["targets"], d["values"]
    check(losses.mean_squared_error(t, p), np_mse(t, p), dtype)
    check(losses.mean_absolute_error(t, p), np_mae(t, p), dtype)
    for delta in (0.1, 1.0, 2.5):
        check(losses.huber(t, p, delta=delta), np_huber(t, p, delta), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_hinge_matches_reference_for_signed_and_binary_labels(rng, dtype):
    d = data(rng, dtype)
    signed = 2 * d["binary"] - 1
    check(losses.hinge(signed, d["values"]), np_hinge(signed, d["values"]), dtype)
    check(losses.hinge(d["binary"], d["values"]), np_hinge(signed, d["values"]), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_crossentropy_matches_reference(rng, dtype):
    d = data(rng, dtype)
    for from_logits, smoothing in itertools.product([False, True], [0.0, 0.2]):
        p = d["logits"] if from_logits else d["sigmoid"]
        actual = losses.binary_crossentropy(
            d["binary"], p, from_logits=from_logits, label_smoothing=smoothing
        )
        check(actual, np_bce(d["binary"], p, from_logits, smoothing), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_categorical_crossentropy_matches_reference(rng, dtype):
    d = data(rng, dtype)
    for from_logits, smoothing in itertools.product([False, True], [0.0, 0.2]):
        p = d["logits"] if from_logits else d["probs"]
        actual = losses.categorical_crossentropy(
            d["one_hot"], p, from_logits=from_logits, label_smoothing=smoothing
        )
        check(actual, np_cce(d["one_hot"], p, from_logits, smoothing), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("from_logits", [False, True])
def test_sparse_categorical_crossentropy_matches_reference(rng, dtype, from_logits):
    d = data(rng, dtype)
    p = d["logits"] if from_logits else d["probs"]
    actual = losses.sparse_categorical_crossentropy(
        d["sparse"], p, from_logits=from_logits
    )
    check(actual, np_scce(d["sparse"], p, from_logits), dtype)
    # Labels with a trailing axis of size 1 give the same result.
    column = losses.sparse_categorical_crossentropy(
        d["sparse"][:, None], p, from_logits=from_logits
    )
    check(column, np_scce(d["sparse"], p, from_logits), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kl_divergence_matches_reference(rng, dtype):
    d = data(rng, dtype)
    check(
        losses.kl_divergence(d["dist"], d["probs"]),
        np_kld(d["dist"], d["probs"]),
        dtype,
    )
    # One-hot targets have zeros: clipped to epsilon as in Keras.
    check(
        losses.kl_divergence(d["one_hot"], d["probs"]),
        np_kld(d["one_hot"], d["probs"]),
        dtype,
    )


@needs_float64
def test_sparse_ignore_class_zeroes_ignored_positions(rng):
    d = data(rng, "float64")
    y = d["sparse"].copy()
    y[[1, 4]] = -1
    actual = keras.ops.convert_to_numpy(
        losses.sparse_categorical_crossentropy(y, d["probs"], ignore_class=-1)
    )
    expected = np_scce(np.where(y < 0, 0, y), d["probs"], False)
    expected[[1, 4]] = 0.0
    np.testing.assert_allclose(actual, expected, rtol=1e-10)


# ------------------------------------------------------------ class weights
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("from_logits", [False, True])
def test_class_weights_by_hand(rng, dtype, from_logits):
    d = data(rng, dtype)
    weights = [0.5, 1.0, 3.0, 2.0]
    p = d["logits"] if from_logits else d["probs"]
    cce = losses.categorical_crossentropy(
        d["one_hot"], p, from_logits=from_logits, class_weights=weights
    )
    check(cce, np_cce(d["one_hot"], p, from_logits, weights=weights), dtype)
    scce = losses.sparse_categorical_crossentropy(
        d["sparse"], p, from_logits=from_logits, class_weights=weights
    )
    check(scce, np_scce(d["sparse"], p, from_logits, weights=weights), dtype)
    pb = d["logits"] if from_logits else d["sigmoid"]
    bce = losses.binary_crossentropy(
        d["binary"], pb, from_logits=from_logits, class_weights=[0.25, 4.0]
    )
    check(bce, np_bce(d["binary"], pb, from_logits, weights=[0.25, 4.0]), dtype)


@needs_float64
def test_class_weights_all_ones_equal_unweighted(rng):
    d = data(rng, "float64")
    pairs = [
        (losses.binary_crossentropy, d["binary"], d["sigmoid"], [1.0, 1.0]),
        (losses.categorical_crossentropy, d["one_hot"], d["probs"], [1.0] * 4),
        (losses.sparse_categorical_crossentropy, d["sparse"], d["probs"], [1] * 4),
    ]
    for fn, t, p, ones in pairs:
        np.testing.assert_array_equal(fn(t, p, class_weights=ones), fn(t, p))


def test_soft_label_class_weights_interpolate():
    # hand computed: soft label (0.25, 0.75) with weights (2, 4) weighs
    # the sample by 0.25 * 2 + 0.75 * 4 = 3.5.
    t = np.array([[0.25, 0.75]])
    p = np.array([[0.5, 0.5]])
    weighted = losses.categorical_crossentropy(t, p, class_weights=[2.0, 4.0])
    np.testing.assert_allclose(weighted, 3.5 * np.log(2.0), rtol=1e-6)


# --------------------------------------------------------------- limit cases
@needs_float64
def test_huber_with_huge_delta_is_half_mse(rng):
    d = data(rng, "float64")
    np.testing.assert_allclose(
        losses.huber(d["targets"], d["values"], delta=1e6),
        0.5 * np_mse(d["targets"], d["values"]),
        rtol=1e-12,
    )


@needs_float64
def test_huber_with_tiny_delta_is_delta_times_mae(rng):
    # |e| >> delta everywhere: loss = delta * |e| - delta**2 / 2.
    d = data(rng, "float64")
    delta = 1e-9
    expected = delta * np_mae(d["targets"], d["values"]) - 0.5 * delta**2
    np.testing.assert_allclose(
        losses.huber(d["targets"], d["values"], delta=delta), expected, rtol=1e-9
    )


def test_full_label_smoothing_gives_uniform_targets():
    # label_smoothing=1: targets become 1/C; loss is the mean of -log p.
    p = np.array([[0.2, 0.3, 0.5]])
    actual = losses.categorical_crossentropy(
        np.array([[1.0, 0, 0]]), p, label_smoothing=1.0
    )
    np.testing.assert_allclose(actual, -np.log(p).mean(axis=-1), rtol=1e-6)


# ---------------------------------------------------------------- stability
def _loss_and_grad(fn, y_true, y_pred, **kwargs):
    losses_, (grad,) = grad_of_sum(lambda x: fn(y_true, x, **kwargs), y_pred)
    return np.sum(losses_), grad


@pytest.mark.parametrize("dtype", DTYPES)
def test_crossentropies_with_extreme_logits_are_finite(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], dtype=dtype)
    one_hot = np.array([[0, 1, 0], [1, 0, 0]], dtype=dtype)
    cases = [
        (losses.binary_crossentropy, one_hot),
        (losses.categorical_crossentropy, one_hot),
        (losses.sparse_categorical_crossentropy, one_hot.argmax(-1)),
    ]
    for fn, labels in cases:
        loss, grad = _loss_and_grad(fn, labels, logits, from_logits=True)
        assert np.isfinite(loss) and np.isfinite(grad).all(), fn.__name__
    # hand computed: the true class of row 0 sits 2e4 below the max logit,
    # so CCE row 0 = 2e4; row 1 = 1e4 + log(2) (two tied maxima at 1e4).
    cce = keras.ops.convert_to_numpy(
        losses.categorical_crossentropy(one_hot, logits, from_logits=True)
    )
    np.testing.assert_allclose(cce, [2e4, 2e4 + np.log(2)], rtol=1e-6)
    # BCE on row 0: softplus(1e4) + softplus(1e4) + softplus(0), averaged.
    bce = keras.ops.convert_to_numpy(
        losses.binary_crossentropy(one_hot, logits, from_logits=True)
    )
    np.testing.assert_allclose(bce[0], (2e4 + np.log(2)) / 3, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_probabilities_of_exactly_zero_and_one_are_finite(dtype):
    probs = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=dtype)
    labels = np.array([[0, 1, 0], [0, 0, 1]], dtype=dtype)
    cases = [
        (losses.binary_crossentropy, labels),
        (losses.categorical_crossentropy, labels),
        (losses.sparse_categorical_crossentropy, labels.argmax(-1)),
        (losses.kl_divergence, labels),
    ]
    for fn, t in cases:
        loss, grad = _loss_and_grad(fn, t, probs)
        assert np.isfinite(loss) and np.isfinite(grad).all(), fn.__name__
    # hand computed: a wrong certain prediction costs -log(epsilon).
    cce = keras.ops.convert_to_numpy(losses.categorical_crossentropy(labels, probs))
    np.testing.assert_allclose(cce[0], -np.log(EPS), rtol=1e-4)


def test_regression_and_hinge_gradients_at_extremes_are_finite():
    x = np.array([[1e4, -1e4, 0.0]])
    t = np.array([[-1.0, 1.0, 1.0]])
    for fn in (
        losses.mean_squared_error,
        losses.mean_absolute_error,
        losses.huber,
        losses.hinge,
    ):
        loss, grad = _loss_and_grad(fn, t, x)
        assert np.isfinite(loss) and np.isfinite(grad).all(), fn.__name__


# ----------------------------------------------------------------- gradients
@needs_float64
def test_logit_gradients_match_analytic_derivatives(rng):
    d = data(rng, "float64")
    n, c = d["logits"].shape
    _, g_bce = _loss_and_grad(
        losses.binary_crossentropy, d["binary"], d["logits"], from_logits=True
    )
    # d/dx mean_c BCE = (sigmoid(x) - t) / C
    np.testing.assert_allclose(g_bce, (d["sigmoid"] - d["binary"]) / c, rtol=1e-9)
    _, g_cce = _loss_and_grad(
        losses.categorical_crossentropy, d["one_hot"], d["logits"], from_logits=True
    )
    # d/dx CCE = softmax(x) - t
    np.testing.assert_allclose(g_cce, d["probs"] - d["one_hot"], rtol=1e-9, atol=1e-12)


@needs_float64
def test_regression_gradients_match_analytic_derivatives(rng):
    d = data(rng, "float64")
    t, p = d["targets"], d["values"]
    c = t.shape[-1]
    _, g_mse = _loss_and_grad(losses.mean_squared_error, t, p)
    np.testing.assert_allclose(g_mse, 2 * (p - t) / c, rtol=1e-9)
    _, g_huber = _loss_and_grad(losses.huber, t, p, delta=0.5)
    np.testing.assert_allclose(g_huber, np.clip(p - t, -0.5, 0.5) / c, rtol=1e-9)


@needs_float64
def test_kl_gradient_matches_finite_differences(rng):
    t = softmax(rng.normal(size=(2, 4)))
    p = softmax(rng.normal(size=(2, 4)))
    _, grad = _loss_and_grad(losses.kl_divergence, t, p)
    h = 1e-6
    numeric = np.zeros_like(p)
    for idx in np.ndindex(p.shape):
        up, down = p.copy(), p.copy()
        up[idx] += h
        down[idx] -= h
        numeric[idx] = (np_kld(t, up).sum() - np_kld(t, down).sum()) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6)
    np.testing.assert_allclose(grad, -t / p, rtol=1e-12)  # analytic: d/dp = -t/p
