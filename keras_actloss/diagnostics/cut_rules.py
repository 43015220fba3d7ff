"""Layers that no gradient reaches while the layers after them get one.

A layer with weights whose every gradient is exactly 0, recording after
recording, while a layer nearer the outputs gets a finite gradient other than
0, is cut off from the loss: nothing passes a gradient back to it through
what follows it, so it and the layers before it do not learn. What cuts it
off is outside what is measured: units that output zero on every sample (a
ReLU in a layer or a function of the user's own, whose outputs are not
watched: a `Dense` with bias -10 whose outputs a layer subclass passes
through `keras.ops.relu` got exactly 0 on every step, and so did the ReLU
layer before it, with no finding), a `stop_gradient`, or an operation
without a gradient (rounding, `argmax`, a cast to integers). Such a Dense,
with its bias, is now judged by sign (`LayerInfo.units_by_sign`) and its
dead units reported as `dead_relu`, which explains the zeros here; this
rule finds the cut behind layers that are not (no bias, an `Embedding`).

The cut must be where nothing is watched, and whole: the layer nearest the
outputs among those cut off is a sublayer of a layer (or model) of the
user's own (`LayerInfo.inside`), and so is every other sublayer with weights
of that layer (an expert of a mixture of experts that its router sent no
sample to gets exactly 0 while the router learns: probed, 16 experts, top-1
routing, batches of 8, a failure for each expert in turn). In a functional
model's graph every activation is watched, and a cut of a branch there is
by design (probed: a branch that `ops.where` never takes, the heads of
tasks absent from the batches masked out, a target network behind
`stop_gradient`, a side path through `ops.round` or `argmax`, a Dense on
an optional input of zeros: each a failure before); a cut of its whole
trunk is not (`_trunk_cut`: every layer with weights as far from the
outputs as the cut or farther, the first layer the inputs reach among
them, gets no gradient, so nothing learns from the inputs; probed:
`Lambda(ops.round)`, `sign` or `stop_gradient` after the second layer of
an MLP, a `Dense(1)` followed by a `LayerNormalization`: no finding in
hundreds of steps). There TensorFlow gives the weights cut off no
gradient at all, JAX zeros.
It also stays out where the zeros have another explanation: a measured
ReLU-family layer with most of its units inactive (it cuts off the layers
before it, and `dead_relu` names them), a measured layer with most of its
outputs in its flat tails (`saturated_activations` names it), an
explosion reported before (its
updates leave saturated units with exactly 0 gradient: an SGD GRU whose
first update was 1.5e7 times its weights got none from the next step on),
or an output layer without a gradient (one that no loss reads: on JAX its
variables get zeros, TensorFlow leaves them out). The rule family
`CutRules` is mixed into `HealthRules`, whose state it uses.
"""

from __future__ import annotations

from keras_actloss import findings as F
from keras_actloss.diagnostics.activation_rules import _passing
from keras_actloss.diagnostics.records import StepStats
from keras_actloss.diagnostics.rule_support import RuleFamily

# The streaks of this rule, apart from the vanishing ones of the same layers.
_CUT = "no_gradient"


class CutRules(RuleFamily):
    """Layers cut off from the loss, judged on each recording.

    Relies on what `HealthRules` and `ActivationRules` keep: `_distance`
    (each layer's distance from the outputs), `_activity` and `_measured`
    (the windows of the layers whose units can die), and `thresholds`.
    """

    def _cut_off_layers(self, new, stats: StepStats) -> None:
        """Reports, once, the layers with exactly 0 gradient on `patience`
        recordings in a row over `patience_steps` steps while a layer nearer
        the outputs got one (`_passing`), unless the zeros are explained
        otherwise (see the module): one finding, on the one of them nearest
        the outputs, naming the others."""
        passing = _passing(stats, self._distance)
        explained = (
            self._exploded()
            or self._dying_measured()
            or self._saturated_measured(stats)
            or any(
                ls.grad_norm == 0.0 and self._distance[ls.layer] == 0
                for ls in stats.layers
            )
        )
        confirmed = []
        for ls in stats.layers:
            hit = (
                self._no_gradient(ls.layer, ls.grad_norm)
                and passing[ls.layer]
                and not explained
                and (F.VANISHING_GRADIENTS, ls.layer) not in self._reported
            )
            count, start = self._streaks.update((_CUT, ls.layer), hit, stats.step)
            if hit and self._confirmed(count, start, stats.step):
                confirmed.append((self._distance[ls.layer], ls.layer, start, count))
        if not confirmed:
            return
        # The nearest the outputs (the last in model order among equals).
        order = {ls.layer: i for i, ls in enumerate(stats.layers)}
        confirmed.sort(key=lambda c: (c[0], -order[c[1]]))
        _, layer, start, count = confirmed[0]
        others = [c[1] for c in sorted(confirmed[1:], key=lambda c: order[c[1]])]
        before = ""
        if others:
            names = ", ".join(f"'{o}'" for o in others)
            word = "layer" if len(others) == 1 else "layers"
            before = f", and of the {len(others)} {word} before it ({names}),"
        head = (
            f"Every gradient of layer '{layer}'{before} was exactly 0 on each of "
            f"the last {count} recordings (steps {start}-{stats.step}) while the "
            "layers nearer the outputs got gradients: "
        )
        inside = self._info[layer].inside
        cut = {c[1] for c in confirmed}
        if inside is None:
            # Cut in the model's graph, where every activation is watched:
            # by design where something still learns from the inputs (a
            # branch `ops.where` never takes, a task's head masked out, a
            # `stop_gradient`ed target network beside the online one); not
            # when the cut holds the whole trunk (`_trunk_cut`).
            if self._trunk_cut(layer, cut):
                self._report_trunk(new, layer, confirmed, others, head)
            return
        if any(
            info.inside == inside
            and info.has_trainable_weights
            and info.name not in cut
            for info in self.layers
        ):
            # Part of that layer learns: the cut is one of its paths, which
            # may be meant (an expert of a mixture its router sent no
            # sample to: 16 experts, top-1, batches of 8).
            return
        message = head + (
            "no gradient passes back "
            "to it through what follows it, so it does not learn. Units that "
            "output zero on every sample do this (dead ReLUs in what the `call` "
            f"of layer '{inside}' computes from it, which is not watched), and "
            "so do a `stop_gradient` and operations without a gradient "
            "(rounding, `argmax`, a cast to integers)."
        )
        fix = (
            f"Find what follows layer '{layer}' and passes no gradient: dead "
            "ReLUs come back with Leaky ReLU or ELU, a lower learning rate or "
            "biases that start at 0; a `stop_gradient` that is meant is better "
            "a frozen layer (`trainable=False`)."
        )
        self._add_cut(new, layer, confirmed, others, message, fix)

    def _add_cut(self, new, layer: str, confirmed, others, message, fix) -> None:
        """The one finding of the layers `confirmed` cut off, on `layer`,
        from the first step of their streaks; `others` reported with it."""
        start = min(c[2] for c in confirmed)
        self._add(new, F.VANISHING_GRADIENTS, layer, start, 0.0, message, fix)
        self._reported.update((F.VANISHING_GRADIENTS, o) for o in others)

    def _no_gradient(self, layer: str, norm: float | None) -> bool:
        """Whether `layer` got no gradient: exactly 0, or none at all (a
        layer with weights of the model's graph, where TensorFlow gives
        none to weights that an operation without a gradient cuts off: on
        JAX they get zeros)."""
        if norm is None:
            info = self._info.get(layer)
            return (
                info is not None
                and info.has_trainable_weights
                and (info.inside is None and info.distance is not None)
            )
        return norm == 0.0

    def _trunk_cut(self, layer: str, cut: set[str]) -> bool:
        """Whether the layers cut off (`cut`, `layer` the nearest the
        outputs) are every layer with weights as far from the outputs as
        `layer` or farther, the first layer the inputs reach
        (`input_layers`) among them: nothing learns from the inputs. Only
        where the layer graph is known (distances from model order do not
        tell a trunk from a branch)."""
        if any(info.distance is None for info in self.layers):
            return False
        far = self._distance[layer]
        trunk = {
            info.name
            for info in self.layers
            if info.has_trainable_weights and self._distance[info.name] >= far
        }
        return bool(self.input_layers) and self.input_layers <= trunk <= cut

    def _report_trunk(
        self, new, layer: str, confirmed: list, others: list, head: str
    ) -> None:
        """The finding of a cut in the model's graph that holds its trunk
        (`head`: its message's start, as for a cut inside a layer)."""
        message = head + (
            "nothing that reads "
            "the inputs learns, as no gradient passes back through what "
            f"follows layer '{layer}'. A `stop_gradient` does this, and so do "
            "operations without a gradient (rounding, `sign`, `argmax`, a cast "
            "to integers) and a normalization over a single value, whose "
            "output is a constant (`BatchNormalization` trained on batches of "
            "1, `LayerNormalization` over one feature)."
        )
        fix = (
            f"Find what follows layer '{layer}' and passes no gradient: replace "
            "an operation without a gradient by a differentiable one (or a "
            "straight-through estimator), train `BatchNormalization` on "
            "batches of several samples, normalize over more than one "
            "feature; a `stop_gradient` that is meant is better a frozen "
            "layer (`trainable=False`)."
        )
        self._add_cut(new, layer, confirmed, others, message, fix)

    def _saturated_measured(self, stats: StepStats) -> bool:
        """Whether a measured layer has `saturation` of its outputs or more
        in its flat tails, or saturation was reported: its
        `saturated_activations` explains the zeros (an ELU layer behind a
        bias of -30, the first of its model: every gradient exactly 0 on
        TensorFlow, its trunk cut off)."""
        if self._reported_any(F.SATURATED_ACTIVATIONS):
            return True
        limit = self.thresholds.saturation
        return any(
            ls.saturation is not None and ls.saturation >= limit for ls in stats.layers
        )

    def _dying_measured(self) -> bool:
        """Whether a measured layer whose units can die has most of its units
        inactive on its last recorded batch (`UnitActivity.latest`; dead
        ones are, before its window holds enough samples to tell them), or
        one was reported dead: its `dead_relu` explains the zeros before it
        and its own (a ReLU layer dead from the start under batches of 8:
        every gradient 0 at step 0, `dead_relu` at step 7)."""
        if self._died():
            return True
        fraction = self.thresholds.dead_fraction
        return any(
            layer in self._activity and self._activity[layer].latest() >= fraction
            for layer in self._measured
        )
