"""Keras's own tests, run against our activations, layers and losses.

The keras wheel ships its test files (`keras/src/activations/activations_test.py`,
`keras/src/layers/activations/*_test.py`, `keras/src/losses/losses_test.py`).
Each is loaded here as a fresh copy (Keras's own module objects are left
alone) with the one name it tests rebound to ours: the `activations` module,
the layer module (`relu.ReLU` -> our `ReLU`) or the `losses` module. The test
code itself stays in Keras: nothing is copied into this repository, and the
tests follow the installed Keras version.

Tests that do not apply are skipped by name, each with its reason (`pytest
-rs` lists them): a test that reads a name we do not provide from the module
under test (`activations.gelu`, `losses.Poisson`) is skipped, found from the
test's source; our deliberate differences are listed in `LOSS_DIFFERENCES`
(today one: Huber's config keeps `delta`). Keras's own `skipif`s (e.g.
channels-first on Torch) still apply. `keras.src.layers.activations.
activation_test` is not run: it tests `keras.layers.Activation`, which we do
not provide.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import types
import unittest

import keras
import pytest

import keras_actloss

pytestmark = [
    # Keras 3.15 saving a TF variable with NumPy 2.
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy keyword"
        ":DeprecationWarning"
    ),
    # Keras's `run_layer_test` fits weightless layers on a generator with
    # `shuffle=True`; Keras's own layers warn the same way.
    pytest.mark.filterwarnings(
        "ignore:`shuffle=True` was passed, but will be ignored:UserWarning"
    ),
    pytest.mark.filterwarnings(
        "ignore:The model does not have any trainable weights:UserWarning"
    ),
]

NOT_PROVIDED = "keras_actloss does not provide this object"


def _load_copy(module_name: str, **rebind) -> types.ModuleType:
    """Executes a fresh copy of a Keras test module with names rebound."""
    spec = importlib.util.find_spec(module_name)
    # Fail loudly (not skip) if a Keras release stops shipping the file.
    assert spec is not None and spec.origin is not None, (
        f"{module_name} is not shipped with keras {keras.__version__}"
    )
    spec = importlib.util.spec_from_file_location(
        f"keras_actloss_conformance.{module_name}", spec.origin
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, value in rebind.items():
        assert hasattr(module, name), (module_name, name)
        setattr(module, name, value)
    return module


def _uses(method, module_name: str) -> set[str]:
    """The names a test reads from the rebound module (`activations.relu`)."""
    return set(re.findall(rf"\b{module_name}\.(\w+)", inspect.getsource(method)))


def _conformant(
    base: type, module_name: str, provided: set[str], differences: dict[str, str]
) -> type:
    """A subclass of a Keras `TestCase`, skipping the tests that do not apply.

    A test is skipped when it reads a name from `module_name` that we do not
    provide, or when it is listed in `differences` (name -> reason).
    """
    attributes = {}
    for name in dir(base):
        if not name.startswith("test_"):
            continue
        missing = sorted(_uses(getattr(base, name), module_name) - provided)
        reason = differences.get(name)
        if missing and reason is None:
            reason = f"tests {module_name}.{', '.join(missing)}: {NOT_PROVIDED}"
        if reason is not None:
            attributes[name] = unittest.skip(reason)(getattr(base, name))
    unknown = set(differences) - set(dir(base))
    assert not unknown, f"differences name no test of {base.__name__}: {unknown}"
    return type(f"TestKeras{base.__name__}", (base,), attributes)


# --- activations -----------------------------------------------------------

_ACTIVATIONS = types.SimpleNamespace(
    **{
        name: getattr(keras_actloss.activations, name)
        for name in keras_actloss.activations.__all__
    }
)
_activations_test = _load_copy(
    "keras.src.activations.activations_test", activations=_ACTIVATIONS
)
TestKerasActivationsTest = _conformant(
    _activations_test.ActivationsTest, "activations", set(vars(_ACTIVATIONS)), {}
)


# --- activation layers -----------------------------------------------------

_LAYER_TESTS = {
    "relu": "ReLUTest",
    "leaky_relu": "LeakyReLUTest",
    "elu": "ELUTest",
    "prelu": "PReLUTest",
    "softmax": "SoftmaxTest",
}
for _module, _test in _LAYER_TESTS.items():
    _layer = getattr(keras_actloss.layers, _test.removesuffix("Test"))
    _copy = _load_copy(
        f"keras.src.layers.activations.{_module}_test",
        **{_module: types.SimpleNamespace(**{_layer.__name__: _layer})},
    )
    globals()[f"TestKeras{_test}"] = _conformant(
        getattr(_copy, _test), _module, {_layer.__name__}, {}
    )
# `keras.src.layers.activations.activation_test` tests `keras.layers.Activation`,
# which keras_actloss does not provide (it has `Sigmoid` and `Tanh` layers,
# which Keras has not): not run.


# --- losses ----------------------------------------------------------------

_LOSSES = types.SimpleNamespace(
    **{
        name: getattr(keras_actloss.losses, name)
        for name in keras_actloss.losses.__all__
        if name not in ("get", "profile", "ALIASES")
    }
)
_losses_test = _load_copy("keras.src.losses.losses_test", losses=_LOSSES)
# Deliberate differences: test class -> {test name: reason}.
LOSS_DIFFERENCES: dict[str, dict[str, str]] = {
    "HuberLossTest": {
        "test_config": "our config records every constructor argument "
        "(`delta`, `dtype`) so it round-trips; Keras's Huber config drops "
        "`delta`",
    },
}
for _name, _value in vars(_losses_test).items():
    if isinstance(_value, type) and issubclass(_value, unittest.TestCase):
        globals()[f"TestKeras{_name}"] = _conformant(
            _value, "losses", set(vars(_LOSSES)), LOSS_DIFFERENCES.get(_name, {})
        )
# Keras's classes must not be collected a second time, unchanged.
del _name, _value, _copy
