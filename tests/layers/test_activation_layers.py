"""Layers: same numbers as the functions and Keras, learning, masking, errors."""

import keras
import numpy as np
import pytest

from keras_actloss import activations, layers
from tests.backend_support import weight_grads

# layer -> (the function it must equal, the Keras layer that must agree)
PAIRS = [
    (layers.ReLU(), activations.relu, keras.layers.ReLU()),
    (layers.LeakyReLU(0.3), lambda x: activations.leaky_relu(x, 0.3), None),
    (layers.ELU(0.7), lambda x: activations.elu(x, 0.7), keras.layers.ELU(0.7)),
    (layers.Sigmoid(), activations.sigmoid, keras.layers.Activation("sigmoid")),
    (layers.Tanh(), activations.tanh, keras.layers.Activation("tanh")),
    (layers.Softmax(), activations.softmax, keras.layers.Softmax()),
    (layers.Swish(), activations.swish, keras.layers.Activation("silu")),
    (layers.Swish(beta=2.0), lambda x: activations.swish(x, 2.0), None),
]


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: p[0].__class__.__name__)
def test_layer_equals_function_and_keras(pair, rng):
    ours, fn, theirs = pair
    x = rng.normal(scale=3.0, size=(3, 4)).astype("float32")
    got = keras.ops.convert_to_numpy(ours(x))
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(fn(x)), rtol=1e-6)
    if theirs is not None:
        want = keras.ops.convert_to_numpy(theirs(x))
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_leaky_relu_matches_keras_layer_with_same_slope(rng):
    x = rng.normal(size=(3, 4)).astype("float32")
    np.testing.assert_allclose(
        layers.LeakyReLU(0.3)(x), keras.layers.LeakyReLU(0.3)(x), rtol=1e-6
    )


def test_prelu_matches_keras_prelu_and_learns(rng):
    x = rng.normal(size=(8, 3, 4)).astype("float32")
    ours = layers.PReLU(alpha_initializer=keras.initializers.Constant(0.25))
    theirs = keras.layers.PReLU(alpha_initializer=keras.initializers.Constant(0.25))
    np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-6)
    assert tuple(ours.alpha.shape) == (3, 4)
    (grad,) = weight_grads(ours, x)
    # d sum / d alpha_jk = sum over the batch of min(x, 0).
    np.testing.assert_allclose(grad, np.minimum(x, 0).sum(axis=0), rtol=1e-5)


@pytest.mark.parametrize(
    "shared_axes, shape", [(None, (4, 5, 3)), ([1, 2], (1, 1, 3)), (3, (4, 5, 1))]
)
def test_prelu_shared_axes_shape(shared_axes, shape, rng):
    layer = layers.PReLU(shared_axes=shared_axes)
    x = rng.normal(size=(2, 4, 5, 3)).astype("float32")
    layer(x)
    assert tuple(layer.alpha.shape) == shape
    keras_layer = keras.layers.PReLU(shared_axes=shared_axes)
    keras_layer(x)
    assert tuple(keras_layer.alpha.shape) == shape


def test_prelu_shared_axis_beyond_input_raises():
    with pytest.raises(ValueError, match=r"shared_axes.*Received: shared_axes=\[3\]"):
        layers.PReLU(shared_axes=3)(np.zeros((2, 4, 5), dtype="float32"))


def test_prelu_fits_a_leaky_target():
    # Target: leaky relu with slope 0.5; a PReLU fitted by SGD finds the slope.
    x = np.linspace(-2, 2, 64, dtype="float32").reshape(64, 1)
    y = np.where(x > 0, x, 0.5 * x)
    model = keras.Sequential([keras.Input((1,)), layers.PReLU()])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    model.fit(x, y, epochs=30, batch_size=64, verbose=0)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model.layers[0].alpha), [0.5], atol=1e-2
    )


def test_swish_trainable_beta_gets_a_gradient():
    layer = layers.Swish(beta=1.5, trainable_beta=True)
    x = np.array([[-1.0, 0.5, 2.0]], dtype="float32")
    (grad,) = weight_grads(layer, x)  # Builds the layer, as a call does.
    assert [w.name for w in layer.trainable_weights] == ["beta"]
    # d/db x s(bx) = x^2 s(bx) (1 - s(bx)).
    xs = np.array([-1.0, 0.5, 2.0])
    s = 1 / (1 + np.exp(-1.5 * xs))
    np.testing.assert_allclose(grad, np.sum(xs**2 * s * (1 - s)), rtol=1e-5)
    assert layers.Swish().trainable_weights == []


def test_relu_with_a_slope_passes_a_gradient_at_zero():
    # A Dense layer whose kernel and bias start at 0 outputs exactly 0: a
    # ReLU with a slope is leaky there and passes the slope back, so the
    # kernel learns (d sum(relu(x W)) / dW = x^T 0.1 at x W = 0).
    dense = keras.layers.Dense(2, kernel_initializer="zeros")
    model = keras.Sequential(
        [keras.Input((3,)), dense, layers.ReLU(negative_slope=0.1)]
    )
    x = np.array([[1.0, -2.0, 0.5]], dtype="float32")
    kernel, bias = weight_grads(model, x)
    np.testing.assert_allclose(kernel, 0.1 * x.T @ np.ones((1, 2)), rtol=1e-6)
    np.testing.assert_allclose(bias, [0.1, 0.1], rtol=1e-6)


ELEMENTWISE = [
    layers.ReLU,
    layers.LeakyReLU,
    layers.PReLU,
    layers.ELU,
    layers.Sigmoid,
    layers.Tanh,
    layers.Swish,
    layers.Softmax,
]


KERAS_ERRORS = [
    (layers.ReLU, {"max_value": -1}, "max_value of a ReLU layer cannot be a neg"),
    (layers.ReLU, {"negative_slope": None}, "negative_slope of a ReLU layer cannot"),
    (layers.ReLU, {"threshold": -1.0}, "threshold of a ReLU layer cannot be None"),
    (layers.LeakyReLU, {"negative_slope": None}, "negative_slope value of a Leaky"),
]


@pytest.mark.parametrize("cls, kwargs, message", KERAS_ERRORS, ids=str)
def test_keras_argument_errors_are_keras_messages(cls, kwargs, message):
    keras_cls = getattr(keras.layers, cls.__name__)
    with pytest.raises(ValueError, match=message):
        keras_cls(**kwargs)
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


@pytest.mark.parametrize(
    "cls",
    [c for c in ELEMENTWISE if c is not layers.Softmax],
    ids=lambda c: c.__name__,
)
def test_mask_propagates(cls):
    # Keras 3 carries masks on `_keras_mask`; it has no public accessor.
    embedding = keras.layers.Embedding(5, 2, mask_zero=True)
    embedded = embedding(np.array([[1, 0, 2]]))
    layer = cls()
    assert layer.supports_masking
    out = layer(embedded)
    np.testing.assert_array_equal(out._keras_mask, [[True, False, True]])
    mask = layer.compute_mask(embedded, embedded._keras_mask)
    np.testing.assert_array_equal(mask, [[True, False, True]])


def test_softmax_rejects_a_timestep_mask_as_keras():
    # (1, 3) does not broadcast to (1, 3, 2) NumPy-style; Keras raises too.
    embedded = keras.layers.Embedding(5, 2, mask_zero=True)(np.array([[1, 0, 2]]))
    for cls in (keras.layers.Softmax, layers.Softmax):
        with pytest.raises(ValueError, match="must be broadcastable to `inputs`"):
            cls()(embedded)


def test_softmax_mask_gives_zero_probability(rng):
    x = rng.normal(size=(2, 4)).astype("float32")
    mask = np.array([[1, 0, 1, 1], [1, 1, 1, 0]], dtype="float32")
    got = keras.ops.convert_to_numpy(layers.Softmax()(x, mask=mask))
    want = keras.ops.convert_to_numpy(keras.layers.Softmax()(x, mask=mask))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert got[0, 1] == 0 and got[1, 3] == 0
    np.testing.assert_allclose(got.sum(axis=-1), [1.0, 1.0], rtol=1e-6)


def test_softmax_axis(rng):
    x = rng.normal(size=(3, 4)).astype("float32")
    got = keras.ops.convert_to_numpy(layers.Softmax(axis=0)(x))
    np.testing.assert_allclose(got.sum(axis=0), np.ones(4), rtol=1e-6)


BAD = [
    (layers.LeakyReLU, {"negative_slope": -0.1}, "negative_slope=-0.1"),
    (layers.LeakyReLU, {"negative_slope": float("nan")}, "negative_slope=nan"),
    (layers.LeakyReLU, {"negative_slope": "0.1"}, "negative_slope='0.1'"),
    (layers.ELU, {"alpha": 0.0}, "alpha=0.0"),
    (layers.ELU, {"alpha": float("inf")}, "alpha=inf"),
    (layers.Swish, {"beta": -1.0}, "beta=-1.0"),
    (layers.Swish, {"beta": True}, "beta=True"),
    (layers.Swish, {"trainable_beta": "yes"}, "trainable_beta='yes'"),
    (layers.Softmax, {"axis": 1.0}, "axis=1.0"),
    (layers.Softmax, {"axis": []}, r"axis=\[\]"),
    (layers.Softmax, {"axis": (1, 1.0)}, r"axis=\(1, 1.0\)"),
    (layers.ReLU, {"max_value": float("inf")}, "max_value=inf"),
    (layers.ReLU, {"negative_slope": True}, "negative_slope=True"),
    (layers.ReLU, {"threshold": "1"}, "threshold='1'"),
    (layers.PReLU, {"shared_axes": [0]}, r"shared_axes=\[0\]"),
    (layers.PReLU, {"shared_axes": "1"}, "shared_axes='1'"),
    (layers.PReLU, {"shared_axes": [1.5]}, r"shared_axes=\[1.5\]"),
]


NUMPY_SCALARS = [
    (layers.LeakyReLU, {"negative_slope": np.float32(0.05)}),
    (layers.ELU, {"alpha": np.float64(0.5)}),
    (layers.Swish, {"beta": np.float32(1.5)}),
    (layers.ReLU, {"max_value": np.float32(6), "threshold": np.int64(1)}),
    (layers.ReLU, {"negative_slope": np.float32(0.1)}),
    (layers.Softmax, {"axis": np.int64(-1)}),
    (layers.Softmax, {"axis": (np.int32(0), np.int64(1))}),
    (layers.PReLU, {"shared_axes": [np.int64(1), np.int64(2)]}),
]


@pytest.mark.parametrize("cls, kwargs", NUMPY_SCALARS, ids=lambda v: str(v))
def test_numpy_scalars_are_numbers(cls, kwargs, rng):
    # As Keras's layers: a slope from `np.linspace` or an `.npz` file is a
    # number. The config holds Python numbers (JSON), with the same values,
    # and the layer computes what it computes with those.
    layer = cls(**kwargs)
    config = layer.get_config()
    python = {k: config[k] for k in kwargs}
    assert python == {
        k: type(v)(x.item() for x in v) if isinstance(v, tuple | list) else v.item()
        for k, v in kwargs.items()
    }
    flat = [x for v in python.values() for x in (v if hasattr(v, "__len__") else [v])]
    assert all(type(x) in (int, float) for x in flat)
    x = rng.normal(size=(2, 3, 4)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(x)),
        keras.ops.convert_to_numpy(cls(**python)(x)),
        rtol=1e-6,
    )


@pytest.mark.parametrize("cls, kwargs, received", BAD, ids=lambda v: str(v))
def test_bad_arguments_raise(cls, kwargs, received):
    (arg,) = kwargs
    with pytest.raises(
        ValueError, match=rf"Argument `{arg}` must .*Received: {received}"
    ):
        cls(**kwargs)


@pytest.mark.parametrize("cls", ELEMENTWISE + [layers.ReLU], ids=lambda c: c.__name__)
def test_built_at_init_unless_build_is_overridden(cls):
    assert cls().built == (cls is not layers.PReLU)

    class Overriding(cls):
        def build(self, input_shape):
            self.seen_shape = tuple(input_shape)
            super().build(input_shape)

    layer = Overriding()
    assert not layer.built
    layer(np.zeros((2, 3), dtype="float32"))
    assert layer.built and layer.seen_shape == (2, 3)


KERAS_CONFIGS = [
    keras.layers.ReLU(max_value=5.0, negative_slope=0.2, threshold=1.0),
    keras.layers.LeakyReLU(0.3),
    keras.layers.ELU(alpha=0.7),
    keras.layers.Softmax(axis=(1, 2)),
    keras.layers.PReLU(alpha_initializer="ones", shared_axes=[1]),
]


@pytest.mark.parametrize("keras_layer", KERAS_CONFIGS, ids=lambda x: type(x).__name__)
def test_keras_config_loads_into_ours(keras_layer, rng):
    ours = getattr(layers, type(keras_layer).__name__).from_config(
        keras_layer.get_config()
    )
    assert ours.get_config() == keras_layer.get_config()
    x = rng.normal(scale=4.0, size=(2, 3, 7)).astype("float32")
    np.testing.assert_allclose(ours(x), keras_layer(x), rtol=1e-6, atol=1e-7)


def test_relu_profile_follows_its_cap():
    layer = layers.ReLU(max_value=5.0, negative_slope=0.2, threshold=1.0)
    assert layer.activation_profile().saturation_bounds == (-np.inf, 5.0)
    assert layer.activation_profile().inactive_gradient == 0.2
