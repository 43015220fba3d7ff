"""The hidden-layer checks of `check_model`: saturating stacks and long
saturating recurrences, dead biases.

Why a depth of 4 sigmoid layers (or 8 tanh): backpropagation through a
sigmoid multiplies the gradient by its derivative, at most 0.25 (about 0.21
on average for pre-activations ~ N(0, 1)), so 4 layers shrink it by up to
0.25^4 = 1/256, over two orders of magnitude, before the weights are counted.
Tanh's derivative is at most 1 and about 0.6 on average for the same inputs
(0.42 at |x| = 1), so a tanh layer counts as half a sigmoid layer: 8 tanh
layers shrink the gradient by 0.6^8 = 1/60 to 0.42^8 = 1/1000. Shallower tanh
stacks with Glorot initialisation (designed for tanh) train well. Normalization layers
between them do not break a run (they do not raise sigmoid's 0.25 ceiling);
any layer other than a kernel layer, its activation, dropout, pooling or
normalization does (a residual `Add` gives the gradient a path around).

Why 50 time steps for a SimpleRNN with tanh or sigmoid: backpropagation
through time multiplies the gradient, at every step, by the recurrent kernel
and the activation's derivative. Measured on a 32-unit SimpleRNN with Keras's
initialisation (orthogonal recurrent kernel) over 100 steps of standard
normal inputs: the loss's gradient for the inputs fell by about 0.89 a step
(1e-5 from the last step to the first), so over 50 steps it shrinks by about
1/300, over two orders of magnitude as in a saturating stack, and a
dependency that long gets a vanishing share of the gradient. Gated cells
(LSTM, GRU) keep a path through their cell state. Shorter sequences, and a
SimpleRNN with ReLU (whose risk is the opposite), are not flagged.

Why the bias rule: for standardized, independent inputs, unit j's
pre-activation `x . w_j + b_j` has mean `b_j` and standard deviation
`||w_j||` (the L2 norm of its kernel column). With `b_j < -||w_j||` it is
positive for fewer than 16% of inputs (P(Z > 1) = 0.159): such a unit
starts nearly dead and a few bad updates kill it. Zero biases (Keras's
default) never trigger it. Layers followed by a normalization layer are
skipped (the normalization removes the bias), and so are activations whose
inactive region keeps a gradient (Leaky ReLU, ELU, PReLU). Inputs that are
far from standardized change the picture; the rule is a warning.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from keras_actloss import activations
from keras_actloss.advisor import walk
from keras_actloss.advisor.output_checks import finding
from keras_actloss.diagnostics.rule_support import (
    CONSTANT_NORM_FIX,
    CONSTANT_NORMALIZATION,
    EXTREME_DROPOUT,
    SYMMETRIC_FIX,
    SYMMETRIC_UNITS,
)
from keras_actloss.findings import FAILURE, WARNING, Finding
from keras_actloss.losses.validation import concrete_values
from keras_actloss.profiles import SIGMOID, SOFTMAX, TANH

DEEP_SATURATING_STACK = "deep_saturating_stack"
LONG_SATURATING_RNN = "long_saturating_rnn"
NEGATIVE_BIAS_RELU = "negative_bias_relu"
CLOSED_FORGET_GATE = "closed_forget_gate"
HIDDEN_SOFTMAX = "hidden_softmax"
NO_TRAINABLE_WEIGHTS = "no_trainable_weights"
# With the modes the rules name as causes (`SYMMETRIC_UNITS`,
# `CONSTANT_NORMALIZATION`, `EXTREME_DROPOUT`: `rule_support`'s).
LAYER_MODES = (
    DEEP_SATURATING_STACK,
    LONG_SATURATING_RNN,
    NEGATIVE_BIAS_RELU,
    CLOSED_FORGET_GATE,
    HIDDEN_SOFTMAX,
    SYMMETRIC_UNITS,
    NO_TRAINABLE_WEIGHTS,
    CONSTANT_NORMALIZATION,
    EXTREME_DROPOUT,
)
# An LSTM whose forget gate's biases average this or lower keeps at most
# sigmoid(-3) = 4.7% of its cell state a step (`closed_forget_gates`). An
# LSTM(16) with forget bias -6, its label in the first of 20 steps: the
# input gradient at step 0 5e-19 of that at step 19 (0.01-0.02 with Keras's
# 1), the loss at ln 2 for 480 steps, while its weights' gradients were only
# 2-4x smaller than with Keras's bias (no gradient rule sees it).
CLOSED_FORGET_BIAS = -3.0

# A dropout layer that drops this share of its inputs or more at every
# training step (`extreme_dropouts`): Keras's `rate` is the share dropped,
# not kept (probed: `Dropout(0.99)` left a model at chance, told 24-30
# steps late on JAX as a `stop_gradient`, and not at all on TensorFlow).
EXTREME_DROPOUT_RATE = 0.9
SATURATING_DEPTH = 4
# Depth each activation adds towards SATURATING_DEPTH (see the module doc).
DEPTH_WEIGHT = {SIGMOID: 1.0, TANH: 0.5}
LONG_RNN_STEPS = 50
DEAD_BIAS_Z = 1.0
DEAD_BIAS_FRACTION = 0.5


# What each saturating activation's derivative is at most (or on average),
# for `deep_saturating_stack`'s message: sigmoid's peak is s(0)(1 - s(0)) =
# 1/4; Keras's `hard_sigmoid` is relu6(x + 3) / 6 (slope 1/6) and its
# `sparse_sigmoid` (x + 1) / 2 between -1 and 1 (slope 1/2); tanh's is 1 at
# 0 and about 0.6 on average over unit-normal inputs; softsign's 1 / (1 + |x|)^2.
_DERIVATIVES = {
    "sigmoid": "at most 0.25 for sigmoid",
    "hard_sigmoid": "at most 1/6 for hard_sigmoid",
    "sparse_sigmoid": "at most 0.5 for sparse_sigmoid",
    "tanh": "about 0.6 on average for tanh",
    "hard_tanh": "1 within (-1, 1) and 0 beyond for hard_tanh",
    "softsign": "1 / (1 + |x|)^2 for softsign",
}


def deep_saturating_stacks(model: keras.Model, heads: set) -> list[Finding]:
    found, run, names = [], [], walk.paths(model)
    for unit in [*walk.units(model), None]:
        hidden = unit is not None and not (
            {id(unit.layer), id(unit.activation_layer)} & heads
        )
        if hidden and unit.activation.family in (SIGMOID, TANH):
            run.append(unit)
            continue
        depth = sum(DEPTH_WEIGHT[u.activation.family] for u in run)
        if depth >= SATURATING_DEPTH:
            kinds = sorted({u.activation.name for u in run})
            first, last = names[id(run[0].layer)], names[id(run[-1].layer)]
            bounds = [_DERIVATIVES[k] for k in kinds if k in _DERIVATIVES]
            bounds = f" ({', '.join(bounds)})" if bounds else ""
            found.append(
                finding(
                    DEEP_SATURATING_STACK,
                    first,
                    f"{len(run)} {'/'.join(kinds)} hidden layers in a row "
                    f"({first} to {last}): each "
                    f"multiplies the gradient by the activation's derivative"
                    f"{bounds}, so the first layers risk vanishing gradients.",
                    "Use ReLU (or Leaky ReLU) in the hidden layers; batch "
                    "normalization also helps.",
                    value=float(len(run)),
                    severity=WARNING,
                )
            )
        run = []
    return found


def long_saturating_rnns(model: keras.Model) -> list[Finding]:
    """A `SimpleRNN` (alone or in a `Bidirectional`) with a sigmoid or tanh
    activation over at least `LONG_RNN_STEPS` time steps (static)."""
    found, names = [], walk.paths(model)
    for layer in walk.leaves(model):
        rnn = getattr(layer, "forward_layer", layer)  # Bidirectional
        if not isinstance(rnn, keras.layers.SimpleRNN):
            continue
        profile = activations.profile(rnn.activation)
        steps = _time_steps(layer)
        if profile is None or profile.family not in (SIGMOID, TANH) or steps is None:
            continue
        if steps < LONG_RNN_STEPS:
            continue
        found.append(
            finding(
                LONG_SATURATING_RNN,
                names[id(layer)],
                f"This SimpleRNN ({profile.name}) runs {steps} time steps: "
                "backpropagation through time multiplies the gradient by the "
                "recurrent kernel and the activation's derivative at every "
                "step, so the gradient that reaches the first steps vanishes "
                "and dependencies across dozens of steps are hardly learned.",
                "Use an LSTM or a GRU (their gates keep a path for the "
                "gradient through time), or shorter sequences.",
                value=float(steps),
                severity=WARNING,
            )
        )
    return found


def unbounded_recurrences(model: keras.Model) -> dict[int, int]:
    """`{id(cell): time steps}` of each `SimpleRNN` (alone or in a
    `Bidirectional`) whose activation is not bounded (not of the sigmoid
    or tanh family: ReLU, linear), over a static number of time steps: its
    recurrent kernel multiplies the signal once a step, so a gain over 1
    compounds over them."""
    found = {}
    for layer, rnns in _recurrent_layers(model, keras.layers.SimpleRNN):
        steps = _time_steps(layer)
        for rnn in rnns:
            profile = activations.profile(rnn.cell.activation)
            unbounded = profile is None or profile.family not in (SIGMOID, TANH)
            if steps is not None and unbounded:
                found[id(rnn.cell)] = steps
    return found


def _recurrent_layers(model: keras.Model, kind: type) -> list[tuple]:
    """`(layer, rnns)` for each of the model's leaves that is an RNN layer
    of class `kind` (`rnns`: itself) or a `Bidirectional` of one (`rnns`:
    its two directions)."""
    found = []
    for layer in walk.leaves(model):
        forward = getattr(layer, "forward_layer", None)
        rnns = [layer] if forward is None else [forward, layer.backward_layer]
        rnns = [rnn for rnn in rnns if isinstance(rnn, kind)]
        if rnns:
            found.append((layer, rnns))
    return found


def _time_steps(layer) -> int | None:
    """The static number of time steps of `layer`'s input (its axis 1),
    from the functional graph or the shape it was built with."""
    try:
        shape = layer.input.shape
    except (AttributeError, ValueError):
        shape = walk.built_shape(layer)
    if not isinstance(shape, (tuple, list)) or len(shape) < 3:
        return None
    return shape[1] if isinstance(shape[1], int) else None


def dead_bias_fraction(kernel: np.ndarray, bias: np.ndarray) -> float | None:
    """Fraction of units with `bias < -DEAD_BIAS_Z * ||kernel column||`.

    Args:
        kernel: Kernel whose last axis is the units (Dense, Conv; others
            through `unit_kernel`).
        bias: Bias, shape `(units,)`.

    Returns:
        The fraction, or None when the shapes do not pair up.
    """
    if bias.ndim != 1 or kernel.shape[-1] != bias.shape[0]:
        return None
    scale = np.sqrt(np.sum(np.square(kernel.reshape(-1, bias.shape[0])), axis=0))
    return float(np.mean((bias < 0) & (bias < -DEAD_BIAS_Z * scale)))


_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
_TRANSPOSED = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)


def unit_kernel(layer: Any) -> np.ndarray | None:
    """The weights of each output unit of `layer` as the columns of a
    `(fan_in, units)` matrix, so that a unit's pre-activation spread is its
    column's norm (`dead_bias_fraction`); None without a kernel.

    A Dense or Conv kernel has its units last. A depthwise kernel
    `(*window, channels, multiplier)` has unit `c * multiplier + m` (the
    order of its bias and outputs) in its last two axes. A transposed
    convolution's kernel is `(*window, units, input channels)`. A separable
    convolution's unit is linear in its inputs through both kernels: unit
    f's weight for input channel c at a window position is
    `sum_m depthwise[..., c, m] * pointwise[c * multiplier + m, f]`.
    """
    if isinstance(layer, _SEPARABLE):
        depthwise = _numpy(layer.depthwise_kernel)
        *_, channels, multiplier = depthwise.shape
        pointwise = _numpy(layer.pointwise_kernel).reshape(channels, multiplier, -1)
        taps = depthwise.reshape(-1, channels, multiplier)
        return np.einsum("kcm,cmf->kcf", taps, pointwise).reshape(
            -1, pointwise.shape[-1]
        )
    kernel = getattr(layer, "kernel", None)
    if kernel is None:
        return None
    kernel = _numpy(kernel)
    if isinstance(layer, _DEPTHWISE):
        return kernel.reshape(-1, kernel.shape[-2] * kernel.shape[-1])
    if isinstance(layer, _TRANSPOSED):
        kernel = np.swapaxes(kernel, -1, -2)
    return kernel.reshape(-1, kernel.shape[-1])


def _numpy(variable: Any) -> np.ndarray:
    # Through a backend tensor: under NumPy 2 (Keras 3.15) `np.asarray` of a
    # variable warns on every backend, and so does `Variable.numpy()` on JAX.
    return concrete_values(keras.ops.convert_to_tensor(variable))


def closed_forget_gates(model: keras.Model) -> list[Finding]:
    """An `LSTM` (alone or in a `Bidirectional`) whose forget gate's
    biases (the second quarter of its bias, Keras's gate order i, f, c, o)
    average `CLOSED_FORGET_BIAS` or lower: its cell state is erased at
    every step, so it remembers nothing past the last steps."""
    found, names = [], walk.paths(model)
    for layer, rnns in _recurrent_layers(model, keras.layers.LSTM):
        biases = [
            (rnn.cell.units, rnn.cell.bias)
            for rnn in rnns
            if getattr(rnn.cell, "bias", None) is not None
        ]
        if not biases:
            continue
        # A `Bidirectional`'s most closed direction.
        forget = min(float(np.mean(_numpy(b)[n : 2 * n])) for n, b in biases)
        if forget > CLOSED_FORGET_BIAS:
            continue
        kept = 1.0 / (1.0 + np.exp(-forget))
        found.append(
            finding(
                CLOSED_FORGET_GATE,
                names[id(layer)],
                f"The forget gate of this LSTM has biases of {forget:.3g} on "
                f"average: it keeps about {kept:.2%} of its cell state a "
                "step, so the layer remembers almost nothing past the last "
                "steps and the gradient through time vanishes.",
                "Initialise the forget gate's biases at 1 "
                "(`unit_forget_bias=True`, Keras's default) and the other "
                "gates' at 0.",
                value=forget,
                severity=WARNING,
            )
        )
    return found


def negative_bias_relu(model: keras.Model) -> list[Finding]:
    found, names = [], walk.paths(model)
    for unit in walk.units(model):
        if unit is None or unit.normalized or not unit.activation.can_die:
            continue
        bias = getattr(unit.layer, "bias", None)
        if bias is None:
            continue
        kernel = unit_kernel(unit.layer)
        if kernel is None:
            continue
        fraction = dead_bias_fraction(kernel, _numpy(bias))
        if fraction is not None and fraction >= DEAD_BIAS_FRACTION:
            found.append(
                finding(
                    NEGATIVE_BIAS_RELU,
                    names[id(unit.layer)],
                    f"{fraction:.0%} of the units of this ReLU layer have a "
                    "bias below minus the spread of their input (||w_j||, "
                    "for standardized inputs): they start active for fewer "
                    "than 16% of inputs and can die.",
                    "Initialise biases at zero (Keras's default), use Leaky "
                    "ReLU, or lower the learning rate.",
                    value=fraction,
                    severity=WARNING,
                )
            )
    return found


def hidden_softmaxes(model: keras.Model, heads: set) -> list[Finding]:
    """A hidden layer with weights whose softmax (its own, or an activation
    layer's after it) feeds only layers with weights, as features (through
    dropout, noise, reshaping, pooling or normalization). A softmax that
    weighs other tensors (attention, gating: a `Multiply`, a `Dot`, a
    `Permute` first) is left alone, and so is any softmax whose consumers
    the functional graph does not show (a subclassed model)."""
    found, names = [], walk.paths(model)
    for unit in walk.units(model):
        if unit is None or unit.activation.family != SOFTMAX:
            continue
        if {id(unit.layer), id(unit.activation_layer)} & heads:
            continue
        fed = _fed_layers(model, unit.activation_layer)
        if not fed or not all(walk.has_kernel(layer) for layer in fed):
            continue
        size = getattr(unit.layer, "units", None) or getattr(
            unit.layer, "filters", None
        )
        units = f" over {size} units" if isinstance(size, int) else ""
        found.append(
            finding(
                HIDDEN_SOFTMAX,
                names[id(unit.layer)],
                f"This hidden layer applies a softmax{units} and feeds "
                f"{', '.join(names[id(layer)] for layer in fed)} with it: a "
                "softmax makes its units compete (they sum to 1, each near "
                "1 / units), and its derivative p(1 - p) shrinks as the units "
                "grow, so the gradient reaching the layers before it vanishes.",
                "Use ReLU (or another non-saturating activation) in the hidden "
                "layers and keep the softmax for the output; a softmax that "
                "weighs other tensors (attention, gating) should multiply "
                "them rather than feed a layer as features.",
                value=float(size) if isinstance(size, int) else None,
                severity=WARNING,
            )
        )
    return found


def _fed_layers(model: keras.Model, layer) -> list | None:
    """The layers with weights or others that `layer`'s output reaches
    first, passing through the layers that keep its meaning (dropout,
    reshaping, pooling, normalization); None where the graph is not read."""
    fed, frontier, seen = [], [layer], 0
    while frontier and seen < 64:
        seen += 1
        found = walk.consumers(model, frontier.pop())
        if found is None:
            return None
        for consumer in found:
            passes = walk.TRANSPARENT + walk.POOLING + walk.NORMALIZATION
            if isinstance(consumer, passes):
                frontier.append(consumer)
            else:
                fed.append(consumer)
    return None if frontier else fed


def symmetric_units(model: keras.Model) -> list[Finding]:
    """A trainable hidden layer whose units start identical (every unit's
    kernel column and bias the same, as a zero or constant initializer
    makes them) and whose next layer with a kernel treats them alike (its
    kernel the same for each of them): every step gives them identical
    gradients, so they stay copies of one another. A depthwise layer's
    units see different channels, and are left out."""
    found, names = [], walk.paths(model)
    units = walk.units(model)
    for unit, after in zip(units, units[1:]):
        if unit is None or after is None or not unit.layer.trainable:
            continue
        if isinstance(unit.layer, _DEPTHWISE):
            continue
        kernel, following = unit_kernel(unit.layer), unit_kernel(after.layer)
        if kernel is None or following is None or kernel.shape[1] < 2:
            continue
        if not (_same(kernel, axis=1) and _same(following, axis=0)):
            continue
        bias = getattr(unit.layer, "bias", None)
        if bias is not None and not _same(_numpy(bias), axis=0):
            continue
        zero = not following.any()
        message = (
            f"The {kernel.shape[1]} units of this layer start identical (every "
            "unit's weights the same, as a zero or constant kernel initializer "
            f"makes them) and '{names[id(after.layer)]}' after it weighs each of "
            "them the same: every step gives them identical gradients, so they "
            "stay copies of one another and the layer works as a single unit."
        )
        if zero:
            message += (
                f" With the kernel of '{names[id(after.layer)]}' at zero, no "
                "gradient reaches this layer or the layers before it at all."
            )
        found.append(
            finding(
                SYMMETRIC_UNITS,
                names[id(unit.layer)],
                message,
                SYMMETRIC_FIX,
                value=float(kernel.shape[1]),
                severity=FAILURE,
            )
        )
    return found


def _same(values: np.ndarray, axis: int) -> bool:
    """Whether every slice of `values` along `axis` equals the first."""
    first = np.take(values, [0], axis=axis)
    return bool(np.all(values == first))


def no_trainable_weights(model: keras.Model) -> list[Finding]:
    """A model with weights, none of them trainable (`trainable = False` set
    on the model, or on every layer): `fit` changes nothing."""
    if not model.weights or model.trainable_weights:
        return []
    return [
        finding(
            NO_TRAINABLE_WEIGHTS,
            None,
            f"Model '{model.name}' has {len(model.weights)} weights and none "
            "is trainable (`trainable = False` on the model, or on every "
            "layer): training changes nothing and the loss stays where it is.",
            "Set `trainable = True` on the layers to train (for transfer "
            "learning, freeze the pretrained base only: `base.trainable = "
            "False`, with a new head on top), then compile again.",
            severity=FAILURE,
        )
    ]


def constant_normalizations(model: keras.Model) -> list[Finding]:
    """A `LayerNormalization` whose normalized axes all have size 1 (a
    sequence of one channel normalized over its channels): it subtracts
    each value's own mean, so it outputs its offset whatever the input."""
    found, names = [], walk.paths(model)
    for layer in walk.leaves(model):
        if not isinstance(layer, keras.layers.LayerNormalization):
            continue
        shape = walk.built_shape(layer)
        if shape is None:
            continue
        axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        sizes = [shape[a] for a in axes]
        if not sizes or any(size != 1 for size in sizes):
            continue
        found.append(
            finding(
                CONSTANT_NORMALIZATION,
                names[id(layer)],
                f"This LayerNormalization normalizes over axes {list(axes)} of its "
                f"inputs of shape {tuple(shape)}, a single value each time: it "
                "subtracts that value's own mean, so it outputs its offset "
                "(beta) whatever the input, the layers after it see a constant, "
                "and no gradient passes back through it.",
                CONSTANT_NORM_FIX,
                severity=FAILURE,
            )
        )
    return found


def extreme_dropouts(model: keras.Model) -> list[Finding]:
    """A dropout layer whose `rate`, the share of its inputs it drops at
    each training step, is `EXTREME_DROPOUT_RATE` or more."""
    found, names = [], walk.paths(model)
    for layer in walk.leaves(model):
        rate = getattr(layer, "rate", None)
        if not isinstance(layer, _DROPOUTS) or not isinstance(rate, (int, float)):
            continue
        if rate < EXTREME_DROPOUT_RATE:
            continue
        found.append(
            finding(
                EXTREME_DROPOUT,
                names[id(layer)],
                f"This dropout layer has rate {rate:g}: it drops {rate:.0%} of its "
                f"inputs at every training step (and scales the rest "
                f"{1 / (1 - rate):.3g}x; `rate` is the share dropped, not kept), "
                "so the layers after it see almost nothing of the signal and "
                "the layers before it learn from almost nothing.",
                "Use a rate of 0.1-0.5 (the share to drop).",
                value=float(rate),
                severity=WARNING,
            )
        )
    return found


_DROPOUTS = tuple(
    getattr(keras.layers, name)
    for name in ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D")
    if hasattr(keras.layers, name)
)
