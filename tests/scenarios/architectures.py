"""Detection scenarios on architectures beyond a stack of layers.

`Case`s in the form of `cases.py` (`cases.detect` and `cases.score` run and
judge them), on models whose structure the callback has to follow: a
variational autoencoder whose loss is its own `compute_loss` (two nested
models, a sampling layer, no labels), a siamese model whose encoder is a
nested model shared by its two inputs, a model with two inputs and two
outputs, each with its own loss, stacked recurrent layers (sigmoid, and
ReLU), a self-attention block and a head on a frozen base. Healthy ones,
and failures: the siamese model's shared ReLU layer dead from step 0, a
ReLU `SimpleRNN` dead from step 0 (its cell runs inside the RNN's loop),
vanishing gradients through stacked sigmoid `SimpleRNN`s, the attention
block exploding to NaN, the base's dead half when it is trained.

They are not in `cases.CASES`: `cases.confirm` trains a plain
`tf.GradientTape` loop on one input and one loss. Each test confirms its
own case instead, on every backend: the healthy ones learn, the dead
layer outputs zero for every training sample, the first recurrent layer's
gradient is under 1% of the output layer's (`kernel_gradient_rms`), the
attention block's weights turn non-finite at the step its NaN is
reported, half the base's units output zero for every sample.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from tests.scenarios.cases import (
    DEAD,
    EXPLODING,
    SEED,
    VANISHING,
    Case,
    Setup,
    _compiled,
)

LATENT = 4


class Sampling(keras.layers.Layer):
    """`mean + exp(log_var / 2) * noise`, seeded (as JAX needs in a trace)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seed = keras.random.SeedGenerator(SEED)

    def call(self, inputs):
        mean, log_var = inputs
        noise = keras.random.normal(ops.shape(mean), seed=self.seed)
        return mean + ops.exp(0.5 * log_var) * noise


class VAE(keras.Model):
    """An encoder and a decoder (functional models) trained on the
    reconstruction's binary cross-entropy plus the latent's KL divergence
    from N(0, 1), in `compute_loss`."""

    def __init__(self, encoder, decoder, **kwargs):
        super().__init__(**kwargs)
        self.encoder, self.decoder = encoder, decoder

    def call(self, x):
        return self.decoder(self.encoder(x)[2])

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, **kwargs):
        mean, log_var, z = self.encoder(x)
        p = ops.clip(self.decoder(z), 1e-7, 1.0 - 1e-7)
        bce = -(x * ops.log(p) + (1.0 - x) * ops.log(1.0 - p))
        kl = -0.5 * (1.0 + log_var - ops.square(mean) - ops.exp(log_var))
        return ops.mean(ops.sum(bce, axis=1) + ops.sum(kl, axis=1))


def healthy_vae() -> Setup:
    """A VAE (32 -> 32 ReLU -> 4 + 4, sampled; 4 -> 32 ReLU -> 32 sigmoid)
    on 8 binary prototypes with 5% of their bits flipped."""
    keras.utils.set_random_seed(SEED)
    rng = np.random.default_rng(0)
    prototypes = rng.random((8, 32)) < 0.5
    flips = rng.random((512, 32)) < 0.05
    x = (prototypes[rng.integers(0, 8, 512)] ^ flips).astype("float32")
    inputs = keras.Input((32,))
    hidden = keras.layers.Dense(32, activation="relu")(inputs)
    mean = keras.layers.Dense(LATENT, name="mean")(hidden)
    log_var = keras.layers.Dense(LATENT, name="log_var")(hidden)
    z = Sampling()([mean, log_var])
    encoder = keras.Model(inputs, [mean, log_var, z], name="encoder")
    latent = keras.Input((LATENT,))
    hidden = keras.layers.Dense(32, activation="relu")(latent)
    outputs = keras.layers.Dense(32, activation="sigmoid")(hidden)
    decoder = keras.Model(latent, outputs, name="decoder")
    model = VAE(encoder, decoder)
    model(x[:1])  # Built before `fit`: recorded from its first step.
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    return Setup(model, x, None, epochs=6)


def pairs(n=1024, d=16, seed=0):
    """Two standard normal inputs; label 1 where their first 4 features
    agree in sign on the whole (a positive dot product)."""
    rng = np.random.default_rng(seed)
    a, b = (rng.normal(size=(n, d)).astype("float32") for _ in range(2))
    y = (np.sum(a[:, :4] * b[:, :4], axis=1) > 0).astype("float32")
    return a, b, y


def siamese(bias: float = 0.0) -> keras.Model:
    """A nested encoder (16 -> 32 ReLU -> 16) applied to both inputs, the
    product of the two codes, a sigmoid of a weighted sum of it (a learned
    dot product); the ReLU layer's bias starts at `bias`. (No cosine: on
    JAX the gradient of a normalized zero code is NaN.)"""
    start = keras.initializers.Constant(bias)
    encoder = keras.Sequential(
        [
            keras.Input((16,)),
            keras.layers.Dense(
                32, activation="relu", bias_initializer=start, name="hidden"
            ),
            keras.layers.Dense(16, name="code"),
        ],
        name="encoder",
    )
    a, b = keras.Input((16,)), keras.Input((16,))
    product = keras.layers.Multiply()([encoder(a), encoder(b)])
    return keras.Model([a, b], keras.layers.Dense(1, activation="sigmoid")(product))


def healthy_siamese() -> Setup:
    """The siamese model trained with Adam."""
    keras.utils.set_random_seed(SEED)
    a, b, y = pairs()
    model = _compiled(siamese(), keras.optimizers.Adam(3e-3), "binary_crossentropy")
    return Setup(model, [a, b], y, epochs=4)


def dead_shared_encoder() -> Setup:
    """The siamese model with bias -20 in its shared encoder's ReLU layer:
    on standardized inputs every pre-activation is far below zero (their std
    is about 1), for both inputs, so the layer outputs 0 for every sample
    from step 0 and gets no gradient."""
    keras.utils.set_random_seed(SEED)
    a, b, y = pairs()
    model = _compiled(
        siamese(bias=-20.0), keras.optimizers.Adam(3e-3), "binary_crossentropy"
    )
    return Setup(model, [a, b], y, epochs=1)


def healthy_two_in_two_out() -> Setup:
    """Two inputs joined into one ReLU trunk, and two heads: a softmax
    class (`argmax` of a linear map of the first input) with
    sparse categorical cross-entropy and a regression (a smooth function
    of both inputs) with MSE."""
    keras.utils.set_random_seed(SEED)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(512, 12)).astype("float32")
    b = rng.normal(size=(512, 4)).astype("float32")
    label = np.argmax(a @ rng.normal(size=(12, 3)), axis=1)
    target = (np.sin(b[:, :1]) + 0.5 * a[:, 1:2]).astype("float32")
    first, second = keras.Input((12,)), keras.Input((4,))
    trunk = keras.layers.Concatenate()([first, second])
    trunk = keras.layers.Dense(32, activation="relu")(trunk)
    trunk = keras.layers.Dense(32, activation="relu")(trunk)
    outputs = [
        keras.layers.Dense(3, activation="softmax", name="label")(trunk),
        keras.layers.Dense(1, name="target")(trunk),
    ]
    model = _compiled(
        keras.Model([first, second], outputs),
        keras.optimizers.Adam(3e-3),
        {"label": "sparse_categorical_crossentropy", "target": "mse"},
    )
    return Setup(model, [a, b], {"label": label, "target": target}, epochs=4)


def vanishing_rnn() -> Setup:
    """Four stacked sigmoid `SimpleRNN` layers over 20 steps: each layer's
    backward signal passes sigmoid derivatives (at most 1/4) and, within a
    layer, one more per time step, so the first layer's gradient is a tiny
    fraction of the last one's from step 0."""
    keras.utils.set_random_seed(SEED)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 20, 8)).astype("float32")
    y = (x[:, :1, 0] > 0).astype("float32")
    recurrent = [
        keras.layers.SimpleRNN(
            32, activation="sigmoid", return_sequences=i < 3, name=f"rnn_{i}"
        )
        for i in range(4)
    ]
    out = keras.layers.Dense(1, activation="sigmoid", name="out")
    model = keras.Sequential([keras.Input((20, 8)), *recurrent, out])
    _compiled(model, keras.optimizers.SGD(0.05), "binary_crossentropy")
    return Setup(model, x, y, epochs=1)


def _relu_rnns(recurrent) -> Setup:
    """ReLU `SimpleRNN`s (`recurrent()`, made after the seed is set) and a
    softmax, over 12 steps of 4 standardized features: whether the sum of
    the first feature over the last 3 steps is positive."""
    keras.utils.set_random_seed(SEED)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 12, 4)).astype("float32")
    y = (x[:, -3:, 0].sum(axis=1) > 0).astype("int32")
    model = keras.Sequential(
        [
            keras.Input((12, 4)),
            *recurrent(),
            keras.layers.Dense(2, activation="softmax", name="out"),
        ]
    )
    _compiled(model, keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    return Setup(model, x, y, epochs=4)


def _relu_rnn(units: int, bias: float, **kwargs):
    return keras.layers.SimpleRNN(
        units,
        activation="relu",
        bias_initializer=keras.initializers.Constant(bias),
        **kwargs,
    )


def simple_rnn_relu(bias: float = 0.0) -> Setup:
    """Two stacked ReLU `SimpleRNN`s (`_relu_rnns`: 16 units, all the steps;
    then 8, the last step). With `bias` -20 in the first one, its units
    output 0 at every step of every sample (inputs are standardized) from
    step 0."""
    return _relu_rnns(
        lambda: [
            _relu_rnn(16, bias, return_sequences=True, name="rnn"),
            _relu_rnn(8, 0.0, name="last"),
        ]
    )


def last_step_rnn(bias: float) -> Setup:
    """One ReLU `SimpleRNN` (`_relu_rnns`: 16 units) that returns only its
    last step. Its outputs at the steps before the last are not measured;
    with `bias` -20 its units output 0 at every step of every sample from
    step 0, so every gradient of its weights is exactly 0."""
    return _relu_rnns(lambda: [_relu_rnn(16, bias, name="rnn")])


def exploding_attention() -> Setup:
    """A self-attention block (4 heads, a residual `LayerNormalization`,
    pooling, a linear head) trained with SGD at learning rate 50: the
    first updates are many times the weights, the logits and gradients
    grow by orders of magnitude each step and reach NaN."""
    keras.utils.set_random_seed(SEED)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 16, 32)).astype("float32")
    y = rng.integers(0, 4, 512)
    inputs = keras.Input((16, 32))
    attention = keras.layers.MultiHeadAttention(4, 8, name="attention")
    hidden = keras.layers.LayerNormalization(name="norm")(
        attention(inputs, inputs) + inputs
    )
    hidden = keras.layers.GlobalAveragePooling1D()(hidden)
    model = keras.Model(inputs, keras.layers.Dense(4, name="out")(hidden))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    _compiled(model, keras.optimizers.SGD(50.0), loss)
    return Setup(model, x, y, epochs=1)


def half_dead_base(frozen: bool) -> Setup:
    """A feature extractor (16 -> 64 ReLU, half of its units with bias -20:
    on standardized inputs they output 0 for every sample) under a
    trainable head (32 ReLU units, a softmax over 3 classes), the extractor
    frozen (`trainable=False`, as a pretrained base is) or trained."""
    keras.utils.set_random_seed(SEED)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 16)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(16, 3)), axis=1)
    base = keras.Sequential(
        [keras.Input((16,)), keras.layers.Dense(64, activation="relu", name="wide")],
        name="base",
    )
    bias = np.concatenate([np.zeros(32), np.full(32, -20.0)]).astype("float32")
    base.get_layer("wide").bias.assign(bias)
    base.trainable = not frozen
    model = keras.Sequential(
        [
            keras.Input((16,)),
            base,
            keras.layers.Dense(32, activation="relu", name="head"),
            keras.layers.Dense(3, activation="softmax", name="out"),
        ]
    )
    _compiled(model, keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    return Setup(model, x, y, epochs=4)


def kernel_gradient_rms(setup: Setup, samples: int = 32) -> list[float]:
    """The RMS of each layer's input-kernel gradient (`kernel` variables, in
    model order) for the loss of the first `samples` samples, computed
    outside the callback: a `tf.GradientTape` on TensorFlow, `jax.grad` of
    the model's `stateless_call` on JAX."""
    model = setup.model
    x, y = setup.x[:samples], setup.y[:samples]
    loss = keras.losses.get(model.loss)

    def value(trainable, non_trainable):
        pred, _ = model.stateless_call(trainable, non_trainable, x, training=True)
        return ops.mean(loss(y, pred))

    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    if keras.backend.backend() == "jax":
        import jax

        grads = jax.grad(value)(trainable, non_trainable)
    else:
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(trainable)
            out = value(trainable, non_trainable)
        grads = tape.gradient(out, trainable)
    return [
        float(np.sqrt(np.mean(np.square(keras.ops.convert_to_numpy(g)))))
        for v, g in zip(model.trainable_variables, grads)
        if v.path.endswith("/kernel")
    ]


ARCHITECTURES = [
    Case("healthy_vae", healthy_vae, {}),
    Case("healthy_siamese", healthy_siamese, {}),
    Case("dead_shared_encoder", dead_shared_encoder, {DEAD: 0}),
    Case("healthy_two_in_two_out", healthy_two_in_two_out, {}),
    Case("vanishing_rnn", vanishing_rnn, {VANISHING: 0}),
    Case("healthy_simple_rnn", simple_rnn_relu, {}),
    Case("dead_simple_rnn", lambda: simple_rnn_relu(bias=-20.0), {DEAD: 0}),
    Case("dead_last_step_rnn", lambda: last_step_rnn(bias=-20.0), {DEAD: 0}),
    # Its NaN step, which differs by backend, is checked by its test.
    Case("exploding_attention", exploding_attention, {EXPLODING: 0}),
    Case("healthy_frozen_base", lambda: half_dead_base(frozen=True), {}),
    # Half its units dead from initialisation: a warning, no training failure.
    Case("half_dead_base", lambda: half_dead_base(frozen=False), {}),
]
BY_NAME = {case.name: case for case in ARCHITECTURES}
