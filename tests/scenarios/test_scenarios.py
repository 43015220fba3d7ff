"""Scenario suite: tiny synthetic trainings, one per failure mode, and healthy
controls, each asserting the exact set of failure modes found.

The rules (`keras_actloss.diagnostics.rules`) are tuned to mechanisms, not to
these scenarios; each scenario sets up a mechanism (saturating depth, too
large a step, negative pre-activations, huge weights, NaN inputs) and checks
that it, and only it, is reported, and that healthy models trained to a low
loss report nothing. Each trains for a few seconds on CPU with full
statistics every 5 steps.
"""

import warnings

import keras
import numpy as np
import pytest

from keras_actloss.callbacks import GradientDiagnostics, GradientHealthWarning


def classification(n=256, d=16, classes=3, seed=0):
    """Linearly separable classes: `argmax(x @ w)`."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    return x, np.argmax(x @ rng.normal(size=(d, classes)), axis=1)


def regression(n=256, d=8, seed=0):
    """A smooth non-linear target of unit scale."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    y = np.sin(x[:, 0]) + x[:, 1] * x[:, 2] + 0.1 * rng.normal(size=n)
    return x, y.astype("float32")[:, None]


def mlp(hidden, inputs=16, outputs=3, output_activation="softmax", width=32, **kwargs):
    """`Dense` layers with the given hidden activations, then the output layer."""
    layers = [keras.layers.Dense(width, activation=a, **kwargs) for a in hidden]
    out = keras.layers.Dense(outputs, activation=output_activation)
    return keras.Sequential([keras.Input((inputs,)), *layers, out])


@pytest.fixture(autouse=True)
def _seeded():
    """Every test builds its model and shuffles its batches from seed 0, so
    its findings do not depend on the tests that ran before it."""
    keras.utils.set_random_seed(0)


@pytest.fixture
def train(tmp_path):
    """Compiles and fits with `GradientDiagnostics(every_n_steps=5)`.

    Returns `(callback, loss history)`. Findings are only collected (their
    warnings silenced); `check_model` is off so only the training rules speak.
    """

    def run(
        model, x, y, optimizer, loss, epochs, batch_size=32, log_dir=None, **kwargs
    ):
        model.compile(optimizer=optimizer, loss=loss)
        diag = GradientDiagnostics(
            log_dir=log_dir, every_n_steps=5, check_model=False, **kwargs
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GradientHealthWarning)
            history = model.fit(
                x, y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=[diag]
            )
        return diag, history.history["loss"]

    return run


def modes(diag) -> set[str]:
    return {f.mode for f in diag.findings}


# Failure modes.


def test_deep_sigmoid_vanishing(train):
    # Eight sigmoid layers: each multiplies the backward signal by <= 0.25.
    x, y = classification()
    model = mlp(["sigmoid"] * 8)
    diag, _ = train(
        model, x, y, keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy", 4
    )
    assert modes(diag) == {"vanishing_gradients"}
    layers = {f.layer for f in diag.findings}
    # Only layers in the first half of the 9 weighted layers, the first among them.
    first_half = {layer.name for layer in model.layers[:4]}
    assert model.layers[0].name in layers and layers <= first_half
    assert all(f.step == 0 for f in diag.findings)  # Vanishing from the start.


def test_deep_sigmoid_with_adam_still_vanishes(train):
    # Adam rescales updates, but the recorded gradients still vanish.
    x, y = classification()
    diag, _ = train(
        mlp(["sigmoid"] * 6),
        x,
        y,
        keras.optimizers.Adam(1e-3),
        "sparse_categorical_crossentropy",
        3,
    )
    assert modes(diag) == {"vanishing_gradients"}


def test_learning_rate_too_high_explodes_to_nan(train):
    # SGD with lr=1 on a tanh regression MLP: the norm grows by orders of
    # magnitude within a few steps, then the weights overflow.
    x, y = regression()
    model = mlp(["tanh"] * 2, inputs=8, outputs=1, output_activation=None)
    diag, losses = train(model, x, y, keras.optimizers.SGD(1.0), "mse", 4)
    assert modes(diag) == {"exploding_gradients", "non_finite"}
    explode = min(f.step for f in diag.findings if f.mode == "exploding_gradients")
    (nan,) = [f for f in diag.findings if f.mode == "non_finite"]
    assert explode < nan.step  # The explosion comes first.
    assert not np.isfinite(losses[-1])


def test_learning_rate_too_high_explodes(train):
    # Linear regression with SGD above the stability limit (lr > 2 / lambda_max
    # = 1 for unit-variance inputs): the error grows ~|1 - 2 lr| = 1.4x a step,
    # orders of magnitude within the run, but stays finite.
    x, y = regression(d=8)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
    diag, losses = train(model, x, y, keras.optimizers.SGD(1.2), "mse", 6)
    assert modes(diag) == {"exploding_gradients"}
    assert np.isfinite(losses[-1]) and losses[-1] > 1e6 * losses[0]
    whole = [f for f in diag.findings if f.layer is None]
    assert len(whole) == 1 and whole[0].value > 100 * diag.history[0].global_norm


def test_negative_bias_kills_relu(train):
    # Bias -5 with unit-scale inputs: every pre-activation is negative.
    x, y = classification()
    model = mlp(["relu"] * 2, bias_initializer=keras.initializers.Constant(-5.0))
    diag, _ = train(
        model, x, y, keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", 2
    )
    assert modes(diag) == {"dead_relu"}
    assert {f.layer for f in diag.findings} == {
        model.layers[0].name,
        model.layers[1].name,
    }
    assert all(f.value == 1.0 for f in diag.findings)


def test_huge_learning_rate_kills_relu(train):
    # SGD with lr=3: large steps push most of a ReLU layer's units into the
    # negative region, where they get no gradient and stay (53% dead over
    # steps 5-8). The same steps are reported as exploding: each of steps
    # 1-3 changes the median layer's weights by 0.79-1.04 of their norm while
    # the loss rises to 1.5x, 2.7x and 3.8x where training began (1.20:
    # 1.80, 3.26, 4.54; `UpdateRules._churning`). On JAX, whose seeded
    # initializers draw other weights, the steps stay too large after the
    # units died: 0.2-0.7 of the median layer's weights with the loss up
    # and down around where training began (1.0-2.6 against 1.23), told
    # there over 5 steps.
    x, y = classification()
    diag, _ = train(
        mlp(["relu"] * 2),
        x,
        y,
        keras.optimizers.SGD(3.0),
        "sparse_categorical_crossentropy",
        4,
    )
    assert modes(diag) == {"dead_relu", "exploding_gradients"}
    dead = [f for f in diag.findings if f.mode == "dead_relu"]
    assert min(f.value for f in dead) >= 0.5


def test_huge_weights_saturate_tanh(train):
    # Weights with stddev 3: pre-activations ~ N(0, 9 * 16), tanh pinned at +-1.
    x, y = classification()
    model = mlp(
        ["tanh"] * 2, kernel_initializer=keras.initializers.RandomNormal(stddev=3.0)
    )
    diag, _ = train(
        model, x, y, keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", 2
    )
    assert modes(diag) == {"saturated_activations"}
    assert {f.layer for f in diag.findings} == {
        model.layers[0].name,
        model.layers[1].name,
    }


def test_huge_weights_saturate_sigmoid(train):
    # Weights with stddev 8: pre-activations ~ N(0, 64 * 16), about 90% of
    # them beyond the sigmoid's flat-tail bound (stddev 3 gives about 70%,
    # a layer that still passes the gradient through 30% of its outputs).
    x, y = classification(classes=2)
    model = mlp(
        ["sigmoid"] * 2,
        outputs=1,
        output_activation="sigmoid",
        kernel_initializer=keras.initializers.RandomNormal(stddev=8.0),
    )
    diag, _ = train(model, x, y, keras.optimizers.Adam(1e-3), "binary_crossentropy", 2)
    assert modes(diag) == {"saturated_activations"}
    assert model.layers[-1].name not in {f.layer for f in diag.findings}


def test_nan_in_the_data(train):
    x, y = classification()
    x[100:104] = np.nan
    model = mlp(["relu"] * 2)
    diag, _ = train(
        model, x, y, keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", 2
    )
    assert modes(diag) == {"non_finite"}
    (finding,) = diag.findings
    # The NaN inputs reach the first layer's kernel gradient (x^T delta).
    assert finding.layer == model.layers[0].name


# Healthy controls: trained to a low loss, nothing reported.


def test_healthy_relu_mlp(train):
    x, y = classification()
    diag, losses = train(
        mlp(["relu"] * 3, width=64),
        x,
        y,
        keras.optimizers.Adam(1e-3),
        "sparse_categorical_crossentropy",
        15,
    )
    assert losses[-1] < 0.1 * losses[0]
    assert diag.findings == []
    # Normal ReLU sparsity is there, and was not taken for dead units.
    zeros = [
        ls.zero_fraction for s in diag.history for ls in s.layers if ls.zero_fraction
    ]
    assert 0.2 < np.median(zeros) < 0.8


def test_healthy_deep_relu_mlp_with_sgd(train):
    x, y = classification()
    diag, losses = train(
        mlp(["relu"] * 6, width=64),
        x,
        y,
        keras.optimizers.SGD(0.1),
        "sparse_categorical_crossentropy",
        15,
    )
    assert losses[-1] < 0.2 * losses[0]
    assert diag.findings == []


def test_healthy_tanh_mlp(train):
    x, y = classification()
    diag, losses = train(
        mlp(["tanh"] * 3, width=64),
        x,
        y,
        keras.optimizers.Adam(1e-3),
        "sparse_categorical_crossentropy",
        15,
    )
    assert losses[-1] < 0.1 * losses[0]
    assert diag.findings == []


def test_healthy_binary_classifier_with_confident_sigmoid_output(train):
    x, y = classification(classes=2)
    model = mlp(["relu"] * 2, outputs=1, output_activation="sigmoid")
    diag, losses = train(
        model, x, y, keras.optimizers.Adam(3e-3), "binary_crossentropy", 15
    )
    assert losses[-1] < 0.1 * losses[0]
    assert diag.findings == []


def test_healthy_regression(train):
    x, y = regression()
    model = mlp(["relu"] * 2, inputs=8, outputs=1, output_activation=None, width=64)
    diag, losses = train(model, x, y, keras.optimizers.Adam(3e-3), "mse", 15)
    assert losses[-1] < 0.1 * losses[0]
    assert diag.findings == []


def test_findings_round_trip_through_tensorboard(train, tmp_path):
    # End to end: callback -> writer -> event files -> reader.
    from keras_actloss.logs import reader

    x, y = classification()
    model = mlp(["relu"] * 2, bias_initializer=keras.initializers.Constant(-5.0))
    log_dir = str(tmp_path / "dead")
    diag, _ = train(
        model,
        x,
        y,
        keras.optimizers.Adam(1e-3),
        "sparse_categorical_crossentropy",
        2,
        log_dir=log_dir,
    )
    run = reader.read_run(reader.find_runs(str(tmp_path))[0])
    assert run.findings == diag.findings
    assert [info.name for info in run.layers] == [layer.name for layer in model.layers]
    dense = model.layers[0].name
    assert [s for s, _ in run.series("dead_fraction", dense)] == [
        s.step for s in diag.history
    ]
    assert all(v == 1.0 for _, v in run.series("dead_fraction", dense))
