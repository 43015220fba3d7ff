"""One suite over every registered activation and layer.

Registering a new activation or layer puts it under these tests: config
round trip, every constructor argument in `get_config`, `.keras` save/load
inside a small model without `custom_objects`, and a profile.
"""

import inspect

import keras
import numpy as np
import pytest

import keras_actloss
from keras_actloss import registry

LAYERS = registry.entries("layer")
ACTIVATIONS = registry.entries("activation")

# Non-default arguments, so the round trips exercise real values.
NON_DEFAULT = {
    "LeakyReLU": {"negative_slope": 0.05},
    "ELU": {"alpha": 0.5},
    "Softmax": {"axis": 1},
    "Swish": {"beta": 1.7, "trainable_beta": True},
    "PReLU": {
        "alpha_initializer": keras.initializers.Constant(0.3),
        "alpha_regularizer": keras.regularizers.L2(0.01),
        "alpha_constraint": keras.constraints.NonNeg(),
        "shared_axes": [1],
    },
}
# Keras's saving calls `np.array(variable)` on TF variables, which NumPy 2
# warns about (third-party noise; the lead may move this to pyproject).
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

VARIANTS = [(name, {}) for name in sorted(LAYERS)] + sorted(NON_DEFAULT.items())


def _ids(value):
    return value if isinstance(value, str) else ("custom" if value else "default")


@pytest.mark.parametrize("name, kwargs", VARIANTS, ids=_ids)
def test_layer_config_round_trip(name, kwargs):
    layer = LAYERS[name](**kwargs)
    config = layer.get_config()
    assert LAYERS[name].from_config(config).get_config() == config


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_every_init_argument_is_in_config(name):
    cls = LAYERS[name]
    params = inspect.signature(cls.__init__).parameters.values()
    wanted = {
        p.name for p in params if p.name != "self" and p.kind is not p.VAR_KEYWORD
    }
    config = cls(**NON_DEFAULT.get(name, {})).get_config()
    assert wanted <= set(config), wanted - set(config)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_has_profile(name):
    assert registry.get_profile("layer", name) is not None
    assert keras_actloss.activations.profile(LAYERS[name]()) is not None


def _save_load_predict(model, tmp_path, x):
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(
        model.predict(x, verbose=0), loaded.predict(x, verbose=0)
    )
    return loaded


@pytest.mark.parametrize("name, kwargs", VARIANTS, ids=_ids)
def test_layer_saves_and_loads_in_a_model(name, kwargs, tmp_path, rng):
    model = keras.Sequential(
        [keras.Input((2, 3)), keras.layers.Dense(3), LAYERS[name](**kwargs)]
    )
    x = rng.normal(scale=2.0, size=(4, 2, 3)).astype("float32")
    loaded = _save_load_predict(model, tmp_path, x)
    assert type(loaded.layers[-1]) is LAYERS[name]
    assert loaded.layers[-1].get_config() == model.layers[-1].get_config()


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_in_dense_saves_and_loads(name, tmp_path, rng):
    fn = ACTIVATIONS[name]
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation=fn)])
    x = rng.normal(scale=2.0, size=(5, 3)).astype("float32")
    loaded = _save_load_predict(model, tmp_path, x)
    assert loaded.layers[-1].activation is fn


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_is_found_by_name_and_profiled(name):
    fn = ACTIVATIONS[name]
    assert keras_actloss.activations.get(name) is fn
    assert keras_actloss.activations.get(f"keras_actloss>{name}") is fn
    assert keras_actloss.activations.profile(fn) is registry.get_profile(
        "activation", name
    )
    assert keras_actloss.activations.profile(fn).name == name
