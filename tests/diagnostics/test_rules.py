"""Tests of the health rules on synthetic sequences of recordings.

Each failure mode is checked with its gating cases: the healthy or harmless
look-alikes that crude rules (per-element zero counts, ungated first/last
ratios, single-spike thresholds) get wrong.
"""

import math

import pytest

from keras_actloss import findings as F
from keras_actloss.diagnostics.records import (
    LayerInfo,
    LayerStats,
    SentinelEvent,
    StepStats,
)
from keras_actloss.diagnostics.rules import FIXES, HealthRules, Thresholds


def mlp(activations, output="softmax"):
    """LayerInfo for Dense layers with these hidden activations + an output."""
    names = [f"dense_{i}" for i in range(len(activations) + 1)]
    acts = [*activations, output]
    return [
        LayerInfo(n, "Dense", a, True, i) for i, (n, a) in enumerate(zip(names, acts))
    ]


def recording(step, rms, maxes=None, loss=1.0, global_norm=1.0, **per_layer):
    """StepStats with the given per-layer grad RMS (and max-abs, default 4x)."""
    maxes = maxes or [None if r is None else 4 * r for r in rms]
    layers = []
    for i, (r, m) in enumerate(zip(rms, maxes)):
        extra = {k: v[i] for k, v in per_layer.items() if v is not None}
        layers.append(LayerStats(f"dense_{i}", grad_rms=r, grad_max=m, **extra))
    return StepStats(step=step, global_norm=global_norm, loss=loss, layers=layers)


def run(rules, sequence):
    out = []
    for item in sequence:
        if isinstance(item, SentinelEvent):
            out += rules.observe_sentinel(item)
        else:
            out += rules.observe(item)
    return out


def modes(found):
    return sorted((f.mode, f.layer, f.step) for f in found)


# A deep sigmoid net as measured on a 6-hidden-layer MLP with SGD: RMS shrinks
# about 4x per layer towards the input, the output layer 10x above the last
# hidden one.
SIGMOID_RMS = [4e-6, 8e-6, 3.5e-5, 1.7e-4, 7e-4, 3.5e-3, 3.3e-2]
# A healthy ReLU MLP (measured): all layers within ~10x, early ones larger.
RELU_RMS = [1.0e-2, 4.7e-3, 3.6e-3, 1.8e-2]


class TestThresholds:
    def test_defaults_and_sources(self):
        t = Thresholds.from_value(None)
        assert t == Thresholds()
        assert Thresholds.from_value(t) is t
        assert Thresholds.from_value({"patience": 5}).patience == 5
        assert Thresholds.from_value({"patience": 5}).dead_fraction == 0.5

    def test_unknown_key(self):
        with pytest.raises(ValueError, match="Unknown keys.*'dead_frac'"):
            Thresholds.from_value({"dead_frac": 0.3})

    @pytest.mark.parametrize(
        "key, value",
        [
            ("patience", 0),
            ("patience", 1.5),
            ("patience", True),
            ("dead_fraction", 1.5),
            ("saturation", 0.0),
            ("vanishing_rms", -1e-4),
            ("exploding_norm", math.inf),
            ("exploding_growth", 1.0),
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
        assert modes(found) == [(F.NON_FINITE, "dense_1", 10)]
        assert found[0].fix == FIXES[F.NON_FINITE]
        assert "dense_1" in found[0].message
        assert "learning rate" in found[0].fix and "clip" in found[0].fix

    def test_sentinel_between_recordings(self):
        rules = HealthRules(mlp(["relu"]))
        event = SentinelEvent(step=7, global_norm=math.inf, non_finite=True)
        assert modes(rules.observe_sentinel(event)) == [(F.NON_FINITE, None, 7)]

    def test_nothing_is_judged_after_non_finite(self):
        # A NaN kernel makes a ReLU layer output zeros: consequences, not causes.
        rules = HealthRules(mlp(["relu", "relu"]))
        found = rules.observe(recording(0, [1e-2] * 3, global_norm=math.nan))
        seq = [
            recording(s, [0.0, 1e-2, 1e-2], dead_fraction=[1.0, 1.0, None])
            for s in range(1, 9)
        ]
        assert modes(found + run(rules, seq)) == [(F.NON_FINITE, None, 0)]

    def test_nan_loss(self):
        rules = HealthRules(mlp(["relu"]))
        found = rules.observe(recording(3, [1e-2, 1e-2], loss=math.nan))
        assert modes(found) == [(F.NON_FINITE, None, 3)]


class TestVanishing:
    def test_deep_sigmoid_persisting(self):
        rules = HealthRules(mlp(["sigmoid"] * 6))
        found = run(rules, [recording(s, SIGMOID_RMS) for s in (0, 5, 10, 15)])
        # 7 weighted layers: reference = median of the last max(2, 7 // 4) = 2
        # layers = (3.5e-3 + 3.3e-2) / 2 = 1.8e-2; candidates = first 7 // 2 = 3.
        # Ratios: 2.2e-4, 4.4e-4, 1.9e-3, all < 1e-2 with RMS < 1e-4.
        expected = [(F.VANISHING_GRADIENTS, f"dense_{i}", 0) for i in range(3)]
        assert modes(found) == expected
        assert found[0].value == pytest.approx(4e-6)
        assert "ReLU" in found[0].fix and "batch normalization" in found[0].fix
        assert all(f.severity == F.FAILURE for f in found)

    def test_not_reported_before_patience(self):
        rules = HealthRules(mlp(["sigmoid"] * 6))
        assert run(rules, [recording(s, SIGMOID_RMS) for s in (0, 5)]) == []

    def test_interrupted_streak_is_not_persistence(self):
        rules = HealthRules(mlp(["sigmoid"] * 6))
        healthy = [1e-2] * 7
        seq = [
            recording(s, SIGMOID_RMS if s % 10 else healthy) for s in range(0, 60, 5)
        ]
        assert run(rules, seq) == []

    def test_converged_tiny_everywhere(self):
        # Converged: every layer has tiny gradients, none tiny relative to others.
        rules = HealthRules(mlp(["relu"] * 6))
        seq = [recording(s, [1e-9 * (1 + i % 3) for i in range(7)]) for s in range(10)]
        assert run(rules, seq) == []

    def test_converged_loss(self):
        rules = HealthRules(mlp(["sigmoid"] * 6))
        first = recording(0, RELU_RMS[:1] * 7, loss=2.3)
        seq = [recording(s, SIGMOID_RMS, loss=1e-4) for s in range(1, 6)]
        assert run(rules, [first, *seq]) == []

    def test_quiet_output_layers(self):
        rules = HealthRules(mlp(["relu"] * 6))
        rms = [1e-12, 1e-12, 1e-12, 1e-10, 1e-10, 5e-8, 5e-8]
        assert run(rules, [recording(s, rms) for s in range(10)]) == []

    def test_few_layers_first_last_ratio_is_not_vanishing(self):
        # 3 weighted layers with a 1e-5 first/last ratio: input scaling or
        # noise, not a depth effect.
        rules = HealthRules(mlp(["sigmoid"] * 2))
        rms = [1e-7, 1e-4, 1e-2]
        assert run(rules, [recording(s, rms) for s in range(10)]) == []

    def test_sparse_gradients_are_not_vanishing(self):
        # An embedding-like first layer: tiny RMS (few rows used) but a normal
        # max-abs.
        rules = HealthRules(mlp(["relu"] * 5))
        rms = [1e-6, 1e-2, 1e-2, 1e-2, 1e-2, 2e-2]
        maxes = [5e-2, 4e-2, 4e-2, 4e-2, 4e-2, 8e-2]
        assert run(rules, [recording(s, rms, maxes) for s in range(10)]) == []

    def test_lone_quiet_first_layer_is_not_vanishing(self):
        # Inputs scaled 1e-4: the first layer's gradients (x^T delta) are
        # tiny, the next layer's are normal: no progressive decay with depth.
        rules = HealthRules(mlp(["relu"] * 5))
        rms = [1e-6, 1e-2, 1e-2, 1e-2, 1e-2, 2e-2]
        assert run(rules, [recording(s, rms) for s in range(10)]) == []

    def test_zero_gradient_is_a_cut_not_vanishing(self):
        rules = HealthRules(mlp(["relu"] * 5))
        rms = [0.0, 0.0, 1e-2, 1e-2, 1e-2, 2e-2]
        assert run(rules, [recording(s, rms) for s in range(10)]) == []

    def test_healthy_relu_and_loud_output(self):
        rules = HealthRules(mlp(["relu"] * 3))
        rms = [2e-3, 1e-3, 8e-4, 3e-1]  # A loud output layer.
        # Reference = median(8e-4, 3e-1) = 0.15: dense_0's ratio 1.3e-2 is not
        # below 1e-2; dense_1's (6.7e-3) is, but its RMS 1e-3 is not small in
        # absolute terms (>= 3e-4): not vanishing.
        assert run(rules, [recording(s, rms) for s in range(10)]) == []

    def test_threshold_override(self):
        rules = HealthRules(
            mlp(["sigmoid"] * 6), {"patience": 1, "vanishing_ratio": 3e-4}
        )
        found = rules.observe(recording(0, SIGMOID_RMS))
        # Only dense_0 (ratio 2.2e-4) is below 3e-4.
        assert modes(found) == [(F.VANISHING_GRADIENTS, "dense_0", 0)]


class TestExploding:
    def test_growth_over_baseline_persisting(self):
        rules = HealthRules(mlp(["tanh"]))
        norms = [1.0, 2.0, 1.5, 3.0, 500.0, 800.0, 1e4]
        seq = [
            recording(5 * i, [1e-2, 1e-2], global_norm=n) for i, n in enumerate(norms)
        ]
        found = run(rules, seq)
        # Baseline = median(1, 2, 1.5) = 1.5; limit 150; 500 at step 20 and
        # 800 at step 25 persist -> reported at step 20.
        assert modes(found) == [(F.EXPLODING_GRADIENTS, None, 20)]
        assert found[0].value == 800.0
        assert "learning rate" in found[0].fix and "clip" in found[0].fix

    def test_single_spike_is_not_exploding(self):
        rules = HealthRules(mlp(["tanh"]))
        norms = [1.0, 1.0, 1.0, 500.0, 1.0, 1.2, 900.0, 1.1]
        seq = [recording(i, [1e-2, 1e-2], global_norm=n) for i, n in enumerate(norms)]
        assert run(rules, seq) == []

    def test_huge_spike_reported_at_once(self):
        rules = HealthRules(mlp(["tanh"]))
        norms = [1.0, 1.0, 1.0, 2e4]
        seq = [recording(i, [1e-2, 1e-2], global_norm=n) for i, n in enumerate(norms)]
        assert modes(run(rules, seq)) == [(F.EXPLODING_GRADIENTS, None, 3)]

    def test_absolute_ceiling_without_baseline(self):
        rules = HealthRules(mlp(["tanh"]))
        seq = [
            recording(i, [1.0, 1.0], global_norm=n) for i, n in enumerate([2e6, 3e6])
        ]
        assert modes(run(rules, seq)) == [(F.EXPLODING_GRADIENTS, None, 0)]

    def test_large_but_steady_norm(self):
        # Unscaled regression targets: large norms from the start, no growth.
        rules = HealthRules(mlp(["relu"]))
        seq = [
            recording(i, [1.0, 1.0], global_norm=5e3 * (1 + 0.1 * (i % 3)))
            for i in range(20)
        ]
        assert run(rules, seq) == []

    def test_healthy_drift(self):
        rules = HealthRules(mlp(["relu"]))
        seq = [recording(i, [1e-2, 1e-2], global_norm=0.5 * 1.1**i) for i in range(30)]
        # 0.5 * 1.1^29 = 7.9, 16x the baseline: drift, not an explosion.
        assert run(rules, seq) == []

    def test_sentinel_events_count_towards_persistence(self):
        rules = HealthRules(mlp(["tanh"]))
        seq = [recording(s, [1e-2, 1e-2], global_norm=1.0) for s in (0, 10, 20)]
        seq += [
            SentinelEvent(27, 400.0, False),
            recording(30, [1e-2, 1e-2], global_norm=600.0),
        ]
        assert modes(run(rules, seq)) == [(F.EXPLODING_GRADIENTS, None, 27)]

    def test_zero_norms_are_no_baseline(self):
        # No gradient at first (e.g. a zero-initialised model), then normal.
        rules = HealthRules(mlp(["tanh"]))
        norms = [0.0, 0.0, 0.0, 1.0, 1.2, 0.9, 1.1]
        seq = [recording(i, [1e-2, 1e-2], global_norm=n) for i, n in enumerate(norms)]
        assert run(rules, seq) == []
        assert rules.norm_limit() == 100.0  # 100 x median(1.0, 1.2, 0.9)

    def test_norm_limit(self):
        rules = HealthRules(mlp(["tanh"]))
        assert rules.norm_limit() == 1e6
        run(
            rules,
            [
                recording(s, [1e-2, 1e-2], global_norm=n)
                for s, n in enumerate([2, 4, 3])
            ],
        )
        assert rules.norm_limit() == 300.0  # 100 x median(2, 4, 3)

    def test_update_ratio_persisting(self):
        rules = HealthRules(mlp(["tanh"]))
        seq = [recording(s, [1e-2, 1e-2], update_ratio=[2.0, 1e-3]) for s in range(4)]
        assert modes(run(rules, seq)) == [(F.EXPLODING_GRADIENTS, "dense_0", 0)]

    def test_zero_initialised_layer_update_ratio(self):
        # Zero-init layer: infinite, then large, then shrinking ratios.
        rules = HealthRules(mlp(["tanh"]))
        ratios = [math.inf, 1.5, 0.4, 0.2, 0.1]
        seq = [
            recording(s, [1e-2, 1e-2], update_ratio=[1e-3, r])
            for s, r in enumerate(ratios)
        ]
        assert run(rules, seq) == []


class TestDeadRelu:
    def test_healthy_sparsity_is_not_dead(self):
        # Half the elements zero, no unit zero for every sample: healthy ReLU.
        rules = HealthRules(mlp(["relu", "relu"]))
        seq = [
            recording(
                s,
                RELU_RMS[:3],
                zero_fraction=[0.5, 0.55, None],
                dead_fraction=[0.0, 0.02, None],
            )
            for s in range(20)
        ]
        assert run(rules, seq) == []

    def test_many_zero_elements_few_dead_units(self):
        # 90% zeros per element, but only 10% of units dead: a crude zero count
        # would flag it, the dead-unit fraction does not.
        rules = HealthRules(mlp(["relu", "relu"]))
        seq = [
            recording(
                s,
                RELU_RMS[:3],
                zero_fraction=[0.9, 0.9, None],
                dead_fraction=[0.1, 0.1, None],
            )
            for s in range(20)
        ]
        assert run(rules, seq) == []

    def test_dead_units_persisting(self):
        rules = HealthRules(mlp(["relu", "relu"]))
        dead = [[0.0, 0.8, None], [0.0, 0.85, None], [0.0, 0.9, None], [0.0, 0.9, None]]
        seq = [
            recording(s, RELU_RMS[:3], dead_fraction=d, zero_fraction=[0.5, 0.95, None])
            for s, d in zip((0, 10, 20, 30), dead)
        ]
        for stats in seq:
            stats.batch_size = 32
        found = run(rules, seq)
        assert modes(found) == [(F.DEAD_RELU, "dense_1", 0)]
        assert found[0].value == 0.9  # At the recording that confirmed it.
        assert "Leaky ReLU" in found[0].fix and "learning rate" in found[0].fix

    def test_small_batches_are_not_judged(self):
        rules = HealthRules(mlp(["relu", "relu"]))
        seq = [
            recording(s, RELU_RMS[:3], dead_fraction=[0.6, 0.6, None])
            for s in range(10)
        ]
        for stats in seq:
            stats.batch_size = 2
        assert run(rules, seq) == []

    def test_leaky_relu_cannot_die(self):
        rules = HealthRules(mlp(["leaky_relu", "elu"]))
        seq = [
            recording(s, RELU_RMS[:3], dead_fraction=[1.0, 1.0, None])
            for s in range(10)
        ]
        assert run(rules, seq) == []

    def test_intermittent(self):
        rules = HealthRules(mlp(["relu", "relu"]))
        seq = [
            recording(s, RELU_RMS[:3], dead_fraction=[0.7 if s % 3 else 0.1, 0.0, None])
            for s in range(12)
        ]
        assert run(rules, seq) == []

    def test_one_finding_per_layer(self):
        rules = HealthRules(mlp(["relu", "relu"]))
        seq = [
            recording(s, RELU_RMS[:3], dead_fraction=[1.0, 1.0, None])
            for s in range(30)
        ]
        found = run(rules, seq)
        assert modes(found) == [
            (F.DEAD_RELU, "dense_0", 0),
            (F.DEAD_RELU, "dense_1", 0),
        ]
        assert rules.findings == found


class TestSaturation:
    def test_hidden_layer_saturated(self):
        rules = HealthRules(mlp(["tanh", "tanh"], output="sigmoid"))
        seq = [
            recording(s, RELU_RMS[:3], saturation=[0.9, 0.3, 0.99])
            for s in range(0, 50, 10)
        ]
        found = run(rules, seq)
        assert modes(found) == [(F.SATURATED_ACTIVATIONS, "dense_0", 0)]
        assert "ReLU" in found[0].fix and "batch normalization" in found[0].fix
        assert "input scaling" in found[0].fix

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
        assert run(rules, seq) == []

    def test_output_layers_override(self):
        rules = HealthRules(mlp(["tanh"], output="sigmoid"), output_layers=["dense_0"])
        seq = [recording(s, [1e-2, 1e-2], saturation=[1.0, 1.0]) for s in range(3)]
        assert modes(run(rules, seq)) == [(F.SATURATED_ACTIVATIONS, "dense_1", 0)]

    def test_converged_model(self):
        rules = HealthRules(mlp(["tanh", "tanh"]))
        first = recording(0, RELU_RMS[:3], loss=1.0, saturation=[0.0, 0.0, None])
        seq = [
            recording(s, RELU_RMS[:3], loss=1e-4, saturation=[0.8, 0.8, None])
            for s in range(1, 9)
        ]
        assert run(rules, [first, *seq]) == []


def test_healthy_training_has_no_findings():
    # A healthy ReLU MLP as measured over 400 Adam steps: gradients shrink as
    # the loss falls, normal sparsity, a few dead units.
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
                zero_fraction=[0.48, 0.33, 0.36, None],
                dead_fraction=[0.0, 0.02, 0.08, None],
                update_ratio=[1e-3, 2e-3, 2e-3, 3e-3],
            )
        )
    assert run(rules, seq) == []
