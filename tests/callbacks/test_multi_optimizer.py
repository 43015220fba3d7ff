"""GradientDiagnostics with optimizers other than `model.optimizer`.

Reference gradients come from plain SGD, as in `test_gradient_diagnostics`:
with `w_after = w_before - lr * g`, the gradient an optimizer applied is
`(w_before - w_after) / lr`. Each optimizer here has its own learning rate,
so each layer's gradient is its weight change over its optimizer's rate.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from callback_models import run_script
from multi_optimizer_support import (
    D_LR,
    G_LR,
    GAN_RATES,
    LATENT,
    Weights,
    assert_gan_groups,
    assert_generator_jump_told,
    assert_grad_norms,
    assert_saturated_discriminator_reported,
    default_settings_fit,
    dense,
    gan_data,
    gan_networks,
    minimax_d_loss,
    minimax_g_loss,
    minimax_networks,
    minimax_optimizers,
    named_layers,
)

from keras_actloss.callbacks import (
    GradientDiagnostics,
    GradientHealthWarning,
    _model_plan,
)


class UnbuiltGAN(keras.Model):
    """A generator and a discriminator, each updated by its own optimizer
    (attributes of the model), as in the Keras DCGAN example: no `call`, so
    the model itself is never built."""

    def __init__(self):
        super().__init__()
        self.generator, self.discriminator = gan_networks()

    def compile(self, d_optimizer, g_optimizer):
        super().compile()
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer

    def train_step(self, data):
        real, z = data
        with tf.GradientTape() as tape:
            fake = self.generator(z)
            d_loss = tf.reduce_mean(
                tf.square(self.discriminator(real) - 1.0)
            ) + tf.reduce_mean(tf.square(self.discriminator(fake)))
            # Scaled for the gradient, as Keras's `train_step` does.
            d_scaled = self.d_optimizer.scale_loss(d_loss)
        d_vars = self.discriminator.trainable_variables
        d_grads = tape.gradient(d_scaled, d_vars)
        self.d_optimizer.apply_gradients(zip(d_grads, d_vars))
        with tf.GradientTape() as tape:
            g_loss = tf.reduce_mean(
                tf.square(self.discriminator(self.generator(z)) - 1.0)
            )
            g_scaled = self.g_optimizer.scale_loss(g_loss)
        g_vars = self.generator.trainable_variables
        g_grads = tape.gradient(g_scaled, g_vars)
        self.g_optimizer.apply_gradients(zip(g_grads, g_vars))
        return {"d_loss": d_loss, "g_loss": g_loss}


class GAN(UnbuiltGAN):
    """`UnbuiltGAN` with a `call`, built before `fit`."""

    def call(self, z):
        return self.discriminator(self.generator(z))


def _gan(scaled=False, cls=None):
    model = (cls or GAN)()
    model(np.zeros((1, LATENT), "float32"))
    d, g = keras.optimizers.SGD(D_LR), keras.optimizers.SGD(G_LR)
    if scaled:  # Scales of 2**15 and 2**10: unscaled before they are joined.
        d = keras.optimizers.LossScaleOptimizer(d)
        g = keras.optimizers.LossScaleOptimizer(g, initial_scale=2.0**10)
    model.compile(d, g)
    return model


def test_gan_layers_are_judged_by_their_own_loss_and_data(rng):
    assert_gan_groups(_gan(), GradientDiagnostics(check_model=False), rng)


def test_a_gan_restarting_both_rates_is_no_explosion():
    # Cosine restarts of both networks' SGD rates every 40 steps (650x at
    # step 40): the discriminator's loss, the one noted, went from about
    # 0.25 to 0.53-0.98 for a few steps while the generator caught up, then
    # stayed at the two networks' balance of 0.5 (probed on this seed; told
    # as an explosion that "undid what the model had learned" before the
    # step's optimizers were known to scale losses of their own). A plain
    # model's one loss is no separate one.
    keras.utils.set_random_seed(1)
    model = GAN()
    model(np.zeros((1, LATENT), "float32"))

    def restarts(rate):
        return keras.optimizers.schedules.CosineDecayRestarts(rate, 40, alpha=0.0)

    model.compile(
        keras.optimizers.SGD(restarts(D_LR)), keras.optimizers.SGD(restarts(G_LR))
    )
    rng = np.random.default_rng(1)
    real = (rng.normal(size=(1024, 4)) * 0.5 + 1).astype("float32")
    z = rng.normal(size=(1024, LATENT)).astype("float32")
    diag = GradientDiagnostics()
    model.fit(real, z, batch_size=16, epochs=2, verbose=0, callbacks=[diag])
    assert diag._hooks.separate_losses and diag._rules.separate_losses
    assert [f for f in diag.findings if f.severity == "failure"] == []
    plain = keras.Sequential([keras.Input((4,)), dense(1, "out")])
    plain.compile("sgd", "mse")
    diag = GradientDiagnostics()
    plain.fit(real, real[:, :1], batch_size=256, verbose=0, callbacks=[diag])
    assert not diag._hooks.separate_losses and not diag._rules.separate_losses


class TwiceGAN(GAN):
    """`GAN` whose step trains both networks twice (as a WGAN trains its
    critic n_critic times a step)."""

    def train_step(self, data):
        super().train_step(data)
        return super().train_step(data)


def test_steps_follow_an_optimizer_that_applies_twice_a_step(rng):
    # The step is the discriminator's count, 2 per batch: the callback's
    # count and schedule move with it. Every step is recorded up to step
    # 7 (the dense start); the batch of steps 12-13 is recorded, then the
    # next recording is due at 13 + 13 // 4 = 16 (`recording_gap`).
    model = _gan(cls=TwiceGAN)
    real, z = gan_data(rng)
    diag = GradientDiagnostics(check_model=False)
    model.fit(real, z, batch_size=4, epochs=2, verbose=0, callbacks=[diag])
    assert [s.step for s in diag.history] == [0, 2, 4, 6, 8, 10, 12]
    assert diag._step == 16 == int(model.d_optimizer.iterations.numpy())


class SmallLatentGAN(GAN):
    """`GAN` whose generator gets 2 new latents a step whatever the batch."""

    def train_step(self, data):
        real, _ = data
        return super().train_step((real, tf.random.normal((2, LATENT))))


def test_samples_of_layers_run_on_other_batches(rng):
    # The generator's calls have a static batch of 2, the data's 4: its
    # dead units are judged on the 2 latents, not on the batch of 4; the
    # discriminator's on its largest call's 4 (the data; then 2 fakes).
    model = _gan(cls=SmallLatentGAN)
    real, z = gan_data(rng)
    diag = GradientDiagnostics(check_model=False)
    model.fit(real, z, batch_size=4, verbose=0, callbacks=[diag])
    assert len(diag.history) == 4
    for stats in diag.history:
        layers = {ls.layer: ls for ls in stats.layers}
        assert stats.batch_size == 4
        assert layers["generator/g_hidden"].unit_samples == 2
        assert layers["discriminator/d_hidden"].unit_samples == 4


class TwiceTrained(keras.Model):
    """A ReLU MLP whose step applies its one optimizer twice."""

    def __init__(self):
        super().__init__()
        self.hidden = dense(8, "hidden", "relu")
        self.out = dense(1, "out")

    def call(self, x):
        return self.out(self.hidden(x))

    def train_step(self, data):
        x, y = data
        for _ in range(2):
            with tf.GradientTape() as tape:
                loss = self.compute_loss(x=x, y=y, y_pred=self(x, training=True))
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return {"loss": loss}


def test_steps_follow_the_one_optimizer_applied_twice_a_step(data):
    # One optimizer (its count known from the start), 2 updates a batch:
    # the count moves 2 a batch from the first (as in the GAN above).
    x, y = data
    model = TwiceTrained()
    model(x[:1])
    model.compile(keras.optimizers.SGD(0.01), "mse")
    diag = GradientDiagnostics(check_model=False)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[diag])
    assert [s.step for s in diag.history] == [0, 2, 4, 6, 8, 10, 12]
    assert diag._step == 16 == int(model.optimizer.iterations.numpy())


@pytest.mark.parametrize("scaled", [False, True], ids=["sgd", "loss_scaled"])
def test_gan_records_both_optimizers_gradients(rng, scaled):
    model = _gan(scaled)
    real, z = gan_data(rng)
    diag = GradientDiagnostics(every_n_steps=1, check_model=False)
    weights = Weights(named_layers(model, GAN_RATES))
    model.fit(real, z, batch_size=4, epochs=1, verbose=0, callbacks=[diag, weights])
    assert [info.name for info in diag.layers] == list(GAN_RATES)
    # The step is the discriminator's optimizer's count (it applies first).
    assert [s.step for s in diag.history] == [0, 1, 2, 3]
    assert int(model.d_optimizer.iterations.numpy()) == 4
    # The bare `compile()`'s RMSprop never applied: it only counts nothing.
    assert int(model.optimizer.iterations.numpy()) == 0
    assert_grad_norms(diag, weights, GAN_RATES)
    # The global norm is over both sub-models' gradients.
    w0, w1 = weights.seen[:2]
    every = np.concatenate([(w0[n] - w1[n]) / r for n, r in GAN_RATES.items()])
    np.testing.assert_allclose(
        diag.history[0].global_norm, np.linalg.norm(every), rtol=1e-5
    )
    # The recorded loss is the first one scaled in the step, the
    # discriminator's (from the logs of the only step of a 1-step fit).
    if not scaled:
        logs = model.fit(real[:4], z[:4], batch_size=4, verbose=0, callbacks=[diag])
        np.testing.assert_allclose(
            diag.history[-1].loss, logs.history["d_loss"][0], rtol=1e-6
        )
    # The hooks are gone after fit.
    for optimizer in (model.d_optimizer, model.g_optimizer, model.optimizer):
        assert "apply" not in vars(optimizer)


def test_a_gan_that_is_never_built_is_recorded_from_its_first_step(rng):
    # Neither `fit` nor the GAN's `train_step` builds the model (no `call`),
    # but its networks are built (each has an `Input`): the first step makes
    # only the optimizers' weights, and is recorded. `check_model` (on by
    # default) has no graph to read.
    model = UnbuiltGAN()
    model.compile(keras.optimizers.SGD(D_LR), keras.optimizers.SGD(G_LR))
    real, z = gan_data(rng)
    diag = GradientDiagnostics(every_n_steps=1)
    weights = Weights(named_layers(model, GAN_RATES))
    model.fit(real, z, batch_size=4, epochs=1, verbose=0, callbacks=[diag, weights])
    assert not model.built
    assert [info.name for info in diag.layers] == list(GAN_RATES)
    assert [s.step for s in diag.history] == [0, 1, 2, 3]
    assert diag.findings == []
    assert_grad_norms(diag, weights, GAN_RATES)
    for optimizer in (model.d_optimizer, model.g_optimizer):
        assert "apply" not in vars(optimizer)


def test_gan_second_fit_with_a_new_callback_continues_the_steps(rng):
    model = _gan()
    real, z = gan_data(rng)
    model.fit(real, z, batch_size=4, epochs=1, verbose=0)
    # Until a step is traced the step counter is a guess, the smallest count
    # of the hooked optimizers: the unused RMSprop's 0 here, not 4.
    diag = GradientDiagnostics(every_n_steps=2, check_model=False)
    diag.DENSE_STEPS = 0
    model.fit(real, z, batch_size=4, epochs=2, verbose=0, callbacks=[diag])
    # Steps 4-11 of the discriminator's optimizer, recorded every 2 steps.
    assert [s.step for s in diag.history] == [4, 6, 8, 10]
    assert diag._step == 12
    assert diag.findings == []


class TwoStage(keras.Model):
    """A body trained by `model.optimizer` on the loss, then a head trained
    by a second optimizer (an attribute) on the body's detached output."""

    def __init__(self, head_optimizer):
        super().__init__()
        self.body = dense(8, "body", "relu")
        self.head = dense(1, "head")
        self.head_optimizer = head_optimizer

    def call(self, x):
        return self.head(self.body(x))

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            loss = self.compute_loss(x=x, y=y, y_pred=self(x, training=True))
            scaled = self.optimizer.scale_loss(loss)
        body = self.body.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(scaled, body), body))
        features = tf.stop_gradient(self.body(x))
        with tf.GradientTape() as tape:
            head_loss = tf.reduce_mean(tf.square(self.head(features) - y))
        head = self.head.trainable_variables
        self.head_optimizer.apply_gradients(zip(tape.gradient(head_loss, head), head))
        return {"loss": loss}


def test_two_stage_model_records_both_stages(data):
    x, y = data
    model = TwoStage(keras.optimizers.SGD(G_LR))
    model(x[:1])
    model.compile(keras.optimizers.SGD(D_LR), "mse")
    diag = GradientDiagnostics(every_n_steps=1, check_model=False)
    weights = Weights({"body": model.body, "head": model.head})
    # The loss of step 0 from the weights before it (mean squared error).
    first = np.mean((model.predict(x[:8], verbose=0) - y[:8]) ** 2)
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[diag, weights],
    )
    # `model.optimizer` applies first: its count is the step.
    assert [s.step for s in diag.history] == [0, 1, 2, 3]
    assert_grad_norms(diag, weights, {"body": D_LR, "head": G_LR})
    np.testing.assert_allclose(diag.history[0].loss, first, rtol=1e-5)


class Shared(keras.Model):
    """One layer updated twice in a step, by two optimizers with the same
    learning rate on two losses: its gradient is the sum of both."""

    def __init__(self):
        super().__init__()
        self.dense = dense(1, "dense")
        self.first = keras.optimizers.SGD(D_LR)
        self.second = keras.optimizers.SGD(D_LR)

    def call(self, x):
        return self.dense(x)

    def train_step(self, data):
        x, y = data
        variables = self.trainable_variables
        for optimizer, power in ((self.first, 2.0), (self.second, 4.0)):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean((self(x) - y) ** power)
            grads = tape.gradient(loss, variables)
            optimizer.apply_gradients(zip(grads, variables))
        return {"loss": loss}


def test_variable_updated_by_two_optimizers_gets_the_sum(data):
    x, y = data
    model = Shared()
    model(x[:1])
    model.compile()
    diag = GradientDiagnostics(every_n_steps=1, check_model=False)
    weights = Weights({"dense": model.dense})
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[diag, weights])
    # `w1 = w0 - lr * g1 - lr * g2`: `dw / lr` is the sum of both gradients,
    # and the update ratio compares the weights before and after the step.
    assert_grad_norms(diag, weights, {"dense": D_LR})


# Logical devices must be configured before TensorFlow initialises them: a
# process of its own. The head's optimizer is built under the strategy, as
# Keras builds `model.optimizer` (it cannot create variables per replica).
_MIRRORED_TWO_STAGE = """
import json, os
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from keras_actloss.callbacks import GradientDiagnostics


class TwoStage(keras.Model):
    def __init__(self, head_optimizer):
        super().__init__()
        self.body = keras.layers.Dense(8, activation="relu", name="body")
        self.head = keras.layers.Dense(1, name="head")
        self.head_optimizer = head_optimizer

    def call(self, x):
        return self.head(self.body(x))

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(self(x) - y))
        body = self.body.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, body), body))
        features = tf.stop_gradient(self.body(x))
        with tf.GradientTape() as tape:
            head_loss = tf.reduce_mean(tf.square(self.head(features) - y))
        head = self.head.trainable_variables
        self.head_optimizer.apply_gradients(zip(tape.gradient(head_loss, head), head))
        return {"loss": loss}


keras.utils.set_random_seed(1)
rng = np.random.default_rng(1)
x = rng.normal(size=(32, 6)).astype("float32")
y = rng.normal(size=(32, 1)).astype("float32")
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    model = TwoStage(keras.optimizers.SGD(0.05))
    model(x[:1])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.head_optimizer.build(model.head.trainable_variables)
before = [v.numpy() for v in model.trainable_variables]
diag = GradientDiagnostics(every_n_steps=1, check_model=False)
model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[diag])
after = [v.numpy() for v in model.trainable_variables]
rates = [0.1, 0.1, 0.05, 0.05]
g = [((b - a) / r).ravel() for b, a, r in zip(before, after, rates)]
s = diag.history[0]
print(json.dumps({
    "replicas": strategy.num_replicas_in_sync,
    "reference": [float(np.linalg.norm(np.concatenate(g[:2]))),
                  float(np.linalg.norm(np.concatenate(g[2:])))],
    "recorded": [ls.grad_norm for ls in s.layers],
    "names": [ls.layer for ls in s.layers],
    "steps": [h.step for h in diag.history],
}))
"""


def test_mirrored_strategy_two_optimizers_are_summed_across_replicas():
    result = run_script(_MIRRORED_TWO_STAGE)
    assert result["replicas"] == 2
    assert result["names"] == ["body", "head"] and result["steps"] == [0]
    # `dw / lr` is the gradient summed over the replicas (SGD).
    np.testing.assert_allclose(result["recorded"], result["reference"], rtol=1e-5)


class Hidden(keras.Model):
    """A `train_step` whose optimizer the model holds only through a bound
    method: no attribute holds the optimizer itself."""

    def __init__(self, optimizer):
        super().__init__()
        self.dense = dense(1, "dense")
        self._apply = optimizer.apply_gradients

    def call(self, x):
        return self.dense(x)

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(self(x) - y))
        grads = tape.gradient(loss, self.trainable_variables)
        self._apply(zip(grads, self.trainable_variables))
        return {"loss": loss}


def test_explicit_optimizers_are_recorded(data):
    x, y = data
    own = keras.optimizers.SGD(D_LR)
    model = Hidden(own)
    model(x[:1])
    model.compile()
    diag = GradientDiagnostics(every_n_steps=1, check_model=False, optimizers=[own])
    weights = Weights({"dense": model.dense})
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[diag, weights])
    assert [s.step for s in diag.history] == [0, 1, 2, 3]
    assert_grad_norms(diag, weights, {"dense": D_LR})


class Listed(Hidden):
    """The same `train_step`, with the optimizer kept in a list attribute
    (found there, as Keras saves it with the model)."""

    def __init__(self, optimizer):
        super().__init__(optimizer)
        self.own = [optimizer]


def test_optimizer_in_a_list_attribute_is_recorded(data):
    x, y = data
    model = Listed(keras.optimizers.SGD(D_LR))
    model(x[:1])
    model.compile()
    diag = GradientDiagnostics(every_n_steps=1, check_model=False)
    weights = Weights({"dense": model.dense})
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[diag, weights])
    assert [s.step for s in diag.history] == [0, 1, 2, 3]
    assert_grad_norms(diag, weights, {"dense": D_LR})


def test_nothing_applied_warns_once_naming_the_hooked_optimizers(data):
    x, y = data
    model = Hidden(keras.optimizers.SGD(D_LR))
    model(x[:1])
    model.compile()
    diag = GradientDiagnostics(check_model=False)
    with pytest.warns(GradientHealthWarning, match="saw no gradients") as seen:
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[diag])
    messages = [str(w.message) for w in seen if "saw no gradients" in str(w.message)]
    assert len(messages) == 1
    assert "at step 0" in messages[0]
    assert "(`model.optimizer` (RMSprop))" in messages[0]
    assert "optimizers=[...]" in messages[0]
    assert diag.history == [] and diag.findings == []


@pytest.mark.parametrize(
    "value", [keras.optimizers.SGD(), ["sgd"], "adam", [keras.optimizers.SGD(), 3]]
)
def test_bad_optimizers_raise_value_error(value):
    with pytest.raises(ValueError, match="Received: optimizers="):
        GradientDiagnostics(optimizers=value)


def test_find_optimizers_hooks_the_outer_loss_scale_optimizer():
    inner = keras.optimizers.SGD(0.1)
    outer = keras.optimizers.LossScaleOptimizer(inner)
    extra = keras.optimizers.Adam()
    model = keras.Sequential([keras.Input((2,)), dense(1, "out")])
    model.compile(keras.optimizers.SGD(), "mse")
    model.stages = {"scaled": outer}
    model.inner = inner
    model.pair = [model.optimizer, extra]
    found = _model_plan.find_optimizers(model, [extra, inner])
    assert [(path, o) for path, o in found] == [
        ("model.optimizer", model.optimizer),
        ("model.stages['scaled']", outer),
        ("model.pair[1]", extra),
    ]


@pytest.mark.parametrize("dead", [False, True], ids=["healthy", "dead_generator"])
def test_gan_at_default_settings(rng, dead):
    # Healthy: no training failure in 64 steps. With the generator's ReLU
    # layer dead from step 0: reported by its path once 64 samples show no
    # unit of it active (4 batches of 16) over 5 steps (patience_steps:
    # steps 0-4), from the discriminator's step count.
    found = default_settings_fit(_gan(), rng, dead)
    assert found == ([("dead_relu", "generator/g_hidden", 0, 4)] if dead else [])


def test_a_jump_of_the_generators_rate_is_named(rng):
    model = GAN()
    model(np.zeros((1, LATENT), "float32"))
    assert_generator_jump_told(model, rng)


class MinimaxGAN(keras.Model):
    """`minimax_networks` trained as Goodfellow et al. (2014) state it
    (`assert_saturated_discriminator_reported`)."""

    def __init__(self, saturating):
        super().__init__()
        self.generator, self.discriminator = minimax_networks()
        self.saturating = saturating

    def compile(self):
        super().compile()
        self.d_optimizer, self.g_optimizer = minimax_optimizers()

    def train_step(self, data):
        real, z = data
        d_vars = self.discriminator.trainable_variables
        with tf.GradientTape() as tape:
            real_logits = self.discriminator(real)
            fake_logits = self.discriminator(self.generator(z))
            d_loss = minimax_d_loss(real_logits, fake_logits)
        self.d_optimizer.apply(tape.gradient(d_loss, d_vars), d_vars)
        g_vars = self.generator.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.discriminator(self.generator(z))
            g_loss = minimax_g_loss(logits, self.saturating)
        self.g_optimizer.apply(tape.gradient(g_loss, g_vars), g_vars)
        return {"d_loss": d_loss, "g_loss": g_loss}


@pytest.mark.parametrize(
    "saturating", [True, False], ids=["saturating", "non_saturating"]
)
def test_a_saturated_discriminator_is_reported(saturating):
    # Seeded before the networks are built (their weights otherwise depend
    # on the tests run before in the process). The discriminator's norm is
    # under 1e-2 of its first steps' (0.684) at step 31 (0.0061), the
    # generator's (0.644) at step 38 (0.0036); recorded at every step from
    # 38, 5 recordings over steps 38-42 confirm it.
    keras.utils.set_random_seed(0)
    model = MinimaxGAN(saturating)
    model.compile()
    assert_saturated_discriminator_reported(model, saturating, (38, 42))
