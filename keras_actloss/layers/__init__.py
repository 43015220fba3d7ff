"""Activation layers, registered under `keras_actloss` for saving.

Each layer validates its arguments, calls the matching function in
`keras_actloss.activations`, and reports `activation_profile()`.
"""

from keras_actloss.layers.activation_layers import (
    ELU,
    LeakyReLU,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
)
from keras_actloss.layers.learned_layers import PReLU, Swish

__all__ = ["ELU", "LeakyReLU", "PReLU", "ReLU", "Sigmoid", "Softmax", "Swish", "Tanh"]
