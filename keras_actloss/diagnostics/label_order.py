"""Batches that come in the data's order: a dataset not shuffled.

A classifier trained on data sorted (or grouped) by class sees one class
after another: each batch holds one class, the model fits it and forgets
the others, and the loss and accuracy of each batch are those of its
class. Shuffled batches draw their labels from the same distribution, so
the classes of the recorded batches are independent of which batch they
are in; `homogeneity_z` measures how far they are from it. A model fed
features sorted by one of them (or a time series in time order, or
regression targets sorted) sees batches that are narrow slices of the
data: within a batch a column spreads far less than over the batches
together (`narrow_share`), where shuffled batches spread about as much.
Pure functions and a `RuleFamily` mixed into `HealthRules`; the callback
gives each recording the classes of its batch's kept labels
(`StepStats.label_classes`) and its kept features and regression targets
(`StepStats.value_rows`).
"""

from __future__ import annotations

import collections
import math

import numpy as np

from keras_actloss import findings as F
from keras_actloss.diagnostics.records import StepStats

# The recent recordings judged together, those with at least `_ROWS`
# labels: at least `_RECORDINGS` of them, and of their classes at least
# two. Most of them (`_PURE_SHARE`) hold one class each, `_PURE` of their
# labels or more, and their classes depart from a shuffled stream's by
# `_SORTED_Z` standard deviations at least (`homogeneity_z`). A stream
# sorted by class gives 13 on 8 batches of 32 (6 of one class, 2 of
# another); shuffled batches of 32 from classes of 95% and 5%, mostly of
# one class too, about 0 (within 2 or so).
_ROWS = 8
_RECORDINGS = 4
_KEPT = 32
_PURE = 0.9
_PURE_SHARE = 0.75
_SORTED_Z = 6.0
# A column of the features or regression targets that spreads within the
# kept batches, on average, at most this share of its variance over them
# together (`narrow_share`): each batch a narrow slice of the data. Batches
# of n shuffled rows spread (n - 1) / n of it on average (0.97 for 32),
# give or take the noise of small samples; standardized inputs turning to
# a new task shifted by 3 spreads (a time-ordered stream of two tasks,
# each shuffled) at least 0.24 (1 / (1 + 3^2 / 4) with as many batches of
# each); a feature sorted over 32 batches 1 / 32^2 of it.
_NARROW = 0.1

_SHUFFLE_FIX = (
    "Shuffle the training data: `fit(x, y, shuffle=True)` for arrays (the "
    "default), or `dataset.shuffle(buffer_size)` before `.batch()` for a "
    "`tf.data.Dataset`, with a buffer larger than the longest run of one "
    "label or stretch of values (the whole dataset when it is sorted)."
)


def homogeneity_z(table) -> float | None:
    """How far the classes of a set of batches are from independent of the
    batch, in standard deviations: Pearson's chi-square statistic of the
    table of label counts (a row per batch, a column per class; classes
    never seen left out) turned into a standard normal deviate by the
    Wilson-Hilferty cube-root approximation. About 0 (within 2 or so) for
    batches drawn from one shuffled stream, large when each batch holds
    its own classes. None for fewer than two batches or two classes.

    Examples:

    >>> z = homogeneity_z([[32, 0], [0, 32], [32, 0], [0, 32]])
    >>> round(z, 2)
    9.44
    >>> homogeneity_z([[16, 16]]) is None
    True
    """
    counts = np.asarray(table, dtype=float)
    if counts.ndim != 2:
        return None
    counts = counts[:, counts.sum(axis=0) > 0]
    counts = counts[counts.sum(axis=1) > 0]
    rows, classes = counts.shape
    if rows < 2 or classes < 2:
        return None
    expected = np.outer(counts.sum(axis=1), counts.sum(axis=0)) / counts.sum()
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    df = (rows - 1) * (classes - 1)
    shrink = 2.0 / (9.0 * df)
    return ((chi2 / df) ** (1.0 / 3.0) - (1.0 - shrink)) / math.sqrt(shrink)


def narrow_share(batches) -> tuple[float, int] | None:
    """`(share, column)`: the smallest, over the columns of `batches` (2-D
    arrays of the same columns, a batch's rows each), of the mean of the
    batches' own variances over the variance of all their rows together;
    columns whose rows are all alike are left out. None for fewer than two
    batches or no column left.

    Examples:

    >>> first, second = [[0.0, 1.0], [1.0, 3.0]], [[2.0, 1.0], [3.0, 3.0]]
    >>> narrow_share([first, second])  # Column 0: 0.25 within, 1.25 over.
    (0.2, 0)
    """
    arrays = [np.asarray(b, dtype=float) for b in batches]
    if len(arrays) < 2:
        return None
    pooled = np.concatenate(arrays).var(axis=0)
    within = np.mean([a.var(axis=0) for a in arrays], axis=0)
    scale = np.concatenate(arrays).mean(axis=0) ** 2 + 1.0
    columns = np.flatnonzero(pooled > 1e-12 * scale)
    if not len(columns):
        return None
    shares = within[columns] / pooled[columns]
    best = int(np.argmin(shares))
    return float(shares[best]), int(columns[best])


class ValueOrder:
    """The features and regression targets of the recent recorded batches
    (`add`) and whether each batch is a narrow slice of them (`ordered`)."""

    def __init__(self, kept: int = _KEPT):
        self._recent: collections.deque = collections.deque(maxlen=kept)

    def add(self, step: int, rows) -> None:
        """Adds a recorded batch's rows (2-D: a row a sample, a column a
        feature or target) at `step`; batches of fewer than `_ROWS` rows or
        of other columns than the last are not kept (a new start)."""
        rows = np.asarray(rows, dtype=float)
        if rows.ndim != 2 or len(rows) < _ROWS or not np.isfinite(rows).all():
            return
        if self._recent and self._recent[-1][1].shape[1] != rows.shape[1]:
            self._recent.clear()
        self._recent.append((step, rows))

    def ordered(self) -> tuple[int, int, float, int] | None:
        """`(first step, batches, share, column)` of the kept recordings
        when each batch is a narrow slice of them: at least `_RECORDINGS`
        batches, a column's `narrow_share` at most `_NARROW`; else None."""
        recent = list(self._recent)
        if len(recent) < _RECORDINGS:
            return None
        found = narrow_share([rows for _, rows in recent])
        if found is None or found[0] > _NARROW:
            return None
        return recent[0][0], len(recent), *found


class LabelOrder:
    """The label counts of the recent recorded batches (`add`) and whether
    they come in label order (`ordered`)."""

    def __init__(self, kept: int = _KEPT):
        self._recent: collections.deque = collections.deque(maxlen=kept)

    def add(self, step: int, classes) -> None:
        """Adds the classes of a recorded batch's labels (one integer per
        labelled row) at `step`; batches of fewer than `_ROWS` rows are not
        kept (a batch of 1 holds one class whatever the order)."""
        classes = np.asarray(classes).reshape(-1)
        if len(classes) >= _ROWS:
            found, counts = np.unique(classes.astype(np.int64), return_counts=True)
            self._recent.append((step, dict(zip(found.tolist(), counts.tolist()))))

    def ordered(self) -> tuple[int, int, int, float] | None:
        """`(first step, batches, classes, z)` of the kept recordings when
        they come in label order: at least `_RECORDINGS` batches, most of
        them (`_PURE_SHARE`) holding one class each (`_PURE` of their
        labels), two classes or more over them, and `homogeneity_z` at
        least `_SORTED_Z`; else None."""
        recent = list(self._recent)
        if len(recent) < _RECORDINGS:
            return None
        classes = sorted({c for _, counts in recent for c in counts})
        if len(classes) < 2:
            return None
        table = np.array([[counts.get(c, 0) for c in classes] for _, counts in recent])
        pure = table.max(axis=1) >= _PURE * table.sum(axis=1)
        if pure.mean() < _PURE_SHARE:
            return None
        z = homogeneity_z(table)
        if z is None or z < _SORTED_Z:
            return None
        return recent[0][0], len(recent), len(classes), z


class LabelOrderRules:
    """Mixed into `HealthRules`: the `unshuffled_data` warning, from each
    recording's `StepStats.label_classes` and `StepStats.value_rows`. Uses
    `_labels` (a `LabelOrder`), `_values` (a `ValueOrder`), `_ordered`
    (whether the data came in order in this `fit`) and `_add`."""

    def forget_order(self) -> None:
        """Starts the data's order afresh (a new `fit`, maybe on data
        shuffled since); a later `unshuffled_data` finding is not told
        twice."""
        self._labels, self._values, self._ordered = LabelOrder(), ValueOrder(), False
        self._order_step: int | None = None

    def observe_order(self, step: int, classes, rows, features: int = 0) -> list:
        """Judges a recording's classes and values (`StepStats`'
        `label_classes`, `value_rows` and `value_features`) before its
        step's norm (`observe_step`, for which new data in order is no
        explosion: `NormRules._new_data`); `observe` does not take that
        step's again. Returns the new findings."""
        new: list = []
        self._judge_data(new, step, classes, rows, features)
        return self._emit(new)

    def _judge_order(self, new, stats: StepStats) -> None:
        """`_judge_data` of a recording (`HealthRules.observe`)."""
        self._judge_data(
            new, stats.step, stats.label_classes, stats.value_rows, stats.value_features
        )

    def _judge_data(self, new, step: int, classes, rows, features: int) -> None:
        """Keeps a recording's classes and values (once a step), and judges
        their order until found in this `fit`."""
        if step == self._order_step:
            return
        self._order_step = step
        if classes is not None:
            self._labels.add(step, classes)
        if rows is not None:
            self._values.add(step, rows)
        if self.data_ordered:
            return
        if classes is not None:
            self._ordered = self._judge_labels(new, step)
        if rows is not None and not self._ordered:
            self._ordered = self._judge_values(new, step, features)

    def _tell(self, new, first: int, value: float, message: str) -> bool:
        """Adds the `unshuffled_data` warning (once a run); returns True."""
        self._add(
            new,
            F.UNSHUFFLED_DATA,
            None,
            first,
            value,
            message,
            _SHUFFLE_FIX,
            severity=F.WARNING,
        )
        return True

    def _judge_values(self, new, step: int, features: int) -> bool:
        """Tells `unshuffled_data` when the features or targets come in
        order (`ValueOrder`); returns whether they do."""
        ordered = self._values.ordered()
        if ordered is None:
            return False
        first, batches, share, column = ordered
        what = (
            f"feature {column} of the inputs"
            if column < features
            else "the targets"
            if column == features
            else f"target column {column - features}"
        )
        message = (
            f"The batches come in the data's order, not shuffled: over the last "
            f"{batches} recorded batches (steps {first}-{step}), the values of "
            f"{what} spread within a batch {share:.2g} of their variance over "
            "those batches together (batches of a shuffled dataset spread "
            "about all of it): each batch is a narrow slice of the data "
            "(sorted by it, or a time series in time order), so the model "
            "fits one part of the data after another and forgets the others, "
            "and each batch's loss is that of its own part."
        )
        return self._tell(new, first, share, message)

    def _judge_labels(self, new, step: int) -> bool:
        """Tells `unshuffled_data` when the classes come in order
        (`LabelOrder`); returns whether they do."""
        ordered = self._labels.ordered()
        if ordered is None:
            return False
        first, batches, classes, z = ordered
        message = (
            f"The batches come in label order, not shuffled: most of the last "
            f"{batches} recorded batches (steps {first}-{step}) hold one "
            f"class each, {classes} classes over them, {z:.3g} standard "
            "deviations from what batches of a shuffled dataset hold: the "
            "model fits one class after another and forgets the others, and "
            "each batch's loss and accuracy are those of its own class."
        )
        return self._tell(new, first, z, message)

    @property
    def data_ordered(self) -> bool:
        """Whether the batches were found in the data's order in this
        `fit`."""
        return self._ordered
