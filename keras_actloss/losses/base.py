"""Base class that turns a per-sample loss function into a `keras.losses.Loss`.

Keras's own `LossFunctionWrapper` is private; this is our small equivalent.
It holds no math: `call` matches the ranks of labels and predictions and
calls the function; `get_config` records every constructor argument.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import keras

from keras_actloss import registry
from keras_actloss.losses import validation
from keras_actloss.tensor_types import Tensor


# Registered with Keras only (not in our registry's loss table, which lists
# named losses with profiles), so a wrapper in a `.keras` file loads.
@keras.saving.register_keras_serializable(package="keras_actloss")
class LossFunctionWrapper(keras.losses.Loss):
    """A `keras.losses.Loss` that applies a per-sample loss function.

    Every keras-actloss loss class derives from it and shares these
    arguments, documented once here.

    Calling a loss: `loss(y_true, y_pred, sample_weight=None)` computes the
    per-sample losses with the function, multiplies them by `sample_weight`
    (a scalar, or a tensor broadcastable to the per-sample losses, e.g. one
    weight per sample) and reduces them.

    A wrapper built directly saves its function in its config (serialized
    with `keras.saving.serialize_keras_object`), so `from_config(get_config())`
    and `.keras` files round-trip when the function is registered (ours are,
    and Keras's built-ins are known by name).

    Examples:

    >>> loss = keras_actloss.losses.LossFunctionWrapper(
    ...     keras_actloss.losses.huber, delta=2.0)
    >>> restored = keras_actloss.losses.LossFunctionWrapper.from_config(
    ...     loss.get_config())
    >>> restored.fn is keras_actloss.losses.huber
    True
    >>> restored.get_config() == loss.get_config()
    True

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
        if "fn" in inspect.signature(type(self).__init__).parameters:
            config["fn"] = keras.saving.serialize_keras_object(self.fn)
        config.update(self._fn_kwargs)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LossFunctionWrapper:
        if "fn" in config:
            config = {**config, "fn": _deserialize_fn(config["fn"])}
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._fn_kwargs.items())
        return f"<{type(self).__name__}({args})>"


class ArgumentsWrapper(LossFunctionWrapper):
    """A named loss class: its function's arguments are also its attributes.

    The loss classes check their arguments (`keras_actloss.losses.validation`)
    and pass them here by keyword, in the order of their signature; each is
    kept as an attribute of the same name (`loss.from_logits`) and passed on
    to `fn`, so `get_config` lists it.
    """

    def __init__(
        self,
        fn: Callable[..., Tensor],
        reduction: str | None,
        name: str | None,
        dtype: Any,
        **arguments: Any,
    ):
        for key, value in arguments.items():
            setattr(self, key, value)
        super().__init__(fn, reduction, name, dtype, **arguments)


def _deserialize_fn(fn: Any) -> Callable[..., Tensor]:
    """The loss function of a wrapper's config.

    Keras serializes a plain function by name, so a name may also be one of
    our loss functions or a Keras built-in (`"mean_squared_error"`).
    """
    if isinstance(fn, dict):
        try:
            return keras.saving.deserialize_keras_object(fn)
        except (TypeError, ValueError):
            fn = fn.get("config")
    if isinstance(fn, str):
        found = registry.lookup("loss", fn)
        if found is None:
            try:
                found = keras.losses.get(fn)
            except ValueError:
                found = None
        loss_object = inspect.isclass(found) or isinstance(found, keras.losses.Loss)
        if callable(found) and not loss_object:
            return found
    if callable(fn):
        return fn
    raise ValueError(
        "Expected `fn` in a `LossFunctionWrapper` config to be a serialized "
        f"loss function, registered or known by name. Received: fn={fn!r}"
    )
