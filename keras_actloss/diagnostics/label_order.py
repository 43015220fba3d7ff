"""Batches that come in label order: a classifier's data not shuffled.

A classifier trained on data sorted (or grouped) by class sees one class
after another: each batch holds one class, the model fits it and forgets
the others, and the loss and accuracy of each batch are those of its
class. Shuffled batches draw their labels from the same distribution, so
the classes of the recorded batches are independent of which batch they
are in; `homogeneity_z` measures how far they are from it. Pure functions
and a `RuleFamily` mixed into `HealthRules`; the callback gives each
recording the classes of its batch's kept labels
(`StepStats.label_classes`).
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

_SHUFFLE_FIX = (
    "Shuffle the training data: `fit(x, y, shuffle=True)` for arrays (the "
    "default), or `dataset.shuffle(buffer_size)` before `.batch()` for a "
    "`tf.data.Dataset`, with a buffer larger than the longest run of one "
    "label (the whole dataset when it is sorted by label)."
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
    recording's `StepStats.label_classes`. Uses `_labels` (a
    `LabelOrder`), `_add` and `_reported`."""

    def _judge_labels(self, new, stats: StepStats) -> None:
        if stats.label_classes is None:
            return
        self._labels.add(stats.step, stats.label_classes)
        if self.labels_ordered:
            return
        ordered = self._labels.ordered()
        if ordered is None:
            return
        first, batches, classes, z = ordered
        message = (
            f"The batches come in label order, not shuffled: most of the last "
            f"{batches} recorded batches (steps {first}-{stats.step}) hold one "
            f"class each, {classes} classes over them, {z:.3g} standard "
            "deviations from what batches of a shuffled dataset hold: the "
            "model fits one class after another and forgets the others, and "
            "each batch's loss and accuracy are those of its own class."
        )
        self._add(
            new,
            F.UNSHUFFLED_DATA,
            None,
            first,
            z,
            message,
            _SHUFFLE_FIX,
            severity=F.WARNING,
        )

    @property
    def labels_ordered(self) -> bool:
        """Whether the batches were found in label order."""
        return (F.UNSHUFFLED_DATA, None) in self._reported
