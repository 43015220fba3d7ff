"""How sharply an attention layer's queries attend: the peak of each softmax.

Dot-product attention weighs the keys of each query with a softmax of
`q . k / sqrt(d)`. Where one key's score exceeds the others by about 5 or
more (the scores of attention projections initialised at too large a scale,
of inputs that are not normalized, or of weights a too large step threw),
the softmax is one-hot: its Jacobian `diag(p) - p p^T` is about 0, so
almost no gradient flows back through those queries to the query and key
projections and the attention cannot learn where to look. `attention_peaks`
measures it from the projected queries and keys a training step already
computed; `GradientDiagnostics` counts the peaks at 0.99 and above as the
attention's saturated outputs (`PEAKS`), among the queries that see two
keys or more (`counted`).
"""

from __future__ import annotations

import math

from keras import ops

from keras_actloss.profiles import SOFTMAX, ActivationProfile
from keras_actloss.tensor_types import Tensor

# A query is one-hot when its largest weight is at least this: the softmax's
# gradient there is at most `p (1 - p)` = 0.0099 against 0.25 at its most.
ONE_HOT = 0.99
# The queries of each sequence measured (evenly spaced): bounds the scores
# computed again on a recorded step however long the sequences.
QUERIES = 32

# The profile of `attention_peaks`' outputs: saturated at `ONE_HOT`.
PEAKS = ActivationProfile(
    name="attention",
    family=SOFTMAX,
    output_range=(0.0, 1.0),
    zero_centred=False,
    produces_probabilities=True,
    saturation_bounds=(-math.inf, ONE_HOT),
    saturation_gradient=0.04,
    description="The largest attention weight of each query; one-hot at 0.99.",
)


def causal_mask(query: Tensor, key: Tensor) -> Tensor:
    """The `[1, T, S]` boolean mask of causal attention: query `i` sees keys
    `0..i` (Keras's `MultiHeadAttention(use_causal_mask=True)`)."""
    rows = ops.arange(ops.shape(query)[1])
    cols = ops.arange(ops.shape(key)[1])
    return ops.expand_dims(ops.greater_equal(rows[:, None], cols[None, :]), 0)


def attention_peaks(
    query: Tensor, key: Tensor, mask: Tensor | None = None, queries: int = QUERIES
) -> Tensor:
    """The largest attention weight of each query and head.

    The softmax over the keys of the scaled dot products, as Keras's
    `MultiHeadAttention` computes it, for at most `queries` evenly spaced
    queries of each sequence (all of them when the length is not static).
    A query that sees one key alone (the first of causal attention, or
    every query of a sequence of one key) or none (padding) gets -1: its
    weight is 1 by construction, not by the size of its scores, and it is
    not counted (`counted`).

    Formula:

    ```
    peak[b, n, t] = max_s softmax_s(q[b, t, n] . k[b, s, n] / sqrt(d))
                  = 1 / sum_s exp(score[s] - max score)
    ```

    Examples:

    >>> q = np.array([[[[4.0, 0.0]], [[0.0, 0.0]]]])  # [1, 2, 1, 2]
    >>> k = np.array([[[[4.0, 0.0]], [[0.0, 0.0]]]])
    >>> peaks = keras_actloss.diagnostics.attention.attention_peaks(q, k)
    >>> np.round(keras.ops.convert_to_numpy(peaks), 4)  # 1 / (1 + e^-11.3)
    array([[[1. , 0.5]]], dtype=float32)

    Args:
        query: Projected queries, `[batch, T, heads, d]`.
        key: Projected keys, `[batch, S, heads, d]`.
        mask: Boolean `[batch or 1, T, S]`, True where a query may attend
            to a key, or None (every key). Defaults to `None`.
        queries: Queries measured per sequence at most. Defaults to `32`.

    Returns:
        A float32 `[batch, heads, T']` tensor, `T' <= queries` when `T` is
        static: each query's peak, or -1.
    """
    q, k = ops.cast(query, "float32"), ops.cast(key, "float32")
    length = q.shape[1]
    stride = 1 if length is None else max(1, -(-length // queries))
    if stride > 1:
        q = q[:, ::stride]
        mask = None if mask is None else mask[:, ::stride]
    scores = ops.einsum("btnh,bsnh->bnts", q, k) / math.sqrt(q.shape[-1])
    if mask is not None:
        mask = ops.expand_dims(mask, 1)
        scores = ops.where(mask, scores, -1e9)
    top = ops.max(scores, axis=-1, keepdims=True)
    peaks = 1.0 / ops.sum(ops.exp(scores - top), axis=-1)
    if mask is not None:
        keys = ops.sum(ops.cast(mask, "float32"), axis=-1)
        peaks = ops.where(ops.greater(keys, 1.0), peaks, -1.0)
    elif k.shape[1] is None:
        peaks = ops.where(ops.greater(ops.shape(k)[1], 1), peaks, -1.0)
    elif k.shape[1] == 1:
        peaks = -ops.ones_like(peaks)
    return peaks


def counted(peaks: Tensor) -> Tensor:
    """The queries of `attention_peaks` that count: those that saw two keys
    or more (a peak of -1 otherwise)."""
    return ops.greater_equal(peaks, 0.0)
