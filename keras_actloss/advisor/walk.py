"""Finding a model's output layers and pairing layers with their activations.

Uses public Keras APIs only (`model.outputs`, `model.output_names`,
`model.get_layer`, `model.layers`, `layer.input`, `layer.output`,
`layer.kernel`, `layer.bias`, `get_build_config`, `compute_output_shape`,
`compute_output_spec`).

- **Outputs.** Sequential: the last layer. Functional: each output's layer by
  name (`model.output_names`); an output made by a bare op such as
  `keras.ops.softmax(x)` has no layer and its activation is unknown. A nested
  model as the output layer is followed to its own (first) output.
  Subclassed: the last layer in `model.layers` order (the order attributes
  were set in `__init__`), which is the output layer only when the model is
  written in order; its units are read from the last layer with `units` or
  `filters`. When the shape of a sample of its output is not that of the
  model's (its `call` run symbolically on the shape it was built with, as
  a decoder set before its encoder), the last layer with the model's
  output shape stands for it, or none does. A linear last layer there
  counts as unknown, since `call` may apply an activation inline. Dropout,
  noise, reshaping and identity layers after the output layer are walked
  back through.
- **Units.** Every layer with a kernel (Dense, Conv, depthwise and separable
  Conv, EinsumDense) is paired with its activation: its own, or, when its
  own is linear, the activation layer that follows it in `model.layers`
  order (after any dropout, pooling or normalization layer). `model.layers`
  is in graph order for Sequential and Functional chains; for branching
  Functional graphs and subclassed models it is a best effort. Any other
  layer (Add, Concatenate, attention, recurrent, custom) ends a pairing.
  Nested models are flattened; custom layers that hold sub-layers are
  treated as one opaque layer.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Any

import keras

from keras_actloss import activations
from keras_actloss.profiles import LINEAR, ActivationProfile


def _types(*names: str) -> tuple[type, ...]:
    return tuple(getattr(keras.layers, n) for n in names if hasattr(keras.layers, n))


# Layers an output passes through unchanged in meaning (after training).
TRANSPARENT = _types(
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
    "Identity",
    "Flatten",
    "Reshape",
)
POOLING = _types(
    "MaxPooling1D",
    "MaxPooling2D",
    "MaxPooling3D",
    "AveragePooling1D",
    "AveragePooling2D",
    "AveragePooling3D",
)
NORMALIZATION = _types("BatchNormalization", "LayerNormalization", "GroupNormalization")


@dataclasses.dataclass(frozen=True)
class Output:
    """One model output: its name, the layer giving its activation, its units.

    `from_graph` is False for subclassed models, whose `call` may apply more
    after the last layer (an inline `keras.ops.softmax`, say). `rank` is the
    rank of the output tensor, batch axis included (3 for `(batch, T,
    units)`), or None when unknown (subclassed models).
    """

    name: str | None
    layer: Any
    units: int | None
    from_graph: bool = True
    rank: int | None = None


@dataclasses.dataclass(frozen=True)
class Unit:
    """A layer with a kernel and the activation applied to its output.

    Attributes:
        layer: The layer with the kernel.
        activation: Profile of the activation applied to its output.
        activation_layer: The layer that applies it (`layer` itself for
            `Dense(activation=...)`).
        normalized: Whether a normalization layer sits between the two.
    """

    layer: Any
    activation: ActivationProfile
    activation_layer: Any
    normalized: bool = False


def leaves(model: keras.Model) -> list:
    """Layers of `model` in order, nested models flattened, inputs dropped."""
    return [layer for _, layer in _named_leaves(model, "")]


def paths(model: keras.Model) -> dict[int, str]:
    """The name of each of `leaves(model)` by `id`: `outer/inner` inside a
    nested model, as `GradientDiagnostics` names the layers it watches, so
    that two nested layers of one name are told apart."""
    return {id(layer): name for name, layer in _named_leaves(model, "")}


def _named_leaves(model: keras.Model, prefix: str):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _named_leaves(layer, prefix + layer.name + "/")
        elif not isinstance(layer, keras.layers.InputLayer):
            yield prefix + layer.name, layer


def has_kernel(layer: Any) -> bool:
    """Whether `layer` has a kernel (a separable convolution's are its
    depthwise and pointwise kernels); a recurrent layer counts as none."""
    if isinstance(layer, keras.layers.RNN):
        return False
    try:
        return any(
            getattr(layer, name, None) is not None
            for name in ("kernel", "pointwise_kernel")
        )
    except Exception:  # noqa: BLE001 - a property of an unusual layer
        return False


def activation_of(layer: Any) -> ActivationProfile | None:
    """The activation profile of a layer, None if it has none or is unknown.

    Recurrent layers have an `activation` attribute, but it acts inside the
    recurrence, not on the layer's output: they count as having none.
    """
    if isinstance(layer, keras.layers.RNN):
        return None
    try:
        return activations.profile(layer)
    except ValueError:
        return None


def _producer(model: keras.Model, layer: Any) -> Any | None:
    """The layer whose output `layer` takes as input, or None."""
    try:
        tensor = layer.input
    except (AttributeError, ValueError):
        return None
    for candidate in model.layers:
        try:
            if candidate.output is tensor:
                return candidate
        except (AttributeError, ValueError):
            continue
    return None


def consumers(model: keras.Model, layer: Any) -> list | None:
    """The layers among `leaves(model)` that take `layer`'s output as an
    input, read from the functional graph (`layer.output`, `.input`); None
    where the graph cannot be read (a subclassed model, or a layer never
    called)."""
    try:
        tensor = layer.output
    except (AttributeError, ValueError):
        return None
    found = []
    for candidate in leaves(model):
        try:
            inputs = keras.tree.flatten(candidate.input)
        except (AttributeError, ValueError):
            continue
        if any(t is tensor for t in inputs):
            found.append(candidate)
    return found


def _walk_back(model: keras.Model, layer: Any) -> Any:
    """Follows nested models and transparent layers back to the output layer."""
    seen = 0
    while layer is not None and seen < 100:
        seen += 1
        if isinstance(layer, keras.Model):
            heads = outputs(layer)
            layer = heads[0].layer if heads else None
            continue
        if not isinstance(layer, TRANSPARENT):
            return layer
        layer = _producer(model, layer)
    return layer


def _units_of_last(layers: list) -> int | None:
    for layer in reversed(layers):
        for attribute in ("units", "filters"):
            value = getattr(layer, attribute, None)
            if isinstance(value, int):
                return value
    return None


def sample_shape(layer) -> tuple[int, ...] | None:
    """The static shape of one sample of `layer`'s output (no batch axis),
    or None when unknown: from its output in a functional graph, else from
    the shapes it was built with (`get_build_config`, public since it
    serializes a layer), as a subclassed model's layers once they ran."""
    try:
        shape = layer.output.shape
    except (AttributeError, ValueError):
        shape = None
    if shape is None:
        built = built_shape(layer)
        if built is None:
            return None
        try:
            shape = layer.compute_output_shape(built)
        except (NotImplementedError, ValueError, TypeError):
            return None
    return _static_sample(shape)


def built_shape(layer) -> tuple | None:
    """The one input shape `layer` was built with (`get_build_config`), or
    None (not built, or built on several inputs)."""
    config = layer.get_build_config() or {}
    shape = config.get("input_shape")
    return shape if len(config) == 1 and isinstance(shape, tuple) else None


def _static_sample(shape) -> tuple[int, ...] | None:
    if not isinstance(shape, (tuple, list)) or len(shape) < 2:
        return None
    shape = tuple(shape[1:])
    return shape if all(isinstance(d, int) for d in shape) else None


# Model -> (the input shape it was built with, `_call_sample_shape`): a
# symbolic call of a large model takes a few tenths of a second.
_CALL_SHAPES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _call_sample_shape(model: keras.Model) -> tuple[int, ...] | None:
    """The shape of one sample of a subclassed model's single output: its
    `call` run symbolically (`compute_output_spec`) on the input shape it
    was built with (once per model and shape); None when unknown."""
    built = built_shape(model)
    if built is None:
        return None
    known = _CALL_SHAPES.get(model)
    if known is not None and known[0] == built:
        return known[1]
    try:
        spec = model.compute_output_spec(keras.KerasTensor(built))
    except Exception:  # noqa: BLE001 - a `call` that cannot run symbolically
        spec = None
    shape = _static_sample(spec.shape) if isinstance(spec, keras.KerasTensor) else None
    _CALL_SHAPES[model] = (built, shape)
    return shape


def outputs(model: keras.Model) -> list[Output]:
    """The model's outputs (see the module docstring for how each is found)."""
    try:
        tensors = list(model.outputs)
    except (AttributeError, ValueError):
        tensors = None
    if not tensors:
        layers = leaves(model)
        if not layers:
            return []
        last, units = _walk_back(model, layers[-1]), _units_of_last(layers)
        shape = _call_sample_shape(model)
        if shape is not None and sample_shape(last) not in (None, shape):
            # `call` runs its layers in another order than they were set:
            # the last layer whose outputs have the model's shape, if any.
            fitting = [layer for layer in layers if sample_shape(layer) == shape]
            if not fitting:
                return []
            last, units = fitting[-1], shape[-1]
        return [Output(None, last, units, from_graph=False)]
    if isinstance(model, keras.Sequential):
        names, layers = [model.layers[-1].name], [model.layers[-1]]
    else:
        names = list(model.output_names)
        layers = []
        for name in names:
            try:
                layers.append(model.get_layer(name))
            except ValueError:
                layers.append(None)
    found = []
    for name, layer, tensor in zip(names, layers, tensors, strict=False):
        units = tensor.shape[-1] if tensor.shape else None
        rank = len(tensor.shape) if tensor.shape is not None else None
        found.append(Output(name, _walk_back(model, layer), units, rank=rank))
    return found


def units(model: keras.Model) -> list:
    """Pairs each layer with a kernel with its activation, in layer order.

    Returns a list of `Unit`s, with None entries where a layer ended a
    pairing without being one (Add, Concatenate, attention, ...): they mark
    where a run of consecutive units is broken.
    """
    found: list = []
    pending, normalized = None, False

    def flush():
        nonlocal pending
        if pending is not None:
            found.append(Unit(pending, activations.profile("linear"), pending))
            pending = None

    for layer in leaves(model):
        profile = activation_of(layer)
        if has_kernel(layer):
            flush()
            normalized = False
            if profile is None or profile.family == LINEAR:
                pending = layer
            else:
                found.append(Unit(layer, profile, layer))
        elif profile is not None and profile.family != LINEAR:
            if pending is not None:
                found.append(Unit(pending, profile, layer, normalized))
                pending = None
        elif isinstance(layer, NORMALIZATION):
            normalized = True
        elif not isinstance(layer, TRANSPARENT + POOLING):
            flush()
            found.append(None)
    flush()
    return found
