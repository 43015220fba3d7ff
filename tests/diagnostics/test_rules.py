"""Tests of the health rules on synthetic sequences of steps and recordings.

Each failure mode is checked with its gating cases: the healthy or harmless
look-alikes that crude rules (per-element zero counts, ungated first/last
ratios, single-spike thresholds) get wrong. Every condition of
`keras_actloss/diagnostics/rules.py` has a test here that fails when the
condition is removed; the expected values are worked out by hand in the
comments, from the defaults of `Thresholds` (patience 3, patience_steps 5,
vanishing_ratio 1e-2, vanishing_rms 3e-4, exploding_growth 100,
exploding_spike_growth 1e4, exploding_norm 1e6, exploding_patience 2,
baseline_steps 5, jump_factor 10, dead_fraction 0.5, min_samples 128,
saturation 0.75, input_saturation 0.5, raw_input_saturation 0.95,
input_scale 2).
"""

import dataclasses
import math

import numpy as np
import pytest

from keras_actloss import findings as F
from keras_actloss.diagnostics import (
    activation_rules,
    gradient_rules,
    rule_support,
    start_rules,
)
from keras_actloss.diagnostics import rules as rules_module
from keras_actloss.diagnostics.records import (
    Clipping,
    LayerInfo,
    LayerStats,
    SentinelEvent,
    StepStats,
)
from keras_actloss.diagnostics.rule_support import (
    _FROM_LOGITS_FIX,
    _JUMP_FIX,
    _OVERFLOW_RUN_FIX,
    _ZERO_FIX,
)
from keras_actloss.diagnostics.rules import (
    FIXES,
    HealthRules,
    Thresholds,
    UnitActivity,
    can_die,
    vanishing_layers,
)

_STEP_FIELDS = (
    "learning_rate",
    "batch_size",
    "activation_steps",
    "input_scale",
    "upstream_scales",
    "kernel_share",
    "non_finite",
    "data_saturation",
    "apply_groups",
)


def mlp(activations, output="softmax"):
    """LayerInfo for Dense layers with these hidden activations + an output
    (no graph distances: model order stands in)."""
    acts = [*activations, output]
    return [LayerInfo(f"dense_{i}", "Dense", a, True, i) for i, a in enumerate(acts)]


def recording(step, rms, maxes=None, *, loss=1.0, global_norm=1.0, names=None, **kw):
    """StepStats with the given per-layer grad RMS (and max-abs, default 4x).

    `_STEP_FIELDS` (`learning_rate`, `batch_size`, `input_scale`, ...) go
    to the StepStats; any other keyword is a list of one LayerStats field
    per layer.
    """
    names = names or [f"dense_{i}" for i in range(len(rms))]
    maxes = maxes or [None if r is None else 4 * r for r in rms]
    step_fields = {k: kw.pop(k) for k in _STEP_FIELDS if k in kw}
    layers = [
        LayerStats(name, grad_rms=r, grad_max=m, **{k: v[i] for k, v in kw.items()})
        for i, (name, r, m) in enumerate(zip(names, rms, maxes))
    ]
    return StepStats(
        step=step, global_norm=global_norm, loss=loss, layers=layers, **step_fields
    )


def event(step, norm, lr=None, non_finite=False, layer=None, loss=None):
    return SentinelEvent(step, norm, non_finite, layer, lr, loss)


def events(norms, start=0):
    """One SentinelEvent per step from `start`, with these global norms."""
    return [event(start + i, n) for i, n in enumerate(norms)]


def run(rules, sequence):
    out = []
    for item in sequence:
        if isinstance(item, SentinelEvent):
            out += rules.observe_step(item)
        else:
            out += rules.observe(item)
    return out


def jumps(rules, sequence):
    """`rules.jumped` after each item of the sequence."""
    flags = []
    for item in sequence:
        run(rules, [item])
        flags.append(rules.jumped)
    return flags


def modes(found):
    return sorted((f.mode, f.layer, f.step) for f in found)


def vanishing(rms, maxes=None, layers=None, **thresholds):
    """`vanishing_layers` of one recording of an MLP (or of `layers`)."""
    layers = layers or mlp(["relu"] * (len(rms) - 1))
    stats = recording(0, rms, maxes, names=[info.name for info in layers])
    return vanishing_layers(stats, layers, Thresholds(**thresholds))


# A deep sigmoid net as measured on a 6-hidden-layer MLP with SGD: RMS shrinks
# about 4x per layer towards the input, the output layer 10x above the last
# hidden one.
SIGMOID_RMS = [4e-6, 8e-6, 3.5e-5, 1.7e-4, 7e-4, 3.5e-3, 3.3e-2]
# 7 weighted layers: reference = the last max(2, 7 // 4) = 2 layers, RMS
# median(3.5e-3, 3.3e-2) = 1.825e-2, max-abs median(1.4e-2, 0.132) = 7.3e-2;
# candidates = the first 7 // 2 = 3. Ratios: 4e-6 / 1.825e-2 = 2.19e-4,
# 8e-6 / 1.825e-2 = 4.38e-4, 3.5e-5 / 1.825e-2 = 1.92e-3, all < 1e-2, with
# RMS < 3e-4 and max-abs < 1e-2 * 7.3e-2; the next layers' ratios (4.38e-4,
# 1.92e-3, 1.7e-4 / 1.825e-2 = 9.3e-3) are all < sqrt(1e-2) = 0.1.
SIGMOID_FOUND = {
    "dense_0": (4e-6, 4e-6 / 1.825e-2),
    "dense_1": (8e-6, 8e-6 / 1.825e-2),
    "dense_2": (3.5e-5, 3.5e-5 / 1.825e-2),
}
# A healthy ReLU MLP (measured): all layers within ~10x, early ones larger.
RELU_RMS = [1.0e-2, 4.7e-3, 3.6e-3, 1.8e-2]


class TestThresholds:
    def test_defaults_and_sources(self):
        t = Thresholds.from_value(None)
        assert t == Thresholds()
        assert Thresholds.from_value(t) is t
        assert Thresholds.from_value({"patience": 5}).patience == 5
        assert Thresholds.from_value({"patience": 5}).dead_fraction == 0.5
        assert (t.patience, t.patience_steps, t.baseline_steps) == (3, 5, 5)
        assert (t.saturation, t.input_saturation, t.raw_input_saturation) == (
            0.75,
            0.5,
            0.95,
        )
        assert t.input_scale == 2.0
        assert (t.jump_factor, t.exploding_spike_growth) == (10.0, 1e4)

    def test_unknown_key(self):
        with pytest.raises(ValueError, match="Unknown keys.*'dead_frac'"):
            Thresholds.from_value({"dead_frac": 0.3})

    @pytest.mark.parametrize(
        "key, value",
        [
            ("patience", 0),
            ("patience", 1.5),
            ("patience", True),
            ("patience_steps", 0),
            ("baseline_steps", 0),
            ("min_samples", 0),
            ("dead_fraction", 1.5),
            ("saturation", 0.0),
            ("input_saturation", 1.5),
            ("raw_input_saturation", 0.0),
            ("input_scale", -1.0),
            ("vanishing_rms", -1e-4),
            ("exploding_norm", math.inf),
            ("exploding_growth", 1.0),
            ("exploding_spike_growth", 0.5),
            ("jump_factor", 1.0),
            ("vanishing_ratio", "small"),
        ],
    )
    def test_bad_values(self, key, value):
        with pytest.raises(ValueError, match=f"Received: {key}="):
            Thresholds.from_value({key: value})

    def test_bad_type(self):
        with pytest.raises(ValueError, match="Received: thresholds=0.5"):
            Thresholds.from_value(0.5)


class TestNonFinite:
    def test_nan_layer_reported_once_at_its_step(self):
        rules = HealthRules(mlp(["relu", "relu"]))
        healthy = recording(0, [1e-2, 1e-2, 1e-2])
        nan = recording(10, [1e-2, math.nan, math.nan], global_norm=math.nan)
        later = recording(20, [math.nan] * 3, global_norm=math.nan)
        found = run(rules, [healthy, nan, later])
        # The first layer (model order) with a non-finite statistic.
        assert modes(found) == [(F.NON_FINITE, "dense_1", 10)]
        assert "the first layer with one in model order: 'dense_1'" in found[0].message
        # Step 0's norm 1 is the last finite one; 1 is not over the limit
        # (no early baseline yet at step 0: the ceiling 1e6), nor >= 10x the
        # recent median 1: a data or loss problem.
        assert found[0].fix == rules_module._DATA_FIX
        assert "normal (last finite norm 1)" in found[0].message
        assert math.isnan(found[0].value)

    def test_a_step_judged_from_its_row_is_not_told_again(self):
        # A float16 GAN (two LossScaleOptimizers, TensorFlow): step 102's
        # row holds the discriminator's NaN gradients and an infinite loss
        # (its update skipped); its recording, read later, holds the
        # generator's finite norm 3.43e3 with that loss. One finding, the
        # row's: not a second one saying every gradient was finite.
        rules = HealthRules(mlp(["relu", "relu"]))
        run(rules, [event(s, 1.0, 0.01, loss=1.0) for s in range(10)])
        nan = SentinelEvent(
            10, math.nan, True, "dense_1", 0.01, math.inf, update_skipped=True
        )
        found = rules.observe_step(nan)
        assert modes(found) == [(F.NON_FINITE, "dense_1", 10)]
        late = recording(10, [1e-2, 1e-2, 1e-2], global_norm=3.43e3, loss=math.inf)
        assert rules.observe(late) == []
        # The skipped update left the weights finite: still judged.
        assert not rules._broken()

    @pytest.mark.parametrize(
        "kwargs, layer",
        [
            # Each condition of `observe`'s non-finite test alone.
            ({"non_finite": True}, None),
            ({"loss": math.nan}, None),
            ({"global_norm": math.nan}, None),
            ({"rms": [1e-2, math.nan, 1e-2]}, "dense_1"),
            ({"maxes": [1e-2, 1e-2, math.nan]}, "dense_2"),
        ],
    )
    def test_each_non_finite_source(self, kwargs, layer):
        rules = HealthRules(mlp(["relu", "relu"]))
        kwargs = {"rms": [1e-2] * 3, **kwargs}
        found = rules.observe(recording(3, **kwargs))
        assert modes(found) == [(F.NON_FINITE, layer, 3)]
        assert found[0].severity == F.FAILURE

    def test_nan_loss_in_message(self):
        rules = HealthRules(mlp(["relu"]))
        nan = recording(3, [1e-2, math.nan], loss=math.nan, global_norm=math.nan)
        (found,) = rules.observe(nan)
        assert found.message.startswith(
            "Non-finite gradients at step 3 (global gradient norm nan, loss "
            "nan; the first layer with one in model order: 'dense_1'): the "
            "weights will become NaN"
        )

    @pytest.mark.parametrize("loss", [math.inf, math.nan])
    def test_a_loss_not_finite_with_every_gradient_finite(self, loss):
        # On JAX the log of a ReLU output of 0 is -inf and its gradient
        # through the ReLU 0: the loss is not finite, the gradients and so
        # the weights are (probed: 148 of 192 steps, the weights finite).
        rules = HealthRules(mlp(["relu"]))
        (found,) = rules.observe(recording(3, [1e-2, 1e-2], loss=loss))
        assert (found.mode, found.step) == (F.NON_FINITE, 3)
        assert found.message.startswith(
            f"The loss was not finite at step 3 ({loss}) while every gradient "
            "was (global gradient norm 1): the loss of some samples is infinite "
            "or NaN (such as the log of 0) with a finite gradient, so the "
            "weights stay finite"
        )
        assert "will become NaN" not in found.message
        assert found.fix == rules_module._DATA_FIX

    def test_sentinel_between_recordings(self):
        rules = HealthRules(mlp(["relu"]))
        found = rules.observe_step(event(7, math.inf, non_finite=True, layer="dense_1"))
        assert modes(found) == [(F.NON_FINITE, "dense_1", 7)]
        # Nothing before it: no norm to call normal.
        assert found[0].message.endswith(
            "No step before it had finite gradients: the cause is likely in the "
            "data, the loss or the initial weights, not the step size."
        )
        assert found[0].fix == rules_module._DATA_FIX
        # After finite steps: their last norm.
        rules = HealthRules(mlp(["relu"]))
        run(rules, [event(s, 2.0, loss=1.0) for s in range(3)])
        found = rules.observe_step(event(3, math.nan, non_finite=True))
        assert "normal (last finite norm 2): the cause is likely in the data" in (
            found[0].message
        )

    @pytest.mark.parametrize("finite", [False, True])
    def test_the_kept_batch_tells_the_data_from_the_forward_pass(self, finite):
        # The callback kept the non-finite step's batch: NaN in it names the
        # data, with its fix; all of it finite names the forward pass or the
        # loss (probed: an `exp` of large weights was told to check the data).
        rules = HealthRules(mlp(["relu"]))
        run(rules, [event(s, 2.0, loss=1.0) for s in range(3)])
        bad = dataclasses.replace(
            event(3, math.nan, non_finite=True, layer="dense_1"), data_finite=finite
        )
        (found,) = rules.observe_step(bad)
        assert (found.mode, found.layer, found.step) == (F.NON_FINITE, "dense_1", 3)
        if finite:
            assert found.message.endswith(
                "The inputs and labels of step 3's batch are all finite: the "
                "model's forward pass or the loss made the first non-finite value."
            )
            assert found.fix == rules_module._FORWARD_FIX
        else:
            assert found.message.endswith(
                "The batch of step 3 holds NaN or infinite values in its inputs "
                "or labels: the data is the cause."
            )
            assert found.fix == rules_module._BAD_DATA_FIX
        # An exponential activation is still named with finite data.
        rules = HealthRules(mlp(["relu"]))
        rules.exponential_layers = ("dense_1",)
        (found,) = rules.observe_step(bad)
        if finite:
            assert "all finite" in found.message and "overflows float32" in (
                found.message
            )
            assert found.fix.startswith("Replace the exponential activation")
        else:
            assert found.fix == rules_module._BAD_DATA_FIX

    def test_a_loss_that_checks_its_labels_in_a_compiled_step(self):
        # Probed (JAX, jit): keras-actloss's Hinge given labels 0/1/2 makes
        # its value NaN (it cannot raise inside `jax.jit`); the finding said
        # to check the data with `np.isfinite`, which finds nothing. Named,
        # with the way to see the failed check.
        rules = HealthRules(mlp(["relu"]))
        rules.traced_label_checks = "hinge"
        found = rules.observe_step(event(0, math.nan, non_finite=True))
        assert found[0].message.endswith(
            "not the step size. The loss 'hinge' checks its labels, and in a "
            "compiled step (`jit_compile`), where it cannot raise, makes its "
            "value NaN on a batch whose labels fail the check (a format or value "
            "it does not take, such as a class id out of range): finite labels "
            "can do this."
        )
        assert found[0].fix == (
            "Call the loss on a batch outside `fit` (`loss(y, model(x))`): it "
            "raises an error naming the labels that fail its check. "
            + rules_module._DATA_FIX
        )

    def test_exponential_layers_are_named(self):
        # Probed: 5 Dense layers with the exponential activation on
        # standardized inputs, inf from the third, NaN at step 0: told to
        # check the data.
        rules = HealthRules(mlp(["relu"]))
        rules.exponential_layers = ("dense_0", "dense_1")
        found = rules.observe_step(event(0, math.nan, non_finite=True))
        assert found[0].message.endswith(
            "not the step size. The exponential activation of layers 'dense_0' "
            "and 'dense_1' overflows float32 (to inf) for inputs above about 88, "
            "and float16 above about 11: finite data can do this."
        )
        assert found[0].fix.startswith(
            "Replace the exponential activation of layers 'dense_0' and "
            "'dense_1' (ReLU or softplus), or keep its inputs small"
        )

    def test_recording_of_a_step_already_seen(self):
        # The step's finite norm was judged; its recording is not finite.
        rules = HealthRules(mlp(["relu"]))
        run(rules, events([1, 1, 1, 1]))
        found = rules.observe(recording(3, [1e-2, 1e-2], global_norm=math.nan))
        assert modes(found) == [(F.NON_FINITE, None, 3)]
        assert found[0].fix == rules_module._DATA_FIX

    def test_infinite_layer_norm_alone_is_no_nan(self):
        # A layer's squared norm beyond float32's range (finite RMS, no NaN)
        # is an overflow, not a non-finite gradient.
        rules = HealthRules(mlp(["relu", "relu"]))
        seq = [
            recording(s, [1e-2] * 3, grad_norm=[1.0, math.inf, 1.0]) for s in range(10)
        ]
        assert run(rules, seq) == []

    def test_overflowing_recorded_norm_is_an_explosion(self):
        rules = HealthRules(mlp(["relu"]))
        seq = [recording(s, [1e-2, 1e-2]) for s in range(5)]
        seq.append(recording(5, [1e-2, 1e-2], global_norm=math.inf))
        # inf >= 1e4 * early 1 and over the ceiling 1e6: a spike (the loss,
        # 1.0 throughout, need not rise), not a NaN.
        assert modes(run(rules, seq)) == [(F.EXPLODING_GRADIENTS, None, 5)]

    def test_overflowing_norm_is_an_explosion(self):
        # An infinite global norm from finite gradients (float32 overflow of
        # the norm) is a norm: inf >= 1e4 * early 1, a spike.
        rules = HealthRules(mlp(["relu"]))
        found = run(rules, events([1, 1, 1, 1, 1, math.inf]))
        assert modes(found) == [(F.EXPLODING_GRADIENTS, None, 5)]
        assert found[0].value == math.inf
        assert (
            "jumped to inf at step 5 (beyond float32's range), up from its "
            "early 1 in one step:" in (found[0].message)
        )
        assert rules.jumped
        # The NaN that follows ends it (last norm inf > ceiling 1e6), with
        # its fix (a batch unlike the others: no rate jumped).
        spike = found[0]
        found = rules.observe_step(event(6, math.nan, non_finite=True))
        assert modes(found) == [(F.NON_FINITE, None, 6)]
        assert found[0].fix == spike.fix == rule_support._SPIKE_FIX

    @pytest.mark.parametrize("held", [True, False], ids=["held", "lowered"])
    def test_explosion_long_after_a_rate_jump_names_it_while_held(self, held):
        # SGD's rate 300x at step 30 on a fitted model: its gradients are
        # small, the norm grows over 25 steps before it explodes (probed: a
        # plain CNN, 300x at step 600, the norm 1.8e10 at step 626, told
        # without the jump). Named while the rate stays at half its new
        # value or more (3); not once it was lowered to 1 (3x, no jump).
        norms = [1.0] * 55 + [1e3, 1e5, 1e7]
        losses = [1.0] * 55 + [5.0, 50.0, 500.0]
        rates = [0.01] * 30 + [3.0 if held else 1.0] * 28
        if not held:
            rates[30:35] = [3.0] * 5
        ((finding, at),) = zero_run(norms, losses, rates)
        assert (finding.mode, finding.step, at) == (F.EXPLODING_GRADIENTS, 55, 57)
        named = (
            " It began 25 steps after the learning rate jumped 300x, from 0.01 "
            "to 3 at step 30, and stayed there: steps far too large."
        )
        assert finding.message.endswith(named) == held
        assert (finding.fix == rule_support._JUMP_FIX) == held

    def test_one_step_jump_after_a_rate_jump_names_the_rate(self):
        # The rate 100x at step 5, the norm 5e4x its early level at step 8:
        # the steps the jump made large, not a batch, whose fix (check it,
        # standardize the inputs) would mislead.
        rules = HealthRules(mlp(["relu"]))
        rates = [0.01] * 5 + [1.0] * 4
        norms = [1.0] * 8 + [5e4]
        found = run(
            rules, [event(i, n, lr) for i, (n, lr) in enumerate(zip(norms, rates))]
        )
        assert modes(found) == [(F.EXPLODING_GRADIENTS, None, 8)]
        assert found[0].message == (
            "The global gradient norm jumped to 5e+04 at step 8, 5e+04x its "
            "early 1 in one step. It began 3 steps after the learning rate "
            "jumped 100x, from 0.01 to 1 at step 5: steps far too large."
        )
        assert found[0].fix == rule_support._JUMP_FIX

    @pytest.mark.parametrize(
        "norm, early, said",
        [
            (80.0, 2.0, ", 40x its early 2"),
            # An overflowed square: no ratio ("infx" before).
            (math.inf, 2.0, " (beyond float32's range), up from its early 2"),
            (math.inf, None, " (beyond float32's range)"),
            (80.0, None, ""),
        ],
    )
    def test_growth_in_messages(self, norm, early, said):
        assert rule_support._growth(norm, early) == said

    def test_non_finite_flag_with_finite_norm(self):
        rules = HealthRules(mlp(["relu"]))
        found = rules.observe_step(event(2, 3.0, non_finite=True))
        assert modes(found) == [(F.NON_FINITE, None, 2)]
        assert found[0].value == 3.0

    def test_nothing_is_judged_after_non_finite(self):
        # A NaN kernel makes a ReLU layer output zeros: consequences, not causes.
        rules = HealthRules(mlp(["relu", "relu"]))
        found = rules.observe(recording(0, [1e-2] * 3, global_norm=math.nan))
        seq = [
            recording(s, [0.0, 1e-2, 1e-2], batch_size=64, unit_activity=[[0] * 4] * 3)
            for s in range(1, 20)
        ]
        seq += events([1e7, 1e7, math.nan], start=20)
        assert modes(found + run(rules, seq)) == [(F.NON_FINITE, None, 0)]

    def test_steps_after_non_finite_are_not_judged(self):
        rules = HealthRules(mlp(["relu"]))
        found = run(rules, [event(0, math.nan), *events([2e6, 3e6], start=1)])
        # Two steps over the ceiling 1e6 would be an explosion.
        assert modes(found) == [(F.NON_FINITE, None, 0)]


class TestNonFiniteCause:
    """A NaN right after a grown norm is the end of an explosion."""

    def test_after_a_step_over_the_limit(self):
        rules = HealthRules(mlp(["relu"]))
        seq = events([1, 1, 1, 1, 1, 500, math.nan])
        found = run(rules, seq)
        # Early = median of 5 ones = 1; 500 > limit 100 * 1 (and >= 10 * the
        # recent median 1): one step over is not yet an explosion, the NaN
        # after it ends one that started at the step before it.
        assert modes(found) == [
            (F.EXPLODING_GRADIENTS, None, 5),
            (F.NON_FINITE, None, 6),
        ]
        exploding, non_finite = found
        assert exploding.value == 500.0
        assert exploding.message == (
            "The global gradient norm grew to 500 by step 5, 500x its early 1, "
            "and step 6 was not finite: the gradients exploded."
        )
        assert non_finite.fix == FIXES[F.EXPLODING_GRADIENTS]
        assert non_finite.message.endswith(
            "It follows the explosion of the gradient norm."
        )

    @pytest.mark.parametrize("exploded", [True, False], ids=["exploded", "stopped"])
    def test_after_zero_gradients(self, exploded):
        # Every gradient 0 from step 23 (the loss 8, against 1 before: a
        # saturated output) after a norm that jumped 1000x at step 21 with
        # the loss 20-50 (an explosion), then NaN at step 47, 26 steps after
        # it: not "normal norms before it" (the last, 0), but the end of
        # that explosion (JAX, gradient accumulation under mixed_float16,
        # the rate 1000x: exploding at 64, every gradient 0 from 82, NaN at
        # 89). Without the explosion (every gradient 0 from step 20 with the
        # loss 5): a stopped training, the data or the loss.
        nan = math.nan
        if exploded:
            norms = [1.0] * 20 + [30.0, 1e3, 1e5] + [0.0] * 24 + [nan]
            losses = [1.0] * 20 + [3.0, 20.0, 50.0] + [8.0] * 25
            stopped, at = "0 since step 23", ", after the explosion of step 21."
        else:
            norms, losses = [1.0] * 20 + [0.0] * 6 + [nan], [1.0] * 20 + [5.0] * 7
            stopped = "0 since step 20"
            at = "; the cause is likely in the data or the loss."
        found = [f for f, _ in zero_run(norms, losses)]
        non_finite = found[-1]
        assert non_finite.mode == F.NON_FINITE
        assert non_finite.message.endswith(
            f"Every gradient was 0 before it (last finite norm 0 at step "
            f"{len(norms) - 2}, {stopped}): training had stopped before it{at}"
        )
        # The explosion's own fix (the batch's: one step jumped), else the
        # data's.
        assert (found[0].mode, found[0].step) == (
            (F.EXPLODING_GRADIENTS, 21) if exploded else (F.VANISHING_GRADIENTS, 20)
        )
        fix = found[0].fix if exploded else rules_module._DATA_FIX
        assert non_finite.fix == fix

    def test_after_an_explosion_told_with_its_cause(self):
        # The rate 1000x at step 19, the norm 1e3, 1e5, 1e7 from step 20
        # with the loss: an explosion told naming the jump, with its fix;
        # the NaN at step 23 that ends it takes that fix too.
        norms = [1.0] * 20 + [1e3, 1e5, 1e7, math.nan]
        losses = [1.0] * 20 + [5.0, 50.0, 500.0, math.nan]
        found = zero_run(norms, losses, [0.01] * 19 + [10.0] * 5)
        (exploding, _), (non_finite, _) = found
        assert "learning rate jumped 1e+03x" in exploding.message
        assert exploding.fix == non_finite.fix == rule_support._JUMP_FIX

    def test_after_growth_over_the_early_baseline_only(self):
        rules = HealthRules(mlp(["relu"]))
        # Early 1, then the norm drifts to 50 for 36 steps (50 <= limit 100:
        # normal), so the recent median is 50; 300 at step 41 is over the
        # early limit 100 but not 100x recent (5000), and not >= 10 * 50:
        # only `last > exploding_growth * early` names the explosion.
        seq = events([1] * 5 + [50] * 36 + [300, math.nan])
        found = run(rules, seq)
        assert modes(found) == [
            (F.EXPLODING_GRADIENTS, None, 41),
            (F.NON_FINITE, None, 42),
        ]
        assert found[0].value == 300.0
        assert found[1].fix == FIXES[F.EXPLODING_GRADIENTS]

    def test_after_a_jump_over_the_recent_level_only(self):
        rules = HealthRules(mlp(["relu"]))
        # 20 is below the limit 100 * 1 but >= 10 * recent median
        # median(1, 1, 1, 1, 1, 20) = 1: only the jump names the explosion.
        found = run(rules, events([1, 1, 1, 1, 1, 20, math.nan]))
        assert modes(found) == [
            (F.EXPLODING_GRADIENTS, None, 5),
            (F.NON_FINITE, None, 6),
        ]
        assert found[0].value == 20.0
        assert found[1].fix == FIXES[F.EXPLODING_GRADIENTS]

    def test_after_a_step_over_the_ceiling_only(self):
        rules = HealthRules(mlp(["relu"]))
        # No early baseline (the first step was over the ceiling 1e6, so not
        # normal) and no recent level: only the ceiling names the explosion.
        found = run(rules, events([2e6, math.nan]))
        assert modes(found) == [
            (F.EXPLODING_GRADIENTS, None, 0),
            (F.NON_FINITE, None, 1),
        ]
        assert found[0].value == 2e6
        # Over the ceiling from the first step on: the scale's fix for both.
        assert found[0].message == (
            "The global gradient norm grew to 2e+06 by step 0, and step 1 was "
            "not finite: the gradients exploded from the first step on (the "
            "scale of the data or of the initial weights)."
        )
        assert found[0].fix == found[1].fix == rules_module._SCALE_FIX

    @pytest.mark.parametrize("broken", [True, False])
    def test_after_an_update_that_broke_finite_weights(self, broken):
        # Keras's JAX Adafactor at 1e-2 on a ReLU MLP (probed, the same
        # without the callback): the update of step 0 made layer dense_1's
        # weights non-finite from gradients of norm 0.48 (the recording's
        # update ratio None: not finite, the weights 7.9), and step 1 was
        # NaN. Told before: "the data or the loss". An update ratio that is
        # finite everywhere leaves that message.
        rules = HealthRules(mlp(["relu"]))
        ratio = None if broken else 0.01
        first = recording(
            0,
            [1e-2, 1e-2],
            global_norm=0.823,
            grad_norm=[0.3, 0.48],
            weight_norm=[5.5, 7.9],
            update_ratio=[0.01, ratio],
        )
        found = run(
            rules, [event(0, 0.823), first, event(1, math.nan, non_finite=True)]
        )
        assert modes(found) == [(F.NON_FINITE, None, 1)]
        if broken:
            assert found[0].message.endswith(
                "The update of step 0 made the weights of layer 'dense_1' "
                "non-finite from finite gradients (global gradient norm 0.823 "
                "at step 0): the optimizer's step broke them, not the data or "
                "the loss."
            )
            assert found[0].fix == rule_support._OPTIMIZER_FIX
        else:
            assert "the cause is likely in the data or the loss" in found[0].message
            assert found[0].fix == rules_module._DATA_FIX

    def test_after_normal_norms_is_data_or_loss(self):
        rules = HealthRules(mlp(["relu"]))
        # 9 < 10 * median(1, 1, 1, 1, 1, 9) = 10 and < 100: normal.
        found = run(rules, events([1, 1, 1, 1, 1, 9, math.nan]))
        assert modes(found) == [(F.NON_FINITE, None, 6)]
        assert found[0].fix == rules_module._DATA_FIX
        assert "normal (last finite norm 9)" in found[0].message
        assert "data or the loss, not the step size" in found[0].message

    @pytest.mark.parametrize("after", [1, 10, 11], ids=["next", "10", "11"])
    def test_soon_after_a_learning_rate_jump_is_the_jump(self, after):
        # Probed: a VAE under Adam whose rate went from 1e-3 to 1 at step
        # 100; the norm normal (1.18) at step 100, NaN at step 101 (its
        # `exp(z_log_var)` overflowed). Normal norms, then a NaN up to 10
        # steps after a jump up (`_JUMP_NAN_STEPS`): the step size; 11
        # steps after it, the data as before.
        rules = HealthRules(mlp(["relu"]))
        seq = [event(s, 1.0, 1e-3) for s in range(5)]
        seq += [event(s, 1.0, 1.0) for s in range(5, 5 + after)]
        seq.append(event(5 + after, math.nan, 1.0, non_finite=True))
        found = run(rules, seq)
        if after > 10:
            assert modes(found) == [(F.NON_FINITE, None, 16)]
            assert found[0].fix == rules_module._DATA_FIX
            return
        assert modes(found) == [
            (F.EXPLODING_GRADIENTS, None, 5),
            (F.NON_FINITE, None, 5 + after),
        ]
        exploding, non_finite = found
        jump = (
            f"{after} step{'s' if after > 1 else ''} after the learning rate "
            "jumped 1e+03x, from 0.001 to 1 at step 5"
        )
        assert exploding.value == pytest.approx(1e3)
        assert exploding.message == (
            f"Step {5 + after} was not finite {jump}, with the gradient norms "
            "normal until then (last finite norm 1): the steps at the new rate "
            "are far too large and training diverged."
        )
        assert non_finite.message.endswith(
            f" It came {jump}: the steps are far too large."
        )
        assert exploding.fix == non_finite.fix == rule_support._JUMP_FIX

    def test_after_an_update_larger_than_the_weights(self):
        # A step size far too large with normal norms before (under loss
        # scaling the next step overflows instead of growing: mixed precision
        # with a learning rate of 1e3): the update recorded at step 5 moved
        # dense_1 by 40x its norm > exploding_update_ratio 1 (dense_0's 3 is
        # over it too, but smaller: the largest names the layer).
        rules = HealthRules(mlp(["relu"]))
        step5 = recording(5, [1e-2, 1e-2], update_ratio=[3.0, 40.0])
        found = run(rules, [*events([1, 1, 1, 1, 1]), step5, event(6, math.nan)])
        assert modes(found) == [
            (F.EXPLODING_GRADIENTS, "dense_1", 5),
            (F.NON_FINITE, None, 6),
        ]
        exploding, non_finite = sorted(found, key=lambda f: f.mode)
        assert exploding.value == 40.0
        assert exploding.message == (
            "The update of step 5 changed the weights of layer 'dense_1' by 40 "
            "times their own norm, and step 6 was not finite: the steps are far "
            "too large and training diverged."
        )
        assert non_finite.fix == FIXES[F.EXPLODING_GRADIENTS]
        assert non_finite.message.endswith(
            "It follows an update larger than the weights (step 5)."
        )

    @pytest.mark.parametrize(
        "ratios, at", [([0.5, 0.9], 5), ([3.0, 40.0], 4)], ids=["small", "earlier"]
    )
    def test_after_small_or_earlier_updates_is_data_or_loss(self, ratios, at):
        # Updates below their weights' norm (0.9 <= 1), or recorded a step
        # before the last finite one (step 4, then 5): not the cause.
        rules = HealthRules(mlp(["relu"]))
        update = recording(at, [1e-2, 1e-2], update_ratio=ratios)
        seq = [*events([1] * at), update, *events([1] * (6 - at - 1), at + 1)]
        found = run(rules, [*seq, event(6, math.nan)])
        assert modes(found) == [(F.NON_FINITE, None, 6)]
        assert found[0].fix == rules_module._DATA_FIX

    def test_from_a_recording(self):
        # `observe` judges a non-finite recording's cause the same way.
        rules = HealthRules(mlp(["relu"]))
        seq = [*events([1, 1, 1, 1, 1, 500]), recording(6, [1e-2, 1e-2], loss=math.nan)]
        found = run(rules, seq)
        assert modes(found) == [
            (F.EXPLODING_GRADIENTS, None, 5),
            (F.NON_FINITE, None, 6),
        ]
        assert found[1].fix == FIXES[F.EXPLODING_GRADIENTS]


class TestFallenLayers:
    """Layers whose gradients fell 100x from their own first recordings
    while the loss did not fall are judged on their gradients alone: Adam's
    steps keeping their size (`_keeps_pace`) do not make them learn. A small
    transformer under Adam at lr 0.1 (`/tmp` probe): the loss 1.37 -> 4.2
    -> 4.9 in the first steps, then at chance; its lower layers' gradient
    RMS fell 180-310x by step 5 while the head's stayed; accuracy at chance
    after 192 steps (0.69 at lr 1e-3)."""

    EARLY = [1.3e-2, 2e-2, 3e-2, 8e-2]
    # dense_0: 7e-5 / median(5e-3, 0.14) = 9.7e-4 < 1e-2, max 2.8e-4 < 1e-2 *
    # median(2e-2, 0.56) = 2.9e-3, RMS < 3e-4, dense_1 next at 1.7e-3 < 0.1;
    # dense_1 likewise (dense_2 next at 0.069). Update ratios all 0.1: each
    # keeps pace (0.1 >= 0.1 * 0.1).
    LATE = [7e-5, 1.2e-4, 5e-3, 1.4e-1]

    def _run(self, late=LATE, loss=1.46):
        rules = HealthRules(mlp(["relu"] * 3))
        seq = [
            recording(s, self.EARLY, update_ratio=[0.3] * 4, loss=v)
            for s, v in enumerate([1.37, 4.2, 4.9])
        ]
        seq += [
            recording(s, late, update_ratio=[0.1] * 4, loss=loss) for s in range(3, 9)
        ]
        return run(rules, seq)

    def test_reported_with_its_fall_and_the_step_size_fix(self):
        # dense_0 7e-5 <= 1e-2 * 1.3e-2 and dense_1 1.2e-4 <= 1e-2 * 2e-2,
        # the loss 1.46 >= 0.9 * 1.37: 3 recordings over 5 steps (3-7).
        found = self._run()
        assert modes(found) == [
            (F.VANISHING_GRADIENTS, "dense_0", 3),
            (F.VANISHING_GRADIENTS, "dense_1", 3),
        ]
        assert found[0].message == (
            "Layer 'dense_0' gets gradients with RMS 7e-05, 0.00097 times those "
            "of the layers near the output, for 5 recordings in a row (steps "
            "3-7): it has almost stopped learning (its gradient RMS fell 186x "
            "from 0.013 in the first steps while the loss stayed at 1.46, "
            "against 1.37 where training began: the first updates took the "
            "model where the gradient no longer reaches it, as steps far too "
            "large do)."
        )
        assert {f.fix for f in found} == {rule_support._FALLEN_FIX}

    @pytest.mark.parametrize(
        "late, loss",
        [(LATE, 1.2), ([1.4e-4, 2.1e-4, 5e-3, 1.4e-1], 1.46)],
        ids=["loss_fell", "fell_less"],
    )
    def test_not_reported_while_it_keeps_pace(self, late, loss):
        # The loss 1.2 < 0.9 * 1.37 = 1.233: the model learns. Or dense_0
        # 1.4e-4 > 1.3e-4 and dense_1 2.1e-4 > 2e-4: fell less than 100x.
        assert self._run(late, loss) == []

    @pytest.mark.parametrize("loss", [0.69, 0.6], ids=["chance", "learned"])
    def test_a_classifier_at_chance_whatever_its_first_loss(self, loss):
        # Probed: a post-LN transformer under Adam at 1e-2, binary
        # cross-entropy: the loss 1.08 at the first step, 3.5 and 2.7
        # after, then about ln 2 for good, its lower layers' gradients
        # down 1e4x. 0.69 < 0.9 * 1.37, but >= 0.9 * ln 2 = 0.624 (the loss
        # of knowing nothing): it learned nothing, reported. 0.6 is under.
        rules = HealthRules(mlp(["relu"] * 3))
        rules.uninformed_loss = (math.log(2), "binary cross-entropy")
        seq = [
            recording(s, self.EARLY, update_ratio=[0.3] * 4, loss=v)
            for s, v in enumerate([1.37, 4.2, 4.9])
        ]
        seq += [
            recording(s, self.LATE, update_ratio=[0.1] * 4, loss=loss)
            for s in range(3, 9)
        ]
        found = run(rules, seq)
        if loss < 0.624:
            assert found == []
            return
        assert modes(found) == [
            (F.VANISHING_GRADIENTS, "dense_0", 3),
            (F.VANISHING_GRADIENTS, "dense_1", 3),
        ]
        assert (
            "(its gradient RMS fell 186x from 0.013 in the first steps while the "
            "loss stayed at 0.69, about the loss of a prediction that knows "
            "nothing (binary cross-entropy: 0.693): the first updates took"
        ) in found[0].message
        assert {f.fix for f in found} == {rule_support._FALLEN_FIX}

    @pytest.mark.parametrize("batch, reported", [(4, True), (32, False)])
    def test_the_loss_where_training_began(self, batch, reported):
        # The first batch was a hard one (3.0, the next two 1.3 and 1.4),
        # the loss 1.46 after. On batches of 4 the start is the median of
        # the first 8 steps' losses (32 samples): 1.46 of (3.0, 1.3, 1.4,
        # 1.46 x 5), and 1.46 >= 0.9 * 1.46: not fallen from it, reported.
        # On batches of 32 the first step's 3.0: 1.46 < 0.9 * 3.0, the
        # model learns.
        rules = HealthRules(mlp(["relu"] * 3))
        seq = [
            recording(s, self.EARLY, update_ratio=[0.3] * 4, loss=v, batch_size=batch)
            for s, v in enumerate([3.0, 1.3, 1.4])
        ]
        seq += [
            recording(s, self.LATE, update_ratio=[0.1] * 4, loss=1.46, batch_size=batch)
            for s in range(3, 9)
        ]
        found = run(rules, seq)
        expected = [(F.VANISHING_GRADIENTS, f"dense_{i}", 3) for i in range(2)]
        assert modes(found) == (expected if reported else [])
        if reported:
            assert (
                "stayed at 1.46, against 1.46 where training began" in found[0].message
            )


class TestRawInputs:
    """A failure that begins in the first 20 steps with the inputs far from
    unit scale (`input_scale` 10 or more: 0-255 pixels, about 128) names
    them as its likely cause, and standardizing them first as its fix."""

    @staticmethod
    def _stopped(scale, layers=None, zero_from=6):
        """Every gradient 0 with the loss 5x its level from `zero_from` on,
        after a first recording with inputs of `scale`: the finding."""
        layers = layers or mlp(["relu", "relu"])
        names = [info.name for info in layers]
        rules = HealthRules(layers)
        seq = [recording(0, [1e-2] * 3, input_scale=scale, names=names)]
        seq += [event(s, 1.0, loss=1.0) for s in range(1, zero_from)]
        seq += [event(s, 0.0, loss=5.0) for s in range(zero_from, zero_from + 5)]
        (found,) = run(rules, seq)
        assert found.mode == F.VANISHING_GRADIENTS
        return found

    def test_named_at_the_start(self):
        found = self._stopped(128.0)
        assert found.message.endswith(
            "training has stopped. The inputs are far from unit scale (a "
            "feature's mean or spread is 128, against about 1 when "
            "standardized): the first layers' outputs and gradients grow with "
            "them, the likely cause."
        )
        assert found.fix == (
            "Standardize the inputs (zero mean, unit variance per feature), e.g. "
            "with a `keras.layers.Normalization` layer adapted to the training "
            "data (images: `keras.layers.Rescaling(1 / 255)`). If it persists: "
            + rule_support._ZERO_FIX[0].lower()
            + rule_support._ZERO_FIX[1:]
        )

    @pytest.mark.parametrize("case", ["standardized", "embedding", "late"])
    def test_not_named(self, case):
        # Inputs of scale 9 (under 10); ids an embedding looks up (their
        # scale does not reach the layers after it); a failure that begins
        # at step 30, past the first 20 steps.
        scale, layers, zero_from = 128.0, None, 6
        if case == "standardized":
            scale = 9.0
        elif case == "embedding":
            layers = [
                LayerInfo("emb", "Embedding", None, True, 0),
                LayerInfo("dense_1", "Dense", "relu", True, 1),
                LayerInfo("out", "Dense", "softmax", True, 2),
            ]
        else:
            zero_from = 30
        found = self._stopped(scale, layers, zero_from)
        assert "unit scale" not in found.message
        assert found.fix == rule_support._ZERO_FIX


class TestUnscaledTargets:
    """An explosion under a regression loss whose targets are far from unit
    scale (`HealthRules.target_scale`, set by the callback) names them and
    takes their fix; `_TARGET_SCALE` is 10."""

    TARGETS = (
        " The regression targets are far from unit scale (a column's mean or "
        "spread is 315, against about 1 when standardized): the loss and its "
        "gradients grow with them."
    )

    def explode(self, scale, norms=(1.0, 2.0, 1.5, 3.0, 2.5, 500.0, 800.0)):
        rules = HealthRules(mlp(["relu"]))
        rules.target_scale = scale
        return run(rules, events(list(norms)))

    def test_an_explosion_names_the_targets(self):
        # As `TestExploding.test_growth_over_baseline_persisting` (reported
        # at step 5), with targets of scale 315 (a probe: SGD 1e-3 on
        # targets of about 300 +- 100 exploded by step 4, then NaN).
        found = self.explode(315.0)
        assert modes(found) == [(F.EXPLODING_GRADIENTS, None, 5)]
        assert found[0].message == (
            "The global gradient norm reached 800 at step 6, 400x its early 2: "
            "the gradients are exploding and training diverges." + self.TARGETS
        )
        assert found[0].fix == rule_support._TARGETS_FIX

    @pytest.mark.parametrize("scale", [None, 9.99])
    def test_targets_near_unit_scale_are_not_named(self, scale):
        found = self.explode(scale)
        assert found[0].message.endswith("training diverges.")
        assert found[0].fix == FIXES[F.EXPLODING_GRADIENTS]

    def test_at_the_limit_they_are(self):
        found = self.explode(10.0)
        assert "(a column's mean or spread is 10, " in found[0].message
        assert found[0].fix == rule_support._TARGETS_FIX

    def test_the_nan_that_ends_the_explosion_takes_their_fix(self):
        # As `TestNonFiniteCause`'s growth case: 500 at step 5, NaN at 6.
        found = self.explode(315.0, [1.0] * 5 + [500.0, math.nan])
        exploding, non_finite = found
        assert exploding.message.endswith(self.TARGETS)
        assert exploding.fix == non_finite.fix == rule_support._TARGETS_FIX
        # Said once, in the explosion's finding.
        assert non_finite.message.endswith(
            "It follows the explosion of the gradient norm."
        )

    def test_over_the_ceiling_from_the_start_too(self):
        # The scale's fix (`_SCALE_FIX`) becomes the measured targets'.
        found = self.explode(4.6e4, [2e6, math.nan])
        assert [f.fix for f in found] == [rule_support._TARGETS_FIX] * 2
        assert "a column's mean or spread is 4.6e+04," in found[0].message

    def test_a_nan_after_normal_norms_keeps_the_data_fix(self):
        # Not an explosion: the data or the loss, as without targets.
        found = self.explode(315.0, [1.0] * 6 + [math.nan])
        assert modes(found) == [(F.NON_FINITE, None, 6)]
        assert found[0].fix == rules_module._DATA_FIX
        assert "regression targets" not in found[0].message


class TestClipping:
    """Where the optimizer clips (`HealthRules.clipping`, set by the
    callback), a fix that advises clipping says it is there."""

    def test_an_explosion_with_clipping(self):
        # As `TestUnscaledTargets.test_targets_near_unit_scale_are_not_named`.
        rules = HealthRules(mlp(["relu"]))
        rules.clipping = Clipping("global_clipnorm", 1.0)
        (finding,) = run(rules, events([1.0, 2.0, 1.5, 3.0, 2.5, 500.0, 800.0]))
        assert finding.mode == F.EXPLODING_GRADIENTS
        assert finding.fix == (
            "Lower the learning rate, keep clipping gradients (the optimizer's "
            "`global_clipnorm=1` clips the gradients it applies, not the ones "
            "measured here, before it), and add batch normalization."
        )

    def test_the_nan_and_unscaled_targets_too(self):
        rules = HealthRules(mlp(["relu"]))
        rules.clipping, rules.target_scale = Clipping("clipnorm", 0.5), 315.0
        exploding, non_finite = run(rules, events([1.0] * 5 + [500.0, math.nan]))
        assert (
            exploding.fix
            == non_finite.fix
            == (
                rule_support._TARGETS_FIX.replace(
                    "clip gradients (`clipnorm=1.0` in the optimizer)",
                    "keep clipping gradients (the optimizer's `clipnorm=0.5` clips "
                    "the gradients it applies, not the ones measured here, before it)",
                )
            )
        )
        assert "clipnorm=1.0" not in exploding.fix

    def test_every_fix_that_advises_clipping_is_reworded(self):
        # Each fix of the rules that says "clip" says "clip gradients (...)"
        # or "clipping gradients (...) bounds the steps": reworded, with no
        # `clipnorm=1.0` of its own left.
        fixes = [
            value
            for name, value in vars(rule_support).items()
            if name.endswith("FIX") and isinstance(value, str)
        ] + list(FIXES.values())
        advising = [fix for fix in fixes if "clip gradients" in fix.lower()]
        advising += [fix for fix in fixes if "clipping gradients" in fix]
        assert len(advising) >= 8
        rules = HealthRules(mlp(["relu"]))
        rules.clipping = Clipping("clipnorm", 2.0)
        for fix in advising:
            assert rule_support._CLIP_ADVICE.search(fix), fix
            reworded = rule_support._CLIP_ADVICE.sub(rules._clipped_advice, fix)
            assert "clipnorm=1.0" not in reworded, reworded
            assert "the optimizer's `clipnorm=2`" in reworded

    def test_the_fix_of_a_rate_jump(self):
        # A dead layer after the rate jumped (`_JUMP_FIX`): the clipping set
        # bounds the gradients, not the rate (as Keras clips before the
        # update: `clipnorm=1` at a rate of 10 still moves a weight by 10).
        rules = HealthRules(mlp(["relu"]))
        rules.clipping = Clipping("clipnorm", 1.0)
        found = []
        rules._add(found, F.DEAD_RELU, "dense_0", 5, 1.0, "m", rule_support._JUMP_FIX)
        assert found[0].fix == (
            "Lower the learning rate: undo the jump, or reach a smaller peak over "
            "many steps (a warm-up); the optimizer's `clipnorm=1` bounds the "
            "gradients already, not the rate that scales them."
        )


class TestExtremeDropout:
    """Vanishing gradients and dead units (failures) in a model with a
    dropout of rate 0.9 or more (`HealthRules.told_causes`) name it."""

    def _found(self, dropout, mode=F.VANISHING_GRADIENTS, severity=F.FAILURE):
        rules = HealthRules(mlp(["relu"] * 2))
        rules.told_causes = {"extreme_dropout": dropout}
        found = []
        rules._add(found, mode, "dense_0", 16, 0.0, "m.", severity=severity)
        return found[0]

    def test_one(self):
        finding = self._found((("dropout", 0.99),))
        assert finding.fix == rule_support._DROPOUT_FIX
        assert finding.message == (
            "m. The model's dropout layer 'dropout' drops 99% of its inputs at "
            "every training step (told before training as `extreme_dropout`): "
            "the layers around it learn from almost nothing, the likely cause."
        )

    def test_several(self):
        finding = self._found((("d1", 0.9), ("d2", 0.95)), mode=F.DEAD_RELU)
        assert finding.message == (
            "m. The model's dropout layers 'd1' and 'd2' drop up to 95% of their "
            "inputs at every training step (told before training as "
            "`extreme_dropout`): the layers around them learn from almost "
            "nothing, the likely cause."
        )

    @pytest.mark.parametrize(
        "dropout, mode, severity",
        [
            ((), F.VANISHING_GRADIENTS, F.FAILURE),
            ((("dropout", 0.99),), F.EXPLODING_GRADIENTS, F.FAILURE),
            ((("dropout", 0.99),), F.DEAD_RELU, F.WARNING),
        ],
    )
    def test_not_named(self, dropout, mode, severity):
        finding = self._found(dropout, mode, severity)
        assert finding.message == "m."
        assert finding.fix == FIXES[mode]


class TestOutputNotProbabilities:
    """Explosions, vanishing gradients and non-finite steps (failures) of a
    model whose output is not in [0, 1] under a loss that takes
    probabilities (`linear_output_probability_loss`) name it. Probed: a
    linear output under binary cross-entropy (Adam at 1e-3) had a step of
    norm 3.09e4, 1.25e4x its early level, told as a bad batch or a step
    far too large."""

    def _found(self, mode, severity=F.FAILURE, outputs=("out",)):
        rules = HealthRules(mlp(["relu"]))
        rules.told_causes = {
            "linear_output_probability_loss": tuple((o, None) for o in outputs)
        }
        found = []
        rules._add(found, mode, None, 37, 3.09e4, "m.", severity=severity)
        return found[0]

    @pytest.mark.parametrize(
        "mode", [F.EXPLODING_GRADIENTS, F.VANISHING_GRADIENTS, F.NON_FINITE]
    )
    def test_named(self, mode):
        finding = self._found(mode)
        assert finding.fix == rule_support._PROBABILITY_FIX
        assert finding.message == (
            "m. The output layer 'out' is not in [0, 1] but the loss takes "
            "probabilities (told before training as "
            "`linear_output_probability_loss`): the loss clips the outputs, so "
            "those outside [0, 1] pass no gradient and those just inside it "
            "pass up to 1e7 times the error (1/p), the likely cause."
        )

    def test_a_spike_names_it_in_place_of_a_batch(self):
        # The probe's step: one step over the limit (100 x the early 2.46)
        # with the loss up (1 against 0.7; 3x would be new data until a
        # recording showed the updates) is told as the likely cause's, not
        # first as a batch far from the others' scale or a step far too
        # large.
        rules = HealthRules(mlp(["relu"]))
        rules.told_causes = {"linear_output_probability_loss": (("out", None),)}
        seq = [event(s, 2.46, loss=0.7) for s in range(37)]
        found = run(rules, [*seq, event(37, 3.09e4, loss=1.0)])
        assert modes(found) == [(F.EXPLODING_GRADIENTS, None, 37)]
        assert found[0].fix == rule_support._PROBABILITY_FIX
        assert found[0].message == (
            # 3.09e4 / 2.46 = 1.256e4.
            "The global gradient norm jumped to 3.09e+04 at step 37, 1.26e+04x "
            "its early 2.46 in one step. The output layer 'out' is not in "
            "[0, 1] but the loss takes probabilities (told before training as "
            "`linear_output_probability_loss`): the loss clips the outputs, so "
            "those outside [0, 1] pass no gradient and those just inside it "
            "pass up to 1e7 times the error (1/p), the likely cause."
        )

    def test_several_outputs(self):
        finding = self._found(F.EXPLODING_GRADIENTS, outputs=("a", "b"))
        assert finding.message.startswith(
            "m. The output layers 'a' and 'b' are not in [0, 1]"
        )

    @pytest.mark.parametrize(
        "mode, severity",
        [(F.DEAD_RELU, F.FAILURE), (F.EXPLODING_GRADIENTS, F.WARNING)],
    )
    def test_not_named(self, mode, severity):
        finding = self._found(mode, severity)
        assert (finding.message, finding.fix) == ("m.", FIXES[mode])


class TestConstantNormalization:
    """Vanishing gradients and dead units (failures) in a model with a layer
    normalization over a single value (`HealthRules.told_causes`) name
    it: the keras.io timeseries Transformer on one channel, its
    feed-forward Conv1D ReLU units dead from step 0 (told as "use Leaky
    ReLU, lower the learning rate", neither of which helps)."""

    @pytest.mark.parametrize(
        "norms, named",
        [
            (("ln_a0",), "layer 'ln_a0' normalizes over a single value"),
            (("ln_a0", "ln_f0"), "layers 'ln_a0' and 'ln_f0' normalize over a"),
        ],
    )
    def test_named(self, norms, named):
        rules = HealthRules(mlp(["relu"] * 2))
        rules.told_causes = {"constant_normalization": tuple((n, None) for n in norms)}
        found = []
        rules._add(found, F.DEAD_RELU, "dense_0", 0, 1.0, "m.")
        assert found[0].fix == rule_support.CONSTANT_NORM_FIX
        assert found[0].message.startswith(f"m. The model's {named}")
        found = []
        rules._add(found, F.DEAD_RELU, "dense_1", 0, 0.5, "m.", severity=F.WARNING)
        assert (found[0].message, found[0].fix) == ("m.", FIXES[F.DEAD_RELU])


def early_dead(rules, layer, step, value, severity):
    """The dead-unit finding `rules._add` makes of `layer` at `step` (its
    message "m."), after a first step seen at 0."""
    run(rules, events([1.0]))
    found = []
    rules._add(found, F.DEAD_RELU, layer, step, value, "m.", severity=severity)
    return found[0]


class TestSymmetricUnits:
    """Vanishing gradients and dead units (failures) that begin within
    `_EXPLOSION_STEPS` (20) of the first step, in a model whose units
    started identical (`HealthRules.told_causes`), name those layers; a
    cause told alongside a dropout's, the identical units (tried first)."""

    def _found(self, step=3, told=None, severity=F.FAILURE):
        rules = HealthRules(mlp(["relu"] * 2))
        rules.told_causes = told or {"symmetric_units": (("dense_0", 8.0),)}
        return early_dead(rules, "dense_1", step, 1.0, severity)

    def test_named(self):
        finding = self._found()
        assert finding.fix == rule_support.SYMMETRIC_FIX
        assert finding.message == (
            "m. The units of layer 'dense_0' started identical (a zero or "
            "constant kernel initializer, told before training as "
            "`symmetric_units`): they get identical gradients, or none where "
            "the kernel after them is zero, the likely cause."
        )

    def test_before_a_dropout(self):
        told = {
            "symmetric_units": (("dense_0", 8.0),),
            "extreme_dropout": (("drop", 0.95),),
        }
        assert self._found(told=told).fix == rule_support.SYMMETRIC_FIX
        # Late, the dropout (named whenever the failure begins).
        assert self._found(step=21, told=told).fix == rule_support._DROPOUT_FIX

    @pytest.mark.parametrize("change", [{"step": 21}, {"severity": F.WARNING}])
    def test_not_named(self, change):
        finding = self._found(**change)
        assert (finding.message, finding.fix) == ("m.", FIXES[F.DEAD_RELU])


class TestShrunkStart:
    """Early dead units or vanishing gradients in a deep ReLU stack whose
    kernels start under He's scale (`HealthRules.relu_shrink`) name it."""

    def _found(self, layers=None, shrink=7.7e-4, step=2, severity=F.FAILURE):
        # The pJ probe: 20 ReLU layers of 32 units under `glorot_uniform`,
        # the signal shrunk to 7.7e-4; the first step seen is 0.
        rules = HealthRules(layers or mlp(["relu"] * 20))
        rules.relu_shrink = (shrink, 20)
        return early_dead(rules, "dense_17", step, 0.56, severity)

    def test_named(self):
        finding = self._found()
        assert finding.fix == rule_support._HE_FIX
        assert finding.message == (
            "m. The kernels of the model's 20 ReLU layers start under He's "
            "scale (Keras's default `glorot_uniform` is sqrt(1/2) of it in a "
            "square layer): the signal shrinks through them to 0.00077 of its "
            "scale, so the deep layers' inputs and gradients are tiny and each "
            "step of the optimizer is large against them, the likely cause."
        )

    @pytest.mark.parametrize(
        "change",
        [
            {"shrink": 0.02},  # Over `_SHRUNK_SIGNAL` (1e-2).
            {"step": 21},  # Past `_EXPLOSION_STEPS` (20) from step 0.
            {"severity": F.WARNING},
            {
                "layers": mlp(["relu"] * 19)
                + [LayerInfo("bn", "BatchNormalization", None, True, 20)]
            },
        ],
    )
    def test_not_named(self, change):
        finding = self._found(**change)
        assert finding.fix == FIXES[F.DEAD_RELU]
        assert finding.message == "m."


class TestVanishingLayers:
    """`vanishing_layers` at one recording: each condition alone."""

    def test_deep_sigmoid(self):
        found = vanishing(SIGMOID_RMS)
        assert found.keys() == SIGMOID_FOUND.keys()
        for layer, (rms, ratio) in SIGMOID_FOUND.items():
            assert found[layer] == pytest.approx((rms, ratio))

    def test_layers_of_each_apply_call_are_judged_apart(self):
        # A GAN in model order: generator dense_0-3, applied second (call
        # 1), discriminator dense_4-7 (call 0); RMS as a DCGAN's first steps.
        rms = [7e-5, 1.2e-4, 5e-4, 1.1e-3, 2.9e-2, 7.5e-3, 1e-2, 3.5e-2]
        layers = mlp(["relu"] * 7)
        groups = {f"dense_{i}": int(i < 4) for i in range(8)}
        # As one model: reference median(1e-2, 3.5e-2) = 2.25e-2, max-abs
        # median(4e-2, 0.14) = 9e-2. dense_0: ratio 7e-5 / 2.25e-2 = 3.1e-3,
        # max-abs 2.8e-4 < 9e-4, dense_1 next at 5.3e-3 < 0.1; dense_1:
        # 5.3e-3, max-abs 4.8e-4, dense_2 next at 2.2e-2 < 0.1; dense_2's
        # own 2.2e-2 is not < 1e-2.
        found = vanishing_layers(recording(0, rms), layers, Thresholds())
        assert found.keys() == {"dense_0", "dense_1"}
        # Apart: the generator's reference is median(5e-4, 1.1e-3) = 8e-4,
        # dense_0's ratio 7e-5 / 8e-4 = 8.75e-2 and dense_1's 0.15; the
        # discriminator's first layers are louder than its last.
        stats = recording(0, rms, apply_groups=groups)
        assert vanishing_layers(stats, layers, Thresholds()) == {}
        # A generator whose gradient vanishes still is: dense_0 at 1e-6 has
        # a ratio of 1.25e-3 to the generator's reference (max-abs 4e-6 <
        # 1e-2 * median(2e-3, 4.4e-3)), dense_1 next at 1e-5 / 8e-4 =
        # 1.25e-2 < 0.1 (and not < 1e-2 itself).
        rms[:2] = [1e-6, 1e-5]
        stats = recording(0, rms, apply_groups=groups)
        found = vanishing_layers(stats, layers, Thresholds())
        assert found == {"dense_0": pytest.approx((1e-6, 1e-6 / 8e-4))}

    def test_zero_gradient_is_a_cut_not_vanishing(self):
        # Reference median(1e-2, 2e-2) = 1.5e-2; dense_0 would pass every
        # other condition (ratio 0, next layer dense_1 also 0 < 0.1).
        assert vanishing([0.0, 0.0, 1e-2, 1e-2, 1e-2, 2e-2]) == {}

    def test_rms_ratio(self):
        # Reference 1e-2, max-abs 4e-2. dense_0: ratio 2e-4 / 1e-2 = 2e-2 is
        # not < 1e-2, though its max-abs 1e-5 < 4e-4, its RMS < 3e-4 and the
        # next layer's ratio 5e-4 / 1e-2 = 5e-2 < 0.1.
        rms = [2e-4, 5e-4, 1e-2, 1e-2, 1e-2, 1e-2]
        maxes = [1e-5, 2e-3, 4e-2, 4e-2, 4e-2, 4e-2]
        assert vanishing(rms, maxes) == {}
        # With vanishing_ratio 3e-2, dense_0 (2e-2) is flagged: the next
        # layer's 5e-2 < sqrt(3e-2) = 0.17, max-abs 1e-5 < 3e-2 * 4e-2.
        found = vanishing(rms, maxes, vanishing_ratio=3e-2)
        assert found == {"dense_0": pytest.approx((2e-4, 2e-2))}

    def test_sparse_gradients_are_not_vanishing(self):
        # An embedding-like first layer: tiny RMS (few rows used) but a
        # normal max-abs 5e-2 >= 1e-2 * median(4e-2, 8e-2) = 6e-4. Its RMS
        # ratio 1e-6 / 1.5e-2 and the next layer's 1e-4 / 1.5e-2 = 6.7e-3
        # pass; dense_1 itself is stopped by its loud next layer.
        rms = [1e-6, 1e-4, 1e-2, 1e-2, 1e-2, 2e-2]
        maxes = [5e-2, 4e-4, 4e-2, 4e-2, 4e-2, 8e-2]
        assert vanishing(rms, maxes) == {}

    def test_absolute_rms(self):
        # A loud output layer: reference median(8e-4, 0.3) = 0.1504. dense_1:
        # ratio 1e-3 / 0.1504 = 6.6e-3 < 1e-2, max-abs 4e-3 < 1e-2 *
        # median(3.2e-3, 1.2) = 6.0e-3, next ratio 8e-4 / 0.1504 = 5.3e-3 <
        # 0.1, but its RMS 1e-3 is not < 3e-4. dense_0: ratio 1.3e-2.
        rms = [2e-3, 1e-3, 8e-4, 3e-1]
        assert vanishing(rms) == {}
        found = vanishing(rms, vanishing_rms=2e-3)
        assert found == {"dense_1": pytest.approx((1e-3, 1e-3 / 0.1504))}

    def test_adaptive_steps_that_keep_pace_are_not_vanishing(self):
        # A text CNN's first step under Adam 1e-3 (measured: Embedding(1000,
        # 32) -> Conv1D relu -> average pooling -> Dense relu -> sigmoid).
        # Reference median(2.6e-3, 2.2e-2) = 1.23e-2: the embedding's ratio
        # 4.5e-5 / 1.23e-2 = 3.7e-3 < 1e-2, max-abs 1.8e-4 < 1e-2 *
        # median(1.04e-2, 8.8e-2) = 4.9e-4, RMS < 3e-4, the conv layer next
        # at 5.6e-4 / 1.23e-2 = 4.6e-2 < 0.1: its gradients vanish.
        rms = [4.5e-5, 5.6e-4, 2.6e-3, 2.2e-2]
        expected = {"dense_0": pytest.approx((4.5e-5, 4.5e-5 / 1.23e-2))}
        assert vanishing(rms) == expected
        layers = mlp(["relu"] * 3, output="sigmoid")

        def judged(pace, layers=layers):
            stats = recording(0, rms, update_ratio=[pace, 1.2e-2, 5.5e-3, 3.3e-3])
            return vanishing_layers(stats, layers, Thresholds())

        # Its update ratio 2.8e-2 (measured) >= 0.1 * median(5.5e-3, 3.3e-3)
        # = 4.4e-4: Adam moves it at the pace of the output layers.
        assert judged(2.8e-2) == {}
        # Below a tenth of their pace (4.3e-4 < 4.4e-4) it is vanishing.
        assert judged(4.3e-4) == expected
        # Behind a sigmoid layer the gradients alone decide: a deep sigmoid
        # stack under Adam keeps its step sizes and stays on its plateau.
        assert judged(2.8e-2, mlp(["relu", "sigmoid", "relu"], "sigmoid")) == expected
        # Behind a tanh layer, so when 1% of its outputs are measured in the
        # tails (>= _SQUASHED_SHARE 0.1%); one whose outputs are not
        # measured (a recurrent layer's) does not decide it.
        tanh = mlp(["relu", "tanh", "relu"], "sigmoid")
        for share, found in [(1e-2, expected), (None, {})]:
            stats = recording(
                0,
                rms,
                update_ratio=[2.8e-2, 1.2e-2, 5.5e-3, 3.3e-3],
                saturation=[None, share, None, None],
            )
            assert vanishing_layers(stats, tanh, Thresholds()) == found

    def test_lone_quiet_first_layer_is_not_vanishing(self):
        # Inputs scaled 1e-4: the first layer's gradients (x^T delta) are
        # tiny, the next layer's are normal (ratio 1e-2 / 1.5e-2 = 0.67 is
        # not < 0.1): no progressive decay with depth.
        assert vanishing([1e-6, 1e-2, 1e-2, 1e-2, 1e-2, 2e-2]) == {}

    def test_too_few_layers(self):
        # 3 weighted layers < vanishing_min_layers 4: a first/last ratio of
        # 1e-5 is input scaling or noise, not depth. (Judged, dense_0 would
        # pass: reference median(1e-4, 1e-2) = 5.05e-3, next ratio 0.0198.)
        assert vanishing([1e-7, 1e-4, 1e-2]) is None
        assert vanishing([1e-7, 1e-4, 1e-2], vanishing_min_layers=3) == {
            "dense_0": pytest.approx((1e-7, 1e-7 / 5.05e-3))
        }

    def test_four_layers_are_enough(self):
        # Reference median(1e-2, 1e-2) = 1e-2; candidates dense_0, dense_1:
        # dense_0 (next 1e-3 < 0.1) flagged, dense_1 (next 1.0) not.
        assert vanishing([1e-7, 1e-5, 1e-2, 1e-2]) == {
            "dense_0": pytest.approx((1e-7, 1e-5))
        }

    def test_quiet_output_layers(self):
        # Reference median(5e-8, 5e-8) = 5e-8 < vanishing_reference_rms 1e-7:
        # everything is quiet, nothing vanishes relative to anything.
        rms = [1e-12, 1e-12, 1e-12, 1e-10, 1e-10, 5e-8, 5e-8]
        assert vanishing(rms) is None
        found = vanishing(rms, vanishing_reference_rms=1e-8)
        assert sorted(found) == ["dense_0", "dense_1", "dense_2"]

    def test_layers_without_gradients_are_left_out(self):
        # An Activation layer (no weights) and a layer whose gradient is
        # unknown do not count towards the 4 layers.
        layers = [*mlp(["relu"] * 2)]
        layers.insert(1, LayerInfo("act", "Activation", "relu", False, 1))
        stats = recording(
            0, [1e-7, 1e-2, 1e-5, 1e-2], names=["dense_0", "act", "dense_1", "dense_2"]
        )
        assert vanishing_layers(stats, layers, Thresholds()) is None


# An attention block as a graph: the query, key and value projections are
# parallel branches at the same distance from the output (3).
ATTENTION = [
    ("embed", 4),
    ("query", 3),
    ("key", 3),
    ("value", 3),
    ("attn_out", 2),
    ("ffn", 1),
    ("head", 0),
]
# Query and key get small gradients (through the softmax scores), the value
# projection a loud one.
ATTENTION_RMS = [1e-5, 2e-5, 2e-5, 1e-2, 1e-2, 1e-2, 1e-2]


def attention(graph=True):
    return [
        LayerInfo(name, "EinsumDense", None, True, i, d if graph else None)
        for i, (name, d) in enumerate(ATTENTION)
    ]


class TestVanishingDistance:
    def test_attention_siblings_are_not_a_deep_chain(self):
        # Rows farthest first: embed, query, key, value, attn_out, ffn, head;
        # reference = ffn, head (RMS 1e-2, max-abs 4e-2); candidates = the
        # first 7 // 2 = 3: embed, query, key, all with ratio < 1e-2, max-abs
        # < 4e-4 and RMS < 3e-4. Next level of query and key: distance 2
        # (attn_out, ratio 1: not progressive); of embed: distance 3, whose
        # loudest layer is value (ratio 1), not the quiet query (2e-3).
        stats = recording(0, ATTENTION_RMS, names=[n for n, _ in ATTENTION])
        assert vanishing_layers(stats, attention(), Thresholds()) == {}

    def test_same_layers_in_model_order_are_a_chain(self):
        # Without a graph, model order stands in: embed (6) -> query (5) ->
        # key (4) -> value (3). embed's next layer is query (ratio 2e-3 <
        # 0.1), query's is key (2e-3): both flagged; key's is value (1.0).
        stats = recording(0, ATTENTION_RMS, names=[n for n, _ in ATTENTION])
        found = vanishing_layers(stats, attention(graph=False), Thresholds())
        assert found == {
            "embed": pytest.approx((1e-5, 1e-3)),
            "query": pytest.approx((2e-5, 2e-3)),
        }

    def test_one_unknown_distance_falls_back_to_model_order(self):
        layers = attention()
        layers[-1].distance = None
        stats = recording(0, ATTENTION_RMS, names=[n for n, _ in ATTENTION])
        assert sorted(vanishing_layers(stats, layers, Thresholds())) == [
            "embed",
            "query",
        ]

    def test_attention_through_health_rules(self):
        names = [n for n, _ in ATTENTION]
        seq = [recording(s, ATTENTION_RMS, names=names) for s in (0, 5, 10)]
        assert run(HealthRules(attention()), seq) == []
        found = run(HealthRules(attention(graph=False)), seq)
        assert modes(found) == [
            (F.VANISHING_GRADIENTS, "embed", 0),
            (F.VANISHING_GRADIENTS, "query", 0),
        ]
        # No saturating activation between them and the output.
        assert "check the weight initialisation" in found[0].message

    @pytest.mark.parametrize("jumped, named", [(4, True), (-1, False)])
    def test_vanishing_after_a_learning_rate_jump_names_it(self, jumped, named):
        # The rate 100x at step `jumped` (-1: never), the same gradients
        # recorded from step 5: within `_EXPLOSION_STEPS` of a jump up, the
        # steps it made far too large are the cause, not the initialisation
        # (probed: a transformer encoder fitted to 0.85 accuracy, its rate
        # 100x at step 200, told "check the weight initialisation" for its
        # embedding from step 212).
        names = [n for n, _ in ATTENTION]
        items = []
        for s in range(12):
            rate = 0.1 if 0 <= jumped <= s else 1e-3
            items.append(event(s, 1.0, rate, loss=1.0))
            if s in (5, 8, 11):
                items.append(recording(s, ATTENTION_RMS, names=names))
        found = run(HealthRules(attention(graph=False)), items)
        assert modes(found) == [
            (F.VANISHING_GRADIENTS, "embed", 5),
            (F.VANISHING_GRADIENTS, "query", 5),
        ]
        sentence = (
            "it began 1 step after the learning rate jumped 100x, from 0.001 to "
            "0.1 at step 4: steps far too large took the model where the "
            "gradient no longer reaches it"
        )
        assert (sentence in found[0].message) == named
        assert (found[0].fix == gradient_rules._JUMP_FIX) == named


class TestVanishing:
    def test_many_layers_vanishing_at_once_are_one_finding(self):
        # 14 weighted layers (13 sigmoid): the first 7 are candidates, the
        # last 3 the reference (RMS 2e-2). All 7 fall under 1e-3 of it on
        # each recording: one finding on the first, naming five of the six
        # others (a 12-block post-LN Transformer under SGD far too fast had
        # 47 findings of one cause, one per layer).
        rules = HealthRules(mlp(["sigmoid"] * 13))
        rms = [1e-6, 2e-6, 3e-6, 4e-6, 5e-6, 6e-6, 7e-6] + [1e-3] * 4 + [2e-2] * 3
        found = run(rules, [recording(s, rms) for s in (0, 5, 10, 15)])
        assert modes(found) == [(F.VANISHING_GRADIENTS, "dense_0", 0)]
        assert found[0].value == 1e-6
        assert found[0].message.startswith(
            "7 layers get gradients with RMS 1e-06 to 7e-06, 5e-05 to 0.00035 "
            "times those of the layers near the output, for 3 recordings in a "
            "row (steps 0-10): they have almost stopped learning. Layer "
            "'dense_0' first (the saturating activations of "
        )
        assert found[0].message.endswith(
            "then 'dense_1', 'dense_2', 'dense_3', 'dense_4', 'dense_5' and 1 more."
        )
        assert found[0].fix == FIXES[F.VANISHING_GRADIENTS]
        # None of the seven is reported again.
        assert run(rules, [recording(s, rms) for s in (20, 25, 30)]) == []

    def test_layers_reported_before_are_not_grouped_again(self):
        # dense_0-2 confirmed at step 10 (one finding each); dense_3-6 fall
        # from step 15 on, while dense_0-2 stay down: the four new ones are
        # reported, one finding each (fewer than 5), not swallowed by a
        # group whose first layer was reported already.
        rules = HealthRules(mlp(["sigmoid"] * 13))
        first = [1e-6, 2e-6, 3e-6] + [1e-3] * 8 + [2e-2] * 3
        later = [1e-6, 2e-6, 3e-6, 4e-6, 5e-6, 6e-6, 7e-6] + [1e-3] * 4 + [2e-2] * 3
        found = run(rules, [recording(s, first) for s in (0, 5, 10)])
        assert [f.layer for f in found] == ["dense_0", "dense_1", "dense_2"]
        found = run(rules, [recording(s, later) for s in (15, 20, 25)])
        assert modes(found) == [
            (F.VANISHING_GRADIENTS, f"dense_{i}", 15) for i in range(3, 7)
        ]

    def test_deep_sigmoid_persisting(self):
        rules = HealthRules(mlp(["sigmoid"] * 6))
        found = run(rules, [recording(s, SIGMOID_RMS) for s in (0, 5, 10, 15)])
        # Confirmed at step 10: 3 recordings spanning steps 0-10 (11 >= 5).
        expected = [(F.VANISHING_GRADIENTS, f"dense_{i}", 0) for i in range(3)]
        assert modes(found) == expected
        assert [f.value for f in found] == pytest.approx([4e-6, 8e-6, 3.5e-5])
        assert all(f.severity == F.FAILURE for f in found)
        assert all(f.fix == FIXES[F.VANISHING_GRADIENTS] for f in found)
        assert found[0].message == (
            "Layer 'dense_0' gets gradients with RMS 4e-06, 0.00022 times those "
            "of the layers near the output, for 3 recordings in a row (steps "
            "0-10): it has almost stopped learning (the saturating activations "
            "of 'dense_0', 'dense_1', 'dense_2', ... shrink the gradient at "
            "every layer it passes back through)."
        )
        # dense_2 (distance 4) is behind the sigmoids dense_2 .. dense_5.
        assert "of 'dense_2', 'dense_3', 'dense_4', ..." in found[2].message

    def test_confirmed_when_the_span_is_reached(self):
        rules = HealthRules(mlp(["sigmoid"] * 6))
        # Steps 0-3: 4 recordings but a span of 4 steps < patience_steps 5.
        assert run(rules, [recording(s, SIGMOID_RMS) for s in range(4)]) == []
        found = rules.observe(recording(4, SIGMOID_RMS))
        assert modes(found) == [
            (F.VANISHING_GRADIENTS, f"dense_{i}", 0) for i in range(3)
        ]
        assert "for 5 recordings in a row (steps 0-4)" in found[0].message

    # Round 15 P4: a 4-layer sigmoid MLP under SGD (5 layers with gradients:
    # the reference is the median of the last two). dense_0's RMS a flat
    # 1e-4 (max 5e-4); the output layer's noise moves its ratio across 0.01.
    # (Its RMS at step 4 is under its highest: no catching up.)
    FLICKER_REFERENCE = [0.043, 0.023, 0.035, 0.012, 0.0205, 0.02, 0.024]
    FLICKER_FAR = [1e-4, 1e-4, 1e-4, 1.1e-4, 9.6e-5]

    def flickering(self, step, reference, far=1e-4):
        # Reference layers at `reference` each (max 6x), dense_1 at 2.5x
        # dense_0, dense_2 at 0.1 of the reference (not vanishing).
        rms = [far, 2.5 * far, 0.1 * reference, reference, reference]
        maxes = [5 * far, 12 * far, 0.5 * reference, 6 * reference, 6 * reference]
        return recording(step, rms, maxes)

    def test_a_ratio_flickering_over_the_bound_keeps_its_streak(self):
        rules = HealthRules(mlp(["sigmoid"] * 4))
        # Step 3, the reference at 0.008: the ratio 1.1e-4 / 0.008 = 0.014,
        # over the bound 0.01 by under 2x: kept, not confirmed.
        reference = list(self.FLICKER_REFERENCE)
        reference[3] = 0.008
        far = self.FLICKER_FAR
        found = run(rules, [self.flickering(s, reference[s], far[s]) for s in range(4)])
        assert found == []
        found = rules.observe(self.flickering(4, reference[4], far[4]))
        assert modes(found) == [(F.VANISHING_GRADIENTS, "dense_0", 0)]
        assert "for 5 recordings in a row (steps 0-4)" in found[0].message

    def test_a_near_miss_confirms_nothing_and_starts_no_streak(self):
        rules = HealthRules(mlp(["sigmoid"] * 4))
        # Ratios 1e-4 / 0.008 = 0.0125 from step 0: near misses only.
        assert run(rules, [self.flickering(s, 0.008) for s in range(8)]) == []
        # The span is reached at step 4 on a near miss (0.0125): confirmed
        # on the next recording within the bound, step 5.
        rules = HealthRules(mlp(["sigmoid"] * 4))
        sequence = [0.04, 0.04, 0.04, 0.04, 0.008, 0.04]
        found = run(rules, [self.flickering(s, r) for s, r in enumerate(sequence)])
        assert modes(found) == [(F.VANISHING_GRADIENTS, "dense_0", 0)]
        assert "for 6 recordings in a row (steps 0-5)" in found[0].message

    def test_twice_the_bound_breaks_the_streak(self):
        rules = HealthRules(mlp(["sigmoid"] * 4))
        # Step 2: ratio 1e-4 / 0.005 = 0.02, twice the bound: a new streak
        # from step 3, confirmed at step 7.
        sequence = [0.04, 0.04, 0.005, 0.04, 0.04, 0.04, 0.04, 0.04]
        found = run(rules, [self.flickering(s, r) for s, r in enumerate(sequence)])
        assert modes(found) == [(F.VANISHING_GRADIENTS, "dense_0", 3)]

    @pytest.mark.parametrize("head, named", [(1e-3, True), (5e-3, False)])
    def test_a_tiny_head_is_named_as_the_cause(self, head, named):
        # ReLU layers of 100 weights each (grad_norm = 10 x RMS): the output
        # layer's weights of RMS `head` (norm 10 x head). Under 3e-3 (a
        # classifier head of zeros or stddev 1e-3 under SGD: the gradients
        # behind it are scaled by it) it is the cause, with its own fix;
        # else the weights in general.
        rules = HealthRules(mlp(["relu"] * 6))
        norms = [10 * r for r in SIGMOID_RMS]
        weights = [10 * 0.1] * 6 + [10 * head]
        seq = [
            recording(s, SIGMOID_RMS, grad_norm=norms, weight_norm=weights)
            for s in range(5)
        ]
        found = run(rules, seq)
        assert [f.layer for f in found] == ["dense_0", "dense_1", "dense_2"]
        tiny = "the weights of layer 'dense_6', nearer the output, are tiny (RMS"
        assert (tiny in found[0].message) == named
        assert (found[0].fix == gradient_rules._TINY_WEIGHTS_FIX) == named

    @pytest.mark.parametrize("growth, reported", [(1.15, True), (1.2, False)])
    def test_not_while_catching_up(self, growth, reported):
        # The far layers' RMS grows `growth` times a step (a CNN behind a
        # classifier head that starts at zero under SGD: its gradients grow
        # with the head's weights, 7.6x over 5 steps, and it fitted). At
        # 1.2x, 2.07x over steps 0-4 (`_CATCHING_UP` 2): the streak starts
        # again at step 4, before it spans 5 steps; at 1.15x, 1.75x: it is
        # reported at step 4 as before.
        rules = HealthRules(mlp(["sigmoid"] * 6))
        found = []
        for s in range(5):
            rms = [r * growth**s for r in SIGMOID_RMS[:3]] + SIGMOID_RMS[3:]
            found += rules.observe(recording(s, rms))
        assert bool(found) == reported
        if reported:
            assert "for 5 recordings in a row (steps 0-4)" in found[0].message

    def test_not_reported_before_patience(self):
        # 2 recordings spanning 6 steps: fewer than patience 3.
        rules = HealthRules(mlp(["sigmoid"] * 6))
        assert run(rules, [recording(s, SIGMOID_RMS) for s in (0, 5)]) == []

    @pytest.mark.parametrize(
        "per, steps, reported",
        [
            (4, (3, 7), True),  # 2 recordings, steps 3-7: span 5
            (4, (3, 6), False),  # span 4 < patience_steps 5
            (2, (1, 3, 5), True),  # ceil(5 / 2) = 3 recordings, span 5
            (2, (1, 5), False),
            (1, (3, 7), False),  # one step per execution: patience 3
        ],
    )
    def test_one_recording_per_execution(self, per, steps, reported):
        # `steps_per_execution` 4: a recording per execution of 4 steps at
        # most; patience_steps 5 hold 2 of them (ceil(5 / 4) = 2), at least 2.
        rules = HealthRules(mlp(["sigmoid"] * 6))
        rules.execution_steps = per
        found = run(rules, [recording(s, SIGMOID_RMS) for s in steps])
        expected = [(F.VANISHING_GRADIENTS, f"dense_{i}", steps[0]) for i in range(3)]
        assert modes(found) == (expected if reported else [])
        assert rules._patience() == {1: 3, 2: 3, 4: 2}[per]

    @staticmethod
    def _execution(per: int, earlier: dict) -> list:
        """The findings of one recording at step `per - 1` of a sigmoid MLP
        (`SIGMOID_RMS`) with `per` steps an execution, whose earlier steps'
        gradient RMS (`StepStats.execution_rms`) are `earlier`."""
        rules = HealthRules(mlp(["sigmoid"] * 6))
        rules.execution_steps = per
        stats = recording(per - 1, SIGMOID_RMS)
        stats.execution_rms = earlier
        return rules.observe(stats)

    @staticmethod
    def _rms(rms) -> dict:
        return {f"dense_{i}": r for i, r in enumerate(rms)}

    def test_one_execution_of_8_steps_confirms_at_its_last(self):
        # Steps 0-6 of the execution vanish as step 7 does (their rows):
        # 8 steps >= patience_steps 5, reported at 7 from step 0 (was 15).
        found = self._execution(8, {s: self._rms(SIGMOID_RMS) for s in range(7)})
        assert modes(found) == [
            (F.VANISHING_GRADIENTS, f"dense_{i}", 0) for i in range(3)
        ]
        assert found[0].message.startswith(
            "Layer 'dense_0' gets gradients with RMS 4e-06, 0.00022 times those "
            "of the layers near the output, for each of the 8 steps of its "
            "execution (steps 0-7): it has almost stopped learning"
        )

    def test_one_execution_needs_every_step_and_the_span(self):
        vanishing = self._rms(SIGMOID_RMS)
        healthy = self._rms([1e-2] * 7)
        # Step 3 healthy; a step missing from the rows; 4 steps < 5; the
        # reference layers quiet on step 2 (under vanishing_reference_rms).
        quiet = self._rms([*SIGMOID_RMS[:5], 1e-12, 1e-12])
        for per, earlier in [
            (8, {s: healthy if s == 3 else vanishing for s in range(7)}),
            (8, {s: vanishing for s in range(7) if s != 4}),
            (4, {s: vanishing for s in range(3)}),
            (8, {s: quiet if s == 2 else vanishing for s in range(7)}),
        ]:
            assert self._execution(per, earlier) == []
        # dense_2 back to 1e-2 on step 5: dense_0 and dense_1 still told.
        earlier = {s: vanishing for s in range(7)}
        earlier[5] = {**vanishing, "dense_2": 1e-2}
        assert [f.layer for f in self._execution(8, earlier)] == ["dense_0", "dense_1"]

    def test_interrupted_streak_is_not_persistence(self):
        rules = HealthRules(mlp(["sigmoid"] * 6))
        healthy = [1e-2] * 7
        seq = [
            recording(s, SIGMOID_RMS if s % 10 else healthy) for s in range(0, 60, 5)
        ]
        assert run(rules, seq) == []

    def test_unjudged_recording_breaks_the_streak(self):
        # A recording with quiet output layers (None: cannot be judged) ends
        # the streak: steps 0, 5 and then 15 alone.
        rules = HealthRules(mlp(["sigmoid"] * 6))
        quiet = [1e-12] * 7
        rms = [SIGMOID_RMS, SIGMOID_RMS, quiet, SIGMOID_RMS]
        seq = [recording(s, r) for s, r in zip((0, 5, 10, 15), rms)]
        assert run(rules, seq) == []

    def test_batch_quiet_at_the_output_does_not_break_the_streak(self):
        # Step 3: the far layers as before, the last two 50x quieter (a loss
        # gradient that cancelled at the output). Reference median(3.5e-3,
        # 3.3e-2) / 50 = 3.65e-4, under 0.1 x the median 1.825e-2 of the
        # recordings before it: not judged, so 0, 1, 2 and 4 make the streak
        # (4 recordings, steps 0-4). (Judged, dense_0's ratio there, 4e-6 /
        # 3.65e-4 = 0.011 > 1e-2, would break it.)
        rules = HealthRules(mlp(["sigmoid"] * 6))
        quiet = [*SIGMOID_RMS[:5], *(r / 50 for r in SIGMOID_RMS[5:])]
        assert run(rules, [recording(s, SIGMOID_RMS) for s in range(3)]) == []
        assert rules.observe(recording(3, quiet)) == []
        found = rules.observe(recording(4, SIGMOID_RMS))
        assert modes(found) == [
            (F.VANISHING_GRADIENTS, f"dense_{i}", 0) for i in range(3)
        ]
        assert (
            "for 4 recordings (steps 0-4; 1 more between them not judged, quiet "
            "at the output): it has almost stopped learning"
        ) in found[0].message

    def test_the_second_recording_can_be_quiet_against_the_first(self):
        # As above with the quiet batch at step 1, against step 0's
        # reference alone (1.825e-2): not judged, so 0, 2, 3 and 4 make the
        # streak. (Probed: four stacked sigmoid `SimpleRNN`s on JAX, the
        # output layer's gradient RMS 0.124 at step 0, 0.0038 at step 1;
        # told at 10 instead of 4 while a quiet batch needed two before it.)
        rules = HealthRules(mlp(["sigmoid"] * 6))
        quiet = [*SIGMOID_RMS[:5], *(r / 50 for r in SIGMOID_RMS[5:])]
        seq = [recording(0, SIGMOID_RMS), recording(1, quiet)]
        seq += [recording(s, SIGMOID_RMS) for s in (2, 3)]
        assert run(rules, seq) == []
        found = rules.observe(recording(4, SIGMOID_RMS))
        assert modes(found) == [
            (F.VANISHING_GRADIENTS, f"dense_{i}", 0) for i in range(3)
        ]
        assert (
            "for 4 recordings (steps 0-4; 1 more between them not judged, quiet "
            "at the output)"
        ) in found[0].message

    @pytest.mark.parametrize("factor, reported", [(5, False), (50, True)])
    def test_only_a_far_quieter_output_is_left_unjudged(self, factor, reported):
        # Step 3: the far layers 30x louder (dense_0 1.2e-4), the last two
        # `factor` times quieter. 5x: reference 3.65e-3, over 0.1 x 1.825e-2,
        # so judged; dense_0's ratio 1.2e-4 / 3.65e-3 = 0.033 > 1e-2 breaks
        # the streak (nothing at step 4). 50x: reference 3.65e-4, not judged;
        # reported at step 4 as above.
        rules = HealthRules(mlp(["sigmoid"] * 6))
        step3 = [
            *(30 * r for r in SIGMOID_RMS[:5]),
            *(r / factor for r in SIGMOID_RMS[5:]),
        ]
        seq = [*(recording(s, SIGMOID_RMS) for s in range(3)), recording(3, step3)]
        assert run(rules, seq) == []
        found = rules.observe(recording(4, SIGMOID_RMS))
        assert [f.step for f in found] == ([0, 0, 0] if reported else [])
        # Every judged recording's reference level is kept.
        assert list(rules._levels) == pytest.approx(
            [1.825e-2] * 3 + [1.825e-2 / factor, 1.825e-2]
        )

    def test_converged_tiny_everywhere(self):
        # Converged: every layer has tiny gradients, none tiny relative to others.
        rules = HealthRules(mlp(["relu"] * 6))
        seq = [recording(s, [1e-9 * (1 + i % 3) for i in range(7)]) for s in range(10)]
        assert run(rules, seq) == []

    def test_converged_loss(self):
        rules = HealthRules(mlp(["sigmoid"] * 6))
        # The first recorded loss is 2.3; 1e-3 <= 1e-3 * 2.3: converged.
        first = recording(0, RELU_RMS[:1] * 7, loss=2.3)
        seq = [recording(s, SIGMOID_RMS, loss=1e-3) for s in range(1, 10)]
        assert run(rules, [first, *seq]) == []

    def test_not_converged_above_the_ratio(self):
        rules = HealthRules(mlp(["sigmoid"] * 6))
        # 1e-2 > 1e-3 * 2.3: still learning, the vanishing is reported.
        first = recording(0, RELU_RMS[:1] * 7, loss=2.3)
        seq = [recording(s, SIGMOID_RMS, loss=1e-2) for s in range(1, 10)]
        assert modes(run(rules, [first, *seq])) == [
            (F.VANISHING_GRADIENTS, f"dense_{i}", 1) for i in range(3)
        ]

    def test_converged_uses_the_first_recorded_loss(self):
        rules = HealthRules(mlp(["sigmoid"] * 6))
        # No loss at step 0; the first recorded one is 2.0 (step 1), and
        # 1.5e-3 <= 1e-3 * 2.0: converged, although 1.5e-3 is not below
        # 1e-3 times any later loss.
        seq = [recording(0, RELU_RMS[:1] * 7, loss=None)]
        seq += [recording(1, RELU_RMS[:1] * 7, loss=2.0)]
        seq += [recording(s, SIGMOID_RMS, loss=1.5e-3) for s in range(2, 20)]
        assert run(rules, seq) == []

    @pytest.mark.parametrize("per, expected", [(8, 1.0), (1, 5.0)])
    def test_where_training_began_with_several_steps_an_execution(self, per, expected):
        # Batches of 4: the start is the median of the first 8 steps' losses
        # (32 samples). A recording of an execution of 8 steps holds 32
        # samples but is 8 batches of 4: the start is the median of (5, 1 x
        # 7), 1.0. Read as one batch of 32 (`per` 1), the first step's 5.0.
        rules = HealthRules(mlp(["relu"]))
        run(rules, [event(s, 1.0, loss=5.0 if s == 0 else 1.0) for s in range(8)])
        rules.observe(recording(7, [1e-2, 1e-2], batch_size=32, activation_steps=per))
        assert rules._start() == expected

    @pytest.mark.parametrize("batch, reported", [(2, False), (32, True)])
    def test_converged_against_where_training_began(self, batch, reported):
        # Step 0's batch happened to be easy (loss 2e-3), the next 15 at
        # 2.0, then 1.5e-3. On batches of 2 the start is the median of the
        # first 16 steps' losses (32 samples, `_START_SAMPLES`): 2.0, and
        # 1.5e-3 <= 1e-3 * 2.0: converged, silent. On batches of 32 the
        # first step's loss is the start: 1.5e-3 > 1e-3 * 2e-3, reported.
        rules = HealthRules(mlp(["sigmoid"] * 6))
        healthy = RELU_RMS[:1] * 7
        seq = [recording(0, healthy, loss=2e-3, batch_size=batch)]
        seq += [recording(s, healthy, loss=2.0, batch_size=batch) for s in range(1, 16)]
        seq += [
            recording(s, SIGMOID_RMS, loss=1.5e-3, batch_size=batch)
            for s in range(16, 30)
        ]
        found = run(rules, seq)
        assert modes(found) == (
            [(F.VANISHING_GRADIENTS, f"dense_{i}", 16) for i in range(3)]
            if reported
            else []
        )

    def test_message_without_saturating_activations(self):
        rules = HealthRules(mlp(["relu"] * 6))
        found = run(rules, [recording(s, SIGMOID_RMS) for s in (0, 5, 10)])
        assert len(found) == 3
        assert found[0].message.endswith(
            "(the gradient shrinks at every layer it passes back through: check "
            "the weight initialisation)."
        )
        assert found[0].fix == (
            "Initialise the weights for the activation (Glorot for tanh and "
            "sigmoid, He for ReLU: `kernel_initializer='glorot_uniform'` or "
            "`'he_normal'`), and add batch normalization or skip connections."
        )

    @pytest.mark.parametrize(
        "activation, saturation, blamed",
        [
            # Tanh's derivative is 1 at 0: near-linear (at most 0.08% of the
            # outputs in the tails, < 0.1%), the weights shrink the gradient
            # (a deep tanh stack initialised with stddev 0.05: 0% saturated,
            # its first layer's RMS 4e-7, 3e-5 of the output layers').
            ("tanh", 0.0008, None),
            # None of them in the tails: said so, not "at most 0.00%".
            ("tanh", 0.0, None),
            # At 0.2%, all but dense_3 (0.1%, not under 0.1%: named too) and
            # dense_0 itself (0%).
            ("tanh", 0.002, "'dense_1', 'dense_2', 'dense_3', ..."),
            # Sigmoid's largest derivative is 1/4: it shrinks the gradient
            # at every layer, saturated or not, dense_0's own included.
            ("sigmoid", 0.0, "'dense_0', 'dense_1', 'dense_2', ..."),
        ],
    )
    def test_message_names_activations_where_they_shrink_it(
        self, activation, saturation, blamed
    ):
        rules = HealthRules(mlp([activation] * 6))
        # dense_0 unsaturated, dense_1..dense_5 (between it and the output)
        # at `saturation`, dense_3 at half of it.
        shares = [0.0] + [saturation] * 5 + [None]
        shares[3] = saturation / 2
        seq = [recording(s, SIGMOID_RMS, saturation=shares) for s in (0, 5, 10)]
        found = run(rules, seq)
        assert len(found) == 3
        if blamed:
            assert found[0].message.endswith(
                f"(the saturating activations of {blamed} shrink the gradient at "
                "every layer it passes back through)."
            )
            assert found[0].fix == FIXES[F.VANISHING_GRADIENTS]
        else:
            share = "at most 0.08%" if saturation else "none"
            assert found[0].message.endswith(
                f"(the tanh layers from it to the output are near-linear ({share} "
                "of their outputs in the flat tails), so the weights shrink the "
                "gradient at every layer it passes back through: check the weight "
                "initialisation)."
            )
            assert "Glorot for tanh" in found[0].fix

    def test_hidden_softmax_layers(self):
        # Probed: 5 Dense layers of 64 units with a softmax, the first's
        # gradient RMS 1e-9 of the output's, told to check the (Glorot)
        # initialisation. Their statistics do not measure a softmax (the
        # activation is not in the layers' infos): the callback names them
        # (`hidden_softmax`).
        rules = HealthRules(mlp([None] * 6))
        rules.hidden_softmax = ("dense_2", "dense_4")
        seq = [recording(s, SIGMOID_RMS) for s in (0, 5, 10)]
        found = run(rules, seq)
        assert found[0].message.endswith(
            "(the softmax of the hidden layers 'dense_2' and 'dense_4' (outputs "
            "that sum to 1 over their units) divides the gradient among the "
            "units at every layer it passes back through)."
        )
        assert found[0].fix == gradient_rules._HIDDEN_SOFTMAX_FIX

    @pytest.mark.parametrize("activation", ["elu", "softplus"])
    def test_flat_tails_without_sigmoid_or_tanh(self, activation):
        # Probed: ELU, SELU and softplus layers thrown into their flat tails
        # (a bias of -10) were told, rightly, as the saturating activations
        # that shrink the gradient, with the fix "use ReLU instead of
        # sigmoid/tanh" in models that have neither: the flat-tail fix.
        rules = HealthRules(mlp([activation] * 6))
        shares = [0.0] + [0.5] * 5 + [None]
        seq = [recording(s, SIGMOID_RMS, saturation=shares) for s in (0, 5, 10)]
        found = run(rules, seq)
        assert len(found) == 3
        assert found[0].message.endswith(
            "(the saturating activations of 'dense_1', 'dense_2', 'dense_3', ... "
            "shrink the gradient at every layer it passes back through)."
        )
        assert found[0].fix == rule_support._FLAT_TAIL_FIX

    @pytest.mark.parametrize(
        "activation, own",
        [
            ("tanh", FIXES[F.VANISHING_GRADIENTS]),
            ("elu", rule_support._FLAT_TAIL_FIX),
        ],
    )
    def test_flat_tails_after_a_learning_rate_jump_name_it(self, activation, own):
        # Probed: SGD's rate 0.01 -> 50 at step 60 on a tanh MLP, every
        # layer 91-100% saturated from step 62, vanishing told at 103 with
        # "use ReLU instead of sigmoid/tanh" alone: the jump (the rate
        # still up) pushed them into their tails; its fix first, then the
        # activation's. (Half in the tails here: no saturation finding.)
        rules = HealthRules(mlp([activation] * 6))
        shares = [0.0] + [0.5] * 5 + [None]
        items = []
        for s in range(12):
            items.append(event(s, 1.0, 50.0 if s >= 4 else 0.01, loss=1.0))
            if s in (5, 8, 11):
                items.append(recording(s, SIGMOID_RMS, saturation=shares))
        found = run(rules, items)
        assert len(found) == 3
        assert found[0].message.endswith(
            "(the saturating activations of 'dense_1', 'dense_2', 'dense_3', ... "
            "shrink the gradient at every layer it passes back through; it "
            "began 1 step after the learning rate jumped 5e+03x, from 0.01 to "
            "50 at step 4: steps far too large pushed them into their flat "
            "tails)."
        )
        assert found[0].fix == (
            rule_support._JUMP_FIX
            + " If they still vanish: "
            + own[0].lower()
            + own[1:]
        )

    def test_saturation_after_a_learning_rate_jump_names_it(self):
        # The same jump with 95% of the tanh layers' outputs in the tails:
        # their saturation names it too, with its fix first.
        rules = HealthRules(mlp(["tanh"] * 6))
        shares = [0.0] + [0.95] * 5 + [None]
        items = []
        for s in range(12):
            items.append(event(s, 1.0, 50.0 if s >= 4 else 0.01, loss=1.0))
            if s in (5, 8, 11):
                items.append(recording(s, SIGMOID_RMS, saturation=shares))
        found = [f for f in run(rules, items) if f.mode == F.SATURATED_ACTIVATIONS]
        assert [f.layer for f in found] == [f"dense_{i}" for i in range(1, 6)]
        assert found[0].message.endswith(
            "so it and the layers before it have almost stopped learning. It "
            "began 1 step after the learning rate jumped 5e+03x, from 0.01 to 50 "
            "at step 4: steps far too large."
        )
        own = FIXES[F.SATURATED_ACTIVATIONS]
        assert found[0].fix == (
            rule_support._JUMP_FIX
            + " If they stay in the tails: "
            + own[0].lower()
            + own[1:]
        )

    @pytest.mark.parametrize("gated", [False, True])
    def test_a_gate_is_not_judged(self, gated):
        # A squeeze-and-excitation block (`sq`, `ex`) whose outputs multiply
        # the path they are computed from (`LayerInfo.gate`): its gradient
        # 0.004-0.006x the output layers', small by design. Probed: a
        # healthy SE CNN (0.79 accuracy) told as vanishing on its squeeze
        # layer, blamed on the gate's sigmoid (0% in the tails) with "use
        # ReLU instead of sigmoid". As a gate, not judged, and its sigmoid
        # does not make the layers on the path it gates "behind" one.
        gate = "se" if gated else None
        layers = [
            LayerInfo("conv", "Conv2D", "relu", True, 0, 5),
            LayerInfo("sq", "Dense", "relu", True, 1, 4, gate=gate),
            LayerInfo("ex", "Dense", "sigmoid", True, 2, 3, gate=gate),
            LayerInfo("conv_1", "Conv2D", "relu", True, 3, 2),
            LayerInfo("dense", "Dense", "relu", True, 4, 1),
            LayerInfo("out", "Dense", "softmax", True, 5, 0),
        ]
        names = [info.name for info in layers]
        rms = [5e-3, 2e-5, 3e-5, 4e-3, 5e-3, 5e-3]
        shares = [None, None, 0.0, None, None, None]
        seq = [recording(s, rms, names=names, saturation=shares) for s in (0, 5, 10)]
        found = run(HealthRules(layers), seq)
        assert modes(found) == ([] if gated else [(F.VANISHING_GRADIENTS, "sq", 0)])
        squashing = gradient_rules._squashing(
            layers, gradient_rules._distances(layers), 5
        )
        assert squashing == ([] if gated else ["ex"])

    def test_message_for_a_capped_relu_below_its_cap(self):
        # ReLU6 layers whose outputs never reached 6: ReLUs, not near-linear
        # squashing layers; the weights' message.
        rules = HealthRules(mlp(["relu6"] * 6))
        shares = [0.0] * 6 + [None]
        seq = [recording(s, SIGMOID_RMS, saturation=shares) for s in (0, 5, 10)]
        found = run(rules, seq)
        assert found[0].message.endswith(
            "(the gradient shrinks at every layer it passes back through: check "
            "the weight initialisation)."
        )
        assert "Glorot for tanh" in found[0].fix

    def test_message_ignores_saturating_layers_before_it(self):
        # A sigmoid first layer is not between dense_1 and the output.
        # Reference 1e-2: dense_0 (ratio 2e-4, next dense_1 4e-4) and
        # dense_1 (ratio 4e-4, next dense_2 8e-4) are flagged, dense_2 (next
        # dense_3 ratio 1) is not.
        rules = HealthRules(mlp(["sigmoid"] + ["relu"] * 5))
        rms = [2e-6, 4e-6, 8e-6, 1e-2, 1e-2, 1e-2, 1e-2]
        found = run(rules, [recording(s, rms) for s in (0, 5, 10)])
        assert modes(found) == [
            (F.VANISHING_GRADIENTS, "dense_0", 0),
            (F.VANISHING_GRADIENTS, "dense_1", 0),
        ]
        assert "the saturating activations of 'dense_0'" in found[0].message
        assert "saturating" not in found[1].message
        assert "check the weight initialisation" in found[1].message

    def test_message_does_not_blame_the_output_activation(self):
        # A sigmoid output scales every layer's gradient alike.
        rules = HealthRules(mlp(["relu"] * 6, output="sigmoid"))
        found = run(rules, [recording(s, SIGMOID_RMS) for s in (0, 5, 10)])
        assert len(found) == 3
        assert all("saturating" not in f.message for f in found)
        assert all("check the weight initialisation" in f.message for f in found)

    def test_quiet_branch_with_a_loud_layer_behind_it_is_bypassed(self):
        # A U-Net-like ReLU model: the first layer (farthest from the loss)
        # reaches the output through a skip connection and is loud; the
        # bottleneck behind the decoder is quiet. Rows farthest first:
        # dense_0 (ratio 1), dense_1 (ratio 1e-3), dense_2 (2e-3, next level
        # dense_3 at 4e-3 < 0.1): dense_1 and dense_2 meet every condition
        # of a depth effect, but the gradient reaches dense_0, behind them,
        # loud (ratio 1 >= 0.1): they are a branch it goes around.
        rms = [1e-2, 1e-5, 2e-5, 4e-5, 1e-2, 1e-2, 1e-2]
        found = run(
            HealthRules(mlp(["relu"] * 6)), [recording(s, rms) for s in (0, 5, 10)]
        )
        assert found == []
        # With a tanh layer between them and the output the gradient is
        # shrunk on the way: reported, whatever path reaches dense_0.
        rules = HealthRules(mlp(["relu"] * 3 + ["tanh"] + ["relu"] * 2))
        found = run(rules, [recording(s, rms) for s in (0, 5, 10)])
        assert modes(found) == [
            (F.VANISHING_GRADIENTS, "dense_1", 0),
            (F.VANISHING_GRADIENTS, "dense_2", 0),
        ]
        assert "the saturating activations of 'dense_3'" in found[0].message

    def test_few_layers_first_last_ratio_is_not_vanishing(self):
        rules = HealthRules(mlp(["sigmoid"] * 2))
        rms = [1e-7, 1e-4, 1e-2]
        assert run(rules, [recording(s, rms) for s in range(10)]) == []

    def test_healthy_relu_and_loud_output(self):
        rules = HealthRules(mlp(["relu"] * 3))
        rms = [2e-3, 1e-3, 8e-4, 3e-1]  # See TestVanishingLayers.test_absolute_rms.
        assert run(rules, [recording(s, rms) for s in range(10)]) == []

    def test_threshold_override(self):
        rules = HealthRules(
            mlp(["sigmoid"] * 6),
            {"patience": 1, "patience_steps": 1, "vanishing_ratio": 3e-4},
        )
        found = rules.observe(recording(0, SIGMOID_RMS))
        # Only dense_0 (ratio 2.2e-4) is below 3e-4; the next layer's 4.4e-4
        # is below sqrt(3e-4) = 1.7e-2.
        assert modes(found) == [(F.VANISHING_GRADIENTS, "dense_0", 0)]


def zero_run(norms, losses, lrs=None, layers=None, start=0, rules=None):
    """`observe_step` over steps with these norms, losses (and rates), on
    `rules` or new rules of `layers`."""
    rules = rules or HealthRules(layers or mlp(["relu"] * 2))
    lrs = lrs or [0.05] * len(norms)
    found = []
    for i, (n, loss, lr) in enumerate(zip(norms, losses, lrs)):
        found += [
            (f, start + i)
            for f in rules.observe_step(event(start + i, n, lr, loss=loss))
        ]
    return found


def starved_run(shares, losses, dead=None, norms=None):
    """Recordings of an LSTM-like model (one tanh layer and a softmax
    output, two weighted layers: too few for the per-layer vanishing rule),
    each step's kernel share and loss as given (`dead`: "told", a dead-unit
    finding told first; "named", a layer's vanishing gradients told first;
    "inactive", 60% of the first layer's units inactive on every batch;
    "cut", the first layer's gradients exactly 0), and its global gradient
    norm (`norms`; default 1 each): (finding, reported) of the findings."""
    norms = norms or [1.0] * len(shares)
    rules = HealthRules(mlp(["tanh"]))
    if dead == "told":
        rules._reported.add((F.DEAD_RELU, "dense_0"))
    if dead == "named":
        rules._reported.add((F.VANISHING_GRADIENTS, "dense_0"))
    inactive = [0.6 if dead == "inactive" else 0.0, None]
    rms = [0.0 if dead == "cut" else 1e-9, 1e-2]
    found = []
    for step, (share, loss, norm) in enumerate(zip(shares, losses, norms)):
        stats = recording(
            step,
            rms,
            loss=loss,
            global_norm=norm,
            kernel_share=share,
            dead_fraction=inactive,
        )
        found += [(f, step) for f in run(rules, [stats])]
    return found


class TestStarvedKernels:
    def test_told_at_the_limit(self):
        # 3e-6 (`_STARVED_SHARE`) is starved; the closed-gate LSTM's
        # recordings reach 3.3e-7 (JAX).
        found = starved_run([3e-6] * 4 + [3.3e-7] * 4, [0.693] * 8)
        assert [(f.mode, f.step, reported) for f, reported in found] == [
            (F.VANISHING_GRADIENTS, 0, 4)
        ]

    def test_an_lstm_with_closed_gates(self):
        # Probed: an LSTM whose gate biases are all -6 (its outputs about
        # 1e-5), the loss at ln 2 throughout: its kernels got 1.6e-9 of the
        # squared gradient norm, nothing was told. 5 recordings over 5
        # steps: told at step 4.
        ((finding, reported),) = starved_run([1.6e-9] * 8, [0.693] * 8)
        assert (finding.mode, finding.layer, finding.step, reported) == (
            F.VANISHING_GRADIENTS,
            None,
            0,
            4,
        )
        assert finding.value == 1.6e-9
        assert finding.message == (
            "The kernels of the model's layers get 1.6e-09 of the squared "
            "gradient norm (its vectors, the biases, the rest) for 5 recordings "
            "in a row (steps 0-4), the loss at 0.693: almost no signal from the "
            "inputs reaches any kernel (a kernel's gradient is its inputs times "
            "the error, a bias's the error alone), so the model learns little "
            "beyond its biases. A layer's outputs are near 0 for every sample: "
            "gates held closed (large negative biases in a recurrent layer), a "
            "scaling far too small, or units dead."
        )
        assert finding.fix == gradient_rules._STARVED_FIX

    def test_batches_quiet_at_the_output_are_not_judged(self):
        # Probed (seed 1 of `closed_gates_lstm`, TensorFlow): the global
        # norm 0.133, 0.223, then 1.5e-3 and 9.9e-4 at steps 2-3 (the
        # batch's labels averaging to the prior the model predicts: its
        # output bias's gradient cancels), 0.132 after; the kernels' share
        # 1.1e-9 and 7.6e-10 at steps 0-1, 2.1e-5 and 2.8e-5 at 2-3, 1.2e-9
        # after. Steps 2-3 are under 0.1 of the median norm before them
        # (`_QUIET_REFERENCE`): neither extends nor breaks the streak, which
        # holds 3 recordings over steps 0-4 (`patience_steps` 5) at step 4.
        shares = [1.1e-9, 7.6e-10, 2.1e-5, 2.8e-5, 1.2e-9, 1.2e-9]
        norms = [0.133, 0.223, 1.5e-3, 9.9e-4, 0.132, 0.132]
        ((finding, reported),) = starved_run(shares, [0.693] * 6, norms=norms)
        assert (finding.step, reported, finding.value) == (0, 4, 1.2e-9)
        assert finding.message.startswith(
            "The kernels of the model's layers get 1.2e-09 of the squared "
            "gradient norm (its vectors, the biases, the rest) for 3 recordings "
            "(steps 0-4; 2 more between them not judged, quiet at the output), "
            "the loss at 0.693: almost no signal"
        )
        # Not quiet (the norm 0.05 there, over 0.1 of the median 0.178):
        # the share breaks the streak, which starts again at step 4.
        norms[2] = 0.05
        assert starved_run(shares, [0.693] * 6, norms=norms) == []

    @pytest.mark.parametrize(
        "shares, losses, dead",
        [
            # A healthy model's kernels carry most of it (0.6-0.95; a large
            # embedding's 0.08); a depthwise/separable CNN that starts
            # slowly (probed: 2.5e-5-1e-3 over its first 40 steps, then
            # learnt to 100% accuracy under Adam). Over 3e-6 here.
            ([2.5e-5] * 8, [0.693] * 8, None),
            ([3.1e-6] * 8, [0.693] * 8, None),
            # Fitted: the loss at 0.3 from step 5, under half of 0.693 (the
            # recent median by the starved steps 10-19).
            ([0.5] * 10 + [1e-8] * 10, [0.693] * 5 + [0.3] * 15, None),
            # Dead units or a layer's vanishing gradients told, most of a
            # layer inactive on the batch, or a layer cut off (its
            # gradients exactly 0, as behind dead units judged by their
            # gradients): the starved kernels are their consequence.
            ([1e-8] * 8, [0.693] * 8, "told"),
            ([1e-8] * 8, [0.693] * 8, "named"),
            ([1e-8] * 8, [0.693] * 8, "inactive"),
            ([1e-8] * 8, [0.693] * 8, "cut"),
            # Unknown (no vector, or no kernel, has gradients).
            ([None] * 8, [0.693] * 8, None),
            # Starved at 4 recordings only (steps 0-3).
            ([1e-8] * 4 + [0.5] * 4, [0.693] * 8, None),
        ],
    )
    def test_not_told(self, shares, losses, dead):
        assert starved_run(shares, losses, dead) == []


class TestZeroGradients:
    # 5 healthy steps (norm 1, loss 1: early loss median 1), then the norm
    # is exactly 0 with a loss of 10 from step 5: 5 steps in a row
    # (patience_steps) are steps 5-9, reported at 9.
    def test_reported_after_patience_steps(self):
        found = zero_run([1.0] * 5 + [0.0] * 10, [1.0] * 5 + [10.0] * 10)
        ((finding, reported),) = found
        assert (finding.mode, finding.layer, finding.step, reported) == (
            F.VANISHING_GRADIENTS,
            None,
            5,
            9,
        )
        assert finding.value == 0.0 and finding.severity == F.FAILURE
        assert finding.message.startswith(
            "The global gradient norm was exactly 0 for 5 steps in a row "
            "(steps 5-9) while the loss stayed at about 10 (against 1 in the "
            "first steps)"
        )
        assert "learning rate" not in finding.message  # It did not change.
        assert "from_logits=True" in finding.fix
        assert finding.fix == rules_module._ZERO_FIX
        assert "before any update" not in finding.message

    def test_after_an_explosion(self):
        # A separable CNN under SGD at 0.5 with momentum (JAX): the norm 18
        # at step 19, 40-90x its early level, the loss 11.6 from step 20 with
        # every gradient exactly 0 (Keras's cross-entropy on JAX clips the
        # saturated softmax). Here: the jump of step 40 told as the
        # explosion, then every gradient 0 from step 41.
        rules = HealthRules(mlp(["relu"]))
        seq = [event(s, 1.0, loss=1.5 if s < 5 else 0.2) for s in range(40)]
        seq.append(event(40, 40.0, loss=1.0))
        seq += [event(41 + i, 0.0, loss=11.0) for i in range(6)]
        found = run(rules, seq)
        assert modes(found) == [
            (F.EXPLODING_GRADIENTS, None, 40),
            (F.VANISHING_GRADIENTS, None, 41),
        ]
        assert found[1].message.endswith(
            "It follows the explosion of step 40: the steps threw the output "
            "into its flat tails."
        )

    @staticmethod
    def _thrown_to_zero(jumps=True, zero_loss=12.0):
        """A separable CNN under SGD at 0.5 with momentum (JAX probe): the
        norm 0.27 at first, 6.5 and 12.4 at steps 12 and 14 (`jumps`), the
        loss 8.7-8.9 at steps 19-20, then every gradient exactly 0 from step
        21 with the loss at `zero_loss` (1.38 where training began)."""
        norms = [0.27] * 12 + [6.5, 1.35, 12.4, 0.3, 0.3, 0.45, 0.48, 1.6, 1.0]
        if not jumps:
            norms = [0.27] * 12 + [0.5, 0.4, 0.6, 0.3, 0.3, 0.45, 0.48, 1.6, 1.0]
        losses = [1.38] * 12 + [2.17, 1.1, 2.7, 1.45, 1.5, 1.6, 1.4, 8.7, 8.9]
        seq = [event(s, n, loss=v) for s, (n, v) in enumerate(zip(norms, losses))]
        seq += [event(21 + i, 0.0, loss=zero_loss) for i in range(6)]
        return run(HealthRules(mlp(["relu"])), seq)

    def test_after_a_norm_jump_under_the_limit(self):
        # 12.4 is 46x the early 0.27 (over 10x) but under the limit 27;
        # the loss of the zero steps, 12, is over 3 x 1.38: the jump of
        # step 14 is the explosion they end.
        found = self._thrown_to_zero()
        assert modes(found) == [
            (F.EXPLODING_GRADIENTS, None, 14),
            (F.VANISHING_GRADIENTS, None, 21),
        ]
        assert found[0].message == (
            "The global gradient norm jumped to 12.4 at step 14, 45.9x its "
            "early level of 0.27, and the loss rose from 1.38 where training "
            "began to about 12, where every gradient has been exactly 0 since "
            "step 21 (a saturated output): the steps are far too large and "
            "training is unstable."
        )
        assert found[1].message.endswith(
            "It follows the explosion of step 14: the steps threw the output "
            "into its flat tails."
        )

    @pytest.mark.parametrize(
        "jumps, zero_loss", [(False, 12.0), (True, 4.0)], ids=["no_jump", "low"]
    )
    def test_not_after_a_norm_jump(self, jumps, zero_loss):
        # No jump of the norm before, or the loss of the zero steps under 3x
        # where training began (4 < 4.14): the zero gradients alone.
        found = self._thrown_to_zero(jumps, zero_loss)
        assert modes(found) == [(F.VANISHING_GRADIENTS, None, 21)]

    def test_not_a_jump_after_the_loss_rose(self):
        # A time-ordered stream's new task (JAX, seed shift 25 of
        # `healthy_new_task_stream`): the loss 0.005 on the first task's
        # batches, then 11-12.6 with every gradient exactly 0 from step 16
        # (the saturated softmax passes none), one norm of 7.69 at step 19
        # (131x the early 0.0588, 38x the recent 0.2: under the limit, a
        # jump) among them, and zeros again from step 21. The jump came after
        # the loss rose (its level before it, the median of steps 15-18,
        # 11.35): not the explosion the zeros end.
        seq = [event(s, 0.0588 if s < 5 else 0.2, loss=0.005) for s in range(16)]
        seq += [event(s, 0.0, loss=v) for s, v in zip((16, 17, 18), (12.6, 11.6, 11.1))]
        seq += [event(19, 7.69, loss=8.73), event(20, 7.29e-4, loss=12.6)]
        seq += [event(21 + i, 0.0, loss=12.1) for i in range(5)]
        found = run(HealthRules(mlp(["relu"])), seq)
        assert modes(found) == [(F.VANISHING_GRADIENTS, None, 21)]
        assert "explosion" not in found[0].message

    @pytest.mark.parametrize(
        "zeros_from, losses, thrown",
        [
            # The probe: the loss from 1.39 to 11-13 after the first update.
            (1, [1.39, 11.1, 12.4, 12.9, 12.6, 12.8, 12.5], True),
            # After 5 steps with gradients the norms have a level: a jump
            # of theirs names the cause (`_jumped_before_zero`), not the loss.
            (5, [1.39] * 5 + [11.1, 12.4, 12.9, 12.6, 12.8, 12.5], False),
            # The loss of the zero steps under 3 x 1.39 = 4.17.
            (1, [1.39, 4.0, 4.1, 4.0, 4.1, 4.0, 4.1], False),
        ],
        ids=["first_update", "after_the_baseline", "low"],
    )
    def test_after_a_first_update_that_was_not_recorded(
        self, zeros_from, losses, thrown
    ):
        # An MLP under SGD at 20 in executions of 8 steps (JAX probe): the
        # loss 1.39 at step 0 and 11-13 from step 1 on with every gradient
        # exactly 0; step 0's update was not recorded (an execution's last
        # step is). The loss that rose 3x where training began, after the
        # update of the step before, is the cause.
        norms = [1.0] * zeros_from + [0.0] * (len(losses) - zeros_from)
        found = [f for f, _ in zero_run(norms, losses)]
        expected = [(F.VANISHING_GRADIENTS, None, zeros_from)]
        if thrown:
            expected.insert(0, (F.EXPLODING_GRADIENTS, None, zeros_from - 1))
        assert modes(found) == sorted(expected)
        if thrown:
            # Reported at step 5: the median of steps 1-5's losses is 12.6.
            assert found[0].message == (
                "The loss rose from 1.39 where training began to 11.1 at step 1, "
                "after the update of step 0, and stayed at about 12.6, where "
                "every gradient has been exactly 0 since step 1 (a saturated "
                "output): the steps are far too large and training is unstable."
            )
            assert found[0].fix == FIXES[F.EXPLODING_GRADIENTS]
            assert found[0].value == pytest.approx(11.1 / 1.39)
            assert found[1].message.endswith(
                "It follows the explosion of step 0: the steps threw the output "
                "into its flat tails."
            )

    def test_from_the_first_step(self):
        # Every gradient 0 with a loss of 6.55 from step 0 (a JAX probe: ten
        # ReLU layers whose kernels have stddev 1 saturate the softmax at
        # initialisation): before any update, so neither the learning rate
        # nor an update is the cause; reported at step 4. (Each batch's
        # loss its own: the median of the first five is 6.55.)
        found = zero_run([0.0] * 8, [6.55, 6.6, 6.5, 6.58, 6.52, 6.55, 6.57, 6.53])
        ((finding, reported),) = found
        assert (finding.step, reported) == (0, 4)
        assert finding.message == (
            "The global gradient norm was exactly 0 for 5 steps in a row "
            "(steps 0-4) while the loss stayed at about 6.55 (against 6.55 in "
            "the first steps): no gradient reaches any weight, so training has "
            "stopped. This was so from the first step, before any update: the "
            "model as initialised passes no gradient (an output saturated by "
            "large initial weights, a large output bias or unscaled inputs, or "
            "a loss that is not differentiable in the predictions, such as one "
            "that rounds them)."
        )
        assert finding.fix == rule_support._ZERO_START_FIX
        assert "from_logits=True" in finding.fix
        assert "weight initialisation" in finding.fix

    def test_a_loss_the_same_on_every_batch(self):
        # A custom loss returning 1.0 whatever the predictions (a probe):
        # every gradient 0 and the loss exactly 1 on each of the 5 batches
        # of the streak: it does not read the predictions.
        found = zero_run([0.0] * 8, [1.0] * 8)
        ((finding, reported),) = found
        assert (finding.step, reported) == (0, 4)
        assert finding.message.endswith(
            "This was so from the first step, before any update, and the loss "
            "was exactly 1 on every batch: it does not depend on the "
            "predictions, or on the data."
        )
        assert finding.fix == rule_support._LOSS_STOPPED_FIX

    @pytest.mark.parametrize("loss, fix", [(4.0, "loss"), (5.0, "start")])
    def test_the_same_loss_of_confident_wrong_answers(self, loss, fix):
        # Under a 4-class classifier (ln 4 = 1.386): a loss of 5.0 on every
        # batch is over 3 x 1.386 = 4.16, that of confidently wrong answers
        # (every batch's samples at the probability clip, -ln(1e-7) = 16.1
        # each, give the same loss): a saturated output may be the cause,
        # the fix of a start that passes no gradient. 4.0 is under it. (From
        # 5 x 1.386 = 6.93 the start rules tell an extreme start instead.)
        rules = HealthRules(mlp(["relu"] * 2))
        rules.uninformed_loss = (math.log(4), "ln 4")
        ((finding, _),) = zero_run([0.0] * 8, [loss] * 8, rules=rules)
        expected = {
            "loss": rule_support._LOSS_STOPPED_FIX,
            "start": rule_support._ZERO_START_FIX,
        }
        assert finding.fix == expected[fix]

    def test_a_relu_output_is_its_dead_units(self):
        # The run of test_reported_after_patience_steps under a ReLU output:
        # its gradient is 0 only where it outputs 0, so every gradient 0 is
        # that output at 0 on every sample: its units dead, on that layer.
        found = zero_run(
            [1.0] * 5 + [0.0] * 10,
            [1.0] * 5 + [10.0] * 10,
            layers=mlp(["relu"], output="relu"),
        )
        ((finding, reported),) = found
        assert (finding.mode, finding.layer, finding.step, reported) == (
            F.DEAD_RELU,
            "dense_1",
            5,
            9,
        )
        assert finding.value == 1.0 and finding.severity == F.FAILURE
        assert finding.message == (
            "The global gradient norm was exactly 0 for 5 steps in a row "
            "(steps 5-9) while the loss stayed at about 10 (against 1 in the "
            "first steps): no gradient reaches any weight, so training has "
            "stopped. The output layer 'dense_1' (relu) is 0, with no gradient, "
            "wherever its input is negative, and was so for every sample of these "
            "batches: its units are dead."
        )
        assert finding.fix == rule_support._DEAD_OUTPUT_FIX

    def test_a_relu_output_dead_from_the_first_step(self):
        found = zero_run([0.0] * 8, [6.55] * 8, layers=mlp(["relu"], output="relu"))
        ((finding, reported),) = found
        assert (finding.mode, finding.layer, finding.step, reported) == (
            F.DEAD_RELU,
            "dense_1",
            0,
            4,
        )
        assert finding.message.endswith(
            "The output layer 'dense_1' (relu) is 0, with no gradient, wherever "
            "its input is negative, and was so for every sample of these batches: "
            "its units are dead. This was so from the first step, before any update."
        )
        assert finding.fix == rule_support._DEAD_OUTPUT_FIX

    @pytest.mark.parametrize(
        "outputs, expected",
        [
            # A Dense without activation, then a ReLU layer: the output.
            ([("dense_1", None, 1), ("act", "relu", 0)], (F.DEAD_RELU, "act")),
            # Two outputs, each a ReLU: the first named, both in the message.
            (
                [("head_a", "relu", 0), ("head_b", "relu", 0)],
                (F.DEAD_RELU, "head_a"),
            ),
            # One of two outputs linear: its gradient is not 0 from the ReLU.
            (
                [("head_a", "relu", 0), ("head_b", None, 0)],
                (F.VANISHING_GRADIENTS, None),
            ),
            # Leaky ReLU passes a gradient below 0: no unit of it can die.
            ([("head_a", "leaky_relu", 0)], (F.VANISHING_GRADIENTS, None)),
            # ReLU6 is flat above its cap too: not necessarily dead units.
            ([("head_a", "relu6", 0)], (F.VANISHING_GRADIENTS, None)),
        ],
    )
    def test_outputs_by_the_layer_graph(self, outputs, expected):
        layers = [LayerInfo("dense_0", "Dense", "relu", True, 0, 2)] + [
            LayerInfo(name, "Dense", act, name != "act", i + 1, distance)
            for i, (name, act, distance) in enumerate(outputs)
        ]
        found = zero_run([1.0] * 5 + [0.0] * 10, [1.0] * 5 + [10.0] * 10, layers=layers)
        ((finding, _),) = found
        assert (finding.mode, finding.layer) == expected
        if expected == (F.DEAD_RELU, "head_a"):
            assert (
                "The output layers 'head_a' (relu), 'head_b' (relu) are 0, with no "
                "gradient, wherever their input is negative, and were so for every "
                "sample of these batches: their units are dead."
            ) in finding.message

    @pytest.mark.parametrize("after", [0.05, 50.0], ids=["same_rate", "jump"])
    def test_with_no_probability_output_the_fix_looks_inside(self, after):
        # Probed: a siamese network (a distance out, no sigmoid or softmax)
        # whose shared encoder's ReLU layer died: every gradient 0, told
        # with the from_logits fix. No output saturates there
        # (`probability_output`): a layer inside stops the gradient
        # (`_STOPPED_FIX`).
        layers = mlp(["relu"], output=None)
        rules = HealthRules(layers)
        rules.probability_output = False
        found = zero_run(
            [1.0] * 6 + [0.0] * 5,
            [1.0] * 6 + [2.0] * 5,
            [0.05] * 5 + [after] * 6,
            rules=rules,
        )
        ((finding, reported),) = found
        assert (finding.mode, finding.step, reported) == (
            F.VANISHING_GRADIENTS,
            6,
            10,
        )
        if after > 0.05:
            assert finding.fix == _JUMP_FIX + " " + rule_support._STOPPED_FIX
        else:
            assert finding.fix == (
                rule_support._STOPPED_FIX + " Lower the learning rate: a step "
                "too large can throw the units there."
            )
        assert "from_logits" not in finding.fix

    @pytest.mark.parametrize(
        "after, stuck, explosion",
        [(50.0, 10.0, True), (50.0, 2.9, False), (5e-5, 10.0, False)],
        ids=["up_loss_10x", "up_loss_2.9x", "down"],
    )
    def test_names_a_recent_learning_rate_jump(self, after, stuck, explosion):
        # Lr x1000 at step 5 (its gradient still 1), zeros from step 6 with
        # the loss up from 1 to `stuck`. Reported at 10 (patience_steps 5),
        # naming the jump. Up, with the loss 3x (_DIVERGE_RISE) its level
        # before the jump: the explosion that saturated the output, at the
        # jump (`_rate_before_zero`), as a conv autoencoder's sigmoid output
        # under Adam 100x (JAX: the loss 0.0025 to 0.08, every gradient
        # under 1e-13). Up, the fix leads with the rate's; down, the steps
        # shrank: the zero gradients' own fix.
        found = zero_run(
            [1.0] * 6 + [0.0] * 5, [1.0] * 6 + [stuck] * 5, [0.05] * 5 + [after] * 6
        )
        *told, (finding, reported) = found
        assert (finding.mode, finding.step, reported) == (
            F.VANISHING_GRADIENTS,
            6,
            10,
        )
        assert f"The learning rate jumped from 0.05 to {after:.3g} at step 5." in (
            finding.message
        )
        up = after > 0.05
        fix = _JUMP_FIX + " " + _FROM_LOGITS_FIX if up else _ZERO_FIX
        assert finding.fix == fix
        assert ("It follows the explosion of step 5" in finding.message) == explosion
        if not explosion:
            assert told == []
            return
        ((blown, at),) = told
        assert (blown.mode, blown.layer, blown.step, at) == (
            F.EXPLODING_GRADIENTS,
            None,
            5,
            10,
        )
        assert blown.value == pytest.approx(1000.0)
        assert blown.fix == _JUMP_FIX
        assert "the loss rose from 1 before it to about 10" in blown.message

    @staticmethod
    def _oversized_then_zero(zeros_from, stuck=10.6):
        """Step 0's update 14x the output layer's norm (loss 1.67), every
        gradient exactly 0 from `zeros_from` with the loss at `stuck`."""
        rules = HealthRules(mlp(["relu"]))
        found = []
        for step in range(zeros_from + 6):
            zero = step >= zeros_from
            loss = stuck if zero else 1.67
            found += rules.observe_step(event(step, 0.0 if zero else 1.0, loss=loss))
            ratio = 14.0 if step == 0 else 0.0
            found += rules.observe(
                recording(step, [1e-2, 1e-2], loss=loss, update_ratio=[1e-3, ratio])
            )
        return found

    @pytest.mark.parametrize("zeros_from, named", [(1, True), (7, False)])
    def test_names_an_oversized_update_just_before(self, zeros_from, named):
        # SGD at lr 50 with clipnorm 1 (JAX probe): the update of step 0
        # changed the output layer's weights by 14x their norm, and from
        # step 1 every gradient is exactly 0 (a saturated softmax). An
        # oversized update more than patience_steps (5) before the streak
        # began is not named.
        found = self._oversized_then_zero(zeros_from)
        (finding,) = [f for f in found if f.mode == F.VANISHING_GRADIENTS]
        assert finding.step == zeros_from
        assert (
            finding.message.endswith(
                "It follows the update of step 0, which changed the weights of layer "
                "'dense_1' by 14 times their own norm: a step far too large."
            )
            == named
        )
        # The update it names is the explosion that stopped training, the
        # cause (the loss 10.6 >= 1.67 + (3 - 1) * 1.67): reported with it,
        # before it.
        explosions = [f for f in found if f.mode == F.EXPLODING_GRADIENTS]
        assert [f.mode for f in found] == (
            [F.EXPLODING_GRADIENTS, F.VANISHING_GRADIENTS]
            if named
            else [F.VANISHING_GRADIENTS]
        )
        if named:
            (explosion,) = explosions
            assert (explosion.layer, explosion.step, explosion.value) == (
                "dense_1",
                0,
                14.0,
            )
            assert explosion.message == (
                "The update of step 0 changed the weights of layer 'dense_1' by 14 "
                "times their own norm, and the loss rose from 1.67 where training "
                "began to about 10.6, where every gradient has been exactly 0 since "
                "step 1 (a saturated output): the steps are far too large and "
                "training is unstable."
            )
            assert explosion.fix == FIXES[F.EXPLODING_GRADIENTS]

    def test_an_explosion_reported_already_is_not_reported_again(self):
        # dense_0's updates 14x its norm at steps 0 and 1 with the loss up 6x
        # at step 1: the explosion is reported there (`_blown_up`). The
        # zeros from step 2 follow step 1's largest update (dense_1's, 20x):
        # only the vanishing gradients.
        rules = HealthRules(mlp(["relu"]))
        ratios = [[14.0, 1e-3], [14.0, 20.0]] + [[0.0, 0.0]] * 6
        found = []
        for step, update_ratio in enumerate(ratios):
            zero = step >= 2
            loss = 1.67 if step == 0 else 10.6
            found += rules.observe_step(event(step, 0.0 if zero else 1.0, loss=loss))
            found += rules.observe(
                recording(step, [1e-2, 1e-2], loss=loss, update_ratio=update_ratio)
            )
        assert modes(found) == [
            (F.EXPLODING_GRADIENTS, "dense_0", 0),
            (F.VANISHING_GRADIENTS, None, 2),
        ]
        assert (
            "It follows the update of step 1, which changed the weights of "
            "layer 'dense_1' by 20 times" in found[1].message
        )

    def test_an_oversized_update_is_no_explosion_without_the_loss_up(self):
        # 4.9 < 1.67 + (3 - 1) * 1.67 = 5.01: the zero gradients alone.
        found = self._oversized_then_zero(1, stuck=4.9)
        assert [f.mode for f in found] == [F.VANISHING_GRADIENTS]
        assert "It follows the update of step 0" in found[0].message

    @pytest.mark.parametrize("held", [True, False], ids=["held", "lowered"])
    def test_older_learning_rate_jump(self, held):
        # Jump at step 1 (0.05 -> 50); zeros from step 10 with the loss 10x:
        # more than patience_steps (5) steps before the streak began. The
        # rate held at 50: the jump is its cause (an explosion that
        # saturated the output). Lowered to 20 from step 3 (2.5x, no jump of
        # its own, under half of 50): not named.
        rates = [0.05] + [50.0] * 14 if held else [0.05, 50.0, 50.0] + [20.0] * 12
        found = zero_run([1.0] * 10 + [0.0] * 5, [1.0] * 10 + [10.0] * 5, rates)
        if held:
            assert [(f.mode, f.step) for f, _ in found] == [
                (F.EXPLODING_GRADIENTS, 1),
                (F.VANISHING_GRADIENTS, 10),
            ]
            assert found[0][0].message.startswith(
                "The learning rate jumped 1e+03x, from 0.05 to 50 at step 1"
            )
            return
        ((finding, _),) = found
        assert "learning rate" not in finding.message

    def test_zero_from_the_first_step(self):
        # Frozen from step 0: the early loss is the stuck loss itself (10),
        # and 10 > 1e-3 * 10: still high. Reported at step 4.
        found = zero_run([0.0] * 8, [10.0] * 8)
        assert [(f.step, s) for f, s in found] == [(0, 4)]

    @pytest.mark.parametrize("jump", [20, 2], ids=["just_before", "20_steps_before"])
    def test_zero_without_a_loss_after_a_rate_jump(self, jump):
        # A custom `train_step` whose loss is not known (NaN in its rows):
        # the rate jumps 1000x at step 20 (or 2, 19 steps before), every
        # gradient is exactly 0 from step 21 (a discriminator saturated):
        # reported at step 25, the jump named. Without the jump (a fitted
        # model's hinge loss, every margin met, has no gradient either):
        # nothing.
        nan = float("nan")
        norms, losses = [0.5] * 21 + [0.0] * 8, [nan] * 29
        found = zero_run(norms, losses, [1e-4] * jump + [0.1] * (29 - jump))
        assert [(f.mode, f.step, s) for f, s in found] == [
            (F.VANISHING_GRADIENTS, 21, 25)
        ]
        assert found[0][0].message == (
            "The global gradient norm was exactly 0 for 5 steps in a row (steps "
            "21-25; the loss is not known here, a custom `train_step`'s own): "
            "no gradient reaches any weight, so training has stopped. The "
            f"learning rate jumped from 0.0001 to 0.1 at step {jump}."
        )
        assert found[0][0].fix.startswith("Lower the learning rate: undo the jump")
        assert zero_run(norms, losses) == []
        # From the first step, before any update: reported at step 4.
        found = zero_run([0.0] * 8, [nan] * 8)
        assert [(f.step, s) for f, s in found] == [(0, 4)]
        assert "This was so from the first step" in found[0][0].message

    def test_below_float32_tiny_counts_as_zero(self):
        # 1e-39 is subnormal in float32 (tiny = 1.18e-38).
        found = zero_run([1.0] * 5 + [1e-39] * 5, [1.0] * 5 + [10.0] * 5)
        ((finding, _),) = found
        assert "was below 1.2e-38 for 5 steps" in finding.message
        assert finding.value == 1e-39

    def test_negligible_for_the_loss_counts_as_zero(self):
        # 3e-9 on a loss of 10 is below 1e-9 of its square root (3.16e-9):
        # no update changes the loss (a sigmoid output with bias -30 under
        # mean squared error: 5e-13 on 0.5, probed); 4e-9 is not.
        found = zero_run([1.0] * 5 + [3e-9] * 5, [1.0] * 5 + [10.0] * 5)
        ((finding, _),) = found
        assert finding.message.startswith(
            "The global gradient norm was at most 3e-09, below a billionth of "
            "the square root of the loss (too small for any update to change "
            "it), for 5 steps in a row (steps 5-9)"
        )
        assert zero_run([1.0] * 5 + [4e-9] * 10, [1.0] * 5 + [10.0] * 10) == []

    def test_not_before_patience_steps(self):
        # 4 zero steps, a normal one, 4 zero steps: no 5 in a row.
        norms = [1.0] * 5 + [0.0] * 4 + [1.0] + [0.0] * 4
        assert zero_run(norms, [1.0] * 5 + [10.0] * 9) == []

    def test_single_zero_steps_are_not_enough(self):
        norms = [1.0, 0.0] * 10
        assert zero_run(norms, [1.0] * 20) == []

    def test_loss_of_exactly_zero(self):
        # A hinge loss whose margins all hold: zero loss, zero gradients.
        assert zero_run([1.0] * 5 + [0.0] * 20, [1.0] * 5 + [0.0] * 20) == []
        assert zero_run([0.0] * 20, [0.0] * 20) == []

    def test_converged_tiny_loss(self):
        # Early loss 1; 9e-4 <= converged_loss_ratio (1e-3) * 1: converged.
        assert zero_run([1.0] * 5 + [0.0] * 20, [1.0] * 5 + [9e-4] * 20) == []
        # Just above the ratio (2e-3 > 1e-3): not converged, reported.
        found = zero_run([1.0] * 5 + [0.0] * 5, [1.0] * 5 + [2e-3] * 5)
        assert [(f.step, s) for f, s in found] == [(5, 9)]

    def test_tiny_loss_from_the_start(self):
        # A clipped cross-entropy of confident right answers, -log(1 - 1e-7)
        # = 1e-7 from step 0: at or below 1e-6 the loss has converged,
        # whatever its early level.
        assert zero_run([0.0] * 20, [1e-7] * 20) == []
        assert [s for _, s in zero_run([0.0] * 5, [2e-6] * 5)] == [4]

    def test_unknown_or_nan_loss(self):
        assert zero_run([1.0] * 5 + [0.0] * 10, [1.0] * 5 + [None] * 10) == []
        nan = float("nan")
        assert zero_run([1.0] * 5 + [0.0] * 10, [1.0] * 5 + [nan] * 10) == []

    def test_nan_norm_is_non_finite_not_zero(self):
        nan = float("nan")
        found = zero_run([1.0] * 5 + [0.0] * 3 + [nan] + [0.0] * 10, [1.0] * 19)
        assert [(f.mode, f.step) for f, _ in found] == [(F.NON_FINITE, 8)]

    def test_no_trainable_weights(self):
        layers = [LayerInfo("dense_0", "Dense", "relu", False, 0)]
        assert zero_run([0.0] * 20, [10.0] * 20, layers=layers) == []

    def test_quiet_steps_count_and_break_the_streak(self):
        rules = HealthRules(mlp(["relu"] * 2))
        rules.observe_quiet([(s, 1.0, 0.05, 1.0) for s in range(5)])
        rules.observe_quiet([(s, 0.0, 0.05, 10.0) for s in range(5, 8)])
        # Steps 5-7 (quiet) and 8-9: 5 in a row, reported at step 9.
        found = run(rules, [event(8, 0.0, 0.05, loss=10.0)])
        assert found == []
        ((finding),) = run(rules, [event(9, 0.0, 0.05, loss=10.0)])
        assert finding.step == 5
        rules = HealthRules(mlp(["relu"] * 2))
        rules.observe_quiet([(s, 1.0, 0.05, 1.0) for s in range(5)])
        rules.observe_quiet([(5, 0.0, 0.05, 10.0), (6, 0.0, 0.05, 10.0)])
        rules.observe_quiet([(7, 1.0, 0.05, 10.0)])  # Breaks the streak.
        found = run(rules, [event(s, 0.0, 0.05, loss=10.0) for s in range(8, 12)])
        assert found == []

    def test_recordings_do_not_reset_it(self):
        # The per-layer vanishing rule resets its streaks at a recording it
        # cannot judge (every layer quiet); the zero-gradient run goes on.
        rules = HealthRules(mlp(["relu"] * 3))
        run(rules, [event(s, 1.0, 0.05, loss=1.0) for s in range(5)])
        quiet = [0.0] * 4
        found = []
        for s in range(5, 10):
            found += run(rules, [recording(s, quiet, loss=10.0, global_norm=0.0)])
        assert [(f.mode, f.layer, f.step) for f in found] == [
            (F.VANISHING_GRADIENTS, None, 5)
        ]

    def test_reported_once(self):
        found = zero_run([1.0] * 5 + [0.0] * 5 + [1.0] + [0.0] * 10, [10.0] * 21)
        assert len(found) == 1


class TestExploding:
    def test_growth_over_baseline_persisting(self):
        rules = HealthRules(mlp(["tanh"]))
        found = run(rules, events([1.0, 2.0, 1.5, 3.0, 2.5, 500.0, 800.0, 1e4]))
        # Early = median(1, 2, 1.5, 3, 2.5) = 2; limit = min(100 * 2, 1e6) =
        # 200; recent = 2, 100 * 2 = 200 too. 500 (step 5) and 800 (step 6):
        # exploding_patience 2 steps over -> reported at step 5.
        assert modes(found) == [(F.EXPLODING_GRADIENTS, None, 5)]
        assert found[0].value == 800.0
        assert found[0].message == (
            "The global gradient norm reached 800 at step 6, 400x its early 2: "
            "the gradients are exploding and training diverges."
        )
        assert found[0].fix == FIXES[F.EXPLODING_GRADIENTS]
        assert found[0].severity == F.FAILURE

    @pytest.mark.parametrize("blown_up", [False, True])
    def test_over_the_ceiling_without_the_loss_blowing_up_names_the_scale(
        self, blown_up
    ):
        # Adam fitting targets of about 1e4 (probe): early norm 7e4, the norm
        # grows with the weights past the ceiling 1e6 while the loss stays
        # about 1e9. With the loss 3x its recent level (and above the early
        # one) it is the step size's divergence instead.
        rules = HealthRules(mlp(["relu"]))
        losses = [1e9] * 5 + ([3.5e9, 5e9, 8e9] if blown_up else [1.05e9, 1.1e9, 9e8])
        norms = [7e4] * 5 + [1.2e6, 1.5e6, 1.6e6]
        found = run(
            rules, [event(s, n, loss=v) for s, (n, v) in enumerate(zip(norms, losses))]
        )
        # 1.5e6 < 1.5 x 1.2e6: reported at the third step over, step 7.
        assert modes(found) == [(F.EXPLODING_GRADIENTS, None, 5)]
        if blown_up:
            assert found[0].message.endswith("training diverges.")
            assert found[0].fix == FIXES[F.EXPLODING_GRADIENTS]
        else:
            assert found[0].message == (
                "The global gradient norm reached 1.6e+06 at step 7, 22.9x its "
                "early 7e+04, beyond any healthy model's, while the loss did not "
                "blow up (9e+08, against 1e+09 lately): gradients this large come "
                "from the scale of the data (unscaled regression targets or "
                "inputs), not from a step size that diverges."
            )
            assert found[0].fix == rules_module._SCALE_FIX

    @pytest.mark.parametrize("first", ["Embedding", "Dense"])
    def test_over_the_ceiling_in_a_classifier_names_the_weights(self, first):
        # Probed: a token classifier (binary cross-entropy) whose tanh
        # RNNs' kernels were scaled 8x mid-run: the norm 7.9e8, the loss
        # up only to about chance, told as "unscaled regression targets or
        # inputs". A classifier of ids (an Embedding first) or of
        # standardized inputs has no data of that scale: its weights grew.
        layers = [
            LayerInfo("first", first, None, True, 0),
            *mlp(["tanh"], output="sigmoid")[1:],
        ]
        rules = HealthRules(layers)
        rules.uninformed_loss = (math.log(2), "binary cross-entropy")
        if first == "Dense":
            rules.observe(
                recording(0, [1e-2, 1e-2], input_scale=1.0, names=["first", "dense_1"])
            )
        losses = [0.6] * 5 + [0.7, 0.8, 0.75]
        norms = [0.5] * 5 + [7.9e8, 1.2e9, 1.9e9]
        found = run(
            rules,
            [event(s, n, loss=v) for s, (n, v) in enumerate(zip(norms, losses), 1)],
        )
        assert modes(found) == [(F.EXPLODING_GRADIENTS, None, 6)]
        inputs = "ids looked up" if first == "Embedding" else "standardized"
        assert found[0].message.endswith(
            "beyond any healthy model's, while the loss did not blow up (0.7, "
            f"against 0.6 lately): a classifier whose inputs are {inputs} has no "
            "data of that scale, so its weights grew far past what they were "
            "(steps too large, or weights edited or loaded), and the gradients "
            "with them."
        )
        assert found[0].fix == FIXES[F.EXPLODING_GRADIENTS]

    def test_recorded_steps_are_judged_too(self):
        # `observe` judges the norm of a step `observe_step` has not seen.
        rules = HealthRules(mlp(["tanh"]))
        norms = [1.0, 2.0, 1.5, 3.0, 2.5, 500.0, 800.0]
        # Rising with the norm, under 3x at first (a batch of new data
        # waits for a recorded update: `TestNewDataInAStream`).
        losses = [1.0] * 5 + [2.0, 9.0]
        seq = [
            recording(s, [1e-2, 1e-2], global_norm=n, loss=v)
            for s, (n, v) in enumerate(zip(norms, losses))
        ]
        assert modes(run(rules, seq)) == [(F.EXPLODING_GRADIENTS, None, 5)]

    def test_steps_and_recordings_mixed(self):
        rules = HealthRules(mlp(["tanh"]))
        seq = [recording(s, [1e-2, 1e-2]) for s in range(5)]
        seq += [
            event(5, 400.0),
            recording(6, [1e-2, 1e-2], global_norm=600.0, loss=3.0),
        ]
        assert modes(run(rules, seq)) == [(F.EXPLODING_GRADIENTS, None, 5)]

    def test_a_recorded_step_is_not_judged_twice(self):
        rules = HealthRules(mlp(["tanh"]))
        seq = events([1, 1, 1, 1, 1, 500])
        seq += [recording(5, [1e-2, 1e-2], global_norm=500.0), event(5, 500.0)]
        # Step 5 counts once: one step over the limit, no explosion.
        assert run(rules, seq) == []
        assert modes(rules.observe_step(event(6, 800.0))) == [
            (F.EXPLODING_GRADIENTS, None, 5)
        ]

    def test_single_spike_is_not_exploding(self):
        rules = HealthRules(mlp(["tanh"]))
        # Early 1, limit 100: 500 and 900 are single steps over it.
        found = run(
            rules, events([1.0, 1.0, 1.0, 1.0, 1.0, 500.0, 1.0, 1.2, 900.0, 1.1])
        )
        assert found == []

    def test_steps_over_the_limit_at_a_steady_norm_need_one_more(self):
        # Heavy-tailed batches (a rare class weighted 99x in batches of 4)
        # come two in a row by chance at about the same norm (a real run:
        # 226, then 239, over an early 2.2). Early 1, limit 100: 400 < 1.5 *
        # 300 = 450 did not grow, so two steps are not yet an explosion; a
        # third step over the limit is, whatever its norm.
        rules = HealthRules(mlp(["tanh"]))
        assert run(rules, events([1, 1, 1, 1, 1, 300, 400])) == []
        found = run(rules, [event(7, 350)])
        assert modes(found) == [(F.EXPLODING_GRADIENTS, None, 5)]

    def test_steps_no_higher_than_a_recovered_spike_do_not_count(self):
        # The norm came back down from 600 (step 5): steps up to 600 are
        # heavy-tailed batches, even growing (500 >= 1.5 * 300); beyond it
        # (700, then 1100 >= 1.5 * 700) they count again.
        rules = HealthRules(mlp(["tanh"]))
        assert run(rules, events([1, 1, 1, 1, 1, 600, 1, 1, 300, 500])) == []
        found = run(rules, events([700, 1100], start=10))
        assert modes(found) == [(F.EXPLODING_GRADIENTS, None, 10)]
        assert found[0].value == 1100

    def test_patience_override(self):
        rules = HealthRules(mlp(["tanh"]), {"exploding_patience": 3})
        assert run(rules, events([1, 1, 1, 1, 1, 500, 800])) == []
        assert modes(rules.observe_step(event(7, 1300))) == [
            (F.EXPLODING_GRADIENTS, None, 5)
        ]

    def test_huge_spike_reported_at_once(self):
        rules = HealthRules(mlp(["tanh"]))
        # 1e4 >= exploding_spike_growth 1e4 * early 1.
        found = run(rules, events([1.0, 1.0, 1.0, 1.0, 1.0, 1e4]))
        assert modes(found) == [(F.EXPLODING_GRADIENTS, None, 5)]
        assert found[0].value == 1e4

    def test_spike_below_spike_growth(self):
        rules = HealthRules(mlp(["tanh"]))
        assert run(rules, events([1.0, 1.0, 1.0, 1.0, 1.0, 9999.0, 1.0])) == []

    def test_absolute_ceiling_without_baseline(self):
        rules = HealthRules(mlp(["tanh"]))
        # No normal step yet: the limit is the ceiling 1e6.
        found = run(rules, events([2e6, 3e6]))
        assert modes(found) == [(F.EXPLODING_GRADIENTS, None, 0)]
        assert found[0].value == 3e6
        # Over the ceiling from the first step: the scale, not the step size.
        assert found[0].message == (
            "The global gradient norm was already 2e+06 at the first step (step "
            "0), beyond any healthy model's, and reached 3e+06 at step 1: the "
            "gradients explode from the start, so the scale of the data or of "
            "the initial weights is the likely cause (unscaled inputs or "
            "regression targets), not the step size alone."
        )
        assert found[0].fix.startswith("Standardize the inputs and the regression")

    @pytest.mark.parametrize(
        "scale, classifier, weights",
        [(1.0, True, True), (5.0, True, False), (1.0, False, False)],
        ids=["standardized_classifier", "unscaled_inputs", "not_a_classifier"],
    )
    def test_explosion_from_the_start_with_the_data_standardized(
        self, scale, classifier, weights
    ):
        # The recording of step 0 measured the inputs' largest feature mean
        # or spread (`input_scale`); a one-output classifier under
        # cross-entropy has no regression targets (`uninformed_loss`, set
        # by the callback). Standardized inputs (1 <= 2) of a classifier
        # leave the initial weights (a SimpleRNN classifier whose recurrent
        # kernel is drawn with stddev 1: norm 8.9e17 at step 0).
        rules = HealthRules(mlp(["tanh"]))
        if classifier:
            rules.uninformed_loss = (math.log(3), "cross-entropy over 3 classes")
        first = recording(0, [1e-2, 1e-2], global_norm=2e6, input_scale=scale)
        (found,) = run(rules, [first, event(1, 3e6)])
        assert found.message.startswith(
            "The global gradient norm was already 2e+06 at the first step (step "
            "0), beyond any healthy model's, and reached 3e+06 at step 1: the "
            "gradients explode from the start, so "
        )
        if weights:
            assert found.message.endswith(
                "so the initial weights are the likely cause: the inputs are "
                "standardized (their largest feature mean or spread 1) and a "
                "classifier has no regression targets."
            )
            assert found.fix == rule_support._INIT_FIX
        else:
            assert "(unscaled inputs or regression targets)" in found.message
            assert found.fix == rule_support._SCALE_FIX

    @pytest.mark.parametrize(
        "loss, classifier, reported",
        [(0.5, True, False), (2.0, True, True), (0.5, False, True)],
    )
    def test_new_data_after_a_fitted_start_is_no_explosion(
        self, loss, classifier, reported
    ):
        # A classifier over 4 classes (ln 4 = 1.39 knows nothing) that began
        # this fit fitted (loss 0.01 < 0.1 x ln 4, norms 0.02), then meets
        # data it has not seen: the norm 250x, the loss up to 0.5, under
        # ln 4 (probed: 1024 samples fitted, then 512 of them unshuffled and
        # 2048 new ones; told "exploding" at the first new batches). A loss
        # past ln 4 (2.0), or a model whose loss says nothing of what it
        # knows (no `uninformed_loss`), is judged as before: 2 steps over
        # 100x the early norm, the second grown 1.5x, are an explosion, and
        # a third, as the first came with its batch: one step more for a
        # recording of its update (`TestNewDataInAStream`), none here.
        rules = HealthRules(mlp(["relu"]))
        if classifier:
            rules.uninformed_loss = (math.log(4), "cross-entropy over 4 classes")
        seq = [event(s, 0.02, 1e-3, loss=0.01) for s in range(20)]
        seq += [event(20 + i, n, 1e-3, loss=loss) for i, n in enumerate((5, 8, 12))]
        found = run(rules, seq)
        assert (F.EXPLODING_GRADIENTS in {f.mode for f in found}) == reported

    @pytest.mark.parametrize("sums", [3, 4, 40])
    def test_explosion_from_the_start_names_unnormalized_residual_sums(self, sums):
        # A classifier on standardized inputs whose stream sums residual
        # branches with no normalization layer (`residual_sums`, set by the
        # callback): its explosion from the first step is the sums', not a
        # custom initialisation's (probed: 40 blocks on Keras's
        # initializers, stream RMS 1.4e5-6e5, norm 3e6 at step 0, was told
        # "a large custom stddev or gain"). From 4 sums (_RESIDUAL_SUMS).
        rules = HealthRules(mlp(["tanh"]))
        rules.uninformed_loss = (math.log(3), "cross-entropy over 3 classes")
        rules.residual_sums = sums
        first = recording(0, [1e-2, 1e-2], global_norm=2e6, input_scale=1.0)
        (found,) = run(rules, [first, event(1, 3e6)])
        standardized = (
            "so the initial weights are the likely cause: the inputs are "
            "standardized (their largest feature mean or spread 1) and a "
            "classifier has no regression targets."
        )
        if sums < 4:
            assert found.message.endswith(standardized)
            assert found.fix == rule_support._INIT_FIX
            return
        assert found.message.endswith(
            f"{standardized} The model adds {sums} residual branches to its "
            "stream and has no normalization layer: each sum adds a branch's "
            "variance to the stream's, so even with Keras's default "
            "initialisation its scale grows block after block (about 2^(n/2) "
            "times over n blocks)."
        )
        assert found.fix == rule_support._RESIDUAL_FIX

    @pytest.mark.parametrize("classifier", [True, False])
    def test_explosion_from_the_start_of_an_embedding_model(self, classifier):
        # Token ids (largest feature mean 25) looked up by the first layer,
        # an Embedding: their scale does not reach the LSTM after it, so a
        # classifier's explosion from the first step is its initial weights
        # (probed: an LSTM classifier whose kernels are drawn with stddev 3
        # and 5, norm 3.1e7 at step 0, was told "unscaled inputs"). A
        # regression model's targets may still be unscaled.
        layers = [
            LayerInfo("emb", "Embedding", None, True, 0),
            LayerInfo("lstm", "LSTM", None, True, 1),
            LayerInfo("out", "Dense", "sigmoid", True, 2),
        ]
        rules = HealthRules(layers)
        if classifier:
            rules.uninformed_loss = (math.log(2), "binary cross-entropy")
        first = recording(
            0,
            [1e-2] * 3,
            global_norm=2e6,
            input_scale=25.0,
            names=["emb", "lstm", "out"],
        )
        (found,) = run(rules, [first, event(1, 3e6)])
        if classifier:
            assert found.message.endswith(
                "so the initial weights are the likely cause: the model's first "
                "layer 'emb' is an embedding (its inputs are ids looked up, whose "
                "scale does not reach the layers after it) and a classifier has "
                "no regression targets."
            )
            assert found.fix == rule_support._INIT_FIX
        else:
            assert "(unscaled inputs or regression targets)" in found.message
            assert found.fix == rule_support._SCALE_FIX

    @pytest.mark.parametrize(
        "norms, head, fix",
        [
            (
                [0.0, 2e6, 3e6],
                "reached 3e+06 at step 2: the gradients are exploding",
                FIXES[F.EXPLODING_GRADIENTS],
            ),
            (
                [1.0, 2e6, 3e6],
                "jumped to 2e+06 at step 1, 2e+06x its early 1 in one step: a "
                "batch far from the others' scale (outliers, corrupted or "
                "unscaled values) or a step far too large",
                rule_support._SPIKE_FIX,
            ),
        ],
        ids=["zero_first_step", "normal_first_step"],
    )
    def test_explosion_after_a_first_step_under_the_ceiling(self, norms, head, fix):
        # A zero first step (no baseline: norms 0 are left out) is not a huge
        # one: two steps over the ceiling are an explosion. After a normal
        # one (early 1) 2e6 is a spike (>= 1e4 x 1), told as one step's.
        (found,) = run(HealthRules(mlp(["tanh"])), events(norms))
        assert found.message.startswith("The global gradient norm " + head)
        assert found.fix == fix

    def test_ceiling_over_a_high_recent_level(self):
        rules = HealthRules(mlp(["tanh"]))
        # Steady 5e4 (unscaled targets): early 5e4, limit min(100 * 5e4,
        # 1e6) = 1e6. 2e6 and 3e6 are over the ceiling, so the recent level
        # (100 * 5e4 = 5e6, which both are below) is not consulted.
        found = run(rules, events([5e4] * 10 + [2e6, 3e6]))
        assert modes(found) == [(F.EXPLODING_GRADIENTS, None, 10)]
        assert found[0].value == 3e6

    def test_recent_level_absorbs_healthy_drift(self):
        rules = HealthRules(mlp(["tanh"]))
        # Early 1 (limit 100); the norm settles at 50 for 36 steps (normal:
        # recent median 50). 300 is over the early limit but not over 100 *
        # 50 = 5000: drift, not an explosion.
        seq = events([1] * 5 + [50] * 36 + [300, 300])
        assert run(rules, seq) == []
        # 6000 and 9000 > 5000 (recent still median 50): exploding.
        found = run(rules, events([6000, 9000], start=43))
        assert modes(found) == [(F.EXPLODING_GRADIENTS, None, 43)]
        assert "reached 9e+03 at step 44, 9e+03x its early 1" in found[0].message

    def test_large_but_steady_norm(self):
        # Unscaled regression targets: large norms from the start, no growth.
        rules = HealthRules(mlp(["relu"]))
        norms = [5e3 * (1 + 0.1 * (i % 3)) for i in range(40)]
        assert run(rules, events(norms)) == []

    def test_healthy_drift(self):
        rules = HealthRules(mlp(["relu"]))
        # 0.5 * 1.1^59 = 138, 250x the early median(0.5 * 1.1^0..4) = 0.6,
        # but never 100x its recent median.
        assert run(rules, events([0.5 * 1.1**i for i in range(60)])) == []

    def test_early_baseline_is_the_first_five_normal_steps(self):
        rules = HealthRules(mlp(["tanh"]))
        # Early = median of steps 0-4 = 1, not of all 11 normal steps (50):
        # 1e4 >= 1e4 * 1 is a spike.
        found = run(rules, events([1] * 5 + [50] * 6 + [1e4]))
        assert modes(found) == [(F.EXPLODING_GRADIENTS, None, 11)]

    def test_baseline_steps_override(self):
        rules = HealthRules(mlp(["tanh"]), {"baseline_steps": 8})
        # Early = median(1 x 5, 50 x 3) = 1: 1e4 >= 1e4 * 1 is a spike.
        assert len(run(rules, events([1] * 5 + [50] * 6 + [1e4]))) == 1
        # Early = median(1 x 5, 50 x 6) = 50: 1e4 < 1e4 * 50 is no spike, and
        # over the limit 100 * 50 = 5000 (and 100x the recent 50) once only.
        rules = HealthRules(mlp(["tanh"]), {"baseline_steps": 11})
        assert run(rules, events([1] * 5 + [50] * 6 + [1e4])) == []

    def test_steps_over_the_limit_are_left_out_of_the_baseline(self):
        rules = HealthRules(mlp(["tanh"]), {"exploding_patience": 3})
        # Steps 1, 2 and 4 are over 100 * 1 (and 100x the recent 1) but never
        # 3 in a row. Early = median of steps 0, 3, 5, 6, 7 = 1 (with the
        # 500s it would be median(1, 500, 500, 1, 500) = 500, and 1e4 no
        # spike).
        found = run(rules, events([1, 500, 500, 1, 500, 1, 1, 1, 1e4]))
        assert modes(found) == [(F.EXPLODING_GRADIENTS, None, 8)]

    def test_zero_norms_are_no_baseline(self):
        # No gradient at first (e.g. a zero-initialised model), then normal.
        rules = HealthRules(mlp(["tanh"]))
        assert run(rules, events([0.0, 0.0, 0.0, 1.0, 1.2, 0.9, 1.1, 1.0])) == []
        # Early = median(1, 1.2, 0.9, 1.1, 1.0) = 1, not 0: limit 100.
        found = run(rules, events([150, 250], start=8))
        assert modes(found) == [(F.EXPLODING_GRADIENTS, None, 8)]
        assert "2.5x its early 1" not in found[0].message
        assert "250x its early 1" in found[0].message

    def test_growth_while_the_loss_falls_is_no_explosion(self):
        # The steps of a deep sigmoid stack leaving its plateau (a real run,
        # tests/tensorboard_plugin/gh_logs.train_run): the norm grows ~400x
        # its early 3.5e-4 while the loss stays at ln 2 and then falls.
        rules = HealthRules(mlp(["sigmoid"]))
        norms = [4.08e-4, 3.5e-4, 3.19e-4, 0.126, 0.0472, 0.104, 0.028]
        losses = [0.6931, 0.6931, 0.6931, 0.6933, 0.6897, 0.6833, 0.6869]
        seq = [event(s, n, loss=v) for s, (n, v) in enumerate(zip(norms, losses))]
        # Recent loss level 0.6931: 0.6933 < 1.1 * 0.6931 = 0.762, so no step
        # counts towards an explosion.
        assert run(rules, seq) == []

    def test_growth_with_the_loss_rising_is_an_explosion(self):
        rules = HealthRules(mlp(["tanh"]))
        seq = [event(s, 1.0, loss=2.0) for s in range(5)]
        # 500 > 100 * 1 with the loss 2.3 >= 1.1 * 2 = 2.2 (counts), 800 with
        # 2.1 < 2.2 (ends the streak), then two steps with 5.0 and 9.0.
        seq += [event(5, 500.0, loss=2.3), event(6, 800.0, loss=2.1)]
        assert run(rules, seq) == []
        found = run(rules, [event(7, 900.0, loss=5.0), event(8, 1500, loss=9.0)])
        assert modes(found) == [(F.EXPLODING_GRADIENTS, None, 7)]

    def test_spike_needs_the_loss_rising_but_the_ceiling_does_not(self):
        rules = HealthRules(mlp(["tanh"]))
        seq = [event(s, 1.0, loss=1.0) for s in range(5)]
        # 1e4x the early 1 with the loss falling: no spike.
        assert run(rules, seq + [event(5, 1e4, loss=0.5)]) == []
        # Over the ceiling 1e6 twice: exploding whatever the loss.
        found = run(rules, [event(6, 2e6, loss=0.5), event(7, 3e6, loss=0.4)])
        assert modes(found) == [(F.EXPLODING_GRADIENTS, None, 6)]

    def test_quiet_steps_set_the_loss_level(self):
        rules = HealthRules(mlp(["tanh"]))
        rules.observe_quiet([(s, 1.0, 0.1, 10.0) for s in range(5)])
        # Recent loss 10: 10.5 < 1.1 * 10 = 11 does not rise, 11.5 does.
        assert (
            run(rules, [event(5, 500.0, loss=10.5), event(6, 500.0, loss=11.5)]) == []
        )
        found = run(rules, [event(7, 800.0, loss=12.0)])
        assert modes(found) == [(F.EXPLODING_GRADIENTS, None, 6)]

    def test_a_negative_loss_rises_too(self):
        rules = HealthRules(mlp(["tanh"]))
        seq = [event(s, 1.0, loss=-10.0) for s in range(5)]
        # Level -10: a rise of 0.1 * |-10| = 1 is needed; -9.5 is not, -8 is.
        assert run(rules, seq + [event(5, 500.0, loss=-9.5)]) == []
        found = run(rules, [event(6, 500.0, loss=-8.0), event(7, 800.0, loss=-7.0)])
        assert modes(found) == [(F.EXPLODING_GRADIENTS, None, 6)]

    def test_update_ratio_persisting(self):
        rules = HealthRules(mlp(["tanh"]))
        seq = [
            recording(s, [1e-2, 1e-2], update_ratio=[r, 1e-3])
            for s, r in ((0, 2.0), (2, 3.0), (4, 4.0))
        ]
        found = run(rules, seq[:2])
        assert found == []
        # 3 recordings over 1.0, steps 0-4 (span 5).
        found = run(rules, seq[2:])
        assert modes(found) == [(F.EXPLODING_GRADIENTS, "dense_0", 0)]
        assert found[0].value == 4.0
        assert found[0].message == (
            "Each update changes the weights of layer 'dense_0' by 4 times "
            "their own norm (3 recordings in a row, steps 0-4): the steps are "
            "far too large and training is unstable."
        )

    @pytest.mark.parametrize("shrunk", [False, True])
    def test_updates_over_weights_that_collapse(self, shrunk):
        # SGD at 0.05 with weight_decay 10 halves every weight a step: the
        # output layer's norm from 0.97 to 1e-4 by step 13 while its
        # gradients stay at 0.03, each update 1.9x its weights (probed).
        # Recordings 0-2 decay the weights (updates 0.5x), 3-9 have updates
        # 1.9x weights at 0.97 / 2^s: from step 4 (0.061) 10x or more under
        # the first 0.97, no explosion. Weights kept at 0.97: steps 3-7, 5
        # recordings over 1.0 spanning 5 steps, are one.
        rules = HealthRules(mlp(["relu"]))
        seq = [
            recording(
                s,
                [1e-2, 1e-2],
                update_ratio=[1e-3, 0.5 if s < 3 else 1.9],
                weight_norm=[1.0, 0.97 / 2**s if shrunk else 0.97],
            )
            for s in range(10)
        ]
        expected = [] if shrunk else [(F.EXPLODING_GRADIENTS, "dense_1", 3)]
        assert modes(run(rules, seq)) == expected

    @staticmethod
    def _blowing_up(losses, ratios=None):
        # Each step's every-step event (its loss) before its recording,
        # whose dense_0 update is `ratios` (default 4.6x) its weights: SGD
        # at lr 50 with clipnorm 1 on a 64-32 ReLU MLP (measured: update
        # ratios 4.64 and 2.74 at steps 0 and 1, losses 1.37, 90.9, 1377).
        rules = HealthRules(mlp(["relu"]))
        out = []
        for step, loss in enumerate(losses):
            ratio = 4.6 if ratios is None else ratios[step]
            out += run(
                rules,
                [
                    event(step, 1.0, loss=loss),
                    recording(step, [1e-2, 1e-2], loss=loss, update_ratio=[ratio, 0.5]),
                ],
            )
            if out:
                return out, step
        return out, None

    def test_two_oversized_updates_while_the_loss_blows_up(self):
        found, step = self._blowing_up([1.37, 90.9, 1377.0])
        assert step == 1
        assert modes(found) == [(F.EXPLODING_GRADIENTS, "dense_0", 0)]
        assert found[0].message == (
            "Each update changes the weights of layer 'dense_0' by 4.6 times "
            "their own norm (1 of 2 layers over 1x, 2 recordings in a row, steps "
            "0-1) and the loss rose from 1.37 to 90.9: the steps are far too "
            "large and training is unstable."
        )

    @staticmethod
    def _rnn_updates(cell: str, steps: list) -> list:
        """Findings of a layer of class `cell` ('rnn') and an output Dense
        ('out') over recordings of (loss, [update ratios]), one a step."""
        rules = HealthRules(
            [
                LayerInfo("rnn", cell, None, True, 0),
                LayerInfo("out", "Dense", None, True, 1),
            ]
        )
        found = []
        for step, (loss, ratios) in enumerate(steps):
            found += run(
                rules,
                [
                    event(step, 1.0, loss=loss),
                    recording(
                        step,
                        [1e-2, 1e-2],
                        loss=loss,
                        update_ratio=ratios,
                        names=["rnn", "out"],
                    ),
                ],
            )
        return found

    @pytest.mark.parametrize("cell", ["GRUCell", "Dense"])
    def test_a_blow_up_names_the_larger_update_its_run_began_with(self, cell):
        # An SGD GRU at lr 1 whose recurrent kernel is drawn with stddev 2
        # (probed): step 0 changed its weights by 1.5e7 times their norm,
        # then its gradients were exactly 0 (its streak ended); the output
        # layer's updates were 4.9x and 9x with the loss from 14.6 to 79.8.
        # Named before: the output layer only. A recurrent layer gets the
        # clipping fix, not normalization.
        found = self._rnn_updates(cell, [(14.6, [1.5e7, 4.85]), (79.8, [0.0, 9.0])])
        assert modes(found) == [(F.EXPLODING_GRADIENTS, "rnn", 0)]
        assert found[0].value == 1.5e7
        assert found[0].message == (
            "The update of step 0 changed the weights of layer 'rnn' by 1.5e+07 "
            "times their own norm; since, each update changes the weights of "
            "layer 'out' by 9 times their own norm (1 of 2 layers over 1x, 2 "
            "recordings in a row, steps 0-1) and the loss rose from 14.6 to "
            "79.8: the steps are far too large and training is unstable."
        )
        if cell == "GRUCell":
            assert found[0].fix == rule_support._RECURRENT_FIX
        else:
            assert found[0].fix == FIXES[F.EXPLODING_GRADIENTS]

    def test_a_blow_up_names_its_runs_largest_earlier_update(self):
        # The SimpleRNN of the same probe: 4.6e7x at step 0, then 0; the
        # output layer's 3.5x, 5x, 31x with the loss from 13.8 to 20 (not
        # risen 3x) and 1.18e4 at step 2. The largest update of the run,
        # not the first one whose loss is watched, is named.
        steps = [(13.8, [4.6e7, 3.5]), (20.0, [0.0, 5.0]), (1.18e4, [0.0, 31.0])]
        found = self._rnn_updates("SimpleRNNCell", steps)
        assert modes(found) == [(F.EXPLODING_GRADIENTS, "rnn", 0)]
        assert found[0].message.startswith(
            "The update of step 0 changed the weights of layer 'rnn' by 4.6e+07 "
            "times their own norm; since, each update changes the weights of "
            "layer 'out' by 31 times their own norm (1 of 2 layers over 1x, 3 "
            "recordings in a row, steps 0-2)"
        )
        assert found[0].fix == rule_support._RECURRENT_FIX

    def test_a_blow_up_is_one_finding_on_the_largest_update(self):
        # Two of three layers over the limit: one finding, on the larger,
        # and neither reported again when their streaks reach `patience`.
        rules = HealthRules(mlp(["relu", "relu"]))
        found = []
        for step, loss in enumerate([1.0, 5.0, 9.0, 9.0, 9.0, 9.0]):
            found += run(
                rules,
                [
                    event(step, 1.0, loss=loss),
                    recording(
                        step, [1e-2] * 3, loss=loss, update_ratio=[4.6, 9.0, 0.5]
                    ),
                ],
            )
        assert modes(found) == [(F.EXPLODING_GRADIENTS, "dense_1", 0)]
        assert "(2 of 3 layers over 1x, 2 recordings" in found[0].message

    @pytest.mark.parametrize(
        "losses, ratios, start",
        [
            # 2.9x the streak's first loss: not 3x.
            ([1.0] + [2.9] * 4, None, 0),
            # 3.2x the streak's first loss (0.5, at step 4), but below the
            # median of the first steps' losses (9): not a blow-up.
            ([9.0] * 4 + [0.5] + [1.6] * 4, [0.5] * 4 + [4.6] * 5, 4),
        ],
        ids=["rose_less", "below_the_start"],
    )
    def test_oversized_updates_without_a_blow_up_wait_for_patience(
        self, losses, ratios, start
    ):
        found, step = self._blowing_up(losses, ratios)
        # Reported by patience: 3 recordings spanning 5 steps.
        assert modes(found) == [(F.EXPLODING_GRADIENTS, "dense_0", start)]
        assert step == start + 4
        assert "the loss rose" not in found[0].message

    def test_update_ratio_at_the_threshold(self):
        rules = HealthRules(mlp(["tanh"]))
        seq = [recording(s, [1e-2, 1e-2], update_ratio=[1.0, 0.5]) for s in range(10)]
        assert run(rules, seq) == []

    def test_zero_initialised_layer_update_ratio(self):
        # Zero-init layer: an infinite ratio (||w|| = 0) is skipped, then
        # 1.5 and 1.2 (2 recordings) and shrinking ratios.
        rules = HealthRules(mlp(["tanh"]))
        ratios = [math.inf, 1.5, 1.2, 0.4, 0.2]
        seq = [
            recording(5 * s, [1e-2, 1e-2], update_ratio=[1e-3, r])
            for s, r in enumerate(ratios)
        ]
        assert run(rules, seq) == []


def after_a_rate_jump(losses, norms, rate=10.0):
    """Steps 0-5 at lr 0.01 (norm 1, loss 1), step 6 the first at `rate`,
    then steps 7.. with these losses and norms."""
    seq = [event(s, 1.0, lr=0.01, loss=1.0) for s in range(6)]
    seq.append(event(6, 1.0, lr=rate, loss=1.0))
    return seq + [
        event(7 + i, n, lr=rate, loss=v) for i, (v, n) in enumerate(zip(losses, norms))
    ]


class TestOverflowsAfterARateJump:
    """Under mixed precision a step whose gradients leave float16's range is
    skipped by loss scaling (`observe_overflow`): no norm to grow. Three in a
    row within 10 steps of a learning-rate jump up are an explosion (a
    BatchNorm CNN whose Adam lr jumped 1e-3 -> 1 under mixed_float16
    overflowed from the jump on)."""

    @staticmethod
    def _overflows(rules, step, rate, n):
        out = []
        for _ in range(n):  # Skipped: the step count stays.
            out += rules.observe_overflow(step, rate)
        return out

    def test_three_overflows_after_the_jump(self):
        rules = HealthRules(mlp(["relu"]))
        run(rules, [event(s, 1.0, lr=0.01, loss=1.0) for s in range(6)])
        # Step 6, the first at lr 10, and the next two overflow.
        assert self._overflows(rules, 6, 10.0, 2) == []
        (found,) = self._overflows(rules, 6, 10.0, 1)
        assert (found.mode, found.layer, found.step) == (
            F.EXPLODING_GRADIENTS,
            None,
            6,
        )
        assert found.value == np.inf
        assert found.message == (
            "The 3 batches in a row from step 6 overflowed float16 under loss "
            "scaling (each update skipped, the scale halved each time) after the "
            "learning rate jumped from 0.01 to 10 at step 6: the gradients "
            "exploded with the new step size."
        )

    @pytest.mark.parametrize(
        "rate, before, between",
        [(0.01, 6, False), (10.0, 6, True), (10.0, 20, False), (1e-4, 6, False)],
        ids=["no_jump", "not_in_a_row", "after_the_window", "rate_down"],
    )
    def test_not_an_explosion(self, rate, before, between):
        # Three overflows in a row at the same rate (a scale grown too high,
        # the loss level), two then a finite step, or three from step 20
        # (past the 10 steps watched after the jump at step 6), or after a
        # jump down.
        rules = HealthRules(mlp(["relu"]))
        seq = [event(s, 1.0, lr=0.01, loss=1.0) for s in range(6)]
        seq += [event(s, 1.0, lr=rate, loss=1.0) for s in range(6, before)]
        run(rules, seq)
        found = self._overflows(rules, before, rate, 2)
        if between:
            found += run(rules, [event(before, 1.0, lr=rate, loss=1.0)])
        found += self._overflows(rules, before + 1, rate, 2 if between else 1)
        assert found == []


class TestOverflowsAfterUpdates:
    """Loss-scale overflows in a row once updates were applied, at a steady
    learning rate: five are an explosion whatever the loss (the scale cut
    32x below where the gradients last fit), four with the loss risen 3x
    its recent level. A float16 regression on targets of ~1e3 with SGD
    (lr 0.01) overflowed batches 8-13 after its first update, the loss
    level (1.3e6-1.6e6), then 15 on with the loss at 5.7e9 and rising: it
    was told only at the 10th overflow of the second run (batch 24), as
    the non-finite step that stopped training. A rare class weighted 99x
    in batches of 4 overflows three batches in a row, each loss 1.5e4x its
    level (`healthy_rare_class_weighted`): not an explosion."""

    @staticmethod
    def _rules():
        rules = HealthRules(mlp(["relu"]))
        run(rules, [event(s, 2.0, lr=0.01, loss=1.0) for s in range(6)])
        return rules

    @staticmethod
    def _overflows(rules, losses, step=6):
        out = []
        for loss in losses:  # Skipped: the step count stays.
            out += rules.observe_overflow(step, 0.01, loss)
        return out

    def test_five_in_a_row_at_a_level_loss(self):
        rules = self._rules()
        assert self._overflows(rules, [1.1] * 4) == []
        (found,) = self._overflows(rules, [1.2])
        assert (found.mode, found.layer, found.step, found.value) == (
            F.EXPLODING_GRADIENTS,
            None,
            6,
            math.inf,
        )
        assert found.message == (
            "The 5 batches in a row from step 6 overflowed float16 under loss "
            "scaling (each update skipped, the scale halved each time) after "
            "updates had been applied at a scale 32x larger: the gradients "
            "exploded (too large a step, or batches of a larger scale than the "
            "earlier ones)."
        )
        assert found.fix == _OVERFLOW_RUN_FIX

    def test_four_in_a_row_with_the_loss_risen(self):
        # Recent level 1 (steps 0-5): 3.5 >= 1 + (3 - 1) * 1 and > 1 at the
        # start; 2.9 is not; three in a row are not, however high the loss.
        rules = self._rules()
        assert self._overflows(rules, [2.9, 1e4, 1e4]) == []
        (found,) = self._overflows(rules, [3.5])
        assert (found.mode, found.step) == (F.EXPLODING_GRADIENTS, 6)
        assert found.message == (
            "The 4 batches in a row from step 6 overflowed float16 under loss "
            "scaling (each update skipped, the scale halved each time) while "
            "the loss rose to 3.5, 3.5x its recent level of 1: the gradients "
            "exploded (too large a step, or batches of a larger scale than the "
            "earlier ones)."
        )

    def test_after_an_update_larger_than_the_weights(self):
        # The recording of step 5 (the last applied) changed dense_0's weights
        # by 4.9x their norm (over exploding_update_ratio 1, one recording:
        # not yet an explosion of its own): the cause, with its fix. The
        # non-finite step that ends the run (the 10th) follows it.
        rules = self._rules()
        run(rules, [recording(5, [1e-2, 1e-2], update_ratio=[4.9, 1e-3])])
        (found,) = self._overflows(rules, [1.0] * 5)
        assert found.message == (
            "The 5 batches in a row from step 6 overflowed float16 under loss "
            "scaling (each update skipped, the scale halved each time) after "
            "updates had been applied at a scale 32x larger, after the update of "
            "step 5 changed the weights of layer 'dense_0' by 4.9 times their "
            "own norm: the gradients exploded."
        )
        assert found.fix == FIXES[F.EXPLODING_GRADIENTS]
        assert self._overflows(rules, [1.0] * 4) == []
        event = SentinelEvent(6, math.inf, True, "dense_0", 0.01, 1.0)
        (stopped,) = rules.observe_step(dataclasses.replace(event, update_skipped=True))
        assert stopped.mode == F.NON_FINITE
        assert stopped.message.endswith(" It follows the explosion reported before it.")
        assert stopped.fix == found.fix

    @pytest.mark.parametrize(
        "losses",
        [[2.9] * 4, [None] * 4, [math.nan] * 4],
        ids=["below", "unknown", "nan"],
    )
    def test_four_without_the_rise_are_not(self, losses):
        assert self._overflows(self._rules(), losses) == []

    def test_a_finite_step_ends_the_run(self):
        # Two healthy overflows (the scale grown too high), an applied step,
        # three more; then two quiet steps read later, three more.
        rules = self._rules()
        found = self._overflows(rules, [1.0, 1.0])
        found += run(rules, [event(6, 2.0, lr=0.01, loss=1.0)])
        found += self._overflows(rules, [1.0] * 3, step=7)
        rules.observe_quiet([(7, 2.0, 0.01, 1.0), (8, 2.0, 0.01, 1.0)])
        found += self._overflows(rules, [1.0] * 4, step=9)
        assert found == []

    def test_not_while_the_scale_is_first_searched(self):
        # No update applied yet: the initial scale is still halving down to
        # one that fits (a run that never ends is `_overflowed_from_start`'s
        # at the 10th).
        rules = HealthRules(mlp(["relu"]))
        assert self._overflows(rules, [5.0] * 9, step=0) == []


class TestSkippedBatchesCountTowardsPatience:
    """Under loss scaling the optimizer's step count does not advance on a
    batch whose update was skipped (an overflow), so a streak's steps can
    span twice the batches: a float16 linear regression diverging from step
    0 (SGD far above its stability limit) overflowed one to three batches
    between each of its updates. The skipped batches count towards
    `patience_steps` (5) with the recordings' steps."""

    @staticmethod
    def _updates(rules, steps, overflows):
        # Recordings whose dense_0 update is 4.9x its weights (over
        # exploding_update_ratio 1), `overflows[k]` skipped batches before
        # step `steps[k]`.
        out = []
        for s, n in zip(steps, overflows):
            for _ in range(n):
                out += rules.observe_overflow(s, 2.5)
            out += rules.observe(
                recording(s, [1e-2, 1e-2], learning_rate=2.5, update_ratio=[4.9, 1e-3])
            )
        return out

    def test_update_ratio_over_steps_and_skipped_batches(self):
        rules = HealthRules(mlp(["tanh"]))
        # Steps 0, 1: 2 recordings (patience 3).
        assert self._updates(rules, [0, 1], [0, 2]) == []
        # Step 2, after 1 more skipped batch: 3 recordings, steps 0-2 (3) and
        # the 3 batches skipped after step 0 ran: 6 batches >= 5.
        found = self._updates(rules, [2], [1])
        assert modes(found) == [(F.EXPLODING_GRADIENTS, "dense_0", 0)]

    @pytest.mark.parametrize(
        "overflows", [[0, 0, 0], [1, 0, 0]], ids=["none_skipped", "before_the_start"]
    )
    def test_not_yet(self, overflows):
        # Steps 0-2 alone span 3 batches < 5; a batch skipped before step 0
        # (the loss scale's first search) is not within the streak.
        rules = HealthRules(mlp(["tanh"]))
        assert self._updates(rules, [0, 1, 2], overflows) == []
        found = self._updates(rules, [3, 4], [0, 0])
        assert modes(found) == [(F.EXPLODING_GRADIENTS, "dense_0", 0)]

    def test_dead_units(self):
        # 4 dead units of 4 on batches of 64: 3 recordings (patience 3; 192
        # samples >= 128), steps 0-2 with 2 skipped batches: the window from
        # step 0 spans 5 batches.
        rules = HealthRules(mlp(["relu"]))
        found = []
        for s, n in zip(range(3), [0, 1, 1]):
            for _ in range(n):
                found += rules.observe_overflow(s, 0.01)
            found += rules.observe(
                recording(s, [1e-2, 1e-2], batch_size=64, unit_activity=[[0] * 4, None])
            )
        assert modes(found) == [(F.DEAD_RELU, "dense_0", 0)]


class TestCutOff:
    """Layers no gradient reaches while the layers after them get one
    (`cut_rules`). Probed: a Dense with bias -10 whose outputs a layer
    subclass passes through `keras.ops.relu`, after a ReLU Dense 'h1': both
    got exactly 0 gradient on every step, the output layer 0.1-0.3, and
    there was no finding."""

    LAYERS = [
        LayerInfo("h1", "Dense", "relu", True, 0, distance=2),
        LayerInfo("block/dense", "Dense", None, True, 1, distance=1, inside="block"),
        LayerInfo("out", "Dense", None, True, 2, distance=0),
    ]

    @staticmethod
    def _norms_run(rules, norms, steps=range(6)) -> list:
        """The findings of recordings at `steps` whose layers' gradient
        norms are `norms`."""
        names = [i.name for i in rules.layers]
        seq = [
            recording(s, [1e-2] * len(names), names=names, grad_norm=norms)
            for s in steps
        ]
        return run(rules, seq)

    def _run(self, norms, activity=None, steps=range(5), layers=None):
        rules = HealthRules(layers or self.LAYERS)
        found = []
        for s in steps:
            found += rules.observe(
                recording(
                    s,
                    [1e-2] * 3,
                    names=["h1", "block/dense", "out"],
                    batch_size=64,
                    grad_norm=norms(s),
                    unit_activity=[activity or [1] * 4, None, None],
                )
            )
        return found

    @pytest.mark.parametrize("cut", [0.0, None], ids=["zeros", "none"])
    def test_a_cut_in_the_models_graph_of_its_whole_trunk(self, cut):
        # The same zeros with 'dense' a layer of a functional model (not a
        # sublayer of one of the user's own): every layer as far from the
        # outputs as 'dense' or farther, the first layer the inputs reach
        # among them, gets exactly 0: nothing learns from the inputs
        # (probed: `Lambda(ops.round)`, `sign` or `stop_gradient` after the
        # second layer of an MLP, a `Dense(1)` followed by a
        # `LayerNormalization`, `BatchNormalization` on batches of 1: every
        # gradient before them 0 for hundreds of steps, no finding). JAX
        # gives such weights zeros, TensorFlow no gradient (None).
        layers = [dataclasses.replace(i, inside=None) for i in self.LAYERS]
        found = self._run(lambda s: [cut, cut, 0.2], layers=layers)
        assert modes(found) == [(F.VANISHING_GRADIENTS, "block/dense", 0)]
        assert found[0].message == (
            "Every gradient of layer 'block/dense', and of the 1 layer before it "
            "('h1'), was exactly 0 on each of the last 5 recordings (steps 0-4) "
            "while the "
            "layers nearer the outputs got gradients: nothing that reads the "
            "inputs learns, as no gradient passes back through what follows "
            "layer 'block/dense'. A `stop_gradient` does this, and so do "
            "operations without a gradient (rounding, `sign`, `argmax`, a cast "
            "to integers) and a normalization over a single value, whose output "
            "is a constant (`BatchNormalization` trained on batches of 1, "
            "`LayerNormalization` over one feature)."
        )
        assert found[0].fix.startswith(
            "Find what follows layer 'block/dense' and passes no gradient: "
            "replace an operation without a gradient"
        )

    def test_not_for_a_trunk_cut_off_by_saturated_outputs(self):
        # An ELU layer behind a bias of -30, the first of its model (the
        # scenario `saturated_elu`): every gradient exactly 0 on TensorFlow,
        # its outputs in the flat tail (saturation 1.0 >= 0.75): its
        # `saturated_activations` is the finding, not a trunk cut.
        layers = [
            LayerInfo("h1", "Dense", "elu", True, 0, distance=1),
            LayerInfo("out", "Dense", None, True, 1, distance=0),
        ]
        rules = HealthRules(layers)
        found = []
        for s in range(5):
            found += rules.observe(
                recording(
                    s,
                    [1e-2] * 2,
                    names=["h1", "out"],
                    batch_size=64,
                    grad_norm=[None, 0.2],
                    saturation=[1.0, None],
                )
            )
        assert F.VANISHING_GRADIENTS not in {f.mode for f in found}

    def test_not_for_a_branch_cut_in_the_models_graph(self):
        # A branch of a functional model cut off while the layer the inputs
        # reach first learns: by design (probed: a branch `ops.where` never
        # takes, a task's head masked out, a `stop_gradient`ed target
        # network beside the online one; each was a failure). So is a cut
        # where the layer graph is unknown (distances from model order).
        layers = [
            LayerInfo("h1", "Dense", "tanh", True, 0, distance=2),
            LayerInfo("side", "Dense", None, True, 1, distance=2),
            LayerInfo("out", "Dense", None, True, 2, distance=0),
        ]
        names = ["h1", "side", "out"]
        for infos in (layers, [dataclasses.replace(i, distance=None) for i in layers]):
            rules = HealthRules(infos)
            found = []
            for s in range(5):
                norms = (
                    [0.0, 0.0, 0.2] if infos[0].distance is None else [0.1, 0.0, 0.2]
                )
                found += rules.observe(
                    recording(
                        s, [1e-2] * 3, names=names, batch_size=64, grad_norm=norms
                    )
                )
            assert found == []

    def test_not_for_a_path_of_a_layer_that_learns(self):
        # 'block' also holds a router that gets gradients: the cut Dense is
        # one path of it (probed: the experts of a mixture its router sent
        # no sample to, 16 experts, top-1, batches of 8: a failure for each
        # in turn).
        layers = [
            self.LAYERS[0],
            LayerInfo("block/router", "Dense", None, True, 1, 1, inside="block"),
            dataclasses.replace(self.LAYERS[1], depth=2),
            dataclasses.replace(self.LAYERS[2], depth=3),
        ]
        assert self._norms_run(HealthRules(layers), [0.0, 0.1, 0.0, 0.2]) == []

    def test_not_after_an_explosion(self):
        # Exploding first (norm 2e6 then 3e6, over the ceiling): the zeros
        # after it are saturated units, its consequences.
        rules = HealthRules(self.LAYERS)
        found = run(rules, events([2e6, 3e6]))
        assert [f.mode for f in found] == [F.EXPLODING_GRADIENTS]
        assert self._norms_run(rules, [0.0, 0.0, 0.2], range(2, 9)) == []

    def test_not_behind_an_output_without_a_gradient(self):
        # Two heads: 'b' (an output that no loss reads; on JAX its variables
        # get zeros) and 'b_hidden' before it get exactly 0, head 'a' some:
        # the zeros may be the output's, not a cut.
        layers = [
            LayerInfo("shared", "Dense", "relu", True, 0, distance=2),
            LayerInfo("a", "Dense", None, True, 1, distance=0),
            LayerInfo("b_hidden", "Dense", "tanh", True, 2, distance=1),
            LayerInfo("b", "Dense", None, True, 3, distance=0),
        ]
        assert self._norms_run(HealthRules(layers), [0.1, 0.2, 0.0, 0.0]) == []

    def test_reported_on_the_layer_nearest_the_outputs(self):
        found = self._run(lambda s: [0.0, 0.0, 0.2])
        # 5 recordings: patience 3 over patience_steps 5 (steps 0-4).
        assert modes(found) == [(F.VANISHING_GRADIENTS, "block/dense", 0)]
        assert found[0].value == 0.0
        assert found[0].message == (
            "Every gradient of layer 'block/dense', and of the 1 layer before "
            "it ('h1'), was exactly 0 on each of the last 5 recordings (steps "
            "0-4) while the layers nearer the outputs got gradients: no "
            "gradient passes back to it through what follows it, so it does "
            "not learn. Units that output zero on every sample do this (dead "
            "ReLUs in what the `call` of layer 'block' computes from it, which "
            "is not watched), and so do a `stop_gradient` and operations "
            "without a gradient (rounding, `argmax`, a cast to integers)."
        )
        assert found[0].fix.startswith(
            "Find what follows layer 'block/dense' and passes no gradient"
        )

    @pytest.mark.parametrize(
        "norms, activity",
        [
            # A gradient in between breaks the streaks.
            (lambda s: [0.0, 0.0, 0.2] if s != 2 else [1e-3, 1e-3, 0.2], None),
            # No layer nearer the outputs gets one: the global zero's rule.
            (lambda s: [0.0, 0.0, 0.0], None),
            # A measured ReLU layer dead on its window: dead_relu's.
            (lambda s: [0.0, 0.0, 0.2], [0] * 4),
        ],
        ids=["streak_broken", "nothing_passes", "measured_dead"],
    )
    def test_not_reported(self, norms, activity):
        found = self._run(norms, activity)
        assert (F.VANISHING_GRADIENTS, "block/dense", 0) not in modes(found)
        assert not any("exactly 0 on each of the last" in f.message for f in found)


class TestUnitsBySign:
    """Linear layers inside a layer of the user's own, judged by sign
    (`LayerInfo.units_by_sign`): a unit's count is its elements above 0 plus
    1 when its gradient is not 0, so 0 is a unit dead behind the user's
    ReLU."""

    LAYERS = [
        LayerInfo("net/d0", "Dense", None, True, 0, inside="net", units_by_sign=True),
        LayerInfo("net/d1", "Dense", None, True, 1, inside="net", units_by_sign=True),
        LayerInfo("net/out", "Dense", None, True, 2, inside="net", units_by_sign=True),
    ]

    def _run(self, activity, norms=(1e-2, 1e-2, 1e-2), steps=range(5)):
        rules = HealthRules(self.LAYERS)
        names = [i.name for i in self.LAYERS]
        seq = [
            recording(
                s,
                [1e-2] * 3,
                names=names,
                batch_size=32,
                grad_norm=list(norms),
                unit_activity=activity,
            )
            for s in steps
        ]
        return run(rules, seq)

    def test_dead_units_are_reported(self):
        # 6 of d1's 8 units with count 0 on every batch of 32 from step 0:
        # reported at step 4 (`patience_steps`), over the last 4 batches
        # (128 samples, `min_samples`): 75%, by sign.
        d1 = [0, 0, 0, 0, 0, 0, 3, 1]
        found = self._run([[5] * 8, d1, None])
        assert [(f.mode, f.layer, f.step, f.value) for f in found] == [
            (F.DEAD_RELU, "net/d1", 0, 0.75)
        ]
        assert found[0].message == (
            "75% of the units of layer 'net/d1' were at most 0 on every one of "
            "the 128 samples of the last 4 recorded batches (steps 1-4) and got "
            "no gradient: the ReLU that the `call` of layer 'net' applies to "
            "them (not watched here) outputs zero there and passes nothing "
            "back, so these units are dead; they only come back if the layers "
            "before them change their inputs."
        )
        # Steps 0-3 do not span `patience_steps`: not yet.
        assert self._run([[5] * 8, d1, None], steps=range(4)) == []

    def test_not_the_output_layer(self):
        # The last layer's outputs go to the loss (`output_layers`), not
        # through a ReLU: its counts of 0 tell nothing.
        assert self._run([[5] * 8, [5] * 8, [0] * 8]) == []

    def test_not_without_a_gradient_after_it(self):
        # No layer nearer the outputs gets a gradient (a loss without one):
        # its units' zeros are not theirs.
        assert self._run([[5] * 8, [0] * 8, None], norms=(0.0, 0.0, 0.0)) == []

    def test_not_judged_on_its_gradient_alone(self):
        # Without counts (outputs not kept) a layer judged by sign is not
        # judged on its gradients as a ReLU layer would be.
        found = self._run([[5] * 8, None, None], norms=(0.0, 0.0, 1e-2))
        assert F.DEAD_RELU not in [f.mode for f in found]


class TestLossScalingStopped:
    """The non-finite step that ends a run of loss-scale overflows (the
    callback's 10th in a row, `update_skipped`): its cause."""

    @staticmethod
    def _stopped(rules, step, loss):
        event = SentinelEvent(
            step, math.nan, True, "dense_0", 0.01, loss, update_skipped=True
        )
        (found,) = rules.observe_step(event)
        assert (found.mode, found.step) == (F.NON_FINITE, step)
        return found

    def test_overflowing_from_the_first_step_with_a_finite_loss(self):
        # Regression targets of ~1e6 in float16: every update skipped from
        # step 0, the loss finite (7e11). No update was ever applied: the
        # explosion (the cause), then the non-finite step (training stopped).
        rules = HealthRules(mlp(["relu"]))
        for _ in range(9):
            assert rules.observe_overflow(0, 0.01) == []
        event = SentinelEvent(
            0, math.nan, True, "dense_0", 0.01, 7.2e11, update_skipped=True
        )
        exploding, found = rules.observe_step(event)
        where = (exploding.mode, exploding.layer, exploding.step, exploding.value)
        assert where == (F.EXPLODING_GRADIENTS, None, 0, math.inf)
        assert exploding.message == (
            "Every step from the first one (step 0) overflowed float16 under "
            "loss scaling, the update skipped and the scale halved each time, "
            "while the loss stayed finite (7.2e+11): the gradients are beyond "
            "float16's range at every scale tried, they exploded from the "
            "first step on (the scale of the data or of the initial weights)."
        )
        assert exploding.fix == rules_module._OVERFLOW_FIX
        assert (found.mode, found.layer, found.step) == (F.NON_FINITE, "dense_0", 0)
        assert found.message.endswith(
            "The loss is finite (7.2e+11) and no step before it had finite "
            "gradients: the gradients are beyond float16's range at every loss "
            "scale tried, so the scale of the data or of the initial weights is "
            "the likely cause (unscaled inputs or regression targets). It "
            "follows the explosion of the gradients."
        )
        assert found.fix == rules_module._OVERFLOW_FIX

    def test_a_nan_loss_from_the_first_step_is_no_explosion(self):
        # Skipped updates from step 0 whose loss is NaN: the data or the
        # loss, not an explosion.
        event = SentinelEvent(
            0, math.nan, True, "dense_0", 0.01, math.nan, update_skipped=True
        )
        (found,) = HealthRules(mlp(["relu"])).observe_step(event)
        assert (found.mode, found.step) == (F.NON_FINITE, 0)
        assert found.fix == rules_module._DATA_FIX

    def test_overflowing_after_normal_steps_with_a_finite_loss(self):
        rules = HealthRules(mlp(["relu"]))
        run(rules, [event(s, 2.0, lr=0.01, loss=1.0) for s in range(6)])
        found = self._stopped(rules, 6, 3e9)
        assert "(last finite norm 2): the gradients are beyond float16's" in (
            found.message
        )
        assert "the scale of the data is the likely cause" in found.message
        assert found.fix == rules_module._OVERFLOW_FIX

    def test_after_an_explosion_it_follows_it(self):
        # The learning rate jumped 1000x at step 6 and 3 overflows followed
        # (an explosion, reported at step 6); training stopped at step 6.
        rules = HealthRules(mlp(["relu"]))
        run(rules, [event(s, 2.0, lr=0.01, loss=1.0) for s in range(6)])
        for _ in range(3):
            rules.observe_overflow(6, 10.0)
        assert modes(rules.findings) == [(F.EXPLODING_GRADIENTS, None, 6)]
        found = self._stopped(rules, 6, 5.0)
        assert found.message.endswith(" It follows the explosion reported before it.")
        assert found.fix == FIXES[F.EXPLODING_GRADIENTS]

    def test_a_nan_loss_is_the_data_or_the_loss(self):
        rules = HealthRules(mlp(["relu"]))
        run(rules, [event(s, 2.0, lr=0.01, loss=1.0) for s in range(6)])
        found = self._stopped(rules, 6, math.nan)
        assert found.fix == rules_module._DATA_FIX


class TestDivergingAfterARateJump:
    """A loss far over its level, and over where training began, after the
    learning rate jumped up, with the gradient norm up 3x: an explosion that
    normalization keeps below the limit (a BatchNorm CNN whose lr jumped
    1000x: loss 1.07 -> 4-25, norm 5-20x)."""

    def test_three_steps_at_3x_the_loss_with_the_norm_10x(self):
        rules = HealthRules(mlp(["relu"]))
        # Levels before the jump: loss 1 (also in the first steps), norm 1.
        # Steps 7-9: loss 4, 5, 7 >= 1 + (3 - 1) * 1 = 3 and > 1; the norm
        # 6 >= 3 * 1 (6, 12 and 8 are under the explosion limit 100).
        seq = after_a_rate_jump([4.0, 5.0, 7.0], [6.0, 12.0, 8.0])
        found = run(rules, seq)
        assert modes(found) == [(F.EXPLODING_GRADIENTS, None, 7)]
        assert found[0].value == 7.0
        assert found[0].message == (
            "The loss stayed at 3x or more its level of 1 for 3 steps (steps "
            "7-9, now 7) after the learning rate jumped from 0.01 to 10 at "
            "step 6 (7x its 1 at the start of training, with the gradient "
            "norm up 3x): the steps are too large and training diverges."
        )
        assert found[0].fix == FIXES[F.EXPLODING_GRADIENTS]

    @pytest.mark.parametrize(
        "losses, told",
        [
            # Round 15 P1: a fitted MLP (loss 1.5 at the start, 0.09 before
            # the jump), SGD's rate 25x: 0.53, 1.55, 1.53 at 5, 9 and 13
            # steps on. 0.8, 0.9, 0.76 are >= 0.09 x 3 and over half of
            # 1.5 (0.75): half of what it learned undone.
            ([0.8, 0.9, 0.76], True),
            ([0.8, 0.9, 0.74], False),  # 0.74 under half of 1.5
            # A warm restart: a few hundredths.
            ([0.03, 0.05, 0.04], False),
        ],
    )
    def test_a_fitted_model_undone(self, losses, told):
        rules = HealthRules(mlp(["relu"]))
        seq = [event(s, 1.0, lr=0.01, loss=1.5) for s in range(5)]
        seq += [event(s, 1.0, lr=0.01, loss=0.09) for s in range(5, 40)]
        seq.append(event(40, 1.0, lr=0.25, loss=0.09))
        seq += [event(41 + i, 4.0, lr=0.25, loss=v) for i, v in enumerate(losses)]
        found = run(rules, seq)
        assert modes(found) == ([(F.EXPLODING_GRADIENTS, None, 41)] if told else [])

    @pytest.mark.parametrize(
        "before, losses, told",
        [
            # Probed (JAX): a text classifier fitted to 0.514 (0.693 where
            # training began), Adam's rate 100x: never 3x for 3 steps in a
            # row, but the median of steps 43-47 (0.60, 0.98, 0.38, 0.95,
            # 1.67) is 0.95, 1.85x the level and over where training began.
            (0.514, [0.53, 0.21, 0.60, 0.98, 0.38, 0.95, 1.67, 0.93], 43),
            # A warm restart of a fitted model: up 6x, not over 0.693.
            (0.05, [0.3, 0.2, 0.4, 0.3, 0.35, 0.3, 0.25, 0.3], None),
            # A model that had learned nothing: over 0.693, under 1.5x.
            (0.693, [0.8, 0.6, 0.9, 0.75, 0.85, 0.7, 0.95, 0.8], None),
        ],
        ids=["undone", "warm_restart", "never_learned"],
    )
    def test_the_median_loss_undone(self, before, losses, told):
        after = len(losses)
        norms = [0.22] * 40 + [0.28] + [0.7] * after
        rates = [1e-3] * 40 + [0.1] * (1 + after)
        found = zero_run(norms, [0.693] * 5 + [before] * 36 + losses, rates)
        if told is None:
            assert found == []
            return
        ((finding, at),) = found
        assert (finding.mode, finding.layer, finding.step, at) == (
            F.EXPLODING_GRADIENTS,
            None,
            told,
            told + 4,
        )
        assert finding.value == pytest.approx(0.95)
        assert finding.message.startswith(
            "The median loss of steps 43-47 was 0.95 after the learning rate "
            "jumped from 0.001 to 0.1 at step 40: 1.8x its level of 0.514"
        )

    @pytest.mark.parametrize(
        "losses",
        [
            [0.53, 0.21, 0.60, 0.98, 0.38, 0.95, 1.67, 0.93],  # the median
            [0.6, 1.6, 1.7, 1.8, 1.6, 1.5],  # 3x for 3 steps in a row
        ],
        ids=["median", "in_a_row"],
    )
    def test_no_loss_undone_where_the_optimizers_have_losses_of_their_own(self, losses):
        # A GAN whose discriminator's and generator's SGD rates restart
        # together (cosine restarts, 650x at step 40; probed on TensorFlow):
        # the loss noted, the discriminator's, went from 0.25 to 0.53-0.98
        # for a few steps while the generator caught up, then stayed at
        # 0.5 (the two networks' balance). One network's loss rises as the
        # other learns: with `separate_losses`, only the updates judge the
        # jump. The same series is told with one loss (above, and
        # `test_the_median_loss_undone`).
        after = len(losses)
        norms = [0.22] * 40 + [0.28] + [0.7] * after
        rates = [1e-3] * 40 + [0.1] * (1 + after)
        series = [0.693] * 5 + [0.514] * 36 + losses
        assert [f.mode for f, _ in zero_run(norms, series, rates)] == [
            F.EXPLODING_GRADIENTS
        ]
        rules = HealthRules(mlp(["relu"] * 2))
        rules.separate_losses = True
        found = []
        for step, (n, loss, lr) in enumerate(zip(norms, series, rates)):
            found += rules.observe_step(event(step, n, lr, loss=loss))
        assert found == []
        assert not rules._watch.own_loss

    @pytest.mark.parametrize(
        "losses, norms, rate",
        [
            ([4.0, 5.0, 7.0], [2.0, 2.9, 0.0], 10.0),  # norm never 3x
            ([4.0, 2.0, 7.0, 5.0], [12.0] * 4, 10.0),  # 2 < 3: no 3 in a row
            ([4.0, 5.0, 7.0], [6.0, 12.0, 8.0], 1e-4),  # the rate fell
            ([1.0] * 19 + [4.0, 5.0, 7.0], [1.0] * 19 + [12.0] * 3, 10.0),  # late
        ],
        ids=["norm_not_up", "not_in_a_row", "rate_down", "after_the_window"],
    )
    def test_not_an_explosion(self, losses, norms, rate):
        # The last: steps 26-28 are past the 20 steps watched after step 6.
        rules = HealthRules(mlp(["relu"]))
        assert run(rules, after_a_rate_jump(losses, norms, rate)) == []

    @pytest.mark.parametrize("offset", [0.0, 1.0])
    def test_a_negative_loss_back_where_training_began(self, offset):
        # A loss that goes negative (cosine similarity): -0.04 in the first
        # 5 steps, -0.92 until the rate jumps 500x at step 40, then
        # 0.01-0.05 (the training undone; probed: reported only with 1
        # added to the loss, whose gradients are the same). No multiple of
        # a level under 0: back above where training began is the rise.
        # With 1 added: 1.01-1.05 >= 0.08 + (3 - 1) x 0.08 and > 0.96.
        rules = HealthRules(mlp(["relu"]))
        seq = [event(s, 1.0, lr=0.1, loss=-0.04 + offset) for s in range(5)]
        seq += [event(s, 1.0, lr=0.1, loss=-0.92 + offset) for s in range(5, 40)]
        seq.append(event(40, 1.0, lr=50.0, loss=-0.92 + offset))
        seq += [
            event(41 + i, 5.0, lr=50.0, loss=v + offset)
            for i, v in enumerate((0.01, 0.05, 0.02))
        ]
        found = run(rules, seq)
        assert modes(found) == [(F.EXPLODING_GRADIENTS, None, 41)]

    def test_not_above_the_start_of_training(self):
        # A warm restart of a trained model: the loss was 10 in the first 5
        # steps and 0.5 before the jump; 2, 3, 4 are 3x 0.5 and more, with
        # the norm 5x, but below 10.
        rules = HealthRules(mlp(["relu"]))
        seq = [event(s, 1.0, lr=0.01, loss=10.0 if s < 5 else 0.5) for s in range(40)]
        seq.append(event(40, 1.0, lr=10.0, loss=0.5))
        seq += [event(41 + i, 5.0, lr=10.0, loss=v) for i, v in enumerate([2, 3, 4])]
        assert run(rules, seq) == []

    def test_every_step_is_judged_at_once_while_watched(self):
        rules = HealthRules(mlp(["relu"]))
        run(rules, after_a_rate_jump([1.0] * 3, [1.0] * 3))
        assert rules.alarm_bounds() == (0.0,) * 7
        run(rules, events([1.0] * 18, start=10))  # Step 27 ends the watch.
        assert rules.alarm_bounds() != (0.0,) * 7


def after_a_spike(norms, losses, level=0.5):
    """Steps 0-39 at norm 1 and loss 1.5 (the first 5) then `level`, a
    step 40 at norm 1000 on a batch of loss 100, then these steps."""
    seq = [event(s, 1.0, loss=1.5 if s < 5 else level) for s in range(40)]
    seq.append(event(40, 1000.0, loss=100.0))
    return seq + [
        event(41 + i, n, loss=v) for i, (n, v) in enumerate(zip(norms, losses))
    ]


class TestOneStepThrowsTheWeights:
    """A step over the explosion limit after which the loss of the next
    steps stayed 3x its level, and over where training began: that step's
    update threw the weights off, whatever the norm did after it (an SGD MLP
    with one batch of inputs 1000x the others': the norm 1e3x, then 3e2x,
    then 60-70x; the loss of the next batches 1.9e3, 96, 88 against 0.45)."""

    def test_the_loss_of_three_steps_after_it(self):
        rules = HealthRules(mlp(["relu"]))
        # Step 40: 1000 > the limit 100 x the early 1 (and 100 x the recent
        # 1, its loss 100 >= 1.1 x 0.5); one step over, 41 under it, is no
        # streak of 2. Steps 41-43: losses 1900, 96, 88 >= 0.5 + (3 - 1) x
        # 0.5 = 1.5 and > 1.5 where training began (the median loss of the
        # first `baseline_steps`, 5).
        found = run(rules, after_a_spike([60.0, 70.0, 65.0], [1900.0, 96.0, 88.0]))
        assert modes(found) == [(F.EXPLODING_GRADIENTS, None, 40)]
        assert found[0].value == 1000.0
        assert found[0].message == (
            "The global gradient norm jumped to 1e+03 at step 40, 1e+03x its "
            "recent level of 1, and the loss of each of the 3 steps after it "
            "stayed at 3x or more its level of 0.5 before it (up to 1.9e+03 at "
            "step 41; 1.5 where training began): the update of that one step "
            "threw the weights off, as a batch far from the others' scale "
            "(outliers, corrupted or unscaled values) or a step too large for "
            "it does."
        )
        assert found[0].fix == rule_support._SPIKE_FIX

    def test_right_after_a_learning_rate_jump_names_it(self):
        # The rate 100x at step 39, the step that threw the weights at 40:
        # the jump made it, not a batch (probed: a causal transformer whose
        # rate jumped 100x at step 200, the norm 26.5x at 201, was told to
        # check the batch of that step). Its recorded update, 4x dense_1's
        # weights, is told at once and ends the watch of the jump's loss.
        rules = HealthRules(mlp(["relu"]))
        seq = after_a_spike([60.0, 70.0, 65.0], [1900.0, 96.0, 88.0])
        seq = [
            dataclasses.replace(e, learning_rate=1e-3 if e.step < 39 else 0.1)
            for e in seq
        ]
        update = recording(40, RELU_RMS[:2], loss=100.0, update_ratio=[0.5, 4.0])
        found = run(rules, [*seq[:41], update, *seq[41:]])
        assert [(f.mode, f.layer, f.step) for f in found] == [
            (F.EXPLODING_GRADIENTS, "dense_1", 40),
            (F.EXPLODING_GRADIENTS, None, 40),
        ]
        assert found[1].message.endswith(
            "the update of that one step threw the weights off. It began 1 step "
            "after the learning rate jumped 100x, from 0.001 to 0.1 at step 39: "
            "steps far too large."
        )
        assert found[1].fix == rule_support._JUMP_FIX

    @pytest.mark.parametrize(
        "losses",
        [
            [0.6, 0.5, 0.55],  # The next batches' loss where it was.
            [1900.0, 96.0, 1.2],  # 1.2 < 1.5: not three steps in a row.
            [1900.0, 96.0],  # Only two steps so far.
        ],
        ids=["back", "not_three", "two"],
    )
    def test_not_thrown(self, losses):
        # A heavy batch of a healthy run (a rare class weighted 99x): the
        # loss of the next ones stays at its level.
        rules = HealthRules(mlp(["relu"]))
        norms = [1.0] * len(losses)
        assert run(rules, after_a_spike(norms, losses)) == []

    @pytest.mark.parametrize("local", [8.0, 0.5], ids=["other_task", "quiet"])
    def test_judged_against_the_steps_just_before_too(self, local):
        # A time-ordered stream alternating between two tasks, the model
        # fitted to one (JAX, seed shift 17 of `healthy_new_task_stream`:
        # 16 batches at 0.01, then 32 at 6-12, the norm 16.5x at the tenth
        # of these, the next three at 10.2, 9.07, 10.6). Here the window's
        # last 32 losses: 22 at 0.01, then 10 at `local`, whose median is
        # 0.01: 9-10 after the spike is 3x or more that, but not 3x the
        # median of the last 4 steps, 8 (other_task: not told); of a quiet
        # stream, 0.5, the higher level (told against it). Training began
        # at 9 (the stream's first batches were of the other task), under
        # the losses after the spike.
        rules = HealthRules(mlp(["relu"]))
        seq = [event(s, 1.0, loss=9.0 if s < 5 else 0.01) for s in range(30)]
        seq += [event(30 + s, 1.0, loss=local) for s in range(10)]
        seq.append(event(40, 1000.0, loss=100.0))
        seq += [event(41 + i, 1.0, loss=v) for i, v in enumerate([10.2, 9.07, 10.6])]
        found = run(rules, seq)
        if local == 8.0:
            assert found == []
        else:
            assert modes(found) == [(F.EXPLODING_GRADIENTS, None, 40)]
            assert "its level of 0.5 before it" in found[0].message

    def test_not_above_where_training_began(self):
        # The loss was 10 in the first steps: 1.9, 1.8 and 1.7 are 3x the
        # level 0.5 before the spike, but under 10.
        rules = HealthRules(mlp(["relu"]))
        seq = [event(s, 1.0, loss=10.0 if s < 32 else 0.5) for s in range(40)]
        seq.append(event(40, 1000.0, loss=100.0))
        seq += [event(41 + i, 1.0, loss=v) for i, v in enumerate([1.9, 1.8, 1.7])]
        assert run(rules, seq) == []

    def test_a_jump_under_the_limit_after_a_noisy_step(self):
        # A fitted ResNet without normalization (JAX, SGD at 0.02 with
        # momentum): the norm 42 at step 85, 40x the recent median but
        # under the limit (100 x the early 1) and under 10x a noisy step of
        # 15 in the window; the loss 8.7-10.9 on the next three steps
        # against 0.16 (and 1.5 where training began). Here: norm 1 and a
        # noisy 15 at step 30, the loss 1.5 then 0.2; 40 at step 40.
        rules = HealthRules(mlp(["relu"]))
        seq = [
            event(s, 15.0 if s == 30 else 1.0, loss=1.5 if s < 5 else 0.2)
            for s in range(40)
        ]
        seq.append(event(40, 40.0, loss=1.0))
        # Its step is judged at once (10 x the median 1, squared).
        run(rules, seq[:40])
        assert rules.alarm_bounds()[1] == pytest.approx(10.0**2 / 1.001)
        run(rules, seq[40:])
        assert rules.alarm_bounds() == (0.0,) * 7  # The next steps too.
        found = run(
            rules,
            [event(41 + i, 10.0, loss=v) for i, v in enumerate([8.7, 10.6, 10.9])],
        )
        assert modes(found) == [(F.EXPLODING_GRADIENTS, None, 40)]
        assert found[0].message.startswith(
            "The global gradient norm jumped to 40 at step 40, 40x its recent "
            "level of 1, and the loss of each of the 3 steps after it stayed at "
            "3x or more its level of 0.2 before it (up to 10.9 at step 43; 1.5 "
            "where training began)"
        )

    def test_a_jump_under_the_limit_with_new_data(self):
        # A fitted classifier fed a new task, unshuffled (the scenario
        # `healthy_new_task_stream`): the norm 16x, then 13x, its recent
        # level with batches whose own loss rose (2.2-2.8 against 0.1, where
        # training began too): new data the model adapts to.
        rules = HealthRules(mlp(["relu"]))
        seq = [event(s, 1.0, loss=0.1) for s in range(40)]
        seq += [event(40, 16.0, loss=2.2), event(41, 13.0, loss=2.8)]
        seq += [event(42 + i, 5.0, loss=2.5) for i in range(4)]
        assert run(rules, seq) == []

    @pytest.mark.parametrize("norm", [9.9, 40.0])
    def test_a_jump_under_the_limit_whose_loss_comes_back(self, norm):
        # Under 10x the median, or the loss of the next steps back at its
        # level: a heavy batch.
        rules = HealthRules(mlp(["relu"]))
        seq = [event(s, 1.0, loss=1.5 if s < 5 else 0.2) for s in range(40)]
        seq.append(event(40, norm, loss=1.0))
        losses = [8.7, 10.6, 10.9] if norm < 10 else [0.3, 10.6, 10.9]
        seq += [event(41 + i, 1.0, loss=v) for i, v in enumerate(losses)]
        assert run(rules, seq) == []

    def test_its_steps_are_judged_at_once(self):
        # The steps after it are watched one by one: a quiet step (within
        # the bounds on the norm, which say nothing of the loss) would not
        # be seen.
        rules = HealthRules(mlp(["relu"]))
        run(rules, after_a_spike([1.0], [1900.0]))
        assert rules.alarm_bounds() == (0.0,) * 7
        run(rules, [event(42, 1.0, loss=0.5)])
        assert rules.alarm_bounds() != (0.0,) * 7


def new_task(norms, ratios=None, rate_jump=False, before=0.05):
    """A fitted classifier (steps 0-39: norm 0.05, loss 0.01) whose stream
    turns to a new task at step 40 (norm 12, loss 12), then steps 41-...
    with these `norms` and losses falling from 12; each recorded in full
    with both layers' update ratio `ratios[i]` when given. `rate_jump`: the
    learning rate 10x up at step 38. `before`: step 39's norm."""

    def lr(step):
        return 1e-2 if rate_jump and step >= 38 else 1e-3

    seq = [event(s, 0.05, lr(s), loss=0.01) for s in range(39)]
    seq += [event(39, before, lr(39), loss=0.01), event(40, 12.0, lr(40), loss=12.0)]
    for i, norm in enumerate(norms):
        step, loss = 41 + i, 12.0 - 0.2 * i
        ratio = None if ratios is None else ratios[i]
        seq += stepped(step, norm, loss, lr(step), ratio)
    return seq


def stepped(step, norm, loss, lr, ratio=None):
    """A step's event, then its full recording with both layers' update
    ratio `ratio` (weights of norm 5 and 2) when given."""
    seq = [event(step, norm, lr, loss=loss)]
    if ratio is not None:
        seq.append(
            recording(
                step,
                [0.01, 0.1],
                loss=loss,
                global_norm=norm,
                learning_rate=lr,
                update_ratio=[ratio] * 2,
                weight_norm=[5.0, 2.0],
            )
        )
    return seq


class TestNewDataInAStream:
    """A streak over the explosion limit that came with its batch (its loss
    up 1200x with the norm, after a step at the recent level, no
    learning-rate jump before it) is an explosion only once an update
    recorded since moves the weights by `_CLIMB_UPDATE` (5%) of their norm
    or more: a fitted classifier fed a new task in a time-ordered stream
    under Adam at 1e-3 held its norm 200x up while its updates stayed at
    0.003 of the weights and its loss fell (probed, both backends)."""

    NORMS = [15.0, 11.0, 12.0, 10.0, 9.0, 11.0, 8.0, 9.5]

    def test_small_updates_are_new_data(self):
        # Steps 40-48 are over the limit, min(100 x 0.05, 1e6) = 5, and
        # 100x the recent 0.05, their losses 1.1x the recent 0.01: a streak
        # that would be an explosion at step 42 (three steps, the last not
        # 1.5x the one before). Every update 0.003 < 0.05.
        rules = HealthRules(mlp(["relu"]))
        assert run(rules, new_task(self.NORMS, [0.003] * 8)) == []

    def test_large_updates_are_an_explosion(self):
        # The update of step 41 moved the weights by 0.3 of their norm:
        # reported at step 42 (the third step), from step 40.
        rules = HealthRules(mlp(["relu"]))
        seq = new_task(self.NORMS[:2], [0.3, 0.3])
        assert modes(run(rules, seq)) == [(F.EXPLODING_GRADIENTS, None, 40)]

    @pytest.mark.parametrize("update, found", [(0.003, []), (0.3, [40])])
    def test_as_far_as_a_spike_over_the_early_norm(self, update, found):
        # Steps 41-42 at 600 and 900, 1.2e4-1.8e4x the early 0.05 (over the
        # one-spike limit 1e4x): with the updates of the new data (0.003)
        # no explosion either; with large ones (0.3), one from step 40.
        # Probed: a loss weighted 1e-4 on its first 10 batches, then 1
        # (SGD, updates 0.4-1% of the weights): the norm 1.07e4x its early
        # level at step 11, told as an explosion of a healthy run.
        rules = HealthRules(mlp(["relu"]))
        seq = new_task([600.0, 900.0], [update, update])
        assert [f.step for f in run(rules, seq)] == found

    @pytest.mark.parametrize(
        "ordered, update, found",
        [(True, 0.09, []), (False, 0.09, [40]), (True, 0.3, [40])],
    )
    def test_data_in_order_allows_larger_updates(self, ordered, update, found):
        # Batches of one class each, class 0 at steps 30-33 and class 1 at
        # 34-37 (`observe_order`, as the callback judges them before the
        # step's norm): each class that comes is new data under updates up
        # to `_ORDERED_UPDATE` (0.15) of the weights' norm. Probed: a ReLU
        # MLP on 4 classes sorted by label under Adam at 3e-2 moved its
        # layers by 0.05-0.09 a step while the norm of the next class's
        # first batches (49.5, from 1e-7) fell back; 0.3 is the updates of
        # `test_large_updates_are_an_explosion`.
        rules = HealthRules(mlp(["relu"]))
        told = []
        for step in range(30, 38) if ordered else ():
            told += rules.observe_order(step, [int(step >= 34)] * 32, None)
        assert [f.mode for f in told] == [F.UNSHUFFLED_DATA] * ordered
        assert rules.data_ordered == ordered
        seq = new_task(self.NORMS[:2], [update, update])
        assert [f.step for f in run(rules, seq)] == found

    def test_judged_as_before_without_recordings(self):
        # No update recorded: steps 40-42 are an explosion, as before.
        rules = HealthRules(mlp(["relu"]))
        found = run(rules, new_task(self.NORMS[:2]))
        assert modes(found) == [(F.EXPLODING_GRADIENTS, None, 40)]
        assert found[0].value == 11.0

    def test_waits_one_step_for_the_burst(self):
        # Step 41 grew 1.5x (18 >= 1.5 x 12): two steps would do, but the
        # step that came with its batch waits for step 42's recording...
        rules = HealthRules(mlp(["relu"]))
        assert run(rules, new_task([18.0])) == []
        # ...whose small update keeps it new data.
        rules = HealthRules(mlp(["relu"]))
        assert run(rules, new_task([18.0, 20.0], [0.003, 0.003])) == []

    def test_it_ends_when_the_norm_comes_back(self):
        # Step 43 back at 0.3 (<= 10 x the level 0.05 before step 40): the
        # new data is learnt. A climb from there (steps 44-48: 0.6, whose
        # loss 0.02 is under 3x the recent 0.01, then 2x a step from 20,
        # over the limit 5 and the 15 the norm came back from, to 160, under
        # the one-spike limit 1e4 x 0.05 = 500; no step that came with its
        # batch) with the same small updates is judged as any other streak:
        # two steps over the limit, the second grown 2x, from step 45.
        rules = HealthRules(mlp(["relu"]))
        seq = new_task([15.0, 11.0], [0.003] * 2)
        seq.append(event(43, 0.3, 1e-3, loss=0.01))
        for i, norm in enumerate((0.6, 20.0, 40.0, 80.0, 160.0)):
            seq += stepped(44 + i, norm, 0.02 * 2**i, 1e-3, 0.003)
        found = modes(run(rules, seq))
        assert found and all(f == (F.EXPLODING_GRADIENTS, None, 45) for f in found)

    @pytest.mark.parametrize(
        "scale, later, first, told",
        [
            # Probed: a binary MLP's inputs shifted by -30 from step 40 (a
            # broken preprocessing step): 30.2 against 1.37 at first, and
            # 29.8 at the next recording.
            (30.2, 29.8, 1.37, True),
            # Probed: log-normal input scales in batches of 2 (a healthy
            # run): one batch at 26.7 against 1.03, the next back at 1.2.
            (26.7, 1.2, 1.03, False),
            (1.9, 1.9, 1.37, False),  # Under `input_scale` (2).
            # Over it, but under 3x the first (shuffled i.i.d. batches).
            (2.06, 2.06, 1.88, False),
            (30.2, 30.2, 5.0, False),  # Not standardized from the start.
            (None, None, 1.37, False),  # Inputs not kept (several replicas).
        ],
    )
    def test_inputs_that_changed_with_the_data(self, scale, later, first, told):
        rules = HealthRules(mlp(["relu"]))
        assert not rules.wants_inputs()
        run(rules, new_task([15.0], [0.003]))
        # Step 40 came with new data: the next full recording's inputs are
        # asked for, and the one after if they changed.
        assert rules.wants_inputs()
        assert rules.inputs_changed(41, scale, first) == []
        assert rules.wants_inputs() == (scale in (30.2, 26.7) and first < 2)
        found = rules.inputs_changed(42, later, first)
        assert not rules.wants_inputs()
        assert rules.inputs_changed(43, scale, first) == []
        if not told:
            assert found == []
            return
        ((finding),) = found
        assert (finding.mode, finding.layer, finding.step) == (
            F.UNSTANDARDIZED_INPUTS,
            None,
            40,
        )
        assert finding.severity == F.WARNING
        assert finding.value == 29.8  # The lower of the two.
        # The norm 12 at step 40 against the level 0.05 before it: 240x.
        assert finding.message == (
            "From step 40 the inputs are far from standardized (a feature's "
            "mean or spread is 29.8 or more at steps 41 and 42, against 1.37 on "
            "the first recorded batch), and the global gradient norm jumped "
            "240x with them at step 40: the data changed (a preprocessing step "
            "that broke, values in another unit), and the model now learns "
            "from inputs of another scale."
        )

    def test_after_a_rate_jump_it_is_the_steps(self):
        # The rate 10x up at step 38, two steps before: the steps can have
        # thrown the weights, whatever their later updates.
        rules = HealthRules(mlp(["relu"]))
        seq = new_task(self.NORMS[:2], [0.003] * 2, rate_jump=True)
        assert (F.EXPLODING_GRADIENTS, None, 40) in modes(run(rules, seq))

    def test_a_norm_that_climbed_to_it_is_the_steps(self):
        # Step 39 at 0.6, 12x the recent 0.05: the norm climbed (an
        # explosion's growth), not a batch unlike the others.
        rules = HealthRules(mlp(["relu"]))
        seq = new_task(self.NORMS[:2], [0.003] * 2, before=0.6)
        assert modes(run(rules, seq)) == [(F.EXPLODING_GRADIENTS, None, 40)]

    @pytest.mark.parametrize("ratio, thrown", [(0.003, False), (0.3, True)])
    def test_one_spike_throws_only_with_large_updates(self, ratio, thrown):
        # `after_a_spike`: step 40 came with its batch (loss 100 against
        # 0.5, after a step at the recent norm), the next three losses 3x
        # the level: thrown when an update recorded since is large.
        rules = HealthRules(mlp(["relu"]))
        seq = after_a_spike([60.0, 70.0, 65.0], [1900.0, 96.0, 88.0])
        seq.insert(
            42,
            recording(
                41,
                [0.01, 0.1],
                loss=1900.0,
                global_norm=60.0,
                update_ratio=[ratio] * 2,
                weight_norm=[5.0, 2.0],
            ),
        )
        found = modes(run(rules, seq))
        assert found == ([(F.EXPLODING_GRADIENTS, None, 40)] if thrown else [])


def climbing(losses, norms=None, first=(2.4,) * 5):
    """Steps at norm 2 with the losses `first`, then these losses (at these
    norms, 2.5 by default)."""
    norms = norms or [2.5] * len(losses)
    seq = [event(s, 2.0, loss=v) for s, v in enumerate(first)]
    return seq + [
        event(len(first) + i, n, loss=v) for i, (n, v) in enumerate(zip(norms, losses))
    ]


def churning(ratios, losses, weights=(50.0, 5.0)):
    """A regressor's steps 0-5, each recorded: the losses `losses`, the
    update ratios `ratios` of its two layers from step 1 (none at step 0),
    100 and 10 weights' worth of norm (RMS 0.5 each by default)."""
    seq = []
    for step, loss in enumerate(losses):
        seq.append(event(step, 30.0, loss=loss))
        seq.append(
            recording(
                step,
                [0.1, 0.1],
                loss=loss,
                global_norm=30.0,
                grad_norm=[10.0, 1.0],  # sqrt(10000) and sqrt(100) weights
                weight_norm=list(weights),
                update_ratio=[None, None] if step == 0 else list(ratios),
            )
        )
    return seq


class TestChurningUpdates:
    """Updates that rewrite a large share of the weights at every recording
    while the loss stays over half of where training began: the steps are far
    too large for the model to learn (a GRU regressor of targets of spread
    27 under SGD at 0.05, measured: the losses below, its layers' updates
    0.2-2.9 of their weights)."""

    LOSSES = [345.0, 642.0, 819.0, 996.0, 459.0, 1793.0]
    # The same under JAX for an LSTM: the loss up and down around the first
    # step's 683 (the level of knowing nothing, about 750), never under half
    # of it nor at 1.5x it.
    AROUND = [683.0, 590.0, 731.0, 600.0, 814.0, 572.0]

    def test_told_after_patience(self):
        rules = HealthRules(mlp(["tanh"], output="linear"))
        seq = churning([0.3, 0.6], self.AROUND)
        # Steps 1-5 over 0.15 with the loss over half of 683 (the first
        # step's): told at the 5th step (`patience` 3, `patience_steps` 5),
        # not at the 4th.
        assert run(rules, seq[:10]) == []
        found = run(rules, seq[10:])
        assert modes(found) == [(F.EXPLODING_GRADIENTS, None, 1)]
        assert found[0].value == pytest.approx(0.45)  # median of 0.3 and 0.6
        assert found[0].message == (
            "Each update changed the weights of the median layer by 0.45 of "
            "their norm (up to 0.6, layer 'dense_1'; healthy steps change "
            "about 0.001) for 5 recordings in a row (steps 1-5), while the "
            "loss stayed near or above where training began (572 against "
            "683): the steps are far too large and training is unstable; each "
            "rewrites much of the weights, so the loss cannot settle lower."
        )
        assert found[0].fix == FIXES[F.EXPLODING_GRADIENTS]

    def test_risen_loss_told_after_patience_recordings(self):
        # Steps 1-3 at 642, 819 and 996: 1.86x, 2.37x and 2.89x the start
        # (345), each at 1.5x or more (`_UNDONE_RISE`): 3 recordings in a
        # row suffice (`patience`), over 3 steps; not 2.
        rules = HealthRules(mlp(["tanh"], output="linear"))
        seq = churning([0.3, 0.6], self.LOSSES)
        assert run(rules, seq[:6]) == []
        found = run(rules, seq[6:8])
        assert modes(found) == [(F.EXPLODING_GRADIENTS, None, 1)]
        assert found[0].message == (
            "Each update changed the weights of the median layer by 0.45 of "
            "their norm (up to 0.6, layer 'dense_1'; healthy steps change "
            "about 0.001) for 3 recordings in a row (steps 1-3), while the "
            "loss rose to 2.9 times where training began (996 against 345): "
            "the steps are far too large and training is unstable; each "
            "rewrites much of the weights, so the loss cannot settle lower."
        )

    def test_unscaled_targets_named(self):
        rules = HealthRules(mlp(["tanh"], output="linear"))
        rules.target_scale = 27.0
        (finding,) = run(rules, churning([0.3, 0.6], self.LOSSES))
        assert "The regression targets are far from unit scale" in finding.message
        assert finding.fix.startswith("Standardize the regression targets")

    @pytest.mark.parametrize(
        "ratios, losses",
        [
            # Updates of a tenth of the weights: large, not churning
            # (healthy runs held at most 0.053 over a streak).
            ([0.1, 0.1], LOSSES),
            # The loss under half of where training began at step 3 (150
            # against 345): the streak restarts at step 4, 2 steps only;
            # at 1.5x the start on 2 recordings in a row, then 1.
            ([0.3, 0.6], [345.0, 642.0, 819.0, 150.0, 459.0, 1793.0]),
            # A loss under 0 where training began (-1): no rise over it
            # counts; 3 recordings over 3 steps, under `patience_steps`.
            ([0.3, 0.6], [-1.0, 2.0, 3.0, 4.0]),
        ],
    )
    def test_not_told(self, ratios, losses):
        rules = HealthRules(mlp(["tanh"], output="linear"))
        assert run(rules, churning(ratios, losses)) == []

    def test_weights_near_zero_not_counted(self):
        # dense_0's weights at RMS 0.005 (norm 0.5 over 100x100 weights):
        # a zero-initialised layer moves many times its norm; the median
        # is of dense_1 alone, 0.05. Counted, median(0.9, 0.05) = 0.475.
        rules = HealthRules(mlp(["tanh"], output="linear"))
        seq = churning([0.9, 0.05], self.LOSSES, weights=(0.5, 5.0))
        assert run(rules, seq) == []
        rules = HealthRules(mlp(["tanh"], output="linear"))
        seq = churning([0.9, 0.05], self.LOSSES, weights=(50.0, 5.0))
        assert modes(run(rules, seq)) == [(F.EXPLODING_GRADIENTS, None, 1)]


class TestLossClimbingOverTheStart:
    """A loss that stays 3x where training began for 10 steps in a row is a
    divergence, with no norm over the limit and no rate jump (a softmax
    output fed probabilities under SGD at 5, on JAX: the loss from 2.4 to
    7-12 from step 17 on, the norm at 1-3, until the gradients are 0)."""

    def test_ten_steps_at_3x(self):
        rules = HealthRules(mlp(["relu"]))
        # The start: the first step's loss, 2.4 (no recording told the
        # batch size); the first 5 steps' median 2.4 < 3 x 2.4 = 7.2.
        # Steps 5-14 at 7.5-12 >= 7.2, their norm 2.5 >= the early 2 / 10.
        losses = [8.0, 7.5, 9.0, 10.0, 12.0, 8.0, 9.0, 11.0, 10.0, 9.5]
        found = run(rules, climbing(losses))
        assert [(f.mode, f.layer, f.step) for f in found] == [
            (F.EXPLODING_GRADIENTS, None, 5)
        ]
        assert found[0].value == 12.0
        assert found[0].message == (
            "The loss stayed at 3x or more where training began (2.4) for 10 "
            "steps in a row (steps 5-14, 7.5-12), while the gradient norm did "
            "not explode (2.5, against 2 at first): training diverges, the steps "
            "are too large."
        )
        assert found[0].fix == FIXES[F.EXPLODING_GRADIENTS]

    @pytest.mark.parametrize(
        "losses, norms, first",
        [
            ([8.0] * 9 + [7.0] + [8.0] * 9, None, (2.4,) * 5),  # 7 < 7.2
            ([8.0] * 10, [2.5] * 5 + [0.1] + [2.5] * 4, (2.4,) * 5),  # 0.1 < 0.2
            ([8.0] * 10, None, (2.4, 8.0, 8.0, 8.0, 2.0)),  # early median 8
            ([8.0] * 10, None, (-1.0,) * 5),  # a loss under 0 at first
        ],
        ids=["not_ten_in_a_row", "no_gradient", "an_easy_first_batch", "negative"],
    )
    def test_not_a_divergence(self, losses, norms, first):
        # A step whose gradient norm fell 10x under the early baseline ends
        # the run: a loss stuck high with no gradient is the zero-gradient
        # rule's (a saturated or dead output).
        rules = HealthRules(mlp(["relu"]))
        assert run(rules, climbing(losses, norms, first)) == []

    @pytest.mark.parametrize(
        "ratio, reported", [(0.003, False), (0.049, False), (0.05, True), (0.8, True)]
    )
    def test_only_with_steps_large_enough_to_throw_the_weights(self, ratio, reported):
        # The recording of step 8, within the run: its largest update moved
        # dense_0 by `ratio` of its norm (dense_1 by half that). Under
        # `step_rules._CLIMB_UPDATE` (0.05) the steps are too small for the
        # loss's rise to be theirs (a probe: unshuffled batches that get
        # noisier, under Adam at 1e-3, 0.001-0.003): the data rose.
        rules = HealthRules(mlp(["relu"]))
        seq = climbing([8.0] * 10)
        within = recording(8, [0.1, 0.1], update_ratio=[ratio, ratio / 2], loss=8.0)
        found = run(rules, seq[:9] + [within] + seq[9:])
        assert modes(found) == ([(F.EXPLODING_GRADIENTS, None, 5)] if reported else [])

    def test_a_recording_before_the_run_asks_for_one(self):
        # Small updates recorded at step 4, before the run from step 5 (a
        # long run's recordings are far apart): at step 14 the run goes on
        # and asks for a recording (a noisy jump); the one of step 15 moved
        # dense_0 by 0.8 of its norm: reported with the next step.
        rules = HealthRules(mlp(["relu"]))
        seq = climbing([8.0] * 11)
        before = recording(4, [0.1, 0.1], update_ratio=[0.003, 0.001], loss=2.4)
        assert run(rules, seq[:5] + [before] + seq[5:]) == []
        assert rules.jumped and rules.jump_noisy
        after = recording(15, [0.1, 0.1], update_ratio=[0.8, 0.4], loss=8.0)
        found = run(rules, [after, event(16, 2.5, loss=8.0)])
        assert modes(found) == [(F.EXPLODING_GRADIENTS, None, 5)]
        assert "for 12 steps in a row (steps 5-16, 8-8)" in found[0].message

    def test_quiet_steps_count_and_the_next_ones_are_judged(self):
        rules = HealthRules(mlp(["relu"]))
        run(rules, climbing([]))
        # 8 steps within the bounds on the norm, read together, whose loss
        # the bounds do not check.
        rules.observe_quiet([(5 + i, 2.5, None, 9.0) for i in range(8)])
        assert rules.alarm_bounds() == (0.0,) * 7
        found = run(rules, [event(13, 2.5, loss=9.0), event(14, 2.5, loss=9.0)])
        assert [(f.mode, f.step) for f in found] == [(F.EXPLODING_GRADIENTS, 5)]


class TestUpdatesAfterARateJump:
    """An update larger than the weights within the steps watched after a
    learning-rate jump up is reported on its first recording: Adam and
    BatchNorm bring the loss and the norm back within a step (a BN CNN whose
    Adam lr jumped 1000x: loss 10x for one step, update ratios 1.19 at once
    and 0.1-0.5 for ten steps), so neither the norm nor the loss rule sees
    it."""

    @pytest.mark.parametrize("loss", [1.0, None], ids=["loss", "no_loss"])
    def test_one_recording_over_the_limit(self, loss):
        rules = HealthRules(mlp(["relu"]))
        seq = [event(s, 1.0, lr=0.01, loss=loss) for s in range(6)]
        seq.append(event(6, 1.0, lr=10.0, loss=loss))
        # Step 8: dense_0 moved 3x its norm > exploding_update_ratio 1,
        # dense_1 0.5x, with the loss 1.2 >= 1.1 x its level of 1 before the
        # jump (or unknown); step 7 (0.9x) is under it.
        high = None if loss is None else 1.2
        seq.append(recording(7, [1e-2, 1e-2], update_ratio=[0.9, 0.2], loss=loss))
        seq.append(recording(8, [1e-2, 1e-2], update_ratio=[3.0, 0.5], loss=high))
        found = run(rules, seq)
        assert modes(found) == [(F.EXPLODING_GRADIENTS, "dense_0", 8)]
        assert found[0].value == 3.0
        assert found[0].message == (
            "The learning rate jumped from 0.01 to 10 at step 6, and the update "
            "of step 8 changed the weights of layer 'dense_0' by 3 times their "
            "own norm (1 of 2 layers over 1x): the steps are far too large and "
            "training is unstable."
        )
        assert found[0].fix == FIXES[F.EXPLODING_GRADIENTS]
        # The watch ended: the loss diverging next is not a second finding.
        assert run(rules, after_a_rate_jump([5.0] * 3, [9.0] * 3)[9:]) == []

    def test_large_updates_with_the_loss_up(self):
        # Step 7: no layer over 1x, but the median update is 0.35 of the
        # weights (>= 0.1) with the loss 4 >= 1 + (3 - 1) * 1 (its level
        # before the jump) and > 1 (where training began).
        rules = HealthRules(mlp(["relu"]))
        seq = after_a_rate_jump([], [])
        seq.append(recording(7, [1e-2, 1e-2], update_ratio=[0.5, 0.2], loss=4.0))
        found = run(rules, seq)
        assert modes(found) == [(F.EXPLODING_GRADIENTS, "dense_0", 7)]
        assert found[0].value == 0.5
        assert found[0].message == (
            "The learning rate jumped from 0.01 to 10 at step 6, and at step 7 "
            "the loss was 4 (its level before the jump 1) while the median "
            "layer's update changed its weights by 0.35 of their norm (up to "
            "0.5, layer 'dense_0'; healthy steps change about 0.001): the "
            "steps are far too large and training is unstable."
        )

    @pytest.mark.parametrize(
        "ratios, loss", [([0.5, 0.2], 2.9), ([0.08, 0.05], 4.0)], ids=["loss", "median"]
    )
    def test_large_updates_need_the_loss_up_and_most_layers(self, ratios, loss):
        # 2.9 < 1 + (3 - 1) * 1; a median update of 0.065 < 0.1.
        rules = HealthRules(mlp(["relu"]))
        seq = after_a_rate_jump([], [])
        seq.append(recording(7, [1e-2, 1e-2], update_ratio=ratios, loss=loss))
        assert run(rules, seq) == []

    def test_the_loss_after_the_update(self):
        # A step's loss is of the weights before its update. Measured (round
        # 10, JAX): a cosine-similarity regressor (loss -0.93) whose SGD rate
        # jumped 0.1 -> 50 at step 65: that step's update moved the output
        # layer 1.08x its norm with its loss still -0.93; the next step's
        # loss -0.097 (training undone), its updates 0.42-0.71x. Here step
        # 7's update is 1.5x with the loss at its level (-1 before the
        # jump), step 8's loss -0.1 >= -1 + 0.1 x 1: reported at step 8,
        # naming step 7.
        found = self._oversized_then(-0.1)
        assert modes(found) == [(F.EXPLODING_GRADIENTS, "dense_1", 7)]
        assert found[0].value == 1.5
        assert found[0].message == (
            "The learning rate jumped from 0.01 to 10 at step 6, and the update "
            "of step 7 changed the weights of layer 'dense_1' by 1.5 times their "
            "own norm; the loss rose from -1 to -0.1 after it (step 8): the "
            "steps are far too large and training is unstable."
        )

    def test_the_loss_after_the_update_must_rise(self):
        # Step 8's loss -0.95 < -1 + 0.1 x 1: the update did not throw it.
        assert self._oversized_then(-0.95) == []

    @staticmethod
    def _oversized_then(loss):
        """Steps 0-6 at loss -1 (the rate 0.01, then 10 from step 6); step
        7's update 1.5x dense_1's weights with its loss still -1 (nothing
        found), step 8's updates under 1x and its loss `loss`: the findings
        of step 8."""
        rules = HealthRules(mlp(["relu"]))
        seq = [event(s, 1.0, lr=0.01, loss=-1.0) for s in range(6)]
        seq.append(event(6, 1.0, lr=10.0, loss=-1.0))
        seq.append(recording(7, [1e-2, 1e-2], update_ratio=[0.5, 1.5], loss=-1.0))
        assert run(rules, seq) == []
        step8 = recording(8, [1e-2, 1e-2], update_ratio=[0.4, 0.7], loss=loss)
        return run(rules, [step8])

    def test_the_loss_of_another_optimizer(self):
        # A GAN whose generator's rate jumped (0.05 -> 50 at step 6, the
        # second of the step's two rates): the loss known is the
        # discriminator's, which fell (1 -> 0.5) while the generator's
        # update moved dense_1 1.5x its norm: reported at once (measured on
        # `generator_jump_fit`'s GAN, TensorFlow: the generator's layers
        # moved 0.67-1.04x their norms a step, the discriminator's loss
        # 0.24 -> 0.11).
        rules = HealthRules(mlp(["relu"]))
        seq = [
            SentinelEvent(s, 1.0, False, None, 0.1, 1.0, learning_rates=(0.1, g))
            for s, g in enumerate([0.05] * 6 + [50.0])
        ]
        seq.append(recording(7, [1e-2, 1e-2], update_ratio=[0.5, 1.5], loss=0.5))
        found = run(rules, seq)
        assert modes(found) == [(F.EXPLODING_GRADIENTS, "dense_1", 7)]
        assert found[0].message.startswith(
            "The learning rate jumped from 0.05 to 50 at step 6, and the update "
            "of step 7 changed the weights of layer 'dense_1' by 1.5 times their "
            "own norm (1 of 2 layers over 1x)"
        )

    @pytest.mark.parametrize(
        "rate, at, ratio, loss",
        [
            (10.0, 17, 3.0, 1.0),
            (1e-4, 8, 3.0, 1.0),
            (10.0, 8, 1.0, 1.0),
            (10.0, 8, 20.0, 1.05),
        ],
        ids=["after_the_window", "rate_down", "at_the_limit", "loss_not_up"],
    )
    def test_not_reported_at_once(self, rate, at, ratio, loss):
        # Step 17 is past the 10 steps watched after step 6. The last: a
        # layer whose weights were near 0 (a zero-initialised normalization
        # scale) moved 20x their norm, but the loss is 1.05 < 1.1 x its
        # level of 1 before the jump: healthy.
        rules = HealthRules(mlp(["relu"]))
        seq = after_a_rate_jump([1.0] * (at - 7), [1.0] * (at - 7), rate)
        ratios = [ratio, 0.05]
        seq.append(
            recording(
                at, [1e-2, 1e-2], update_ratio=ratios, learning_rate=rate, loss=loss
            )
        )
        assert run(rules, seq) == []


class TestThrownByOneUpdate:
    """One update larger than the weights after which the loss stays 3x
    where training began (`UpdateRules._thrown`). Measured (`/tmp` probe,
    TensorFlow): a tanh MLP (two `Dense(64)`, 4 classes, batch 32) under
    Adam at lr 1.0: the first update moved every weight by about the rate,
    6.8x, 8.0x and 5.7x the layers' norms, the next ones under 1x; the
    loss 1.79 at step 0, then 7.45, 14.9, 15.5, 10.6, 18.4, 11.7; the
    hidden units 84-95% in the flat tails; accuracy 0.54 after 256 steps
    (0.87 at lr 0.05). Nothing named the step size before."""

    RATIOS = [[6.77, 7.99, 5.69], [0.72, 0.72, 0.71], [0.43, 0.41, 0.36]]
    RATIOS += [[0.3, 0.27, 0.3], [0.23, 0.2, 0.24], [0.18, 0.16, 0.19]]
    RATIOS += [[0.16, 0.14, 0.18]]
    LOSSES = [1.79, 7.45, 14.9, 15.5, 10.6, 18.4, 11.7]

    def _run(self, losses=LOSSES, ratios=RATIOS):
        rules = HealthRules(mlp(["tanh", "tanh"]))
        out = []
        for step, (loss, ratio) in enumerate(zip(losses, ratios)):
            stats = recording(step, [1e-2] * 3, update_ratio=ratio, loss=loss)
            out.append([(f.mode, f.layer, f.step) for f in rules.observe(stats)])
        return out, rules

    def test_the_measured_run(self):
        # Step 0's largest update, dense_1's 7.99 > 1; the losses of steps
        # 1-5 each >= 1.79 + (3 - 1) * 1.79 = 5.37: 5 recordings over the 5
        # steps after it (`patience` 3, `patience_steps` 5), reported at 5.
        out, rules = self._run()
        assert out == [[]] * 5 + [[(F.EXPLODING_GRADIENTS, "dense_1", 0)]] + [[]]
        (finding,) = rules.findings
        assert finding.value == 7.99
        assert finding.message == (
            "The update of step 0 changed the weights of layer 'dense_1' by "
            "7.99 times their own norm, and the loss has stayed at 7.45-18.4 "
            "since (steps 1-5; 1.79 where training began): the steps are far "
            "too large and training is unstable."
        )
        assert finding.fix == FIXES[F.EXPLODING_GRADIENTS]

    @pytest.mark.parametrize(
        "losses",
        [
            # Back at step 3: one bad batch's update, not a model thrown off.
            [1.79, 7.45, 14.9, 1.6, 10.6, 18.4, 11.7],
            # Up 1.8x at step 4: under `_THROWN_HELD` 2 x 1.79 = 3.58.
            [1.79, 7.45, 14.9, 15.5, 3.2, 18.4, 11.7],
            # Under 3x at the first two recordings after it: the first may
            # find the loss still rising (`test_the_loss_still_rising_after_
            # it`), one wait only.
            [1.04, 3.06, 3.0, 8.38, 6.87, 7.51, 9.05],
            # Under where training began at the first: no wait.
            [1.04, 1.0, 7.84, 8.38, 6.87, 7.51, 9.05],
        ],
        ids=["came_back", "under_2x", "twice_under_3x", "fell_first"],
    )
    def test_not_while_the_loss_does_not_stay_up(self, losses):
        out, _ = self._run(losses)
        assert out == [[]] * 7

    def test_a_dip_under_3x_neither_counts_nor_ends_it(self):
        # Probed (seed shift 23 of `thrown_tanh_adam`, JAX): the loss 1.41
        # at step 0, then 7.44, 4.2, 5.05, 7.8, 7.19. Step 2's 4.2 is 2.97x
        # (under 3x, over `_THROWN_HELD` 2x): not counted, the watch goes
        # on; steps 1, 3, 4 and 5 count (`patience` 3 or more), over the 5
        # steps 1-5 (`patience_steps`): reported at 5, the dip within the
        # range told.
        losses = [1.41, 7.44, 4.2, 5.05, 7.8, 7.19, 7.05]
        out, rules = self._run(losses)
        assert out == [[]] * 5 + [[(F.EXPLODING_GRADIENTS, "dense_1", 0)]] + [[]]
        assert rules.findings[0].message.startswith(
            "The update of step 0 changed the weights of layer 'dense_1' by "
            "7.99 times their own norm, and the loss has stayed at 4.2-7.8 "
            "since (steps 1-5; 1.41 where training began)"
        )

    def test_the_loss_still_rising_after_it(self):
        # Probed (seed 1 of `thrown_tanh_adam`, JAX): the loss 1.04 at step
        # 0, 3.06 after the update of step 0 (2.9x: not yet 3x), then
        # 7.84-9.05. Step 1 waits; the streak holds from step 2, 5 steps
        # (`patience_steps`) at step 6.
        losses = [1.04, 3.06, 7.84, 8.38, 6.87, 7.51, 9.05]
        out, rules = self._run(losses)
        assert out == [[]] * 6 + [[(F.EXPLODING_GRADIENTS, "dense_1", 0)]]
        assert rules.findings[0].message.startswith(
            "The update of step 0 changed the weights of layer 'dense_1' by "
            "7.99 times their own norm, and the loss has stayed at 6.87-9.05 "
            "since (steps 2-6; 1.04 where training began)"
        )

    def test_not_for_a_loss_that_starts_at_or_under_zero(self):
        # A loss of -0.1 at first and 0.5-3 after: 3x nothing.
        losses = [-0.1, 0.5, 1.0, 2.0, 3.0, 1.5, 1.0]
        out, _ = self._run(losses)
        assert out == [[]] * 7

    def test_not_without_an_update_over_the_weights(self):
        # The largest update 0.99x: a loss this high is not told by it.
        ratios = [[0.99, 0.9, 0.9], *self.RATIOS[1:]]
        out, _ = self._run(ratios=ratios)
        assert out == [[]] * 7

    def test_a_later_update_starts_the_watch_again(self):
        # Step 1's update is the one over 1x: the losses of steps 2-6 stay
        # up; reported at 6, naming step 1.
        ratios = [[0.5, 0.5, 0.5], [1.5, 2.5, 0.5], *self.RATIOS[2:]]
        out, _ = self._run(ratios=ratios)
        assert out == [[]] * 6 + [[(F.EXPLODING_GRADIENTS, "dense_1", 1)]]


class TestRunaway:
    """A global norm growing at each of two steps in a row with the loss
    rising at both (`NormRules._runaway`). Measured (round 10 probe, JAX):
    a Gaussian log-likelihood regressor (16-64-64-2, ReLU) fitted with Adam
    to a loss of -1.55, then trained on with SGD at 0.01 and momentum 0.9:
    the norm 16.9, 181 and 1650 at steps 0-2, the loss -1.34, 4.29 and 233,
    the update of step 2 1.56x, 1.15x and 3.6x the layers' norms; then the
    loss at 4-11 for good and half of a layer dead. Its first report was
    that dead layer, at step 16. The early baseline held the growing steps
    themselves: no step was 100x over it."""

    NORMS = [16.9, 181.0, 1650.0]
    LOSSES = [-1.34, 4.29, 233.0]
    RATIOS = [[0.0198, 0.0105, 0.037], [0.11, 0.0894, 0.565], [1.56, 1.15, 3.6]]

    def _run(self, norms=NORMS, losses=LOSSES, ratios=RATIOS, steps=(0, 1, 2)):
        rules = HealthRules(mlp(["relu", "relu"], output="linear"))
        if steps[0]:
            # Steps before at norm 1 and loss 1 (the early baseline).
            run(rules, [event(s, 1.0, 0.01, loss=1.0) for s in range(steps[0])])
        out = []
        for step, norm, loss, ratio in zip(steps, norms, losses, ratios):
            seq = [event(step, norm, 0.01, loss=loss)]
            if ratio is not None:
                seq.append(
                    recording(
                        step,
                        [1e-2] * 3,
                        loss=loss,
                        global_norm=norm,
                        learning_rate=0.01,
                        update_ratio=ratio,
                        weight_norm=[5.3, 8.9, 2.6],
                    )
                )
            out.append(modes(run(rules, seq)))
        return out, rules

    @pytest.mark.parametrize("offset", [0.0, 3.0])
    def test_the_measured_run(self, offset):
        # 181 / 16.9 = 10.7x and 1650 / 181 = 9.1x, both over sqrt(10) =
        # 3.16x: told with step 2's updates, 3 of 3 layers over 1x. A
        # constant added to the loss changes nothing.
        losses = [loss + offset for loss in self.LOSSES]
        out, rules = self._run(losses=losses)
        assert out == [[], [], [(F.EXPLODING_GRADIENTS, None, 1)]]
        (finding,) = rules.findings
        assert finding.value == 1650.0
        assert finding.message == (
            "The global gradient norm grew 10.7x at step 1 and 9.12x at step 2 "
            f"(16.9, 181, 1.65e+03) while the loss rose ({losses[0]:.3g}, "
            f"{losses[1]:.3g}, {losses[2]:.3g}), and the update of step 2 "
            "changed 3 of 3 layers by more than 1x their own norm (up to 3.6x): "
            "each step makes the next larger; the gradients are exploding and "
            "training diverges."
        )
        assert finding.fix == FIXES[F.EXPLODING_GRADIENTS]

    @pytest.mark.parametrize(
        "norms, losses, ratios",
        [
            # Measured (TF): a fitted classifier fed a new task in a
            # time-ordered stream under SGD at 0.01, its updates 0.3-0.7% of
            # the weights: healthy, it learns the new task.
            ([0.0563, 0.783, 11.4], [0.00109, 0.0131, 11.3], [None] * 3),
            ([0.0563, 0.783, 11.4], [0.00109, 0.0131, 11.3], [[0.005] * 3] * 3),
            # A converged classifier whose loss on most batches is exactly 0,
            # fed inputs that drift (TF; steps 141-143 of a run): healthy.
            ([1.13e-10, 2.92e-6, 5.37], [0.0, 2.98e-8, 0.572], [[0.001] * 3] * 3),
            # A fitted bfloat16 transformer (TF): one batch's loss 0.093
            # among 0.003-0.01, back at once; 11 other such jumps in its run.
            ([0.049, 0.72, 11.7], [0.0033, 0.006, 0.093], [[0.001] * 3] * 3),
        ],
        ids=["new_task_unrecorded", "new_task", "zero_loss", "bf16_transformer"],
    )
    def test_not_from_the_norms_and_losses_alone(self, norms, losses, ratios):
        # However fast: batches unlike the last ones grow them too.
        out, _ = self._run(norms, losses, ratios, steps=(141, 142, 143))
        assert out == [[]] * 3

    @pytest.mark.parametrize(
        "norms, losses, ratios, steps",
        [
            # Step 2's updates over 1x in 1 of 3 layers only.
            (NORMS, LOSSES, [*RATIOS[:2], [0.5, 0.6, 3.6]], (0, 1, 2)),
            # Without a recording of step 2.
            (NORMS, LOSSES, [*RATIOS[:2], None], (0, 1, 2)),
            # The loss fell at step 2.
            (NORMS, [-1.34, 4.29, 4.0], RATIOS, (0, 1, 2)),
            # 3x at step 2: under sqrt(10) = 3.16x.
            (NORMS[:2] + [543.0], LOSSES, RATIOS, (0, 1, 2)),
            # Steps 0, 1 and 3: not in a row.
            (NORMS, LOSSES, RATIOS, (0, 1, 3)),
        ],
        ids=["few_layers", "unrecorded", "loss_fell", "slower", "apart"],
    )
    def test_not_without_every_sign(self, norms, losses, ratios, steps):
        out, _ = self._run(norms, losses, ratios, steps)
        assert out == [[]] * 3


class TestWeightsGrownAcrossARateJump:
    """The jumped step itself need not be recorded: when the update at the
    new rate saturated the output, every gradient after it is exactly 0
    (JAX's cross-entropy of probabilities) and no later update is over the
    limit, but the weights' norm grew across it (`tests/scenarios/cases.py`
    `zero_gradients` on JAX: recordings at steps 15 and 17 around the jump
    to lr 50 at 16, the last hidden layer's norm 2.32 -> 9.66, the loss 1.09
    -> 11.1)."""

    def _seq(self, before, after, loss, mark_step=5):
        rules = HealthRules(mlp(["relu"]))
        seq = [event(s, 1.0, lr=0.01, loss=1.0) for s in range(mark_step)]
        seq.append(
            recording(
                mark_step,
                [1e-2, 1e-2],
                update_ratio=[0.01, 0.01],
                weight_norm=before,
                learning_rate=0.01,
            )
        )
        seq += [event(s, 1.0, lr=0.01, loss=1.0) for s in range(mark_step + 1, 6)]
        seq.append(event(6, 1.0, lr=10.0, loss=1.0))
        seq.append(
            recording(
                7,
                [0.0, 0.0],
                update_ratio=[0.0, 0.0],
                weight_norm=after,
                learning_rate=10.0,
                loss=loss,
            )
        )
        return rules, seq

    def test_reported_at_the_first_recording_after_the_jump(self):
        # dense_1 grew (9.66 - 2.32) / 2.32 = 3.16 times its norm > 1; dense_0
        # (13.8 - 5.1) / 5.1 = 1.71; the loss 11.1 >= 1 + (3 - 1) * 1 (its
        # level before the jump) and > 1 (where training began).
        rules, seq = self._seq([5.1, 2.32], [13.8, 9.66], 11.1)
        found = run(rules, seq)
        assert modes(found) == [(F.EXPLODING_GRADIENTS, "dense_1", 6)]
        assert found[0].value == pytest.approx((9.66 - 2.32) / 2.32)
        assert found[0].message == (
            "The learning rate jumped from 0.01 to 10 at step 6, and the weights "
            "of layer 'dense_1' grew from norm 2.32 (step 5) to 9.66 (step 7): "
            "the updates at the new rate changed them by at least 3.16 times "
            "their own norm, and the loss rose from 1 to 11.1: the steps are far "
            "too large and training is unstable."
        )
        assert found[0].fix == FIXES[F.EXPLODING_GRADIENTS]

    @pytest.mark.parametrize(
        "after, loss",
        [([10.0, 4.6], 11.1), ([13.8, 9.66], 2.9), ([13.8, 9.66], None)],
        ids=["at_the_limit", "loss_not_up", "loss_unknown"],
    )
    def test_not_reported(self, after, loss):
        # (10 - 5) / 5 = 1 and (4.6 - 2.3) / 2.3 = 1: not over the limit of 1x;
        # the weights grown with the loss 2.9 < 3 x its level (a layer that
        # starts near 0, as a zero-initialised scale, grows so), or with no
        # loss to tell.
        rules, seq = self._seq([5.0, 2.3], after, loss)
        assert run(rules, seq) == []

    @pytest.mark.parametrize(
        "first, reported",
        [([5.1, 2.32], True), ([2.0, 1.0], False)],
        ids=["settled", "grown_since_its_start"],
    )
    def test_with_no_loss_known(self, first, reported):
        # No loss at all (a GAN's custom `train_step` on JAX): the growth
        # alone tells it, of weights within 2x their first recorded norm
        # before the jump (dense_1: 2.32, grown 3.16x). Weights that grew
        # over 2x since their start before the jump (5.1 > 2 x 2.0, 2.32 >
        # 2 x 1.0) may be a layer initialised near 0: not judged so.
        rules = HealthRules(mlp(["relu"]))

        def weights(step, norms, lr):
            return recording(
                step,
                [1e-2, 1e-2],
                update_ratio=[0.01, 0.01],
                weight_norm=norms,
                learning_rate=lr,
                loss=None,
            )

        seq = [weights(0, first, 0.01)]
        seq += [event(s, 1.0, lr=0.01) for s in range(1, 5)]
        seq += [weights(5, [5.1, 2.32], 0.01), event(6, 1.0, lr=10.0)]
        seq.append(weights(7, [13.8, 9.66], 10.0))
        found = run(rules, seq)
        if not reported:
            assert found == []
            return
        assert modes(found) == [(F.EXPLODING_GRADIENTS, "dense_1", 6)]
        assert found[0].message == (
            "The learning rate jumped from 0.01 to 10 at step 6, and the weights "
            "of layer 'dense_1' grew from norm 2.32 (step 5) to 9.66 (step 7): "
            "the updates at the new rate changed them by at least 3.16 times "
            "their own norm: the steps are far too large and training is "
            "unstable."
        )

    def test_only_against_a_recording_before_the_jump(self):
        # The last recording before this one is at step 7, after the jump:
        # its norms already include the jumped update.
        rules, seq = self._seq([5.1, 2.32], [13.8, 9.66], 1.0)
        assert run(rules, seq) == []
        later = recording(
            8,
            [0.0, 0.0],
            update_ratio=[0.0, 0.0],
            weight_norm=[60.0, 40.0],
            learning_rate=10.0,
            loss=11.1,
        )
        assert run(rules, [later]) == []

    @pytest.mark.parametrize("peak", [11.1, 2.9], ids=["risen", "not_risen"])
    def test_the_loss_of_a_step_since_the_jump(self, peak):
        # Several steps per execution: the recording (step 9) comes after
        # Adam brought the loss back (1.2, under 3x its level 1), but the
        # every-step rows hold step 7's 11.1 (3 and 11.1 > 1 where training
        # began): reported at this recording, naming that step's loss. A
        # peak of 2.9 < 3 x 1 is no rise.
        rules, seq = self._seq([5.1, 2.32], [13.8, 9.66], 1.2)
        last = seq.pop()
        seq += [
            event(7, 1.0, lr=10.0, loss=peak),
            event(8, 1.0, lr=10.0, loss=1.5),
            dataclasses.replace(last, step=9),
        ]
        found = run(rules, seq)
        if peak < 3:
            assert found == []
            return
        assert modes(found) == [(F.EXPLODING_GRADIENTS, "dense_1", 6)]
        assert (
            "the weights of layer 'dense_1' grew from norm 2.32 (step 5) to 9.66 "
            "(step 9): the updates at the new rate changed them by at least 3.16 "
            "times their own norm, and the loss rose from 1 to 11.1 (step 7): the "
            "steps are far too large"
        ) in found[0].message


class TestJumps:
    def test_norm_up(self):
        rules = HealthRules(mlp(["tanh"]))
        # 20 >= 10 * every recent norm (1; and <= limit 100); then 1 is back
        # at the recent median(1, 1, 1, 1, 1, 20) = 1.
        assert jumps(rules, events([1, 1, 1, 1, 1, 20, 1])) == [False] * 5 + [
            True,
            False,
        ]

    def test_norm_up_over_every_recent_norm_only(self):
        # Near convergence single batches often reach 10x the median: 8 is
        # 8x every recent norm (no jump); 50 is 50x the median but 6.25x
        # the recent peak 8 (no jump); 85 >= 10 * 8 is. All stay under the
        # explosion limit 100 x the early 1.
        rules = HealthRules(mlp(["tanh"]))
        assert jumps(rules, events([1, 1, 1, 1, 1, 8])) == [False] * 6
        # The alarm's high bound is 10 x the recent median 1 (squared): a
        # step that far over it is judged at once, its next steps' losses
        # watched (`_spike_thrown`), though it is no jump.
        assert rules.alarm_bounds()[1] == pytest.approx(10.0**2 / 1.001)
        assert jumps(rules, events([1, 50], start=6)) == [False, False]
        rules = HealthRules(mlp(["tanh"]))
        seq = events([1, 1, 1, 1, 1, 8, 1, 85])
        assert jumps(rules, seq) == [False] * 7 + [True]
        assert rules.findings == []

    def test_gradient_falling_to_zero(self):
        # A layer whose gradients become exactly 0 (its units died whole)
        # while the global norm stays level: a jump once, at the second
        # step in a row with more zero tensors than any two steps in a row
        # of the last 32 had. Pairs' smaller counts: 0 (steps 0-1), 1
        # (1-2): a jump at 2; 0, 0, 1 (4-5) no more than 1; 3 (5-6) a jump
        # at 6; 3, 2 none.
        rules = HealthRules(mlp(["relu", "relu"]))
        zeros = [0, 1, 1, 0, 1, 3, 3, 3, 2]
        seq = [
            SentinelEvent(s, 1.0, False, zero_gradients=z) for s, z in enumerate(zeros)
        ]
        expected = [False] * 9
        expected[2] = expected[6] = True
        assert jumps(rules, seq) == expected
        assert rules.findings == []
        assert rules.alarm_bounds()[4] == 3  # Quiet up to 3 zero tensors.
        # Quiet steps (`observe_quiet`) join the window: after 32 of them
        # with none zero, two steps with 1 are more than any recent pair.
        rules.observe_quiet([(s, 1.0, None, None, 0) for s in range(9, 41)])
        assert rules.alarm_bounds()[4] == 0
        seq = [SentinelEvent(s, 1.0, False, zero_gradients=1) for s in (41, 42)]
        assert jumps(rules, seq) == [False, True]

    def test_one_step_of_zero_gradients_is_no_jump(self):
        # An output head that fits a batch exactly (probabilities rounding
        # to 1) has exactly-zero gradients for that step only, every few
        # hundred steps late in a long run: no jump, however often (each
        # step alone is judged, the bound staying at 0); two such steps in
        # a row are (the count 2 then joins the level).
        rules = HealthRules(mlp(["relu", "relu"]))
        zeros = [0, 0, 2, 0, 0, 2, 0, 2, 0, 2, 2, 0, 2, 2]
        seq = [
            SentinelEvent(s, 1.0, False, zero_gradients=z) for s, z in enumerate(zeros)
        ]
        assert jumps(rules, seq[:10]) == [False] * 10
        assert rules.alarm_bounds()[4] == 0
        assert jumps(rules, seq[10:]) == [True, False, False, False]
        assert rules.alarm_bounds()[4] == 2

    def test_units_falling_silent(self):
        # Silent units (bias elements exactly 0): a jump when a step has a
        # quarter more than the most of the last 32 steps, and at least 2
        # more; or, once 32 steps set the level, an eighth (at least 2) more
        # than the last record. 32 steps of 3 to 5 (3, the first, is the
        # first record); then 7: no quarter over 5, but over 3 + 2, a new
        # record (a hard jump).
        rules = HealthRules(mlp(["relu", "relu"]))
        seq = [SentinelEvent(s, 1.0, False, silent_units=3 + s % 3) for s in range(32)]
        assert jumps(rules, seq) == [False] * 32
        assert jumps(rules, [SentinelEvent(32, 1.0, False, silent_units=7)]) == [True]
        assert not rules.jump_noisy
        assert rules.alarm_bounds()[5] == 9.0  # 7 + max(2, 7 / 4)
        # A spike of 20 (a record), then 32 steps of 3 to 5: the window
        # forgets the spike. 8 is over 5 + 2 but no record (over 20 + 2.5
        # is): a noisy jump (small batches make the count spiky).
        run(rules, [SentinelEvent(33, 1.0, False, silent_units=20)])
        rules.observe_quiet([(s, 1.0, None, None, 0, 3 + s % 3) for s in range(34, 66)])
        assert rules.alarm_bounds()[5] == 7.0  # 5 + 2, under 20 + 2.5
        assert jumps(rules, [SentinelEvent(66, 1.0, False, silent_units=8)]) == [True]
        assert rules.jump_noisy
        assert rules.findings == []

    def test_units_falling_silent_a_few_at_a_time(self):
        # One more silent unit every step, 0 to 60: never 2 more than the
        # most of the recent steps. Records by an eighth (at least 2) are
        # set at 3, 6, ..., 24, 28 but are no jump in the first 32 steps
        # (the counts rise as training starts); then each jumps: 32 > 28 +
        # 3.5, 37 > 32 + 4, 42 > 37 + 4.625, 48 > 42 + 5.25, 55 > 48 + 6;
        # hard jumps all.
        rules = HealthRules(mlp(["relu", "relu"]))
        hard = []
        for n in range(61):
            run(rules, [SentinelEvent(n, 1.0, False, silent_units=n)])
            if rules.jumped:
                hard.append((n, not rules.jump_noisy))
        assert hard == [(n, True) for n in (32, 37, 42, 48, 55)]
        assert rules.findings == []

    def test_hard_and_noisy_jumps(self):
        # The learning rate, the start of an explosion and a gradient
        # tensor falling to 0 are hard jumps; the norm's level is noisy.
        rules = HealthRules(mlp(["relu", "relu"]))
        run(rules, events([1, 1, 1, 1, 1]))
        run(rules, [event(5, 20.0)])  # 20 >= 10 x every recent norm.
        assert rules.jumped and rules.jump_noisy
        run(rules, [event(6, 1.0, 1e-3), event(7, 1.0, 1e-2)])  # Rate x10.
        assert rules.jumped and not rules.jump_noisy
        zeros = [SentinelEvent(s, 1.0, False, zero_gradients=1) for s in (8, 9)]
        run(rules, zeros)  # Two steps in a row.
        assert rules.jumped and not rules.jump_noisy
        run(rules, [event(10, 500.0)])  # Over the limit (100 x early 1).
        assert rules.jumped and not rules.jump_noisy

    def test_a_quiet_step_says_nothing_of_its_layers(self):
        # A step far below the recent norm (a batch the model gets right:
        # its small gradients underflow to 0 in float16) is no jump and
        # leaves the silent counts alone; a level step with the same counts
        # jumps at once, on its silent units and on its zero tensors (the
        # second step in a row with them: a quiet step's count); the next
        # one is no new jump.
        rules = HealthRules(mlp(["relu", "relu"]))
        run(rules, events([1, 1, 1, 1, 1]))
        quiet = SentinelEvent(5, 0.05, False, zero_gradients=4, silent_units=128)
        assert jumps(rules, [quiet]) == [False]
        assert rules.alarm_bounds()[4:6] == (0, 2.0)
        level = [
            SentinelEvent(s, 1.0, False, zero_gradients=4, silent_units=128)
            for s in (6, 7)
        ]
        assert jumps(rules, level) == [True, False]
        assert rules.alarm_bounds()[4] == 4

    def test_zero_tensors_two_quiet_steps_in_a_row_jump(self):
        # Two steps 50x below the recent norm, each with 11 gradient tensors
        # exactly 0 (a probe: a GAN's discriminator whose ReLU layers died
        # at once): the second is a hard jump (not rate-limited); their
        # silent units are left out (no noisy jump on the first).
        rules = HealthRules(mlp(["relu", "relu"]))
        run(rules, events([1, 1, 1, 1, 1]))
        quiet = [
            SentinelEvent(s, 0.02, False, zero_gradients=11, silent_units=130)
            for s in (5, 6)
        ]
        assert jumps(rules, quiet) == [False, True]
        assert not rules.jump_noisy

    def test_norm_down_for_three_steps(self):
        rules = HealthRules(mlp(["tanh"]))
        # 0.05 * 10 = 0.5 <= the recent median 1 (the 0.05s stay a minority
        # of median(1 x 5, 0.05 x 3) = 1): one quiet batch is no jump, the
        # third in a row is (once; the fourth is not a new jump).
        seq = events([1, 1, 1, 1, 1, 0.05, 0.05, 0.05, 0.05])
        assert jumps(rules, seq) == [False] * 7 + [True, False]

    def test_interrupted_drop_is_no_jump(self):
        rules = HealthRules(mlp(["tanh"]))
        seq = events([1, 1, 1, 1, 1, 0.05, 0.05, 1, 0.05, 0.05, 1])
        assert jumps(rules, seq) == [False] * 11

    def test_small_changes_are_no_jump(self):
        rules = HealthRules(mlp(["tanh"]))
        # 5 < 10 * 1; then 0.2 * 10 = 2 > median(1, 1, 1, 1, 1, 5) = 1.
        assert jumps(rules, events([1, 1, 1, 1, 1, 5, 0.2])) == [False] * 7

    def test_start_of_an_explosion(self):
        rules = HealthRules(mlp(["tanh"]))
        # 500 starts a streak over the limit (count 1); the second is not a
        # new jump.
        assert jumps(rules, events([1, 1, 1, 1, 1, 500, 500])) == [False] * 5 + [
            True,
            False,
        ]

    def test_learning_rate_from_steps(self):
        rules = HealthRules(mlp(["tanh"]))
        rates = [1e-3, 1e-3, 2e-2, 2e-2, 1e-3, 5e-3, 4e-3]
        seq = [event(s, 1.0, lr) for s, lr in enumerate(rates)]
        # 2e-2 >= 10 * 1e-3 (up); 1e-3 * 10 <= 2e-2 (down); 5e-3 is 5x.
        assert jumps(rules, seq) == [False, False, True, False, True, False, False]

    def test_learning_rate_from_recordings(self):
        rules = HealthRules(mlp(["tanh"]))
        seq = [
            recording(s, [1e-2, 1e-2], learning_rate=lr)
            for s, lr in enumerate([1e-3, 1e-2, 1e-2])
        ]
        assert jumps(rules, seq) == [False, True, False]

    def test_learning_rate_from_zero_or_unknown(self):
        # A warm-up from 0 has no factor; an unknown rate is no change.
        rules = HealthRules(mlp(["tanh"]))
        rates = [0.0, 1e-3, 0.0, None, 1e-3, 1e-3]
        seq = [event(s, 1.0, lr) for s, lr in enumerate(rates)]
        assert jumps(rules, seq) == [False] * 6

    def test_loss_up(self):
        # The loss 3x its recent median (1) two steps in a row, the norm
        # level: a noisy jump of the loss's own (weights thrown into
        # saturation pass little gradient; measured, a tanh MLP whose
        # kernels grew 20x: the loss 0.10 -> 0.42 from then on, the norm a
        # few times). One such step (a hard batch), or one under 3x (2.9),
        # is none. The alarm's loss bound is just under 3x the level (and a
        # quarter of where training began): each such step is judged at
        # once.
        rules = HealthRules(mlp(["tanh"]))
        seq = [event(s, 1.0, loss=1.0) for s in range(6)]
        assert jumps(rules, seq) == [False] * 6
        assert rules.alarm_bounds()[6] == pytest.approx(3.0 / 1.001)
        losses = [3.0, 1.0, 3.0, 2.9, 3.0, 3.2, 3.1]
        seq = [event(6 + i, 1.0, loss=v) for i, v in enumerate(losses)]
        assert jumps(rules, seq) == [False] * 5 + [True, False]
        rules = HealthRules(mlp(["tanh"]))
        run(rules, [event(s, 1.0, loss=1.0) for s in range(6)])
        assert jumps(rules, [event(6, 1.0, loss=3.0), event(7, 1.0, loss=3.0)]) == [
            False,
            True,
        ]
        assert rules.jump_noisy and rules.loss_jumped
        # A quiet step between two high ones ends the run.
        rules.observe_quiet([(8, 1.0, None, 1.0)])
        assert jumps(rules, [event(9, 1.0, loss=3.0)]) == [False]
        # A fitted model (1 where training began, 0.01 lately): 0.2, 20x its
        # level twice, is under a quarter of where training began, its
        # bound: no jump; 0.3 is.
        rules = HealthRules(mlp(["tanh"]))
        run(rules, [event(s, 1.0, loss=1.0 if s < 3 else 0.01) for s in range(40)])
        assert rules.alarm_bounds()[6] == pytest.approx(0.25 / 1.001)
        seq = [event(40 + i, 1.0, loss=v) for i, v in enumerate([0.2, 0.2, 0.3, 0.3])]
        assert jumps(rules, seq) == [False, False, False, True]
        # No positive level (a loss not known, or a negative one): no bound.
        rules = HealthRules(mlp(["tanh"]))
        run(rules, [event(s, 1.0, loss=-0.9) for s in range(6)])
        assert rules.alarm_bounds()[6] == math.inf

    def test_learning_rate_of_any_optimizer_of_the_step(self):
        # A GAN's step applies the discriminator's optimizer (0.1, the
        # step's own rate) and the generator's (0.05): the generator's
        # jumping to 50 (1000x >= 10) is a jump, noted with its own rates;
        # the discriminator's staying put is not.
        rules = HealthRules(mlp(["tanh"]))
        seq = [
            SentinelEvent(s, 1.0, False, None, 0.1, 1.0, learning_rates=(0.1, g))
            for s, g in enumerate([0.05] * 6 + [50.0, 50.0])
        ]
        assert jumps(rules, seq[:6]) == [False] * 6
        # The alarm holds the product of the rates, 0.1 * 0.05 = 0.005, to
        # within 10x (just inside): a jump of either leaves the bounds.
        low, high = rules.alarm_bounds()[2:4]
        assert (low, high) == pytest.approx((0.0005 * 1.001, 0.05 / 1.001))
        assert jumps(rules, seq[6:]) == [True, False]
        assert rules._rate_change == (6, 0.05, 50.0, 1.0)
        # Its loss is the discriminator's (the step's first): watched as
        # not its own.
        assert rules._watch.rates == (0.05, 50.0)
        assert not rules._watch.own_loss

    def test_learning_rates_of_quiet_steps_and_overflows(self):
        # Quiet steps (`observe_quiet`) and skipped overflows note the
        # rates too: the jump is against the last of them. A count of
        # rates that changed (another optimizer applied) is no jump.
        rules = HealthRules(mlp(["tanh"]))
        rules.observe_quiet([(s, 1.0, 0.1, 1.0, 0, 0, (0.1, 0.05)) for s in range(5)])
        rules.observe_overflow(5, 0.1, 1.0, (0.1, 0.05))
        assert not rules.jumped
        rules.observe_overflow(6, 0.1, 1.0, (0.1, 0.5))
        assert rules.jumped and rules._rate_change[:3] == (6, 0.05, 0.5)
        assert jumps(
            rules, [SentinelEvent(7, 1.0, False, None, 0.1, 1.0, 0, 0, (9.0,))]
        ) == [False]

    def test_jump_survives_the_recording_of_its_step(self):
        rules = HealthRules(mlp(["tanh"]))
        run(rules, events([1, 1, 1, 1, 1, 20]))
        assert rules.jumped
        rules.observe(recording(5, [1e-2, 1e-2], global_norm=20.0))
        assert rules.jumped


def dead_run(
    activity, steps, batch_size=32, activations=("relu", "relu"), activation_steps=1
):
    """Recordings of an MLP whose hidden layers have this unit activity (a
    pair of per-unit lists, or a function of the step giving the pair)."""
    seq = []
    for s in steps:
        pair = activity(s) if callable(activity) else activity
        seq.append(
            recording(
                s,
                RELU_RMS[:3],
                batch_size=batch_size,
                activation_steps=activation_steps,
                unit_activity=[*pair, None],
            )
        )
    return HealthRules(mlp(list(activations))), seq


# dense_0: 1 of 4 units dead (0.25 < 0.5); dense_1: 3 of 4 dead (0.75).
ACTIVITY = ([5, 9, 3, 0], [0, 0, 0, 7])


def half_dead_by_flow(steps, flow):
    """The one finding of `dead_run(ACTIVITY, steps)` with `flow` as the
    last recording's `unit_flow` of dense_1, half of whose units it finds
    dead from the first step."""
    rules, seq = dead_run(ACTIVITY, steps)
    seq[-1].layers[1].unit_flow = flow
    found = run(rules, seq)
    assert modes(found) == [(F.DEAD_RELU, "dense_1", steps[0])]
    assert found[0].value == 0.5
    return found[0]


def settling_run(
    loss,
    rate=lambda s: None,
    first=None,
    back=40,
    steps=70,
    again=None,
    dying=ACTIVITY,
    dies=1,
    weight_decay=None,
    kept=None,
    weights=None,
    batch=32,
    per=1,
    uninformed=None,
    activation="relu",
    gate=None,
):
    """Steps 0 to `steps - 1` of an MLP, each a step event (norm 1, learning rate
    `rate(s)`, loss `loss(s)`) and a recording of `batch` samples (with
    `per` steps per execution, only its last step recorded, with the
    activity of its `per` batches): the hidden layers all active on step
    0's batch (or as `first`) and to step `dies`, then as `dying`
    (`ACTIVITY`: 3 of dense_1's 4 units inactive) until step `back` (None:
    to the end), all active after, and as `dying` again from step `again`
    (if any); the optimizer's `weight_decay`; `weights(s)`, the three
    layers' weight norms (None: not recorded); the loss of knowing nothing
    `uninformed` (None: not known); the hidden layers' `activation`;
    dense_1's `LayerInfo.gate`.
    Returns (mode, layer,
    finding step, step at which it was reported) for each finding (the
    findings themselves appended to `kept`)."""
    layers = mlp([activation, activation])
    layers[1].gate = gate
    rules = HealthRules(layers)
    rules.weight_decay = weight_decay
    rules.execution_steps = per
    rules.uninformed_loss = uninformed
    alive = ([1] * 4, [1] * 4)
    found = []
    for s in range(steps):
        if s == 0:
            pair = first or alive
        else:
            dead = s >= dies and (back is None or s < back)
            dead = dead or (again is not None and s >= again)
            pair = dying if dead else alive
        items = [event(s, 1.0, rate(s), loss=loss(s))]
        if s % per == per - 1:
            items.append(
                recording(
                    s,
                    RELU_RMS[:3],
                    loss=loss(s),
                    learning_rate=rate(s),
                    batch_size=batch * per,
                    activation_steps=per,
                    unit_activity=[*pair, None],
                    weight_norm=[None] * 3 if weights is None else weights(s),
                )
            )
        new = run(rules, items)
        found += [(f.mode, f.layer, f.step, s) for f in new]
        if kept is not None:
            kept += new
    return found


def level(step):
    return 1.0


def _told_at_once(found, told, kept, ending, fix):
    """`settling_run`'s findings: dense_1's dead units reported at once
    (steps 1-5) with a message ending in `ending` and `fix`, when `told`;
    none otherwise (they may settle)."""
    if not told:
        assert found == []
        return
    assert found == [(F.DEAD_RELU, "dense_1", 1, 5)]
    assert kept[0].message.endswith(ending)
    assert kept[0].fix == fix


def off_from_start_run(steps, first, later, **step_fields) -> list[tuple]:
    """`(finding, step)` of a level run of `steps` steps of a ReLU MLP whose
    second layer's 4 units are active `first` on step 0's batch, `later`
    after (elements per unit; the first layer all active), every step
    recorded; `step_fields` (`input_scale`) go to every recording."""
    found = []
    rules = HealthRules(mlp(["relu", "relu"]))
    for s in range(steps):
        items = [
            event(s, 1.0, loss=1.0),
            recording(
                s,
                RELU_RMS[:3],
                loss=1.0,
                batch_size=32,
                unit_activity=[[1] * 4, first if s == 0 else later, None],
                **step_fields,
            ),
        ]
        found += [(f, s) for f in run(rules, items)]
    return found


class TestDeadRelu:
    @pytest.mark.parametrize("batch_size, reported", [(1, 4), (2, 31)])
    def test_behind_a_batch_normalization_of_single_values(self, batch_size, reported):
        # dense_1 is fed by a BatchNormalization of features (inputs of two
        # axes): on batches of 1 it outputs its offset, 0 at first, and
        # ReLU(0) = 0 on every sample (probed: Dense -> BatchNormalization ->
        # ReLU under batch_size=1, every gradient before it exactly 0). Its
        # 8 units inactive: on batches of 1 every sample gets the same
        # inputs, dead after `patience` recordings over `patience_steps`
        # (steps 0-4), named so; on batches of 2 the normalization is no
        # cause, and a whole layer needs 64 samples (steps 0-31).
        infos = mlp(["relu", "relu"])
        infos[1] = dataclasses.replace(infos[1], batch_normalized="norm")
        rules = HealthRules(infos)
        found = []
        for step in range(40):
            stats = recording(
                step,
                RELU_RMS[:3],
                batch_size=batch_size,
                unit_activity=[[1] * 8, [0] * 8, None],
            )
            found += [(f, step) for f in run(rules, [stats]) if f.mode == F.DEAD_RELU]
        ((finding, at),) = found
        assert (finding.layer, finding.step, at) == ("dense_1", 0, reported)
        single = "'norm', a BatchNormalization trained on batches of 1" in (
            finding.message
        )
        assert single == (batch_size == 1)
        assert (finding.fix == activation_rules._SINGLE_BATCH_FIX) == single

    @pytest.mark.parametrize("ratio, named", [(1.6, True), (0.9, False)])
    def test_dead_right_after_an_oversized_update(self, ratio, named):
        # All of dense_1's units active on step 0's batch, whose update
        # changes its weights by `ratio` times their norm; 3 of its 4 units
        # inactive on every batch after, the loss up from 1.0 to 2.0 (a
        # jump, so not settling). Over 1x, within `patience_steps` (5) of
        # the streak that begins at 1: named as the cause.
        rules = HealthRules(mlp(["relu", "relu"]))
        alive = [[1] * 4, [1] * 4, None]
        seq = [
            recording(
                0,
                RELU_RMS[:3],
                loss=1.0,
                batch_size=32,
                unit_activity=alive,
                update_ratio=[0.5, ratio, 0.5],
            )
        ]
        seq += [
            recording(
                s,
                RELU_RMS[:3],
                loss=2.0,
                batch_size=32,
                unit_activity=[*ACTIVITY, None],
                update_ratio=[0.1] * 3,
            )
            for s in range(1, 9)
        ]
        found = [f for f in run(rules, seq) if f.mode == F.DEAD_RELU]
        assert [(f.layer, f.step) for f in found] == [("dense_1", 1)]
        assert (
            found[0].message.endswith(
                " It follows the update of step 0, which changed the weights of layer "
                "'dense_1' by 1.6 times their own norm: a step far too large."
            )
            == named
        )
        assert found[0].fix == FIXES[F.DEAD_RELU]

    @staticmethod
    def _chain(first_dead: int, upstream: dict, per: int = 1):
        """dense_0 (`first_dead` of its 4 units inactive on each batch),
        dense_1 and dense_2 (all 4 inactive), each ReLU, with
        `LayerInfo.upstream` from `upstream`, recorded at steps 0-4 (or,
        with `per` steps an execution, once at its last step, with its
        batches): the dead-unit findings by layer."""
        layers = [
            dataclasses.replace(info, upstream=upstream.get(info.name, ()))
            for info in mlp(["relu", "relu", "relu"])
        ]
        rules = HealthRules(layers)
        rules.execution_steps = per
        first = [0] * first_dead + [3] * (4 - first_dead)
        steps = range(5) if per == 1 else [per - 1]
        seq = [
            recording(
                s,
                RELU_RMS,
                batch_size=32 * per,
                activation_steps=per,
                unit_activity=[first, [0] * 4, [0] * 4, None],
            )
            for s in steps
        ]
        return {f.layer: f for f in run(rules, seq) if f.mode == F.DEAD_RELU}

    def test_a_layer_cut_off_by_a_dead_one_names_it(self):
        # dense_1's inputs all come through dense_0, whose units are all
        # dead: its dead units are told as that layer's consequence, and
        # the fix names dense_0. dense_2 (no upstream known) as usual.
        found = self._chain(4, {"dense_1": ("dense_0",)})
        assert sorted(found) == ["dense_0", "dense_1", "dense_2"]
        assert found["dense_1"].message == (
            "100% of the units of layer 'dense_1' output zero for every one of "
            "the 128 samples of the last 4 recorded batches (steps 1-4), and its "
            "inputs all come through layer 'dense_0', whose units are all "
            "dead: it gets no signal from the data, and its units are dead as a "
            "consequence; they can only come back once those of layer "
            "'dense_0' do."
        )
        assert found["dense_1"].fix == (
            "Fix layer 'dense_0' first (see its own finding): this layer gets its "
            "inputs only through the dead units. If it is still dead after that: "
            "use Leaky ReLU (or ELU) instead of ReLU, lower the learning rate, "
            "and avoid large negative bias initialisation."
        )
        for layer in ("dense_0", "dense_2"):
            assert found[layer].fix == FIXES[F.DEAD_RELU]
            assert found[layer].message.endswith(
                ": these ReLU units are dead and get no gradient; they only "
                "come back if the layers before them change their inputs."
            )

    def test_a_chain_names_its_first_dead_layer(self):
        # dense_2 behind dense_1 behind dense_0, all dead: dense_2's
        # finding names dense_1 and, as the cause, dense_0.
        found = self._chain(4, {"dense_1": ("dense_0",), "dense_2": ("dense_1",)})
        assert found["dense_2"].message.endswith(
            "(steps 1-4), and its inputs all come through layer 'dense_1', whose "
            "units are all dead (because those of layer 'dense_0' are): it "
            "gets no signal from the data, and its units are dead as a "
            "consequence; they can only come back once those of layer 'dense_0' "
            "do."
        )
        assert found["dense_2"].fix.startswith("Fix layer 'dense_0' first")

    def test_cut_off_by_a_layer_after_it_in_model_order(self):
        # dense_0's inputs all come through dense_1 (a graph whose layers
        # were made in another order than they run), both dead on the one
        # recording of an execution of 8 steps that reports them: named,
        # though dense_1 comes after dense_0 in model order.
        found = self._chain(4, {"dense_0": ("dense_1",)}, per=8)
        assert sorted(found) == ["dense_0", "dense_1", "dense_2"]
        assert "its inputs all come through layer 'dense_1', whose units" in (
            found["dense_0"].message
        )
        assert found["dense_0"].fix.startswith("Fix layer 'dense_1' first")

    def test_a_partly_dead_layer_cuts_nothing_off(self):
        # 3 of dense_0's 4 units dead (reported, 75%): its live unit still
        # carries the data, so dense_1, dead behind it, is told on its own.
        found = self._chain(3, {"dense_1": ("dense_0",)})
        assert found["dense_0"].value == 0.75
        assert found["dense_1"].fix == FIXES[F.DEAD_RELU]
        assert "come through" not in found["dense_1"].message

    def test_several_dead_layers_cut_one_off(self):
        # dense_2's inputs come through dense_0 and dense_1 (two branches),
        # both dead: both named; with dense_0 partly dead, neither.
        both = {"dense_2": ("dense_0", "dense_1")}
        found = self._chain(4, both)
        assert "come through layers 'dense_0' and 'dense_1', whose units" in (
            found["dense_2"].message
        )
        assert found["dense_2"].fix.startswith(
            "Fix layers 'dense_0' and 'dense_1' first (see their own findings)"
        )
        assert "come through" not in self._chain(3, both)["dense_2"].message

    def test_units_dying_in_the_first_steps_may_settle(self):
        # dense_1 active on step 0's batch, then 3 of its 4 units inactive
        # on every batch of steps 1-39 (windows of 4 batches from step 4),
        # the loss level: not reported within the first 64 steps; they
        # come back at step 40.
        assert settling_run(level) == []

    @pytest.mark.parametrize("nothing, told", [(1.1, True), (1.12, False)])
    def test_units_dying_while_the_model_knows_nothing(self, nothing, told):
        # `test_units_dying_in_the_first_steps_may_settle` with the loss
        # (1.0) at the loss of a prediction that knows nothing: 1.0 is at
        # least 0.9 of 1.1 (0.99), under 0.9 of 1.12 (1.008). Probed: a
        # ReLU MLP under SGD(0.3, momentum 0.9) on batches of 16, its loss
        # about ln 4 with 4 classes while its second layer died, was told at
        # step 81 (50% dead at step 30). The model learns nothing: not
        # settling, reported once the streak lasts (steps 1-5).
        found = settling_run(level, uninformed=(nothing, "cross-entropy"))
        assert found == ([(F.DEAD_RELU, "dense_1", 1, 5)] if told else [])

    def test_dead_prelu_units_name_their_slopes(self):
        # `test_units_dying_while_the_model_knows_nothing` with PReLU layers
        # (their units counted inactive where their output is exactly 0):
        # slopes at 0, Keras's default, make them ReLU units that die.
        # Probed: a PReLU MLP whose third layer's bias is -10 was told as a
        # `stop_gradient` after its last PReLU.
        kept = []
        found = settling_run(
            level, uninformed=(1.1, "cross-entropy"), activation="prelu", kept=kept
        )
        ending = (
            "these PReLU units, whose slopes are 0 (Keras's default "
            "initialisation), are dead as ReLU units are: they and their slopes "
            "get no gradient; they only come back if the layers before them "
            "change their inputs."
        )
        _told_at_once(found, True, kept, ending, activation_rules._PRELU_FIX)

    def test_dead_units_of_a_gate_are_a_warning(self):
        # The same dense_1 as a gate (a squeeze-and-excitation block's
        # squeeze layer). Probed: 3 of an SE block's 4 squeeze units off
        # from the start, a failure, in a CNN that reached 0.95 accuracy.
        kept = []
        found = settling_run(
            level, uninformed=(1.1, "cross-entropy"), kept=kept, gate="se"
        )
        assert found == [(F.DEAD_RELU, "dense_1", 1, 5)]
        assert kept[0].severity == F.WARNING
        assert kept[0].message.endswith(
            "The layer is in a gate (its outputs reach the loss only by "
            "multiplying, at 'se', the path they are computed from): the model "
            "learns through that path around it."
        )
        assert kept[0].fix == activation_rules._GATE_FIX

    def test_dead_hard_silu_units_are_not_called_relu(self):
        # The same with hard SiLU layers (exactly 0 below -3). Probed: hard
        # SiLU units dead behind a bias of -10 were told as "these ReLU
        # units", with "use Leaky ReLU instead of ReLU".
        kept = []
        found = settling_run(
            level, uninformed=(1.1, "cross-entropy"), activation="hard_silu", kept=kept
        )
        ending = (
            "these hard_silu units are dead (exactly 0 on every sample, where its "
            "gradient is 0) and get no gradient; they only come back if the "
            "layers before them change their inputs."
        )
        fix = activation_rules._DEAD_OTHER_FIX.format(kind="hard_silu")
        assert "instead of hard_silu" in fix
        _told_at_once(found, True, kept, ending, fix)

    @pytest.mark.parametrize("loss, reported", [("jump", [4, 11]), ("level", None)])
    def test_a_jump_inside_an_execution_of_several_steps(self, loss, reported):
        # 4 steps per execution, each recorded at its last step (3, 7, ...)
        # with its 4 batches. 3 of dense_1's 4 units inactive from step 4 on
        # (probed: SGD(3) with `steps_per_execution=4`, the overshoot at step
        # 2 unrecorded, never told on TensorFlow): the loss 1.5, up to 3.3
        # at step 5 and back at step 7 (its every-step row) is a jump that
        # killed them, told at the second recording of the streak (steps
        # 4-11); level, they may settle.
        jump = {4: 2.4, 5: 3.3, 6: 2.2}
        losses = {"jump": lambda s: jump.get(s, 1.5), "level": level}[loss]
        found = settling_run(losses, per=4, dies=4)
        assert found == ([(F.DEAD_RELU, "dense_1", *reported)] if reported else [])

    @pytest.mark.parametrize("batch, reported", [(32, 10), (8, None), (2, None)])
    def test_swings_of_the_loss_on_steady_batches(self, batch, reported):
        # Probed (SGD(3), a ReLU MLP, batches of 32): the loss from 1.52 up to
        # 3.73 and swinging (spread 0.49, 6 spreads 2.9 over the 2.21 rise),
        # 52% of a layer dead from step 6 and the model at chance, told at
        # step 22. On batches of 32 a rise of more than the loss where
        # training began is a jump whatever the spread: told at step 10,
        # when 4 recordings hold the streak. On batches of 8 or 2 the swings
        # may be noise: they may settle (back at step 40).
        swings = [1.52, 2.42, 3.36, 3.73, 1.66, 1.29, 1.58, 1.31, 1.19, 1.9, 2.27]
        found = settling_run(
            lambda s: swings[s] if s < len(swings) else 1.5, batch=batch, dies=6
        )
        assert found == ([(F.DEAD_RELU, "dense_1", 6, reported)] if reported else [])

    @pytest.mark.parametrize(
        "loss, reported",
        [(level, [(F.DEAD_RELU, "dense_1", 1, 5)]), ("falling", [])],
    )
    def test_a_whole_layer_dying_in_the_first_steps(self, loss, reported):
        # All 4 of dense_1's units inactive from step 1 to 39: with the loss
        # level, nothing passes the layer and nothing is learnt through it,
        # reported at once (steps 1-5); with the loss down from 1.0 to 0.8
        # from step 1 (20% below where training began, as through another
        # path), it may settle, as part of a layer does.
        if loss == "falling":

            def loss(step):
                return 1.0 if step == 0 else 0.8

        whole = ([1] * 4, [0] * 4)
        assert settling_run(loss, dying=whole) == reported

    @pytest.mark.parametrize("dead, reported", [(7, True), (6, False)])
    def test_a_layer_nearly_whole_dying_in_the_first_steps(self, dead, reported):
        # 7 of dense_1's 8 units inactive from step 1 (0.875, over
        # `_SETTLE_WHOLE`), the loss level: too little passes the layer for
        # the units to be settling, reported at once (steps 1-5). Probed:
        # a separable CNN under SGD(0.5), its second layer 62% dead at step
        # 5 and 91% from step 8, the model at chance: told at 25 before.
        # 6 of 8 (0.75) may settle, as part of a layer does.
        eight = ([1] * 8, [1] * 8)
        dying = ([1] * 8, [0] * dead + [1] * (8 - dead))
        found = settling_run(level, first=eight, dying=dying, back=None, steps=40)
        assert found == ([(F.DEAD_RELU, "dense_1", 1, 5)] if reported else [])

    @pytest.mark.parametrize(
        "dies, held, named",
        [(12, True, True), (31, True, True), (31, False, False)],
        ids=["soon", "later_held", "later_lowered"],
    )
    def test_units_killed_after_a_learning_rate_jump_name_it(self, dies, held, named):
        # The rate 100x at step 10; 3 of dense_1's 4 units dead from step
        # `dies`, reported `patience_steps` (5) later. Probed: a VAE with
        # its own `train_step` (its logged loss a running mean, so no loss
        # rule sees the jump), Adam's rate 100x at step 200, its ReLU layers
        # dead from 202: told with "Use Leaky ReLU" first. Within
        # `_EXPLOSION_STEPS` (20) of the jump it is named, the rate's fix
        # first; 21 steps after it, while the rate stays at half of 0.1 or
        # more (`_HELD_STEPS`), too; not once lowered to 0.04 (step 20).
        def rate(step):
            if step < 10:
                return 1e-3
            return 0.1 if held or step < 20 else 0.04

        kept = []
        found = settling_run(level, rate, dies=dies, back=None, steps=40, kept=kept)
        assert found == [(F.DEAD_RELU, "dense_1", dies, dies + 4)]
        sentence = (
            f"It began {dies - 10} steps after the learning rate jumped 100x, "
            "from 0.001 to 0.1 at step 10"
            + (", and stayed there" if dies > 30 else "")
            + ": steps far too large."
        )
        assert (sentence in kept[0].message) == named
        fix = activation_rules._JUMP_FIX + activation_rules._STILL_DEAD
        assert (kept[0].fix == fix) == named

    def test_a_whole_layer_killed_after_the_loss_fell(self):
        # Probed: the loss 1.49 at the first step, down to 1.1 by step 39;
        # dense_1 killed whole at step 40 (its bias set to -10), the loss
        # back up to ln 4 (1.386), under where training began: the losses
        # since it died (1.386) are no lower than before (1.1), reported at
        # once (steps 40-44), not when the model stopped learning (150).
        def loss(step):
            return 1.49 - 0.01 * step if step < 40 else 1.386

        whole = ([1] * 4, [0] * 4)
        found = settling_run(loss, dying=whole, dies=40, back=None, steps=100)
        assert found == [(F.DEAD_RELU, "dense_1", 40, 44)]

    @pytest.mark.parametrize(
        "rise, reported",
        [(10.0, [(F.DEAD_RELU, "dense_1", 1, 5)]), (9.0, [])],
        ids=["warmed_up_10x", "9x"],
    )
    def test_units_dying_while_the_rate_warms_up(self, rise, reported):
        # The rate rises step by step from 1e-3 (never 10x in one step, no
        # jump) to `rise` times that by step 4: units dying as the steps
        # grow are no noise, reported at once (3 of dense_1's 4 units dead
        # from step 1, over `patience_steps`: steps 1-5). Adam warmed up
        # from 0 to 0.5 over 200 steps killed half a layer's units by step
        # 42, reported at 128 when they settled. Under 10x they may settle.
        def rate(step):
            return 1e-3 * rise ** (min(step, 4) / 4)

        assert settling_run(level, rate) == reported

    @pytest.mark.parametrize("weight_decay", [10.0, 0.9])
    def test_units_dying_under_a_heavy_weight_decay(self, weight_decay):
        # AdamW at 1e-2 with weight_decay 10 takes 0.1 of every weight a
        # step (probed: weights collapsed, units dead and the loss at ln 2
        # by step 10-20, reported at 77 when they settled, with no word of
        # the decay): no settling, reported at once (steps 1-5) with the
        # decay named. At 0.9 (9e-3 a step, under `DECAY_SHARE`) they may
        # settle, as without.
        kept = []
        found = settling_run(
            level, lambda s: 1e-2, weight_decay=weight_decay, kept=kept
        )
        ending = (
            "The optimizer's weight decay takes 0.1 of every weight each step "
            "(learning rate 0.01 times weight_decay 10): it drives the weights "
            "toward 0, and with them the layers' outputs and gradients."
        )
        _told_at_once(found, weight_decay >= 1, kept, ending, rule_support.DECAY_FIX)

    @pytest.mark.parametrize("shrink", [348.0, 9.0])
    def test_units_dying_as_their_weights_collapse(self, shrink):
        # Probed (both backends): Dense ReLU layers with kernel_regularizer
        # L2(10) under SGD at 0.05 (or a MaxNorm(1e-3) constraint under
        # Adam), the kernels 348x smaller after step 0, most units dead
        # from step 1 and the loss at ln 4 for good, were told at step 150
        # when they settled. Weights shrunk 10x or more since the first
        # recording: no settling, reported at once (steps 1-5) naming the
        # collapse, not the updates. 9x: they may settle, as without.
        kept = []

        def weights(step):
            return [5.0, 5.0 if step == 0 else 5.0 / shrink, 1.0]

        found = settling_run(level, kept=kept, weights=weights)
        ending = (
            "these ReLU units are dead and get no gradient; they only come back "
            "if the layers before them change their inputs. Its weights shrank "
            "348x since the first recording: a kernel regularizer or constraint "
            "far too strong drives them to 0, and the units with them."
        )
        _told_at_once(found, shrink >= 10, kept, ending, activation_rules._COLLAPSE_FIX)

    def test_settling_units_still_dead_after_64_steps(self):
        # The same units staying dead: the streak from step 1 is reported
        # once it passes the first 64 steps.
        assert settling_run(level, back=None) == [(F.DEAD_RELU, "dense_1", 1, 64)]

    def test_settled_units_wait_while_the_model_learns(self):
        # The same units staying dead to step 299 while the loss falls 1% a
        # step from 1.0 to 0.6 at step 40, then stays there. At step 64 the
        # recent loss (median of the last 32 steps: 0.6) fell 40% from the
        # first (1.0) >= 5%: still learning, not fitted (0.6 > 0.5 x the
        # early loss, median of steps 0-4 = 0.98). At step 128 it fell 0%
        # from 0.6 < 5%: reported then, with the streak from step 1.
        def falling(step):
            return 1.0 - 0.01 * min(step, 40)

        found = settling_run(falling, back=None, steps=300)
        assert found == [(F.DEAD_RELU, "dense_1", 1, 128)]

    def test_one_unit_of_a_small_layer_dead_from_the_start_may_settle(self):
        # dense_1's units inactive from the first batch on, as `pair`, each
        # step a step event and a recording of 32 samples.
        def run_from_start(pair, loss, steps=70):
            rules, found = HealthRules(mlp(["relu", "relu"])), []
            for s in range(steps):
                items = [
                    event(s, 1.0, loss=loss(s)),
                    recording(
                        s,
                        RELU_RMS[:3],
                        loss=loss(s),
                        batch_size=32,
                        unit_activity=[[1] * 4, pair, None],
                    ),
                ]
                found += [(f.mode, f.layer, f.step, s) for f in run(rules, items)]
            return found

        def fitting(step):
            return 1.0 - 0.02 * min(step, 40)

        # One of two units (0.5 >= dead_fraction): it may come back as the
        # layer before it learns; with the loss level, reported at step 64
        # (the streak from step 0); with the model fitting, never.
        assert run_from_start([0, 5], level) == [(F.DEAD_RELU, "dense_1", 0, 64)]
        assert run_from_start([0, 5], fitting, steps=200) == []
        # The whole layer: dead from the start, reported at step 4 (4
        # batches of 32, over 5 steps); two of four units, off from the
        # start (a warning), once they stayed so over 32 steps
        # (`_OFF_STEPS`), at step 31.
        expected = [(F.DEAD_RELU, "dense_1", 0, 4)]
        assert run_from_start([0, 0, 5, 5], fitting) == [
            (F.DEAD_RELU, "dense_1", 0, 31)
        ]
        assert run_from_start([0], fitting) == expected

        def halved(step):
            return 1.0 if step == 0 else 0.5

        # With the loss halved from the first step (beyond 5% and 3 times
        # the spread of the recorded losses, 0), part of a layer dead from
        # the start may settle (a squeeze-excitation's 8 units behind a
        # global average pooling, 5 inactive from the start, the model
        # fitting); the whole layer is still reported at once.
        assert run_from_start([0, 0, 5, 5], halved) == []
        assert run_from_start([0], halved) == expected

    def test_settled_units_of_a_fitted_model_are_not_reported(self):
        # The loss falls to 0.2 by step 40 (<= 0.5 x the early 0.98): the
        # model fitted with those units off; they are never reported.
        def fitting(step):
            return 1.0 - 0.02 * min(step, 40)

        assert settling_run(fitting, back=None, steps=300) == []

    def test_units_dying_late_in_a_settled_layer_as_the_loss_rises(self):
        # `fitting`'s model, whose settled units come back at step 100 and
        # die again at step 150 with the loss up to 0.5 (a bad batch that
        # harmed the model). The streak from step 150 (the window of steps
        # 150-153) passes patience at step 154, when the recent loss (median
        # of the last 32 steps) is still 0.2 (checked: fitted, the level
        # 0.2); at step 165 (16 at 0.2, 16 at 0.5) it is 0.35, 0.15 over the
        # level of that check >= 0.1 x the first loss: reported.
        def harmed(step):
            return 0.5 if step >= 150 else 1.0 - 0.02 * min(step, 40)

        found = settling_run(harmed, back=100, again=150, steps=200)
        assert found == [(F.DEAD_RELU, "dense_1", 150, 165)]
        # Units that settled and stayed dead died before the loss rose: they
        # are reported at the next check (step 192, 64 after the last), the
        # model neither learning (0.5 against 0.2) nor fitted any more (0.5 >
        # 0.5 x the early loss 0.98).
        found = settling_run(harmed, back=None, steps=200)
        assert found == [(F.DEAD_RELU, "dense_1", 1, 192)]

    @pytest.mark.parametrize(
        "loss, rate",
        [
            # The loss 1.2 from step 1: its recent median is over 1.1 x the
            # first loss 1.0 (too large a step kills units).
            (lambda s: 1.0 if s == 0 else 1.2, lambda s: None),
            # One recorded loss of 1.5 (step 2), back to 1.0 after: over 1.5
            # x the first (an overshoot), though the median stays level.
            (lambda s: 1.5 if s == 2 else 1.0, lambda s: None),
            # The learning rate changed 10x at step 2.
            (level, lambda s: 1e-3 if s < 2 else 1e-2),
        ],
        ids=["loss_rising", "loss_jumped", "rate_changed"],
    )
    def test_units_killed_early_are_reported_at_once(self, loss, rate):
        # The streak from step 1 (the window of steps 1-4), reported once it
        # spans 5 steps (patience_steps): at step 5.
        assert settling_run(loss, rate) == [(F.DEAD_RELU, "dense_1", 1, 5)]

    def test_a_noisy_loss_is_no_jump(self):
        # Batches of a few samples (a probe: batches of 4, the first loss
        # 0.69, one of 1.14 among the first 64 steps while the model
        # learned): the recorded losses cycle through 0.5, 0.65, 0.8 and
        # 0.95 (median 0.725, median absolute deviation 0.15) with one of
        # 1.14 at step 2, as the units die (from step 1), 1.65x the first,
        # but 0.45 over it < 6 x 0.15: noise, not an overshoot; the recent
        # median (0.725) is not 3 x 0.15 over the first either. The units
        # settle as under a level loss.
        def noisy(step):
            if step == 0:
                return 0.69
            return 1.14 if step == 2 else (0.5, 0.65, 0.8, 0.95)[step % 4]

        assert settling_run(noisy) == []
        # The same spike over a level loss is an overshoot (`loss_jumped`).
        spiked = settling_run(lambda s: 1.14 if s == 2 else 0.69)
        assert spiked == [(F.DEAD_RELU, "dense_1", 1, 5)]

    def test_a_jump_after_the_units_died_did_not_kill_them(self):
        # A probe on batches of 8: half a layer's units off from step 4, one
        # batch's loss 1.115 at step 20 against 0.69 at the first (the
        # losses around it 0.36-0.78), the model fitting. A step that
        # overshoots kills units at once, so only losses recorded up to the
        # step after the streak's first (1) count: the units settle.
        assert settling_run(lambda s: 1.14 if s == 10 else 0.69) == []

    def test_units_dead_from_the_first_batch_are_reported_at_once(self):
        # Inactive on step 0's batch already: the window of steps 0-3,
        # reported at step 4 though the loss stays level.
        found = settling_run(level, first=ACTIVITY)
        assert found == [(F.DEAD_RELU, "dense_1", 0, 4)]

    @pytest.mark.parametrize(
        "first, later, severity, reported",
        [
            # 2 of 4 inactive from the first batch, no more since: a warning
            # (a head on pooled features, a squeeze-excitation reduction),
            # once they stayed so over 32 steps (`_OFF_STEPS`: the first
            # batches of an unshuffled series are not the data's), at 31.
            ([0, 0, 5, 5], [0, 0, 5, 5], F.WARNING, 31),
            # 3 of 4 (over two thirds): too few left, a failure.
            ([0, 0, 0, 5], [0, 0, 0, 5], F.FAILURE, 4),
            # 1 of 4 at first, 3 of 4 later: training killed 2 (a quarter or
            # more), a failure (after settling, as units dying in the first
            # steps do: the streak from step 1, reported at 64).
            ([0, 5, 5, 5], [0, 0, 0, 5], F.FAILURE, 64),
            # 2 of 4 inactive at first, then those 2 active and the other 2
            # dead: as many dead, but killed by training, a failure.
            ([0, 0, 5, 5], [5, 5, 0, 0], F.FAILURE, 5),
        ],
        ids=["half_from_start", "most_from_start", "killed_after", "others_killed"],
    )
    def test_units_off_from_the_start_are_a_warning(
        self, first, later, severity, reported
    ):
        ((finding, at),) = off_from_start_run(70, first, later)
        assert (finding.mode, finding.layer, finding.severity, at) == (
            F.DEAD_RELU,
            "dense_1",
            severity,
            reported,
        )
        start = (
            " 2 of its 4 units were inactive on the first recorded batch already, "
            "before any update: initialisation left them off"
        )
        if severity == F.WARNING:
            assert start in finding.message
            assert finding.fix.startswith("If the layer needs these units")
        else:
            assert "initialisation left them off" not in finding.message
            assert finding.fix == FIXES[F.DEAD_RELU]

    @pytest.mark.parametrize("scale, raw", [(4e4, True), (9.0, False)])
    def test_units_off_from_the_start_under_raw_inputs(self, scale, raw):
        # As `half_from_start`, the inputs' largest feature mean or spread
        # 4e4 (probed on JAX: a tabular model fed raw incomes, told
        # "initialisation left them off"): the inputs are named, with their
        # fix; at 9 (under `_RAW_INPUTS`, 10) initialisation is.
        found = off_from_start_run(40, [0, 0, 5, 5], [0, 0, 5, 5], input_scale=scale)
        dead = [(f, s) for f, s in found if f.mode == F.DEAD_RELU]
        ((finding, at),) = dead
        assert (finding.severity, at) == (F.WARNING, 31)
        inputs = (
            "the inputs, far from unit scale (a feature's mean or spread is "
            "4e+04), left them off, and the layer learns through its other units."
        )
        assert finding.message.endswith(inputs) == raw
        assert ("initialisation left them off" in finding.message) == (not raw)
        unstandardized = FIXES[F.UNSTANDARDIZED_INPUTS]
        off = activation_rules._OFF_FROM_START_FIX
        assert finding.fix == (unstandardized if raw else off)

    @pytest.mark.parametrize(
        "upstream, raw",
        [
            ({"dense_0": 4e4, "dense_1": 4e4}, True),
            ({"dense_0": 4e4}, False),
            ({}, False),
        ],
        ids=["reached", "not_reached", "ids_alone"],
    )
    def test_units_off_from_the_start_under_raw_inputs_of_several(self, upstream, raw):
        # A model of several inputs, one of them raw (4e4): named only where
        # it reaches the layer (`StepStats.upstream_scales`). Probed: a ReLU
        # tower on a standardized input, off from the start by its negative
        # biases, was told as left off by the other input's raw values.
        found = off_from_start_run(
            40, [0, 0, 5, 5], [0, 0, 5, 5], input_scale=4e4, upstream_scales=upstream
        )
        ((finding, _),) = [(f, s) for f, s in found if f.mode == F.DEAD_RELU]
        assert ("the inputs, far from unit scale" in finding.message) == raw
        assert ("initialisation left them off" in finding.message) == (not raw)

    @pytest.mark.parametrize("reached", [True, False])
    def test_a_failure_names_raw_inputs_of_several_that_reach_it(self, reached):
        # As `most_from_start` (3 of 4 units off: a failure), the model's
        # largest input scale 4e4: the inputs are named as the likely cause
        # only where one that far from unit scale reaches the layer.
        upstream = {"dense_0": 4e4, "dense_1": 4e4 if reached else 2.0}
        found = off_from_start_run(
            40, [0, 0, 0, 5], [0, 0, 0, 5], input_scale=4e4, upstream_scales=upstream
        )
        ((finding, _),) = [(f, s) for f, s in found if f.mode == F.DEAD_RELU]
        assert finding.severity == F.FAILURE
        named = (
            " The inputs are far from unit scale (a feature's mean or spread is "
            "4e+04, against about 1 when standardized)"
        )
        assert (named in finding.message) == reached
        assert finding.fix.startswith("Standardize the inputs") == reached

    @pytest.mark.parametrize(
        "later, averaged, rates, severity",
        [
            # 2 of 4 killed by training, the loss level (as `others_killed`
            # above): fed by a global average pooling, a warning.
            ([5, 5, 0, 0], True, None, F.WARNING),
            ([5, 5, 0, 0], False, None, F.FAILURE),
            # 3 of 4 (over two thirds): a failure, pooled or not.
            ([5, 0, 0, 0], True, None, F.FAILURE),
            # The learning rate jumped 10x at step 2: killed by the steps.
            ([5, 5, 0, 0], True, (1e-3, 1e-2), F.FAILURE),
            # It fell 10x at step 2 (a step schedule's drop): kills nothing.
            ([5, 5, 0, 0], True, (1e-2, 1e-3), F.WARNING),
        ],
        ids=["pooled", "not_pooled", "most_of_it", "rate_jump", "rate_drop"],
    )
    def test_units_off_behind_a_global_average_pooling(
        self, later, averaged, rates, severity
    ):
        # A probe: the Keras text-classification tutorial's shape
        # (Embedding -> GlobalAveragePooling1D -> Dense(16, relu)) had half
        # of its Dense units inactive on a window of 192 samples, active on
        # 0.1-1.5% of the training set, and fitted.
        layers = mlp(["relu", "relu"])
        layers[1] = dataclasses.replace(layers[1], averaged=averaged)
        rules = HealthRules(layers)
        found = []
        for s in range(70):  # Past the first steps, where units settle.
            rate = None if rates is None else rates[s >= 2]
            pair = ([1] * 4, [5, 5, 5, 5] if s == 0 else later)
            items = [
                event(s, 1.0, lr=rate, loss=1.0),
                recording(
                    s,
                    RELU_RMS[:3],
                    loss=1.0,
                    batch_size=32,
                    unit_activity=[*pair, None],
                ),
            ]
            found += run(rules, items)
        ((finding,),) = [[f for f in found if f.mode == F.DEAD_RELU]]
        assert (finding.layer, finding.severity) == ("dense_1", severity)
        # Reported after the first 64 steps, where units settle, on the
        # window of steps 61-64; the message says what was measured, not
        # that the units are dead.
        pooled = (
            "recorded batches (steps 61-64): its inputs are averaged by a global "
            "pooling and barely differ between samples"
        )
        assert (pooled in finding.message) == (severity == F.WARNING)
        assert ("these ReLU units are dead" in finding.message) == (
            severity == F.FAILURE
        )
        assert (finding.fix == activation_rules._AVERAGED_FIX) == (
            severity == F.WARNING
        )

    def test_dead_units_of_a_layer_with_an_activity_regularizer(self):
        # Probed: a sparse autoencoder's ReLU code under an L1 activity
        # regularizer of 3e-2, every unit dead within 30 steps, the same at
        # a 10x smaller learning rate: the regularizer is named first.
        rules, seq = dead_run(ACTIVITY, (0, 10, 20, 30))
        rules.activity_regularizers = {"dense_1": "L1(l1=0.03)"}
        (finding,) = run(rules, seq)
        assert finding.message.endswith(
            "layers before them change their inputs. Its activity regularizer "
            "(L1(l1=0.03)) adds a penalty on its outputs that pushes them to 0, "
            "where ReLU units die."
        )
        assert finding.fix == (
            "Lower the weight of the activity regularizer of layer 'dense_1' (or "
            "remove it). If its units stay dead: use Leaky ReLU (or ELU) instead "
            "of ReLU, lower the learning rate, and avoid large negative bias "
            "initialisation."
        )

    def test_dead_units_persisting(self):
        rules, seq = dead_run(ACTIVITY, (0, 10, 20, 30))
        # Steps 0-20: 96 samples < min_samples 128; at step 30 the window is
        # 4 recordings (128 samples) from step 0.
        assert run(rules, seq[:3]) == []
        found = run(rules, seq[3:])
        assert modes(found) == [(F.DEAD_RELU, "dense_1", 0)]
        assert found[0].value == 0.75
        assert found[0].message == (
            "75% of the units of layer 'dense_1' output zero for every one of "
            "the 128 samples of the last 4 recorded batches (steps 0-30): these "
            "ReLU units are dead and get no gradient; they only come back if the "
            "layers before them change their inputs."
        )
        assert found[0].fix == FIXES[F.DEAD_RELU]

    def test_dead_units_with_rarely_active_ones_silent_too(self):
        # Recordings at steps 1000-1031: dense_1's units 0-2 inactive on
        # their 128 samples (`ACTIVITY`), unit 3 active. Unit 0 passed a
        # gradient back on 5% of its steps, last at step 996: silent 36
        # steps is likely chance (0.95^36 = 0.16 >= `_RARE_CHANCE`), so it
        # is not counted dead; the message says all three output zero, two
        # counted dead. (Off from the first recording: a warning, told once
        # the window spans 32 steps, `_OFF_STEPS`.)
        flow = ([996, -1, -1, 1031], [0.05, 0.0, 0.0, 1.0], [996, 0, 0, 1032])
        finding = half_dead_by_flow((1000, 1010, 1020, 1031), flow)
        assert finding.message.startswith(
            "75% of the units of layer 'dense_1' output zero for every one of "
            "the 128 samples of the last 4 recorded batches (steps 1000-1031; "
            "50% counted dead, the others were active on few batches before "
            "and may be silent by chance)"
        )

    def test_dead_units_by_their_gradients_between_recordings(self):
        # As above, with every step's gradients of dense_1's units
        # (`unit_flow`: last step with one, share, history): unit 1 passed
        # a gradient back at step 2, inside the window (steps 0-31): active.
        # Units 0 and 2 never: dead, half the layer.
        flow = ([-1, 2, -1, 31], [0.0, 1.0, 0.0, 1.0], [0, 3, 0, 32])
        finding = half_dead_by_flow((0, 10, 20, 31), flow)
        assert finding.message.startswith(
            "50% of the units of layer 'dense_1' output zero for every one of "
            "the 128 samples of the last 4 recorded batches (steps 0-31) and "
            "passed no gradient back on any step between: these ReLU units are "
            "dead"
        )
        # Unit 0 active at step 25 too: a quarter of the layer, not told.
        rules, seq = dead_run(ACTIVITY, (0, 10, 20, 31))
        seq[-1].layers[1].unit_flow = ([25, 2, -1, 31], *flow[1:])
        assert run(rules, seq) == []

    def test_one_recording_per_execution(self):
        # steps_per_execution 4: each recording counts its execution's 4
        # batches (128 samples); 2 recordings (steps 3 and 7, span 5) make
        # the window (`_patience`), where 3 are needed one step at a time.
        rules, seq = dead_run(ACTIVITY, (3, 7), batch_size=128)
        rules.execution_steps = 4
        assert run(rules, seq[:1]) == []
        found = run(rules, seq[1:])
        assert modes(found) == [(F.DEAD_RELU, "dense_1", 3)]
        assert "of the 256 samples of the last 2 recorded batches" in found[0].message
        rules, seq = dead_run(ACTIVITY, (3, 7), batch_size=128)
        assert run(rules, seq) == []

    @pytest.mark.parametrize("per, reported", [(8, True), (4, False)])
    def test_one_recording_holds_its_executions_batches(self, per, reported):
        # steps_per_execution 8, every step of the first execution recorded
        # in full: the recording of step 7 counts the activations of its 8
        # batches (256 samples of steps 0-7), over `patience_steps` (5) by
        # itself: reported at 7, not at the next execution's 15. With 4
        # steps an execution (steps 4-7) it is too short alone.
        rules, seq = dead_run(ACTIVITY, (7,), batch_size=32 * per, activation_steps=per)
        rules.execution_steps = per
        found = run(rules, seq)
        assert modes(found) == ([(F.DEAD_RELU, "dense_1", 0)] if reported else [])
        if reported:
            assert found[0].message.startswith(
                "75% of the units of layer 'dense_1' output zero for every one "
                "of the 256 samples of the last 8 recorded batches (steps 0-7)"
            )

    def test_units_inactive_on_one_batch_are_suspected(self):
        # Step 0: dense_1 has 3 of 4 units inactive on its 32 samples (too
        # few to say dead): suspected, so the callback records densely.
        rules, seq = dead_run(ACTIVITY, (0, 1, 2, 3, 4))
        assert run(rules, seq[:1]) == [] and rules.suspected
        # Steps 1-3: still suspected; at step 3 the window (128 samples)
        # holds them dead, confirmed at step 4 (span 5).
        assert run(rules, seq[1:4]) == [] and rules.suspected
        assert modes(run(rules, seq[4:])) == [(F.DEAD_RELU, "dense_1", 0)]
        # Reported: no longer suspected.
        assert not rules.suspected

    def test_healthy_sparsity_is_not_suspected(self):
        # 1 of 4 units inactive on the batch in each layer (0.25 < 0.5).
        rules, seq = dead_run(([5, 9, 3, 0], [0, 1, 1, 1]), (0, 1))
        run(rules, seq)
        assert not rules.suspected
        # A suspicious recording, then a healthy one: the flag follows the
        # last.
        rules, seq = dead_run(
            lambda s: ([5, 9, 3, 0], [0, 0, 0, 1] if s == 0 else [1, 1, 1, 1]),
            (0, 1),
        )
        run(rules, seq[:1])
        assert rules.suspected
        run(rules, seq[1:])
        assert not rules.suspected

    def test_an_unmeasured_layer_is_judged_on_its_gradients(self):
        # dense_0's outputs are never measured (as a recurrent layer's that
        # returns its last step only): every gradient of its weights exactly
        # 0 on 4 recorded batches of 32 (128 samples) makes its units dead,
        # reported once that held over 5 steps (patience_steps).
        def seq(norms, activity=None, after=1.0):
            return [
                recording(
                    s,
                    RELU_RMS[:3],
                    batch_size=32,
                    grad_norm=[n, after, after],
                    unit_activity=[activity, [1, 1, 1, 1], None],
                )
                for s, n in zip(range(5), norms)
            ]

        (found,) = run(HealthRules(mlp(["relu", "relu"])), seq([0.0] * 5))
        assert (found.mode, found.layer, found.step, found.value) == (
            F.DEAD_RELU,
            "dense_0",
            0,
            1.0,
        )
        assert found.message == (
            "Every gradient of layer 'dense_0' is exactly 0 on each of the last "
            "4 recorded batches (128 samples, steps 1-4), whose outputs are not "
            "measured here (as those of a recurrent layer that returns only its "
            "last step): its ReLU units output zero on every sample and step, "
            "dead, or no layer after it passes a gradient back. Dead units only "
            "come back if the layers before them change their inputs."
        )
        # No layer after it gets a gradient either (every gradient 0, as
        # behind a saturated softmax): its zeros tell nothing of its units.
        rules = HealthRules(mlp(["relu", "relu"]))
        found = run(rules, seq([0.0] * 5, after=0.0))
        assert F.DEAD_RELU not in [f.mode for f in found]
        # One batch with a gradient among them: not dead.
        gap = [0.0, 0.0, 1e-9, 0.0, 0.0]
        assert run(HealthRules(mlp(["relu", "relu"])), seq(gap)) == []
        # A non-finite norm (reported as such) says nothing of the units.
        gap = [0.0, float("nan"), 0.0, 0.0, 0.0]
        found = run(HealthRules(mlp(["relu", "relu"])), seq(gap))
        assert [f.mode for f in found] == [F.NON_FINITE]
        # A layer whose outputs were measured once is judged on them only:
        # its gradients alone (a layer after it cut) do not make it dead
        # (nor cut off, `cut_rules`: the cut is in the model's graph).
        rules = HealthRules(mlp(["relu", "relu"]))
        run(rules, seq([1.0], activity=[1, 1, 1, 1]))
        assert run(rules, seq([0.0] * 5)) == []

    def test_dead_fraction_at_the_threshold(self):
        # 2 of 4 units = 0.5 >= dead_fraction 0.5 (off from the first
        # recording: a warning, told once the window spans 32 steps).
        rules, seq = dead_run(([5, 9, 0, 0], [1, 1, 1, 1]), (0, 10, 20, 31))
        found = run(rules, seq)
        assert modes(found) == [(F.DEAD_RELU, "dense_0", 0)]
        assert found[0].value == 0.5

    def test_active_on_one_sample_is_alive(self):
        # dense_1's units 0-2 are inactive except at step 10, where they are
        # active (on at least one sample): no window holding step 10 has a
        # dead unit.
        def activity(step):
            return ([1, 1, 1, 1], [1, 1, 1, 0] if step == 10 else [0, 0, 0, 5])

        rules, seq = dead_run(activity, range(0, 80, 10))
        found = run(rules, seq)
        # Windows (4 recordings): 0-30 and 10-40 hold step 10; the first
        # without it, 20-50, is confirmed at once (span 31).
        assert modes(found) == [(F.DEAD_RELU, "dense_1", 20)]
        assert "(steps 20-50)" in found[0].message

    def test_two_recordings_are_not_persistence(self):
        # Batches of 64: 2 recordings hold 128 samples, but patience is 3.
        rules, seq = dead_run(([0, 0, 0, 0], [0, 0, 0, 0]), (0, 10), batch_size=64)
        assert run(rules, seq) == []

    @pytest.mark.parametrize("batch_size", [64, 128, 256])
    def test_large_batches_take_patience_recordings(self, batch_size):
        # One or two recordings already hold 128 samples: the window grows to
        # patience = 3 recordings (steps 0-20 at step 20; span 21 >= 5).
        rules, seq = dead_run(ACTIVITY, (0, 10, 20), batch_size=batch_size)
        found = run(rules, seq)
        assert modes(found) == [(F.DEAD_RELU, "dense_1", 0)]
        assert (
            f"the {3 * batch_size} samples of the last 3 recorded batches (steps 0-20)"
        ) in found[0].message

    def test_span_of_the_streak(self):
        rules, seq = dead_run(ACTIVITY, range(5))
        # Step 3: window steps 0-3, span 4 < patience_steps 5. Step 4: window
        # steps 1-4, but the streak started with the window of step 0.
        assert run(rules, seq[:4]) == []
        assert modes(run(rules, seq[4:])) == [(F.DEAD_RELU, "dense_1", 0)]

    def test_small_batches_wait_for_enough_samples(self):
        # Batches of 8: 16 recordings hold 128 samples.
        rules, seq = dead_run(ACTIVITY, range(0, 80, 5), batch_size=8)
        assert run(rules, seq[:15]) == []
        found = run(rules, seq[15:])
        assert modes(found) == [(F.DEAD_RELU, "dense_1", 0)]
        assert "128 samples of the last 16 recorded batches (steps 0-75)" in (
            found[0].message
        )

    def test_min_samples_override(self):
        rules = HealthRules(mlp(["relu", "relu"]), {"min_samples": 64})
        seq = [
            recording(s, RELU_RMS[:3], batch_size=16, unit_activity=[*ACTIVITY, None])
            for s in range(0, 40, 10)
        ]
        # 4 recordings of 16 hold 64 samples at step 30.
        assert modes(run(rules, seq)) == [(F.DEAD_RELU, "dense_1", 0)]

    def test_healthy_sparsity_is_not_dead(self):
        # Half the elements zero, no unit zero for every sample: healthy ReLU.
        # The per-element and per-batch fractions are not judged.
        rules, seq = dead_run(([3, 9, 1, 2], [16, 1, 4, 2]), range(20))
        for stats in seq:
            for ls, z, d in zip(stats.layers, (0.9, 0.9, None), (1.0, 1.0, None)):
                ls.zero_fraction, ls.dead_fraction = z, d
        assert run(rules, seq) == []

    def test_intermittent(self):
        # Units inactive on some batches but never on 4 in a row.
        def activity(step):
            return ([0, 0, 0, 4], [1, 1, 1, 1]) if step % 3 else ([1] * 4, [1] * 4)

        rules, seq = dead_run(activity, range(20))
        assert run(rules, seq) == []

    def test_leaky_relu_and_elu_cannot_die(self):
        rules, seq = dead_run(
            ([0] * 4, [0] * 4), range(10), activations=("leaky_relu", "elu")
        )
        assert run(rules, seq) == []

    def test_unknown_activation_is_trusted(self):
        # An activation without a profile that the callback measured dead
        # units for is trusted to be ReLU-like.
        rules, seq = dead_run(
            ([0] * 4, [1] * 4), range(10), activations=("my_act", "tanh")
        )
        assert modes(run(rules, seq)) == [(F.DEAD_RELU, "dense_0", 0)]

    def test_needs_unit_activity_and_batch_size(self):
        rules, seq = dead_run(([0] * 4, [0] * 4), range(10), batch_size=None)
        assert run(rules, seq) == []
        rules = HealthRules(mlp(["relu", "relu"]))
        seq = [recording(s, RELU_RMS[:3], batch_size=32) for s in range(10)]
        assert run(rules, seq) == []

    def test_one_finding_per_layer(self):
        rules, seq = dead_run(([0] * 4, [0] * 4), range(30))
        found = run(rules, seq)
        assert modes(found) == [
            (F.DEAD_RELU, "dense_0", 0),
            (F.DEAD_RELU, "dense_1", 0),
        ]
        assert [f.value for f in found] == [1.0, 1.0]
        assert rules.findings == found

    def test_can_die(self):
        assert can_die("relu") and can_die("relu6") and can_die("unknown_act")
        assert not any(map(can_die, (None, "leaky_relu", "elu", "sigmoid", "tanh")))


class TestUnitActivity:
    def test_window(self):
        window = UnitActivity(min_samples=100)
        window.add(0, 60, [0, 2, 0])
        assert window.dead() is None  # 60 < 100 samples.
        window.add(1, 60, [0, 0, 0])
        # Window steps 0-1: units 0 and 2 inactive on all 120 samples.
        assert window.dead() == (pytest.approx(2 / 3), 120, 2, 0)
        window.add(2, 100, [0, 0, 0])
        # The last recording alone holds 100 samples.
        assert window.dead() == (1.0, 100, 1, 2)

    def test_latest_batch(self):
        window = UnitActivity(min_samples=100)
        # 3 of 4 units inactive on the batch (counts, as a list or array).
        window.add(0, 32, [0.0, 5.0, 0.0, 0.0])
        assert window.latest() == 0.75
        window.add(1, 32, np.array([1.0, 1.0, 0.0, 2.0]))
        assert window.latest() == 0.25
        # 64 samples: fewer than 100.
        assert window.dead() is None
        window.add(2, 64, [0.0, 3.0, 0.0, 0.0])
        # Steps 0-2 (128 samples): only unit 2 inactive on every one.
        assert window.dead() == (0.25, 128, 3, 0)

    def test_a_whole_layer_inactive_needs_half_the_samples(self):
        window = UnitActivity(min_samples=128)
        # 8 units (WHOLE_UNITS), none active on 8 batches of 8: 64 samples,
        # half of min_samples, are enough for a layer with no active unit.
        for step in range(7):
            window.add(step, 8, [0] * 8)
            assert window.dead() is None  # 8-56 samples.
        window.add(7, 8, [0] * 8)
        assert window.dead() == (1.0, 64, 8, 0)
        # One unit active once among them: 128 samples as for any unit.
        window = UnitActivity(min_samples=128)
        for step in range(8):
            window.add(step, 8, [0] * 7 + [int(step == 3)])
        assert window.dead() is None
        for step in range(8, 16):
            window.add(step, 8, [0] * 8)
        # Steps 8-15 alone have no active unit: dead on those 64 samples.
        assert window.dead() == (1.0, 64, 8, 8)
        # Fewer than 8 units: a small layer needs all 128 samples.
        window = UnitActivity(min_samples=128)
        for step in range(8):
            window.add(step, 8, [0] * 7)
        assert window.dead() is None

    def test_rarely_active_units_are_not_dead(self):
        # 5 units, batches of 32 (a window is 4 recordings: 128 samples).
        # Over 20 older recordings: unit 0 active on every one, unit 1 on
        # steps 0, 5, 10 and 15, unit 2 on 5, 10 and 15, unit 3 on none,
        # unit 4 on every one and still active. Then 4 recordings where
        # only unit 4 is.
        window = UnitActivity(min_samples=128)
        for step in range(20):
            rare = [int(step % 5 == 0), int(step in (5, 10, 15))]
            window.add(step, 32, [1, *rare, 0, 1])
        for step in range(20, 24):
            window.add(step, 32, [0, 0, 0, 0, 1])
        assert window.dead() == (0.8, 128, 4, 20)  # Counted from the window.
        # Silent for 8 recordings of 32 samples since step 15, after active
        # on 4 (unit 1) and 3 (unit 2) of the 16 recordings up to it: a
        # chance of 0.75^8 = 0.10 and 0.8125^8 = 0.19 of so long a silence,
        # at least `_RARE_CHANCE` (0.07): rarely active, not dead. Unit 0
        # was active on every recording (chance 0), unit 3 never: dead.
        assert window.dead(rare=0.5) == (0.4, 128, 4, 20)
        # Under `rare` of the units inactive (4 of 5 < 0.9): not looked into.
        assert window.dead(rare=0.9) == (0.8, 128, 4, 20)
        assert window.dead(rare=0.5) == (0.4, 128, 4, 20)
        np.testing.assert_array_equal(window.alive, [False, True, True, False, True])
        # Units 0-3 were inactive on the window: the rare ones included.
        assert window.silent == 0.8
        # Silent for long enough, they are dead: after 12 more recordings
        # 0.75^20 = 0.003 and 0.8125^20 = 0.016.
        for step in range(24, 36):
            window.add(step, 32, [0, 0, 0, 0, 1])
        assert window.dead(rare=0.5) == (0.8, 128, 4, 32)

    def test_flow_between_recordings_keeps_units_alive(self):
        # 4 units, recordings of 32 samples 100 steps apart. Every unit is
        # inactive on the recorded batches of steps 100-400; their biases'
        # gradients (`flow`: last step, share of steps, history) show unit
        # 0 active at step 350, unit 1 at step 50 (before the window), unit
        # 2 never, and unit 3 at step 399 on a share of 0.02 of its steps.
        window = UnitActivity(min_samples=128)
        for step in (100, 200, 300):
            window.add(step, 32, [0, 0, 0, 0])
        flow = ([350, 50, -1, 399], [0.9, 1.0, 0.0, 0.02], [350, 50, 0, 399])
        window.add(400, 32, [0, 0, 0, 0], flow=flow)
        # Window steps 100-400: units 1 and 2 dead; 0 and 3 passed a gradient
        # back from step 100 on.
        assert window.dead() == (0.5, 128, 4, 100)
        np.testing.assert_array_equal(window.alive, [True, False, False, True])
        assert window.silent == 0.5  # Flow in the window is activity.
        # A later recording without flow (none for this layer): recordings
        # alone again.
        window.add(500, 32, [0, 0, 0, 0])
        assert window.dead() == (1.0, 128, 4, 200)

    def test_flow_share_tells_rare_units_from_dead(self):
        # Dense recordings, steps 1000-1003; no unit active on their 128
        # samples, none passed a gradient back since step 996. Unit 0 did on
        # 5% of its steps: silent 7 steps, 0.95^7 = 0.70 likely, rare. Unit
        # 1 on 60%: 0.4^7 = 0.002, dead. Unit 2 on 5% but over 10 steps of
        # history only (`_FLOW_HISTORY` 16): dead. Unit 3 on 1% and silent
        # for 400 steps: 0.99^400 = 0.018 < `_RARE_CHANCE` (0.07), dead.
        window = UnitActivity(min_samples=128)
        for step in (1000, 1001, 1002):
            window.add(step, 32, [0, 0, 0, 0])
        flow = ([996, 996, 996, 603], [0.05, 0.6, 0.05, 0.01], [996, 996, 10, 603])
        window.add(1003, 32, [0, 0, 0, 0], flow=flow)
        assert window.dead() == (0.75, 128, 4, 1000)
        np.testing.assert_array_equal(window.alive, [True, False, False, False])
        assert window.silent == 1.0  # Unit 0's rare flow included.
        # A flow of another length than the units is not used.
        window.add(1004, 32, [0, 0, 0, 0], flow=([1004], [1.0], [999]))
        assert window.dead() == (1.0, 128, 4, 1001)

    def test_rarely_active_needs_older_recordings(self):
        # Fewer than 8 recordings up to the unit's last activity: judged on
        # the window alone, as at the start of training.
        window = UnitActivity(min_samples=128)
        for step in range(6):
            window.add(step, 32, [int(step % 3 == 0), 1])
        for step in range(6, 10):
            window.add(step, 32, [0, 1])
        assert window.dead(rare=0.5) == (0.5, 128, 4, 6)

    def test_batches_of_one_fill_the_window(self):
        # A whole layer of 8 units inactive on batches of 1: 64 recordings
        # (half of min_samples 128) are needed, more than the 32 recordings
        # a window held before, after which a batch of 1 was never enough.
        window = UnitActivity(min_samples=128)
        for step in range(63):
            window.add(step, 1, [0] * 8)
        assert window.dead() is None  # 63 samples.
        window.add(63, 1, [0] * 8)
        assert window.dead() == (1.0, 64, 64, 0)
        # And 128 recordings of one sample for a partly dead layer.
        window = UnitActivity(min_samples=128)
        for step in range(127):
            window.add(step, 1, [0] * 7 + [1])
        assert window.dead() is None
        window.add(127, 1, [0] * 7 + [1])
        assert window.dead() == (7 / 8, 128, 128, 0)
        window = UnitActivity(min_samples=128, max_recordings=32)
        for step in range(64):
            window.add(step, 1, [0] * 8)
        assert window.dead() is None  # Only the last 32 samples are kept.

    def test_shape_change_starts_again(self):
        window = UnitActivity(min_samples=100)
        window.add(0, 60, [0, 0, 0])
        window.add(1, 60, [0, 0, 0, 0])
        assert window.dead() is None

    @pytest.mark.parametrize(
        "off, back, returned",
        [
            # Units 0-3 (a quarter) silent on 64 samples, then active on 3
            # recordings in a row: they came back.
            (4, 3, [True] * 4 + [False] * 12),
            # Active on only 2 recordings after it: not yet.
            (4, 2, [False] * 16),
            # Unit 0 alone (under an eighth, `_BACK_SHARE`): a rarely
            # active unit's chance.
            (1, 3, [False] * 16),
        ],
    )
    def test_units_that_came_back(self, off, back, returned):
        window = UnitActivity(min_samples=64)
        window.add(0, 32, [1] * 16)
        for step in (1, 2):  # 64 samples: a window's worth.
            window.add(step, 32, [0] * off + [1] * (16 - off))
        for step in range(3, 3 + back):
            window.add(step, 32, [1] * 16)
        assert window.returned.tolist() == returned

    @pytest.mark.parametrize("still, dead", [(True, 0.0), (False, 0.25)])
    def test_units_back_and_off_again(self, still, dead):
        # Units 0-3 came back at steps 3-5 and are off again on steps 6-7
        # (64 samples): not counted dead where the weights barely moved
        # since their last activity (`still` of step 5).
        window = UnitActivity(min_samples=64)
        window.add(0, 32, [1] * 16)
        for step in range(1, 8):
            off = 4 if step in (1, 2, 6, 7) else 0
            window.add(step, 32, [0] * off + [1] * (16 - off))
        asked = []
        result = window.dead(rare=0.25, still=lambda s: asked.append(s) or still)
        assert result == (dead, 64, 2, 6)
        assert asked == [5]


def saturation_run(saturation, steps=(0, 5, 10), output="sigmoid", **kw):
    """Recordings of a two-tanh-layer MLP with this saturation per layer."""
    rules = HealthRules(mlp(["tanh", "tanh"], output=output))
    seq = [recording(s, RELU_RMS[:3], saturation=saturation, **kw) for s in steps]
    return rules, seq


class TestSaturation:
    @pytest.mark.parametrize(
        "activation, fix",
        [
            ("tanh", FIXES[F.SATURATED_ACTIVATIONS]),
            ("sigmoid", FIXES[F.SATURATED_ACTIVATIONS]),
            ("elu", rule_support._FLAT_TAIL_FIX),
            ("selu", rule_support._FLAT_TAIL_FIX),
            ("softplus", rule_support._FLAT_TAIL_FIX),
        ],
    )
    def test_the_fix_follows_the_activation(self, activation, fix):
        # Swapping a hidden sigmoid or tanh for ReLU is the fix; an ELU,
        # SELU or softplus in its flat negative tail (or a ReLU6 at its cap)
        # was put there by a bias, the inputs or a step.
        rules = HealthRules(mlp(["relu", activation], output="softmax"))
        seq = [
            recording(s, RELU_RMS[:3], saturation=[None, 0.9, None]) for s in (0, 5, 10)
        ]
        (finding,) = run(rules, seq)
        assert (finding.mode, finding.layer, finding.fix) == (
            F.SATURATED_ACTIVATIONS,
            "dense_1",
            fix,
        )

    @pytest.mark.parametrize("per, reported", [(8, True), (4, False)])
    def test_one_recording_holds_its_executions_batches(self, per, reported):
        # steps_per_execution 8: the saturation of step 7's recording is
        # over its execution's 8 batches (steps 0-7), as many as `patience`
        # recordings need and over `patience_steps`: reported at 7. An
        # execution of 4 (steps 4-7) is too short alone.
        rules, seq = saturation_run(
            [0.3, 0.9, 0.99], steps=(7,), batch_size=32 * per, activation_steps=per
        )
        rules.execution_steps = per
        found = run(rules, seq)
        expected = [(F.SATURATED_ACTIVATIONS, "dense_1", 0)] if reported else []
        assert modes(found) == expected
        if reported:
            assert "in the flat tails (8 recorded batches in a row, steps 0-7)" in (
                found[0].message
            )

    def test_hidden_layer_saturated(self):
        rules, seq = saturation_run([0.3, 0.9, 0.99])
        found = run(rules, seq)
        # dense_1: 0.9 >= saturation 0.75 for 3 recordings, steps 0-10; the
        # sigmoid output (0.99) is exempt.
        assert modes(found) == [(F.SATURATED_ACTIVATIONS, "dense_1", 0)]
        assert found[0].value == 0.9
        assert found[0].severity == F.FAILURE
        assert found[0].fix == FIXES[F.SATURATED_ACTIVATIONS]
        assert found[0].message == (
            "90% of the outputs of hidden layer 'dense_1' (tanh) are in the flat "
            "tails (3 recordings in a row, steps 0-10): its gradient is nearly "
            "zero there, so it and the layers before it have almost stopped "
            "learning."
        )

    def test_a_bypassed_layer_saturated_is_a_warning(self):
        # dense_1's inputs also reach the output around it (a residual
        # sum's skip connection: `LayerInfo.bypassed`): the layers before it
        # learn on through that path. Probed: a transformer block's
        # Dense(64, tanh) with kernels of stddev 5, 93% in the tails, its
        # model as accurate as its twin's by step 100.
        rules, seq = saturation_run([0.3, 0.9, 0.99])
        rules._info["dense_1"].bypassed = True
        found = run(rules, seq)
        assert modes(found) == [(F.SATURATED_ACTIVATIONS, "dense_1", 0)]
        assert (found[0].value, found[0].severity) == (0.9, F.WARNING)
        assert found[0].message == (
            "90% of the outputs of hidden layer 'dense_1' (tanh) are in the flat "
            "tails (3 recordings in a row, steps 0-10): its gradient is nearly "
            "zero there, so it has almost stopped learning; its inputs also "
            "reach the outputs around it (a skip connection or a parallel "
            "branch), through which the layers before it learn on."
        )

    @pytest.mark.parametrize("oversized_at, named", [(0, True), (None, False)])
    def test_saturated_right_after_an_oversized_update(self, oversized_at, named):
        # A tanh MLP under Adam at lr 0.2 (`/tmp` probe): the first update
        # moved dense_1's weights by 1.6x their norm, its outputs 85% in the
        # tails from step 5 with the loss 1-3x where training began (so no
        # explosion). The streak begins at 1 here, within `patience_steps`
        # (5) of step 0's update: named as the cause, with the fix that
        # lowers the learning rate first.
        rules = HealthRules(mlp(["tanh", "tanh"]))
        ratios = [0.5, 1.6, 0.5] if oversized_at == 0 else [0.5, 0.9, 0.5]
        seq = [
            recording(0, [1e-2] * 3, update_ratio=ratios, saturation=[0.0, 0.0, None])
        ]
        seq += [
            recording(
                s, [1e-2] * 3, update_ratio=[0.3] * 3, saturation=[0.1, 0.85, None]
            )
            for s in range(1, 6)
        ]
        found = run(rules, seq)
        assert modes(found) == [(F.SATURATED_ACTIVATIONS, "dense_1", 1)]
        cause = (
            " It follows the update of step 0, which changed the weights of layer "
            "'dense_1' by 1.6 times their own norm: a step far too large."
        )
        assert found[0].message.endswith(cause) == named
        expected_fix = rule_support._THROWN_SATURATION_FIX if named else None
        assert found[0].fix == (expected_fix or FIXES[F.SATURATED_ACTIVATIONS])

    @pytest.mark.parametrize("begins, named", [(6, True), (10, True), (11, False)])
    def test_saturation_setting_in_after_an_oversized_update(self, begins, named):
        # The same MLP on other batches: the updates after step 0's stay a
        # fifth to half of the weights, and the outputs reach the tails over
        # the next steps (77% from step 5 or 6). A streak beginning within
        # 2 x patience_steps (10) of the update names it; one beginning 11
        # steps after does not.
        rules = HealthRules(mlp(["tanh", "tanh"]))
        seq = [
            recording(
                s,
                [1e-2] * 3,
                update_ratio=[0.5, 1.6, 0.5] if s == 0 else [0.3] * 3,
                saturation=[0.0, 0.5, None],
            )
            for s in range(begins)
        ]
        seq += [
            recording(
                s, [1e-2] * 3, update_ratio=[0.1] * 3, saturation=[0.1, 0.85, None]
            )
            for s in range(begins, begins + 5)
        ]
        found = run(rules, seq)
        assert modes(found) == [(F.SATURATED_ACTIVATIONS, "dense_1", begins)]
        assert ("It follows the update of step 0" in found[0].message) == named
        assert (found[0].fix == rule_support._THROWN_SATURATION_FIX) == named

    @pytest.mark.parametrize(
        "data, found",
        [
            # Outside the tails 1 - 0.875 = 0.125 of the time, at least half
            # the data's (1 - 1.0) / 2 = 0 and (1 - 0.75) / 2 = 0.125:
            # data-like outputs (a generator's tanh for images of +-1).
            (1.0, []),
            (0.75, []),
            # (1 - 0.625) / 2 = 0.1875 > 0.125: more saturated than the data.
            (0.625, [(F.SATURATED_ACTIVATIONS, "dense_1", 0)]),
        ],
    )
    def test_layer_that_could_make_the_data(self, data, found):
        # dense_0 (0.875 too) could not make the data: reported whatever.
        rules, seq = saturation_run(
            [0.875, 0.875, 0.99], data_saturation={"dense_1": data}
        )
        expected = [(F.SATURATED_ACTIVATIONS, "dense_0", 0), *found]
        assert modes(run(rules, seq)) == expected

    def test_at_and_below_the_threshold(self):
        # 0.74 < 0.75 (dense_1); the first layer's 0.75 >= 0.75 with no input
        # scale to blame.
        rules, seq = saturation_run([0.75, 0.74, 1.0], steps=range(20))
        assert modes(run(rules, seq)) == [(F.SATURATED_ACTIVATIONS, "dense_0", 0)]

    def test_not_before_the_span(self):
        rules, seq = saturation_run([0.3, 0.9, 0.99], steps=range(5))
        assert run(rules, seq[:4]) == []  # Steps 0-3: span 4 < 5.
        assert modes(run(rules, seq[4:])) == [(F.SATURATED_ACTIVATIONS, "dense_1", 0)]

    def test_confident_sigmoid_output_is_fine(self):
        rules = HealthRules(mlp(["relu"], output="sigmoid"))
        seq = [recording(s, RELU_RMS[:2], saturation=[None, 1.0]) for s in range(20)]
        assert run(rules, seq) == []

    def test_activation_layer_after_dense_is_the_output(self):
        layers = mlp(["tanh"], output=None) + [
            LayerInfo("dense_2", "Activation", "sigmoid", False, 2)
        ]
        rules = HealthRules(layers)
        seq = [
            recording(s, [1e-2, 1e-2, None], saturation=[None, None, 1.0])
            for s in range(20)
        ]
        # The last layer with weights and everything after it are outputs.
        assert rules.output_layers == {"dense_1", "dense_2"}
        assert rules.input_layers == {"dense_0"}
        assert run(rules, seq) == []

    def test_output_layers_override(self):
        rules = HealthRules(mlp(["tanh"], output="sigmoid"), output_layers=["dense_0"])
        # The first weighted layer is an output: no input layer.
        assert rules.input_layers == frozenset()
        seq = [
            recording(s, [1e-2, 1e-2], saturation=[1.0, 0.8], input_scale=10.0)
            for s in (0, 5, 10)
        ]
        # dense_1 is judged as any hidden layer (0.8 >= 0.75, not 0.95).
        assert modes(run(rules, seq)) == [(F.SATURATED_ACTIVATIONS, "dense_1", 0)]

    @pytest.mark.parametrize("share, suspected", [(0.74, False), (0.75, True)])
    def test_a_first_saturated_recording_asks_for_more(self, share, suspected):
        # dense_1 at `share` of its outputs in the tails, at saturation 0.75
        # or more: dense recordings from the next step confirm it soon (a
        # probe: sigmoid kernels growing 1% a step, 75% in the tails by step
        # 280 when recordings were 80 steps apart, reported at step 457).
        rules, seq = saturation_run([0.3, share, None], steps=(100, 180, 181, 182))
        run(rules, seq[:1])
        assert rules.suspected is suspected
        # At 0.75, steps 100, 180 and 181 (3 recordings over 5 steps or
        # more) confirm it at 181; at 182 it is reported: no more asked for.
        found = run(rules, seq[1:])
        assert len(found) == (1 if suspected else 0)
        assert rules.suspected is False

    def test_converged_model(self):
        rules, seq = saturation_run([0.9, 0.9, None], steps=range(1, 10), loss=1e-4)
        first = recording(0, RELU_RMS[:3], loss=1.0, saturation=[0.0, 0.0, None])
        # 1e-4 <= 1e-3 * 1.0 (the first recorded loss): converged.
        assert run(rules, [first, *seq]) == []

    def test_not_converged(self):
        rules, seq = saturation_run([0.9, 0.9, None], steps=range(1, 10), loss=1e-2)
        first = recording(0, RELU_RMS[:3], loss=1.0, saturation=[0.0, 0.0, None])
        # 1e-2 > 1e-3 * 1.0: both hidden layers, from step 1.
        assert modes(run(rules, [first, *seq])) == [
            (F.SATURATED_ACTIVATIONS, "dense_0", 1),
            (F.SATURATED_ACTIVATIONS, "dense_1", 1),
        ]

    @pytest.mark.parametrize("loss, reported", [(0.5, False), (0.51, True)])
    def test_not_judged_once_the_model_has_learned(self, loss, reported):
        # A model trained long (a tanh MLP at batch 8: 78% of its second
        # layer's outputs in the tails by step 5500 of 6000, its loss at
        # 3-11% of the early loss since step 320): the early loss is the
        # median of the first 5 steps' (1.0), the recent one of the last 32
        # (`loss`); fitted at 0.5 * 1.0 and below.
        rules, seq = saturation_run([0.3, 0.9, None], steps=(100, 105, 110), loss=loss)
        steps = [(s, 1.0, 1e-3, 1.0 if s < 5 else loss) for s in range(100)]
        rules.observe_quiet(steps)
        found = run(rules, seq)
        assert modes(found) == (
            [(F.SATURATED_ACTIVATIONS, "dense_1", 100)] if reported else []
        )

    @pytest.mark.parametrize("loss, reported", [(0.5, False), (3.4, True)])
    def test_a_model_thrown_off_what_it_learned(self, loss, reported):
        # The last 32 steps' median loss 0.3 <= 0.5 x 1.0 (fitted), but the
        # recordings' own loss is `loss`: at 3.4 the model was thrown back
        # (a probe: a tanh layer's bias set to +20 at step 1000 of a run
        # at 0.13, its outputs all +-1, the loss 3.4 then at chance; it
        # was reported 300 steps late, when the median caught up). At 0.5
        # a recorded batch worse than the others: still fitted.
        rules, seq = saturation_run([0.3, 0.9, None], steps=(100, 105, 110), loss=loss)
        steps = [(s, 1.0, 1e-3, 1.0 if s < 5 else 0.3) for s in range(100)]
        rules.observe_quiet(steps)
        found = run(rules, seq)
        assert modes(found) == (
            [(F.SATURATED_ACTIVATIONS, "dense_1", 100)] if reported else []
        )

    def test_falling_from_a_first_spike_is_not_learning(self):
        # Far too large a step: the loss of the first 5 steps 1.0, 10, 12,
        # 12, 12 (median 12), the last 32 at 2.0 <= 0.5 * 12 but above
        # 0.5 * 1.0, the first step's: not fitted, reported.
        rules, seq = saturation_run([0.3, 0.9, None], steps=(100, 105, 110), loss=2.0)
        early = [1.0, 10.0, 12.0, 12.0, 12.0]
        steps = [(s, 1.0, 1e-3, early[s] if s < 5 else 2.0) for s in range(100)]
        rules.observe_quiet(steps)
        assert modes(run(rules, seq)) == [(F.SATURATED_ACTIVATIONS, "dense_1", 100)]

    @pytest.mark.parametrize("batch_size, reported", [(2, False), (32, True)])
    def test_the_start_of_training_over_32_samples(self, batch_size, reported):
        # A tanh regression on batches of 2 (a JAX probe: its second layer
        # 78% in the tails from step 3242 of 4000 while it fitted): the
        # first 5 losses 0.082, 1.699, 0.43, 0.591, 1.429 (median 0.591),
        # then to step 15 cycling 0.4-1.0 (the median of the first 16 steps,
        # 32 samples: 0.7), the last 32 at 0.11. On batches of 2 training
        # began at 0.7: 0.11 <= 0.5 x min(0.591, 0.7), fitted. Were the
        # batches of 32, the first step alone (0.082): not fitted, reported.
        early = [0.082, 1.699, 0.43, 0.591, 1.429]
        cycle = [0.4, 0.6, 0.8, 1.0]
        losses = early + [cycle[s % 4] for s in range(5, 16)]
        steps = [(s, 1.0, 1e-3, losses[s] if s < 16 else 0.11) for s in range(100)]
        rules, seq = saturation_run(
            [0.3, 0.9, None], steps=(100, 105, 110), loss=0.11, batch_size=batch_size
        )
        rules.observe_quiet(steps)
        found = run(rules, seq)
        assert modes(found) == (
            [(F.SATURATED_ACTIVATIONS, "dense_1", 100)] if reported else []
        )

    def test_not_judged_after_an_explosion(self):
        # Saturation once the weights blew up is a consequence.
        rules, seq = saturation_run([0.3, 0.9, None], steps=range(7, 20))
        found = run(rules, [*events([1, 1, 1, 1, 1, 500, 800]), *seq])
        assert modes(found) == [(F.EXPLODING_GRADIENTS, None, 5)]

    def test_unstandardized_inputs(self):
        rules, seq = saturation_run([0.6, 0.2, None], input_scale=10.0)
        found = run(rules, seq)
        # First weighted layer, 0.6 >= input_saturation 0.5 and 10 > 2; with
        # raw inputs it needs raw_input_saturation 0.95 to be saturated.
        assert modes(found) == [(F.UNSTANDARDIZED_INPUTS, "dense_0", 0)]
        assert found[0].severity == F.WARNING
        assert found[0].value == 10.0
        assert found[0].fix == FIXES[F.UNSTANDARDIZED_INPUTS]
        assert found[0].message == (
            "60% of the outputs of hidden layer 'dense_0' (tanh) are in the flat "
            "tails (3 recordings in a row, steps 0-10), and the inputs are not "
            "standardized (a feature's mean or spread is 10, against about 1): "
            "large inputs push the first layer into its flat tails, where it "
            "learns slowly."
        )

    @pytest.mark.parametrize("scale", [None, 1.5, 2.0])
    def test_standardized_inputs(self, scale):
        # input_scale not > 2: no unstandardized_inputs; 0.6 < 0.75.
        rules, seq = saturation_run([0.6, 0.2, None], input_scale=scale)
        assert run(rules, seq) == []

    @pytest.mark.parametrize("scale", [None, 1.5])
    def test_first_layer_saturated_with_standardized_inputs(self, scale):
        # 0.8 >= 0.75: the raw-input limit 0.95 does not apply.
        rules, seq = saturation_run([0.8, 0.2, None], input_scale=scale)
        assert modes(run(rules, seq)) == [(F.SATURATED_ACTIVATIONS, "dense_0", 0)]

    def test_first_layer_below_input_saturation(self):
        rules, seq = saturation_run([0.4, 0.2, None], input_scale=10.0)
        assert run(rules, seq) == []

    def test_raw_inputs_only_excuse_the_first_layer(self):
        # dense_1 is no input layer: no unstandardized_inputs at 0.6, and
        # saturated at 0.8 >= 0.75 (not the raw-input 0.95).
        rules, seq = saturation_run([0.2, 0.6, None], input_scale=10.0)
        assert run(rules, seq) == []
        rules, seq = saturation_run([0.2, 0.8, None], input_scale=10.0)
        assert modes(run(rules, seq)) == [(F.SATURATED_ACTIVATIONS, "dense_1", 0)]

    def test_first_layer_partly_saturated_by_raw_inputs(self):
        # 0.9 < raw_input_saturation 0.95: only the cause is reported.
        rules, seq = saturation_run([0.9, 0.2, None], input_scale=10.0)
        assert modes(run(rules, seq)) == [(F.UNSTANDARDIZED_INPUTS, "dense_0", 0)]

    def test_first_layer_saturated_and_unstandardized(self):
        # 0.96 >= 0.95 and >= 0.5, and its gradient RMS 1e-5 under 0.01 of
        # the largest other layer's (1.8e-2): both.
        rules = HealthRules(mlp(["tanh", "tanh"], output="sigmoid"))
        rms = [1e-5, *RELU_RMS[1:3]]
        seq = [
            recording(s, rms, saturation=[0.96, 0.2, None], input_scale=10.0)
            for s in (0, 5, 10)
        ]
        found = run(rules, seq)
        assert modes(found) == [
            (F.SATURATED_ACTIVATIONS, "dense_0", 0),
            (F.UNSTANDARDIZED_INPUTS, "dense_0", 0),
        ]
        assert [(f.severity, f.value) for f in found] == [
            (F.FAILURE, 0.96),
            (F.WARNING, 10.0),
        ]
        # The failure names the inputs too: a first layer has none before it.
        assert found[0].message == (
            "96% of the outputs of hidden layer 'dense_0' (tanh) are in the flat "
            "tails (3 recordings in a row, steps 0-10): its gradient is nearly "
            "zero there, so it has almost stopped learning. The inputs are not "
            "standardized (a feature's mean or spread is 10, against about 1): "
            "they push it into its tails."
        )
        assert found[0].fix == (
            "Standardize the inputs (zero mean, unit variance per feature), e.g. "
            "with a `keras.layers.Normalization` layer adapted to the training "
            "data; with standardized inputs, if the layer stays in its tails, use "
            "ReLU instead of sigmoid/tanh."
        )

    def test_first_layer_in_the_tails_that_still_learns(self):
        # 0.96 in the tails, but its gradient RMS 1e-2 is the largest in the
        # model (its kernel's gradient is the large inputs times what the
        # outputs left pass back). Probed: 0-255 pixels into a sigmoid MLP,
        # 97% of its first layer in the tails, 100% accuracy in 128 steps,
        # told as a failure. Only the cause, a warning.
        rules, seq = saturation_run([0.96, 0.2, None], input_scale=10.0)
        found = run(rules, seq)
        assert modes(found) == [(F.UNSTANDARDIZED_INPUTS, "dense_0", 0)]
        assert found[0].severity == F.WARNING

    def test_first_weighted_layer_is_the_input_layer(self):
        layers = [
            LayerInfo("rescale", "Rescaling", None, False, 0),
            *[
                LayerInfo(f"dense_{i}", "Dense", a, True, i + 1)
                for i, a in enumerate(["tanh", "tanh", "sigmoid"])
            ],
        ]
        rules = HealthRules(layers)
        assert rules.input_layers == {"dense_0"}
        assert rules.output_layers == {"dense_2"}


ATTENTION_LAYERS = [
    LayerInfo("embed", "Dense", None, True, 0),
    LayerInfo("mha/query", "EinsumDense", None, True, 1),
    LayerInfo("mha", "MultiHeadAttention", None, False, 2, attention=True),
    LayerInfo("out", "Dense", "softmax", True, 3),
]


def attention_run(shares, steps=(0, 5, 10), **kw):
    """Recordings of `ATTENTION_LAYERS` with these shares of one-hot queries."""
    names = [info.name for info in ATTENTION_LAYERS]
    return [
        recording(
            s,
            [1e-2, 1e-2, None, 1e-1],
            names=names,
            saturation=[None, None, share, None],
            **kw,
        )
        for s, share in zip(steps, shares)
    ]


class TestAttentionSaturation:
    def test_one_hot_from_the_start(self):
        # 90% of the queries one-hot (>= saturation 0.75) on 3 recordings
        # over steps 0-10, from the first: its own failure, the fix about
        # the scores' scale.
        (found,) = run(HealthRules(ATTENTION_LAYERS), attention_run([0.9] * 3))
        assert (found.mode, found.layer, found.step) == (
            F.SATURATED_ACTIVATIONS,
            "mha",
            0,
        )
        assert (found.severity, found.value) == (F.FAILURE, 0.9)
        assert found.fix == rule_support._ATTENTION_FIX
        assert found.message == (
            "90% of the queries of attention layer 'mha' put at least 99% of "
            "their weight on one key, from the start of training (3 "
            "recordings in a row, steps 0-10): its attention scores are so "
            "large that its softmax is one-hot, where it passes almost no "
            "gradient back, so the attention can hardly learn where to look."
        )

    def test_not_once_it_was_seen_spread(self):
        # Attention that was spread at first and sharpened later (a head
        # that learned to look at one position) is no failure, however
        # long it stays one-hot and whatever the loss.
        shares = [0.5, 0.9, 0.9, 0.9, 0.95]
        seq = attention_run(shares, steps=(0, 5, 10, 15, 20))
        assert run(HealthRules(ATTENTION_LAYERS), seq) == []

    @pytest.mark.parametrize(
        "share, expected",
        [
            (0.6, [F.UNSTANDARDIZED_INPUTS]),
            (0.9, [F.UNSTANDARDIZED_INPUTS]),
            (0.97, [F.SATURATED_ACTIVATIONS, F.UNSTANDARDIZED_INPUTS]),
        ],
    )
    def test_attention_on_the_raw_inputs(self, share, expected):
        # Its query projection is the model's first layer: with inputs of
        # scale 10 (over `input_scale` 2) one-hot attention from 0.5
        # (`input_saturation`) names the inputs as the cause (a warning),
        # and from 0.95 (`raw_input_saturation`) is a failure too, as a
        # first tanh layer's saturation.
        layers = ATTENTION_LAYERS[1:]
        rules = HealthRules(layers)
        assert rules.input_layers == {"mha/query"}
        names = [info.name for info in layers]
        seq = [
            recording(
                s,
                [1e-2, None, 1e-1],
                names=names,
                saturation=[None, share, None],
                input_scale=10.0,
            )
            for s in (0, 5, 10)
        ]
        found = run(rules, seq)
        assert modes(found) == [(mode, "mha", 0) for mode in expected]
        warning = found[-1]
        assert (warning.severity, warning.value) == (F.WARNING, 10.0)
        assert warning.message == (
            f"{share:.0%} of the queries of attention layer 'mha' put at least "
            "99% of their weight on one key (3 recordings in a row, steps "
            "0-10), and the inputs are not standardized (a feature's mean or "
            "spread is 10, against about 1): large inputs make its attention "
            "scores so large that its softmax is one-hot, where it learns "
            "slowly."
        )

    @pytest.mark.parametrize("loss, told", [(0.97, False), (1.2, True)])
    def test_not_for_a_model_that_predicts(self, loss, told):
        # A classifier over 4 classes (knowing nothing: ln 4 = 1.386) trained
        # on from a checkpoint, its attention exactly one-hot on the right
        # key and its loss at its floor 0.97 (probed): it learned through
        # that attention (0.97 < 0.8 ln 4 = 1.11). At 1.2 it predicts
        # little better than knowing nothing.
        rules = HealthRules(ATTENTION_LAYERS)
        rules.uninformed_loss = (math.log(4), "cross-entropy over 4 classes")
        found = run(rules, attention_run([1.0] * 3, loss=loss))
        assert modes(found) == ([(F.SATURATED_ACTIVATIONS, "mha", 0)] if told else [])

    @pytest.mark.parametrize("loss, told", [(0.1, False), (0.9, True)])
    def test_not_once_the_model_fitted(self, loss, told):
        # One-hot from the first recording (step 30) but the loss fell to a
        # tenth: the model learned through it (`fitted_loss_ratio` 0.5); to
        # 0.9 it did not.
        rules = HealthRules(ATTENTION_LAYERS)
        early = [event(s, 1.0, loss=1.0) for s in range(8)]
        late = [event(s, 1.0, loss=loss) for s in range(8, 30)]
        seq = attention_run([0.9] * 3, steps=(30, 35, 40), loss=loss)
        found = run(rules, [*early, *late, *seq])
        assert modes(found) == ([(F.SATURATED_ACTIVATIONS, "mha", 30)] if told else [])


def two_heads(flag="sigmoid", activation_layer=False):
    """LayerInfo of `cases.saturated_head_of_two`'s model: a ReLU trunk and
    a classifier head `cls` on logits, a ReLU branch and a `flag` head, with
    graph distances (or `flag` linear, then an activation layer)."""
    layers = [
        LayerInfo("trunk", "Dense", "relu", True, 0, distance=1),
        LayerInfo("flag_hidden", "Dense", "relu", True, 1, distance=1),
        LayerInfo("cls", "Dense", None, True, 2, distance=0, upstream=("trunk",)),
    ]
    if not activation_layer:
        return layers + [
            LayerInfo(
                "flag", "Dense", flag, True, 3, distance=0, upstream=("flag_hidden",)
            )
        ]
    return layers + [
        LayerInfo(
            "flag", "Dense", None, True, 3, distance=1, upstream=("flag_hidden",)
        ),
        LayerInfo(
            "flag_act", "Activation", flag, False, 4, distance=0, upstream=("flag",)
        ),
    ]


NAMES_OF_TWO = ["trunk", "flag_hidden", "cls", "flag"]


def two_heads_run(
    rules, flag_norms, loss=1.6, names=NAMES_OF_TWO, cls=0.4, saturation=None
):
    """One recording a step from 0, with the flag head's gradient norm from
    `flag_norms` (its branch's a quarter of it), the classifier's `cls`
    and the trunk's 0.5 (`cases.saturated_head_of_two` measured 0.02-0.09
    RMS), and the flag's saturation from `saturation` when given: (finding,
    step reported) pairs."""
    found = []
    for step, norm in enumerate(flag_norms):
        norms = {"trunk": 0.5, "flag_hidden": norm / 4, "cls": cls, "flag": norm}
        rms = [None if norms.get(n) is None else norms[n] / 10 for n in names]
        flag = None if saturation is None else saturation[step]
        stats = recording(
            step,
            rms,
            names=names,
            loss=loss,
            grad_norm=[norms.get(n) for n in names],
            saturation=[flag if n == "flag" else None for n in names],
        )
        found += [(f, step) for f in rules.observe(stats)]
    return found


class TestSilentOutputs:
    def test_one_saturated_head_of_two(self):
        # Probed: the flag head's gradient 4.4e-13 on a loss of 2.27 (a
        # billionth of its root is 1.5e-9), the classifier's 1.07: five
        # recordings in a row (steps 0-4: `patience` 3 and `patience_steps`
        # 5), reported at step 4 as the flag's saturation, with the bias fix.
        ((finding, reported),) = two_heads_run(HealthRules(two_heads()), [4e-13] * 8)
        assert (finding.mode, finding.layer, finding.step, reported) == (
            F.SATURATED_ACTIVATIONS,
            "flag",
            0,
            4,
        )
        assert finding.severity == F.FAILURE
        assert finding.value == pytest.approx(4e-13)
        assert finding.fix == start_rules._BIAS_FIX
        assert finding.message == (
            "The gradient norm of output layer 'flag' (sigmoid) was 4e-13 at "
            "step 4, below a billionth of the square root of the loss (1.6), "
            "for 5 recordings in a row (steps 0-4), while the model's other "
            "outputs got up to 0.4: its sigmoid is in the flat tail for every "
            "sample, so this output learns nothing, nor do the layers that "
            "serve only it."
        )

    @pytest.mark.parametrize("norm", [0.0, 1.4e-7])
    def test_a_head_saturated_from_the_first_recording(self, norm):
        # Probed: a sigmoid head with bias +30 (its gradient exactly 0) or
        # +16 (1.4e-7, over a billionth of the loss's root) under MSE beside
        # a classifier and a regressor that learn: 100% of its outputs in
        # the tails from step 0, its loss flat for 128 steps. Under 1e-4 of
        # the classifier's 0.4 at every recording.
        found = two_heads_run(
            HealthRules(two_heads()), [norm] * 8, saturation=[1.0] * 8
        )
        ((finding, reported),) = found
        assert (finding.mode, finding.layer, finding.step, reported) == (
            F.SATURATED_ACTIVATIONS,
            "flag",
            0,
            4,
        )
        assert finding.fix == start_rules._BIAS_FIX
        assert finding.message == (
            f"The gradient norm of output layer 'flag' (sigmoid) was {norm:.2g} "
            "at step 4, under 0.0001 of the model's other outputs', for 5 "
            "recordings in a row (steps 0-4), while the model's other outputs "
            "got up to 0.4: 100% of its outputs are in the flat tails of its "
            "sigmoid, as from the first recording, so this output learns "
            "nothing, nor do the layers that serve only it."
        )

    @pytest.mark.parametrize(
        "norms, saturation",
        [
            # Saturated only from the second recording: a head that fitted
            # its labels (confident outputs, their error near 0).
            ([0.0] * 8, [0.2] + [1.0] * 7),
            # Under the saturation threshold 0.75 (an output no loss reads,
            # its gradient exactly 0 by design, sits where it began).
            ([0.0] * 8, [0.7] * 8),
            # A gradient over 1e-4 of the others' 0.4.
            ([4.1e-5] * 8, [1.0] * 8),
        ],
        ids=["later", "not_saturated", "flowing"],
    )
    def test_not_a_head_saturated_from_the_start(self, norms, saturation):
        found = two_heads_run(HealthRules(two_heads()), norms, saturation=saturation)
        assert [f for f, _ in found if f.mode == F.SATURATED_ACTIVATIONS] == []

    def test_a_head_before_another_is_no_hidden_layer(self):
        # Outputs of several: the flag head comes before the classifier in
        # model order, so it is not among the layers after the last with
        # weights (`output_layers`). Saturated and still learning (0.01,
        # over 1e-4 of the classifier's 0.4): not the hidden layers' rule.
        layers = two_heads()
        order = [layers[0], layers[1], layers[3], layers[2]]
        names = [info.name for info in order]
        rules = HealthRules(order)
        assert rules.output_layers == {"cls"}
        found = two_heads_run(rules, [0.01] * 8, names=names, saturation=[1.0] * 8)
        assert [f for f, _ in found if f.mode == F.SATURATED_ACTIVATIONS] == []

    def test_an_activation_layer_after_the_head(self):
        # `Dense(1)` then `Activation("sigmoid")`: the gradient is the Dense
        # layer's, the activation the output's.
        names = ["trunk", "flag_hidden", "cls", "flag", "flag_act"]
        rules = HealthRules(two_heads(activation_layer=True))
        found = two_heads_run(rules, [4e-13] * 8, names=names)
        assert [(f.mode, f.layer, f.step, at) for f, at in found] == [
            (F.SATURATED_ACTIVATIONS, "flag", 0, 4)
        ]

    @pytest.mark.parametrize(
        "flag, norms, cls",
        [
            # A billionth of the root of 1.6 is 1.26e-9: just over it.
            ("sigmoid", [1.3e-9] * 8, 0.4),
            # Exactly 0: a loss weight of 0, or an output no loss reads.
            ("sigmoid", [0.0] * 8, 0.4),
            # No saturating activation: a linear head's gradient is its error.
            (None, [4e-13] * 8, 0.4),
            ("relu", [4e-13] * 8, 0.4),
            # Every output's gradient negligible: the global norm tells it.
            ("sigmoid", [4e-13] * 8, 1e-12),
            # A step with a gradient in between: never 5 steps in a row.
            ("sigmoid", [4e-13] * 4 + [1e-3] + [4e-13] * 3, 0.4),
        ],
        ids=["over", "zero", "linear", "relu", "all", "broken"],
    )
    def test_not(self, flag, norms, cls):
        rules = HealthRules(two_heads(flag))
        found = two_heads_run(rules, norms, cls=cls)
        assert [f for f, _ in found if f.mode == F.SATURATED_ACTIVATIONS] == []

    def test_not_with_one_output(self):
        # The global norm's rule (`ZeroGradientRules`) is the one-output case
        # (here the branch's gradient, 1e-14 RMS against the trunk's 0.05, is
        # reported as vanishing).
        layers = two_heads()
        rules = HealthRules(
            [
                dataclasses.replace(info, distance=1) if info.name == "cls" else info
                for info in layers
            ]
        )
        found = two_heads_run(rules, [4e-13] * 8)
        assert [(f.mode, f.layer) for f, _ in found] == [
            (F.VANISHING_GRADIENTS, "flag_hidden")
        ]

    def test_not_without_the_layer_graph(self):
        # A subclassed model: which layers are outputs is not known.
        layers = [dataclasses.replace(info, distance=None) for info in two_heads()]
        found = two_heads_run(HealthRules(layers), [4e-13] * 8)
        assert [f for f, _ in found if f.mode == F.SATURATED_ACTIVATIONS] == []


def test_healthy_training_has_no_findings():
    # A healthy ReLU MLP as measured over 400 Adam steps: gradients shrink as
    # the loss falls, normal sparsity, a few dead units (never half).
    rules = HealthRules(mlp(["relu"] * 3))
    seq = []
    for i in range(40):
        decay = 0.9**i
        seq.append(
            recording(
                10 * i,
                [r * decay for r in RELU_RMS],
                loss=1.1 * decay**2,
                global_norm=0.5 * decay,
                learning_rate=1e-3,
                batch_size=32,
                input_scale=1.0,
                unit_activity=[[5, 0, 7, 3], [0, 2, 9, 1], [4, 0, 1, 6], None],
                update_ratio=[1e-3, 2e-3, 2e-3, 3e-3],
            )
        )
    assert run(rules, seq) == []
    assert rules.findings == []


def test_separate_activation_layers_do_not_hide_vanishing():
    # Dense -> Activation("sigmoid") pairs: the activation layers have no
    # weights; the next level closer to the loss is the next Dense layer.
    layers, rms = [], []
    for i, r in enumerate(SIGMOID_RMS[:-1]):
        layers.append(LayerInfo(f"dense_{i}", "Dense", None, True, 2 * i))
        layers.append(LayerInfo(f"act_{i}", "Activation", "sigmoid", False, 2 * i + 1))
        rms += [r, None]
    layers.append(LayerInfo("dense_6", "Dense", "softmax", True, 12))
    rms.append(SIGMOID_RMS[-1])
    found = vanishing(rms, layers=layers)
    assert found.keys() == SIGMOID_FOUND.keys()
    for name, (r, ratio) in SIGMOID_FOUND.items():
        assert found[name] == (r, pytest.approx(ratio, rel=1e-12))


def test_nan_recording_of_a_seen_step_blames_the_step_before():
    # Steps 0-4 at norm 1 and step 5 at 500 (a jump: 500 >= 10 * 1, but not
    # over the limit 100 * 1 ... for two steps); then the recording of step 5
    # has a NaN loss: the norm before step 5 was 1, so no explosion.
    rules = HealthRules(mlp(["relu", "relu"]))
    run(rules, events([1.0] * 5 + [500.0]))
    found = run(rules, [recording(5, [1e-2] * 3, loss=math.nan, global_norm=500.0)])
    assert modes(found) == [(F.NON_FINITE, None, 5)]
    assert "normal (last finite norm 1)" in found[0].message


def gru_and_head():
    """LayerInfo of a GRU (its cell's weights, as the callback names them)
    and a Dense output layer."""
    return [
        LayerInfo("rnn/gru_cell", "GRUCell", None, True, 0),
        LayerInfo("out", "Dense", None, True, 1),
    ]


def gru_recording(step, ratio, weight_norm=45.0, rms=(2e3, 0.05), loss=1.4):
    """A recording of `gru_and_head` with 3,600 weights in the GRU (norm over
    RMS 60) and the head's update 0.02 of its weights."""
    return recording(
        step,
        list(rms),
        loss=loss,
        names=["rnn/gru_cell", "out"],
        grad_norm=[60 * rms[0], 16 * rms[1]],
        weight_norm=[weight_norm, 2.5],
        update_ratio=[ratio, 0.02],
    )


class TestWipedWeights:
    """One update of 10x a layer's weights' norm and of 1 or more per weight
    (RMS) replaces them: an explosion at once (`update_rules._wiped`). A
    probe: a GRU whose recurrent kernel is 8x Keras's orthogonal one, under
    SGD at 0.1: a global norm of 1.2e5 at step 0, its update 274x the
    weights (206 per weight), then small gradients through its saturated
    gates and the loss at chance; no other rule saw it."""

    def test_one_update_replaces_the_weights(self):
        rules = HealthRules(gru_and_head())
        # 274 x 45 / 60 = 205.5 per weight >= 1; 45 / 60 = 0.75 >= 0.01
        # before it.
        found = run(rules, [gru_recording(0, 274.0)])
        assert modes(found) == [(F.EXPLODING_GRADIENTS, "rnn/gru_cell", 0)]
        assert found[0].message == (
            "The update of step 0 changed the weights of layer 'rnn/gru_cell' by "
            "274 times their own norm (206 per weight, RMS): updates that large "
            "replace the layer's weights; the gradients exploded."
        )
        assert found[0].fix == rule_support._RECURRENT_FIX

    def test_the_first_update_of_a_huge_first_norm_is_the_initial_weights(self):
        # A classifier (no regression targets) on standardized inputs whose
        # first global norm, 1.2e7, is over any healthy model's (1e6): its
        # first update replaced the weights because its initial weights
        # blew the gradients up, not because the step was too large (an
        # embedding and SimpleRNN classifier, recurrent kernel drawn with
        # stddev 1, under SGD: told with "lower the learning rate", "add
        # batch normalization").
        rules = HealthRules(gru_and_head())
        rules.uninformed_loss = (math.log(2), "binary cross-entropy")
        first = dataclasses.replace(
            gru_recording(0, 274.0), global_norm=1.2e7, input_scale=1.0
        )
        (found,) = run(rules, [first])
        assert found.message.endswith(
            "the gradients exploded. It was the first update, so the initial "
            "weights are the likely cause: the inputs are standardized (their "
            "largest feature mean or spread 1) and a classifier has no regression "
            "targets."
        )
        assert found.fix == rule_support._INIT_FIX

    @pytest.mark.parametrize(
        "ratio, weight_norm",
        [
            (9.9, 45.0),  # Under 10x the weights.
            (100.0, 0.5),  # 100 x 0.5 / 60 = 0.83 per weight < 1.
            (1e5, 0.05),  # Near 0 before (RMS 8e-4 < 0.01: LayerScale).
        ],
        ids=["under_10x", "small_per_weight", "initialised_near_zero"],
    )
    def test_not_a_replacement(self, ratio, weight_norm):
        rules = HealthRules(gru_and_head())
        rms = (1e-3, 0.05)  # No gradient grown over the head's (`_grown`).
        assert run(rules, [gru_recording(0, ratio, weight_norm, rms)]) == []

    @pytest.mark.parametrize("surge", [True, False], ids=["surge", "edit"])
    def test_growth_between_recordings_across_a_surge(self, surge):
        # Recorded at step 100 (norm 45), then steps 101-199 not recorded;
        # at step 200 the weights' norm is 1.2e4 (267x, 200 per weight).
        # With a step over the explosion limit between (a norm of 500 at
        # step 150, against 1 before: 500 > 100 x 1, one step, under the
        # spike's 1e4x) an update grew them; without one the weights were
        # changed from outside (an edit, a restore): not judged.
        rules = HealthRules(gru_and_head())
        quiet = (1e-3, 0.05)
        seq = [event(s, 1.0, loss=1.4) for s in range(100)]
        seq.append(gru_recording(100, 1e-3, 45.0, quiet))
        seq += [event(s, 500.0 if surge and s == 150 else 1.0) for s in range(101, 200)]
        seq.append(gru_recording(200, 1e-3, 1.2e4, quiet))
        found = [f for f in run(rules, seq) if f.layer == "rnn/gru_cell"]
        if not surge:
            assert found == []
            return
        assert modes(found) == [(F.EXPLODING_GRADIENTS, "rnn/gru_cell", 199)]
        assert found[0].message.startswith(
            "The weights of layer 'rnn/gru_cell' grew from norm 45 (step 100) to "
            "1.2e+04 (step 200), 267x (200 per weight, RMS)"
        )


class TestGradientsGrowingBack:
    """A layer whose gradient RMS stays 1e3 times the output layer's (a
    recurrent layer's 10x, where its inputs are standardized) for
    `patience` recordings is exploding (`gradient_rules._grown`): the GRU
    of `TestWipedWeights` under Adam, whose steps stay bounded, got 4e4x
    its head's at every recording with the loss at chance."""

    @pytest.mark.parametrize("ratio, reported", [(999.0, False), (1000.0, True)])
    def test_patience_recordings(self, ratio, reported):
        # 3 recordings spanning 5 steps (patience, patience_steps).
        rules = HealthRules(gru_and_head())
        seq = [gru_recording(s, 1e-3, rms=(0.05 * ratio, 0.05)) for s in (0, 2, 4)]
        found = run(rules, seq)
        if not reported:
            assert found == []
            return
        assert modes(found) == [(F.EXPLODING_GRADIENTS, "rnn/gru_cell", 0)]
        assert found[0].message == (
            "Layer 'rnn/gru_cell' gets gradients with RMS 50, 1e+03 times those "
            "of the layers nearest the loss, for 3 recordings in a row (steps "
            "0-4): the gradient grows on its way back through its time steps "
            "(the recurrent kernel multiplies it at each); the gradients are "
            "exploding."
        )
        assert found[0].fix == rule_support._RECURRENT_FIX

    def test_not_two_recordings(self):
        rules = HealthRules(gru_and_head())
        seq = [gru_recording(s, 1e-3, rms=(100.0, 0.05)) for s in (0, 2)]
        seq.append(gru_recording(4, 1e-3, rms=(0.25, 0.05)))  # 5x: healthy.
        assert run(rules, seq) == []

    @pytest.mark.parametrize(
        "ratio, scale, loss, reported",
        [
            (17.0, 0.5, 0.72, True),
            (9.9, 0.5, 0.72, False),
            (17.0, 25.0, 0.72, False),
            (17.0, None, 0.72, False),
            (17.0, 0.5, 0.05, False),
        ],
        ids=["grown", "under_10x", "raw_inputs", "scale_unknown", "fitted"],
    )
    def test_a_recurrent_layer_from_10x(self, ratio, scale, loss, reported):
        # A ReLU SimpleRNN whose recurrent kernel is orthogonal with gain 2,
        # under Adam (JAX seed shift 23 of `exploding_relu_rnn`): 17-53x its
        # head's from step 0, the loss at 0.72-0.79 (ln 2 = 0.69); healthy
        # recurrent layers probed stayed within 0.02-4.1x. Judged at 10x
        # (`_GROWN_RECURRENT`) where the inputs are standardized (scale
        # `input_scale` 2 or less: an input kernel's gradient grows with
        # raw inputs) and the model has not fitted (the loss 0.05 against
        # 0.72 over the first 5 steps: the median of the last steps under
        # `fitted_loss_ratio` 0.5 of it; a fitted head's gradients shrink).
        rules = HealthRules(gru_and_head())
        start = [event(s, 1.0, loss=0.72 if s < 5 else loss) for s in range(20)]
        seq = [
            dataclasses.replace(
                gru_recording(s, 1e-3, rms=(0.05 * ratio, 0.05), loss=loss),
                input_scale=scale,
            )
            for s in (20, 22, 24)
        ]
        found = run(rules, start + seq)
        if not reported:
            assert found == []
            return
        assert modes(found) == [(F.EXPLODING_GRADIENTS, "rnn/gru_cell", 20)]
        assert found[0].message == (
            "Layer 'rnn/gru_cell' gets gradients with RMS 0.85, 17 times those "
            "of the layers nearest the loss, for 3 recordings in a row (steps "
            "20-24): the gradient grows on its way back through its time steps "
            "(the recurrent kernel multiplies it at each); the gradients are "
            "exploding."
        )
        assert found[0].fix == rule_support._RECURRENT_FIX

    def test_a_dense_layer_not_from_10x(self):
        # The same ratio on a Dense layer farther from the loss: the input
        # layer's gradient grows with its inputs and their count, not
        # through time; `_GROWN_RATIO` (1e3) holds.
        layers = [
            LayerInfo("first", "Dense", "relu", True, 0),
            LayerInfo("out", "Dense", None, True, 1),
        ]
        rules = HealthRules(layers)
        seq = [
            recording(
                s, [0.85, 0.05], loss=0.72, names=["first", "out"], input_scale=0.5
            )
            for s in (0, 2, 4)
        ]
        assert run(rules, seq) == []


def test_thresholds_take_python_and_numpy_numbers():
    thresholds = Thresholds(patience=np.int64(2), saturation=np.float32(0.5))
    assert (thresholds.patience, thresholds.saturation) == (2, 0.5)
    assert (type(thresholds.patience), type(thresholds.saturation)) == (int, float)
    assert Thresholds(exploding_growth=50).exploding_growth == 50


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("patience", 0, "an integer >= 1"),
        ("patience", True, "an integer >= 1"),
        ("patience", 2.0, "an integer >= 1"),
        ("min_samples", np.bool_(True), "an integer >= 1"),
        ("input_scale", 0.0, "a finite number > 0"),
        ("input_scale", math.nan, "a finite number > 0"),
        ("input_scale", 1j, "a finite number > 0"),
        ("input_scale", "2", "a finite number > 0"),
        ("saturation", 1.5, "a number in (0, 1]"),
        ("exploding_growth", 1.0, "a finite number > 1"),
    ],
)
def test_bad_thresholds_are_named(name, value, expected):
    with pytest.raises(ValueError) as error:
        Thresholds(**{name: value})
    assert str(error.value) == (
        f"Threshold `{name}` must be {expected}. Received: {name}={value!r}"
    )


class TestSaturationThrowingAFittedModelOff:
    """Round 15 P3: a fitted tanh MLP (loss 0.02, 1.35 at the start) whose
    first layer goes from no saturation to 97% at once, late in the run."""

    LAYERS = [
        LayerInfo("d0", "Dense", "tanh", True, 0),
        LayerInfo("d1", "Dense", "tanh", True, 1),
        LayerInfo("out", "Dense", "softmax", True, 2),
    ]

    def saturating(self, before, losses):
        rules = HealthRules(self.LAYERS)
        seq = [event(s, 1.0, loss=1.35) for s in range(8)]
        seq += [event(s, 1.0, loss=0.02) for s in range(8, 40)]
        names = ["d0", "d1", "out"]
        seq.append(
            recording(
                40, [1e-2] * 3, loss=0.02, names=names, saturation=[before, 0.1, None]
            )
        )
        seq += [
            recording(
                41 + i, [1e-2] * 3, loss=v, names=names, saturation=[0.97, 0.1, None]
            )
            for i, v in enumerate(losses)
        ]
        return run(rules, seq)

    @pytest.mark.parametrize(
        "losses",
        [[0.035, 0.25, 0.13, 0.35, 0.16, 0.2], [0.035, 0.25, 0.03, 0.03, 0.03, 0.03]],
        ids=["risen", "hovering"],
    )
    def test_told_when_the_loss_rose_with_it(self, losses):
        # The losses recorded since (median): at 41 0.035, under 2x the 0.02
        # before; at 42 0.1425, 2x it and 0.02 x 1.35 = 0.027 over it. From
        # there the layer counts until it leaves the tails, however the
        # median of noisy batches hovers (0.035 at 43 in the second).
        # Recordings 42-46.
        found = self.saturating(0.0, losses)
        assert modes(found) == [(F.SATURATED_ACTIVATIONS, "d0", 42)]

    @pytest.mark.parametrize(
        "before, losses",
        [
            (0.0, [0.02, 0.03, 0.025, 0.02, 0.03, 0.02]),  # the loss stayed
            (0.75, [0.07, 0.25, 0.13, 0.35, 0.16, 0.2]),  # 0.75 -> 0.97: gradual
        ],
        ids=["loss_level", "gradual"],
    )
    def test_not_told(self, before, losses):
        assert self.saturating(before, losses) == []


@pytest.mark.parametrize("exploded", [False, True])
def test_vanishing_behind_recurrent_gates_gets_the_recurrent_fix(exploded):
    # Round 15 R6: an Embedding behind two recurrent layers (their cells'
    # activation tanh, gates unmeasured) whose gradients vanish: no
    # activation to swap for ReLU, nor batch normalization to add.
    layers = [
        LayerInfo("embedding", "Embedding", None, True, 0),
        LayerInfo("gru/gru_cell", "GRUCell", "tanh", True, 1),
        LayerInfo("lstm/lstm_cell", "LSTMCell", "tanh", True, 2),
        LayerInfo("out", "Dense", None, True, 3),
    ]
    rules = HealthRules(layers)
    names = [info.name for info in layers]
    if exploded:
        rules._reported.add((F.EXPLODING_GRADIENTS, None))
    found = run(
        rules,
        [recording(s, [1e-6, 2e-5, 1e-3, 1e-2], names=names) for s in range(5)],
    )
    assert modes(found) == [(F.VANISHING_GRADIENTS, "embedding", 0)]
    after = ", after the explosion reported before it" if exploded else ""
    assert found[0].message.endswith(
        "(the gates and tanh of the recurrent layers 'gru/gru_cell', "
        "'lstm/lstm_cell' shrink the gradient through their time steps and on "
        f"its way back{after})."
    )
    assert found[0].fix == gradient_rules._RECURRENT_VANISHING_FIX


@pytest.mark.parametrize("dead", [True, False])
def test_no_vanishing_behind_a_layer_whose_units_are_all_dead(dead):
    # A VAE whose encoder ReLU ('enc', 4 units) is dead from the start
    # (regression run of round 15): the layer after it ('mu', every input
    # through 'enc') gets kernel gradients of 0 and its bias's alone, an
    # RMS 1e-6 against 1e-2 at the output. That is the dead units' doing:
    # only `dead_relu` is told, on 'enc'. With 'enc' alive, 'mu' vanishes.
    layers = [
        LayerInfo("first", "Dense", "relu", True, 0),
        LayerInfo("enc", "Dense", "relu", True, 1),
        LayerInfo("mu", "Dense", None, True, 2, upstream=("enc",)),
        LayerInfo("hidden", "Dense", "relu", True, 3),
        LayerInfo("out", "Dense", "sigmoid", True, 4),
        LayerInfo("head", "Dense", None, True, 5),
    ]
    rules = HealthRules(layers)
    names = [info.name for info in layers]
    enc = [0] * 4 if dead else [3] * 4
    seq = [
        recording(
            s,
            [1e-2, 1e-2, 1e-6, 1e-5, 1e-2, 1e-2],
            names=names,
            batch_size=32,
            unit_activity=[[5] * 4, enc, None, [5] * 4, None, None],
        )
        for s in range(5)
    ]
    found = {(f.mode, f.layer) for f in run(rules, seq)}
    if dead:
        assert found == {(F.DEAD_RELU, "enc")}
    else:
        assert (F.VANISHING_GRADIENTS, "mu") in found
        assert (F.DEAD_RELU, "enc") not in found


_RECURRENT_NORM = (
    "add layer normalization (`keras.layers.LayerNormalization`; batch "
    "normalization does not suit recurrent layers)"
)
# Where a layer normalizes already (a transformer, a ResNet), adding batch
# normalization is no fix; "A, B, and add batch normalization" keeps its
# list's "and".
_NORMALIZED_FIXES = {
    F.EXPLODING_GRADIENTS: "Lower the learning rate and clip gradients (e.g. "
    "`clipnorm=1.0` in the optimizer).",
    F.VANISHING_GRADIENTS: "Use ReLU (or another non-saturating activation) "
    "instead of sigmoid/tanh in the hidden layers.",
    F.SATURATED_ACTIVATIONS: "Use ReLU instead of sigmoid/tanh in hidden layers, "
    "and check the input scaling and weight initialisation.",
}


@pytest.mark.parametrize(
    "classes, fixes",
    [
        (["Dense"], None),  # A plain MLP: the source notes' fixes as they are.
        (["MultiHeadAttention", "LayerNormalization", "Dense"], _NORMALIZED_FIXES),
        (["Conv2D", "BatchNormalization", "Dense"], _NORMALIZED_FIXES),
        # A recurrent model without normalization: layer normalization.
        (
            ["Embedding", "LSTMCell", "Dense"],
            {
                F.EXPLODING_GRADIENTS: "Lower the learning rate, clip gradients "
                f"(e.g. `clipnorm=1.0` in the optimizer), and {_RECURRENT_NORM}.",
                F.VANISHING_GRADIENTS: "Use ReLU (or another non-saturating "
                "activation) instead of sigmoid/tanh in the hidden layers, and "
                f"{_RECURRENT_NORM}.",
                F.SATURATED_ACTIVATIONS: "Use ReLU instead of sigmoid/tanh in "
                f"hidden layers, {_RECURRENT_NORM}, and check the input scaling "
                "and weight initialisation.",
            },
        ),
    ],
    ids=["mlp", "transformer", "resnet", "recurrent"],
)
def test_batch_normalization_advice_fits_the_model(classes, fixes):
    # Probed: an LSTM's and a post-LN transformer's explosions were told
    # to "add batch normalization".
    rules = HealthRules(
        [LayerInfo(f"layer_{i}", c, None, True, i) for i, c in enumerate(classes)]
    )
    for mode in (
        F.EXPLODING_GRADIENTS,
        F.VANISHING_GRADIENTS,
        F.SATURATED_ACTIVATIONS,
    ):
        new = []
        rules._add(new, mode, "layer_0", 0, 1.0, "message")
        expected = FIXES[mode] if fixes is None else fixes[mode]
        assert [f.fix for f in new] == [expected]


def test_the_last_comma_of_a_list_outside_parentheses():
    # "Initialise (Glorot, He: `a, b`), and ..." has no list comma; in a
    # second sentence, only its own commas count.
    comma = rule_support._last_list_comma
    assert comma("Initialise (Glorot, He: `a, b`)") is None
    assert comma("Lower the rate, clip (e.g. `x, y`)") == len("Lower the rate")
    assert comma("A, b. Then c (d, e)") is None


def back_and_off_run(ratio=0.002, edit=1.0, back=True):
    """dense_1's dead-unit findings over recordings at steps 100-123
    (batches of 32) of its 8 units: all active on 100-103 and 112-115,
    units 0-2 inactive on 104-111 (38%, under `dead_fraction`), units 0-4
    on 116-123 (62%): a time-ordered stream whose batches switch units off
    and on. Each step's update moves every layer's weights by `ratio` of
    their norm; dense_1's norm is `edit` times its first from step 116;
    with `back` False units 0-2 stay inactive from 104 on."""
    rules = HealthRules(mlp(["relu", "relu"]))

    def units(s):
        off = 5 if s >= 116 else 3 if s >= 104 and (s < 112 or not back) else 0
        return [0] * off + [9] * (8 - off)

    seq = [
        recording(
            s,
            RELU_RMS[:3],
            batch_size=32,
            unit_activity=[[9] * 8, units(s), None],
            update_ratio=[ratio] * 3,
            weight_norm=[2.0, 3.0 * (edit if s >= 116 else 1.0), 1.0],
        )
        for s in range(100, 124)
    ]
    return [
        (f.layer, f.step, f.value) for f in run(rules, seq) if f.mode == F.DEAD_RELU
    ]


class TestUnitsBackAndOffWithTheirBatches:
    def test_units_that_came_back_are_silent_not_dead(self):
        # Units 0-2 came back at step 112 after 256 silent samples (a
        # window's worth, 128), and the weights moved by 8 x 0.2% = 1.6%
        # since their last activity at 115, under `_STILL` (a fifth): not
        # counted dead on 116-123, which leaves 2 of 8 (25%).
        assert back_and_off_run() == []

    @pytest.mark.parametrize(
        "ratio, edit, back",
        [
            # 4 steps of 6% from step 115 to 119: they may have moved 24%.
            (0.06, 1.0, True),
            # dense_1's norm 1.5x from step 116: changed from outside.
            (0.002, 1.5, True),
            # Units 0-2 never came back: nothing says they can.
            (0.002, 1.0, False),
        ],
    )
    def test_units_told_dead(self, ratio, edit, back):
        # 5 of 8 units inactive on the 128 samples of steps 116-119, the
        # streak's first window.
        found = back_and_off_run(ratio, edit, back)
        assert found == [("dense_1", 116, 0.625)]
