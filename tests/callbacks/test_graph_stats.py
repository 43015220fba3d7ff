"""Tests for the TensorFlow-side helpers of keras_actloss.callbacks._graph_reads
(the shared statistics are tested in tests/diagnostics/test_step_stats.py, the
shared host functions in test_step_rows.py)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_actloss.callbacks._graph_reads import _additive_updates, _read_in


def _updates_of(write):
    """`_additive_updates` for five variables, each written by `write(i, v)`.

    Returns the update tensors' values (None where there is none).
    """
    variables = [
        tf.Variable(np.full((2, 3), float(i + 1), "float32")) for i in range(5)
    ]
    delta = tf.constant(np.arange(6, dtype="float32").reshape(2, 3))

    @tf.function
    def step():
        reads = [tf.convert_to_tensor(v) for v in variables]
        graph = tf.compat.v1.get_default_graph()
        start = len(graph.get_operations())
        for i, v in enumerate(variables):
            write(i, v, delta)
        found = _additive_updates(reads, graph.get_operations()[start:])
        return [tf.zeros([0]) if u is None else u for u in found]

    return [None if u.shape == (0,) else u.numpy() for u in step()]


def test_additive_updates_finds_one_additive_update():
    def write(i, v, delta):
        if i == 0:
            v.assign_sub(delta * 0.5)  # The SGD update.
        elif i == 1:
            v.assign_add(delta)  # SGD with momentum adds the velocity.
        elif i == 2:
            v.assign(v - delta)  # An assign: no update tensor.
        elif i == 3:
            v.assign_sub(delta * 0.25)  # AdamW: weight decay, then the update.
            v.assign_add(delta)
        # Variable 4 is only read.

    found = _updates_of(write)
    delta = np.arange(6, dtype="float32").reshape(2, 3)
    np.testing.assert_array_equal(found[0], delta * 0.5)
    np.testing.assert_array_equal(found[1], delta)
    assert found[2] is None and found[4] is None
    # The signed sum of several additive updates: -0.25 delta + delta.
    np.testing.assert_allclose(found[3], 0.75 * delta)


def test_additive_updates_ignores_updates_it_cannot_see_into():
    def write(i, v, delta):
        if i == 0:  # Inside a cond: the handle goes into the If op.
            tf.cond(tf.reduce_sum(delta) > 0, lambda: v.assign_sub(delta), lambda: v)
        elif i == 1:  # A sparse update.
            v.scatter_sub(tf.IndexedSlices(delta[:1], tf.constant([0])))
        elif i == 2:  # An additive update plus an assign (a constraint).
            v.assign_sub(delta)
            v.assign(tf.clip_by_value(v, -1.0, 1.0))

    assert _updates_of(write)[:3] == [None, None, None]


def test_read_in_finds_the_forward_pass_read_of_a_variable():
    """The weights before the update are the layers' own reads (no graph op
    of ours): this fails when TensorFlow's capture of a variable handle or
    `Tensor.consumers` change, instead of silently adding the reads back."""
    dense = keras.layers.Dense(3)
    dense.build((None, 2))
    unread = keras.Variable(np.ones((2, 2), "float32"))
    written = keras.Variable(np.ones((3,), "float32"))
    found = {}

    @tf.function
    def step(x):
        y = dense(x) + written
        written.assign_add(tf.ones((3,)))  # Its read precedes a write.
        graph = tf.compat.v1.get_default_graph()
        ops = len(graph.get_operations())
        kernel, bias = (_read_in(graph, v) for v in (dense.kernel, dense.bias))
        found["new ops"] = len(graph.get_operations()) - ops
        found["unread"] = _read_in(graph, unread)
        found["written"] = _read_in(graph, written)
        found["types"] = {t.op.type for t in (kernel, bias)}
        return y, kernel, bias

    _, kernel, bias = step(tf.ones((4, 2)))
    assert found == {
        "new ops": 0,
        "unread": None,
        "written": None,
        "types": {"ReadVariableOp"},
    }
    np.testing.assert_array_equal(kernel, dense.kernel.numpy())
    np.testing.assert_array_equal(bias, dense.bias.numpy())


def test_the_rows_of_a_step_share_one_constant_of_segment_ids(tmp_path):
    """The gradients', weights' and updates' rows of a full step have the
    same small tensors: one constant of their segment ids (an element per
    element of them) serves the five segment reductions (`step_stats._tf_constants`),
    where each row made its own (MobileNetV2's full train function: 3.5 MB
    of graph, 2.3 MB with one), and no constant is there twice. The norms
    read through it equal a `GradientTape`'s of the same first step."""
    from keras_actloss.callbacks import GradientDiagnostics

    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [keras.Input((24,))]
        + [keras.layers.Dense(24, activation="relu", name=f"d{i}") for i in range(3)]
        + [keras.layers.Dense(1, name="out")]
    )
    model.compile(keras.optimizers.SGD(0.01), "mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 24)).astype("float32")
    y = rng.normal(size=(64, 1)).astype("float32")
    start = [v.numpy() for v in model.trainable_variables]
    graphs = []
    train_step = model.train_step

    def step(data):
        graphs.append(tf.compat.v1.get_default_graph())
        return train_step(data)

    model.train_step = step
    cb = GradientDiagnostics(log_dir=str(tmp_path), check_model=False)
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=[cb])

    assert len(graphs) == 1  # Traced once.
    large = {}
    for op in graphs[0].get_operations():
        if op.type == "Const":
            value = tf.make_ndarray(op.get_attr("value"))
            if value.size >= 1000:
                large.setdefault(value.tobytes(), []).append(op)
    # Every tensor is small (kernels of 576 elements or fewer, biases):
    # 1825 = 3 * (24 * 24 + 24) + 24 + 1 elements. The segment ids and the
    # histogram sample's positions (every element: each layer has fewer
    # than the sample's size); no mask of the vectors among them (the
    # silent units are counted on a concat of the vectors).
    assert (
        sorted((len(ops), ops[0].outputs[0].shape[0]) for ops in large.values())
        == [(1, 1825)] * 2
    )
    # In the row's order (`row_layout`): tensors of one shape side by side,
    # the three 24x24 kernels first (one stack), then the 24-unit biases.
    ids = np.repeat(np.arange(8), [576, 576, 576, 24, 24, 24, 24, 1]).astype("int32")
    (const,) = large[ids.tobytes()]
    users = sorted(op.type for op in const.outputs[0].consumers())
    assert (
        users
        == ["UnsortedSegmentMax", "UnsortedSegmentMin"] + ["UnsortedSegmentSum"] * 3
    )

    for v, value in zip(model.trainable_variables, start):
        v.assign(value)
    with tf.GradientTape() as tape:
        loss = keras.losses.MeanSquaredError()(y[:32], model(x[:32]))
    grads = tape.gradient(loss, model.trainable_variables)
    expected = {}
    for v, g in zip(model.trainable_variables, grads):
        layer = v.path.split("/")[-2]
        expected[layer] = expected.get(layer, 0.0) + float(np.sum(g.numpy() ** 2))
    first = cb.history[0]
    assert first.step == 0
    recorded = {ls.layer: ls.grad_norm for ls in first.layers}
    for layer, square in expected.items():
        assert recorded[layer] == pytest.approx(np.sqrt(square), rel=1e-5)


def _traced_modes(model, cb, x, y, **fit):
    """The modes of the train functions `fit` traced (one per trace)."""
    modes = []
    train_step = model.train_step

    def step(data):
        modes.append(cb._hooks._local.mode)
        return train_step(data)

    model.train_step = step
    model.fit(x, y, verbose=0, callbacks=[cb], shuffle=False, **fit)
    return modes


@pytest.mark.parametrize("xla", [False, True])
def test_steps_per_execution_traces_the_full_function_once(tmp_path, xla):
    """With several steps per execution the activation counts are summed
    over the execution in a variable: made before the step is traced, as a
    variable made in `fit`'s first trace makes TensorFlow trace the whole
    train step twice (under XLA too: given the step's length when traced).
    The sums still count every batch of the execution."""
    from keras_actloss.callbacks import GradientDiagnostics

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(6, activation="relu", name="h")]
        + [keras.layers.Dense(1, name="out")]
    )
    model.compile(
        keras.optimizers.SGD(0.0), "mse", steps_per_execution=4, jit_compile=xla
    )
    x = np.random.default_rng(0).normal(size=(256, 4)).astype("float32")
    y = np.zeros((256, 1), "float32")
    cb = GradientDiagnostics(log_dir=str(tmp_path), check_model=False)
    assert _traced_modes(model, cb, x, y, batch_size=32) == ["full"]
    # The learning rate is 0: the first execution's 4 batches of 32 samples
    # see the initial weights; each unit's active fraction is NumPy's.
    kernel, bias = (v.numpy() for v in model.get_layer("h").weights)
    active = (x[:128] @ kernel + bias > 0).mean()
    first = cb.history[0]
    assert first.batch_size == 128
    (hidden,) = [ls for ls in first.layers if ls.layer == "h"]
    assert hidden.zero_fraction == pytest.approx(1.0 - active, abs=1e-6)


def test_under_xla_the_kept_rows_are_made_before_the_trace(tmp_path):
    """Under `jit_compile=True` the kept batch rows are variables of static
    shapes (`PaddedRows`): made from the iterator's element spec before
    `fit` first traces the step, not in that trace (which made TensorFlow
    trace the whole train step twice). The label check still reads the
    first batch's labels."""
    from keras_actloss.callbacks import GradientDiagnostics

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(6, activation="relu", name="h")]
        + [keras.layers.Dense(1, name="out")]
    )
    model.compile(keras.optimizers.Adam(1e-3), "mae", jit_compile=True)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = rng.normal(1e4, 2e3, size=(64, 1)).astype("float32")
    cb = GradientDiagnostics(log_dir=str(tmp_path))
    with pytest.warns(UserWarning, match="unscaled_regression_targets"):
        assert _traced_modes(model, cb, x, y, batch_size=16) == ["full"]
    assert [f.mode for f in cb.findings] == ["unscaled_regression_targets"]
    # The labels kept are the last full step's batch: 16 rows of y.
    kept = cb._hooks.read_labels()
    assert kept.shape == (16, 1)
    assert any(np.array_equal(kept, y[i : i + 16]) for i in range(0, 64, 16))


def test_under_xla_each_output_s_labels_are_kept_before_the_trace(tmp_path):
    """A model of two outputs under `jit_compile=True`: a `PaddedRows` per
    label tensor, made from the element spec before the first trace (no
    trace more than a plain `fit`'s: Keras traces this model's step twice
    itself), each holding its output's rows of the recorded batch."""
    from keras_actloss.callbacks import GradientDiagnostics

    def build():
        keras.utils.set_random_seed(0)
        inputs = keras.Input((4,))
        hidden = keras.layers.Dense(6, activation="relu", name="h")(inputs)
        model = keras.Model(
            inputs,
            [
                keras.layers.Dense(1, name="value")(hidden),
                keras.layers.Dense(3, activation="softmax", name="kind")(hidden),
            ],
        )
        model.compile(
            keras.optimizers.Adam(1e-3),
            {"value": "mae", "kind": "categorical_crossentropy"},
            jit_compile=True,
        )
        return model

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    value = rng.normal(1e4, 2e3, size=(64, 1)).astype("float32")
    kind = np.eye(3, dtype="float32")[rng.integers(0, 3, size=64)]
    y = {"value": value, "kind": kind}
    plain, traces = build(), []
    train_step = plain.train_step
    plain.train_step = lambda data: traces.append(1) or train_step(data)
    plain.fit(x, y, batch_size=16, verbose=0, shuffle=False)
    cb = GradientDiagnostics(log_dir=str(tmp_path))
    with pytest.warns(UserWarning, match="unscaled_regression_targets"):
        modes = _traced_modes(build(), cb, x, y, batch_size=16)
    assert modes == ["full"] * len(traces)
    assert [(f.mode, f.layer) for f in cb.findings] == [
        ("unscaled_regression_targets", "value")
    ]
    kept = cb._hooks.read_labels()
    assert sorted(kept) == ["kind", "value"]
    assert kept["value"].shape == (16, 1) and kept["kind"].shape == (16, 3)
    # The same batch of both: the last full step's.
    (at,) = [
        i for i in range(0, 64, 16) if np.array_equal(kept["value"], value[i : i + 16])
    ]
    np.testing.assert_array_equal(kept["kind"], kind[at : at + 16])
