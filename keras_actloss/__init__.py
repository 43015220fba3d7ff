"""keras-actloss: pick the right activation and loss, and see when training fails.

Importing the package registers every layer and loss with Keras under the
package name `keras_actloss`, so `.keras` files that use them load with
`keras.models.load_model` and no `custom_objects`.
"""

from keras_actloss import activations, advisor, callbacks, layers, losses
from keras_actloss.advisor import Recommendation, advise, check_model
from keras_actloss.findings import Finding, TrainingFailure

__version__ = "0.1.0"

__all__ = [
    "Finding",
    "Recommendation",
    "TrainingFailure",
    "activations",
    "advise",
    "advisor",
    "callbacks",
    "check_model",
    "layers",
    "losses",
]
