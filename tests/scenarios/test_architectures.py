"""`GradientDiagnostics` at its default settings on architectures beyond a
stack of layers (`architectures.py`): a VAE with its own `compute_loss`, a
siamese model with a nested shared encoder, two inputs and two outputs.

Judged as `test_detection.py` judges `cases.py`: the healthy ones report no
training failure and the failing one exactly its mode, in time, here also
on the right layer. Each case is confirmed here, since `cases.confirm`
trains one input on one loss: the healthy ones learn (their loss falls),
and the dead layer outputs zero for every training sample of both inputs.
"""

import sys
from pathlib import Path

import keras
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.scenarios import architectures, cases  # noqa: E402

# The last epoch's mean loss over the first's, at most: each healthy case
# learns (measured on both backends: VAE 0.84-0.86, siamese 0.64,
# two-in-two-out 0.42-0.44).
LEARNS = {"healthy_vae": 0.9, "healthy_siamese": 0.75, "healthy_two_in_two_out": 0.6}


def describe(detection) -> list[tuple]:
    return [(f.mode, f.layer, f.step, s) for f, s in detection.training]


@pytest.mark.parametrize("name", sorted(LEARNS))
def test_healthy_architecture_is_silent(name):
    detection = cases.detect(architectures.BY_NAME[name])
    assert describe(detection) == []
    first, last = detection.losses[0], detection.losses[-1]
    assert np.isfinite(detection.losses).all()
    assert last <= LEARNS[name] * first


def test_dead_layer_of_a_shared_nested_encoder_is_reported_in_time():
    case = architectures.BY_NAME["dead_shared_encoder"]
    # Confirmed on the case's own build: the layer outputs exactly 0 for
    # every sample of both inputs from step 0 (so it gets no gradient).
    setup = case.build()
    hidden = setup.model.get_layer("encoder").get_layer("hidden")
    for x in setup.x:
        assert not np.any(keras.ops.convert_to_numpy(hidden(x)))
    detection = cases.detect(case)
    # Dense recording from step 0; dead units need 128 samples, 4 batches
    # of 32 (steps 0-3, the first 4 of them the finding names), so
    # reported at step 4, by its path in the nested model.
    assert describe(detection) == [("dead_relu", "encoder/hidden", 0, 4)]
    scores, false = cases.score(case, detection)
    assert [s.detected for s in scores] == [True] and false == []
