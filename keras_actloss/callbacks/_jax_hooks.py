"""The one module that touches Keras's JAX trainer internals.

`GradientDiagnostics` needs the gradients the optimizer really applies and
the layer outputs of the same step, without a second forward or backward
pass. On the JAX backend `fit` runs `model.train_function(state, iterator)`,
built by `model._make_function` from a jitted `train_step(state, data)`; the
step is stateless: it calls `jax.value_and_grad(model.compute_loss_and_updates,
has_aux=True)`, then `model.optimizer.stateless_apply(optimizer_variables,
grads, trainable_variables)`. This module wraps, on the instances only and
for the duration of `fit`:

- `optimizer.stateless_apply` of `model.optimizer`: it notes the gradients
  it receives (scaled under loss scaling), the weights before and after the
  update, and, read from the optimizer variables it is passed, the step
  (`iterations`), the learning rate and the loss scale
  (`LossScaleOptimizer.dynamic_scale`, or the static `loss_scale_factor`).
- `model.compute_loss_and_updates`: while a train function of ours is
  traced, it lets the monitored layers keep their outputs, then computes
  their activation counts (`diagnostics.stats.activation_counts` on
  `jax.lax.stop_gradient`ed outputs) and the step's loss *inside* the
  `jax.value_and_grad` trace and carries them out through the auxiliary
  outputs Keras already returns: appended to its `non_trainable_variables`,
  which `train_step` passes into the new state untouched. The train step
  takes them off again before Keras sees the state. No tracer leaves the
  trace it was made in.
- the `call` of every monitored leaf layer (kept only while recording).
- `model.train_function`: two train functions built with
  `model._make_function` from our own jitted step around the model's
  `train_step`, a "sentinel" one (the step, learning rate, loss, loss scale
  and per-variable gradient norms: a small dict) and a "full" one (plus
  gradient max-abs, weight and update norms, activation counts and
  gradient samples). The statistics leave the jitted step in its logs dict
  under `FULL_LOGS_KEY`; a wrapper takes them out before `fit` sees the
  logs and keeps the device arrays, converted only when the host reads them.
- `model.make_train_function`: a guard that undoes every hook if the model
  is trained again after a `fit` that died without `on_train_end`.

The host readers return the same structures as the TensorFlow ones
(`_graph_stats.GraphStats`) and judge the steps with the same `fold_rows`,
so the callback, the rules and the writer are shared. Only `model.optimizer`
is watched (not the further optimizers of a custom `train_step`).
`check_internals()` fails loudly when the Keras internals used here change.
"""

from __future__ import annotations

import functools
import inspect
import math

import jax
import keras
import numpy as np
from keras import ops

from keras_actloss.callbacks._graph_stats import (
    ACTIVATION_FIELDS,
    FULL,
    FULL_LOGS_KEY,
    LABEL_ROWS,
    LAYER_FIELDS,
    LOSS_SCALE_PATIENCE,
    RING_HEAD,
    RING_LOSS,
    RING_LR,
    RING_SCALE,
    RING_STEP,
    RowLayout,
    fold_rows,
    layer_sums,
    sample_positions,
)
from keras_actloss.diagnostics import stats

# Where the loss and activation counts ride in `non_trainable_variables`.
_EXTRA_KEY = "_keras_actloss_extra"
# The every-step part of a step's statistics (a ring row, see `_row`).
_ROW_KEYS = ("step", "scale", "rate", "loss", "norms")
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
    lso = keras.optimizers.LossScaleOptimizer
    if "dynamic_scale" not in inspect.getsource(lso.build):
        missing.append("LossScaleOptimizer.dynamic_scale")
    if "loss_scale_factor" not in inspect.signature(BaseOptimizer.__init__).parameters:
        missing.append("Optimizer.loss_scale_factor")
    if missing:
        raise RuntimeError(
            "keras_actloss.callbacks.GradientDiagnostics relies on Keras "
            f"JAX internals that changed in Keras {keras.__version__}: "
            f"{', '.join(missing)}."
        )


def is_chief() -> bool:
    """Whether this process writes the logs: JAX process 0."""
    return jax.process_index() == 0


class _Trace:
    """What the wrappers note while one step is traced (or run eagerly)."""

    def __init__(self, mode: str):
        self.mode = mode
        self.recording = False
        self.loss_seen = False
        self.outputs: dict[int, object] = {}
        self.applied = None


def _norm(x):
    x = ops.cast(x, "float32")
    return ops.sqrt(ops.sum(ops.square(x)))


class JaxTrainHooks:
    """Installs, runs and removes the instrumentation of one `fit` on JAX.

    Same host interface as `_keras_hooks.TrainHooks`.

    Args:
        model: The compiled Keras model.
        plans: The monitored layers (from `_keras_hooks.plan_layers`).
        histogram_size: Gradient elements kept per layer for histograms (a
            strided sample), or 0 for none.
        ring_rows: Kept for the interface: the every-step rows wait on the
            host in a list, not in a ring.
        optimizers: Must be empty: only `model.optimizer` is watched on JAX.
    """

    def __init__(self, model, plans, histogram_size=0, ring_rows=256, optimizers=()):
        if keras.config.is_nnx_enabled():
            raise ValueError(
                "GradientDiagnostics does not support Keras's Flax NNX mode on "
                "the JAX backend yet (its train step is `nnx.jit`ed). "
                "Received: keras.config.is_nnx_enabled()=True"
            )
        if optimizers:
            raise ValueError(
                "Argument `optimizers` is not supported on the JAX backend: "
                "GradientDiagnostics watches `model.optimizer` only there. "
                f"Received: optimizers={list(optimizers)!r}"
            )
        self.model = model
        self.optimizer = model.optimizer
        self.plans = plans
        self.histogram_size = histogram_size
        self.ring_rows = ring_rows
        self.loss_scaled = isinstance(
            self.optimizer, keras.optimizers.LossScaleOptimizer
        )
        self.signature = self.signature_of(model)
        self._var_layer = {
            id(v): i for i, plan in enumerate(plans) for v in plan.variables
        }
        self._functions: dict[str, object] = {}
        self._saved: dict[str, object] = {}
        self._trace: _Trace | None = None
        self._pending: list = []
        self._last_full = self._kept = self._kept_full = None
        self._loss_known = False
        self._bounds = (0.0, 0.0, 0.0, 0.0)  # Always alarm until set.
        self._streak = 0.0
        self._checked = False
        self.installed = False

    # ---------------------------------------------------------------- set-up
    @staticmethod
    def signature_of(model) -> tuple:
        """What the train functions depend on; equal means reusable."""
        return (
            id(model.optimizer),
            id(getattr(model, "_compile_loss", None)),
            model.steps_per_execution,
            model.jit_compile,
            model.run_eagerly,
            tuple(id(v) for v in model.trainable_variables),
        )

    def reusable_for(self, model) -> bool:
        """Whether this fit can run the train functions built last time."""
        return model is self.model and self.signature == self.signature_of(model)

    counter_known = True  # One optimizer: its iterations count the steps.

    def step_count(self) -> int:
        """The iterations of `model.optimizer` (from the training state
        while `fit` keeps the variables purged)."""
        return int(np.asarray(self._value(self.optimizer.iterations)))

    def _value(self, variable):
        state = getattr(self.model, "_jax_state", None)
        if variable._value is None and state:
            ids = [id(v) for v in self.optimizer.variables]
            return state["optimizer_variables"][ids.index(id(variable))]
        return variable.value

    def hooked_names(self) -> str:
        """The watched optimizer, for messages."""
        return f"`model.optimizer` ({type(self.optimizer).__name__})"

    def install(self) -> None:
        """Wraps the optimizer, the loss function, the layers and the model."""
        model = self.model
        if not self._checked:
            check_internals()  # Once: Keras does not change between fits.
            self._checked = True
        self.reset_sentinel()
        self._saved["train_function"] = model.train_function
        optimizer = self.optimizer
        self._wrap(optimizer, "stateless_apply", self._apply_wrapper(optimizer))
        self._wrap(
            model,
            "compute_loss_and_updates",
            self._loss_wrapper(model.compute_loss_and_updates),
        )
        self._wrap(model, "make_train_function", self._guard(model))
        for i, plan in enumerate(self.plans):
            if plan.profile is not None:
                self._wrap(plan.layer, "call", self._call_wrapper(plan.layer.call, i))
        self.installed = True

    def _wrap(self, obj, name: str, wrapper) -> None:
        self._saved.setdefault("wrapped", []).append((obj, name))
        setattr(obj, name, wrapper)

    def remove(self) -> None:
        """Undoes every hook; the model trains, saves and loads normally."""
        if not self.installed:
            return
        for obj, name in reversed(self._saved.pop("wrapped", [])):
            if name in obj.__dict__:
                delattr(obj, name)
        self.model.train_function = self._saved.pop("train_function", None)
        self.installed = False

    def _guard(self, model):
        original = model.make_train_function

        @functools.wraps(original)
        def make_train_function(force=False):
            # Only called when the model is trained outside our `fit`: a
            # previous `fit` died without `on_train_end`. Clean up first.
            self.remove()
            return model.make_train_function(force=force)

        return make_train_function

    # -------------------------------------------------------------- wrappers
    def _call_wrapper(self, original, index: int):
        @functools.wraps(original)
        def call(*args, **kwargs):
            outputs = original(*args, **kwargs)
            trace = self._trace
            if trace is not None and trace.recording and isinstance(outputs, jax.Array):
                trace.outputs[index] = outputs
            return outputs

        return call

    def _loss_wrapper(self, original):
        @functools.wraps(original)
        def compute_loss_and_updates(*args, **kwargs):
            trace = self._trace
            if trace is None or trace.loss_seen or not kwargs.get("training"):
                return original(*args, **kwargs)
            trace.loss_seen = True  # The first training call of the step.
            trace.recording = trace.mode == FULL
            try:
                loss, aux = original(*args, **kwargs)
            finally:
                trace.recording = False
            outputs, trace.outputs = trace.outputs, {}
            unscaled, y_pred, non_trainable, metrics = aux
            # Still inside `jax.value_and_grad`: computed here, carried out
            # as auxiliary outputs (see the module docstring).
            extra = {
                "loss": jax.lax.stop_gradient(ops.cast(unscaled, "float32")),
                "activations": self._activation_counts(outputs),
            }
            non_trainable = [*non_trainable, {_EXTRA_KEY: extra}]
            return loss, (unscaled, y_pred, non_trainable, metrics)

        return compute_loss_and_updates

    def _apply_wrapper(self, optimizer):
        original = optimizer.stateless_apply

        @functools.wraps(original)
        def stateless_apply(optimizer_variables, grads, trainable_variables):
            trace = self._trace
            if trace is None or trace.applied is not None:
                return original(optimizer_variables, grads, trainable_variables)
            mapping = list(zip(optimizer.variables, optimizer_variables))
            with keras.StatelessScope(state_mapping=mapping):
                step = ops.convert_to_tensor(optimizer.iterations)
                rate = ops.cast(optimizer.learning_rate, "float32")
                scale = self._scale(optimizer)
            new_trainable, new_optimizer = original(
                optimizer_variables, grads, trainable_variables
            )
            trace.applied = {
                "grads": list(grads),
                "before": list(trainable_variables),
                "after": list(new_trainable),
                "step": step,
                "rate": rate,
                "scale": scale,
            }
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
    def _activation_counts(self, outputs: dict) -> dict:
        """`activation_counts` of the kept outputs, by layer index (str)."""
        out = {}
        for i, x in outputs.items():
            if x.ndim < 1:
                continue
            plan = self.plans[i]
            x = jax.lax.stop_gradient(x)
            out[str(i)] = stats.activation_counts(
                x, plan.profile, plan.channel_axis % x.ndim
            )
        return out

    def _step(self, mode, state, data):
        """The model's `train_step` with the statistics added to its logs."""
        trace = self._trace = _Trace(mode)
        try:
            logs, state = self.model.train_step(state, data)
            extra, state = self._take_extra(state)
            self._loss_known = extra is not None
            out = None
            if trace.applied is not None:
                out = self._statistics(trace, extra, data)
        finally:
            self._trace = None
        if out is None:
            return logs, state
        if not isinstance(logs, dict):
            raise ValueError(
                "GradientDiagnostics expects `train_step` to return a dict of "
                f"logs, as Keras documents. Received: {type(logs).__name__}"
            )
        return {**logs, FULL_LOGS_KEY: out}, state

    @staticmethod
    def _take_extra(state):
        """Our loss and counts off the end of the new non-trainable state."""
        non_trainable = state[1]
        if (
            non_trainable
            and isinstance(non_trainable[-1], dict)
            and _EXTRA_KEY in non_trainable[-1]
        ):
            extra = non_trainable[-1][_EXTRA_KEY]
            return extra, (state[0], list(non_trainable[:-1]), *state[2:])
        return None, state

    def _statistics(self, trace, extra, data) -> dict:
        """The named statistics of the step (see `_read_row`, `read_full`)."""
        applied = trace.applied
        grads = [ops.cast(g, "float32") for g in applied["grads"]]
        nan = ops.convert_to_tensor(float("nan"), "float32")
        out = {
            "step": applied["step"],
            "scale": applied["scale"],
            "rate": applied["rate"],
            "loss": nan if extra is None else extra["loss"],
            "norms": ops.stack([_norm(g) for g in grads]),
        }
        if trace.mode != FULL:
            return out
        before, after = applied["before"], applied["after"]
        first = jax.tree_util.tree_leaves(data)[0]
        out.update(
            batch=ops.convert_to_tensor(float(first.shape[0]), "float32"),
            grad_max=ops.stack([ops.max(ops.abs(g)) for g in grads]),
            weights=ops.stack([_norm(w) for w in before]),
            updates=ops.stack(
                [
                    _norm(ops.cast(a, "float32") - ops.cast(b, "float32"))
                    for a, b in zip(after, before)
                ]
            ),
            activations={} if extra is None else extra["activations"],
            sample=self._samples(grads, applied["scale"]),
        )
        return out

    def _samples(self, grads, scale) -> dict:
        """A strided sample of each layer's (unscaled) gradients, by layer
        index (str), from its variables' gradients in variable order."""
        if not self.histogram_size:
            return {}
        layers = self._grad_layers()
        out = {}
        for i in range(len(self.plans)):
            ks = [k for k, layer in enumerate(layers) if layer == i]
            if not ks:
                continue
            sizes = [math.prod(grads[k].shape) for k in ks]
            found = sample_positions(sizes, self.histogram_size)
            pieces = [
                ops.take(ops.reshape(grads[k], [-1]), p.astype("int32"))
                for k, p in zip(ks, found)
            ]
            out[str(i)] = ops.concatenate(pieces, 0) / scale
        return out

    def _grad_layers(self) -> list[int]:
        """Layer index of each of the optimizer's variables (-1: none)."""
        return [
            self._var_layer.get(id(v), -1) for v in self.optimizer._trainable_variables
        ]

    # --------------------------------------------------------- train function
    def traced(self, mode: str) -> bool:
        """Whether the `mode` train function was built already."""
        return mode in self._functions

    def use(self, mode: str) -> None:
        """Makes `fit` run the `mode` train function (`FULL` or the
        every-step check), built on first use."""
        if mode not in self._functions:
            self._functions[mode] = self._make(mode)
        self.model.train_function = self._functions[mode]

    def _make(self, mode: str):
        model = self.model
        step = functools.partial(self._step, mode)
        if not model.run_eagerly and model.jit_compile:
            out_shardings = None
            if keras.distribution.distribution() is not None:
                out_shardings = (None, model._get_state_sharding_spec())
            step = jax.jit(step, donate_argnums=0, out_shardings=out_shardings)

        def run(state, data):
            logs, state = step(state, data)
            out = logs.pop(FULL_LOGS_KEY, None)
            if out is not None:
                # Device arrays: converted when the host reads them.
                self._pending.append(out)
                if mode == FULL:
                    self._last_full, self._kept = out, data
            return logs, state

        return model._make_function(run)

    # ------------------------------------------------------------- host side
    def reset_sentinel(self) -> None:
        """Starts judging steps after the ones run so far."""
        self._streak = 0.0
        self._pending = []
        self._last_full = None

    def _fold(self, rows) -> list[tuple]:
        if not rows:
            return []
        layers = self._grad_layers()
        layout = RowLayout(tuple(range(len(layers))), (True,) * len(layers))
        patience = LOSS_SCALE_PATIENCE if self.loss_scaled else None
        out, self._streak = fold_rows(rows, layout, layers, self._streak, patience)
        return out

    def quiet(self) -> bool:
        """Whether the last execution was a single sentinel step within the
        alarm bounds: it can wait for `read_quiet`."""
        if len(self._pending) != 1 or self._last_full is not None:
            return False
        (out,) = self._pending
        if "grad_max" in out:
            return False  # A full step off the schedule: judged at once.
        row = _read_row(jax.device_get({k: out[k] for k in _ROW_KEYS}))
        self._pending = [row]
        return self._within_bounds(row)

    def _within_bounds(self, row) -> bool:
        squares = sum(v * v for v in row[RING_HEAD:])
        total = squares / (row[RING_SCALE] * row[RING_SCALE])
        rate = row[RING_LR]
        low, high, rate_low, rate_high = self._bounds
        # NaN fails every comparison: it raises the alarm.
        return low <= total <= high and rate_low <= rate <= rate_high

    def read_quiet(self) -> list[tuple[int, float, float, float]]:
        """`(step, global norm, learning rate, loss)` of the quiet steps not
        read yet, in step order."""
        self._last_full = None
        rows = self._host_rows()
        self._streak = 0.0  # Quiet steps are finite.
        out = []
        for row in rows:
            norm = math.sqrt(sum(v * v for v in row[RING_HEAD:]))
            out.append(
                (
                    int(row[RING_STEP]),
                    norm / row[RING_SCALE],
                    row[RING_LR],
                    row[RING_LOSS],
                )
            )
        return out

    def _host_rows(self) -> list[list[float]]:
        """Like `_rows`, for pending entries some of which are already rows."""
        pending, self._pending = self._pending, []
        devices = [out for out in pending if isinstance(out, dict)]
        host = iter(
            _read_row(o)
            for o in jax.device_get([{k: d[k] for k in _ROW_KEYS} for d in devices])
        )
        return [next(host) if isinstance(out, dict) else out for out in pending]

    def set_bounds(self, bounds: tuple[float, float, float, float]) -> None:
        """Sets the alarm bounds (`_graph_stats.BOUND_FIELDS`), checked on
        the host after each quiet step."""
        self._bounds = tuple(float(b) for b in bounds)

    def read_steps(self) -> list[tuple]:
        """Every step run since the last read, judged (see `fold_rows`)."""
        self._last_full = None
        return self._fold(self._host_rows())

    def read_full(self) -> dict | None:
        """The last full-statistics step, as Python values (None = n/a), in
        the structure of `GraphStats.read_full`."""
        full, self._last_full = self._last_full, None
        self._kept_full = full
        if full is None:
            return None
        steps = self._fold(self._host_rows())
        full = jax.device_get({k: v for k, v in full.items() if k != "sample"})
        step, norm, counted, skipped = steps[-1][:4]
        head = {
            "loss": float(full["loss"]) if self._loss_known else None,
            "batch_size": float(full["batch"]),
            "learning_rate": float(full["rate"]),
            "step": step,
            "global_norm": norm,
            "non_finite": float(counted),
            "skipped": float(skipped),
            "steps": steps,
        }
        head["layers"] = self._layer_fields(full)
        return head

    def _layer_fields(self, full: dict) -> list[dict]:
        n = len(self.plans)
        layers = self._grad_layers()
        grads = layer_sums(np.square(full["norms"].astype("float64")), layers, n)
        weights = layer_sums(np.square(full["weights"].astype("float64")), layers, n)
        deltas = layer_sums(np.square(full["updates"].astype("float64")), layers, n)
        sizes = [math.prod(v.shape) for v in self.optimizer._trainable_variables]
        counts = np.maximum(layer_sums(sizes, layers, n), 1)
        scale = float(full["scale"])
        activations = self._activation_fields(full["activations"])
        out = []
        for i in range(n):
            *fractions, units = activations.get(i, (None,) * 4)
            fields = dict(zip(ACTIVATION_FIELDS, fractions))
            mine = [k for k, layer in enumerate(layers) if layer == i]
            if mine:
                weight = math.sqrt(weights[i])
                fields.update(
                    grad_norm=math.sqrt(grads[i]) / scale,
                    grad_rms=math.sqrt(grads[i] / counts[i]) / scale,
                    grad_max=_peak(full, mine) / scale,
                    weight_norm=weight,
                    update_ratio=math.sqrt(deltas[i]) / weight if weight > 0 else 0.0,
                )
            else:
                fields.update(dict.fromkeys(LAYER_FIELDS[:5]))
            for name in ACTIVATION_FIELDS:
                if fields[name] is not None and math.isnan(fields[name]):
                    fields[name] = None
            out.append({name: fields[name] for name in LAYER_FIELDS})
            out[-1]["unit_activity"] = units
        return out

    def _activation_fields(self, counts: dict) -> dict[int, tuple]:
        """Zero, dead and saturated fractions and the per-unit activity
        counts of layers whose units can die, by layer index."""
        fields = {}
        for key, c in counts.items():
            i = int(key)
            profile = self.plans[i].profile
            elements = float(c["elements"])
            zero = dead = mortal = sat = None
            if "active_per_unit" in c:
                active = np.asarray(c["active_per_unit"], "float64").tolist()
                zero = 1.0 - sum(active) / elements
                if profile.can_die:
                    dead, mortal = active.count(0.0) / len(active), active
            if "saturated" in c:
                sat = float(c["saturated"]) / elements
            fields[i] = (zero, dead, sat, mortal)
        return fields

    def read_samples(self) -> dict[int, np.ndarray]:
        """Gradient samples of the last full step, by layer index."""
        full = self._kept_full
        if full is None:
            return {}
        return {int(k): np.asarray(v) for k, v in full["sample"].items()}

    def read_labels(self):
        """Labels of the last full step's batch (float32, up to 64 rows) for
        a single label tensor, or None."""
        return self._read_kept(1)

    def read_inputs(self):
        """Inputs of the last full step's batch, kept like the labels."""
        return self._read_kept(0)

    def _read_kept(self, which: int):
        if self._kept is None:
            return None
        value = keras.utils.unpack_x_y_sample_weight(self._kept)[which]
        flat = jax.tree_util.tree_leaves(value)
        if len(flat) != 1 or not getattr(flat[0], "ndim", 0):
            return None
        value = np.asarray(flat[0][:LABEL_ROWS], "float32")
        return value if value.size else None


def _read_row(out: dict) -> list[float]:
    """A host row in the `_graph_stats` ring layout (`fold_rows`): the step,
    no tick, the loss scale, the learning rate, the loss, then each
    variable's gradient norm (scaled)."""
    return [
        float(out["step"]),
        -1.0,
        float(out["scale"]),
        float(out["rate"]),
        float(out["loss"]),
        *np.asarray(out["norms"], "float64").tolist(),
    ]


def _peak(full: dict, ks: list[int]) -> float:
    """Max-abs over the gradients `ks`; NaN if any norm is NaN."""
    if any(math.isnan(float(full["norms"][k])) for k in ks):
        return math.nan
    return max(float(full["grad_max"][k]) for k in ks)
