"""The one place the losses touch Keras internals: the loss mask.

`SparseCategoricalCrossentropy(ignore_class=...)` must average over the
labels it does not ignore, exactly as Keras's does. Keras does this by
attaching a mask to the per-sample loss tensor (`backend.set_keras_mask`);
`keras.losses.Loss.__call__` reads it and folds it into the reduction. The
setter has no public export, so it is imported here from `keras.src`.
`tests/losses/test_keras_mask.py` fails loudly if Keras moves or changes it.
"""

from __future__ import annotations

from keras.src.backend import get_keras_mask, set_keras_mask

from keras_actloss.tensor_types import Tensor


def attach_mask(x: Tensor, mask: Tensor) -> Tensor:
    """Attaches `mask` to `x` in place so `Loss.__call__` honours it."""
    set_keras_mask(x, mask)
    return x


def read_mask(x: Tensor) -> Tensor | None:
    """Returns the mask attached to `x`, or None."""
    return get_keras_mask(x)
