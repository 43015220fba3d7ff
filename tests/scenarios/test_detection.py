"""`GradientDiagnostics` at its default settings reports each failure in time.

Every scenario of `cases.py` is fitted with `GradientDiagnostics(check_model=
False)` (no other argument) and a recorder after it that notes the step at
which each finding was reported. For a failure scenario the training failure
modes found must be exactly the expected ones, and for each mode:

- no finding of it is placed before its onset (`finding.step >= onset`);
- it is reported at most `cases.WINDOW` (10) steps after its onset;
- non-finite values are found and reported at the very step they appear.

A healthy control must report no training failure at all. Only findings with
a training mode and severity "failure" count: a pre-training warning such as
"unstandardized_inputs" is not a training failure.
"""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.scenarios import cases  # noqa: E402


def describe(detection) -> list[tuple]:
    """(mode, layer, finding step, reported step) of the training findings."""
    return [(f.mode, f.layer, f.step, s) for f, s in detection.training]


@pytest.mark.parametrize("case", cases.FAILURES, ids=lambda case: case.name)
def test_failure_is_reported_in_time(case):
    detection = cases.detect(case)
    found = describe(detection)
    assert detection.modes == case.expected, found
    for mode, onset in case.onsets.items():
        steps = [f.step for f, _ in detection.training if f.mode == mode]
        assert min(steps) >= onset, (mode, found)
        finding, reported = detection.first(mode)
        if mode == cases.NON_FINITE:
            assert (finding.step, reported) == (onset, onset), found
        else:
            assert reported <= onset + cases.WINDOW, (mode, found)


@pytest.mark.parametrize("case", cases.HEALTHY, ids=lambda case: case.name)
def test_healthy_control_is_silent(case):
    detection = cases.detect(case)
    assert describe(detection) == []
    # The callback does not change training: the loss still falls.
    assert detection.losses[-1] < 0.5 * detection.losses[0]
