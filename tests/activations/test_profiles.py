"""Activation profiles: values checked numerically, and `profile()` inputs."""

import math

import keras
import numpy as np
import pytest

import keras_actloss
from keras_actloss import registry
from keras_actloss.activations import profile
from keras_actloss.profiles import ACTIVATION_FAMILIES, ActivationProfile

X = np.linspace(-20.0, 20.0, 400_001)


def _values(name):
    return keras.ops.convert_to_numpy(keras.activations.get(name)(X))


@pytest.mark.parametrize("name", sorted(registry.profiles("activation")))
def test_every_profile_is_consistent(name):
    p = profile(name)
    assert isinstance(p, ActivationProfile) and p.name == name
    assert p.family in ACTIVATION_FAMILIES
    low, high = p.output_range
    assert low < high
    if p.name in ("softmax", "prelu"):  # not element-wise / no function
        return
    y = _values(name)
    # The declared range holds, and finite bounds are tight (within 1e-3 on a
    # grid from -20 to 20).
    assert y.min() >= low - 1e-9 and y.max() <= high + 1e-9
    if math.isfinite(low) and name not in ("sigmoid", "tanh"):
        assert y.min() - low < 1e-3
    if p.inactive_below is not None:
        assert p.family == "relu"


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


def test_profile_of_our_layers_reflects_config():
    layers = keras_actloss.layers
    assert profile(layers.ReLU()).can_die
    assert profile(layers.LeakyReLU(0.05)).inactive_gradient == 0.05
    # A zero slope is ReLU: the name says so, for code that keeps only names.
    assert profile(layers.LeakyReLU(0.0)).name == "relu"
    assert profile(layers.LeakyReLU(0.0)).can_die
    assert profile(layers.ELU(alpha=2.0)).output_range == (-2.0, math.inf)
    assert profile(layers.PReLU()).inactive_gradient is None
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
    assert profile(keras.layers.LeakyReLU()).inactive_gradient == pytest.approx(0.3)
    assert profile(keras.layers.PReLU()).name == "prelu"
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
