"""Tests for the Keras-internals module behind GradientDiagnostics."""

import inspect
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from callback_models import build_model, weights
from keras.src.backend.tensorflow.trainer import TensorFlowTrainer
from keras.src.optimizers.base_optimizer import BaseOptimizer

from keras_actloss.callbacks import GradientDiagnostics, _keras_hooks, _model_plan


def test_keras_internals_we_rely_on_exist():
    # Fails loudly when a Keras upgrade moves what the hooks wrap.
    _keras_hooks.check_internals()
    assert list(inspect.signature(TensorFlowTrainer._make_function).parameters) == [
        "self",
        "step_function",
    ]
    source = inspect.getsource(TensorFlowTrainer.train_step)
    # The hooks see the loss through `scale_loss` and the gradients through
    # `apply_gradients` -> `apply`.
    assert "self.optimizer.scale_loss(loss)" in source
    assert "self.optimizer.apply_gradients(" in source
    assert "self.apply(grads, trainable_variables)" in inspect.getsource(
        BaseOptimizer.apply_gradients
    )
    # `fit` reads `self.train_function` afresh on every batch, after
    # `on_train_batch_begin`, which is how the two train functions swap.
    fit = inspect.getsource(TensorFlowTrainer.fit)
    assert fit.index("callbacks.on_train_batch_begin") < fit.index(
        "logs = self.train_function(iterator)"
    )


def test_check_internals_fails_loudly_when_keras_changes(monkeypatch):
    monkeypatch.delattr(TensorFlowTrainer, "_make_function")
    with pytest.raises(RuntimeError, match="_make_function"):
        _keras_hooks.check_internals()


def test_check_internals_notices_a_changed_signature(monkeypatch):
    def apply(self, gradients, variables=None):
        raise AssertionError

    monkeypatch.setattr(BaseOptimizer, "apply", apply)
    with pytest.raises(RuntimeError, match="apply"):
        _keras_hooks.check_internals()


def test_plan_layers_names_profiles_and_channel_axis():
    class Block(keras.layers.Layer):
        """A composite layer with a weight of its own and a sublayer."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.inner = keras.layers.Dense(4, name="inner")

        def build(self, shape):
            self.scale = self.add_weight(shape=(4,), name="scale")
            self.inner.build(shape)

        def call(self, x):
            return self.inner(x) * self.scale

    inp = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(3, 3, activation="relu", name="conv")(inp)
    x = keras.layers.Conv2D(2, 1, data_format="channels_first", name="cf")(x)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dense(4, name="dense")(x)
    x = keras.layers.LeakyReLU(name="leaky")(x)
    x = keras.layers.Activation("sigmoid", name="act")(x)
    x = Block(name="block")(x)
    model = keras.Model(inp, x)
    plans = _model_plan.plan_layers(model)
    got = [
        (p.info.name, p.info.activation, p.info.has_trainable_weights) for p in plans
    ]
    assert got == [
        ("conv", "relu", True),
        ("cf", None, True),
        ("dense", None, True),
        ("leaky", "leaky_relu", False),
        ("act", "sigmoid", False),
        ("block", None, True),
        ("block/inner", None, True),
    ]
    assert [p.info.depth for p in plans] == list(range(7))
    axes = {p.info.name: p.channel_axis for p in plans}
    assert axes["cf"] == 1 and axes["conv"] == -1
    block = plans[5]
    assert [v.name for v in block.variables] == ["scale"]


def _instance_attrs(model):
    found = []
    if "make_train_function" in model.__dict__:
        found.append("model.make_train_function")
    for name in ("apply", "scale_loss"):
        if name in model.optimizer.__dict__:
            found.append(f"optimizer.{name}")
    for layer in model._flatten_layers():
        if "call" in layer.__dict__:
            found.append(f"{layer.name}.call")
    return found


@pytest.mark.parametrize("kind", ["sequential", "nested", "subclassed"])
def test_hooks_are_undone_after_fit(kind, data, tmp_path):
    x, y = data
    model = build_model(kind)
    twin = build_model(kind)
    for m in (model, twin):
        m.compile(keras.optimizers.SGD(0.1), "mse")
    checkpoint = keras.callbacks.ModelCheckpoint(
        str(tmp_path / "ckpt.weights.h5"), save_weights_only=True
    )
    diag = GradientDiagnostics(every_n_steps=2, check_model=False)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[diag, checkpoint])
    assert _instance_attrs(model) == []
    assert model.train_function is not None
    # The checkpoint written during fit holds the final weights.
    restored = build_model(kind)
    restored.load_weights(str(tmp_path / "ckpt.weights.h5"))
    for a, b in zip(weights(restored), weights(model)):
        np.testing.assert_array_equal(a, b)
    # Training afterwards is plain SGD: same update as an untouched twin.
    twin.set_weights(model.get_weights())
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    twin.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(weights(model), weights(twin)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_model_saves_and_loads_during_and_after_fit(data, tmp_path):
    x, y = data
    model = build_model("functional")
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    path = str(tmp_path / "model.keras")
    checkpoint = keras.callbacks.ModelCheckpoint(path)
    diag = GradientDiagnostics(every_n_steps=1, check_model=False)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[diag, checkpoint])
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6
    )
    assert "apply" not in loaded.optimizer.__dict__
    model.save(tmp_path / "after.keras")
    again = keras.models.load_model(tmp_path / "after.keras")
    again.fit(x, y, batch_size=8, epochs=1, verbose=0)


class _Resolver:
    def __init__(self, task_type, task_id, jobs):
        self.task_type, self.task_id, self._jobs = task_type, task_id, jobs

    def cluster_spec(self):
        return tf.train.ClusterSpec(self._jobs)


class _Strategy:
    def __init__(self, resolver):
        self.cluster_resolver = resolver


@pytest.mark.parametrize(
    "task_type, task_id, chief_job, expected",
    [
        ("worker", 0, False, True),  # Worker 0 of a cluster without a chief.
        ("worker", 1, False, False),
        ("worker", 0, True, False),  # A cluster with a chief task.
        ("chief", 0, True, True),
        (None, None, False, True),  # No cluster.
    ],
)
def test_only_the_chief_writes_logs(task_type, task_id, chief_job, expected):
    jobs = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    if chief_job:
        jobs["chief"] = ["127.0.0.1:3"]
    resolver = _Resolver(task_type, task_id, jobs)
    assert _keras_hooks.is_chief(_Strategy(resolver)) is expected
    assert _keras_hooks.is_chief(tf.distribute.get_strategy()) is True


def test_multi_worker_is_the_test_keras_reduces_outputs_by():
    # `reduce_per_replica` means each step output over axis 0 across workers
    # when Keras's own check holds (tests/callbacks/test_multi_worker.py).
    from keras.src.backend.tensorflow import trainer

    for strategy in (
        tf.distribute.get_strategy(),
        tf.distribute.MirroredStrategy(["/cpu:0"]),
    ):
        expected = trainer._collective_all_reduce_multi_worker(strategy)
        assert _keras_hooks.multi_worker(strategy) is expected is False


def _sentinel_step(lr, x, y, bounds=None):
    """One every-step train step of a fresh `build_model("sequential")` with
    SGD(lr) under mean squared error; its hooks, the squared global norm of
    the SGD gradient `(w_before - w_after) / lr`, that gradient and the
    step's loss (NumPy's mean squared error of the predictions before it)."""
    model = build_model("sequential")
    model.compile(keras.optimizers.SGD(lr), "mse")
    hooks = _keras_hooks.TrainHooks(model, _model_plan.plan_layers(model))
    hooks.install()
    try:
        if bounds is not None:
            hooks.set_bounds(bounds)
        hooks.use("sentinel")
        before = weights(model)
        loss = float(np.mean((np.asarray(model(x)) - y) ** 2))
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(len(x))
        model.train_function(iter(dataset))
        grads = [(b - a) / lr for b, a in zip(before, weights(model))]
        return hooks, sum(float(np.sum(g**2)) for g in grads), grads, loss
    finally:
        hooks.remove()


def test_a_step_is_quiet_within_the_bounds_only(data):
    x, y = data
    # The squared global norm of the SGD step, 1e-3 relative error at most.
    hooks, squared, grads, loss = _sentinel_step(0.1, x, y)
    alarm = hooks._last_alarm.numpy()
    # No gradient tensor of the step is entirely zero; silent units: the
    # model's bias elements that are exactly 0 (units of the batch with no
    # gradient), counted from the SGD update itself (the biases start at
    # 0, so an update is 0 exactly when its gradient is).
    silent = sum(int(np.sum(g == 0)) for g in grads if g.ndim == 1)
    np.testing.assert_allclose(alarm, [squared, 0.1, 0.0, silent, loss], rtol=1e-4)
    assert not hooks.quiet()  # No bounds set yet: always judged.
    cases = [
        ((0.9 * squared, 1.1 * squared, 0.05, 0.2, 0.0, silent, loss), True),
        ((1.1 * squared, 2.0 * squared, 0.05, 0.2, 0.0, silent, loss), False),  # Low.
        ((0.0, 0.9 * squared, 0.05, 0.2, 0.0, silent, loss), False),  # Too high.
        ((0.0, 2.0 * squared, 0.2, 1.0, 0.0, silent, loss), False),  # Rate down.
        ((0.0, 2.0 * squared, 0.05, 0.2, 0.0, silent - 1, loss), False),  # Silent.
        ((0.0, 2.0 * squared, 0.05, 0.2, 0.0, silent, 0.9 * loss), False),  # Loss.
    ]
    for bounds, quiet in cases:
        hooks.set_bounds(bounds)
        hooks._last_alarm = tf.constant(alarm)
        assert hooks.quiet() is quiet, bounds
    # One more zero gradient tensor than the bound allows.
    hooks.set_bounds((0.0, 2.0 * squared, 0.05, 0.2, 0.0, 0.0, np.inf))
    hooks._last_alarm = tf.constant([squared, 0.1, 1.0, 0.0, 1.0], "float32")
    assert not hooks.quiet()
    hooks.set_bounds((0.0, 2.0 * squared, 0.05, 0.2, 1.0, 0.0, np.inf))
    hooks._last_alarm = tf.constant([squared, 0.1, 1.0, 0.0, 1.0], "float32")
    assert hooks.quiet()
    hooks._last_alarm = tf.constant([np.nan, 0.1, 0.0, 0.0, 1.0], "float32")
    assert not hooks.quiet()  # A NaN fails every comparison.
    assert not hooks.quiet()  # The alarm is read once.


def test_the_every_step_function_compiles_with_xla_on_large_tensors(rng):
    # The every-step (sentinel) function under `jit_compile=True`, with a
    # kernel of 8192 elements (a norm of its own, which XLA must compile):
    # its alarm holds the squared global norm of the SGD gradient.
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(128)])
    model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=True)
    hooks = _keras_hooks.TrainHooks(model, _model_plan.plan_layers(model))
    hooks.install()
    try:
        assert hooks.xla
        hooks.use("sentinel")
        x = rng.normal(size=(16, 64)).astype("float32")
        y = rng.normal(size=(16, 128)).astype("float32")
        before = weights(model)
        model.train_function(iter(tf.data.Dataset.from_tensor_slices((x, y)).batch(16)))
        squared = sum(
            float(np.sum(((b - a) / 0.1) ** 2)) for b, a in zip(before, weights(model))
        )
        np.testing.assert_allclose(hooks._last_alarm.numpy()[0], squared, rtol=1e-4)
    finally:
        hooks.remove()


def test_quiet_steps_between_loss_scale_overflows_end_their_streak(rng):
    # Twelve single overflow steps, each followed by finite steps read as
    # quiet ones (`read_quiet`): no overflow is ever the 10th in a row
    # (`LOSS_SCALE_PATIENCE`), so none counts as a real non-finite step.
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model("sequential")
        model.compile(keras.optimizers.SGD(0.01), "mse")
        hooks = _keras_hooks.TrainHooks(model, _model_plan.plan_layers(model))
        hooks.install()
        hooks.set_bounds((0.0, 1e30, 0.0, 1.0, 0.0, 1e9, np.inf))
        hooks.use("sentinel")
        x = rng.normal(size=(8, 6)).astype("float32")
        y = rng.normal(size=(8, 1)).astype("float32")

        def step(targets):
            data = tf.data.Dataset.from_tensor_slices((x, targets)).batch(8)
            model.train_function(iter(data))

        for _ in range(12):
            # Targets 1e4 times larger: a finite loss, but the float16
            # gradient at the output (2 * 1e4 / 8 times the loss scale)
            # overflows. The scale is set back after it.
            scale = model.optimizer.dynamic_scale.numpy()
            step(y * 1e4)
            assert not hooks.quiet()
            ((*_, counted, skipped, _, _, loss),) = [s[:7] for s in hooks.read_steps()]
            assert skipped and not counted and np.isfinite(loss)
            model.optimizer.dynamic_scale.assign(scale)
            for _ in range(3):
                step(y)
                assert hooks.quiet()
            assert len(hooks.read_quiet()) == 3
        # A NaN input is no overflow: its loss is NaN. It counts at once.
        nan = np.full_like(x, np.nan)
        data = tf.data.Dataset.from_tensor_slices((nan, y)).batch(8)
        model.train_function(iter(data))
        ((*_, counted, skipped, _, _, loss),) = [s[:7] for s in hooks.read_steps()]
        assert counted and not skipped and np.isnan(loss)
    finally:
        hooks.remove()
        keras.mixed_precision.set_global_policy("float32")


def test_sparse_gradient_rows_are_summed_by_index():
    # An embedding's gradient (`IndexedSlices`): on an every-step check its
    # rows summed by index, not the dense table; dense on a full step. A
    # table of under 4096 elements (`step_stats.NORM_MIN_ELEMENTS`) is
    # dense on both: its rows' count is known only as the step runs.
    from types import SimpleNamespace

    from keras_actloss.callbacks._graph_stats import GraphStats

    def grad(rows):
        return tf.IndexedSlices(
            values=tf.constant([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]),
            indices=tf.constant([7, 2, 7]),
            dense_shape=tf.constant([rows, 2]),
        )

    hooks = SimpleNamespace(_tf=tf)
    large = tf.Variable(tf.zeros([5000, 2]))
    rows = GraphStats._for_norms(hooks, grad(5000), large, full=False)
    # Row 7 looked up twice: [1 + 5, 2 + 6]; row 2 once.
    assert sorted(rows.numpy().tolist()) == [[3.0, 4.0], [6.0, 8.0]]
    small = tf.Variable(tf.zeros([50, 2]))
    for variable, full in ((large, True), (small, True), (small, False)):
        rows = int(variable.shape[0])
        dense = GraphStats._for_norms(hooks, grad(rows), variable, full=full).numpy()
        assert dense.shape == (rows, 2)
        np.testing.assert_array_equal(dense[[2, 7]], [[3.0, 4.0], [6.0, 8.0]])
        assert not dense[[i for i in range(rows) if i not in (2, 7)]].any()


@pytest.mark.parametrize("rows", [50, 1000])
def test_embedding_norms_read_alike_from_both_train_functions(rows):
    # Probed: an Embedding(50, 16) model whose every-step function came in at
    # step 41 (it pays for its trace on a long run): the full steps' rows
    # held the table's sum of squares (800 elements: small), the other
    # steps' its summed rows' norm (rows known only as the step runs: a
    # norm of its own), and one layout read both, so the recorded global
    # norm was 0.57-1.03x (float32) or 1e4x (mixed_float16, whose loss
    # scale it squared) that of the layers: a false explosion. Both
    # functions from the first quiet step here (`RENT_STEPS`): every
    # recording's global norm is that of its layers' norms. A table of
    # 16000 elements gets a norm of its own in both.
    keras.utils.set_random_seed(1)
    x = np.random.default_rng(0).integers(0, rows, size=(256, 20))
    y = (x[:, 0] % 2).astype("int32")
    model = keras.Sequential(
        [
            keras.Input((20,), dtype="int32"),
            keras.layers.Embedding(rows, 16),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(2),
        ]
    )
    model.compile(
        keras.optimizers.Adam(2e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    diag = GradientDiagnostics(check_model=False)
    diag.RENT_STEPS = 1
    model.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0, callbacks=[diag])
    assert diag._hooks.traced("sentinel")
    assert len(diag.history) > 12  # Dense at first, then backing off.
    for stats in diag.history:
        layers = math.sqrt(sum(ls.grad_norm**2 for ls in stats.layers))
        assert stats.global_norm == pytest.approx(layers, rel=1e-5), stats.step


def test_embedding_gradient_norms_equal_the_dense_gradients(rng, monkeypatch):
    # A batch that looks up rows 0-4 of 2000 (8000 elements: a norm of its
    # own, `step_stats.NORM_MIN_ELEMENTS`), each several times: the norms
    # of an every-step check (rows summed by index) and of a full step
    # (dense) equal those of the SGD weight change, ||dw|| / lr.
    from keras_actloss.callbacks._graph_stats import GraphStats

    read = GraphStats._for_norms
    seen = []

    def for_norms(self, grad, variable, full):
        seen.append((type(grad).__name__, full))
        return read(self, grad, variable, full)

    monkeypatch.setattr(GraphStats, "_for_norms", for_norms)
    tokens = rng.integers(0, 5, size=(16, 6))
    y = rng.normal(size=(16, 1)).astype("float32")
    lr = 0.1

    def compiled():
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((6,), dtype="int32"),
                keras.layers.Embedding(2000, 4, name="embed"),
                keras.layers.GlobalAveragePooling1D(),
                keras.layers.Dense(1, name="out"),
            ]
        )
        model.compile(keras.optimizers.SGD(lr), "mse")
        return model

    def changes(before, model):
        return [np.linalg.norm(b - a) / lr for b, a in zip(before, weights(model))]

    model = compiled()
    before = weights(model)
    hooks = _keras_hooks.TrainHooks(model, _model_plan.plan_layers(model))
    hooks.install()
    try:
        hooks.use("sentinel")
        data = tf.data.Dataset.from_tensor_slices((tokens, y)).batch(16)
        model.train_function(iter(data))
        ((_, norm, *_),) = hooks.read_steps()
    finally:
        hooks.remove()
    np.testing.assert_allclose(norm, np.linalg.norm(changes(before, model)), rtol=1e-5)
    assert ("IndexedSlices", False) in seen  # Not made dense.

    model = compiled()
    before = weights(model)
    diag = GradientDiagnostics(every_n_steps=1, check_model=False)
    model.fit(tokens, y, batch_size=16, verbose=0, callbacks=[diag])
    (stats,) = diag.history
    assert ("IndexedSlices", True) in seen
    (embed,) = [ls for ls in stats.layers if ls.layer == "embed"]
    np.testing.assert_allclose(embed.grad_norm, changes(before, model)[0], rtol=1e-5)
