"""GradientDiagnostics with optimizers other than `model.optimizer`, on JAX.

The JAX counterpart of `test_multi_optimizer.py` (runs in `.ci/run`'s JAX
stage, without TensorFlow; skipped on other backends). Keras's JAX `fit`
passes a custom `train_step(state, data)` only `model.optimizer.variables`
as optimizer state, so these models compile with
`keras.optimizers.MultiOptimizer` over their optimizers (its `variables`
are every sub-optimizer's: `fit` carries, syncs and saves them) and call
each one's `stateless_apply` on its slice (`_OptimizerState`).

Reference gradients come from plain SGD: with `w_after = w_before - lr * g`,
the gradient an optimizer applied is `(w_before - w_after) / lr`, each
layer's over its own optimizer's rate.
"""

import warnings

import keras
import numpy as np
import pytest
from keras import ops
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

from tests.backend_support import BACKEND

pytestmark = pytest.mark.skipif(
    BACKEND != "jax", reason=f"about the JAX trainer; backend={BACKEND}"
)


def _diag(**kwargs):
    from keras_actloss.callbacks import GradientDiagnostics

    kwargs.setdefault("check_model", False)
    kwargs.setdefault("every_n_steps", 1)
    return GradientDiagnostics(**kwargs)


class _OptimizerState:
    """Mixin: the values of `fit`'s state by variable, and one optimizer's
    `stateless_apply` on its own slice of them."""

    def _values(self, state) -> dict:
        trainable, _, optimizer_variables, _ = state
        refs = self.trainable_variables + self.optimizer.variables
        return dict(zip(map(id, refs), [*trainable, *optimizer_variables]))

    @staticmethod
    def _apply(optimizer, values, grads, variables) -> None:
        own = optimizer.variables
        new, new_own = optimizer.stateless_apply(
            [values[id(v)] for v in own], grads, [values[id(v)] for v in variables]
        )
        values.update(zip(map(id, variables), new))
        values.update(zip(map(id, own), new_own))

    def _state(self, values, state):
        trainable, non_trainable, optimizer_variables, metrics = state
        return (
            [values[id(v)] for v in self.trainable_variables],
            non_trainable,
            [values[id(v)] for v in self.optimizer.variables],
            metrics,
        )


def _read(values, variables):
    return [values[id(v)] for v in variables]


class GAN(_OptimizerState, keras.Model):
    """A generator and a discriminator, each updated by its own optimizer
    (attributes of the model), written for Keras's JAX trainer."""

    def __init__(self, networks=None):
        super().__init__()
        self.generator, self.discriminator = networks or gan_networks()

    def compile(self, d_optimizer, g_optimizer):
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer

        def owner(variable):
            generated = variable.path.startswith("generator/")
            return g_optimizer if generated else d_optimizer

        super().compile(optimizer=keras.optimizers.MultiOptimizer(owner))

    def call(self, z):
        return self.discriminator(self.generator(z))

    def _d_loss(self, d_weights, g_weights, real, z):
        fake, _ = self.generator.stateless_call(g_weights, [], z)
        d_real, _ = self.discriminator.stateless_call(d_weights, [], real)
        d_fake, _ = self.discriminator.stateless_call(d_weights, [], fake)
        return ops.mean(ops.square(d_real - 1.0)) + ops.mean(ops.square(d_fake))

    def _g_loss(self, g_weights, d_weights, z):
        fake, _ = self.generator.stateless_call(g_weights, [], z)
        d_fake, _ = self.discriminator.stateless_call(d_weights, [], fake)
        return ops.mean(ops.square(d_fake - 1.0))

    def train_step(self, state, data):
        import jax

        real, z = data
        values = self._values(state)
        d_vars = self.discriminator.trainable_variables
        g_vars = self.generator.trainable_variables
        d_loss, d_grads = jax.value_and_grad(self._d_loss)(
            _read(values, d_vars), _read(values, g_vars), real, z
        )
        self._apply(self.d_optimizer, values, d_grads, d_vars)
        g_loss, g_grads = jax.value_and_grad(self._g_loss)(
            _read(values, g_vars), _read(values, d_vars), z
        )
        self._apply(self.g_optimizer, values, g_grads, g_vars)
        return {"d_loss": d_loss, "g_loss": g_loss}, self._state(values, state)


def _gan(cls=None):
    model = (cls or GAN)()
    model(np.zeros((1, LATENT), "float32"))
    model.compile(keras.optimizers.SGD(D_LR), keras.optimizers.SGD(G_LR))
    return model


def test_gan_layers_are_judged_by_their_own_loss_and_data(rng):
    assert_gan_groups(_gan(), _diag(), rng)


def test_gan_records_both_optimizers_gradients(rng):
    model = _gan()
    real, z = gan_data(rng)
    diag = _diag()
    weights = Weights(named_layers(model, GAN_RATES))
    model.fit(real, z, batch_size=4, epochs=1, verbose=0, callbacks=[diag, weights])
    assert [info.name for info in diag.layers] == list(GAN_RATES)
    # The step is the discriminator's optimizer's count (it applies first).
    assert [s.step for s in diag.history] == [0, 1, 2, 3]
    assert int(model.d_optimizer.iterations.numpy()) == 4
    assert int(model.g_optimizer.iterations.numpy()) == 4
    # The MultiOptimizer only carries their state: it never applied.
    assert int(model.optimizer.iterations.numpy()) == 0
    assert_grad_norms(diag, weights, GAN_RATES)
    # The global norm is over both sub-models' gradients.
    for stats, w0, w1 in zip(diag.history, weights.seen, weights.seen[1:]):
        every = np.concatenate([(w0[n] - w1[n]) / r for n, r in GAN_RATES.items()])
        np.testing.assert_allclose(stats.global_norm, np.linalg.norm(every), rtol=1e-5)
    # The GAN's own losses run outside `model.compute_loss_and_updates`: no
    # loss on JAX (TensorFlow has it).
    assert all(s.loss is None for s in diag.history)
    assert diag.findings == []
    # The hooks are gone after fit.
    for optimizer in (model.d_optimizer, model.g_optimizer, model.optimizer):
        assert "stateless_apply" not in vars(optimizer)


def test_gan_weight_rows_at_default_settings_are_read_by_the_host(rng):
    # At the default schedule (the dense start records these 4 steps in
    # full; `_diag` records every step, where the step keeps the rows) the
    # GAN hands its optimizers the training state's own values: the host
    # reduces the weights and updates from the state around each step, the
    # discriminator's first (it applies first), with the step's values.
    model = _gan()
    real, z = gan_data(rng)
    diag = _diag(every_n_steps=100)
    weights = Weights(named_layers(model, GAN_RATES))
    model.fit(real, z, batch_size=4, epochs=1, verbose=0, callbacks=[diag, weights])
    assert diag._hooks._weight_positions == [4, 5, 6, 7, 0, 1, 2, 3]
    assert [s.step for s in diag.history] == [0, 1, 2, 3]
    assert_grad_norms(diag, weights, GAN_RATES)


class TwiceGAN(GAN):
    """`GAN` whose step trains both networks twice (as a WGAN trains its
    critic n_critic times a step)."""

    def train_step(self, state, data):
        _, state = super().train_step(state, data)
        return super().train_step(state, data)


def test_steps_follow_an_optimizer_that_applies_twice_a_step(rng):
    # The step is the discriminator's count, 2 per batch: the callback's
    # count and schedule move with it. Every step is recorded up to step
    # 7 (the dense start); the batch of steps 12-13 is recorded, then the
    # next recording is due at 13 + 13 // 4 = 16 (`recording_gap`).
    model = _gan(cls=TwiceGAN)
    real, z = gan_data(rng)
    diag = _diag(every_n_steps=100)
    model.fit(real, z, batch_size=4, epochs=2, verbose=0, callbacks=[diag])
    assert [s.step for s in diag.history] == [0, 2, 4, 6, 8, 10, 12]
    assert diag._step == 16 == int(model.d_optimizer.iterations.numpy())


class SmallLatentGAN(GAN):
    """`GAN` whose generator gets 2 latents a step whatever the batch."""

    def train_step(self, state, data):
        real, z = data
        return super().train_step(state, (real, z[:2]))


def test_samples_of_layers_run_on_other_batches(rng):
    # The generator sees 2 latents a step (twice), the discriminator the 4
    # real samples and the 2 fakes: its dead units are judged on the
    # samples its largest call saw, not on the data's batch of 4.
    model = _gan(cls=SmallLatentGAN)
    real, z = gan_data(rng)
    diag = _diag()
    model.fit(real, z, batch_size=4, shuffle=False, verbose=0, callbacks=[diag])
    for stats in diag.history:
        layers = {ls.layer: ls for ls in stats.layers}
        assert stats.batch_size == 4
        assert layers["generator/g_hidden"].unit_samples == 2
        assert layers["discriminator/d_hidden"].unit_samples == 4


def _unpack(flat, fan_in, units):
    """A Dense layer's kernel and bias from `Weights`' flat vector."""
    return flat[: fan_in * units].reshape(fan_in, units), flat[fan_in * units :]


def test_gan_own_losses_record_activation_statistics(rng):
    # The layers run in the GAN's own loss functions (under its own
    # `jax.value_and_grad`) are counted, on every call of the step.
    from keras_actloss.activations import profile

    model = _gan()
    real, z = gan_data(rng)
    diag = _diag()
    weights = Weights(named_layers(model, GAN_RATES))
    model.fit(
        real, z, batch_size=4, shuffle=False, verbose=0, callbacks=[diag, weights]
    )
    low, high = profile("tanh").saturation_bounds
    assert len(diag.history) == 4
    for step, stats in enumerate(diag.history):
        w0, w1 = weights.seen[step], weights.seen[step + 1]
        batch = slice(4 * step, 4 * step + 4)
        # The generator runs twice (for each optimizer) with the same
        # weights and latents: the fractions of one call.
        kernel, bias = _unpack(w0["generator/g_hidden"], LATENT, 8)
        hidden = np.maximum(z[batch] @ kernel + bias, 0.0)
        kernel, bias = _unpack(w0["generator/g_out"], 8, 4)
        fake = hidden @ kernel + bias

        def d_hidden(x, w):
            kernel, bias = _unpack(w["discriminator/d_hidden"], 4, 8)
            return np.tanh(x @ kernel + bias)

        # The discriminator sees the real and the fake batch, then the fake
        # one again after its own update.
        tanh = np.concatenate(
            [d_hidden(real[batch], w0), d_hidden(fake, w0), d_hidden(fake, w1)]
        )
        layers = {ls.layer: ls for ls in stats.layers}
        g = layers["generator/g_hidden"]
        np.testing.assert_allclose(g.zero_fraction, np.mean(hidden <= 0.0), rtol=1e-6)
        dead = np.mean(np.all(hidden <= 0.0, axis=0))
        np.testing.assert_allclose(g.dead_fraction, dead, rtol=1e-6)
        np.testing.assert_allclose(
            layers["discriminator/d_hidden"].saturation,
            np.mean((tanh <= low) | (tanh >= high)),
            rtol=1e-6,
        )
        assert layers["generator/g_out"].zero_fraction is None


class _Reported(keras.callbacks.Callback):
    """The batch at which the callback before it had its first finding."""

    def __init__(self, diag):
        super().__init__()
        self.diag, self.at = diag, None

    def on_train_batch_end(self, batch, logs=None):
        if self.at is None and self.diag.findings:
            self.at = batch


def test_dead_generator_layer_is_reported(rng):
    from keras_actloss.callbacks import GradientHealthWarning

    # The generator's hidden ReLU layer is dead from step 0 (bias -50 with
    # latents ~N(0, 1)): dead units need 128 samples, 4 batches of 32
    # (steps 0-3), over patience_steps 5 steps: reported at step 4.
    model = _gan()
    layer = model.generator.get_layer("g_hidden")
    layer.bias.assign(np.full(8, -50.0, "float32"))
    real = rng.normal(size=(256, 4)).astype("float32")
    z = rng.normal(size=(256, LATENT)).astype("float32")
    diag = _diag(every_n_steps=100)
    reported = _Reported(diag)
    with pytest.warns(GradientHealthWarning, match="dead_relu"):
        model.fit(real, z, batch_size=32, verbose=0, callbacks=[diag, reported])
    found = [(f.mode, f.layer, f.step) for f in diag.findings]
    assert found == [("dead_relu", "generator/g_hidden", 0)]
    assert reported.at == 4


def test_gan_second_fit_continues_the_steps(rng):
    model = _gan()
    real, z = gan_data(rng)
    model.fit(real, z, batch_size=4, epochs=1, verbose=0)
    # Until a step is traced the step counter is the smallest count of the
    # hooked optimizers (the MultiOptimizer's 0): a guess, moved to the
    # discriminator's 4 after the first batch.
    diag = _diag(every_n_steps=2)
    diag.DENSE_STEPS = 0
    model.fit(real, z, batch_size=4, epochs=2, verbose=0, callbacks=[diag])
    assert [s.step for s in diag.history] == [4, 6, 8, 10]
    assert diag._step == 12
    assert diag.findings == []


def test_gan_gradients_are_unscaled_before_they_are_joined(rng):
    # Both optimizers scale the loss by 2**6 (a MultiOptimizer sets its
    # `loss_scale_factor` on them): each call's gradients carry it, and the
    # joined row must not.
    model = GAN()
    model(np.zeros((1, LATENT), "float32"))
    model.compile(keras.optimizers.SGD(D_LR), keras.optimizers.SGD(G_LR))
    model.optimizer.loss_scale_factor = 2.0**6
    plain = GAN._d_loss, GAN._g_loss

    def scaled(loss):
        return lambda self, *args: loss(self, *args) * 2.0**6

    model._d_loss = scaled(plain[0]).__get__(model)
    model._g_loss = scaled(plain[1]).__get__(model)
    real, z = gan_data(rng)
    diag = _diag()
    weights = Weights(named_layers(model, GAN_RATES))
    model.fit(real, z, batch_size=4, epochs=1, verbose=0, callbacks=[diag, weights])
    assert model.d_optimizer.loss_scale_factor == 2.0**6
    assert_grad_norms(diag, weights, GAN_RATES)


class Hidden(_OptimizerState, keras.Model):
    """A `train_step` whose optimizer the model reaches only through a
    closure: no attribute holds the optimizer itself."""

    def __init__(self, optimizer):
        super().__init__()
        self.dense = dense(1, "dense")
        self._own = lambda: optimizer

    def call(self, x):
        return self.dense(x)

    def _loss(self, weights, x, y):
        y_pred, _ = self.stateless_call(weights, [], x)
        return ops.mean(ops.square(y_pred - y))

    def train_step(self, state, data):
        import jax

        x, y = data
        values = self._values(state)
        variables = self.trainable_variables
        loss, grads = jax.value_and_grad(self._loss)(_read(values, variables), x, y)
        self._apply(self._own(), values, grads, variables)
        return {"loss": loss}, self._state(values, state)


def _hidden(optimizer):
    model = Hidden(optimizer)
    model(np.zeros((1, 6), "float32"))
    # Its state rides in `fit`'s: the one sub-optimizer of a MultiOptimizer.
    model.compile(keras.optimizers.MultiOptimizer(lambda variable: optimizer))
    return model


def test_explicit_optimizers_are_recorded(data):
    x, y = data
    own = keras.optimizers.SGD(D_LR)
    model = _hidden(own)
    diag = _diag(optimizers=[own])
    weights = Weights({"dense": model.dense})
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[diag, weights])
    assert [s.step for s in diag.history] == [0, 1, 2, 3]
    assert_grad_norms(diag, weights, {"dense": D_LR})


def test_nothing_applied_warns_once_naming_the_hooked_optimizers(data):
    from keras_actloss.callbacks import GradientHealthWarning

    x, y = data
    model = _hidden(keras.optimizers.SGD(D_LR))
    diag = _diag(every_n_steps=100)
    with pytest.warns(GradientHealthWarning, match="saw no gradients") as seen:
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[diag])
    messages = [str(w.message) for w in seen if "saw no gradients" in str(w.message)]
    assert len(messages) == 1
    assert "at step 0" in messages[0]
    assert "(`model.optimizer` (MultiOptimizer))" in messages[0]
    assert "optimizers=[...]" in messages[0]
    assert diag.history == [] and diag.findings == []


class Shared(_OptimizerState, keras.Model):
    """One layer updated twice in a step, by two optimizers with the same
    learning rate on two losses: its gradient is the sum of both."""

    def __init__(self):
        super().__init__()
        self.dense = dense(1, "dense")
        self.first = keras.optimizers.SGD(D_LR)
        self.second = keras.optimizers.SGD(D_LR)

    def compile(self):
        # `first` is built on every weight by the MultiOptimizer, `second`
        # here; a key no variable path matches keeps `second` in its state.
        self.second.build(self.trainable_variables)
        optimizers = keras.optimizers.OptimizerMap(self.first, {"-": self.second})
        super().compile(optimizer=keras.optimizers.MultiOptimizer(optimizers))

    def call(self, x):
        return self.dense(x)

    def train_step(self, state, data):
        import jax

        x, y = data
        values = self._values(state)
        variables = self.trainable_variables
        for optimizer, power in ((self.first, 2.0), (self.second, 4.0)):

            def loss_of(weights, power=power):
                y_pred, _ = self.stateless_call(weights, [], x)
                return ops.mean((y_pred - y) ** power)

            loss, grads = jax.value_and_grad(loss_of)(_read(values, variables))
            self._apply(optimizer, values, grads, variables)
        return {"loss": loss}, self._state(values, state)


def test_variable_updated_by_two_optimizers_gets_the_sum(data):
    x, y = data
    model = Shared()
    model(x[:1])
    model.compile()
    diag = _diag()
    weights = Weights({"dense": model.dense})
    from keras_actloss.callbacks import GradientHealthWarning

    with warnings.catch_warnings():
        # The quartic loss under SGD at 0.1 diverges: step 2's update is
        # 10x the layer's weights, rightly told as an explosion.
        warnings.simplefilter("ignore", GradientHealthWarning)
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[diag, weights])
    assert [f.mode for f in diag.findings] == ["exploding_gradients"]
    # `w1 = w0 - lr * g1 - lr * g2`: `dw / lr` is the sum of both gradients,
    # and the update ratio compares the weights before and after the step.
    assert_grad_norms(diag, weights, {"dense": D_LR})
    assert [s.step for s in diag.history] == [0, 1, 2, 3]


class TwoStage(_OptimizerState, keras.Model):
    """A body trained by its optimizer on the model's compiled loss, through
    Keras's own `compute_loss_and_updates`, then a head trained by a second
    optimizer on the body's detached output."""

    def __init__(self, body_optimizer, head_optimizer):
        super().__init__()
        self.body = dense(8, "body", "relu")
        self.head = dense(1, "head")
        self.body_optimizer, self.head_optimizer = body_optimizer, head_optimizer

    def call(self, x):
        return self.head(self.body(x))

    def _head_loss(self, weights, features, y):
        y_pred, _ = self.head.stateless_call(weights, [], features)
        return ops.mean(ops.square(y_pred - y))

    def train_step(self, state, data):
        import jax

        x, y = data
        trainable, non_trainable, optimizer_variables, metrics = state
        values = self._values(state)
        (_, (loss, _, non_trainable, metrics)), grads = jax.value_and_grad(
            self.compute_loss_and_updates, has_aux=True
        )(
            trainable,
            non_trainable,
            metrics,
            x,
            y,
            None,
            training=True,
            optimizer_variables=optimizer_variables,
        )
        body = self.body.trainable_variables
        grads = dict(zip(map(id, self.trainable_variables), grads))
        body_grads = [grads[id(v)] for v in body]
        self._apply(self.body_optimizer, values, body_grads, body)
        head = self.head.trainable_variables
        features, _ = self.body.stateless_call(_read(values, body), [], x)
        features = jax.lax.stop_gradient(features)
        head_grads = jax.grad(self._head_loss)(_read(values, head), features, y)
        self._apply(self.head_optimizer, values, head_grads, head)
        state = self._state(values, (trainable, non_trainable, None, metrics))
        return {"loss": loss}, state


def _two_stage(cls, x, head_path: str):
    """A built `cls(body optimizer, head optimizer)` compiled with a
    `MultiOptimizer` giving the variables whose path holds `head_path` to
    the head's."""
    body, head = keras.optimizers.SGD(D_LR), keras.optimizers.SGD(G_LR)
    model = cls(body, head)
    model(x[:1])

    def owner(variable):
        return head if head_path in variable.path else body

    model.compile(keras.optimizers.MultiOptimizer(owner), "mse")
    return model


def test_activations_of_layers_run_in_compute_loss_and_updates(data):
    x, y = data
    model = _two_stage(TwoStage, x, "/head/")
    diag = _diag()
    weights = Weights({"body": model.body, "head": model.head})
    first = np.mean((model.predict(x[:8], verbose=0) - y[:8]) ** 2)
    callbacks = [diag, weights]
    model.fit(x, y, batch_size=8, shuffle=False, verbose=0, callbacks=callbacks)
    assert [s.step for s in diag.history] == [0, 1, 2, 3]
    assert_grad_norms(diag, weights, {"body": D_LR, "head": G_LR})
    # The loss and the body's ReLU counts come from Keras's own loss function.
    np.testing.assert_allclose(diag.history[0].loss, first, rtol=1e-5)
    assert all(s.layers[0].dead_fraction is not None for s in diag.history)


class AuxHead(TwoStage):
    """`TwoStage` whose head is an auxiliary ReLU network that the model's
    own call, and so `compute_loss_and_updates`, never runs."""

    def __init__(self, body_optimizer, head_optimizer):
        keras.Model.__init__(self)  # Not TwoStage's: another head.
        self.body = dense(8, "body", "relu")
        self.head = keras.Sequential(
            [keras.Input((8,)), dense(4, "aux_relu", "relu"), dense(1, "aux_out")],
            name="aux",
        )
        self.body_optimizer, self.head_optimizer = body_optimizer, head_optimizer

    def call(self, x):
        return ops.mean(self.body(x), axis=-1, keepdims=True)


def test_layers_run_only_outside_compute_loss_and_updates_are_counted(data):
    # The body's ReLU is counted inside Keras's loss path, the auxiliary
    # head's outside it (on the body's features after the body's update),
    # in one step.
    x, y = data
    model = _two_stage(AuxHead, x, "aux/")
    diag = _diag()
    aux = model.head.get_layer("aux_relu")
    weights = Weights({"body": model.body, "aux_relu": aux})
    model.fit(x, y, batch_size=8, shuffle=False, verbose=0, callbacks=[diag, weights])
    assert len(diag.history) == 4
    for step, stats in enumerate(diag.history):
        batch = x[8 * step : 8 * step + 8]
        kernel, bias = _unpack(weights.seen[step + 1]["body"], 6, 8)
        features = np.maximum(batch @ kernel + bias, 0.0)
        kernel, bias = _unpack(weights.seen[step]["aux_relu"], 8, 4)
        hidden = np.maximum(features @ kernel + bias, 0.0)
        layers = {ls.layer: ls for ls in stats.layers}
        np.testing.assert_allclose(
            layers["aux/aux_relu"].zero_fraction, np.mean(hidden <= 0.0), rtol=1e-6
        )
        assert layers["body"].zero_fraction is not None
        assert stats.loss is not None


@pytest.mark.parametrize(
    "value", [keras.optimizers.SGD(), ["sgd"], "adam", [keras.optimizers.SGD(), 3]]
)
def test_bad_optimizers_raise_value_error(value):
    with pytest.raises(ValueError, match="Received: optimizers="):
        _diag(optimizers=value)


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


class MinimaxGAN(GAN):
    """`minimax_networks` trained as Goodfellow et al. (2014) state it, for
    Keras's JAX trainer (`assert_saturated_discriminator_reported`)."""

    def __init__(self, saturating):
        super().__init__(minimax_networks())
        self.saturating = saturating

    def compile(self):
        super().compile(*minimax_optimizers())

    def _logits(self, d_weights, samples):
        return self.discriminator.stateless_call(d_weights, [], samples)[0]

    def _d_loss(self, d_weights, g_weights, real, z):
        fake, _ = self.generator.stateless_call(g_weights, [], z)
        return minimax_d_loss(
            self._logits(d_weights, real), self._logits(d_weights, fake)
        )

    def _g_loss(self, g_weights, d_weights, z):
        fake, _ = self.generator.stateless_call(g_weights, [], z)
        return minimax_g_loss(self._logits(d_weights, fake), self.saturating)


@pytest.mark.parametrize(
    "saturating", [True, False], ids=["saturating", "non_saturating"]
)
def test_a_saturated_discriminator_is_reported(saturating):
    model = MinimaxGAN(saturating)
    model(np.zeros((1, 4), "float32"))
    model.compile()
    # JAX's initial weights: both groups under 1e-2 of their first steps'
    # norms from step 25, confirmed over steps 25-29 (the loss unknown: the
    # GAN's own loss functions run outside `compute_loss_and_updates`).
    assert_saturated_discriminator_reported(model, saturating, (25, 29))
