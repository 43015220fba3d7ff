"""Health rule for a model trained by several optimizers whose gradients all
collapse: a GAN whose discriminator saturates.

A discriminator that tells real from generated samples at once pushes its
output on the generated ones to 0. Under the generator's saturating loss,
log(1 - D(G(z))) (Goodfellow et al. 2014, "Generative Adversarial Nets",
section 3), the generator's gradient is then scaled by that output: it
vanishes on every one of its layers alike, so no layer is small next to the
others (the depth rule of `gradient_rules` sees nothing) and no gradient is
exactly zero (nor does the zero-gradient rule). The discriminator, right
about every sample, gets almost no gradient either. Measured (a probe: a
2-D Gaussian, a discriminator under Adam 1e-2, a generator under SGD 1e-3):
the gradient norms of both optimizers' layers fell 100x below those of the
first steps within about 30 steps and 4000x by step 60, and the generated
samples stayed where they started.

When only the discriminator's gradients collapse (it wins for a while under
the non-saturating loss, -log D(G(z))), the generator's stay large and it
catches up (the same probe: its gradient RMS rose about 20x while the
discriminator's fell about 3000x, and its samples reached the data): not
reported. So `CollapseRules` (mixed into `HealthRules`) judges a step of two
or more `apply` calls (`StepStats.apply_groups`) only when the gradients of
every one of them collapsed, and never once the loss converged or fell
(a model whose optimizers fit it to the end).
"""

from __future__ import annotations

import math

from keras_actloss import findings as F
from keras_actloss.diagnostics.records import StepStats
from keras_actloss.diagnostics.rule_support import RuleFamily, _finite, _median

# Every group's gradient norm at most this share of its level in the first
# recordings: collapsed by two orders of magnitude (the measured GANs fell
# through 1e-2 at about step 25, to 1e-3-1e-4 by steps 40-60; with the
# non-saturating loss the generator's norm never fell below its first
# steps').
_COLLAPSE = 1e-2

_FIX = (
    "Train the generator with the non-saturating loss (minimize -log D(G(z)): "
    "binary cross-entropy of the discriminator's output on generated samples "
    "against the label 'real') and slow the discriminator down (a lower "
    "learning rate, fewer of its steps per generator step, label smoothing or "
    "noise on its inputs); or use a Wasserstein loss with a gradient penalty."
)


def group_norms(stats: StepStats) -> dict[int, float]:
    """The gradient norm of each group of layers one `apply` call updates
    (`StepStats.apply_groups`; a layer not in it is in group 0): the root
    of the sum of its layers' squared norms, over layers with a finite norm."""
    squares: dict[int, float] = {}
    for ls in stats.layers:
        if _finite(ls.grad_norm):
            group = stats.apply_groups.get(ls.layer, 0)
            squares[group] = squares.get(group, 0.0) + ls.grad_norm**2
    return {group: math.sqrt(total) for group, total in squares.items()}


class CollapseRules(RuleFamily):
    """Every optimizer group's gradients collapsed, judged on recordings.

    Keeps `_group_early` (each group's norms of the first
    `baseline_steps` recordings), uses the shared streaks and the loss
    checks (`_converged`, `_fitted`), and sets `suspected` at a collapse
    not confirmed yet.
    """

    def _collapsed(self, new, stats: StepStats) -> None:
        norms = group_norms(stats)
        if len(norms) < 2:
            return
        early = self._group_early
        n = self.thresholds.baseline_steps
        if min(len(early.get(g, ())) for g in norms) < n:
            for group, norm in norms.items():
                if len(early.setdefault(group, [])) < n and norm > 0:
                    early[group].append(norm)
            return
        levels = {g: _median(early[g]) for g in norms}
        # The least collapsed group's share of its early level.
        worst = max(norms[g] / levels[g] for g in norms)
        # A group whose gradient is exactly 0 is cut off, not saturated (a
        # discriminator whose ReLU layers died passes the generator exactly
        # nothing: its dead units are the finding, `_dead_units`); so are
        # the gradients that fell as units died, once they were reported
        # (two optimizers, not a GAN, one at Adam 0.5: three quarters of a
        # layer dead after the first update, reported at step 8, then the
        # norms 0.0042 of the first steps', told of a discriminator).
        hit = (
            worst <= _COLLAPSE
            and min(norms.values()) > 0
            and not self._converged(stats)
            and not self._fitted()
            and not self._exploded()
            and not self._died()
        )
        # A key of its own: the depth rule resets the streaks of its mode.
        key = ("gradient_collapse", None)
        count, start = self._streaks.update(key, hit, stats.step)
        if not (hit and self._confirmed(count, start, stats.step)):
            # Dense recordings confirm it within `patience_steps`.
            self.suspected |= (
                hit and (F.VANISHING_GRADIENTS, None) not in self._reported
            )
            return
        each = ", ".join(
            f"{norms[g]:.3g} against {levels[g]:.3g}" for g in sorted(norms)
        )
        message = (
            f"The gradients of the layers of each of the {len(norms)} optimizer "
            f"`apply` calls of the step fell to {worst:.2g} of their level in "
            f"the first steps or less (global norms {each}), for {count} "
            f"recordings in a row (steps {start}-{stats.step}): no layer learns "
            "any more. In a GAN this is a discriminator that tells real from "
            "generated samples so surely that its output saturates: the "
            "generator's saturating loss, log(1 - D(G(z))), then passes it "
            "almost no gradient."
        )
        self._add(new, F.VANISHING_GRADIENTS, None, start, worst, message, _FIX)
