"""`check_model`'s checks of the compiled optimizer, before training.

- `heavy_weight_decay` (a warning): decoupled weight decay (AdamW, or
  `weight_decay` on any Keras optimizer) that takes `DECAY_SHARE` (1%) or
  more of every weight each step: learning rate times `weight_decay`, at
  the optimizer's current step or, under a learning-rate schedule (a
  warm-up), at the largest rate it gives in `_SCHEDULE_STEPS` steps from
  there. Keras applies it as `w -= learning_rate * weight_decay * w`, so
  weights that the gradients do not hold up shrink geometrically; usual
  settings take about 1e-5 to 1e-3 a step (AdamW's default 0.004 at a
  rate of 1e-3: 4e-6).
"""

from __future__ import annotations

import math

import keras

from keras_actloss.advisor.output_checks import finding
from keras_actloss.diagnostics.rule_support import DECAY_FIX, DECAY_SHARE
from keras_actloss.findings import WARNING, Finding

HEAVY_WEIGHT_DECAY = "heavy_weight_decay"
OPTIMIZER_MODES = (HEAVY_WEIGHT_DECAY,)
# Steps over which the message tells how far the decay alone takes a weight.
_SPAN = 100
# Steps after the current one at which a schedule's rate is read: a
# warm-up reaches its peak after tens to thousands of steps.
_SCHEDULE_STEPS = (10, 30, 100, 300, 1000, 3000, 10000, 30000)


def heavy_weight_decay(model: keras.Model) -> list[Finding]:
    """The model's optimizer (behind a `LossScaleOptimizer` too) when its
    decoupled weight decay takes `DECAY_SHARE` or more of every weight at
    its current learning rate or its schedule's peak (`_peak_rate`);
    nothing for a model not compiled, an optimizer without decay, or a
    rate that cannot be read."""
    optimizer = getattr(model, "optimizer", None)
    while isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    decay = getattr(optimizer, "weight_decay", None)
    if not isinstance(decay, (int, float)) or not decay > 0:
        return []
    try:
        rate, at = _peak_rate(optimizer)
    except (TypeError, ValueError):
        return []
    share = rate * decay
    if not math.isfinite(share) or share < DECAY_SHARE:
        return []
    kept = max(0.0, 1.0 - share) ** _SPAN
    when = "" if at is None else f" at step {at} of its schedule"
    takes = "takes" if at is None else "will take"
    return [
        finding(
            HEAVY_WEIGHT_DECAY,
            None,
            f"The optimizer's decoupled weight decay {takes} {share:.3g} of "
            f"every weight each step (learning rate {rate:.3g}{when} times "
            f"weight_decay {decay:.3g}): on its own it leaves {kept:.2g} of a "
            "weight after "
            f"{_SPAN} steps, so the weights fall toward 0 faster than the "
            "gradients can hold them up, and a model whose weights are near 0 "
            "outputs about the same for every input and learns nothing.",
            DECAY_FIX,
            value=share,
            severity=WARNING,
        )
    ]


def _peak_rate(optimizer) -> tuple[float, int | None]:
    """The optimizer's learning rate and None; under a schedule of its own
    (a `LearningRateSchedule` Keras can rebuild from the optimizer's config)
    that gives a larger rate `_SCHEDULE_STEPS` after its current step, the
    largest of those and its step."""
    rate = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    config = optimizer.get_config().get("learning_rate")
    if not isinstance(config, dict):
        return rate, None
    try:
        schedule = keras.optimizers.schedules.deserialize(config)
    except (TypeError, ValueError, KeyError):
        return rate, None  # A schedule of the user's Keras cannot rebuild.
    start, at = int(keras.ops.convert_to_numpy(optimizer.iterations)), None
    for step in _SCHEDULE_STEPS:
        value = float(keras.ops.convert_to_numpy(schedule(start + step)))
        if value > rate:
            rate, at = value, start + step
    return rate, at
