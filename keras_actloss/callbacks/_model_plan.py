"""What `GradientDiagnostics` monitors on a model, found by walking it.

`plan_layers` lists the monitored layers in model order (`LayerPlan`: their
variables, the profile of their output activation and their distance from
the outputs in the layer graph); `find_optimizers` finds the optimizers that
may update the model's weights, `learning_rate` what is noted as an
optimizer's rate and `step_counter` its step. Both backends' hooks use them
(`_keras_hooks`, `_jax_hooks`). Nothing is wrapped or changed here; the walk
reads the layer tracking and the functional graph Keras keeps
(`_flatten_layers`, `_operations_by_depth`), which
`_keras_hooks.check_internals()` checks, `step_counter` an optimizer's
own count of its calls (`_iterations`) and `AttentionPlan` the arguments
of Keras's attention (`_compute_attention`), which both backends' checks
test (`missing_internals`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_actloss import activations
from keras_actloss.diagnostics import attention
from keras_actloss.diagnostics.records import LayerInfo
from keras_actloss.profiles import LINEAR, ActivationProfile

# The outputs of a layer whose units are judged by sign and gradient
# (`LayerInfo.units_by_sign`): a unit is active on an element above 0, as a
# ReLU after it would be.
BY_SIGN = ActivationProfile(
    name=LINEAR,
    family=LINEAR,
    output_range=(-math.inf, math.inf),
    zero_centred=False,
    inactive_below=0.0,
    inactive_gradient=0.0,
    description="A linear layer's outputs, active above 0.",
)
# The layers whose units are one per output channel, each with one element
# of a vector weight (a bias, a normalization's scale): `_unit_variable`.
_PER_UNIT = (
    keras.layers.Dense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
)
_NORMALIZING = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
)


@dataclasses.dataclass
class LayerPlan:
    """One monitored layer: its variables and the profile of its output.

    `runner` is the layer whose `call` returns the layer's activation
    output, when that is not the layer itself: a `SimpleRNNCell` runs
    inside its RNN's loop, whose output sequence (outside the loop, the
    first of its outputs with `return_state`) is the cell's activation at
    each step (`_runs_simple_cell`). `unit_variable` is the vector weight
    (one element per unit) whose gradient tells, unit by unit, whether a
    layer judged by sign (`LayerInfo.units_by_sign`) passed any back.
    """

    info: LayerInfo
    layer: Any
    variables: list
    profile: ActivationProfile | None
    channel_axis: int = -1
    leaf: bool = True
    runner: Any = None
    unit_variable: Any = None

    @property
    def flow_variable(self) -> Any:
        """The vector weight (one element per unit) whose gradient is 0 for
        a unit exactly when the unit passed nothing back in the step:
        `unit_variable`, or the bias of a `_PER_UNIT` layer that applies
        its own activation, one whose units can die (a `Dense` or `Conv2D`
        with `activation="relu"`): the host takes from it, step by step,
        the last step each unit was active (`_step_rows.FlowStamps`).
        None for other layers."""
        if self.unit_variable is not None:
            return self.unit_variable
        profile, layer = self.profile, self.layer
        if profile is None or not profile.can_die or self.runner is not None:
            return None
        if not isinstance(layer, _PER_UNIT) or isinstance(layer, _NORMALIZING):
            return None
        return _unit_variable(layer, self.variables)

    @property
    def hooked(self) -> Any:
        """The layer whose calls of `method` give the activation statistics
        (`kept`)."""
        return self.layer if self.runner is None else self.runner

    # The method of `hooked` whose calls are watched.
    method = "call"

    def activation(self, outputs):
        """The activation output among the `hooked` layer's `outputs`."""
        if self.runner is not None and isinstance(outputs, (list, tuple)):
            return outputs[0]
        return outputs

    def kept(self, args: tuple, kwargs: dict, outputs) -> Any:
        """What a full step keeps of one watched call (its `args`, `kwargs`
        and `outputs`): the activation output; None for nothing."""
        return self.activation(outputs)

    @staticmethod
    def tensor(kept) -> Any:
        """The tensor of `kept` that tells which trace made it."""
        return kept

    @staticmethod
    def measured(kept) -> Any:
        """The outputs whose statistics `kept` gives, computed in the full
        statistics (`step_activations.activation_vector`)."""
        return kept

    @staticmethod
    def counted(measured) -> Any:
        """The boolean mask of the `measured` elements that count, or None
        for all."""
        return None


class AttentionPlan(LayerPlan):
    """The attention weights of a Keras `MultiHeadAttention` or
    `GroupQueryAttention` (`_attends`), as
    `diagnostics.attention.attention_peaks` measures them.

    Keras may never form the weights (`ops.dot_product_attention`, its
    default without dropout), so its `_compute_attention(query, key, value,
    attention_mask, ...)` is watched: a full step keeps the projected
    queries and keys and the mask (causal, when Keras passes
    `use_causal_mask` instead of one), and the peaks are computed in the
    full statistics only. Attention over more than one axis (queries of
    rank other than 4) or with a mask per head is not measured.
    """

    method = "_compute_attention"

    def kept(self, args: tuple, kwargs: dict, outputs) -> Any:
        query, key = args[:2]
        mask = args[3] if len(args) > 3 else kwargs.get("attention_mask")
        if len(query.shape) != 4 or len(key.shape) != 4:
            return None
        if mask is None and kwargs.get("use_causal_mask"):
            mask = attention.causal_mask(query, key)
        if mask is not None:
            if len(mask.shape) != 3:
                return None
            mask = ops.cast(mask, "bool")
        return query, key, mask

    @staticmethod
    def tensor(kept) -> Any:
        return kept[0]

    @staticmethod
    def measured(kept) -> Any:
        return attention.attention_peaks(*kept)

    @staticmethod
    def counted(measured) -> Any:
        return attention.counted(measured)


# Keras's attention layers whose `_compute_attention(query, key, ...)` gets
# as many key heads as query heads (`GroupQueryAttention` repeats its keys
# before it; a Keras without it has the other), as `_NORMALIZING` is found.
_ATTENTION = tuple(
    getattr(keras.layers, name)
    for name in ("MultiHeadAttention", "GroupQueryAttention")
    if hasattr(keras.layers, name)
)


def _attends(layer) -> bool:
    """Whether `layer` is one of Keras's `_ATTENTION` layers whose attention
    is Keras's own (not a subclass's `_compute_attention`): `AttentionPlan`."""
    return any(
        isinstance(layer, kind)
        and type(layer)._compute_attention is kind._compute_attention
        for kind in _ATTENTION
    )


def _children(layer) -> list:
    return list(layer._flatten_layers(include_self=False, recursive=False))


def _members(layer, top: bool = False) -> list:
    """The sublayers of `layer` and, in its layer graph (a functional
    model's), the operations that are not layers but activations
    (`keras.ops.relu(x)` or `keras.activations.relu(x)` on a functional
    model's tensors is an operation of its graph, `Relu`): each after the
    last layer before it in the graph's order from the inputs; not one
    applied to the inputs themselves of the model (`top`) (`_on_inputs`:
    a nested model's inputs may come from layers before it)."""
    children = _children(layer)
    graph = getattr(layer, "_functional", None) or layer
    by_depth = getattr(graph, "_operations_by_depth", None)
    if not isinstance(by_depth, dict):
        return children
    after: dict[int, list] = {}
    anchor = None
    for depth in sorted(by_depth, reverse=True):
        for op in by_depth[depth]:
            if isinstance(op, keras.layers.Layer):
                anchor = id(op)
            elif _watched_profile(op) is None or (top and _on_inputs(graph, op)):
                continue
            else:
                after.setdefault(anchor, []).append(op)
    if not after:
        return children
    members = list(after.get(None, []))
    for child in children:
        members += [child, *after.get(id(child), [])]
    return members


def _on_inputs(graph, op) -> bool:
    """Whether every call of `op` in `graph` takes the graph's inputs
    themselves: no weights before it, so units it leaves at 0 are the data's
    (features that are never positive), not units training killed (probed:
    `keras.ops.relu(inputs)` whose inputs had 10 negative columns was a
    `dead_relu` failure)."""
    inputs = {id(t) for t in graph.inputs}
    nodes = [n for n in op._inbound_nodes if n.input_tensors]
    return bool(nodes) and all(
        all(id(t) in inputs for t in n.input_tensors) for n in nodes
    )


def _users_own(parent, name: str) -> str | None:
    """The name of `parent`, the layer a layer named `name` was found in,
    when it is a layer of the user's own (its class outside Keras: what its
    `call` computes is not watched), else None (`LayerInfo.inside`)."""
    if type(parent).__module__.split(".")[0] in ("keras", "keras_actloss"):
        return None
    return name.rsplit("/", 1)[0] if "/" in name else getattr(parent, "name", None)


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


def lazy_layers(model) -> bool:
    """Whether `model` holds layers not built yet: a layer of the user's own
    that gives its output shape (`compute_output_shape`) without calling
    its sublayers leaves them to be built, weights and all, by the first
    training step (a `TimeDistributed` around it). A layer never called
    stays so."""
    return any(not layer.built for layer in model._flatten_layers(include_self=False))


def weights_made(model) -> bool:
    """Whether `model` has made all its weights, built or not: a model that
    its `train_step` never calls stays unbuilt (a GAN that calls only its
    generator and discriminator, as the Keras DCGAN example's), but when
    every layer it holds is built, its first step makes no weight of the
    model (an optimizer's only, which the hooks see made)."""
    if model.built:
        return True
    return bool(model.trainable_variables) and not lazy_layers(model)


def graph_depths(container) -> dict[int, int] | None:
    """`id(layer)` -> depth in `container`'s layer graph (0 = its outputs),
    or None for a container without one (a subclassed model or layer).

    Reads the graph Keras keeps for functional models (and a built
    `Sequential`'s functional twin).
    """
    graph = getattr(container, "_functional", None) or container
    by_depth = getattr(graph, "_operations_by_depth", None)
    if not isinstance(by_depth, dict):
        return None
    return {id(op): depth for depth, ops in by_depth.items() for op in ops}


def _walk(layer, prefix: str, seen: set, base: int | None):
    """Yields `(name, layer, variables, leaf, distance, parent)` in model
    order (`parent`: the layer `layer` it was found in).

    `distance` is the layer's depth in the layer graph from the model's
    outputs, summed over nested graphs; the sublayers of a layer without a
    graph share its distance (they are siblings); None below a container
    without a graph.
    """
    depths = None if base is None else graph_depths(layer)
    for child in _members(layer, top=not prefix):
        if id(child) in seen or isinstance(child, keras.layers.InputLayer):
            continue
        seen.add(id(child))
        name = prefix + child.name
        distance = base if depths is None else base + depths.get(id(child), 0)
        if not isinstance(child, keras.layers.Layer):  # an activation op
            yield name, child, [], True, distance, layer
            continue
        kids = _children(child)
        if not kids:
            yield name, child, list(child.trainable_variables), True, distance, layer
            continue
        inner = {id(v) for k in kids for v in k.trainable_variables}
        own = [v for v in child.trainable_variables if id(v) not in inner]
        if own:
            yield name, child, own, False, distance, layer
        yield from _walk(child, name + "/", seen, distance)
        if _attends(child):  # Its attention weights, after its sublayers.
            yield name, child, [], True, distance, layer


def plan_layers(model) -> list[LayerPlan]:
    """Lists the monitored layers of `model` in model order.

    Leaf layers (no sublayers) are monitored when they have trainable
    variables or, unless frozen (`trainable=False`, as every layer of a
    frozen pretrained base is), an output activation from the ReLU family,
    sigmoid or tanh: a frozen layer's dead or saturated units are fixed
    features, not something training does or can undo. Nested models and
    composite layers are walked and named `outer/inner`. So are the
    activations a functional model applies as operations of its graph
    (`keras.ops.relu(x)`, `keras.activations.sigmoid(x)`), named as Keras
    names them (`relu`, `sigmoid_1`). Each gets its distance from the
    outputs in the layer graph (None in a subclassed model).
    A composite layer's own variables (outside its sublayers) form an entry
    of their own, without activation statistics.
    """
    plans = []
    base = None if graph_depths(model) is None else 0
    for name, layer, variables, leaf, distance, parent in _walk(model, "", set(), base):
        # An operation (not a layer) trains as the model it is in.
        trainable = getattr(layer, "trainable", parent.trainable)
        attends = leaf and _attends(layer)
        profile = _watched_profile(layer) if leaf and trainable else None
        if attends:
            profile = attention.PEAKS if trainable else None
        runner = None
        if profile is not None and _runs_simple_cell(parent, layer):
            runner = parent
        if not variables and profile is None:
            continue
        axis = 1 if getattr(layer, "data_format", None) == "channels_first" else -1
        if isinstance(getattr(layer, "axis", None), int):
            axis = layer.axis  # A normalization's.
        info = LayerInfo(
            name=name,
            class_name=type(layer).__name__,
            activation=None if profile is None or attends else profile.name,
            has_trainable_weights=bool(variables),
            depth=len(plans),
            distance=distance,
            inside=_users_own(parent, name),
            averaged=_averaged(layer),
            attention=attends,
            threshold=_threshold(layer),
        )
        kind = AttentionPlan if attends else LayerPlan
        plan = kind(info, layer, variables, profile, axis, leaf, runner)
        if profile is None and trainable and info.inside is not None:
            plan.unit_variable = _unit_variable(layer, variables)
            if plan.unit_variable is not None:
                plan.profile, info.units_by_sign = BY_SIGN, True
        plans.append(plan)
    named = {id(plan.layer): plan.info.name for plan in plans}
    for plan in plans:
        if isinstance(plan.layer, keras.layers.Layer):
            norm = _batch_normalized(plan.layer)
            if norm is not None:
                plan.info.batch_normalized = named.get(id(norm))
    last = next((p for p in reversed(plans) if p.variables), None)
    if last is not None and last.unit_variable is not None:
        # The last layer with weights, the model's output (as the rules take
        # it): its outputs go to the loss, not through a ReLU.
        last.profile = last.unit_variable = None
        last.info.units_by_sign = False
    _set_upstream(model, plans)
    _set_bypassed(model, plans)
    _set_gates(model, plans)
    return plans


# Layers that leave their input's values as they are (or drop or jitter some
# of them): what feeds them feeds the layer after them (`_averaged`).
_PASSING = (
    keras.layers.Dropout,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.Identity,
)
_AVERAGING = (
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
)


def _sources(layer) -> list | None:
    """The operations whose outputs are every input of `layer`, at each of
    its calls in a layer graph, looked through `_PASSING` layers; None when
    the graph is not known (a subclassed model's layers) or a passing layer
    on the way has several calls or inputs."""
    nodes = getattr(layer, "_inbound_nodes", None) or []
    parents = [p for node in nodes for p in getattr(node, "parent_nodes", [])]
    if not nodes or not parents:
        return None
    sources = []
    for parent in parents:
        for _ in range(8):  # Through a short run of passing layers.
            source = getattr(parent, "operation", None)
            if not isinstance(source, _PASSING):
                break
            inbound = getattr(source, "_inbound_nodes", None) or [None]
            above = getattr(inbound[0], "parent_nodes", None)
            if len(inbound) != 1 or not above or len(above) != 1:
                return None
            parent = above[0]
        sources.append(getattr(parent, "operation", None))
    return sources


def _threshold(layer) -> float:
    """`LayerInfo.threshold`: a Keras `ReLU` layer's `threshold`, else 0."""
    if not isinstance(layer, keras.layers.ReLU):
        return 0.0
    return float(getattr(layer, "threshold", 0.0) or 0.0)


def _averaged(layer) -> bool:
    """Whether every input of `layer` is the output of a global average
    pooling (`_sources`): `LayerInfo.averaged`."""
    sources = _sources(layer)
    return bool(sources) and all(isinstance(s, _AVERAGING) for s in sources)


def _batch_normalized(layer):
    """The `BatchNormalization` layer whose outputs are every input of
    `layer` (`_sources`) when its own inputs have two axes (a feature per
    sample: over a batch of 1 it normalizes single values), else None:
    `LayerInfo.batch_normalized`."""
    sources = _sources(layer) or [None]
    norm = sources[0]
    if not isinstance(norm, keras.layers.BatchNormalization):
        return None
    if any(s is not norm for s in sources):
        return None
    nodes = getattr(norm, "_inbound_nodes", None) or []
    shapes = [t.shape for node in nodes for t in node.input_tensors]
    return norm if shapes and all(len(shape) == 2 for shape in shapes) else None


# The layers that normalize their inputs inside a model (not the
# `Normalization` that standardizes its inputs with the data's statistics).
_NORMALIZING = tuple(
    getattr(keras.layers, name)
    for name in (
        "BatchNormalization",
        "LayerNormalization",
        "GroupNormalization",
        "RMSNormalization",
        "UnitNormalization",
    )
    if hasattr(keras.layers, name)
)


def residual_sums(model) -> int:
    """How many sums of two or more tensors (`keras.layers.Add`, or `x + y`
    on a functional model's tensors: the joins of residual branches) the
    layer graphs of `model` and of the models in it hold, when no layer of
    it normalizes (`_NORMALIZING`), else 0: `HealthRules.residual_sums`.
    0 where no graph is known (a subclassed model)."""
    layers = [model, *model._flatten_layers(include_self=False)]
    if any(isinstance(layer, _NORMALIZING) for layer in layers):
        return 0
    sums = 0
    for layer in layers:
        graph = getattr(layer, "_functional", None) or layer
        by_depth = getattr(graph, "_operations_by_depth", None)
        if not isinstance(by_depth, dict):
            continue
        for op in (op for group in by_depth.values() for op in group):
            if type(op).__name__ == "Add":
                nodes = getattr(op, "_inbound_nodes", None) or []
                sums += sum(len(node.input_tensors) >= 2 for node in nodes)
    return sums


def _unit_variable(layer, variables: list):
    """The first vector weight of a `_PER_UNIT` layer (a bias, a
    normalization's scale) among its trainable `variables`, else None.

    Its gradient is 0 for a unit exactly when the loss's gradient reaches
    none of that unit's outputs: such a layer of a layer (or model) of the
    user's own is judged by the sign of its outputs and that gradient
    (`LayerInfo.units_by_sign`), where a ReLU that the user's `call`
    applies to it would output 0 and pass nothing back."""
    if not isinstance(layer, _PER_UNIT):
        return None
    return next((v for v in variables if len(v.shape) == 1), None)


def _set_upstream(model, plans: list[LayerPlan]) -> None:
    """Sets `LayerInfo.upstream` of the layers of `model`'s layer graph,
    those of the functional models nested in it and of their
    `TimeDistributed` and `Bidirectional` wrappers (the layers of a
    subclassed model, or inside any other composite layer, keep none).

    Follows each tensor of the graph from the model's inputs to the
    nearest layers whose units can die (`ActivationProfile.can_die`) that
    it comes through (`_Flow`); a path from the inputs that avoids them
    leaves the layers it reaches with none.
    """
    graph = _graph(model)
    if graph is None:
        return
    flow = _Flow(
        {
            id(plan.hooked): plan.info.name
            for plan in plans
            if plan.profile is not None and plan.profile.can_die
        }
    )
    flow.through(graph, None)
    for plan in plans:
        found = flow.calls.get(id(plan.hooked), [])
        if found and all(f is not None for f in found):
            plan.info.upstream = tuple(sorted(frozenset().union(*found)))


def input_reach(
    model, plans: list[LayerPlan], first: bool = True
) -> list[frozenset[str]] | None:
    """For each input of `model` (`model.inputs` order), the monitored
    layers with weights it reaches first (by name): a path from it meets
    no other layer with weights before them; with `first=False`, those it
    reaches on any path (their outputs are computed from it). None for a
    model without a layer graph (subclassed) or with one input.

    Follows the layer graph as `_set_upstream` does (`_Flow`), each input
    entering with a mark of its own, which every layer of the graph with
    trainable weights stops (with `first`; a composite one, as an
    attention, whole: the monitored layers inside it are reached through
    it).
    """
    graph = _graph(model)
    if graph is None or len(graph.inputs) < 2:
        return None
    weighted: dict[int, object] = {}
    _weighted_ops(graph, weighted, set())
    flow = _Flow({key: key for key in weighted} if first else {})
    flow.through(graph, [frozenset([("input", k)]) for k in range(len(graph.inputs))])
    owner = {id(v): key for key, op in weighted.items() for v in op.trainable_weights}
    reach: list[set[str]] = [set() for _ in graph.inputs]
    for plan in plans:
        keys = {owner.get(id(v)) for v in plan.variables} - {None}
        if not first:  # An activation of its own, called on what reaches it.
            keys.add(id(plan.hooked))
        for key in keys:
            for entered in flow.calls.get(key, []):
                for mark in entered or ():
                    if isinstance(mark, tuple):
                        reach[mark[1]].add(plan.info.name)
    return [frozenset(names) for names in reach]


def input_chains(model) -> list[list] | None:
    """For each input of a model of several (`model.inputs` order), the
    `Rescaling` and `Normalization` layers applied to it first, one after
    the other, each call the one its input goes to (a layer shared by the
    inputs, one call each, counts for each): what the layers it reaches
    first see is the data through them (`_callback_support.preprocessed`).
    None for a model of one input (`_callback_support.input_preprocessing`)
    or without a layer graph."""
    maps = _GraphMaps.of(model)
    if maps is None or len(model.inputs) < 2:
        return None
    kinds = (keras.layers.Rescaling, keras.layers.Normalization)
    chains = []
    for tensor in model.inputs:
        chain = []
        while True:
            users = maps.consumers.get(id(tensor), [])
            if len(users) != 1 or not isinstance(users[0].operation, kinds):
                break
            chain.append(users[0].operation)
            tensor = users[0].outputs[0]
        chains.append(chain)
    return chains


def _weighted_ops(graph, found: dict, seen: set) -> None:
    """The operations of `graph` and of the functional models nested in
    it (which `_Flow` follows inside) that have trainable weights, by id."""
    if id(graph) in seen:
        return
    seen.add(id(graph))
    for nodes in graph._nodes_by_depth.values():
        for node in nodes:
            op = node.operation
            nested = _graph(op) if isinstance(op, keras.layers.Layer) else None
            if nested is not None and nested is not graph:
                _weighted_ops(nested, found, seen)
            elif getattr(op, "trainable_weights", None):
                found[id(op)] = op


@dataclasses.dataclass
class _GraphMaps:
    """The nodes of a functional model's own layer graph by tensor and
    operation (ids): the nodes that take each tensor (`consumers`), the one
    that makes it (`producer`), each operation's calls, and the model's
    output tensors."""

    consumers: dict[int, list]
    producer: dict[int, object]
    calls: dict[int, list]
    outputs: set[int]

    @classmethod
    def of(cls, model) -> _GraphMaps | None:
        graph = _graph(model)
        if graph is None:
            return None
        maps = cls({}, {}, {}, {id(tensor) for tensor in graph.outputs})
        for group in graph._nodes_by_depth.values():
            for node in group:
                for tensor in node.input_tensors:
                    maps.consumers.setdefault(id(tensor), []).append(node)
                for tensor in node.outputs:
                    maps.producer[id(tensor)] = node
                maps.calls.setdefault(id(node.operation), []).append(node)
        return maps


def _set_bypassed(model, plans: list[LayerPlan]) -> None:
    """Sets `LayerInfo.bypassed` of the layers with a saturating activation
    in `model`'s own layer graph (not a nested model's: left unset) whose
    inputs, at each of their calls, also reach an output of the model by a
    path that avoids the layer (the skip connection around a residual
    branch, or a parallel branch)."""
    maps = _GraphMaps.of(model)
    if maps is None:
        return
    consumers, outputs = maps.consumers, maps.outputs
    for plan in plans:
        found = maps.calls.get(id(plan.hooked))
        if found and plan.profile is not None and plan.profile.saturates:
            plan.info.bypassed = all(
                _around(node, consumers, outputs) for node in found
            )


def _set_gates(model, plans: list[LayerPlan]) -> None:
    """Sets `LayerInfo.gate` of the layers in `model`'s own layer graph
    whose every call's outputs reach the model's outputs only through a
    `Multiply` whose other inputs the layer is computed from."""
    maps = _GraphMaps.of(model)
    if maps is None or not any(
        isinstance(nodes[0].operation, keras.layers.Multiply)
        for nodes in maps.calls.values()
    ):
        return  # Most models have no `Multiply`: no walk from every layer.
    for plan in plans:
        found = maps.calls.get(id(plan.hooked))
        if not found or not plan.variables:
            continue
        gates = {
            _gate_of(node, maps.consumers, maps.producer, maps.outputs)
            for node in found
        }
        if len(gates) == 1 and None not in gates:
            plan.info.gate = gates.pop()


def _gate_of(node, consumers: dict, producer: dict, outputs: set) -> str | None:
    """The name of the one `Multiply` that every path from `node`'s outputs
    to `outputs` passes, multiplying them with a tensor `node` is computed
    from; None where a path avoids it."""
    ancestors = None  # Found at the first `Multiply` met: most models have none.
    gates, todo, seen = set(), list(node.outputs), set()
    while todo:
        tensor = todo.pop()
        if id(tensor) in outputs:
            return None
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        for other in consumers.get(id(tensor), []):
            if not isinstance(other.operation, keras.layers.Multiply):
                todo.extend(other.outputs)
                continue
            if ancestors is None:
                ancestors = _upstream(node, producer)
            if any(id(t) in ancestors for t in other.input_tensors if t is not tensor):
                gates.add(other.operation.name)
                continue
            todo.extend(other.outputs)
    return gates.pop() if len(gates) == 1 else None


def _upstream(node, producer: dict) -> set[int]:
    """The ids of every tensor `node` is computed from (`producer`: tensor
    id -> the node that makes it)."""
    ancestors, todo = set(), list(node.input_tensors)
    while todo:
        tensor = todo.pop()
        if id(tensor) in ancestors:
            continue
        ancestors.add(id(tensor))
        source = producer.get(id(tensor))
        if source is not None:
            todo.extend(source.input_tensors)
    return ancestors


def _around(node, consumers: dict, outputs: set) -> bool:
    """Whether an input tensor of `node` reaches one of `outputs` (tensor
    ids) through nodes other than `node` (`consumers`: tensor id -> the
    nodes that take it)."""
    todo, seen = list(node.input_tensors), set()
    while todo:
        tensor = todo.pop()
        if id(tensor) in outputs:
            return True
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        for other in consumers.get(id(tensor), []):
            if other is not node:
                todo.extend(other.outputs)
    return False


def _graph(layer):
    """The graph of a functional model (a built `Sequential`'s functional
    twin), or None."""
    graph = getattr(layer, "_functional", None) or layer
    if isinstance(getattr(graph, "_nodes_by_depth", None), dict):
        return graph
    return None


def _joined(flows) -> frozenset | None:
    """The dying layers that all of `flows` come through (None: one of
    them avoids them)."""
    joined = frozenset()
    for flow in flows:
        if flow is None:
            return None
        joined |= flow
    return joined


class _Flow:
    """What each tensor of a layer graph comes through: the nearest layers
    whose units can die (`dying`, `id(layer)` -> its name) on every path
    from the model's inputs to it, or None when a path avoids them.

    `calls` collects, for each layer, what its inputs come through at each
    of its calls (a shared layer, or the layers of a nested model called
    twice, have several).
    """

    def __init__(self, dying: dict[int, str]):
        self.dying = dying
        self.calls: dict[int, list] = {}

    def through(self, graph, entering: list | None) -> list:
        """Follows `graph` (its inputs coming through `entering`, None for
        the model's own inputs), node by node in its order from the inputs
        (a node's parents are deeper than it); returns what its outputs
        come through. A nested graph is followed at each of its calls, one
        level of recursion per level of nesting."""
        flows: dict[int, frozenset | None] = {}
        if entering is not None:
            for tensor, flow in zip(graph.inputs, entering):
                flows[id(tensor)] = flow
        by_depth = graph._nodes_by_depth
        for depth in sorted(by_depth, reverse=True):
            for node in by_depth[depth]:
                tensors = node.input_tensors
                if not tensors:  # an input of the graph
                    continue
                entering = [flows.get(id(t)) for t in tensors]
                outputs = self._call(node.operation, entering)
                if len(outputs) != len(node.outputs):
                    outputs = [_joined(outputs)] * len(node.outputs)
                for tensor, flow in zip(node.outputs, outputs):
                    flows[id(tensor)] = flow
        return [flows.get(id(t)) for t in graph.outputs]

    def _call(self, op, entering: list) -> list:
        """What the outputs of one call of `op` come through, each of its
        inputs coming through `entering`."""
        into = _joined(entering)
        self.calls.setdefault(id(op), []).append(into)
        if id(op) in self.dying:
            return [frozenset([self.dying[id(op)]])]
        nested = _graph(op) if isinstance(op, keras.layers.Layer) else None
        if nested is not None:
            if len(nested.inputs) != len(entering):
                # Else both flat lists follow the structure of its inputs.
                entering = [into] * len(nested.inputs)
            return self.through(nested, entering)
        if isinstance(op, keras.layers.TimeDistributed):
            return self._call(op.layer, [into])
        if isinstance(op, keras.layers.Bidirectional):
            return [
                _joined(
                    _joined(self._call(inner, [into]))
                    for inner in (op.forward_layer, op.backward_layer)
                )
            ]
        # Any other layer or operation, a composite layer whose insides are
        # not followed too, computes its outputs from its inputs: they come
        # through what those come through (not always the nearest).
        return [into]


def _runs_simple_cell(parent, cell) -> bool:
    """Whether `parent` is the RNN that runs `cell`, a `SimpleRNNCell`,
    and returns its output at every step (`return_sequences`): the cell's
    activation at each step (an LSTM's or a GRU's output mixes gates and
    states). The last step's alone would not do: a unit inactive there
    for the whole batch may be active at the steps before it."""
    return (
        isinstance(parent, keras.layers.RNN)
        and getattr(parent, "cell", None) is cell
        and isinstance(cell, keras.layers.SimpleRNNCell)
        and bool(getattr(parent, "return_sequences", False))
    )


def sample_weighted(data) -> bool:
    """Whether a train step's `data` carries sample weights: `fit`'s
    `sample_weight`, or its `class_weight`, which Keras turns into them.
    Noted by both backends' hooks as they trace the step."""
    return keras.utils.unpack_x_y_sample_weight(data)[2] is not None


def apply_groups(var_layer: dict, calls: list) -> dict[int, int]:
    """The `apply` call of a step that updates each monitored layer, when
    the step makes several (a GAN's discriminator and generator, each by
    its own loss), else `{}`.

    Args:
        var_layer: `id(variable)` -> its layer's index among the plans.
        calls: The variables of each call, in call order.

    Returns:
        Layer index -> the index of the first call that updates one of its
        variables.
    """
    if len(calls) < 2:
        return {}
    groups: dict[int, int] = {}
    for k, variables in enumerate(calls):
        for v in variables:
            layer = var_layer.get(id(v))
            if layer is not None:
                groups.setdefault(layer, k)
    return groups


def learning_rate(optimizer):
    """What the statistics note as `optimizer`'s learning rate.

    A `keras.optimizers.MultiOptimizer` has none of its own (reading it
    raises): the largest of its optimizers' rates stands for it (behind a
    `LossScaleOptimizer` too), so a jump of the largest is seen.
    """
    inner = _multi(optimizer)
    if inner is None:
        return optimizer.learning_rate
    rates = [ops.cast(learning_rate(o), "float32") for o in inner]
    return ops.max(ops.stack(rates)) if rates else ops.zeros((), "float32")


def _unscaled(optimizer):
    """`optimizer`, or the one behind its `LossScaleOptimizer` wrappers."""
    while isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    return optimizer


def _multi(optimizer) -> list | None:
    """The optimizers of a `keras.optimizers.MultiOptimizer` (behind a
    `LossScaleOptimizer` too), else None."""
    multi = getattr(keras.optimizers, "MultiOptimizer", None)
    inner = _unscaled(optimizer)
    return None if multi is None or not isinstance(inner, multi) else inner.optimizers


def rate_variables(optimizers) -> list:
    """The variables that hold the learning rates of `optimizers` (those
    behind a `LossScaleOptimizer`, each of a `MultiOptimizer`'s), where a
    rate is one: set by the user or a callback, read by the host. A
    learning-rate schedule, computed from the step in the train function,
    has none."""
    found = []
    for optimizer in optimizers:
        inner = _multi(optimizer)
        if inner is not None:
            found += rate_variables(inner)
        elif isinstance(optimizer.learning_rate, keras.Variable):
            # A `LossScaleOptimizer`'s is its inner optimizer's.
            found.append(optimizer.learning_rate)
    return found


def host_rate(variables: list, value=None) -> float | None:
    """The largest value of `variables` (`rate_variables`), or None.
    `value`: reads a variable (the hooks' `value`, which on JAX reads one
    that `fit` purged from its training state); by default its own."""
    if not variables:
        return None
    read = value or (lambda v: v.value)
    # Not `convert_to_numpy`: it passes `copy=False` to the `__array__` of
    # TensorFlow's variable, which takes no `copy` (NumPy 2 warns).
    return max(float(np.asarray(read(v))) for v in variables)


def step_counter(optimizer):
    """The variable that counts `optimizer`'s `apply` calls: the step the
    statistics note.

    `optimizer.iterations`, except under gradient accumulation
    (`gradient_accumulation_steps=n`), where `iterations` counts the updates
    (one per `n` calls, a tensor computed from the calls): there the count
    of calls itself, the step the optimizer's learning-rate schedule reads.
    Every batch is a step then, its gradients its own; the weights change
    on every `n`-th.
    """
    inner = _unscaled(optimizer)
    if getattr(inner, "gradient_accumulation_steps", None):
        return inner._iterations
    return optimizer.iterations


def missing_internals() -> list[str]:
    """The Keras internals of this module (beyond the walk's) that are
    missing: `step_counter`'s count of calls, the graphs' nodes and
    tensors that `_Flow` follows, and the arguments of the attention
    layers' `_compute_attention` (`AttentionPlan`)."""
    import inspect

    from keras.src.ops.function import Function
    from keras.src.ops.node import Node
    from keras.src.optimizers.base_optimizer import BaseOptimizer

    missing = []
    init = inspect.getsource(BaseOptimizer.__init__)
    iterations = inspect.getsource(BaseOptimizer.iterations.fget)
    if "self._iterations = " not in init or "self._iterations" not in iterations:
        missing.append("Optimizer._iterations")
    if "self._nodes_by_depth = " not in inspect.getsource(Function.__init__):
        missing.append("Function._nodes_by_depth")
    for owner, name in (
        (Function, "inputs"),
        (Function, "outputs"),
        (Node, "input_tensors"),
    ):
        if not isinstance(getattr(owner, name, None), property):
            missing.append(f"{owner.__name__}.{name}")
    from keras.src.ops.operation import Operation

    if "self._inbound_nodes = " not in inspect.getsource(Operation.__init__):
        missing.append("Operation._inbound_nodes")
    node_init = inspect.getsource(Node.__init__)
    for name in ("operation", "outputs"):
        if f"self.{name} = " not in node_init:
            missing.append(f"Node.{name}")
    for kind in _ATTENTION:  # `AttentionPlan.kept` reads these arguments.
        params = list(inspect.signature(kind._compute_attention).parameters)
        if params[:5] != ["self", "query", "key", "value", "attention_mask"]:
            missing.append(f"{kind.__name__}._compute_attention")
    return missing


def find_optimizers(model, extra=()) -> list[tuple[str, Any]]:
    """The optimizers to hook on `model`, each with where it was found.

    `model.optimizer`, then every optimizer held by an attribute of the model
    or of one of its layers, directly or in a list, tuple or dict (as Keras
    saves them with the model: a GAN's `self.d_optimizer`), then `extra` (the
    callback's `optimizers=`), without repeats. An optimizer wrapped by a
    `LossScaleOptimizer` among them is left out: the outer `apply` receives
    the gradients (scaled) and calls it.
    """
    found: dict[int, tuple[str, Any]] = {}
    optimizer_type = keras.optimizers.Optimizer

    def add(path: str, value) -> None:
        if id(value) not in found:
            found[id(value)] = (path, value)

    model_optimizer = getattr(model, "optimizer", None)
    if isinstance(model_optimizer, optimizer_type):
        add("model.optimizer", model_optimizer)
    owners = [("model", model)] + [
        (f"model.{layer.name}", layer)
        for layer in model._flatten_layers(include_self=False, recursive=True)
    ]
    # The type is checked before a path is made: a large model's layers
    # hold tens of thousands of attributes and items.
    for prefix, owner in owners:
        attributes = vars(owner).items()
        for attr, value in attributes:
            if isinstance(value, optimizer_type):
                add(f"{prefix}.{attr}", value)
        # Then in containers (TensorFlow's tracking keeps a dict of every
        # tracked attribute: found above under its own name).
        for attr, value in attributes:
            if isinstance(value, (list, tuple)):
                items = enumerate(value)
            elif isinstance(value, dict):
                items = value.items()
            else:
                continue
            for key, item in items:
                if isinstance(item, optimizer_type):
                    index = key if isinstance(value, (list, tuple)) else repr(key)
                    add(f"{prefix}.{attr}[{index}]", item)
    for i, optimizer in enumerate(extra):
        if isinstance(optimizer, optimizer_type):
            add(f"optimizers[{i}]", optimizer)
    inner = {
        id(o.inner_optimizer)
        for _, o in found.values()
        if isinstance(o, keras.optimizers.LossScaleOptimizer)
    }
    return [entry for key, entry in found.items() if key not in inner]
