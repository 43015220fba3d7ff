"""The one module that touches Keras and TensorFlow internals.

`GradientDiagnostics` needs the gradients the optimizer really applies and
the layer outputs of the same step, without a second forward or backward
pass. This module gets them by wrapping, on the instances only and for the
duration of `fit`:

- `optimizer.apply`: every training step funnels its gradients through it
  (`apply_gradients` calls it). The wrapper all-reduces them across replicas
  under `tf.distribute` (Keras does that later, inside the TF optimizer),
  divides by the loss scale (`LossScaleOptimizer.dynamic_scale`, read before
  the original `apply` changes it, or the static `loss_scale_factor`) and
  computes statistics in-graph. Gradients are seen before clipping.
- the `call` of every monitored leaf layer: while a train function of ours is
  being traced, the output tensor is kept so the `apply` wrapper can compute
  activation statistics from it. Symbolic (KerasTensor) calls, evaluation and
  prediction are not touched.
- `model.train_function`: two train functions are built with
  `model._make_function` from the model's own `train_step`: a "sentinel" one
  (global gradient norm and non-finite check, every step) and a "full" one
  (plus per-layer statistics), and the callback swaps them in per batch.
- `model.make_train_function`: a guard that undoes every hook if the model
  is trained again after a `fit` that died without `on_train_end` (Keras 3
  does not call it on exceptions).

Results leave the graph through non-trainable `tf.Variable`s created under
the model's distribution strategy, read on the host only when recording.
`check_internals()` fails loudly when the Keras internals used here change.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import threading
from typing import Any

import keras
import numpy as np

from keras_actloss import activations
from keras_actloss.diagnostics import stats
from keras_actloss.diagnostics.records import LayerInfo
from keras_actloss.profiles import ActivationProfile

SENTINEL = "sentinel"
FULL = "full"

# Under dynamic loss scaling a non-finite step is an overflow that the
# optimizer skips (and halves the scale). It only counts as a real non-finite
# gradient once this many consecutive steps were non-finite: by then the
# scale has been cut by 2**10, far beyond any normal overflow streak.
LOSS_SCALE_PATIENCE = 10

# Label rows kept from a recorded batch for `check_model(model, y=...)`.
LABEL_ROWS = 64

# Per-layer slots of the full-statistics vector, in order.
LAYER_FIELDS = (
    "grad_norm",
    "grad_rms",
    "grad_max",
    "weight_norm",
    "update_ratio",
    "zero_fraction",
    "dead_fraction",
    "saturation",
)
GLOBAL_FIELDS = (
    "step",
    "global_norm",
    "non_finite",
    "skipped",
    "loss",
    "batch_size",
    "learning_rate",
)
# Sentinel vector: max finite norm and its step since the last read, first
# counted non-finite step / layer index / norm, current non-finite streak,
# skipped overflow steps, last step seen.
SENTINEL_FIELDS = (
    "max_norm",
    "max_step",
    "nf_step",
    "nf_layer",
    "nf_norm",
    "streak",
    "skipped",
    "last_step",
)
_SENTINEL_INIT = (-1.0, -1.0, -1.0, -1.0, 0.0, 0.0, 0.0, -1.0)

# What this module relies on: (object, attribute). Checked by
# `check_internals()`.
_REQUIRED = (
    ("trainer", "_make_function"),
    ("trainer", "train_step"),
    ("trainer", "make_train_function"),
    ("optimizer", "apply"),
    ("optimizer", "apply_gradients"),
    ("optimizer", "iterations"),
    ("optimizer", "scale_loss"),
    ("layer", "_flatten_layers"),
    ("layer", "call"),
)


def check_internals() -> None:
    """Raises `RuntimeError` if a Keras internal used by the hooks is missing.

    Checks the attributes and signatures the hooks rely on, so a Keras
    upgrade that moves them fails here, loudly, instead of silently
    recording nothing.
    """
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer
    from keras.src.optimizers.base_optimizer import BaseOptimizer

    owners = {
        "trainer": TensorFlowTrainer,
        "optimizer": BaseOptimizer,
        "layer": keras.layers.Layer,
    }
    missing = [f"{o}.{a}" for o, a in _REQUIRED if not hasattr(owners[o], a)]
    lso = keras.optimizers.LossScaleOptimizer
    if "dynamic_scale" not in inspect.getsource(lso.build):
        missing.append("LossScaleOptimizer.dynamic_scale")
    init = inspect.signature(BaseOptimizer.__init__).parameters
    if "loss_scale_factor" not in init:
        missing.append("Optimizer.loss_scale_factor")
    if not missing:
        params = inspect.signature(BaseOptimizer.apply).parameters
        if list(params)[:3] != ["self", "grads", "trainable_variables"]:
            missing.append("Optimizer.apply(grads, trainable_variables)")
        make = inspect.signature(TensorFlowTrainer._make_function).parameters
        if list(make) != ["self", "step_function"]:
            missing.append("TensorFlowTrainer._make_function(step_function)")
    if missing:
        raise RuntimeError(
            "keras_actloss.callbacks.GradientDiagnostics relies on Keras "
            f"internals that changed in Keras {keras.__version__}: "
            f"{', '.join(missing)}."
        )


@dataclasses.dataclass
class LayerPlan:
    """One monitored layer: its variables and the profile of its output."""

    info: LayerInfo
    layer: Any
    variables: list
    profile: ActivationProfile | None
    channel_axis: int = -1
    leaf: bool = True


def _half_squares(tensors):
    """Half the sum of squares of float tensors, one fused op per tensor.

    The in-graph equivalent of `stats.sum_of_squares(tensors) / 2`
    (`tf.nn.l2_loss` reads each tensor once); used on every step.
    """
    import tensorflow as tf

    parts = [tf.nn.l2_loss(tf.cast(t, "float32")) for t in tensors]
    return tf.add_n(parts) if len(parts) > 1 else parts[0]


def _children(layer) -> list:
    return list(layer._flatten_layers(include_self=False, recursive=False))


def _watched_profile(layer) -> ActivationProfile | None:
    try:
        profile = activations.profile(layer)
    except ValueError:
        return None
    if profile is None:
        return None
    if profile.inactive_below is None and profile.saturation_bounds is None:
        return None
    return profile


def _walk(layer, prefix: str, seen: set):
    for child in _children(layer):
        if id(child) in seen or isinstance(child, keras.layers.InputLayer):
            continue
        seen.add(id(child))
        name = prefix + child.name
        kids = _children(child)
        if not kids:
            yield name, child, list(child.trainable_variables), True
            continue
        inner = {id(v) for k in kids for v in k.trainable_variables}
        own = [v for v in child.trainable_variables if id(v) not in inner]
        if own:
            yield name, child, own, False
        yield from _walk(child, name + "/", seen)


def plan_layers(model) -> list[LayerPlan]:
    """Lists the monitored layers of `model` in model order.

    Leaf layers (no sublayers) are monitored when they have trainable
    variables or an output activation from the ReLU family, sigmoid or tanh;
    nested models and composite layers are walked and named `outer/inner`.
    A composite layer's own variables (outside its sublayers) form an entry
    of their own, without activation statistics.
    """
    plans = []
    for name, layer, variables, leaf in _walk(model, "", set()):
        profile = _watched_profile(layer) if leaf else None
        if not variables and profile is None:
            continue
        axis = 1 if getattr(layer, "data_format", None) == "channels_first" else -1
        info = LayerInfo(
            name=name,
            class_name=type(layer).__name__,
            activation=None if profile is None else profile.name,
            has_trainable_weights=bool(variables),
            depth=len(plans),
        )
        plans.append(LayerPlan(info, layer, variables, profile, axis, leaf))
    return plans


class TrainHooks:
    """Installs, runs and removes the instrumentation of one `fit`.

    Args:
        model: The compiled Keras model.
        plans: The monitored layers (from `plan_layers`).
        histogram_size: Gradient elements kept per layer for histograms (a
            strided sample), or 0 for none.
    """

    def __init__(self, model, plans: list[LayerPlan], histogram_size: int = 0):
        import tensorflow as tf

        self._tf = tf
        self.model = model
        self.optimizer = model.optimizer
        self.plans = plans
        self.histogram_size = histogram_size
        self.loss_scaled = isinstance(
            self.optimizer, keras.optimizers.LossScaleOptimizer
        )
        self.strategy = model.distribute_strategy
        self.replicas = self.strategy.num_replicas_in_sync
        self._local = threading.local()
        self._functions: dict[str, Any] = {}
        self._present: dict[tuple[int, str], bool] = {}
        self._saved: dict[str, Any] = {}
        self.signature = self.signature_of(model)
        # With one step per execution the full step hands the sentinel over
        # and resets it in-graph; with more, earlier steps of the execution
        # would be lost, so the host resets it.
        self.resets_in_graph = model.steps_per_execution == 1
        self.installed = False

    # ---------------------------------------------------------------- set-up
    @staticmethod
    def signature_of(model) -> tuple:
        """What the traced train functions depend on; equal means reusable."""
        return (
            id(model.optimizer),
            id(getattr(model, "_compile_loss", None)),
            model.steps_per_execution,
            model.jit_compile,
            model.run_eagerly,
            tuple(id(v) for v in model.trainable_variables),
        )

    def reusable_for(self, model) -> bool:
        """Whether this fit can run the train functions traced last time."""
        return model is self.model and self.signature == self.signature_of(model)

    def install(self) -> None:
        """Creates the variables and wraps the optimizer, layers and model.

        Called again for a later `fit` of the same compiled model, it keeps
        the variables and the train functions already traced.
        """
        check_internals()
        model, optimizer = self.model, self.optimizer
        if hasattr(self, "_sentinel"):
            self._sentinel.assign(np.array(_SENTINEL_INIT))
        else:
            self._create_variables()
        self._saved["train_function"] = model.train_function
        self._wrap(optimizer, "apply", self._apply_wrapper(optimizer.apply))
        self._wrap(optimizer, "scale_loss", self._scale_loss_wrapper(optimizer))
        self._wrap(model, "make_train_function", self._guard(model))
        for i, plan in enumerate(self.plans):
            if plan.profile is not None:
                self._wrap(plan.layer, "call", self._call_wrapper(plan.layer.call, i))
        self.installed = True

    def _create_variables(self) -> None:
        model, optimizer = self.model, self.optimizer
        self._labels = None
        if self.replicas == 1 and not model.jit_compile:
            self._labels = self._tf.Variable(
                np.zeros((0,), "float32"),
                shape=self._tf.TensorShape(None),
                trainable=False,
            )
        with self.strategy.scope():
            if not optimizer.built:
                optimizer.build(model.trainable_variables)
            self._sentinel = self._variable(np.array(_SENTINEL_INIT))
            width = (
                len(GLOBAL_FIELDS)
                + len(SENTINEL_FIELDS)
                + len(LAYER_FIELDS) * len(self.plans)
            )
            self._full = self._variable(np.full(width, np.nan))
            self._samples = {}
            if self.histogram_size:
                for i, plan in enumerate(self.plans):
                    size = self._sample_size(plan.variables)
                    if size:
                        self._samples[i] = self._variable(np.zeros(size, "float32"))
        self._var_layer = {}
        for i, plan in enumerate(self.plans):
            for v in plan.variables:
                self._var_layer[id(v)] = i

    def _variable(self, value):
        tf = self._tf
        return tf.Variable(
            value.astype("float64" if value.dtype == np.float64 else value.dtype),
            trainable=False,
            synchronization=tf.VariableSynchronization.ON_WRITE,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )

    def _sample_size(self, variables) -> int:
        total = sum(math.prod(v.shape) for v in variables)
        return min(total, self.histogram_size)

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

    # --------------------------------------------------------- train function
    def use(self, mode: str) -> None:
        """Makes `fit` run the `mode` train function (built on first use)."""
        if mode not in self._functions:
            self._functions[mode] = self._make(mode)
        self.model.train_function = self._functions[mode]

    def _make(self, mode: str):
        model = self.model
        train_step = model.train_step

        def step(data):
            self._local.mode = mode
            self._local.outputs = {}
            self._local.loss = None
            first = self._tf.nest.flatten(data)[0]
            self._local.batch = self._tf.shape(first)[0]
            if mode == FULL and self._labels is not None:
                self._keep_labels(data)
            try:
                return train_step(data)
            finally:
                self._local.mode = None
                self._local.outputs = {}

        return model._make_function(step)

    def _keep_labels(self, data) -> None:
        """Copies the first rows of a single label tensor into `_labels`."""
        tf = self._tf
        _, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        flat = tf.nest.flatten(y)
        if len(flat) == 1 and tf.is_tensor(flat[0]) and flat[0].shape.rank:
            self._labels.assign(tf.cast(flat[0][:LABEL_ROWS], "float32"))

    def _call_wrapper(self, original, index: int):
        tf = self._tf

        @functools.wraps(original)
        def call(*args, **kwargs):
            outputs = original(*args, **kwargs)
            if getattr(self._local, "mode", None) == FULL and tf.is_tensor(outputs):
                self._local.outputs[index] = outputs
            return outputs

        return call

    def _scale_loss_wrapper(self, optimizer):
        original = optimizer.scale_loss

        @functools.wraps(original)
        def scale_loss(loss):
            if getattr(self._local, "mode", None) == FULL:
                self._local.loss = loss
            return original(loss)

        return scale_loss

    def _apply_wrapper(self, original):
        @functools.wraps(original)
        def apply(grads, trainable_variables=None):
            mode = getattr(self._local, "mode", None)
            if mode is None:
                return original(grads, trainable_variables)
            grads = list(grads)
            if trainable_variables is None:
                variables = list(self.optimizer._trainable_variables)
            else:
                trainable_variables = list(trainable_variables)
                variables = trainable_variables
            return self._instrumented_apply(
                original, mode, grads, variables, trainable_variables
            )

        return apply

    # ------------------------------------------------------------ in-graph
    def _scale(self):
        tf = self._tf
        if self.loss_scaled:
            return tf.cast(
                tf.convert_to_tensor(self.optimizer.dynamic_scale), "float32"
            )
        if self.optimizer.loss_scale_factor is not None:
            return tf.constant(float(self.optimizer.loss_scale_factor))
        return None

    def _reduce(self, grads: list) -> list:
        """Dense gradients summed across replicas (None kept in place)."""
        tf = self._tf
        dense = [None if g is None else tf.convert_to_tensor(g) for g in grads]
        if self.replicas == 1:
            return dense
        present = [g for g in dense if g is not None]
        summed = iter(
            tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, present
            )
        )
        return [None if g is None else next(summed) for g in dense]

    def _instrumented_apply(self, original, mode, grads, variables, passed):
        tf = self._tf
        scale = self._scale()
        step = tf.cast(tf.convert_to_tensor(self.optimizer.iterations), "float64")
        reduced = self._reduce(grads)
        sentinel = self._update_sentinel(reduced, variables, step, scale)
        if mode != FULL:
            return original(grads, passed)
        layer_grads = self._group(reduced, variables)
        weights = [
            [tf.identity(tf.convert_to_tensor(v)) for v in p.variables]
            for p in self.plans
        ]
        values = self._pre_update(layer_grads, weights, scale, sentinel)
        if self._samples:
            self._write_samples(layer_grads, scale)
        result = original(grads, passed)
        ratios = [
            self._update_ratio(w, p.variables) if p.variables else None
            for p, w in zip(self.plans, weights)
        ]
        head = [step, sentinel["norm"], sentinel["bad"], sentinel["skipped"]]
        head += self._loss_and_batch()
        head.append(tf.cast(self.optimizer.learning_rate, "float32"))
        head += tf.unstack(sentinel["state"])
        self._full.assign(self._pack(head, values, ratios))
        if self.resets_in_graph:
            # The host reads the sentinel with the full statistics: start
            # the next interval here instead of with an eager assign.
            self._sentinel.assign(self._fresh(sentinel["state"]))
        return result

    def _update_ratio(self, before, variables):
        """`stats.update_ratio` with one fused reduction per variable."""
        tf = self._tf
        after = [tf.convert_to_tensor(v) for v in variables]
        delta = _half_squares([a - b for a, b in zip(after, before)])
        return tf.math.divide_no_nan(tf.sqrt(delta), tf.sqrt(_half_squares(before)))

    def _fresh(self, state):
        """The initial sentinel state, keeping the non-finite streak."""
        tf = self._tf
        init = tf.constant(_SENTINEL_INIT, "float64")
        streak = SENTINEL_FIELDS.index("streak")
        mask = tf.constant([i == streak for i in range(len(SENTINEL_FIELDS))])
        return tf.where(mask, state, init)

    def _loss_and_batch(self) -> list:
        """The step's loss (mean over replicas) and global batch size."""
        tf = self._tf
        loss = getattr(self._local, "loss", None)
        self._present[(-1, "loss")] = loss is not None
        loss = tf.constant(float("nan")) if loss is None else loss
        pair = tf.stack(
            [
                tf.cast(tf.reshape(loss, []), "float32"),
                tf.cast(self._local.batch, "float32"),
            ]
        )
        if self.replicas > 1:
            # Keras already divided the loss by the number of replicas.
            pair = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, pair
            )
        return [pair[0], pair[1]]

    def _group(self, grads, variables) -> list[list]:
        groups = [[] for _ in self.plans]
        for g, v in zip(grads, variables):
            index = self._var_layer.get(id(v))
            if index is not None and g is not None:
                groups[index].append(g)
        return groups

    def _update_sentinel(self, grads, variables, step, scale) -> dict:
        """Global norm and non-finite check of this step, into `_sentinel`.

        Runs on every step, so it is written for few graph ops: one
        reduction per variable, then one `where` over the state vector.
        """
        tf = self._tf
        present = [(g, v) for g, v in zip(grads, variables) if g is not None]
        halves = tf.stack([_half_squares([g]) for g, _ in present])
        norm = tf.sqrt(2.0 * tf.reduce_sum(halves))
        if scale is not None:
            norm = norm / scale
        finite = tf.math.is_finite(halves)
        bad = tf.logical_not(tf.reduce_all(finite))
        layer_of = tf.constant(
            [float(self._var_layer.get(id(v), -1)) for _, v in present], "float64"
        )
        first_layer = tf.gather(layer_of, tf.argmin(tf.cast(finite, "int32")))
        old = self._sentinel.read_value()
        f = dict(zip(SENTINEL_FIELDS, tf.unstack(old)))
        streak, skipped_total = f["streak"], f["skipped"]
        counted, skipped = bad, tf.constant(False)
        if self.loss_scaled:
            streak = tf.where(bad, streak + 1.0, 0.0)
            counted = tf.logical_and(bad, streak >= LOSS_SCALE_PATIENCE)
            skipped = tf.logical_and(bad, tf.logical_not(counted))
            skipped_total = skipped_total + tf.cast(skipped, "float64")
        norm64 = tf.cast(norm, "float64")
        new_max = tf.logical_and(tf.logical_not(bad), norm64 > f["max_norm"])
        first_bad = tf.logical_and(counted, f["nf_step"] < 0)
        keep = tf.constant(True)
        candidate = [norm64, step, step, first_layer, norm64, streak, skipped_total]
        mask = [new_max, new_max, first_bad, first_bad, first_bad, keep, keep]
        state = tf.where(tf.stack(mask + [keep]), tf.stack(candidate + [step]), old)
        self._sentinel.assign(state)
        positions: dict[int, list[int]] = {}
        for k, (_, v) in enumerate(present):
            positions.setdefault(self._var_layer.get(id(v), -1), []).append(k)
        return {
            "norm": norm,
            "bad": tf.cast(counted, "float32"),
            "skipped": tf.cast(skipped, "float32"),
            "halves": halves,
            "positions": positions,
            "state": state,
        }

    def _pre_update(self, layer_grads, weights, scale, sentinel) -> list:
        """Per-layer gradient, weight and activation statistics (flat list).

        The sums of squares come from the sentinel's per-variable reduction,
        so the gradients are read once more only for the max-abs.
        """
        tf = self._tf
        values = []
        slots = []
        outputs = getattr(self._local, "outputs", {})
        for i, (plan, g) in enumerate(zip(self.plans, layer_grads)):
            has_grad = bool(g)
            self._present[(i, "grad")] = has_grad
            if has_grad:
                halves = tf.gather(sentinel["halves"], sentinel["positions"][i])
                squares = 2.0 * tf.reduce_sum(halves)
                norm = tf.sqrt(squares)
                rms = tf.sqrt(squares / max(stats.element_count(g), 1))
                peak = tf.reduce_max(tf.stack([tf.reduce_max(tf.abs(x)) for x in g]))
                if scale is not None:
                    norm, rms, peak = norm / scale, rms / scale, peak / scale
                values += [norm, rms, peak, tf.sqrt(2.0 * _half_squares(weights[i]))]
            else:
                values += [None] * 4
            out = outputs.get(i)
            self._present[(i, "act")] = out is not None
            if out is not None:
                c = stats.activation_counts(
                    tf.stop_gradient(out), plan.profile, plan.channel_axis
                )
                slots.append((i, c))
        values = values + self._activation_values(slots)
        return values

    def _activation_values(self, slots) -> list:
        """Zero, dead and saturated fractions, summed across replicas first."""
        tf = self._tf
        by_layer = {}
        if slots:
            flat = []
            for _, c in slots:
                flat += [tf.reshape(c[k], [-1]) for k in sorted(c)]
            vector = tf.concat(flat, axis=0)
            if self.replicas > 1:
                vector = tf.distribute.get_replica_context().all_reduce(
                    tf.distribute.ReduceOp.SUM, vector
                )
            offset = 0
            for i, c in slots:
                summed = {}
                for k in sorted(c):
                    size = int(np.prod(c[k].shape)) if c[k].shape.rank else 1
                    part = vector[offset : offset + size]
                    summed[k] = part if c[k].shape.rank else part[0]
                    offset += size
                by_layer[i] = summed
        values = []
        for i, plan in enumerate(self.plans):
            c = by_layer.get(i)
            zero = dead = sat = None
            if c is not None and "inactive" in c:
                zero = c["inactive"] / c["elements"]
                if plan.profile.can_die:
                    units = tf.cast(tf.size(c["active_per_unit"]), "float32")
                    dead = stats.dead_units(c["active_per_unit"]) / units
            if c is not None and "saturated" in c:
                sat = c["saturated"] / c["elements"]
            values.append((zero, dead, sat))
        return values

    def _write_samples(self, layer_grads, scale) -> None:
        tf = self._tf
        for i, var in self._samples.items():
            g = layer_grads[i]
            if not g:
                continue
            flat = tf.concat([tf.reshape(tf.cast(x, "float32"), [-1]) for x in g], 0)
            total = int(flat.shape[0])
            stride = max(1, total // int(var.shape[0]))
            sample = flat[::stride][: int(var.shape[0])]
            if scale is not None:
                sample = sample / scale
            var.assign(sample)

    def _pack(self, head, values, ratios):
        tf = self._tf
        n = len(self.plans)
        grad_part, act_part = values[: 4 * n], values[4 * n :]
        flat = [tf.cast(h, "float64") for h in head]
        nan = tf.constant(float("nan"), "float64")
        for i in range(n):
            per = grad_part[4 * i : 4 * i + 4] + [ratios[i]] + list(act_part[i])
            flat += [nan if x is None else tf.cast(x, "float64") for x in per]
        return tf.stack(flat)

    # ------------------------------------------------------------- host side
    def read_full(self) -> dict:
        """The last full-statistics step, as Python values (None = n/a)."""
        vector = self._full.numpy()
        head = dict(zip(GLOBAL_FIELDS, vector[: len(GLOBAL_FIELDS)].tolist()))
        base = len(GLOBAL_FIELDS)
        copy = vector[base : base + len(SENTINEL_FIELDS)].tolist()
        head["sentinel"] = dict(zip(SENTINEL_FIELDS, copy))
        if not self._present.get((-1, "loss")):
            head["loss"] = None
        layers = []
        base = len(GLOBAL_FIELDS) + len(SENTINEL_FIELDS)
        width = len(LAYER_FIELDS)
        for i in range(len(self.plans)):
            row = vector[base + i * width : base + (i + 1) * width].tolist()
            fields = dict(zip(LAYER_FIELDS, row))
            for key in ("grad_norm", "grad_rms", "grad_max", "weight_norm"):
                if not self._present.get((i, "grad")):
                    fields[key] = None
            if not self._present.get((i, "grad")):
                fields["update_ratio"] = None
            act = self._present.get((i, "act"))
            for key in ("zero_fraction", "dead_fraction", "saturation"):
                if not act or math.isnan(fields[key]):
                    fields[key] = None
            layers.append(fields)
        head["layers"] = layers
        return head

    def read_samples(self) -> dict[int, np.ndarray]:
        """Gradient samples of the last full step, by layer index."""
        return {
            i: var.numpy()
            for i, var in self._samples.items()
            if self._present.get((i, "grad"))
        }

    def read_labels(self):
        """Labels of a recorded batch (float32, up to 64 rows), or None.

        Only kept for a single label tensor, without `tf.distribute`
        replicas and without `jit_compile`.
        """
        if self._labels is None:
            return None
        labels = self._labels.numpy()
        return labels if labels.size else None

    def read_sentinel(self, reset: bool = True) -> dict:
        """The sentinel since the last read; resets it unless `reset=False`."""
        values = dict(zip(SENTINEL_FIELDS, self._sentinel.numpy().tolist()))
        if reset:
            fresh = np.array(_SENTINEL_INIT)
            fresh[SENTINEL_FIELDS.index("streak")] = values["streak"]
            self._sentinel.assign(fresh)
        return values
