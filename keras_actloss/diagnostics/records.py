"""Plain records passed between the callback, the rules and the writer.

The callback turns what it measured in one recording step into a `StepStats`;
the rules (`keras_actloss.diagnostics.rules`) judge a sequence of them; the
writer (`keras_actloss.logs.writer`) writes them; the reader gives them
back from event files. All values are Python floats (or None when a
statistic does not apply to the layer), never tensors.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np


class Clipping(NamedTuple):
    """An optimizer's gradient clipping as set: its argument's name
    (`"clipnorm"`, `"global_clipnorm"` or `"clipvalue"`) and value. Reads
    as the argument, e.g. `clipnorm=1`."""

    name: str
    value: float

    def __str__(self) -> str:
        return f"{self.name}={self.value:g}"


@dataclasses.dataclass
class LayerInfo:
    """Static facts about one monitored layer, in model order.

    Attributes:
        name: Unique name used in tags (`outer/inner` for nested models).
        class_name: The layer's class name.
        activation: Name of the activation profile applied to the layer's
            output (`"relu"`, `"sigmoid"`, ...), or None.
        has_trainable_weights: Whether gradients are recorded for it.
        depth: Index of the layer in model order (0 = closest to the input).
        distance: How far the layer is from the model's outputs in the layer
            graph (0 = an output layer; layers on parallel branches, such as
            an attention block's query, key and value projections, share
            one), or None when the graph is not known (subclassed models):
            then model order stands in for it.
        upstream: The monitored layers whose units can die (the ReLU
            family) that every path from the model's inputs to this layer
            passes through, the nearest ones; empty when a path reaches it
            from the inputs through no such layer, or when the graph is not
            known. When every unit of each of them is dead, this layer gets
            no signal from the data.
        inside: The layer of the user's own (a class outside Keras: a
            subclassed layer or model) whose `call` uses this one, when
            it is such a layer's sublayer: what that `call` computes
            around it is not watched. None in a functional or sequential
            model, or a Keras layer (an RNN's cell, an attention's
            projections).
        units_by_sign: Whether the layer, a linear one inside a layer of
            the user's own (`inside`), has its units judged by the sign of
            its outputs and their gradient: a unit at most 0 on every
            sample whose weights get no gradient is dead behind a ReLU that
            the user's `call` applies to it, unseen (`keras.ops.relu`
            outputs 0 there and passes nothing back).
        averaged: Whether every input of the layer is a global average
            pooling's output (through dropout, noise or reshaping layers
            only), known from the layer graph: features averaged over a
            sequence or an image barely differ between samples.
        batch_normalized: The `BatchNormalization` layer whose outputs are
            every input of the layer (through dropout, noise or reshaping
            layers only) when it normalizes features of single values per
            sample (inputs of two axes), known from the layer graph: on
            batches of 1 it outputs its offset whatever the data.
        attention: Whether the entry is the attention weights of an
            attention layer (named as the layer, with no weights of its
            own; `activation` None): its saturation is the share of queries
            whose largest weight is at least 0.99 (one-hot,
            `diagnostics.attention`).
        bypassed: Whether the layer's inputs also reach the model's outputs
            by a path around it (the skip connection of a residual sum, or
            a parallel branch), known from the layer graph: the layers
            before it learn through that path whatever it passes back.
        gate: The `Multiply` layer through which alone the layer's outputs
            reach the model's outputs, multiplying the tensor the layer is
            computed from (a squeeze-and-excitation block's gate, a gated
            skip), known from the layer graph; None where a path avoids
            one. Its gradient is small by design (a sigmoid's slope times
            the features' correlation with the error) while the model
            learns through the path it gates: not judged for vanishing
            gradients, and its activation does not shrink the gradient of
            the layers on that path.
        threshold: The input under which its ReLU outputs 0 where it is
            not 0 (Keras's `ReLU(threshold=...)`), else 0.
    """

    name: str
    class_name: str
    activation: str | None
    has_trainable_weights: bool
    depth: int
    distance: int | None = None
    upstream: tuple[str, ...] = ()
    inside: str | None = None
    units_by_sign: bool = False
    averaged: bool = False
    batch_normalized: str | None = None
    attention: bool = False
    bypassed: bool = False
    gate: str | None = None
    threshold: float = 0.0


@dataclasses.dataclass
class LayerStats:
    """Statistics of one layer at one recording step.

    Attributes:
        layer: `LayerInfo.name`.
        grad_norm: L2 norm of the layer's gradients, over all its trainable
            variables together.
        grad_rms: Root-mean-square of the gradient elements.
        grad_max: Largest absolute gradient element.
        weight_norm: L2 norm of the layer's trainable variables before the
            update.
        update_ratio: `||w_after - w_before|| / ||w_before||` for this step.
        zero_fraction: Fraction of output elements in the activation's dead
            (zero-gradient) region, over the recorded batch.
        dead_fraction: Fraction of units (last-axis channels) that are in the
            dead region for every sample and position of the recorded batch.
        saturation: Fraction of output elements in a saturating tail
            (sigmoid/tanh).
        grad_values: Optional sample of gradient elements for histograms.
        unit_activity: For layers whose units can die, the number of active
            output elements of each unit over the recorded batch (not
            written to the logs).
        unit_samples: The samples `unit_activity` covers when not the
            recorded batch's (a layer a custom `train_step` runs on other
            inputs, as a GAN's generator on its latents), else None.
        unit_flow: For layers whose units can die and whose bias (or other
            vector weight, one element per unit) tells it, the last step
            each unit passed a gradient back, on any step recorded or not
            (-1 for none yet; not written to the logs), else None.
    """

    layer: str
    grad_norm: float | None = None
    grad_rms: float | None = None
    grad_max: float | None = None
    weight_norm: float | None = None
    update_ratio: float | None = None
    zero_fraction: float | None = None
    dead_fraction: float | None = None
    saturation: float | None = None
    grad_values: np.ndarray | None = dataclasses.field(default=None, repr=False)
    unit_activity: list[float] | None = dataclasses.field(default=None, repr=False)
    unit_samples: int | None = dataclasses.field(default=None, repr=False)
    unit_flow: list[float] | None = dataclasses.field(default=None, repr=False)


@dataclasses.dataclass
class StepStats:
    """Everything recorded at one full-statistics step.

    Attributes:
        step: 0-based optimizer iteration of the step (continues across
            `fit` calls).
        global_norm: L2 norm of all gradients together.
        non_finite: Whether any gradient was NaN or infinite.
        loss: Training loss of the step, if known.
        learning_rate: Current learning rate, if known.
        layers: One `LayerStats` per monitored layer, in model order.
        batch_size: Number of samples in the recorded batch, if known (with
            several steps per execution, in the execution's batches, over
            which the activation statistics are). Dead units are only
            judged over enough samples to tell a dead unit from a sparse
            one.
        activation_steps: The steps (batches) the activation statistics
            cover: with several steps per execution, those of its steps
            that recorded in full (every one of them while recordings are
            dense), the recorded one last; 1 otherwise. The gradient
            statistics are the recorded step's alone.
        input_scale: How far the model's inputs are from standardized: the
            largest `max(|mean|, std)` over input features of the recorded
            batch (about 1 when standardized), if known.
        input_scales: For a model of several inputs, the layers they reach
            first (no layer with weights before them) by the largest
            `input_scale` of the inputs that reach each; empty for a model
            of one input (its first layer's is `input_scale`).
        upstream_scales: For a model of several inputs, every layer they
            reach (its outputs are computed from them) by the largest
            `input_scale` of those inputs (none for a layer only inputs of
            ids or categories reach); None for a model of one input (each
            layer's is `input_scale`).
        kernel_share: The share of the step's squared gradient norm in its
            gradients of tensors that are not vectors (kernels: a kernel's
            gradient is its inputs times the error, a bias's the error
            alone), if known (`step_reader.kernel_share`).
        data_saturation: The layers whose outputs could be the data: a
            sample of theirs has the shape of a sample of the model's
            inputs or labels, and the data lie in their activation's
            output range (a generator's or a decoder's last layer, as
            images in `[-1, 1]` after tanh). Layer name -> the fraction of
            the data's elements in that activation's saturating tails: as
            saturated as that, the layer makes data-like outputs.
        apply_groups: When the step updates the layers in several `apply`
            calls (a GAN's discriminator and generator, each by its own
            loss): layer name -> the index of the call that updates it.
            Gradients from different losses are not compared. Empty with
            one call.
        execution_rms: With several steps per execution, the steps of the
            recorded execution before the recorded one that recorded in
            full: step -> layer name -> gradient RMS (from the every-step
            row; the layers with gradients in that step). Empty otherwise,
            and in `GradientDiagnostics.history` (read by the rules only).
        label_classes: For a model of one output under a classification
            loss, the class of each kept label of the recorded batch (its
            first rows), if known (read by the rules only).
        value_rows: For a model of one input of features (a row a sample),
            the kept rows of the recorded batch, with a regression's
            targets as columns after them; if known (read by the rules
            only).
        value_features: The columns of `value_rows` that are features.
    """

    step: int
    global_norm: float
    non_finite: bool = False
    loss: float | None = None
    learning_rate: float | None = None
    layers: list[LayerStats] = dataclasses.field(default_factory=list)
    batch_size: int | None = None
    activation_steps: int = 1
    input_scale: float | None = None
    input_scales: dict[str, float] = dataclasses.field(default_factory=dict)
    upstream_scales: dict[str, float] | None = None
    kernel_share: float | None = None
    data_saturation: dict[str, float] = dataclasses.field(default_factory=dict)
    apply_groups: dict[str, int] = dataclasses.field(default_factory=dict)
    execution_rms: dict[int, dict[str, float]] = dataclasses.field(default_factory=dict)
    label_classes: np.ndarray | None = dataclasses.field(default=None, repr=False)
    value_rows: np.ndarray | None = dataclasses.field(default=None, repr=False)
    value_features: int = 0


@dataclasses.dataclass
class SentinelEvent:
    """The cheap check of every training step.

    Attributes:
        step: Step at which the event happened.
        global_norm: Global gradient norm at that step.
        non_finite: Whether a gradient was NaN or infinite at that step.
        layer: The first layer (model order) with a non-finite gradient, when
            known.
        learning_rate: The optimizer's learning rate at that step, if known.
        loss: The step's loss (of the batch the gradients are of), if known.
        zero_gradients: How many of the step's gradient tensors were
            entirely zero.
        silent_units: How many elements of the step's small gradient
            vectors (biases, normalization scales and offsets: one per unit
            or channel) were exactly 0: units inactive on the whole batch.
        learning_rates: Each optimizer's learning rate at that step when
            the step applied several (in the order of their first `apply`
            calls: a GAN's discriminator's and generator's), else empty;
            None when not known.
        update_skipped: Whether the optimizer skipped the step's update, as
            dynamic loss scaling does for a non-finite step: the weights
            are unchanged.
        data_finite: For a non-finite step whose batch the callback kept
            (a step recorded in full): False when the batch's inputs or
            labels hold a NaN or infinity, True when all of them are
            finite (the whole batch kept), None when not known.
    """

    step: int
    global_norm: float
    non_finite: bool
    layer: str | None = None
    learning_rate: float | None = None
    loss: float | None = None
    zero_gradients: int = 0
    silent_units: int = 0
    learning_rates: tuple[float, ...] | None = None
    update_skipped: bool = False
    data_finite: bool | None = None


def rates_mark(rates):
    """One value for the learning rates of a step's optimizers, what the
    alarm bounds (`HealthRules.alarm_bounds`) hold it to: the one rate, or
    the product of several, which a jump of any one of them moves by its
    own factor. Floats on the host, tensors in the step alike; None for
    no rate."""
    mark = None
    for rate in rates:
        if rate is None:
            return None
        mark = rate if mark is None else mark * rate
    return mark
