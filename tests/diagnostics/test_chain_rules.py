"""Tests for `chain_rules`: sigmoid/tanh stacks whose weights are too large.

Recordings are built by hand; each expected value is computed in the
comment beside it. The measured case (`MEASURED_RMS`) is step 0 of
`tests/scenarios/cases.py`'s `saturated_tanh_stack`, as
`cases.confirm` (a plain `tf.GradientTape` loop) measured it.
"""

import dataclasses
import math

import pytest

from keras_actloss import findings as F
from keras_actloss.diagnostics.chain_rules import _FIX, amplifying_chain
from keras_actloss.diagnostics.records import LayerInfo, LayerStats, StepStats
from keras_actloss.diagnostics.rule_support import FIXES
from keras_actloss.diagnostics.rules import HealthRules, SentinelEvent

# Eight tanh layers (kernel stddev 1 on 64 units) and a softmax output: the
# gradient RMS of each weighted layer at step 0, and the share of each
# hidden layer's outputs in the tails (the first: 49%, the others 73%).
MEASURED_RMS = [2.94, 0.847, 0.313, 0.119, 0.0569, 0.0275, 0.0162, 0.00751, 0.117]
MEASURED_SATURATION = [0.49] + [0.73] * 7 + [None]


def stack(activations, output="softmax"):
    """LayerInfo of Dense layers with these hidden activations and an
    output, each at its distance from the output (a chain)."""
    acts = [*activations, output]
    n = len(acts)
    return [
        LayerInfo(f"dense_{i}", "Dense", a, True, i, distance=n - 1 - i)
        for i, a in enumerate(acts)
    ]


def recording(step, rms, saturation, loss=1.0, groups=None, names=None):
    names = names or [f"dense_{i}" for i in range(len(rms))]
    layers = [
        LayerStats(
            name, grad_rms=r, grad_max=None if r is None else 4 * r, saturation=s
        )
        for name, r, s in zip(names, rms, saturation)
    ]
    return StepStats(
        step=step,
        global_norm=1.0,
        loss=loss,
        layers=layers,
        apply_groups=groups or {},
    )


def chain(rms, saturation, layers=None, groups=None):
    """`amplifying_chain` of one recording, the first layer and the output
    exempt (as `ChainRules` calls it)."""
    layers = layers or stack(["tanh"] * (len(rms) - 1))
    distance = {info.name: info.distance for info in layers}
    names = [info.name for info in layers]
    stats = recording(0, rms, saturation, groups=groups, names=names)
    exempt = frozenset({names[0], names[-1]})
    return amplifying_chain(stats, layers, distance, exempt)


class TestAmplifyingChain:
    def test_measured_stack(self):
        found = chain(MEASURED_RMS, MEASURED_SATURATION)
        # dense_1 (0.847) to dense_7 (0.00751), growing at every layer; the
        # first layer (its RMS scales with the inputs) and the output are
        # left out. 0.847 / 0.00751 = 112.8 over 6 layers: 112.8 ** (1/6)
        # = 2.198 a layer; the median saturation of the seven is 0.73.
        assert found.names == [f"dense_{i}" for i in range(1, 8)]
        assert found.activations == ["tanh"] * 7
        assert found.total == pytest.approx(0.847 / 0.00751)
        assert found.growth == pytest.approx((0.847 / 0.00751) ** (1 / 6))
        assert found.growth == pytest.approx(2.198, abs=1e-3)
        assert found.saturation == 0.73

    def test_one_layer_that_does_not_grow(self):
        # dense_4 (0.0569) below dense_5 (0.06): not progressive.
        rms = list(MEASURED_RMS)
        rms[5] = 0.06
        assert chain(rms, MEASURED_SATURATION) is None

    @pytest.mark.parametrize(
        "factor, layers, found",
        [
            # 9 hidden chain layers (dense_1..dense_9 of 11 tanh layers):
            # 1.35 ** 8 = 11.0 >= 10, but 1.35 < 1.4 a layer.
            (1.35, 11, False),
            # 1.45 ** 8 = 19.6 >= 10 and 1.45 >= 1.4.
            (1.45, 11, True),
            # 3 chain layers: 2 ** 2 = 4 < 10 in all, though 2x a layer.
            (2.0, 5, False),
            # 3 chain layers: 4 ** 2 = 16 >= 10.
            (4.0, 5, True),
        ],
    )
    def test_growth_per_layer_and_in_all(self, factor, layers, found):
        hidden = layers - 1
        rms = [factor ** (hidden - i) for i in range(hidden)] + [1.0]
        saturation = [0.5] * hidden + [None]
        assert (chain(rms, saturation) is not None) == found

    @pytest.mark.parametrize("share, found", [(0.24, False), (0.25, True)])
    def test_saturation_limit(self, share, found):
        # The median share of the chain's outputs in the tails must be at
        # least 0.25 (weights too large push them there).
        saturation = [0.49] + [share] * 7 + [None]
        assert (chain(MEASURED_RMS, saturation) is not None) == found

    def test_two_layers_are_no_chain(self):
        # Exempt first, dense_1 and dense_2, output: 2 < 3 layers.
        rms = [8.0, 4.0, 0.1, 0.05]
        assert chain(rms, [0.5, 0.7, 0.7, None]) is None

    def test_relu_layers_between(self):
        # tanh at distances 5, 3, 1 (dense_1, dense_3, dense_5); ReLU at 4
        # and 2 are not in the chain but are steps: 16 / 1 = 16 >= 10 over
        # 4 weighted layers, 16 ** (1/4) = 2 a layer.
        layers = stack(["tanh", "tanh", "relu", "tanh", "relu", "tanh"])
        rms = [32.0, 16.0, 8.0, 4.0, 2.0, 1.0, 0.5]
        saturation = [0.5, 0.6, None, 0.6, None, 0.6, None]
        found = chain(rms, saturation, layers)
        assert found.names == ["dense_1", "dense_3", "dense_5"]
        assert (found.growth, found.total) == (pytest.approx(2.0), 16.0)

    def test_parallel_branches_count_by_their_median(self):
        # Two branches at distance 2 (b_0 and b_1) count by their median RMS
        # (3 + 5) / 2 = 4, between 16 (distance 3) and 1 (distance 1): 16 in
        # all over 2 layers, 4x a layer.
        layers = [
            LayerInfo("in", "Dense", "tanh", True, 0, distance=4),
            LayerInfo("a", "Dense", "tanh", True, 1, distance=3),
            LayerInfo("b_0", "Dense", "tanh", True, 2, distance=2),
            LayerInfo("b_1", "Dense", "tanh", True, 3, distance=2),
            LayerInfo("c", "Dense", "tanh", True, 4, distance=1),
            LayerInfo("out", "Dense", "softmax", True, 5, distance=0),
        ]
        rms = [64.0, 16.0, 3.0, 5.0, 1.0, 1.0]
        found = chain(rms, [0.5] * 5 + [None], layers)
        assert found.names == ["a", "b_0", "b_1", "c"]
        assert (found.growth, found.total) == (pytest.approx(4.0), 16.0)
        # 3 and 20: median 11.5, between 16 and 1: still growing.
        rms[2], rms[3] = 3.0, 20.0
        assert chain(rms, [0.5] * 5 + [None], layers) is not None
        # Median (17 + 20) / 2 = 18.5 > 16: does not grow at 'a'.
        rms[2] = 17.0
        assert chain(rms, [0.5] * 5 + [None], layers) is None

    def test_each_optimizer_group_apart(self):
        # dense_1..dense_3 updated by one call, dense_4..dense_7 by another:
        # neither group grows 10x (0.847 / 0.119 = 7.1 and 0.0569 / 0.00751
        # = 7.6).
        groups = {f"dense_{i}": int(i >= 4) for i in range(9)}
        assert chain(MEASURED_RMS, MEASURED_SATURATION, groups=groups) is None

    def test_activation_layers_after_dense_layers(self):
        # Dense (no activation) -> Activation("tanh") pairs: each Dense takes
        # its Activation layer's saturation (measured there) and name.
        layers = [LayerInfo("in", "Dense", "tanh", True, 0, distance=9)]
        for i in range(4):
            d = 8 - 2 * i
            layers += [
                LayerInfo(f"dense_{i}", "Dense", None, True, 2 * i + 1, d),
                LayerInfo(f"act_{i}", "Activation", "tanh", False, 2 * i + 2, d - 1),
            ]
        layers.append(LayerInfo("out", "Dense", "softmax", True, 9, distance=0))
        # dense_0..dense_3 at 27, 9, 3, 1: 27x over 3 weighted layers (the
        # activation layers between them are no step): 3x a layer.
        rms = [81.0, 27.0, None, 9.0, None, 3.0, None, 1.0, None, 1.0]
        saturation = [0.5] + [None, 0.6] * 4 + [None]
        found = chain(rms, saturation, layers)
        assert found.names == [f"dense_{i}" for i in range(4)]
        assert found.activations == ["tanh"] * 4
        assert found.growth == pytest.approx(3.0)
        assert found.saturation == 0.6
        # The activation layers' saturation not measured: no chain.
        saturation = [0.5] + [None] * 8 + [None]
        assert chain(rms, saturation, layers) is None

    def test_only_dense_layers(self):
        # A tanh CNN measured (LeNet-5, 28x28 inputs, Adam): the second
        # convolution's kernel gets 4.9e-2 against 5.9e-3 and 4.9e-3 for the
        # Dense(120) and Dense(84) after it, summed over its 10x10 positions:
        # a chain by its numbers, with saturation, were it not a Conv2D.
        layers = [
            LayerInfo("conv_0", "Conv2D", "tanh", True, 0, distance=7),
            LayerInfo("pool_0", "AveragePooling2D", None, False, 1, distance=6),
            LayerInfo("conv_1", "Conv2D", "tanh", True, 2, distance=5),
            LayerInfo("pool_1", "AveragePooling2D", None, False, 3, distance=4),
            LayerInfo("flatten", "Flatten", None, False, 4, distance=3),
            LayerInfo("dense_0", "Dense", "tanh", True, 5, distance=2),
            LayerInfo("dense_1", "Dense", "tanh", True, 6, distance=1),
            LayerInfo("out", "Dense", "softmax", True, 7, distance=0),
        ]
        rms = [0.18, None, 0.049, None, None, 0.0059, 0.0049, 0.017]
        saturation = [0.5, None, 0.5, None, None, 0.5, 0.5, None]
        assert chain(rms, saturation, layers) is None
        # Were it a Dense: 0.049 / 0.0049 = 10 in all, over the weighted
        # levels 5 and 2 (from 1): 10 ** (1/2) = 3.2 a layer.
        layers[2] = dataclasses.replace(layers[2], class_name="Dense")
        found = chain(rms, saturation, layers)
        assert found.names == ["conv_1", "dense_0", "dense_1"]
        assert found.total == pytest.approx(10.0)

    def test_unmeasured_or_non_saturating_layers_are_left_out(self):
        # ReLU hidden layers: no chain at all.
        layers = stack(["relu"] * 8)
        assert chain(MEASURED_RMS, MEASURED_SATURATION, layers) is None
        # Saturation not measured (a recurrent layer's tanh): left out.
        saturation = [None] * 9
        assert chain(MEASURED_RMS, saturation) is None


def rules_run(steps=(0, 2, 4), loss=1.0, rules=None):
    rules = rules or HealthRules(stack(["tanh"] * 8))
    found = []
    for s in steps:
        stats = recording(s, MEASURED_RMS, MEASURED_SATURATION, loss=loss)
        found += rules.observe(stats)
    return rules, found


class TestChainRules:
    def test_reported_as_saturation_once_it_persists(self):
        _, found = rules_run(steps=(0, 2))
        assert found == []  # 2 recordings over steps 0-2: not yet.
        _, found = rules_run()
        assert [(f.mode, f.layer, f.step) for f in found] == [
            (F.SATURATED_ACTIVATIONS, "dense_1", 0)
        ]
        (finding,) = found
        assert finding.severity == F.FAILURE
        assert finding.value == 0.73
        assert finding.fix == _FIX != FIXES[F.SATURATED_ACTIVATIONS]
        growth = (0.847 / 0.00751) ** (1 / 6)
        assert f"{growth:.2g}" == "2.2"
        assert finding.message == (
            "The tanh layers 'dense_1', 'dense_2', 'dense_3', ... 'dense_7' have "
            "73% of their outputs in the flat tails, and the gradient grows "
            "2.2x at each layer it passes back through (113x from 'dense_7' to "
            "'dense_1'; 3 recordings in a row, steps 0-4): their weights are "
            "too large for tanh, so the layers amplify every small change of "
            "the early weights and the model hardly learns."
        )

    def test_once(self):
        _, found = rules_run(steps=range(0, 40, 2))
        assert len(found) == 1

    @pytest.mark.parametrize("loss, reported", [(0.5, False), (0.51, True)])
    def test_not_once_the_model_has_learned(self, loss, reported):
        # The early loss 1.0 (first 5 steps), the recent one `loss`: fitted
        # at 0.5 * 1.0 and below (`Thresholds.fitted_loss_ratio`).
        rules = HealthRules(stack(["tanh"] * 8))
        steps = [(s, 1.0, 1e-3, 1.0 if s < 5 else loss) for s in range(100)]
        rules.observe_quiet(steps)
        _, found = rules_run(steps=(100, 102, 104), loss=loss, rules=rules)
        assert bool(found) == reported

    def test_not_after_an_explosion(self):
        # The global norm 1 for 5 steps, then 500 and 800 (as in
        # `test_rules.TestSaturation`): an explosion at step 5.
        rules = HealthRules(stack(["tanh"] * 8))
        exploded = []
        for s, norm in enumerate([1, 1, 1, 1, 1, 500, 800]):
            exploded += rules.observe_step(SentinelEvent(s, norm, False, None))
        assert [(f.mode, f.step) for f in exploded] == [(F.EXPLODING_GRADIENTS, 5)]
        _, found = rules_run(steps=(10, 12, 14), rules=rules)
        assert found == []


class TestChainInPlaceOfTheStartsExplosion:
    """A start whose loss is extreme while a chain amplifies the gradient:
    the chain is told (`saturated_activations`, naming the layers), not the
    start's explosion blaming the same initial weights (seed shift 9 of
    `saturated_tanh_stack`: the loss 1.51-2.11 over steps 0-4, its median
    1.67 over ln 3 = 1.52x with kernels 5.11e5 over He's scale)."""

    LOSSES = [1.66, 1.51, 1.69, 1.67, 2.11]  # Steps 0-4, median 1.67.

    def rules(self):
        rules = HealthRules(stack(["tanh"] * 8))
        rules.uninformed_loss = (math.log(3), "cross-entropy over 3 classes")
        rules.weight_gain = (5.11e5, "dense_1")
        return rules

    def run(self, rules, chained):
        """Steps 0-4, each recorded (the chain's numbers at the steps in
        `chained`, every layer's gradient RMS 1 elsewhere); (mode, step,
        reported) of what was told."""
        told = []
        flat = [1.0] * 9
        for step, loss in enumerate(self.LOSSES):
            rms = MEASURED_RMS if step in chained else flat
            stats = recording(step, rms, MEASURED_SATURATION, loss=loss)
            told += [(f.mode, f.step, step) for f in rules.observe(stats)]
        return told

    def test_the_chain_told_in_its_place(self):
        # 1.67 / ln 3 = 1.52 >= `_HIGH_START` 1.5 at step 4, the chain seen
        # on 4 recordings before it and confirmed at step 4 (3 recordings).
        assert 1.67 / math.log(3) == pytest.approx(1.52, abs=5e-3)
        told = self.run(self.rules(), chained=range(5))
        assert told == [(F.SATURATED_ACTIVATIONS, 0, 4)]

    def test_the_start_told_when_the_chain_breaks(self):
        # The chain seen at steps 3 and 4 only: held at step 4 (2 < 3
        # recordings), told when the chain's next recording does not hold.
        rules = self.rules()
        assert self.run(rules, chained={3, 4}) == []
        stats = recording(5, [1.0] * 9, MEASURED_SATURATION, loss=1.6)
        found = rules.observe(stats)
        assert [(f.mode, f.layer, f.step) for f in found] == [
            (F.EXPLODING_GRADIENTS, None, 0)
        ]
        assert "initial weights far too large" in found[0].message

    def test_the_start_told_when_the_fit_ends_first(self):
        # Held at step 4 (the chain seen on 2 recordings, 3 confirm it);
        # the fit ends there: told by `end_fit`, once.
        rules = self.rules()
        assert self.run(rules, chained={3, 4}) == []
        found = rules.end_fit()
        assert [(f.mode, f.layer, f.step) for f in found] == [
            (F.EXPLODING_GRADIENTS, None, 0)
        ]
        assert "initial weights far too large" in found[0].message
        assert found[0] in rules.findings
        assert rules.end_fit() == []

    def test_nothing_told_at_the_end_once_the_chain_is_told(self):
        rules = self.rules()
        assert self.run(rules, chained=range(5)) == [(F.SATURATED_ACTIVATIONS, 0, 4)]
        assert rules.end_fit() == []

    def test_the_start_told_at_once_without_a_chain(self):
        told = self.run(self.rules(), chained=())
        assert told == [(F.EXPLODING_GRADIENTS, 0, 4)]


def test_the_growth_shown_is_the_geometric_mean():
    # 27, 9, 3, 1 over 3 layers: 3x each, 27x in all.
    rms = [100.0, 27.0, 9.0, 3.0, 1.0, 1.0]
    found = chain(rms, [0.5] * 5 + [None])
    assert found.names == ["dense_1", "dense_2", "dense_3", "dense_4"]
    assert math.isclose(found.growth, 3.0) and math.isclose(found.total, 27.0)
