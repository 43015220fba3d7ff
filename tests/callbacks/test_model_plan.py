"""What `GradientDiagnostics` reads off a model to judge its layers: the
shape of a layer's sample (`advisor.walk.sample_shape`), the `apply` call
that updates each layer (`_model_plan.apply_groups`), the layers whose
outputs could be the data (`_callback_support.data_saturations`), and the
ReLU layers all of a layer's inputs come through (`LayerInfo.upstream`).

No TensorFlow import: this module also runs in `.ci/run`'s JAX stage.
"""

import inspect
import sys
import warnings

import keras
import numpy as np
import pytest

from keras_actloss.advisor import walk
from keras_actloss.callbacks import _callback_support, _model_plan
from keras_actloss.diagnostics import attention


def generator_model():
    """A generator ending in tanh on 4 features, nested in a model whose
    discriminator follows it: the generator's last layer is hidden."""
    generator = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(8, activation="relu", name="g_hidden"),
            keras.layers.Dense(4, activation="tanh", name="g_out"),
        ],
        name="generator",
    )
    z = keras.Input((3,))
    score = keras.layers.Dense(1, activation="sigmoid", name="d_out")(generator(z))
    return keras.Model(z, score)


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(16)
        self.up = keras.layers.Conv2DTranspose(
            1, 4, strides=2, padding="same", activation="tanh"
        )

    def call(self, z):
        return self.up(keras.ops.reshape(self.dense(z), (-1, 4, 4, 1)))


def test_sample_shape_of_a_functional_layer():
    model = generator_model()
    layer = model.get_layer("generator").get_layer("g_out")
    assert walk.sample_shape(layer) == (4,)
    assert walk.sample_shape(model.get_layer("d_out")) == (1,)


def test_sample_shape_of_a_subclassed_models_layer_once_it_ran():
    model = Subclassed()
    assert walk.sample_shape(model.up) is None  # Never called.
    model(np.zeros((2, 5), "float32"))
    # From the shape it was built with, (2, 4, 4, 1): stride 2 doubles it.
    assert walk.sample_shape(model.up) == (8, 8, 1)
    assert walk.sample_shape(model.dense) == (16,)


def test_sample_shape_of_a_layer_built_on_several_inputs_is_unknown():
    attention = keras.layers.MultiHeadAttention(2, 4)
    x = np.zeros((1, 3, 8), "float32")
    attention(x, x)
    assert walk.sample_shape(attention) is None


def test_apply_groups_name_each_layers_first_call():
    a, b, c, unwatched = (object() for _ in range(4))
    var_layer = {id(a): 0, id(b): 1, id(c): 1}
    # One call: a single group, nothing to tell apart.
    assert _model_plan.apply_groups(var_layer, [[a, b, c]]) == {}
    # Layer 1's variables in both calls: the first call that updates it.
    calls = [[unwatched, b], [a, c]]
    assert _model_plan.apply_groups(var_layer, calls) == {0: 1, 1: 0}


def test_data_saturations_of_the_layers_that_could_make_the_data(rng):
    plans = _model_plan.plan_layers(generator_model())
    signs = np.sign(rng.normal(size=(8, 4)))
    signs[0, :2] = 0.5  # 2 of 32 elements inside tanh's range, not its tails
    # `g_out` (tanh, 4 features) could make data of 4 features in [-1, 1];
    # `d_out` (sigmoid, 1 feature) labels in [0, 1]; `g_hidden` (ReLU) does
    # not saturate.
    labels = np.array([[0.0], [1.0], [0.5], [1.0]])
    found = _callback_support.data_saturations(plans, [signs, labels])
    assert found == {"generator/g_out": 30 / 32, "d_out": 3 / 4}
    # Data out of tanh's range, of another shape, or not kept: none.
    assert _callback_support.data_saturations(plans, [3 * signs, None]) == {}
    assert _callback_support.data_saturations(plans, [signs[:, :3], None]) == {}
    assert _callback_support.data_saturations(plans, [None, None]) == {}


def _upstream(model) -> dict:
    return {p.info.name: p.info.upstream for p in _model_plan.plan_layers(model)}


def test_upstream_through_layers_that_cannot_die():
    # dense_b takes dense_a's ReLU outputs through Dropout; batch_norm and
    # the ReLU layer after it take them through dense_b (linear); out
    # takes the ReLU layer's. dense_a takes the inputs.
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((6,)),
            layers.Dense(8, activation="relu", name="dense_a"),
            layers.Dropout(0.1),
            layers.Dense(8, name="dense_b"),
            layers.BatchNormalization(name="batch_norm"),
            layers.ReLU(name="relu"),
            layers.Dense(2, name="out"),
        ]
    )
    assert _upstream(model) == {
        "dense_a": (),
        "dense_b": ("dense_a",),
        "batch_norm": ("dense_a",),
        "relu": ("dense_a",),
        "out": ("relu",),
    }


def test_upstream_of_branches_skips_and_shared_layers():
    # d joins the branches a and b (each behind its own input); e takes d
    # and, by a skip connection, input x: the data reach it past d. The
    # shared layer s is called on a and on b: both are its upstream (and
    # a Keras operation, `+`, takes its outputs to f).
    layers = keras.layers
    x, y = keras.Input((4,)), keras.Input((4,))
    a = layers.Dense(4, activation="relu", name="a")(x)
    b = layers.Dense(4, activation="relu", name="b")(y)
    d = layers.Dense(4, activation="relu", name="d")(layers.Concatenate()([a, b]))
    e = layers.Dense(4, activation="relu", name="e")(layers.Concatenate()([d, x]))
    shared = layers.Dense(4, name="s")
    joined = shared(a) + shared(b)  # An operation, not a layer.
    f = layers.Dense(1, name="f")(joined)
    model = keras.Model([x, y], [layers.Dense(1, name="out")(e), f])
    assert _upstream(model) == {
        "a": (),
        "b": (),
        "d": ("a", "b"),
        "e": (),
        "s": ("a", "b"),
        "f": ("a", "b"),
        "out": ("e",),
    }


def test_bypassed_layers_have_a_path_around_them():
    # t (tanh) is a residual branch: h reaches the sum around it; u (tanh)
    # is the only way from its input to the output; p (sigmoid) is one of
    # two parallel branches of the input; r (ReLU) does not saturate; the
    # nested model's tanh layer is not judged (its own graph).
    layers = keras.layers
    x = keras.Input((4,))
    h = layers.Dense(4, name="h")(x)
    t = layers.Dense(4, name="t2")(layers.Dense(8, activation="tanh", name="t")(h))
    u = layers.Dense(4, activation="tanh", name="u")(layers.Add()([h, t]))
    p = layers.Dense(2, activation="sigmoid", name="p")(u)
    r = layers.Dense(2, activation="relu", name="r")(u)
    inner = keras.Sequential(
        [keras.Input((4,)), layers.Dense(4, activation="tanh", name="n")],
        name="inner",
    )
    joined = layers.Concatenate()([p, r, inner(u)])
    model = keras.Model(x, layers.Dense(1, name="out")(joined))
    plans = _model_plan.plan_layers(model)
    bypassed = {plan.info.name for plan in plans if plan.info.bypassed}
    assert bypassed == {"t", "p"}


def test_gates_multiply_the_path_they_are_computed_from():
    # A squeeze-and-excitation block: `sq` and `ex` reach the output only
    # through `se`, multiplying `conv`'s outputs, which they are computed
    # from. A gated linear unit `a * sigmoid(b)`: neither operand is
    # computed from the other (both from `x`), so neither is a gate. `g2`
    # gates `a2`'s path but also reaches the output around it.
    layers = keras.layers
    x = keras.Input((8, 8, 3))
    conv = layers.Conv2D(8, 3, activation="relu", name="conv")(x)
    squeezed = layers.GlobalAveragePooling2D()(conv)
    sq = layers.Dense(2, activation="relu", name="sq")(squeezed)
    ex = layers.Reshape((1, 1, 8))(layers.Dense(8, activation="sigmoid", name="ex")(sq))
    h = layers.GlobalAveragePooling2D()(layers.Multiply(name="se")([conv, ex]))
    a = layers.Dense(8, name="a")(h)
    b = layers.Dense(8, activation="sigmoid", name="b")(h)
    glu = layers.Multiply(name="glu")([a, b])
    g2 = layers.Dense(8, activation="sigmoid", name="g2")(glu)
    joined = layers.Concatenate()([layers.Multiply()([glu, g2]), g2])
    model = keras.Model(x, layers.Dense(1, name="out")(joined))
    gates = {p.info.name: p.info.gate for p in _model_plan.plan_layers(model)}
    assert gates == {
        "conv": None,
        "sq": "se",
        "ex": "se",
        "a": None,
        "b": None,
        "g2": None,
        "out": None,
    }


def test_upstream_into_a_nested_model():
    # The generator (a nested Sequential) is followed: g_out takes
    # g_hidden's ReLU outputs, and d_out the generator's, which come
    # through g_hidden too.
    assert _upstream(generator_model()) == {
        "generator/g_hidden": (),
        "generator/g_out": ("generator/g_hidden",),
        "d_out": ("generator/g_hidden",),
    }


def test_upstream_of_a_nested_model_called_twice_and_of_its_inputs():
    # The encoder (two inputs, its own ReLU layer r behind the first) is
    # called on (a, b) and on (b, x): each of its inputs comes through
    # what its call gives it. p, behind the first input only, takes a at
    # the first call and b at the second: both; q, behind the second,
    # takes b and then the data (x): none. r's outputs go out of the
    # encoder: head takes them at both calls.
    layers = keras.layers
    u, v = keras.Input((4,)), keras.Input((4,))
    joined = layers.Concatenate()(
        [layers.Dense(4, name="p")(u), layers.Dense(4, name="q")(v)]
    )
    encoder = keras.Model([u, v], layers.Dense(4, activation="relu", name="r")(joined))
    x = keras.Input((4,))
    a = layers.Dense(4, activation="relu", name="a")(x)
    b = layers.Dense(4, activation="relu", name="b")(x)
    joined = layers.Concatenate()([encoder([a, b]), encoder([b, x])])
    model = keras.Model(x, layers.Dense(1, name="head")(joined))
    name = encoder.name
    assert _upstream(model) == {
        "a": (),
        "b": (),
        f"{name}/p": ("a", "b"),
        f"{name}/q": (),
        f"{name}/r": (),
        "head": (f"{name}/r",),
    }


def test_upstream_through_time_distributed_and_bidirectional_layers():
    # The wrapped Dense layer takes the data; each direction's ReLU
    # SimpleRNN (its cell, whose outputs are the RNN's sequence) takes its
    # outputs, and out both directions' (concatenated). A tanh direction
    # passes what it takes on: out comes through the wrapped layer and the
    # ReLU direction.
    layers = keras.layers

    def model(backward_activation):
        x = keras.Input((5, 3))
        h = layers.TimeDistributed(
            layers.Dense(4, activation="relu", name="td"), name="wrap"
        )(x)
        h = layers.Bidirectional(
            layers.SimpleRNN(4, "relu", return_sequences=True, name="rnn"),
            backward_layer=layers.SimpleRNN(
                4,
                backward_activation,
                return_sequences=True,
                go_backwards=True,
                name="back",
            ),
            name="bi",
        )(h)
        return keras.Model(x, layers.Dense(1, name="out")(h))

    cell = "simple_rnn_cell"
    assert _upstream(model("relu")) == {
        "wrap/td": (),
        f"bi/forward_rnn/{cell}": ("wrap/td",),
        f"bi/back/{cell}": ("wrap/td",),
        "out": (f"bi/back/{cell}", f"bi/forward_rnn/{cell}"),
    }
    found = _upstream(model("tanh"))
    assert found["out"] == (f"bi/forward_rnn/{cell}", "wrap/td")


def test_upstream_past_a_composite_layer_and_without_a_graph():
    # A layer of sublayers (not a functional model) is not followed inside:
    # its ReLU layer has none, and out comes through what the block takes
    # (a), not the nearest. A subclassed model has no graph.
    class Block(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.inner = keras.layers.Dense(4, activation="relu", name="inner")

        def call(self, x):
            return self.inner(x)

    x = keras.Input((4,))
    h = keras.layers.Dense(4, activation="relu", name="a")(x)
    h = Block(name="block")(h)
    model = keras.Model(x, keras.layers.Dense(1, name="out")(h))
    assert _upstream(model) == {"a": (), "block/inner": (), "out": ("a",)}
    model = Subclassed()
    model(np.zeros((1, 3), "float32"))
    assert set(_upstream(model).values()) == {()}


def test_upstream_through_a_long_chain_of_operations():
    # 900 operations between the ReLU layer and the output layer, walked
    # with 200 frames to spare (the callback plans a model deep inside
    # `fit`): the walk does not take a frame per node.
    x = keras.Input((4,))
    h = keras.layers.Dense(4, activation="relu", name="relu")(x)
    for _ in range(900):
        h = h * 1.0
    model = keras.Model(x, keras.layers.Dense(1, name="out")(h))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack(0)) + 200)
    try:
        upstream = _upstream(model)
    finally:
        sys.setrecursionlimit(limit)
    assert upstream == {"relu": (), "out": ("relu",)}


def test_batch_normalized_inputs_of_single_values():
    # Dense -> BatchNormalization -> (Dropout) -> ReLU: the ReLU layer's
    # inputs are the normalization's, of features (two axes): on batches
    # of 1 it normalizes single values. A convolution's normalization
    # (four axes) normalizes over the image too; a layer joined with
    # another input is not fed by it alone.
    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, name="d1")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Activation("relu", name="a1")(keras.layers.Dropout(0.1)(h))
    joined = keras.layers.Concatenate()([h, inputs])
    out = keras.layers.Dense(2, name="out")(joined)
    image = keras.Input((5, 5, 2))
    c = keras.layers.BatchNormalization(name="cbn")(keras.layers.Conv2D(4, 3)(image))
    c = keras.layers.Activation("relu", name="ca")(c)
    model = keras.Model([inputs, image], [out, c])
    found = {
        p.info.name: p.info.batch_normalized for p in _model_plan.plan_layers(model)
    }
    assert found["a1"] == "bn"
    assert {k for k, v in found.items() if v} == {"a1"}


def test_averaged_inputs_come_from_a_global_average_pooling():
    # The text-classification tutorial's shape: the Dense layer after the
    # pooling (through a Dropout) is fed averaged features; the embedding
    # and the output layer (after the ReLU layer) are not.
    tutorial = keras.Sequential(
        [
            keras.Input((20,), dtype="int32"),
            keras.layers.Embedding(100, 8, name="emb"),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(16, activation="relu", name="fc"),
            keras.layers.Dense(1, activation="sigmoid", name="out"),
        ]
    )
    averaged = {p.info.name: p.info.averaged for p in _model_plan.plan_layers(tutorial)}
    assert averaged == {"emb": False, "fc": True, "out": False}
    # An input joined with a max pooling's is not averaged only; nor is a
    # global max pooling's, nor a normalized pooling's.
    inputs = keras.Input((6, 6, 3))
    conv = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    mean = keras.layers.GlobalAveragePooling2D()(conv)
    peak = keras.layers.GlobalMaxPooling2D()(conv)
    branches = [
        keras.layers.Dense(4, activation="relu", name="a")(mean),
        keras.layers.Dense(4, activation="relu", name="b")(
            keras.layers.Concatenate()([mean, peak])
        ),
        keras.layers.Dense(4, activation="relu", name="c")(peak),
        keras.layers.Dense(4, activation="relu", name="d")(
            keras.layers.LayerNormalization()(mean)
        ),
    ]
    model = keras.Model(inputs, keras.layers.Concatenate()(branches))
    averaged = {p.info.name: p.info.averaged for p in _model_plan.plan_layers(model)}
    assert {k: v for k, v in averaged.items() if k in "abcd"} == {
        "a": True,
        "b": False,
        "c": False,
        "d": False,
    }


def test_activation_operations_of_a_functional_graph_are_planned():
    # `keras.ops.relu(x)` and `keras.activations.*(x)` on a functional
    # model's tensors are operations of its graph, not layers: each is
    # planned after the layer before it with its activation's profile (its
    # arguments included), and the layers after it take their inputs
    # through it when its units can die; other operations (the addition)
    # are not planned.
    x = keras.Input((6,))
    a = keras.layers.Dense(8, name="a")(x)
    r = keras.ops.relu(a)
    b = keras.layers.Dense(8, name="b")(r)
    s = keras.ops.sigmoid(b) + keras.activations.relu(b, max_value=6.0)
    leaky = keras.ops.leaky_relu(s, negative_slope=0.1)
    model = keras.Model(x, keras.layers.Dense(1, name="out")(leaky))
    ops_of = {type(op).__name__: op.name for op in model.operations}
    plans = _model_plan.plan_layers(model)
    relu, sigmoid, capped, leaky_name = (
        ops_of[k] for k in ("Relu", "Sigmoid", "ReLU", "LeakyRelu")
    )
    names = [p.info.name for p in plans]
    assert names[:3] == ["a", relu, "b"]
    assert set(names[3:5]) == {sigmoid, capped}
    assert names[5:] == [leaky_name, "out"]
    by_name = {p.info.name: p for p in plans}
    assert [by_name[n].info.activation for n in names] == [
        None,
        "relu",
        None,
        *(by_name[n].info.activation for n in names[3:5]),
        "leaky_relu",
        None,
    ]
    assert by_name[sigmoid].profile.saturation_bounds == (0.01, 0.99)
    # relu(max_value=6) saturates at 6; leaky_relu passes 0.1 of the gradient.
    assert by_name[capped].profile.saturation_bounds[1] == 6.0
    assert by_name[leaky_name].profile.inactive_gradient == 0.1
    assert not by_name[relu].variables and by_name[relu].hooked is model.operations[2]
    assert _upstream(model) == {
        "a": (),
        relu: (),
        "b": (relu,),
        sigmoid: (relu,),
        capped: (relu,),
        # Leaky ReLU units cannot die: the sum comes through both ReLUs.
        leaky_name: tuple(sorted((relu, capped))),
        "out": tuple(sorted((relu, capped))),
    }


def test_an_activation_operation_on_the_inputs_is_not_planned():
    # `keras.ops.relu(inputs)`: no weights before it, so inputs that are
    # never positive leave units at 0 that no training made (probed: 10
    # negative columns were a dead_relu failure). One after a Dense is.
    x = keras.Input((6,))
    on_inputs = keras.ops.relu(x)
    after = keras.ops.relu(keras.layers.Dense(6, name="d")(x))
    model = keras.Model(x, keras.layers.Dense(1, name="out")(on_inputs + after))
    planned = [p.info.name for p in _model_plan.plan_layers(model)]
    assert planned == ["d", after._keras_history.operation.name, "out"]
    assert on_inputs._keras_history.operation.name not in planned
    assert _model_plan.missing_internals() == []
    # A nested model's inputs may come from layers before it: its ReLU on
    # them is planned.
    y = keras.Input((6,))
    nested = keras.Model(y, keras.ops.relu(y), name="nested")
    outer_in = keras.Input((6,))
    outer = keras.Model(
        outer_in, nested(keras.layers.Dense(6, name="before")(outer_in))
    )
    names = [p.info.name for p in _model_plan.plan_layers(outer)]
    assert names == ["before", f"nested/{nested.operations[-1].name}"]


def test_activation_operations_of_a_frozen_model_are_not_planned():
    # A frozen nested model's ReLU operation is a fixed feature, as its
    # layers' activations are; the trainable model's own one is planned.
    x = keras.Input((6,))
    inner = keras.Model(x, keras.ops.relu(keras.layers.Dense(8, name="d")(x)))
    inner.trainable = False
    y = keras.Input((6,))
    model = keras.Model(y, keras.ops.relu(inner(y)))
    planned = {p.info.name: p.profile for p in _model_plan.plan_layers(model)}
    (outer_relu,) = planned
    assert outer_relu == model.operations[-1].name
    assert planned[outer_relu].name == "relu"
    # Unfrozen, the inner model's Dense and ReLU are planned too.
    inner.trainable = True
    planned = [p.info.name for p in _model_plan.plan_layers(model)]
    inner_relu = f"{inner.name}/{inner.operations[-1].name}"
    assert planned == [f"{inner.name}/d", inner_relu, outer_relu]


class _Block(keras.layers.Layer):
    """A layer of the user's own around a Dense."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(4, name="inner")

    def call(self, x):
        return keras.ops.relu(self.dense(x))


def test_layers_inside_a_layer_of_the_users_own_are_marked():
    # What a user's layer (or subclassed model) computes around its
    # sublayers is not watched (`LayerInfo.inside`); a functional model's
    # layers, a nested Sequential's and a Keras layer's sublayers (the
    # attention's projections) are watched.
    x = keras.Input((3, 4))
    h = _Block(name="block")(x)
    h = keras.layers.MultiHeadAttention(1, 2, name="mha")(h, h)
    inner = keras.Sequential([keras.layers.Dense(2, name="seq_dense")], name="seq")
    model = keras.Model(x, inner(h))
    inside = {p.info.name: p.info.inside for p in _model_plan.plan_layers(model)}
    assert inside["block/inner"] == "block"
    assert inside["seq/seq_dense"] is None
    assert {k: v for k, v in inside.items() if k.startswith("mha/")} == {
        k: None for k in inside if k.startswith("mha/")
    }
    assert len([k for k in inside if k.startswith("mha/")]) == 4

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__(name="sub")
            self.first = keras.layers.Dense(4, name="first")
            self.out = keras.layers.Dense(1, name="out")

        def call(self, x):
            return self.out(keras.ops.relu(self.first(x)))

    sub = Subclassed()
    sub(np.zeros((2, 3), "float32"))
    planned = {p.info.name: p.info.inside for p in _model_plan.plan_layers(sub)}
    assert planned == {"first": "sub", "out": "sub"}


def test_linear_layers_inside_a_layer_of_the_users_own_are_judged_by_sign():
    # A linear layer with one weight per unit (a bias, a normalization's
    # scale) inside a layer of the user's own gets its outputs counted by
    # sign with that weight's gradient (`units_by_sign`, `BY_SIGN`): a ReLU
    # the user's `call` applies to it is not watched. Not: a layer with an
    # activation of its own (watched), one without such a weight (no bias,
    # an Embedding), the model's last layer with weights (its output), a
    # layer of a functional or nested Keras model.

    class Towers(keras.Model):
        def __init__(self):
            super().__init__(name="towers")
            self.embed = keras.layers.Embedding(10, 4, name="embed")
            self.conv = keras.layers.Conv1D(
                3, 2, data_format="channels_first", name="conv"
            )
            self.norm = keras.layers.BatchNormalization(axis=1, name="norm")
            self.relu = keras.layers.Dense(4, activation="relu", name="relu")
            self.plain = keras.layers.Dense(4, use_bias=False, name="plain")
            self.block = _Block(name="block")
            self.out = keras.layers.Dense(1, name="out")

        def call(self, ids):
            h = keras.ops.relu(self.norm(self.conv(self.embed(ids))))
            h = self.plain(self.relu(keras.ops.mean(h, axis=1)))
            return self.out(self.block(keras.ops.relu(h)))

    model = Towers()
    model(np.zeros((2, 5), "int32"))
    plans = _model_plan.plan_layers(model)
    judged = {p.info.name: p.info.units_by_sign for p in plans}
    assert judged == {
        "embed": False,
        "conv": True,
        "norm": True,
        "relu": False,
        "plain": False,
        "block/inner": True,
        "out": False,
    }
    by_name = {p.info.name: p for p in plans}
    for name, weight, axis in (
        ("conv", "bias", 1),
        ("norm", "gamma", 1),
        ("block/inner", "bias", -1),
    ):
        plan = by_name[name]
        assert plan.profile is _model_plan.BY_SIGN and plan.info.activation is None
        assert plan.unit_variable.path.endswith(weight)
        assert plan.channel_axis == axis
    assert by_name["relu"].info.activation == "relu"
    assert by_name["out"].profile is None and by_name["out"].unit_variable is None
    # In a functional model, a layer of the user's own is the only place.
    x = keras.Input((4,))
    h = keras.layers.Dense(4, name="first")(x)
    head = keras.layers.Dense(1, name="head")
    functional = keras.Model(x, head(_Block(name="block")(h)))
    judged = {
        p.info.name: p.info.units_by_sign for p in _model_plan.plan_layers(functional)
    }
    assert judged == {"first": False, "block/inner": True, "head": False}


def test_residual_sums_count_the_joins_of_a_model_without_normalization():
    # `keras.layers.Add` and `x + y` on a functional model's tensors join
    # branches; `x + 1.0` adds a constant to one tensor (not counted).
    def block(x, i):
        h = keras.layers.Dense(4, activation="relu", name=f"a{i}")(x)
        return keras.layers.Dense(4, name=f"b{i}")(h)

    x = keras.Input((4,))
    h = keras.layers.Add()([x, block(x, 0)])
    h = h + block(h, 1)
    h = h + 1.0
    inner = keras.Model(x, h, name="inner")
    z = keras.Input((4,))
    k = inner(z)
    k = keras.layers.Add()([k, block(k, 2), block(k, 3)])
    model = keras.Model(z, keras.layers.Dense(1)(k))
    # 2 joins in the nested model, 1 of three tensors in the outer one.
    assert _model_plan.residual_sums(inner) == 2
    assert _model_plan.residual_sums(model) == 3
    # A normalization layer anywhere in it: none counted.
    normed = keras.Model(z, keras.layers.LayerNormalization()(inner(z)))
    assert _model_plan.residual_sums(normed) == 0
    # No layer graph (a subclassed model) or no join (a Sequential).
    assert _model_plan.residual_sums(Subclassed()) == 0
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert _model_plan.residual_sums(plain) == 0


def test_rate_variables_are_the_rates_a_callback_can_set():
    # A rate given as a number is a variable (a LossScaleOptimizer's is its
    # inner optimizer's); a schedule's rate is computed from the step in
    # the train function: none. The host reads the largest.
    sgd = keras.optimizers.SGD(0.05)
    adam = keras.optimizers.Adam(2e-3)
    scaled = keras.optimizers.LossScaleOptimizer(adam)
    decay = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    scheduled = keras.optimizers.SGD(decay)
    found = _model_plan.rate_variables([sgd, scaled, scheduled])
    assert [id(v) for v in found] == [id(sgd.learning_rate), id(adam.learning_rate)]
    with warnings.catch_warnings():
        # Read once per execution inside `fit`: no warning of its own (NumPy
        # 2 warned that TensorFlow's variable takes no `copy`, which
        # `ops.convert_to_numpy` passes; pytest's settings ignore it).
        warnings.simplefilter("error")
        assert _model_plan.host_rate(found) == pytest.approx(0.05)
    adam.learning_rate.assign(1.0)
    assert _model_plan.host_rate(found) == pytest.approx(1.0)
    assert _model_plan.rate_variables([scheduled]) == []
    assert _model_plan.host_rate([]) is None


class _OwnAttention(keras.layers.MultiHeadAttention):
    """Attention of the user's own (`_compute_attention` overridden, as
    Keras's docstring invites): not what `attention_peaks` computes."""

    def _compute_attention(self, query, key, value, attention_mask=None, *args):
        return super()._compute_attention(query, key, value, attention_mask, *args)


def test_keras_attention_weights_are_planned_after_its_projections():
    # A `MultiHeadAttention`'s weights get an entry of their own, named as
    # the layer, after its projections (`AttentionPlan`: `_compute_attention`
    # watched, no weights, no activation name); not a frozen one's, nor a
    # subclass's that computes attention its own way.
    x = keras.Input((5, 4))
    h = keras.layers.MultiHeadAttention(2, 3, name="mha")(x, x)
    frozen = keras.layers.MultiHeadAttention(2, 3, name="frozen")
    frozen.trainable = False
    h = frozen(h, h)
    h = _OwnAttention(2, 3, name="own")(h, h)
    model = keras.Model(x, keras.layers.Dense(1, name="out")(h))
    plans = _model_plan.plan_layers(model)
    names = [p.info.name for p in plans]
    mha = [n for n in names if n.startswith("mha")]
    projections = ("query", "key", "value", "attention_output")
    assert mha == [f"mha/{d}" for d in projections] + ["mha"]
    (entry,) = [p for p in plans if p.info.attention]
    assert isinstance(entry, _model_plan.AttentionPlan)
    assert entry.info.name == "mha" and entry.method == "_compute_attention"
    assert entry.profile is attention.PEAKS and entry.variables == []
    assert entry.info.activation is None and not entry.info.has_trainable_weights
    assert entry.info.class_name == "MultiHeadAttention"
    # Its distance is its projections' (they share one).
    query = next(p for p in plans if p.info.name == "mha/query")
    assert entry.info.distance == query.info.distance
    assert "frozen" not in names and "own" not in names
    # A GroupQueryAttention's too (its keys repeated to the query heads
    # before `_compute_attention`).
    grouped = keras.layers.GroupQueryAttention(3, 4, 2, name="gqa")
    model = keras.Model(x, keras.layers.Dense(1, name="out")(grouped(x, x)))
    plans = _model_plan.plan_layers(model)
    assert [p.info.name for p in plans if p.info.attention] == ["gqa"]


def test_missing_internals_notices_a_changed_attention(monkeypatch):
    # `AttentionPlan` reads `_compute_attention`'s first arguments: a Keras
    # whose attention takes others fails the internals check, loudly.
    def changed(self, qkv, mask=None):
        return qkv

    monkeypatch.setattr(keras.layers.MultiHeadAttention, "_compute_attention", changed)
    assert _model_plan.missing_internals() == ["MultiHeadAttention._compute_attention"]


def test_activity_regularizers_of_the_monitored_layers():
    # Keras turns "l2" into `L2(l2=0.01)`; a nested layer is named with its
    # model's name, as the rules name it.
    inner = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(3, name="inner", activity_regularizer="l2"),
        ],
        name="block",
    )
    inputs = keras.Input((4,))
    code = keras.layers.Dense(
        4,
        activation="relu",
        activity_regularizer=keras.regularizers.L1(0.03),
        name="code",
    )(inputs)
    outputs = keras.layers.Dense(2, name="out")(inner(code))
    model = keras.Model(inputs, outputs)
    found = _callback_support.activity_regularizers(_model_plan.plan_layers(model))
    assert found == {"code": "L1(l1=0.03)", "block/inner": "L2(l2=0.01)"}


def _compiled(outputs_of, loss):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, outputs_of(inputs))
    model.compile("sgd", loss)
    return model


def _distance(inputs):
    code = keras.layers.Dense(3, activation="relu")(inputs)
    return keras.layers.Lambda(lambda c: keras.ops.sum(c * c, axis=-1))(code)


def _contrastive(y_true, y_pred):
    return keras.ops.mean(keras.ops.square(y_true - y_pred))


@pytest.mark.parametrize(
    "outputs_of, loss, expected",
    [
        # Softmax heads averaged: no softmax output layer, but softmax layers.
        (
            lambda x: keras.layers.Average()(
                [keras.layers.Dense(3, activation="softmax")(x) for _ in range(2)]
            ),
            "sparse_categorical_crossentropy",
            True,
        ),
        # An Activation layer (no weights, not monitored) as the output.
        (
            lambda x: keras.layers.Activation("sigmoid")(keras.layers.Dense(1)(x)),
            _contrastive,
            True,
        ),
        # A linear output under a loss that takes probabilities (clipped).
        (lambda x: keras.layers.Dense(1)(x), "binary_crossentropy", True),
        # A siamese-like distance under a custom loss; a regressor.
        (_distance, _contrastive, False),
        (lambda x: keras.layers.Dense(1)(x), "mse", False),
        (
            lambda x: keras.layers.Dense(1)(x),
            keras.losses.BinaryCrossentropy(from_logits=True),
            False,
        ),
    ],
    ids=["averaged", "activation_layer", "clipped", "distance", "mse", "logits"],
)
def test_probability_output(outputs_of, loss, expected):
    model = _compiled(outputs_of, loss)
    plans = _model_plan.plan_layers(model)
    assert _callback_support.probability_output(model, plans) is expected
