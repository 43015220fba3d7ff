"""What works on a backend other than TensorFlow, with TensorFlow absent.

Runs in `.ci/run`'s JAX stage (`jax`, `keras`, `tensorboard` and this package
with `--no-deps`, `KERAS_BACKEND=jax`); skips where TensorFlow is installed.
The logs are tested in `tests/logs/test_without_tensorflow.py`.
"""

import sys

import keras
import numpy as np
import pytest

import keras_actloss
from keras_actloss.callbacks import GradientDiagnostics

pytestmark = pytest.mark.without_tensorflow


def test_activations_layers_losses_advise_and_check_model(tmp_path):
    assert keras.backend.backend() != "tensorflow"
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    y = (x[:, :1] > 0).astype("float32")
    rec = keras_actloss.advise(y)
    assert (rec.output_activation, rec.output_units) == ("sigmoid", 1)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation=keras_actloss.activations.swish),
            keras_actloss.layers.LeakyReLU(0.1),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile("adam", rec.loss)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert keras_actloss.check_model(model, y) == []
    # Saved and loaded by name, no `custom_objects`.
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0)
    )
    assert type(loaded.loss) is type(model.loss)
    # Eager label checks give their message on this backend too.
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        keras_actloss.losses.BinaryCrossentropy()(np.array([[2.0]]), np.array([[0.5]]))
    assert "tensorflow" not in sys.modules


def test_gradient_diagnostics_trains_and_logs_without_tensorflow(tmp_path):
    from keras_actloss.callbacks import GradientHealthWarning
    from keras_actloss.logs import reader

    # Bias -5 with unit-scale inputs: every ReLU pre-activation is negative
    # (|x @ w| stays far below 5 for a glorot kernel of 4 inputs).
    x = np.random.default_rng(0).normal(size=(256, 4)).astype("float32")
    y = (x[:, :1] > 0).astype("float32")
    dead = keras.layers.Dense(
        8, activation="relu", bias_initializer=keras.initializers.Constant(-5.0)
    )
    model = keras.Sequential([keras.Input((4,)), dead, keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.01), "mse")
    diag = GradientDiagnostics(log_dir=tmp_path, every_n_steps=1, check_model=False)
    with pytest.warns(GradientHealthWarning, match="dead_relu"):
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[diag])
    assert [(f.mode, f.layer, f.value) for f in diag.findings] == [
        ("dead_relu", dead.name, 1.0)
    ]
    # The event files read back the same, without TensorFlow.
    run = reader.read_run(reader.find_runs(str(tmp_path))[0])
    assert run.findings == diag.findings
    assert [s for s, _ in run.series("grad_norm", "global")] == list(range(8))
    assert "tensorflow" not in sys.modules
