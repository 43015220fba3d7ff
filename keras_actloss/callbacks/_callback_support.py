"""What `GradientDiagnostics` relies on besides its hooks.

The backend's hooks and who writes the logs (`_check_backend`,
`_hooks_class`, `_is_chief`), the checks of the constructor's arguments,
and the conversion of the hooks' read-out of a recording into the
`StepStats` the rules and the writer take (`step_stats`, `input_scale`,
`data_saturations`), the uninformed loss level the rules compare the first
steps' loss with (`uninformed_loss`), the optimizer's clipping (`clipping`),
with the schedule of recordings (`recording_gap`).
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings

import keras
import numpy as np

from keras_actloss import activations
from keras_actloss.advisor import walk
from keras_actloss.advisor.check import output_findings, per_output
from keras_actloss.callbacks import _keras_hooks
from keras_actloss.diagnostics import stats
from keras_actloss.diagnostics.records import Clipping, LayerStats, StepStats
from keras_actloss.diagnostics.rule_support import NORMALIZATIONS
from keras_actloss.diagnostics.rules import _floored
from keras_actloss.losses.base import LossFunctionWrapper
from keras_actloss.tensor_types import is_integral

# Keras backends the callback runs on; PyTorch is not supported yet.
SUPPORTED_BACKENDS = ("tensorflow", "jax")
ON_FAILURE = ("warn", "stop", "raise")


def _check_backend() -> None:
    """Raises `ValueError` on a Keras backend the callback does not support."""
    backend = keras.backend.backend()
    if backend not in SUPPORTED_BACKENDS:
        raise ValueError(
            "GradientDiagnostics supports the TensorFlow and JAX backends "
            "(KERAS_BACKEND=tensorflow or jax); PyTorch is not supported yet. "
            "The activations, layers, losses, logs and `keras-actloss report` "
            f"work on every backend. Received: backend={backend!r}"
        )


def _hooks_class():
    """The hooks of the current backend (checked by `_check_backend`)."""
    if keras.backend.backend() == "jax":
        from keras_actloss.callbacks import _jax_hooks

        return _jax_hooks.JaxTrainHooks
    return _keras_hooks.TrainHooks


def _is_chief(model) -> bool:
    """Whether this process writes the logs."""
    if keras.backend.backend() == "jax":
        from keras_actloss.callbacks import _jax_hooks

        return _jax_hooks.is_chief()
    return _keras_hooks.is_chief(model.distribute_strategy)


def _positive_int(name: str, value, allow_none: bool = False) -> int | None:
    """`value` as a Python int (NumPy's integers too), or raises."""
    if value is None and allow_none:
        return None
    if not is_integral(value) or value < 1:
        raise ValueError(
            f"Argument `{name}` must be a positive integer"
            f"{' or None' if allow_none else ''}. Received: {name}={value!r}"
        )
    return int(value)


def _bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(
            f"Argument `{name}` must be a bool. Received: {name}={value!r}"
        )


def _optimizer_list(value) -> None:
    if value is None:
        return
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(o, keras.optimizers.Optimizer) for o in value
    ):
        raise ValueError(
            "Argument `optimizers` must be a list of "
            "`keras.optimizers.Optimizer` instances or None. "
            f"Received: optimizers={value!r}"
        )


def check_arguments(callback) -> None:
    """Raises `ValueError` naming the first constructor argument of
    `GradientDiagnostics` (as `callback` holds it) that is not what it
    takes; holds its step counts as Python ints."""
    log_dir = callback.log_dir
    if log_dir is not None and (
        not isinstance(log_dir, (str, os.PathLike)) or not os.fspath(log_dir)
    ):
        raise ValueError(
            "Argument `log_dir` must be a non-empty path or None. "
            f"Received: log_dir={log_dir!r}"
        )
    callback.every_n_steps = _positive_int("every_n_steps", callback.every_n_steps)
    callback.histogram_every_n_steps = _positive_int(
        "histogram_every_n_steps", callback.histogram_every_n_steps, True
    )
    if callback.on_failure not in ON_FAILURE:
        raise ValueError(
            f"Argument `on_failure` must be one of {ON_FAILURE}. "
            f"Received: on_failure={callback.on_failure!r}"
        )
    for name in ("record_activations", "heatmap_image", "check_model"):
        _bool(name, getattr(callback, name))
    _optimizer_list(callback.optimizers)


def _float_or_none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def step_stats(
    data: dict,
    names: list[str],
    samples: dict,
    input_scale: float | None = None,
    data_saturation: dict | None = None,
    apply_groups: dict | None = None,
    input_scales: dict | None = None,
    upstream_scales: dict | None = None,
) -> StepStats:
    """Builds the `StepStats` of one recording from the hooks' read-out
    (`apply_groups` by layer index, `_model_plan.apply_groups`;
    `input_scales` and `upstream_scales` by layer name, `input_scales`)."""
    layers = []
    flow = data.get("flow", {})
    for i, (name, fields) in enumerate(zip(names, data["layers"])):
        units = ("unit_activity", "unit_samples")
        values = {k: _float_or_none(v) for k, v in fields.items() if k not in units}
        layers.append(
            LayerStats(
                layer=name,
                grad_values=samples.get(i),
                unit_activity=fields.get("unit_activity"),
                unit_samples=fields.get("unit_samples"),
                unit_flow=flow.get(i),
                **values,
            )
        )
    return StepStats(
        step=int(data["step"]),
        global_norm=float(data["global_norm"]),
        non_finite=bool(data["non_finite"]),
        loss=None if data["loss"] is None else float(data["loss"]),
        learning_rate=float(data["learning_rate"]),
        layers=layers,
        batch_size=int(data["batch_size"]),
        activation_steps=max(1, int(round(data.get("activation_steps", 1)))),
        input_scale=input_scale,
        input_scales=dict(input_scales or {}),
        upstream_scales=None if upstream_scales is None else dict(upstream_scales),
        kernel_share=_float_or_none(data.get("kernel_share")),
        data_saturation=dict(data_saturation or {}),
        apply_groups={names[i]: k for i, k in (apply_groups or {}).items()},
        execution_rms={
            step: {name: rms for name, rms in zip(names, row) if rms is not None}
            for step, row in data.get("execution_rms", ())
        },
    )


# Cross-entropies over a softmax (or logits) of C classes: ln(C) uninformed.
_CROSS_ENTROPIES = ("categorical_crossentropy", "sparse_categorical_crossentropy")
# Keras's reductions that average over the samples (the first: its default).
_MEAN_REDUCTIONS = ("sum_over_batch_size", "mean", "mean_with_sample_weight")


def uninformed_loss(model) -> tuple[float, str] | None:
    """The loss of a prediction that knows nothing, and what it is, for
    `HealthRules.uninformed_loss`: for a model with one output under
    cross-entropy (unweighted by class, averaged over the samples), ln(C)
    for C classes, ln 2 under binary cross-entropy; None for other losses
    (a regression loss's depends on the targets) and models, where
    regularizers add to the loss (`_regularized`), and where `check_model`
    finds the output and its loss mismatched (`_mismatched`). Times the
    output's `loss_weights`, when `compile` sets one. (`fit`'s sample and
    class weights scale it too, by their mean over the batch: the callback
    drops it on seeing them in the step.)"""
    known = _one_output_loss(model)
    if known is None or _regularized(model):
        return None
    (found, output), loss = known, model.loss
    if _mismatched(model):
        return None
    if getattr(loss, "class_weights", None) is not None:
        return None
    # A loss summed over the batch (or not reduced) is not the mean's level.
    if getattr(loss, "reduction", _MEAN_REDUCTIONS[0]) not in _MEAN_REDUCTIONS:
        return None
    units = output.units
    level = None
    if found.name in _CROSS_ENTROPIES and units is not None and units >= 2:
        level = math.log(units), f"cross-entropy over {units} classes"
    elif found.name == "binary_crossentropy":
        level = math.log(2), "binary cross-entropy, probability 0.5"
    elif found.name in _FOCAL:
        level = _focal_level(found.name, loss, units)
        level = level and level[:2]
    if level is None:
        return None
    weight = _loss_weight(model)
    if weight is None:
        return None
    if weight == 1.0:
        return level
    return level[0] * weight, f"{level[1]}, weighted {weight:.3g}"


# Focal cross-entropies: `(1 - p)^gamma` times the cross-entropy, for the
# probability p of a sample's class (Lin et al. 2017).
_FOCAL = (
    "binary_focal_crossentropy",
    "categorical_focal_crossentropy",
    "sparse_categorical_focal_crossentropy",
)
# Keras's `binary_focal_crossentropy` and `categorical_focal_crossentropy`
# functions' defaults (a loss given by name).
_FOCAL_DEFAULTS = {"alpha": 0.25, "gamma": 2.0, "apply_class_balancing": False}


def uninformed_focus(model) -> float:
    """`HealthRules.uninformed_focus`: the share of its cross-entropy that
    a focal loss keeps at the prediction that knows nothing, `(1 - p)^gamma`
    (0.25 for gamma 2 at p = 0.5), where its level does not depend on the
    labels; 1 for other losses (used only where `uninformed_loss` is
    known). A confidently wrong answer keeps nearly all of its
    cross-entropy, so against the uninformed level it weighs 1 / focus
    times as much as under the cross-entropy."""
    known = _one_output_loss(model)
    if known is None or known[0].name not in _FOCAL:
        return 1.0
    level = _focal_level(known[0].name, model.loss, known[1].units)
    return 1.0 if level is None else level[2]


def _focal_level(name: str, loss, units: int | None) -> tuple | None:
    """`(level, what, focus)` of a focal loss at the prediction that knows
    nothing: at probability 0.5, `0.5^gamma ln 2` (binary, without class
    balancing, whose weights depend on the labels); at 1/C, `alpha (1 -
    1/C)^gamma ln C` (categorical, one `alpha` for every class); `focus`
    the factor `(1 - p)^gamma`. None where it depends on the labels."""
    config = dict(_FOCAL_DEFAULTS)
    if not isinstance(loss, str):
        get_config = getattr(loss, "get_config", None)
        if get_config is None:
            return None  # A function: its defaults are not read.
        config.update(get_config())
    gamma, alpha = config.get("gamma"), config.get("alpha")
    if not isinstance(gamma, (int, float)):
        return None
    if name == "binary_focal_crossentropy":
        if config.get("apply_class_balancing"):
            return None
        what = f"binary focal loss (gamma {gamma:g}), probability 0.5"
        return 0.5**gamma * math.log(2), what, 0.5**gamma
    if units is None or units < 2 or not isinstance(alpha, (int, float)):
        return None
    focus = (1 - 1 / units) ** gamma
    what = f"focal loss over {units} classes (alpha {alpha:g}, gamma {gamma:g})"
    return alpha * focus * math.log(units), what, focus


def _loss_weight(model) -> float | None:
    """The one output's `loss_weights` in `compile` (1 without), or None
    when it is not one positive number."""
    try:
        with warnings.catch_warnings():
            # Keras serializes the optimizer too, whose variables' `__array__`
            # NumPy 2 warns about on JAX (Keras 3.15).
            warnings.simplefilter("ignore", DeprecationWarning)
            weights = model.get_compile_config().get("loss_weights")
    except Exception:  # noqa: BLE001 - a model compiled in some other way
        return None
    if weights is None:
        return 1.0
    if isinstance(weights, dict):
        weights = list(weights.values())
    if isinstance(weights, (list, tuple)):
        if len(weights) != 1:
            return None
        weights = weights[0]
    if isinstance(weights, (int, float)) and math.isfinite(weights) and weights > 0:
        return float(weights)
    return None


# An output bias at least this large (sigmoid, tanh) or spread this widely
# over the classes (softmax) sets the output in its flat tails for any
# input a fresh model gives it: sigmoid(-10) = 4.5e-5, its tail from 0.01.
SATURATING_BIAS = 10.0
_SATURATING = ("sigmoid", "tanh", "softmax")


def _profile_of(layer):
    """The activation profile of a layer's output (`activations.profile`),
    None where it has none or it cannot be read."""
    try:
        return activations.profile(layer)
    except ValueError:
        return None


def probability_output(model, plans) -> bool:
    """`HealthRules.probability_output`: whether a saturated output can be
    what stops every gradient: a monitored layer or an output layer applies
    a sigmoid or a softmax (an output's, or heads averaged together), or
    the compiled loss (one of them) takes probabilities (clipped: a linear
    output under such a loss). False for a model with neither (a siamese
    network's distance under a contrastive loss, a regressor under MSE)."""
    from keras_actloss.losses import profile

    layers = [plan.layer for plan in plans]
    # A model not walked: its plans only.
    with contextlib.suppress(Exception):
        layers += [output.layer for output in walk.outputs(model)]
    for layer in layers:
        if getattr(_profile_of(layer), "name", None) in ("sigmoid", "softmax"):
            return True
    for one in keras.tree.flatten(getattr(model, "loss", None)):
        try:
            known = None if one is None else profile(one)
        except Exception:  # noqa: BLE001 - a loss not read: not known.
            known = None
        if known is not None and known.expects == "probabilities":
            return True
    return False


def layers_of(plans, family: str, hidden: bool = False) -> tuple[str, ...]:
    """`HealthRules.exponential_layers` and `.hidden_softmax`: the monitored
    layers with weights whose own activation is of `family` (as
    `activations.profile` reads it; measured or not), those nearer the
    inputs than the outputs only with `hidden`."""
    weighted = [plan for plan in plans if plan.variables]
    outputs = {plan.info.name for plan in weighted if plan.info.distance == 0}
    if weighted and all(plan.info.distance is None for plan in weighted):
        outputs = {weighted[-1].info.name}  # Model order: the last one.
    found = []
    for plan in weighted:
        if hidden and plan.info.name in outputs:
            continue
        if getattr(_profile_of(plan.layer), "family", None) == family:
            found.append(plan.info.name)
    return tuple(found)


def activity_regularizers(plans) -> dict[str, str]:
    """`HealthRules.activity_regularizers`: each monitored layer with an
    `activity_regularizer`, described by its class and its config's numbers
    (`L1(l1=0.03)`)."""
    found = {}
    for plan in plans:
        regularizer = getattr(plan.layer, "activity_regularizer", None)
        if regularizer is None:
            continue
        try:
            config = regularizer.get_config()
        except Exception:  # noqa: BLE001 - a custom one without a config.
            config = {}
        numbers = ", ".join(
            f"{key}={value:g}"
            for key, value in config.items()
            if isinstance(value, (int, float))
        )
        found[plan.info.name] = f"{type(regularizer).__name__}({numbers})"
    return found


def output_bias(model, plans) -> tuple[str, str, float] | None:
    """`HealthRules.output_bias`: `(layer name, activation, bias)` of a
    model's one output layer whose own sigmoid, tanh or softmax its bias
    saturates (`SATURATING_BIAS`: the largest in size, or for softmax the
    spread between classes, signed as the smallest is), else None."""
    try:
        outputs = walk.outputs(model)
    except Exception:  # noqa: BLE001 - a model not walked: not judged.
        return None
    if len(outputs) != 1:
        return None
    layer = outputs[0].layer
    plan = next((p for p in plans if p.layer is layer), None)
    bias = getattr(layer, "bias", None)
    activation = getattr(_profile_of(layer), "name", None)
    if plan is None or bias is None or activation not in _SATURATING:
        return None
    # Not `convert_to_numpy`: NumPy 2 warns on TensorFlow's variable
    # (`_model_plan.host_rate`).
    values = np.asarray(bias.value, "float64").ravel()
    if not values.size or not np.isfinite(values).all():
        return None
    if activation == "softmax":
        value = float(values.min() - values.max())
    else:
        value = float(values[np.argmax(np.abs(values))])
    if abs(value) < SATURATING_BIAS:
        return None
    return plan.info.name, activation, value


def traced_label_checks(model) -> str | None:
    """`HealthRules.traced_label_checks`: the name of a loss of this
    package that checks its labels, in a model whose train step is compiled
    (`jit_compile`: JAX's default, XLA on TensorFlow). There a label that
    fails the check cannot raise: the loss's value is NaN instead (see
    `keras_actloss.losses`). None otherwise."""
    if not getattr(model, "jit_compile", False):
        return None
    for loss in keras.tree.flatten(getattr(model, "loss", None)):
        if isinstance(loss, LossFunctionWrapper) and loss.get_config().get(
            "check_labels", False
        ):
            return loss.name
    return None


def clipping(model) -> Clipping | None:
    """`HealthRules.clipping`: the gradient clipping of the model's optimizer
    (under loss scaling, of the optimizer it wraps) as it is set, e.g.
    `Clipping("global_clipnorm", 1.0)`; None where it does not clip."""
    optimizer = getattr(model, "optimizer", None)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    for name in ("global_clipnorm", "clipnorm", "clipvalue"):
        value = getattr(optimizer, name, None)
        if value is not None:
            return Clipping(name, float(value))
    return None


def _fan_in(shape) -> int:
    """A kernel's fan-in as Keras's initializers count it: the first axis
    of a matrix; the last-but-one times the receptive field (every axis
    before it) of a convolution's or an `EinsumDense`'s kernel."""
    if len(shape) == 2:
        return int(shape[0])
    return int(shape[-2]) * math.prod(int(n) for n in shape[:-2])


def weight_gain(plans, mean_squares, recurrences=None) -> tuple[float, str] | None:
    """`HealthRules.weight_gain`: how far the kernels of the monitored
    layers `plans` are over He's scale (`kernel_scales`): the product of
    `max(1, rms / he)` over the kernels between two normalization layers
    (which set the scale of their outputs whatever their inputs'), the
    largest such product, and the name of the layer in that span whose
    kernel is farthest over He's scale; None without such kernels. A signal blown up
    by the initial weights needs a large gain; a trained model's confident
    outputs come from weights aligned with its features, at about He's
    scale (a classifier fitted to a loss of 1e-3: 1.0-1.3x in each of its
    four layers)."""
    return gain_of(kernel_scales(plans, mean_squares, recurrences))


def kernel_scales(plans, mean_squares, recurrences=None) -> list[tuple] | None:
    """The kernels of the monitored layers `plans` (their trainable weights
    of two axes or more, embeddings aside) by their RMS over He's scale
    (`sqrt(2 / fan_in)`, which keeps a ReLU layer's signal at its inputs'
    scale): `(layer name, factor, relu, span)` each, `relu` whether the
    layer applies a ReLU without a cap after it (`rules._floored`), `span`
    how many normalization layers come before it among `plans`. None where
    a kernel is not finite. `mean_squares`: the hooks'
    (`TrainHooks.mean_squares`), the kernels' mean squares as floats, read
    where the kernels are.

    The recurrent kernel of a cell in `recurrences`
    (`layer_checks.unbounded_recurrences`: `{id(cell): time steps}`)
    counts once per time step: a ReLU `SimpleRNN` whose recurrent kernel
    is orthogonal with gain 2 (1.41x He's) over 30 steps had hidden states
    up to 2e4 and a loss 700x that of knowing nothing at step 0."""
    recurrences = recurrences or {}
    kernels, normalized = [], 0
    for plan in plans:
        normalized += plan.info.class_name in NORMALIZATIONS
        kernels += [
            (plan, variable, normalized)
            for variable in plan.variables
            if len(variable.shape) >= 2
            and all(variable.shape)
            and variable.name != "embeddings"
        ]
    squares = mean_squares([variable.value for _, variable, _ in kernels])
    out = []
    for (plan, variable, span), square in zip(kernels, squares):
        ratio = math.sqrt(square) / math.sqrt(2.0 / _fan_in(tuple(variable.shape)))
        if not math.isfinite(ratio):
            return None
        recurrent = variable.name == "recurrent_kernel"
        factor = ratio ** (recurrences.get(id(plan.layer), 1) if recurrent else 1)
        relu = not recurrent and _floored(plan.info.activation)
        out.append((plan.info.name, factor, relu, span))
    return out


def gain_of(scales: list[tuple] | None) -> tuple[float, str] | None:
    """`weight_gain` of the `kernel_scales` `scales`: the largest product
    over the kernels of one span between normalization layers."""
    if not scales:
        return None
    spans: dict[int, list] = {}
    for name, factor, _, span in scales:
        spans.setdefault(span, []).append((name, factor))
    return max(
        (
            math.prod(max(1.0, factor) for _, factor in kernels),
            max(kernels, key=lambda kernel: kernel[1])[0],
        )
        for kernels in spans.values()
    )


def relu_shrink(scales: list[tuple] | None) -> tuple[float, int] | None:
    """`HealthRules.relu_shrink`: how far the kernels of the layers with a
    ReLU (`kernel_scales`) are under He's scale, the product over them of
    `min(1, rms / he)`, which the signal's scale shrinks by through them
    (ReLU halves a signal's mean square; He's scale doubles it back), and
    how many they are; None without such kernels. Keras's default
    `glorot_uniform` is `sqrt(1/2)` of He's in a square layer: 20 such
    layers, 1e-3."""
    relu = [factor for _, factor, is_relu, _ in scales or () if is_relu]
    if not relu:
        return None
    return math.prod(min(1.0, factor) for factor in relu), len(relu)


def weight_decay(model) -> float | None:
    """`HealthRules.weight_decay`: the decoupled weight decay of the model's
    optimizer (under loss scaling, of the optimizer it wraps), which Keras
    applies as `w -= learning_rate * weight_decay * w` each step; None where
    it has none."""
    optimizer = getattr(model, "optimizer", None)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    value = getattr(optimizer, "weight_decay", None)
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def target_scale(model, labels) -> float | None:
    """`HealthRules.target_scale`: `input_scale` of a batch of the labels
    of the model's outputs under a regression loss (mean squared or
    absolute error, Huber: continuous labels), the largest over them;
    None for other losses and models, and labels that are not finite
    numbers. `labels`: the kept labels (`pack_kept`), an array for a
    model of one output, a list per output or a dict by output name for
    several, as `check_model` takes them."""
    scales = []
    for found, target in _output_labels(model, labels):
        if found is None or found.label_format != "continuous" or target is None:
            continue
        target = np.asarray(target)
        if target.dtype.kind in "iuf":
            scale = input_scale(target.reshape(-1, 1) if target.ndim < 2 else target)
            if scale is not None:
                scales.append(scale)
    return max(scales, default=None)


def _output_labels(model, labels) -> list[tuple]:
    """`(loss profile, labels)` of each output of `model` (`walk.outputs`)
    for the kept `labels` (`pack_kept`), None where not known; empty
    without labels or for a model not walked."""
    outputs = None if labels is None else _outputs(model)
    if outputs is None:
        return []
    losses = per_output(getattr(model, "loss", None), outputs, "loss")
    targets = per_output(labels, outputs, "labels")
    return [(_profile(loss), target) for loss, target in zip(losses, targets)]


def _one_output_labels(model, labels) -> tuple | None:
    """`(loss profile, labels)` of a model of one output whose loss has a
    profile, with labels kept (`_output_labels`); else None."""
    pairs = _output_labels(model, labels)
    if len(pairs) != 1 or pairs[0][0] is None or pairs[0][1] is None:
        return None
    return pairs[0]


def label_classes(model, labels) -> np.ndarray | None:
    """`StepStats.label_classes`: the class of each row of `labels` (the
    kept labels, `pack_kept`) of a model of one output under a
    classification loss: sparse labels (integers, one per sample), one-hot
    ones (their largest column; smoothed ones too) or binary ones (0 or 1,
    one per sample; over 0.5 for soft ones). None for other losses and
    models, and labels of another shape (per position: segmentation maps,
    token tags; several binary columns) or not finite."""
    pair = _one_output_labels(model, labels)
    if pair is None:
        return None
    found, target = pair
    target = np.asarray(target)
    if target.dtype.kind not in "iuf" or not len(target):
        return None
    if found.label_format == "one_hot":
        if target.ndim != 2 or target.shape[1] < 2 or not np.isfinite(target).all():
            return None
        return np.argmax(target, axis=1)
    if target.ndim == 2 and target.shape[1] == 1:
        target = target[:, 0]
    if target.ndim != 1 or not np.isfinite(target).all():
        return None
    if found.label_format == "sparse":
        whole = (target >= 0).all() and (target == np.round(target)).all()
        return target.astype(np.int64) if whole else None
    if found.label_format == "binary" and ((target >= 0) & (target <= 1)).all():
        return (target > 0.5).astype(np.int64)
    return None


# The most columns of features and targets `value_rows` gives (a sorted
# column among more is not seen; bounds the rules' memory and time).
_VALUE_COLUMNS = 256


def value_rows(model, inputs, labels) -> tuple[np.ndarray, int] | None:
    """`(StepStats.value_rows, value_features)`: the kept rows of a model
    of one input of features (rank 2, not ids: `feature_inputs`), with the
    targets of a model of one output under a regression loss (continuous
    labels, `target_scale`'s) as columns after them, at most
    `_VALUE_COLUMNS` in all, and how many are features; None without
    such inputs, or rows not finite."""
    found = getattr(model, "inputs", None) or []
    x = feature_inputs(model, inputs) if len(found) == 1 else None
    if not isinstance(x, np.ndarray) or x.ndim != 2 or x.dtype.kind not in "iuf":
        return None
    columns = [x[:, :_VALUE_COLUMNS]]
    pair = _one_output_labels(model, labels)
    if pair is not None and pair[0].label_format == "continuous":
        target = np.asarray(pair[1])
        if target.ndim == 1:
            target = target[:, None]
        if target.ndim == 2 and len(target) == len(x) and target.dtype.kind in "iuf":
            columns.append(target)
    rows = np.concatenate(columns, axis=1)[:, :_VALUE_COLUMNS].astype("float64")
    if not np.isfinite(rows).all():
        return None
    return rows, columns[0].shape[1]


def _profile(loss):
    """`keras_actloss.losses.profile` of a compiled loss, None where it
    knows none (or none is given)."""
    from keras_actloss.losses import profile

    if loss is None:
        return None
    try:
        return profile(loss)
    except Exception:  # noqa: BLE001 - a loss not read: not judged.
        return None


def _one_output_loss(model):
    """`(loss profile, walk.Output)` of a model compiled with one loss that
    `keras_actloss.losses.profile` knows, for its one output; None for
    several losses or outputs, a loss not profiled, or a model not walked."""
    loss = getattr(model, "loss", None)
    if loss is None or isinstance(loss, (list, tuple, dict)):
        return None
    found, outputs = _profile(loss), _outputs(model)
    if found is None or outputs is None or len(outputs) != 1:
        return None
    return found, outputs[0]


def _outputs(model) -> list | None:
    """`walk.outputs` of `model`, None for a model not walked."""
    try:
        return walk.outputs(model)
    except Exception:  # noqa: BLE001 - a model not read: not judged.
        return None


def _mismatched(model) -> bool:
    """Whether `check_model`'s output checks (`output_findings`, without
    labels) find a failure of the output and its loss: a linear output
    under a loss that expects probabilities, which clips it (-ln 1e-7 = 16
    for a sample on the wrong side), or a softmax over one unit, always 1.
    The loss then says nothing of how far the weights are from a
    prediction that knows nothing."""
    try:
        found = output_findings(model) if model.built else []
    except ValueError:
        return False
    return any(f.severity == "failure" for f in found)


def _regularized(model) -> bool:
    """Whether a weight or activity regularizer adds to the model's loss
    (an L2 penalty of 1e-2 on a few wide layers can be several times ln(C)
    at the start)."""
    if any(getattr(v, "regularizer", None) for v in model.trainable_variables):
        return True
    return any(
        getattr(layer, "activity_regularizer", None) for layer in walk.leaves(model)
    )


def input_preprocessing(model) -> list:
    """The `Rescaling` and `Normalization` layers a model with one input
    applies to it first, one after the other, before any other layer:
    what the first layers with weights see is the data through them."""
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1:
        return []
    chain, tensor = [], inputs[0]
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        kinds = (keras.layers.Rescaling, keras.layers.Normalization)
        try:
            fed = layer.input is tensor
        except (AttributeError, ValueError):  # Never called, or called twice.
            fed = False
        if not (isinstance(layer, kinds) and fed):
            break
        chain.append(layer)
        tensor = layer.output
    return chain


def input_scales(model, inputs, chains: list, reach: list, upstream: list) -> tuple:
    """For a model of several inputs: `(scale, by layer, upstream)`, the
    largest `input_scale` of its inputs' kept rows (`inputs`, in the
    batch's structure: a list in `model.inputs` order or a dict by input
    name), each through its `_model_plan.input_chains` (an input of ids or
    categories, `_ids`, has none); for each layer the inputs reach first
    (`reach`, `_model_plan.input_reach`) the largest of theirs; and for
    each layer they reach on any path (`upstream`, `input_reach` with
    `first=False`) the largest of theirs."""
    tensors = model.inputs
    if isinstance(inputs, dict):
        arrays = [inputs.get(getattr(t, "name", None)) for t in tensors]
    elif isinstance(inputs, (list, tuple)) and len(inputs) == len(tensors):
        arrays = list(inputs)
    else:
        arrays = [None] * len(tensors)
    largest, by_layer, by_upstream = None, {}, {}
    for tensor, x, chain, names, after in zip(tensors, arrays, chains, reach, upstream):
        if x is None or _ids(tensor):
            continue
        scale = input_scale(preprocessed(chain, x))
        if scale is None:
            continue
        largest = scale if largest is None else max(largest, scale)
        for found, layers in ((by_layer, names), (by_upstream, after)):
            for name in layers:
                found[name] = max(found.get(name, scale), scale)
    return largest, by_layer, by_upstream


def preprocessed(layers: list, x: np.ndarray | None) -> np.ndarray | None:
    """A batch of inputs `x` through the `input_preprocessing` layers, by
    NumPy (an eager call compiles a program per shape on JAX); None where
    a `Normalization` has no statistics yet."""
    if x is None or not layers or x.dtype.kind != "f":
        return x
    x = x.astype("float64")
    for layer in layers:
        if isinstance(layer, keras.layers.Rescaling):
            x = x * np.asarray(layer.scale, "float64") + np.asarray(
                layer.offset, "float64"
            )
            continue
        if layer.mean is None:  # Not built: its statistics are unknown.
            return None
        mean = np.asarray(layer.mean, "float64")
        spread = np.maximum(
            np.sqrt(np.asarray(layer.variance, "float64")), keras.backend.epsilon()
        )
        x = x * spread + mean if layer.invert else (x - mean) / spread
    return x


def preprocessing_note(layers: list) -> str | None:
    """`HealthRules.input_preprocessing`: the `input_preprocessing` layers
    by name (a `Rescaling` with its factor), or None without any."""
    if not layers:
        return None
    names = []
    for layer in layers:
        scale = getattr(layer, "scale", None)
        factor = f" (x {scale:.3g})" if isinstance(scale, (int, float)) else ""
        names.append(f"'{layer.name}'{factor}")
    return ", then ".join(names)


def feature_inputs(model, inputs: np.ndarray | None) -> np.ndarray | None:
    """`inputs` (a kept batch, read as float32) unless the model's one input
    is of ids or categories (`_ids`)."""
    found = getattr(model, "inputs", None) or []
    return None if len(found) == 1 and _ids(found[0]) else inputs


def _ids(tensor) -> bool:
    """Whether a model's input is of an integer or bool dtype: ids (an
    `Embedding`'s tokens) or categories, whose scale is no feature's
    (probed: tokens of up to 20 were told as unstandardized inputs)."""
    dtype = keras.backend.standardize_dtype(tensor.dtype)
    return dtype.startswith(("int", "uint", "bool"))


def input_scale(x: np.ndarray | None) -> float | None:
    """The largest `max(|mean|, std)` over the features (last axis) of a
    batch of inputs: about 1 when they are standardized. None without
    finite float inputs of rank 2 or more."""
    if x is None or x.ndim < 2 or not np.isfinite(x).all():
        return None
    features = x.reshape(-1, x.shape[-1]).astype("float64")
    return float(np.maximum(np.abs(features.mean(axis=0)), features.std(axis=0)).max())


# The gates of each recurrent cell, in the order of its kernel's columns:
# True where the cell's `recurrent_activation` applies, False for its
# `activation` (Keras's layouts: LSTM i, f, c, o; GRU z, r, h).
_GATES = {
    keras.layers.LSTMCell: (True, True, False, True),
    keras.layers.GRUCell: (True, True, False),
    keras.layers.SimpleRNNCell: (False,),
}


def input_gates(plans, first) -> dict[str, tuple]:
    """The monitored recurrent cells (an LSTM's, a GRU's or a
    SimpleRNN's, alone or in a `Bidirectional`) that the model's inputs
    reach first (named in `first`, `HealthRules.input_layers`: with the
    forward direction of a `Bidirectional`, its backward one too) by name:
    their input kernel and input bias, read where they are (before
    training: the training state is not donated yet), and `(activation,
    profile)` of each block of the kernel's columns
    (`stats.input_gate_saturation`). Cells whose activations have no flat
    tail, or no known profile, are left out."""
    found = {}
    for plan in plans:
        cell, name = plan.layer, plan.info.name
        if name.replace("/backward_", "/forward_", 1) not in first:
            continue
        gates = _GATES.get(type(cell))
        kernel = getattr(cell, "kernel", None)
        if gates is None or kernel is None:
            continue
        blocks = []
        for recurrent in gates:
            fn = cell.recurrent_activation if recurrent else cell.activation
            profile = activations.profile(fn)
            if profile is None or not profile.saturates:
                break
            blocks.append((fn, profile))
        else:
            bias = getattr(cell, "bias", None)
            if bias is not None:
                bias = keras.ops.convert_to_numpy(bias)
                # A GRU's `reset_after` bias: its input row, then its
                # recurrent one.
                bias = bias[0] if bias.ndim == 2 else bias
            found[name] = (keras.ops.convert_to_numpy(kernel), bias, blocks)
    return found


def gate_saturations(gates: dict, features) -> dict[str, float]:
    """`stats.input_gate_saturation` of each cell of `gates` (`input_gates`)
    on `features`, a kept batch of inputs as they reach it."""
    if features is None:
        return {}
    found = {}
    for name, (kernel, bias, blocks) in gates.items():
        fraction = stats.input_gate_saturation(features, kernel, bias, blocks)
        if fraction is not None:
            found[name] = fraction
    return found


def data_saturations(plans, batches: list) -> dict[str, float]:
    """`StepStats.data_saturation`: for each monitored layer with a
    saturating activation whose sample has the shape of a sample of one of
    `batches` (the kept inputs and labels, None when not kept) and whose
    range holds that batch, the fraction of the batch's elements in the
    layer's saturating tails (`stats.data_saturation`; the largest over
    such batches)."""
    out = {}
    for plan in plans:
        profile = plan.profile
        if profile is None or profile.saturation_bounds is None:
            continue
        shape = None
        for batch in batches:
            if batch is None or batch.ndim < 2:
                continue
            shape = shape or walk.sample_shape(plan.layer)
            if shape != batch.shape[1:]:
                continue
            fraction = stats.data_saturation(batch, profile)
            if fraction is not None:
                out[plan.info.name] = max(fraction, out.get(plan.info.name, 0.0))
    return out


def recording_gap(step: int, origin: int, every_n_steps: int, dense: int) -> int:
    """Steps from a recording at `step` to the next one.

    Every step for the first `2 * dense` steps after `origin` (the start of
    training, or a jump), then a gap that grows by one step every `dense`
    steps, up to `every_n_steps`. `dense=0`: always `every_n_steps`.

    >>> [recording_gap(s, 0, 100, 8) for s in (0, 15, 16, 40, 5000)]
    [1, 1, 2, 5, 100]
    """
    if not dense:
        return every_n_steps
    return max(1, min(every_n_steps, (step - origin) // dense))
