"""Health rules judged on the gradients of full recordings.

Vanishing gradients (`vanishing_layers`: far layers whose gradients are tiny
next to the layers near the output, progressively and not because a branch
is bypassed), and exploding ones that grow on their way back
(`grown_layers`: 1e3x those of the layers nearest the loss). The rule
family `RecordedGradientRules` is mixed into `HealthRules`, whose state it
uses; updates too large for the weights they change are `update_rules`'.
"""

from __future__ import annotations

import collections
import dataclasses
import math

import numpy as np

from keras_actloss import findings as F
from keras_actloss import registry
from keras_actloss.diagnostics.records import LayerInfo, StepStats
from keras_actloss.diagnostics.rule_support import (
    _FALLEN_FIX,
    _FLAT_TAIL_FIX,
    _JUMP_FIX,
    _STILL_LOSS,
    _WEIGHTS_FIX,
    FIXES,
    RuleFamily,
    _finite,
    _lower_first,
    _named,
    per_weight,
    recurrent,
)
from keras_actloss.diagnostics.thresholds import Thresholds
from keras_actloss.profiles import SIGMOID, TANH

# A recording whose layers near the output get less than this share of their
# gradient RMS at the last `_LEVELS` judged recordings (median) is no
# evidence against vanishing: the loss gradient cancelled at the output on
# that batch (as a model that predicts about the same for every sample gets
# on a batch whose labels average to its prediction), not that the far
# layers caught up. It neither extends nor breaks a streak there.
_QUIET_REFERENCE = 0.1
_LEVELS = 8
# A layer whose gradient RMS fell to this share of its level in its first
# `_EARLY_RECORDINGS` recordings (their largest) while the loss stayed at
# `_STILL_LOSS` of its first value or more has collapsed, not kept small by
# nature: Adam's steps keeping their size do not make it a learning layer
# (`_keeps_pace`). A transformer under Adam at lr 0.1: its lower layers'
# gradients fell 180-310x within 5 steps, the loss at chance from then on.
_FALLEN = 1e-2
_EARLY_RECORDINGS = 3
# The fix of vanishing gradients behind hidden layers with a softmax.
_HIDDEN_SOFTMAX_FIX = (
    "Use ReLU (or another non-saturating activation) in the hidden layers: a "
    "softmax makes the output layer's class probabilities, and in a hidden "
    "layer it shrinks the gradient more the more units it has."
)
# The fix of vanishing gradients behind recurrent layers only
# (`_shrinks`): their gates are sigmoid and tanh by design. Probed: a
# masked Bidirectional GRU and LSTM under Adam at 5, its gates driven into
# their tails by the first steps (an explosion, told), then its Embedding's
# gradients vanished: told to use ReLU and batch normalization.
_RECURRENT_VANISHING_FIX = (
    "Lower the learning rate and clip gradients (`clipnorm=1.0` in the "
    "optimizer): steps too large drive a recurrent layer's gates into their "
    "flat tails. Keep Keras's initialisation of its weights (orthogonal "
    "recurrent kernels; `unit_forget_bias=True` for an LSTM), and use an LSTM "
    "or GRU rather than a sigmoid or tanh SimpleRNN over long sequences."
)
# A layer whose gradient RMS, or its ratio to the layers near the output,
# grew this many times over its streak (the RMS at its highest) is catching
# up, not vanishing: its streak starts again from there (`_catching_up`). A CNN
# whose classifier head starts at zero under SGD with momentum: every
# gradient behind the head is scaled by the head's weights, which grow from
# 0: the last convolution's grew 7.6x over 5 steps (0.0092x the head's at
# step 5), reported as vanishing, and the model fitted (accuracy 0.99).
_CATCHING_UP = 2.0
# A layer whose streak has begun keeps it on a recording where it is within
# this factor of every bound on the ratios (to the reference's RMS and max,
# and the next layer's), its RMS still under `vanishing_rms`: a ratio near
# the bound flickers across it with the output layer's noise, batch to
# batch; only a recording within the bounds confirms a streak. A 4-layer
# sigmoid MLP under SGD at 0.1, its first layer's gradient RMS a flat 1e-4
# and its output layer's 0.013-0.08: 0.002-0.015 of the reference, under
# 0.01 at most recordings, and reported at step 63 (under 0.01 three
# recordings in a row over 5 steps), the loss at chance from step 0.
_NEAR_MISS = 2.0
# Weights with an RMS under this (Glorot's for a layer of 16,384 inputs and
# outputs is 0.0078): a layer nearer the output initialised at or near 0 (a
# classifier head of zeros, or of stddev 1e-3), which scales every gradient
# behind it by them: named as the cause (`_tiny_weights`). Under SGD its
# weights grow from there, and the gradients with them.
_TINY_WEIGHTS = 3e-3
_TINY_WEIGHTS_FIX = (
    "If that layer starts at or near zero on purpose (a zero-initialised "
    "head), the gradients behind it grow with its weights: under SGD that "
    "takes many steps, under Adam a few. Otherwise initialise it with "
    "Keras's defaults (`glorot_uniform`)."
)
# A tanh-like layer (derivative 1 at 0) between a vanishing layer and the
# output is named as a cause unless fewer than this share of its outputs were
# in the flat tails: its pre-activations then spread less than about N(0,
# 0.8), where tanh's mean derivative is 0.7 or more (0.6 at 1% in the tails,
# 0.37 at 19%); a sigmoid-like one always is (`_shrinks_by_nature`).
_SQUASHED_SHARE = 0.001


def _profile(activation: str | None):
    """The registered profile of an activation name, or None."""
    return registry.get_profile("activation", activation) if activation else None


def _saturates(activation: str | None) -> bool:
    profile = _profile(activation)
    return profile is not None and profile.saturates


def _family(activation: str | None) -> str | None:
    profile = _profile(activation)
    return None if profile is None else profile.family


def _shrinks_by_nature(activation: str | None) -> bool:
    """Whether the activation scales every gradient down, saturated or not:
    the sigmoid family, whose largest derivative is 1/4 (hard sigmoid's
    1/6). Tanh's is 1, at 0: it shrinks the gradient only in its tails."""
    return _family(activation) == SIGMOID


def _quieter(levels: collections.deque, level: float) -> bool:
    """Whether `level` is under `_QUIET_REFERENCE` of the median of
    `levels` (the last judged recordings', at least one: a second recording
    can be quiet against the first, as stacked sigmoid `SimpleRNN`s' output
    layer whose gradient RMS fell from 0.124 to 0.0038 while the first
    layer's stayed at 4-9e-5); `level` is kept in `levels`."""
    recent = list(levels)
    levels.append(level)
    return bool(recent) and level < _QUIET_REFERENCE * float(np.median(recent))


def _span(count: int, start: int, step: int, unjudged: int = 0) -> str:
    """A streak's recordings for a message: `count` in a row from step
    `start` to `step`, or with `unjudged` more between them (quiet at the
    output, `_quieter`)."""
    if not unjudged:
        return f"{count} recordings in a row (steps {start}-{step})"
    return (
        f"{count} recordings (steps {start}-{step}; {unjudged} more between "
        "them not judged, quiet at the output)"
    )


def _distances(layers: list[LayerInfo]) -> dict[str, int]:
    """Each layer's distance from the outputs: from the layer graph when
    every layer has one, else from model order (the last layer is 0)."""
    if layers and all(info.distance is not None for info in layers):
        return {info.name: info.distance for info in layers}
    return {info.name: len(layers) - 1 - i for i, info in enumerate(layers)}


def _squashing(layers: list[LayerInfo], distance: dict[str, int], far: int) -> list:
    """The hidden layers with a saturating activation (sigmoid, tanh) from
    distance `far` to the output, exclusive: the output layer's own
    activation scales every layer's gradient alike."""
    return [
        info.name
        for info in layers
        if _saturates(info.activation)
        and 0 < distance[info.name] <= far
        and info.gate is None  # Off the path it gates.
    ]


def _shrinking(
    names: list[str],
    layers: list[LayerInfo],
    saturation: dict[str, float | None],
    unmeasured: bool,
) -> list[str]:
    """The layers among `names` (`_squashing`'s) whose activation shrinks
    the gradient: the sigmoid family always, a tanh-like one with at least
    `_SQUASHED_SHARE` of its outputs measured in the flat tails, and one
    whose outputs are not measured when `unmeasured`."""
    activation = {info.name: info.activation for info in layers}
    shrinking = []
    for name in names:
        share = saturation.get(name)
        if (
            _shrinks_by_nature(activation[name])
            or (share is None and unmeasured)
            or (share is not None and share >= _SQUASHED_SHARE)
        ):
            shrinking.append(name)
    return shrinking


def vanishing_layers(
    stats: StepStats, layers: list[LayerInfo], t: Thresholds
) -> dict[str, tuple[float, float]] | None:
    """Layers far from the loss whose gradients vanish at one recording.

    Returns `{layer: (grad_rms, ratio_to_reference)}` for the layers meeting
    the condition, or None when the recording cannot be judged (too few
    layers with gradients, or the layers near the output are quiet).
    """
    judged = _judged(stats, layers, t)
    return None if judged is None else judged.found


@dataclasses.dataclass
class _Judged:
    """One recording judged for vanishing gradients (`_judged`).

    `found` and `near` map layers to `(grad_rms, ratio_to_reference)`:
    `found` those meeting the condition, `near` those within `_NEAR_MISS`
    of its ratio bounds (not in `found`). `level` is the reference level
    (the median gradient RMS of the layers near the output; the largest
    when the layers are judged in groups) and `references` names each
    found layer's reference layers.
    """

    found: dict
    near: dict
    level: float
    references: dict


def _judged(
    stats: StepStats,
    layers: list[LayerInfo],
    t: Thresholds,
    fallen: frozenset[str] = frozenset(),
) -> _Judged | None:
    """`vanishing_layers`, with its near misses, the reference level and
    the reference layers (`_Judged`). The layers in `fallen`
    collapsed from their own early level (`_FALLEN`): judged on their
    gradients alone.

    The layers updated by each `apply` call of the step
    (`StepStats.apply_groups`: a GAN's generator and discriminator) are
    judged apart: each call's gradients come from its own loss, so a
    generator's first layer is compared with the generator's last ones,
    not with the discriminator's output layer.
    """
    weighted = {info.name for info in layers if info.has_trainable_weights}
    distance = _distances(layers)
    groups: dict[int, list] = {}
    for ls in stats.layers:
        if ls.layer in weighted and _finite(ls.grad_rms, ls.grad_max):
            groups.setdefault(stats.apply_groups.get(ls.layer, 0), []).append(ls)
    found, near, levels, references = {}, {}, [], {}
    saturation = {ls.layer: ls.saturation for ls in stats.layers}
    for rows in groups.values():
        judged = _judged_rows(rows, distance, layers, saturation, t, fallen)
        if judged is not None:
            found.update(judged[0])
            near.update(judged[1])
            levels.append(judged[2])
            references.update(dict.fromkeys(judged[0], judged[3]))
    return _Judged(found, near, max(levels), references) if levels else None


def _judged_rows(
    rows: list,
    distance: dict[str, int],
    layers: list[LayerInfo],
    saturation: dict[str, float | None],
    t: Thresholds,
    fallen: frozenset[str] = frozenset(),
) -> tuple[dict, dict, float, tuple[str, ...]] | None:
    """`_judged` on the rows of one group of layers (`saturation`: each
    measured layer's share of outputs in the flat tails): the layers found,
    the near misses, the reference level and the names of the reference
    layers (those near the output)."""
    n = len(rows)
    if n < t.vanishing_min_layers:
        return None
    # Farthest from the loss first; ties (parallel branches) keep model order.
    rows.sort(key=lambda ls: -distance[ls.layer])
    reference = rows[-max(2, n // 4) :]
    ref_rms = float(np.median([ls.grad_rms for ls in reference]))
    ref_max = float(np.median([ls.grad_max for ls in reference]))
    if ref_rms < t.vanishing_reference_rms:
        return None
    ratios = {ls.layer: ls.grad_rms / ref_rms for ls in rows}
    found, near = {}, {}
    gates = {info.name for info in layers if info.gate is not None}
    for ls in rows[: n // 2]:
        if ls.layer in gates:
            continue  # Small by design; the model learns through its path.
        # Exactly zero is a cut (dead units upstream, unused branch), not a
        # shrinking signal. `miss`: how far over the ratio bounds (<= 1
        # within them).
        miss = max(
            ratios[ls.layer] / t.vanishing_ratio,
            ls.grad_max / (t.vanishing_ratio * ref_max),
        )
        small = 0 < ls.grad_rms < t.vanishing_rms
        if not (small and miss < _NEAR_MISS):
            continue
        # A depth effect is progressive: the loudest layer one step closer
        # to the loss is well below the output layers too, unlike a lone
        # quiet first layer fed with tiny inputs, or a query projection
        # beside a loud value projection.
        closer = [
            distance[r.layer] for r in rows if distance[r.layer] < distance[ls.layer]
        ]
        level = max(closer, default=None)
        nearest = max(
            (ratios[r.layer] for r in rows if distance[r.layer] == level),
            default=math.inf,
        )
        miss = max(miss, nearest / math.sqrt(t.vanishing_ratio))
        if (
            miss < _NEAR_MISS
            and not _bypassed(ls.layer, rows, ratios, distance, layers, t)
            and (
                ls.layer in fallen
                or not _keeps_pace(ls, reference, distance, layers, saturation, t)
            )
        ):
            (found if miss < 1 else near)[ls.layer] = (ls.grad_rms, ratios[ls.layer])
    return found, near, ref_rms, tuple(ls.layer for ls in reference)


def _keeps_pace(ls, reference, distance, layers, saturation, t: Thresholds) -> bool:
    """Whether a layer with small gradients still learns about as fast as
    the layers near the output: its update ratio (`||delta w|| / ||w||`) at
    least `sqrt(vanishing_ratio)` of theirs (median), with no hidden layer
    between it and the output whose activation shrinks the gradient: of the
    sigmoid family, or tanh-like with at least `_SQUASHED_SHARE` of its
    outputs measured in the flat tails.

    An adaptive optimizer (Adam, RMSprop) scales each weight's step by its
    own gradient history, so gradients made small by the architecture (an
    `Embedding` whose rows are averaged over a sequence or few of whose rows
    a batch uses, weights shared over many positions) still move the
    weights at the pace of the rest: the layer is learning. Behind such
    sigmoid or tanh layers the small gradients are the classic failure even
    when Adam's steps keep their size (a deep sigmoid stack stays on its
    plateau), so the gradients alone decide there, as they do under SGD,
    whose steps shrink with them. (A recurrent layer's tanh, whose outputs
    are not measured, does not decide it.)
    """
    squashing = _squashing(layers, distance, distance[ls.layer])
    if _shrinking(squashing, layers, saturation, unmeasured=False):
        return False
    paces = [r.update_ratio for r in reference if _finite(r.update_ratio)]
    if not paces or not _finite(ls.update_ratio):
        return False
    pace = float(np.median(paces))
    return pace > 0 and ls.update_ratio >= math.sqrt(t.vanishing_ratio) * pace


def _bypassed(layer, rows, ratios, distance, layers, t: Thresholds) -> bool:
    """Whether a quiet `layer` is a branch the gradient goes around rather
    than one it cannot reach.

    Vanishing by depth starves every layer behind the one it starves. When
    a layer farther from the loss (behind it, in a chain) gets a loud
    gradient, the gradient reaches the far end of the model by another path
    (a skip connection, a U-Net's concatenation) and this layer's branch is
    just little used: not a failure, unless saturating hidden activations
    between it and the output shrink the gradient on the way (that is the
    mechanism, whatever other paths exist).
    """
    far = distance[layer]
    if _squashing(layers, distance, far):
        return False
    loud = math.sqrt(t.vanishing_ratio)
    return any(ratios[r.layer] >= loud for r in rows if distance[r.layer] > far)


# A layer farther from the loss whose gradient RMS is this many times that
# of the layers nearest it (the outputs of its group) grows the gradient on
# its way back: exploding gradients through depth or time (`grown_layers`).
# A GRU whose recurrent kernel is 8x Keras's orthogonal one: 4e4x its
# output layer's under Adam, every step, the loss stuck at chance; healthy
# layers stay within about 10x of the output's.
_GROWN_RATIO = 1e3
# ...and a recurrent layer's this many times, its gradient grown through the
# sequence's steps (its recurrent kernel multiplies it at each), where the
# inputs are standardized (its input kernel's gradient grows with them) and
# the model has not fitted (a fitted head's gradients shrink): healthy
# recurrent layers probed (LSTM, GRU and SimpleRNN cells; stacked,
# bidirectional, masked, sequence to sequence; 30-200 steps; both backends)
# stayed at 0.02-4.1x, the highest late in runs whose head had fitted; a
# ReLU SimpleRNN whose recurrent kernel is orthogonal with gain 2, under
# Adam (JAX seed shift 23 of `exploding_relu_rnn`), 17-53x from step 0 with
# the loss at ln 2 (gain 1 on the same draw: 0.2-0.6x), told nothing.
_GROWN_RECURRENT = 10.0
# The streaks' key of `RecordedGradientRules._grown` (not a mode: the
# update rules count their own exploding streaks per layer).
_GROWN = "grown_gradients"


def grown_layers(
    stats: StepStats,
    layers: list[LayerInfo],
    t: Thresholds,
    recurrent_ratio: float = _GROWN_RATIO,
) -> dict[str, tuple[float, float]]:
    """Layers whose gradients grew on their way back at one recording:
    `{layer: (grad_rms, ratio to the nearest layers)}`, in each group of
    layers one `apply` call updates (as `_judged`), against the median
    gradient RMS of the group's layers nearest the loss (at least
    `vanishing_reference_rms`): `_GROWN_RATIO` times it, or
    `recurrent_ratio` times for a recurrent layer."""
    weighted = {info.name for info in layers if info.has_trainable_weights}
    limits = {
        info.name: recurrent_ratio if recurrent(info.class_name) else _GROWN_RATIO
        for info in layers
    }
    distance = _distances(layers)
    groups: dict[int, list] = {}
    for ls in stats.layers:
        if ls.layer in weighted and _finite(ls.grad_rms):
            groups.setdefault(stats.apply_groups.get(ls.layer, 0), []).append(ls)
    found = {}
    for rows in groups.values():
        near = min(distance[ls.layer] for ls in rows)
        reference = np.median(
            [ls.grad_rms for ls in rows if distance[ls.layer] == near]
        )
        if not reference >= t.vanishing_reference_rms:
            continue
        for ls in rows:
            ratio = ls.grad_rms / float(reference)
            if distance[ls.layer] > near and ratio >= limits[ls.layer]:
                found[ls.layer] = (ls.grad_rms, ratio)
    return found


# Layers confirmed vanishing on one recording with one fix: one finding from
# this many on (`_add_vanishing`; a list of findings past a handful of one
# cause is not read at a glance), naming this many of them after the first.
_GROUPED = 5
_NAMED = 5


# A recording whose kernels (the gradient tensors that are not vectors:
# `StepStats.kernel_share`) carry at most this share of the squared
# gradient norm starves them: a kernel's gradient is its inputs times the
# error, a bias's the error alone, so inputs at about 0.2% of their scale or
# less reach every kernel (`RecordedGradientRules._starved_kernels`). Healthy
# models as Keras initialises them, and trained: 0.6-0.95 (an MLP, a CNN,
# an LSTM, attention), 0.08 (an embedding of 100k rows, few used a batch);
# a depthwise/separable ReLU CNN on inputs in [0, 1] starts slowly from
# 2.5e-5-1e-3 (on its first 40 steps; Adam learns it to 100% accuracy).
# Probed: an LSTM whose gates' biases are all -6 (gates closed, its outputs
# about 1e-5): 1e-9-3e-7, nothing learnt; a `Lambda(x * 1e-6)` between two
# Dense layers: 8e-11.
_STARVED_SHARE = 3e-6
# The streaks' key of `_starved_kernels`.
_STARVED = "starved_kernels"
_STARVED_FIX = (
    "Find the layer whose outputs are near 0 for every sample (its "
    "activations in TensorBoard): initialise a recurrent layer's gate biases "
    "as Keras does (`unit_forget_bias=True`, the others 0), remove a scaling "
    "far below 1, and standardize the inputs."
)


class RecordedGradientRules(RuleFamily):
    """Vanishing gradients, judged on each recording.

    Mixed into `HealthRules`; a condition is reported once it holds for
    `patience` recordings spanning `patience_steps` steps (`_confirmed`),
    or, with several steps per execution, on the recorded step and every
    step of its execution before it, spanning them (`_through_execution`).
    A recording whose layers near the output are far quieter than at the
    recent ones (`_quiet_reference`, on `HealthRules._levels`) counts for
    the far layers that still vanish against it and breaks no streak.
    """

    def _vanishing(self, new, stats: StepStats) -> None:
        t = self.thresholds
        converged = self._converged(stats)
        fallen = self._fallen(stats)
        judged = None if converged else _judged(stats, self.layers, t, fallen)
        if judged is None:
            self._streaks.reset(self._streaks.keys(F.VANISHING_GRADIENTS))
            return
        found, references = judged.found, judged.references
        quiet = self._quiet_reference(judged.level)
        confirmed = []
        for ls in stats.layers:
            # Behind layers whose units are all dead a kernel gets no input:
            # its small gradients are theirs to tell (`dead_relu`).
            hit = ls.layer in found and not self._behind_dead(ls.layer)
            key = (F.VANISHING_GRADIENTS, ls.layer)
            if quiet and not hit:
                if self._streaks.count(key):
                    self._unjudged[ls.layer] += 1
                continue
            near = ls.layer in judged.near and not self._behind_dead(ls.layer)
            if near and self._streaks.count(key):
                # Kept, not confirmed (`_NEAR_MISS`).
                self._streaks.update(key, True, stats.step)
                continue
            count, start = self._streaks.update(key, hit, stats.step)
            if count == 1:
                self._unjudged[ls.layer] = 0
            if not hit:
                continue
            if ls.layer not in fallen and self._catching_up(ls.layer, count, found):
                count, start = self._streaks.update(key, True, stats.step)
            through = None
            if count == 1:
                through = self._through_execution(ls.layer, references, stats)
            if through is not None or self._confirmed(count, start, stats.step):
                rms, ratio = found[ls.layer]
                why, fix = self._shrinks(ls.layer, stats)
                if fix == _WEIGHTS_FIX and ls.layer in fallen:
                    why, fix = self._fell(ls.layer, rms, stats.loss), _FALLEN_FIX
                jump = self._jump_since(start)
                if fix == _WEIGHTS_FIX and jump is not None:
                    why = (
                        f"it began {jump}: steps far too large took the model "
                        "where the gradient no longer reaches it"
                    )
                    fix = _JUMP_FIX
                elif fix in (None, _FLAT_TAIL_FIX) and jump is not None:
                    # Saturating activations pushed into their flat tails by
                    # the jump (probed: a tanh MLP whose rate jumped 5000x,
                    # its layers 91-100% saturated, told to swap tanh for
                    # ReLU without naming the jump).
                    why += (
                        f"; it began {jump}: steps far too large pushed them "
                        "into their flat tails"
                    )
                    own = FIXES[F.VANISHING_GRADIENTS] if fix is None else fix
                    fix = f"{_JUMP_FIX} If they still vanish: {_lower_first(own)}"
                span = _span(count, start, stats.step, self._unjudged[ls.layer])
                if through is not None:
                    start = through
                    span = (
                        f"each of the {stats.step - start + 1} steps of its "
                        f"execution (steps {start}-{stats.step})"
                    )
                confirmed.append((ls.layer, start, rms, ratio, why, fix, span))
        self._add_vanishing(new, confirmed)

    def _behind_dead(self, layer: str) -> bool:
        """Whether every input of `layer` comes through layers whose units
        are all dead (`LayerInfo.upstream`; `ActivationRules._all_dead`,
        on their windows so far)."""
        info = self._info.get(layer)
        upstream = info.upstream if info is not None else ()
        return bool(upstream) and all(self._all_dead(u) for u in upstream)

    def _starved_kernels(self, new, stats: StepStats) -> None:
        """Reports vanishing gradients of the whole model when its kernels
        carry at most `_STARVED_SHARE` of the squared gradient norm
        (`StepStats.kernel_share`) for `patience` recordings over
        `patience_steps` steps while it has not fitted (`_fitted`): the
        signal reaches no kernel, and the model learns little beyond its
        biases. Not while a layer's units are mostly inactive on the batch
        (`dead_fraction`) or a layer's gradients are exactly 0 (cut off),
        nor once dead units or a layer's vanishing gradients were told
        (the layer that starves them named; judged after those rules). A
        recording whose global gradient norm is far under the recent ones'
        (`_quieter`) and whose share is over the limit neither extends nor
        breaks the streak, as in `_vanishing`."""
        share, most = stats.kernel_share, self.thresholds.dead_fraction
        starved = _finite(share) and share <= _STARVED_SHARE
        # Units inactive on the batch starve the kernels after them, and
        # cut the layers before them off (their gradients exactly 0).
        judged = not self._fitted(stats.loss) and not any(
            (_finite(ls.dead_fraction) and ls.dead_fraction >= most) or ls.grad_rms == 0
            for ls in stats.layers
        )
        key = (_STARVED, None)
        quiet = _finite(stats.global_norm) and _quieter(
            self._norm_levels, stats.global_norm
        )
        if quiet and judged and not starved and self._streaks.count(key):
            # The loss gradient cancelled at the output on this batch: the
            # biases' share fell with it, no evidence that a kernel learns
            # (probed: an LSTM with closed gates, its output bias's gradient
            # 0.13-0.22, then 1e-3 on two batches: the kernels' share 2e-5
            # there, 1e-9 around them). Neither extends nor breaks it.
            self._starved_unjudged += 1
            return
        count, start = self._streaks.update(key, starved and judged, stats.step)
        if count == 1:
            self._starved_unjudged = 0
        if not count or not self._confirmed(count, start, stats.step):
            return
        if any(
            mode == F.DEAD_RELU or (mode == F.VANISHING_GRADIENTS and layer)
            for mode, layer in self._reported
        ):
            return  # The layer that starves them is named.
        loss = "" if not _finite(stats.loss) else f", the loss at {stats.loss:.3g}"
        span = _span(count, start, stats.step, self._starved_unjudged)
        message = (
            f"The kernels of the model's layers get {share:.2g} of the squared "
            f"gradient norm (its vectors, the biases, the rest) for {span}{loss}: "
            "almost no signal from the inputs reaches any kernel (a kernel's "
            "gradient is its inputs times the error, a bias's the error alone), so the "
            "model learns little beyond its biases. A layer's outputs are near "
            "0 for every sample: gates held closed (large negative biases in a "
            "recurrent layer), a scaling far too small, or units dead."
        )
        self._add(new, F.VANISHING_GRADIENTS, None, start, share, message, _STARVED_FIX)

    def _grown(self, new, stats: StepStats) -> None:
        """Reports a layer whose gradient RMS stayed `_GROWN_RATIO` times
        that of the layers nearest the loss for `patience` recordings
        (`grown_layers`; a recurrent layer `_GROWN_RECURRENT` times where
        `_recurrent_growth` holds) as exploding gradients, with the
        recurrent fix for a recurrent layer."""
        ratio = _GROWN_RECURRENT if self._recurrent_growth(stats) else _GROWN_RATIO
        found = (
            {}
            if self._exploded()
            else grown_layers(stats, self.layers, self.thresholds, ratio)
        )
        for ls in stats.layers:
            key = (_GROWN, ls.layer)
            count, start = self._streaks.update(key, ls.layer in found, stats.step)
            if not (count and self._confirmed(count, start, stats.step)):
                continue
            rms, ratio = found[ls.layer]
            info = self._info.get(ls.layer)
            through = (
                "its time steps (the recurrent kernel multiplies it at each)"
                if info and recurrent(info.class_name)
                else "the model"
            )
            message = (
                f"Layer '{ls.layer}' gets gradients with RMS {rms:.3g}, "
                f"{ratio:.3g} times those of the layers nearest the loss, for "
                f"{count} recordings in a row (steps {start}-{stats.step}): the "
                f"gradient grows on its way back through {through}; the "
                "gradients are exploding."
            )
            fix = self._explosion_fix(ls.layer)
            self._add(new, F.EXPLODING_GRADIENTS, ls.layer, start, rms, message, fix)

    def _recurrent_growth(self, stats: StepStats) -> bool:
        """Whether a recurrent layer's gradient is judged by
        `_GROWN_RECURRENT`: the inputs standardized (their scale known and
        within `input_scale`; not token ids) and the model neither fitted
        nor converged."""
        scale = self._input_scale
        return (
            scale is not None
            and scale <= self.thresholds.input_scale
            and not self._fitted(stats.loss)
            and not self._converged(stats)
        )

    def _catching_up(self, layer: str, count: int, found: dict) -> bool:
        """Whether `layer`'s gradient RMS or its ratio to the layers near
        the output (`found`) grew `_CATCHING_UP` times since the first
        recording of its streak (`count` long), neither below it, and the
        RMS is its highest yet: then its streak is restarted (reset here;
        the caller counts this recording as its first). (Behind a small
        head the layers near the output are small too: the ratio alone
        grew less than the RMS.)"""
        rms, ratio = found[layer]
        if count == 1 or layer not in self._vanish_first:
            self._vanish_first[layer] = (rms, ratio, rms)
            return False
        first_rms, first_ratio, top = self._vanish_first[layer]
        self._vanish_first[layer] = (first_rms, first_ratio, max(top, rms))
        grew = max(rms / first_rms, ratio / first_ratio)
        if rms < top or ratio < first_ratio or grew < _CATCHING_UP:
            return False
        self._streaks.reset([(F.VANISHING_GRADIENTS, layer)])
        self._vanish_first[layer] = (rms, ratio, rms)
        return True

    def _add_vanishing(self, new, confirmed: list) -> None:
        """Reports the layers confirmed vanishing on one recording: one
        finding each, or one for `_GROUPED` or more with the same fix, on
        the first of them in model order (a 12-block post-LN Transformer
        under SGD far too fast had 47 layers fall at once: 47 findings of
        one cause)."""
        groups: dict[str, list] = {}
        for entry in confirmed:
            # A layer reported before stays confirmed while its streak lasts.
            if (F.VANISHING_GRADIENTS, entry[0]) not in self._reported:
                groups.setdefault(entry[5], []).append(entry)
        for fix, entries in groups.items():
            if len(entries) < _GROUPED:
                for layer, start, rms, ratio, why, _, span in entries:
                    message = (
                        f"Layer '{layer}' gets gradients with RMS {rms:.3g}, "
                        f"{ratio:.2g} times those of the layers near the output, "
                        f"for {span}: it has almost stopped learning ({why})."
                    )
                    self._add(
                        new, F.VANISHING_GRADIENTS, layer, start, rms, message, fix
                    )
                continue
            layer, start, rms, _, why, _, span = entries[0]
            rmss = [e[2] for e in entries]
            ratios = [e[3] for e in entries]
            others = [e[0] for e in entries[1:]]
            named = ", ".join(f"'{o}'" for o in others[:_NAMED])
            if len(others) > _NAMED:
                named += f" and {len(others) - _NAMED} more"
            message = (
                f"{len(entries)} layers get gradients with RMS {min(rmss):.3g} to "
                f"{max(rmss):.3g}, {min(ratios):.2g} to {max(ratios):.2g} times "
                f"those of the layers near the output, for {span}: they have "
                f"almost stopped learning. Layer '{layer}' first ({why}); then "
                f"{named}."
            )
            start = min(e[1] for e in entries)
            self._add(new, F.VANISHING_GRADIENTS, layer, start, rms, message, fix)
            self._reported.update((F.VANISHING_GRADIENTS, o) for o in others)

    def _through_execution(
        self, layer: str, references: dict, stats: StepStats
    ) -> int | None:
        """The first step of the recorded execution when `layer`, found
        vanishing on the recorded step, vanished on every step of the
        execution before it too (`StepStats.execution_rms`: its gradient
        RMS under `vanishing_ratio` of the median of its reference layers',
        and under `vanishing_rms`, with that median at least
        `vanishing_reference_rms`), and the execution spans
        `patience_steps`; else None. With several steps per execution a
        recording holds one step's gradients, and the steps before it are
        read from their every-step rows: one execution of 8 steps confirms
        at its last step (7), not the next execution's (15)."""
        t = self.thresholds
        earlier = stats.execution_rms
        if not earlier:
            return None
        first = min(earlier)
        if sorted(earlier) != list(range(first, stats.step)):
            return None
        if not self._lasted(first, stats.step):
            return None
        for rms in earlier.values():
            reference = [rms[r] for r in references[layer] if r in rms]
            if layer not in rms or not reference:
                return None
            level = float(np.median(reference))
            if not (
                level >= t.vanishing_reference_rms
                and 0 < rms[layer] < min(t.vanishing_rms, t.vanishing_ratio * level)
            ):
                return None
        return first

    def _fallen(self, stats: StepStats) -> frozenset[str]:
        """The layers whose gradient RMS fell to `_FALLEN` of their level
        in their first `_EARLY_RECORDINGS` recordings (the largest, kept in
        `_early_rms`) while the loss of this recording is at least
        `_STILL_LOSS` of the loss where training began (`_stayed`) or of
        the loss of knowing nothing (`_knows_nothing`): a collapse, not
        learning."""
        early = self._early_rms
        for ls in stats.layers:
            seen = early.setdefault(ls.layer, [])
            if len(seen) < _EARLY_RECORDINGS and _finite(ls.grad_rms):
                seen.append(ls.grad_rms)
        if not (self._stayed(stats.loss) or self._knows_nothing(stats.loss)):
            return frozenset()
        return frozenset(
            ls.layer
            for ls in stats.layers
            if len(early[ls.layer]) == _EARLY_RECORDINGS
            and _finite(ls.grad_rms)
            and ls.grad_rms <= _FALLEN * max(early[ls.layer])
        )

    def _stayed(self, loss) -> bool:
        """Whether `loss` is at `_STILL_LOSS` of the loss where training
        began (`_start`) or over it."""
        began = self._start()
        return _finite(began, loss) and loss - began >= (_STILL_LOSS - 1) * abs(began)

    def _fell(self, layer: str, rms: float, loss: float) -> str:
        """Why a fallen layer's gradients vanish (`_fallen`)."""
        level = max(self._early_rms[layer])
        against = f"against {self._start():.3g} where training began"
        if not self._stayed(loss):
            nothing, what = self.uninformed_loss  # `_knows_nothing`.
            against = (
                "about the loss of a prediction that knows nothing "
                f"({what}: {nothing:.3g})"
            )
        return (
            f"its gradient RMS fell {level / rms:.3g}x from {level:.3g} in the "
            f"first steps while the loss stayed at {loss:.3g}, {against}: the "
            "first updates took the model where the gradient no longer reaches "
            "it, as steps far too large do"
        )

    def _quiet_reference(self, level: float) -> bool:
        """Whether the layers near the output got under `_QUIET_REFERENCE`
        of their median level at the last `_LEVELS` judged recordings
        (`_quieter`)."""
        return _quieter(self._levels, level)

    def _tiny_weights(self, layer: str, stats: StepStats) -> tuple | None:
        """`(name, weight RMS)` of the layer with weights nearest the output
        among those nearer it than `layer` whose weights' RMS is under
        `_TINY_WEIGHTS` (its weight norm over the root of its element
        count, `(grad_norm / grad_rms)^2`), else None."""
        far = self._distance[layer]
        found = []
        for ls in stats.layers:
            near = self._distance.get(ls.layer)
            if near is None or near >= far:
                continue
            root = per_weight(ls)
            if root is None or not _finite(ls.weight_norm):
                continue
            rms = ls.weight_norm / root
            if rms < _TINY_WEIGHTS:
                found.append((near, ls.layer, rms))
        if not found:
            return None
        _, name, rms = min(found)
        return name, rms

    def _shrinks(self, layer: str, stats: StepStats) -> tuple[str, str | None]:
        """Why the gradient shrinks between `layer` and the output, and the
        fix (None: the mode's own). Saturating activations are named only
        where they shrink it: the sigmoid family everywhere, a tanh-like
        layer unless it is near-linear (under `_SQUASHED_SHARE` of its
        outputs in the flat tails on this recording; named when its
        saturation was not measured)."""
        far = self._distance[layer]
        softmax = [
            n for n in self.hidden_softmax if 0 < self._distance.get(n, -1) <= far
        ]
        if softmax:
            # Hidden layers with weights and a softmax (`hidden_softmax`):
            # probed, 5 such layers of 64 units, the first's gradient RMS
            # 1e-9 of the output's, told to check the (Glorot) initialisation.
            why = (
                f"the softmax of the hidden {_named(tuple(softmax))} (outputs "
                "that sum to 1 over their units) divides the gradient among "
                "the units at every layer it passes back through"
            )
            return why, _HIDDEN_SOFTMAX_FIX
        squashing = _squashing(self.layers, self._distance, far)
        saturation = {ls.layer: ls.saturation for ls in stats.layers}
        named = _shrinking(squashing, self.layers, saturation, unmeasured=True)
        if named:
            listed = ", ".join(f"'{n}'" for n in named[:3])
            listed += ", ..." if len(named) > 3 else ""
            if all(recurrent(self._info[n].class_name) for n in named):
                # The tanh and sigmoid of a recurrent layer's gates: no
                # activation to swap, nor batch normalization to add.
                why = (
                    f"the gates and tanh of the recurrent layers {listed} "
                    "shrink the gradient through their time steps and on its "
                    "way back"
                )
                if self._exploded():
                    why += ", after the explosion reported before it"
                return why, _RECURRENT_VANISHING_FIX
            why = (
                f"the saturating activations of {listed} shrink the gradient "
                "at every layer it passes back through"
            )
            if not any(
                _family(self._info[n].activation) in (SIGMOID, TANH) for n in named
            ):
                # ELU, SELU, softplus: flat only in a tail their inputs were
                # pushed into; no sigmoid or tanh to swap for ReLU.
                return why, _FLAT_TAIL_FIX
            return why, None
        small = self._tiny_weights(layer, stats)
        if small is not None:
            name, rms = small
            why = (
                f"the weights of layer '{name}', nearer the output, are tiny "
                f"(RMS {rms:.2g}): every gradient passing back through it is "
                "scaled by them"
            )
            return why, _TINY_WEIGHTS_FIX
        why = "the gradient shrinks at every layer it passes back through"
        # Tanh-like layers left out are near-linear; a capped ReLU that never
        # reached its cap is a ReLU, not named.
        linear = [n for n in squashing if _family(self._info[n].activation) == TANH]
        if linear:
            top = max(saturation.get(name) or 0.0 for name in linear)
            kinds = "/".join(sorted({self._info[n].activation for n in linear}))
            share = f"at most {top:.2%}" if top > 0 else "none"
            why = (
                f"the {kinds} layers from it to the output are near-linear "
                f"({share} of their outputs in the flat tails), so the "
                "weights shrink the gradient at every layer it passes back "
                "through"
            )
        return why + ": check the weight initialisation", _WEIGHTS_FIX
