"""`GradientDiagnostics` internals on the JAX backend (`_jax_hooks`,
`_jax_programs`).

Runs in `.ci/run`'s JAX stage (no TensorFlow installed); skipped on other
backends. The recorded figures themselves are checked on both backends by
`test_gradient_diagnostics.py` and the scenario suite.
"""

import textwrap
import threading
import warnings

import keras
import numpy as np
import pytest
from callback_models import (
    WeightsPerStep,
    build_model,
    relu_classifier,
    run_script,
    weights,
)
from keras import ops

from keras_actloss.diagnostics.step_stats import RowLayout
from tests.backend_support import BACKEND

pytestmark = pytest.mark.skipif(
    BACKEND != "jax", reason=f"about the JAX trainer; backend={BACKEND}"
)


def _fit(model, x, y, diag, **kwargs):
    kwargs.setdefault("batch_size", 8)
    return model.fit(x, y, epochs=1, verbose=0, callbacks=[diag], **kwargs)


def _diag(**kwargs):
    from keras_actloss.callbacks import GradientDiagnostics

    kwargs.setdefault("check_model", False)
    return GradientDiagnostics(**kwargs)


def test_check_internals_passes_on_this_keras():
    from keras_actloss.callbacks import _jax_hooks

    _jax_hooks.check_internals()


def test_check_internals_fails_loudly_when_the_trainer_changes(monkeypatch):
    from keras.src.backend.jax.trainer import JAXTrainer

    from keras_actloss.callbacks import _jax_hooks

    def train_step(self, state, data):  # Gradients taken some other way.
        return {}, state

    monkeypatch.setattr(JAXTrainer, "train_step", train_step)
    with pytest.raises(RuntimeError, match=r"JAXTrainer\.train_step: jax\.value"):
        _jax_hooks.check_internals()
    monkeypatch.delattr(JAXTrainer, "_make_function")
    with pytest.raises(RuntimeError, match=r"changed in Keras .*_make_function"):
        _jax_hooks.check_internals()


def test_check_internals_names_a_changed_optimizer_signature(monkeypatch):
    from keras.src.optimizers.base_optimizer import BaseOptimizer

    from keras_actloss.callbacks import _jax_hooks

    def stateless_apply(self, grads, trainable_variables, optimizer_variables):
        raise AssertionError

    monkeypatch.setattr(BaseOptimizer, "stateless_apply", stateless_apply)
    with pytest.raises(RuntimeError, match=r"Optimizer\.stateless_apply"):
        _jax_hooks.check_internals()


def test_tracer_homes_are_known_on_this_jax():
    # The layers a custom `train_step` runs under its own `jax.value_and_grad`
    # are counted only while `_made_in` tells the step's own values from a
    # `lax.scan` body's (JAX internals: `Tracer._trace`).
    from keras_actloss.callbacks import _jax_hooks

    _jax_hooks._homes_known.cache_clear()
    assert _jax_hooks._homes_known()


class _Accumulating(keras.Model):
    """A ReLU MLP whose custom `train_step` sums the gradients of two
    micro-batches in a `jax.lax.scan` (its layers run inside the scan)."""

    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(8, activation="relu", name="hidden")
        self.out = keras.layers.Dense(1, name="out")

    def call(self, x):
        return self.out(self.hidden(x))

    def train_step(self, state, data):
        import jax

        x, y = data
        trainable, non_trainable, optimizer_variables, metrics = state

        def loss(weights, xb, yb):
            y_pred, _ = self.stateless_call(weights, non_trainable, xb)
            return ops.mean(ops.square(y_pred - yb))

        def body(total, batch):
            grads = jax.grad(loss)(trainable, *batch)
            return [t + g for t, g in zip(total, grads)], None

        halves = (ops.reshape(x, (2, -1, 4)), ops.reshape(y, (2, -1, 1)))
        zeros = [ops.zeros_like(v) for v in trainable]
        grads, _ = jax.lax.scan(body, zeros, halves)
        trainable, optimizer_variables = self.optimizer.stateless_apply(
            optimizer_variables, grads, trainable
        )
        return {}, (trainable, non_trainable, optimizer_variables, metrics)


def test_layers_run_inside_a_scan_of_a_custom_step_are_not_counted(rng):
    # Their outputs cannot leave the scan: counting them would fail the
    # trace (an escaped tracer). Gradients are recorded; activations not.
    x = rng.normal(size=(32, 4)).astype("float32")
    y = rng.normal(size=(32, 1)).astype("float32")
    model = _Accumulating()
    model(x[:1])
    model.compile(keras.optimizers.SGD(0.01))
    diag = _diag(every_n_steps=1)
    _fit(model, x, y, diag)
    assert [s.step for s in diag.history] == [0, 1, 2, 3]
    hidden = [{ls.layer: ls for ls in s.layers}["hidden"] for s in diag.history]
    assert all(ls.grad_norm > 0 and ls.zero_fraction is None for ls in hidden)


def test_flax_nnx_mode_is_refused(data, monkeypatch):
    x, y = data
    model = build_model("sequential")
    model.compile(keras.optimizers.SGD(0.1), "mse")
    monkeypatch.setattr(keras.config, "is_nnx_enabled", lambda: True)
    received = r"Received: keras\.config\.is_nnx_enabled\(\)=True$"
    with pytest.raises(ValueError, match=r"Flax NNX .*" + received):
        _fit(model, x, y, _diag())


def test_statistics_leave_the_logs_and_the_hooks_leave_the_model(data):

    x, y = data
    model = build_model("sequential")
    model.compile(keras.optimizers.SGD(0.1), "mse", metrics=["mae"])
    seen = []
    logger = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append(
            (sorted(logs), "stateless_apply" in vars(model.optimizer))
        )
    )
    diag = _diag(every_n_steps=2)
    diag.DENSE_STEPS = 0  # Full statistics at steps 0, 2, 4, 6 only.
    diag.RENT_STEPS = 1  # The every-step function from the first step off.
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[diag, logger])
    # No statistics in the logs other callbacks see, after full steps and
    # every-step ones alike.
    assert diag._hooks.traced("sentinel")
    assert seen == [(["loss", "mae"], True)] * 8  # Hooked while it trains.
    assert [s.step for s in diag.history] == [0, 2, 4, 6]
    hooked = {"stateless_apply", "compute_loss_and_updates", "make_train_function"}
    assert not hooked & (set(vars(model.optimizer)) | set(vars(model)))
    assert all("call" not in vars(layer) for layer in model.layers)
    # Training state of the variables is whole: a later fit trains as usual.
    before = weights(model)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    after = weights(model)
    assert len(after) == len(before) and not np.allclose(before[0], after[0])
    assert len(model.non_trainable_variables) == 0  # Nothing of ours left.


def _compilations(model, x, y, diag, caplog, **fit) -> list[str]:
    """JAX's messages for each compilation of our jitted step in a `fit`."""
    import jax

    with caplog.at_level("WARNING"), jax.log_compiles(True):
        model.fit(x, y, verbose=0, callbacks=[diag], **fit)
    return [
        r.getMessage()
        for r in caplog.records
        if "Finished XLA compilation of jit(_step)" in r.getMessage()
    ]


def test_a_first_fit_compiles_only_the_step_beyond_a_plain_one(caplog):
    # Each eager operation on a new shape is a compilation of its own on
    # JAX: the set-up before the first step (the kernels' scales for
    # `weight_gain`, read for each of a MobileNet's few dozen kernel
    # shapes) compiled over a second of programs. After a plain fit of the
    # same shapes (Keras's own programs compiled and cached), the
    # callback's fit compiles its step and nothing else.
    import jax

    def model():
        inputs = keras.Input((11,))
        x = keras.layers.Dense(13, activation="relu")(inputs)
        x = keras.layers.Dense(7, activation="tanh")(x)
        m = keras.Model(inputs, keras.layers.Dense(3)(x))
        m.compile(keras.optimizers.SGD(0.01), "mse")
        return m

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 11)).astype("float32")
    y = rng.normal(size=(32, 3)).astype("float32")
    model().fit(x, y, batch_size=8, epochs=1, verbose=0)
    diagnosed = model()
    with caplog.at_level("WARNING"), jax.log_compiles(True):
        diagnosed.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[_diag()])
    compiled = {
        r.getMessage().split(" in ")[0].removeprefix("Finished XLA compilation of ")
        for r in caplog.records
        if r.getMessage().startswith("Finished XLA compilation")
    }
    assert compiled == {"jit(_step)"}


def test_mean_squares_on_the_device_match_the_hosts():
    # Values off the CPU (an accelerator's) go through one jitted program
    # over all of them; on the CPU, NumPy reads them in place. Both are
    # the mean of the squares: [[1, 2], [3, 4]] -> 30 / 4 = 7.5; bfloat16
    # [-2, 2, 0] -> 8 / 3.
    from keras_actloss.callbacks import _jax_weights

    values = [
        ops.convert_to_tensor([[1.0, 2.0], [3.0, 4.0]]),
        ops.convert_to_tensor([-2.0, 2.0, 0.0], dtype="bfloat16"),
    ]
    expected = [7.5, 8 / 3]
    assert _jax_weights.mean_squares(values) == pytest.approx(expected)
    device = np.asarray(_jax_weights._mean_squares(values))
    np.testing.assert_allclose(device, expected, rtol=1e-6)


def test_one_compiled_step_serves_full_and_every_step_checks(data, caplog):
    x, y = data
    model = build_model("sequential")
    model.compile(keras.optimizers.SGD(0.1), "mse")
    diag = _diag(every_n_steps=2)
    diag.DENSE_STEPS = 0  # Full statistics at steps 0, 2, 4, 6 only.
    diag.RENT_STEPS = 1  # Every-step checks from step 1 (two programs once).
    compiled = _compilations(model, x, y, diag, caplog, batch_size=8, epochs=2)
    assert len(compiled) == 1, compiled
    assert [s.step for s in diag.history] == [0, 2, 4, 6]
    # The every-step checks in between were judged too, up to the last
    # step (7, not recorded in full).
    assert diag._rules._last_step == 7
    layer = diag.history[-1].layers[0]
    assert layer.grad_norm > 0 and layer.weight_norm > 0


def test_the_full_statistics_are_traced_once(data, monkeypatch):
    # One trace of the step traces them in the cond's taken branch only; the
    # untaken branch takes its zeros' shapes from it (`_Trace.when_full`),
    # not from a second trace (`jax.eval_shape`), as long as JAX traces a
    # cond's true branch first. Two traces here: the shapes were traced again.
    from keras_actloss.callbacks._jax_stats import JaxStats

    traced = []
    full_statistics = JaxStats._full_statistics

    def counted(self, *args):
        traced.append(1)
        return full_statistics(self, *args)

    monkeypatch.setattr(JaxStats, "_full_statistics", counted)
    x, y = data
    model = build_model("sequential")
    model.compile(keras.optimizers.SGD(0.1), "mse")
    diag = _diag()
    _fit(model, x, y, diag)
    assert len(traced) == 1
    assert [s.step for s in diag.history] == [0, 1, 2, 3]


def test_checks_get_their_own_program_once_it_pays(data, caplog, monkeypatch):
    from keras_actloss.callbacks import _jax_programs

    x, y = data
    model = build_model("sequential")
    model.compile(keras.optimizers.SGD(0.1), "mse")
    # Any check pays at once: the second check step has the check program
    # lowered and compiling on its own thread (the first one's time since
    # the step before is not a step).
    monkeypatch.setattr(_jax_programs.JaxPrograms, "CHECK_SAVING", 1e9)
    diag = _diag(every_n_steps=4)
    diag.DENSE_STEPS = 0  # Full statistics at steps 0, 4, 8, 12 only.
    compiled = _compilations(model, x, y, diag, caplog, batch_size=4, epochs=1)
    hooks = diag._hooks
    assert hooks._check
    job = hooks._check_job
    assert job.done.wait(120) and job.error is None
    assert len(compiled) == 1  # The one program; the check program's
    # compilation is not this thread's, nor logged.

    # The second fit (8 steps of batch 4, as the first) runs its checks in
    # that program, once each: steps 9-11 and 13-15.
    calls = []
    program = job.program

    def counted(*args):
        calls.append(1)
        return program(*args)

    job.program = counted
    caplog.clear()
    assert not _compilations(model, x, y, diag, caplog, batch_size=4, epochs=1)
    assert [s.step for s in diag.history] == [0, 4, 8, 12]
    assert len(calls) == 6
    assert diag._rules._last_step == 15  # Every check judged.
    layer = diag.history[-1].layers[0]
    assert layer.grad_norm > 0 and layer.weight_norm > 0


def test_the_check_program_judges_and_trains_as_the_one_program(data, monkeypatch):
    from keras_actloss.callbacks import _jax_programs, _jax_stats

    x, y = data
    rows = []
    read = _jax_stats.JaxStats._host_rows
    monkeypatch.setattr(
        _jax_stats.JaxStats, "_host_rows", lambda self: _kept(rows, read(self))
    )
    ran = []
    program_for = _jax_programs.CompileJob.program_for

    def waited(job, batch):
        # The check program from the first check on: its compilation waited for.
        job.done.wait(120)
        program = program_for(job, batch)
        if program is None:
            return None
        return lambda *args: ran.append(1) or program(*args)

    def fit(own_program: bool):
        keras.utils.set_random_seed(5)
        model = build_model("sequential")
        model.compile(keras.optimizers.SGD(0.1), "mse")
        saving = 1e9 if own_program else 0.0
        monkeypatch.setattr(_jax_programs.JaxPrograms, "CHECK_SAVING", saving)
        monkeypatch.setattr(_jax_programs.CompileJob, "program_for", waited)
        diag = _diag(every_n_steps=4)
        diag.DENSE_STEPS = 0  # Full statistics at steps 0 and 4 only.
        rows.clear()
        model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[diag])
        return [list(r) for r in rows], weights(model)

    one_rows, one_weights = fit(own_program=False)
    assert not ran
    own_rows, own_weights = fit(own_program=True)
    # 8 steps, full at 0 and 4: the check program ran steps 3, 5, 6 and 7
    # (the rent needs the time between two checks in a row: steps 1-2).
    assert len(ran) == 4
    assert [r[0] for r in own_rows] == [r[0] for r in one_rows] == list(range(8))
    np.testing.assert_allclose(own_rows, one_rows, rtol=1e-6)
    for a, b in zip(own_weights, one_weights):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def _kept(rows: list, new: list) -> list:
    """`new` (host rows read by the hooks), noted in `rows`."""
    rows.extend(new)
    return new


class _Lowered:
    """Stands for a `jax.stages.Lowered` (and, called, for the function
    that lowers the program): its `compile` waits for `go`."""

    def __init__(self, result=None, error=None):
        self.go = threading.Event()
        self.result, self.error = result, error

    def __call__(self):
        return self

    def compile(self):
        self.go.wait(60)
        if self.error is not None:
            raise self.error
        return self.result


def test_the_compiled_check_program_serves_only_the_batches_it_was_lowered_for():
    from keras_actloss.callbacks._jax_programs import CompileJob

    batch = {"x": np.zeros((4, 3), "float32"), "y": np.zeros((4,), "int32")}
    lowered = _Lowered(result="program")
    job = CompileJob(lowered, [np.zeros((3, 1), "float32")], batch)
    assert job.program_for(batch) is None  # Still compiling.
    lowered.go.set()
    assert job.done.wait(60)
    assert job.program_for(batch) == "program"
    last = {"x": np.zeros((3, 3), "float32"), "y": np.zeros((3,), "int32")}
    assert job.program_for(last) is None  # An epoch's shorter last batch.
    assert job.program_for({**batch, "y": batch["y"].astype("int64")}) is None
    assert job.program_for((batch["x"], batch["y"])) is None  # Another tree.


def test_a_failed_compilation_of_the_check_program_is_warned_once_and_skipped():
    from keras_actloss.callbacks._jax_programs import CompileJob

    lowered = _Lowered(error=RuntimeError("RESOURCE_EXHAUSTED: out of memory"))
    lowered.go.set()
    batch = np.zeros((2, 2))
    job = CompileJob(lowered, [], batch)
    assert job.done.wait(60)
    # Warned on the training thread; the checks stay in the one program.
    with pytest.warns(RuntimeWarning, match="RuntimeError: RESOURCE_EXHAUSTED"):
        assert job.program_for(batch) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Once only.
        assert job.program_for(batch) is None


def test_a_check_program_is_made_again_for_another_state_or_batch_size():
    import jax

    hooks = _hooks_of_a_line()
    traced = []

    def body(state, data, full):
        traced.append(len(state))  # One per trace of the step.
        loss = jax.numpy.sum(data)
        extra = jax.lax.cond(full, lambda: loss * 2, lambda: loss * 0)
        return {"loss": loss, "extra": extra}, [s + loss for s in state]

    step = jax.jit(body, donate_argnums=0)

    def made(state, batch):
        """The check program for `state` and `batch` once compiled, after
        the one program ran them (as `run` does)."""
        state = [jax.numpy.asarray(s) for s in state]
        step([jax.numpy.asarray(s) for s in state], batch, np.bool_(True))
        hooks._check_program(step, state, batch, None)
        job = hooks._check_job
        assert job.done.wait(60) and job.error is None
        return job.fits(state, batch) and hooks._check_program(step, state, batch, None)

    state, batch = [np.ones((1, 1), "float32")], np.ones((4, 1), "float32")
    first = made(state, batch)
    # The one program's trace serves the check program: no second one.
    assert len(traced) == 1
    # Its `full` fixed to False: the cond's untaken branch only.
    logs, out = first([jax.numpy.asarray(s) for s in state], batch)
    assert float(logs["loss"]) == 4.0 and float(logs["extra"]) == 0.0
    np.testing.assert_array_equal(out[0], [[5.0]])
    hooks.install()  # A later fit, with the same training state: kept.
    assert hooks._check_program(step, state, batch, None) is first
    hooks.remove()
    hooks.install()  # One with another (a variable more).
    other = [*state, np.zeros((2,), "float32")]
    second = made(other, batch)
    assert second is not first and len(traced) == 2
    hooks.remove()
    hooks.install()  # One with another batch size, from its first check.
    larger = np.ones((8, 1), "float32")
    third = made(other, larger)
    assert third not in (first, second) and len(traced) == 3
    # Its shorter last batch, later in that fit: the one program runs it.
    assert hooks._check_program(step, other, batch, None) is None
    assert hooks._check_job.program is third
    hooks.remove()


def test_a_step_that_cannot_be_traced_ahead_keeps_its_checks_in_the_one_program():
    hooks = _hooks_of_a_line()

    class Step:  # Stands for a jitted step of a JAX without `trace`.
        def trace(self, *args):
            raise AttributeError("'PjitFunction' object has no attribute 'trace'")

    state, batch = [np.zeros((1, 1), "float32")], np.zeros((4, 1), "float32")
    with pytest.warns(RuntimeWarning, match="AttributeError: 'PjitFunction'"):
        assert hooks._check_program(Step(), state, batch, None) is None
        assert hooks._check_job.done.wait(60)
        assert hooks._check_program(Step(), state, batch, None) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Once only.
        assert hooks._check_program(Step(), state, batch, None) is None


@pytest.mark.parametrize(
    "cores, steps_left, step, switch_at",
    [
        # Two cores: compiling beside the training costs it the whole 0.5 s
        # compilation. 9 checks of 2 ms (after the first) set the step, of
        # which SAVING_STEP 0.7 ms counts: 9990 steps x 0.7 ms x
        # CHECK_SAVING 0.1 = 0.699 s >= 0.5 s.
        (2, 10_000, 2e-3, 10),
        # 990 steps left would save 0.069 s: the rent pays it at 0.5 s / 0.1
        # / 0.7 ms = 7142.9, 7143 intervals (the 7144th check: the first
        # one's time since the compiling call is not a step).
        (2, 1_000, 2e-3, 7144),
        (2, None, 2e-3, 7144),  # Steps unknown: the rent alone.
        # 16 cores: a fifteenth of it, 0.5 s / 15 = 33.3 ms. 990 steps left
        # save 0.069 s; the rent alone pays 33.3 ms at 476.2, 477 intervals.
        (16, 1_000, 2e-3, 10),
        (16, None, 2e-3, 478),
        # Steps shorter than SAVING_STEP count whole: 33.3 ms / 0.1 / 0.2 ms
        # = 1666.7, 1667 intervals.
        (16, None, 0.2e-3, 1668),
        (1, None, 2e-3, 7144),  # One core: no other to compile on, all of it.
    ],
)
def test_the_check_program_is_compiled_when_it_pays(
    monkeypatch, cores, steps_left, step, switch_at
):
    from keras_actloss.callbacks import _jax_programs

    affinity = set(range(cores))
    monkeypatch.setattr(
        _jax_programs.os, "sched_getaffinity", lambda pid: affinity, raising=False
    )
    hooks = _hooks_of_a_line()
    hooks._steps_left = steps_left
    clock = iter((np.arange(20_000) * step).tolist())
    monkeypatch.setattr(_jax_programs.time, "perf_counter", lambda: next(clock))
    hooks._rent_check(-0.5, True)  # The first call: compiled in 0.5 s.
    assert hooks._compilation == pytest.approx(0.5)
    calls = 0
    while not hooks._check and calls < 10_000:
        hooks._rent_check(0.0, False)  # A check, `step` after the last call.
        calls += 1
    assert calls == switch_at


def test_batch_norm_state_is_updated_as_without_the_callback(rng):
    # Our counts ride at the end of the non-trainable state inside the step:
    # the moving statistics must come out exactly as without the callback.
    x = rng.normal(size=(32, 4)).astype("float32")
    y = rng.normal(size=(32, 1)).astype("float32")

    def run(callbacks):
        keras.utils.set_random_seed(3)
        model = keras.Sequential(
            [
                keras.Input((4,)),
                keras.layers.Dense(5, activation="relu"),
                keras.layers.BatchNormalization(),
                keras.layers.Dense(1),
            ]
        )
        model.compile(keras.optimizers.SGD(0.1), "mse")
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=callbacks)
        return [v.numpy() for v in model.non_trainable_variables] + weights(model)

    plain, watched = run([]), run([_diag(every_n_steps=1)])
    assert len(plain) == len(watched)
    for a, b in zip(plain, watched):
        np.testing.assert_array_equal(a, b)


class _OwnValues(keras.Sequential):
    """Hands the optimizer values of its own (`v * 1.0`), not the training
    state's: the step reduces its weights itself."""

    def train_step(self, state, data):
        import jax

        trainable, non_trainable, optimizer_vars, metrics = state
        x, y = data[0], data[1]

        def loss(values):
            y_pred, new = self.stateless_call(values, non_trainable, x, training=True)
            return ops.mean(ops.square(y_pred - y)), new

        (value, non_trainable), grads = jax.value_and_grad(loss, has_aux=True)(
            trainable
        )
        own = [v * 1.0 for v in trainable]
        trainable, optimizer_vars = self.optimizer.stateless_apply(
            optimizer_vars, grads, own
        )
        return {"loss": value}, (trainable, non_trainable, optimizer_vars, metrics)


@pytest.mark.parametrize(
    "kind,every",
    [("sequential", 100), ("own_values", 100), ("sequential", 1)],
    ids=["state_values", "own_values", "every_step"],
)
@pytest.mark.parametrize("jit_compile", [True, False])
def test_weight_and_update_norms_equal_the_weights_each_step(
    data, kind, every, jit_compile
):
    # Every step recorded (the dense start): each layer's weight norm is
    # ||w_k|| and its update ratio ||w_{k+1} - w_k|| / ||w_k||. Keras's own
    # train step hands the optimizer the training state's values: the host
    # reduces them from the state around a full step (positions 0-5). The
    # step reduces them itself (None) when it hands the optimizer values
    # of its own, or when every step is recorded in full.
    x, y = data
    model = build_model("sequential")
    if kind == "own_values":
        model = _OwnValues(model.layers)
    model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=jit_compile)
    diag, per_step = _diag(every_n_steps=every), WeightsPerStep()
    model.fit(x[:24], y[:24], batch_size=8, verbose=0, callbacks=[diag, per_step])
    seen = per_step.seen + [weights(model)]
    host = kind == "sequential" and every > 1
    assert diag._hooks._weight_positions == (list(range(6)) if host else None)
    assert [s.step for s in diag.history] == [0, 1, 2]
    for stats in diag.history:
        before, after = seen[stats.step], seen[stats.step + 1]
        for i, ls in enumerate(stats.layers):  # Kernel and bias per layer.
            w = np.concatenate([v.ravel() for v in before[2 * i : 2 * i + 2]])
            dw = np.concatenate(
                [
                    (a - b).ravel()
                    for a, b in zip(after[2 * i : 2 * i + 2], before[2 * i : 2 * i + 2])
                ]
            )
            np.testing.assert_allclose(ls.weight_norm, np.linalg.norm(w), rtol=1e-5)
            np.testing.assert_allclose(
                ls.update_ratio, np.linalg.norm(dw) / np.linalg.norm(w), rtol=1e-4
            )


@pytest.mark.parametrize("where", ["host", "device"])
def test_the_weights_copied_before_a_full_step_outlive_its_donation(
    rng, where, monkeypatch
):
    # The step donates the state it is given: the copies taken before it
    # still read the weights from before the update. On JAX's CPU backend
    # they are NumPy copies; on other devices, device arrays.
    import jax

    from keras_actloss.callbacks import _jax_weights

    values = [jax.numpy.asarray(rng.normal(size=(5, 3)).astype("float32"))]
    if where == "host" and not _jax_weights.on_host(values):
        pytest.skip("JAX's default device is not the CPU")
    if where == "device":
        monkeypatch.setattr(_jax_weights, "on_host", lambda values: False)
    expected = np.asarray(values[0])
    copies = _jax_weights.weights_before(_jax_weights.UNTRACED, (values, [], [], []))
    assert isinstance(copies[0], np.ndarray) == (where == "host")
    assert _jax_weights.weights_before(None, (values, [], [], [])) is None
    step = jax.jit(lambda v: [v[0] * 2.0], donate_argnums=0)
    step(values)
    np.testing.assert_array_equal(np.asarray(copies[0]), expected)


def test_only_single_cpu_device_arrays_are_reduced_on_the_host():
    import jax

    from keras_actloss.callbacks._jax_weights import on_host

    cpu = jax.devices("cpu")[0]
    one = jax.device_put(np.ones((2, 3), "float32"), cpu)
    assert on_host([one, jax.device_put(np.float32(0), cpu)])
    assert on_host([])
    # NumPy values are not the training state's arrays.
    assert not on_host([one, np.ones(3)])


# Small weights and two large ones (norm_row's norm columns, first in its
# layout: 4096 elements or more), a scalar and a float16 weight; only large
# ones; only small ones.
_WEIGHT_SETS = {
    "mixed": [(30,), (80, 64), (40, 30), (3, 3, 4, 8), (80, 64), (), (16, 16)],
    "large": [(80, 64), (64, 70)],
    "small": [(30,), (3, 3)],
}


@pytest.mark.parametrize("where", ["host", "device"])
@pytest.mark.parametrize("kind", list(_WEIGHT_SETS))
def test_weight_rows_of_a_full_step_equal_numpys(kind, where, monkeypatch):
    import jax

    from keras_actloss.callbacks import _jax_weights
    from keras_actloss.diagnostics.step_stats import norm_row, row_layout

    monkeypatch.setattr(_jax_weights, "_segment_ids", {})
    rng = np.random.default_rng(4)
    shapes = _WEIGHT_SETS[kind]
    dtypes = ["float32"] * 6 + ["float16"]
    before = [rng.normal(size=s).astype(d) for s, d in zip(shapes, dtypes)]
    after = [(b + 0.01 * rng.normal(size=b.shape)).astype(b.dtype) for b in before]
    state = [jax.numpy.asarray(b) for b in before]
    if where == "host" and not _jax_weights.on_host(state):
        pytest.skip("JAX's default device is not the CPU")
    if where == "device":
        monkeypatch.setattr(_jax_weights, "on_host", lambda values: False)
    # The rows of the weights at positions 0..n-1 of the state, as the hooks
    # take them around a full step.
    copies = _jax_weights.weights_before(list(range(len(state))), (state, [], [], []))
    out = _jax_weights.with_weight_rows(
        {}, list(range(len(state))), copies, ([jax.numpy.asarray(a) for a in after],)
    )
    weights, updates = out["weights"], out["updates"]
    layout = norm_row(before, norms=False).layout
    assert row_layout(shapes) == layout
    if kind == "mixed":
        assert layout.order[:2] == (1, 4) and layout.norms[:3] == (True, True, False)
    b64 = [np.asarray(b, "float64") for b in before]
    d64 = [np.asarray(a, "float64") - b for a, b in zip(after, b64)]
    for row, tensors in ((weights, b64), (updates, d64)):
        squares = np.array([np.sum(t * t) for t in tensors])
        # Column k: weight `order[k]`, its norm or its sum of squares.
        expected = [
            np.sqrt(squares[i]) if norm else squares[i]
            for i, norm in zip(layout.order, layout.norms)
        ]
        np.testing.assert_allclose(np.asarray(row), expected, rtol=2e-6)
    # An infinite weight: its columns are infinite, with no warning.
    before[0][0] = np.inf
    copies = _jax_weights.weights_before([0, 1], ([jax.numpy.asarray(before[0])] * 2,))
    out = _jax_weights.with_weight_rows({}, [0, 1], copies, ([state[0]] * 2,))
    assert np.all(np.isinf(np.asarray(out["weights"])))
    assert not np.any(np.isfinite(np.asarray(out["updates"])))
    # The small weights' segment ids, kept for the next full step (the
    # device's program only).
    kept = int(kind != "large" and where == "device")
    assert len(_jax_weights._segment_ids) == kept


_DATA_PARALLEL = textwrap.dedent(
    """
    import json
    import jax
    import keras
    import numpy as np
    from keras_actloss.callbacks import GradientDiagnostics

    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = rng.normal(size=(32, 1)).astype("float32")

    def run():
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((6,)),
            keras.layers.Dense(8, activation="relu", name="hidden"),
            keras.layers.Dense(1, name="out")])
        model.compile(keras.optimizers.SGD(0.1), "mse")
        # Both steps recorded in full (the dense start), their weights read
        # by the host from the (sharded) training state.
        diag = GradientDiagnostics(check_model=False)
        model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0,
                  callbacks=[diag])
        global last
        last = diag
        return [{"global": s.global_norm, "batch": s.batch_size,
                 "norms": [ls.grad_norm for ls in s.layers],
                 "weights": [ls.weight_norm for ls in s.layers],
                 "updates": [ls.update_ratio for ls in s.layers],
                 "zero": s.layers[0].zero_fraction} for s in diag.history]

    single = run()
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=jax.devices()))
    parallel = run()
    print(json.dumps({"devices": len(jax.devices()), "single": single,
                      "parallel": parallel,
                      "host": last._hooks._weight_positions == [0, 1, 2, 3]}))
    """
)


def test_data_parallel_statistics_equal_a_single_device_run():
    result = run_script(
        _DATA_PARALLEL, "jax", XLA_FLAGS="--xla_force_host_platform_device_count=2"
    )
    assert result["devices"] == 2 and result["host"]
    single, parallel = result["single"], result["parallel"]
    assert len(single) == len(parallel) == 2
    for a, b in zip(single, parallel):
        # The global batch of 16 (8 per device), its gradients and counts.
        assert a["batch"] == b["batch"] == 16
        np.testing.assert_allclose(b["norms"], a["norms"], rtol=1e-5)
        np.testing.assert_allclose(b["global"], a["global"], rtol=1e-5)
        np.testing.assert_allclose(b["zero"], a["zero"], rtol=1e-6)
        # The weights and their update, read from the sharded state.
        np.testing.assert_allclose(b["weights"], a["weights"], rtol=1e-5)
        np.testing.assert_allclose(b["updates"], a["updates"], rtol=1e-5)


_DATA_PARALLEL_CHECKS = textwrap.dedent(
    """
    import json
    import jax
    import keras
    import numpy as np
    from keras_actloss.callbacks import GradientDiagnostics, _jax_programs
    from keras_actloss.callbacks import _jax_stats

    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=jax.devices()))
    rng = np.random.default_rng(2)
    x = rng.normal(size=(128, 6)).astype("float32")
    y = rng.normal(size=(128, 1)).astype("float32")
    rows, ran = [], []
    read = _jax_stats.JaxStats._host_rows
    def noted(self):
        new = read(self)
        rows.extend(list(r) for r in new)
        return new
    _jax_stats.JaxStats._host_rows = noted
    program_for = _jax_programs.CompileJob.program_for
    def waited(job, batch):  # The check program from the first check on.
        job.done.wait(120)
        program = program_for(job, batch)
        return program and (lambda *a: ran.append(1) or program(*a))
    _jax_programs.CompileJob.program_for = waited

    def run(saving):
        _jax_programs.JaxPrograms.CHECK_SAVING = saving
        keras.utils.set_random_seed(2)
        model = keras.Sequential([keras.Input((6,)),
            keras.layers.Dense(8, activation="relu", name="hidden"),
            keras.layers.Dense(1, name="out")])
        model.compile(keras.optimizers.SGD(0.1), "mse")
        diag = GradientDiagnostics(check_model=False, every_n_steps=4)
        diag.DENSE_STEPS = 0
        rows.clear()
        model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0,
                  callbacks=[diag])
        job = diag._hooks._check_job
        return {"rows": list(rows), "ran": len(ran),
                "sharded": job is not None and job.sharded,
                "error": None if job is None else repr(job.error),
                "weights": [np.asarray(w).tolist() for w in model.get_weights()]}

    one = run(0.0)
    own = run(1e9)
    print(json.dumps({"devices": len(jax.devices()), "one": one, "own": own}))
    """
)


def test_data_parallel_checks_run_in_their_own_sharded_program():
    result = run_script(
        _DATA_PARALLEL_CHECKS,
        "jax",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
    )
    one, own = result["one"], result["own"]
    assert result["devices"] == 2
    assert one["ran"] == 0 and not one["sharded"]
    # 8 steps, full at 0 and 4: the check program (lowered with the data's
    # and the state's shardings) ran steps 3, 5, 6 and 7.
    assert own["sharded"] and own["error"] == "None" and own["ran"] == 4
    assert [r[0] for r in own["rows"]] == [r[0] for r in one["rows"]] == [*range(8)]
    np.testing.assert_allclose(own["rows"], one["rows"], rtol=1e-6)
    for a, b in zip(own["weights"], one["weights"]):
        np.testing.assert_allclose(a, b, rtol=1e-6)


_EXIT_WHILE_COMPILING = textwrap.dedent(
    """
    import json
    import keras, numpy as np
    from keras_actloss.callbacks import GradientDiagnostics, _jax_programs
    _jax_programs.JaxPrograms.CHECK_SAVING = 1e9  # Any check pays at once.
    rng = np.random.default_rng(0)
    # 4 steps, full statistics at step 0 only: the checks of steps 1 and 2
    # pay (the rent needs the time between two in a row), so step 3, the
    # last, starts the check program's compilation.
    x = rng.normal(size=(4 * 16, 8)).astype("float32")
    y = rng.normal(size=(4 * 16, 1)).astype("float32")
    model = keras.Sequential(
        [keras.Input((8,))]
        + [keras.layers.Dense(128, activation="relu") for _ in range(4)]
        + [keras.layers.Dense(1)]
    )
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    diag = GradientDiagnostics(check_model=False, every_n_steps=4)
    diag.DENSE_STEPS = 0
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[diag])
    job = diag._hooks._check_job
    print(json.dumps({"started": job is not None,
                      "compiling": job is not None and not job.done.is_set()}))
    """
)


def test_a_process_that_exits_while_the_check_program_compiles_exits_cleanly():
    # The compilation outlives the fit; the interpreter must wait for it
    # (with a daemon thread it aborted: `FATAL: exception not rethrown`).
    # `run_script` asserts the exit status 0.
    result = run_script(_EXIT_WHILE_COMPILING, "jax")
    assert result == {"started": True, "compiling": True}


# The gradients' layout of `_hooks_of_a_line`: kernel then bias, L2 norms.
_LINE_LAYOUT = RowLayout((0, 1), (True, True))


def _hooks_of_a_line():
    """`JaxTrainHooks` of a compiled `Dense(1)` on one input: two variables
    (kernel, bias), both of the layer "line"."""
    from keras_actloss.callbacks._jax_hooks import JaxTrainHooks
    from keras_actloss.callbacks._model_plan import plan_layers

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, name="line")])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.optimizer.build(model.trainable_variables)
    hooks = JaxTrainHooks(model, plan_layers(model))
    # As if traced, with the rows below holding the kernel's and the bias's
    # gradient norms (a traced step gives these small ones sums of squares).
    hooks._grad_layout = _LINE_LAYOUT
    return hooks


def _row(step, norms, rate=0.1, loss=0.3, scale=1.0, silent=0):
    """A step's every-step vector as the jitted step returns it, ending
    with the alarm values the step computes (`step_stats.alarm`, of the
    layout of `_hooks_of_a_line`)."""
    from keras_actloss.diagnostics import step_stats

    head = [step // 2**20, step % 2**20, scale, rate, loss, silent]
    values = np.array([norms], "float32")
    alarm = step_stats.alarm(
        values, _LINE_LAYOUT, np.float32(scale), rate, silent, np.float32(loss)
    )
    return {"row": np.array(head + list(norms) + list(np.asarray(alarm)), "float32")}


def test_quiet_steps_wait_and_alarms_are_judged_at_once():
    hooks = _hooks_of_a_line()
    # Gradient norms 3 and 4: squared global norm 25 (global norm 5).
    hooks.set_bounds((24.0, 26.0, 0.05, 0.2, 0.0, 2.0, 1.0))
    hooks._pending = [_row(5, [3.0, 4.0])]
    # The row ends with the squared global norm, rate, zero norms, silent,
    # loss.
    np.testing.assert_allclose(
        hooks._pending[0]["row"][-5:], [25.0, 0.1, 0, 0, 0.3], rtol=1e-6
    )
    assert hooks.quiet()
    hooks._pending.append(_row(6, [3.0, 4.0], rate=0.3))  # Rate out of bounds.
    assert not hooks.quiet()
    hooks._pending.append(_row(7, [float("nan"), 4.0]))  # Not after an alarm.
    assert not hooks.quiet()
    # The kernel's gradient entirely zero: more zero tensors than the bound.
    hooks._pending.append(_row(8, [0.0, 5.0]))
    assert not hooks.quiet()
    hooks._pending.append(_row(9, [3.0, 4.0], silent=3))  # More silent units.
    assert not hooks.quiet()
    hooks._pending.append(_row(10, [3.0, 4.0], loss=1.5))  # The loss jumped.
    assert not hooks.quiet()
    steps = hooks.read_steps()
    # (step, norm, counted, skipped, layer, rate, loss, zeros, silent,
    # rates), float32 inputs; one optimizer, no rates of its own.
    assert [s[:5] + s[7:] for s in steps[:2]] == [
        (5, 5.0, False, False, -1, 0, 0, ()),
        (6, 5.0, False, False, -1, 0, 0, ()),
    ]
    assert steps[2][0] == 7 and steps[2][2] and steps[2][4] == 0  # NaN in "line".
    assert steps[3][:3] + steps[3][7:] == (8, 5.0, False, 1, 0, ())
    assert steps[4][:3] + steps[4][7:] == (9, 5.0, False, 0, 3, ())
    assert steps[5][0] == 10 and steps[5][6] == 1.5
    assert hooks._pending == []
    hooks.set_bounds((24.0, 26.0, 0.05, 0.2, 1.0, 3.0, 1.0))
    hooks._pending = [_row(10, [0.0, 5.0], silent=3)]
    assert hooks.quiet()
    hooks.read_steps()
    # Step 11 not read by `quiet` (as a full step's): 12, quiet itself, is
    # judged at once with it.
    hooks._pending = [_row(11, [3.0, 4.0]), _row(12, [3.0, 4.0])]
    assert not hooks.quiet()
    assert [s[0] for s in hooks.read_steps()] == [11, 12]


def test_read_quiet_gives_each_waiting_step_and_exact_large_steps():
    hooks = _hooks_of_a_line()
    hooks.set_bounds((0.0, 100.0, 0.0, 1.0, 1.0, 5.0, 1.0))
    big = 2**20 * 40 + 7  # Beyond float32's exact integers (2**24).
    for step, norms in ((big, [3.0, 4.0]), (big + 1, [0.0, 8.0])):
        hooks._pending.append(_row(step, norms, silent=step - big + 4))
        assert hooks.quiet()
    quiet = hooks.read_quiet()
    # (step, global norm, rate, loss, zero gradient tensors, silent units,
    # rates: none of its own for one optimizer)
    assert [q[6] for q in quiet] == [(), ()]
    np.testing.assert_allclose(
        [q[:6] for q in quiet],
        [(big, 5.0, 0.1, 0.3, 0, 4), (big + 1, 8.0, 0.1, 0.3, 1, 5)],
        rtol=1e-7,
    )
    assert [int(q[0]) for q in quiet] == [big, big + 1]


class _Reported(keras.callbacks.Callback):
    """After `diag`: each new finding with the batch it was reported at."""

    def __init__(self, diag):
        super().__init__()
        self.diag, self.seen, self.batches = diag, [], 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += self.model.steps_per_execution
        found = self.diag.findings[len(self.seen) :]
        self.seen += [(f, self.batches - 1) for f in found]


def test_a_first_update_that_saturates_the_output_unrecorded_is_its_explosion():
    # A ReLU MLP under SGD at 20 in executions of 8 steps: the update of step
    # 0 throws the softmax into its tails, and Keras's cross-entropy on JAX
    # clips it: every gradient exactly 0 from step 1, the loss 3x where
    # training began or more. An execution's last step is recorded in full,
    # so step 0's update is not: the loss that rose after it names it as
    # the explosion (on TensorFlow the gradients grow until NaN instead).
    keras.utils.set_random_seed(0)
    data = np.random.default_rng(0)
    x = data.normal(size=(256, 16)).astype("float32")
    y = np.argmax(x @ data.normal(size=(16, 4)), axis=1)
    model = relu_classifier(16)
    model.compile(
        keras.optimizers.SGD(20.0),
        "sparse_categorical_crossentropy",
        steps_per_execution=8,
    )
    diag = _diag()
    seen = _Reported(diag)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[diag, seen])
    # Told at the end of the first execution, the explosion first.
    assert [(f.mode, f.layer, f.step, at) for f, at in seen.seen] == [
        ("exploding_gradients", None, 0, 7),
        ("vanishing_gradients", None, 1, 7),
    ]
    explosion, zeros = (f for f, _ in seen.seen)
    assert "at step 1, after the update of step 0" in explosion.message
    assert "exactly 0 since step 1 (a saturated output)" in explosion.message
    assert zeros.message.endswith(
        "It follows the explosion of step 0: the steps threw the output into "
        "its flat tails."
    )
