"""Health rules judged on the activations of full recordings.

Dead units (`UnitActivity`: units inactive on every sample of the last
recorded batches, for activations that `can_die`) and saturated hidden
sigmoid/tanh layers, or a first layer saturated by unstandardized inputs;
one-hot attention from the start; and one saturated output of several,
told by its gradient.
The rule family `ActivationRules` is mixed into `HealthRules`, whose state
it uses.
"""

from __future__ import annotations

import collections
import dataclasses
import functools

import numpy as np

from keras_actloss import findings as F
from keras_actloss.diagnostics.gradient_rules import _profile
from keras_actloss.diagnostics.label_order import _SHUFFLE_FIX
from keras_actloss.diagnostics.records import StepStats
from keras_actloss.diagnostics.rule_support import (
    _ATTENTION_FIX,
    _FLAT_TAIL_FIX,
    _JUMP_FIX,
    _RAW_INPUTS,
    _RAW_SATURATION_FIX,
    _START_SAMPLES,
    _THROWN_SATURATION_FIX,
    FIXES,
    RuleFamily,
    _finite,
    _lower_first,
    _median,
    _named,
)
from keras_actloss.diagnostics.start_rules import _BIAS_FIX
from keras_actloss.diagnostics.step_rules import _SCALE_CHANGE, negligible
from keras_actloss.profiles import RELU_FAMILY, SIGMOID, SOFTMAX, TANH

# Dead PReLU units, their slopes 0 as initialised by default.
_PRELU_FIX = (
    "Initialise the PReLU's slopes above 0 "
    "(`alpha_initializer=keras.initializers.Constant(0.25)`, as He et al. "
    "did): at 0 its units start as ReLU's and die as they do. Avoid large "
    "negative bias initialisation, and lower the learning rate."
)
# Dead units of an activation other than ReLU's kind whose zero region has
# no gradient (hard SiLU's below -3, the shrink functions' around 0).
_DEAD_OTHER_FIX = (
    "Use an activation whose inactive side keeps a gradient (SiLU, GELU, "
    "Leaky ReLU or ELU) instead of {kind}, lower the learning rate, and keep "
    "the pre-activations out of its zero region (biases at zero, "
    "standardized inputs)."
)
# After the fix of units killed by a learning-rate jump (`_JUMP_FIX`).
_STILL_DEAD = " If units still die, use Leaky ReLU (or ELU) instead of ReLU."
# A model whose loss is under this share of the loss of knowing nothing has
# learned through its attention, one-hot or not
# (`ActivationRules._attention_learned`).
_ATTENTION_LEARNED = 0.8
# An output head saturated from the first recording whose gradient is at
# most this share of the other outputs' largest learns nothing
# (`ActivationRules._silent_outputs`).
_STARVED_HEAD = 1e-4

# Units found dead in the first steps of training, in a layer active at
# first, without a learning-rate change, a recent loss risen by
# `_SETTLE_RISE` of where training began (`RuleFamily._start`) or a
# recorded one by `_SETTLE_JUMP` (each also by `_SETTLE_RISE_SPREADS` or
# `_SETTLE_JUMP_SPREADS`), are not reported within this many steps
# (`ActivationRules._settling`); after them, units of such a layer only
# once the model stops learning: its recent loss fell less than
# `_SETTLE_FALL` over the last `_SETTLE_STEPS` steps short of fitted, or
# rose by `_SETTLE_RISE` of where training began.
_SETTLE_STEPS = 64
_SETTLE_RISE = 0.1
_SETTLE_JUMP = 0.5
_SETTLE_FALL = 0.05
# The rise and the jump must also pass these many times the spread (median
# absolute deviation) of the losses recorded in those steps: the loss of a
# batch of a few samples varies by more than half its level from batch to
# batch (batches of 4: the first loss 0.69, a later one 1.14, the model
# learning), and one such batch is no overshoot. The highest of about 64
# noisy losses lies some 3.5 deviations over their median, and the first
# may lie 2 under it; a loss as level as in the rules' tests spreads 0.
_SETTLE_JUMP_SPREADS = 6.0
_SETTLE_RISE_SPREADS = 3.0
# On batches of `_START_SAMPLES` samples or more the loss of a batch is
# steady, and a wide spread of the first losses is the failure's own
# swings: a loss risen by this share of where training began jumped,
# however wide. Probed: SGD(3) on a ReLU MLP, batches of 32, the loss 1.52
# then 2.42, 3.36, 3.73, 1.66, 1.29, ... (spread 0.49), 52% of a layer's
# units dead from step 6, the model at chance: told at step 22 when it
# could be at 10.
_SETTLE_JUMP_STEADY = 1.0
# A layer with at least this share of its units dead, the loss no lower
# since they died, passes too little to be settling (`_settling`), whole or
# not. Probed: SGD(0.5, momentum 0.9) on a separable ReLU CNN, its second
# layer 62% dead at step 5 and 91% from step 8 on held-out data, the model
# at chance throughout: told at step 25, once the last units died. Settling
# layers were probed at up to 5 of 8 units (a squeeze-excitation's) and
# half of a pooled-embedding layer's.
_SETTLE_WHOLE = 0.85


# A unit inactive on a window of `min_samples` samples is counted dead
# unless the recordings up to its last activity (`_RARE_HISTORY` of them at
# least) make its silence since at least this likely: it was active on a
# few of their batches (`UnitActivity._rare`). Probed: a healthy 3x128 ReLU
# MLP under Adam 1e-2, 3008 steps: a third of its second layer's units
# inactive on all 2048 training samples from step 250 to the end, and 50%
# of them on the 128 samples of 4 sparse recordings at step 2699 (units
# active on a few samples in a thousand), the model still improving: told
# as dead units. Their silences were about 10-50% likely (at 0.1, one seed
# of three was told again); a unit active on half of the batches before a
# change silenced it is dead after 4 silent recordings (6%).
_RARE_CHANCE = 0.07
_RARE_HISTORY = 8
# The steps a unit's share of steps with a gradient (`LayerStats.unit_flow`)
# must be taken over to tell it rarely active.
_FLOW_HISTORY = 16
# A unit inactive on a window is not counted dead when it was inactive on
# as many samples in a row before (`min_samples`: a window's worth, dead to
# `UnitActivity.dead`) and came back with `_BACK_SHARE` of the layer's
# units at once, active on `_BACK_RUN` recordings in a row (units active on
# a few samples in a hundred are silent on a window now and then, one or
# two at a time: on JAX, the healthy first 500 steps of the MLP of
# `units_die_gradually`), and since its last activity no layer's weights
# moved by more than `_STILL` of their norm (`ActivationRules._still_since`:
# the sum of the recorded update ratios, each over the steps since the
# recording before, and the change of the norm): its silence follows its
# batches, not its weights (`UnitActivity._silenced`). Probed: a fitted
# classifier trained on, time-ordered, 16 batches of its task then 32 of a
# new one each epoch (Adam 2e-3, updates of 0.2-0.9% of the weights a
# step): a third of a layer's units inactive on every batch of the new
# task, active on 3-97% of the samples of the old task's, 52% of them
# inactive on the 4 recordings of the new task's second stretch, the model
# learning both. Units silenced by an edit (biases set to -50) never come
# back.
_STILL = 0.2
_BACK_RUN = 3
_BACK_SHARE = 1 / 8
# A layer of a fitted model whose saturation rose over the limit by at least
# `_SUDDEN` since its last recording, with the losses recorded since
# (median) `_THROWN` times the recent loss before and `_THROWN_RISE` of the
# early loss over it, was thrown off by it (`ActivationRules._thrown_off`):
# a tanh layer driven into its tails late in a run (its weights scaled
# 100x, a stand-in for any late event) took a fitted MLP's loss from 0.019
# to 0.07-0.4 (the early loss 1.35), and no more was learnt in 1000 steps;
# on JAX from 0.036 to 0.08-0.10 (the early loss 1.41). Saturation that
# grows as a fitted model's weights do rises a little at a time.
_SUDDEN = 0.25
_THROWN = 2.0
_THROWN_RISE = 0.02
# Part of a layer dead, most of it inactive from the first recorded batch:
# reported as a warning (initialisation's doing, the layer learning through
# the rest) unless training killed this share of its units beyond those.
# Probed: a Dense(64, relu) head on a pretrained body's pooled features,
# 30-32 of its units inactive on the first batch and 32-34 dead later, the
# model fitting (accuracy 0.99); a stock MobileNetV3Small's first
# squeeze-excitation ReLU, 5 of 8 inactive from the start.
_KILLED_SHARE = 0.25
# ...and of at most this share of the layer's units: with more dead (14 of
# 16 units behind a bias of -100, the loss level) the layer has too few left.
_OFF_SHARE = 2 / 3
# ...told once they stayed so over this many steps (a warning: no rush):
# the first batches of an unshuffled series are one stretch of it, which
# can keep units off that the rest of the data turns on (a Conv1D of 16
# units before an LSTM: 8 off on the first 128 contiguous windows, active
# on 76% of the 3000 of the training set).
_OFF_STEPS = 32
# Part of a layer fed by a global average pooling found dead (`_averaged_off`):
# a warning. Probed (the Keras text-classification tutorial's shape,
# Embedding -> GlobalAveragePooling1D -> Dense(16, relu), and wider
# vocabularies; 9 of 42 healthy runs): half the units inactive on the
# 128-192 samples of a window while active on 0.1-1.5% of the 4096
# training samples (0-25% inactive on all of them), most active on half of
# them 100 steps later, the models fitted.
_AVERAGED = (
    ": its inputs are averaged by a global pooling and barely differ between "
    "samples, so each unit fires on almost every sample or on almost none; "
    "some of these may be rarely rather than never active (as many samples "
    "cannot tell), and such units often switch back on as the layers before "
    "them learn."
)
_SINGLE_BATCH_FIX = (
    "Train on batches of several samples (BatchNormalization needs them: "
    "its statistics are the batch's), or normalize each sample over its "
    "features with LayerNormalization, which does not depend on the batch."
)
_AVERAGED_FIX = (
    "If the loss stops falling: normalize the pooled features (a "
    "LayerNormalization or BatchNormalization after the pooling) so that "
    "they differ between samples, or use Leaky ReLU (or ELU) in this layer."
)
_COLLAPSE_FIX = (
    "Weaken the layer's kernel regularizer (its factor, as in `L2(1e-4)` "
    "rather than `L2(10)`) or loosen its kernel constraint (a `MaxNorm` of "
    "about 1-5), so that the data's gradient can keep the weights away from "
    "0; then, if units still die, use Leaky ReLU (or ELU)."
)
# Dead units of a gate's layer, a warning (`ActivationRules._judge_dead`):
# the model learns around them; the rate is not the point.
_GATE_FIX = (
    "If the gate needs these units: use Leaky ReLU (or ELU) in its layer, so "
    "that they pass a gradient while inactive."
)
_OFF_FROM_START_FIX = (
    "If the layer needs these units: use Leaky ReLU (or ELU), or add batch "
    "normalization before the activation, so that each unit starts active "
    "for some samples; a smaller learning rate does not bring them back."
)


def _fell(level: float, now: float, spread: float) -> bool:
    """Whether a loss fell from `level` to `now` by `_SETTLE_FALL` of it and
    `_SETTLE_RISE_SPREADS` times `spread` (the noise of small batches)."""
    return level - now >= max(_SETTLE_FALL * abs(level), _SETTLE_RISE_SPREADS * spread)


# A first layer fed with inputs that are not standardized has stopped
# learning, whatever share of its outputs is in the flat tails, only when
# its gradient RMS is under this share of the largest other layer's
# (`_starved`).
_STARVED_FIRST = 0.01


def _starved(ls, stats: StepStats) -> bool:
    """Whether layer `ls`'s gradient RMS at the recording `stats` is under
    `_STARVED_FIRST` of the largest other layer's; True where it is not
    measured (a layer without weights of its own, as an attention)."""
    others = [
        o.grad_rms for o in stats.layers if o.layer != ls.layer and _finite(o.grad_rms)
    ]
    if not _finite(ls.grad_rms) or not others:
        return True
    return ls.grad_rms < _STARVED_FIRST * max(others)


def _relu_like(activation: str | None) -> bool:
    """Whether dead units of `activation` are ReLU's kind (its family, or
    an activation not known: trusted to be ReLU-like, as `can_die` does)."""
    profile = _profile(activation)
    return profile is None or profile.family == RELU_FAMILY


def can_die(activation: str | None) -> bool:
    """Whether units of this activation can die (zero gradient when inactive).

    Uses the registered activation profile; an unknown name the callback
    still measured dead units for is trusted to be ReLU-like.
    """
    if activation is None:
        return False
    profile = _profile(activation)
    return True if profile is None else profile.can_die


class UnitActivity:
    """Per-unit activity of one layer over its most recent recordings.

    A unit is dead when it was inactive on every sample of the window: the
    fewest most recent recordings (holding at least `min_recordings`
    batches, at most `max_recordings` recordings, by default as many as
    `min_samples` and at least 32: enough to hold `min_samples` samples
    of batches of 1; a recording of an
    execution of several steps holds each of its steps' batches) that
    together hold at least `min_samples` samples,
    or half of them when not one of the layer's units (at least
    `WHOLE_UNITS`) was active: a healthy unit active on a tenth of the
    samples is zero on 64 of them with probability 0.9^64 = 1e-3, eight
    such units at once 1e-23 (with batches of 8, a layer dead from the
    start is told at step 7, not 15).
    Where the layer's bias tells it (`add`'s `flow`), a unit that passed a
    gradient back on any step from the window's first, recorded or not,
    is active: a unit that fires on one sample in 200 is silent on the
    128 samples of 4 recordings half the time, but not on the 9600 of
    the 300 steps they span.
    """

    WHOLE_UNITS = 8

    def __init__(
        self,
        min_samples: int,
        min_recordings: int = 1,
        max_recordings: int | None = None,
    ):
        self.min_samples = min_samples
        self.min_recordings = min_recordings
        if max_recordings is None:
            max_recordings = max(32, min_samples)
        self._recent = collections.deque(maxlen=max_recordings)
        # The last step each unit passed a gradient back, with the last
        # recording (`add`), and the units rarely active by it; or None.
        self.flow: np.ndarray | None = None
        self._flow_rare: np.ndarray | None = None
        # The samples each unit was inactive on since it was last active
        # (recorded batches), and the units that came back after a
        # window's worth of them (`_silenced`).
        self._quiet: np.ndarray | None = None
        self._run: np.ndarray | None = None
        self._after: np.ndarray | None = None
        self.returned: np.ndarray | None = None
        # The units active on the first recording's batch, and those alive
        # in the last `dead` window.
        self.first_active: np.ndarray | None = None
        self.alive: np.ndarray | None = None
        # The share of units inactive on the last window judged, those not
        # counted dead for being rarely active before (`_rare`) included.
        self.silent = 0.0

    def add(
        self, step: int, samples: int, activity, batches: int = 1, flow=None
    ) -> None:
        """Adds a recording's per-unit active counts (a list or array) over
        `samples` samples of `batches` batches, the last of step `step`;
        `flow`: what the gradients of every step tell of each unit
        (`LayerStats.unit_flow`), or None."""
        active = np.asarray(activity) > 0
        if self._recent and len(self._recent[-1][2]) != len(active):
            self._recent.clear()  # The layer changed shape: start again.
            self._quiet = self.returned = None
        self._recent.append((step - batches + 1, samples, active, batches))
        if self._quiet is None:
            self._quiet, self._run = np.zeros(len(active)), np.zeros(len(active))
            self._after = np.zeros(len(active), dtype=bool)
            self.returned = np.zeros(len(active), dtype=bool)
        # A run of recordings active that began after a window's worth of
        # silence, `_BACK_RUN` long: the unit came back (`_silenced`).
        # Together with an eighth of the layer (2 at least): batches that
        # reach them again, not a rarely active unit's chance.
        began = active & (self._run == 0)
        back = began & (self._quiet >= self.min_samples)
        if np.count_nonzero(back) < max(2.0, _BACK_SHARE * len(active)):
            back[:] = False
        self._after = np.where(began, back, self._after)
        self._run = np.where(active, self._run + 1, 0)
        self.returned |= self._after & (self._run >= _BACK_RUN)
        self._quiet = np.where(active, 0.0, self._quiet + samples)
        self.flow = self._flow_rare = None
        if flow is not None and all(len(f) == len(active) for f in flow):
            last, share, history = (np.asarray(f, dtype=float) for f in flow)
            self.flow = last
            # Silent since its last gradient no longer than its share of
            # the steps before makes likely: rarely active, not dead.
            with np.errstate(divide="ignore", invalid="ignore"):
                chance = (1.0 - share) ** (step - last)
            self._flow_rare = (history >= _FLOW_HISTORY) & (chance >= _RARE_CHANCE)
        if self.first_active is None:
            self.first_active = active

    @property
    def first(self) -> tuple[int, int] | None:
        """`(inactive, units)` on the first recording's batch (None before
        any)."""
        active = self.first_active
        if active is None:
            return None
        return len(active) - int(np.count_nonzero(active)), len(active)

    def started_dead(self, fraction: float) -> bool:
        """Whether at least `fraction` of the units were inactive on the
        first recording's batch: two or more of them, or the whole layer.
        One unit of a two-unit layer that initialization left inactive
        often comes back as the layers before it learn (an autoencoder's
        two-unit code: inactive on all 2048 samples at first, active on a
        third of them after an epoch, measured)."""
        if self.first is None:
            return False
        inactive, units = self.first
        if not units or inactive < fraction * units:
            return False
        return inactive >= 2 or inactive == units

    def latest(self) -> float:
        """Share of the units inactive on the last recording's batch (0
        before any)."""
        if not self._recent:
            return 0.0
        active = self._recent[-1][2]
        return 1.0 - np.count_nonzero(active) / len(active) if len(active) else 0.0

    def dead(
        self,
        min_recordings: int | None = None,
        any_samples: bool = False,
        rare: float | None = None,
        still=None,
    ) -> tuple | None:
        """`(dead fraction, samples, batches, first step)` of the window, or
        None while the recordings hold fewer than `min_samples` (any number
        with `any_samples`: units whose inputs are the same for every
        sample). `min_recordings`: instead of the window's own. With
        `rare` (units measured on their outputs), when at least that share
        of the units was inactive on the window, those that the recordings
        before show rarely active are not counted dead (`_rare`), nor, with
        `still(step)` (whether the weights barely moved since `step`), those
        that the batches switched off (`_silenced`)."""
        total, batches, seen = 0, 0, None
        least = self.min_recordings if min_recordings is None else min_recordings
        for first, samples, active, held in reversed(self._recent):
            seen = active if seen is None else seen | active
            alive = seen
            if self.flow is not None:
                # Active on a step between the recordings (its gradient).
                seen = seen | (self.flow >= first)
                alive = seen | self._flow_rare
            total += samples
            batches += held
            whole = len(alive) >= self.WHOLE_UNITS and not alive.any()
            enough = any_samples or total >= (
                self.min_samples / 2 if whole else self.min_samples
            )
            if enough and batches >= least:
                units = len(alive)
                inactive = units - np.count_nonzero(alive)
                if rare is not None and not whole and inactive >= rare * units:
                    alive = alive | self._rare(alive)
                    if still is not None:
                        alive = alive | self._silenced(alive, still)
                dead = (units - np.count_nonzero(alive)) / units if units else 0.0
                self.alive = alive
                # Inactive on the window, rarely active ones included.
                silent = units - np.count_nonzero(seen)
                self.silent = silent / units if units else 0.0
                return dead, total, batches, first
        return None

    def _rare(self, alive: np.ndarray) -> np.ndarray:
        """The units inactive on the window (`alive` False) whose silence
        since they were last active is at least `_RARE_CHANCE` likely from
        how often they were active before it: on what share of the
        recordings up to their last activity (the last `2 * _RARE_HISTORY`
        of them, and at least `_RARE_HISTORY`: a unit active on most
        batches of the dense first recordings may fire on one sample in a
        hundred later), batches of how many samples. A unit active on one
        sample in 200 is inactive on the 128 of a window half the time: it
        is rarely active, not dead; a unit active on every batch before
        falling silent stays dead however long its silence."""
        recent = list(self._recent)
        if any(len(r[2]) != len(alive) for r in recent):
            return np.zeros_like(alive)
        active = np.array([r[2] for r in recent])
        samples = np.array([r[1] for r in recent], dtype=float)
        rows = len(recent)
        # The index of each unit's last recording active, -1 for none.
        last = rows - 1 - np.argmax(active[::-1], axis=0)
        last[~active.any(axis=0)] = -1
        rare = np.zeros_like(alive)
        for unit in np.flatnonzero(~alive & (last + 1 >= _RARE_HISTORY)):
            before = last[unit] + 1
            since = max(0, before - 2 * _RARE_HISTORY)
            share = active[since:before, unit].mean()
            silent = samples[before:].sum() / samples[since:before].mean()
            rare[unit] = (1.0 - share) ** silent >= _RARE_CHANCE
        return rare

    def _silenced(self, alive: np.ndarray, still) -> np.ndarray:
        """The units inactive on the window (`alive` False) that came back
        before after a window's worth of silence (`returned`) and whose
        weights barely moved since their last activity (`still(step)` of
        its recording's step): silent on the batches of a time-ordered
        stream that do not reach them, as before, not dead."""
        silenced = np.zeros_like(alive)
        if self.returned is None or len(self.returned) != len(alive):
            return silenced
        waiting = ~alive & self.returned
        for first, _, active, held in reversed(self._recent):
            found = waiting & active
            if found.any() and still(first + held - 1):
                silenced |= found
            waiting &= ~found
            if not waiting.any():
                break
        return silenced


@dataclasses.dataclass
class SuddenSaturation:
    """A fitted model's layer saturated suddenly (`ActivationRules.
    _thrown_off`): the recent loss before it (`level`), the losses recorded
    since, and whether they showed the model thrown off (kept once so)."""

    level: float
    losses: list = dataclasses.field(default_factory=list)
    thrown: bool = False


def _gradient_activity(norm: float | None, passed: bool) -> list[float] | None:
    """A layer's activity as its gradients tell it, for a layer whose
    outputs are not measured: one pseudo-unit, inactive when every gradient
    of the layer is exactly 0 (ReLU units inactive on every sample pass no
    gradient to their weights), else active; None without a finite norm,
    or when no layer nearer the outputs got a gradient either (`passed`
    False: a saturated output or a loss with no gradient stops it there,
    and the layer's own units are not what the zeros tell of)."""
    if norm is None or not np.isfinite(norm):
        return None
    if norm > 0:
        return [1.0]
    return [0.0] if passed else None


def _passing(stats: StepStats, distance: dict[str, int]) -> dict[str, bool]:
    """For each layer of `stats`, whether a layer nearer the outputs
    (`distance`) got a finite gradient other than 0 in the step."""
    flowing = [
        distance.get(ls.layer)
        for ls in stats.layers
        if _finite(ls.grad_norm) and ls.grad_norm > 0
    ]
    nearest = min((d for d in flowing if d is not None), default=None)
    return {
        ls.layer: nearest is not None
        and distance.get(ls.layer) is not None
        and nearest < distance[ls.layer]
        for ls in stats.layers
    }


def _data_like(saturation: float, data: float | None) -> bool:
    """Whether a layer whose outputs could be the data (`data`:
    `StepStats.data_saturation`, None otherwise) is no more saturated than
    data-like outputs are: outside the tails at least half as often as the
    data. A GAN's generator ending in tanh for images in `[-1, 1]`, or a
    decoder ending in sigmoid for binary images, is a hidden layer of its
    model (the discriminator follows it) whose outputs belong in the tails
    where the data are."""
    return data is not None and 1.0 - saturation >= (1.0 - data) / 2


class ActivationRules(RuleFamily):
    """Dead units and saturated activations, judged on each recording.

    Mixed into `HealthRules`, which keeps a `UnitActivity` window per layer
    that can die, the layers whose activity was measured (`_measured`; a
    layer that can die but never is, as a `SimpleRNN` that returns only its
    last step, is judged on its gradients: `_gradient_activity`), the
    attention layers seen not one-hot (`_attention_free`), and the input and
    output layers of the model.
    """

    def _dead_units(self, new, stats: StepStats) -> None:
        t = self.thresholds
        loss = stats.loss
        if _finite(loss) and stats.step < _SETTLE_STEPS:
            # With several steps per execution, the losses of its steps
            # before the recorded one too (from their every-step rows): a
            # step that overshoots inside an execution is seen.
            first = stats.step - stats.activation_steps + 1
            self._early_recorded += [
                (s, self._step_losses[s])
                for s in range(first, stats.step)
                if s in self._step_losses
            ]
            self._early_recorded.append((stats.step, loss))
        self._note_motion(stats)
        passing = None
        judged = []
        for ls in stats.layers:
            window = self._activity.get(ls.layer)
            samples = ls.unit_samples or stats.batch_size
            activity = ls.unit_activity
            # The counts cover the recorded execution's full steps; a
            # gradient, the recorded step alone.
            batches = stats.activation_steps
            by_sign = ls.layer in self._info and self._info[ls.layer].units_by_sign
            if by_sign:
                if passing is None:
                    passing = _passing(stats, self._distance)
                # Judged on its units alone (a linear layer), and only where
                # a gradient reaches the layers after it: an output layer's
                # outputs go to the loss, not through a ReLU.
                out = ls.layer in self.output_layers
                if activity is None or out or not passing[ls.layer]:
                    continue
            if activity is not None:
                self._measured.add(ls.layer)
            elif ls.layer not in self._measured:
                if passing is None:
                    passing = _passing(stats, self._distance)
                activity = _gradient_activity(ls.grad_norm, passing[ls.layer])
                if samples:
                    samples //= stats.activation_steps
                batches = 1
            if window is None or activity is None or not samples:
                continue
            flow = ls.unit_flow if ls.layer in self._measured or by_sign else None
            window.add(stats.step, samples, activity, batches, flow)
            # Behind a batch normalization of single values (batches of 1)
            # every sample gets the same inputs: no need for many of them.
            info = self._info.get(ls.layer)
            single = (
                info is not None
                and info.batch_normalized is not None
                and stats.batch_size == 1
            )
            rare = t.dead_fraction if ls.layer in self._measured else None
            measured = window.dead(
                self._patience(),
                any_samples=single,
                rare=rare,
                still=functools.partial(self._still_since, stats.step),
            )
            hit = measured is not None and measured[0] >= t.dead_fraction
            judged.append((ls.layer, window, measured, hit))
        # Judged once every layer's window is in: a layer cut off by dead
        # ones (`_cut_off`, on their windows) is told so whatever their
        # order.
        for layer, window, measured, hit in judged:
            if measured is not None:
                self._judge_dead(new, layer, stats.step, measured, hit)
            # Most units inactive on this batch, or on the window, and not
            # reported yet: dense recordings tell soon (`suspected`).
            if (hit or window.latest() >= t.dead_fraction) and (
                (F.DEAD_RELU, layer) not in self._reported
            ):
                self.suspected = True

    def _note_motion(self, stats: StepStats) -> None:
        """Keeps the recording's update ratio and weight norm of each layer
        with weights (`_still_since`)."""
        self._motion.append(
            (
                stats.step,
                {
                    ls.layer: (ls.update_ratio, ls.weight_norm)
                    for ls in stats.layers
                    if ls.weight_norm is not None
                },
            )
        )

    def _still_since(self, now: int, since: int) -> bool:
        """Whether no layer's weights moved by more than `_STILL` of their
        norm from the recording of step `since` to that of `now`: neither
        the sum of its update ratios recorded after it, each over the steps
        from the recording before, nor the change of its norm (a change
        from outside the optimizer, an edit or a restore). False when a
        recording of those steps lacks a layer's ratio or is no longer
        kept."""
        kept = [(step, layers) for step, layers in self._motion if step >= since]
        if not kept or kept[0][0] != since or kept[-1][0] != now or not kept[0][1]:
            return False
        before, start = kept[0]
        moved = dict.fromkeys(start, 0.0)
        for step, layers in kept[1:]:
            for layer in moved:
                ratio = layers.get(layer, (None, None))[0]
                if not _finite(ratio):
                    return False
                moved[layer] += ratio * (step - before)
            before = step
        for layer, (_, norm) in start.items():
            last = kept[-1][1].get(layer)
            if last is None or not _finite(norm, last[1]) or norm <= 0:
                return False
            if max(moved[layer], abs(last[1] / norm - 1.0)) > _STILL:
                return False
        return True

    def _judge_dead(self, new, layer: str, step: int, measured, hit: bool) -> None:
        """Reports a layer's dead units once the window (`UnitActivity.dead`:
        `measured`, over `dead_fraction` when `hit`) held them so on the
        batches of `patience` recordings (as many batches of a recording of
        several steps) over `patience_steps` steps."""
        dead, samples, batches, first = measured
        hit = hit and batches >= self._patience()
        # The streak starts with the first step of its first window.
        _, start = self._streaks.update((F.DEAD_RELU, layer), hit, first)
        if (
            hit
            and self._lasted(start, step)
            and not self._settling(layer, step, start, dead)
        ):
            roots = self._cut_off(layer) if layer in self._measured else None
            fix, severity = None, F.FAILURE
            info = self._info[layer]
            if info.units_by_sign:
                message = (
                    f"{dead:.0%} of the units of layer '{layer}' were at most 0 "
                    f"on every one of the {samples} samples of the last "
                    f"{batches} recorded batches (steps {first}-{step}) and got "
                    "no gradient: the ReLU that the `call` of layer "
                    f"'{info.inside}' applies to them (not watched here) outputs "
                    "zero there and passes nothing back, so these units are dead"
                )
            elif layer in self._measured:
                between = ""
                if (
                    self._activity[layer].flow is not None
                    and step - first + 1 > batches
                ):
                    # Their biases' gradients, every step (`UnitActivity.add`).
                    between = " and passed no gradient back on any step between"
                silent = max(dead, self._activity[layer].silent)
                counted = ""
                if silent > dead:
                    # `UnitActivity._rare`: not counted dead yet.
                    counted = (
                        f"; {dead:.0%} counted dead, the others were active on "
                        "few batches before and may be silent by chance"
                    )
                message = (
                    f"{silent:.0%} of the units of layer '{layer}' output zero "
                    f"for every one of the {samples} samples of the last "
                    f"{batches} recorded batches (steps {first}-{step}"
                    f"{counted}){between}"
                )
            else:
                message = (
                    f"Every gradient of layer '{layer}' is exactly 0 on each of "
                    f"the last {batches} recorded batches ({samples} samples, "
                    f"steps {first}-{step}), whose outputs are not measured "
                    "here (as those of a recurrent layer that returns only its "
                    "last step): its ReLU units output zero on every sample "
                    "and step, dead, or no layer after it passes a gradient "
                    "back. Dead units only come back if the layers before them "
                    "change their inputs."
                )
            if roots is not None:
                through = _named(self._info[layer].upstream)
                named = _named(roots)
                because = ""
                if named != through:
                    because = f" (because those of {named} are)"
                message += (
                    f", and its inputs all come through {through}, whose "
                    f"units are all dead{because}: it gets no signal from the "
                    "data, and its units are dead as a consequence; they can "
                    f"only come back once those of {named} do."
                )
                own = "its own finding" if len(roots) == 1 else "their own findings"
                fix = (
                    f"Fix {named} first (see {own}): this layer gets its "
                    "inputs only through the dead units. If it is still dead "
                    "after that: " + _lower_first(FIXES[F.DEAD_RELU])
                )
            else:
                # The update that killed them, and the learning-rate jump
                # that made the steps that large.
                jumped = self._jump_before(start)
                after = self._oversized_before(start) + jumped
                # Batches of 1 (a sample per recorded batch) through a
                # batch normalization of single values: its offset.
                single = (
                    info.batch_normalized is not None
                    and samples == batches
                    and layer in self._measured
                )
                off = after or single
                at_start = None if off else self._off_from_start(layer, dead)
                averaged = (
                    not off
                    and at_start is None
                    and layer in self._measured
                    and self._averaged_off(layer, dead)
                )
                if info.units_by_sign:
                    message += (
                        "; they only come back if the layers before them "
                        "change their inputs."
                    )
                elif single:
                    norm = info.batch_normalized
                    message += (
                        f": its inputs are the outputs of '{norm}', a "
                        "BatchNormalization trained on batches of 1, which "
                        "normalizes each feature over the batch, here a "
                        "single value: it outputs its offset whatever the "
                        "data, so these units get the same input on every "
                        "sample, and no gradient passes back through it to "
                        "the layers before it."
                    )
                    fix = _SINGLE_BATCH_FIX
                elif averaged:
                    message += _AVERAGED
                    fix, severity = _AVERAGED_FIX, F.WARNING
                elif layer in self._measured and info.activation == "prelu":
                    message += (
                        ": these PReLU units, whose slopes are 0 (Keras's "
                        "default initialisation), are dead as ReLU units are: "
                        "they and their slopes get no gradient; they only come "
                        "back if the layers before them change their inputs."
                    )
                    fix = _PRELU_FIX
                elif layer in self._measured and not _relu_like(info.activation):
                    # Probed: hard SiLU units dead behind a bias of -10, told
                    # as ReLU units with "use Leaky ReLU instead of ReLU".
                    kind = info.activation
                    message += (
                        f": these {kind} units are dead (exactly 0 on every "
                        "sample, where its gradient is 0) and get no gradient; "
                        "they only come back if the layers before them change "
                        "their inputs."
                    )
                    fix = _DEAD_OTHER_FIX.format(kind=kind)
                elif layer in self._measured and self.data_ordered and not after:
                    # Probed: a ReLU MLP on 4 classes sorted by label,
                    # unshuffled (Adam 1e-2): 58% of a layer's units
                    # inactive on the 128 samples of 4 batches of the third
                    # class, active on the other classes' batches; one fitting
                    # sin(2x) on x sorted: 77% of a layer's units inactive on
                    # 4 batches (no large update or rate jump before: those
                    # are told as such).
                    message += (
                        ": the batches come in the data's order "
                        "(`unshuffled_data`), so these units may be silent only "
                        "on the samples of these batches; units silent on all "
                        "of the data are dead and get no gradient."
                    )
                    fix = (
                        _SHUFFLE_FIX
                        + " If they stay silent: "
                        + _lower_first(FIXES[F.DEAD_RELU])
                    )
                    severity = F.WARNING
                elif layer in self._measured:
                    message += (
                        ": these ReLU units are dead and get no gradient; they "
                        "only come back if the layers before them change their "
                        "inputs."
                    )
                shrunk = self._shrunk(layer)
                if shrunk is not None and self._decay_share() is None:
                    # Its large updates were the weights' collapse.
                    message += (
                        f" Its weights shrank {shrunk:.3g}x since the first "
                        "recording: a kernel regularizer or constraint far too "
                        "strong drives them to 0, and the units with them."
                    )
                    fix, at_start = _COLLAPSE_FIX, None
                else:
                    message += after
                    if jumped:
                        fix = _JUMP_FIX + _STILL_DEAD
                if at_start is not None:
                    inactive, units = at_start
                    message += (
                        f" {inactive} of its {units} units were inactive on the "
                        "first recorded batch already, before any update: "
                    )
                    fix, severity = _OFF_FROM_START_FIX, F.WARNING
                    scale = self._scale_before(layer)
                    if (
                        _finite(scale)
                        and scale >= _RAW_INPUTS
                        and not self._looked_up()
                    ):
                        # Probed (JAX): a tabular model fed raw incomes.
                        message += (
                            "the inputs, far from unit scale (a feature's mean "
                            f"or spread is {scale:.3g}), left them off, and the "
                            "layer learns through its other units."
                        )
                        fix = FIXES[F.UNSTANDARDIZED_INPUTS]
                    else:
                        message += (
                            "initialisation left them off (as it often does "
                            "where a layer's inputs barely differ between "
                            "samples, such as features pooled over an image), "
                            "and the layer learns through its other units."
                        )
                    if step - start + 1 < _OFF_STEPS:
                        return  # Judged again at the next recording.
                if info.threshold > 0:
                    # Probed: `ReLU(threshold=3)` after a Dense layer, every
                    # unit dead from step 0, told with Leaky ReLU for fix.
                    cut = f"{info.threshold:g}"
                    message += (
                        f" Its ReLU outputs 0 for every input under its "
                        f"threshold of {cut} (`ReLU(threshold={cut})`), not "
                        "only under 0: a unit whose inputs stay under it is "
                        "dead."
                    )
                    fix = (
                        f"Lower the threshold of the ReLU of layer '{layer}' "
                        "(0 by default). If its units stay dead: "
                        + _lower_first(fix or FIXES[F.DEAD_RELU])
                    )
                penalty = self.activity_regularizers.get(layer)
                if penalty is not None and severity == F.FAILURE:
                    # A sparse autoencoder's code under L1 3e-2: every unit
                    # dead in 30 steps, a 10x smaller rate no help.
                    message += (
                        f" Its activity regularizer ({penalty}) adds a penalty "
                        "on its outputs that pushes them to 0, where ReLU "
                        "units die."
                    )
                    fix = (
                        "Lower the weight of the activity regularizer of layer "
                        f"'{layer}' (or remove it). If its units stay dead: "
                        + _lower_first(fix or FIXES[F.DEAD_RELU])
                    )
            gate = self._info[layer].gate
            if gate is not None and severity == F.FAILURE:
                # Probed: 3 of the 4 squeeze units of a squeeze-and-excitation
                # block off from the start, a failure, in a CNN that reached
                # 0.95 accuracy (2 of 4 were a warning).
                message += (
                    f" The layer is in a gate (its outputs reach the loss only "
                    f"by multiplying, at '{gate}', the path they are computed "
                    "from): the model learns through that path around it."
                )
                severity = F.WARNING
                if fix is None:
                    fix = _GATE_FIX
            self._add(new, F.DEAD_RELU, layer, start, dead, message, fix, severity)

    def _averaged_off(self, layer: str, dead: float) -> bool:
        """Whether the dead units of `layer` (a share `dead`) are part of a
        layer fed by a global average pooling (`LayerInfo.averaged`), at
        most `_OFF_SHARE` of it, with the learning rate never raised (no
        jump up, no warm-up): units switched off by the descent itself,
        which may be rare rather than never active (`_AVERAGED`)."""
        return self._info[layer].averaged and dead <= _OFF_SHARE and self._rate_steady()

    def _rate_steady(self) -> bool:
        """Whether the learning rate never rose: no jump up, and not warmed
        up 10x since the first step (units that die then were killed by the
        grown steps). A decay (a step schedule's drop) kills no unit."""
        return not self._rate_raised and not self._warmed_up()

    def _off_from_start(self, layer: str, dead: float) -> tuple[int, int] | None:
        """`(inactive, units)` on the first recorded batch of `layer`, when
        its dead units (a share `dead`) are mostly those: at most
        `_OFF_SHARE` of the layer, with fewer than `_KILLED_SHARE` of its
        units dead that were active there (killed by training); else
        None."""
        window = self._activity[layer]
        first, alive = window.first_active, window.alive
        if first is None or alive is None or dead > _OFF_SHARE:
            return None
        if len(first) != len(alive) or first.all():
            return None
        killed = np.count_nonzero(first & ~alive)
        return None if killed >= _KILLED_SHARE * len(alive) else window.first

    def _cut_off(self, layer: str) -> tuple[str, ...] | None:
        """When every unit of each layer that all inputs of `layer` come
        through (`LayerInfo.upstream`) is dead (`_all_dead`): the first
        such layers up the graph (those layers, or the ones they are cut
        off by in turn); else None."""
        upstream = self._info[layer].upstream
        if not upstream or not all(self._all_dead(u) for u in upstream):
            return None
        roots: dict[str, None] = {}
        for name in upstream:
            roots.update(dict.fromkeys(self._cut_off(name) or (name,)))
        return tuple(roots)

    def _all_dead(self, layer: str) -> bool:
        """Whether every unit of `layer`, whose outputs are measured, is
        dead on its latest window (`UnitActivity.dead`)."""
        window = self._activity.get(layer)
        if window is None or layer not in self._measured:
            return False
        measured = window.dead(self._patience(), rare=1.0)
        return measured is not None and measured[0] >= 1.0

    def _settling(self, layer: str, step: int, start: int, dead: float) -> bool:
        """Whether units of `layer` found dead at `step` (a share `dead` of
        them, a streak from `start`) may still be settling: within the
        first `_SETTLE_STEPS` steps of training, in a layer mostly active
        on its first recorded batch (or with one unit of it inactive, or
        part of it inactive while the loss falls `_SETTLE_FALL` below
        where training began, and 3 times the spread of the recorded
        losses; a layer dead whole or nearly, `_SETTLE_WHOLE` of it, only
        while the losses recorded since it died are that far below those
        before, `_fell_since`), with the
        learning rate
        unchanged (no jump, and not warmed up 10x since the first step:
        Adam warmed up from 0 to 0.5 over 200 steps killed half a layer's
        units by step 42, a warm-up's slow rise leaves the loss level), the
        recent loss (median of the last steps') not risen
        over the loss where training began (`_start`) by both a tenth of it
        and 3 times the spread of the recorded losses, and no loss recorded
        up to the step after the streak's first (with several steps per
        execution, any step's of a recorded execution) by both half of it
        and 6 times that spread (the noise of small batches; on batches of
        `_START_SAMPLES` or more, at most `_SETTLE_JUMP_STEADY` of it);
        after those steps, in a layer whose units settled so, for as long
        as the model goes on learning (`_still_learning`).

        A layer fed inputs that barely differ between samples (pooled
        embeddings initialized within +-0.05) has pre-activations that
        spread less than Adam moves its biases in a step (about the
        learning rate): a unit is active on every sample or on none, and
        the descent switches off, for every sample at once, the units whose
        outputs raise the loss. Half the units can stay so for a hundred
        steps, and go and come back again later, as the layers before them
        grow, while the loss falls and the model fits. Units killed by too
        large a step come with a loss that jumps or rises; units dead from
        the start show on the first batch; units of other layers that die
        later, or while the model stops learning, are judged at once
        (`UnitActivity.started_dead`: a single unit of a small layer dead
        from the start settles too). Not while the optimizer's weight decay
        takes a large share of the weights each step (`_decay_share`).
        """
        window = self._activity[layer]
        if not self._rate_steady():
            return False  # The steps grew: units killed by them are no noise.
        if self._decay_share() is not None or self._shrunk(layer) is not None:
            # Weight decay, or a regularizer or constraint far too strong,
            # drives the weights to 0: no noise.
            return False
        if step >= _SETTLE_STEPS and layer not in self._settle_marks:
            return False
        if window.first is None:
            return False
        began, recent = self._start(), self._norms.recent_loss()
        early = np.asarray([loss for _, loss in self._early_recorded])
        if began is None or recent is None or not early.size:
            return False
        spread = float(np.median(np.abs(early - np.median(early))))
        fell = _fell(began, recent, spread)
        if window.started_dead(self.thresholds.dead_fraction) and (
            dead >= 1.0 or not fell
        ):
            # Dead from the start: reported at once, unless part of the
            # layer while the loss falls (beyond the noise of its batches),
            # the lottery of inputs that barely differ between samples,
            # which the layer learns around through its live units.
            # Probed: a stock MobileNetV3Small's first squeeze-excitation
            # ReLU (8 units behind a global average pooling, zero biases)
            # had 5 inactive on every sample from the start in 3 seeds of
            # 6, and a Dense head after a global average pooling 31 of 64
            # (33% by step 100); both models fitted.
            return False
        if dead >= _SETTLE_WHOLE and not self._fell_since(start, began, spread):
            # A layer dead whole or nearly, the loss no lower since it died:
            # next to nothing passes it, and the model learns nothing
            # through it. Probed:
            # a layer killed whole at step 40 (its bias set to -10), the
            # loss back up from 1.1 to ln 4 and level (the first step's
            # was 1.49), was told at step 150, once the model had stopped
            # learning.
            return False
        if self._knows_nothing_since(start, recent):
            # Units dying while the model learns nothing are not the
            # settling of a model that learns around them. Probed: a ReLU
            # MLP under SGD(0.3, momentum 0.9) on batches of 16, the loss at
            # about ln 4 (4 classes) from step 20, half of its second layer
            # dead on 512 samples at step 30 and all of it by the end: told
            # at step 81, held as settling before.
            return False
        # A step that overshoots kills units at once: the jump that killed
        # them is recorded by the step after the streak's first at most.
        peak = max(loss for s, loss in self._early_recorded if s <= start + 1)
        # Relative to the loss's size, so a negative loss rises too.
        rose = recent - began >= max(
            _SETTLE_RISE * abs(began), _SETTLE_RISE_SPREADS * spread
        )
        noise = _SETTLE_JUMP_SPREADS * spread
        if (self._start_batch or 0) >= _START_SAMPLES:
            noise = min(noise, _SETTLE_JUMP_STEADY * abs(began))
        jumped = peak - began >= max(_SETTLE_JUMP * abs(began), noise)
        if rose or jumped:
            return False
        if step < _SETTLE_STEPS:
            self._settle_marks.setdefault(layer, (0, began))
            return True
        return self._still_learning(layer, step, start, recent, began)

    def _knows_nothing_since(self, start: int, recent: float) -> bool:
        """Whether the losses of the steps from `start` on (their median;
        kept for the first `_SETTLE_STEPS` steps, with those recorded) and
        the recent loss are those of a prediction that knows nothing
        (`_knows_nothing`): the model learns nothing."""
        since = [loss for s, loss in self._step_losses.items() if s >= start]
        since += [loss for s, loss in self._early_recorded if s >= start]
        level = float(np.median(since)) if since else recent
        return self._knows_nothing(level) and self._knows_nothing(recent)

    def _note_step_loss(self, step: int, loss: float | None) -> None:
        """Keeps the loss of a step of the first `_SETTLE_STEPS` from its
        every-step row, for `_dead_units` (the steps of a recorded
        execution before its recorded one)."""
        if step < _SETTLE_STEPS and _finite(loss):
            self._step_losses[step] = loss

    def _fell_since(self, start: int, began: float, spread: float) -> bool:
        """Whether the losses recorded from step `start` on (median) fell
        below those of the last 4 recordings before it (where training
        began, for none) by `_SETTLE_FALL` of them and
        `_SETTLE_RISE_SPREADS` times `spread`."""
        before = [loss for s, loss in self._early_recorded if s < start][-4:]
        since = [loss for s, loss in self._early_recorded if s >= start]
        if not since:
            return False
        level = float(np.median(before)) if before else began
        return _fell(level, float(np.median(since)), spread)

    def _still_learning(
        self, layer: str, step: int, start: int, recent: float, began: float
    ) -> bool:
        """Whether the model learns on past its first steps, in which units
        of `layer` settled: its recent loss, checked each time
        `_SETTLE_STEPS` steps have passed since the last check (the first
        against the loss where training began), fell `_SETTLE_FALL` since, or
        the model has fitted (`_fitted`); and, for units that died after
        the first steps (a streak from `start`), it has not risen
        `_SETTLE_RISE` of the loss where training began over the last
        checked one since (units killed late, as by a bad batch, with the
        model fitted)."""
        checked, level = self._settle_marks[layer]
        late = start >= _SETTLE_STEPS
        if late and recent - level >= _SETTLE_RISE * abs(began):
            return False
        if step - checked < _SETTLE_STEPS:
            return True
        if level - recent < _SETTLE_FALL * abs(level) and not self._fitted():
            return False
        self._settle_marks[layer] = (step, recent)
        return True

    def _saturation(self, new, stats: StepStats) -> None:
        t = self.thresholds
        # Saturation once the weights blew up is a consequence, not news;
        # and a converged model's saturated units are doing their job.
        if self._converged(stats) or self._exploded():
            return
        # A model that has learned was not stopped by its saturated units
        # (weights that keep growing push them into the tails): no hit.
        fitted = self._fitted(stats.loss)
        for ls in stats.layers:
            if ls.saturation is None or ls.layer in self.output_layers:
                continue
            if ls.layer in self._heads:
                continue  # An output of several: `_silent_outputs`.
            if _data_like(ls.saturation, stats.data_saturation.get(ls.layer)):
                continue
            # Large raw inputs still pass a gradient through the outputs left.
            scale = self._first_scale(ls.layer, stats)
            raw_first = scale is not None and scale > t.input_scale
            # Of several inputs, those that reach this layer are named.
            told = stats
            if raw_first and scale != stats.input_scale:
                told = dataclasses.replace(stats, input_scale=scale)
            limits = {
                F.SATURATED_ACTIVATIONS: (
                    t.raw_input_saturation if raw_first else t.saturation
                ),
                F.UNSTANDARDIZED_INPUTS: t.input_saturation if raw_first else None,
            }
            saturated = limits[F.SATURATED_ACTIVATIONS]
            if raw_first and not _starved(ls, stats):
                # Its kernel's gradient is the large inputs times what the
                # outputs left pass back: it learns (probed: 0-255 pixels
                # into a sigmoid MLP, 97% of its first layer in the tails,
                # that layer's gradient the largest in the model, 100%
                # accuracy in 128 steps). The inputs are told as the cause.
                limits[F.SATURATED_ACTIVATIONS] = None
            lowest = min(v for v in limits.values() if v is not None)
            if self._attention_learned(ls, lowest, stats.loss):
                continue
            # Over every batch of the recorded execution's full steps.
            batches = stats.activation_steps
            first = stats.step - batches + 1
            thrown = self._thrown_off(ls, stats, saturated)
            for mode, limit in limits.items():
                key = (mode, ls.layer)
                hit = limit is not None and ls.saturation >= limit
                if fitted:
                    hit = hit and thrown and mode == F.SATURATED_ACTIVATIONS
                count, start = self._streaks.update(key, hit, first, batches)
                if self._confirmed(count, start, stats.step):
                    self._add_saturation(new, mode, ls, told, count, start, raw_first)
                elif hit and key not in self._reported:
                    # Saturating late in a run, recordings far apart: dense
                    # recordings tell soon (`suspected`).
                    self.suspected = True

    def _thrown_off(self, ls, stats: StepStats, limit: float) -> bool:
        """Whether a fitted model's layer `ls`, saturated over `limit`, got
        there suddenly (at most `limit - _SUDDEN` at its last recording)
        and the losses recorded since (median) are `_THROWN` times the
        recent loss before and `_THROWN_RISE` of the early loss over it:
        the model was thrown off what it learned by the layer's saturation,
        not fitted with it (saturation that grows as the weights do comes
        gradually, the loss falling). Once so, for as long as the layer
        stays saturated (the median of noisy batches' losses hovers)."""
        last = self._last_saturation.get(ls.layer)
        self._last_saturation[ls.layer] = ls.saturation
        if ls.saturation < limit:
            self._thrown_at.pop(ls.layer, None)
            return False
        if ls.layer not in self._thrown_at:
            level = self._norms.recent_loss()
            if last is None or last > limit - _SUDDEN or not _finite(level):
                return False
            self._thrown_at[ls.layer] = SuddenSaturation(level)
        sudden = self._thrown_at[ls.layer]
        if _finite(stats.loss):
            sudden.losses.append(stats.loss)
        early = _median(self._early_losses)
        if sudden.thrown or not sudden.losses or not _finite(early):
            return sudden.thrown
        now = float(np.median(sudden.losses))
        rise = now - sudden.level
        sudden.thrown = now >= _THROWN * sudden.level and rise >= _THROWN_RISE * early
        return sudden.thrown

    def input_gates(
        self, step: int, scale: float | None, fractions: dict[str, float]
    ) -> list[F.Finding]:
        """Judges the recurrent cells that the model's inputs reach first
        (`fractions`: name -> `stats.input_gate_saturation` on the batch of
        the recording at `step`), fed inputs that are not standardized
        (`scale`, `_callback_support.input_scale`, over
        `thresholds.input_scale`): from `saturation` of their gates'
        pre-activations in the flat tails (a hidden layer's limit, not a
        first Dense layer's `raw_input_saturation`: inputs that large set
        each gate to one side for every sample, so the gates left out of
        the tails pass little of the data either), `saturated_activations`
        naming the inputs (a failure); from `input_saturation`,
        `unstandardized_inputs` (a warning). Once, at the recording whose
        inputs are read first: the gates' outputs mix in the cell, where
        no recording measures them. An LSTM or a GRU forecaster fed series
        of about 500 (95-98% of its gates' pre-activations in the tails)
        learned little or nothing in 330 steps (held-out MSE 0.3-0.63
        against 0.02 standardized; predicting the mean 0.63), both
        backends, and nothing was told. Returns the new findings."""
        t, new = self.thresholds, []
        if not _finite(scale) or scale <= t.input_scale:
            return new
        for name, fraction in fractions.items():
            where = (
                f"{fraction:.0%} of the pre-activations that the inputs of step "
                f"{step}'s batch give the gates of recurrent layer '{name}' (its "
                "input alone, as at its first time step) are in their "
                "activations' flat tails, and the inputs are not standardized (a "
                f"feature's mean or spread is {scale:.3g}, against about 1)"
            )
            if fraction >= t.saturation:
                message = where + (
                    ": gates in their tails pass next to no gradient and let "
                    "next to nothing of the inputs' variation through, so the "
                    "layer hardly learns from the data. The large inputs put "
                    "them there."
                )
                self._add(
                    new,
                    F.SATURATED_ACTIVATIONS,
                    name,
                    step,
                    fraction,
                    message,
                    # No activation to swap: the gates are the cell's own.
                    FIXES[F.UNSTANDARDIZED_INPUTS],
                )
            elif fraction >= t.input_saturation:
                message = where + (
                    ": large inputs push the gates into their flat tails, where "
                    "the layer learns slowly."
                )
                self._add(
                    new,
                    F.UNSTANDARDIZED_INPUTS,
                    name,
                    step,
                    scale,
                    message,
                    severity=F.WARNING,
                )
        return new

    def gates_changed(
        self,
        step: int,
        scale: float | None,
        first: float | None,
        fractions: dict[str, float],
    ) -> list[F.Finding]:
        """Judges the recurrent cells of `input_gates` again at a later
        recording (`fractions` on its batch, of inputs at `scale`), when
        the inputs were standardized on the first recorded batch (`first`,
        within `thresholds.input_scale`) and are now far from it (over it,
        and `_SCALE_CHANGE` times `first`): gates with `saturation` of
        their pre-activations in the flat tails at two recordings in a row
        are `saturated_activations` naming the inputs (one batch far from
        the rest is no change of the data). The first such recording sets
        `gates_pending`, for the callback to record the next step. An LSTM
        classifier whose inputs came 1000x larger from step 50 (98% of its
        gates' pre-activations in the tails, the loss back near chance):
        nothing was told in 300 steps. Returns the new findings."""
        t, new = self.thresholds, []
        changed = (
            _finite(scale, first)
            and first <= t.input_scale < scale
            and scale >= _SCALE_CHANGE * first
        )
        for name, fraction in fractions.items():
            if (F.SATURATED_ACTIVATIONS, name) in self._reported:
                continue
            if not changed or fraction < t.saturation:
                self._gate_marks.pop(name, None)
                continue
            since = self._gate_marks.setdefault(name, (step, fraction))
            if since[0] == step:
                continue
            message = (
                f"{min(fraction, since[1]):.0%} or more of the pre-activations "
                f"that the inputs of steps {since[0]} and {step} give the gates "
                f"of recurrent layer '{name}' (its input alone, as at its first "
                "time step) are in their activations' flat tails: the inputs "
                f"are far from standardized (a feature's mean or spread is "
                f"{scale:.3g}, against {first:.3g} on the first recorded batch). "
                "Gates in their tails pass next to no gradient and let next to "
                "nothing of the inputs' variation through, so the layer no "
                "longer learns from the data: the data changed (a "
                "preprocessing step that broke, values in another unit)."
            )
            self._add(
                new,
                F.SATURATED_ACTIVATIONS,
                name,
                since[0],
                fraction,
                message,
                FIXES[F.UNSTANDARDIZED_INPUTS],
            )
            del self._gate_marks[name]
        return new

    @property
    def gates_pending(self) -> bool:
        """Whether a recording saw gates saturated by inputs that changed
        scale, not yet told (`gates_changed`)."""
        return bool(self._gate_marks)

    def _first_scale(self, layer: str, stats: StepStats) -> float | None:
        """The input scale of the inputs that reach `layer` first, or None
        for a layer they do not reach first: for a model of several inputs,
        the layer's own (`StepStats.input_scales`; an attention by those of
        its projections), else `StepStats.input_scale` for a first layer
        (`_first_layer`)."""
        if not stats.input_scales:
            return stats.input_scale if self._first_layer(layer) else None
        inside = f"{layer}/"
        found = [
            scale
            for name, scale in stats.input_scales.items()
            if name == layer or name.startswith(inside)
        ]
        return max(found, default=None)

    def _first_layer(self, layer: str) -> bool:
        """Whether `layer` is one the model's inputs reach first: an input
        layer, or the weights of an attention whose projections are."""
        if layer in self.input_layers:
            return True
        info = self._info.get(layer)
        inside = f"{layer}/"
        return bool(info and info.attention) and any(
            name.startswith(inside) for name in self.input_layers
        )

    def _attention_learned(self, ls, limit: float, loss: float | None) -> bool:
        """Whether `ls` is an attention's weights (`LayerInfo.attention`)
        whose one-hot share was under `limit` on a recording so far, or
        whose model's `loss` was under `_ATTENTION_LEARNED` of the loss of
        knowing nothing (`uninformed_loss`): one-hot attention is a failure
        from the start (scores too large for the softmax to pass a
        gradient, whatever training does), and something attention may
        learn (a head that looks at one position; a fitted model trained
        on from a checkpoint, probed: an exact one-hot shift at a loss of
        0.97 against ln 4, told as saturated)."""
        info = self._info.get(ls.layer)
        if info is None or not info.attention:
            return False
        uninformed = self.uninformed_loss
        learned = (
            uninformed is not None
            and _finite(loss)
            and loss < _ATTENTION_LEARNED * uninformed[0]
        )
        if ls.saturation < limit or learned:
            self._attention_free.add(ls.layer)
        return ls.layer in self._attention_free

    def _silent_outputs(self, new, stats: StepStats) -> None:
        """One output of several, with a sigmoid, tanh or softmax, whose
        gradient is negligible for the loss (`step_rules.negligible`: under a
        billionth of its square root) while another output's is not, for
        `patience` recordings over `patience_steps` steps: reported as that
        output's saturated activation.

        With one output the global norm tells it (`ZeroGradientRules`);
        with several, the others' gradients hide it. Such a gradient is no
        learning at all: a sigmoid output with bias -30 under MSE got 1e-13
        (its loss flat at 0.494) while the other output's layers got 0.2-0.4
        (probed). A sigmoid's gradient under MSE is `2 (p - y) p (1 - p)`
        times its input, and the loss's root `|p - y|`: their ratio is the
        saturation `p (1 - p)` alone, however wrong or right the outputs.
        A gradient exactly 0 is not judged by itself: an output whose loss
        weight is 0, or that no loss reads, gets one by design. It is, and
        one under `_STARVED_HEAD` of the flowing outputs' largest, for an
        output in its flat tails (`saturation` over the threshold) from
        the first recording, before any update could have fitted it: a
        sigmoid head with bias +30 under MSE (its gradient exactly 0 in
        float32, on JAX under binary cross-entropy too) or +16 (1.4e-7,
        its loss flat at 0.55 for 128 steps) beside a classifier and a
        regressor that learn (probed, both backends)."""
        heads = self._heads
        if len(heads) < 2 or self._exploded() or self._converged(stats):
            return
        loss = stats.loss
        outputs = [
            ls
            for ls in stats.layers
            if ls.layer in heads and _finite(ls.grad_norm, loss)
        ]
        flowing = [ls.grad_norm for ls in outputs if not negligible(ls.grad_norm, loss)]
        first, self._heads_judged = not self._heads_judged, True
        for ls in outputs:
            activation = heads[ls.layer]
            saturated = (
                _finite(ls.saturation)
                and ls.saturation >= self.thresholds.saturation
                and bool(flowing)
                and ls.grad_norm <= _STARVED_HEAD * max(flowing)
            )
            if first and saturated:
                self._saturated_heads.add(ls.layer)
            tiny = ls.grad_norm > 0 and negligible(ls.grad_norm, loss)
            hit = (
                bool(flowing)
                and getattr(_profile(activation), "family", None)
                in (SIGMOID, TANH, SOFTMAX)
                and (tiny or (saturated and ls.layer in self._saturated_heads))
            )
            key = (F.SATURATED_ACTIVATIONS, ls.layer)
            # Its own streak: the hidden layers' saturation rule has one of
            # the mode and layer.
            count, start = self._streaks.update(
                ("silent_output", ls.layer), hit, stats.step
            )
            if not self._confirmed(count, start, stats.step):
                continue
            if tiny:
                small = f"below a billionth of the square root of the loss ({loss:.3g})"
                tail = f"its {activation} is in the flat tail for every sample"
            else:
                small = f"under {_STARVED_HEAD:g} of the model's other outputs'"
                tail = (
                    f"{ls.saturation:.0%} of its outputs are in the flat tails of "
                    f"its {activation}, as from the first recording"
                )
            message = (
                f"The gradient norm of output layer '{ls.layer}' ({activation}) "
                f"was {ls.grad_norm:.2g} at step {stats.step}, {small}, for {count} "
                f"recordings in a row (steps {start}-{stats.step}), while the "
                f"model's other outputs got up to {max(flowing):.3g}: {tail}, so "
                "this output learns nothing, nor do the layers that serve only it."
            )
            self._add(new, *key, start, ls.grad_norm, message, _BIAS_FIX)

    @functools.cached_property
    def _heads(self) -> dict[str, str | None]:
        """The layer with weights of each of the model's outputs in the
        layer graph, with the output's activation: a layer with weights at
        distance 0, or the one such layer that all inputs of an output
        layer without weights (an `Activation`) come through (the layers
        are the rules' own, fixed: found once)."""
        heads: dict[str, str | None] = {}
        if not all(info.distance is not None for info in self.layers):
            return heads  # Not known from the graph (a subclassed model).
        for info in self.layers:
            if info.distance != 0:
                continue
            if info.has_trainable_weights:
                heads[info.name] = info.activation
            elif len(info.upstream) == 1 and info.upstream[0] in self._info:
                heads[info.upstream[0]] = info.activation
        return heads

    def _add_one_hot(self, new, mode, ls, stats, held: str, start: int) -> None:
        """`_add_saturation` of an attention's weights (`held`: how many
        recordings, in words)."""
        where = (
            f"{ls.saturation:.0%} of the queries of attention layer '{ls.layer}' "
            "put at least 99% of their weight on one key"
        )
        steps = f"{held} in a row, steps {start}-{stats.step}"
        if mode == F.SATURATED_ACTIVATIONS:
            message = (
                f"{where}, from the start of training ({steps}): its attention "
                "scores are so large that its softmax is one-hot, where it "
                "passes almost no gradient back, so the attention can hardly "
                "learn where to look."
            )
            value, severity, fix = ls.saturation, F.FAILURE, _ATTENTION_FIX
        else:
            message = (
                f"{where} ({steps}), and the inputs are not standardized (a "
                f"feature's mean or spread is {stats.input_scale:.3g}, against "
                "about 1): large inputs make its attention scores so large "
                "that its softmax is one-hot, where it learns slowly."
            )
            value, severity, fix = stats.input_scale, F.WARNING, None
        self._add(new, mode, ls.layer, start, value, message, fix, severity)

    def _add_saturation(
        self, new, mode, ls, stats, count, start, raw_first: bool = False
    ) -> None:
        """Reports `mode` (saturated activations, or the unstandardized
        inputs that push the first layer there) on `ls`: `raw_first` when
        it is a first layer fed with inputs that are not standardized, then
        named as the cause of its saturation too."""
        activation = getattr(self._info.get(ls.layer), "activation", None)
        # With several steps per execution a recording holds their batches.
        held = "recordings" if self.execution_steps <= 1 else "recorded batches"
        if self._info[ls.layer].attention:
            self._add_one_hot(new, mode, ls, stats, f"{count} {held}", start)
            return
        where = (
            f"{ls.saturation:.0%} of the outputs of hidden layer '{ls.layer}'"
            f" ({activation or 'saturating activation'}) are in the flat tails "
            f"({count} {held} in a row, steps {start}-{stats.step})"
        )
        fix = None
        if mode == F.SATURATED_ACTIVATIONS and raw_first:
            # A first layer: no layers before it; the inputs put it there.
            message = (
                f"{where}: its gradient is nearly zero there, so it has almost "
                "stopped learning. The inputs are not standardized (a feature's "
                f"mean or spread is {stats.input_scale:.3g}, against about 1): "
                "they push it into its tails."
            )
            fix = _RAW_SATURATION_FIX
            value, severity = ls.saturation, F.FAILURE
        elif mode == F.SATURATED_ACTIVATIONS:
            severity = F.FAILURE
            stopped = "it and the layers before it have almost stopped learning."
            if self._info[ls.layer].bypassed:
                # A residual branch: what comes before it learns around it.
                # Probed: a transformer block's Dense(64, tanh) with kernels
                # of stddev 5, 93% in the tails for the whole run, its model
                # as accurate as its twin's by step 100 (0.85), the
                # embedding learning through the skip connection.
                stopped = (
                    "it has almost stopped learning; its inputs also reach the "
                    "outputs around it (a skip connection or a parallel "
                    "branch), through which the layers before it learn on."
                )
                severity = F.WARNING
            message = f"{where}: its gradient is nearly zero there, so {stopped}"
            family = getattr(_profile(activation), "family", None)
            if family not in (SIGMOID, TANH, None):
                fix = _FLAT_TAIL_FIX  # Not an activation to swap for ReLU.
            # Saturation sets in over the steps after the update that threw
            # the weights (a tanh MLP under Adam at 0.2: 1.6x at step 0, the
            # next updates still a fifth to half of the weights, 77% in the
            # tails from step 5 or 6, by the order of the batches).
            after = self._oversized_before(start, 2 * self.thresholds.patience_steps)
            jumped = self._jump_before(start)
            if jumped:
                # Probed: SGD's rate 0.01 -> 50, a tanh MLP 91-100% in the
                # tails from 2 steps after the jump: its fix first.
                own = FIXES[mode] if fix is None else fix
                message += after + jumped
                fix = f"{_JUMP_FIX} If they stay in the tails: {_lower_first(own)}"
                severity = F.FAILURE
            elif after:
                message += after
                fix = _THROWN_SATURATION_FIX
                severity = F.FAILURE
            value = ls.saturation
        else:
            message = (
                f"{where}, and the inputs are not standardized (a feature's mean "
                f"or spread is {stats.input_scale:.3g}, against about 1): large "
                "inputs push the first layer into its flat tails, where it learns "
                "slowly."
            )
            value, severity = stats.input_scale, F.WARNING
        self._add(new, mode, ls.layer, start, value, message, fix, severity)
