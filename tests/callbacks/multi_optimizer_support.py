"""What the multi-optimizer tests share on both backends
(`test_multi_optimizer.py` on TensorFlow, `test_jax_multi_optimizer.py` on
JAX): rates, data, a weight recorder and the SGD reference check. No
TensorFlow import."""

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
