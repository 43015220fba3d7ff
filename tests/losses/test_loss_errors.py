"""Every documented bad input raises a Keras-style error naming the fix."""

import re

import keras
import numpy as np
import pytest

from keras_actloss import losses
from tests.backend_support import tensorflow_only, traced

PROBS = np.array([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]], dtype="float32")
ONE_HOT = np.array([[0, 1, 0], [1, 0, 0]], dtype="float32")
SPARSE = np.array([1, 0], dtype="float32")


def raises(match):
    return pytest.raises(ValueError, match=re.escape(match))


# ------------------------------------------------------- label format mistakes
def test_integer_labels_to_categorical_point_to_sparse():
    for labels in (SPARSE, SPARSE[:, None]):  # shapes (N,) and (N, 1)
        with raises("integer class labels need `SparseCategoricalCrossentropy`"):
            losses.CategoricalCrossentropy()(labels, PROBS)
        with raises(f"Received: y_true.shape={labels.shape}"):
            losses.categorical_crossentropy(labels, PROBS)


def test_integer_labels_to_kl_divergence_name_the_format():
    # Class ids where distributions belong, of shape (N,) or (N, 1), called
    # or in `fit`: Keras's own KLDivergence broadcasts (N, 1) over the
    # classes, with no error.
    for labels in (SPARSE, SPARSE[:, None]):
        with raises(
            "Expected target distributions for `kl_divergence`: `y_true` must "
            "have the same shape as `y_pred`, one probability per class (class "
            "ids need `keras.utils.to_categorical`, or "
            "`SparseCategoricalCrossentropy` instead). Received: "
            f"y_true.shape={labels.shape}, y_pred.shape=(2, 3)"
        ):
            losses.KLDivergence()(labels, PROBS)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, "softmax")])
    model.compile(loss=losses.KLDivergence())
    with raises("Expected target distributions for `kl_divergence`"):
        model.fit(np.zeros((4, 2)), np.array([0, 1, 2, 1]), verbose=0)


def test_integer_labels_to_categorical_fail_in_graph_mode_too():
    loss = losses.CategoricalCrossentropy()
    with raises("SparseCategoricalCrossentropy"):
        traced(lambda y, p: loss(y, p))(SPARSE, PROBS)


def test_integer_labels_to_categorical_fail_in_model_fit():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, "softmax")])
    model.compile(loss=losses.CategoricalCrossentropy())
    with raises("SparseCategoricalCrossentropy"):
        model.fit(np.zeros((4, 2)), np.array([0, 1, 2, 1]), verbose=0)


def test_one_hot_labels_to_sparse_point_to_categorical():
    with raises("one-hot labels need `CategoricalCrossentropy`"):
        losses.SparseCategoricalCrossentropy()(ONE_HOT, PROBS)
    with raises("CategoricalCrossentropy"):
        traced(losses.SparseCategoricalCrossentropy())(ONE_HOT, PROBS)


def test_sparse_labels_out_of_range_name_the_value():
    for bad, shown in [(3.0, "[3]"), (-1.0, "[-1]"), (1.5, "[1.5]"), (7.0, "[7]")]:
        labels = np.array([1.0, bad])
        with raises(f"ids in [0, 3). Received: y_true with values {shown}"):
            losses.SparseCategoricalCrossentropy()(labels, PROBS)


def test_ignored_class_is_exempt_from_the_range_check():
    labels = np.array([1.0, 255.0])
    loss = losses.SparseCategoricalCrossentropy(ignore_class=255)
    # hand computed: only row 0 counts: -log(0.5)
    np.testing.assert_allclose(loss(labels, PROBS), np.log(2.0), rtol=1e-6)


def test_one_class_outputs_point_to_binary():
    with raises("Use `BinaryCrossentropy` for two classes"):
        losses.CategoricalCrossentropy()(np.ones((2, 1)), np.ones((2, 1)))
    with raises("Use `BinaryCrossentropy` for two classes"):
        losses.SparseCategoricalCrossentropy()(np.zeros((2,)), np.ones((2, 1)))


def test_binary_labels_outside_unit_interval():
    for bad in (2.0, -1.0, np.nan):
        labels = np.array([[0.0, bad]])
        with raises("`y_true` for `binary_crossentropy` to hold labels in [0, 1]"):
            losses.BinaryCrossentropy()(labels, np.array([[0.5, 0.5]]))


def test_binary_label_error_names_the_value():
    with raises("Received: y_true with values [2, 3]"):
        losses.binary_crossentropy(np.array([[0.0, 2.0, 3.0]]), np.full((1, 3), 0.5))


def test_categorical_and_kl_labels_outside_unit_interval():
    with raises("`categorical_crossentropy` to hold labels in [0, 1]"):
        losses.CategoricalCrossentropy()(ONE_HOT * 2, PROBS)
    with raises("`kl_divergence` to hold labels in [0, 1]"):
        losses.KLDivergence()(ONE_HOT * 2, PROBS)


def test_hinge_labels_must_be_signed_or_binary():
    with raises(
        "labels -1/1 (or 0/1, converted to -1/1). Received: y_true with values"
    ):
        losses.Hinge()(np.array([[0.5, 1.0]]), np.array([[0.2, 0.3]]))
    with raises("Received: y_true with values [0]"):
        losses.hinge(np.array([[-1.0, 0.0, 1.0]]), np.zeros((1, 3)))


# --------------------------------------------- value checks in traced code
# name: (loss, labels, predictions, the message the eager call raises)
TRACED_MISTAKES = {
    "binary_signed": (
        losses.BinaryCrossentropy(), np.array([[-1.0, 1.0], [1.0, -1.0]]),
        np.full((2, 2), 0.5),
        "Expected `y_true` for `binary_crossentropy` to hold labels in [0, 1]. "
        "Received: y_true with values [-1]",
    ),
    "binary_nan": (
        losses.BinaryCrossentropy(from_logits=True), np.array([[0.0, np.nan]]),
        np.zeros((1, 2)),
        "Expected `y_true` for `binary_crossentropy` to hold labels in [0, 1]. "
        "Received: y_true with values [nan]",
    ),
    "categorical": (
        losses.CategoricalCrossentropy(), ONE_HOT * 2, PROBS,
        "Expected `y_true` for `categorical_crossentropy` to hold labels in "
        "[0, 1]. Received: y_true with values [2]",
    ),
    "kl": (
        losses.KLDivergence(), -ONE_HOT, PROBS,
        "Expected `y_true` for `kl_divergence` to hold labels in [0, 1]. "
        "Received: y_true with values [-1]",
    ),
    "sparse_above": (
        losses.SparseCategoricalCrossentropy(), np.array([1.0, 3.0]), PROBS,
        "Expected `y_true` for `sparse_categorical_crossentropy` to hold integer "
        "class ids in [0, 3). Received: y_true with values [3]",
    ),
    "sparse_int_negative": (
        losses.SparseCategoricalCrossentropy(), np.array([-1, 7]), PROBS,
        "Expected `y_true` for `sparse_categorical_crossentropy` to hold integer "
        "class ids in [0, 3). Received: y_true with values [-1, 7]",
    ),
    "sparse_fraction": (
        losses.SparseCategoricalCrossentropy(), np.array([[1.5], [0.0]]), PROBS,
        "Expected `y_true` for `sparse_categorical_crossentropy` to hold integer "
        "class ids in [0, 3). Received: y_true with values [1.5]",
    ),
    "hinge_mixed": (
        losses.Hinge(), np.array([[-1.0, 0.0, 1.0]]), np.zeros((1, 3)),
        "Expected `y_true` for `hinge` to hold labels -1/1 (or 0/1, converted "
        "to -1/1). Received: y_true with values [0]",
    ),
    "many_values": (
        losses.BinaryCrossentropy(), np.arange(2.0, 9.0)[None], np.full((1, 7), 0.5),
        "Expected `y_true` for `binary_crossentropy` to hold labels in [0, 1]. "
        "Received: y_true with values [2, 3, 4, 5, 6, ...]",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(TRACED_MISTAKES))
def test_eager_label_checks_raise_the_message(name):
    loss, labels, preds, message = TRACED_MISTAKES[name]
    dtype = "int32" if labels.dtype.kind == "i" else "float32"
    with raises(message):
        loss(labels.astype(dtype), preds.astype("float32"))


@tensorflow_only
@pytest.mark.parametrize("name", sorted(TRACED_MISTAKES))
def test_traced_label_checks_raise_the_eager_message(name):
    import tensorflow as tf

    loss, labels, preds, message = TRACED_MISTAKES[name]
    dtype = "int32" if labels.dtype.kind == "i" else "float32"
    labels, preds = labels.astype(dtype), preds.astype("float32")
    with raises(message):
        loss(labels, preds)
    # Traced: TensorFlow's assertion error ends with the same message.
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=re.escape(f"assertion failed: [{message}]"),
    ):
        tf.function(loss)(labels, preds)


@pytest.mark.parametrize("name", sorted(TRACED_MISTAKES))
def test_traced_label_checks_give_nan_under_xla(name):
    # XLA (and JAX's jit) drops assertions: an invalid batch gets a NaN loss,
    # not a wrong one.
    loss, labels, preds, _ = TRACED_MISTAKES[name]
    dtype = "int32" if labels.dtype.kind == "i" else "float32"
    value = traced(loss, jit_compile=True)(
        labels.astype(dtype), preds.astype("float32")
    )
    assert np.isnan(float(value))


@pytest.mark.parametrize("name", sorted(TRACED_MISTAKES))
def test_check_labels_false_skips_the_value_checks(name):
    loss, labels, preds, _ = TRACED_MISTAKES[name]
    if "sparse" in name:  # TensorFlow's kernel rejects invalid ids itself.
        return
    unchecked = type(loss).from_config({**loss.get_config(), "check_labels": False})
    # Unchecked, the loss is Keras's own formula on whatever labels it gets.
    config = {k: v for k, v in loss.get_config().items() if k != "class_weights"}
    config.pop("check_labels", None)
    keras_loss = getattr(keras.losses, type(loss).__name__).from_config(config)
    y_true, y_pred = labels.astype("float32"), preds.astype("float32")
    expected = keras_loss(y_true, y_pred)
    for call in (unchecked, traced(unchecked)):
        np.testing.assert_allclose(call(y_true, y_pred), expected, rtol=1e-6)


@tensorflow_only
def test_check_labels_false_adds_no_op_to_the_graph():
    import tensorflow as tf

    def op_types(loss):
        graph = (
            tf.function(loss)
            .get_concrete_function(
                tf.TensorSpec((None,), "int32"), tf.TensorSpec((None, 3), "float32")
            )
            .graph
        )
        return {op.type for op in graph.get_operations()}

    checked = op_types(losses.SparseCategoricalCrossentropy())
    unchecked = op_types(losses.SparseCategoricalCrossentropy(check_labels=False))
    assert "If" in checked or "StatelessIf" in checked
    assert not unchecked & {"If", "StatelessIf", "Assert", "All"}


def test_valid_labels_traced_give_kerass_numbers():
    cases = [
        (losses.BinaryCrossentropy(), keras.losses.BinaryCrossentropy(),
         np.array([[0.0, 1.0]]), np.array([[0.3, 0.6]])),
        (losses.SparseCategoricalCrossentropy(),
         keras.losses.SparseCategoricalCrossentropy(), SPARSE, PROBS),
        (losses.CategoricalCrossentropy(), keras.losses.CategoricalCrossentropy(),
         ONE_HOT, PROBS),
        (losses.Hinge(), keras.losses.Hinge(), np.array([[0.0, 1.0]]),
         np.array([[0.3, -0.6]])),
    ]  # fmt: skip
    for ours, theirs, labels, preds in cases:
        labels, preds = labels.astype("float32"), preds.astype("float32")
        expected = theirs(labels, preds)
        for jit in (False, True):
            actual = traced(ours, jit_compile=jit)(labels, preds)
            np.testing.assert_allclose(actual, expected, rtol=1e-6)


def test_ignored_class_is_exempt_from_the_traced_check():
    loss = traced(losses.SparseCategoricalCrossentropy(ignore_class=255))
    # hand computed: only row 0 counts: -log(0.5)
    value = loss(np.array([1, 255], dtype="int32"), PROBS)
    np.testing.assert_allclose(value, np.log(2.0), rtol=1e-6)


def _fit(output, loss, labels, jit_compile=False):
    model = keras.Sequential([keras.Input((2,)), output])
    model.compile(optimizer="sgd", loss=loss, jit_compile=jit_compile)
    return model.fit(np.ones((4, 2)), labels, batch_size=4, verbose=0)


@tensorflow_only
def test_signed_labels_to_sigmoid_bce_fail_in_model_fit():
    # Used to train silently on a wrong loss (issue 13). (On JAX the step is
    # always compiled: a NaN loss, as under XLA below.)
    import tensorflow as tf

    sigmoid = keras.layers.Dense(1, activation="sigmoid")
    labels = np.array([-1.0, 1.0, 1.0, -1.0])
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=re.escape(
            "assertion failed: [Expected `y_true` for `binary_crossentropy` to "
            "hold labels in [0, 1]. Received: y_true with values [-1]]"
        ),
    ):
        _fit(sigmoid, losses.BinaryCrossentropy(), labels)


@tensorflow_only
def test_sparse_ids_out_of_range_fail_in_model_fit_with_our_message():
    # Used to fail with TensorFlow's kernel message (issue 13): ours comes
    # first because the kernel's input waits on the assertion.
    import tensorflow as tf

    softmax = keras.layers.Dense(3, activation="softmax")
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=re.escape(
            "assertion failed: [Expected `y_true` for "
            "`sparse_categorical_crossentropy` to hold integer class ids in "
            "[0, 3). Received: y_true with values [5]]"
        ),
    ):
        _fit(softmax, losses.SparseCategoricalCrossentropy(), np.array([0, 1, 5, 2]))


def test_bad_labels_in_model_fit_under_xla_give_nan_loss():
    # jit_compile=True: XLA on TensorFlow; JAX's train step is always jitted.
    sigmoid = keras.layers.Dense(1, activation="sigmoid")
    labels = np.array([-1.0, 1.0, 1.0, -1.0])
    history = _fit(sigmoid, losses.BinaryCrossentropy(), labels, jit_compile=True)
    assert np.isnan(history.history["loss"][0])
    good = _fit(
        keras.layers.Dense(1, activation="sigmoid"),
        losses.BinaryCrossentropy(),
        (labels + 1) / 2,
        jit_compile=True,
    )
    assert np.isfinite(good.history["loss"][0])


# ---------------------------------------------------------------- arguments
def test_bad_class_weights():
    # 2-D, empty, negative, infinite, NaN, not numbers
    bad = [[[1.0, 2.0]], [], [1.0, -1.0], [1.0, np.inf], [1.0, np.nan], ["a", "b"]]
    for weights in bad:
        with raises("Argument `class_weights` must"):
            losses.CategoricalCrossentropy(class_weights=weights)
        with raises(f"Received: class_weights={weights!r}"):
            losses.SparseCategoricalCrossentropy(class_weights=weights)


def test_binary_class_weights_need_two_entries():
    with raises("Argument `class_weights` must have 2 entries"):
        losses.BinaryCrossentropy(class_weights=[1.0, 2.0, 3.0])


def test_class_weights_length_checked_against_classes_at_call_time():
    message = "one entry per class (3 classes in `y_pred`)"
    with raises(message):
        losses.CategoricalCrossentropy(class_weights=[1.0, 2.0])(ONE_HOT, PROBS)
    with raises(message):
        losses.SparseCategoricalCrossentropy(class_weights=[1.0] * 4)(SPARSE, PROBS)


def test_bad_huber_delta():
    for delta in (0.0, -1.0, np.inf, True, "1"):
        with raises(f"`delta` must be a positive number. Received: delta={delta!r}"):
            losses.Huber(delta=delta)


def test_numpy_numbers_are_taken_as_keras_takes_them():
    # A sweep's `np.int64(2)` delta or `np.float32(0.1)` smoothing: Keras
    # takes them, and so do we, with Keras's numbers (bools stay refused).
    y_true = np.array([[0.0, 1.5], [2.0, -1.0]], dtype="float32")
    y_pred = np.array([[0.5, -1.0], [4.0, 0.0]], dtype="float32")
    for delta in (np.int64(2), np.int32(1), np.float32(0.5)):
        np.testing.assert_allclose(
            losses.Huber(delta=delta)(y_true, y_pred),
            keras.losses.Huber(delta=float(delta))(y_true, y_pred),
            rtol=1e-6,
        )
        np.testing.assert_allclose(
            losses.huber(y_true, y_pred, delta=delta),
            keras.losses.huber(y_true, y_pred, delta=float(delta)),
            rtol=1e-6,
        )
    for smoothing in (np.float32(0.1), np.int64(0)):
        np.testing.assert_allclose(
            losses.CategoricalCrossentropy(label_smoothing=smoothing)(ONE_HOT, PROBS),
            keras.losses.CategoricalCrossentropy(label_smoothing=float(smoothing))(
                ONE_HOT, PROBS
            ),
            rtol=1e-6,
        )
    labels = np.array([1, 0], dtype="int32")
    np.testing.assert_allclose(
        losses.SparseCategoricalCrossentropy(ignore_class=np.int64(1))(labels, PROBS),
        keras.losses.SparseCategoricalCrossentropy(ignore_class=1)(labels, PROBS),
        rtol=1e-6,
    )
    with raises("Received: delta=np.True_"):
        losses.Huber(delta=np.bool_(True))
    with raises("Received: delta=np.float64(nan)"):
        losses.huber(y_true, y_pred, delta=np.float64("nan"))


def test_bad_label_smoothing():
    for smoothing in (-0.1, 1.5, True, "0.1"):
        for cls in (losses.BinaryCrossentropy, losses.CategoricalCrossentropy):
            with raises(f"Received: label_smoothing={smoothing!r}"):
                cls(label_smoothing=smoothing)


def test_bad_axis_from_logits_ignore_class_and_reduction():
    with raises("Argument `axis` must be an int. Received: axis=True"):
        losses.CategoricalCrossentropy(axis=True)
    with raises("Argument `from_logits` must be a bool. Received: from_logits='yes'"):
        losses.BinaryCrossentropy(from_logits="yes")
    with raises("Argument `ignore_class` must be an int or None"):
        losses.SparseCategoricalCrossentropy(ignore_class=1.5)
    with raises("Argument `check_labels` must be a bool. Received: check_labels=1"):
        losses.BinaryCrossentropy(check_labels=1)
    with raises("Invalid value for argument `reduction`"):
        losses.MeanSquaredError(reduction="average")


def test_unknown_names_in_get():
    with raises("Could not interpret loss identifier. Expected one of"):
        losses.get("not_a_loss")
    with raises("Received: identifier=42"):
        losses.get(42)


@tensorflow_only
@pytest.mark.parametrize("labels", ["one_hot", "ids"])
def test_sparse_labels_of_unknown_width_are_checked_when_run(labels):
    # A dataset with a loose label spec (`TensorSpec((None, None))`): the
    # class axis's size is known only when the step runs. One-hot rows get
    # the message of the static check (was TensorFlow's "Cannot squeeze
    # axis=-1"); ids with a trailing axis of 1 give the loss of the ids.
    import tensorflow as tf

    loss = losses.SparseCategoricalCrossentropy(from_logits=True)
    preds = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]], "float32")
    ids = np.array([[0.0], [2.0]], "float32")
    spec = (tf.TensorSpec((None, None)), tf.TensorSpec((None, 3)))
    traced_loss = tf.function(loss, input_signature=spec)
    if labels == "ids":
        expected = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
            ids, preds
        )
        np.testing.assert_allclose(traced_loss(ids, preds), expected, rtol=1e-6)
        return
    one_hot = np.eye(3, dtype="float32")[[0, 2]]
    message = (
        "Expected integer class ids in `y_true` (shape of `y_pred` without the "
        "class axis) for `sparse_categorical_crossentropy`; one-hot labels need "
        "`CategoricalCrossentropy`. Received: y_true with a class axis of size [3]"
    )
    # Under XLA the batch's loss is NaN, not that of column 0.
    asserted_or_nan(loss, spec, one_hot, preds, message)


def asserted_or_nan(loss, spec, y_true, y_pred, message):
    """`loss` traced with `spec` fails with `message`'s graph assertion on
    `(y_true, y_pred)`; under XLA, which drops assertions, it is NaN."""
    import tensorflow as tf

    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=re.escape(f"assertion failed: [{message}]"),
    ):
        tf.function(loss, input_signature=spec)(y_true, y_pred)
    xla = tf.function(loss, input_signature=spec, jit_compile=True)
    assert np.isnan(float(xla(y_true, y_pred)))


@tensorflow_only
@pytest.mark.parametrize(
    "loss",
    [losses.CategoricalCrossentropy(), losses.CategoricalFocalCrossentropy()],
    ids=lambda loss: loss.name,
)
def test_one_hot_labels_of_unknown_width_are_checked_when_run(loss):
    # The same loose label spec under a one-hot loss: class ids of shape
    # (batch, 1) in {0, 1} were broadcast over the 3 classes, a wrong loss
    # and no error; they get the static check's message. One-hot rows give
    # Keras's numbers.
    import tensorflow as tf

    preds = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], "float32")
    spec = (tf.TensorSpec((None, None)), tf.TensorSpec((None, None)))
    traced_loss = tf.function(loss, input_signature=spec)
    one_hot = np.eye(3, dtype="float32")[[0, 2]]
    keras_loss = getattr(keras.losses, type(loss).__name__)()
    np.testing.assert_allclose(
        traced_loss(one_hot, preds), keras_loss(one_hot, preds), rtol=1e-6
    )
    message = (
        f"Expected one-hot labels for `{loss.name}`: `y_true` must have the "
        "same shape as `y_pred`; integer class labels need "
        f"`Sparse{type(loss).__name__}` (or `keras.utils.to_categorical`). "
        "Received: y_true with a class axis of size [1]"
    )
    asserted_or_nan(loss, spec, np.array([[0.0], [1.0]], "float32"), preds, message)
    xla = tf.function(loss, input_signature=spec, jit_compile=True)
    np.testing.assert_allclose(
        xla(one_hot, preds), keras_loss(one_hot, preds), rtol=1e-6
    )
