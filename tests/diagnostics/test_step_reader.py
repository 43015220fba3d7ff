"""Tests for keras_actloss.diagnostics.step_reader (plain Python, no backend)."""

import dataclasses
import math

import pytest

from keras_actloss.diagnostics import step_reader
from keras_actloss.diagnostics.step_activations import ActivationEntry
from keras_actloss.diagnostics.step_reader import LAYER_FIELDS, StepLayout
from keras_actloss.diagnostics.step_stats import RowLayout

# Three monitored layers: 0 (ReLU: units can die), 1 (sigmoid), 2 (no
# gradient, no activation counts). Gradient tensors: 0 and 3 are layer 0's,
# 1 layer 1's, 2 is not monitored; the row holds tensor 0's norm first, then
# the others' sums of squares. Weight tensors: 0 and 2 are layer 0's, 1
# layer 1's.
LAYOUT = StepLayout(
    can_die=(True, False, False),
    grads=RowLayout((0, 3, 1, 2), (True, False, False, False)),
    grad_layers=(0, 1, -1, 0),
    grad_counts=(10, 20, 30, 15),
    weights=RowLayout((0, 2, 1), (True, False, False)),
    weight_layers=(0, 1, 0),
    activations=(ActivationEntry(0, 3, False, 2), ActivationEntry(1, 0, True, None)),
    samples=((0, 3), (1, 2)),
)
VALUES = {
    # Columns: tensor 0's norm 3, tensor 3's square 16, tensor 1's 9,
    # tensor 2's (unmonitored) 100.
    "norms": [3.0, 16.0, 9.0, 100.0],
    # Maxima, then minima, in the same column order.
    "extremes": [0.5, 0.2, 0.1, 9.0, -0.7, -0.1, -0.3, -9.0],
    # Weight tensor 0's norm 3, tensor 2's square 16, tensor 1's square 4.
    "weights": [3.0, 16.0, 4.0],
    "updates": [0.3, 0.16, 0.04],
    # Layer 0: active counts of its 3 units; layer 1: saturated, elements.
    "activations": [4.0, 0.0, 2.0, 5.0, 20.0],
    "batch_size": 4.0,
}


def test_read_layers_by_hand():
    first, second, third = step_reader.read_layers(LAYOUT, VALUES, 2.0)
    # Hand computed, loss scale 2. Layer 0: gradient squares 3^2 + 16 = 25
    # over 10 + 15 elements; max-abs max(0.5, 0.7, 0.2, 0.1); weights
    # 3^2 + 16 = 25, updates 0.3^2 + 0.16 = 0.25; 4 samples x 2 elements
    # per sample, 6 active of 8; unit 1 never active.
    units = ("unit_activity", "unit_samples")
    assert {k: v for k, v in first.items() if k not in units} == pytest.approx(
        {
            "grad_norm": 5.0 / 2,
            "grad_rms": 1.0 / 2,
            "grad_max": 0.7 / 2,
            "weight_norm": 5.0,
            "update_ratio": 0.5 / 5.0,
            "zero_fraction": 0.25,
            "dead_fraction": 1 / 3,
            "saturation": None,
        }
    )
    assert first["unit_activity"] == [4.0, 0.0, 2.0]
    assert first["unit_samples"] is None  # The batch's (4).
    # Layer 1: gradient square 9 over 20 elements; weight square 4, update
    # square 0.04; 5 of 20 elements saturated; no units (sigmoid).
    assert second == pytest.approx(
        {
            "grad_norm": 3.0 / 2,
            "grad_rms": math.sqrt(9.0 / 20) / 2,
            "grad_max": 0.3 / 2,
            "weight_norm": 2.0,
            "update_ratio": 0.2 / 2.0,
            "zero_fraction": None,
            "dead_fraction": None,
            "saturation": 0.25,
            "unit_activity": None,
            "unit_samples": None,
        }
    )
    assert third == {**dict.fromkeys(LAYER_FIELDS), **dict.fromkeys(units)}
    assert list(first) == [*LAYER_FIELDS, *units]


def test_read_layers_non_finite():
    values = {**VALUES, "norms": [math.nan, 16.0, 9.0, 100.0]}
    values["activations"] = [math.nan, 0.0, 2.0, 5.0, 20.0]
    first, second, _ = step_reader.read_layers(LAYOUT, values, 1.0)
    # A NaN gradient norm reaches the max-abs even where the extremes miss it.
    assert math.isnan(first["grad_norm"]) and math.isnan(first["grad_max"])
    assert first["zero_fraction"] is None  # A NaN fraction is not reported.
    assert second["grad_max"] == 0.3
    # A zero weight norm gives a zero update ratio.
    values = {**VALUES, "weights": [0.0, 0.0, 0.0]}
    assert step_reader.read_layers(LAYOUT, values, 1.0)[0]["update_ratio"] == 0.0


def test_split_samples_leaves_out_layers_without_gradients():
    sample = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert step_reader.split_samples(LAYOUT, sample) == {
        0: [1.0, 2.0, 3.0],
        1: [4.0, 5.0],
    }
    layout = StepLayout(grad_layers=(1,), samples=((0, 3), (1, 2)))
    assert step_reader.split_samples(layout, sample) == {1: [4.0, 5.0]}


def test_activation_fields_reads_the_scalars_after_every_layers_units():
    # Layer 0: a ReLU6 of 2 units and unknown elements per sample (its
    # saturated and element counts are scalars); layer 1: 3 units, 2
    # elements per sample. The vector holds every layer's per-unit counts,
    # then the scalars in layer order: [2, 0 | 1, 1, 6 | 3, 12].
    layout = StepLayout(
        can_die=(True, True),
        activations=(
            ActivationEntry(0, 2, True, None),
            ActivationEntry(1, 3, False, 2),
        ),
    )
    fields = step_reader.activation_fields(
        layout, [2.0, 0.0, 1.0, 1.0, 6.0, 3.0, 12.0], 4.0
    )
    # Layer 0: 2 active of 12 elements, unit 1 never active, 3 of 12
    # saturated. Layer 1: 8 active of 4 samples x 2 elements, none dead.
    zero, dead, saturated, units, samples = fields[0]
    assert (zero, dead, saturated) == pytest.approx((1 - 2 / 12, 0.5, 0.25))
    assert units == [2.0, 0.0]
    zero, dead, saturated, units, samples = fields[1]
    assert samples is None  # The batch's.
    assert (zero, dead, saturated) == (0.0, 0.0, None)
    assert units == [1.0, 1.0, 6.0]
    # Layer 0 on 3 samples of its own a step (`ActivationEntry.samples`),
    # its counts summed over an execution of 2 steps: 6 samples.
    layout = StepLayout(
        can_die=(True, True),
        activations=(ActivationEntry(0, 2, True, None, 3), layout.activations[1]),
    )
    fields = step_reader.activation_fields(
        layout, [2.0, 0.0, 1.0, 1.0, 6.0, 3.0, 12.0], 4.0, 2.0
    )
    assert fields[0][4] == 6 and fields[1][4] is None


def test_grad_rms_of_a_row_is_read_layers_grad_rms():
    # The same columns as `VALUES` at loss scale 2: layer 0 1.0 / 2, layer 1
    # sqrt(9 / 20) / 2 (hand computed above); layer 2 has no gradient.
    assert step_reader.grad_rms(LAYOUT, VALUES["norms"], 2.0) == pytest.approx(
        [0.5, math.sqrt(9.0 / 20) / 2, None]
    )


@pytest.mark.parametrize(
    "vectors, share",
    [
        # Tensors 1 and 3 vectors: kernels 0 (norm 3, square 9) and 2 (100)
        # of 9 + 16 + 9 + 100 = 134, unmonitored ones too.
        ((False, True, False, True), 109 / 134),
        # Tensor 0 the only kernel: 9 of 134.
        ((False, True, True, True), 9 / 134),
        ((False,) * 4, None),  # No vector: nothing to compare.
        ((True,) * 4, None),  # No kernel (only biases train).
        ((), None),  # Not known.
    ],
)
def test_kernel_share(vectors, share):
    layout = dataclasses.replace(LAYOUT, grad_vectors=vectors)
    found = step_reader.kernel_share(layout, VALUES["norms"])
    assert found == (None if share is None else pytest.approx(share))


def test_kernel_share_of_no_gradient_is_none():
    layout = dataclasses.replace(LAYOUT, grad_vectors=(False, True, False, True))
    assert step_reader.kernel_share(layout, [0.0] * 4) is None


def test_a_loss_scale_of_zero_reads_nan_gradients():
    # A loss scale that underflowed to 0: the gradients tell nothing, NaN
    # (not a division error); the weights and activations are read.
    (rms0, rms1, none) = step_reader.grad_rms(LAYOUT, VALUES["norms"], 0.0)
    assert math.isnan(rms0) and math.isnan(rms1) and none is None
    layers = step_reader.read_layers(LAYOUT, VALUES, 0.0)
    at_two = step_reader.read_layers(LAYOUT, VALUES, 2.0)
    for layer, reference in zip(layers, at_two):
        for name in ("grad_norm", "grad_rms", "grad_max"):
            assert (layer[name] is None) == (reference[name] is None)
            assert layer[name] is None or math.isnan(layer[name])
        assert layer["weight_norm"] == reference["weight_norm"]
        assert layer["dead_fraction"] == reference["dead_fraction"]


def test_full_record_reads_its_executions_earlier_steps():
    # A full step 7 whose activation counts sum 3 steps (5-7): the rows of
    # steps 5 and 6 give their per-layer gradient RMS; those of step 4 (an
    # earlier execution) and of step 7 itself do not.
    from keras_actloss.callbacks import _step_rows

    def row(step, norms, scale=1.0):
        return [step, 0.0, scale, 0.1, 1.0, 0.0, *norms]

    rows = [row(4, [1.0] * 4), row(5, VALUES["norms"], 2.0), row(6, [0.0] * 4)]
    values = {
        **VALUES,
        "row": row(7, VALUES["norms"]),
        "head": [1.0, 4.0, 3.0],
    }
    steps = [(s, 1.0, False, False) for s in (4, 5, 6, 7)]
    record = _step_rows.full_record(LAYOUT, values, steps, True, rows)
    assert record["step"] == 7 and record["activation_steps"] == 3.0
    assert [step for step, _ in record["execution_rms"]] == [5, 6]
    assert record["execution_rms"][0][1] == pytest.approx(
        [0.5, math.sqrt(9.0 / 20) / 2, None]
    )
    assert record["execution_rms"][1][1] == [0.0, 0.0, None]
    # One step (no sum): none.
    values["head"] = [1.0, 4.0, 1.0]
    assert (
        _step_rows.full_record(LAYOUT, values, steps, True, rows)["execution_rms"] == []
    )
