"""Activation functions against NumPy references and analytic derivatives.

The references are written in a different (but equivalent) form from the
code under test: sigmoid via `logaddexp`, tanh via sigmoid, softmax via
log-sum-exp, ELU and swish without the where-safe trick.
"""

import keras
import numpy as np
import pytest

from keras_actloss import activations
from tests.backend_support import FLOAT_DTYPES, grad_of_sum, needs_float64


def np_sigmoid(x):
    # sigmoid(x) = exp(-log(1 + exp(-x))), stable both ways via logaddexp.
    return np.exp(-np.logaddexp(0.0, -x))


def np_tanh(x):
    # tanh(x) = 2 sigmoid(2x) - 1.
    return 2.0 * np_sigmoid(2.0 * x) - 1.0


def np_relu(x):
    return x * (x > 0)


def np_leaky_relu(x, negative_slope=0.2):
    # For slopes <= 1, leaky_relu(x) = max(x, slope * x).
    return np.maximum(x, negative_slope * x)


def np_elu(x, alpha=1.0):
    with np.errstate(over="ignore"):
        return np.where(x > 0, x, alpha * (np.exp(x) - 1.0))


def np_swish(x, beta=1.0):
    with np.errstate(over="ignore"):
        return x / (1.0 + np.exp(-beta * x))


def np_softmax(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    lse = m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))
    return np.exp(x - lse)


# name -> (function kwargs, reference, analytic derivative)
CASES = {
    "sigmoid": ({}, np_sigmoid, lambda x: np_sigmoid(x) * (1 - np_sigmoid(x))),
    "tanh": ({}, np_tanh, lambda x: 1.0 - np_tanh(x) ** 2),
    "relu": ({}, np_relu, lambda x: (x > 0).astype(x.dtype)),
    "leaky_relu": (
        {"negative_slope": 0.1},
        lambda x: np_leaky_relu(x, 0.1),
        lambda x: np.where(x > 0, 1.0, 0.1),
    ),
    "elu": (
        {"alpha": 1.5},
        lambda x: np_elu(x, 1.5),
        lambda x: np.where(x > 0, 1.0, 1.5 * np.exp(np.minimum(x, 0))),
    ),
    "swish": (
        {"beta": 2.0},
        lambda x: np_swish(x, 2.0),
        # d/dx x s(bx) = s(bx) + b x s(bx) (1 - s(bx)).
        lambda x: np_sigmoid(2 * x) + 2 * x * np_sigmoid(2 * x) * np_sigmoid(-2 * x),
    ),
    "linear": ({}, lambda x: x, np.ones_like),
}
ELEMENTWISE = sorted(CASES)
TOL = {"float16": 2e-3, "float32": 1e-6, "float64": 1e-12}
EXTREMES = [-1e4, -30.0, -1.0, -1e-3, 0.0, 1e-3, 1.0, 30.0, 1e4]


def _grad(fn, x, **kwargs):
    y, (g,) = grad_of_sum(fn, x, **kwargs)
    return y, g


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_matches_numpy_reference(name, dtype, rng):
    kwargs, ref, _ = CASES[name]
    x = rng.normal(scale=3.0, size=(4, 7)).astype(dtype)
    got = keras.ops.convert_to_numpy(getattr(activations, name)(x, **kwargs))
    assert got.dtype == dtype
    want = ref(x.astype("float64"))
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_extreme_inputs_finite_values_and_gradients(name, dtype):
    kwargs, ref, deriv = CASES[name]
    x = np.array(EXTREMES, dtype=dtype)
    y, g = _grad(getattr(activations, name), x, **kwargs)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(g))
    x64 = x.astype("float64")
    np.testing.assert_allclose(y, ref(x64), rtol=TOL[dtype], atol=TOL[dtype])
    nonzero = x64 != 0  # the kink of relu-like functions is checked elsewhere
    np.testing.assert_allclose(
        g[nonzero], deriv(x64)[nonzero], rtol=TOL[dtype], atol=TOL[dtype]
    )


@needs_float64
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_gradient_float64_matches_analytic(name, rng):
    kwargs, _, deriv = CASES[name]
    x = rng.normal(scale=3.0, size=(50,))
    _, g = _grad(getattr(activations, name), x, **kwargs)
    np.testing.assert_allclose(g, deriv(x), rtol=1e-12, atol=1e-12)


KERAS_SAME = {
    "sigmoid": (keras.activations.sigmoid, {}),
    "tanh": (keras.activations.tanh, {}),
    "relu": (keras.activations.relu, {}),
    "leaky_relu": (keras.activations.leaky_relu, {"negative_slope": 0.1}),
    "elu": (keras.activations.elu, {"alpha": 1.5}),
    "linear": (keras.activations.linear, {}),
}


@pytest.mark.parametrize("name", sorted(KERAS_SAME))
def test_matches_keras_builtin(name, rng):
    keras_fn, kwargs = KERAS_SAME[name]
    x = rng.normal(scale=3.0, size=(3, 5)).astype("float32")
    ours = keras.ops.convert_to_numpy(getattr(activations, name)(x, **kwargs))
    theirs = keras.ops.convert_to_numpy(keras_fn(x, **kwargs))
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)


def test_swish_beta_one_is_keras_silu(rng):
    x = rng.normal(scale=3.0, size=(3, 5)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(activations.swish(x)),
        keras.ops.convert_to_numpy(keras.activations.silu(x)),
        rtol=1e-6,
        atol=1e-7,
    )


def test_default_leaky_slope_matches_keras():
    x = np.array([-3.0, 2.0], dtype="float32")
    np.testing.assert_allclose(
        activations.leaky_relu(x), keras.activations.leaky_relu(x), rtol=0
    )
    # hand computed: 0.2 * -3 = -0.6
    np.testing.assert_allclose(activations.leaky_relu(x), [-0.6, 2.0], rtol=1e-6)


def test_leaky_relu_accepts_tensor_slope_and_differentiates_it():
    x = np.array([[-2.0, 3.0], [-1.0, -4.0]], dtype="float32")
    slope = np.array([0.1, 0.5], dtype="float32")
    y, (_, grad) = grad_of_sum(
        lambda x, s: activations.leaky_relu(x, negative_slope=s), x, slope
    )
    # d y / d slope_j = sum_i min(x_ij, 0): [-2 - 1, -4] = [-3, -4].
    np.testing.assert_allclose(grad, [-3.0, -4.0])
    np.testing.assert_allclose(y, [[-0.2, 3.0], [-0.1, -2.0]], rtol=1e-6)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax_matches_reference(dtype, axis, rng):
    x = rng.normal(scale=3.0, size=(4, 6)).astype(dtype)
    got = keras.ops.convert_to_numpy(activations.softmax(x, axis=axis))
    np.testing.assert_allclose(
        got, np_softmax(x.astype("float64"), axis), rtol=TOL[dtype], atol=TOL[dtype]
    )
    np.testing.assert_allclose(
        got,
        keras.ops.convert_to_numpy(keras.activations.softmax(x, axis=axis)),
        rtol=TOL[dtype],
    )


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_softmax_large_logits_are_stable(dtype):
    x = np.array([[1e4, 0.0, -1e4], [1e4, 1e4, -1e4]], dtype=dtype)
    w = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], dtype=dtype)
    p = activations.softmax(x)
    _, (g,) = grad_of_sum(lambda x: keras.ops.multiply(w, activations.softmax(x)), x)
    # hand computed: one dominant logit -> one-hot; two tied -> halves.
    np.testing.assert_allclose(p, [[1, 0, 0], [0.5, 0.5, 0]], atol=TOL[dtype])
    assert np.all(np.isfinite(g))


@needs_float64
def test_softmax_gradient_float64_matches_jacobian(rng):
    x = rng.normal(size=(3, 5))
    w = rng.normal(size=(3, 5))
    _, (g,) = grad_of_sum(lambda x: keras.ops.multiply(w, activations.softmax(x)), x)
    p = np_softmax(x)
    # J = diag(p) - p p^T, so J^T w = p * (w - <w, p>).
    want = p * (w - np.sum(w * p, axis=-1, keepdims=True))
    np.testing.assert_allclose(g, want, rtol=1e-12)


def test_masked_softmax_matches_keras_softmax_layer(rng):
    x = rng.normal(size=(2, 5)).astype("float32")
    mask = np.array([[1, 1, 0, 1, 0], [0, 0, 0, 0, 0]], dtype=bool)
    got = keras.ops.convert_to_numpy(activations.masked_softmax(x, mask))
    want = keras.ops.convert_to_numpy(keras.layers.Softmax()(x, mask=mask))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    row = np_softmax(x[0, [0, 1, 3]])
    np.testing.assert_allclose(got[0, [0, 1, 3]], row, rtol=1e-6)
    assert np.all(got[0, [2, 4]] == 0) and np.all(got[1] == 0)


def test_masked_softmax_mask_broadcasts_numpy_style():
    x = np.zeros((2, 3), dtype="float32")
    mask = np.array([True, False, True])  # trailing axis aligned, as NumPy
    got = keras.ops.convert_to_numpy(activations.masked_softmax(x, mask))
    # hand computed: 1/2 on the two kept columns of each row, 0 on the other.
    np.testing.assert_allclose(got, [[0.5, 0.0, 0.5]] * 2)
    want = keras.layers.Softmax()(x, mask=mask)
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(want))


@pytest.mark.parametrize(
    "mask_shape, message",
    [((1, 2), "Each mask dimension must be 1"), ((1, 1, 2, 4), "more dimensions")],
)
def test_masked_softmax_mask_that_does_not_fit_raises_as_keras(mask_shape, message):
    # A per-timestep mask (1, 2) on (1, 2, 4) does not broadcast NumPy-style.
    x = np.zeros((1, 2, 4), dtype="float32")
    mask = np.ones(mask_shape, dtype=bool)
    with pytest.raises(ValueError, match=message):
        activations.masked_softmax(x, mask)
    with pytest.raises(ValueError, match=message):
        keras.layers.Softmax()(x, mask=mask)


@needs_float64
def test_masked_softmax_without_mask_is_softmax(rng):
    x = rng.normal(size=(2, 3))
    np.testing.assert_allclose(activations.masked_softmax(x), np_softmax(x), rtol=1e-12)


def test_relu_like_gradient_at_zero_is_zero_or_slope():
    # Convention shared with tf.nn.relu / tf.nn.leaky_relu: the kink belongs to
    # the negative side.
    x = np.zeros(1)
    assert _grad(activations.relu, x)[1][0] == 0.0
    assert _grad(activations.leaky_relu, x, negative_slope=0.3)[1][0] == 0.3
    # relu with a slope is leaky: not 0, outside its subgradients [0.3, 1]
    # (a zero-initialised layer would never learn; Keras's relu calls its
    # leaky_relu there too).
    assert _grad(activations.relu, x, negative_slope=0.3)[1][0] == 0.3
    assert _grad(activations.elu, x)[1][0] == 1.0  # alpha * exp(0)


def test_masked_softmax_float16_with_numeric_mask():
    x = np.array([[2.0, 1e4, -1e4]], dtype="float16")
    mask = np.array([[1.0, 0.0, 1.0]], dtype="float16")
    got = keras.ops.convert_to_numpy(activations.masked_softmax(x, mask))
    # hand computed: the huge logit is masked, the rest is softmax([2, -1e4]).
    np.testing.assert_allclose(got, [[1.0, 0.0, 0.0]], atol=1e-3)


def np_relu_full(x, negative_slope, max_value, threshold):
    """Keras's formula (keras.activations.relu), for threshold >= 0.

    Inputs above the threshold pass, capped; the rest get the slope. (At
    x == threshold == max_value Keras gives 0, not the cap.)
    """
    cap = np.inf if max_value is None else max_value
    return np.where(x > threshold, np.minimum(x, cap), negative_slope * (x - threshold))


RELU_VARIANTS = [
    (0.0, None, 0.0),
    (0.5, None, 0.0),
    (0.0, 6.0, 0.0),
    (0.0, None, 5.0),
    (0.5, 5.0, 5.0),
    (0.1, 8.0, 2.0),
]


@needs_float64
@pytest.mark.parametrize("negative_slope, max_value, threshold", RELU_VARIANTS)
def test_relu_arguments_match_keras_and_numpy(negative_slope, max_value, threshold):
    x = np.concatenate([np.linspace(-12.0, 12.0, 49), EXTREMES])
    kwargs = dict(
        negative_slope=negative_slope, max_value=max_value, threshold=threshold
    )
    got = keras.ops.convert_to_numpy(activations.relu(x, **kwargs))
    np.testing.assert_allclose(got, np_relu_full(x, **kwargs), rtol=1e-12)
    want = keras.ops.convert_to_numpy(keras.activations.relu(x, **kwargs))
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("fn", ["relu", "leaky_relu"])
def test_integer_inputs_give_keras_dtype(fn):
    x = np.array([-2, 0, 3])
    for kwargs in ({}, {"negative_slope": 0.5}):
        got = getattr(activations, fn)(x, **kwargs)
        want = getattr(keras.activations, fn)(x, **kwargs)
        assert got.dtype == want.dtype, kwargs
        np.testing.assert_array_equal(got, want)
