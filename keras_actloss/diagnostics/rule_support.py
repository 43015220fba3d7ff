"""Pieces the health-rule families share: the fix of each failure mode,
streak counters, their common bookkeeping and small numeric helpers.

`keras_actloss.diagnostics.rules.HealthRules` reports each finding with a fix
from here; its rule families (`step_rules`, `stop_rules`,
`gradient_rules`, `update_rules`, `activation_rules`, ...) derive from
`RuleFamily` and count their streaks with `_Streaks`.
"""

from __future__ import annotations

import collections
import math
import re
from collections.abc import Iterable

from keras_actloss import findings as F
from keras_actloss.diagnostics.records import StepStats
from keras_actloss.findings import Finding

FIXES = {
    F.VANISHING_GRADIENTS: (
        "Use ReLU (or another non-saturating activation) instead of "
        "sigmoid/tanh in the hidden layers, and add batch normalization."
    ),
    F.EXPLODING_GRADIENTS: (
        "Lower the learning rate, clip gradients (e.g. `clipnorm=1.0` in the "
        "optimizer), and add batch normalization."
    ),
    F.DEAD_RELU: (
        "Use Leaky ReLU (or ELU) instead of ReLU, lower the learning rate, and "
        "avoid large negative bias initialisation."
    ),
    F.SATURATED_ACTIVATIONS: (
        "Use ReLU instead of sigmoid/tanh in hidden layers, add batch "
        "normalization, and check the input scaling and weight initialisation."
    ),
    F.NON_FINITE: (
        "Lower the learning rate, clip gradients (`clipnorm=1.0`), and check the "
        "data (NaN/inf inputs or labels) and the loss (log of 0, division by 0)."
    ),
    F.UNSTANDARDIZED_INPUTS: (
        "Standardize the inputs (zero mean, unit variance per feature), e.g. "
        "with a `keras.layers.Normalization` layer adapted to the training data."
    ),
}
# Every gradient zero while the loss is high: a saturated probability output.
_FROM_LOGITS_FIX = (
    "If the loss takes probabilities from a softmax or sigmoid output, use a "
    "linear output layer and the loss with `from_logits=True` (e.g. "
    "`keras.losses.SparseCategoricalCrossentropy(from_logits=True)`): a "
    "saturated output gives probabilities of exactly 0 and 1 in float32, whose "
    "gradient is exactly zero (the loss clips them, so it stays finite), while "
    "from logits the gradient is never zero while the loss is high."
)
_ZERO_FIX = (
    _FROM_LOGITS_FIX + " Lower the learning rate: a step too large saturates "
    "the output."
)
# Every gradient zero in a model with no probability output (no sigmoid or
# softmax output layer: a regressor, a siamese distance): no output
# saturates; a layer inside stops the gradient.
_STOPPED_FIX = (
    "Find the layer that stops the gradient: ReLU units inactive on every "
    "sample (use Leaky ReLU, and avoid large negative biases), or a loss that "
    "is not differentiable in the predictions (rounding, `argmax`, thresholds, "
    "`stop_gradient`)."
)
# An explosion reported at most this many steps before a non-finite step is
# its cause (the steps after a learning-rate jump that are watched, twice);
# so is a learning-rate jump up (`jump_factor` times in one step) this many
# steps before a failure begins (`RuleFamily._jump_before`).
_EXPLOSION_STEPS = 20
# A learning-rate jump up still names a failure this many steps after it
# while the rate stays up (`RuleFamily._jump_since`).
_HELD_STEPS = 100
# A failure that begins within `_EXPLOSION_STEPS` of a learning-rate jump up.
_JUMP_FIX = (
    "Lower the learning rate: undo the jump, or reach a smaller peak over many "
    "steps (a warm-up); clipping gradients (`clipnorm=1.0`) bounds the steps."
)
# The modes of `check_model`'s findings that the rules name as causes
# (`_TOLD_CAUSES`): units that start identical (zero or constant kernels),
# a layer normalization over a single value, a dropout of rate 0.9 or more.
SYMMETRIC_UNITS = "symmetric_units"
CONSTANT_NORMALIZATION = "constant_normalization"
EXTREME_DROPOUT = "extreme_dropout"
# And an output not in [0, 1] under a loss that takes probabilities.
LINEAR_OUTPUT_PROBABILITY = "linear_output_probability_loss"
# Units that start identical (`check_model`'s `symmetric_units`, and the
# failures after it).
SYMMETRIC_FIX = (
    "Initialise kernels with random values (Keras's default `glorot_uniform`, "
    "or `he_normal` before ReLU): a zero or constant kernel initializer never "
    "breaks the symmetry between units. Biases may start at zero."
)
# Every gradient zero from the first step: the model as initialised.
_ZERO_START_FIX = (
    "Standardize the inputs and check the weight initialisation (Keras's "
    "defaults: `glorot_uniform`, or `he_normal` for ReLU); if the loss takes "
    "probabilities from a softmax or sigmoid output, use a linear output layer "
    "and the loss with `from_logits=True`, whose gradient is never zero while "
    "the loss is high; and check that the loss is differentiable in the "
    "predictions (no rounding, `argmax`, thresholds or `stop_gradient`)."
)
# A `LayerNormalization` over axes of size 1 (`check_model`'s
# `constant_normalization`), and the failures after it (`RuleFamily._add`).
CONSTANT_NORM_FIX = (
    "Normalize over an axis with several features (project a single channel "
    "to several first, e.g. a Dense or Conv1D), or leave out the "
    "normalization of a one-feature axis."
)
# Vanishing gradients or dead units in a model with a dropout of rate 0.9 or
# more (`RuleFamily._add`).
_DROPOUT_FIX = (
    "Lower the dropout rate to 0.1-0.5: `rate` is the share of the inputs "
    "dropped, not kept."
)
# Failures under a loss that takes probabilities from an output not in
# [0, 1] (`linear_output_probability_loss`; `RuleFamily._add`).
_PROBABILITY_FIX = (
    "Use a sigmoid output (independent labels) or a softmax output (one class "
    "of several) for a loss that takes probabilities, or keep the linear "
    "output and pass `from_logits=True` to the loss (the most stable choice)."
)
# Failures early in a deep ReLU stack whose kernels start under He's scale,
# the signal shrunk to `_SHRUNK_SIGNAL` or less through them
# (`RuleFamily._shrunk_start`): 20 layers of 32 units under Keras's default
# `glorot_uniform` (sqrt(1/2) of He's each, 1e-3 in all) under Adam at 1e-3
# lost half the units of several layers in 6 steps and learned to 0.48
# (0.31 at a rate 10x lower; 0.63 with `he_normal`).
_SHRUNK_SIGNAL = 1e-2
_HE_FIX = (
    "Initialise the ReLU layers' kernels at He's scale "
    '(`kernel_initializer="he_normal"`), which keeps the signal\'s scale '
    "through a deep ReLU stack, or add batch normalization; a lower learning "
    "rate does not help here."
)
# Every gradient zero from the first step with the loss the same on every
# batch: the loss does not depend on the predictions.
_LOSS_STOPPED_FIX = (
    "Make the loss a differentiable function of the predictions: a constant, "
    "rounding, `argmax`, thresholds or `stop_gradient` pass no gradient to "
    "them (a custom loss must compute from `y_pred` with `keras.ops`)."
)
# Every gradient zero under an output whose activation is 0 with no gradient
# below a threshold (ReLU): that output is off for every sample.
_DEAD_OUTPUT_FIX = (
    "Use a linear output layer (no activation) for regression, or `softplus` "
    "where the predictions must be positive: a ReLU output passes no gradient "
    "for any sample whose prediction it holds at 0, and cannot reach targets "
    "below 0. Lower the learning rate if a large step pushed it there."
)
# An explosion over the ceiling from the first step on: no step size was ever
# healthy, so the scale of the data or of the weights is the cause.
_SCALE_FIX = (
    "Standardize the inputs and the regression targets (a `Normalization` "
    "layer; targets divided by their standard deviation), check the weight "
    "initialisation, and clip gradients (`clipnorm=1.0` in the optimizer)."
)
# An explosion under a regression loss whose targets are far from unit scale
# (`HealthRules.target_scale`): the loss and its gradients grow with them.
_TARGETS_FIX = (
    "Standardize the regression targets (subtract their mean and divide by "
    "their standard deviation, and undo it on the predictions), and the "
    "inputs (a `Normalization` layer); if it still explodes, lower the "
    "learning rate and clip gradients (`clipnorm=1.0` in the optimizer)."
)
# Regression targets are unscaled from this `target_scale` on (the largest
# mean or spread of a column; 1 when standardized): named as the likely
# cause of an explosion (under mean squared error their gradients grow
# with them).
_TARGET_SCALE = 10.0
# Inputs far from unit scale from this `input_scale` on (a feature's largest
# mean or spread, as the first layers with weights see them: 1 when
# standardized; images of 0-255 pixels about 128): named as the likely
# cause of a failure that begins in the first `_EXPLOSION_STEPS` steps
# (`RuleFamily._add`). A kernel's gradient is its inputs times the error:
# a plain CNN on 0-255 pixels had kernel gradients 250-600x those on
# standardized ones and a loss 6.6x that of knowing nothing at step 0
# (a probe), told as a step far too large or a saturated output.
_RAW_INPUTS = 10.0
# The failures so named.
_RAW_INPUT_MODES = (
    F.EXPLODING_GRADIENTS,
    F.VANISHING_GRADIENTS,
    F.DEAD_RELU,
    F.SATURATED_ACTIVATIONS,
    F.NON_FINITE,
)
# Gradients that overflow float16 at every loss scale tried, the loss finite.
_OVERFLOW_FIX = (
    "Standardize the inputs and the regression targets (a `Normalization` "
    "layer; targets divided by their standard deviation) and check the weight "
    "initialisation; or keep the layers whose gradients overflow in float32 "
    "(`dtype='float32'`)."
)
# An explosion from the first step with standardized inputs and no regression
# targets (`NormRules._weights_cause`): the initial weights.
_INIT_FIX = (
    "Check the weight initialisation: Keras's defaults (Glorot for dense "
    "kernels, orthogonal for recurrent ones) keep each layer's outputs at the "
    "scale of its inputs, while a large custom `stddev` or gain multiplies them "
    "layer after layer (or step after step in a recurrent layer); and clip "
    "gradients (`clipnorm=1.0` in the optimizer)."
)
# Residual sums (`HealthRules.residual_sums`, no normalization layer) from
# which an explosion from the first step on the initial weights names them:
# four sums of branches at their inputs' scale grow it 4x.
_RESIDUAL_SUMS = 4
# ...when the model sums residual branches without a normalization layer
# (`HealthRules.residual_sums`): each sum adds a branch's variance to the
# stream's. Probed: 40 blocks `x + Dense(Dense(x, relu))` on Keras's
# initializers, the stream's RMS 1.4e5-6e5 at the last block, the global
# gradient norm 3e6 at step 0.
_RESIDUAL_FIX = (
    "Normalize in each residual block (`BatchNormalization` or "
    "`LayerNormalization` on the branch or the stream), or scale each branch "
    "down before it is added (its last layer's kernel or scale initialised "
    "to zeros, or the branch multiplied by a small factor); and clip "
    "gradients (`clipnorm=1.0` in the optimizer)."
)
# A failure while the optimizer's decoupled weight decay takes this share
# of every weight each step or more (learning rate times `weight_decay`):
# it drives the weights to 0. Usual settings take about 1e-5-1e-3 (AdamW's
# default 0.004 at 1e-3: 4e-6). Probed: SGD at 0.05 with weight_decay 10
# (0.5 a step), kernels at 2e-6 of their norm by step 20, units dead and
# the loss at ln 2, was told "steps far too large"; AdamW at 1e-2 with 10
# (0.1), `dead_relu` with no cause (`RuleFamily._add`).
DECAY_SHARE = 1e-2
_DECAYING = (F.EXPLODING_GRADIENTS, F.VANISHING_GRADIENTS, F.DEAD_RELU)
DECAY_FIX = (
    "Lower the optimizer's `weight_decay`: decoupled weight decay (AdamW, or "
    "`weight_decay` on any Keras optimizer) multiplies every weight by 1 - "
    "learning_rate * weight_decay each step, so keep that product small "
    "(AdamW's default 0.004 at a learning rate of 1e-3 takes 4e-6 a step)."
)
# A non-finite step after an update that made finite weights non-finite
# from finite gradients (`NonFiniteRules`): the optimizer's step.
_OPTIMIZER_FIX = (
    "Check the optimizer: its learning rate and settings (an `epsilon` too "
    "small for the dtype, a custom update rule); the same batch under another "
    "optimizer (Adam, SGD) tells whether the optimizer is the cause."
)
# Updates far too large that begin in a recurrent layer (`_blown_up`): its
# gradient multiplies through the time steps; normalization is no remedy.
_RECURRENT_FIX = (
    "Clip gradients (`clipnorm=1.0` in the optimizer, the usual remedy for a "
    "recurrent layer, whose gradient multiplies through its time steps), lower "
    "the learning rate, and check the recurrent weights' initialisation "
    "(Keras's default, orthogonal, keeps their scale)."
)


def recurrent(class_name: str) -> bool:
    """Whether a layer of this class runs a recurrence (an RNN layer, or the
    cell whose weights it holds)."""
    return class_name.endswith("Cell") or any(
        kind in class_name for kind in ("RNN", "LSTM", "GRU")
    )


def per_weight(ls) -> float | None:
    """The square root of the number of weights of a layer's recording (its
    gradient's norm over its RMS): a norm over it is an RMS per weight.
    None when not known."""
    if not (_finite(ls.grad_norm, ls.grad_rms) and ls.grad_rms > 0):
        return None
    return ls.grad_norm / ls.grad_rms


# One step whose gradient norm spiked threw the weights off (`_spike_thrown`):
# its batch, or a step too large for it.
_SPIKE_FIX = (
    "Check the batch of that step for outliers or values on another scale than "
    "the others (standardize the inputs, e.g. with a `Normalization` layer), "
    "clip gradients (`clipnorm=1.0` in the optimizer) so that one batch cannot "
    "throw the weights off, and lower the learning rate."
)
# Loss-scale overflows in a row after normal updates: too large a step, or
# batches of another scale.
_OVERFLOW_RUN_FIX = (
    "Lower the learning rate and clip gradients (`clipnorm=1.0` in the "
    "optimizer); if the inputs or regression targets of these batches are of "
    "a larger scale than the earlier ones, standardize them (a `Normalization` "
    "layer; targets divided by their standard deviation)."
)
# The fix of vanishing gradients whose layers in between are not saturated:
# the weights shrink the gradient (such as an initialisation too small).
_WEIGHTS_FIX = (
    "Initialise the weights for the activation (Glorot for tanh and "
    "sigmoid, He for ReLU: `kernel_initializer='glorot_uniform'` or "
    "`'he_normal'`), and add batch normalization or skip connections."
)
# Hidden units saturated right after an update larger than their weights.
_THROWN_SATURATION_FIX = (
    "Lower the learning rate (Adam: 1e-3 or less) or warm it up over the first "
    "few hundred steps: one step larger than the weights pushed these units "
    "into the tails. Then, if they stay there, use ReLU instead of "
    "sigmoid/tanh in hidden layers and add batch normalization."
)
# Saturation of an activation whose hidden use is no mistake (ELU's, SELU's
# or softplus's flat negative tail, ReLU6's cap): its pre-activations sit
# far out, from a bias, the inputs or a step that threw them there.
# One-hot attention (`LayerInfo.attention`): scores too large.
_ATTENTION_FIX = (
    "Shrink the attention scores: initialise the query and key projections at "
    "Keras's default scale (Glorot), keep the scores divided by "
    "sqrt(key_dim), normalize the attention's inputs (LayerNormalization "
    "before it, standardized features), and lower the learning rate if one "
    "step grew the weights."
)
# Saturation of a first layer fed with inputs that are not standardized.
_RAW_SATURATION_FIX = (
    FIXES[F.UNSTANDARDIZED_INPUTS][:-1] + "; with standardized inputs, if the "
    "layer stays in its tails, use ReLU instead of sigmoid/tanh."
)
_FLAT_TAIL_FIX = (
    "Keep the pre-activations out of the flat tail: initialise the biases at "
    "zero (Keras's default), standardize the inputs, add batch normalization "
    "before the activation, and lower the learning rate (one step too large "
    "can throw the units there)."
)
# The fix of vanishing gradients that fell from their own early level while
# the loss did not fall: the first steps were too large.
_FALLEN_FIX = (
    "Lower the learning rate (Adam: 1e-3 or less) or warm it up over the first "
    "few hundred steps, and clip gradients (e.g. `clipnorm=1.0` in the "
    "optimizer)."
)
# A NaN after normal gradient norms: the data or the loss, not the step size.
_DATA_FIX = (
    "Check the data (NaN/inf inputs or labels, e.g. with `np.isfinite`) and the "
    "loss (log of 0, division by 0); clip gradients (`clipnorm=1.0`)."
)
# A non-finite step whose batch holds NaN or infinite inputs or labels
# (`SentinelEvent.data_finite` False)...
_BAD_DATA_FIX = (
    "Remove or fill the NaN and infinite values in the data "
    "(`np.isfinite(x).all(axis=1)` finds the rows of a 2-D array), in the "
    "inputs and in the labels, before `fit`."
)
# ...and one whose batch is finite: the model or the loss made them.
_FORWARD_FIX = (
    "Find the operation that overflows or divides by 0 in the model's "
    "forward pass or the loss (an `exp`, a power, a `log` or a division) and "
    "bound its inputs (clip them, a softplus instead of an exp, a "
    "normalization layer before it, smaller initial weights); clip gradients "
    "(`clipnorm=1.0`)."
)
# How every finding of oversized updates ends.
_UNSTABLE = ": the steps are far too large and training is unstable."


# The loss where training began is the median of the first steps' losses
# over this many samples: the loss of a batch of a few samples is noise
# (batches of 2: 0.08 on the first, 0.43-1.7 on the next four).
_START_SAMPLES = 32
# Advice to clip gradients in a fix: "clip gradients (...)" (or "Clip"), or
# "clipping gradients (...) bounds the steps" (`_JUMP_FIX`); reworded where
# the optimizer clips already (`RuleFamily._add`, `_clipped_advice`).
_CLIP_ADVICE = re.compile(r"([Cc])lip(ping)? gradients \([^)]*\)( bounds the steps)?")
# Advice to add batch normalization, with the words that join it to the
# rest of a fix: reworded where the model normalizes already or is
# recurrent (`RuleFamily._normalization_advice`).
_NORM_ADVICE = re.compile(
    r"(,? (?:and|or) |, )?add batch normalization"
    r"(?: before the activation)?(?: or skip connections)?"
)
# Layers that normalize their inputs, setting the scale of their outputs
# whatever that of their inputs (`_normalization_advice`, `StartRules`, the
# callback's `weight_gain`).
NORMALIZATIONS = frozenset(
    {
        "BatchNormalization",
        "LayerNormalization",
        "GroupNormalization",
        "RMSNormalization",
    }
)
_RECURRENT_CELLS = ("LSTMCell", "GRUCell", "SimpleRNNCell")
# The fixes of an explosion, which unscaled regression targets replace.
_EXPLOSION_FIXES = (FIXES[F.EXPLODING_GRADIENTS], _SCALE_FIX)


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _named(layers: tuple[str, ...]) -> str:
    """`layer 'a'`, or `layers 'a' and 'b'` (and more, comma-separated)."""
    quoted = [f"'{name}'" for name in layers]
    if len(quoted) == 1:
        return f"layer {quoted[0]}"
    return f"layers {', '.join(quoted[:-1])} and {quoted[-1]}"


def _symmetric_cause(told: tuple) -> str:
    return (
        f" The units of {_named(_layers(told))} started identical (a zero or "
        "constant kernel initializer, told before training as "
        "`symmetric_units`): they get identical gradients, or none where the "
        "kernel after them is zero, the likely cause."
    )


def _constant_norm_cause(told: tuple) -> str:
    verb, it = ("normalizes", "it") if len(told) == 1 else ("normalize", "them")
    return (
        f" The model's {_named(_layers(told))} {verb} over a single value (told "
        "before training as `constant_normalization`): each outputs its offset "
        f"whatever the input, so the layers after {it} see a constant, the "
        "likely cause."
    )


def _dropout_cause(told: tuple) -> str:
    one = len(told) == 1
    drops, its, it = ("drops", "its", "it") if one else ("drop", "their", "them")
    rate = max(rate for _, rate in told)
    share = f"{rate:.0%}" if one else f"up to {rate:.0%}"
    return (
        f" The model's dropout {_named(_layers(told))} {drops} {share} of {its} "
        "inputs at every training step (told before training as "
        f"`extreme_dropout`): the layers around {it} learn from almost nothing, "
        "the likely cause."
    )


def _probability_cause(told: tuple) -> str:
    verb = "is" if len(told) == 1 else "are"
    return (
        f" The output {_named(_layers(told))} {verb} not in [0, 1] but the loss "
        "takes probabilities (told before training as "
        "`linear_output_probability_loss`): the loss clips the outputs, so "
        "those outside [0, 1] pass no gradient and those just inside it pass "
        "up to 1e7 times the error (1/p), the likely cause."
    )


def _layers(told: tuple) -> tuple[str, ...]:
    return tuple(layer for layer, _ in told)


# The findings of `check_model` that the rules name as the likely cause of
# the failures they lead to (`HealthRules.told_causes`, `RuleFamily._add`),
# tried in this order: its mode, whether only a failure that begins early
# names it, the text the message adds (of the told `(layer, value)` pairs),
# the fix, and the modes of the failures it names.
_SET_UP = (F.VANISHING_GRADIENTS, F.DEAD_RELU)
_TOLD_CAUSES = (
    (SYMMETRIC_UNITS, True, _symmetric_cause, SYMMETRIC_FIX, _SET_UP),
    (CONSTANT_NORMALIZATION, False, _constant_norm_cause, CONSTANT_NORM_FIX, _SET_UP),
    (EXTREME_DROPOUT, False, _dropout_cause, _DROPOUT_FIX, _SET_UP),
    (
        LINEAR_OUTPUT_PROBABILITY,
        False,
        _probability_cause,
        _PROBABILITY_FIX,
        (F.EXPLODING_GRADIENTS, F.VANISHING_GRADIENTS, F.NON_FINITE),
    ),
)
TOLD_CAUSE_MODES = tuple(cause[0] for cause in _TOLD_CAUSES)


def _finite(*values) -> bool:
    # A loop, not `all` of a generator: the rules call it for every layer
    # at every recording.
    for v in values:  # noqa: SIM110
        if v is None or not math.isfinite(v):
            return False
    return True


def _growth(norm: float, early: float | None) -> str:
    """How a gradient norm compares with its early level, for a message:
    ", 40x its early 2.5"; an infinite norm (its square overflowed float32)
    has no ratio."""
    if norm == math.inf:
        was = "" if not early else f", up from its early {early:.3g}"
        return f" (beyond float32's range){was}"
    return "" if not early else f", {norm / early:.3g}x its early {early:.3g}"


def _median(values) -> float | None:
    # Plain Python: it runs after every step, on at most a few dozen values.
    if not values:
        return None
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


class _Streaks:
    """Consecutive-recording counters keyed by (mode, layer): of recordings,
    or of the batches they hold (`weight`)."""

    def __init__(self):
        self._start: dict[tuple, int] = {}
        self._count: dict[tuple, int] = {}

    def update(
        self, key: tuple, hit: bool, step: int, weight: int = 1
    ) -> tuple[int, int]:
        """Records one observation (of `weight` batches, the first at
        `step`); returns (streak length, streak start)."""
        if not hit:
            self._count.pop(key, None)
            self._start.pop(key, None)
            return 0, step
        self._start.setdefault(key, step)
        self._count[key] = self._count.get(key, 0) + weight
        return self._count[key], self._start[key]

    def count(self, key: tuple) -> int:
        """The length of `key`'s current streak (0: none)."""
        return self._count.get(key, 0)

    def start(self, key: tuple) -> int | None:
        """The first step of `key`'s current streak (None: none)."""
        return self._start.get(key)

    def reset(self, keys: Iterable[tuple]) -> None:
        for key in list(keys):
            self.update(key, False, 0)

    def keys(self, mode: str) -> list[tuple]:
        return [key for key in self._count if key[0] == mode]


class _Skipped:
    """Batches whose update loss scaling skipped, by the step they came
    before (the optimizer's step count does not advance on them). Keeps the
    last `size` steps that had any: a healthy run skips one batch every few
    thousand steps."""

    def __init__(self, size: int = 256):
        self._at: collections.OrderedDict[int, int] = collections.OrderedDict()
        self._size = size

    def add(self, step: int) -> None:
        """Notes a skipped batch before step `step` runs."""
        self._at[step] = self._at.get(step, 0) + 1
        self._at.move_to_end(step)
        if len(self._at) > self._size:
            self._at.popitem(last=False)

    def between(self, start: int, step: int) -> int:
        """Skipped batches after step `start` ran, up to step `step`."""
        return sum(n for s, n in self._at.items() if start < s <= step)


def _last_list_comma(text: str) -> int | None:
    """The index of the last ", " of `text`'s last sentence outside
    parentheses and backquotes, or None."""
    depth, quoted, last = 0, False, None
    for i, char in enumerate(text):
        if char == "`":
            quoted = not quoted
        elif quoted:
            continue
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char in ".:" and depth == 0 and text[i + 1 : i + 2] == " ":
            last = None  # A new sentence.
        elif text.startswith(", ", i) and depth == 0:
            last = i
    return last


# A loss at this share of the loss of knowing nothing, or over it, learned
# nothing (`RuleFamily._knows_nothing`); at this share of the loss where
# training began, it stayed there (`_stayed`).
_STILL_LOSS = 0.9


class RuleFamily:
    """Base of the rule families mixed into `HealthRules`: the bookkeeping
    they share.

    Uses the state `HealthRules.__init__` sets up: `thresholds`,
    `execution_steps`, `target_scale`, `_streaks`, `_skipped`, `_reported`,
    `_lost`, `_start_losses`, `_start_batch`, `_last_oversized`, `_norms`,
    `_input_scale`, `_upstream_scales`, `_info` and `findings`.
    """

    @property
    def _early_losses(self) -> list[float]:
        """The losses of the first `baseline_steps` steps with one."""
        return self._start_losses[: self.thresholds.baseline_steps]

    def _knows_nothing(self, loss) -> bool:
        """Whether `loss` is at `_STILL_LOSS` of the loss of a prediction
        that knows nothing (`uninformed_loss`) or over it: a classifier
        that learned nothing, wherever its loss began (a post-LN
        transformer under Adam at 1e-2: 1.08 at the first step, 3.5 after
        it, then at ln 2 for good, its lower layers' gradients down from
        1e-4 to 1e-10)."""
        uninformed = self.uninformed_loss
        return (
            uninformed is not None
            and _finite(loss)
            and loss >= _STILL_LOSS * uninformed[0]
        )

    def _reported_any(self, mode: str) -> bool:
        """Whether a finding of `mode` was reported (on any layer)."""
        return any(key[0] == mode for key in self._reported)

    def _exploded(self) -> bool:
        return self._reported_any(F.EXPLODING_GRADIENTS)

    def _died(self) -> bool:
        """Whether dead units were reported (in any layer)."""
        return self._reported_any(F.DEAD_RELU)

    def _broken(self) -> bool:
        """Whether a non-finite step reached the weights: they are (or soon
        will be) NaN, so every later statistic describes a broken model, and
        judging it would only add consequences (a NaN kernel outputs zeros
        that look like dead units) to the cause. (A NaN loss whose update
        loss scaling skipped leaves them as they were: `_lost` stays
        False.)"""
        return self._lost

    def _confirmed(self, count: int, start: int, step: int) -> bool:
        """Whether a streak holds for `patience` recordings and steps."""
        return count >= self._patience() and self._lasted(start, step)

    def _lasted(self, start: int, step: int) -> bool:
        """Whether a streak from step `start` to `step` spans
        `patience_steps` batches: its steps, and the batches whose update
        loss scaling skipped in between (the step count stays where it was
        on those, so under float16 a streak would otherwise need twice the
        batches or more when every other update overflows)."""
        skipped = self._skipped.between(start, step)
        return step - start + 1 + skipped >= self.thresholds.patience_steps

    def _patience(self) -> int:
        """The recordings a streak needs: `patience`, or as many as
        `patience_steps` steps can hold at one recording per execution of
        `execution_steps` steps (`steps_per_execution`), never fewer than
        two. Four steps per execution: two recordings, four steps apart."""
        t = self.thresholds
        per = max(1, self.execution_steps)
        return min(t.patience, max(2, math.ceil(t.patience_steps / per)))

    def _jump_before(self, start: int, within: int = _EXPLOSION_STEPS) -> str:
        """A sentence naming the last learning-rate jump (`_rate_change`)
        when it raised the rate and came within `within` steps before a
        streak that began at `start`: its cause (steps far too large,
        whatever the loss did: the logged loss of a custom `train_step` may
        be a running mean); "" otherwise."""
        jump = self._jump_since(start, within)
        return "" if jump is None else f" It began {jump}: steps far too large."

    def _jump_since(
        self, start: int, within: int = _EXPLOSION_STEPS, hold: bool = True
    ) -> str | None:
        """`_jump_before`'s jump as "N steps after the learning rate jumped
        ...", or None. With `hold`, up to `_HELD_STEPS` after it while the
        rate stays at half its new value or more (`_rate_held`): small
        gradients (a converged model's) take that long to blow up at a rate
        too large (SGD 300x on a fitted CNN: the norm exploded 25 steps
        later)."""
        change = self._rate_change
        if change is None:
            return None
        step, before, after = change[:3]
        last = step + (max(within, _HELD_STEPS) if hold else within)
        if after <= before or not step < start <= last:
            return None
        held = start > step + within
        if held and not self._rate_held(after):
            return None
        steps = start - step
        return (
            f"{steps} step{'' if steps == 1 else 's'} after the learning rate jumped "
            f"{after / before:.3g}x, from {before:.3g} to {after:.3g} at step "
            f"{step}" + (", and stayed there" if held else "")
        )

    def _rate_held(self, after: float) -> bool:
        """Whether the rate that jumped to `after` (the step's own, or
        another optimizer's, `_rate_index`) is still at half of it or
        more."""
        k = self._rate_index
        rates = [self._last_rate, *self._last_rates]
        now = rates[k] if k < len(rates) else None
        return _finite(now) and now >= after / 2

    def _oversized_before(self, start: int, within: int | None = None) -> str:
        """A sentence naming the last recorded update larger than the
        weights (`_last_oversized`) when it came within `within` steps
        (`patience_steps` by default) before a streak that began at
        `start`: its cause; "" otherwise."""
        big = self._last_oversized
        within = self.thresholds.patience_steps if within is None else within
        if big is None or not start - within <= big[0] < start:
            return ""
        return (
            f" It follows the update of step {big[0]}, which changed the weights "
            f"of layer '{big[1]}' by {big[2]:.3g} times their own norm: a step far "
            "too large."
        )

    def _converged(self, stats: StepStats) -> bool:
        """Whether this recording's loss fell below `converged_loss_ratio`
        of the loss where training began (`_start`)."""
        start = self._start()
        return _finite(stats.loss, start) and (
            stats.loss <= self.thresholds.converged_loss_ratio * start
        )

    def _fitted(self, loss: float | None = None) -> bool:
        """Whether the recent loss (median of the last normal steps') fell
        to `fitted_loss_ratio` of the early loss (median of the first
        `baseline_steps`') and of the loss where training began (`_start`):
        the model has learned. (A step size far too large can raise the
        loss of the first steps tenfold: falling back from there is no
        learning.) With `loss` (a recording's), that one too: a model
        thrown off what it had learned (a layer saturated late in a run,
        the loss from 0.13 back to 3.4) is not fitted while the median of
        the steps before still says so."""
        early, recent = _median(self._early_losses), self._norms.recent_loss()
        if early is None or recent is None:
            return False
        if _finite(loss):
            recent = max(recent, loss)
        early = min(early, self._start())
        return early > 0 and recent <= self.thresholds.fitted_loss_ratio * early

    def _explosion_fix(self, layer: str) -> str | None:
        """The fix of an explosion that begins in `layer`: the recurrent
        one for a recurrent layer (`_RECURRENT_FIX`), else None (the
        mode's own)."""
        info = self._info.get(layer)
        return _RECURRENT_FIX if info and recurrent(info.class_name) else None

    def _start(self) -> float:
        """The loss where training began: the median of the first steps'
        losses over `_START_SAMPLES` samples (of the first step alone for
        batches of 32 or more, or before a recording told the batch size;
        the loss of a batch of a few samples is noise). Known once the
        early loss is; None before the first step with a finite loss."""
        batch = self._start_batch
        count = 1 if not batch else math.ceil(_START_SAMPLES / batch)
        return _median(self._start_losses[:count])

    def _add(
        self, new, mode, layer, step, value, message, fix=None, severity=F.FAILURE
    ) -> None:
        if (mode, layer) in self._reported:
            return
        self._reported.add((mode, layer))
        value = None if value is None else float(value)
        fix = FIXES[mode] if fix is None else fix
        scale = self.target_scale
        if fix in _EXPLOSION_FIXES and scale is not None and scale >= _TARGET_SCALE:
            # An explosion (or the NaN it ended in) with unscaled targets.
            if mode == F.EXPLODING_GRADIENTS:
                message += (
                    f" The regression targets are far from unit scale (a "
                    f"column's mean or spread is {scale:.3g}, against about 1 "
                    "when standardized): the loss and its gradients grow with "
                    "them."
                )
            fix = _TARGETS_FIX
        elif told := self._told_cause(mode, step, severity):
            text, fix = told
            message += text
        elif self._shrunk_start(mode, step, severity):
            shrink, count = self.relu_shrink
            message += (
                f" The kernels of the model's {count} ReLU layers start under "
                "He's scale (Keras's default `glorot_uniform` is sqrt(1/2) of "
                "it in a square layer): the signal shrinks through them to "
                f"{shrink:.2g} of its scale, so the deep layers' inputs and "
                "gradients are tiny and each step of the optimizer is large "
                "against them, the likely cause."
            )
            fix = _HE_FIX
        elif raw := self._raw_inputs(mode, layer, step, severity, message):
            message += (
                " The inputs are far from unit scale (a feature's mean or spread "
                f"is {raw:.3g}, against about 1 when standardized): "
                "the first layers' outputs and gradients grow with them, the "
                "likely cause."
            )
            fix = (
                FIXES[F.UNSTANDARDIZED_INPUTS][:-1]
                + " (images: `keras.layers.Rescaling(1 / 255)`). If it persists: "
                + fix[0].lower()
                + fix[1:]
            )
        decay = self._decay_share()
        if decay is not None and mode in _DECAYING and severity == F.FAILURE:
            message += (
                f" The optimizer's weight decay takes {decay:.3g} of every "
                f"weight each step (learning rate {self._last_rate:.3g} times "
                f"weight_decay {self.weight_decay:.3g}): it drives the weights "
                "toward 0, and with them the layers' outputs and gradients."
            )
            fix = DECAY_FIX
        if self.clipping is not None:
            fix = _CLIP_ADVICE.sub(self._clipped_advice, fix)
        fix = self._normalization_advice(fix)
        new.append(Finding(mode, layer, int(step), value, message, fix, severity))

    def _normalization_advice(self, fix: str) -> str:
        """`fix` without its advice to add batch normalization
        (`_NORM_ADVICE`) where a monitored layer normalizes already (a
        transformer's `LayerNormalization`, a ResNet's batch
        normalization): adding more is no fix. In a recurrent model without
        one, layer normalization instead: batch statistics do not suit the
        steps of a sequence, and the source notes' remedy for recurrent
        explosions is clipping."""
        classes = {info.class_name for info in self.layers}
        if not classes.intersection(NORMALIZATIONS):
            if not classes.intersection(_RECURRENT_CELLS):
                return fix
            return _NORM_ADVICE.sub(
                lambda m: (
                    (m.group(1) or "")
                    + "add layer normalization (`keras.layers.LayerNormalization`; "
                    "batch normalization does not suit recurrent layers)"
                ),
                fix,
            )
        found = _NORM_ADVICE.search(fix)
        if found is None:
            return fix
        head, tail = fix[: found.start()], fix[found.end() :]
        joint = found.group(1) or ""
        if joint.startswith(", ") and joint.strip(", "):
            # "A, B, and C" without C: "A and B" (a comma inside
            # parentheses or a quote joins nothing).
            comma = _last_list_comma(head)
            if comma is not None:
                head = head[:comma] + f" {joint.strip(', ')} " + head[comma + 2 :]
        return head + tail

    def _set_up_cause(
        self, mode: str, severity: str, step: int | None = None, modes=_SET_UP
    ) -> bool:
        """Whether a finding can be named after a cause in how the model was
        set up (`_add`: layers whose units started identical, a dropout,
        normalization or output `check_model` told, kernels under He's
        scale): a failure of `modes` (by default vanishing gradients or dead
        units), and with `step`, one that begins within `_EXPLOSION_STEPS`
        of the first step."""
        first = self._norms.first
        return (
            severity == F.FAILURE
            and mode in modes
            and (step is None or first is None or step <= first[0] + _EXPLOSION_STEPS)
        )

    def _told_cause(
        self, mode: str, step: int, severity: str
    ) -> tuple[str, str] | None:
        """What a failure adds to its message, and its fix, where it names
        a cause `check_model` told before training (`told_causes`) as its
        likely one: the first of `_TOLD_CAUSES` told, for a failure of its
        modes (`_set_up_cause`; identical units for one that begins early
        only). None where none applies."""
        for cause, early, text, fix, modes in _TOLD_CAUSES:
            told = self.told_causes.get(cause)
            at = step if early else None
            if told and self._set_up_cause(mode, severity, at, modes):
                return text(told), fix
        return None

    def _shrunk_start(self, mode: str, step: int, severity: str) -> bool:
        """Whether a failure that begins early names the ReLU kernels' scale
        under He's as its cause: the signal shrinks through them
        (`relu_shrink`) to `_SHRUNK_SIGNAL` or less, in a model without a
        normalization layer (which restores the scale)."""
        shrink = self.relu_shrink
        classes = {info.class_name for info in self.layers}
        return (
            shrink is not None
            and shrink[0] <= _SHRUNK_SIGNAL
            and self._set_up_cause(mode, severity, step)
            and not classes.intersection(NORMALIZATIONS)
        )

    def _raw_inputs(
        self, mode: str, layer: str | None, step: int, severity: str, message: str
    ) -> float | None:
        """The inputs' scale where a finding names them as its likely cause
        (else None): a failure of `_RAW_INPUT_MODES` that begins within
        `_EXPLOSION_STEPS` of the first step, the inputs `_RAW_INPUTS` from
        unit scale (of a model of several, those `layer` is computed from:
        `_scale_before`) and not ids an embedding looks up (whose scale does
        not reach the layers after it), and its message not naming them
        already."""
        first = self._norms.first
        scale = self._input_scale if layer is None else self._scale_before(layer)
        hit = (
            severity == F.FAILURE
            and self._looked_up() is None
            and mode in _RAW_INPUT_MODES
            and _finite(scale)
            and scale >= _RAW_INPUTS
            and first is not None
            and step <= first[0] + _EXPLOSION_STEPS
            and "mean or spread" not in message
        )
        return scale if hit else None

    def _scale_before(self, layer: str) -> float | None:
        """The input scale of the inputs `layer` is computed from: of a
        model of several, the largest of those that reach it (None for ids
        alone; `StepStats.upstream_scales`), else the model's. Probed: a
        ReLU tower on a standardized input, its units off from the start by
        its negative biases, was told as left off by the other input's raw
        values (mean 300), which never reach it."""
        if self._upstream_scales is None:
            return self._input_scale
        return self._upstream_scales.get(layer)

    def _looked_up(self) -> str | None:
        """The layer the model's inputs reach first (`input_layers`) when
        it is an `Embedding`: the inputs are ids it looks up, whose scale
        does not reach the layers after it; else None."""
        first = next(iter(self.input_layers), None)
        info = self._info.get(first)
        looked_up = info is not None and "Embedding" in info.class_name
        return first if looked_up else None

    def _clipped_advice(self, advice: re.Match) -> str:
        """`_CLIP_ADVICE`'s words where the optimizer clips (`clipping`)."""
        clipping = f"the optimizer's `{self.clipping}`"
        if advice.group(3):  # "clipping gradients (...) bounds the steps".
            return (
                f"{clipping} bounds the gradients already, not the rate that "
                "scales them"
            )
        keep = "Keep" if advice.group(1) == "C" else "keep"
        return (
            f"{keep} clipping gradients ({clipping} clips the gradients it "
            "applies, not the ones measured here, before it)"
        )

    def _decay_share(self) -> float | None:
        """The share of every weight the optimizer's weight decay takes at
        the last learning rate seen, when `DECAY_SHARE` or more."""
        decay, rate = self.weight_decay, self._last_rate
        if decay is None or rate is None or not math.isfinite(rate):
            return None
        share = decay * rate
        return share if share >= DECAY_SHARE else None

    def _emit(self, new: list[Finding]) -> list[Finding]:
        self.findings.extend(new)
        return new
