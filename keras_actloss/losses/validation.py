"""Label and argument checks shared by the losses.

Two kinds of check live here:

- **Shape checks** read static shapes only, so they run wherever the loss is
  traced: eagerly, inside `tf.function` and in `model.fit`.
- **Value checks** (label ranges, integer class ids, label formats) run
  wherever the loss runs, in one of three ways:

  - *Concrete labels* (eager calls, NumPy input, `run_eagerly=True`, the
    torch backend): a `ValueError` with the message below.
  - *Traced on TensorFlow without XLA* (`model.fit` on CPU, `tf.function`):
    a graph assertion ordered before the loss reads the labels. It fails
    with TensorFlow's `InvalidArgumentError`, whose message ends with
    `assertion failed: [<the same message>]`, offending values quoted the
    same way. It costs a reduction over the labels and a branch per step.
  - *Traced under XLA* (`jit_compile=True`, Keras's default on GPU) or
    *JAX's `jit`*: no error can leave the compiled step, so invalid labels
    make the loss of the whole batch NaN instead of a silently wrong
    number (`loss: nan` in the progress bar; `keras.callbacks.TerminateOnNaN`
    or `GradientDiagnostics` stop there). Call the loss eagerly on a batch
    for the message.

  Every loss with value checks takes `check_labels=False` to skip them (the
  shape checks still run).

Errors follow Keras's style: what was expected, then `Received: ...`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from keras_actloss.losses import graph_asserts
from keras_actloss.tensor_types import Tensor, is_integral, is_real

# At most this many offending values are quoted in an error message.
_MAX_QUOTED = graph_asserts.MAX_QUOTED


def concrete_values(x: Tensor) -> np.ndarray | None:
    """Returns `x` as a NumPy array when it is concrete, else None.

    Symbolic tensors (inside `tf.function` or a traced train step) return
    None, so value checks are skipped there.
    """
    if isinstance(x, (np.ndarray, np.generic, int, float, list, tuple)):
        return np.asarray(x)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if not (tf.executing_eagerly() and hasattr(x, "numpy")):
            return None
        return x.numpy()
    if keras.backend.backend() == "jax":
        import jax

        if isinstance(x, jax.core.Tracer):
            return None
    return keras.ops.convert_to_numpy(x)


def _quote(values: np.ndarray) -> str:
    unique = np.unique(values)
    shown = ", ".join(f"{v:g}" for v in unique[:_MAX_QUOTED])
    more = ", ..." if unique.size > _MAX_QUOTED else ""
    return f"[{shown}{more}]"


def match_ranks(y_true: Tensor, y_pred: Tensor) -> tuple[Tensor, Tensor]:
    """Squeezes or expands a trailing size-1 axis so both ranks agree.

    Same rule as Keras's loss wrapper: when the ranks differ by one and the
    longer tensor ends in a size-1 axis, a rank-1 shorter tensor is expanded,
    otherwise the size-1 axis is squeezed.
    """
    true_rank, pred_rank = len(y_true.shape), len(y_pred.shape)
    if true_rank == pred_rank + 1 and y_true.shape[-1] == 1:
        if pred_rank == 1:
            return y_true, keras.ops.expand_dims(y_pred, axis=-1)
        return keras.ops.squeeze(y_true, axis=-1), y_pred
    if pred_rank == true_rank + 1 and y_pred.shape[-1] == 1:
        if true_rank == 1:
            return keras.ops.expand_dims(y_true, axis=-1), y_pred
        return y_true, keras.ops.squeeze(y_pred, axis=-1)
    return y_true, y_pred


def _raise_if_any(bad: np.ndarray, message: str) -> None:
    if bad.size:
        raise ValueError(message + _quote(bad))


def _checked(y_true: Tensor, ok: Tensor, bad: Tensor, message: str, poison) -> Tensor:
    """Traced labels: a graph assertion on TensorFlow, else a NaN poison.

    Returns `y_true` behind an assertion that `ok` (a scalar) holds, or under
    XLA and JAX's `jit` `y_true` replaced by `poison` (a value that makes the
    loss NaN) everywhere when `ok` is false. `bad` marks the values to quote.
    """
    if keras.backend.backend() == "tensorflow" and not graph_asserts.in_xla():
        return graph_asserts.assert_labels(y_true, ok, bad, message)
    return ops.where(ok, y_true, ops.cast(poison, y_true.dtype))


def check_same_shape(target: Tensor, output: Tensor) -> None:
    """Keras's own shape check of `binary_crossentropy`, with its messages,
    run before our label checks so a shape mistake is reported as such."""
    if len(target.shape) != len(output.shape):
        raise ValueError(
            "Arguments `target` and `output` must have the same rank "
            f"(ndim). Received: target.shape={target.shape}, "
            f"output.shape={output.shape}"
        )
    for e1, e2 in zip(target.shape, output.shape):
        if e1 is not None and e2 is not None and e1 != e2:
            raise ValueError(
                "Arguments `target` and `output` must have the same shape. "
                f"Received: target.shape={target.shape}, "
                f"output.shape={output.shape}"
            )


def check_distribution_shapes(y_true: Tensor, y_pred: Tensor, loss: str) -> None:
    """Static: target distributions have `y_pred`'s classes. Class ids, of
    shape `(batch,)` or `(batch, 1)`, would be broadcast over the classes
    (Keras's own `kl_divergence` does so with `(batch, 1)`): a wrong loss and
    no error."""
    classes = y_pred.shape[-1] if len(y_pred.shape) else None
    width = y_true.shape[-1] if len(y_true.shape) else None
    if len(y_true.shape) != len(y_pred.shape) or (
        classes is not None and width is not None and width != classes
    ):
        raise ValueError(
            f"Expected target distributions for `{loss}`: `y_true` must have "
            "the same shape as `y_pred`, one probability per class (class ids "
            "need `keras.utils.to_categorical`, or `SparseCategoricalCrossentropy` "
            f"instead). Received: y_true.shape={tuple(y_true.shape)}, "
            f"y_pred.shape={tuple(y_pred.shape)}"
        )


def check_label_range(y_true: Tensor, loss: str, low=0.0, high=1.0) -> Tensor:
    """Checks every label lies in `[low, high]` (NaN does not).

    Raises a `ValueError` for concrete labels; traced, see the module
    docstring. Returns `y_true`, to be used in place of the argument.
    """
    message = (
        f"Expected `y_true` for `{loss}` to hold labels in [{low:g}, "
        f"{high:g}]. Received: y_true with values "
    )
    values = concrete_values(y_true)
    if values is not None:
        _raise_if_any(
            values[(values < low) | (values > high) | ~np.isfinite(values)], message
        )
        return y_true
    valid = ops.logical_and(
        ops.greater_equal(y_true, low), ops.less_equal(y_true, high)
    )
    return _checked(y_true, ops.all(valid), ops.logical_not(valid), message, np.nan)


def check_hinge_labels(y_true: Tensor) -> Tensor:
    """Checks labels are all in {-1, 1} or all in {0, 1}.

    Raises a `ValueError` for concrete labels; traced, see the module
    docstring. Returns `y_true`, to be used in place of the argument.
    """
    message = (
        "Expected `y_true` for `hinge` to hold labels -1/1 (or 0/1, converted "
        "to -1/1). Received: y_true with values "
    )
    values = concrete_values(y_true)
    if values is not None:
        if not np.isin(values, (0.0, 1.0)).all():
            _raise_if_any(values[~np.isin(values, (-1.0, 1.0))], message)
        return y_true
    signed = ops.logical_or(ops.equal(y_true, -1), ops.equal(y_true, 1))
    binary = ops.logical_or(ops.equal(y_true, 0), ops.equal(y_true, 1))
    ok = ops.logical_or(ops.all(signed), ops.all(binary))
    return _checked(y_true, ok, ops.logical_not(signed), message, np.nan)


def num_classes(y_pred: Tensor, axis: int) -> int | None:
    """Returns the static size of the class axis, or None if unknown."""
    return y_pred.shape[axis]


# The loss to use instead when the labels have the other format.
_OTHER_FORMAT = {
    "categorical_crossentropy": "SparseCategoricalCrossentropy",
    "sparse_categorical_crossentropy": "CategoricalCrossentropy",
    "categorical_focal_crossentropy": "SparseCategoricalFocalCrossentropy",
    "sparse_categorical_focal_crossentropy": "CategoricalFocalCrossentropy",
}


def _check_several_classes(y_pred: Tensor, axis: int, loss: str) -> None:
    if num_classes(y_pred, axis) == 1:
        raise ValueError(
            f"Expected `y_pred` for `{loss}` to have more than one class along "
            "`axis`; with one class the loss is always 0. Use "
            "`BinaryCrossentropy` for two classes. Received: "
            f"y_pred.shape={tuple(y_pred.shape)}, axis={axis}"
        )


def check_one_hot_shapes(
    y_true: Tensor, y_pred: Tensor, axis: int, loss: str = "categorical_crossentropy"
) -> None:
    """Static: labels for categorical cross-entropy must be one-hot."""
    _check_several_classes(y_pred, axis, loss)
    sparse_like = len(y_true.shape) == len(y_pred.shape) - 1 or (
        len(y_true.shape) == len(y_pred.shape) and y_true.shape[axis] == 1
    )
    if sparse_like:
        raise ValueError(
            f"Expected one-hot labels for `{loss}`: `y_true` must have the same "
            f"shape as `y_pred`; integer class labels need `{_OTHER_FORMAT[loss]}` "
            "(or `keras.utils.to_categorical`). "
            f"Received: y_true.shape={tuple(y_true.shape)}, "
            f"y_pred.shape={tuple(y_pred.shape)}"
        )
    if len(y_true.shape) != len(y_pred.shape) or any(
        t is not None and p is not None and t != p
        for t, p in zip(y_true.shape, y_pred.shape)
    ):
        raise ValueError(
            f"Expected one-hot labels for `{loss}`: `y_true` must have the same "
            f"shape as `y_pred`. Received: y_true.shape={tuple(y_true.shape)}, "
            f"y_pred.shape={tuple(y_pred.shape)}"
        )


def one_hot_width(y_true: Tensor, y_pred: Tensor, axis: int, loss: str) -> Tensor:
    """`y_true`, one-hot labels (`check_one_hot_shapes` passed), checked
    when the step runs where the class axis of either has no static size
    (a TensorFlow graph fed by a dataset with a loose label spec).

    Integer class ids of shape `(batch, 1)` would otherwise be broadcast
    over the classes, a wrong loss and no error: they get
    `check_one_hot_shapes`' message (see the module docstring); under XLA
    the labels of such a batch are NaN.
    """
    if y_true.shape[axis] is not None and y_pred.shape[axis] is not None:
        return y_true
    width = ops.cast(ops.reshape(ops.shape(y_true)[axis], [1]), "float32")
    classes = ops.cast(ops.shape(y_pred)[axis], "float32")
    message = (
        f"Expected one-hot labels for `{loss}`: `y_true` must have the same "
        "shape as `y_pred`; integer class labels need "
        f"`{_OTHER_FORMAT[loss]}` (or `keras.utils.to_categorical`). Received: "
        "y_true with a class axis of size "
    )
    bad = ops.not_equal(width, classes)
    width = _checked(width, ops.logical_not(bad[0]), bad, message, np.nan)
    # Zero (NaN when poisoned) added after the check: the labels wait for it.
    return y_true + ops.cast(width[0] - width[0], y_true.dtype)


def check_sparse_shapes(
    y_true: Tensor,
    y_pred: Tensor,
    axis: int,
    loss: str = "sparse_categorical_crossentropy",
) -> None:
    """Static: labels for the sparse loss must be integer ids, not one-hot."""
    _check_several_classes(y_pred, axis, loss)
    same_rank = len(y_true.shape) == len(y_pred.shape)
    if same_rank and y_true.shape[axis] not in (1, None):
        raise ValueError(
            "Expected integer class ids in `y_true` (shape of `y_pred` without "
            f"the class axis) for `{loss}`; one-hot labels need "
            f"`{_OTHER_FORMAT[loss]}`. Received: "
            f"y_true.shape={tuple(y_true.shape)}, "
            f"y_pred.shape={tuple(y_pred.shape)}"
        )


def squeezed_ids(y_true: Tensor, axis: int, loss: str, classes: int | None) -> Tensor:
    """`y_true`, class ids with a class axis of size 1 (`check_sparse_shapes`
    passed), without that axis.

    Where its size is not static (a TensorFlow graph fed by a dataset with
    a loose label spec) it is checked when the step runs, as the labels'
    values are (see the module docstring): one-hot rows get
    `check_sparse_shapes`' message, not a failed squeeze; under XLA the ids
    of such a batch are `classes`, out of range (a NaN loss).
    """
    if y_true.shape[axis] is not None:
        return ops.squeeze(y_true, axis=axis)
    width = ops.cast(ops.reshape(ops.shape(y_true)[axis], [1]), "float32")
    message = (
        "Expected integer class ids in `y_true` (shape of `y_pred` without "
        f"the class axis) for `{loss}`; one-hot labels need "
        f"`{_OTHER_FORMAT[loss]}`. Received: y_true with a class axis of size "
    )
    bad = ops.not_equal(width, 1.0)
    ok = ops.logical_not(bad[0])
    width = _checked(width, ok, bad, message, width)
    # Index 0 along the axis, read after the check: the squeeze.
    ids = ops.take(y_true, ops.cast(width[0] - width[0], "int32"), axis=axis)
    poison = -1 if classes is None else classes
    return ops.where(ok, ids, ops.cast(poison, ids.dtype))


def check_sparse_values(
    y_true: Tensor,
    classes: int | None,
    ignore_class: int | None,
    loss: str = "sparse_categorical_crossentropy",
) -> Tensor:
    """Checks class ids are integers in `[0, classes)` (or `ignore_class`).

    Raises a `ValueError` for concrete labels; traced, see the module
    docstring (under XLA and JAX's `jit` an invalid batch's ids are replaced
    by `classes`, out of range, where the sparse losses give NaN). Returns
    `y_true`, to be used in place of the argument.
    """
    upper = classes if classes is not None else "num_classes"
    message = (
        f"Expected `y_true` for `{loss}` to hold "
        f"integer class ids in [0, {upper}). Received: y_true with values "
    )
    values = concrete_values(y_true)
    if values is not None:
        if ignore_class is not None:
            values = values[values != ignore_class]
        bad = (values != np.round(values)) | (values < 0)
        if classes is not None:
            bad |= values >= classes
        _raise_if_any(values[bad], message)
        return y_true
    valid = ops.greater_equal(y_true, 0)
    if classes is not None:
        valid = ops.logical_and(valid, ops.less(y_true, classes))
    if keras.backend.is_float_dtype(y_true.dtype):
        valid = ops.logical_and(valid, ops.equal(y_true, ops.round(y_true)))
    if ignore_class is not None:
        valid = ops.logical_or(valid, ops.equal(y_true, ignore_class))
    poison = -1 if classes is None else classes
    return _checked(y_true, ops.all(valid), ops.logical_not(valid), message, poison)


def validate_focal(
    alpha: float | Sequence[float],
    gamma: float,
    alpha_max: float | None,
    per_class: bool = False,
) -> tuple:
    """Checks focal `alpha` (in [0, alpha_max]; with `per_class` also a list
    or 1-D array of numbers >= 0, one per class, as Keras's categorical
    focal loss takes) and `gamma` (>= 0). Returns `alpha` as a float or a
    list of floats, and `gamma` as a float."""
    if per_class and is_per_class(alpha):
        alpha = per_class_values(alpha, "alpha")
    else:
        bound = " or a list of them, one per class" if per_class else ""
        alpha = _focal_number("alpha", alpha, alpha_max, bound)
    return alpha, _focal_number("gamma", gamma, None)


def _focal_number(name: str, value, high: float | None, more: str = "") -> float:
    """`value` as a float, checked finite, >= 0 and at most `high`."""
    if (
        not is_real(value)
        or not math.isfinite(value)
        or value < 0
        or (high is not None and value > high)
    ):
        bound = f"in [0, {high:g}]" if high is not None else ">= 0"
        raise ValueError(
            f"Argument `{name}` must be a finite float {bound}{more}. "
            f"Received: {name}={value!r}"
        )
    return float(value)


def validate_class_weights(
    class_weights: Sequence[float] | np.ndarray | None, length: int | None = None
) -> list[float] | None:
    """Checks a per-class weight vector and returns it as a list of floats.

    Args:
        class_weights: None, or a 1-D sequence of non-negative finite floats.
        length: Required length when known (2 for binary cross-entropy).

    Returns:
        None, or the weights as a list of Python floats (JSON-friendly, so it
        can go into `get_config`).
    """
    if class_weights is None:
        return None
    return per_class_values(class_weights, "class_weights", length)


def is_per_class(value) -> bool:
    """Whether `value` is given as one number per class (a list, tuple or
    array of one or more dimensions), not as one number for all."""
    return isinstance(value, (list, tuple, np.ndarray)) and np.ndim(value) > 0


def per_class_values(
    values: Sequence[float] | np.ndarray, name: str, length: int | None = None
) -> list[float]:
    """Checks the argument `name`, one non-negative finite number per class
    (`length` of them when known), and returns it as a list of Python
    floats."""
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0 or array.dtype.kind not in "iuf":
        raise ValueError(
            f"Argument `{name}` must be a non-empty 1-D list or array "
            f"of numbers. Received: {name}={values!r}"
        )
    array = array.astype("float64")
    if not np.isfinite(array).all() or (array < 0).any():
        raise ValueError(
            f"Argument `{name}` must hold finite, non-negative numbers. "
            f"Received: {name}={values!r}"
        )
    if length is not None and array.size != length:
        raise ValueError(
            f"Argument `{name}` must have {length} entries. Received: {name}={values!r}"
        )
    return [float(w) for w in array]


def check_per_class_length(
    weights: list[float], classes: int | None, name: str = "class_weights"
) -> None:
    """Call time: the per-class vector `name` must have one entry per class."""
    if classes is not None and len(weights) != classes:
        raise ValueError(
            f"Expected `{name}` to have one entry per class ({classes} "
            f"classes in `y_pred`). Received: {name}={weights} "
            f"({len(weights)} entries)"
        )


def validate_label_smoothing(label_smoothing: float) -> float:
    """Checks `label_smoothing` is a number in `[0, 1]`."""
    if not is_real(label_smoothing) or not 0 <= label_smoothing <= 1:
        raise ValueError(
            "Argument `label_smoothing` must be a float in [0, 1]. "
            f"Received: label_smoothing={label_smoothing!r}"
        )
    return float(label_smoothing)


def validate_axis(axis: int) -> int:
    """Checks `axis` is an int (not a bool)."""
    if not is_integral(axis):
        raise ValueError(f"Argument `axis` must be an int. Received: axis={axis!r}")
    return int(axis)


def validate_delta(delta: float) -> float:
    """Checks Huber's `delta` is a positive finite number."""
    if not is_real(delta) or not (delta > 0 and math.isfinite(delta)):
        raise ValueError(
            f"Argument `delta` must be a positive number. Received: delta={delta!r}"
        )
    return float(delta)


def validate_from_logits(from_logits: bool, name: str = "from_logits") -> bool:
    """Checks `from_logits` (or another flag, named `name`) is a bool."""
    if not isinstance(from_logits, (bool, np.bool_)):
        raise ValueError(
            f"Argument `{name}` must be a bool. Received: {name}={from_logits!r}"
        )
    return bool(from_logits)


def validate_check_labels(check_labels: bool) -> bool:
    """Checks `check_labels` is a bool."""
    if not isinstance(check_labels, (bool, np.bool_)):
        raise ValueError(
            "Argument `check_labels` must be a bool. "
            f"Received: check_labels={check_labels!r}"
        )
    return bool(check_labels)


def validate_ignore_class(ignore_class: int | None) -> int | None:
    """Checks `ignore_class` is None or an int."""
    if ignore_class is not None and not is_integral(ignore_class):
        raise ValueError(
            "Argument `ignore_class` must be an int or None. "
            f"Received: ignore_class={ignore_class!r}"
        )
    return None if ignore_class is None else int(ignore_class)
