"""Recurrent layers fed inputs that are not standardized: their gates'
saturation, measured on the first recorded batch (`input_gates`,
`stats.input_gate_saturation`, `HealthRules.input_gates`), and on later
ones once the inputs change scale (`HealthRules.gates_changed`)."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

from keras_actloss import activations
from keras_actloss import findings as F
from keras_actloss.callbacks import GradientDiagnostics, GradientHealthWarning
from keras_actloss.callbacks._callback_support import input_gates
from keras_actloss.callbacks._model_plan import plan_layers
from keras_actloss.diagnostics import stats
from keras_actloss.diagnostics.rule_support import FIXES
from keras_actloss.diagnostics.rules import HealthRules
from tests.diagnostics.test_rules import mlp


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # 1 / (1 + exp(-z)), no overflow.


def _reference(x, kernel, bias, kinds):
    """The share of `x @ kernel + bias` in the tails, in NumPy: sigmoid
    outputs at most 0.01 or at least 0.99, tanh at most -0.99 or at least
    0.99 (the profiles' saturation bounds), block by block of `kinds`."""
    z = x.reshape(-1, x.shape[-1]).astype("float64") @ kernel + bias
    width = z.shape[1] // len(kinds)
    saturated = 0
    for i, kind in enumerate(kinds):
        block = z[:, i * width : (i + 1) * width]
        out = _sigmoid(block) if kind == "sigmoid" else np.tanh(block)
        bound = 0.01 if kind == "sigmoid" else -0.99
        saturated += np.count_nonzero((out <= bound) | (out >= 0.99))
    return saturated / z.size


LSTM_KINDS = ["sigmoid", "sigmoid", "tanh", "sigmoid"]


def test_input_gate_saturation_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 3.0, (8, 5, 3))
    kernel = rng.normal(0.0, 1.0, (3, 16))
    bias = rng.normal(0.0, 1.0, 16)
    blocks = [
        (keras.activations.get(kind), activations.profile(kind)) for kind in LSTM_KINDS
    ]
    found = stats.input_gate_saturation(x, kernel, bias, blocks)
    expected = _reference(x, kernel, bias, LSTM_KINDS)
    assert 0.1 < expected < 0.9  # Neither none nor all: the blocks count.
    assert found == pytest.approx(expected, abs=1e-6)
    # Another input width, or a NaN: not measured.
    assert stats.input_gate_saturation(x[..., :2], kernel, bias, blocks) is None
    x[0, 0, 0] = np.nan
    assert stats.input_gate_saturation(x, kernel, bias, blocks) is None


@pytest.mark.parametrize(
    "layer, kinds, rows",
    [
        (lambda: keras.layers.LSTM(4), LSTM_KINDS, 1),
        (lambda: keras.layers.GRU(4), ["sigmoid", "sigmoid", "tanh"], 1),
        (lambda: keras.layers.SimpleRNN(4), ["tanh"], 1),
        (lambda: keras.layers.Bidirectional(keras.layers.GRU(4)), None, 2),
    ],
    ids=["lstm", "gru", "simple_rnn", "bidirectional_gru"],
)
def test_input_gates_read_each_cells_input_kernel(layer, kinds, rows):
    model = keras.Sequential([keras.Input((5, 3)), layer(), keras.layers.Dense(1)])
    plans = plan_layers(model)
    first = HealthRules([plan.info for plan in plans]).input_layers
    gates = input_gates(plans, first)
    cells = [plan for plan in plans if plan.info.name in gates]
    assert len(cells) == rows
    for plan in cells:
        kernel, bias, blocks = gates[plan.info.name]
        np.testing.assert_array_equal(
            kernel, keras.ops.convert_to_numpy(plan.layer.kernel)
        )
        full = keras.ops.convert_to_numpy(plan.layer.bias)
        # A GRU's `reset_after` bias (Keras's default): its input row.
        np.testing.assert_array_equal(bias, full[0] if full.ndim == 2 else full)
        names = [profile.name for _, profile in blocks]
        assert names == (kinds or ["sigmoid", "sigmoid", "tanh"])


def test_input_gates_leave_out_cells_the_inputs_do_not_reach_first():
    # A stacked LSTM: the second takes the first's outputs, in [-1, 1].
    model = keras.Sequential(
        [
            keras.Input((5, 3)),
            keras.layers.LSTM(4, return_sequences=True, name="low"),
            keras.layers.LSTM(4, name="high"),
            keras.layers.Dense(1),
        ]
    )
    plans = plan_layers(model)
    first = HealthRules([plan.info for plan in plans]).input_layers
    assert list(input_gates(plans, first)) == ["low/lstm_cell"]


@pytest.mark.parametrize(
    "scale, fraction, expected",
    [
        (500.0, 0.96, (F.SATURATED_ACTIVATIONS, F.FAILURE, 0.96)),
        (500.0, 0.75, (F.SATURATED_ACTIVATIONS, F.FAILURE, 0.75)),
        (500.0, 0.6, (F.UNSTANDARDIZED_INPUTS, F.WARNING, 500.0)),
        (500.0, 0.4, None),
        (1.0, 0.96, None),  # Standardized inputs: the weights' doing.
    ],
)
def test_gates_of_raw_inputs_are_judged(scale, fraction, expected):
    # Failure from `saturation` (0.75), a warning from `input_saturation`
    # (0.5), both only over `input_scale` (2).
    rules = HealthRules(mlp(["tanh"]))
    found = rules.input_gates(3, scale, {"lstm/lstm_cell": fraction})
    if expected is None:
        assert found == []
        return
    ((finding),) = found
    assert (finding.mode, finding.severity, finding.value) == expected
    assert (finding.layer, finding.step) == ("lstm/lstm_cell", 3)
    assert f"a feature's mean or spread is {scale:.3g}" in finding.message


class _Told(keras.callbacks.Callback):
    """The step at which each finding of `diag` first appeared."""

    def __init__(self, diag):
        super().__init__()
        self.diag, self.at = diag, []

    def on_train_batch_end(self, batch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) - 1
        self.at += [step] * (len(self.diag.findings) - len(self.at))


@pytest.mark.parametrize("raw", [True, False])
def test_an_lstm_fed_raw_series_is_told_at_the_first_step(raw):
    # Series of about 500 (raw sensor values, prices): the inputs alone put
    # the LSTM's gates in their tails for every sample; standardized, none.
    # Probed: such a forecaster learned little in 330 steps (held-out MSE
    # 0.48 against 0.02 standardized, 0.63 for predicting the mean).
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 1.0, (64, 12, 1)).astype("float32")
    y = x[:, -1]
    if raw:
        x = 500.0 + 100.0 * x
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((12, 1)), keras.layers.LSTM(8), keras.layers.Dense(1)]
    )
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    cell = model.layers[0].cell
    kernel = keras.ops.convert_to_numpy(cell.kernel).astype("float64")
    bias = keras.ops.convert_to_numpy(cell.bias).astype("float64")
    diag = GradientDiagnostics(check_model=False)
    told = _Told(diag)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GradientHealthWarning)
        model.fit(
            x,
            y,
            batch_size=16,
            epochs=1,
            shuffle=False,
            verbose=0,
            callbacks=[diag, told],
        )
    gates = [f for f in diag.findings if f.layer == "lstm/lstm_cell"]
    if not raw:
        assert gates == []
        return
    assert any("lstm/lstm_cell at step 0" in str(w.message) for w in caught)
    ((finding, at),) = [(f, s) for f, s in zip(diag.findings, told.at) if f in gates]
    assert (finding.mode, finding.severity, finding.step, at) == (
        F.SATURATED_ACTIVATIONS,
        F.FAILURE,
        0,
        0,
    )
    # On the first batch (the first recording's), with the initial weights.
    expected = _reference(x[:16], kernel, bias, LSTM_KINDS)
    assert expected > 0.9
    assert finding.value == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "seen, expected",
    [
        # Two recordings in a row, inputs 3x+ the first batch's and over
        # `input_scale` (2), gates over `saturation` (0.75): told at the
        # first of them, with the smaller share in the message.
        ([(10, 500.0, 0.97), (11, 500.0, 0.96)], (10, 0.96, "96% or more")),
        # One batch far from the rest: no change of the data.
        ([(10, 500.0, 0.97), (11, 1.0, 0.0), (14, 500.0, 0.97)], None),
        # Gates under the limit, or inputs not far from the first batch's.
        ([(10, 500.0, 0.6), (11, 500.0, 0.6)], None),
        ([(10, 2.5, 0.9), (11, 2.5, 0.9)], None),
    ],
    ids=["changed", "one_batch", "below_saturation", "not_3x"],
)
def test_gates_saturated_by_inputs_that_changed_later(seen, expected):
    rules = HealthRules(mlp(["tanh"]))
    found = []
    for step, scale, fraction in seen:
        found += rules.gates_changed(step, scale, 1.0, {"lstm/lstm_cell": fraction})
        # The first saturated recording asks for the next step's.
        assert rules.gates_pending == (fraction >= 0.75 and scale >= 3.0 and not found)
    if expected is None:
        assert found == []
        return
    ((finding),) = found
    step, value, share = expected
    assert (finding.mode, finding.severity, finding.layer, finding.step) == (
        F.SATURATED_ACTIVATIONS,
        F.FAILURE,
        "lstm/lstm_cell",
        step,
    )
    assert finding.value == value
    assert finding.message.startswith(
        f"{share} of the pre-activations that the inputs of steps 10 and 11 give "
        "the gates of recurrent layer 'lstm/lstm_cell'"
    )
    assert "a feature's mean or spread is 500, against 1 on the first" in (
        finding.message
    )
    assert finding.fix == FIXES[F.UNSTANDARDIZED_INPUTS]
    # Told once: the layer's saturation is reported.
    assert rules.gates_changed(12, 500.0, 1.0, {"lstm/lstm_cell": 0.97}) == []


def test_an_lstm_whose_inputs_change_scale_mid_run_is_told_within_steps():
    # Standardized series, then 1000x larger from step 24 (a preprocessing
    # step that broke): probed, 98% of an LSTM's gate pre-activations in
    # the tails from then on, the loss back near chance, and nothing told
    # in 300 steps while only the first recorded batch was judged.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1280, 12, 3)).astype("float32")
    y = (x[:, :, 0].sum(axis=1) > 0).astype("float32")
    onset = 24
    x[onset * 32 :] *= 1000.0
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((12, 3)),
            keras.layers.LSTM(16),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy")
    diag = GradientDiagnostics(check_model=False)
    told = _Told(diag)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GradientHealthWarning)
        model.fit(x, y, batch_size=32, shuffle=False, verbose=0, callbacks=[diag, told])
    found = [
        (f, at) for f, at in zip(diag.findings, told.at) if f.severity == F.FAILURE
    ]
    assert found, "the saturated gates were not told"
    finding, at = found[0]
    assert (finding.mode, finding.layer) == (F.SATURATED_ACTIVATIONS, "lstm/lstm_cell")
    assert onset <= finding.step < at <= onset + 10
    # The share of the model's gates in the tails on the inputs after the
    # change (NumPy, the weights at the end: the inputs alone saturate them).
    cell = model.layers[0].cell
    kernel = keras.ops.convert_to_numpy(cell.kernel).astype("float64")
    bias = keras.ops.convert_to_numpy(cell.bias).astype("float64")
    assert _reference(x[-32:], kernel, bias, LSTM_KINDS) > 0.9
    assert finding.value > 0.9
    assert finding.message.endswith(
        "so the layer no longer learns from the data: the data changed (a "
        "preprocessing step that broke, values in another unit)."
    )
