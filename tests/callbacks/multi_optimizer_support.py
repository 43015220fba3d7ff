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
    import warnings

    from keras_actloss.callbacks import GradientDiagnostics, GradientHealthWarning

    real = rng.normal(size=(256, 4)).astype("float32")
    z = rng.normal(size=(256, LATENT)).astype("float32")
    if dead:
        hidden = model.generator.get_layer("g_hidden")
        hidden.bias.assign(np.full(hidden.bias.shape, -20.0, "float32"))
        assert not np.any(keras.ops.convert_to_numpy(hidden(z)))
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
    return [
        (f.mode, f.layer, f.step, step)
        for f, step in reported
        if f.severity == "failure"
    ]


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
