"""What kind of labels an array holds (pure NumPy).

`describe_labels(y)` reads a label array and says which of `LABEL_KINDS` it
is, with the facts the advisor and `check_model` need (columns, classes,
value range) and what had to be assumed when the labels fit more than one
reading. It never imports Keras.

Heavy outliers (`"continuous_outliers"`) are defined robustly, so that the
outliers themselves cannot hide by inflating the scale they are measured
against: per column, the robust scale is `1.4826 * MAD` (the median absolute
deviation, scaled to equal the standard deviation for Gaussian data); a value
is an outlier when its robust z-score `|y - median| / scale` exceeds
`OUTLIER_Z = 3.5` (the modified z-score cut-off of Iglewicz and Hoaglin,
1993). A Gaussian sample has about 0.05% of values beyond it, a Student-t with
3 degrees of freedom about 3%. Targets have heavy outliers when, in some
column, more than `OUTLIER_FRACTION = 1%` of values are outliers, judged only
with at least `MIN_SAMPLES_FOR_OUTLIERS = 20` values. When more than half of a
column's values are equal (MAD is 0), the scale falls back to
`1.2533 * mean |y - median|` (equal to the standard deviation for Gaussian
data); a constant column has no outliers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

BINARY = "binary"  # 0/1 in one column
INTEGER = "integer"  # class indices 0..K-1 (K > 2) in one column
ONE_HOT = "one_hot"  # 0/1 rows with exactly one 1
MULTI_HOT = "multi_hot"  # 0/1 rows, any number of 1s
DISTRIBUTION = "distribution"  # non-negative rows summing to 1, not one-hot
CONTINUOUS = "continuous"  # real-valued targets
CONTINUOUS_OUTLIERS = "continuous_outliers"  # real-valued, heavy outliers
SIGNED = "signed"  # -1/+1
LABEL_KINDS = (
    BINARY,
    INTEGER,
    ONE_HOT,
    MULTI_HOT,
    DISTRIBUTION,
    CONTINUOUS,
    CONTINUOUS_OUTLIERS,
    SIGNED,
)

OUTLIER_Z = 3.5
OUTLIER_FRACTION = 0.01
MIN_SAMPLES_FOR_OUTLIERS = 20
# Integer labels with more distinct classes than this are read as quantities.
MAX_CLASSES = 1000
# Rows of a distribution sum to 1 within this tolerance (float32 round-off).
SUM_TOLERANCE = 1e-3


@dataclasses.dataclass(frozen=True)
class LabelInfo:
    """What `describe_labels` found.

    Attributes:
        kind: One of `LABEL_KINDS`.
        shape: Shape of `y` as given.
        n_samples: Number of rows (samples).
        n_columns: Columns per sample (1 for a 1-D array or an `(N, 1)`
            column).
        n_classes: Classes for `binary` (2), `integer` (`max + 1`),
            `one_hot` and `multi_hot` (columns); None otherwise.
        low: Smallest label value.
        high: Largest label value.
        integer_valued: Whether every value is a whole number.
        outlier_fraction: Largest per-column fraction of robust outliers
            (see the module docstring); None when not judged.
        robust_scale: Median over columns of the robust scale; None when not
            computed.
        assumptions: What was assumed where the labels are ambiguous.
    """

    kind: str
    shape: tuple[int, ...]
    n_samples: int
    n_columns: int
    n_classes: int | None
    low: float
    high: float
    integer_valued: bool
    outlier_fraction: float | None = None
    robust_scale: float | None = None
    assumptions: tuple[str, ...] = ()


def _short(y: Any) -> str:
    text = repr(y)
    return text if len(text) <= 80 else text[:77] + "..."


def as_label_array(y: Any) -> np.ndarray:
    """Converts labels to a finite 1-D or 2-D float64 array, or raises.

    Args:
        y: Labels: a NumPy array, a list, a tensor or anything `np.asarray`
            accepts. Booleans are read as 0/1.

    Returns:
        A float64 array of shape `(N,)` or `(N, k)`.

    Raises:
        ValueError: For None, ragged lists, strings or other non-numeric
            values, scalars, arrays with more than 2 dimensions, empty arrays
            and NaN or infinite values.
    """
    if y is None:
        raise ValueError("Expected labels `y` as an array. Received: y=None")
    if hasattr(y, "numpy") and not isinstance(y, np.ndarray):
        y = y.numpy()
    try:
        array = np.asarray(y)
    except ValueError as error:
        raise ValueError(
            "Expected labels `y` with the same length in every row; ragged "
            f"labels cannot be used. Received: y={_short(y)}"
        ) from error
    if array.dtype.kind in "USO" or array.dtype.kind not in "biuf":
        _check_numeric(array, y)
    if array.ndim == 0:
        raise ValueError(
            "Expected labels `y` with one entry per sample, of shape (N,) or "
            f"(N, k). Received: y={_short(y)} (a scalar)"
        )
    if array.ndim > 2:
        raise ValueError(
            "Expected labels `y` of shape (N,) or (N, k). Received: y with "
            f"shape {array.shape}. For per-position labels (e.g. segmentation "
            "masks) pass `y.reshape(-1, y.shape[-1])` for one-hot labels or "
            "`y.reshape(-1)` for integer class maps."
        )
    if array.size == 0:
        raise ValueError(
            f"Expected at least one label in `y`. Received: y with shape {array.shape}"
        )
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(
            "Expected finite labels `y`; NaN and infinite values cannot be "
            f"learned from. Received: y with {bad} non-finite value(s) out of "
            f"{array.size}: {_short(y)}"
        )
    return array


def _check_numeric(array: np.ndarray, y: Any) -> None:
    if array.dtype.kind == "O":
        try:
            array.astype(np.float64)
            return
        except (TypeError, ValueError):
            pass
    if array.dtype.kind in "USO":
        raise ValueError(
            "Expected numeric labels `y`. Received: y with dtype "
            f"{array.dtype}: {_short(y)}. Encode string labels as integers "
            "first, e.g. with `keras.layers.StringLookup`."
        )
    raise ValueError(
        f"Expected real-valued labels `y`. Received: y with dtype {array.dtype}"
    )


def robust_outliers(column: np.ndarray) -> tuple[float, float]:
    """Returns `(outlier_fraction, robust_scale)` of one column.

    See the module docstring for the definition.
    """
    centre = np.median(column)
    deviation = np.abs(column - centre)
    scale = 1.4826 * np.median(deviation)
    if scale == 0:
        scale = 1.2533 * float(np.mean(deviation))
    if scale == 0:
        return 0.0, 0.0
    return float(np.mean(deviation > OUTLIER_Z * scale)), float(scale)


def describe_labels(y: Any) -> LabelInfo:
    """Says what kind of labels `y` holds.

    Examples:

    >>> from keras_actloss.advisor.labels import describe_labels
    >>> describe_labels(np.array([0, 2, 1, 2])).kind
    'integer'
    >>> describe_labels(np.array([[0.2, 0.8], [0.5, 0.5]])).kind
    'distribution'

    Args:
        y: Labels, shape `(N,)` or `(N, k)`; see `as_label_array`.

    Returns:
        A `LabelInfo`.

    Raises:
        ValueError: For labels that cannot be used (see `as_label_array`).
    """
    array = as_label_array(y)
    notes: list[str] = []
    shape = tuple(int(n) for n in array.shape)
    if array.ndim == 2 and array.shape[1] == 1:
        notes.append(
            f"y of shape {array.shape} read as one label per sample (a column)."
        )
        array = array[:, 0]
    info = (
        _describe_column(array, notes)
        if array.ndim == 1
        else _describe_rows(array, notes)
    )
    return dataclasses.replace(info, shape=shape)


def _facts(array: np.ndarray) -> dict:
    return {
        "shape": tuple(array.shape),
        "n_samples": int(array.shape[0]),
        "n_columns": 1 if array.ndim == 1 else int(array.shape[1]),
        "low": float(array.min()),
        "high": float(array.max()),
        "integer_valued": bool(np.all(array == np.round(array))),
    }


def _describe_column(v: np.ndarray, notes: list[str]) -> LabelInfo:
    facts = _facts(v)
    values = np.unique(v)
    if facts["integer_valued"] and set(values) <= {0.0, 1.0}:
        notes.append(
            "0/1 labels read as binary (one sigmoid unit with binary "
            "cross-entropy); they could also be two classes for a 2-unit "
            "softmax with sparse categorical cross-entropy, which is "
            "equivalent: pass task='multiclass' for that."
        )
        if values.size == 1:
            notes.append(f"Only one value ({values[0]:g}) appears in y.")
        return LabelInfo(BINARY, n_classes=2, assumptions=tuple(notes), **facts)
    if facts["integer_valued"] and set(values) <= {-1.0, 1.0}:
        notes.append(
            "-1/+1 labels read as a margin classifier (hinge); map them to "
            "0/1 for a sigmoid with binary cross-entropy instead."
        )
        return LabelInfo(SIGNED, n_classes=2, assumptions=tuple(notes), **facts)
    if facts["integer_valued"] and facts["low"] >= 0 and facts["high"] < MAX_CLASSES:
        return _integer_classes(v, values, facts, notes)
    if facts["integer_valued"]:
        notes.append(
            "Integer values that are negative or larger than "
            f"{MAX_CLASSES - 1} read as quantities (regression); class "
            "indices must be 0..K-1."
        )
    elif facts["low"] >= 0 and facts["high"] <= 1:
        notes.append(
            "Values in [0, 1] read as regression targets; if they are soft "
            "binary labels (probabilities), pass task='binary' for a sigmoid "
            "with binary cross-entropy."
        )
    return _continuous(v[:, None], facts, notes)


def _integer_classes(v, values, facts, notes) -> LabelInfo:
    n_classes = int(facts["high"]) + 1
    notes.append(
        f"Whole numbers 0..{n_classes - 1} read as class indices "
        f"({n_classes} classes); pass task='regression' if they are counts "
        "or quantities."
    )
    missing = n_classes - values.size
    if missing:
        notes.append(
            f"{missing} of the {n_classes} classes do not appear in y "
            "(classes are 0..max; if labels start at 1, subtract 1)."
        )
    return LabelInfo(INTEGER, n_classes=n_classes, assumptions=tuple(notes), **facts)


def _describe_rows(array: np.ndarray, notes: list[str]) -> LabelInfo:
    facts = _facts(array)
    k = facts["n_columns"]
    values = np.unique(array)
    sums = array.sum(axis=1)
    if facts["integer_valued"] and set(values) <= {0.0, 1.0}:
        if np.all(sums == 1):
            notes.append(
                "Every row has exactly one 1: read as one-hot classes that "
                "exclude each other; pass task='multilabel' if a sample can "
                "carry several labels."
            )
            return LabelInfo(ONE_HOT, n_classes=k, assumptions=tuple(notes), **facts)
        return LabelInfo(MULTI_HOT, n_classes=k, assumptions=tuple(notes), **facts)
    if facts["integer_valued"] and set(values) <= {-1.0, 1.0}:
        notes.append(f"-1/+1 labels in {k} columns read as {k} margin classifiers.")
        return LabelInfo(SIGNED, n_classes=None, assumptions=tuple(notes), **facts)
    if facts["low"] >= 0 and np.allclose(sums, 1.0, rtol=0, atol=SUM_TOLERANCE):
        return LabelInfo(
            DISTRIBUTION, n_classes=None, assumptions=tuple(notes), **facts
        )
    if facts["low"] >= 0 and facts["high"] <= 1:
        notes.append(
            "Values in [0, 1] whose rows do not sum to 1 read as regression "
            "targets; if they are soft multi-label targets, pass "
            "task='multilabel'."
        )
    return _continuous(array, facts, notes)


def _continuous(array: np.ndarray, facts: dict, notes: list[str]) -> LabelInfo:
    if array.shape[0] < MIN_SAMPLES_FOR_OUTLIERS:
        notes.append(
            f"Only {array.shape[0]} samples: too few to judge outliers "
            f"(at least {MIN_SAMPLES_FOR_OUTLIERS} needed)."
        )
        return LabelInfo(CONTINUOUS, n_classes=None, assumptions=tuple(notes), **facts)
    stats = [robust_outliers(array[:, j]) for j in range(array.shape[1])]
    fraction = max(s[0] for s in stats)
    scale = float(np.median([s[1] for s in stats]))
    kind = CONTINUOUS_OUTLIERS if fraction > OUTLIER_FRACTION else CONTINUOUS
    return LabelInfo(
        kind,
        n_classes=None,
        outlier_fraction=fraction,
        robust_scale=scale,
        assumptions=tuple(notes),
        **facts,
    )
