"""Fails loudly if the Keras internals behind `ignore_class` change.

`keras_actloss.losses.keras_mask` imports Keras's private mask setter; the
reduction of `SparseCategoricalCrossentropy(ignore_class=...)` relies on
`keras.losses.Loss.__call__` reading that mask.
"""

import keras
import numpy as np

from keras_actloss import losses
from keras_actloss.losses import keras_mask


def test_attached_mask_is_read_back():
    x = keras.ops.convert_to_tensor([1.0, 2.0, 3.0])
    mask = keras.ops.convert_to_tensor([True, False, True])
    keras_mask.attach_mask(x, mask)
    np.testing.assert_array_equal(keras_mask.read_mask(x), [True, False, True])


def test_loss_call_averages_over_unmasked_positions_only():
    class Masked(keras.losses.Loss):
        def call(self, y_true, y_pred):
            values = keras.ops.abs(y_pred - y_true)
            return keras_mask.attach_mask(values, keras.ops.not_equal(y_true, -1.0))

    y_true = np.array([0.0, -1.0, 0.0, 0.0])
    y_pred = np.array([1.0, 9.0, 2.0, 3.0])
    # hand computed: masked position 1 dropped: (1 + 2 + 3) / 3 = 2
    np.testing.assert_allclose(Masked()(y_true, y_pred), 2.0)


def test_ignore_class_reduction_matches_keras(rng):
    y = np.array([0.0, 2.0, 1.0, 2.0, 0.0])
    p = rng.dirichlet(np.ones(3), size=5)
    for reduction in ("sum_over_batch_size", "sum", "mean_with_sample_weight"):
        ours = losses.SparseCategoricalCrossentropy(ignore_class=2, reduction=reduction)
        theirs = keras.losses.SparseCategoricalCrossentropy(
            ignore_class=2, reduction=reduction
        )
        np.testing.assert_allclose(ours(y, p), theirs(y, p), rtol=1e-6)
