"""Tests for keras_actloss.diagnostics.attention (the peaks of attention
weights the callback measures in its train step) against NumPy references."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_actloss.diagnostics import attention, stats


def _np(x):
    return ops.convert_to_numpy(x)


def _reference(q, k, mask=None):
    """NumPy: softmax over the keys of q . k / sqrt(d) per head, its largest
    weight per query ([batch, heads, T]); -1 where a query sees one key or
    none."""
    scores = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
    allowed = np.ones(scores.shape, bool) if mask is None else mask[:, None]
    scores = np.where(allowed, scores.astype("float64"), -np.inf)
    with np.errstate(invalid="ignore"):  # Queries that see no key: NaN.
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
    peaks = weights.max(-1)
    keys = np.broadcast_to(allowed, scores.shape).sum(-1)
    return np.where(keys > 1, peaks, -1.0)


@pytest.mark.parametrize("scale", [0.3, 3.0])
def test_peaks_match_numpy(rng, scale):
    q = (scale * rng.normal(size=(4, 6, 2, 8))).astype("float32")
    k = (scale * rng.normal(size=(4, 5, 2, 8))).astype("float32")
    expected = _reference(q, k)
    peaks = _np(attention.attention_peaks(q, k))
    np.testing.assert_allclose(peaks, expected, rtol=1e-5)
    # Small scores spread the weight (uniform over 5 keys: 0.2); large ones
    # make most queries one-hot.
    share = np.mean(expected >= attention.ONE_HOT)
    assert share == 0.0 if scale < 1 else share > 0.5


def test_masked_and_causal_peaks_match_numpy(rng):
    q = (2.0 * rng.normal(size=(3, 6, 2, 4))).astype("float32")
    k = (2.0 * rng.normal(size=(3, 6, 2, 4))).astype("float32")
    mask = rng.random((3, 6, 6)) > 0.3
    mask[0, 2] = False  # A query that sees no key: -1, as one that sees one.
    mask[1, 3] = [False, True, False, False, False, False]
    peaks = _np(attention.attention_peaks(q, k, mask))
    np.testing.assert_allclose(peaks, _reference(q, k, mask), rtol=1e-5)
    assert np.all(peaks[0, :, 2] == -1.0) and np.all(peaks[1, :, 3] == -1.0)
    # Neither counts (`counted`), the other queries do.
    counted = _np(attention.counted(peaks))
    np.testing.assert_array_equal(counted, peaks >= 0.0)
    assert not counted[0, :, 2].any() and counted.sum() > 0.8 * counted.size
    causal = _np(attention.causal_mask(q, k))
    np.testing.assert_array_equal(causal, np.tril(np.ones((1, 6, 6), bool)))
    np.testing.assert_allclose(
        _np(attention.attention_peaks(q, k, causal)),
        _reference(q, k, np.broadcast_to(causal, (3, 6, 6))),
        rtol=1e-5,
    )


def test_a_single_key_is_not_one_hot(rng):
    # Cross-attention to one key: every weight is 1 whatever the scores.
    q = rng.normal(size=(2, 4, 2, 3)).astype("float32")
    k = rng.normal(size=(2, 1, 2, 3)).astype("float32")
    np.testing.assert_array_equal(_np(attention.attention_peaks(q, k)), -1.0)


def test_long_sequences_measure_evenly_spaced_queries(rng):
    # 70 queries, at most 32 measured: every 3rd (ceil(70 / 32) = 3), 24.
    q = rng.normal(size=(2, 70, 1, 4)).astype("float32")
    k = rng.normal(size=(2, 9, 1, 4)).astype("float32")
    mask = rng.random((2, 70, 9)) > 0.2
    peaks = _np(attention.attention_peaks(q, k, mask))
    assert peaks.shape == (2, 1, 24)
    expected = _reference(q[:, ::3], k, mask[:, ::3])
    np.testing.assert_allclose(peaks, expected, rtol=1e-5)


def test_half_precision_inputs_are_measured_in_float32(rng):
    q = (4.0 * rng.normal(size=(2, 5, 2, 8))).astype("float16")
    k = (4.0 * rng.normal(size=(2, 5, 2, 8))).astype("float16")
    peaks = attention.attention_peaks(q, k)
    assert keras.backend.standardize_dtype(peaks.dtype) == "float32"
    expected = _reference(q.astype("float32"), k.astype("float32"))
    np.testing.assert_allclose(_np(peaks), expected, rtol=1e-5)


def test_the_peaks_profile_counts_one_hot_queries(rng):
    # `activation_counts` with `PEAKS`: the saturated count is the number of
    # peaks at 0.99 or above, the fraction over all queries.
    peaks = np.array([[[0.2, 0.99, 0.995, 1.0, 0.98, -1.0]]], "float32")
    counts = stats.activation_counts(peaks, attention.PEAKS)
    assert float(_np(counts["saturated"])) == 3.0
    assert float(_np(counts["elements"])) == 6.0  # 5 counted (`counted`).
    assert "active_per_unit" not in counts
