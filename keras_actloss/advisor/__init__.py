"""Choosing the output layer and loss: `advise(y)` and `check_model(model)`.

`advise` reads a label array and recommends the output units, activation,
loss and metrics from the source notes' guide; `check_model` finds the
classic mismatches between a compiled model's output activation, its loss
and its labels before any training.
"""

from keras_actloss.advisor.advise import Recommendation, advise
from keras_actloss.advisor.check import CHECK_MODES, check_model
from keras_actloss.advisor.labels import LABEL_KINDS, LabelInfo, describe_labels

__all__ = [
    "CHECK_MODES",
    "LABEL_KINDS",
    "LabelInfo",
    "Recommendation",
    "advise",
    "check_model",
    "describe_labels",
]
