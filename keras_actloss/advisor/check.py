"""`check_model`: the classic output-layer and loss mistakes, before training.

Each check has its own mode name (the `Finding.mode`). Per output, from the
output layer's activation object, the compiled loss and (when given) labels;
all of severity `"failure"` (definite mistakes):

- `softmax_with_binary_crossentropy`: softmax over 2+ units with binary
  cross-entropy.
- `sigmoid_with_categorical_crossentropy`: sigmoid over 2+ units with
  (sparse) categorical cross-entropy.
- `softmax_single_unit`: softmax over one unit (always 1.0).
- `categorical_loss_single_unit`: (sparse) categorical cross-entropy on one
  unit that is not a softmax (constant loss).
- `linear_output_probability_loss`: an output that is not in [0, 1]
  (linear, ReLU, tanh, ...) with a loss that expects probabilities
  (`from_logits=False`, or KL divergence).
- `probability_output_from_logits`: sigmoid/softmax output with
  `from_logits=True` (a warning on TensorFlow for a float32 output, whose
  cross-entropies take the logits from before the activation).
- `integer_labels_categorical_loss` (needs y): integer class labels with
  categorical cross-entropy on 2+ units.
- `one_hot_labels_sparse_loss` (needs y): one-hot labels with sparse
  categorical cross-entropy.
- `class_count_mismatch` (needs y): sparse labels above the last unit;
  one-hot/multi-hot/distribution/-1+1 label columns different from the
  units; integer classes (3+) with binary cross-entropy.
- `labels_outside_unit_interval` (needs y): labels outside [0, 1] (such as
  -1/+1) with a loss that expects labels in [0, 1] (binary or categorical
  cross-entropy, KL divergence); integer classes are left to the rules
  above.
- `multi_hot_labels_categorical_loss` (needs y): multi-hot rows (some row
  with several 1s) with (sparse) categorical cross-entropy, which treats
  the classes as mutually exclusive; `advise` recommends sigmoid with binary
  cross-entropy for such labels.
- `bounded_output_regression` (needs y): a regression loss with targets
  outside the output activation's range (sigmoid, tanh, ReLU, ...).
- `sigmoid_with_kl_divergence`: KL divergence on an output in [0, 1] that
  is not a softmax (sigmoid): its rows do not sum to 1, and the loss falls
  as every output rises toward 1.
- `nonnegative_output_hinge`: hinge on an output never below 0 (sigmoid,
  softmax, ReLU, ...): every sample of the negative class stays on the
  wrong side of 0.
- `output_outside_loss_domain`: an output that reaches below the
  predictions its loss is defined on (`LossProfile.prediction_range`):
  Poisson (a log of its rate) on a linear or tanh output, NaN from the
  first step.

Of severity `"warning"`:

- `unscaled_regression_targets` (needs y): regression targets (mean
  squared or absolute error, Huber) whose largest column mean or spread is
  `UNSCALED_TARGETS` (100) or more, under an output that can reach them.

Over the hidden layers (see `walk` for how layers are paired with their
activations), of severity `"warning"` (risks):

- `deep_saturating_stack`: sigmoid/tanh hidden layers in a row worth
  `SATURATING_DEPTH` (4) sigmoid layers, a tanh layer counting half: 4
  sigmoid, 8 tanh, or a mix.
- `long_saturating_rnn`: a `SimpleRNN` with sigmoid or tanh over at
  least `LONG_RNN_STEPS` (50) time steps: the gradient vanishes through
  time.
- `negative_bias_relu`: a ReLU layer where at least `DEAD_BIAS_FRACTION`
  (half) of the units have `bias < -DEAD_BIAS_Z * ||w_j||` (`DEAD_BIAS_Z`
  is 1).
- `closed_forget_gate`: an `LSTM` whose forget gate's biases average
  `CLOSED_FORGET_BIAS` (-3) or lower: its cell state is erased every step.
- `symmetric_units` (a failure): a trainable hidden layer whose units
  start identical (a zero or constant kernel initializer) and whose next
  layer with a kernel weighs them the same: they get identical gradients
  and stay copies of one another.
- `no_trainable_weights` (a failure): a model with weights, none of them
  trainable.
- `constant_normalization` (a failure): a `LayerNormalization` over axes
  of size 1, which outputs its offset whatever the input.
- `extreme_dropout`: a dropout layer with `rate` (the share dropped) of
  `EXTREME_DROPOUT_RATE` (0.9) or more.
- `hidden_softmax`: a hidden layer with weights whose softmax feeds only
  layers with weights, as their features (the functional graph's
  consumers; a softmax that weighs other tensors, as attention or gating
  do, is left alone).

Of the compiled optimizer (`optimizer_checks`), of severity `"warning"`:

- `heavy_weight_decay` (layer None): decoupled weight decay that takes
  `DECAY_SHARE` (1%) or more of every weight each step (the learning rate
  times `weight_decay`, at the optimizer's current step or where its
  learning-rate schedule peaks).

Two mistakes in one output give two findings (sigmoid with
`CategoricalCrossentropy(from_logits=True)` gives both
`sigmoid_with_categorical_crossentropy` and
`probability_output_from_logits`); the label checks only compare counts
when the label kind fits the loss.

Losses are read from `model.loss`: names, Keras and keras_actloss loss
objects and functions; a dict (by output name) or a list (one per output)
for multi-output models is checked per output, a list of another length is
skipped. Labels `y` for a multi-output model are used when they are a dict
by output name or a list with one entry per output, else skipped. Labels of
rank 3 or more (per-position labels such as segmentation masks), and labels
of the output's rank minus one for an output of rank 3 or more (`(batch, T)`
token tags for a `(batch, T, 1)` output), are read position by position:
rows of the last axis when it equals the output units, else one value per
position. Unknown
custom losses and activations are skipped, never guessed. For subclassed
models the output layer is the last one in `model.layers` (see `walk`); an
output made by a bare op (`keras.ops.softmax(x)`) has no layer to read.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from keras_actloss.advisor import labels as _labels
from keras_actloss.advisor import walk
from keras_actloss.advisor.layer_checks import (
    DEAD_BIAS_FRACTION,
    DEAD_BIAS_Z,
    LAYER_MODES,
    SATURATING_DEPTH,
    closed_forget_gates,
    constant_normalizations,
    dead_bias_fraction,
    deep_saturating_stacks,
    extreme_dropouts,
    hidden_softmaxes,
    long_saturating_rnns,
    negative_bias_relu,
    no_trainable_weights,
    symmetric_units,
)
from keras_actloss.advisor.optimizer_checks import OPTIMIZER_MODES, heavy_weight_decay
from keras_actloss.advisor.output_checks import OUTPUT_MODES, OUTPUT_RULES, Head
from keras_actloss.findings import Finding
from keras_actloss.profiles import LINEAR, LossProfile

CHECK_MODES = OUTPUT_MODES + LAYER_MODES + OPTIMIZER_MODES

__all__ = [
    "CHECK_MODES",
    "DEAD_BIAS_FRACTION",
    "DEAD_BIAS_Z",
    "SATURATING_DEPTH",
    "check_model",
    "dead_bias_fraction",
]


def per_output(value: Any, outputs: list, what: str) -> list:
    """Spreads a loss or labels (`what`: `"loss"` or `"labels"`) over the
    outputs of `walk.outputs` (see the module docstring): one per output,
    None where it gives none."""
    if value is None:
        return [None] * len(outputs)
    if isinstance(value, dict):
        return [value.get(out.name) for out in outputs]
    many = isinstance(value, (list, tuple))
    if what == "loss":
        if many:
            return list(value) if len(value) == len(outputs) else [None] * len(outputs)
        return [value] * len(outputs)
    if len(outputs) == 1:
        return [value]
    return list(value) if many and len(value) == len(outputs) else [None] * len(outputs)


def _per_position(target: Any, units: int | None, rank: int | None) -> Any:
    """Per-position labels (e.g. segmentation, token tagging) as rows or a column.

    For labels of rank 3+, or of the output's rank minus one when the output
    has rank 3+ (`(batch, T)` labels for a `(batch, T, units)` output):
    rows of the last axis when it matches the output units (one-hot maps,
    image targets), else one value per position (integer class maps, one
    0/1 tag per token).
    """
    if hasattr(target, "numpy") and not isinstance(target, np.ndarray):
        target = target.numpy()
    array = np.asarray(target) if isinstance(target, (list, tuple)) else target
    ndim = getattr(array, "ndim", 0)
    if rank is not None and rank >= 3 and ndim == rank - 1:
        return array.reshape(-1)
    if ndim < 3:
        return target
    if array.shape[-1] == units:
        return array.reshape(-1, units)
    return array.reshape(-1)


def _loss_profile(loss: Any) -> LossProfile | None:
    from keras_actloss import losses

    if loss is None:
        return None
    try:
        return losses.profile(loss)
    except (TypeError, ValueError):
        return None


def _heads(model: keras.Model, y: Any) -> list[Head]:
    outputs = walk.outputs(model)
    losses = per_output(getattr(model, "loss", None), outputs, "loss")
    labels = per_output(y, outputs, "labels")
    heads = []
    for out, loss, target in zip(outputs, losses, labels, strict=True):
        array = info = None
        if target is not None:
            array = _labels.as_label_array(_per_position(target, out.units, out.rank))
            info = _labels.describe_labels(array)
        act = None if out.layer is None else walk.activation_of(out.layer)
        if not out.from_graph and act is not None and act.family == LINEAR:
            act = None  # a subclassed `call` may apply an activation inline
        kept = _logits_kept(out.layer)
        heads.append(
            Head(out.layer, act, out.units, _loss_profile(loss), info, array, kept)
        )
    return heads


def _logits_kept(layer) -> bool:
    """`Head.logits_kept`: on TensorFlow, Keras's sigmoid and softmax keep
    their logits on the output tensor, and its cross-entropies use them,
    unless a float16 output is cast on its way to the loss."""
    if keras.backend.backend() != "tensorflow" or layer is None:
        return False
    return getattr(layer, "compute_dtype", None) == "float32"


def check_model(model: keras.Model, y: Any = None) -> list[Finding]:
    """Finds the classic output-activation and loss mistakes in a model.

    Reads the output layer's activation object (Keras built-ins and
    keras_actloss's, given as `Dense(activation=...)` or a trailing
    activation layer), the compiled loss and optimizer and, when given, the
    labels, and reports each mistake listed in this module's docstring as a
    `Finding` with its mode, layer, message and fix. A correct model gives
    an empty list. Run it after `compile` and before `fit`;
    `GradientDiagnostics` runs it when training begins.

    Examples:

    >>> model = keras.Sequential(
    ...     [keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    >>> model.compile(loss="binary_crossentropy")
    >>> [f.mode for f in keras_actloss.advisor.check_model(model)]
    ['softmax_with_binary_crossentropy']

    Args:
        model: A built Keras model (compiled, for the loss checks).
        y: Optional labels (a batch is enough): an array, or for a
            multi-output model a dict by output name or a list per output.
            Defaults to `None` (the label checks are skipped).

    Returns:
        A list of `Finding`s with `step=None`: severity `"failure"` for
        definite mistakes, `"warning"` for risks.

    Raises:
        ValueError: If `model` is not a built Keras model, or `y` holds
            unusable labels (NaN, ragged, strings, ...).
    """
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"Expected a Keras model. Received: model={model!r} of type "
            f"{type(model).__name__}"
        )
    if not model.built:
        raise ValueError(
            "Expected a built model: give it an `Input` or call `model.build` "
            f"(fit builds it too). Received: model={model.name!r}, not built"
        )
    found = output_findings(model, y)
    head_ids = {id(out.layer) for out in walk.outputs(model)}
    found += deep_saturating_stacks(model, head_ids)
    found += long_saturating_rnns(model)
    found += negative_bias_relu(model)
    found += closed_forget_gates(model)
    found += hidden_softmaxes(model, head_ids)
    found += symmetric_units(model)
    found += no_trainable_weights(model)
    found += constant_normalizations(model)
    found += extreme_dropouts(model)
    found += heavy_weight_decay(model)
    return found


def output_findings(model: keras.Model, y: Any = None) -> list[Finding]:
    """The output checks of `check_model` alone (activation, loss and
    labels per output), for a model `check_model` accepts: what the callback
    reads to know whether an output and its loss are mismatched, without
    the layer checks (which read the kernels)."""
    return [f for h in _heads(model, y) for rule in OUTPUT_RULES if (f := rule(h))]
