"""Health rule for a stack of sigmoid/tanh layers whose weights are too large.

Each hidden layer multiplies the backward signal by its weights and by its
activation's derivative. With weights far larger than the initialisation
for its width (Glorot's), a tanh layer's pre-activations spread so widely
that most of its outputs sit in the flat tails, yet the weights multiply
the gradient by more than the tails take away: the gradient grows at every
layer it passes back through (the "chaotic" regime of deep tanh networks,
Poole et al. 2016, "Exponential expressivity in deep neural networks
through transient chaos"). The model hardly learns: a small change of the
early weights scrambles the outputs. Fewer of the outputs may be in the
tails than the saturation rule needs (`Thresholds.saturation`), and no
gradient is small or growing over time, so no other rule sees it then.

`amplifying_chain` finds it on one recording; `ChainRules` (mixed into
`HealthRules`) reports it as `saturated_activations` once it persists.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from keras_actloss import findings as F
from keras_actloss.diagnostics.gradient_rules import _saturates
from keras_actloss.diagnostics.records import LayerInfo, StepStats
from keras_actloss.diagnostics.rule_support import RuleFamily, _finite

# The chain: at least this many hidden sigmoid/tanh layers at different
# distances from the output, the first layer (whose gradient scales with the
# inputs) left out...
_CHAIN_LAYERS = 3
# ...whose gradient RMS grows at every one of them on its way back to the
# input, by at least this factor per layer on average (a healthy Glorot tanh
# stack: about 1.1 after training, below 1 at the start)...
_GROWTH = 1.4
# ...and by at least this much from the nearest to the farthest...
_TOTAL = 10.0
# ...with at least this share of their outputs (median) in the flat tails
# (a Glorot tanh stack: under 1%; weights of stddev 0.5 on 64 inputs: 45%).
_SATURATION = 0.25

# The chain rule's streak (`HealthRules._streaks`; `StartRules` reads it).
CHAIN_KEY = (F.SATURATED_ACTIVATIONS, "<chain>")

_FIX = (
    "Initialise the weights for the activation (Keras's default "
    "`kernel_initializer='glorot_uniform'` for tanh and sigmoid), use ReLU "
    "instead of sigmoid/tanh in the hidden layers, or add batch normalization."
)


class Chain(NamedTuple):
    """What `amplifying_chain` found on one recording."""

    names: list[str]  # The chain's weighted layers, farthest from the output first.
    activations: list[str]  # Their activations, in that order.
    growth: float  # The gradient RMS's growth a layer (geometric mean).
    total: float  # ...and from the nearest layer to the farthest.
    saturation: float  # The median share of their outputs in the flat tails.


def _squashed(layers: list[LayerInfo], stats: StepStats) -> dict[str, tuple]:
    """Each `Dense` layer whose outputs go through a saturating activation
    with measured saturation: its own, or that of a weightless layer right
    after it when it has none (`Dense(64)` then `Activation("tanh")`), as
    `(activation, saturation)`.

    Only `Dense` layers: their gradient RMS can be compared from layer to
    layer. A convolution's kernel sums its gradient over every position of
    its feature maps, so the RMS of a layer before a pooling is larger by
    the layer type, not by a growing backward signal.
    """
    measured = {ls.layer: ls.saturation for ls in stats.layers}
    found = {}
    for i, layer in enumerate(layers):
        if layer.class_name != "Dense" or not layer.has_trainable_weights:
            continue
        source = layer
        if layer.activation in (None, "linear") and i + 1 < len(layers):
            after = layers[i + 1]
            if not after.has_trainable_weights:
                source = after
        if _saturates(source.activation) and measured.get(source.name) is not None:
            found[layer.name] = (source.activation, measured[source.name])
    return found


def amplifying_chain(
    stats: StepStats,
    layers: list[LayerInfo],
    distance: dict[str, int],
    exempt: frozenset = frozenset(),
) -> Chain | None:
    """The hidden sigmoid/tanh layers through which the gradient grows.

    Looks at the `Dense` layers whose outputs go through a saturating
    activation with measured saturation (`_squashed`), neither
    output layers (distance 0) nor in `exempt` (the first layer), in each
    group of layers one `apply` call updates (`StepStats.apply_groups`).
    Layers at the same distance from the output (parallel branches) count
    as one, by their median gradient RMS. The growth a layer is over the
    levels of weighted layers from the nearest to the farthest (a ReLU
    layer between two tanh layers is a step too).

    Returns the `Chain` of the first group that qualifies, or None.
    """
    squashed = _squashed(layers, stats)
    # The levels of weighted layers: the gradient's steps back to the input
    # (an `Activation` layer after a `Dense` is no step of its own).
    levels = {distance[i.name] for i in layers if i.has_trainable_weights}
    groups: dict[int, dict[int, list]] = {}
    for ls in stats.layers:
        if (
            ls.layer not in squashed
            or distance.get(ls.layer, 0) <= 0
            or ls.layer in exempt
            or not _finite(ls.grad_rms)
            or ls.grad_rms <= 0
        ):
            continue
        group = groups.setdefault(stats.apply_groups.get(ls.layer, 0), {})
        group.setdefault(distance[ls.layer], []).append(ls)
    for by_distance in groups.values():
        if len(by_distance) < _CHAIN_LAYERS:
            continue
        far_first = sorted(by_distance, reverse=True)
        rms = [
            float(np.median([r.grad_rms for r in by_distance[d]])) for d in far_first
        ]
        # Growing at every layer back towards the input, not one jump.
        if any(rms[i] <= rms[i + 1] for i in range(len(rms) - 1)):
            continue
        total = rms[0] / rms[-1]
        steps = sum(1 for d in levels if far_first[-1] < d <= far_first[0])
        growth = total ** (1.0 / steps)
        names = [r.layer for d in far_first for r in by_distance[d]]
        saturation = float(np.median([squashed[n][1] for n in names]))
        if growth >= _GROWTH and total >= _TOTAL and saturation >= _SATURATION:
            activations = [squashed[n][0] for n in names]
            return Chain(names, activations, growth, total, saturation)
    return None


class ChainRules(RuleFamily):
    """Sigmoid/tanh stacks whose weights are too large, judged on each
    recording (`amplifying_chain`), under the saturation rule's
    conditions: not once the loss has converged or halved, nor after an
    explosion. Mixed into `HealthRules`, whose state it uses: the start's
    explosion `StartRules` held for it (`_start_held`) is told here when
    the chain breaks before it is confirmed, else dropped (or told by
    `HealthRules.end_fit` if the fit ends first)."""

    def _amplified(self, new, stats: StepStats) -> None:
        chain = None
        if not (self._converged(stats) or self._exploded() or self._fitted(stats.loss)):
            exempt = self.input_layers | self.output_layers
            chain = amplifying_chain(stats, self.layers, self._distance, exempt)
        count, start = self._streaks.update(CHAIN_KEY, chain is not None, stats.step)
        confirmed = chain is not None and self._confirmed(count, start, stats.step)
        held = self._start_held
        if held is not None and (chain is None or confirmed):
            self._start_held = None
            if chain is None:
                self._add(new, *held)
        if not confirmed:
            return
        names, activations, growth, total, saturation = chain
        kinds = "/".join(sorted(set(activations)))
        shown = ", ".join(f"'{n}'" for n in names[:3]) + (
            f", ... '{names[-1]}'" if len(names) > 3 else ""
        )
        message = (
            f"The {kinds} layers {shown} have {saturation:.0%} of their outputs "
            f"in the flat tails, and the gradient grows {growth:.2g}x at each "
            f"layer it passes back through ({total:.3g}x from '{names[-1]}' to "
            f"'{names[0]}'; {count} recordings in a row, steps {start}-"
            f"{stats.step}): their weights are too large for {kinds}, so the "
            "layers amplify every small change of the early weights and the "
            "model hardly learns."
        )
        self._add(
            new,
            F.SATURATED_ACTIVATIONS,
            names[0],
            start,
            saturation,
            message,
            _FIX,
        )
