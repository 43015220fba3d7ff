"""Tests for `stall_rules`: updates too small to move the weights.

Recordings are built by hand. The defaults of `Thresholds` (patience 3,
patience_steps 5, baseline_steps 5) make a streak of recordings at steps
0-4 the first one that can be reported, at step 4 and named by its first
step, 0. Levels are those measured on a 20-64-64-4 ReLU MLP (batch 32): a
healthy step under Adam at 1e-3 changes each layer by 6e-3 to 8e-3 of its
norm; SGD at 1e-7, by 1e-8 to 3e-8; SGD at 0.05 with `clipnorm=1e-8`, by
1e-10 to 3e-10; Adam at 1e-3 with `clipnorm=1e-8`, by 6e-7 to 8e-6.
"""

import math

import pytest

from keras_actloss import findings as F
from keras_actloss.diagnostics import stall_rules
from keras_actloss.diagnostics.records import Clipping, LayerInfo, LayerStats, StepStats
from keras_actloss.diagnostics.rules import HealthRules

NAMES = ("dense", "dense_1", "dense_2")
LAYERS = [LayerInfo(n, "Dense", "relu", True, i) for i, n in enumerate(NAMES)]


def recording(
    step, ratio, *, loss=1.5, rate=0.05, grad_norm=0.5, grad_max=0.1, weight_norm=4.0
):
    """Three layers of weights of norm `weight_norm` whose updates change
    them by `ratio` of it (the last by 2 x `ratio`), with gradients of norm
    `grad_norm` each and a largest element `grad_max`; the global norm
    sqrt(3) x `grad_norm`."""
    layers = [
        LayerStats(
            name,
            grad_norm=grad_norm,
            grad_max=grad_max,
            weight_norm=weight_norm,
            update_ratio=ratio * (2 if i == 2 else 1),
        )
        for i, name in enumerate(NAMES)
    ]
    return StepStats(
        step=step,
        global_norm=math.sqrt(3) * grad_norm,
        loss=loss,
        learning_rate=rate,
        layers=layers,
    )


def run(recordings, clipping=None, uninformed=None):
    """Each finding with the step of the recording that reported it."""
    rules = HealthRules(LAYERS)
    rules.clipping = clipping
    rules.uninformed_loss = uninformed
    found = []
    for stats in recordings:
        found += [(f, stats.step) for f in rules.observe(stats)]
    return found


def stalls(found):
    return [
        (f.mode, f.layer, f.step, at)
        for f, at in found
        if f.message.startswith("Every update changes the weights")
    ]


def test_sgd_at_a_rate_far_too_small():
    found = run([recording(s, 1e-8, rate=1e-7) for s in range(8)])
    assert stalls(found) == [(F.VANISHING_GRADIENTS, None, 0, 4)]
    ((finding, _),) = found
    assert finding.value == pytest.approx(2e-8)  # The largest: dense_2's.
    assert finding.fix == stall_rules._RATE_FIX
    assert "at a learning rate of 1e-07" in finding.message
    assert "5 recordings in a row, steps 0-4" in finding.message


def test_two_recordings_are_not_enough():
    assert run([recording(s, 1e-8) for s in range(4)]) == []


def test_updates_over_the_limit_without_clipping():
    # Adam at 1e-6 (fine-tuning): 3e-6 of the weights, over `_STALLED`.
    assert run([recording(s, 3e-6) for s in range(8)]) == []


def test_a_clip_that_cuts_every_gradient():
    # `clipnorm=1e-8` on gradients of norm 0.5: cut 0.5 / 1e-8 = 5e7 times,
    # so updates of 4e-6 (at most 2 x 2e-6) are the clip's (`_CLIPPED_STALL`).
    found = run(
        [recording(s, 2e-6) for s in range(8)], clipping=Clipping("clipnorm", 1e-8)
    )
    assert stalls(found) == [(F.VANISHING_GRADIENTS, None, 0, 4)]
    ((finding, _),) = found
    assert finding.fix == stall_rules._CLIP_FIX
    assert "`clipnorm=1e-08` cuts every layer's gradient 5e+07 times" in finding.message


def test_a_clip_that_cuts_little_is_not_the_cause():
    # `clipnorm=1` on gradients of norm 0.5 cuts nothing: Adam fine-tuning
    # at 1e-6 with a clip is healthy.
    assert (
        run([recording(s, 2e-6) for s in range(8)], clipping=Clipping("clipnorm", 1.0))
        == []
    )


@pytest.mark.parametrize(
    "clipping, expected",
    [
        (Clipping("clipnorm", 1e-8), 0.5 / 1e-8),  # The layers' gradient norms.
        # The global norm.
        (Clipping("global_clipnorm", 1e-8), math.sqrt(3) * 0.5 / 1e-8),
        (Clipping("clipvalue", 1e-9), 0.1 / 1e-9),  # The largest elements.
        (None, None),
        (Clipping("clipnorm", 0.0), None),
    ],
)
def test_clip_cut(clipping, expected):
    cut = stall_rules.clip_cut(clipping, recording(0, 1e-8))
    assert cut == (None if expected is None else pytest.approx(expected))


def test_a_falling_loss_is_not_stalled():
    # Early losses 1.5 (median), then updates of 1e-8 at a loss of 1.1, under
    # 0.8 x 1.5 = 1.2: the model learned before its steps shrank (a decayed
    # schedule). At 1.3 it is still where it began.
    early = [recording(s, 1e-3) for s in range(5)]
    late = [recording(s, 1e-8, loss=1.1) for s in range(5, 12)]
    assert run(early + late) == []
    late = [recording(s, 1e-8, loss=1.3) for s in range(5, 12)]
    assert stalls(run(early + late)) == [(F.VANISHING_GRADIENTS, None, 5, 9)]


def test_a_classifier_that_learned():
    # The loss of knowing nothing ln 10 = 2.30: a loss of 1.0 (under 0.5 x
    # 2.30 = 1.15) has learned, however small its steps; 1.5 has not.
    uninformed = (math.log(10), "ln 10")
    found = run([recording(s, 1e-8, loss=1.0) for s in range(8)], uninformed=uninformed)
    assert found == []
    found = run([recording(s, 1e-8) for s in range(8)], uninformed=uninformed)
    assert stalls(found) == [(F.VANISHING_GRADIENTS, None, 0, 4)]


def test_a_rising_rate_is_a_warm_up():
    # SGD warming up from 1e-9: the rate doubles every step, its updates too.
    found = run([recording(s, 1e-9 * 2**s, rate=1e-9 * 2**s) for s in range(8)])
    assert found == []


def test_a_skipped_update_is_no_evidence():
    # Loss scaling skips the update of step 2 (nothing changes): the streak
    # from step 0 goes on, reported at step 4 as without it.
    ratios = [1e-8, 1e-8, 0.0, 1e-8, 1e-8]
    found = run([recording(s, r) for s, r in enumerate(ratios)])
    assert stalls(found) == [(F.VANISHING_GRADIENTS, None, 0, 4)]


def test_negligible_gradients_are_the_zero_gradient_rule_s():
    # A global norm of sqrt(3) x 1e-12, under 1e-9 x sqrt(1.5) = 1.2e-9:
    # no gradient to apply; updates too small follow from that.
    found = run([recording(s, 1e-8, grad_norm=1e-12) for s in range(8)])
    assert stalls(found) == []


def _after_a_blow_up(explode: bool) -> list:
    """Healthy recordings (updates of 1e-3) at steps 0-5; at step 6, with
    `explode`, a global norm of 1e8 (far over any healthy model's); from
    step 7 weights of norm 4e4, 1e4 x their first, changed by 1e-11 of it
    while the loss stays where it began."""
    found = [recording(s, 1e-3) for s in range(6)]
    found.append(recording(6, 1e-3, grad_norm=1e8 if explode else 0.5))
    found += [recording(s, 1e-11, weight_norm=4e4) for s in range(7, 16)]
    return run(found)


def test_updates_small_against_weights_an_explosion_blew_up_are_its_consequence():
    # The ReLU MLP probed (SGD at 0.05, inputs 100x larger from step 1500):
    # weights from norms of 5-10 to 1e6-4e8, updates of 1e-11 of them. The
    # explosion is told; raising the rate would not help.
    found = _after_a_blow_up(explode=True)
    assert F.EXPLODING_GRADIENTS in {f.mode for f, _ in found}
    assert stalls(found) == []
    # Without the explosion, the same small updates are the rate's.
    assert stalls(_after_a_blow_up(explode=False)) == [
        (F.VANISHING_GRADIENTS, None, 7, 11)
    ]
