"""Health rule for a classifier whose outputs are extreme from the first step.

A freshly initialised classifier knows nothing: its cross-entropy is about
that of a prediction giving every class the same probability, ln(C) for C
classes (ln 2 per output under binary cross-entropy). Initial weights far
too large (or inputs of a far larger scale than the initialisation
assumes) blow the signal up through the layers instead, so the outputs are
extreme and mostly wrong from step 0, and the loss is many times that
level. Under an adaptive optimizer (Adam, RMSprop) the gradients are large
but steady and each step is as small as usual: no norm grows, no update
outgrows its weights, and the model barely moves off its start. Where the
loss takes probabilities and clips them (Keras's JAX cross-entropy), every
gradient is exactly 0 there instead.

A classifier whose one head (the layer with weights nearest the outputs)
takes its inputs from a normalization layer is not judged: no initial
weights before it can blow its inputs up, and a head too large on its own
(as `keras.applications.EfficientNetB0`'s, whose initialisation is scaled
by its few outputs: a loss 6-12x ln 2 over its first steps on two
classes, measured) is moved off its start by Adam in tens of steps.

`StartRules` (mixed into `HealthRules`) judges the first `baseline_steps`
steps against `HealthRules.uninformed_loss`, which the callback sets from
the model's loss and output.
"""

from __future__ import annotations

from keras_actloss import findings as F
from keras_actloss.diagnostics.chain_rules import CHAIN_KEY
from keras_actloss.diagnostics.records import LayerInfo
from keras_actloss.diagnostics.rule_support import (
    _INIT_FIX,
    _RESIDUAL_SUMS,
    _SCALE_FIX,
    FIXES,
    NORMALIZATIONS,
    RuleFamily,
    _finite,
    _median,
    recurrent,
)

# The first steps' loss, at least this many times the uninformed one at
# every one of them: outputs extreme from the start (a fresh classifier
# is at about 1x; Keras's clipped cross-entropy of a wrong answer is
# -log(1e-7) = 16.1, which is 10x ln(5)).
_EXTREME_START = 5.0
# The product of the kernels' scales over He's (`HealthRules.weight_gain`)
# from which initial weights can blow the signal up to such a loss: a
# classifier with kernels drawn at stddev 1 (8x He's in its 64-wide layers)
# 508; classifiers fitted to a loss of 1e-3 to 4e-5, whose outputs are
# confident from weights aligned with their features, 1.3-1.4; models as
# Keras initialises them (MLPs, a CNN, attention, an LSTM, a U-Net, a
# MobileNetV2) 1.0-1.12. A fitted classifier continued on a new task
# starts at 6-9x the uninformed loss.
_BLOWN_UP_GAIN = 10.0
# With kernels this far over He's scale (100x `_BLOWN_UP_GAIN`; no healthy
# model probed reaches 1.5) a start under `_EXTREME_START` is told from
# this many times the uninformed loss, the median of the first steps': a
# ReLU `SimpleRNN` whose recurrent kernel is orthogonal with gain 2 over 30
# time steps (3.3e4 in all) on one draw of its data started at 1.7-2.5x
# ln 2 (on another, 40x), its gradient norm 80-190, and stayed over ln 2
# for 128 steps under Adam (0.78; at gain 1, 0.32); on a third, its median
# 1.12x (steps 0-4 at 1.11-1.54x, the norm 74-121), 0.81 after 32 steps. A
# fresh classifier starts at about 1x, and no healthy one has such a gain.
_HUGE_GAIN = 1e3
_HIGH_START = 1.1
# Inputs this far under unit scale (the largest mean or spread of a
# feature) reach the first layers too small for their kernels to learn: a
# kernel's gradient is its inputs times the error (its bias's the error
# alone). Images already in [0, 1] rescaled by 1/255 once more (0.0019):
# the first convolutions' kernel gradients 250-400x under those of the
# same network without it, nothing learnt in 128 steps under SGD, and
# under Adam most of the first layer dead by step 12.
_TINY_INPUTS = 0.02
# A first step's loss `_EXTREME_START` times the uninformed one whose
# global norm then fell `Thresholds.exploding_growth` times within this many
# steps, while the loss of each of the last `_DAMPED_LOSSES` steps is still
# no lower than the uninformed one: the optimizer damped a signal the
# initial weights blew up, and the model knows no more than at the start
# (`StartRules._damped_start`). Probed (TensorFlow, Adam): a ReLU SimpleRNN
# whose recurrent kernel's gain 1.6 multiplies its signal over 60 time
# steps, the loss 28.4 (41x ln 2) and the norm 2030 at step 0, the norm
# 12.9 by step 7 with the loss 0.8-1.4, the model at chance after 128
# steps, was told nothing. A classifier that learns as its norm falls
# (a fitted model meeting a new task) is below the uninformed loss by
# then.
_DAMPED_STEPS = 64
_DAMPED_LOSSES = 3
# An output bias that saturates the output's activation from the start.
_BIAS_FIX = (
    "Initialise the output layer's bias at 0 (Keras's default), or, for "
    "imbalanced classes, at the log-odds of their frequencies (log(p / (1 - "
    "p)) for a class of frequency p under sigmoid); and train on logits: a "
    "linear output layer and the loss with `from_logits=True`, whose "
    "gradient does not vanish where the output saturates."
)
# The same for a tanh output (no probabilities, no `from_logits`).
_TANH_BIAS_FIX = (
    "Initialise the output layer's bias at 0 (Keras's default). A tanh output's "
    "gradient vanishes where it saturates: under a margin loss (hinge), a "
    "linear output layer gives the raw scores the loss expects."
)


def normalized_head(layers: list[LayerInfo]) -> bool:
    """Whether the monitored layer with weights nearest the outputs in the
    layer graph (the head) is the only one at its distance and the next
    nearest are normalization layers only, as in `keras.applications`'
    EfficientNet, MobileNetV2, ResNet and ConvNeXt classifiers (the last
    normalization, pooling, then the classifier). False where the graph is
    not known (a subclassed model)."""
    weighted = [info for info in layers if info.has_trainable_weights]
    if len(weighted) < 2 or any(info.distance is None for info in weighted):
        return False
    weighted.sort(key=lambda info: info.distance)
    head, nearest = weighted[0].distance, weighted[1].distance
    if nearest == head:
        return False
    after = [info for info in weighted[1:] if info.distance == nearest]
    return all(info.class_name in NORMALIZATIONS for info in after)


def bias_setting(layer: str, activation: str, bias: float) -> str:
    """Names the output bias of `HealthRules.output_bias` that sets the
    layer's activation (the words before "in the flat tail"): a softmax's
    by the spread between its classes' biases."""
    if activation == "softmax":
        return (
            f"the biases of the output layer '{layer}' ({abs(bias):.3g} apart "
            "between classes) set its softmax"
        )
    return f"the bias of the output layer '{layer}' ({bias:.3g}) sets its {activation}"


class StartRules(RuleFamily):
    """Outputs extreme from the first step, judged on every step's loss.

    Uses `uninformed_loss` (`(level, what)`, or None where unknown: a
    regression loss, several outputs), the first steps' losses and global
    norms, the input scale of the last recording (`_input_scale`) and
    whether a normalization feeds the head (`_normalized_head`). Sets
    `_extreme_loss` when it reports an explosion: every gradient zero at
    that loss or above is not reported again (`ZeroGradientRules`). Where
    the output layer's own bias saturates it (`output_bias`: a sigmoid
    output with bias -30, probed, was told "initial weights far too large"
    and to clip gradients), that is the cause: `saturated_activations` on
    the output layer. Where a chain of sigmoid/tanh layers amplifies the
    gradient (`ChainRules`) the explosion is held for it (`_start_held`):
    the chain names the same weights and the layers. It is told if the
    chain breaks first, or when the fit ends before the chain is confirmed
    (`HealthRules.end_fit`).
    """

    def _extreme_start(self, new, step: int, norm: float, loss) -> None:
        """Reports, at the last of the first `baseline_steps` steps, a loss
        `_EXTREME_START` times the uninformed one at each of them (their
        median `_HIGH_START` times with kernels `_HUGE_GAIN` over He's
        scale): as `unstandardized_inputs` (a warning) when the inputs are
        not standardized, else as `exploding_gradients` (initial weights far
        too large), or `saturated_activations` of the output layer whose
        bias saturates it (`output_bias`)."""
        uninformed = self.uninformed_loss
        n = self.thresholds.baseline_steps
        start = self._start_steps
        if uninformed is None or len(start) >= n or self._normalized_head:
            return
        if self._damped:
            return  # Told as damped already (`_damped_start`).
        start.append((step, norm, loss))
        if len(start) < n:
            return
        level, what = uninformed
        losses = [s[2] for s in start]
        bar = self._start_bar()
        extreme = bar >= self._extreme_level()
        if not all(_finite(v) for v in losses):
            return
        # Each step at `_EXTREME_START`; with a huge gain (the weights
        # themselves the evidence) their median at `_HIGH_START`: a batch's
        # loss is noisy (on a third draw, `_HIGH_START`'s RNN had 3.77,
        # 3.82, 1.65, 1.50, 1.03: 1.49x ln 2 at step 4).
        if (min(losses) if extreme else _median(losses)) < bar:
            return
        low, high = min(s[1] for s in start), max(s[1] for s in start)
        first = start[0][0]
        times = min(losses) / level
        head = (
            f"The loss of {n} steps from the start (steps {first}-{step}) was "
            f"{min(losses):.3g}-{max(losses):.3g}, at least {times:.3g}x that of a "
            f"prediction that knows nothing ({level:.3g}: {what})"
        )
        scale, layer = self._input_scale, None
        if scale is not None and scale > self.thresholds.input_scale:
            message = head + (
                f", and the inputs are not standardized (a feature's mean or "
                f"spread is {scale:.3g}, against about 1): large inputs make the "
                "outputs extreme and wrong from the start."
            )
            mode, fix, value, severity = (
                F.UNSTANDARDIZED_INPUTS,
                FIXES[F.UNSTANDARDIZED_INPUTS],
                scale,
                F.WARNING,
            )
        else:
            if high == 0:
                norms = (
                    "every gradient exactly 0 (a saturated output whose "
                    "probabilities the loss clips)"
                )
            else:
                norms = f"the global gradient norm at {low:.3g}-{high:.3g}"
            mode, fix, value, severity = (
                F.EXPLODING_GRADIENTS,
                _SCALE_FIX,
                _median(losses) / level,
                F.FAILURE,
            )
            if self.output_bias is not None:
                # Its own bias, not the signal, set the output in its tails.
                layer, activation, bias = self.output_bias
                message = head + (
                    f", with {norms}: {bias_setting(layer, activation, bias)} in "
                    "the flat tail for every sample from the start: its outputs "
                    "are extreme and wrong, and the model barely moves off them."
                )
                mode, fix = F.SATURATED_ACTIVATIONS, _BIAS_FIX
            elif not self._weights_blow_up():
                # Weights at about He's scale: a trained model meets new
                # data it is confidently wrong about, and learns it.
                return
            else:
                how = "extreme and " if extreme else ""
                message = head + (
                    f", with {norms}: the outputs are {how}wrong from "
                    "the start, the signal blown up through the layers by "
                    f"initial weights far too large{self._gain()}, and the "
                    "model barely moves off them."
                )
                # The fix for the weights this message blames: a classifier
                # has no regression targets to standardize (probed: a
                # softmax output's kernel of stddev 30 on standardized
                # inputs was told to standardize the targets).
                fix = _INIT_FIX
            # Zero gradients at such a loss later are its consequence (not
            # where it is not told: `ZeroGradientRules` tells them).
            self._extreme_loss = bar
            if fix is _INIT_FIX and self._streaks.count(CHAIN_KEY):
                # A chain of sigmoid/tanh layers that amplify the gradient
                # names the same weights and the layers (`ChainRules`,
                # judged on this step's recording): told in its place
                # unless the chain breaks first (`ChainRules._amplified`).
                self._start_held = (mode, layer, first, value, message, fix)
                return
        self._add(new, mode, layer, first, value, message, fix, severity=severity)

    def _start_bar(self) -> float:
        """The loss the first steps must reach for `_extreme_start`:
        `_extreme_level` each, or by their median `_HIGH_START` times the
        uninformed loss (over `uninformed_focus`) where the kernels' gain
        over He's scale (`weight_gain`) is `_HUGE_GAIN` or more."""
        gain = self.weight_gain
        if gain is None or gain[0] < _HUGE_GAIN:
            return self._extreme_level()
        return _HIGH_START * self.uninformed_loss[0] / self.uninformed_focus

    def _extreme_level(self) -> float:
        """The loss from which a start is extreme: `_EXTREME_START` times
        the uninformed one, over `uninformed_focus` for a focal loss (whose
        confidently wrong answers keep nearly all their cross-entropy while
        its uninformed level keeps `uninformed_focus` of it: the same
        outputs as under the cross-entropy)."""
        return _EXTREME_START * self.uninformed_loss[0] / self.uninformed_focus

    def _note_start(self, step: int, norm: float, loss) -> None:
        """Keeps, for `_damped_start`, the first finite step's `(step,
        norm, loss)` (`_first_step`), the lowest norm over 0 since with its
        step (`_lowest_norm`; every gradient 0 is `ZeroGradientRules`') and
        the last `_DAMPED_LOSSES` steps' losses (`_damped_losses`);
        `_damped` once told."""
        if self._first_step is None:
            self._first_step = (step, norm, loss)
            return
        if step - self._first_step[0] > _DAMPED_STEPS:
            return
        low = self._lowest_norm
        if norm > 0 and (low is None or norm < low[1]):
            self._lowest_norm = (step, norm)
        self._damped_losses.append(loss)

    def _damped_start(self, new, stats) -> None:
        """Reports, at a recording within `_DAMPED_STEPS` of the first step,
        a classifier whose first step's loss was `_EXTREME_START` times the
        uninformed one, whose global norm fell `exploding_growth` times
        under that step's since, and whose last `_DAMPED_LOSSES` steps'
        losses are still no lower than the uninformed one: exploding
        gradients from initial weights that blew the signal up, which the
        optimizer damped without the model learning (see the constants).
        Named after the layer with the largest gradient RMS at the
        recording when it is recurrent (its time steps multiply the
        signal). Not with inputs far from standardized, nor a normalized
        head (`_extreme_start`'s cases)."""
        first, lowest = self._first_step, self._lowest_norm
        uninformed = self.uninformed_loss
        if uninformed is None or first is None or lowest is None or self._damped:
            return
        if self._extreme_loss is not None:
            return  # Told from the first steps (`_extreme_start`).
        if self._normalized_head or stats.step - first[0] > _DAMPED_STEPS:
            return
        level, what = uninformed
        start, norm, loss = first
        losses = list(self._damped_losses)
        if not (_finite(norm, loss) and norm > 0 and loss >= self._extreme_level()):
            return
        if lowest[1] > norm / self.thresholds.exploding_growth:
            return
        if len(losses) < _DAMPED_LOSSES or not all(
            _finite(v) and v >= level for v in losses
        ):
            return
        scale = self._input_scale
        if scale is not None and scale > self.thresholds.input_scale:
            return
        loud = [ls for ls in stats.layers if _finite(ls.grad_rms)]
        layer, through = None, ""
        if loud:
            top = max(loud, key=lambda ls: ls.grad_rms).layer
            info = self._info.get(top)
            if info is not None and recurrent(info.class_name):
                layer = top
                through = f" in the recurrent layer '{top}', over its time steps"
        message = (
            f"The loss of step {start} was {loss:.3g}, {loss / level:.3g}x that of "
            f"a prediction that knows nothing ({level:.3g}: {what}), with the "
            f"global gradient norm at {norm:.3g}; by step {lowest[0]} the norm "
            f"fell {norm / lowest[1]:.3g}x to {lowest[1]:.3g}, yet the loss of "
            f"the last {len(losses)} steps ({min(losses):.3g}-{max(losses):.3g}) "
            "is no lower than knowing nothing: the initial weights blew the "
            f"signal up{through} (the gradients exploded), the optimizer damped "
            "them, and the model has learnt nothing since."
        )
        self._damped = True
        self._add(
            new,
            F.EXPLODING_GRADIENTS,
            layer,
            start,
            loss / level,
            message,
            _INIT_FIX,
        )

    def _tiny_inputs(self, new, stats) -> None:
        """Warns, at the first recording that reads the inputs, when they
        reach the first layers (through the model's leading `Rescaling` or
        `Normalization` layers, `input_preprocessing`) at `_TINY_INPUTS`
        of unit scale or under: `unstandardized_inputs`, naming those
        layers (a scaling done twice)."""
        scale = stats.input_scale
        if self._tiny_seen or scale is None:
            return
        self._tiny_seen = True
        if not 0 < scale <= _TINY_INPUTS:
            return
        through = self.input_preprocessing
        head = "The inputs reach the first layers"
        if through:
            head += f" through {through}"
        message = (
            f"{head} at a scale of {scale:.3g} (a feature's largest mean or "
            "spread, against about 1 when standardized): a kernel's gradient is "
            "its inputs times the error, so the first layers' kernels get "
            "gradients that small and barely learn."
        )
        fix = FIXES[F.UNSTANDARDIZED_INPUTS]
        if through:
            fix = (
                f"Check that the data is not scaled twice ({through} "
                "after a scaling already done on the data); " + fix[0].lower() + fix[1:]
            )
        self._add(
            new,
            F.UNSTANDARDIZED_INPUTS,
            None,
            stats.step,
            scale,
            message,
            fix,
            F.WARNING,
        )

    def _weights_blow_up(self) -> bool:
        """Whether the weights can have blown the signal up: their gain
        over He's scale (`weight_gain`) `_BLOWN_UP_GAIN` or more, or
        `_RESIDUAL_SUMS` residual sums with no normalization; True when the
        gain is not known."""
        gain = self.weight_gain
        return (
            gain is None
            or gain[0] >= _BLOWN_UP_GAIN
            or self.residual_sums >= _RESIDUAL_SUMS
        )

    def _gain(self) -> str:
        """The kernels' gain over He's scale, for the message ("" unknown)."""
        if self.weight_gain is None or self.weight_gain[0] < _BLOWN_UP_GAIN:
            return ""
        gain, layer = self.weight_gain
        if self._recurrent_gain():
            return (
                f" (their scale over He's, which keeps a ReLU layer's signal at "
                f"its inputs', multiplies to {gain:.3g} over the layers, the most "
                f"in the recurrent layer '{layer}', whose recurrent kernel "
                "multiplies the signal at each of its time steps)"
            )
        return (
            f" (their scale over He's, which keeps a ReLU layer's signal at "
            f"its inputs', multiplies to {gain:.3g} over the layers, the most "
            f"in layer '{layer}')"
        )

    def _recurrent_gain(self) -> bool:
        """Whether the layer whose kernels are the most over He's scale
        (`weight_gain`) is recurrent."""
        if self.weight_gain is None:
            return False
        info = self._info.get(self.weight_gain[1])
        return info is not None and recurrent(info.class_name)
