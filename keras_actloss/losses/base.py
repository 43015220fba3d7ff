"""Base class that turns a per-sample loss function into a `keras.losses.Loss`.

Keras's own `LossFunctionWrapper` is private; this is our small equivalent.
It holds no math: `call` matches the ranks of labels and predictions and
calls the function; `get_config` records every constructor argument.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

from keras_actloss.losses import validation
from keras_actloss.tensor_types import Tensor


class LossFunctionWrapper(keras.losses.Loss):
    """A `keras.losses.Loss` that applies a per-sample loss function.

    Every keras-actloss loss class derives from it and shares these
    arguments, documented once here.

    Calling a loss: `loss(y_true, y_pred, sample_weight=None)` computes the
    per-sample losses with the function, multiplies them by `sample_weight`
    (a scalar, or a tensor broadcastable to the per-sample losses, e.g. one
    weight per sample) and reduces them.

    Args:
        fn: The per-sample loss function, `fn(y_true, y_pred, **kwargs)`.
        reduction: How the per-sample losses are combined. `"sum_over_batch_size"`
            (and its alias `"mean"`) sums them and divides by their number;
            `"sum"` sums them; `"mean_with_sample_weight"` sums them and divides
            by the sum of `sample_weight`; `"none"` or `None` returns them
            unreduced. Defaults to `"sum_over_batch_size"`.
        name: Name of the loss instance (shown in logs). Defaults to the
            snake-case name of the loss.
        dtype: Dtype of the loss computation (inputs are cast to it). Defaults
            to `None`, meaning `keras.config.floatx()`; a
            `keras.DTypePolicy` uses its compute dtype.
        **kwargs: Keyword arguments passed on to `fn`. The losses that check
            label values (cross-entropies, KL divergence, hinge) take
            `check_labels`: whether to check them (ranges, class ids, -1/1
            vs 0/1), in eager calls with a `ValueError` and inside
            `model.fit` with a graph assertion (a NaN loss under XLA); see
            `keras_actloss.losses.validation`. Their cost is measured in
            `benchmarks/label_checks.py`. Defaults to `True`.
    """

    def __init__(
        self,
        fn: Callable[..., Tensor],
        reduction: str | None = "sum_over_batch_size",
        name: str | None = None,
        dtype: Any = None,
        **kwargs: Any,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.fn = fn
        self._dtype_argument = dtype
        self._fn_kwargs = kwargs

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        y_true, y_pred = validation.match_ranks(y_true, y_pred)
        return self.fn(y_true, y_pred, **self._fn_kwargs)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        dtype = self._dtype_argument
        if isinstance(dtype, keras.DTypePolicy):
            dtype = keras.dtype_policies.serialize(dtype)
        config["dtype"] = dtype
        config.update(self._fn_kwargs)
        return config

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._fn_kwargs.items())
        return f"<{type(self).__name__}({args})>"
