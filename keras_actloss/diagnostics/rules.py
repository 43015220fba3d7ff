"""Rules that turn recorded statistics into findings.

`HealthRules` watches every training step's global gradient norm (a
`SentinelEvent` per step) and the full `StepStats` the callback records,
and reports each failure mode once per layer, when it first appears. The
rules follow the mechanisms in the source notes rather than single numbers,
because the crude versions misfire on healthy models:

- **Vanishing gradients**: each saturating layer multiplies the backward
  signal by at most 0.25 (sigmoid) or 1 (tanh), so in a deep stack the layers
  far from the loss get gradients orders of magnitude smaller than the layers
  near it. Flagged when a far layer's gradient RMS *and* max-abs are tiny
  relative to the layers nearest the output, the decay is progressive (the
  layers one step closer to the loss in the layer graph are well below the
  output layers too: parallel branches such as an attention block's query
  and key are siblings, not a deeper chain), its RMS is small in absolute
  terms, the layers near the output are still learning (and the loss has
  not converged), the model has enough layers for a depth effect, and all of
  this persists. A quiet ReLU branch whose layers behind it get a loud
  gradient through another path (a U-Net's bottleneck beside its skip
  connections) is a branch the gradient goes around, not vanishing, unless
  saturating hidden activations lie between it and the output. The message
  names those activations as the cause only where they shrink the gradient
  (sigmoid always; tanh unless it is near-linear, with fewer than 1 in
  1000 outputs in the flat tails); otherwise the weights do (an
  initialisation too small), and the fix says so. At the
  extreme, every gradient is exactly zero while the loss is still high: the
  global norm is 0 (or below float32's smallest normal number, or 1e-9 of
  the loss's square root) for `patience_steps` steps in a row, judged on
  every step, and the loss is finite, above 1e-6 and above
  `converged_loss_ratio` of its early level (median of the first
  `baseline_steps` steps). Nothing learns any more;
  typically a softmax/sigmoid output saturated to
  probabilities of exactly 0 and 1 in float32 (derivative 0) under a loss
  that takes the probabilities and clips them (to [1e-7, 1 - 1e-7]: the
  loss stays finite, ~16 per wrong sample), often after a jump of the
  learning rate. Reported as the model's (layer None) `vanishing_gradients`,
  with that fix. A loss that reached 0 (a hinge whose margins all hold) or
  converged to a tiny value has zero gradients legitimately and is not
  reported; neither is a model without trainable weights. A step of
  several optimizers' `apply` calls whose layers' gradients all collapse
  (each call's norm at 1e-2 of its first recordings' or less) while the
  loss, when known, does not fall is a GAN whose discriminator saturates
  under the generator's saturating loss (`collapse_rules`), reported as
  the model's `vanishing_gradients` with the GAN fix. Updates too small to
  move the weights (every layer's under 1e-7 of its norm, or 1e-5 where
  the optimizer's clip cuts every gradient 1e3x) while the loss stays
  where it began are the model's `vanishing_gradients` too, with the
  learning rate or the clip to change (`stall_rules`). Layers with weights
  whose every gradient is exactly 0 while a layer nearer the outputs gets
  one are cut off from the loss by what follows them (dead ReLUs in a layer
  or function of the user's own, whose outputs are not watched; a
  `stop_gradient`), reported as `vanishing_gradients` on the one nearest
  the outputs (`cut_rules`).
- **Exploding gradients**: a learning rate that is too high feeds back into
  itself, so the global gradient norm grows by orders of magnitude over its
  early baseline and its recent level (or passes an absolute ceiling), step
  after step, usually ending in NaN; or each update changes a layer's
  weights by more than their own size (2 recordings in a row are enough
  when the loss rises 3x with them); one update of 10x a layer's weights
  and of 1 or more per weight replaces them and is reported at once
  (`update_rules._wiped`); a layer whose gradient RMS stays 1e3x that of
  the layers nearest the loss has gradients growing on their way back
  (`gradient_rules._grown`: an RNN whose recurrent weights are too large,
  under Adam's bounded steps). Judged on every step's norm. A single
  spike is not an explosion unless it is huge; a NaN right after such growth
  is reported as the explosion it ended. Norms over the ceiling from the
  first step on were never healthy: the message and fix name the scale of
  the data or of the initial weights, not the step size; so do norms that
  pass the ceiling while the loss stays under 3x its recent level (Adam's
  bounded steps fitting unscaled regression targets: the norm grows with
  the weights). A classifier under cross-entropy whose loss at each of the
  first `baseline_steps` steps is at least 5x that of knowing nothing
  (`uninformed_loss`: ln C) has outputs blown up by initial weights far
  too large (`start_rules`; Adam's steps are too small to move such
  weights, so nothing grows); with inputs not standardized, they are
  named instead (`unstandardized_inputs`, a warning); a classifier fed by
  a normalization layer is not judged so (only its own weights set the
  outputs' scale). Under a regression loss whose targets are far from unit
  scale (`target_scale`), an explosion names them, with their fix.
- **Dead ReLU**: a unit that is zero for every sample gets no gradient.
  Judged on the units that were inactive on *every* sample of the last
  recorded batches together (enough samples to tell a dead unit from a rare
  one), never on the fraction of zero elements (about half of a healthy ReLU
  layer's outputs are zero). Only activations whose inactive region has a
  zero gradient (ReLU, not Leaky ReLU or ELU) can die. Part of a layer fed
  by a global average pooling (at most two thirds, the learning rate
  unchanged) is a warning: averaged features barely differ between
  samples, so its units fire on almost all samples or almost none, and
  rare ones look dead on a window.
- **Saturated activations**: a hidden sigmoid/tanh layer with nearly all of
  its outputs in the flat tails passes almost no gradient. The output layer
  is exempt: a confident sigmoid or softmax output is what training is for.
  A first layer that saturates partly because the inputs are not
  standardized is reported as that cause (`unstandardized_inputs`, a
  warning): such models still learn. Nothing is reported once the recent
  loss is half the early loss or less (`fitted_loss_ratio`), and the
  recording's own loss too: a model
  that has learned was not stopped, though its units drift into the tails
  as its weights keep growing over a long run. A stack of at least three
  hidden sigmoid/tanh layers (the first layer left out) with a quarter or
  more of their outputs in the tails is saturated too when the gradient
  grows at every one of them back towards the input, by 1.4x a layer and
  10x in all (`chain_rules`): weights too large for the activation, which
  amplify every change of the early weights (the model hardly learns).
- **Non-finite**: a NaN or infinite gradient or loss, reported at its step.
  It is the last finding of a run: afterwards the weights are NaN and every
  statistic describes a broken model (a NaN kernel makes a ReLU layer output
  zeros that look like dead units), so nothing else is reported.

Conditions that need persistence hold for `patience` recordings in a row
spanning at least `patience_steps` steps, so neither one unlucky batch nor a
burst of dense recordings around one bad step is enough. Under loss scaling
the batches whose update was skipped (an overflow) count towards the span:
the optimizer's step count does not advance on them. A model that runs
several steps per execution is recorded at most once per execution: there
two recordings spanning `patience_steps` are enough.

The families live in their own modules, mixed into `HealthRules`:
`step_rules` (every step's norm: explosions, jumps), `stop_rules`
(non-finite steps, zero gradients), `gradient_rules` (vanishing gradients),
`update_rules` (oversized updates), `stall_rules` (updates too small),
`rising_rules` (a learning rate that rises until training diverges),
`activation_rules` (dead units,
saturation) and `cut_rules` (layers no gradient reaches);
`rule_support` holds the fixes, the streak counters and the bookkeeping
they share.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable

from keras_actloss import findings as F
from keras_actloss import registry
from keras_actloss.diagnostics.activation_rules import (
    ActivationRules,
    UnitActivity,
    can_die,
)
from keras_actloss.diagnostics.chain_rules import ChainRules
from keras_actloss.diagnostics.collapse_rules import CollapseRules
from keras_actloss.diagnostics.cut_rules import CutRules
from keras_actloss.diagnostics.gradient_rules import (
    _LEVELS,
    RecordedGradientRules,
    _distances,
    vanishing_layers,
)
from keras_actloss.diagnostics.label_order import LabelOrderRules
from keras_actloss.diagnostics.norm_series import Arrival, NormSeries, Spike
from keras_actloss.diagnostics.records import (
    Clipping,
    LayerInfo,
    LayerStats,
    SentinelEvent,
    StepStats,
)
from keras_actloss.diagnostics.rising_rules import RisingRateRules
from keras_actloss.diagnostics.rule_support import _BAD_DATA_FIX as _BAD_DATA_FIX
from keras_actloss.diagnostics.rule_support import _DATA_FIX as _DATA_FIX
from keras_actloss.diagnostics.rule_support import _FORWARD_FIX as _FORWARD_FIX
from keras_actloss.diagnostics.rule_support import _OVERFLOW_FIX as _OVERFLOW_FIX
from keras_actloss.diagnostics.rule_support import _SCALE_FIX as _SCALE_FIX
from keras_actloss.diagnostics.rule_support import _ZERO_FIX as _ZERO_FIX
from keras_actloss.diagnostics.rule_support import FIXES, _finite, _Skipped, _Streaks
from keras_actloss.diagnostics.stall_rules import StallRules
from keras_actloss.diagnostics.start_rules import (
    _DAMPED_LOSSES,
    StartRules,
    normalized_head,
)
from keras_actloss.diagnostics.step_rules import NormRules
from keras_actloss.diagnostics.stop_rules import NonFiniteRules, ZeroGradientRules
from keras_actloss.diagnostics.thresholds import Thresholds
from keras_actloss.diagnostics.update_rules import UpdateRules
from keras_actloss.findings import Finding

__all__ = [
    "FIXES",
    "HealthRules",
    "NormSeries",
    "Thresholds",
    "UnitActivity",
    "can_die",
    "vanishing_layers",
]


def _layer_stats_nan(ls: LayerStats) -> bool:
    """Whether a layer's gradient statistics hold a NaN (an infinite norm
    alone can be a square beyond float32's range)."""
    values = (ls.grad_norm, ls.grad_rms, ls.grad_max)
    return any(v is not None and math.isnan(v) for v in values)


def _floored(activation: str | None) -> bool:
    """Whether an activation's only flat region is its dead one: its units
    can die and it has no cap (ReLU; not ReLU6, whose cap is flat too)."""
    if not can_die(activation):
        return False
    profile = registry.get_profile("activation", activation)
    return profile is not None and profile.saturation_bounds is None


class HealthRules(
    NormRules,
    NonFiniteRules,
    ZeroGradientRules,
    RecordedGradientRules,
    UpdateRules,
    StallRules,
    RisingRateRules,
    ActivationRules,
    CutRules,
    ChainRules,
    StartRules,
    CollapseRules,
    LabelOrderRules,
):
    """Judges a training run's steps and recordings and reports new findings.

    Stateful: feed it every step's `SentinelEvent` (`observe_step`) and every
    full `StepStats` (`observe`) in step order; each call returns only the
    findings that are new, one per (mode, layer), with `step` = the first
    step of the streak that confirmed it. `jumped` tells whether the last step's
    gradient norm or learning rate jumped, or one of its gradient norms fell to
    exactly 0 (for two steps in a row), or many more units than lately got none
    (the callback then records densely for a while), and `jump_noisy` whether
    only a test on a noisy series (the norm's level, the units) said so.
    `suspected` tells whether the last recording left most units of a
    ReLU-like layer inactive (on its batch, or on the recent recordings
    together) and the rules have not reported them dead yet, or showed
    every optimizer group's gradients collapsed (`collapse_rules`) before
    it is confirmed: the callback then records densely too, as after a
    noisy jump. Set `execution_steps` to the model's
    `steps_per_execution`: at one recording per execution a streak needs
    fewer recordings (`_patience`); and `separate_losses` when the
    optimizers of a step scale losses of their own (a GAN's networks): the
    loss noted is then one network's.

    Examples:

    >>> from keras_actloss.diagnostics.records import LayerInfo, StepStats
    >>> rules = keras_actloss.diagnostics.rules.HealthRules(
    ...     [LayerInfo("dense", "Dense", "relu", True, 0)])
    >>> rules.observe(StepStats(step=0, global_norm=float("nan")))[0].mode
    'non_finite'

    Args:
        layers: The monitored layers, in model order.
        thresholds: None (defaults), a dict of `Thresholds` fields, or a
            `Thresholds`. Defaults to `None`.
        output_layers: Names of the model's output layers, exempt from the
            saturation rule. Defaults to the layers after which no layer has
            trainable weights.
    """

    def __init__(
        self,
        layers: list[LayerInfo],
        thresholds: None | dict | Thresholds = None,
        output_layers: Iterable[str] | None = None,
    ):
        self.layers = list(layers)
        self.thresholds = t = Thresholds.from_value(thresholds)
        self.execution_steps = 1
        # Whether the optimizers of a step minimise losses of their own (a
        # GAN's): the loss noted is then one network's.
        self.separate_losses = False
        weighted = [
            i for i, info in enumerate(self.layers) if info.has_trainable_weights
        ]
        if output_layers is None:
            last = max(weighted, default=-1)
            output_layers = [info.name for info in self.layers[max(last, 0) :]]
        self.output_layers = frozenset(output_layers)
        # The layers the model's inputs reach first (their saturation can
        # come from unstandardized inputs).
        self.input_layers = (
            frozenset(self.layers[i].name for i in weighted[:1]) - self.output_layers
        )
        self._info = {info.name: info for info in self.layers}
        self._distance = _distances(self.layers)
        # The output layers when each has an activation whose units can die
        # and that has no cap (a ReLU output, not ReLU6): every gradient
        # zero is then their outputs at 0 on every sample
        # (`ZeroGradientRules`).
        outputs = [i for i in self.layers if self._distance[i.name] == 0]
        floored = outputs and all(_floored(i.activation) for i in outputs)
        self._floored_outputs = tuple(i.name for i in outputs) if floored else ()
        self._activity = {
            i.name: UnitActivity(t.min_samples, t.patience)
            for i in self.layers
            if can_die(i.activation) or i.units_by_sign
        }
        self._measured: set[str] = set()
        # Each recording's update ratio and weight norm by layer, as far
        # back as a window's recordings go (`ActivationRules._still_since`).
        self._motion = collections.deque(maxlen=max(32, t.min_samples))
        # The recorded batches' classes, features and regression targets
        # (`LabelOrderRules`).
        self.forget_order()
        # Attention layers once seen not one-hot (`_attention_learned`).
        self._attention_free: set[str] = set()
        # Output heads saturated at the first recording, once it was judged
        # (`_silent_outputs`).
        self._heads_judged = False
        self._saturated_heads: set[str] = set()
        # Each layer's saturation at its last recording, and the sudden
        # saturations of a fitted model (`ActivationRules._thrown_off`).
        self._last_saturation: dict[str, float] = {}
        self._thrown_at: dict = {}
        self._streaks = _Streaks()
        self._skipped = _Skipped()
        # The reference gradient levels of the last judged recordings
        # (`RecordedGradientRules._quiet_reference`).
        self._levels: collections.deque[float] = collections.deque(maxlen=_LEVELS)
        # The global gradient norms of the last recordings judged for
        # starved kernels (`RecordedGradientRules._starved_kernels`).
        self._norm_levels: collections.deque[float] = collections.deque(maxlen=_LEVELS)
        self._starved_unjudged = 0
        self._reported: set[tuple[str, str | None]] = set()
        # Whether a non-finite step reached the weights (`_broken`), and the
        # loss-scale overflows in a row (`observe_overflow`).
        self._lost = False
        self._overflows = 0
        self._norms = NormSeries(t.baseline_steps)
        self._last_step: int | None = None
        self._last_rate: float | None = None
        # Each optimizer's at the last step, when it applied several.
        self._last_rates: tuple[float, ...] = ()
        # Whether a learning rate jumped up (`NormRules._rate_jump`), and
        # which of the step's rates changed last: 0 its own, k the (k-1)-th
        # of `_last_rates` (`RuleFamily._rate_held`).
        self._rate_raised = False
        self._rate_index = 0
        # The first positive learning rate (`NormRules._note_rate`).
        self._first_rate: float | None = None
        self._trainable = any(info.has_trainable_weights for info in self.layers)
        self._zero_losses = collections.deque(maxlen=32)
        # The learning rate where a streak of stalled updates began
        # (`StallRules`).
        self._stall_rate: float | None = None
        self._reset_rise()
        self._zero_peak = 0.0
        self._zero_caused = False
        # The scale of the regression targets (set by the callback from its
        # first recorded batch; None for other losses): an explosion with
        # targets far from unit scale names them (`RuleFamily._add`).
        self.target_scale: float | None = None
        # The optimizer's gradient clipping as set (a `Clipping`; set by the
        # callback): a fix that advises clipping says it is there, and the
        # stall rule how much it cuts (`stall_rules.clip_cut`).
        self.clipping: Clipping | None = None
        # The optimizer's decoupled weight decay (set by the callback): a
        # failure while it takes a large share of the weights each step
        # names it (`RuleFamily._add`).
        self.weight_decay: float | None = None
        # The loss of a prediction that knows nothing, and what it is
        # (`StartRules`; set by the callback), the first steps' (step,
        # norm, loss) and the last recorded input scale.
        self.uninformed_loss: tuple[float, str] | None = None
        # What `check_model` told before training that the rules name as
        # the cause of the failures it leads to (`rule_support.TOLD_CAUSE_MODES`;
        # set by the callback): its mode -> the `(layer, value)` of each
        # finding (`RuleFamily._add`).
        self.told_causes: dict[str, tuple[tuple[str, float | None], ...]] = {}
        # The share of its cross-entropy a focal loss keeps there (1 for
        # others; set by the callback): a start is extreme from
        # `_EXTREME_START` times the uninformed loss over it (`StartRules`).
        self.uninformed_focus = 1.0
        # The sums of residual branches in a model without a normalization
        # layer (`_model_plan.residual_sums`; set by the callback): an
        # explosion from the first step names them (`NormRules`).
        self.residual_sums = 0
        # `(layer, activation, bias)`: a model's one output layer whose
        # bias saturates its activation (`StartRules`), set by the callback.
        self.output_bias: tuple[str, str, float] | None = None
        # The name of a loss of this package that checks its labels in a
        # compiled step, where a failed check makes the loss NaN (set by the
        # callback: `_callback_support.traced_label_checks`).
        self.traced_label_checks: str | None = None
        # The monitored layers with weights whose activation is exponential,
        # and the hidden ones with a softmax, known or not by their
        # statistics (set by the callback: `_callback_support.layers_of`).
        self.exponential_layers: tuple[str, ...] = ()
        self.hidden_softmax: tuple[str, ...] = ()
        # Monitored layer name -> its activity regularizer, described.
        self.activity_regularizers: dict[str, str] = {}
        # Whether an output can be a saturated probability (the callback
        # sets it from the model: `_callback_support.probability_output`).
        self.probability_output = True
        # `(gain, layer)`: how far the kernels are over He's scale when
        # training begins (`_callback_support.weight_gain`; set by the
        # callback): the initial weights can blow the signal up (`StartRules`).
        self.weight_gain: tuple[float, str] | None = None
        # `(shrink, layers)`: how far the ReLU layers' kernels are under He's
        # scale when training begins (`_callback_support.relu_shrink`; set
        # by the callback): early dead units or vanishing gradients name it
        # (`RuleFamily._add`).
        self.relu_shrink: tuple[float, int] | None = None
        # The model's leading `Rescaling`/`Normalization` layers by name
        # (`_callback_support.preprocessing_note`; set by the callback): the
        # input scale is of the data through them (`StartRules`).
        self.input_preprocessing: str | None = None
        self._tiny_seen = False
        self._start_steps: list[tuple] = []
        # The first step, the lowest norm since and the last steps' losses,
        # and whether told (`StartRules._damped_start`).
        self._damped = False
        self._first_step: tuple[int, float, float] | None = None
        self._lowest_norm: tuple[int, float] | None = None
        self._damped_losses: collections.deque = collections.deque(
            maxlen=_DAMPED_LOSSES
        )
        self._input_scale: float | None = None
        # Of a model of several inputs, each layer's (`StepStats`).
        self._upstream_scales: dict[str, float] | None = None
        self._extreme_loss: float | None = None
        # The start's explosion held for a chain of amplifying layers
        # (`StartRules._extreme_start`, told or dropped by `_amplified`).
        self._start_held: tuple | None = None
        # Whether a normalization feeds the classifier's head (`StartRules`
        # does not judge it then).
        self._normalized_head = normalized_head(self.layers)
        # Each optimizer group's gradient norms of the first recordings.
        self._group_early: dict[int, list[float]] = {}
        # Zero gradient norms of the recent steps (a layer falling silent).
        self._zero_counts = collections.deque(maxlen=32)
        self._silent_counts = collections.deque(maxlen=32)
        # The silent units of the last step that set a record by a margin.
        self._silent_mark = 0.0
        # The losses of the first steps (`_START_SAMPLES`, or
        # `baseline_steps` if more; `RuleFamily._early_losses` and `_start`)
        # and the batch size of the first recording (`_start`).
        self._start_losses: list[float] = []
        self._start_batch: int | None = None
        # The (step, loss) recorded in the first steps (`_settling`).
        self._early_recorded: list[tuple[int, float]] = []
        # Every step's loss in those steps, from its every-step row.
        self._step_losses: dict[int, float] = {}
        # Per layer whose units settled, the last step whose recent loss was
        # checked and that loss (`_still_learning`).
        self._settle_marks: dict[str, tuple[int, float]] = {}
        # The last two finite steps' (step, global norm, loss)
        # (`NormRules._runaway`).
        self._last_steps: collections.deque = collections.deque(maxlen=2)
        # A runaway of the norm to confirm by its step's recorded updates.
        self._runaway_at: tuple | None = None
        # The last jump of the learning rate: (step, rate before, rate after,
        # the recent loss before it or None).
        self._rate_change: tuple[int, float, float, float | None] | None = None
        # The steps after a learning-rate jump up (`NormRules._diverging`).
        self._watch = None
        # A step over the explosion limit whose effect on the loss of the
        # next steps is watched (`NormRules._spike_thrown`).
        self._spike: Spike | None = None
        # The last step that came with new data, while the norm stays up
        # (`NormRules._note_arrival`).
        self._arrival: Arrival | None = None
        # New data's arrival, and the input scale and step of the recording
        # after it, when far from the first batch's (`inputs_changed`).
        self._scale_changed: tuple[Arrival, float, int] | None = None
        # The (step, loss) of the last steps in a row with the loss far over
        # where training began (`NormRules._climbing`).
        self._climb: list[tuple[int, float]] = []
        # The last step whose global norm was over the explosion limit
        # (`NormRules._limit`): weights that grew between two recordings
        # across it grew by its update (`UpdateRules._wiped`).
        self._surged: int | None = None
        # The last step whose norm was `jump_factor` times the recent median
        # under the limit, that norm and the loss level before it
        # (`NormSeries.spike_level`; `NormRules._exploding_norm`).
        self._jumped_norm: tuple[int, float, float | None] | None = None
        # The largest update ratio of the last recording: (step, layer, ratio).
        self._last_update: tuple[int, str, float] | None = None
        # The first recorded update that made a layer's weights non-finite
        # from finite gradients: (step, layer) (`UpdateRules._update_ratios`).
        self._broken_update: tuple[int, str] | None = None
        # Each layer's gradient RMS at its first recordings (`_fallen`).
        self._early_rms: dict[str, list[float]] = {}
        # Each layer's weight norm at its last recording: (step, norm), for
        # the growth across a learning-rate jump (`_grown_weights`).
        self._weight_marks: dict[str, tuple[int, float]] = {}
        # Each layer's weight norm at its first recording with weights
        # (`UpdateRules._shrunk`).
        self._first_weight_norms: dict[str, float] = {}
        # The last recorded update larger than the weights: (step, layer, ratio).
        self._last_oversized: tuple[int, str, float] | None = None
        # An update larger than the weights whose effect is watched, the
        # recorded (step, loss, whether it counts: 3x where training began)
        # since, and whether a recording after it was waited for
        # (`UpdateRules._thrown`).
        self._throw: tuple[int, str, float] | None = None
        self._thrown_losses: list[tuple[int, float, bool]] = []
        self._thrown_waited = False
        # The largest update larger than the weights of the recordings in a
        # row with one: (step, layer, ratio) (`UpdateRules._blown_up`).
        self._run_peak: tuple[int, str, float] | None = None
        # Recordings left unjudged (quiet at the output) within each layer's
        # vanishing streak (`RecordedGradientRules._vanishing`).
        self._unjudged: collections.Counter[str] = collections.Counter()
        # Per layer, its gradient RMS and ratio to the layers near the
        # output at the first recording of its vanishing streak, and its
        # highest RMS since (`RecordedGradientRules._catching_up`).
        self._vanish_first: dict[str, tuple[float, float, float]] = {}
        # The loss where each layer's streak of oversized updates began.
        self._update_losses: dict[str, float | None] = {}
        self.jumped = False
        self._jump_hard = False
        # Whether the last step's jump is the loss's alone (`_loss_jump`),
        # and the steps in a row with the loss high.
        self.loss_jumped = False
        self._high_losses = 0
        self.suspected = False
        # Each recurrent cell whose gates the inputs saturated at the last
        # recording, after a change of their scale: (step, fraction)
        # (`gates_changed`).
        self._gate_marks: dict[str, tuple[int, float]] = {}
        self._low = 0
        self.findings: list[Finding] = []

    def observe_step(self, event: SentinelEvent) -> list[Finding]:
        """Judges one training step's global gradient norm; returns the new
        findings."""
        new: list[Finding] = []
        self.jumped = self._jump_hard = self.loss_jumped = False
        if self._broken() or (
            self._last_step is not None and event.step <= self._last_step
        ):
            return new
        self._last_step = event.step
        self._overflows = 0
        self._rate_jump(event.step, event.learning_rate, event.learning_rates)
        self._zeros_jump(event.global_norm, event.zero_gradients, event.silent_units)
        overflow = event.global_norm == math.inf and not event.non_finite
        if event.non_finite or not (_finite(event.global_norm) or overflow):
            self._non_finite_step(new, event)
        else:
            self._note_step_loss(event.step, event.loss)
            self._note_start(event.step, event.global_norm, event.loss)
            self._exploding_norm(new, event.step, event.global_norm, event.loss)
            self._runaway(event.step, event.global_norm, event.loss)
            self._diverging(new, event.step, event.global_norm, event.loss)
            self._spike_thrown(new, event.step, event.loss)
            self._climbing(new, event.step, event.global_norm, event.loss)
            self._rising(new, event.step, event.loss)
            self._extreme_start(new, event.step, event.global_norm, event.loss)
            self._zero_gradients(new, event.step, event.global_norm, event.loss)
            self._loss_jump(event.loss)
        return self._emit(new)

    def observe_overflow(
        self,
        step: int,
        rate: float | None,
        loss: float | None = None,
        rates: tuple | None = None,
    ) -> list[Finding]:
        """Judges a step whose loss-scale overflow the optimizer skipped
        (no finite norm; the step count stays at `step`; `loss`, its loss,
        when known; `rates`, as `SentinelEvent.learning_rates`); returns
        the new findings (`_overflowing`)."""
        new: list[Finding] = []
        self.jumped = self._jump_hard = False
        if self._broken():
            return new
        self._overflows += 1
        self._skipped.add(step)
        self._rate_jump(step, rate, rates)
        self._overflowing(new, step, loss)
        return self._emit(new)

    def observe_quiet(self, steps: Iterable[tuple]) -> None:
        """Takes in steps that stayed within `alarm_bounds`: `(step, global
        norm, learning rate, loss[, zero gradient norms[, silent units[,
        learning rates]]])` in step order (the rates as
        `SentinelEvent.learning_rates`). Such a step is normal: it ends any
        streak over the limit or far below the recent level, and joins the
        baseline and the recent level. Nothing to report.
        """
        if self._broken():
            return
        key = (F.EXPLODING_GRADIENTS, None)
        for step, norm, rate, loss, *counts in steps:
            if self._last_step is not None and step <= self._last_step:
                continue
            # Older callers leave the last ones out.
            zeros, silent, rates = [*counts, *(0, 0, None)[len(counts) :]][:3]
            self._zero_counts.append(zeros)
            self._silent_counts.append(silent)
            self._last_step, self._low, self._high_losses = step, 0, 0
            self._note_rate(rate, rates)
            self._overflows = 0
            self._spike = None  # Its steps are judged one by one (bounds).
            self._arrival = None  # The norm is back at its recent level.
            self._streaks.update(key, False, step)
            self._note_step_loss(step, loss)
            self._note_start(step, norm, loss)
            self._zero_streak(step, norm, loss)
            self._climb_step(step, norm, loss)  # Judged with the next step.
            self._rise_step(step, loss)
            self._last_steps.append((step, norm, loss))
            self._norms.add_normal(norm, loss)
            self._norms.add(step, norm)

    def end_fit(self) -> list[Finding]:
        """At the end of a `fit`: what was held for a recording that will not
        come in it, told now. The start's explosion held for a chain of
        amplifying layers not confirmed yet (`ChainRules._amplified`): a fit
        of a few steps ends before the chain's third recording."""
        new: list[Finding] = []
        held, self._start_held = self._start_held, None
        if held is not None:
            self._add(new, *held)
        return self._emit(new)

    def observe(self, stats: StepStats) -> list[Finding]:
        """Judges one full recording; returns the new findings.

        Its step's global norm is judged too when `observe_step` has not
        seen that step.
        """
        new: list[Finding] = []
        self.suspected = False
        if self._broken():
            return new
        if stats.input_scale is not None:
            self._input_scale = stats.input_scale
            self._upstream_scales = stats.upstream_scales
        loss_bad = stats.loss is not None and not math.isfinite(stats.loss)
        bad_layers = [ls.layer for ls in stats.layers if _layer_stats_nan(ls)]
        if stats.non_finite or loss_bad or bad_layers or math.isnan(stats.global_norm):
            layer = bad_layers[0] if bad_layers else None
            event = SentinelEvent(stats.step, stats.global_norm, True, layer)
            self._last_step = max(self._last_step or 0, stats.step)
            # A step judged non-finite from its row already: one finding (a
            # GAN's recording may hold the finite group's norm only).
            if not any(
                f.mode == F.NON_FINITE and f.step == stats.step for f in self.findings
            ):
                self._non_finite_step(new, event, stats.loss)
            return self._emit(new)
        if self._last_step is None or stats.step > self._last_step:
            event = SentinelEvent(
                stats.step,
                stats.global_norm,
                False,
                None,
                stats.learning_rate,
                stats.loss,
            )
            new += self.observe_step(event)
        if self._start_batch is None and stats.batch_size:
            # One step's batch (a recording of an execution holds several).
            self._start_batch = max(1, stats.batch_size // stats.activation_steps)
        mine: list[Finding] = []
        self._judge_order(mine, stats)
        self._tiny_inputs(mine, stats)
        self._damped_start(mine, stats)
        self._runaway_updates(mine, stats)
        self._update_ratios(mine, stats)
        self._stalled(mine, stats)
        self._vanishing(mine, stats)
        self._grown(mine, stats)
        self._dead_units(mine, stats)
        self._cut_off_layers(mine, stats)
        self._starved_kernels(mine, stats)
        self._saturation(mine, stats)
        self._silent_outputs(mine, stats)
        self._amplified(mine, stats)
        self._collapsed(mine, stats)
        return new + self._emit(mine)
