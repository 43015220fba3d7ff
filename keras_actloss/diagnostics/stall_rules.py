"""Health rules for updates too small to move the weights.

The gradients are measured before the optimizer clips and scales them
(no second pass), so a step that the optimizer makes far too small looks
healthy in them: a learning rate of 1e-7 under SGD, a `clipnorm` of 1e-8
(a gradient of norm 1 cut to 1e-8 of itself). What shows it is the update
each full recording measures against the weights it changes
(`LayerStats.update_ratio`): healthy steps change a layer by about 1e-3 of
its norm; at 1e-7 or less (`_STALLED`), float32's 24-bit mantissa (a
relative step of 6e-8) rounds most of the change away, and 1e5 steps move
the weights by 1% at most. Where the optimizer clips, updates of 1e-5 or
less (`_CLIPPED_STALL`) with every layer's gradient cut 1e3 times or more
(`_CLIP_CUT`) are the clip's doing: Adam rescales a gradient cut that
hard as it would any other, until its elements fall under its `epsilon`
(Adam at 1e-3 with `clipnorm=1e-8`: updates of 1e-6 of the weights, the
model unchanged after 192 steps).

Told as the model's (layer None) `vanishing_gradients`: the updates the
weights receive vanish, as when no gradient reaches them
(`ZeroGradientRules`), with the setting to change. Not while the loss
falls from where training began, nor for a classifier already far under
the loss of knowing nothing (a model at its optimum needs no steps), nor
at a learning rate of 0 (a `fit` that refreshes batch-normalization
statistics) or one still rising (a warm-up from 0), nor against weights
that a reported explosion blew up (`_blown`): its consequence.
"""

from __future__ import annotations

from keras_actloss import findings as F
from keras_actloss.diagnostics.records import Clipping, StepStats
from keras_actloss.diagnostics.rule_support import RuleFamily, _finite, _median
from keras_actloss.diagnostics.step_rules import negligible

# Updates of at most this share of every layer's weights leave them where
# they are (see the module).
_STALLED = 1e-7
# With the optimizer clipping every layer's gradient `_CLIP_CUT` times or
# more: updates of at most this share are the clip's.
_CLIPPED_STALL = 1e-5
_CLIP_CUT = 1e3
# A classifier whose loss is under this share of the loss of knowing
# nothing has learned: small steps there are no failure.
_LEARNED = 0.5
# A loss at this share of the first steps' (their median) or over it has
# not fallen: the batches of a model that does not move vary about as much.
_UNMOVED = 0.8

# After a reported explosion, weights this many times their first recorded
# norm (any layer) were thrown there by it: no step moves them (`_blown`).
_BLOWN = 100.0

_STREAK = ("stalled_updates", None)

_RATE_FIX = (
    "Raise the learning rate (Adam's default 1e-3 and 1e-2 for SGD are the "
    "usual starting points) and check that its schedule does not decay it "
    "to almost 0 in the first steps."
)
_CLIP_FIX = (
    "Raise the optimizer's clipping threshold to about the gradient norms "
    "measured here, or remove it: a clip should cut only the rare large "
    "steps. Then, if the steps are still too small, raise the learning rate."
)


def clip_cut(clip: Clipping | None, stats: StepStats) -> float | None:
    """How many times the optimizer's clip `clip` cuts
    the least-cut layer's gradient in the recording `stats`, at least
    (a layer's norm bounds each of its variables'); None without a clip or
    with a layer not measured."""
    if clip is None or clip.value <= 0:
        return None
    name, value = clip
    if name == "global_clipnorm":
        return stats.global_norm / value if _finite(stats.global_norm) else None
    field = "grad_max" if name == "clipvalue" else "grad_norm"
    sizes = [getattr(ls, field) for ls in stats.layers if ls.update_ratio is not None]
    if not sizes or not all(_finite(s) for s in sizes):
        return None
    return min(sizes) / value


class StallRules(RuleFamily):
    """Updates too small to move the weights (see the module). Mixed into
    `HealthRules`; uses `clipping`, `uninformed_loss` and the early losses
    of the state it sets up, and its own `_stall_rate` (the learning
    rate where the streak began)."""

    def _stalled(self, new, stats: StepStats) -> None:
        """Judges one recording's updates; reports a streak of `patience`
        recordings over `patience_steps` steps with every layer's update
        under the limit."""
        ratios = [
            ls.update_ratio
            for ls in stats.layers
            if _finite(ls.update_ratio, ls.weight_norm, ls.grad_norm)
            and ls.weight_norm > 0
            and ls.grad_norm > 0
        ]
        rate, loss = stats.learning_rate, stats.loss
        peak = max(ratios, default=None)
        if not peak or not _finite(loss, stats.global_norm):
            # No update at all (a step skipped under loss scaling): no
            # evidence either way.
            return
        clip = self.clipping
        cut = clip_cut(clip, stats)
        clipped = cut is not None and cut >= _CLIP_CUT
        limit = _CLIPPED_STALL if clipped else _STALLED
        start = self._streaks.start(_STREAK)
        rising = (
            start is not None
            and _finite(rate, self._stall_rate)
            and rate > self._stall_rate * (1 + 1e-6)
        )
        hit = (
            peak <= limit
            and not rising
            and not negligible(stats.global_norm, loss)
            and self._unmoved(loss)
            and not self._blown(stats)
        )
        count, start = self._streaks.update(_STREAK, hit, stats.step)
        if count == 1:
            self._stall_rate = rate
        if not self._confirmed(count, start, stats.step):
            return
        message = (
            f"Every update changes the weights by at most {peak:.2g} of their "
            f"norm ({count} recordings in a row, steps {start}-{stats.step}), "
            "against about 1e-3 in healthy training, while the loss stays at "
            f"{loss:.3g} ({_median(self._early_losses):.3g} in the first "
            "steps): the steps are too small to move the weights"
        )
        if clipped:
            message += (
                f". The optimizer's `{clip}` cuts every layer's "
                f"gradient {cut:.2g} times or more before applying it (the "
                "gradients measured here are from before clipping), the likely "
                "cause."
            )
            fix = _CLIP_FIX
        else:
            held = "" if rate is None else f", at a learning rate of {rate:.2g}"
            message += f"{held} (float32 rounds away a change under 6e-8 of a weight)."
            fix = _RATE_FIX
        self._add(new, F.VANISHING_GRADIENTS, None, start, peak, message, fix)

    def _blown(self, stats: StepStats) -> bool:
        """Whether an explosion was reported and a layer's weights are now
        `_BLOWN` times their first recorded norm or more: the updates are
        small against weights the explosion made huge, a consequence told
        with it, and raising the rate (this rule's fix) would not help.
        Probed: a ReLU MLP under SGD at 0.05 whose inputs turned 100x larger
        at step 1500 exploded (told at 1501), its weights grew from norms of
        about 5-10 to 1e6-4e8 by step 1510, and every update from then on
        was 1e-11 of them."""
        if not self._exploded():
            return False
        firsts = self._first_weight_norms
        return any(
            _finite(firsts.get(ls.layer), ls.weight_norm)
            and 0 < firsts[ls.layer] * _BLOWN <= ls.weight_norm
            for ls in stats.layers
        )

    def _unmoved(self, loss: float) -> bool:
        """Whether `loss` is still where training began (`_UNMOVED` of the
        first steps' or over it) and not that of a classifier that has
        learned (under `_LEARNED` of the loss of knowing nothing)."""
        early = _median(self._early_losses)
        if not _finite(early) or loss < _UNMOVED * early:
            return False
        uninformed = self.uninformed_loss
        return uninformed is None or loss >= _LEARNED * uninformed[0]
