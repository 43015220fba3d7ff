"""One common suite over every registered loss and loss function.

A new loss is covered by registering it: the test data and the model's output
activation are derived from the loss's profile (label format and the output
activations it pairs with).
"""

import inspect

import keras
import numpy as np
import pytest

import keras_actloss
from keras_actloss import registry

# Keras 3.15 saving a TF variable with NumPy 2 (keras.src.backend.tensorflow.core).
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

LOSSES = registry.entries("loss")
FUNCTIONS = registry.entries("loss_function")
N, FEATURES, CLASSES = 16, 4, 3


def non_default_kwargs(cls):
    """Constructor arguments that differ from the defaults, chosen by type."""
    label_format = registry.get_profile(
        "loss", registry.name_of("loss", cls)
    ).label_format
    kwargs = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        default = param.default
        if name == "reduction":
            kwargs[name] = "sum"
        elif name == "name":
            kwargs[name] = f"custom_{default}"
        elif name == "class_weights":
            size = 2 if label_format == "binary" else CLASSES
            kwargs[name] = [0.5 + i for i in range(size)]
        elif name == "ignore_class":
            kwargs[name] = -1
        elif isinstance(default, bool):
            kwargs[name] = not default
        elif isinstance(default, float):
            kwargs[name] = default + 0.25
    return kwargs


def task_data(loss_profile, rng):
    """Labels and the output layer that suit a loss, from its profile."""
    activation = loss_profile.output_activations[0]
    fmt = loss_profile.label_format
    classes = np.eye(CLASSES, dtype="float32")[rng.integers(0, CLASSES, N)]
    labels = {
        "continuous": rng.normal(size=(N, 2)).astype("float32"),
        "binary": rng.integers(0, 2, (N, 2)).astype("float32"),
        "signed": rng.choice([-1.0, 1.0], size=(N, 2)).astype("float32"),
        "one_hot": classes,
        "sparse": classes.argmax(-1),
        "distribution": rng.dirichlet(np.ones(CLASSES), size=N).astype("float32"),
    }[fmt]
    units = 2 if fmt in ("continuous", "binary", "signed") else CLASSES
    return labels, keras.layers.Dense(units, activation=activation)


def save_load_and_compare(loss, loss_profile, tmp_path, rng):
    y, head = task_data(loss_profile, rng)
    x = rng.normal(size=(N, FEATURES)).astype("float32")
    model = keras.Sequential(
        [keras.Input((FEATURES,)), keras.layers.Dense(5, "tanh"), head]
    )
    model.compile(optimizer="sgd", loss=loss, jit_compile=False)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects
    np.testing.assert_array_equal(loaded(x), model(x))
    expected = model.evaluate(x, y, batch_size=N, verbose=0)
    assert loaded.evaluate(x, y, batch_size=N, verbose=0) == expected
    return loaded


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_init_argument_is_in_get_config(name):
    cls = LOSSES[name]
    params = set(inspect.signature(cls.__init__).parameters) - {"self"}
    assert params <= set(cls().get_config())
    assert params <= set(cls(**non_default_kwargs(cls)).get_config())


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_config_round_trip(name):
    cls = LOSSES[name]
    kwargs = non_default_kwargs(cls)
    loss = cls(**kwargs)
    config = loss.get_config()
    for key, value in kwargs.items():
        assert config[key] == value, key
    restored = cls.from_config(config)
    assert type(restored) is cls
    assert restored.get_config() == config
    serialized = keras.saving.serialize_keras_object(loss)
    assert serialized["registered_name"] == f"keras_actloss>{name}"
    assert keras.saving.deserialize_keras_object(serialized).get_config() == config


LOGIT_CASES = [(name, False) for name in sorted(LOSSES)] + [
    (name, True)
    for name in sorted(LOSSES)
    if "from_logits" in inspect.signature(LOSSES[name].__init__).parameters
]


@pytest.mark.parametrize("name, from_logits", LOGIT_CASES)
def test_keras_file_round_trip_of_compiled_model(name, from_logits, tmp_path, rng):
    cls = LOSSES[name]
    loss = cls(from_logits=True) if from_logits else cls()
    loaded = save_load_and_compare(
        loss, keras_actloss.losses.profile(loss), tmp_path, rng
    )
    assert type(loaded.loss) is cls
    assert loaded.loss.get_config() == loss.get_config()


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_keras_file_round_trip_with_loss_function(name, tmp_path, rng):
    fn = FUNCTIONS[name]
    loaded = save_load_and_compare(
        fn, registry.get_profile("loss_function", name), tmp_path, rng
    )
    assert loaded.loss is fn


def test_every_loss_class_has_a_matching_function():
    for cls in LOSSES.values():
        assert registry.name_of("loss_function", cls().fn) is not None, cls
