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
