"""The one module that touches Keras's JAX trainer internals.

`GradientDiagnostics` needs the gradients the optimizer really applies and
the layer outputs of the same step, without a second forward or backward
pass. On the JAX backend `fit` runs `model.train_function(state, iterator)`,
built by `model._make_function` from a jitted `train_step(state, data)`; the
step is stateless: it calls `jax.value_and_grad(model.compute_loss_and_updates,
has_aux=True)`, then `model.optimizer.stateless_apply(optimizer_variables,
grads, trainable_variables)`. This module wraps, on the instances only and
for the duration of `fit`:

- `optimizer.stateless_apply` of every optimizer that may update the
  model's weights (`_model_plan.find_optimizers`, as on TensorFlow:
  `model.optimizer`, the optimizers held by the model's attributes, as a
  GAN's `d_optimizer` and `g_optimizer`, and those passed to the callback;
  the outer one of a `LossScaleOptimizer`). Each call of the step notes the
  gradients it receives (scaled under loss scaling), their variables (the
  optimizer's `_trainable_variables`, which `stateless_apply` maps its
  arguments to), the weights before and after the update, and, read from
  the optimizer variables it is passed, the step (`iterations`), the
  learning rate and the loss scale (`LossScaleOptimizer.dynamic_scale`, or
  the static `loss_scale_factor`). The calls are merged as on TensorFlow
  (`_jax_stats.JaxStats._merge`); the step is the first call's optimizer's.
- `model.compute_loss_and_updates`: while a train function of ours is
  traced, it lets the monitored layers keep their outputs and carries
  them (`jax.lax.stop_gradient`ed) and the step's loss out of the
  `jax.value_and_grad` trace through the auxiliary outputs Keras already
  returns: appended to its `non_trainable_variables`, which `train_step`
  passes into the new state untouched. The train step takes them off
  again before Keras sees the state, and counts them
  (`diagnostics.step_activations.activation_vector`) in the full
  statistics' one conditional at the end of the step (a conditional in
  the forward pass cost every quiet step more). No tracer leaves the
  trace it was made in.
- the `call` of every monitored leaf layer: its outputs are kept inside
  `compute_loss_and_updates`; outside it (a custom `train_step`'s own loss
  functions, as a GAN's) with the gradient stopped where they are made,
  when they belong to the step's own trace (`_made_in`): under
  `jax.value_and_grad` such values are the jitted step's own tracers, so
  their counts can be taken after the `train_step` (`JaxPrograms._step`:
  the layers not kept inside are joined to those that are); outputs made
  inside a `lax.scan`, `vmap`, `checkpoint` or nested `jit` cannot leave it
  and are not counted.
- `model.train_function`: one train function built with
  `model._make_function` from our own jitted step around the model's
  `train_step` (`_jax_programs.JaxPrograms`, a mixin: the step, its full
  and every-step kinds, and when the every-step checks get a program of
  their own). The statistics leave the jitted step in its logs dict under
  `FULL_LOGS_KEY`; a wrapper takes them out before `fit` sees the logs and
  keeps the device arrays, converted only when the host reads them.
- `model.make_train_function`: a guard that undoes every hook if the model
  is trained again after a `fit` that died without `on_train_end`.
- `model.jax_state_sync`, which Keras's JAX `fit` calls in its `finally`:
  `watch_fit_end` sees an exception leave `fit` there (the callback then
  closes its logs).

The statistics are `diagnostics.step_stats`, as on TensorFlow; the host
readers (`_jax_stats.JaxStats`, a mixin) return the same structures as the
TensorFlow ones (`_ring_reading.RingReader`), through the same `fold_rows`
and `full_record`, so the callback, the rules and the writer are shared.

Keras's JAX `fit` passes a custom `train_step(state, data)` only
`model.optimizer.variables` as optimizer state. A GAN whose `d_optimizer`
and `g_optimizer` must keep their own state through `fit` compiles with
`optimizer=keras.optimizers.MultiOptimizer(...)` over them (its `variables`
are every sub-optimizer's, so `fit` carries, syncs and saves them) and
calls each one's `stateless_apply` on its slice of `optimizer_variables`
(see `tests/callbacks/test_jax_multi_optimizer.py`). What differs from
TensorFlow: the loss is only known from `model.compute_loss_and_updates`;
a GAN whose own loss functions call its sub-models records gradients,
weights, updates and activation statistics, with no loss.
`check_internals()` fails loudly when the Keras internals used here change.
"""

from __future__ import annotations

import collections
import functools
import inspect
import math
import sys
import time
from collections.abc import Callable

import jax
import keras
import numpy as np
from keras import ops

from keras_actloss.callbacks._jax_programs import JaxPrograms
from keras_actloss.callbacks._jax_stats import JaxStats, _Trace
from keras_actloss.callbacks._jax_weights import (
    UNTRACED,
    mean_squares,
    weights_before,
    with_weight_rows,
)
from keras_actloss.callbacks._keras_hooks import TrainHooks
from keras_actloss.callbacks._model_plan import (
    learning_rate,
    missing_internals,
    step_counter,
)
from keras_actloss.callbacks._step_rows import FULL_LOGS_KEY

# Where the loss and activation counts ride in `non_trainable_variables`.
_EXTRA_KEY = "_keras_actloss_extra"
_COMPUTE_LOSS_ARGS = [
    "self",
    "trainable_variables",
    "non_trainable_variables",
    "metrics_variables",
    "x",
    "y",
    "sample_weight",
    "training",
    "optimizer_variables",
]
# Source fragments of the JAX trainer this module relies on.
_TRAIN_STEP_SOURCE = (
    "jax.value_and_grad(\n            self.compute_loss_and_updates, has_aux=True",
    "(unscaled_loss, y_pred, non_trainable_variables, metrics_variables) = (",
    "self.optimizer.stateless_apply(\n            optimizer_variables, grads, "
    "trainable_variables",
    "non_trainable_variables,\n            optimizer_variables,",
)

_APPLY_MAPPING = "zip(self._trainable_variables, trainable_variables)"


def check_internals() -> None:
    """Raises `RuntimeError` if a Keras JAX internal the hooks use changed.

    Checks the attributes, signatures and the shape of `train_step` the
    hooks rely on, so a Keras upgrade that moves them fails here, loudly,
    instead of silently recording nothing (or the wrong gradients).
    """
    from keras.src.backend.jax.trainer import JAXTrainer
    from keras.src.optimizers.base_optimizer import BaseOptimizer

    missing = [
        f"JAXTrainer.{name}"
        for name in (
            "train_step",
            "compute_loss_and_updates",
            "_make_function",
            "make_train_function",
            "_get_state_sharding_spec",
            "jax_state_sync",
        )
        if not hasattr(JAXTrainer, name)
    ]
    if not missing:
        params = list(inspect.signature(JAXTrainer.compute_loss_and_updates).parameters)
        if params != _COMPUTE_LOSS_ARGS:
            missing.append("JAXTrainer.compute_loss_and_updates(...)")
        source = inspect.getsource(JAXTrainer.train_step)
        missing += [
            f"JAXTrainer.train_step: {fragment.split()[0]}..."
            for fragment in _TRAIN_STEP_SOURCE
            if fragment not in source
        ]
        make = list(inspect.signature(JAXTrainer._make_function).parameters)
        if make[:2] != ["self", "step_function"]:
            missing.append("JAXTrainer._make_function(step_function)")
        fit = inspect.getsource(JAXTrainer.fit)
        if "self._jax_state = {" not in fit or "_jax_state_synced" not in fit:
            missing.append("JAXTrainer.fit: _jax_state")
    apply = list(inspect.signature(BaseOptimizer.stateless_apply).parameters)
    if apply != ["self", "optimizer_variables", "grads", "trainable_variables"]:
        missing.append("Optimizer.stateless_apply(optimizer_variables, grads, ...)")
    # Each call's gradients belong to the variables the optimizer was built
    # with, in order (`_apply_wrapper`).
    if _APPLY_MAPPING not in inspect.getsource(BaseOptimizer.stateless_apply):
        missing.append("Optimizer.stateless_apply: _trainable_variables")
    lso = keras.optimizers.LossScaleOptimizer
    if "dynamic_scale" not in inspect.getsource(lso.build):
        missing.append("LossScaleOptimizer.dynamic_scale")
    if "loss_scale_factor" not in inspect.signature(BaseOptimizer.__init__).parameters:
        missing.append("Optimizer.loss_scale_factor")
    missing += missing_internals()
    if missing:
        raise RuntimeError(
            "keras_actloss.callbacks.GradientDiagnostics relies on Keras "
            f"JAX internals that changed in Keras {keras.__version__}: "
            f"{', '.join(missing)}."
        )


def _made_in(value, home) -> bool:
    """Whether `value` belongs to the trace `home` (the jitted step's, from
    `trace_home`; None when the step runs eagerly): a concrete array in an
    eager step, else a tracer of that very trace (JAX internals:
    `Tracer._trace`; `_homes_known` checks them)."""
    if not isinstance(value, jax.core.Tracer):
        return home is None
    return getattr(value, "_trace", None) is home


def _in_forward(value, trace) -> bool:
    """Whether `value`, an output made while `compute_loss_and_updates`
    runs, belongs to its forward pass (`_Trace.loss_home`, or the step's
    trace for a value that no weight reaches), not to the body of a
    `lax.scan` or a `lax.cond` branch, which it cannot leave (probed: a
    `Dense(relu)` of an RNN cell of the user's own made `fit` fail with
    `UnexpectedTracerError`). Every value counts where JAX hides the
    traces (`_homes_known`)."""
    if not _homes_known():
        return True
    return _made_in(value, trace.loss_home) or _made_in(value, trace.home)


def trace_home(data):
    """The trace a step's argument `data` belongs to (None: eager)."""
    leaves = jax.tree_util.tree_leaves(data)
    return getattr(leaves[0], "_trace", None) if leaves else None


@functools.cache
def _homes_known() -> bool:
    """Whether `_made_in` tells, on this JAX, a value made under
    `jax.value_and_grad` in a jitted step (with the gradient stopped: the
    step's own) from one made in a `lax.scan` body (which cannot leave it).
    Checked once on a tiny step; when not, outputs outside
    `compute_loss_and_updates` are not counted."""
    seen, kept = [], {}

    def loss(w, x):
        kept["grad"] = jax.lax.stop_gradient(x * w)
        return ops.sum(x * w)

    def body(carry, x):
        kept["scan"] = jax.lax.stop_gradient(x * carry)
        return carry, x

    @jax.jit
    def step(w, x):
        home = trace_home(x)
        jax.grad(loss)(w, x)
        jax.lax.scan(body, w, x)
        seen.append(
            home is not None
            and _made_in(kept["grad"], home)
            and not _made_in(kept["scan"], home)
        )
        return w

    try:
        step(np.float32(1.0), np.ones(2, "float32"))
    except Exception:  # noqa: BLE001 - any failure means: not known.
        return False
    return seen == [True]


def watch_fit_end(model, on_exit: Callable[[], None]) -> Callable[[], None] | None:
    """Calls `on_exit` when an exception ends the `fit` being started.

    Keras calls `on_train_end` only when `fit` ends normally; its JAX `fit`
    still calls `model.jax_state_sync()` in its `finally` block. A wrapper
    there calls `on_exit` when an exception is leaving `fit`: the one in
    flight was raised since this call and has reached a frame that was on
    the stack then (not one a callback raised and handled itself). Returns
    the function that removes the wrapper (None without one).
    """
    sync = getattr(model, "jax_state_sync", None)
    if sync is None:
        return None
    stack, frame = set(), sys._getframe(1)
    while frame is not None:
        stack.add(frame)
        frame = frame.f_back
    before = sys.exc_info()[1]

    def jax_state_sync():
        sync()
        error = sys.exc_info()[1]
        trace = getattr(error, "__traceback__", None)
        if error is not before and trace is not None and trace.tb_frame in stack:
            on_exit()

    model.jax_state_sync = jax_state_sync

    def undo():
        if model.__dict__.get("jax_state_sync") is jax_state_sync:
            del model.jax_state_sync

    return undo


def is_chief() -> bool:
    """Whether this process writes the logs: JAX process 0."""
    return jax.process_index() == 0


class JaxTrainHooks(JaxStats, JaxPrograms):
    """Installs, runs and removes the instrumentation of one `fit` on JAX.

    Same host interface as `_keras_hooks.TrainHooks`.

    Args:
        model: The compiled Keras model.
        plans: The monitored layers (from `_model_plan.plan_layers`).
        histogram_size: Gradient elements kept per layer for histograms (a
            strided sample), or 0 for none.
        ring_rows: Kept for the interface: the every-step rows wait on the
            host in a list, not in a ring.
        optimizers: Optimizers to hook besides those `find_optimizers`
            finds on the model.

    The step of a recording is the iteration count of the first optimizer
    whose `stateless_apply` runs in the traced step: `step_count()`.
    """

    def __init__(self, model, plans, histogram_size=0, ring_rows=256, optimizers=()):
        if keras.config.is_nnx_enabled():
            raise ValueError(
                "GradientDiagnostics does not support Keras's Flax NNX mode on "
                "the JAX backend yet (its train step is `nnx.jit`ed). "
                "Received: keras.config.is_nnx_enabled()=True"
            )
        self._set_up(model, plans, histogram_size, ring_rows, optimizers)
        # The merged gradients' variables (`_merge`); `model.optimizer`'s
        # until a step is traced.
        self._grad_variables = list(
            getattr(model.optimizer, "_trainable_variables", None) or []
        )
        self.signature = self.signature_of(model, self.extra, self.hooked)
        self._var_layer = {
            id(v): i for i, plan in enumerate(plans) for v in plan.variables
        }
        self._forget_programs()
        self._job_compared = False
        self._last_check: float | None = None
        self._intervals: collections.deque = collections.deque(maxlen=9)
        self._steps_left: int | None = None
        self._saved: dict[str, object] = {}
        self._trace: _Trace | None = None
        self._pending: list = []
        self._last_full = self._kept = self._kept_full = self._summed = None
        self._loss_known = False
        self._bounds = (0.0, 0.0, 0.0, 0.0)  # Always alarm until set.
        self._streak = 0.0
        self._checked = False
        self.installed = False

    def _forget_programs(self) -> None:
        """No train function traced yet (set-up, or the model's step
        `retraced`)."""
        self._function = None
        self._full = True
        # Where the weights of a full step's two rows sit in the state
        # (`_jax_stats._state_positions`; `with_weight_rows`).
        self._weight_positions = UNTRACED
        # The every-step check's own program (`_rent_check`).
        self._check = False
        self._check_job = None  # Its compilation (`_check_program`).
        self._compilation: float | None = None
        self._rent = 0.0

    # ---------------------------------------------------------------- set-up
    # What the train functions depend on, as on TensorFlow.
    _set_up = TrainHooks._set_up
    signature_of = staticmethod(TrainHooks.signature_of)
    mean_squares = staticmethod(mean_squares)
    reusable_for = TrainHooks.reusable_for

    counter_known = TrainHooks.counter_known
    hooked_names = TrainHooks.hooked_names

    def step_count(self) -> int:
        """The iterations of the first optimizer that applies gradients in
        the step; until a step is traced with several optimizers hooked,
        the smallest of their counts (as `TrainHooks.step_count`). Read
        from the training state while `fit` keeps the variables purged."""
        counter = self._counter
        if counter is None and len(self.optimizers) == 1:
            counter = self.optimizers[0]
        if counter is not None:
            return int(np.asarray(self.value(step_counter(counter))))
        counts = (int(np.asarray(self.value(step_counter(o)))) for o in self.optimizers)
        return min(counts, default=0)

    def value(self, variable):
        """`variable`'s value, from `fit`'s state when it was purged there
        (as `model.optimizer`'s variables, or the model's non-trainable
        ones)."""
        state = getattr(self.model, "_jax_state", None)
        if variable._value is not None or not state:
            return variable.value
        model = self.model
        for key, refs in (
            ("optimizer_variables", model.optimizer.variables),
            ("non_trainable_variables", model.non_trainable_variables),
        ):
            ids = [id(v) for v in refs]
            if id(variable) in ids and state.get(key):
                return state[key][ids.index(id(variable))]
        return variable.value

    def install(self, steps: int | None = None, all_full: bool = False) -> None:
        """Wraps the optimizer, the loss function, the layers and the model.

        `steps`: the steps the `fit` will run, when known (`_rent_check`).
        `all_full`: every step records in full (`every_n_steps=1`), and the
        step reduces the weights' rows itself (`JaxStats.all_full`).
        """
        model = self.model
        self.all_full = all_full
        # No interval across fits: the time between them is not a step.
        self._steps_left, self._last_check = steps, None
        self._job_compared = False
        if self.retraced():
            self._forget_programs()
        if not self._checked:
            check_internals()  # Once: Keras does not change between fits.
            self._checked = True
        self.reset_sentinel()
        self._saved["train_function"] = model.train_function
        for optimizer in self.optimizers:
            self._wrap(optimizer, "stateless_apply", self._apply_wrapper(optimizer))
        self._wrap(
            model,
            "compute_loss_and_updates",
            self._loss_wrapper(model.compute_loss_and_updates),
        )
        self._wrap(model, "make_train_function", self._guard(model))
        for i, plan in enumerate(self.plans):
            if plan.profile is not None:
                method = getattr(plan.hooked, plan.method)
                self._wrap(plan.hooked, plan.method, self._call_wrapper(method, i))
        self.installed = True

    # Wrapping on the instances and undoing it is backend-neutral: the same
    # as TensorFlow's (`_wrap`, `remove`, the `make_train_function` guard).
    _wrap = TrainHooks._wrap
    remove = TrainHooks.remove
    retraced = TrainHooks.retraced
    _guard = TrainHooks._guard

    # -------------------------------------------------------------- wrappers
    def _call_wrapper(self, original, index: int):
        plan = self.plans[index]

        @functools.wraps(original)
        def call(*args, **kwargs):
            outputs = original(*args, **kwargs)
            trace = self._trace
            if trace is None:
                return outputs
            kept = plan.kept(args, kwargs, outputs)
            if kept is None or not isinstance(plan.tensor(kept), jax.Array):
                return outputs
            if trace.recording:
                if _in_forward(plan.tensor(kept), trace):
                    trace.outputs.setdefault(index, []).append(kept)
            elif _homes_known():
                kept = jax.lax.stop_gradient(kept)
                if _made_in(plan.tensor(kept), trace.home):
                    trace.loose.setdefault(index, []).append(kept)
            return outputs

        return call

    def _loss_wrapper(self, original):
        @functools.wraps(original)
        def compute_loss_and_updates(*args, **kwargs):
            trace = self._trace
            if trace is None or trace.loss_seen or not kwargs.get("training"):
                return original(*args, **kwargs)
            trace.loss_seen = True  # The first training call of the step.
            trace.loss_home = trace_home(args[:1] or kwargs.get("trainable_variables"))
            trace.recording = True
            try:
                loss, aux = original(*args, **kwargs)
            finally:
                trace.recording = False
            outputs, trace.outputs = trace.outputs, {}
            unscaled, y_pred, non_trainable, metrics = aux
            # Still inside `jax.value_and_grad`: the outputs leave it as
            # auxiliary values, counted at the end of the step, in the
            # full statistics' one conditional (see the module docstring).
            extra = {
                "loss": jax.lax.stop_gradient(ops.cast(unscaled, "float32")),
                "outputs": {
                    i: [jax.lax.stop_gradient(x) for x in calls]
                    for i, calls in outputs.items()
                },
            }
            non_trainable = [*non_trainable, {_EXTRA_KEY: extra}]
            return loss, (unscaled, y_pred, non_trainable, metrics)

        return compute_loss_and_updates

    def _apply_wrapper(self, optimizer):
        original = optimizer.stateless_apply

        @functools.wraps(original)
        def stateless_apply(optimizer_variables, grads, trainable_variables):
            trace = self._trace
            # A `stateless_apply` that another hooked one calls (a wrapper
            # optimizer of the user's) was seen by the outer one.
            if trace is None or trace.applying:
                return original(optimizer_variables, grads, trainable_variables)
            mapping = list(zip(optimizer.variables, optimizer_variables))
            with keras.StatelessScope(state_mapping=mapping):
                step = ops.convert_to_tensor(step_counter(optimizer))
                rate = ops.cast(learning_rate(optimizer), "float32")
                scale = self._scale(optimizer)
            trace.applying = True
            try:
                new_trainable, new_optimizer = original(
                    optimizer_variables, grads, trainable_variables
                )
            finally:
                trace.applying = False
            dynamic = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
            trace.applied.append(
                {
                    "optimizer": optimizer,
                    "grads": list(grads),
                    "variables": list(optimizer._trainable_variables),
                    "before": list(trainable_variables),
                    "after": list(new_trainable),
                    "step": step,
                    "rate": rate,
                    "scale": scale,
                    "dynamic": dynamic,
                    "scaled": dynamic or optimizer.loss_scale_factor is not None,
                }
            )
            return new_trainable, new_optimizer

        return stateless_apply

    @staticmethod
    def _scale(optimizer):
        """The loss scale the gradients carry (read before the update)."""
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            return ops.cast(optimizer.dynamic_scale, "float32")
        if optimizer.loss_scale_factor is not None:
            return ops.convert_to_tensor(float(optimizer.loss_scale_factor), "float32")
        return ops.convert_to_tensor(1.0, "float32")

    # --------------------------------------------------------- in the trace
    _trace_home = staticmethod(trace_home)

    @staticmethod
    def _take_extra(state):
        """Our loss and counts (`_loss_wrapper`) off the end of the new
        non-trainable state (`JaxPrograms._step`)."""
        non_trainable = state[1]
        if (
            non_trainable
            and isinstance(non_trainable[-1], dict)
            and _EXTRA_KEY in non_trainable[-1]
        ):
            extra = non_trainable[-1][_EXTRA_KEY]
            return extra, (state[0], list(non_trainable[:-1]), *state[2:])
        return None, state

    def _var_sizes(self) -> list[int]:
        """Element count of each gradient's variable (`_merge`)."""
        return [math.prod(v.shape) for v in self._grad_variables]

    def _grad_layers(self) -> list[int]:
        """Layer index of each gradient's variable (-1: none)."""
        return [self._var_layer.get(id(v), -1) for v in self._grad_variables]

    # --------------------------------------------------------- train function
    def _make(self):
        """The train function `use` installs: `_step`, jitted with the
        model's `jit_compile` unless it runs eagerly, in Keras's
        `model._make_function`."""
        model = self.model
        step = self._step
        jitted = not model.run_eagerly and model.jit_compile
        out_shardings = None
        if jitted:
            if keras.distribution.distribution() is not None:
                out_shardings = (None, model._get_state_sharding_spec())
            step = jax.jit(step, donate_argnums=0, out_shardings=out_shardings)

        def run(state, data):
            full = self._full
            snapshot = None
            if full:
                snapshot = weights_before(self._weight_positions, state)
            start = time.perf_counter()
            program = None
            if jitted and not full and self._check:
                # None while it compiles: the one program runs the check.
                program = self._check_program(step, state, data, out_shardings)
            if program is not None:
                logs, state = program(state, data)
            else:
                logs, state = step(state, data, np.bool_(full) if jitted else full)
            if jitted and not self._check:  # Rented: nothing left to decide.
                self._rent_check(start, full or program is not None)
            out = logs.pop(FULL_LOGS_KEY, None)
            if out is not None and full:
                positions = self._weight_positions
                out = with_weight_rows(out, positions, snapshot, state)
                out = self._over_execution(out)
            if out is not None:
                # Device arrays: converted when the host reads them.
                self._pending.append(out)
                if full:
                    self._last_full, self._kept = out, data
            return logs, state

        return model._make_function(run)
