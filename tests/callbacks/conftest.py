"""Fixtures for the callback tests."""

import keras
import pytest


@pytest.fixture
def data(rng):
    x = rng.normal(size=(32, 6)).astype("float32")
    y = rng.normal(size=(32, 1)).astype("float32")
    return x, y


@pytest.fixture(autouse=True)
def _float32_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")
