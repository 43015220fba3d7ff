"""The output checks of `check_model`: activation, loss and labels per output.

See `keras_actloss.advisor.check` for the list of modes. Each rule takes a
`Head` (what is known about one output) and returns a `Finding` or None.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from keras_actloss.advisor import labels as _labels
from keras_actloss.diagnostics.rule_support import LINEAR_OUTPUT_PROBABILITY
from keras_actloss.findings import FAILURE, WARNING, Finding
from keras_actloss.profiles import SIGMOID, SOFTMAX, ActivationProfile, LossProfile

SOFTMAX_WITH_BINARY_CROSSENTROPY = "softmax_with_binary_crossentropy"
SIGMOID_WITH_CATEGORICAL_CROSSENTROPY = "sigmoid_with_categorical_crossentropy"
SOFTMAX_SINGLE_UNIT = "softmax_single_unit"
CATEGORICAL_LOSS_SINGLE_UNIT = "categorical_loss_single_unit"
# The rules name it as a cause (`rule_support`'s).
LINEAR_OUTPUT_PROBABILITY_LOSS = LINEAR_OUTPUT_PROBABILITY
PROBABILITY_OUTPUT_FROM_LOGITS = "probability_output_from_logits"
INTEGER_LABELS_CATEGORICAL_LOSS = "integer_labels_categorical_loss"
ONE_HOT_LABELS_SPARSE_LOSS = "one_hot_labels_sparse_loss"
CLASS_COUNT_MISMATCH = "class_count_mismatch"
LABELS_OUTSIDE_UNIT_INTERVAL = "labels_outside_unit_interval"
MULTI_HOT_LABELS_CATEGORICAL_LOSS = "multi_hot_labels_categorical_loss"
BOUNDED_OUTPUT_REGRESSION = "bounded_output_regression"
SIGMOID_WITH_KL_DIVERGENCE = "sigmoid_with_kl_divergence"
NONNEGATIVE_OUTPUT_HINGE = "nonnegative_output_hinge"
OUTPUT_OUTSIDE_LOSS_DOMAIN = "output_outside_loss_domain"
UNSCALED_REGRESSION_TARGETS = "unscaled_regression_targets"
OUTPUT_MODES = (
    SOFTMAX_WITH_BINARY_CROSSENTROPY,
    SIGMOID_WITH_CATEGORICAL_CROSSENTROPY,
    SOFTMAX_SINGLE_UNIT,
    CATEGORICAL_LOSS_SINGLE_UNIT,
    LINEAR_OUTPUT_PROBABILITY_LOSS,
    PROBABILITY_OUTPUT_FROM_LOGITS,
    INTEGER_LABELS_CATEGORICAL_LOSS,
    ONE_HOT_LABELS_SPARSE_LOSS,
    CLASS_COUNT_MISMATCH,
    LABELS_OUTSIDE_UNIT_INTERVAL,
    MULTI_HOT_LABELS_CATEGORICAL_LOSS,
    BOUNDED_OUTPUT_REGRESSION,
    SIGMOID_WITH_KL_DIVERGENCE,
    NONNEGATIVE_OUTPUT_HINGE,
    OUTPUT_OUTSIDE_LOSS_DOMAIN,
    UNSCALED_REGRESSION_TARGETS,
)

_CATEGORICAL = ("one_hot", "sparse")
# Label formats of the losses whose labels must lie in [0, 1].
_UNIT_INTERVAL = ("binary", "one_hot", "distribution")
# Regression targets a column's mean or spread of which is this or more
# (`unscaled_regression_targets`): a fresh linear output is about unit
# scale, so its weights must grow a hundredfold before it reaches them.
UNSCALED_TARGETS = 100.0
_BINARY_FIX = (
    "For two classes use Dense(1, activation='sigmoid') with "
    "BinaryCrossentropy, or Dense(2, activation='softmax') with "
    "SparseCategoricalCrossentropy."
)


@dataclasses.dataclass(frozen=True)
class Head:
    """What the output rules know about one output.

    Attributes:
        layer: Name of the output layer, or None when it cannot be seen.
        act: Profile of its activation, or None when unknown.
        units: Output units, or None when unknown.
        loss: Profile of its loss, or None (uncompiled or custom loss).
        labels: What its labels are, or None without labels.
        y: The labels as a float array, or None.
        logits_kept: Whether the backend's cross-entropy takes the logits
            from before a sigmoid or softmax output whatever `from_logits`
            says: TensorFlow's does when it gets the output tensor itself
            (a float32 output; a float16 one is cast first, and the logits
            are lost).
    """

    layer: str | None
    act: ActivationProfile | None
    units: int | None
    loss: LossProfile | None
    labels: _labels.LabelInfo | None
    y: np.ndarray | None
    logits_kept: bool = False

    @property
    def family(self) -> str | None:
        return None if self.act is None else self.act.family

    @property
    def format(self) -> str | None:
        return None if self.loss is None else self.loss.label_format


def finding(mode, head_or_layer, message, fix, value=None, severity=FAILURE):
    layer = getattr(head_or_layer, "layer", head_or_layer)
    name = layer if isinstance(layer, str) or layer is None else layer.name
    return Finding(mode, name, None, value, message, fix, severity)


def _softmax_with_bce(h: Head):
    if h.family == SOFTMAX and h.format == "binary" and (h.units or 0) > 1:
        return finding(
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


def _sigmoid_with_cce(h: Head):
    if h.family == SIGMOID and h.format in _CATEGORICAL and (h.units or 0) > 1:
        return finding(
            SIGMOID_WITH_CATEGORICAL_CROSSENTROPY,
            h,
            f"Sigmoid output with {h.loss.name}: categorical cross-entropy "
            "expects one distribution over the classes (softmax), but "
            "independent sigmoids do not sum to 1.",
            "Use a softmax output for one class per sample, or keep the "
            "sigmoid and use BinaryCrossentropy for multi-label targets.",
        )
    return None


def _softmax_single_unit(h: Head):
    if h.family == SOFTMAX and h.units == 1:
        return finding(
            SOFTMAX_SINGLE_UNIT,
            h,
            "Softmax over a single unit always outputs 1.0, so the model cannot learn.",
            _BINARY_FIX,
        )
    return None


def _categorical_single_unit(h: Head):
    if h.format in _CATEGORICAL and h.units == 1 and h.family != SOFTMAX:
        return finding(
            CATEGORICAL_LOSS_SINGLE_UNIT,
            h,
            f"{h.loss.name} on a single output unit: a distribution over one "
            "class is always 1.0, so the loss cannot guide training.",
            _BINARY_FIX,
        )
    return None


def _linear_probability_loss(h: Head):
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
    return finding(
        LINEAR_OUTPUT_PROBABILITY_LOSS,
        h,
        f"Output activation '{h.act.name}' does not produce probabilities, "
        f"but {h.loss.name}{logits} expects them: outputs outside [0, 1] are "
        "clipped and give no gradient.",
        fix,
    )


def _probability_from_logits(h: Head):
    probabilities = h.act is not None and h.act.produces_probabilities
    if not (probabilities and h.loss is not None and h.loss.from_logits is True):
        return None
    fix = (
        f"Use a linear output with from_logits=True, or keep {h.act.name} "
        "and set from_logits=False."
    )
    if h.logits_kept:
        # Measured: the same losses either way on TensorFlow; on JAX, or
        # with a float16 output, the probabilities are squashed again.
        return finding(
            PROBABILITY_OUTPUT_FROM_LOGITS,
            h,
            f"The output already applies {h.act.name}, but {h.loss.name} has "
            "from_logits=True. TensorFlow's cross-entropy takes the logits "
            f"from before the {h.act.name} here (Keras warns 'Was this "
            "intended?'), so the probabilities are not squashed twice; on JAX "
            "or PyTorch, or with a float16 output under mixed precision, the "
            "loss would squash them again and gradients would be weak.",
            fix,
            severity=WARNING,
        )
    return finding(
        PROBABILITY_OUTPUT_FROM_LOGITS,
        h,
        f"The output already applies {h.act.name}, but {h.loss.name} "
        "has from_logits=True and squashes it again: the loss reads "
        "probabilities as logits, so gradients are weak.",
        fix,
    )


def _integer_labels_cce(h: Head):
    sparse = h.labels is not None and h.labels.kind in (_labels.BINARY, _labels.INTEGER)
    if sparse and h.format == "one_hot" and h.units != 1:
        return finding(
            INTEGER_LABELS_CATEGORICAL_LOSS,
            h,
            f"Labels are integer class indices (shape {h.labels.shape}) but "
            "categorical cross-entropy expects one-hot rows.",
            "Use SparseCategoricalCrossentropy, or one-hot encode the labels "
            "with keras.utils.to_categorical.",
        )
    return None


def _one_hot_sparse(h: Head):
    one_hot = h.labels is not None and h.labels.kind == _labels.ONE_HOT
    if one_hot and h.format == "sparse":
        return finding(
            ONE_HOT_LABELS_SPARSE_LOSS,
            h,
            f"Labels are one-hot rows (shape {h.labels.shape}) but sparse "
            "categorical cross-entropy expects integer class indices.",
            "Use CategoricalCrossentropy, or pass y.argmax(axis=-1).",
        )
    return None


def _class_count_problem(h: Head) -> str | None:
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


def _class_count(h: Head):
    if h.labels is None or h.units is None or h.loss is None:
        return None
    problem = _class_count_problem(h)
    if problem is None:
        return None
    if h.format == "binary" and h.labels.kind == _labels.INTEGER:
        # Integer classes are a multi-class task, not a wrong width.
        fix = (
            f"For {h.labels.n_classes} exclusive classes use "
            f"SparseCategoricalCrossentropy with {h.labels.n_classes} softmax "
            "output units, or check the labels."
        )
    else:
        expected = (
            h.labels.n_classes if h.format in _CATEGORICAL else h.labels.n_columns
        )
        fix = (
            f"Give the output layer {expected} units (one per class or label "
            "column), or check the labels."
        )
    return finding(CLASS_COUNT_MISMATCH, h, problem, fix)


def _labels_outside_unit_interval(h: Head):
    info = h.labels
    if info is None or h.format not in _UNIT_INTERVAL:
        return None
    # Integer classes are reported by the class-count and format rules.
    if info.kind == _labels.INTEGER or (info.low >= 0 and info.high <= 1):
        return None
    if info.kind == _labels.SIGNED:
        return finding(
            LABELS_OUTSIDE_UNIT_INTERVAL,
            h,
            f"Labels are -1/+1 but {h.loss.name} expects labels in [0, 1]: "
            "a -1 label asks for an impossible probability, so the loss is "
            "wrong (Keras's losses train on it silently).",
            "Map the labels to 0/1 with (y + 1) / 2, or keep -1/+1 and use "
            "Hinge with a linear or tanh output.",
        )
    return finding(
        LABELS_OUTSIDE_UNIT_INTERVAL,
        h,
        f"Labels range over [{info.low:g}, {info.high:g}] but {h.loss.name} "
        "expects labels in [0, 1].",
        "Rescale the labels into [0, 1], or use a regression loss with a "
        "linear output.",
    )


def _multi_hot_categorical(h: Head):
    info = h.labels
    if info is None or info.kind != _labels.MULTI_HOT or h.format not in _CATEGORICAL:
        return None
    if not np.any(h.y.sum(axis=-1) > 1):  # Only rows with at most one 1.
        return None
    return finding(
        MULTI_HOT_LABELS_CATEGORICAL_LOSS,
        h,
        f"Labels are multi-hot rows (several 1s in a row, shape "
        f"{info.shape}) but {h.loss.name} treats the classes as mutually "
        "exclusive: a softmax cannot give several classes a high probability.",
        f"For several labels per sample use Dense({info.n_columns}, "
        "activation='sigmoid') with BinaryCrossentropy (what `advise` "
        "recommends for multi-hot labels).",
    )


def _bounded_regression(h: Head):
    if h.act is None or h.y is None or h.loss is None or h.loss.task != "regression":
        return None
    low, high = h.act.output_range
    outside = float(np.mean((h.y < low) | (h.y > high)))
    if outside == 0:
        return None
    return finding(
        BOUNDED_OUTPUT_REGRESSION,
        h,
        f"Output activation '{h.act.name}' has range [{low:g}, {high:g}], but "
        f"{outside:.1%} of the regression targets (in [{h.labels.low:g}, "
        f"{h.labels.high:g}]) lie outside it and can never be reached.",
        "Use a linear output for regression, or rescale the targets into the "
        "activation's range.",
        value=outside,
    )


def _sigmoid_kl(h: Head):
    """KL divergence on an output in [0, 1] that is not a softmax."""
    if h.act is None or h.format != "distribution" or h.family == SOFTMAX:
        return None
    low, high = h.act.output_range
    if not (low >= 0 and high <= 1):
        return None  # `_linear_probability_loss`'s.
    return finding(
        SIGMOID_WITH_KL_DIVERGENCE,
        h,
        f"Output activation '{h.act.name}' with {h.loss.name}: KL divergence "
        "(sum of y * log(y / p)) compares two distributions whose rows sum "
        f"to 1, but {h.act.name} outputs do not sum to 1, and the loss falls "
        "as every output rises toward 1 whatever the labels: the model learns "
        "to predict 1 for every class.",
        "Use a softmax output with KLDivergence; for independent yes/no "
        "targets per column use BinaryCrossentropy with the sigmoid.",
    )


def _nonnegative_hinge(h: Head):
    """A margin loss (hinge) on an output that is never negative."""
    if h.act is None or h.loss is None or h.loss.task != "margin":
        return None
    low, high = h.act.output_range
    if low < 0:
        return None
    return finding(
        NONNEGATIVE_OUTPUT_HINGE,
        h,
        f"Output activation '{h.act.name}' has range [{low:g}, {high:g}], but "
        f"{h.loss.name} reads the sign of the output against -1/+1 labels "
        "(0/1 labels are mapped to -1/+1): an output never below 0 puts every "
        "sample of the negative class on the wrong side, where its loss never "
        "falls below 1 (max(0, 1 + output)).",
        "Use a linear (or tanh) output with Hinge, or keep the "
        f"{h.act.name} and use BinaryCrossentropy with 0/1 labels.",
    )


def _outside_loss_domain(h: Head):
    """An output that reaches below the predictions the loss is defined on
    (Poisson's log of its rate)."""
    if h.act is None or h.loss is None:
        return None
    low, _ = h.loss.prediction_range
    if h.act.output_range[0] >= low:
        return None
    wanted = " or ".join(h.loss.output_activations) or "a positive activation"
    return finding(
        OUTPUT_OUTSIDE_LOSS_DOMAIN,
        h,
        f"Output activation '{h.act.name}' ranges over "
        f"[{h.act.output_range[0]:g}, {h.act.output_range[1]:g}], but "
        f"{h.loss.name} is defined only for predictions above {low:g} (it "
        f"takes their log): a prediction below {low:g} makes the loss NaN, "
        "from the first step for a fresh model.",
        f"Use {wanted} as the output activation: its predictions stay above {low:g}.",
    )


def _unscaled_targets(h: Head):
    """Regression targets far from unit scale under an output that can
    reach them (`UNSCALED_TARGETS`)."""
    if h.y is None or h.loss is None or h.format != "continuous":
        return None
    if h.act is not None and np.isfinite(h.act.output_range).all():
        return None  # A bounded output: `_bounded_regression`'s.
    scale = _column_scale(h.y)
    if scale is None or scale < UNSCALED_TARGETS:
        return None
    return finding(
        UNSCALED_REGRESSION_TARGETS,
        h,
        f"The regression targets are far from unit scale (a column's mean or "
        f"spread is {scale:.3g}, against about 1 when standardized), while a "
        "fresh output starts near unit scale: under mean squared error the "
        "loss and its gradients grow with the targets (a high learning rate "
        "explodes); under mean absolute error or Huber the loss's gradient "
        "stays bounded whatever the error (1 a sample, Huber's delta), so the "
        "predictions approach targets this far slowly, over hundreds to "
        "thousands of steps.",
        "Standardize the regression targets (subtract their mean and divide "
        "by their standard deviation, and undo it on the predictions).",
        value=scale,
        severity=WARNING,
    )


def _column_scale(y: np.ndarray) -> float | None:
    """The largest `max(|mean|, std)` over the columns (last axis) of
    finite targets; None for an empty or non-finite batch."""
    y = np.asarray(y, "float64")
    if not y.size or not np.isfinite(y).all():
        return None
    columns = y.reshape(len(y), -1) if y.ndim > 1 else y.reshape(-1, 1)
    return float(np.maximum(np.abs(columns.mean(0)), columns.std(0)).max())


OUTPUT_RULES = (
    _softmax_with_bce,
    _sigmoid_with_cce,
    _softmax_single_unit,
    _categorical_single_unit,
    _linear_probability_loss,
    _probability_from_logits,
    _integer_labels_cce,
    _one_hot_sparse,
    _class_count,
    _labels_outside_unit_interval,
    _multi_hot_categorical,
    _bounded_regression,
    _sigmoid_kl,
    _nonnegative_hinge,
    _outside_loss_domain,
    _unscaled_targets,
)
