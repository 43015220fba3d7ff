"""Activation profiles: values for every activation, and `profile()`.

One `ActivationProfile` per activation name, for ours and for the Keras
built-ins of the same name, recorded in the registry. `profile(x)` maps a
name, a function or a layer to its profile; the callback and `check_model`
call it on every layer, so it is cheap (dictionary look-ups and `isinstance`
checks) and never raises for a layer.

Thresholds (hand computed):

- sigmoid saturates outside `(0.01, 0.99)`: there `s' = s(1 - s) = 0.0099`,
  0.04 of its largest derivative (0.25 at 0).
- tanh saturates outside `(-0.99, 0.99)`: there `1 - t^2 = 0.0199`, 0.02 of its
  largest derivative (1 at 0).
- ELU's negative part `y = alpha (e^x - 1)` has derivative `y + alpha`:
  0.01 (1% of 1, its largest for `alpha <= 1`) at `y = 0.01 - alpha`; SELU's,
  `lambda alpha e^x = y + lambda alpha`, likewise at `y = 0.01 - lambda alpha`
  (1% of 1; its largest, `lambda alpha` = 1.76 at 0, is over 1). Outputs below
  are the flat tail a large negative bias or input sets a unit in.
- swish's minimum is `-0.2784645/beta` (at `beta * x = -1.2784645`, where
  `1 + u * (1 - sigmoid(u)) = 0`); GELU's is `-0.16997` (`-0.17004` for the tanh
  approximation, the bound used).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from typing import Any

import keras
import numpy as np

from keras_actloss import profiles as _p
from keras_actloss import registry
from keras_actloss.activations import keras_profiles
from keras_actloss.profiles import ActivationProfile

SWISH_MIN = -0.2784645428
GELU_MIN = -0.1700408  # below both exact and tanh-approximate GELU
SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805


def relu_profile(
    negative_slope: float = 0.0,
    max_value: float | None = None,
    name: str | None = None,
    threshold: float = 0.0,
) -> ActivationProfile:
    """Profile of a (leaky, optionally capped) ReLU.

    Outputs `<= 0` are the inactive region, where the derivative is
    `negative_slope`. A cap `max_value` saturates: outputs `>= max_value` have
    a zero derivative. The name defaults to `"leaky_relu"` for a positive
    slope and `"relu"` otherwise, so code that only keeps the name (e.g.
    `LayerInfo.activation`) still knows whether units can die. A negative
    `threshold` (Keras's `relu(x, threshold=t)`: `x` from `t` on) lets
    outputs down to `t` through. A ReLU capped at 6 is named `"relu6"`
    (Keras's `ReLU(max_value=6)` layer is ReLU6), so the name carries the
    cap too.
    """
    if name is None:
        name = "leaky_relu" if negative_slope > 0 else "relu"
        if name == "relu" and max_value == 6.0 and threshold == 0.0:
            name = "relu6"
    low = -math.inf if negative_slope > 0 else min(0.0, float(threshold))
    high = math.inf if max_value is None else float(max_value)
    kind = "ReLU" if negative_slope == 0 else f"Leaky ReLU (slope {negative_slope})"
    return ActivationProfile(
        name=name,
        family=_p.RELU_FAMILY,
        output_range=(low, high),
        zero_centred=False,
        inactive_below=0.0,
        inactive_gradient=float(negative_slope),
        saturation_bounds=None if max_value is None else (-math.inf, high),
        saturation_gradient=None if max_value is None else 0.0,
        description=(
            f"{kind}: outputs <= 0 have derivative {float(negative_slope)}"
            + ("." if max_value is None else f"; capped at {high}.")
        ),
    )


def leaky_relu_profile(negative_slope: float = 0.2) -> ActivationProfile:
    """Profile of Leaky ReLU with a fixed `negative_slope`."""
    return relu_profile(negative_slope)


def prelu_profile(zero_slope: bool = True) -> ActivationProfile:
    """Profile of PReLU, whose negative slope (`alpha`) is learned.

    Its slopes start at 0 by default (Keras's and this package's
    `alpha_initializer="zeros"`): it starts as ReLU, and a unit whose
    inputs are negative on every sample outputs exactly 0 and passes no
    gradient back, dead as a ReLU unit is, while its slope gets none either
    (nothing after it moves). So with `zero_slope` (the slopes all 0, as
    initialised) the inactive region is the output 0 alone (`inactive_from`
    0, as hard SiLU's), whose gradient is 0: a unit counts as inactive only
    where its output is exactly 0, never where a slope it learned makes it
    negative. Without (a slope initialised above 0), the derivative there
    varies.
    """
    varying = ActivationProfile(
        name="prelu",
        family=_p.RELU_FAMILY,
        output_range=(-math.inf, math.inf),
        zero_centred=False,
        inactive_below=0.0,
        inactive_gradient=None,
        description="PReLU: learned slope for outputs <= 0.",
    )
    if not zero_slope:
        return varying
    return dataclasses.replace(
        varying,
        inactive_gradient=0.0,
        inactive_from=0.0,
        description=(
            "PReLU: learned slope for outputs <= 0, 0 as initialised by "
            "default: outputs of exactly 0 pass no gradient."
        ),
    )


def prelu_slope_zero(layer) -> bool:
    """Whether every negative slope of a PReLU layer (Keras's or this
    package's) is 0: its weights once built, else its initializer."""
    alpha = getattr(layer, "alpha", None)
    if alpha is not None:
        return not np.any(np.asarray(alpha.value, "float64"))
    initializer = getattr(layer, "alpha_initializer", None)
    return isinstance(initializer, keras.initializers.Zeros)


def elu_profile(alpha: float = 1.0) -> ActivationProfile:
    """Profile of ELU: outputs in `(-alpha, inf)`, derivative `y + alpha` below 0."""
    alpha = float(alpha)
    flat = keras_profiles.FLAT
    return ActivationProfile(
        name="elu",
        family=_p.RELU_FAMILY,
        output_range=(-alpha, math.inf),
        zero_centred=True,
        inactive_below=0.0,
        inactive_gradient=None,
        saturation_bounds=(flat - alpha, math.inf) if alpha > flat else None,
        saturation_gradient=flat if alpha > flat else None,
        description=f"ELU: smooth negative part saturating at {-alpha}.",
    )


def swish_profile(beta: float | None = 1.0, name: str = "swish") -> ActivationProfile:
    """Profile of swish; `beta=None` means learned (range not known)."""
    low = -math.inf if beta is None else SWISH_MIN / float(beta)
    return ActivationProfile(
        name=name,
        family=_p.SWISH,
        output_range=(low, math.inf),
        zero_centred=False,
        description="Swish: smooth, non-monotonic gate; units do not die.",
    )


def _profiles() -> dict[str, ActivationProfile]:
    inf = math.inf
    return {
        "relu": relu_profile(),
        "leaky_relu": leaky_relu_profile(),
        "prelu": prelu_profile(),
        "elu": elu_profile(),
        "swish": swish_profile(),
        "silu": swish_profile(name="silu"),
        "relu6": relu_profile(max_value=6.0, name="relu6"),
        "sigmoid": ActivationProfile(
            name="sigmoid",
            family=_p.SIGMOID,
            output_range=(0.0, 1.0),
            zero_centred=False,
            produces_probabilities=True,
            saturation_bounds=(0.01, 0.99),
            saturation_gradient=0.04,
            description="Sigmoid: probabilities; gradient vanishes in the tails.",
        ),
        "hard_sigmoid": ActivationProfile(
            name="hard_sigmoid",
            family=_p.SIGMOID,
            output_range=(0.0, 1.0),
            zero_centred=False,
            saturation_bounds=(0.0, 1.0),
            saturation_gradient=0.0,
            description="Hard sigmoid: piecewise linear, zero gradient at 0 and 1.",
        ),
        "tanh": ActivationProfile(
            name="tanh",
            family=_p.TANH,
            output_range=(-1.0, 1.0),
            zero_centred=True,
            saturation_bounds=(-0.99, 0.99),
            saturation_gradient=0.02,
            description="Tanh: zero-centred; gradient vanishes in the tails.",
        ),
        "softmax": ActivationProfile(
            name="softmax",
            family=_p.SOFTMAX,
            output_range=(0.0, 1.0),
            zero_centred=False,
            produces_probabilities=True,
            description="Softmax: a probability distribution along one axis.",
        ),
        "linear": ActivationProfile(
            name="linear",
            family=_p.LINEAR,
            output_range=(-inf, inf),
            zero_centred=True,
            description="Linear: identity, no non-linearity.",
        ),
        "gelu": ActivationProfile(
            name="gelu",
            family=_p.SWISH,
            output_range=(GELU_MIN, inf),
            zero_centred=False,
            description="GELU: smooth gate x * P(X <= x), like swish.",
        ),
        "softplus": ActivationProfile(
            name="softplus",
            family=_p.RELU_FAMILY,
            output_range=(0.0, inf),
            zero_centred=False,
            # softplus'(x) = sigmoid(x) = 1 - exp(-y): 0.01 at y = -log(0.99).
            saturation_bounds=(-keras_profiles.LOG_099, inf),
            saturation_gradient=keras_profiles.FLAT,
            description="Softplus: smooth ReLU; flat for large negative inputs.",
        ),
        "selu": ActivationProfile(
            name="selu",
            family=_p.RELU_FAMILY,
            output_range=(-SELU_SCALE * SELU_ALPHA, inf),
            zero_centred=True,
            inactive_below=0.0,
            saturation_bounds=(keras_profiles.FLAT - SELU_SCALE * SELU_ALPHA, inf),
            saturation_gradient=keras_profiles.FLAT,
            description="SELU: self-normalising scaled ELU.",
        ),
        **keras_profiles.keras_only_profiles(),
    }


BUILTIN_PROFILES: dict[str, ActivationProfile] = _profiles()
# Names that Keras's own activations go by; `keras.activations.get(name)`.
KERAS_NAMES = tuple(sorted(set(BUILTIN_PROFILES) - {"prelu"}))

for _name, _profile in BUILTIN_PROFILES.items():
    registry.set_profile("activation", _name, _profile)

_KERAS_FUNCTIONS: dict[int, str] | None = None


def _keras_function_names() -> dict[int, str]:
    """`{id(keras function): name}`, built once on first use."""
    global _KERAS_FUNCTIONS
    if _KERAS_FUNCTIONS is None:
        _KERAS_FUNCTIONS = {
            id(keras.activations.get(name)): name for name in KERAS_NAMES
        }
        # Keras's aliases share one function; prefer these names.
        for name in ("swish", "hard_silu"):
            _KERAS_FUNCTIONS[id(keras.activations.get(name))] = name
    return _KERAS_FUNCTIONS


# The backends' own activation functions (`tf.nn.relu`, `jax.nn.relu`,
# `keras.ops.relu`), by the module they come from and their name, where it
# differs from the Keras activation of the same function.
_FOREIGN_MODULES = ("tensorflow.", "jax.", "keras.src.ops.")
_FOREIGN_NAMES = {
    "softmax_v2": "softmax",
    "log_softmax_v2": "log_softmax",
    "soft_sign": "softsign",
}
# `jax.nn.leaky_relu`'s default slope (Keras's and TensorFlow's is 0.2).
_JAX_LEAKY_SLOPE = 0.01


def _from_foreign_function(function) -> ActivationProfile | None:
    """The profile of a backend's own activation function passed as a
    layer's activation (`Dense(64, activation=tf.nn.relu)`), found by its
    module and name; None for any other callable."""
    module = getattr(function, "__module__", None) or ""
    if not module.startswith(_FOREIGN_MODULES):
        return None
    name = getattr(function, "__name__", "")
    name = _FOREIGN_NAMES.get(name, name)
    if name == "leaky_relu" and module.startswith("jax."):
        return leaky_relu_profile(_JAX_LEAKY_SLOPE)
    return BUILTIN_PROFILES.get(name)


def _from_name(name: str) -> ActivationProfile | None:
    key = (
        name[len(registry.PACKAGE) + 1 :] if name.startswith("keras_actloss>") else name
    )
    for kind in ("activation", "layer"):
        found = registry.get_profile(kind, key)
        if found is None:
            lowered = {k.lower(): v for k, v in registry.profiles(kind).items()}
            found = lowered.get(key.lower())
        if found is not None:
            return found
    return None


def _from_keras_layer(layer: keras.layers.Layer) -> ActivationProfile | None:
    if isinstance(layer, keras.layers.ReLU):
        return relu_profile(layer.negative_slope, layer.max_value)
    if isinstance(layer, keras.layers.LeakyReLU):
        return leaky_relu_profile(layer.negative_slope)
    if isinstance(layer, keras.layers.PReLU):
        return prelu_profile(prelu_slope_zero(layer))
    if isinstance(layer, keras.layers.ELU):
        return elu_profile(layer.alpha)
    if isinstance(layer, keras.layers.Softmax):
        return BUILTIN_PROFILES["softmax"]
    if isinstance(layer, keras.layers.Lambda):
        # `Lambda(keras.ops.relu)`: its function, when it is an activation
        # (a function of its own, `lambda t: ops.relu(t)`, is not known).
        function = getattr(layer, "function", None)
        return None if function is None else profile(function)
    activation = getattr(layer, "activation", None)
    if activation is None or not (isinstance(activation, str) or callable(activation)):
        return None
    return profile(activation)


def _from_operation(op: keras.Operation) -> ActivationProfile | None:
    """The profile of an operation of a functional model's graph that is an
    activation: `keras.ops.relu(x)` on a symbolic tensor makes a `Relu`,
    `keras.ops.leaky_relu(x, 0.1)` a `LeakyRelu` whose `negative_slope` is
    0.1, `keras.activations.relu(x, max_value=6)` a `ReLU` with the same
    arguments. Its class names the function (`LeakyRelu`: `leaky_relu`);
    the function's arguments that its factory takes are its attributes.
    Any other operation (`Add`, `Matmul`): None."""
    module = type(op).__module__
    if not module.startswith(("keras.src.ops.", "keras.src.activations.")):
        return None
    name = _operation_names().get(type(op).__name__.lower())
    if name is None:
        return None
    factory = _PARAMETRIC.get(name)
    if factory is None:
        return BUILTIN_PROFILES[name]
    names = inspect.signature(factory).parameters
    arguments = {k: getattr(op, k) for k in names if hasattr(op, k)}
    try:
        return factory(**arguments)
    except (TypeError, ValueError):
        return None


@functools.cache
def _operation_names() -> dict[str, str]:
    """Activation names by the lowercase class name of their operation
    (`leaky_relu` by `leakyrelu`)."""
    return {name.replace("_", ""): name for name in BUILTIN_PROFILES}


def _relu_with_arguments(negative_slope=0.0, max_value=None, threshold=0.0):
    # A threshold moves the inactive region's start; a negative one lets
    # negative outputs through.
    return relu_profile(negative_slope, max_value, threshold=threshold)


# Profiles that depend on an activation's arguments, for `functools.partial`.
_PARAMETRIC = {
    "relu": _relu_with_arguments,
    "leaky_relu": leaky_relu_profile,
    "elu": elu_profile,
    "celu": keras_profiles.celu_profile,
    "hard_shrink": functools.partial(keras_profiles.shrink_profile, "hard_shrink"),
    "soft_shrink": functools.partial(keras_profiles.shrink_profile, "soft_shrink"),
    "squareplus": keras_profiles.squareplus_profile,
    "threshold": keras_profiles.threshold_profile,
}


def _from_partial(x: functools.partial) -> ActivationProfile | None:
    """The profile of `partial(activation, **arguments)`, given its arguments."""
    base = profile(x.func)
    if base is None or x.args:
        return None
    factory = _PARAMETRIC.get(base.name)
    if factory is None:
        return base if not x.keywords else None
    try:
        return factory(**x.keywords)
    except TypeError:  # an argument the profile does not know
        return None


def profile(x: Any) -> ActivationProfile | None:
    """Returns the `ActivationProfile` of an activation or activation layer.

    Use it to reason about a model without running it: which outputs can be
    dead, which saturate, which are probabilities. It knows our activations
    and layers and the Keras built-ins of the same name, and is cheap enough
    to call on every layer of a model.

    Examples:

    >>> keras_actloss.activations.profile("sigmoid").saturation_bounds
    (0.01, 0.99)
    >>> keras_actloss.activations.profile(keras.layers.Dense(2, activation="relu")).name
    'relu'
    >>> layer = keras_actloss.layers.LeakyReLU(0.1)
    >>> keras_actloss.activations.profile(layer).inactive_gradient
    0.1
    >>> print(keras_actloss.activations.profile(keras.layers.BatchNormalization()))
    None

    Args:
        x: One of: a name (`"relu"`, `"keras_actloss>swish"`, `"ReLU"`); one
            of our activation functions, a Keras one
            (`keras.activations.relu`) or a backend's own (`keras.ops.relu`,
            `tf.nn.relu`, `jax.nn.relu`); one of our layers (the profile
            reflects its configuration) or a Keras activation layer (`ReLU`,
            `LeakyReLU`, `PReLU`, `ELU`, `Softmax`, `Activation`, a
            `Lambda` whose function is one of those functions); any layer
            with an `activation` attribute (`Dense`, `Conv2D`); a
            `functools.partial` of an activation (the profile reflects its
            arguments, e.g. `partial(keras.activations.threshold,
            threshold=1.0, default_value=0.0)`); or None (no activation,
            i.e. linear).

    Returns:
        The `ActivationProfile`, or None for unknown names, custom callables
        and layers without an activation.

    Raises:
        ValueError: If `x` is none of the above (e.g. an int).
    """
    if x is None:
        return BUILTIN_PROFILES["linear"]
    if isinstance(x, str):
        return _from_name(x)
    if isinstance(x, keras.layers.Layer):
        own = getattr(x, "activation_profile", None)
        if callable(own):
            return own()
        return _from_keras_layer(x)
    if isinstance(x, keras.Operation):
        return _from_operation(x)
    if isinstance(x, functools.partial):
        return _from_partial(x)
    if callable(x):
        ours = registry.name_of("activation", x)
        if ours is not None and not isinstance(x, type):
            return registry.get_profile("activation", ours)
        name = _keras_function_names().get(id(x))
        if name is None:
            return _from_foreign_function(x)
        return BUILTIN_PROFILES[name]
    raise ValueError(
        "Expected an activation name, an activation function or a Keras layer. "
        f"Received: x={x!r} of type {type(x).__name__}"
    )
