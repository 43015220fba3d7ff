"""Imbalanced classification labels: class-weighted or focal losses.

The source notes' tip for imbalanced data is a weighted loss; the loss people
reach for next is focal loss. `advise` applies both through `adjust`:

- From `IMBALANCE_RATIO` (10:1, the minority class under about 9% of the
  labels) the cross-entropy gets class weights `n / (k * count_c)` ("balanced"
  weights: every class then carries the same total weight).
- From `EXTREME_RATIO` (100:1) such weights are 100x or more, and a few rare
  samples dominate each batch's gradient; the recommendation is the focal
  variant of the loss (`gamma = 2`, Lin et al., 2018) instead, whose
  `(1 - p)^gamma` factor down-weights the many easy majority samples.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from keras_actloss.advisor import labels as _labels

IMBALANCE_RATIO = 10.0
EXTREME_RATIO = 100.0

FOCAL = {
    "BinaryCrossentropy": "BinaryFocalCrossentropy",
    "CategoricalCrossentropy": "CategoricalFocalCrossentropy",
    "SparseCategoricalCrossentropy": "SparseCategoricalFocalCrossentropy",
}


def class_counts(loss_name: str, info, array: np.ndarray) -> np.ndarray | None:
    """Label count per class (0/1 pooled over columns for binary losses).

    None for soft labels (probabilities, distributions), whose classes are
    not counted.
    """
    if loss_name == "BinaryCrossentropy":
        if info.kind not in (_labels.BINARY, _labels.MULTI_HOT):
            return None
        positives = int(np.sum(array == 1))
        return np.array([array.size - positives, positives])
    if loss_name == "SparseCategoricalCrossentropy":
        ids = array.reshape(-1).astype("int64")
        return np.bincount(ids, minlength=max(info.n_classes or 0, 2))
    if loss_name == "CategoricalCrossentropy" and info.kind == _labels.ONE_HOT:
        return array.reshape(-1, array.shape[-1]).sum(axis=0).astype("int64")
    return None


def balanced_weights(counts: np.ndarray) -> list[float]:
    """`n / (k * count_c)` to 3 significant figures; 1.0 for absent classes."""
    n, k = counts.sum(), len(counts)
    return [float(f"{n / (k * c):.3g}") if c else 1.0 for c in counts]


def adjust(rec, info, array: np.ndarray):
    """The recommendation, with a class-weighted or focal loss if imbalanced."""
    from keras_actloss import losses

    counts = class_counts(rec.loss_name, info, array)
    present = None if counts is None else counts[counts > 0]
    if present is None or len(present) < 2:
        return rec
    ratio = present.max() / present.min()
    if ratio < IMBALANCE_RATIO:
        return rec
    minority = present.min() / counts.sum()
    facts = (
        f"The labels are strongly imbalanced: the rarest class is {minority:.1%} "
        f"of them, the most common {ratio:.0f} times as frequent."
    )
    if ratio >= EXTREME_RATIO:
        name = FOCAL[rec.loss_name]
        loss = getattr(losses, name)(from_logits=rec.loss.from_logits)
        why = (
            f"{rec.why} {facts} Class weights would be {ratio:.0f}x or more and "
            "let a few rare samples dominate each batch's gradient; focal loss "
            "(gamma=2) instead down-weights the many easy, well-classified "
            "samples, so the rare, hard ones drive training."
        )
        return dataclasses.replace(rec, loss=loss, why=why)
    weights = balanced_weights(counts)
    config = {**rec.loss.get_config(), "class_weights": weights}
    loss = type(rec.loss).from_config(config)
    why = (
        f"{rec.why} {facts} Class weights n / (k * count) = {weights} give every "
        "class the same total weight in the loss, so the model cannot do well "
        "by predicting the common class."
    )
    return dataclasses.replace(rec, loss=loss, why=why)
