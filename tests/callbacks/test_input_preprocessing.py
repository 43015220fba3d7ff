"""The inputs as the first layers with weights see them: through a model's
leading `Rescaling` and `Normalization` layers (`_callback_support`), and
the warning for inputs that reach them far under unit scale (a scaling
done twice). Runs on TensorFlow and, in `.ci/run`'s JAX stage, on JAX."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_actloss import findings as F
from keras_actloss.callbacks import GradientDiagnostics, GradientHealthWarning
from keras_actloss.callbacks._callback_support import (
    input_preprocessing,
    input_scale,
    preprocessed,
    preprocessing_note,
)


def _images(n=96, seed=0):
    """Images already in [0, 1] (16x16x3) and 3 classes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.random((n, 16, 16, 3)).astype("float32")
    return x, y


def test_the_leading_rescaling_and_normalization_layers():
    # x * 0.5 + 1, then (x - [1, 2]) / sqrt([4, 9]): for x = [2, 6],
    # [2, 4] then [(2 - 1) / 2, (4 - 2) / 3] = [0.5, 0.6667].
    inputs = keras.Input((2,))
    scaled = keras.layers.Rescaling(0.5, offset=1.0, name="scale")(inputs)
    norm = keras.layers.Normalization(mean=[1.0, 2.0], variance=[4.0, 9.0])
    x = keras.layers.Dense(3)(norm(scaled))
    model = keras.Model(inputs, keras.layers.Rescaling(2.0)(x))
    layers = input_preprocessing(model)
    assert [layer.name for layer in layers] == ["scale", norm.name]
    out = preprocessed(layers, np.array([[2.0, 6.0]], "float32"))
    np.testing.assert_allclose(out, [[0.5, 2 / 3]], rtol=1e-6)
    assert preprocessing_note(layers) == f"'scale' (x 0.5), then '{norm.name}'"


def test_not_after_a_layer_with_weights_nor_with_two_inputs():
    # A Rescaling after the first Dense is not the data's preprocessing;
    # nor is anything of a model with two inputs.
    inputs = keras.Input((2,))
    x = keras.layers.Rescaling(0.5)(keras.layers.Dense(2)(inputs))
    assert input_preprocessing(keras.Model(inputs, x)) == []
    a, b = keras.Input((2,)), keras.Input((2,))
    x = keras.layers.Concatenate()([keras.layers.Rescaling(0.5)(a), b])
    assert input_preprocessing(keras.Model([a, b], x)) == []
    assert preprocessing_note([]) is None
    ids = np.array([[1, 2]], "int32")  # Not floats: as they are.
    assert preprocessed([keras.layers.Rescaling(0.5)], ids) is ids
    # A Normalization never built has no statistics: no scale to take.
    x = np.ones((1, 2), "float32")
    assert preprocessed([keras.layers.Normalization()], x) is None


def _model(rescale):
    layers = [keras.Input((16, 16, 3))]
    if rescale:
        layers.append(keras.layers.Rescaling(1 / 255.0, name="rescaling"))
    layers += [
        keras.layers.Conv2D(8, 3, activation="relu", padding="same"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3, activation="softmax"),
    ]
    model = keras.Sequential(layers)
    model.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
    return model


@pytest.mark.parametrize("rescale", [True, False], ids=["twice", "once"])
def test_images_rescaled_twice_are_told_at_the_first_step(rescale):
    # Images in [0, 1] through Rescaling(1 / 255): a feature's largest
    # mean or spread is that of the data over 255, under 0.02; without it,
    # about 0.5: nothing told.
    x, y = _images()
    keras.utils.set_random_seed(0)
    diag = GradientDiagnostics(check_model=False)
    model = _model(rescale)
    if rescale:
        with pytest.warns(GradientHealthWarning, match="unstandardized_inputs"):
            model.fit(x, y, batch_size=32, shuffle=False, verbose=0, callbacks=[diag])
    else:
        model.fit(x, y, batch_size=32, shuffle=False, verbose=0, callbacks=[diag])
    found = [f for f in diag.findings if f.mode == F.UNSTANDARDIZED_INPUTS]
    if not rescale:
        assert found == []
        return
    (finding,) = found
    # The first recorded batch: the first 32 images, through the layer.
    expected = input_scale(x[:32].astype("float64") / 255.0)
    assert expected < 0.02
    assert (finding.step, finding.severity) == (0, F.WARNING)
    assert finding.value == pytest.approx(expected, rel=1e-5)
    assert finding.message.startswith(
        "The inputs reach the first layers through 'rescaling' (x 0.00392) at "
        f"a scale of {expected:.3g}"
    )
    assert finding.fix.startswith(
        "Check that the data is not scaled twice ('rescaling' (x 0.00392) "
        "after a scaling already done on the data); standardize the inputs"
    )


@pytest.mark.parametrize("dtype", ["int32", "float32"])
def test_token_ids_have_no_input_scale(dtype):
    # Ids up to 20 into an Embedding are no features: no input scale (it
    # was 10, "not standardized"); the same numbers as float features are.
    rng = np.random.default_rng(0)
    x = rng.integers(0, 20, (64, 6))
    y = rng.integers(0, 2, 64)
    inputs = keras.Input((6,), dtype=dtype)
    if dtype == "int32":
        h = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(20, 4)(inputs))
    else:
        h = keras.layers.Dense(4)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(h))
    model.compile("sgd", "sparse_categorical_crossentropy")
    diag = GradientDiagnostics(check_model=False, every_n_steps=1)
    model.fit(
        x.astype(dtype), y, batch_size=32, shuffle=False, verbose=0, callbacks=[diag]
    )
    scales = [s.input_scale for s in diag.history]
    if dtype == "int32":
        assert scales == [None, None]
    else:
        expected = input_scale(x[:32].astype("float64"))
        assert expected > 9 and scales[0] == pytest.approx(expected, rel=1e-6)


def test_each_input_of_several_with_its_preprocessing_and_first_layers():
    # Input a straight into 'ta'; input b through a Normalization into
    # 'tb'; input c, ids, into an Embedding; the shared tower reached by
    # both a and b after their own first layers is no first layer, but it
    # is computed from a, b and c (`upstream`).
    from keras_actloss.callbacks import _model_plan
    from keras_actloss.callbacks._callback_support import input_scales

    L = keras.layers
    a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
    c = keras.Input((2,), name="c", dtype="int32")
    norm = L.Normalization(mean=[10.0] * 3, variance=[4.0] * 3, name="norm")
    ta, tb = L.Dense(4, name="ta")(a), L.Dense(4, name="tb")(norm(b))
    tc = L.Flatten()(L.Embedding(5, 2, name="emb")(c))
    out = L.Dense(1, name="out")(L.Concatenate()([ta, tb, tc]))
    model = keras.Model([a, b, c], out)
    plans = _model_plan.plan_layers(model)
    reach = _model_plan.input_reach(model, plans)
    assert reach == [frozenset({"ta"}), frozenset({"tb"}), frozenset({"emb"})]
    upstream = _model_plan.input_reach(model, plans, first=False)
    assert upstream == [
        frozenset({"ta", "out"}),
        frozenset({"tb", "out"}),
        frozenset({"emb", "out"}),
    ]
    chains = _model_plan.input_chains(model)
    assert [[layer.name for layer in chain] for chain in chains] == [[], ["norm"], []]
    # Hand calculation: a = [[0, 4, 0], [2, 0, 0]]: means [1, 2, 0], spreads
    # [1, 2, 0] -> 2. b = 10 + 2 * [[1, -1, 0], [-1, 1, 0]] through the
    # Normalization: [[1, -1, 0], [-1, 1, 0]], means 0, spreads [1, 1, 0]
    # -> 1. c: ids, no scale.
    xa = np.array([[0.0, 4.0, 0.0], [2.0, 0.0, 0.0]], "float32")
    xb = np.array([[12.0, 8.0, 10.0], [8.0, 12.0, 10.0]], "float32")
    xc = np.array([[1, 2], [3, 4]], "float32")
    scale, by_layer, after = input_scales(model, [xa, xb, xc], chains, reach, upstream)
    assert scale == pytest.approx(2.0)
    assert by_layer == pytest.approx({"ta": 2.0, "tb": 1.0})
    # 'out' is computed from a and b: the larger, 2; 'emb' from ids alone.
    assert after == pytest.approx({"ta": 2.0, "tb": 1.0, "out": 2.0})
    # A dict by input name reads the same; a list of another length, none.
    named = {"b": xb, "a": xa, "c": xc}
    assert input_scales(model, named, chains, reach, upstream)[1:] == (
        pytest.approx(by_layer),
        pytest.approx(after),
    )
    assert input_scales(model, [xa, xb], chains, reach, upstream) == (None, {}, {})
    # One input: none of it (the single input's own path).
    one = keras.Input((3,))
    single = keras.Model(one, L.Dense(1)(one))
    assert _model_plan.input_reach(single, _model_plan.plan_layers(single)) is None
    assert _model_plan.input_chains(single) is None


def test_a_shared_tower_is_reached_first_by_both_inputs():
    # Through a Normalization shared by both inputs (one call each): each
    # input's chain holds it, and the layers after it see the data through
    # it.
    from keras_actloss.callbacks import _model_plan

    L = keras.layers
    tower = keras.Sequential(
        [keras.Input((4,)), L.Dense(8, name="d1"), L.Dense(4, name="d2")], name="tower"
    )
    norm = L.Normalization(mean=[5.0] * 4, variance=[1.0] * 4, name="norm")
    a, b = keras.Input((4,)), keras.Input((4,))
    joined = tower(norm(a)) - tower(norm(b))
    model = keras.Model([a, b], L.Dense(1, name="o")(joined))
    plans = _model_plan.plan_layers(model)
    reach = _model_plan.input_reach(model, plans)
    assert reach == [frozenset({"tower/d1"})] * 2
    upstream = _model_plan.input_reach(model, plans, first=False)
    assert upstream == [frozenset({"tower/d1", "tower/d2", "o"})] * 2
    chains = _model_plan.input_chains(model)
    assert [[layer.name for layer in chain] for chain in chains] == [["norm"]] * 2


@pytest.mark.parametrize("raw", ["a", "b"])
def test_the_raw_input_of_several_is_named_for_its_own_first_layer(raw):
    # Two inputs, each into its own tanh layer; one of them raw (mean about
    # 150, spread 30): its layer sits in the flat tails and learns slowly,
    # the inputs the cause, a warning, as for a model of one input
    # (`unstandardized_inputs`). Was: no input kept for a model of several,
    # and the layer told as `saturated_activations`, a failure.
    rng = np.random.default_rng(0)
    x = {k: rng.normal(size=(256, 6)).astype("float32") for k in "ab"}
    x[raw] = x[raw] * 30.0 + 150.0
    y = (x["a"][:, 0] - x["a"][:, 0].mean() > 0).astype("float32")[:, None]
    L = keras.layers
    keras.utils.set_random_seed(0)
    a, b = keras.Input((6,), name="a"), keras.Input((6,), name="b")
    joined = L.Concatenate()(
        [
            L.Dense(8, activation="tanh", name="ta")(a),
            L.Dense(8, activation="tanh", name="tb")(b),
        ]
    )
    out = L.Dense(1, activation="sigmoid")(L.Dense(16, activation="tanh")(joined))
    model = keras.Model([a, b], out)
    model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy")
    diag = GradientDiagnostics()
    with pytest.warns(GradientHealthWarning, match="unstandardized_inputs"):
        model.fit(
            [x["a"], x["b"]],
            y,
            batch_size=32,
            verbose=0,
            callbacks=[diag],
            shuffle=False,
        )
    (finding,) = diag.findings
    assert (finding.mode, finding.layer, finding.severity) == (
        F.UNSTANDARDIZED_INPUTS,
        f"t{raw}",
        F.WARNING,
    )
    # The raw input's scale on the first recorded batch (its 32 rows).
    first = x[raw][:32].astype("float64")
    expected = np.maximum(np.abs(first.mean(0)), first.std(0)).max()
    np.testing.assert_allclose(finding.value, expected, rtol=1e-5)
    assert f"{expected:.3g}" in finding.message
