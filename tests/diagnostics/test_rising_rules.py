"""Tests for `rising_rules`: a learning rate that rises until training
diverges.

Steps are built by hand (`observe_step` with a loss and a rate); the global
norm stays at 1 so that no norm rule fires. The rate rises 1.1x a step
from 0.01 unless a test says otherwise; the loss where training began is
the first step's, 1.5.
"""

import pytest

from keras_actloss import findings as F
from keras_actloss.diagnostics.records import LayerInfo, SentinelEvent
from keras_actloss.diagnostics.rules import HealthRules

LAYERS = [LayerInfo(f"dense_{i}", "Dense", "relu", True, i) for i in range(3)]


def rate(step):
    return 0.01 * 1.1**step


def run(losses, rates=rate):
    """(finding, step reported) of the steps with these losses."""
    rules = HealthRules(LAYERS)
    found = []
    for step, loss in enumerate(losses):
        event = SentinelEvent(step, 1.0, False, None, rates(step), loss)
        found += [(f, step) for f in rules.observe_step(event)]
    return found


# 10 steps at 1.5, 20 at 0.7 (the median of the last 5 first 0.7 at step
# 12), then 1.6: the median 1.6 from step 32 (0.7, 0.7, 1.6, 1.6, 1.6), over
# 2 x 0.7 = 1.4 and over 0.7 + 0.5 x (1.5 - 0.7) = 1.1 (half of what was
# learned undone), at a rate 1.1^20 = 6.7x that of step 12 and 1.1^32 = 21x
# the first.
DIVERGING = [1.5] * 10 + [0.7] * 20 + [1.6] * 10


def test_a_rate_that_rises_until_the_loss_does():
    ((finding, reported),) = run(DIVERGING)
    # Three steps in a row, 32-34: reported at 34, named by 32.
    assert (finding.mode, finding.layer, finding.step, reported) == (
        F.EXPLODING_GRADIENTS,
        None,
        32,
        34,
    )
    assert finding.value == pytest.approx(1.6)
    # At step 34 the rate is 1.1^22 = 8.14x step 12's, 0.0314 -> 0.255;
    # the median 1.6 / 0.7 = 2.29x its lowest.
    assert finding.message == (
        "The loss rose to 1.6 (the median of the last 5 steps), 2.29x its "
        "lowest (0.7, at step 12; 1.5 where training began), while the "
        "learning rate rose 8.14x since then (from 0.0314 to 0.255): the "
        "schedule raises the rate past what the model can take, and training "
        "diverges."
    )
    assert finding.fix.startswith("Cap the learning rate at about 0.031, where")


def test_two_steps_are_not_enough():
    assert run(DIVERGING[:34]) == []


def test_a_constant_rate():
    # The same losses at a rate that does not rise (new data, not steps).
    assert run(DIVERGING, rates=lambda step: 0.01) == []


def test_a_rate_little_risen_since_the_lowest():
    # From step 12 the rate rises 1.01x a step: 1.01^27 = 1.31x by step 39,
    # under 1.5x (`_STILL_RISING`).
    rates = lambda step: rate(min(step, 12)) * 1.01 ** max(step - 12, 0)  # noqa: E731
    assert run(DIVERGING, rates=rates) == []


def test_a_rate_under_3x_its_first():
    # The rate at 0.01 to step 25, then 1.1x a step: 1.1^14 = 3.8x by step
    # 39, over 1.5x that of the lowest (step 12) from step 30 (1.1^5 = 1.6),
    # but 3x the first only from step 37 (1.1^12 = 3.1): the streak from
    # 37, reported at 39.
    rates = lambda step: 0.01 * 1.1 ** max(step - 25, 0)  # noqa: E731
    found = run(DIVERGING, rates=rates)
    assert [(f.step, at) for f, at in found] == [(37, 39)]


def test_a_rate_that_jumped_is_the_jump_rules():
    # The rate 10x in one step at 31 (then rising as before): the steps
    # after a jump are the jump rules' to judge.
    rates = lambda step: rate(step) * (10 if step >= 31 else 1)  # noqa: E731
    assert not any(
        f.message.startswith("The loss rose to") for f, _ in run(DIVERGING, rates)
    )


@pytest.mark.parametrize("late, reported", [(0.5, False), (0.9, True)])
def test_half_of_what_was_learned_undone(late, reported):
    # The lowest 0.2, the first step 1.5: halfway back is 0.85. A loss of
    # 0.5 (2.5x the lowest) is a warm restart's bump; 0.9 undid more.
    found = run([1.5] * 10 + [0.2] * 20 + [late] * 10)
    assert [(f.step, at) for f, at in found] == ([(32, 34)] if reported else [])


def test_a_model_that_never_learned():
    # Its lowest median 1.4 (from step 12): 1.6 is over where training
    # began, but not 2 x 1.4 = 2.8.
    assert run([1.5] * 10 + [1.4] * 20 + [1.6] * 10) == []


def test_quiet_steps_count_and_open_the_bounds():
    # Steps 0-32 taken in as quiet (within the alarm bounds, `observe_quiet`):
    # the streak starts at 32, after which every step is judged one by one
    # (`alarm_bounds` all 0); steps 33 and 34 complete it, reported at 34.
    rules = HealthRules(LAYERS)
    rules.observe_quiet([(s, 1.0, rate(s), DIVERGING[s]) for s in range(32)])
    assert rules.alarm_bounds() != (0.0,) * 7
    rules.observe_quiet([(32, 1.0, rate(32), DIVERGING[32])])
    assert rules.alarm_bounds() == (0.0,) * 7
    found = []
    for step in (33, 34):
        event = SentinelEvent(step, 1.0, False, None, rate(step), DIVERGING[step])
        found += [(f.mode, f.step, step) for f in rules.observe_step(event)]
    assert found == [(F.EXPLODING_GRADIENTS, 32, 34)]
