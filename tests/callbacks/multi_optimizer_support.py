"""What the multi-optimizer tests share on both backends
(`test_multi_optimizer.py` on TensorFlow, `test_jax_multi_optimizer.py` on
JAX): rates, data, a weight recorder, the SGD reference check and a fit
at the callback's default settings. No TensorFlow import."""

import keras
import numpy as np

D_LR, G_LR, LATENT = 0.1, 0.05, 3
GAN_RATES = {
    "generator/g_hidden": G_LR,
    "generator/g_out": G_LR,
    "discriminator/d_hidden": D_LR,
    "discriminator/d_out": D_LR,
}


def dense(units, name, activation=None):
    return keras.layers.Dense(units, activation=activation, name=name)


def gan_networks():
    """The generator and the discriminator of the test GANs."""
    generator = keras.Sequential(
        [keras.Input((LATENT,)), dense(8, "g_hidden", "relu"), dense(4, "g_out")],
        name="generator",
    )
    discriminator = keras.Sequential(
        [keras.Input((4,)), dense(8, "d_hidden", "tanh"), dense(1, "d_out")],
        name="discriminator",
    )
    return generator, discriminator


def gan_data(rng):
    real = rng.normal(size=(16, 4)).astype("float32")
    z = rng.normal(size=(16, LATENT)).astype("float32")
    return real, z


class Weights(keras.callbacks.Callback):
    """Each named layer's [kernel, bias] before each batch and at the end."""

    def __init__(self, layers):
        super().__init__()
        self.layers, self.seen = layers, []

    def _keep(self):
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:
            sync()  # On JAX the weights wait in the fit's state.
        self.seen.append(
            {
                name: np.concatenate([np.ravel(v.numpy()) for v in layer.weights])
                for name, layer in self.layers.items()
            }
        )

    def on_train_batch_begin(self, batch, logs=None):
        self._keep()

    def on_train_end(self, logs=None):
        self._keep()


def assert_grad_norms(diag, weights, rates):
    """Each recorded step's per-layer gradient norm equals `||dw / lr||`
    of that step, for every layer in `rates` (name -> learning rate)."""
    assert len(diag.history) == len(weights.seen) - 1
    for stats, w0, w1 in zip(diag.history, weights.seen, weights.seen[1:]):
        layers = {ls.layer: ls for ls in stats.layers}
        for name, rate in rates.items():
            grad = (w0[name] - w1[name]) / rate
            np.testing.assert_allclose(
                layers[name].grad_norm, np.linalg.norm(grad), rtol=1e-5
            )
            np.testing.assert_allclose(
                layers[name].grad_max, np.max(np.abs(grad)), rtol=1e-5
            )
            np.testing.assert_allclose(
                layers[name].update_ratio,
                np.linalg.norm(w1[name] - w0[name]) / np.linalg.norm(w0[name]),
                rtol=1e-4,
            )


def named_layers(model, names):
    """`{"outer/inner": layer}` of a model of nested models."""
    return {
        name: model.get_layer(name.split("/")[0]).get_layer(name.split("/")[1])
        for name in names
    }


def default_settings_fit(model, rng, dead: bool = False) -> list[tuple]:
    """Fits a GAN of `gan_networks` (compiled) for 64 steps, 4 epochs of
    16 batches of 16, with `GradientDiagnostics()` at its default settings;
    with `dead`, the generator's ReLU layer `g_hidden` starts with bias -20,
    below every pre-activation of its standard normal latents (checked
    here: it outputs 0 for every one of them).

    Returns `(mode, layer, finding step, reported step)` of each training
    failure, the reported step being the last step run when it appeared.
    """
    real = rng.normal(size=(256, 4)).astype("float32")
    z = rng.normal(size=(256, LATENT)).astype("float32")
    if dead:
        hidden = model.generator.get_layer("g_hidden")
        hidden.bias.assign(np.full(hidden.bias.shape, -20.0, "float32"))
        assert not np.any(keras.ops.convert_to_numpy(hidden(z)))
    return [
        (f.mode, f.layer, f.step, step)
        for f, step in _reported_fit(model, real, z)
        if f.severity == "failure"
    ]


def assert_generator_jump_told(model, rng, at: int = 32) -> None:
    """Compiles a GAN of `gan_networks` (built) with SGD for both networks,
    the generator's rate (`G_LR`, 0.05) 1000 times larger from its step
    `at` on (the discriminator's, the step's first, stays at `D_LR`), fits
    it as `default_settings_fit` does, and checks that the first training
    failure is an explosion told within 3 steps that names the generator's
    rates."""
    rate = keras.optimizers.schedules.PiecewiseConstantDecay(
        [at - 1], [G_LR, 1000 * G_LR]
    )
    model.compile(keras.optimizers.SGD(D_LR), keras.optimizers.SGD(rate))
    real = rng.normal(size=(256, 4)).astype("float32")
    z = rng.normal(size=(256, LATENT)).astype("float32")
    found = [
        (f, step)
        for f, step in _reported_fit(model, real, z)
        if f.severity == "failure"
    ]
    assert found, "the jump was not told"
    finding, reported = found[0]
    assert finding.mode == "exploding_gradients"
    assert at <= reported <= at + 3
    assert f"learning rate jumped from 0.05 to 50 at step {at}" in finding.message


def _reported_fit(model, real, z) -> list[tuple]:
    """Fits `model` on `(real, z)` for 4 epochs of batches of 16 with
    `GradientDiagnostics()` at its default settings; returns each finding
    with the last step run when it appeared."""
    import warnings

    from keras_actloss.callbacks import GradientDiagnostics, GradientHealthWarning

    diag = GradientDiagnostics(check_model=False)
    reported = []

    class Reported(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.steps = 0

        def on_train_batch_end(self, batch, logs=None):
            reported.extend((f, self.steps) for f in diag.findings[len(reported) :])
            self.steps += 1

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GradientHealthWarning)
        model.fit(
            real, z, batch_size=16, epochs=4, verbose=0, callbacks=[diag, Reported()]
        )
    return reported


def assert_gan_groups(model, diag, rng) -> None:
    """Fits a GAN of `gan_networks` (compiled), its generator made to end
    in tanh, on data of +-1 (4 batches of 4) with `diag`, and checks what
    each recording tells the rules of it: the `apply` call that updates
    each layer (the discriminator's optimizer applies first), and that the
    generator's last layer could make the data, every element of which is
    in tanh's tails (`StepStats.apply_groups`, `data_saturation`)."""
    model.generator.get_layer("g_out").activation = keras.activations.tanh
    real = np.sign(rng.normal(size=(16, 4))).astype("float32")
    z = rng.normal(size=(16, LATENT)).astype("float32")
    model.fit(real, z, batch_size=4, epochs=1, verbose=0, callbacks=[diag])
    assert len(diag.history) == 4
    for stats in diag.history:
        assert stats.apply_groups == {
            "discriminator/d_hidden": 0,
            "discriminator/d_out": 0,
            "generator/g_hidden": 1,
            "generator/g_out": 1,
        }
        # `d_hidden` (tanh) has 8 features, the data 4; the latents are
        # the labels: `g_hidden`'s 8 ReLU features do not saturate.
        assert stats.data_saturation == {"generator/g_out": 1.0}


def minimax_networks():
    """The generator (4 latents -> 2-D samples) and the discriminator
    (logits) of the minimax GANs (`assert_saturated_discriminator_reported`)."""
    generator = keras.Sequential(
        [keras.Input((4,)), dense(32, "g0", "relu"), dense(32, "g1", "relu")]
        + [dense(2, "g_out")],
        name="generator",
    )
    discriminator = keras.Sequential(
        [keras.Input((2,)), dense(64, "d0", "relu"), dense(64, "d1", "relu")]
        + [dense(1, "d_out")],
        name="discriminator",
    )
    return generator, discriminator


def minimax_optimizers():
    """The discriminator's (Adam 1e-2: it wins at once) and the
    generator's (SGD 1e-3)."""
    return keras.optimizers.Adam(1e-2), keras.optimizers.SGD(1e-3)


def minimax_d_loss(real_logits, fake_logits):
    """Binary cross-entropy of real (label 1) against generated samples."""
    softplus = keras.ops.softplus
    return keras.ops.mean(softplus(-real_logits)) + keras.ops.mean(
        softplus(fake_logits)
    )


def minimax_g_loss(logits, saturating: bool):
    """log(1 - D(G(z))) = -softplus(l) when `saturating`, else
    -log D(G(z)) = softplus(-l) (the non-saturating loss)."""
    if saturating:
        return -keras.ops.mean(keras.ops.softplus(logits))
    return keras.ops.mean(keras.ops.softplus(-logits))


def assert_saturated_discriminator_reported(model, saturating, steps) -> None:
    """Fits a minimax GAN (compiled) for 96 steps of 64 samples of a 2-D
    Gaussian at (4, 4) with `GradientDiagnostics()` at its defaults.

    With the saturating generator loss the discriminator saturates and
    every gradient collapses: reported once, as the model's
    `vanishing_gradients` over `steps` (its first step and the step it
    was reported at), and the generated samples stay near the start. With
    the non-saturating loss the discriminator's norm falls as far but the
    generator's does not: nothing reported, and its samples move towards
    the data.
    """
    import warnings

    from keras_actloss.callbacks import GradientDiagnostics, GradientHealthWarning

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    real = (rng.normal(size=(6144, 2)) * 0.5 + 4.0).astype("float32")
    z = rng.normal(size=(6144, 4)).astype("float32")
    diag = GradientDiagnostics(check_model=False)
    seen = []

    class Reported(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.extend((f, batch) for f in diag.findings[len(seen) :])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GradientHealthWarning)
        model.fit(real, z, batch_size=64, verbose=0, callbacks=[diag, Reported()])
    found = [(f.mode, f.layer, f.step, at) for f, at in seen]
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None:
        sync()
    fake = keras.ops.convert_to_numpy(model.generator(z[:512])).mean(axis=0)
    if saturating:
        assert found == [("vanishing_gradients", None, *steps)], found
        assert np.all(np.abs(fake) < 0.5)
    else:
        assert found == []
        assert np.all(fake > 0.5)
