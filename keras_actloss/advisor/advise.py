"""`advise(y)`: which output layer, loss and metrics fit these labels.

The guide comes from the source notes: sigmoid with binary cross-entropy for
binary and multi-label targets; softmax with categorical cross-entropy for
one-hot classes; sparse categorical cross-entropy for integer classes; a
linear output with mean squared error for regression, Huber when the targets
have heavy outliers; KL divergence for targets that are distributions; hinge
for -1/+1 margin classifiers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

from keras_actloss import profiles
from keras_actloss.advisor import imbalance
from keras_actloss.advisor import labels as _labels

# Huber's tuning constant: delta = 1.345 robust standard deviations keeps 95%
# of the efficiency of least squares on Gaussian errors (Huber, 1981).
HUBER_TUNING = 1.345

WHY = {
    "binary": (
        "Binary classification: a sigmoid output is the probability of the "
        "positive class, and binary cross-entropy measures the distance "
        "between that probability and the 0/1 label."
    ),
    "multilabel": (
        "Multi-label: each column is its own yes/no question, so one sigmoid "
        "unit per label with binary cross-entropy; a softmax would make the "
        "labels compete."
    ),
    "one_hot": (
        "One class out of several, one-hot labels: softmax turns the outputs "
        "into a distribution over the classes and categorical cross-entropy "
        "compares it with the one-hot label."
    ),
    "sparse": (
        "One class out of several, integer labels: sparse categorical "
        "cross-entropy takes the class index directly (no one-hot copy of the "
        "labels in memory), with a softmax output over the classes."
    ),
    "regression": (
        "Continuous targets: a linear output can reach any value, and mean "
        "squared error fits the mean, penalising large errors most."
    ),
    "outliers": (
        "Continuous targets with heavy outliers: Huber loss is quadratic for "
        "small errors and linear for large ones, so a few outliers do not "
        "dominate training; a linear output can reach any value."
    ),
    "distribution": (
        "Each target row is a probability distribution: KL divergence "
        "measures how far the predicted distribution (a softmax output) is "
        "from it."
    ),
    "margin": (
        "-1/+1 labels: hinge loss trains a maximum-margin classifier (as in "
        "SVMs) on unbounded scores from a linear output."
    ),
}


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """The output layer, loss and metrics `advise` recommends.

    Attributes:
        task: One of `keras_actloss.profiles.TASKS`.
        label_kind: One of `keras_actloss.advisor.labels.LABEL_KINDS`.
        output_units: Units of the output layer.
        output_activation: Name of the output activation (`"sigmoid"`,
            `"softmax"`, `"linear"`).
        loss: A keras_actloss loss object to pass to `model.compile`.
        from_logits: The loss's `from_logits`, or None for losses without
            that argument.
        metrics: Keras metric names for `model.compile(metrics=...)`.
        why: Why this choice, from the guide.
        assumptions: What was assumed where the labels were ambiguous.
    """

    task: str
    label_kind: str
    output_units: int
    output_activation: str
    loss: Any
    from_logits: bool | None
    metrics: list
    why: str
    assumptions: list

    @property
    def loss_name(self) -> str:
        """Class name of the loss, e.g. `"BinaryCrossentropy"`."""
        return type(self.loss).__name__

    def output_layer(self, **kwargs) -> keras.layers.Dense:
        """Returns a `Dense` output layer with these units and activation."""
        return keras.layers.Dense(
            self.output_units, activation=self.output_activation, **kwargs
        )

    def to_dict(self) -> dict:
        """A JSON-serialisable dict; the loss as class name and config."""
        return {
            "task": self.task,
            "label_kind": self.label_kind,
            "output_units": self.output_units,
            "output_activation": self.output_activation,
            "loss": self.loss_name,
            "loss_config": _plain(self.loss.get_config()),
            "from_logits": self.from_logits,
            "metrics": [str(m) for m in self.metrics],
            "why": self.why,
            "assumptions": list(self.assumptions),
        }

    def __str__(self) -> str:
        config = self.loss.get_config()
        args = []
        if self.from_logits is not None:
            args.append(f"from_logits={self.from_logits}")
        if "delta" in config:
            args.append(f"delta={config['delta']:g}")
        if config.get("class_weights") is not None:
            args.append(f"class_weights={config['class_weights']}")
        lines = [
            f"Task:         {self.task} (labels: {self.label_kind})",
            f"Output layer: keras.layers.Dense({self.output_units}, "
            f'activation="{self.output_activation}")',
            f"Loss:         keras_actloss.losses.{self.loss_name}({', '.join(args)})",
            f"Metrics:      {list(self.metrics)}",
            f"Why:          {self.why}",
        ]
        lines += [f"Assumed:      {note}" for note in self.assumptions]
        return "\n".join(lines)


def _plain(value: Any) -> Any:
    """Config values as JSON types (NumPy scalars and arrays to Python)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


# Plan: (task, output activation, keras_actloss loss class, metrics); the key
# is also the key of its `WHY`.
_PLANS = {
    "binary": ("binary", "sigmoid", "BinaryCrossentropy", ["binary_accuracy"]),
    "multilabel": ("multilabel", "sigmoid", "BinaryCrossentropy", ["binary_accuracy"]),
    "sparse": (
        "multiclass",
        "softmax",
        "SparseCategoricalCrossentropy",
        ["sparse_categorical_accuracy"],
    ),
    "one_hot": (
        "multiclass",
        "softmax",
        "CategoricalCrossentropy",
        ["categorical_accuracy"],
    ),
    "distribution": ("distribution", "softmax", "KLDivergence", ["kl_divergence"]),
    "margin": ("margin", "linear", "Hinge", ["hinge"]),
    "regression": (
        "regression",
        "linear",
        "MeanSquaredError",
        ["mean_absolute_error", "root_mean_squared_error"],
    ),
    "outliers": ("regression", "linear", "Huber", ["mean_absolute_error"]),
}


def _plan(key, info, units=None, notes=(), **loss_kwargs) -> Recommendation:
    from keras_actloss import losses

    task, activation, loss_class, metrics = _PLANS[key]
    loss = getattr(losses, loss_class)(**loss_kwargs)
    return Recommendation(
        task=task,
        label_kind=info.kind,
        output_units=int(units or info.n_columns),
        output_activation=activation,
        loss=loss,
        from_logits=getattr(loss, "from_logits", None),
        metrics=list(metrics),
        why=WHY[key],
        assumptions=list(info.assumptions) + list(notes),
    )


def _regression(info, array, notes=()):
    notes = list(notes)
    fraction, scale = info.outlier_fraction, info.robust_scale
    if fraction is None and array.shape[0] >= _labels.MIN_SAMPLES_FOR_OUTLIERS:
        columns = array.reshape(array.shape[0], -1).T
        stats = [_labels.robust_outliers(c) for c in columns]
        fraction = max(s[0] for s in stats)
        scale = float(np.median([s[1] for s in stats]))
    if fraction is None or fraction <= _labels.OUTLIER_FRACTION:
        return _plan("regression", info, notes=notes)
    delta = float(f"{HUBER_TUNING * scale:.3g}") if scale else 1.0
    notes.append(
        f"{fraction:.1%} of targets lie beyond {_labels.OUTLIER_Z} robust "
        f"standard deviations (1.4826 * MAD = {scale:.3g}); Huber delta = "
        f"{HUBER_TUNING} * that scale = {delta:g}."
    )
    return _plan("outliers", info, notes=notes, delta=delta)


_BY_KIND = {
    _labels.BINARY: "binary",
    _labels.MULTI_HOT: "multilabel",
    _labels.INTEGER: "sparse",
    _labels.ONE_HOT: "one_hot",
    _labels.DISTRIBUTION: "distribution",
    _labels.SIGNED: "margin",
}


def _by_kind(info, array):
    if info.kind in _BY_KIND:
        return _plan(
            _BY_KIND[info.kind],
            info,
            info.n_classes if info.kind == _labels.INTEGER else None,
        )
    return _regression(info, array)


def _mismatch(task, info, expected):
    return ValueError(
        f"Labels `y` do not fit task={task!r}: expected {expected}. Received: "
        f"y with shape {info.shape} read as {info.kind!r} labels (values in "
        f"[{info.low:g}, {info.high:g}])."
    )


def _forced(task, info, array):
    # A reading of ambiguous labels that offered this task was answered.
    offer = f"task={task!r}"
    kept = tuple(note for note in info.assumptions if offer not in note)
    info = dataclasses.replace(info, assumptions=kept)
    kind, one_column = info.kind, info.n_columns == 1
    in_unit = info.low >= 0 and info.high <= 1
    if task == "regression":
        return _regression(info, array, ["Task forced to 'regression'."])
    if task == "binary" and one_column and in_unit:
        soft = kind != _labels.BINARY
        notes = ["Values in [0, 1] read as soft binary labels."] if soft else []
        return _plan("binary", info, notes=notes)
    if task == "multilabel" and in_unit and kind != _labels.INTEGER:
        key = "binary" if one_column else "multilabel"
        return _plan(key, info, notes=["Each column read as its own yes/no label."])
    if task == "multiclass" and kind in (_labels.BINARY, _labels.INTEGER):
        note = ["0/1 labels read as two classes."] if kind == _labels.BINARY else []
        return _plan("sparse", info, max(info.n_classes, 2), note)
    if task == "multiclass" and kind in (_labels.ONE_HOT, _labels.DISTRIBUTION):
        soft = kind == _labels.DISTRIBUTION
        return _plan("one_hot", info, notes=[_SOFT_LABELS] if soft else [])
    if task == "distribution" and kind in (_labels.DISTRIBUTION, _labels.ONE_HOT):
        return _plan("distribution", info)
    if task == "margin" and kind in (_labels.SIGNED, _labels.BINARY):
        binary = kind == _labels.BINARY
        return _plan("margin", info, notes=[_HINGE_01] if binary else [])
    raise _mismatch(task, info, _EXPECTED[task])


_SOFT_LABELS = (
    "Soft labels: categorical cross-entropy accepts them; it differs from KL "
    "divergence only by the targets' entropy, a constant."
)
_HINGE_01 = "Hinge reads 0/1 labels as -1/+1."
_EXPECTED = {
    "binary": "one column of 0/1 labels or probabilities",
    "multilabel": "0/1 labels (or probabilities), one column per label",
    "multiclass": "integer class indices or one-hot rows",
    "distribution": "non-negative rows that sum to 1",
    "margin": "-1/+1 (or 0/1) labels",
}


def advise(y: Any, task: str | None = None) -> Recommendation:
    """Recommends an output layer, loss and metrics for labels `y`.

    Reads the labels (binary 0/1, integer classes, one-hot, multi-hot, rows
    that are distributions, continuous, continuous with heavy outliers,
    -1/+1) and applies the guide from the source notes. Where the labels fit
    more than one reading (0/1 integers could be binary or two classes), the
    recommendation says what it assumed; pass `task=` to decide. Strongly
    imbalanced class labels (10:1 or more) get a class-weighted
    cross-entropy, and from 100:1 a focal loss; `why` says which and why
    (see `keras_actloss.advisor.imbalance`).

    Examples:

    >>> rec = keras_actloss.advisor.advise(np.array([0, 1, 1, 0]))
    >>> rec.task, rec.output_units, rec.output_activation, rec.loss_name
    ('binary', 1, 'sigmoid', 'BinaryCrossentropy')
    >>> keras_actloss.advisor.advise(np.array([0, 3, 1, 2])).loss_name
    'SparseCategoricalCrossentropy'
    >>> # 2 positives in 40: ratio 19:1, weights 40 / (2 * 38) and 40 / (2 * 2).
    >>> rec = keras_actloss.advisor.advise(np.array([1, 1] + [0] * 38))
    >>> rec.loss_name, rec.loss.class_weights
    ('BinaryCrossentropy', [0.526, 10.0])

    Args:
        y: Labels, shape `(N,)` or `(N, k)`: an array, list or tensor.
        task: Optional task to force, one of `"regression"`, `"binary"`,
            `"multiclass"`, `"multilabel"`, `"distribution"`, `"margin"`.
            Defaults to `None` (read from the labels).

    Returns:
        A `Recommendation`.

    Raises:
        ValueError: For labels that cannot be used (NaN or infinite values,
            empty, ragged, strings, more than 2 dimensions), an unknown
            `task`, or labels that do not fit the forced `task`.
    """
    if task is not None and task not in profiles.TASKS:
        raise ValueError(
            f"Argument `task` must be one of {profiles.TASKS} or None. "
            f"Received: task={task!r}"
        )
    array = _labels.as_label_array(y)
    info = _labels.describe_labels(array)
    rec = _by_kind(info, array) if task is None else _forced(task, info, array)
    return imbalance.adjust(rec, info, array)
