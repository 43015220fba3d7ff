"""The hooks of `GradientDiagnostics` on TensorFlow: the module that wraps
Keras and TensorFlow internals (`check_internals`, `TrainHooks`).

`GradientDiagnostics` needs the gradients the optimizer really applies and
the layer outputs of the same step, without a second forward or backward
pass. This module gets them by wrapping, on the instances only and for the
duration of `fit`:

- `optimizer.apply` of every optimizer that may update the model's weights
  (`_model_plan.find_optimizers`: `model.optimizer`, the optimizers held by
  the model's attributes, as in a GAN, and those passed to the callback):
  every training step funnels its gradients through it (`apply_gradients`
  calls it). The wrapper all-reduces them across replicas under
  `tf.distribute` (Keras does that later, inside the TF optimizer), notes
  the loss scale (`LossScaleOptimizer.dynamic_scale`, read before the
  original `apply` changes it, or the static `loss_scale_factor`), the step
  and the learning rate, and on full steps reads the weights before the
  first update. The statistics of the step are computed in-graph once
  `train_step` returned, from the gradients of every `apply` call of the
  step. Gradients are seen before clipping.
- the `call` of every monitored leaf layer: while a train function of ours is
  being traced, the output tensor is kept so the `apply` wrapper can compute
  activation statistics from it. Symbolic (KerasTensor) calls, evaluation and
  prediction are not touched.
- `model.train_function`: train functions are built with
  `model._make_function` from the model's own `train_step`: a "sentinel" one
  (per-variable gradient norms, the learning rate and the loss, every step)
  and a "full" one (plus per-layer statistics and, when histograms are on,
  the gradient samples); the callback swaps them in per batch.
- `model.make_train_function`: a guard that undoes every hook if the model
  is trained again after a `fit` that died without `on_train_end` (Keras 3
  does not call it on exceptions).

The statistics themselves are built by the `GraphStats` mixin
(`_graph_stats`, on the shared `diagnostics.step_stats`, no Keras
internals). Every step's statistics (its alarm values, or on full steps the
named full statistics) are extra outputs of the train function, which the
wrapper takes out of the logs before Keras sees them; the norms are also written
into a non-trainable `tf.Variable` ring (created under the model's
distribution strategy), read after `steps_per_execution` steps ran in one
call (`train_step` must return a dict, as Keras documents); under
multi-worker training they carry a leading axis of 1, as Keras reduces the
step's outputs with a mean over axis 0 across workers.
`check_internals()` fails loudly when the Keras internals used here (and
by the walk of the model in `_model_plan`) change.
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

from keras_actloss.callbacks._graph_stats import GraphStats
from keras_actloss.callbacks._model_plan import (
    LayerPlan,
    find_optimizers,
    learning_rate,
    missing_internals,
    sample_weighted,
    step_counter,
)
from keras_actloss.callbacks._step_rows import (
    ALARM_LOGS_KEY,
    FULL,
    FULL_LOGS_KEY,
    RING_HEAD,
    FlowStamps,
    rate_columns,
)
from keras_actloss.diagnostics import step_activations
from keras_actloss.diagnostics.step_reader import StepLayout
from keras_actloss.diagnostics.step_stats import RowLayout

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
    from keras.src.ops.function import Function

    if "_operations_by_depth" not in inspect.getsource(Function.__init__):
        missing.append("Function._operations_by_depth")
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
    missing += missing_internals()
    if missing:
        raise RuntimeError(
            "keras_actloss.callbacks.GradientDiagnostics relies on Keras "
            f"internals that changed in Keras {keras.__version__}: "
            f"{', '.join(missing)}."
        )


def is_chief(strategy) -> bool:
    """Whether this process writes the logs under `strategy`: always, but
    under multi-worker training only the chief (the `"chief"` task, or
    worker 0 when the cluster has none)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if task_type is None or task_type == "chief":
        return True
    jobs = resolver.cluster_spec().as_dict()
    return task_type == "worker" and "chief" not in jobs and resolver.task_id == 0


def multi_worker(strategy) -> bool:
    """Whether Keras reduces the step's outputs across workers under
    `strategy` (`MultiWorkerMirroredStrategy` with a cluster)."""
    import tensorflow as tf

    # The test Keras 3.15 makes in `reduce_per_replica`.
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and bool(
        strategy.extended._in_multi_worker_mode()
    )


def _of_step(tf, tensor, local) -> bool:
    """Whether `tensor` is made in the step's own graph (`local.graph`),
    where its statistics can read it: not in the body of a loop or a
    branch of a conditional (a `FuncGraph` of its own), as a layer of a
    custom RNN cell that `keras.layers.RNN` runs in a `tf.while_loop`,
    which no op outside the loop may read (probed: a `Dense(relu)` of a
    cell of the user's own made `fit` fail)."""
    if not tf.is_tensor(tensor):
        return False
    return tf.executing_eagerly() or tensor.graph is local.graph


@dataclasses.dataclass
class AppliedCall:
    """One `apply` call of a traced step: its optimizer, its gradients
    (summed across replicas), their variables, and what was read before
    the update: the loss scale (None without), the step and the rate."""

    optimizer: Any
    grads: list
    variables: list
    scale: Any
    dynamic: bool
    step: Any
    rate: Any


class TrainHooks(GraphStats):
    """Installs, runs and removes the instrumentation of one `fit`.

    Args:
        model: The compiled Keras model.
        plans: The monitored layers (from `_model_plan.plan_layers`).
        histogram_size: Gradient elements kept per layer for histograms (a
            strided sample), or 0 for none.
        ring_rows: Steps the ring of per-step gradient norms holds: the host
            must read it (`read_steps`/`read_full`) before it wraps.
        optimizers: Optimizers to hook besides those `find_optimizers`
            finds on the model.

    The step of a recording is the iteration count of the first optimizer
    whose `apply` runs in the traced step (`model.optimizer` in a plain
    `fit`): `step_count()`.
    """

    def __init__(
        self,
        model,
        plans: list[LayerPlan],
        histogram_size: int = 0,
        ring_rows: int = 256,
        optimizers=(),
    ):
        import tensorflow as tf

        self._tf = tf
        self._set_up(model, plans, histogram_size, ring_rows, optimizers)
        self.strategy = model.distribute_strategy
        self.replicas = self.strategy.num_replicas_in_sync
        # Compiled with XLA: `jit_compile`, or a TPU's strategy (every step).
        self.xla = bool(model.jit_compile and not model.run_eagerly) or (
            "TPU" in type(self.strategy).__name__
        )
        self._local = threading.local()
        self._functions: dict[str, Any] = {}
        self._saved: dict[str, Any] = {}
        self.signature = self.signature_of(model, self.extra, self.hooked)
        self._last_full = None
        self.installed = False

    # ---------------------------------------------------------------- set-up
    def _set_up(self, model, plans, histogram_size, ring_rows, optimizers) -> None:
        """What every backend's hooks note first: the model, the monitored
        layers, the optimizers to hook (`find_optimizers`) and whether one
        scales the loss, until a step is traced (then the step's own
        optimizers decide)."""
        self.model = model
        # Called once the `make_train_function` guard undid the hooks of a
        # `fit` that died (`_guard`): the owner lets go of the model too.
        self.stale = None
        self.extra = tuple(optimizers)
        self.hooked = find_optimizers(model, self.extra)
        self.optimizers = [o for _, o in self.hooked]
        self.plans = plans
        self.histogram_size = histogram_size
        self.ring_rows = ring_rows
        self.loss_scaled = any(
            isinstance(o, keras.optimizers.LossScaleOptimizer) for o in self.optimizers
        )
        self._counter = None  # The optimizer that counts the steps.
        # How many times it applies in one step (a WGAN's critic: n_critic).
        self.counter_applies = 1
        # Whether the optimizers of the last step traced scaled different
        # losses (a GAN's discriminator and generator): the loss noted is
        # then one network's, not a measure of the whole step's progress.
        self.separate_losses = False
        # Whether the last step traced had sample weights (`sample_weighted`).
        self.sample_weighted = False
        # The train function the last `remove` gave back to the model.
        self._restored = None

    @staticmethod
    def signature_of(model, optimizers=(), found=None) -> tuple:
        """What the traced train functions depend on; equal means reusable.
        `found`: `find_optimizers(model, optimizers)`, when known."""
        found = find_optimizers(model, optimizers) if found is None else found
        return (
            tuple(id(o) for _, o in found),
            id(getattr(model, "_compile_loss", None)),
            model.steps_per_execution,
            model.jit_compile,
            model.run_eagerly,
            tuple(id(v) for v in model.trainable_variables),
        )

    def reusable_for(self, model) -> bool:
        """Whether this fit can run the train functions traced last time."""
        return model is self.model and self.signature == self.signature_of(
            model, self.extra
        )

    @staticmethod
    def value(variable):
        """`variable`'s value (on JAX, from `fit`'s training state while
        `fit` keeps it purged)."""
        return variable.value

    @staticmethod
    def mean_squares(values: list) -> list[float]:
        """The mean square of each of `values` (float32), computed where
        it is: only the norms come to the host, in one read, not a large
        model's weights (one op per value: each eager op and each read
        costs time before the first step)."""
        if not values:
            return []
        import tensorflow as tf

        norms = [
            tf.raw_ops.EuclideanNorm(
                input=tf.cast(v, "float32"), axis=list(range(len(v.shape)))
            )
            for v in values
        ]
        norms = np.asarray(tf.stack(norms), "float64")
        return [
            float(n * n / max(1, math.prod(v.shape))) for n, v in zip(norms, values)
        ]

    @property
    def counter_known(self) -> bool:
        """Whether the step counter is known: one optimizer is hooked, or a
        traced step applied gradients."""
        return self._counter is not None or len(self.optimizers) == 1

    def step_count(self) -> int:
        """The step counter: the iterations of the first optimizer that
        applies gradients in the step. Until a step is traced with several
        optimizers hooked, the smallest of their counts: a guess (the
        callback moves to the real count after the first batch), never
        ahead of the real count, so nothing is written at a later step."""
        if self._counter is not None:
            return int(self._counter.numpy())
        counts = (int(step_counter(o).numpy()) for o in self.optimizers)
        return min(counts, default=0)

    def hooked_names(self) -> str:
        """The hooked optimizers, for messages: `model.optimizer (SGD)`."""
        return (
            ", ".join(f"`{path}` ({type(o).__name__})" for path, o in self.hooked)
            or "none"
        )

    def install(self, steps: int | None = None, all_full: bool = False) -> None:
        """Creates the variables and wraps the optimizer, layers and model.

        Called again for a later `fit` of the same compiled model, it keeps
        the variables and the train functions already traced. `steps` (the
        steps the `fit` will run, when known) and `all_full` (every step
        records in full) are for the JAX hooks: here the callback decides
        when the every-step function pays (`_sentinel_pays`).
        """
        model = self.model
        if not hasattr(self, "_ring"):
            check_internals()  # Once: Keras does not change between fits.
            self._create_variables()
        if self.retraced():
            self._functions = {}
        # Steps of an earlier fit that died unread are not reported.
        self.reset_sentinel()
        self._saved["train_function"] = model.train_function
        for optimizer in self.optimizers:
            self._wrap(optimizer, "apply", self._apply_wrapper(optimizer))
            self._wrap(optimizer, "scale_loss", self._scale_loss_wrapper(optimizer))
        self._wrap(model, "make_train_function", self._guard(model))
        for i, plan in enumerate(self.plans):
            if plan.profile is not None:
                method = getattr(plan.hooked, plan.method)
                self._wrap(plan.hooked, plan.method, self._call_wrapper(method, i))
        self.installed = True

    def _create_variables(self) -> None:
        model, optimizer = self.model, self.model.optimizer
        self._summed = self._fresh = None
        self._kept_made = False  # `GraphStats._make_kept`, under XLA.
        # Rows of a batch kept (`GraphStats._keep_batch`) and activation
        # counts summed over an execution's steps (`_over_execution`): one
        # replica only. One holder of rows per input and per output (its
        # input and label tensors).
        self._inputs = [None] * max(1, len(getattr(model, "inputs", None) or ()))
        self._labels = [None] * max(1, len(getattr(model, "outputs", None) or ()))
        self._input_form = self._label_form = None
        self._keeps = self.replicas == 1
        self._sums = self._keeps and int(model.steps_per_execution or 1) > 1
        if self._keeps:
            if not self.xla:  # Under XLA `PaddedRows` of static shapes (`_make_kept`).
                self._inputs = [self._shapeless() for _ in self._inputs]
                self._labels = [self._shapeless() for _ in self._labels]
            self._fresh = self._tf.Variable(True, trainable=False)
            if self._sums:
                # Made here, not when the step is traced: a variable made
                # while `fit`'s function is first traced makes TensorFlow
                # trace it twice. (Under XLA given its shape when traced.)
                self._summed = self._shapeless()
        with self.strategy.scope():
            if optimizer is not None and not optimizer.built:
                optimizer.build(model.trainable_variables)
            # The gradients' norms, zero-padded, then the units' flow, then
            # the optimizers' rates.
            at = RING_HEAD + len(model.trainable_variables)
            self._flow = FlowStamps(step_activations.flow_layout(self.plans), at)
            self._rates = rate_columns(self.optimizers)
            ring = at + len(self._flow) + self._rates
            self._ring = self._variable(np.full((self.ring_rows, ring), -1.0))
            # Always alarm until the host sets the bounds.
            self._bounds = None
            self._tick = None
            if self.loss_scaled:  # Keyed by our own step count (`_ring_key`).
                self._tick = self._variable(np.zeros((), "int64"))
        self._sample_sizes = {}
        if self.histogram_size:
            for i, plan in enumerate(self.plans):
                size = self._sample_size(plan.variables)
                if size:
                    self._sample_sizes[i] = size
        self._grad_layout = self._weight_layout = RowLayout()
        self._grad_layers, self._grad_counts, self._grad_vectors = [], [], []
        self._layout, self._loss_known = StepLayout(), False
        self._var_layer = {}
        for i, plan in enumerate(self.plans):
            for v in plan.variables:
                self._var_layer[id(v)] = i

    def _shapeless(self):
        """An empty float32 variable that takes a value of any shape."""
        return self._tf.Variable(
            np.zeros((0,), "float32"),
            shape=self._tf.TensorShape(None),
            trainable=False,
        )

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
        self._restored = self.model.train_function
        self.installed = False

    def retraced(self) -> bool:
        """Whether the model's train function is no longer the one the last
        `remove` gave back: the user reset it (`model.train_function =
        None`, so that `fit` traces the step again after changing what it
        runs, such as a GAN's flag that turns the generator's update on)
        or Keras rebuilt it. The train functions traced from the old step
        would run it still: they are traced afresh."""
        return self._restored is not None and (
            self.model.train_function is not self._restored
        )

    def _guard(self, model):
        original = model.make_train_function

        @functools.wraps(original)
        def make_train_function(force=False):
            # Only called when the model is trained outside our `fit`: a
            # previous `fit` died without `on_train_end`. Clean up first.
            self.remove()
            if self.stale is not None:
                self.stale()
            return model.make_train_function(force=force)

        return make_train_function

    # --------------------------------------------------------- train function
    def traced(self, mode: str) -> bool:
        """Whether the `mode` train function was built already."""
        return mode in self._functions

    def use(self, mode: str) -> None:
        """Makes `fit` run the `mode` train function (`FULL` or the
        every-step check), traced on first use."""
        if mode not in self._functions:
            self._functions[mode] = self._make(mode)
        self.model.train_function = self._functions[mode]

    def _make(self, mode: str):
        model = self.model
        train_step = model.train_step
        tf = self._tf
        # Under multi-worker training Keras reduces every output of the step
        # with `strategy.reduce("MEAN", value, axis=0)`, which would average
        # the statistics away: a leading axis of 1 on each makes that a mean
        # across replicas. The host flattens them back.
        lead = multi_worker(self.strategy)

        def extra(value):
            if not lead:
                return value
            return tf.nest.map_structure(lambda v: v[None], value)

        def step(data):
            self._local.mode = mode
            self._local.outputs = {}
            self._local.graph = tf.compat.v1.get_default_graph()
            self._local.loss = None
            self._local.losses = []
            self._local.applied = []
            first = tf.nest.flatten(data)[0]
            self._local.first = first  # Its batch size: `_loss_and_batch`.
            self._local.static_batch = first.shape[0] if first.shape.rank else None
            if mode == FULL and self._keeps:
                self._keep_batch(data)
            self.sample_weighted = sample_weighted(data)
            self._local.full = self._local.alarm = None
            try:
                logs = train_step(data)
                self._finish_step(mode)
                outputs = {
                    key: extra(value)
                    for key, value in (
                        (FULL_LOGS_KEY, self._local.full),
                        (ALARM_LOGS_KEY, self._local.alarm),
                    )
                    if value is not None
                }
                if outputs and not isinstance(logs, dict):
                    raise ValueError(
                        "GradientDiagnostics expects `train_step` to "
                        "return a dict of logs, as Keras documents. "
                        f"Received: {type(logs).__name__}"
                    )
                return {**logs, **outputs} if outputs else logs
            finally:
                self._local.mode = None
                self._local.outputs = {}
                self._local.applied = []
                self._local.first = None
                self._local.full = self._local.alarm = None

        function = model._make_function(step)

        @functools.wraps(function)
        def train_function(iterator):
            if mode == FULL and self._keeps and self.xla:
                self._make_kept(iterator)
            # The statistics come back with the logs, already computed: no
            # variable read on the host. Keras never sees them. Absent when
            # `apply` never ran (no trainable weights).
            logs = function(iterator)
            out = [logs.pop(k, None) for k in (FULL_LOGS_KEY, ALARM_LOGS_KEY)]
            if lead:
                out = [
                    None
                    if v is None
                    else tf.nest.map_structure(lambda t: tf.reshape(t, [-1]), v)
                    for v in out
                ]
            self._last_full, self._last_alarm = out
            return logs

        return train_function

    def _call_wrapper(self, original, index: int):
        tf = self._tf

        plan = self.plans[index]

        @functools.wraps(original)
        def call(*args, **kwargs):
            outputs = original(*args, **kwargs)
            local = self._local
            if getattr(local, "mode", None) != FULL:
                return outputs
            kept = plan.kept(args, kwargs, outputs)
            if kept is not None and _of_step(tf, plan.tensor(kept), local):
                local.outputs.setdefault(index, []).append(kept)
            return outputs

        return call

    def _scale_loss_wrapper(self, optimizer):
        original = optimizer.scale_loss

        @functools.wraps(original)
        def scale_loss(loss):
            # The first loss of the step (the model's, in a plain `fit`).
            local = self._local
            if getattr(local, "mode", None) is not None:
                if local.loss is None:
                    local.loss = loss
                # Each loss an optimizer of the step scales, once: a GAN's
                # networks minimise losses of their own (`separate_losses`).
                if all(seen is not loss for seen in local.losses):
                    local.losses.append(loss)
            return original(loss)

        return scale_loss

    def _apply_wrapper(self, optimizer):
        original = optimizer.apply

        @functools.wraps(original)
        def apply(grads, trainable_variables=None):
            mode = getattr(self._local, "mode", None)
            # An `apply` that another hooked one calls (a wrapper optimizer
            # of the user's) was seen by the outer one.
            if mode is None or getattr(self._local, "applying", False):
                return original(grads, trainable_variables)
            grads = list(grads)
            if trainable_variables is None:
                variables = list(optimizer._trainable_variables)
            else:
                trainable_variables = list(trainable_variables)
                variables = trainable_variables
            call = self._applied_call(optimizer, grads, variables)
            self._local.applying = True
            try:
                return self._instrumented_apply(
                    original, mode, call, grads, trainable_variables
                )
            finally:
                self._local.applying = False

        return apply

    # ------------------------------------------------------------ in-graph
    def _applied_call(self, optimizer, grads, variables) -> AppliedCall:
        """What `GraphStats` needs of one `apply` call, read before it runs."""
        tf = self._tf
        if not optimizer.built:  # As `apply` would, first: reads its scale.
            with keras.name_scope(optimizer.name, caller=optimizer):
                optimizer.build(variables)
            optimizer.built = True
        dynamic = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        if dynamic:
            scale = tf.cast(tf.convert_to_tensor(optimizer.dynamic_scale), "float32")
        elif optimizer.loss_scale_factor is not None:
            scale = tf.constant(float(optimizer.loss_scale_factor))
        else:
            scale = None
        return AppliedCall(
            optimizer=optimizer,
            grads=self._reduce(grads),
            variables=variables,
            scale=scale,
            dynamic=dynamic,
            step=tf.convert_to_tensor(step_counter(optimizer)),
            rate=tf.convert_to_tensor(learning_rate(optimizer)),
        )
