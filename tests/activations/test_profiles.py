"""Activation profiles: values checked numerically, and `profile()` inputs."""

import functools
import math

import keras
import numpy as np
import pytest

import keras_actloss
from keras_actloss import registry
from keras_actloss.activations import profile
from keras_actloss.profiles import ACTIVATION_FAMILIES, ActivationProfile
from tests.backend_support import needs_float64

X = np.linspace(-20.0, 20.0, 400_001)
# Keras's activations that take no element-wise input, or need arguments.
NOT_ELEMENTWISE = ("softmax", "log_softmax", "sparsemax", "glu")
# Names whose finite lower bound is only approached (not reached on the grid).
ASYMPTOTIC = ("sigmoid", "tanh", "softsign", "squareplus")
KERAS_ACTIVATIONS = sorted(
    name
    for name in dir(keras.activations)
    if not name.startswith("_")
    and name not in ("get", "serialize", "deserialize")
    and callable(getattr(keras.activations, name))
)


def _keras_fn(name):
    if name == "threshold":  # no defaults in Keras; the name's profile is this
        return functools.partial(
            keras.activations.threshold, threshold=0.0, default_value=0.0
        )
    return keras.activations.get(name)


def _values(name, x=X):
    return keras.ops.convert_to_numpy(_keras_fn(name)(x))


def test_every_keras_activation_has_a_profile():
    assert len(KERAS_ACTIVATIONS) >= 30  # Keras 3.15 has 32
    missing = set(KERAS_ACTIVATIONS) - set(registry.profiles("activation"))
    assert not missing
    for name in KERAS_ACTIVATIONS:
        assert profile(getattr(keras.activations, name)) is not None, name
        assert profile(keras.layers.Dense(2, activation=name)) is not None, name


# The float64 grid meets these bounds exactly; in float32 (JAX without x64)
# the minimum rounds past them by more than the 1e-9 slack (-0.37500003).
ON_THEIR_BOUND = ("hard_silu", "hard_swish")


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=needs_float64) if n in ON_THEIR_BOUND else n
        for n in sorted(registry.profiles("activation"))
    ],
)
def test_every_profile_is_consistent(name):
    p = profile(name)
    assert isinstance(p, ActivationProfile) and p.name == name
    assert p.family in ACTIVATION_FAMILIES
    low, high = p.output_range
    assert low < high
    if p.inactive_below is not None:
        assert p.inactive_from <= p.inactive_below
    if p.name == "prelu":  # a layer, no function
        return
    if p.name in NOT_ELEMENTWISE:
        x = np.random.default_rng(0).normal(scale=5.0, size=(64, 8))
        y = _values(name, x)
    else:
        y = _values(name)
    # The declared range holds, and finite lower bounds are tight (within
    # 1e-3 on a grid from -20 to 20) unless only approached.
    assert y.min() >= low - 1e-9 and y.max() <= high + 1e-9
    if math.isfinite(low) and name not in ASYMPTOTIC + NOT_ELEMENTWISE:
        assert y.min() - low < 1e-3


# Off-grid by a third of a step so no sample sits on a kink (0, +-0.5, +-1,
# -3, 6) and central differences never straddle one.
GRID = np.linspace(-20.0, 20.0, 40_001) + 3.3e-4
STEP = 1e-6


@needs_float64
@pytest.mark.parametrize(
    "name",
    [n for n in KERAS_ACTIVATIONS if n not in NOT_ELEMENTWISE],
)
def test_profile_regions_match_the_numeric_derivative(name):
    p = profile(name)
    fn = _keras_fn(name)
    y = keras.ops.convert_to_numpy(fn(GRID))
    # Central differences in float64.
    upper = keras.ops.convert_to_numpy(fn(GRID + STEP))
    lower = keras.ops.convert_to_numpy(fn(GRID - STEP))
    slope = np.abs((upper - lower) / (2 * STEP))
    allowed_zero = np.zeros_like(y, dtype=bool)
    if p.inactive_below is not None:
        region = (y >= p.inactive_from) & (y <= p.inactive_below)
        assert region.any(), "the inactive region is reached"
        if p.inactive_gradient is not None:
            np.testing.assert_allclose(slope[region], p.inactive_gradient, atol=1e-6)
        if p.can_die:
            allowed_zero |= region
    if p.saturation_bounds is not None:
        low, high = p.saturation_bounds
        flat = (y <= low) | (y >= high)
        assert flat.any(), "the saturated region is reached"
        largest = min(slope.max(), 1.0)
        threshold = p.saturation_gradient * largest
        # Flat where the profile says so, and only there (2% slack for the
        # rounded fractions: sigmoid's is 0.0396, documented as 0.04).
        assert slope[flat].max() <= threshold * 1.02 + 1e-9
        assert slope[~flat].min() >= threshold * 0.98
        if p.saturation_gradient == 0.0:
            allowed_zero |= flat
    # A zero derivative outside the declared regions is a missing region.
    # (|x| <= 5: gelu's far tail is flat to 1e-22, see keras_profiles.)
    near = np.abs(GRID) <= 5.0
    assert not ((slope <= 1e-12) & ~allowed_zero & near).any()


@needs_float64  # central differences over a float64 grid, as above
@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("threshold", {"threshold": 1.0, "default_value": -2.0}),
        ("threshold", {"threshold": -1.0, "default_value": 3.0}),
        ("hard_shrink", {"threshold": 2.0}),
        ("relu", {"max_value": 3.0, "negative_slope": 0.1}),
        ("squareplus", {"b": 9.0}),
        ("celu", {"alpha": 2.0}),
    ],
)
def test_profile_of_partial_follows_its_arguments(name, kwargs):
    fn = functools.partial(getattr(keras.activations, name), **kwargs)
    p = profile(fn)
    y = keras.ops.convert_to_numpy(fn(GRID))
    slope = np.abs(keras.ops.convert_to_numpy(fn(GRID + STEP) - fn(GRID - STEP)))
    slope /= 2 * STEP
    assert y.min() >= p.output_range[0] - 1e-9 and y.max() <= p.output_range[1]
    if p.inactive_below is not None:
        region = (y >= p.inactive_from) & (y <= p.inactive_below)
        assert region.any()
        if p.can_die:
            assert slope[region].max() < 1e-9
            cap = p.saturation_bounds[1] if p.saturation_bounds else np.inf
            assert slope[~region & (y < cap)].min() > 0
    if p.saturation_bounds is not None and p.saturation_gradient:
        low, high = p.saturation_bounds
        flat = (y <= low) | (y >= high)
        threshold = p.saturation_gradient * min(slope.max(), 1.0)
        assert slope[flat].max() <= threshold * 1.02
        assert slope[~flat].min() >= threshold * 0.98
    assert profile(functools.partial(keras.activations.sigmoid)).name == "sigmoid"
    assert profile(functools.partial(keras.activations.gelu, approximate=True)) is None


def test_saturation_gradients_are_the_documented_fraction():
    # Derivative at the bound, over the largest derivative.
    s = 0.99
    assert profile("sigmoid").saturation_gradient == pytest.approx(
        s * (1 - s) / 0.25, abs=1e-3
    )
    t = 0.99
    assert profile("tanh").saturation_gradient == pytest.approx(1 - t**2, abs=1e-3)


def test_relu_and_leaky_profiles():
    relu = profile("relu")
    assert relu.inactive_below == 0.0 and relu.inactive_gradient == 0.0
    assert relu.can_die and not relu.saturates
    leaky = profile("leaky_relu")
    assert leaky.inactive_gradient == 0.2 and not leaky.can_die
    assert profile("elu").inactive_gradient is None
    assert profile("sigmoid").saturation_bounds == (0.01, 0.99)
    assert profile("tanh").saturation_bounds == (-0.99, 0.99)
    # ELU's negative part has derivative y + 1: 0.01 at y = -0.99; SELU's
    # y + 1.7581 (lambda alpha) likewise at y = 0.01 - 1.7581; CELU's
    # (alpha 2) y / 2 + 1 at y = -1.98. Each flat below, a saturating
    # activation that cannot die.
    assert profile("elu").saturation_bounds == pytest.approx((-0.99, math.inf))
    assert profile("selu").saturation_bounds == pytest.approx(
        (-1.7481, math.inf), abs=1e-4
    )
    celu = profile(functools.partial(keras.activations.celu, alpha=2.0))
    assert celu.saturation_bounds == pytest.approx((-1.98, math.inf))
    assert all(
        profile(name).saturates and not profile(name).can_die
        for name in ("elu", "selu")
    )
    assert profile("softmax").produces_probabilities
    assert profile("sigmoid").produces_probabilities
    assert not profile("tanh").produces_probabilities


def test_swish_minimum_constant():
    # The minimum of u * sigmoid(u) on a fine grid; swish(x, beta) is that
    # scaled by 1/beta.
    u = np.linspace(-3, 0, 300_001)
    swish_min = np.min(u / (1 + np.exp(-u)))
    assert profile("swish").output_range[0] == pytest.approx(swish_min, abs=1e-9)
    layer = keras_actloss.layers.Swish(beta=2.0)
    assert profile(layer).output_range[0] == pytest.approx(swish_min / 2, abs=1e-9)
    learned = keras_actloss.layers.Swish(trainable_beta=True)
    assert profile(learned).output_range[0] == -math.inf


@pytest.mark.parametrize(
    "identifier, expected",
    [
        ("relu", "relu"),
        ("keras_actloss>swish", "swish"),
        ("ReLU", "relu"),
        ("Sigmoid", "sigmoid"),
        ("silu", "silu"),
        ("gelu", "gelu"),
        ("prelu", "prelu"),
        ("PReLU", "prelu"),
        (None, "linear"),
    ],
)
def test_profile_of_names(identifier, expected):
    assert profile(identifier).name == expected


def test_profile_of_unknown_name_is_none():
    assert profile("not_an_activation") is None


def test_profile_of_functions():
    for name in ["sigmoid", "tanh", "relu", "leaky_relu", "elu", "swish", "softmax"]:
        assert profile(getattr(keras_actloss.activations, name)).name == name
        assert profile(getattr(keras.activations, name)).name == name
    assert profile(keras.activations.silu).name == "swish"
    assert profile(keras.activations.relu6).output_range == (0.0, 6.0)
    assert profile(keras_actloss.activations.linear).name == "linear"
    assert profile(lambda x: x) is None


def test_profile_of_a_lambda_layer():
    # `Lambda(keras.ops.relu)` is a ReLU layer; a function of its own (even
    # one that calls a ReLU) and a Lambda of no activation are unknown.
    assert profile(keras.layers.Lambda(keras.ops.relu)).can_die
    assert profile(keras.layers.Lambda(keras.activations.sigmoid)).name == "sigmoid"
    named = keras.layers.Lambda(keras_actloss.activations.leaky_relu)
    assert profile(named).name == "leaky_relu"
    assert profile(keras.layers.Lambda(lambda t: keras.ops.relu(t))) is None
    assert profile(keras.layers.Lambda(keras.ops.flip)) is None


def test_profile_of_a_functional_graphs_activation_operations():
    # An activation applied to a functional model's tensor is an operation
    # of its graph: its class names the function, its attributes hold the
    # arguments. Other operations are no activation.
    x = keras.Input((4,))

    def op_of(tensor):
        return tensor._keras_history.operation

    assert profile(op_of(keras.ops.relu(x))).can_die
    assert profile(op_of(keras.ops.tanh(x))).saturation_bounds == (-0.99, 0.99)
    assert profile(op_of(keras.ops.sigmoid(x))).name == "sigmoid"
    assert profile(op_of(keras.ops.silu(x))).name in ("silu", "swish")
    leaky = profile(op_of(keras.ops.leaky_relu(x, negative_slope=0.3)))
    assert (leaky.name, leaky.inactive_gradient) == ("leaky_relu", 0.3)
    assert profile(op_of(keras.ops.elu(x, alpha=0.5))).output_range == (-0.5, math.inf)
    capped = profile(op_of(keras.activations.relu(x, max_value=6.0)))
    assert capped.output_range == (0.0, 6.0) and capped.can_die
    assert profile(op_of(keras.activations.relu(x))).can_die
    assert profile(op_of(keras.ops.add(x, x))) is None
    assert profile(op_of(keras.ops.exp(x))) is None


def test_profile_of_the_backends_own_functions():
    # `Dense(64, activation=tf.nn.relu)` and the like: found by module and
    # name, with the backend's own defaults.
    ops = keras.ops
    assert profile(ops.relu).name == "relu" and profile(ops.relu).can_die
    assert profile(ops.relu6).output_range == (0.0, 6.0)
    assert profile(ops.sigmoid).name == "sigmoid"
    assert profile(ops.tanh).name == "tanh"
    assert profile(ops.leaky_relu).inactive_gradient == 0.2
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        native = {
            tf.nn.relu: "relu",
            tf.nn.relu6: "relu6",
            tf.sigmoid: "sigmoid",
            tf.math.tanh: "tanh",
            tf.nn.elu: "elu",
            tf.nn.selu: "selu",
            tf.nn.softmax: "softmax",  # Named softmax_v2.
            tf.nn.log_softmax: "log_softmax",  # Named log_softmax_v2.
            tf.nn.softsign: "softsign",
            tf.nn.swish: "swish",
        }
        assert profile(tf.nn.leaky_relu).inactive_gradient == 0.2
    elif keras.backend.backend() == "jax":
        import jax

        native = {
            jax.nn.relu: "relu",
            jax.nn.relu6: "relu6",
            jax.nn.sigmoid: "sigmoid",
            jax.numpy.tanh: "tanh",
            jax.nn.elu: "elu",
            jax.nn.softmax: "softmax",
            jax.nn.soft_sign: "softsign",
            jax.nn.hard_tanh: "hard_tanh",
            jax.nn.silu: "silu",
        }
        assert profile(jax.nn.leaky_relu).inactive_gradient == 0.01
    else:
        native = {}
    for function, name in native.items():
        assert profile(function).name == name, function

    # A function of another module is not taken for one by its name.
    def relu(x):
        return x

    assert profile(relu) is None


def test_profile_of_our_layers_reflects_config():
    layers = keras_actloss.layers
    assert profile(layers.ReLU()).can_die
    assert profile(layers.LeakyReLU(0.05)).inactive_gradient == 0.05
    # A zero slope is ReLU: the name says so, for code that keeps only names.
    assert profile(layers.LeakyReLU(0.0)).name == "relu"
    assert profile(layers.LeakyReLU(0.0)).can_die
    assert profile(layers.ELU(alpha=2.0)).output_range == (-2.0, math.inf)
    # Slopes at 0 (the default): ReLU until they learn; an output of
    # exactly 0 alone is inactive. Initialised above 0: the slope varies.
    assert profile(layers.PReLU()).can_die
    assert profile(layers.PReLU()).inactive_from == 0.0
    assert profile(layers.PReLU(alpha_initializer="ones")).inactive_gradient is None
    assert profile(layers.PReLU()).name == "prelu"
    assert profile(layers.Softmax()).produces_probabilities
    assert profile(layers.Sigmoid()).name == "sigmoid"
    assert profile(layers.Tanh()).name == "tanh"


def test_profile_of_keras_layers():
    assert profile(keras.layers.ReLU()).can_die
    capped = profile(keras.layers.ReLU(max_value=6.0, negative_slope=0.1))
    assert capped.output_range == (-math.inf, 6.0)
    assert capped.inactive_gradient == 0.1
    assert capped.saturation_bounds == (-math.inf, 6.0)
    assert capped.name == "leaky_relu"
    assert profile(keras.layers.ReLU(negative_slope=0.0)).name == "relu"
    # Capped at 6: ReLU6, its name carrying the cap (probed: its saturation
    # was told as "(relu)").
    assert profile(keras.layers.ReLU(max_value=6.0)) == profile("relu6")
    assert profile(keras.layers.LeakyReLU()).inactive_gradient == pytest.approx(0.3)
    assert profile(keras.layers.PReLU()).name == "prelu"
    assert profile(keras.layers.PReLU()).can_die
    # Built: its weights, not its initializer, say whether a slope is 0.
    prelu = keras.layers.PReLU()
    prelu.build((None, 3))
    assert profile(prelu).can_die
    prelu.alpha.assign([0.0, 0.25, 0.0])
    assert not profile(prelu).can_die
    assert profile(keras.layers.ELU(alpha=0.5)).output_range[0] == -0.5
    assert profile(keras.layers.Softmax()).produces_probabilities
    assert profile(keras.layers.Activation("tanh")).name == "tanh"
    swish_layer = keras.layers.Activation(keras_actloss.activations.swish)
    assert profile(swish_layer).name == "swish"


def test_profile_of_layers_with_activation_attribute():
    assert profile(keras.layers.Dense(2, activation="relu")).name == "relu"
    assert profile(keras.layers.Dense(2)).name == "linear"
    conv = keras.layers.Conv2D(2, 3, activation=keras_actloss.activations.elu)
    assert profile(conv).name == "elu"
    assert profile(keras.layers.Dense(2, activation=lambda x: x)) is None
    assert profile(keras.layers.BatchNormalization()) is None
    assert profile(keras.layers.Dropout(0.1)) is None


@pytest.mark.parametrize("bad", [3, 2.5, [1, 2]])
def test_profile_rejects_bad_types(bad):
    with pytest.raises(ValueError, match=r"Expected an activation name.*Received: x="):
        profile(bad)


def test_get_resolves_names_and_callables():
    get = keras_actloss.activations.get
    assert get("swish") is keras_actloss.activations.swish
    assert get("keras_actloss>elu") is keras_actloss.activations.elu
    assert get(keras.activations.relu) is keras.activations.relu
    assert get(None) is keras_actloss.activations.linear  # as keras.activations.get
    config = keras.saving.serialize_keras_object(keras_actloss.activations.tanh)
    assert get(config) is keras_actloss.activations.tanh
    with pytest.raises(ValueError, match="Received: identifier='nope'"):
        get("nope")
    with pytest.raises(ValueError, match="Received: identifier=3"):
        get(3)
