"""Tests for `collapse_rules`: every optimizer group's gradients collapse (a GAN
whose discriminator saturates).

Recordings are built by hand; each expected value is computed in the
comment beside it. The levels are those of the probe in the module's
docstring: both groups' global norms about 0.7 in the first steps, about
1.6e-4 once the discriminator saturated.
"""

import math

import pytest

from keras_actloss import findings as F
from keras_actloss.diagnostics.collapse_rules import _FIX, group_norms
from keras_actloss.diagnostics.records import LayerInfo, LayerStats, StepStats
from keras_actloss.diagnostics.rules import HealthRules, SentinelEvent

# A generator (group 1) and a discriminator (group 0), two layers each.
GROUPS = {"gen/d0": 1, "gen/d1": 1, "disc/d0": 0, "disc/d1": 0}
LAYERS = [LayerInfo(name, "Dense", "relu", True, i) for i, name in enumerate(GROUPS)]


def recording(step, gen, disc, loss=None, groups=GROUPS):
    """Each group's two layers with norms whose root sum of squares is the
    group's norm (gen / sqrt(2) each: sqrt(2 * gen^2 / 2) = gen)."""
    norms = {"gen": gen / math.sqrt(2), "disc": disc / math.sqrt(2)}
    layers = [LayerStats(name, grad_norm=norms[name.split("/")[0]]) for name in GROUPS]
    return StepStats(
        step=step,
        global_norm=math.hypot(gen, disc),
        loss=loss,
        layers=layers,
        apply_groups=dict(groups),
    )


def run(sequence):
    """Feeds recordings (`observe`) and steps (`observe_step`) in order."""
    rules = HealthRules(LAYERS)
    found = []
    for item in sequence:
        judge = rules.observe_step if isinstance(item, SentinelEvent) else rules.observe
        found += [(f, item.step) for f in judge(item)]
    return found


# The first 5 recordings (steps 0-4): medians 0.7 (generator) and 0.7.
EARLY = [recording(s, 0.7, 0.7) for s in range(5)]


def test_group_norms():
    # Group 1: sqrt(0.3^2 + 0.4^2) = 0.5; group 0: sqrt(1.2^2 + 0.5^2) = 1.3.
    stats = StepStats(
        step=0,
        global_norm=1.0,
        layers=[
            LayerStats("gen/d0", grad_norm=0.3),
            LayerStats("gen/d1", grad_norm=0.4),
            LayerStats("disc/d0", grad_norm=1.2),
            LayerStats("disc/d1", grad_norm=0.5),
            LayerStats("frozen", grad_norm=None),
        ],
        apply_groups=GROUPS,
    )
    norms = group_norms(stats)
    assert norms == {1: pytest.approx(0.5), 0: pytest.approx(1.3)}


def test_every_group_collapsed_is_reported():
    # 1.6e-4 / 0.7 = 2.3e-4 <= 1e-2 for both from step 40: 3 recordings over
    # steps 40-50 (>= 5 steps) confirm it at step 50.
    collapsed = [recording(s, 1.6e-4, 1.6e-4) for s in (40, 45, 50)]
    ((finding, reported),) = run(EARLY + collapsed)
    assert (finding.mode, finding.layer, finding.step, reported) == (
        F.VANISHING_GRADIENTS,
        None,
        40,
        50,
    )
    assert finding.value == pytest.approx(1.6e-4 / 0.7)
    assert finding.fix == _FIX
    assert finding.message == (
        "The gradients of the layers of each of the 2 optimizer `apply` calls "
        "of the step fell to 0.00023 of their level in the first steps or less "
        "(global norms 0.00016 against 0.7, 0.00016 against 0.7), for 3 "
        "recordings in a row (steps 40-50): no layer learns any more. In a GAN "
        "this is a discriminator that tells real from generated samples so "
        "surely that its output saturates: the generator's saturating loss, "
        "log(1 - D(G(z))), then passes it almost no gradient."
    )


def test_a_group_cut_off_is_not_a_saturated_discriminator():
    # The generator's gradient exactly 0 from step 40 (a probe on JAX: a
    # GAN whose discriminator's ReLU layers died at step 100, its loss at
    # 2 ln 2, was told its discriminator "tells real from generated
    # samples so surely that its output saturates"): its dead units are
    # the finding; the discriminator's 1.6e-4 alone is not judged.
    collapsed = [recording(s, 0.0, 1.6e-4) for s in (40, 45, 50)]
    assert run(EARLY + collapsed) == []


def test_not_after_dead_units_were_reported():
    # Two optimizers (not a GAN), one at Adam 0.5 (probed, TensorFlow):
    # three quarters of a layer dead after the first update and reported
    # at step 8, then both groups' norms 0.0042 of the first steps', which
    # the dead units explain: told of a discriminator before. The same
    # collapse with the dead units reported first: not judged.
    rules = HealthRules(LAYERS)
    for item in EARLY:
        rules.observe(item)
    rules._reported.add((F.DEAD_RELU, "disc/d0"))
    collapsed = [recording(s, 1.6e-4, 1.6e-4) for s in (40, 45, 50)]
    assert [f for item in collapsed for f in rules.observe(item)] == []


def test_at_the_limit():
    # The limit is 1e-2 x 0.7 = 7e-3: 6.9e-3 is collapsed, 7.1e-3 is not.
    assert run(EARLY + [recording(s, 6.9e-3, 6.9e-3) for s in (40, 45, 50)])
    assert not run(EARLY + [recording(s, 7.1e-3, 1e-4) for s in (40, 45, 50)])


def test_the_discriminator_alone_is_not_reported():
    # The non-saturating loss (probe): the discriminator's gradients fell 1e4x
    # while the generator's grew, and it caught up.
    assert not run(EARLY + [recording(s, 7.0, 7e-5) for s in range(40, 60, 4)])


def test_a_recording_above_breaks_the_streak():
    # Steps 40 and 45 collapsed, 50 not (0.1), 55 and 60 again: 2 in a row.
    seq = [recording(40, 1e-4, 1e-4), recording(45, 1e-4, 1e-4)]
    seq += [recording(50, 7e-2, 1e-4)]
    seq += [recording(s, 1e-4, 1e-4) for s in (55, 60)]
    assert not run(EARLY + seq)


def test_one_group_is_not_judged():
    # One `apply` call: the global collapse of a single model is the
    # zero-gradient rule's and the depth rule's to judge, not this one's.
    one = {name: 0 for name in GROUPS}
    seq = [recording(s, 0.7, 0.7, groups=one) for s in range(5)]
    seq += [recording(s, 1e-4, 1e-4, groups=one) for s in (40, 45, 50)]
    assert not run(seq)


def _fell_to(loss, first=1.0):
    """Recordings at steps 0-4 at `first`, every step from 5 to 39 seen by
    the sentinel at `loss` (the rules' recent loss), then 3 collapsed
    recordings at `loss`."""
    seq = [recording(s, 0.7, 0.7, loss=first) for s in range(5)]
    norm = math.hypot(1e-4, 1e-4)
    seq += [SentinelEvent(s, norm, False, None, 1e-3, loss) for s in range(5, 40)]
    return seq + [recording(s, 1e-4, 1e-4, loss=loss) for s in (40, 45, 50)]


@pytest.mark.parametrize(
    "loss",
    [
        # Converged: under 1e-2 of the first loss (`converged_loss_ratio`).
        1e-3,
        # Fitted: the recent loss at 5% of the early one.
        0.05,
    ],
)
def test_not_once_the_loss_fell(loss):
    assert not run(_fell_to(loss))
    # The same at the early loss: reported.
    assert run(_fell_to(1.0))


def test_a_loss_that_stays_is_reported():
    # The generator's saturating loss, log(1 - D(G(z))), rises to 0 from
    # -0.69 as the discriminator saturates: no fall, reported.
    steps = list(range(5)) + [40, 45, 50]
    norms = [0.7] * 5 + [1e-4] * 3
    losses = [-0.69] * 5 + [-1e-4] * 3
    seq = [recording(s, n, n, loss=v) for s, n, v in zip(steps, norms, losses)]
    assert [(f.mode, s) for f, s in run(seq)] == [(F.VANISHING_GRADIENTS, 50)]


def test_not_at_a_converged_recording():
    # Loss 1e-3 at the collapsed recordings (<= 1e-2 x the first, 1.0) while
    # the recent loss is still the early one (no step between): converged.
    seq = [recording(s, 0.7, 0.7, loss=1.0) for s in range(5)]
    seq += [recording(s, 1e-4, 1e-4, loss=1e-3) for s in (40, 45, 50)]
    assert not run(seq)
