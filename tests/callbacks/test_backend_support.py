"""`GradientDiagnostics` on the Keras backends it supports and those it
does not support yet.

No TensorFlow import here: this module also runs in `.ci/run`'s JAX stage,
where TensorFlow is not installed and the backend really is JAX.
"""

import re

import keras
import pytest

from keras_actloss.callbacks import GradientDiagnostics
from keras_actloss.callbacks.gradient_diagnostics import SUPPORTED_BACKENDS


def refusal(backend: str) -> str:
    """The whole message, as a user reads it."""
    return (
        "GradientDiagnostics supports the TensorFlow and JAX backends "
        "(KERAS_BACKEND=tensorflow or jax); PyTorch is not supported yet. "
        "The activations, layers, losses, logs and `keras-actloss report` "
        f"work on every backend. Received: backend={backend!r}"
    )


def test_supported_backends():
    assert SUPPORTED_BACKENDS == ("tensorflow", "jax")


@pytest.mark.parametrize("backend", ["torch", "numpy", "openvino"])
def test_other_backends_are_refused_naming_what_is_supported(monkeypatch, backend):
    # torch is not installed here (nor, in the TensorFlow environment, jax):
    # the backend is faked, as Keras reports it.
    monkeypatch.setattr(keras.backend, "backend", lambda: backend)
    with pytest.raises(ValueError, match=f"^{re.escape(refusal(backend))}$"):
        GradientDiagnostics()
    # Refused before any argument is looked at, and before any log is written.
    with pytest.raises(ValueError, match=re.escape(f"backend={backend!r}")):
        GradientDiagnostics(log_dir=3, every_n_steps=0)


def test_the_real_backend():
    # TensorFlow in the main suite, JAX in .ci/run's JAX stage.
    assert keras.backend.backend() in SUPPORTED_BACKENDS
    assert GradientDiagnostics().findings == []
