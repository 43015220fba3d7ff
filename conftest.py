"""Test set-up shared by the suite and the doctests."""

import importlib.util
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# The JAX hooks of `GradientDiagnostics` import jax: where it is not
# installed (the TensorFlow environment) their modules have no doctests to
# collect.
collect_ignore = (
    [
        "keras_actloss/callbacks/_jax_hooks.py",
        "keras_actloss/callbacks/_jax_programs.py",
        "keras_actloss/callbacks/_jax_stats.py",
        "keras_actloss/callbacks/_jax_weights.py",
    ]
    if importlib.util.find_spec("jax") is None
    else []
)


def pytest_collection_modifyitems(config, items):
    """Skips the `without_tensorflow` tests where TensorFlow is installed."""
    if importlib.util.find_spec("tensorflow") is None:
        return
    skip = pytest.mark.skip(
        reason="TensorFlow is installed; this runs where it is not (.ci/run's "
        "JAX stage: jax, keras, tensorboard, `pip install -e . --no-deps`)"
    )
    for item in items:
        if "without_tensorflow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_and_clear():
    """Every test starts from the same seed and a clean Keras session."""
    keras.utils.set_random_seed(1234)
    yield
    keras.backend.clear_session(free_memory=False)


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
    import keras_actloss

    doctest_namespace["np"] = np
    doctest_namespace["keras"] = keras
    doctest_namespace["keras_actloss"] = keras_actloss


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def no_tensorflow(monkeypatch):
    """`import tensorflow` raises `ImportError` during the test, as where
    TensorFlow is not installed, so the logs take their TensorFlow-free path.

    TensorBoard's lazy choice of TensorFlow or its stub is made first, so the
    other tests of the session keep the reader they had.
    """
    from tensorboard.compat import tf

    assert tf.__version__  # Resolves TensorBoard's lazy `tf` now.
    monkeypatch.setitem(sys.modules, "tensorflow", None)
