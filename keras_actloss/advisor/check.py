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
  `from_logits=True`.
- `integer_labels_categorical_loss` (needs y): integer class labels with
  categorical cross-entropy on 2+ units.
- `one_hot_labels_sparse_loss` (needs y): one-hot labels with sparse
  categorical cross-entropy.
- `class_count_mismatch` (needs y): sparse labels above the last unit;
  one-hot/multi-hot/distribution/-1+1 label columns different from the
  units; integer classes (3+) with binary cross-entropy.
- `bounded_output_regression` (needs y): a regression loss with targets
  outside the output activation's range (sigmoid, tanh, ReLU, ...).

Over the hidden layers (see `walk` for how layers are paired with their
activations), of severity `"warning"` (risks):

- `deep_saturating_stack`: `SATURATING_DEPTH` (4) or more sigmoid/tanh
  hidden layers in a row.
- `negative_bias_relu`: a ReLU layer where at least `DEAD_BIAS_FRACTION`
  (half) of the units have `bias < -DEAD_BIAS_Z * ||w_j||` (`DEAD_BIAS_Z`
  is 1).

Two mistakes in one output give two findings (sigmoid with
`CategoricalCrossentropy(from_logits=True)` gives both
`sigmoid_with_categorical_crossentropy` and
`probability_output_from_logits`); the label checks only compare counts
when the label kind fits the loss.

Why 4: backpropagation through a sigmoid multiplies the gradient by its
derivative, at most 0.25, so 4 layers shrink it by up to 0.25^4 = 1/256
(over two orders of magnitude) before the weights are counted; tanh's
derivative is at most 1 but falls to 0.42 at |x| = 1. Normalization layers
between them do not break a run (they do not raise sigmoid's 0.25 ceiling);
any layer other than a kernel layer, its activation, dropout, pooling or
normalization does (a residual `Add` gives the gradient a path around).

Why the bias rule: for standardized, independent inputs, unit j's
pre-activation `x . w_j + b_j` has mean `b_j` and standard deviation
`||w_j||` (the L2 norm of its kernel column). With `b_j < -||w_j||` it is
positive for fewer than 16% of inputs (P(Z > 1) = 0.159): such a unit
starts nearly dead and a few bad updates kill it. Zero biases (Keras's
default) never trigger it. Layers followed by a normalization layer are
skipped (the normalization removes the bias), and so are activations whose
inactive region keeps a gradient (Leaky ReLU, ELU, PReLU). Inputs that are
far from standardized change the picture; the rule is a warning.

Losses are read from `model.loss`: names, Keras and keras_actloss loss
objects and functions; a dict (by output name) or a list (one per output)
for multi-output models is checked per output, a list of another length is
skipped. Labels `y` for a multi-output model are used when they are a dict
by output name or a list with one entry per output, else skipped. Unknown
custom losses and activations are skipped, never guessed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

from keras_actloss.advisor import labels as _labels
from keras_actloss.advisor import walk
from keras_actloss.findings import FAILURE, WARNING, Finding
from keras_actloss.profiles import (
    SIGMOID,
    SOFTMAX,
    TANH,
    ActivationProfile,
    LossProfile,
)

SOFTMAX_WITH_BINARY_CROSSENTROPY = "softmax_with_binary_crossentropy"
SIGMOID_WITH_CATEGORICAL_CROSSENTROPY = "sigmoid_with_categorical_crossentropy"
SOFTMAX_SINGLE_UNIT = "softmax_single_unit"
CATEGORICAL_LOSS_SINGLE_UNIT = "categorical_loss_single_unit"
LINEAR_OUTPUT_PROBABILITY_LOSS = "linear_output_probability_loss"
PROBABILITY_OUTPUT_FROM_LOGITS = "probability_output_from_logits"
INTEGER_LABELS_CATEGORICAL_LOSS = "integer_labels_categorical_loss"
ONE_HOT_LABELS_SPARSE_LOSS = "one_hot_labels_sparse_loss"
CLASS_COUNT_MISMATCH = "class_count_mismatch"
BOUNDED_OUTPUT_REGRESSION = "bounded_output_regression"
DEEP_SATURATING_STACK = "deep_saturating_stack"
NEGATIVE_BIAS_RELU = "negative_bias_relu"
CHECK_MODES = (
    SOFTMAX_WITH_BINARY_CROSSENTROPY,
    SIGMOID_WITH_CATEGORICAL_CROSSENTROPY,
    SOFTMAX_SINGLE_UNIT,
    CATEGORICAL_LOSS_SINGLE_UNIT,
    LINEAR_OUTPUT_PROBABILITY_LOSS,
    PROBABILITY_OUTPUT_FROM_LOGITS,
    INTEGER_LABELS_CATEGORICAL_LOSS,
    ONE_HOT_LABELS_SPARSE_LOSS,
    CLASS_COUNT_MISMATCH,
    BOUNDED_OUTPUT_REGRESSION,
    DEEP_SATURATING_STACK,
    NEGATIVE_BIAS_RELU,
)

SATURATING_DEPTH = 4
DEAD_BIAS_Z = 1.0
DEAD_BIAS_FRACTION = 0.5

_CATEGORICAL = ("one_hot", "sparse")
_BINARY_FIX = (
    "For two classes use Dense(1, activation='sigmoid') with "
    "BinaryCrossentropy, or Dense(2, activation='softmax') with "
    "SparseCategoricalCrossentropy."
)


@dataclasses.dataclass(frozen=True)
class _Head:
    """What the output rules see about one output."""

    layer: str | None
    act: ActivationProfile | None
    units: int | None
    loss: LossProfile | None
    labels: _labels.LabelInfo | None
    y: np.ndarray | None

    @property
    def family(self) -> str | None:
        return None if self.act is None else self.act.family

    @property
    def format(self) -> str | None:
        return None if self.loss is None else self.loss.label_format


def _finding(mode, head_or_layer, message, fix, value=None, severity=FAILURE):
    layer = getattr(head_or_layer, "layer", head_or_layer)
    name = layer if isinstance(layer, str) or layer is None else layer.name
    return Finding(mode, name, None, value, message, fix, severity)


def _softmax_with_bce(h: _Head):
    if h.family == SOFTMAX and h.format == "binary" and (h.units or 0) > 1:
        return _finding(
            SOFTMAX_WITH_BINARY_CROSSENTROPY,
            h,
            f"Softmax over {h.units} units with binary cross-entropy: softmax "
            "makes the units compete (they sum to 1) while binary "
            "cross-entropy scores each unit as its own yes/no question.",
            "For one class per sample use CategoricalCrossentropy (one-hot "
            "labels) or SparseCategoricalCrossentropy (integer labels); for "
            "several labels per sample use a sigmoid output.",
        )
    return None


def _sigmoid_with_cce(h: _Head):
    if h.family == SIGMOID and h.format in _CATEGORICAL and (h.units or 0) > 1:
        return _finding(
            SIGMOID_WITH_CATEGORICAL_CROSSENTROPY,
            h,
            f"Sigmoid output with {h.loss.name}: categorical cross-entropy "
            "expects one distribution over the classes (softmax), but "
            "independent sigmoids do not sum to 1.",
            "Use a softmax output for one class per sample, or keep the "
            "sigmoid and use BinaryCrossentropy for multi-label targets.",
        )
    return None


def _softmax_single_unit(h: _Head):
    if h.family == SOFTMAX and h.units == 1:
        return _finding(
            SOFTMAX_SINGLE_UNIT,
            h,
            "Softmax over a single unit always outputs 1.0, so the model cannot learn.",
            _BINARY_FIX,
        )
    return None


def _categorical_single_unit(h: _Head):
    if h.format in _CATEGORICAL and h.units == 1 and h.family != SOFTMAX:
        return _finding(
            CATEGORICAL_LOSS_SINGLE_UNIT,
            h,
            f"{h.loss.name} on a single output unit: a distribution over one "
            "class is always 1.0, so the loss cannot guide training.",
            _BINARY_FIX,
        )
    return None


def _linear_probability_loss(h: _Head):
    if h.act is None or h.loss is None or h.loss.expects != "probabilities":
        return None
    low, high = h.act.output_range
    if h.act.produces_probabilities or (low >= 0 and high <= 1):
        return None
    multiclass = h.format in ("one_hot", "sparse", "distribution")
    wanted = "softmax" if multiclass else "sigmoid"
    logits = "" if h.loss.from_logits is None else " (from_logits=False)"
    fix = f"Use a {wanted} output."
    if h.loss.from_logits is not None:
        fix = (
            "Pass from_logits=True to the loss (the most stable choice) or "
            f"use a {wanted} output."
        )
    return _finding(
        LINEAR_OUTPUT_PROBABILITY_LOSS,
        h,
        f"Output activation '{h.act.name}' does not produce probabilities, "
        f"but {h.loss.name}{logits} expects them: outputs outside [0, 1] are "
        "clipped and give no gradient.",
        fix,
    )


def _probability_from_logits(h: _Head):
    probabilities = h.act is not None and h.act.produces_probabilities
    if probabilities and h.loss is not None and h.loss.from_logits is True:
        return _finding(
            PROBABILITY_OUTPUT_FROM_LOGITS,
            h,
            f"The output already applies {h.act.name}, but {h.loss.name} "
            "has from_logits=True and squashes it again: the loss reads "
            "probabilities as logits, so gradients are weak.",
            f"Use a linear output with from_logits=True, or keep "
            f"{h.act.name} and set from_logits=False.",
        )
    return None


def _integer_labels_cce(h: _Head):
    sparse = h.labels is not None and h.labels.kind in (_labels.BINARY, _labels.INTEGER)
    if sparse and h.format == "one_hot" and h.units != 1:
        return _finding(
            INTEGER_LABELS_CATEGORICAL_LOSS,
            h,
            f"Labels are integer class indices (shape {h.labels.shape}) but "
            "categorical cross-entropy expects one-hot rows.",
            "Use SparseCategoricalCrossentropy, or one-hot encode the labels "
            "with keras.utils.to_categorical.",
        )
    return None


def _one_hot_sparse(h: _Head):
    one_hot = h.labels is not None and h.labels.kind == _labels.ONE_HOT
    if one_hot and h.format == "sparse":
        return _finding(
            ONE_HOT_LABELS_SPARSE_LOSS,
            h,
            f"Labels are one-hot rows (shape {h.labels.shape}) but sparse "
            "categorical cross-entropy expects integer class indices.",
            "Use CategoricalCrossentropy, or pass y.argmax(axis=-1).",
        )
    return None


def _class_count_problem(h: _Head) -> str | None:
    info, units, fmt = h.labels, h.units, h.format
    rows = (_labels.ONE_HOT, _labels.MULTI_HOT, _labels.DISTRIBUTION)
    if fmt == "sparse" and info.kind in (_labels.BINARY, _labels.INTEGER):
        if units > 1 and info.n_classes > units:
            return (
                f"Labels go up to class {info.high:g} ({info.n_classes} classes) "
                f"but the output has {units} units."
            )
    elif fmt == "one_hot" and info.kind in rows and 1 < units != info.n_columns:
        return f"Labels have {info.n_columns} columns; the output has {units} units."
    elif fmt == "binary" and info.kind == _labels.INTEGER:
        return (
            f"Labels hold {info.n_classes} classes but binary cross-entropy "
            "needs 0/1 labels."
        )
    elif fmt in ("binary", "distribution", "signed") and info.n_columns != units:
        return (
            f"Labels have {info.n_columns} column(s) but the output has {units} units."
        )
    return None


def _class_count(h: _Head):
    if h.labels is None or h.units is None or h.loss is None:
        return None
    problem = _class_count_problem(h)
    if problem is None:
        return None
    expected = h.labels.n_classes if h.format in _CATEGORICAL else h.labels.n_columns
    return _finding(
        CLASS_COUNT_MISMATCH,
        h,
        problem,
        f"Give the output layer {expected} units (one per class or label "
        "column), or check the labels.",
    )


def _bounded_regression(h: _Head):
    if h.act is None or h.y is None or h.loss is None or h.loss.task != "regression":
        return None
    low, high = h.act.output_range
    outside = float(np.mean((h.y < low) | (h.y > high)))
    if outside == 0:
        return None
    return _finding(
        BOUNDED_OUTPUT_REGRESSION,
        h,
        f"Output activation '{h.act.name}' has range [{low:g}, {high:g}], but "
        f"{outside:.1%} of the regression targets (in [{h.labels.low:g}, "
        f"{h.labels.high:g}]) lie outside it and can never be reached.",
        "Use a linear output for regression, or rescale the targets into the "
        "activation's range.",
        value=outside,
    )


_OUTPUT_RULES = (
    _softmax_with_bce,
    _sigmoid_with_cce,
    _softmax_single_unit,
    _categorical_single_unit,
    _linear_probability_loss,
    _probability_from_logits,
    _integer_labels_cce,
    _one_hot_sparse,
    _class_count,
    _bounded_regression,
)


def _deep_saturating_stacks(model: keras.Model, heads: set) -> list[Finding]:
    found, run = [], []
    for unit in [*walk.units(model), None]:
        hidden = unit is not None and not (
            {id(unit.layer), id(unit.activation_layer)} & heads
        )
        if hidden and unit.activation.family in (SIGMOID, TANH):
            run.append(unit)
            continue
        if len(run) >= SATURATING_DEPTH:
            names = sorted({u.activation.name for u in run})
            found.append(
                _finding(
                    DEEP_SATURATING_STACK,
                    run[0].layer,
                    f"{len(run)} {'/'.join(names)} hidden layers in a row "
                    f"({run[0].layer.name} to {run[-1].layer.name}): each "
                    "multiplies the gradient by the activation's derivative "
                    "(at most 0.25 for sigmoid), so the first layers risk "
                    "vanishing gradients.",
                    "Use ReLU (or Leaky ReLU) in the hidden layers; batch "
                    "normalization also helps.",
                    value=float(len(run)),
                    severity=WARNING,
                )
            )
        run = []
    return found


def dead_bias_fraction(kernel: np.ndarray, bias: np.ndarray) -> float | None:
    """Fraction of units with `bias < -DEAD_BIAS_Z * ||kernel column||`.

    Args:
        kernel: Kernel whose last axis is the units (Dense, Conv).
        bias: Bias, shape `(units,)`.

    Returns:
        The fraction, or None when the shapes do not pair up.
    """
    if bias.ndim != 1 or kernel.shape[-1] != bias.shape[0]:
        return None
    scale = np.sqrt(np.sum(np.square(kernel.reshape(-1, bias.shape[0])), axis=0))
    return float(np.mean((bias < 0) & (bias < -DEAD_BIAS_Z * scale)))


def _numpy(variable: Any) -> np.ndarray:
    # `Variable.numpy()`: `np.asarray(variable)` warns under NumPy 2 (Keras 3.15).
    return np.asarray(variable.numpy() if hasattr(variable, "numpy") else variable)


def _negative_bias_relu(model: keras.Model) -> list[Finding]:
    found = []
    for unit in walk.units(model):
        if unit is None or unit.normalized or not unit.activation.can_die:
            continue
        bias = getattr(unit.layer, "bias", None)
        if bias is None:
            continue
        fraction = dead_bias_fraction(_numpy(unit.layer.kernel), _numpy(bias))
        if fraction is not None and fraction >= DEAD_BIAS_FRACTION:
            found.append(
                _finding(
                    NEGATIVE_BIAS_RELU,
                    unit.layer,
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


def _per_output(value: Any, outputs: list, what: str) -> list:
    """Spreads a loss or labels over the outputs (see the module docstring)."""
    if value is None:
        return [None] * len(outputs)
    if isinstance(value, dict):
        return [value.get(out.name) for out in outputs]
    many = isinstance(value, (list, tuple)) and not np.isscalar(value)
    if what == "loss":
        if many:
            return list(value) if len(value) == len(outputs) else [None] * len(outputs)
        return [value] * len(outputs)
    if len(outputs) == 1:
        return [value]
    return list(value) if many and len(value) == len(outputs) else [None] * len(outputs)


def _loss_profile(loss: Any) -> LossProfile | None:
    from keras_actloss import losses

    if loss is None:
        return None
    try:
        return losses.profile(loss)
    except (TypeError, ValueError):
        return None


def _heads(model: keras.Model, y: Any) -> list[_Head]:
    outputs = walk.outputs(model)
    losses = _per_output(getattr(model, "loss", None), outputs, "loss")
    labels = _per_output(y, outputs, "labels")
    heads = []
    for out, loss, target in zip(outputs, losses, labels, strict=True):
        array = info = None
        if target is not None:
            array = _labels.as_label_array(target)
            info = _labels.describe_labels(array)
        act = None if out.layer is None else walk.activation_of(out.layer)
        heads.append(_Head(out.layer, act, out.units, _loss_profile(loss), info, array))
    return heads


def check_model(model: keras.Model, y: Any = None) -> list[Finding]:
    """Finds the classic output-activation and loss mistakes in a model.

    Reads the output layer's activation object (Keras built-ins and
    keras_actloss's, given as `Dense(activation=...)` or a trailing
    activation layer), the compiled loss and, when given, the labels, and
    reports each mistake in the module's table as a `Finding` with its mode,
    layer, message and fix. A correct model gives an empty list. Run it
    after `compile` and before `fit`; `GradientDiagnostics` runs it when
    training begins.

    Examples:

    >>> model = keras.Sequential(
    ...     [keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    >>> model.compile(loss="binary_crossentropy")
    >>> [f.mode for f in keras_actloss.check_model(model)]
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
    heads = _heads(model, y)
    found = [f for h in heads for rule in _OUTPUT_RULES if (f := rule(h))]
    head_ids = {id(out.layer) for out in walk.outputs(model)}
    found += _deep_saturating_stacks(model, head_ids)
    found += _negative_bias_relu(model)
    return found
