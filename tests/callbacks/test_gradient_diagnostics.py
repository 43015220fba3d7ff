"""Tests for GradientDiagnostics: real gradients, activations, failures, logs.

Reference gradients come from plain SGD: with `w_after = w_before - lr * g`,
the gradient the optimizer applied is `(w_before - w_after) / lr`.

No TensorFlow import at the top: this module also runs in `.ci/run`'s JAX
stage (TensorFlow not installed); the tests about TensorFlow itself import
it themselves and are marked `tensorflow_only`.
"""

import os
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest
from callback_models import (
    LAYER_NAMES,
    MODEL_KINDS,
    ThreeLayers,
    WeightsPerStep,
    build_model,
    kernels,
    relu_classifier,
    run_script,
    weights,
)
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.custom_scalar import metadata as custom_scalar
from tensorboard.util import tensor_util

import keras_actloss
from keras_actloss import activations
from keras_actloss.callbacks import GradientDiagnostics, GradientHealthWarning
from keras_actloss.callbacks._step_rows import SENTINEL
from keras_actloss.diagnostics import rules as rules_module
from keras_actloss.findings import EXPLODING_GRADIENTS, NON_FINITE, VANISHING_GRADIENTS
from tests.backend_support import BACKEND, tensorflow_only
from tests.scenarios.cases import Recorder

LR = 0.1


def _compile(model, optimizer=None, **kwargs):
    model.compile(optimizer or keras.optimizers.SGD(LR), "mse", **kwargs)
    return model


def _layer_grads(before, after, model, names, lr=LR):
    """{name: flat gradient} from the SGD weight change of each Dense layer."""
    index = {id(v): i for i, v in enumerate(model.trainable_variables)}
    out = {}
    for name, layer in zip(names, kernels(model, names)):
        parts = [
            (before[index[id(v)]] - after[index[id(v)]]) / lr
            for v in layer.trainable_variables
        ]
        out[name] = np.concatenate([p.ravel() for p in parts])
    return out


def _assert_norms_match_sgd_step(diag, before, model, kind, rtol):
    """The first recording's per-layer norms equal ||dw / lr|| of that step."""
    grads = _layer_grads(before, weights(model), model, LAYER_NAMES[kind])
    for ls in diag.history[0].layers:
        np.testing.assert_allclose(
            ls.grad_norm, np.linalg.norm(grads[ls.layer]), rtol=rtol
        )


def _iterations(model) -> int:
    """The optimizer's step count, also in the middle of a `fit` on JAX
    (where the variables wait in the training state until the epoch ends:
    `jax_state_sync` puts them back, as Keras lets callbacks do)."""
    if BACKEND == "jax":
        model.jax_state_sync()
    return int(model.optimizer.iterations.numpy())


def _hooked(optimizer) -> set[str]:
    """The optimizer methods wrapped on the instance (none outside `fit`)."""
    return {"apply", "stateless_apply"} & set(vars(optimizer))


def _diag(**kwargs):
    kwargs.setdefault("check_model", False)
    return GradientDiagnostics(**kwargs)


UPDATE_CASES = {
    # One AssignSub per variable: the update tensor's norm is recorded.
    "sgd": lambda: keras.optimizers.SGD(LR),
    # One AssignAdd per variable (the velocity).
    "momentum": lambda: keras.optimizers.SGD(LR, momentum=0.9),
    # Weight decay writes the variables a second time, and a constraint
    # assigns them: the weights before and after are compared instead.
    "adamw": lambda: keras.optimizers.AdamW(1e-2, weight_decay=0.5),
    "constraint": lambda: keras.optimizers.SGD(LR),
}


def _with_out(input_shape, *hidden) -> keras.Sequential:
    """`keras.Sequential`: an `Input` of `input_shape`, the `hidden` layers,
    then a linear `Dense(1, name="out")`."""
    return keras.Sequential(
        [keras.Input(input_shape), *hidden, keras.layers.Dense(1, name="out")]
    )


@pytest.mark.parametrize("case", sorted(UPDATE_CASES))
def test_weight_norm_and_update_ratio_match_numpy(case, rng):
    # A 80x64 kernel takes the matrix-product path of the sums of squares.
    x = rng.normal(size=(32, 80)).astype("float32")
    y = rng.normal(size=(32, 1)).astype("float32")
    constraint = keras.constraints.MaxNorm(0.5) if case == "constraint" else None
    model = _with_out(
        (80,),
        keras.layers.Dense(
            64, activation="relu", name="wide", kernel_constraint=constraint
        ),
    )
    model.compile(UPDATE_CASES[case](), "mse")
    before = weights(model)
    diag = _diag(every_n_steps=1)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[diag])
    after = weights(model)
    (stats,) = diag.history
    for ls, k in zip(stats.layers, (0, 2)):  # [kernel, bias] of each layer.
        w0 = np.concatenate([before[k].ravel(), before[k + 1].ravel()])
        w1 = np.concatenate([after[k].ravel(), after[k + 1].ravel()])
        np.testing.assert_allclose(ls.weight_norm, np.linalg.norm(w0), rtol=1e-5)
        np.testing.assert_allclose(
            ls.update_ratio, np.linalg.norm(w1 - w0) / np.linalg.norm(w0), rtol=1e-4
        )


def _trained(build, fit_kwargs, callbacks) -> tuple:
    """Every variable of a seeded `build()` after `fit` with `callbacks`
    (BatchNormalization's moving statistics, the optimizer's slots and the
    seed generators' states included), its losses and its step count."""
    keras.utils.set_random_seed(3)
    model = build()
    history = model.fit(**fit_kwargs, verbose=0, callbacks=callbacks)
    state = [keras.ops.convert_to_numpy(v) for v in model.variables]
    state += [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]
    return state, history.history["loss"], _iterations(model)


def test_training_is_the_same_with_and_without_the_callback(rng):
    # The callback reads the real step and adds nothing to it: no second
    # forward pass (which would draw Dropout's masks again and update
    # BatchNormalization's moving statistics twice), no change of the
    # update. The dense recordings of the start, the every-step function
    # after them and the burst after the learning rate jumps 20x at step
    # 40 all run. (Not a model that TensorFlow builds in `fit`: with oneDNN
    # its steps may round differently in the last bit; see the README.)
    x = rng.normal(size=(512, 12)).astype("float32")
    y = (x[:, :1] * x[:, 1:2] + 0.1 * rng.normal(size=(512, 1))).astype("float32")

    def build():
        model = keras.Sequential(
            [
                keras.Input((12,)),
                keras.layers.Dense(32, activation="relu", name="hidden"),
                keras.layers.BatchNormalization(name="norm"),
                keras.layers.Dropout(0.3, name="drop"),
                keras.layers.Dense(16, activation="tanh", name="squash"),
                keras.layers.Dense(1, name="out"),
            ]
        )
        model.compile(keras.optimizers.Adam(1e-3), "mse")
        return model

    def schedule():
        def rate(epoch, last):
            return 1e-3 if epoch < 5 else 2e-2

        return keras.callbacks.LearningRateScheduler(rate)

    fit = {"x": x, "y": y, "batch_size": 64, "epochs": 8}
    plain, plain_loss, plain_steps = _trained(build, fit, [schedule()])
    diag = _diag()
    diag.RENT_STEPS = 1  # The every-step function from the first step off.
    seen, seen_loss, seen_steps = _trained(build, fit, [schedule(), diag])
    assert plain_steps == seen_steps == 64
    assert seen_loss == plain_loss
    assert len(seen) == len(plain)
    for a, b in zip(plain, seen):
        np.testing.assert_array_equal(a, b)
    # It did record, at the start and after the jump, and ran the
    # every-step function in between.
    recorded = [s.step for s in diag.history]
    assert recorded[:4] == [0, 1, 2, 3] and 41 in recorded, recorded
    assert diag._hooks.traced(SENTINEL)


class Gained(keras.Model):
    """`Dense(4, relu) -> Dense(1)` times `gain`, a Python number that the
    traced step holds as a constant: a change takes effect once the user
    resets `model.train_function` (as a GAN's flag that turns an update on
    does)."""

    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(4, activation="relu", name="hidden")
        self.out = keras.layers.Dense(1, name="out")
        self.gain = 1.0

    def call(self, x):
        return self.out(self.hidden(x)) * self.gain


def test_a_train_function_the_user_reset_is_traced_again(data):
    # The same callback in both fits: after `gain = 0` and
    # `model.train_function = None`, the second fit runs the new step (the
    # outputs 0, no gradient: the weights stay), not the one traced for
    # the first (which went on updating them).
    x, y = data

    def two_fits(diag):
        keras.utils.set_random_seed(1)
        model = Gained()
        model(x[:1])  # Built before `fit`: every step is recorded.
        model.compile(keras.optimizers.SGD(LR), "mse")
        callbacks = [diag] if diag else []
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=callbacks)
        before = weights(model)
        model.gain = 0.0
        model.train_function = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GradientHealthWarning)
            model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=callbacks)
        return before, weights(model)

    plain_before, plain_after = two_fits(None)
    diag = _diag()
    seen_before, seen_after = two_fits(diag)
    for a, b in zip(plain_before, plain_after):
        np.testing.assert_array_equal(a, b)  # No gradient at gain 0.
    for a, b in zip(plain_after + plain_before, seen_after + seen_before):
        np.testing.assert_array_equal(a, b)
    # And the callback watched the new step: every gradient exactly 0 from
    # step 8, the first of the second fit (4 steps an epoch).
    ((mode, step),) = [(f.mode, f.step) for f in diag.findings]
    assert (mode, step) == (VANISHING_GRADIENTS, 8)


def test_inputs_that_change_scale_mid_run_are_told(rng):
    # A stream (not shuffled) whose inputs shift by -30 from step 40, a
    # preprocessing step that broke: the gradient norm jumps with the
    # batch, Adam's small steps leave no explosion to report, and the
    # inputs of the recording after the jump (the kept batch) are far from
    # standardized where the first batch's were not.
    x = rng.normal(size=(60 * 16, 12)).astype("float32")
    y = (x[:, :1] * x[:, 1:2] > 0).astype("float32")
    x[40 * 16 :] -= 30.0
    model = keras.Sequential(
        [
            keras.Input((12,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy")
    diag = _diag()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GradientHealthWarning)
        model.fit(
            x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, callbacks=[diag]
        )
    told = [f for f in diag.findings if f.mode == "unstandardized_inputs"]
    (finding,) = told
    assert (finding.step, finding.severity) == (40, "warning")
    # The first batch's scale is about 1 (standard normal features); the
    # shifted ones' mean is -30 (|mean| 30 +- 0.3 over 16 samples).
    assert 29.0 < finding.value < 31.0
    assert any("unstandardized_inputs" in str(w.message) for w in caught)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_gradients_and_activations_match_references(kind, data):
    x, y = data
    model = _compile(build_model(kind))
    names = LAYER_NAMES[kind]
    hidden, squash, _ = kernels(model, names)
    bias = hidden.bias.numpy()
    bias[:3] = -100.0  # three units that are zero for every sample
    hidden.bias.assign(bias)
    w1, b1 = hidden.kernel.numpy(), hidden.bias.numpy()
    w2, b2 = squash.kernel.numpy(), squash.bias.numpy()
    before = weights(model)
    diag = _diag(every_n_steps=1)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[diag])
    after = weights(model)

    assert [info.name for info in diag.layers] == names
    assert [info.activation for info in diag.layers] == ["relu", "tanh", None]
    (stats,) = diag.history
    assert stats.step == 0 and stats.batch_size == 32 and not stats.non_finite
    grads = _layer_grads(before, after, model, names)
    every = np.concatenate(list(grads.values()))
    np.testing.assert_allclose(stats.global_norm, np.linalg.norm(every), rtol=1e-5)
    for ls in stats.layers:
        g = grads[ls.layer]
        np.testing.assert_allclose(ls.grad_norm, np.linalg.norm(g), rtol=1e-5)
        np.testing.assert_allclose(ls.grad_rms, np.sqrt(np.mean(g**2)), rtol=1e-5)
        np.testing.assert_allclose(ls.grad_max, np.max(np.abs(g)), rtol=1e-5)
        np.testing.assert_allclose(
            ls.update_ratio, LR * np.linalg.norm(g) / ls.weight_norm, rtol=1e-4
        )
    # Loss of the step: mean squared error of the untrained model.
    h1 = np.maximum(x @ w1 + b1, 0.0)
    h2 = np.tanh(h1 @ w2 + b2)
    layers = {ls.layer: ls for ls in stats.layers}
    np.testing.assert_allclose(
        layers[names[0]].zero_fraction, np.mean(h1 <= 0.0), rtol=1e-6
    )
    # Units 0-2 are dead by construction; the others may be dead by chance.
    dead = np.mean(np.all(h1 <= 0.0, axis=0))
    assert dead >= 3 / 8
    np.testing.assert_allclose(layers[names[0]].dead_fraction, dead, rtol=1e-6)
    low, high = activations.profile("tanh").saturation_bounds
    np.testing.assert_allclose(
        layers[names[1]].saturation, np.mean((h2 <= low) | (h2 >= high))
    )
    assert layers[names[1]].zero_fraction is None
    assert (
        layers[names[2]].saturation is None and layers[names[2]].dead_fraction is None
    )
    prediction = h2 @ kernels(model, names)[2].kernel.numpy()  # after the step
    del prediction
    assert diag.findings == []


@pytest.mark.parametrize("kind", ["plain", "causal", "masked", "long", "grouped"])
def test_attention_peaks_in_the_step_match_keras_softmax(rng, kind):
    # The share of one-hot queries the step records for a MultiHeadAttention
    # (`diagnostics.attention`, from its projected queries and keys) equals
    # the share in Keras's own softmax (`return_attention_scores`) on the
    # step's batch: with Keras's causal mask, with an attention mask (a
    # query that sees one key or none is left out), at 40 positions, where
    # every 2nd query is measured, and for a GroupQueryAttention (4 query
    # heads, 2 key heads).
    steps = 40 if kind == "long" else 6
    x = rng.normal(size=(32, steps, 4)).astype("float32")
    mask = rng.random((32, steps, steps)) > 0.3
    mask[:, 1] = False
    inputs = [keras.Input((steps, 4))]
    attention = keras.layers.MultiHeadAttention(2, 3, name="attention")
    if kind == "grouped":
        attention = keras.layers.GroupQueryAttention(3, 4, 2, name="attention")
    call = {"use_causal_mask": kind == "causal"}
    if kind == "masked":
        inputs.append(keras.Input((steps, steps), dtype="bool"))
        call["attention_mask"] = inputs[1]
    h = attention(inputs[0], inputs[0], **call)
    h = keras.layers.GlobalAveragePooling1D()(h)
    model = _compile(keras.Model(inputs, keras.layers.Dense(1)(h)))
    for weight in attention.trainable_weights:
        if weight.path.endswith(("/query/kernel", "/key/kernel")):
            weight.assign(2.0 * rng.normal(size=weight.shape))
    data = [x, mask] if kind == "masked" else x
    call["attention_mask"] = mask if kind == "masked" else None
    _, weights = attention(x, x, return_attention_scores=True, **call)
    weights = keras.ops.convert_to_numpy(weights)  # [batch, heads, T, S]
    allowed = np.ones((32, steps, steps), bool)
    if kind == "causal":
        allowed = np.broadcast_to(np.tril(allowed[0]), allowed.shape)
    elif kind == "masked":
        allowed = mask
    one_hot = weights.max(-1) >= 0.99
    # Over the queries that see two keys or more.
    seen = np.broadcast_to((allowed.sum(-1) > 1)[:, None], one_hot.shape)
    if kind == "long":
        one_hot, seen = one_hot[:, :, ::2], seen[:, :, ::2]
    expected = one_hot[seen].mean()
    assert 0.1 < expected < 0.9
    diag = _diag(every_n_steps=1)
    model.fit(data, np.zeros((32, 1)), batch_size=32, verbose=0, callbacks=[diag])
    (entry,) = [info for info in diag.layers if info.attention]
    assert entry.name == "attention"
    (stats,) = diag.history
    (measured,) = [ls for ls in stats.layers if ls.layer == "attention"]
    np.testing.assert_allclose(measured.saturation, expected, atol=1e-6)
    assert measured.zero_fraction is None and measured.grad_norm is None


def test_attention_to_one_key_records_no_saturation(rng):
    # Every query sees the one key: weight 1 by construction, no query
    # counts, and the saturation is None (not a division by 0).
    x = rng.normal(size=(16, 4, 3)).astype("float32")
    context = rng.normal(size=(16, 1, 3)).astype("float32")
    query, key = keras.Input((4, 3)), keras.Input((1, 3))
    h = keras.layers.MultiHeadAttention(2, 3, name="attention")(query, key)
    model = _compile(keras.Model([query, key], keras.layers.Dense(1)(h)))
    diag = _diag(every_n_steps=1)
    model.fit(
        [x, context], np.zeros((16, 4, 1)), batch_size=16, verbose=0, callbacks=[diag]
    )
    (stats,) = diag.history
    (measured,) = [ls for ls in stats.layers if ls.layer == "attention"]
    assert measured.saturation is None
    assert diag.findings == []


def test_relu6_activations_in_the_step_match_numpy(rng):
    # ReLU6 outputs are counted in the step by sign and floor(x / 6)
    # (TensorFlow's FloorDiv op, a division and a floor elsewhere): the
    # recorded fractions equal NumPy's on the step's batch. Unit 0 is never
    # active (bias -100), unit 1 always at the cap (bias 100), the others
    # spread over [0, 6] and beyond it (weights of scale 4).
    x = rng.normal(size=(32, 6)).astype("float32")
    y = rng.normal(size=(32, 1)).astype("float32")
    model = _with_out(
        (6,),
        keras.layers.Dense(8, activation="relu6", name="capped"),
    )
    _compile(model)
    capped = model.get_layer("capped")
    capped.kernel.assign(4.0 * rng.normal(size=(6, 8)).astype("float32"))
    capped.bias.assign(np.array([-100, 100, 0, 0, 0, 0, 0, 0], "float32"))
    h = np.clip(x @ capped.kernel.numpy() + capped.bias.numpy(), 0.0, 6.0)
    diag = _diag(every_n_steps=1)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[diag])

    (stats,) = diag.history
    (ls,) = [ls for ls in stats.layers if ls.layer == "capped"]
    assert 0 < np.mean(h >= 6.0) < 1 and 0 < np.mean(h <= 0.0) < 1
    np.testing.assert_allclose(ls.zero_fraction, np.mean(h <= 0.0), rtol=1e-6)
    np.testing.assert_allclose(ls.saturation, np.mean(h >= 6.0), rtol=1e-6)
    np.testing.assert_allclose(
        ls.dead_fraction, np.mean(np.all(h <= 0.0, axis=0)), rtol=1e-6
    )


@tensorflow_only
def test_activations_with_a_dynamic_dimension_match_numpy(rng, tmp_path):
    import tensorflow as tf

    # Dense on (batch, time, features) with an unknown time length: the
    # element count is not static, so the graph passes it to the host.
    x = rng.normal(size=(16, 7, 3)).astype("float32")
    y = rng.normal(size=(16, 1)).astype("float32")
    model = _with_out(
        (None, 3),
        keras.layers.Dense(5, activation="relu", name="hidden"),
        keras.layers.GlobalAveragePooling1D(),
    )
    _compile(model)
    hidden = model.get_layer("hidden")
    hidden.bias.assign([-100.0, 0.0, 0.0, 0.0, 0.0])  # Unit 0 is dead.
    w, b = hidden.kernel.numpy(), hidden.bias.numpy()
    # A dataset whose time length the graph does not know.
    dataset = tf.data.Dataset.from_generator(
        lambda: iter([(x, y)]),
        output_signature=(
            tf.TensorSpec((None, None, 3), "float32"),
            tf.TensorSpec((None, 1), "float32"),
        ),
    )
    diag = _diag(every_n_steps=1, log_dir=tmp_path, histogram_every_n_steps=1)
    model.fit(
        dataset.repeat(),
        epochs=1,
        steps_per_epoch=1,
        verbose=0,
        shuffle=False,
        callbacks=[diag],
    )
    ((_, _, _, per_sample, _),) = diag._hooks._layout.activations
    assert per_sample is None  # The dynamic path of the element count.
    (stats,) = diag.history
    ls = next(ls for ls in stats.layers if ls.layer == "hidden")
    h = np.maximum(x @ w + b, 0.0)
    np.testing.assert_allclose(ls.zero_fraction, np.mean(h <= 0.0), rtol=1e-6)
    dead = np.mean(np.all(h <= 0.0, axis=(0, 1)))
    assert dead >= 1 / 5
    np.testing.assert_allclose(ls.dead_fraction, dead, rtol=1e-6)
    # The gradient histogram of the step is written too.
    assert "grad_hist/hidden" in _tags(tmp_path).Tags()["tensors"]


class _ListLogs(keras.Sequential):
    def train_step(self, *args):
        if BACKEND == "jax":  # train_step(state, data) -> (logs, state)
            logs, state = super().train_step(*args)
            return list(logs.values()), state
        return list(super().train_step(*args).values())


def test_train_step_that_returns_no_dict_is_refused(data):
    x, y = data
    layers = [keras.Input((6,)), keras.layers.Dense(1)]
    model = _compile(_ListLogs(layers, name="list_logs"))
    with pytest.raises(ValueError, match="`train_step` to return a dict"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[_diag(every_n_steps=1)])


def test_mixed_precision_gradients_are_unscaled(data):
    x, y = data
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = _compile(build_model("sequential"))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    before = weights(model)
    diag = _diag(every_n_steps=1)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[diag])
    # The loss scale is 2**15: a scaled gradient would be 32768x larger.
    _assert_norms_match_sgd_step(diag, before, model, "sequential", rtol=1e-4)


def test_a_loss_scale_that_underflows_to_zero_is_no_crash(rng):
    # Probed: mixed_float16 under SGD(1e4), the loss NaN from step 1 on: the
    # loss scale halves at every overflow, from 2**15 to 0 at the 165th,
    # and unscaling the norms divided by 0 (`fit` raised ZeroDivisionError
    # on both backends). From 2**-140 it is 0 within 12 steps.
    x = rng.normal(size=(24 * 8, 6)).astype("float32")
    y = rng.normal(size=(24 * 8, 1)).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    scaled = keras.optimizers.LossScaleOptimizer(
        keras.optimizers.SGD(1e4), initial_scale=2.0**-140
    )
    model.compile(scaled, "mse")
    diag = _diag()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GradientHealthWarning)
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[diag])
    assert float(keras.ops.convert_to_numpy(scaled.dynamic_scale)) == 0.0
    assert NON_FINITE in {f.mode for f in diag.findings}


_MIRRORED = textwrap.dedent(
    """
    import json, os
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from keras_actloss.callbacks import GradientDiagnostics
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = rng.normal(size=(32, 1)).astype("float32")
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = keras.Sequential([keras.Input((6,)),
            keras.layers.Dense(8, activation="relu", name="hidden"),
            keras.layers.Dense(1, name="out")])
        model.compile(keras.optimizers.SGD(0.1), "mse")
    before = [v.numpy() for v in model.trainable_variables]
    diag = GradientDiagnostics(every_n_steps=1, check_model=False)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[diag])
    after = [v.numpy() for v in model.trainable_variables]
    g = [((b - a) / 0.1).ravel() for b, a in zip(before, after)]
    s = diag.history[0]
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "reference": [float(np.linalg.norm(np.concatenate(g[:2]))),
                      float(np.linalg.norm(np.concatenate(g[2:])))],
        "recorded": [ls.grad_norm for ls in s.layers],
        "global": s.global_norm, "batch_size": s.batch_size,
        "zero_fraction": s.layers[0].zero_fraction,
        "reference_zero": float(np.mean(np.maximum(
            x @ before[0] + before[1], 0) <= 0)),
    }))
    """
)


@tensorflow_only
def test_mirrored_strategy_gradients_are_summed_across_replicas():
    # Logical devices must be configured before TensorFlow initialises them.
    result = run_script(_MIRRORED)
    assert result["replicas"] == 2
    np.testing.assert_allclose(result["recorded"], result["reference"], rtol=1e-5)
    np.testing.assert_allclose(
        result["global"], np.linalg.norm(result["reference"]), rtol=1e-5
    )
    assert result["batch_size"] == 32  # 16 per replica, summed
    np.testing.assert_allclose(
        result["zero_fraction"], result["reference_zero"], rtol=1e-6
    )


def test_jit_compile_records_the_applied_gradients(data):
    x, y = data
    model = _compile(build_model("functional"), jit_compile=True)
    before = weights(model)
    diag = _diag(every_n_steps=1)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[diag])
    _assert_norms_match_sgd_step(diag, before, model, "functional", rtol=1e-5)


def test_jit_compile_records_a_model_with_large_tensors(rng):
    # A kernel of 64 x 128 = 8192 elements gets a norm of its own
    # (`step_stats.NORM_MIN_ELEMENTS` is 4096), which XLA must compile (it
    # has no `EuclideanNorm`): the gradients, weights and updates.
    x = rng.normal(size=(64, 64)).astype("float32")
    y = rng.normal(size=(64, 1)).astype("float32")
    model = _with_out(
        (64,),
        keras.layers.Dense(128, activation="relu", name="wide"),
    )
    _compile(model, jit_compile=True)
    before = weights(model)
    diag = _diag(every_n_steps=1)
    model.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[diag])
    # The one step, recorded: ||dw / lr|| layer by layer, and the update
    # ratio ||dw|| / ||w||.
    grads = _layer_grads(before, weights(model), model, ["wide", "out"])
    ((stats),) = diag.history
    for ls, (kernel, bias) in zip(stats.layers, (before[:2], before[2:])):
        np.testing.assert_allclose(
            ls.grad_norm, np.linalg.norm(grads[ls.layer]), rtol=1e-5
        )
        w = np.sqrt(np.sum(kernel**2) + np.sum(bias**2))
        np.testing.assert_allclose(
            ls.update_ratio, LR * np.linalg.norm(grads[ls.layer]) / w, rtol=1e-4
        )


@pytest.mark.parametrize("jit_compile", [True, False])
def test_every_recorded_step_equals_the_sgd_weight_change(data, jit_compile):
    # Six steps of 8 samples over two epochs, each recorded (dense start):
    # recording k holds ||w_k - w_{k+1}|| / lr per layer and over all layers.
    x, y = data
    model = _compile(build_model("sequential"), jit_compile=jit_compile)
    names = LAYER_NAMES["sequential"]
    diag, seen = _diag(every_n_steps=1), WeightsPerStep()
    model.fit(x[:24], y[:24], batch_size=8, epochs=2, verbose=0, callbacks=[diag, seen])
    seen.seen.append(weights(model))
    assert [s.step for s in diag.history] == [0, 1, 2, 3, 4, 5]
    for stats in diag.history:
        grads = _layer_grads(
            seen.seen[stats.step], seen.seen[stats.step + 1], model, names
        )
        for ls in stats.layers:
            np.testing.assert_allclose(
                ls.grad_norm, np.linalg.norm(grads[ls.layer]), rtol=1e-5
            )
        every = np.concatenate(list(grads.values()))
        np.testing.assert_allclose(stats.global_norm, np.linalg.norm(every), rtol=1e-5)
        # The kernels' share of the squared norm: their dw / lr over all.
        before, after = seen.seen[stats.step], seen.seen[stats.step + 1]
        squares = [np.sum(((b - a) / LR) ** 2) for b, a in zip(before, after)]
        kernel = sum(q for q, b in zip(squares, before) if b.ndim >= 2)
        np.testing.assert_allclose(stats.kernel_share, kernel / sum(squares), rtol=1e-4)


@pytest.mark.skipif(
    not hasattr(keras.optimizers, "MultiOptimizer"), reason="Keras < 3.15"
)
def test_multi_optimizer_layers_each_equal_their_sgd_weight_change(data):
    # `keras.optimizers.MultiOptimizer` (a rate per group of layers, as in
    # fine-tuning) has no learning rate of its own: "hidden" trains at 0.01,
    # the others at LR. Each layer's norm is ||dw|| / its own rate; the
    # noted learning rate is the largest.
    from keras.optimizers import MultiOptimizer, OptimizerMap

    x, y = data
    rates = {"hidden": 0.01, "squash": LR, "out": LR}
    optimizer = MultiOptimizer(
        OptimizerMap(
            keras.optimizers.SGD(LR), {".*hidden/.*": keras.optimizers.SGD(0.01)}
        )
    )
    model = _compile(build_model("sequential"), optimizer)
    names = LAYER_NAMES["sequential"]
    diag, seen = _diag(every_n_steps=1), WeightsPerStep()
    model.fit(x[:24], y[:24], batch_size=8, epochs=1, verbose=0, callbacks=[diag, seen])
    seen.seen.append(weights(model))
    assert [s.step for s in diag.history] == [0, 1, 2]
    for stats in diag.history:
        before, after = seen.seen[stats.step], seen.seen[stats.step + 1]
        for ls in stats.layers:
            grads = _layer_grads(before, after, model, names, rates[ls.layer])
            np.testing.assert_allclose(
                ls.grad_norm, np.linalg.norm(grads[ls.layer]), rtol=1e-5
            )
        assert stats.learning_rate == pytest.approx(max(0.01, LR))
        # One loss, one `apply` of the MultiOptimizer: the layers are judged
        # together (`StepStats.apply_groups`).
        assert stats.apply_groups == {}


def test_steps_continue_across_fits_and_validation_is_not_recorded(data):
    x, y = data
    model = _compile(build_model("sequential"))
    diag = _diag(every_n_steps=2)
    diag.DENSE_STEPS = 0  # No dense start: one recording every 2 steps.
    # 4 batches of 8 per epoch; evaluation on validation data in between.
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=1,
        verbose=0,
        callbacks=[diag],
        validation_data=(x, y),
    )
    assert [s.step for s in diag.history] == [0, 2]
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        verbose=0,
        callbacks=[diag],
        validation_data=(x, y),
    )
    assert [s.step for s in diag.history] == [0, 2, 4, 6, 8, 10]
    assert _iterations(model) == 12
    assert all(s.batch_size == 8 for s in diag.history)


def test_default_schedule_is_dense_at_the_start(data):
    x, y = data
    model = _compile(build_model("sequential"))
    diag = _diag()
    diag.DENSE_STEPS = 2
    # The schedule alone: no burst after a jump (single-sample batches make
    # the norms spiky; bursts have their own tests below).
    diag._burst = lambda start, noisy, kind="jump", batch=None: None
    model.fit(x, y, batch_size=1, epochs=1, verbose=0, callbacks=[diag])
    # recording_gap(s, 0, 100, 2) = max(1, s // 2): every step up to 3, then
    # 4 -> 6 (gap 2) -> 9 (gap 3) -> 13 (4) -> 19 (6) -> 28 (9).
    assert [s.step for s in diag.history] == [0, 1, 2, 3, 4, 6, 9, 13, 19, 28]


def test_steps_per_execution_records_last_step_of_execution(data):
    x, y = data
    model = _compile(build_model("sequential"), steps_per_execution=2)
    diag = _diag(every_n_steps=2)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[diag])
    # Executions cover steps (0, 1) and (2, 3); each contains a multiple of 2.
    assert [s.step for s in diag.history] == [1, 3]
    assert all(np.isfinite(s.global_norm) and s.global_norm > 0 for s in diag.history)


def test_steps_per_execution_reads_the_learning_rate_before_each_execution(data):
    # 8 steps an epoch in executions of 2; a LearningRateScheduler sets lr
    # 0.01, then 0.02 from epoch 1: read before each of the 8 executions,
    # mid-epoch too (where JAX's fit keeps the optimizer's variables
    # purged: read from its training state).
    x, y = data
    model = _compile(build_model("sequential"), steps_per_execution=2)
    diag = _diag()
    seen = []

    class Rates(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(diag._host_rate)

    scheduler = keras.callbacks.LearningRateScheduler(lambda e: 0.01 if e < 1 else 0.02)
    model.fit(
        x,
        y,
        batch_size=4,
        epochs=2,
        verbose=0,
        callbacks=[scheduler, diag, Rates()],
    )
    assert seen == pytest.approx([0.01] * 4 + [0.02] * 4)


def test_steps_per_execution_count_follows_short_last_executions(data):
    # 4 steps per epoch in executions of 3: steps (0-2) and (3), though
    # Keras's batch callbacks count 3 for each (18 steps in 3 epochs). The
    # count moves back to the optimizer's at each epoch end; every
    # execution of these 12 steps is recorded (the dense start), at its
    # last step.
    x, y = data
    model = _compile(build_model("sequential"), steps_per_execution=3)
    diag = _diag()
    model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[diag])
    assert [s.step for s in diag.history] == [2, 3, 6, 7, 10, 11]
    assert diag._step == 12 == int(model.optimizer.iterations.numpy())


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_steps_per_execution_activations_count_every_batch_of_the_execution(
    rng, jit_compile
):
    # With 4 steps per execution a recording counts the activations of all
    # 4 batches (128 samples), not only the last: lr 0 keeps the weights, so
    # the reference is one forward pass of the hidden ReLU layer over them.
    # (Under XLA too: the sums' variable has a static shape.)
    x = rng.normal(size=(128, 6)).astype("float32")
    y = rng.normal(size=(128, 1)).astype("float32")
    model = _compile(
        build_model("sequential"),
        keras.optimizers.SGD(0.0),
        steps_per_execution=4,
        jit_compile=jit_compile,
    )
    diag = _diag()
    model.fit(x, y, batch_size=32, shuffle=False, verbose=0, callbacks=[diag])
    (stats,) = diag.history
    assert (stats.step, stats.batch_size) == (3, 128)
    (hidden_layer,) = kernels(model, ["hidden"])
    kernel, bias = (np.asarray(v.numpy()) for v in hidden_layer.weights)
    hidden = np.maximum(x @ kernel + bias, 0.0)
    layer = {ls.layer: ls for ls in stats.layers}["hidden"]
    np.testing.assert_allclose(layer.zero_fraction, np.mean(hidden <= 0.0), rtol=1e-6)
    dead = np.mean(np.all(hidden <= 0.0, axis=0))
    np.testing.assert_allclose(layer.dead_fraction, dead, rtol=1e-6)


def _mlp_grad_rms(x, y, params) -> list[float]:
    """Per-layer gradient RMS of `build_model`'s MLP (relu, tanh, linear)
    under mean squared error on the batch `(x, y)`: backpropagation by
    hand in NumPy."""
    (w1, b1), (w2, b2), (w3, b3) = params
    z1 = x @ w1 + b1
    h1 = np.maximum(z1, 0.0)
    h2 = np.tanh(h1 @ w2 + b2)
    d3 = 2.0 * (h2 @ w3 + b3 - y) / len(x)
    d2 = (d3 @ w3.T) * (1.0 - h2**2)
    d1 = (d2 @ w2.T) * (z1 > 0.0)
    grads = [(x, d1), (h1, d2), (h2, d3)]
    return [
        float(np.sqrt(np.mean(np.concatenate([(a.T @ d).ravel(), d.sum(0)]) ** 2)))
        for a, d in grads
    ]


def test_steps_per_execution_gradients_of_every_step_of_the_execution(rng, monkeypatch):
    # With 4 steps per execution, recorded densely, the recording of step 3
    # carries the gradient RMS of steps 0-2 too (`execution_rms`, from
    # their every-step rows), which the rules read (and `history` does not
    # keep). lr 0 keeps the weights: each step's reference is its batch's
    # gradients by hand.
    from keras_actloss.diagnostics.rules import HealthRules

    observe, seen = HealthRules.observe, []

    def noted(self, stats):
        seen.append(dict(stats.execution_rms))
        return observe(self, stats)

    monkeypatch.setattr(HealthRules, "observe", noted)
    x = rng.normal(size=(128, 6)).astype("float32")
    y = rng.normal(size=(128, 1)).astype("float32")
    model = _compile(
        build_model("sequential"), keras.optimizers.SGD(0.0), steps_per_execution=4
    )
    names = LAYER_NAMES["sequential"]
    params = [
        tuple(np.asarray(v.numpy(), "float64") for v in layer.weights)
        for layer in kernels(model, names)
    ]
    diag = _diag()
    model.fit(x, y, batch_size=32, shuffle=False, verbose=0, callbacks=[diag])
    (stats,) = diag.history
    (execution,) = seen
    assert stats.step == 3 and sorted(execution) == [0, 1, 2]
    assert stats.execution_rms == {}
    for step, rms in execution.items():
        batch = slice(32 * step, 32 * step + 32)
        expected = _mlp_grad_rms(x[batch], y[batch], params)
        np.testing.assert_allclose([rms[n] for n in names], expected, rtol=1e-4)
    recorded = _mlp_grad_rms(x[96:], y[96:], params)
    np.testing.assert_allclose(
        [ls.grad_rms for ls in stats.layers], recorded, rtol=1e-4
    )


def test_vanishing_is_reported_within_one_execution_of_8_steps(rng):
    # Ten sigmoid layers under SGD (their first layers' gradients ~1e-7 of
    # the output layer's from step 0) with 8 steps per execution: the
    # recording of step 7 and the rows of steps 0-6 confirm it at 7 (the
    # second execution's recording, at 15, did before).
    x = rng.normal(size=(512, 16)).astype("float32")
    y = rng.integers(0, 3, size=512)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((16,))]
        + [keras.layers.Dense(32, activation="sigmoid") for _ in range(10)]
        + [keras.layers.Dense(3, activation="softmax")]
    )
    model.compile(
        keras.optimizers.SGD(0.1),
        "sparse_categorical_crossentropy",
        steps_per_execution=8,
    )
    diag = GradientDiagnostics(check_model=False)
    seen = []
    with pytest.warns(GradientHealthWarning, match="vanishing_gradients"):
        model.fit(
            x,
            y,
            batch_size=32,
            epochs=1,
            verbose=0,
            callbacks=[diag, _Reported(diag, seen)],
        )
    vanishing = [f for f in diag.findings if f.mode == "vanishing_gradients"]
    assert vanishing and all(f.step == 0 for f in vanishing)
    assert "for each of the 8 steps of its execution (steps 0-7)" in (
        vanishing[0].message
    )
    assert {
        reported for mode, _, reported in seen if mode == "vanishing_gradients"
    } == {7}


def test_steps_per_execution_sentinel_sees_every_step(data):
    x, y = data
    x = x.copy()
    x[16] = np.nan  # batch 2 (of 8 samples), inside the second execution
    model = _compile(build_model("sequential"), steps_per_execution=2)
    diag = _diag(every_n_steps=2)
    with pytest.warns(GradientHealthWarning, match="non_finite"):
        model.fit(
            x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[diag]
        )
    assert [(f.mode, f.layer, f.step) for f in diag.findings] == [
        (NON_FINITE, "hidden", 2)
    ]


def test_gradient_accumulation_records_every_batch_at_its_step(data):
    # With `gradient_accumulation_steps=2` the optimizer updates on every
    # second `apply` (with the mean of the two batches' gradients) and its
    # `iterations` counts updates: the callback's step is the batch, and
    # each batch's gradient its own.
    x, y = data

    def fitted(optimizer, n):
        model = build_model("sequential")
        model.set_weights(start)
        _compile(model, optimizer)
        diag = _diag(every_n_steps=1)
        model.fit(
            x[: 8 * n],
            y[: 8 * n],
            batch_size=8,
            shuffle=False,
            verbose=0,
            callbacks=[diag],
        )
        return model, diag

    start = build_model("sequential").get_weights()
    single, _ = fitted(keras.optimizers.SGD(LR), 1)
    model, diag = fitted(keras.optimizers.SGD(LR, gradient_accumulation_steps=2), 2)
    assert [s.step for s in diag.history] == [0, 1]
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 1  # Updates.
    names = LAYER_NAMES["sequential"]
    index = {id(v): i for i, v in enumerate(model.weights)}  # `start`'s order.
    # Batch 0's gradient from a plain SGD step on it; batch 1's from the
    # accumulated update, w0 - w1 = LR * (g0 + g1) / 2.
    first = _layer_grads(start, weights(single), single, names)
    both = _layer_grads(start, weights(model), model, names, lr=LR / 2)
    for name in names:
        variables = model.get_layer(name).trainable_variables
        w0 = np.concatenate([start[index[id(v)]].ravel() for v in variables])
        recorded = [
            next(ls for ls in stats.layers if ls.layer == name)
            for stats in diag.history
        ]
        np.testing.assert_allclose(
            [ls.grad_norm for ls in recorded],
            [np.linalg.norm(first[name]), np.linalg.norm(both[name] - first[name])],
            rtol=1e-4,
        )
        # The weights change at the second batch only.
        assert recorded[0].update_ratio == 0.0
        np.testing.assert_allclose(
            recorded[1].update_ratio,
            LR * np.linalg.norm(both[name]) / 2 / np.linalg.norm(w0),
            rtol=1e-4,
        )


def test_check_internals_notices_a_changed_step_counter(monkeypatch):
    # Under gradient accumulation the step is the optimizer's own count of
    # its calls (`_model_plan.step_counter`), which each backend's check of
    # the Keras internals covers.
    from keras.src.optimizers.base_optimizer import BaseOptimizer

    from keras_actloss.callbacks._callback_support import _hooks_class

    hooks = sys.modules[_hooks_class().__module__]
    hooks.check_internals()
    calls = property(lambda self: self._calls)
    monkeypatch.setattr(BaseOptimizer, "iterations", calls)
    with pytest.raises(
        RuntimeError, match=r"changed in Keras .*Optimizer\._iterations"
    ):
        hooks.check_internals()


def test_check_internals_notices_a_changed_layer_graph(monkeypatch):
    # `LayerInfo.upstream` follows the functional graphs' nodes
    # (`_model_plan._Flow`), which each backend's check covers.
    from keras.src.ops.node import Node

    from keras_actloss.callbacks._callback_support import _hooks_class

    hooks = sys.modules[_hooks_class().__module__]
    monkeypatch.delattr(Node, "input_tensors")
    with pytest.raises(RuntimeError, match=r"changed in Keras .*Node\.input_tensors"):
        hooks.check_internals()


def _reporting(diag):
    """A callback to place after `diag`, and the list it fills with `(mode,
    layer, finding step, batch)` for each finding at the batch it appeared."""
    seen = []

    class Reported(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.extend(
                (f.mode, f.layer, f.step, batch) for f in diag.findings[len(seen) :]
            )

    return Reported(), seen


def test_gradient_accumulation_reports_a_dead_layer_in_time(rng):
    # At the defaults: dense recording from step 0 counts batches, not
    # updates (4 batches per update here).
    x = rng.normal(size=(256, 6)).astype("float32")
    y = rng.normal(size=(256, 1)).astype("float32")
    model = build_model("sequential")
    model.get_layer("hidden").bias.assign(np.full(8, -100.0, "float32"))
    _compile(model, keras.optimizers.Adam(1e-3, gradient_accumulation_steps=4))
    diag = GradientDiagnostics(check_model=False)
    watch, seen = _reporting(diag)

    with pytest.warns(GradientHealthWarning, match="dead_relu"):
        model.fit(x, y, batch_size=32, verbose=0, callbacks=[diag, watch])
    # 128 samples, 4 recorded batches of 32, as without accumulation.
    assert seen == [("dead_relu", "hidden", 0, 4)]


@pytest.mark.parametrize("batch_size, reported", [(1, 63), (2, 31)])
def test_a_dead_layer_on_the_smallest_batches_is_reported(rng, batch_size, reported):
    # A layer of 8 units dead from step 0 on batches of 1 or 2: reported
    # once its window holds 64 samples (half of `min_samples` for a whole
    # layer), at batch 63 or 31. Probed before: never on batches of 1 (a
    # window held at most 32 recordings, a burst 32 steps), at batch 145
    # from the start.
    x = rng.normal(size=(96, 6)).astype("float32")
    y = rng.normal(size=(96, 1)).astype("float32")
    model = build_model("sequential")
    model.get_layer("hidden").bias.assign(np.full(8, -100.0, "float32"))
    _compile(model, keras.optimizers.Adam(1e-3))
    diag = GradientDiagnostics(check_model=False)
    watch, seen = _reporting(diag)

    with pytest.warns(GradientHealthWarning, match="dead_relu"):
        model.fit(x, y, batch_size=batch_size, verbose=0, callbacks=[diag, watch])
    assert seen == [("dead_relu", "hidden", 0, reported)]


def test_an_explosion_of_unnormalized_residual_blocks_names_them(rng):
    # 40 blocks `x + Dense(Dense(x, relu))` with no normalization, on
    # standardized inputs of a classifier: each join doubles the stream's
    # variance (measured in round 8: RMS 1.4e5-6e5 at the last block, the
    # global norm 3e6 at step 0). The callback tells the rules the joins
    # (`residual_sums`), and the explosion names them, not a custom
    # initialisation.
    x = rng.normal(size=(128, 16)).astype("float32")
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype("int32")
    inputs = keras.Input((16,))
    h = keras.layers.Dense(32)(inputs)
    for _ in range(40):
        branch = keras.layers.Dense(
            32, activation="relu", kernel_initializer="he_normal"
        )(h)
        h = keras.layers.Add()([h, keras.layers.Dense(32)(branch)])
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    diag = GradientDiagnostics(check_model=False)
    with pytest.warns(GradientHealthWarning, match="exploding_gradients"):
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[diag])
    assert diag._rules.residual_sums == 40
    found = next(f for f in diag.findings if f.layer is None)
    assert found.mode == "exploding_gradients" and found.step == 0
    assert "The model adds 40 residual branches to its stream" in found.message
    assert found.fix.startswith("Normalize in each residual block")


def _native_relu():
    """The backend's own ReLU function (`tf.nn.relu`, `jax.nn.relu`)."""
    if BACKEND == "jax":
        import jax

        return jax.nn.relu
    import tensorflow as tf

    return tf.nn.relu


@pytest.mark.parametrize("which", ["keras_ops", "native"])
def test_a_dead_layer_with_a_backend_relu_function_is_reported(rng, which):
    # `Dense(8, activation=tf.nn.relu)` (or `keras.ops.relu`) is watched as
    # a ReLU layer: dead from step 0 and reported, at the defaults.
    relu = keras.ops.relu if which == "keras_ops" else _native_relu()
    x = rng.normal(size=(256, 6)).astype("float32")
    y = rng.normal(size=(256, 1)).astype("float32")
    model = _with_out(
        (6,),
        keras.layers.Dense(
            8,
            activation=relu,
            bias_initializer=keras.initializers.Constant(-100.0),
            name="hidden",
        ),
    )
    _compile(model, keras.optimizers.Adam(1e-3))
    diag = GradientDiagnostics(check_model=False)
    with pytest.warns(GradientHealthWarning, match="dead_relu"):
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[diag])
    assert [info.activation for info in diag.layers] == ["relu", None]
    assert [(f.mode, f.layer, f.step) for f in diag.findings] == [
        ("dead_relu", "hidden", 0)
    ]


def _identity_relu_fit(x, y, lr: float, batch_size: int) -> GradientDiagnostics:
    """One epoch, unshuffled, of a ReLU `Dense` named 'h' with as many
    units as `x` has features, each reading its own (identity kernel), and
    the linear output, under SGD at `lr`, with the callback at its
    defaults (no model check)."""
    units = x.shape[1]
    layer = keras.layers.Dense(
        units, activation="relu", kernel_initializer="identity", name="h"
    )
    model = _compile(_with_out((units,), layer), keras.optimizers.SGD(lr))
    diag = GradientDiagnostics(check_model=False)
    model.fit(
        x.astype("float32"),
        y.astype("float32"),
        batch_size=batch_size,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[diag],
    )
    return diag


def test_units_active_between_recordings_are_seen_by_their_gradient(rng):
    # Units 0-2 of ReLU layer 'h' are active on every sample; unit 3 only on
    # the batch of step 9 (its input +1 there, -1 elsewhere). Recorded at
    # the defaults on steps 0-7, 8, 10, 12 and 15 of 16: the bias's gradient
    # of every step (exactly 0 for a unit inactive on its whole batch)
    # gives each unit's last active step, recorded or not, the share of the
    # steps up to it with a moving average over 64 steps (its weight
    # k = 63/64 a step, divided by the weights' sum), and the steps seen.
    x = np.abs(rng.normal(size=(128, 4))) + 0.1
    x[:, 3] = -1.0
    x[72:80, 3] = 1.0  # Batch 9 of 8 samples.
    y = rng.normal(size=(128, 1))
    diag = _identity_relu_fit(x, y, lr=1e-6, batch_size=8)
    assert [s.step for s in diag.history] == [*range(9), 10, 12, 15]
    flows = {s.step: s.layers[0].unit_flow for s in diag.history}
    assert all(s.layers[1].unit_flow is None for s in diag.history)  # Linear.
    k = 63 / 64
    last, share, history = flows[8]
    assert last == [8.0] * 3 + [-1.0] and history == [9.0] * 3 + [0.0]
    assert share == pytest.approx([1.0] * 3 + [0.0], rel=1e-9)
    for step in (10, 12, 15):
        last, share, history = flows[step]
        assert last == [step] * 3 + [9.0] and history == [step + 1] * 3 + [10.0]
        assert share == pytest.approx([1.0] * 3 + [(1 - k) / (1 - k**10)], rel=1e-9)


def test_units_that_grow_rare_in_training_are_not_dead(rng):
    # ReLU layer 'h' reads one input each: units 0-2 inputs of N(0, 1),
    # active on half the samples throughout; units 3-7 inputs that drift
    # down from step 100 to step 400 by 2.9, after which they are active on
    # 0.19% of the samples (P(N(0, 1) > 2.9)): on a batch of 32 one step in
    # 17. Recorded 100 steps apart, 4 recordings (128 samples) often find
    # 4 or more of them silent, half the layer (told as dead units at step
    # 436 before their gradients were read on every step); every step's
    # gradients show them active on steps between the recordings, and, in
    # the dense recordings after half the layer was silent on a batch,
    # silent no longer than their share of the steps makes likely.
    steps, batch = 800, 32
    x = rng.normal(size=(steps, batch, 8))
    drift = np.clip((np.arange(steps) - 100) / 300, 0, 1) * 2.9
    x[:, :, 3:] -= drift[:, None, None]
    x = x.reshape(-1, 8).astype("float32")
    y = (x[:, :3] @ rng.normal(size=(3, 1))).astype("float32")
    diag = _identity_relu_fit(x, y, lr=1e-3, batch_size=batch)
    # The premise: windows of 4 recordings whose batches have 4 or more of
    # the 5 inputs at most 0 on every sample (the layer's weights move by
    # less than 1e-3 here).
    steps = [s.step for s in diag.history]
    active = np.array([(x[i * batch : (i + 1) * batch, 3:] > 0).any(0) for i in steps])
    silent = [(~active[i : i + 4].any(0)).sum() for i in range(len(active) - 3)]
    assert max(silent) >= 4
    assert diag.findings == []


def test_saturation_that_begins_mid_run_is_told_within_ten_steps():
    # A tanh MLP (4 x Dense(64), 2 classes) healthy under Adam for 150
    # steps, then each hidden kernel 20x larger from step 150 on: 84-94% of
    # the hidden outputs in tanh's flat tails (|y| > 0.99, measured on 512
    # samples by a probe), the loss 0.1 -> 0.4 and staying up, the
    # gradient norm up a few times only (no jump). The loss 3x its recent
    # level two steps in a row starts dense recordings: told within 10
    # steps (before, when the sparse schedule next came: at 192, and never
    # with the onset at step 300). Nothing before the onset.
    # The probe's data and seed (another seed's sparse schedule may come
    # within 10 steps of the onset by chance).
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2048, 20)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(20, 2)) + 0.3 * rng.normal(size=(2048, 2)), 1)
    keras.utils.set_random_seed(0)
    hidden = keras.Sequential(
        [keras.Input((20,))]
        + [keras.layers.Dense(64, activation="tanh", name=f"d{i}") for i in range(4)]
        + [keras.layers.Dense(2, activation="softmax")]
    )
    hidden.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    onset, told = 150, []
    diag = GradientDiagnostics(check_model=False)

    class Saturate(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if (
                int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
                == onset
            ):
                for layer in self.model.layers[:4]:
                    layer.kernel.assign(layer.kernel * 20.0)

    class Told(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) - 1
            told.extend((f, step) for f in diag.findings[len(told) :])

    with pytest.warns(GradientHealthWarning, match="saturated_activations"):
        hidden.fit(
            x,
            y,
            batch_size=32,
            epochs=4,
            verbose=0,
            callbacks=[Saturate(), diag, Told()],
        )
    failures = [(f, step) for f, step in told if f.severity == "failure"]
    assert failures, "the saturation was not told"
    first, step = failures[0]
    assert first.mode == "saturated_activations"
    assert onset <= first.step and step <= onset + 10


def test_a_dead_lambda_relu_layer_is_reported(rng):
    # `Lambda(keras.ops.relu)` after a linear Dense with bias -100: its
    # outputs are counted as a ReLU layer's (probed: it was never reported,
    # the layers before it got exactly 0 gradient on every step), dead from
    # step 0 and reported at the defaults; the ReLU layer after it names it.
    x = rng.normal(size=(256, 6)).astype("float32")
    y = rng.normal(size=(256, 1)).astype("float32")
    model = _with_out(
        (6,),
        keras.layers.Dense(
            8, bias_initializer=keras.initializers.Constant(-100.0), name="pre"
        ),
        keras.layers.Lambda(keras.ops.relu, name="lam"),
        keras.layers.Dense(8, activation="relu", name="after"),
    )
    _compile(model, keras.optimizers.Adam(1e-3))
    diag = GradientDiagnostics(check_model=False)
    with pytest.warns(GradientHealthWarning, match="dead_relu"):
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[diag])
    assert [info.activation for info in diag.layers] == [None, "relu", "relu", None]
    found = [(f.mode, f.layer, f.step) for f in diag.findings]
    assert found == [("dead_relu", "lam", 0), ("dead_relu", "after", 0)]
    assert diag.findings[1].fix.startswith("Fix layer 'lam' first")


def test_a_dead_relu_operation_of_a_functional_model_is_reported(rng):
    # `keras.ops.relu(x)` on a functional model's tensor, after a linear
    # Dense with bias -100: an operation of the graph, not a layer (probed:
    # never reported, as a function of the user's own). Its outputs are
    # counted as a ReLU layer's, dead from step 0 and reported at the
    # defaults; the ReLU Dense after it names it.
    x = rng.normal(size=(256, 6)).astype("float32")
    y = rng.normal(size=(256, 1)).astype("float32")
    inputs = keras.Input((6,))
    pre = keras.layers.Dense(
        8, bias_initializer=keras.initializers.Constant(-100.0), name="pre"
    )(inputs)
    relu = keras.ops.relu(pre)
    after = keras.layers.Dense(8, activation="relu", name="after")(relu)
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(after))
    _compile(model, keras.optimizers.Adam(1e-3))
    diag = GradientDiagnostics(check_model=False)
    with pytest.warns(GradientHealthWarning, match="dead_relu"):
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[diag])
    name = relu._keras_history.operation.name
    assert [(i.name, i.activation) for i in diag.layers] == [
        ("pre", None),
        (name, "relu"),
        ("after", "relu"),
        ("out", None),
    ]
    found = [(f.mode, f.layer, f.step) for f in diag.findings]
    assert found == [("dead_relu", name, 0), ("dead_relu", "after", 0)]
    assert diag.findings[1].fix.startswith(f"Fix layer '{name}' first")


class _DenseRelu(keras.layers.Layer):
    """A layer of the user's own: a Dense through ReLU, dead from the start
    (bias -100; without a bias, kernel -1 on inputs at least 0)."""

    def __init__(self, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        init = keras.initializers.Constant
        self.dense = keras.layers.Dense(
            8,
            use_bias=use_bias,
            kernel_initializer="glorot_uniform" if use_bias else init(-1.0),
            bias_initializer=init(-100.0),
            name="inner",
        )

    def call(self, x):
        return keras.ops.relu(self.dense(x))


# Keras's TensorFlow optimizer warns of the weights it gets no gradient for.
@pytest.mark.filterwarnings("ignore:Gradients do not exist")
@pytest.mark.parametrize("op", ["round", "stop_gradient"])
def test_a_trunk_cut_off_by_an_operation_without_a_gradient_is_reported(rng, op):
    # `Lambda(ops.round)` (or `stop_gradient`) after the second layer of an
    # MLP: neither layer before it gets a gradient (TensorFlow: none, JAX:
    # zeros), every step; the layers after it learn. Probed (round 8): no
    # finding in 384 steps. Reported once 3 recordings over 5 steps hold it.
    x = rng.normal(size=(256, 12)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    inputs = keras.Input((12,))
    h = keras.layers.Dense(16, activation="relu", name="d1")(inputs)
    h = keras.layers.Dense(16, activation="relu", name="d2")(h)
    h = keras.layers.Lambda(getattr(keras.ops, op), name="cut")(h)
    h = keras.layers.Dense(16, activation="relu", name="d3")(h)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(h))
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    diag = GradientDiagnostics(check_model=False)
    watch, seen = _reporting(diag)

    with pytest.warns(GradientHealthWarning, match="vanishing_gradients"):
        model.fit(x, y, batch_size=32, verbose=0, callbacks=[diag, watch])
    assert seen == [("vanishing_gradients", "d2", 0, 4)]
    assert diag.findings[0].message.startswith(
        "Every gradient of layer 'd2', and of the 1 layer before it ('d1'), was "
        "exactly 0"
    )


@pytest.mark.parametrize("use_bias", [True, False])
def test_layers_cut_off_by_a_dead_relu_of_the_users_own_are_reported(rng, use_bias):
    # The ReLU inside `_DenseRelu.call` is not watched, its units dead from
    # step 0: every gradient of its Dense and of the ReLU Dense before it
    # is exactly 0 while the output layer gets one (probed: no finding).
    # With a bias, the inner Dense is judged by sign (`units_by_sign`): its
    # units at most 0 on every sample and without gradient are dead,
    # reported at the defaults from step 0, over half of 128 samples as
    # the whole layer is (3 batches of 32, steps 2-4). Without one, it is
    # found cut off: on the inner Dense (nearest the outputs), naming the
    # one before it, 5 recordings over steps 0-4.
    x = rng.normal(size=(256, 6)).astype("float32")
    y = rng.normal(size=(256, 1)).astype("float32")
    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, activation="relu", name="h1")(inputs)
    h = _DenseRelu(use_bias, name="block")(h)
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(h))
    _compile(model, keras.optimizers.Adam(1e-3))
    diag = GradientDiagnostics(check_model=False)
    mode = "dead_relu" if use_bias else "vanishing_gradients"
    with pytest.warns(GradientHealthWarning, match=mode):
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[diag])
    assert [i.units_by_sign for i in diag.layers] == [False, use_bias, False]
    assert [(f.mode, f.layer, f.step) for f in diag.findings] == [
        (mode, "block/inner", 0)
    ]
    assert [r.grad_norm for r in diag.history[0].layers] == [
        0.0,
        0.0,
        pytest.approx(diag.history[0].global_norm),
    ]
    if use_bias:
        assert diag.history[0].layers[1].dead_fraction == 1.0
        assert diag.findings[0].message.startswith(
            "100% of the units of layer 'block/inner' were at most 0 on every "
            "one of the 96 samples of the last 3 recorded batches (steps 2-4) "
            "and got no gradient: the ReLU that the `call` of layer 'block' "
            "applies to them"
        )
    else:
        assert diag.findings[0].message.startswith(
            "Every gradient of layer 'block/inner', and of the 1 layer before "
            "it ('h1'), was exactly 0 on each of the last 5 recordings (steps 0-4)"
        )


class _ReluNet(keras.Model):
    """A subclassed model whose `call` applies its activations itself:
    `keras.ops.relu` (or, `squash`, `keras.ops.sigmoid` on the second)."""

    def __init__(self, squash=False, **kwargs):
        super().__init__(**kwargs)
        self.squash = squash
        self.d0 = keras.layers.Dense(16, name="d0")
        self.d1 = keras.layers.Dense(16, name="d1")
        self.out = keras.layers.Dense(1, name="out")

    def call(self, x):
        h = self.d1(keras.ops.relu(self.d0(x)))
        return self.out(keras.ops.sigmoid(h) if self.squash else keras.ops.relu(h))


@pytest.mark.parametrize("kind", ["healthy", "part", "negative"])
def test_dead_units_of_a_subclassed_models_own_relu_are_reported(rng, kind):
    # `keras.ops.relu` in a subclassed model's `call`: not watched, and the
    # model's last layer learns, so nothing was reported (probed: a ReLU
    # whose Dense had bias -10, every unit dead, the loss flat, no finding;
    # so with 14 of 16 dead). Its Dense layers are judged by sign: a unit
    # at most 0 on every sample and without gradient is dead. 'part': 14
    # of d1's 16 units get bias -100, dead from step 0; reported at the
    # defaults once 128 samples of 4 recordings held them so (steps 1-4).
    # 'negative': every bias -3 and a sigmoid instead of the ReLU, every
    # output below 0 but each unit with a gradient: not dead. 'healthy':
    # nothing.
    x = rng.normal(size=(256, 6)).astype("float32")
    y = rng.normal(size=(256, 1)).astype("float32")
    model = _ReluNet(squash=kind == "negative", name="net")
    model(x[:2])
    bias = np.zeros(16, "float32")
    if kind == "part":
        bias[:14] = -100.0
    elif kind == "negative":
        bias[:] = -3.0
    model.d1.bias.assign(bias)
    # SGD at 1e-3: the loss stays level over the first steps (part of a
    # layer dead from the start while the loss falls may settle instead).
    _compile(model, keras.optimizers.SGD(1e-3))
    diag = GradientDiagnostics(check_model=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[diag])
    assert [(i.name, i.inside, i.units_by_sign) for i in diag.layers] == [
        ("d0", "net", True),
        ("d1", "net", True),
        ("out", "net", False),
    ]
    assert [r.zero_fraction for r in diag.history[0].layers] == [None] * 3
    if kind != "part":
        assert diag.findings == [] and not caught
        if kind == "negative":
            h = model.d1(keras.ops.relu(model.d0(x)))
            assert np.all(keras.ops.convert_to_numpy(h) < 0.0)
        return
    assert [(f.mode, f.layer, f.step, f.value) for f in diag.findings] == [
        ("dead_relu", "d1", 0, 0.875)
    ]
    assert diag.findings[0].message.startswith(
        "88% of the units of layer 'd1' were at most 0 on every one of the 128 "
        "samples of the last 4 recorded batches (steps 1-4) and got no "
        "gradient: the ReLU that the `call` of layer 'net' applies"
    )
    # Each recording held the 14 units so on its batch alone too (and on
    # one batch of 32 a live unit may be at most 0 as well).
    assert all(r.layers[1].dead_fraction >= 0.875 for r in diag.history[:5])


class _Cell(keras.layers.Layer):
    """An RNN cell of the user's own with a ReLU Dense of its own."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = self.state_size = units
        self.dense = keras.layers.Dense(units, activation="relu", name="inner")
        self.carry = keras.layers.Dense(units, name="carry")

    def build(self, shape):
        self.dense.build(shape)
        self.carry.build((shape[0], self.units))

    def call(self, x, states):
        h = self.dense(x) + self.carry(states[0])
        return h, [h]


def test_an_rnn_cell_of_the_users_own_with_a_relu_layer_trains(rng):
    # `keras.layers.RNN` runs the cell in a loop (`tf.while_loop`,
    # `lax.scan`): its ReLU Dense's outputs are made in the loop's body,
    # which nothing outside it may read (probed: `fit` failed, TensorFlow
    # "cannot be accessed ... out of scope", JAX `UnexpectedTracerError`).
    # They are not counted; the layer's gradients are recorded. (Keras's
    # TensorFlow loop runs the cell's first time step once before it, in
    # the step's graph: that call's outputs are counted.)
    x = rng.normal(size=(128, 5, 4)).astype("float32")
    y = rng.normal(size=(128, 1)).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((5, 4)),
            keras.layers.RNN(_Cell(6, name="cell"), name="rnn"),
            keras.layers.Dense(1, name="out"),
        ]
    )
    _compile(model, keras.optimizers.Adam(1e-3))
    diag = GradientDiagnostics(check_model=False)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[diag])
    assert [(i.name, i.activation) for i in diag.layers] == [
        ("rnn/cell/inner", "relu"),
        ("rnn/cell/carry", None),
        ("out", None),
    ]
    assert diag.findings == []
    first = diag.history[0].layers[0]
    assert first.grad_norm > 0
    if keras.backend.backend() == "tensorflow":
        assert 0.0 <= first.zero_fraction <= 1.0 and first.dead_fraction is not None
    else:
        assert first.zero_fraction is None and first.dead_fraction is None


@pytest.mark.parametrize("nested", [False, True])
def test_layers_behind_a_dead_one_name_it(rng, nested):
    # A ReLU MLP whose first layer is dead from step 0 (bias -100): the two
    # ReLU layers behind it (one past a Dropout) get zeros on every sample
    # and output zero too. All three are reported at step 0; the two
    # behind name 'first' as the cause, and the fix starts with it. Nested:
    # the first two layers are an encoder model's, the third the outer
    # model's.
    x = rng.normal(size=(256, 6)).astype("float32")
    y = rng.normal(size=(256, 1)).astype("float32")
    layers = keras.layers
    front = [
        keras.Input((6,)),
        layers.Dense(
            8,
            activation="relu",
            bias_initializer=keras.initializers.Constant(-100.0),
            name="first",
        ),
        layers.Dropout(0.2),
        layers.Dense(8, activation="relu", name="second"),
    ]
    back = [
        layers.Dense(8, activation="relu", name="third"),
        layers.Dense(1, name="out"),
    ]
    if nested:
        encoder = keras.Sequential(front, name="encoder")
        model = keras.Sequential([keras.Input((6,)), encoder, *back])
    else:
        model = keras.Sequential(front + back)
    _compile(model, keras.optimizers.Adam(1e-3))
    diag = GradientDiagnostics(check_model=False)
    with pytest.warns(GradientHealthWarning, match="dead_relu"):
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[diag])
    inner = "encoder/" if nested else ""
    found = {f.layer: f for f in diag.findings}
    assert [(f.mode, f.layer, f.step) for f in diag.findings] == [
        ("dead_relu", f"{inner}first", 0),
        ("dead_relu", f"{inner}second", 0),
        ("dead_relu", "third", 0),
    ]
    assert "come through" not in found[f"{inner}first"].message
    assert (
        f"its inputs all come through layer '{inner}first', whose units are all dead:"
    ) in found[f"{inner}second"].message
    assert (
        f"its inputs all come through layer '{inner}second', whose units are all "
        f"dead (because those of layer '{inner}first' are)"
    ) in found["third"].message
    for layer in (f"{inner}second", "third"):
        assert found[layer].fix.startswith(f"Fix layer '{inner}first' first")


def _nan_batch(x, batch, size=8):
    x = x.copy()
    x[batch * size] = np.nan
    return x


def test_nan_between_recordings_gives_non_finite_with_step_and_layer(data):
    x, y = data
    model = _compile(build_model("sequential"))
    diag = _diag(every_n_steps=100)
    with pytest.warns(GradientHealthWarning, match="non_finite"):
        model.fit(
            _nan_batch(x, 2),
            y,
            batch_size=8,
            epochs=2,
            shuffle=False,
            verbose=0,
            callbacks=[diag],
        )
    modes = [(f.mode, f.layer, f.step) for f in diag.findings]
    # Step 2 (third batch); the NaN input reaches the first layer's kernel first.
    assert modes == [(NON_FINITE, "hidden", 2)]
    assert _iterations(model) == 8  # "warn" keeps training
    # Step 2 ran in full (dense recording at the start), its batch kept:
    # the NaN is found in it, and the data named.
    (finding,) = diag.findings
    assert finding.message.endswith(
        "The batch of step 2 holds NaN or infinite values in its inputs or "
        "labels: the data is the cause."
    )
    assert finding.fix == rules_module._BAD_DATA_FIX


def test_dead_units_behind_a_relu_threshold_name_it(rng):
    # `ReLU(threshold=3)` after a Dense layer of unit-scale outputs: every
    # unit outputs 0 from the first step. Probed: told with Leaky ReLU for
    # fix, the threshold never named (pG P7).
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(32),
            keras.layers.ReLU(threshold=3.0, name="thr"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    x = rng.normal(size=(256, 8)).astype("float32")
    y = rng.integers(0, 3, size=256)
    diag = _diag()
    with pytest.warns(GradientHealthWarning, match="dead_relu"):
        model.fit(x, y, batch_size=32, shuffle=False, verbose=0, callbacks=[diag])
    (finding,) = [f for f in diag.findings if f.layer == "thr"]
    assert finding.mode == "dead_relu" and finding.step <= 4
    assert (
        "Its ReLU outputs 0 for every input under its threshold of 3 "
        "(`ReLU(threshold=3)`), not only under 0"
    ) in finding.message
    assert finding.fix.startswith(
        "Lower the threshold of the ReLU of layer 'thr' (0 by default). If its "
        "units stay dead: use Leaky ReLU"
    )


def test_a_non_finite_step_on_finite_data_names_the_forward_pass(rng):
    # An `exp` of a layer with weights of stddev 30 overflows float32 at the
    # first step on standardized data: the finding said to check the data.
    # The kept batch is finite: the forward pass or the loss is named.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(16, activation="relu", name="enc")(inputs)
    large = keras.initializers.RandomNormal(stddev=30.0)
    logvar = keras.layers.Dense(4, kernel_initializer=large, name="logvar")(hidden)
    spread = keras.layers.Lambda(keras.ops.exp, name="exp")(logvar)
    joined = keras.layers.Concatenate()([hidden, spread])
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(joined))
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    x = rng.normal(size=(64, 8)).astype("float32")
    y = rng.normal(size=(64, 1)).astype("float32")
    assert np.isfinite(x).all() and np.isfinite(y).all()
    diag = _diag()
    with pytest.warns(GradientHealthWarning, match="non_finite"):
        model.fit(x, y, batch_size=16, shuffle=False, verbose=0, callbacks=[diag])
    first = diag.findings[0]
    assert (first.mode, first.step) == (NON_FINITE, 0)
    assert first.message.endswith(
        "The inputs and labels of step 0's batch are all finite: the model's "
        "forward pass or the loss made the first non-finite value."
    )
    assert first.fix == rules_module._FORWARD_FIX


class _Reported(keras.callbacks.Callback):
    """Records, after each batch, the last step run and the findings so far."""

    def __init__(self, diag, seen):
        super().__init__()
        self.diag, self.seen = diag, seen

    def on_train_batch_end(self, batch, logs=None):
        last = _iterations(self.model) - 1
        for f in self.diag.findings[len(self.seen) :]:
            self.seen.append((f.mode, f.step, last))


def _fit_with_nan_at_13(model, diag, x, y) -> list[tuple]:
    """Fits batches of one sample, NaN at step 13; returns what `_Reported`
    saw: `(mode, finding step, reported step)`."""
    seen = []
    with pytest.warns(GradientHealthWarning, match="non_finite"):
        model.fit(
            _nan_batch(x, 13, size=1),
            y,
            batch_size=1,
            epochs=1,
            shuffle=False,
            verbose=0,
            callbacks=[diag, _Reported(diag, seen)],
        )
    return seen


@pytest.mark.parametrize("steps_per_execution, reported", [(1, 13), (4, 15)])
def test_nan_is_reported_after_the_batch_it_ran_in(data, steps_per_execution, reported):
    x, y = data
    model = _compile(build_model("sequential"))
    model.compile(
        keras.optimizers.SGD(0.01), "mse", steps_per_execution=steps_per_execution
    )
    diag = _diag(every_n_steps=100)
    diag.DENSE_STEPS = 0  # Only the sentinel after step 0.
    seen = _fit_with_nan_at_13(model, diag, x, y)
    # Found at its step; reported right after the execution holding step 13
    # (steps 12-15 with 4 steps per execution, from the ring).
    assert seen == [(NON_FINITE, 13, reported)]
    assert [(f.layer, f.step) for f in diag.findings] == [("hidden", 13)]


def test_nan_stops_training_with_on_failure_stop(data):
    x, y = data
    model = _compile(build_model("sequential"))
    diag = _diag(every_n_steps=1, on_failure="stop")
    model.fit(
        _nan_batch(x, 1),
        y,
        batch_size=8,
        epochs=3,
        shuffle=False,
        verbose=0,
        callbacks=[diag],
    )
    assert [(f.mode, f.step) for f in diag.findings] == [(NON_FINITE, 1)]
    assert _iterations(model) == 2


def test_nan_raises_training_failure_and_restores_model(data):
    x, y = data
    model = _compile(build_model("sequential"))
    diag = _diag(every_n_steps=1, on_failure="raise")
    with pytest.raises(keras_actloss.TrainingFailure) as caught:
        model.fit(
            _nan_batch(x, 1),
            y,
            batch_size=8,
            epochs=3,
            shuffle=False,
            verbose=0,
            callbacks=[diag],
        )
    assert caught.value.finding.mode == NON_FINITE
    assert caught.value.finding.step == 1
    assert not _hooked(model.optimizer)


@pytest.mark.parametrize("on_failure", ["warn", "raise"])
def test_a_finding_held_to_the_end_of_the_fit_is_told_then(
    data, monkeypatch, tmp_path, on_failure
):
    # A finding the rules hold for a recording the fit ends before (the
    # start's explosion held for a chain of amplifying layers not yet
    # confirmed: `HealthRules.end_fit`) is told when the fit ends: kept,
    # logged, warned, and raised with on_failure="raise".
    held = keras_actloss.findings.Finding(
        EXPLODING_GRADIENTS, None, 0, 1e6, "Held explosion.", "Lower it."
    )
    ends = []

    def end_fit(self):
        ends.append(len(self.findings))
        return self._emit([held])

    monkeypatch.setattr(rules_module.HealthRules, "end_fit", end_fit)
    x, y = data
    model = _compile(build_model("sequential"))
    diag = _diag(log_dir=str(tmp_path), on_failure=on_failure)
    fit = dict(batch_size=8, epochs=1, verbose=0, callbacks=[diag])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if on_failure == "raise":
            with pytest.raises(keras_actloss.TrainingFailure) as raised:
                model.fit(x[:24], y[:24], **fit)
            assert raised.value.finding is held
        else:
            model.fit(x[:24], y[:24], **fit)
    assert ends == [0]  # Once, after the fit's 3 steps were judged.
    assert diag.findings == [held]
    told = [w for w in caught if issubclass(w.category, GradientHealthWarning)]
    assert ["Held explosion." in str(w.message) for w in told] == (
        [True] if on_failure == "warn" else []
    )
    assert not _hooked(model.optimizer)
    from keras_actloss.logs.events import findings_by_step

    logged = findings_by_step(tmp_path / "train")
    assert [f for known in logged.values() for f in known] == [held]


def _targets_times(y, start, factor, stop=None, size=8):
    """`y` with the targets of batches `start` to `stop` (one batch when
    None) times `factor`."""
    y = y.copy()
    y[start * size : (start + 1 if stop is None else stop) * size] *= factor
    return y


def _mixed_float16_fit(rng):
    """A `mixed_float16` model on 16 batches of 8, a callback recording
    every step, and the `fit` arguments."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    x = rng.normal(size=(128, 6)).astype("float32")
    y = rng.normal(size=(128, 1)).astype("float32")
    model = _compile(build_model("sequential"))
    diag = _diag(every_n_steps=1)
    fit = dict(batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[diag])
    return x, y, model, diag, fit


def test_loss_scale_overflow_is_skipped_unless_it_persists(rng):
    x, y, model, diag, fit = _mixed_float16_fit(rng)
    # Batch 3's targets 1e4 times larger: the loss stays finite, but its
    # float16 gradient at the output, 2 * 1e4 / 8 times the loss scale of
    # 2**15, is beyond float16's 65504. The optimizer skips the step and
    # halves the scale: not a finding.
    model.fit(x, _targets_times(y, 3, 1e4), **fit)
    assert diag.findings == []
    assert _iterations(model) == 15
    # Targets 1e8 times larger from batch 4 on: every step overflows, its
    # loss (finite) about 1e15x its level. The 4th in a row is an explosion
    # (the batches' scale, or the step: the fix names both); the 10th in a
    # row is not an overflow any more.
    with pytest.warns(GradientHealthWarning, match="exploding_gradients|non_finite"):
        model.fit(x, _targets_times(y, 4, 1e8, stop=16), **fit)
    # Skipped steps do not advance the optimizer: 15 + 4 updates.
    exploding, stopped = diag.findings
    assert [(f.mode, f.step) for f in diag.findings] == [
        (EXPLODING_GRADIENTS, 19),
        (NON_FINITE, 19),
    ]
    assert exploding.message.startswith(
        "The 4 batches in a row from step 19 overflowed float16 under loss scaling"
    )
    assert exploding.message.endswith(
        "(too large a step, or batches of a larger scale than the earlier ones)."
    )
    assert "skipped every update" in stopped.message
    assert stopped.message.endswith("It follows the explosion reported before it.")
    assert exploding.fix == stopped.fix
    assert "standardize them" in exploding.fix


def test_a_nan_loss_under_loss_scaling_is_reported_at_its_step(rng):
    x, y, model, diag, fit = _mixed_float16_fit(rng)
    # One NaN input: its loss is NaN, which no loss scale causes. Reported
    # at once, though the optimizer skips the update.
    with pytest.warns(GradientHealthWarning, match="non_finite"):
        model.fit(_nan_batch(x, 3), y, **fit)
    ((mode, step, message),) = [(f.mode, f.step, f.message) for f in diag.findings]
    assert (mode, step) == (NON_FINITE, 3)
    assert "loss scaling skipped the update" in message
    assert "in the data or the loss" in message
    # The weights are unchanged by it: 15 updates, all finite.
    assert _iterations(model) == 15
    assert all(np.isfinite(w).all() for w in weights(model))
    # The rules still judge the steps after it (they stop after a NaN that
    # reached the weights).
    assert not diag._rules._broken()


def test_frozen_layer_and_layer_without_gradient(data):
    x, y = data

    class Unused(keras.Model):
        def __init__(self):
            super().__init__()
            self.frozen = keras.layers.Dense(8, activation="relu", name="frozen")
            self.frozen.trainable = False
            self.unused = keras.layers.Dense(3, name="unused")
            self.out = keras.layers.Dense(1, name="out")

        def call(self, x):
            return self.out(self.frozen(x))

        def build(self, shape):
            self.frozen.build(shape)
            self.unused.build(shape)
            self.out.build((None, 8))

    model = Unused()
    model(x[:1])  # Builds the Dense layer.
    _compile(model)
    diag = _diag(every_n_steps=1)
    if BACKEND == "jax":
        # `jax.grad` gives every weight a gradient: zeros for an unused one.
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[diag])
    else:
        with pytest.warns(UserWarning, match="Gradients do not exist"):
            model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[diag])
    # A frozen layer is not monitored, its activation included: its units
    # are fixed features, not something training does.
    info = {i.name: i for i in diag.layers}
    assert set(info) == {"unused", "out"}
    stats = {ls.layer: ls for ls in diag.history[0].layers}
    assert set(stats) == {"unused", "out"}
    unused = stats["unused"]
    if BACKEND == "jax":
        assert unused.grad_norm == 0.0 and unused.update_ratio == 0.0
    else:
        assert unused.grad_norm is None and unused.update_ratio is None
    assert stats["out"].grad_norm > 0


def _tags(log_dir):
    acc = event_accumulator.EventAccumulator(
        os.path.join(log_dir, "train"), size_guidance={event_accumulator.TENSORS: 0}
    )
    acc.Reload()
    return acc


class _Boom(keras.callbacks.Callback):
    def __init__(self, at, error):
        super().__init__()
        self.at, self.error = at, error

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.at:
            raise self.error


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_logs_are_readable_after_fit_dies(data, tmp_path, error):
    x, y = data
    model = _compile(build_model("sequential"))
    diag = _diag(log_dir=tmp_path, every_n_steps=2, histogram_every_n_steps=2)
    diag.DENSE_STEPS = 0
    with pytest.raises(type(error)):
        model.fit(
            x, y, batch_size=8, epochs=3, verbose=0, callbacks=[diag, _Boom(2, error)]
        )
    acc = _tags(tmp_path)
    names = LAYER_NAMES["sequential"]
    expected = {
        "grad_norm/global",
        "diagnostics/layers",
        custom_scalar.CONFIG_SUMMARY_TAG,
    }
    for section in ("grad_norm", "grad_rms", "grad_max", "update_ratio", "grad_hist"):
        expected |= {f"{section}/{n}" for n in names}
    expected |= {"zero_fraction/hidden", "dead_fraction/hidden", "saturation/squash"}
    assert set(acc.Tags()["tensors"]) == expected
    steps = [e.step for e in acc.Tensors("grad_norm/hidden")]
    assert steps == [0, 2]  # recordings at steps 0 and 2, before the crash
    # The histogram holds every gradient element of `out`: 4x1 kernel + 1 bias.
    hist = tensor_util.make_ndarray(acc.Tensors("grad_hist/out")[0].tensor_proto)
    assert hist[:, 2].sum() == 5
    # The model trains normally afterwards: hooks are undone by the next fit.
    before = weights(model)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert not _hooked(model.optimizer)
    assert "make_train_function" not in model.__dict__
    assert not np.allclose(before[0], weights(model)[0])


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_a_new_callback_trains_the_model_after_fit_died(data, error):
    # A notebook keeps the first callback (to read its findings) after its
    # `fit` died; a new GradientDiagnostics on the same model is no second
    # one in the same `fit`: it hooks the model and records (probed: on
    # TensorFlow it was refused, as two callbacks in one `fit`).
    x, y = data
    model = _compile(build_model("sequential"))
    first = _diag(every_n_steps=1)
    with pytest.raises(type(error)):
        model.fit(
            x, y, batch_size=8, epochs=1, verbose=0, callbacks=[first, _Boom(2, error)]
        )
    assert len(first.history) == 3  # Steps 0-2, before the crash.
    second = _diag(every_n_steps=1)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[second])
    assert [s.step for s in second.history] == [3, 4, 5, 6]
    assert len(first.history) == 3
    # Two in one `fit` are still refused.
    with pytest.raises(ValueError, match="a second GradientDiagnostics"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[_diag(), _diag()])


def test_a_log_dir_of_an_earlier_run_is_warned_about(data, tmp_path):
    # Re-running a fixed script into the same `log_dir` would mix the runs
    # in the report (an earlier failure kept failing it): a new callback
    # warns; the same callback's next `fit` continues its own run.
    x, y = data
    model = _compile(build_model("sequential"))
    diag = _diag(log_dir=tmp_path)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[diag])
    model.fit(x, y, epochs=1, verbose=0, callbacks=[diag])  # No warning.
    with pytest.warns(UserWarning, match=r"already holds 2 event file\(s\)"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[_diag(log_dir=tmp_path)])


@pytest.mark.parametrize("tensorboard_first", [True, False])
def test_a_log_dir_shared_with_tensorboard_is_not_an_earlier_run(
    data, tmp_path, tensorboard_first
):
    # `keras.callbacks.TensorBoard` opens its file of this `fit` in
    # `set_model`, before this callback looks: not an earlier run (warnings
    # are errors here). Nor are the files of an earlier TensorBoard-only fit:
    # they hold none of this callback's findings or charts.
    pytest.importorskip("tensorflow")  # `keras.callbacks.TensorBoard` needs it.
    x, y = data
    model = _compile(build_model("sequential"))
    model.fit(
        x, y, epochs=1, verbose=0, callbacks=[keras.callbacks.TensorBoard(tmp_path)]
    )
    callbacks = [keras.callbacks.TensorBoard(tmp_path), _diag(log_dir=tmp_path)]
    if not tensorboard_first:
        callbacks.reverse()
    model.fit(x, y, epochs=1, verbose=0, callbacks=callbacks)
    names = [f.name for f in (tmp_path / "train").iterdir()]
    assert sum("keras_actloss" in n.split(".") for n in names) == 1
    assert len(names) == 3  # TensorBoard's two files and ours.
    with pytest.warns(UserWarning, match=r"already holds 1 event file\(s\)"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[_diag(log_dir=tmp_path)])


def _open_files_under(directory) -> list[str]:
    """Paths under `directory` that this process holds open (Linux)."""
    fds = "/proc/self/fd"
    paths = [os.path.realpath(os.path.join(fds, fd)) for fd in os.listdir(fds)]
    return [p for p in paths if p.startswith(os.path.realpath(directory))]


class _Handled(keras.callbacks.Callback):
    """Raises and handles an error inside `on_train_batch_end`, then reads
    `self.model` (on JAX a state sync, with that error in `sys.exc_info`)."""

    def on_train_batch_end(self, batch, logs=None):
        try:
            raise ValueError("handled")
        except ValueError:
            assert self.model is not None


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
@pytest.mark.xfail(
    BACKEND == "tensorflow",
    strict=True,
    reason="Keras's TensorFlow `fit` runs no code after an exception: the "
    "event file stays open (flushed) until the next `fit` ends or exit",
)
@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_event_file_is_closed_when_fit_dies(data, tmp_path, error):
    x, y = data
    model = _compile(build_model("sequential"))
    diag = _diag(log_dir=tmp_path, every_n_steps=2)
    callbacks = [diag, _Handled(), _Boom(2, error)]
    with pytest.raises(type(error)):
        model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=callbacks)
    # Closed, not only flushed: no file of the log dir is open any more,
    # and the findings and logs are kept.
    assert _open_files_under(tmp_path) == []
    assert "grad_norm/global" in _tags(tmp_path).Tags()["tensors"]
    # Another fit writes a new event file and closes it at its end.
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[diag])
    assert _open_files_under(tmp_path) == []
    assert len(os.listdir(tmp_path / "train")) == 2


def test_event_file_stays_open_while_fit_runs(data, tmp_path):
    # A callback's own handled error (in `sys.exc_info` while it reads
    # `self.model`) does not close the logs: recordings after it are kept.
    x, y = data
    model = _compile(build_model("sequential"))
    diag = _diag(log_dir=tmp_path, every_n_steps=2)
    diag.DENSE_STEPS = 0
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[diag, _Handled()])
    steps = [e.step for e in _tags(tmp_path).Tensors("grad_norm/hidden")]
    assert steps == list(range(0, len(x) // 8, 2))


def test_check_model_findings_are_reported(tmp_path, rng):
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, activation="softmax")]
    )
    model.compile(keras.optimizers.SGD(0.01), "binary_crossentropy")
    x = rng.normal(size=(16, 4)).astype("float32")
    y = (rng.random(size=(16, 3)) > 0.5).astype("float32")
    diag = GradientDiagnostics(log_dir=tmp_path, every_n_steps=50)
    with pytest.warns(GradientHealthWarning, match="softmax_with_binary_crossentropy"):
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[diag])
    assert [f.mode for f in diag.findings] == ["softmax_with_binary_crossentropy"]
    assert "diagnostics/findings" in _tags(tmp_path).Tags()["tensors"]


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_check_model_sees_the_labels_of_a_recorded_batch(rng, jit_compile):
    # A sigmoid output cannot reach regression targets in [0, 10]; only the
    # labels tell, and the callback hands a batch of them to check_model.
    # (Under XLA too: kept in a variable of 64 rows, zero-padded.)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")]
    )
    model.compile(keras.optimizers.SGD(0.01), "mse", jit_compile=jit_compile)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = (10 * rng.random(size=(32, 1))).astype("float32")
    diag = GradientDiagnostics(every_n_steps=50)
    with pytest.warns(GradientHealthWarning, match="bounded_output_regression"):
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[diag])
    assert [f.mode for f in diag.findings] == ["bounded_output_regression"]
    # A check_model finding of severity "failure" is a failure for
    # `on_failure` too (as for `keras-actloss report`): raised at step 0.
    assert diag.findings[0].severity == "failure"
    raising = GradientDiagnostics(every_n_steps=50, on_failure="raise")
    with pytest.raises(keras_actloss.TrainingFailure, match="bounded_output"):
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[raising])
    assert _iterations(model) == 3  # 2 steps + 1 step.


@pytest.mark.parametrize("structure", ["array", "list"])
def test_unscaled_regression_targets_are_told_at_the_first_recording(rng, structure):
    # Targets of mean about 1e4 under MAE: the loss's gradient is at most 1 a
    # sample, nothing explodes, and the model creeps towards them. Only the
    # labels tell; a warning, so `on_failure="raise"` trains on. The labels
    # as `fit` takes them for one output: an array, a list of one.
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(1, name="out"),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-3), "mae")
    x = rng.normal(size=(64, 4)).astype("float32")
    y = rng.normal(1e4, 2e3, size=(64, 1)).astype("float32")
    diag = GradientDiagnostics(on_failure="raise")
    labels = {"array": y, "list": [y]}[structure]
    with pytest.warns(GradientHealthWarning, match="unscaled_regression_targets"):
        model.fit(x, labels, batch_size=16, verbose=0, callbacks=[diag], shuffle=False)
    (finding,) = diag.findings
    assert (finding.mode, finding.layer, finding.step, finding.severity) == (
        "unscaled_regression_targets",
        "out",
        None,
        "warning",
    )
    # The labels of the first recorded batch (step 0: its 16 rows).
    first = y[:16, 0].astype("float64")
    expected = max(abs(first.mean()), first.std())
    np.testing.assert_allclose(finding.value, expected, rtol=1e-5)
    assert _iterations(model) == 4


@pytest.mark.parametrize("structure", ["list", "dict"])
def test_a_model_of_several_outputs_gets_the_label_checks_of_each(rng, structure):
    # A value head under MAE with targets of mean about 1e4 and a flag head
    # (sigmoid, binary cross-entropy) given -1/+1 labels: each output's
    # labels are kept from the first recorded batch and checked against its
    # own loss, as `check_model(model, y)` checks them. (Only a single
    # label tensor was kept: nothing was told.)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    model = keras.Model(
        inputs,
        [
            keras.layers.Dense(1, name="value")(hidden),
            keras.layers.Dense(1, activation="sigmoid", name="flag")(hidden),
        ],
    )
    model.compile(keras.optimizers.Adam(1e-3), ["mae", "binary_crossentropy"])
    x = rng.normal(size=(32, 4)).astype("float32")
    value = rng.normal(1e4, 2e3, size=(32, 1)).astype("float32")
    flag = rng.choice([-1.0, 1.0], size=(32, 1)).astype("float32")
    y = [value, flag] if structure == "list" else {"value": value, "flag": flag}
    diag = GradientDiagnostics()
    with pytest.warns(GradientHealthWarning) as warned:
        model.fit(x, y, batch_size=16, verbose=0, callbacks=[diag], shuffle=False)
    assert len(warned) == 2
    found = {(f.mode, f.layer, f.step) for f in diag.findings}
    assert found == {
        ("unscaled_regression_targets", "value", None),
        ("labels_outside_unit_interval", "flag", None),
    }
    # The value head's scale, from the first recorded batch's 16 rows.
    first = value[:16, 0].astype("float64")
    expected = max(abs(first.mean()), first.std())
    (told,) = [f for f in diag.findings if f.layer == "value"]
    np.testing.assert_allclose(told.value, expected, rtol=1e-5)
    # And the rules know the targets' scale, to name them in an explosion.
    np.testing.assert_allclose(diag._rules.target_scale, expected, rtol=1e-5)


def test_the_label_check_runs_the_output_checks_only(rng, monkeypatch):
    # The layer checks (which read kernels: a large model's copied to the
    # host) run once as training begins; the check with the first recorded
    # batch's labels runs the output checks alone, and still tells what
    # only the labels show.
    from keras_actloss.advisor import check as check_module

    calls = []
    symmetric_units = check_module.symmetric_units
    monkeypatch.setattr(
        check_module,
        "symmetric_units",
        lambda model: calls.append(model.name) or symmetric_units(model),
    )
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(1, name="out")], name="lin"
    )
    model.compile(keras.optimizers.Adam(1e-3), "mae")
    x = rng.normal(size=(32, 4)).astype("float32")
    y = rng.normal(1e4, 2e3, size=(32, 1)).astype("float32")
    diag = GradientDiagnostics()
    with pytest.warns(GradientHealthWarning, match="unscaled_regression_targets"):
        model.fit(x, y, batch_size=16, verbose=0, callbacks=[diag], shuffle=False)
    assert calls == ["lin"]
    assert diag._labels_checked
    assert [f.mode for f in diag.findings] == ["unscaled_regression_targets"]


def test_zero_kernels_are_named_before_training_and_as_the_cause(rng):
    # Every kernel zero in a tanh MLP: its hidden units are copies and get
    # no gradient (tanh(0) = 0, the kernels after them 0). Probed: told
    # only at step 4, as a `stop_gradient` somewhere, the initialiser never
    # named. `check_model` tells it before training; the zero gradients
    # that follow name it as their cause, with its fix.
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, "tanh", kernel_initializer="zeros", name="a"),
            keras.layers.Dense(16, "tanh", kernel_initializer="zeros", name="b"),
            keras.layers.Dense(3, "softmax", kernel_initializer="zeros"),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    x = rng.normal(size=(128, 8)).astype("float32")
    y = rng.integers(0, 3, size=128)
    diag = GradientDiagnostics()
    with pytest.warns(GradientHealthWarning):
        model.fit(x, y, batch_size=16, verbose=0, callbacks=[diag])
    before = [(f.mode, f.layer, f.step) for f in diag.findings[:2]]
    assert before == [("symmetric_units", "a", None), ("symmetric_units", "b", None)]
    later = [f for f in diag.findings[2:] if f.severity == "failure"]
    assert later, "the zero gradients that follow are told"
    for finding in later:
        assert finding.mode == "vanishing_gradients"
        assert "started identical" in finding.message
        assert finding.fix == diag.findings[0].fix


def test_a_frozen_model_is_told_before_training(rng):
    # On JAX Keras itself says nothing (probed: a model with
    # `trainable = False` trained silently, its accuracy unchanged).
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, "relu"), keras.layers.Dense(1)]
    )
    model.trainable = False
    model.compile(keras.optimizers.SGD(0.01), "mse")
    diag = GradientDiagnostics(on_failure="raise")
    x = rng.normal(size=(16, 4)).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Keras's, on TensorFlow.
        with pytest.raises(keras_actloss.TrainingFailure, match="no_trainable_weights"):
            model.fit(x, x[:, :1], batch_size=8, verbose=0, callbacks=[diag])
    assert _iterations(model) == 0


def test_heatmap_image_is_written(data, tmp_path):
    x, y = data
    model = _compile(build_model("sequential"))
    diag = _diag(log_dir=tmp_path, every_n_steps=1, heatmap_image=True)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[diag])
    assert "diagnostics/grad_norm_heatmap" in _tags(tmp_path).Tags()["tensors"]


def test_unwritable_log_dir_fails_before_training(data, tmp_path):
    x, y = data
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    model = _compile(build_model("sequential"))
    diag = _diag(log_dir=blocker / "run")
    with pytest.raises(ValueError, match="log_dir"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[diag])
    assert _iterations(model) == 0


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"every_n_steps": 0}, "every_n_steps"),
        ({"every_n_steps": 2.5}, "every_n_steps"),
        ({"histogram_every_n_steps": -1}, "histogram_every_n_steps"),
        ({"on_failure": "ignore"}, "on_failure"),
        ({"record_activations": "yes"}, "record_activations"),
        ({"heatmap_image": 1}, "heatmap_image"),
        ({"check_model": None}, "check_model"),
        ({"log_dir": 3}, "log_dir"),
        ({"log_dir": ""}, "log_dir"),  # Refused here, not when `fit` starts.
        ({"thresholds": {"no_such": 1}}, "thresholds"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=f"{name}="):
        GradientDiagnostics(**kwargs)


class _ShapeOnly(keras.layers.Layer):
    """Gives its output shape without calling its Dense: a functional
    model's build leaves the Dense unbuilt (inside `TimeDistributed`)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(4, activation="relu", name="inner")

    def call(self, x):
        return self.dense(x)

    def compute_output_shape(self, shape):
        return (*shape[:-1], 4)


# Keras warns that the block has no `build` of its own: that is the point.
@pytest.mark.filterwarnings("ignore:`build\\(\\)` was called on layer")
def test_layers_built_by_the_first_step_are_watched_after_it(rng):
    # The Dense makes its weights in the first step: the optimizer must be
    # built with them (probed on TensorFlow: `fit` died with "Unknown
    # variable ... This optimizer can only be called for the variables it
    # was originally built with"). On TensorFlow the first step runs
    # unrecorded, as for a model without `Input`; the Dense is watched from
    # the second.
    x = rng.normal(size=(64, 3, 5)).astype("float32")
    y = rng.normal(size=(64, 1)).astype("float32")

    def build():
        keras.utils.set_random_seed(0)
        inputs = keras.Input((3, 5))
        block = keras.layers.TimeDistributed(_ShapeOnly(name="block"), name="td")
        out = keras.layers.Dense(1, name="out")(keras.layers.Flatten()(block(inputs)))
        model = keras.Model(inputs, out)
        return _compile(model)

    plain = build().fit(x, y, batch_size=16, verbose=0, shuffle=False)
    diag = _diag(every_n_steps=1)
    watched = build().fit(
        x, y, batch_size=16, verbose=0, shuffle=False, callbacks=[diag]
    )
    assert watched.history["loss"] == plain.history["loss"]
    # On JAX the weights exist when `fit` traces its step: every step.
    first = 0 if BACKEND == "jax" else 1
    assert [s.step for s in diag.history] == list(range(first, 4))
    assert [info.name for info in diag.layers] == ["td/block/inner", "out"]
    assert all(s.layers[0].grad_norm > 0 for s in diag.history)


def test_numpy_integers_are_step_counts():
    # A sweep's `np.int64(50)` is a step count, held as Python's int.
    diag = GradientDiagnostics(
        every_n_steps=np.int64(50), histogram_every_n_steps=np.int32(10)
    )
    assert (diag.every_n_steps, diag.histogram_every_n_steps) == (50, 10)
    assert type(diag.every_n_steps) is int and type(diag.histogram_every_n_steps) is int
    with pytest.raises(ValueError, match="every_n_steps=np.False_"):
        GradientDiagnostics(every_n_steps=np.bool_(False))


# State across fits, other callbacks and models the hooks cannot see into.


def test_second_instance_on_one_model_is_refused(data):
    x, y = data
    model = _compile(build_model("sequential"))
    with pytest.raises(ValueError, match="Expected one GradientDiagnostics per model"):
        model.fit(x, y, batch_size=8, verbose=0, callbacks=[_diag(), _diag()])
    # The first instance's hooks are gone: the model trains normally again.
    model.fit(x, y, batch_size=8, verbose=0)
    assert not _hooked(model.optimizer)


def test_instance_reused_for_another_model_starts_afresh(data):
    x, y = data
    diag = GradientDiagnostics()  # With check_model.
    softmax_bce = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(2, activation="softmax")]
    )
    softmax_bce.compile("sgd", "binary_crossentropy")
    labels = keras.utils.to_categorical((y[:, 0] > 0).astype("int32"), 2)
    with pytest.warns(GradientHealthWarning):
        softmax_bce.fit(x, labels, batch_size=8, verbose=0, callbacks=[diag])
    first = {f.mode for f in diag.findings}
    assert "softmax_with_binary_crossentropy" in first
    model = _compile(build_model("sequential"))
    model.fit(x, y, batch_size=8, verbose=0, callbacks=[diag])
    # Findings, history and the label check belong to the new model only.
    assert {f.mode for f in diag.findings} & first == set()
    assert [s.step for s in diag.history] == [0, 1, 2, 3]
    assert diag._labels_checked


class _Crash(keras.callbacks.Callback):
    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_train_batch_begin(self, batch, logs=None):
        if _iterations(self.model) == self.at:
            raise RuntimeError("crash")


def test_step_count_is_read_after_backup_and_restore(data, tmp_path):
    x, y = data
    backup = str(tmp_path / "backup")

    def run(*extra):
        keras.utils.set_random_seed(0)
        model = _compile(build_model("sequential"))
        diag = _diag(every_n_steps=2)
        diag.DENSE_STEPS = 0
        restore = keras.callbacks.BackupAndRestore(backup)
        # Ours first: it must not read the step count before the restore.
        model.fit(
            x, y, batch_size=8, epochs=3, verbose=0, callbacks=[diag, restore, *extra]
        )
        return diag

    with pytest.raises(RuntimeError, match="crash"):
        run(_Crash(at=6))  # Backed up at the end of epoch 1 (step 4).
    diag = run()
    # Resumed at step 4: recordings at 4, 6, 8, 10 (every 2 steps).
    assert [s.step for s in diag.history] == [4, 6, 8, 10]


def test_recorded_loss_and_learning_rate_are_the_steps_own(data):
    x, y = data
    model = _compile(build_model("sequential"))
    # The loss of step 0 from the weights before it (mean squared error).
    first = np.mean((model.predict(x[:8], verbose=0) - y[:8]) ** 2)
    diag = _diag(every_n_steps=1)
    schedule = keras.callbacks.LearningRateScheduler(lambda epoch: 0.1 / (1 + epoch))
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[schedule, diag],
    )
    np.testing.assert_allclose(diag.history[0].loss, first, rtol=1e-5)
    # Epoch 0 runs steps 0-3 at 0.1, epoch 1 steps 4-7 at 0.05.
    rates = [s.learning_rate for s in diag.history]
    np.testing.assert_allclose(rates, [0.1] * 4 + [0.05] * 4, rtol=1e-6)


class _Hooks:
    def traced(self, mode):
        return False


def test_sentinel_function_is_traced_only_when_it_pays():
    diag = _diag()
    diag._hooks, diag._spe, diag._batches = _Hooks(), 1, 8
    diag.SENTINEL_SAVING = 0.25  # Exact in binary, for the sums below.
    # The first full batch took 20 s (tracing), later ones 0.5 s: a second
    # trace costs about 19.5 s; switching saves 0.25 * 0.5 = 0.125 s a step.
    diag._first_batch, diag._full_batch = 20.0, 0.5
    diag.params = {"epochs": 1, "steps": 30}
    assert not diag._sentinel_pays()  # 22 steps left: 2.75 s < 19.5 s.
    diag.params = {"epochs": 2, "steps": 100}
    assert diag._sentinel_pays()  # 192 steps left: 24 s > 19.5 s.
    diag.params = {"epochs": 1, "steps": None}
    assert diag._sentinel_pays()  # Unknown length: assume a long run.
    diag._full_batch = None
    assert not diag._sentinel_pays()  # Not measured yet.
    # Short fits, one after another: the full steps off the schedule have
    # cost as much as the trace after 19.5 / 0.125 = 156 of them.
    diag._full_batch, diag.params = 0.5, {"epochs": 1, "steps": 30}
    diag._paid, diag._rented = 0.0, 0
    calls = [diag._sentinel_pays() for _ in range(160)]
    assert calls.index(True) == 155  # The 156th call: 156 * 0.125 = 19.5.
    # A trace too costly to pay back: traced after RENT_STEPS at the most.
    diag._first_batch, diag._full_batch = 1e9, 0.5
    diag._paid, diag._rented = 0.0, 0
    calls = [diag._sentinel_pays() for _ in range(diag.RENT_STEPS)]
    assert calls.index(True) == diag.RENT_STEPS - 1


def test_full_function_off_schedule_judges_every_step_the_same(data):
    x, y = data
    model = _compile(build_model("sequential"))
    diag = _diag(every_n_steps=100)
    diag.DENSE_STEPS = 0
    diag.SENTINEL_SAVING = 0.0  # Never trace the every-step function.
    seen = _fit_with_nan_at_13(model, diag, x, y)
    # On JAX one compiled function serves both kinds of step (an argument
    # switches the full statistics on): nothing is left to trace.
    jax = keras.backend.backend() == "jax"
    assert diag._hooks.traced("sentinel") == jax
    # Recorded on schedule only; the NaN judged from the full step's row.
    assert [s.step for s in diag.history] == [0]
    assert seen == [(NON_FINITE, 13, 13)]


def test_gradient_samples_are_the_strided_sgd_gradient(rng, tmp_path, monkeypatch):
    # The histogram of a layer is of a strided sample of its gradients
    # (kernel then bias, flattened), `HISTOGRAM_SIZE` = 6 kept per layer:
    # - hidden: 4x5 kernel + 5 bias = 25 elements, stride 25 // 6 = 4:
    #   positions 0, 4, ..., 20 (20 is the bias's first element);
    # - wide: 5x1000 + 1000 = 6000, stride 1000: 0, 1000, ..., 5000 (bias);
    # - out: 1000 + 1 = 1001, stride 166: 0, 166, ..., 830.
    # The wide kernel is read as one large tensor, the others together.
    from keras_actloss.logs.writer import DiagnosticsWriter

    written = []
    original = DiagnosticsWriter.write_histograms

    def capture(self, step, values):
        written.append((step, {k: np.array(v) for k, v in values.items()}))
        return original(self, step, values)

    monkeypatch.setattr(DiagnosticsWriter, "write_histograms", capture)
    x = rng.normal(size=(16, 4)).astype("float32")
    y = rng.normal(size=(16, 1)).astype("float32")
    names = ["hidden", "wide", "out"]
    model = _compile(
        keras.Sequential(
            [
                keras.Input((4,)),
                keras.layers.Dense(5, activation="tanh", name="hidden"),
                keras.layers.Dense(1000, activation="tanh", name="wide"),
                keras.layers.Dense(1, name="out"),
            ]
        )
    )
    before = weights(model)
    diag = _diag(log_dir=tmp_path, every_n_steps=1, histogram_every_n_steps=1)
    diag.HISTOGRAM_SIZE = 6
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[diag])
    grads = _layer_grads(before, weights(model), model, names)
    ((step, samples),) = written
    assert step == 0 and sorted(samples) == sorted(names)
    for name, stride in (("hidden", 4), ("wide", 1000), ("out", 166)):
        # atol: the float32 rounding of `w - lr * g` (|w| < 1) over lr.
        np.testing.assert_allclose(
            samples[name], grads[name][::stride][:6], rtol=1e-5, atol=1e-6
        )


class _WeightsAfterBatch(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.after = [weights(self.model)]

    def on_train_batch_end(self, batch, logs=None):
        self.after.append(weights(self.model))


def _unbuilt(kind):
    """A model without an `Input`: TensorFlow builds it in `fit`'s first
    trace, after `on_train_begin`."""
    if kind == "subclassed":
        return ThreeLayers()
    return keras.Sequential(
        [
            keras.layers.Dense(8, activation="relu", name="hidden"),
            keras.layers.Dense(4, activation="tanh", name="squash"),
            keras.layers.Dense(1, name="out"),
        ]
    )


# TensorFlow builds such a model in `fit`'s first trace; Keras's JAX trainer
# builds it before the callbacks start.
@tensorflow_only
@pytest.mark.parametrize("kind", ["subclassed", "sequential"])
def test_a_model_built_in_fit_is_recorded_from_its_second_step(kind, rng, tmp_path):
    x = rng.normal(size=(96, 6)).astype("float32")
    y = rng.normal(size=(96, 1)).astype("float32")
    model = _compile(_unbuilt(kind))
    assert not model.built
    seen = _WeightsAfterBatch()
    # Defaults otherwise: `check_model` runs once the model is built.
    diag = GradientDiagnostics(log_dir=str(tmp_path), every_n_steps=1)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[diag, seen])
    # Step 0 ran Keras's own train function (it built the model).
    assert [s.step for s in diag.history] == [1, 2]
    assert [info.name for info in diag.layers] == LAYER_NAMES["subclassed"]
    assert diag.findings == []
    for stats, (w0, w1) in zip(diag.history, zip(seen.after[1:], seen.after[2:])):
        grads = _layer_grads(w0, w1, model, LAYER_NAMES["subclassed"])
        for ls in stats.layers:
            np.testing.assert_allclose(
                ls.grad_norm, np.linalg.norm(grads[ls.layer]), rtol=1e-5
            )
    # The hooks are gone after `fit`.
    hidden = kernels(model, LAYER_NAMES["subclassed"])[0]
    assert "call" not in hidden.__dict__ and "apply" not in model.optimizer.__dict__
    assert {"grad_norm/hidden", "diagnostics/layers"} <= set(
        _tags(str(tmp_path)).Tags()["tensors"]
    )


class _Batches(keras.callbacks.Callback):
    """Counts the batches that ran."""

    def on_train_begin(self, logs=None):
        self.count = 0

    def on_train_batch_end(self, batch, logs=None):
        self.count += 1


# A subclassed ReLU MLP whose first batch holds a NaN: its step ran before
# the hooks (it built the model). Its first kernel is NaN after it, and on
# TensorFlow relu(NaN) is 0: the layer then outputs zeros on every sample,
# which were told as dead units from step 1 while the NaN went unseen.
@tensorflow_only
@pytest.mark.parametrize("on_failure", ["warn", "stop"])
def test_a_nan_in_the_step_that_built_the_model_is_reported(on_failure, rng):
    x = rng.normal(size=(128, 6)).astype("float32")
    x[0, 0] = np.nan
    y = rng.normal(size=(128, 1)).astype("float32")
    model = _compile(_unbuilt("subclassed"))
    diag = GradientDiagnostics(on_failure=on_failure)
    batches = _Batches()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GradientHealthWarning)
        model.fit(
            x,
            y,
            batch_size=32,
            epochs=1,
            verbose=0,
            shuffle=False,
            callbacks=[diag, batches],
        )
    assert [(f.mode, f.step) for f in diag.findings] == [(NON_FINITE, 0)]
    assert diag.findings[0].message.startswith(
        "Non-finite gradients at step 0 (global gradient norm nan)"
    )
    assert "No step before it had finite gradients" in diag.findings[0].message
    # "stop" ends training before the next step runs.
    assert batches.count == (1 if on_failure == "stop" else 4)


@tensorflow_only
def test_a_model_built_in_a_one_batch_fit_records_nothing(rng, tmp_path):
    x = rng.normal(size=(32, 6)).astype("float32")
    model = _compile(ThreeLayers())
    diag = GradientDiagnostics(log_dir=str(tmp_path))
    model.fit(x, x[:, :1], batch_size=32, epochs=1, verbose=0, callbacks=[diag])
    assert model.built and diag.history == [] and diag.findings == []
    # A second fit of the built model is recorded from its first step, by
    # another instance (the first one no longer holds the model) or by the
    # same.
    other = GradientDiagnostics()
    model.fit(x, x[:, :1], batch_size=32, epochs=1, verbose=0, callbacks=[other])
    assert [s.step for s in other.history] == [1]
    model.fit(x, x[:, :1], batch_size=32, epochs=1, verbose=0, callbacks=[diag])
    assert [s.step for s in diag.history] == [2]


def test_a_shared_layer_is_measured_over_all_its_calls(rng):
    # One Dense(4, relu) on two inputs: every unit is active on the positive
    # input and on no sample of the negative one. Over both calls no unit is
    # dead and half of the outputs are zero.
    shared = keras.layers.Dense(4, activation="relu", use_bias=False, name="shared")
    a, b = keras.Input((4,)), keras.Input((4,))
    joined = keras.layers.Concatenate()([shared(a), shared(b)])
    model = _compile(keras.Model([a, b], keras.layers.Dense(1, name="out")(joined)))
    shared.kernel.assign(np.eye(4, dtype="float32"))
    xa = np.abs(rng.normal(size=(32, 4))).astype("float32") + 0.1
    xb = -xa
    y = rng.normal(size=(32, 1)).astype("float32")
    diag = _diag(every_n_steps=1)
    model.fit([xa, xb], y, batch_size=32, epochs=1, verbose=0, callbacks=[diag])
    (stats,) = diag.history
    layer = {ls.layer: ls for ls in stats.layers}["shared"]
    outputs = np.concatenate([np.maximum(xa, 0.0), np.maximum(xb, 0.0)])  # x @ I
    np.testing.assert_allclose(layer.zero_fraction, np.mean(outputs <= 0.0))
    assert layer.zero_fraction == 0.5
    assert layer.dead_fraction == np.mean(np.all(outputs <= 0.0, axis=0)) == 0.0


def _bursting(batch_size=None, steps_per_execution=1):
    """A `GradientDiagnostics` set up as after its first recordings, to call
    `_burst` directly (the schedule's state only)."""
    from keras_actloss.diagnostics.records import LayerInfo, StepStats
    from keras_actloss.diagnostics.rules import HealthRules

    diag = _diag()
    diag._spe = diag._stride = steps_per_execution
    diag._rules = HealthRules([LayerInfo("dense", "Dense", "relu", True, 0)])
    diag.history = [StepStats(step=0, global_norm=1.0, batch_size=batch_size)]
    diag._start_schedule()
    diag._origin, diag._next = 0, 1000
    return diag


def test_a_burst_records_every_step_for_what_the_rules_need():
    # patience_steps 5 < 2 x DENSE_STEPS 8: 8 steps at batch 32 (128
    # samples in 4 batches); at batch 4, 128 / 4 = 32 steps.
    diag = _bursting(batch_size=32)
    diag._burst(10, noisy=False)
    assert (diag._next, diag._burst_end) == (10, 18)
    # Then back to the schedule from the start of training (origin 0):
    # a gap of 17 // 4 = 4 steps (`recording_gap`).
    assert [diag._gap(s) for s in (10, 16, 17)] == [1, 1, 4]
    diag = _bursting(batch_size=4)
    diag._burst(10, noisy=False)
    assert diag._burst_end == 42
    diag = _bursting(batch_size=1)  # 128 steps wanted, 32 at most.
    diag._burst(10, noisy=False)
    assert diag._burst_end == 42
    # Most of a layer's units inactive (`SUSPECTED`): all 128 recordings
    # of one sample that the dead units' window needs, (128 + 1) - 1 steps
    # from step 10; and the batch size of the recording that asks, before
    # it is kept in `history` (the first recording of a fit).
    diag = _bursting(batch_size=1)
    diag._burst(10, noisy=True, kind="suspected")
    assert diag._burst_end == 138
    diag = _bursting(batch_size=None)
    diag._burst(10, True, "suspected", 2)
    assert diag._burst_end == 74
    # One recording per execution of 4 steps: 4 batches of 32 take the 4
    # executions after the one the jump was seen in, (4 + 1) * 4 - 1 = 19
    # steps from step 10 (executions 12-15, ..., 24-27).
    diag = _bursting(batch_size=32, steps_per_execution=4)
    diag._burst(10, noisy=False)
    assert diag._burst_end == 29


def test_noisy_jumps_back_off_when_their_bursts_find_nothing():
    diag = _bursting(batch_size=32)
    diag._burst(10, noisy=True)  # Calm for every_n_steps (100) after.
    calm = diag._calms["jump"]
    assert (diag._burst_end, calm.until) == (18, 110)
    diag._burst(50, noisy=True)  # Within the calm: no burst.
    assert diag._burst_end == 18
    diag._burst(60, noisy=False)  # A hard jump always bursts.
    assert (diag._burst_end, calm.until) == (68, 110)
    diag._burst(120, noisy=True)  # The last burst found nothing: 200.
    assert (diag._burst_end, calm.until) == (128, 320)
    diag._burst(330, noisy=True)  # Again nothing: 400.
    assert calm.until == 730
    diag.findings.append("a finding")  # This burst found something: 100.
    diag._burst(800, noisy=True)
    assert (diag._burst_end, calm.until) == (808, 900)
    assert diag._calms["suspected"].until is None


def test_units_burst_is_not_held_back_by_a_calm_after_norm_jumps():
    # A spike of the norms started a noisy burst that found nothing; units
    # dying right after it still get their own burst, with their own
    # back-off (measured: SGD at lr 3 on a 64-32 ReLU MLP, a burst after a
    # norm jump at step 6 and half of the second layer's units inactive on
    # the batch of step 14: reported at 32 when the two shared one calm).
    diag = _bursting(batch_size=32)
    diag._burst(7, noisy=True)
    assert (diag._burst_end, diag._calms["jump"].until) == (15, 107)
    diag._burst(15, noisy=True, kind="suspected")
    assert (diag._burst_end, diag._calms["suspected"].until) == (23, 115)
    diag._burst(30, noisy=True, kind="suspected")  # Within its own calm.
    diag._burst(40, noisy=True)  # Within the jumps' calm.
    assert diag._burst_end == 23


@pytest.mark.parametrize("suspected_at", [None, 2])
def test_a_suspicious_recording_starts_a_noisy_burst(data, monkeypatch, suspected_at):
    # The rules flag a recording (`HealthRules.suspected`: most of a ReLU
    # layer's units inactive, not yet reported): the callback starts a
    # noisy burst from the next step, as after a noisy jump.
    from keras_actloss.diagnostics.rules import HealthRules

    observe = HealthRules.observe

    def flagging(self, stats):
        new = observe(self, stats)
        self.suspected = stats.step == suspected_at
        return new

    monkeypatch.setattr(HealthRules, "observe", flagging)
    x, y = data
    model = _compile(build_model("sequential"))
    diag = _diag()
    bursts = []
    diag._burst = lambda start, noisy, kind="jump", batch=None: bursts.append(
        (start, noisy, kind, batch)
    )
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[diag])
    # With the batch size of the recording that asked.
    assert ((3, True, "suspected", 8) in bursts) == (suspected_at == 2)


class _RisingRate(keras.optimizers.schedules.LearningRateSchedule):
    """`1e-3 * 1.05**step`: an exponential range test."""

    def __call__(self, step):
        return 1e-3 * keras.ops.power(1.05, keras.ops.cast(step, "float32"))

    def get_config(self):
        return {}


class _BatchLosses(keras.callbacks.Callback):
    """Each step's own loss, from Keras's running mean over the epoch
    (`k * mean_k - (k - 1) * mean_(k-1)`), and the findings of `diag` new
    after each step, with the step."""

    def __init__(self, diag):
        super().__init__()
        self.diag, self.losses, self.reported, self._mean = diag, [], [], 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._mean = 0.0

    def on_train_batch_end(self, batch, logs=None):
        mean = logs["loss"]
        self.losses.append((batch + 1) * mean - batch * self._mean)
        self._mean = mean
        step = len(self.losses) - 1
        self.reported += [(f, step) for f in self.diag.findings[len(self.reported) :]]


def test_a_rate_that_rises_until_the_loss_does_is_told_in_time(rng):
    # A 2x64 ReLU classifier under SGD at 1e-3 * 1.05**step: it learns,
    # then the loss climbs back as the rate grows, in swings (a first
    # doubling can pass). Measured here from the batch losses: the first
    # step (from 20) whose median of the last 5 losses is 2x the lowest
    # such median before it, and the first from which the next 5 medians
    # all are (the divergence for good). The rising-rate finding comes not
    # before the first, within 10 steps of the second, naming the
    # schedule. Most of those steps are quiet ones (`observe_quiet`), which
    # feed the rule too.
    x = rng.normal(size=(2048, 20)).astype("float32")
    y = np.argmax(np.tanh(x @ rng.normal(size=(20, 4))), axis=1)
    keras.utils.set_random_seed(0)
    model = relu_classifier(20)
    model.compile(
        keras.optimizers.SGD(_RisingRate()), "sparse_categorical_crossentropy"
    )
    diag = GradientDiagnostics()
    losses = _BatchLosses(diag)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=[diag, losses])
    medians = [np.median(losses.losses[max(0, i - 4) : i + 1]) for i in range(192)]
    doubled = [i for i in range(20, 187) if medians[i] > 2 * min(medians[4:i])]
    held = next(
        i for i in doubled if all(m > 2 * min(medians[4:i]) for m in medians[i : i + 5])
    )
    finding, reported = next(
        (f, s) for f, s in losses.reported if f.severity == "failure"
    )
    assert finding.mode == EXPLODING_GRADIENTS
    assert finding.message.startswith("The loss rose to")
    assert "the schedule raises the rate" in finding.message
    assert doubled[0] <= reported <= held + 10, (doubled[0], held, reported)


def _fit_told(model, x, y, shuffle):
    """`(callback, findings)` of one epoch of `model.fit` in batches of 16
    at default settings: each finding as `(mode, step, severity, the step
    it was told at)`."""
    diag = _diag()
    recorder = Recorder(diag)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GradientHealthWarning)
        model.fit(
            x,
            y,
            batch_size=16,
            epochs=1,
            shuffle=shuffle,
            verbose=0,
            callbacks=[diag, recorder],
        )
    return diag, [(f.mode, f.step, f.severity, at) for f, at in recorder.reported]


def _sorted_classes(rng):
    """A ReLU classifier and 4 classes of 64 samples sorted by class."""
    centers = rng.normal(size=(4, 8)) * 2
    y = np.repeat(np.arange(4), 64)
    x = (centers[y] + rng.normal(size=(256, 8))).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(4, activation="softmax"),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    return model, x, y


@pytest.mark.parametrize("shuffle", [False, True])
def test_batches_in_label_order_are_told(rng, shuffle):
    # 4 classes of 64 samples, sorted by class: unshuffled, batches 0-3 of
    # 16 hold class 0, 4-7 class 1, ...; recorded every step at first, a
    # second class comes with step 4: told then, a warning from step 0 (the
    # first recorded batch judged). Shuffled (as `fit` does by default):
    # nothing.
    model, x, y = _sorted_classes(rng)
    diag, found = _fit_told(model, x, y, shuffle)
    assert found == ([] if shuffle else [("unshuffled_data", 0, "warning", 4)])


def test_the_order_is_judged_before_the_steps_norm(rng, monkeypatch):
    # A recording's labels are judged before its step's global norm (so
    # that new data in order is no explosion: `NormRules._new_data`).
    calls = []
    for name in ("observe_order", "observe_step"):
        original = getattr(rules_module.HealthRules, name)

        def spy(self, first, *args, _original=original, _name=name):
            calls.append((_name, getattr(first, "step", first)))
            return _original(self, first, *args)

        monkeypatch.setattr(rules_module.HealthRules, name, spy)
    model, x, y = _sorted_classes(rng)
    _fit_told(model, x, y, shuffle=False)
    # Every step recorded at first.
    assert calls[:4] == [
        ("observe_order", 0),
        ("observe_step", 0),
        ("observe_order", 1),
        ("observe_step", 1),
    ]


@pytest.mark.parametrize("shuffle", [False, True])
def test_batches_in_input_order_are_told(rng, shuffle):
    # sin(2x) fitted on 256 values of x sorted: unshuffled, batches of 16
    # are slices of a sixteenth of the range, each spreading about 1/256 of
    # the variance of the 4 recorded together: told at step 3 (the fourth
    # recording), a warning from step 0. Shuffled: nothing.
    x = np.sort(rng.uniform(-3, 3, size=(256, 1)), axis=0).astype("float32")
    y = np.sin(2 * x).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(16, activation="tanh"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    diag, found = _fit_told(model, x, y, shuffle)
    assert found == ([] if shuffle else [("unshuffled_data", 0, "warning", 3)])
    if not shuffle:
        # Rows 0-63, four batches of 16: feature 0's share by NumPy.
        batches = x[:64].reshape(4, 16)
        share = batches.var(axis=1).mean() / batches.var()
        assert diag.findings[0].value == pytest.approx(share, rel=1e-5)


def test_a_later_fit_on_shuffled_data_is_not_held_in_order(rng):
    # A fit on features sorted, then one on the same rows shuffled with the
    # same callback: the order is judged afresh each fit (one finding).
    x = np.sort(rng.uniform(-3, 3, size=(128, 1)), axis=0).astype("float32")
    y = np.sin(2 * x).astype("float32")
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(1e-2), "mse")
    diag = _diag()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GradientHealthWarning)
        for shuffle in (False, True):
            model.fit(x, y, batch_size=16, shuffle=shuffle, verbose=0, callbacks=[diag])
            assert diag._rules.data_ordered == (not shuffle)
    assert [f.mode for f in diag.findings] == ["unshuffled_data"]
