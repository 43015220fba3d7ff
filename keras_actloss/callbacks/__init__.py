"""Keras callbacks."""

from keras_actloss.callbacks.gradient_diagnostics import (
    GradientDiagnostics,
    GradientHealthWarning,
)

__all__ = ["GradientDiagnostics", "GradientHealthWarning"]
