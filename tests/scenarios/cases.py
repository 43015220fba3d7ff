"""Detection scenarios: one definition each, shared by the tests and the benchmark.

A `Case` is a tiny seeded training run that either fails in a known way from a
known step (its `onsets`: failure mode -> 0-based optimizer step at which it
begins) or is a healthy control (no onsets). `build()` returns the compiled
model, the data and the `fit` arguments; the same build is used by

- `detect(case)`: `model.fit` with `GradientDiagnostics(check_model=False)` at
  its default settings and a `Recorder` after it that notes at which step each
  finding was reported;
- `confirm(case)`: the same model, data, batches and learning rates trained in
  a plain `tf.GradientTape` loop without the callback, measuring per step the
  global gradient norm, non-finite values, per-layer gradient RMS, the
  fraction of dead ReLU units over the whole training set and the fraction of
  saturated sigmoid/tanh outputs over the whole training set. It is the
  independent evidence that a failure scenario really fails as named, from
  the step named, and that a healthy control really trains.

All runs use `shuffle=False`, so both loops see the same batches in the same
order. Import from the benchmark with the repository root on `sys.path`:
`from tests.scenarios import cases`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Callable, Collection

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

VANISHING = "vanishing_gradients"
EXPLODING = "exploding_gradients"
DEAD = "dead_relu"
SATURATED = "saturated_activations"
NON_FINITE = "non_finite"
TRAINING_MODES = (VANISHING, EXPLODING, DEAD, SATURATED, NON_FINITE)
# A mode counts as detected when reported at most this many steps after onset.
WINDOW = 10
SEED = 7
# Added to the seeds of the cases' data (`reseed`; 0 for the tests).
_DATA_SHIFT = 0


def reseed(shift: int) -> None:
    """Draws every case's initial weights (`SEED`) and data from other seeds,
    `shift` 0 being the tests' own: to explore how detection holds on other
    draws (`benchmarks/detection.py --seed-shift`). The cases' expected
    modes and onsets are those of the tests' draws: on another a failure
    may set in later or take another course (a learning-rate jump ending in
    NaN rather than dead units)."""
    global SEED, _DATA_SHIFT
    SEED, _DATA_SHIFT = 7 + shift, 1000 * shift


def _rng(seed: int) -> np.random.Generator:
    """NumPy's generator for the cases' data (`reseed`)."""
    return np.random.default_rng(seed + _DATA_SHIFT)


class Perturb(keras.callbacks.Callback):
    """Calls `change(model)` before each optimizer step in `steps` runs."""

    def __init__(self, steps: Collection[int], change: Callable[[keras.Model], None]):
        super().__init__()
        self.steps, self.change = steps, change

    def on_train_batch_begin(self, batch, logs=None):
        if int(self.model.optimizer.iterations) in self.steps:
            self.change(self.model)


@dataclasses.dataclass
class Setup:
    """What `Case.build` returns: a compiled model, data and `fit` arguments.

    `schedule` (epoch -> learning rate), when set, is applied by `fit` through
    a `LearningRateScheduler` in `callbacks` and by `confirm` directly.
    `perturb` (steps, function of the model), when set, changes the weights
    from outside before each of those optimizer steps runs (as a weight
    edit or a bad restore would): in `fit` through a `Perturb` callback, in
    `confirm` directly. `sample_weight`, when set, weights the loss of each
    sample in both.
    """

    model: keras.Model
    x: np.ndarray
    y: np.ndarray
    epochs: int
    batch_size: int = 32
    schedule: Callable[[int], float] | None = None
    perturb: tuple[Collection[int], Callable[[keras.Model], None]] | None = None
    sample_weight: np.ndarray | None = None

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def callbacks(self) -> list[keras.callbacks.Callback]:
        out: list[keras.callbacks.Callback] = []
        if self.schedule is not None:
            out.append(keras.callbacks.LearningRateScheduler(self.schedule))
        if self.perturb is not None:
            out.append(Perturb(*self.perturb))
        return out

    def fit_kwargs(self) -> dict:
        kwargs = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "shuffle": False,
            "verbose": 0,
            "callbacks": self.callbacks(),
        }
        if self.sample_weight is not None:
            kwargs["sample_weight"] = self.sample_weight
        return kwargs


@dataclasses.dataclass(frozen=True)
class Case:
    """A scenario: `build` sets it up, `onsets` says which training failure
    modes it has and from which step (empty for a healthy control).

    `lead`: how many steps before its onset a finding may name, for a
    failure that sets in gradually: a finding names the first step of the
    recorded batches that show it, and a layer whose units die a few at a
    time shows half of them dead on a few recorded batches (its rarely
    active units look dead on 128 samples) a few steps before half are
    dead on the whole training set.
    """

    name: str
    build: Callable[[], Setup]
    onsets: dict[str, int]
    lead: int = 0
    # For a healthy control whose targets are noisy: the loss the noise
    # leaves at best (the mean of its variance under mean squared error).
    # Its loss falls to near this, not by the usual factor.
    loss_floor: float | None = None

    @property
    def expected(self) -> set[str]:
        return set(self.onsets)

    @property
    def onset(self) -> int | None:
        """The step at which the failure begins (the earliest mode's onset)."""
        return min(self.onsets.values()) if self.onsets else None

    @property
    def healthy(self) -> bool:
        return not self.onsets

    @property
    def doc(self) -> str:
        return " ".join((self.build.__doc__ or "").split())


# Data.


def classification(n=256, d=16, classes=3, seed=0):
    """Standardized features; linearly separable classes `argmax(x @ w)`."""
    rng = _rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    return x, np.argmax(x @ rng.normal(size=(d, classes)), axis=1).astype("int32")


def regression(n=256, d=8, seed=0):
    """Standardized features; a smooth non-linear target of unit scale."""
    rng = _rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    y = np.sin(x[:, 0]) + x[:, 1] * x[:, 2] + 0.1 * rng.normal(size=n)
    return x, y.astype("float32")[:, None]


def dense_stack(inputs, hidden, outputs, output_activation, width=32, **kwargs):
    """`keras.Sequential`: `Dense(width)` per hidden activation, then the output."""
    layers = [keras.layers.Dense(width, activation=a, **kwargs) for a in hidden]
    out = keras.layers.Dense(outputs, activation=output_activation)
    return keras.Sequential([keras.Input((inputs,)), *layers, out])


def _compiled(model, optimizer, loss, **kwargs):
    model.compile(optimizer=optimizer, loss=loss, **kwargs)
    return model


# Failure scenarios.


def dead_relu() -> Setup:
    """A ReLU layer dead from step 0: bias -10 on standardized inputs puts
    every pre-activation below zero (their std is about 1), so every unit
    outputs 0 for every sample and gets no gradient; Adam cannot revive it."""
    return _biased_hidden("relu", -10.0)


def _biased_hidden(activation: str, bias: float) -> Setup:
    """`classification()` through one `Dense(32)` layer of `activation`
    with every bias at `bias`, then a softmax (Adam, lr 1e-3, 2 epochs)."""
    keras.utils.set_random_seed(SEED)
    x, y = classification()
    model = keras.Sequential(
        [
            keras.Input((16,)),
            keras.layers.Dense(
                32,
                activation=activation,
                bias_initializer=keras.initializers.Constant(bias),
            ),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    _compiled(model, keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    return Setup(model, x, y, epochs=2)


def dead_relu_spe8() -> Setup:
    """`dead_relu` compiled with `steps_per_execution=8`: Keras returns to
    Python once per 8 steps, so the first recording comes at step 7, with
    the activations of all 8 batches of its execution."""
    return _in_executions(dead_relu(), keras.optimizers.Adam(1e-3), 8)


def dead_relu_batch8() -> Setup:
    """`dead_relu` on batches of 8 (32 steps): a layer none of whose units
    was active is told on 64 samples (8 batches) instead of 128."""
    setup = dead_relu()
    setup.batch_size, setup.epochs = 8, 1
    return setup


def dead_relu_output() -> Setup:
    """A regression MLP whose output layer is a ReLU (targets clipped at 0,
    so within its range), under SGD at lr 0.5: the update of step 2 pushes
    the output's pre-activation below zero for every training sample, and
    from step 3 the output is 0 everywhere and passes no gradient: every
    gradient of the model is exactly 0 and training has stopped."""
    x, y = regression()
    model = dense_stack(8, ["relu"], 1, "relu")
    # Glorot-uniform kernels drawn by NumPy, zero biases: the same start on
    # every backend (Keras's seeded initializers draw differently per
    # backend, and on JAX's draw the first step also blows up the weights).
    rng = np.random.default_rng(SEED)
    model.set_weights(
        [
            rng.uniform(-1, 1, w.shape) * math.sqrt(6 / sum(w.shape))
            if w.ndim == 2
            else np.zeros(w.shape)
            for w in model.get_weights()
        ]
    )
    _compiled(model, keras.optimizers.SGD(0.5), "mean_squared_error")
    return Setup(model, x, np.maximum(y + 2.0, 0.0), epochs=2)


def vanishing_sigmoid() -> Setup:
    """Ten sigmoid Dense layers trained with SGD: each multiplies the backward
    signal by at most 0.25 times its weights' gain, so the first layer's
    gradient RMS is ~3e-7 of the output layer's from step 0 (no unit is
    saturated: the small gradients are the depth, not saturation)."""
    keras.utils.set_random_seed(SEED)
    x, y = classification()
    model = dense_stack(16, ["sigmoid"] * 10, 3, "softmax")
    _compiled(model, keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    return Setup(model, x, y, epochs=4)


def _in_executions(setup: Setup, optimizer, steps: int) -> Setup:
    """`setup` compiled again (`optimizer`, sparse categorical
    cross-entropy) with `steps_per_execution=steps`."""
    setup.model.compile(
        optimizer=optimizer,
        loss="sparse_categorical_crossentropy",
        steps_per_execution=steps,
    )
    return setup


def vanishing_sigmoid_spe4() -> Setup:
    """`vanishing_sigmoid` compiled with `steps_per_execution=4`: Keras runs
    four steps per call of its train function, so a full recording can be
    taken once per four steps at most (the last of each execution)."""
    return _in_executions(vanishing_sigmoid(), keras.optimizers.SGD(0.1), 4)


def vanishing_sigmoid_spe8() -> Setup:
    """`vanishing_sigmoid` compiled with `steps_per_execution=8`: one
    recording per 8 steps, at the last of each execution; the steps before
    it are read from their every-step rows."""
    return _in_executions(vanishing_sigmoid(), keras.optimizers.SGD(0.1), 8)


def saturated_tanh() -> Setup:
    """A hidden tanh layer saturated from step 0: kernel stddev 20 makes its
    pre-activations ~N(0, 80^2), so ~97% of its outputs are +-1; a ReLU layer
    follows it, so it is a hidden layer. Its few unsaturated outputs still pass
    gradient: its gradient RMS is ~20-60x below the output layer's, against
    ~3e-7 in `vanishing_sigmoid`, so saturation is the mode, not vanishing."""
    keras.utils.set_random_seed(SEED)
    x, y = classification()
    model = keras.Sequential(
        [
            keras.Input((16,)),
            keras.layers.Dense(
                32,
                activation="tanh",
                kernel_initializer=keras.initializers.RandomNormal(stddev=20.0),
            ),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    _compiled(model, keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    return Setup(model, x, y, epochs=2)


def saturated_elu() -> Setup:
    """A hidden ELU layer in its flat negative tail from step 0: bias -30 on
    standardized inputs puts every pre-activation near -30, where ELU is
    -1 + e^-30 with derivative e^-30 (9e-14; exactly 0 on TensorFlow, whose
    gradient is `y + 1`, and `y` rounds to -1 in float32). The output layer
    gets the same input (-1) for every sample: the model can learn no more
    than the classes' frequencies."""
    return _biased_hidden("elu", -30.0)


def _wide_classifier(hidden: list[str], epochs: int, stddev=None) -> Setup:
    """`classification()` under Adam through `Dense(64)` layers of these
    activations, their kernels drawn with `stddev` (None: Keras's default
    initialisation)."""
    keras.utils.set_random_seed(SEED)
    x, y = classification()
    init = {}
    if stddev is not None:
        init["kernel_initializer"] = keras.initializers.RandomNormal(stddev=stddev)
    model = dense_stack(16, hidden, 3, "softmax", width=64, **init)
    _compiled(model, keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    return Setup(model, x, y, epochs=epochs)


def saturated_tanh_stack() -> Setup:
    """Eight hidden tanh layers whose kernels are drawn with stddev 1 (8x
    Glorot's for 64 inputs and outputs): their pre-activations spread about
    N(0, 8^2), so about 70% of their outputs sit in the flat tails (too
    few for the saturation limit of 75%), and the weights multiply the
    backward signal by more than the tails take away: the gradient grows
    about 2x at each layer back to the input (the chaotic regime). It
    learns far slower than the same stack with Keras's default
    initialisation (`healthy_deep_tanh`): after 64 steps its loss is over
    10x that one's."""
    return _wide_classifier(["tanh"] * 8, epochs=8, stddev=1.0)


def thrown_tanh_adam(rate: float = 1.0) -> Setup:
    """`classification()` through two tanh `Dense(64)` layers under Adam at
    lr 1.0: Adam's first update moves every weight by about the rate,
    several times the layers' norms, and throws the hidden units into the
    flat tails; the loss jumps from about ln 3 to several times it and
    stays there, while the later updates are under the weights' norms."""
    keras.utils.set_random_seed(SEED)
    x, y = classification()
    model = dense_stack(16, ["tanh", "tanh"], 3, "softmax", width=64)
    _compiled(model, keras.optimizers.Adam(rate), "sparse_categorical_crossentropy")
    return Setup(model, x, y, epochs=4)


NAN_STEP = 7


def nan_batch() -> Setup:
    """NaN in one input row of batch 7 (shuffle off): a healthy ReLU MLP whose
    gradients, then weights, become NaN at step 7 (and stay NaN)."""
    keras.utils.set_random_seed(SEED)
    x, y = classification(n=512)
    x[NAN_STEP * 32 + 5, 3] = np.nan
    model = dense_stack(16, ["relu"] * 2, 3, "softmax")
    _compiled(model, keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    return Setup(model, x, y, epochs=2)


def explode_to_nan() -> Setup:
    """Unscaled regression targets (~1e6) with SGD(0.3) on a one-hidden-layer
    ReLU MLP: the step-0 gradient norm is ~1e6, the step-0 update makes the
    step-1 gradient ~1e9 times larger (~1e15), and the step-2 loss overflows
    to inf, its gradient NaN."""
    keras.utils.set_random_seed(SEED)
    x, y = regression()
    model = dense_stack(8, ["relu"], 1, None)
    _compiled(model, keras.optimizers.SGD(0.3), "mse")
    return Setup(model, x, 1e6 * y, epochs=2)


def explode_finite() -> Setup:
    """Linear regression with SGD far above the stability limit: with
    unit-variance inputs the MSE Hessian (2 E[x x^T]) has eigenvalues ~2, so
    lr=2.5 multiplies the error, and the gradient, by about |1 - 2.5 * 2| = 4
    a step from step 0 (3.4-7x per batch); over 16 steps the gradient norm
    grows ~5e9x but stays finite."""
    keras.utils.set_random_seed(SEED)
    x, y = regression()
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
    _compiled(model, keras.optimizers.SGD(2.5), "mse")
    return Setup(model, x, y, epochs=2)


def exploding_rnn() -> Setup:
    """A GRU on 100-step sequences whose recurrent kernel is 8x Keras's
    orthogonal one, under SGD: the gradient through time grows by orders of
    magnitude (the global norm ~1e5 at step 0, against ~0.2 with the kernel
    as Keras initialises it), and the first update changes the GRU's
    weights by hundreds of times their norm; after it the hidden state sits
    in the saturated gates, the gradients are small and the loss stays at
    chance (ln 4: the label is the signs of two features' means, one over
    the first 10 steps, one over the last 10)."""
    keras.utils.set_random_seed(SEED)
    rng = _rng(0)
    x = rng.normal(size=(256, 100, 4)).astype("float32")
    y = (x[:, :10, 0].mean(axis=1) > 0) + 2 * (x[:, -10:, 1].mean(axis=1) > 0)
    model = keras.Sequential(
        [
            keras.Input((100, 4)),
            keras.layers.GRU(32),
            keras.layers.Dense(4, activation="softmax"),
        ]
    )
    kernel = model.layers[0].cell.recurrent_kernel
    kernel.assign(8.0 * kernel)
    _compiled(model, keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    return Setup(model, x, y.astype("int32"), epochs=2)


def churning_rnn_regression(spread: float = 12.0) -> Setup:
    """A GRU regressor of the sum of a feature over the last 5 of 30 steps,
    the targets `spread` times it (a spread of about 27 at 12), under SGD
    at 0.05: the error, and with it every gradient, is 27x that of
    standardized targets, so from step 0 each update changes the median
    layer's weights by 0.3 of their norm to twice it (standardized:
    0.004-0.03); the loss goes up and down around that of knowing nothing
    (the targets' mean square) and ends there, never NaN, and the norm
    spikes only from step 27 (2.9e5 at step 28, 7e3x the first step's).
    With standardized targets the same model learns (its loss 0.15 of
    knowing nothing's after its 64 steps)."""
    keras.utils.set_random_seed(SEED)
    rng = _rng(0)
    x = rng.normal(size=(256, 30, 4)).astype("float32")
    y = spread * x[:, -5:, 0].sum(axis=1, keepdims=True)
    model = keras.Sequential(
        [keras.Input((30, 4)), keras.layers.GRU(32), keras.layers.Dense(1)]
    )
    _compiled(model, keras.optimizers.SGD(0.05), "mse")
    return Setup(model, x, y.astype("float32"), epochs=8)


def exploding_relu_rnn(gain: float = 2.0) -> Setup:
    """A ReLU `SimpleRNN` over 30 steps whose recurrent kernel is orthogonal
    with gain 2 (drawn by NumPy: the same on every backend), under Adam:
    with ReLU nothing bounds the state, which the kernel multiplies at every
    step (about sqrt(2) per step for the half of it ReLU passes), so the
    hidden state and the logits are thousands of times their scale from
    step 0 and the loss is 10x or more that of knowing nothing (ln 2) at
    each of the first steps; Adam's bounded steps bring it down only
    slowly, and the model learns nothing of the label (the sign of the
    mean of a feature over the last 5 steps). With `gain` 1 (Keras's
    default) it learns."""
    keras.utils.set_random_seed(SEED)
    rng = _rng(0)
    x = (rng.normal(size=(512, 30, 4)) * 0.5).astype("float32")
    y = (x[:, -5:, 0].mean(axis=1) > 0).astype("int32")
    model = keras.Sequential(
        [
            keras.Input((30, 4)),
            keras.layers.SimpleRNN(32, activation="relu"),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    orthogonal, _ = np.linalg.qr(rng.normal(size=(32, 32)))
    model.layers[0].cell.recurrent_kernel.assign(gain * orthogonal.astype("float32"))
    _compiled(model, keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    return Setup(model, x, y, epochs=2)


BAD_BATCH_STEP = 150


def closed_gates_lstm() -> Setup:
    """An LSTM whose gate biases are all -6 (`unit_forget_bias=False`): its
    gates sit at sigmoid(-6) = 0.0025, closed, so its outputs are about
    1e-5 and almost no signal reaches any kernel (the squared gradient norm
    is the output bias's, the model predicts the prior, the loss at ln 2;
    the label is the sign of a feature's sum over 30 steps). Adam, 3
    epochs."""
    keras.utils.set_random_seed(SEED)
    x, y = _sequences(steps=30)
    closed = keras.initializers.Constant(-6.0)
    model = keras.Sequential(
        [
            keras.Input((30, 4)),
            keras.layers.LSTM(16, unit_forget_bias=False, bias_initializer=closed),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    _compiled(model, keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    return Setup(model, x, y, epochs=3)


def bad_batch() -> Setup:
    """One batch of inputs 1000x the others' scale (corrupted or unscaled
    records) at step 150 of a healthy SGD ReLU MLP (shuffle off, one epoch
    of 200 steps): its gradient norm is about 800x the steps' before it and
    its update changes every layer's weights by 3-6 times their norm; the
    loss of the next batches is 75-380x its level before it, still 10x ten
    steps later, and training ends worse than it began. No NaN."""
    keras.utils.set_random_seed(SEED)
    x, y = classification(n=32 * 200)
    x[BAD_BATCH_STEP * 32 : (BAD_BATCH_STEP + 1) * 32] *= 1000.0
    model = dense_stack(16, ["relu"] * 2, 3, None)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    _compiled(model, keras.optimizers.SGD(0.05), loss)
    return Setup(model, x, y, epochs=1)


def huge_init_adam() -> Setup:
    """Four ReLU layers whose kernels are drawn with stddev 1 (about 6x He's
    for 64 inputs) under Adam: each layer multiplies the signal by about
    6, so the outputs are extreme and mostly wrong from step 0 (a loss
    hundreds of times ln(3), the loss of knowing nothing). The gradients
    are large but steady, and Adam's steps of about 1e-3 barely move weights
    of that size: no norm grows, no update outgrows its weights, and the
    loss stays at 90x ln(3) or more over its 32 steps."""
    return _wide_classifier(["relu"] * 4, epochs=4, stddev=1.0)


def explode_float16() -> Setup:
    """For mixed_float16 (`test_detection`): regression targets of ~1e3 with
    SGD(0.01) on a two-hidden-layer ReLU MLP. The gradients overflow
    float16 at the first loss scales; each update that fits changes the
    weights by many times their norm, and the batches after it overflow at
    every scale the optimizer halves down to (the step count stays)."""
    keras.utils.set_random_seed(0)
    x, y = regression(n=2048)
    layers = [keras.layers.Dense(64, activation="relu") for _ in range(2)]
    # The output in float32, as Keras's mixed-precision guide advises.
    out = keras.layers.Dense(1, dtype="float32")
    model = keras.Sequential([keras.Input((8,)), *layers, out])
    _compiled(model, keras.optimizers.SGD(0.01), "mse")
    return Setup(model, x, 1e3 * y, epochs=1)


def _encoder_block(h, name: str):
    """A post-norm transformer block: self-attention and a ReLU feed-forward
    layer, each with a residual connection and LayerNormalization."""
    attention = keras.layers.MultiHeadAttention(4, 8, name=f"{name}_attention")
    h = keras.layers.LayerNormalization(name=f"{name}_norm_1")(h + attention(h, h))
    f = keras.layers.Dense(64, activation="relu", name=f"{name}_ff_1")(h)
    f = keras.layers.Dense(32, name=f"{name}_ff_2")(f)
    return keras.layers.LayerNormalization(name=f"{name}_norm_2")(h + f)


def attention_adam_high(rate: float = 0.1) -> Setup:
    """A two-block transformer encoder classifying sequences of 20 steps (4
    classes) under Adam at lr 0.1 (`rate`), where lr 1e-3 learns: the first
    updates change the weights of the layers by 14-70% of their norm and
    raise the loss 7x; from step 5 the gradients of the first block are
    about 100-1000x smaller than in the first steps while the head's are
    not, and the loss is back at chance and stays there: the first block
    has stopped learning (vanishing gradients, from a step size far too
    large). The fall sets in over the first steps (`lead`): on JAX (other
    initial weights) the streak of its attention's value projection begins
    at step 3 (its gradients 2200x under their first recordings' by step
    7), the loss at the loss of knowing nothing (ln 4) or over. The steps
    far too large are exploding gradients from step 0 (the cause): each of
    the first updates changes the median layer's weights by a sixth of
    their norm or more while the loss stays over 1.5x where training
    began."""
    keras.utils.set_random_seed(SEED)
    rng = _rng(0)
    x = rng.normal(size=(1024, 20, 8)).astype("float32")
    w = rng.normal(size=(8, 4))
    noise = 0.3 * rng.normal(size=(1024, 4))
    y = np.argmax(np.tanh(3 * x.mean(axis=1) @ w) + noise, axis=1).astype("int32")
    inputs = keras.Input((20, 8))
    h = keras.layers.Dense(32, name="embed")(inputs)
    h = _encoder_block(_encoder_block(h, "block_1"), "block_2")
    h = keras.layers.GlobalAveragePooling1D()(h)
    outputs = keras.layers.Dense(4, activation="softmax", name="out")(h)
    model = keras.Model(inputs, outputs)
    _compiled(model, keras.optimizers.Adam(rate), "sparse_categorical_crossentropy")
    return Setup(model, x, y, epochs=1)


def _attention_routing(scale: float | None) -> Setup:
    """One self-attention layer over 8 tokens of 16 features (the last 8 a
    one-hot of the position, 2x), read at the last token only: the label,
    the sign of token 0's first feature, reaches the readout only where
    the last query attends to token 0. `scale`: the query and key kernels
    drawn from N(0, scale^2) with NumPy (the same on every backend)
    instead of Keras's Glorot. Adam at 1e-2, 8 epochs of 16 steps."""
    keras.utils.set_random_seed(SEED)
    rng = _rng(0)
    x = rng.normal(size=(512, 8, 16)).astype("float32")
    x[:, :, 8:] = 2.0 * np.eye(8, dtype="float32")
    y = (x[:, 0, 0] > 0).astype("int32")
    inputs = keras.Input((8, 16))
    attention = keras.layers.MultiHeadAttention(2, 8, name="attention")
    h = keras.layers.LayerNormalization(name="norm")(inputs + attention(inputs, inputs))
    outputs = keras.layers.Dense(2, activation="softmax", name="out")(h[:, -1, :])
    model = keras.Model(inputs, outputs)
    if scale is not None:
        kernels = _rng(1)
        for dense in (attention.query_dense, attention.key_dense):
            shape = dense.kernel.shape
            dense.kernel.assign(scale * kernels.normal(size=shape).astype("float32"))
    _compiled(model, keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    return Setup(model, x, y, epochs=8)


def saturated_attention() -> Setup:
    """`_attention_routing` with query and key kernels of stddev 3 (about
    10x Glorot's): scores of tens, one-hot attention for 9 queries in 10
    from step 0 (each on the key its content picks), where the softmax
    passes almost no gradient back: the attention never learns to look at
    token 0 and the loss stays near chance (0.64 after 128 steps against
    0.02 with Glorot's kernels)."""
    return _attention_routing(3.0)


def healthy_attention_routing() -> Setup:
    """`_attention_routing` with Keras's kernels: the last query learns to
    attend to token 0 (loss 0.82 to 0.02 over 128 steps, some attention
    sharp by then)."""
    return _attention_routing(None)


JUMP_EPOCH = 6
JUMP_STEPS_PER_EPOCH = 25


def _jump_schedule(epoch, lr=None):
    return 0.05 if epoch < JUMP_EPOCH else 50.0


def lr_jump() -> Setup:
    """A healthy ReLU MLP (SGD, lr 0.05) whose learning rate a
    `LearningRateScheduler` multiplies by 1e3 at epoch 6 = step 150 of 250:
    the first updates at lr 50 throw the weights far out, so the gradient
    norm grows ~1e3-1e10x a step (steps 151-154), until the huge updates
    push every unit of the second ReLU layer negative on every training
    sample (dead from step 155 to the end); the gradient norm falls back to
    ~1 (only the output bias still learns) and the loss stays ~10. No NaN:
    every gradient stays finite, though at step 154 the global norm (~1.4e21)
    is past sqrt(float32 max) ~1.8e19, so a float32 sum of squares
    overflows."""
    keras.utils.set_random_seed(SEED)
    x, y = classification(n=JUMP_STEPS_PER_EPOCH * 32)
    model = dense_stack(16, ["relu"] * 2, 3, "softmax", width=64)
    _compiled(model, keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
    return Setup(model, x, y, epochs=10, schedule=_jump_schedule)


def _conv_bn_relu(filters: int) -> list:
    """A 3x3 convolution, BatchNormalization and a standalone ReLU."""
    return [
        keras.layers.Conv2D(filters, 3, padding="same"),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
    ]


def _adam_jump_schedule(epoch, lr=None):
    return 1e-3 if epoch < JUMP_EPOCH else 1.0


def lr_jump_adam_bn() -> Setup:
    """A CNN with BatchNormalization trained with Adam (lr 1e-3) whose
    learning rate a `LearningRateScheduler` multiplies by 1e3 at epoch 6 =
    step 150 of 175: Adam's first steps at lr 1 move every weight by about
    1, more than some layers' whole weight norm, and the loss of the next
    step is several times its level. BatchNorm keeps the gradient norm
    within a few times its level and Adam's second moments catch up, so
    neither the norm nor the loss stays up, but every later update still
    rewrites a large share of the weights."""
    keras.utils.set_random_seed(SEED)
    x, y = _images(n=JUMP_STEPS_PER_EPOCH * 32)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            *_conv_bn_relu(16),
            *_conv_bn_relu(16),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    _compiled(model, keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    return Setup(model, x, y, epochs=7, schedule=_adam_jump_schedule)


def lr_jump_adam_bn_spe4() -> Setup:
    """`lr_jump_adam_bn` compiled with `steps_per_execution=4`: the jump
    at step 150 starts an execution of steps 150-153; by its recording
    (step 153) the loss is back near its level (over 3x it at steps 151-152
    only) while the weights have grown many times over."""
    return _in_executions(lr_jump_adam_bn(), keras.optimizers.Adam(1e-3), 4)


ZERO_EPOCH = 2


def _zero_schedule(epoch, lr=None):
    return 0.05 if epoch < ZERO_EPOCH else 50.0


def zero_gradients() -> Setup:
    """An ensemble of two softmax heads on a shared ReLU trunk, averaged by
    `keras.layers.Average` and trained on the probabilities with sparse
    categorical cross-entropy (SGD, lr 0.05): the averaged output is no
    softmax op whose logits a backend can take, so on TensorFlow as on JAX
    the loss takes the probabilities and clips them to [1e-7, 1 - 1e-7]. A
    `LearningRateScheduler` sets lr 50 at epoch 2 = step 16 of 48: the step
    16 update saturates both heads (every probability exactly 0 or 1 in
    float32, the softmax's derivative 0), so from step 17 on every gradient
    is exactly 0 and the loss sticks at ~9-14 (it was ~1.1): -log(1e-7) =
    16 on each wrong sample. That update was an explosion: it grew the
    weights' norms 2-6x (the heads' 2.3-2.5 to 9-17)."""
    keras.utils.set_random_seed(SEED)
    x, y = classification()
    inputs = keras.Input((16,))
    h = keras.layers.Dense(64, activation="relu")(inputs)
    h = keras.layers.Dense(64, activation="relu")(h)
    heads = [keras.layers.Dense(3, activation="softmax")(h) for _ in range(2)]
    model = keras.Model(inputs, keras.layers.Average()(heads))
    _compiled(model, keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
    return Setup(model, x, y, epochs=6, schedule=_zero_schedule)


def updates_clipped_away() -> Setup:
    """A 2x64 ReLU MLP under SGD at 0.05 with `clipnorm=1e-8`: every
    variable's gradient (norms 0.1-1 on `classification()`) is cut to a norm
    of 1e-8 before the update, so each step changes a layer's weights by
    about 1e-10 of their norm (0.05 x 1e-8 against norms of 2-6) and the
    loss stays where it began for the 16 steps (2 epochs). The gradients,
    measured before clipping, are healthy."""
    keras.utils.set_random_seed(SEED)
    x, y = classification()
    model = dense_stack(16, ["relu", "relu"], 3, "softmax", width=64)
    optimizer = keras.optimizers.SGD(0.05, clipnorm=1e-8)
    _compiled(model, optimizer, "sparse_categorical_crossentropy")
    return Setup(model, x, y, epochs=2)


def saturated_output_mse() -> Setup:
    """A binary classifier whose sigmoid output has bias -30, under mean
    squared error (Adam, lr 1e-3): every output is about 1e-13 from step 0,
    in the sigmoid's flat tail, whose derivative (1e-13) is all the
    gradient that mean squared error passes back (no logits to take). The
    global gradient norm is about 1e-13 on a loss of about 0.5, no step
    changes the loss, and the model never learns: no gradient is exactly 0,
    but every one is below a billionth of the loss's square root."""
    keras.utils.set_random_seed(SEED)
    x, y = classification(classes=2)
    model = keras.Sequential(
        [
            keras.Input((16,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(
                1,
                activation="sigmoid",
                bias_initializer=keras.initializers.Constant(-30.0),
            ),
        ]
    )
    _compiled(model, keras.optimizers.Adam(1e-3), "mean_squared_error")
    return Setup(model, x, y[:, None].astype("float32"), epochs=2)


def _two_heads(flag_bias: float, flag_loss: str, epochs: int) -> Setup:
    """Two outputs of one input: `cls`, a 3-class classifier on logits
    through a ReLU trunk, and `flag` (is the first feature positive?), a
    sigmoid through a ReLU branch of its own with bias `flag_bias`, under
    `flag_loss` (Adam, lr 1e-2)."""
    keras.utils.set_random_seed(SEED)
    x, y = classification()
    flag = (x[:, 0] > 0).astype("float32")[:, None]
    dense = keras.layers.Dense
    inputs = keras.Input((16,))
    trunk = dense(32, activation="relu", name="trunk")(inputs)
    classes = dense(3, name="cls")(trunk)
    branch = dense(16, activation="relu", name="flag_hidden")(inputs)
    bias = keras.initializers.Constant(flag_bias)
    flagged = dense(1, activation="sigmoid", name="flag", bias_initializer=bias)(branch)
    model = keras.Model(inputs, {"cls": classes, "flag": flagged})
    loss = {
        "cls": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        "flag": flag_loss,
    }
    _compiled(model, keras.optimizers.Adam(1e-2), loss)
    return Setup(model, x, {"cls": y, "flag": flag}, epochs=epochs)


def saturated_head_of_two() -> Setup:
    """`saturated_output_mse`'s output as one head of two (`_two_heads`):
    the `flag` head's sigmoid has bias -30 under mean squared error, so its
    outputs are about 1e-13 from step 0 and its branch's gradients about
    1e-13 (no logits to take), while the classifier head learns with
    gradients of order 0.1-1. The global norm is the classifier's: only
    the flag head's own gradient tells that it never learns (its loss stays
    at the share of samples flagged 1)."""
    return _two_heads(-30.0, "mean_squared_error", epochs=2)


DIE_STEP = 500


def _silence_last_hidden(model, units=None):
    """Biases -50 for the first `units` units (all when None) of the last
    hidden layer."""
    bias = model.layers[-2].bias
    value = np.asarray(bias.numpy())
    value[:units] = -50.0
    bias.assign(value)


SILENCED_UNITS = 40  # Of 64.


def _silence_most_units(model):
    _silence_last_hidden(model, SILENCED_UNITS)


def layer_dies_late() -> Setup:
    """A healthy ReLU MLP (Adam 1e-3, 640 steps) whose last hidden layer dies
    whole at step 500, late in the run, when recordings are 100 steps apart:
    an outside change (a weight edit, a bad restore) sets its biases to -50,
    below every pre-activation's reach on the training set, so the layer
    outputs 0 and neither it nor any layer before it gets a gradient from
    then on. The output layer's bias alone still learns, and the global
    gradient norm stays level (no 10x jump, no learning-rate change): only
    the gradient tensors falling to exactly 0 show it."""
    keras.utils.set_random_seed(SEED)
    x, y = classification(n=1024)
    model = dense_stack(16, ["relu"] * 3, 3, "softmax", width=64)
    _compiled(model, keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    return Setup(model, x, y, epochs=20, perturb=((DIE_STEP,), _silence_last_hidden))


def units_die_late() -> Setup:
    """`layer_dies_late`, but the change silences only 40 of the last hidden
    layer's 64 units (62%): they output 0 on every training sample from
    step 500 and get no gradient, while the other units and every layer
    still learn, so no gradient tensor falls to 0 and the global norm stays
    level: only the count of bias elements with no gradient shows it."""
    setup = layer_dies_late()
    setup.perturb = ((DIE_STEP,), _silence_most_units)
    return setup


# Two more of the last hidden layer's units silenced every 4 steps from
# DIE_STEP, up to SILENCED_UNITS: half of its 64 units at the 16th change.
GRADUAL_STEPS = range(DIE_STEP, DIE_STEP + 4 * SILENCED_UNITS // 2, 4)
HALF_SILENCED_STEP = GRADUAL_STEPS[64 // 2 // 2 - 1]  # 560


def _silence_two_more_units(model):
    # Those silenced drift from -50 only by the optimizer's momentum.
    silenced = int(np.sum(model.layers[-2].bias.numpy() < -25.0))
    _silence_last_hidden(model, silenced + 2)


def units_die_gradually() -> Setup:
    """`units_die_late`, but the units die a few at a time: two more every
    4 steps from step 500 (40 by step 576, half of the 64 at step 560), so
    no step has many more silent units than the steps just before it: only
    their count reaching a new high, again and again, shows it."""
    setup = layer_dies_late()
    setup.perturb = (GRADUAL_STEPS, _silence_two_more_units)
    return setup


# Healthy controls.


def healthy_converges() -> Setup:
    """A ReLU MLP on linearly separable classes, Adam 1e-2: converges to a
    tiny loss, so gradients become tiny everywhere (convergence, not
    vanishing)."""
    keras.utils.set_random_seed(SEED)
    x, y = classification()
    model = dense_stack(16, ["relu"] * 2, 3, "softmax", width=64)
    _compiled(model, keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    return Setup(model, x, y, epochs=8)


def _images(n=256, seed=0):
    """8x8 one-channel noise; label: is the top half brighter than the bottom?"""
    rng = _rng(seed)
    x = rng.normal(size=(n, 8, 8, 1)).astype("float32")
    y = x[:, :4].mean(axis=(1, 2, 3)) > x[:, 4:].mean(axis=(1, 2, 3))
    return x, y.astype("int32")


def healthy_cnn_bn_dropout() -> Setup:
    """A small CNN with BatchNormalization, standalone ReLU layers and
    Dropout: normal ReLU sparsity and BN-rescaled gradients."""
    keras.utils.set_random_seed(SEED)
    x, y = _images()
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            *_conv_bn_relu(8),
            keras.layers.MaxPooling2D(),
            *_conv_bn_relu(8),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    _compiled(model, keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    return Setup(model, x, y, epochs=8)


def healthy_tanh_regression() -> Setup:
    """A tanh MLP regressing a smooth unit-scale target with Adam."""
    keras.utils.set_random_seed(SEED)
    x, y = regression()
    model = dense_stack(8, ["tanh"] * 2, 1, None, width=64)
    _compiled(model, keras.optimizers.Adam(1e-2), "mse")
    return Setup(model, x, y, epochs=10)


def healthy_deep_tanh() -> Setup:
    """`saturated_tanh_stack` with Keras's default (Glorot) initialisation:
    eight tanh layers near-linear at the start, whose gradient neither
    grows nor shrinks much from layer to layer."""
    return _wide_classifier(["tanh"] * 8, epochs=8)


def healthy_deep_leaky_relu() -> Setup:
    """Seven Leaky ReLU layers (slope 0.2, He init, Adam): deep, but the
    backward gain per layer stays ~1, so gradients neither vanish nor
    explode, and no unit can die."""
    keras.utils.set_random_seed(SEED)
    x, y = classification()
    model = dense_stack(
        16,
        ["leaky_relu"] * 7,
        3,
        "softmax",
        kernel_initializer="he_normal",
    )
    _compiled(model, keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    return Setup(model, x, y, epochs=8)


def _sequences(n=256, steps=8, features=4, seed=0):
    """Short sequences; label: is the sum of feature 0 over time positive?"""
    rng = _rng(seed)
    x = rng.normal(size=(n, steps, features)).astype("float32")
    return x, (x[:, :, 0].sum(axis=1) > 0).astype("int32")


def _recurrent(layer) -> Setup:
    keras.utils.set_random_seed(SEED)
    x, y = _sequences()
    model = keras.Sequential(
        [keras.Input((8, 4)), layer(16), keras.layers.Dense(2, activation="softmax")]
    )
    _compiled(model, keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    return Setup(model, x, y, epochs=6)


def healthy_lstm() -> Setup:
    """An LSTM classifier on 8-step sequences: gated sigmoid/tanh inside the
    cell, gradients through time."""
    return _recurrent(keras.layers.LSTM)


def healthy_gru() -> Setup:
    """A GRU classifier on 8-step sequences."""
    return _recurrent(keras.layers.GRU)


def healthy_attention() -> Setup:
    """Self-attention (MultiHeadAttention) over (batch, 8, 16) with a residual
    connection, LayerNormalization and an average-pooling head."""
    keras.utils.set_random_seed(SEED)
    rng = _rng(0)
    x = rng.normal(size=(256, 8, 16)).astype("float32")
    # Label: does the token most similar to token 0 carry a positive feature 1?
    y = (x[:, :, 1].mean(axis=1) + x[:, 0, 2] > 0).astype("int32")
    inputs = keras.Input((8, 16))
    h = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8)(inputs, inputs)
    h = keras.layers.LayerNormalization()(inputs + h)
    h = keras.layers.GlobalAveragePooling1D()(h)
    h = keras.layers.Dense(16, activation="relu")(h)
    outputs = keras.layers.Dense(2, activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    _compiled(model, keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    return Setup(model, x, y, epochs=8)


def healthy_normalized_head() -> Setup:
    """A wide `Dense(5120)` behind batch normalization and swish, as the
    top of `keras.applications.EfficientNetB0`, feeding a linear head
    initialised as that one's (`VarianceScaling(1/3, "fan_out",
    "uniform")`: scaled by its 2 outputs, not its 5120 inputs), with
    logits, under Adam. The outputs are confident and often wrong from the
    start (a loss over 5x ln 2 at each of the first 5 steps), yet the head,
    which alone sets their scale, moves off its start in a few dozen
    steps: the model learns (about 0.95 accuracy after 64 steps)."""
    keras.utils.set_random_seed(SEED)
    rng = _rng(0)
    x = rng.normal(size=(512, 16)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(16, 2)), axis=1).astype("int32")
    layers = keras.layers
    head_init = keras.initializers.VarianceScaling(1 / 3, "fan_out", "uniform")
    model = keras.Sequential(
        [
            keras.Input((16,)),
            layers.Dense(64, use_bias=False),
            layers.BatchNormalization(),
            layers.Activation("swish"),
            layers.Dense(5120, use_bias=False),
            layers.BatchNormalization(),
            layers.Activation("swish"),
            layers.Dropout(0.2),
            layers.Dense(2, kernel_initializer=head_init),
        ]
    )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    _compiled(model, keras.optimizers.Adam(1e-3), loss)
    return Setup(model, x, y, epochs=4)


def _token_classifier(vocab: int, samples: int, seed: int, epochs: int) -> Setup:
    """Token ids (10 a sample from a vocabulary of `vocab`) -> Embedding(vocab,
    8) -> average pooling -> Dense(16, ReLU) -> softmax, Adam lr 1e-2; the
    label: whether more than 5 of the 10 tokens are in the vocabulary's
    lower half."""
    keras.utils.set_random_seed(seed)
    rng = _rng(0)
    x = rng.integers(0, vocab, size=(samples, 10)).astype("int32")
    y = ((x < vocab // 2).sum(axis=1) > 5).astype("int32")
    model = keras.Sequential(
        [
            keras.Input((10,), dtype="int32"),
            keras.layers.Embedding(vocab, 8),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    _compiled(model, keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    return Setup(model, x, y, epochs=epochs)


def healthy_embedding() -> Setup:
    """Token ids -> Embedding -> average pooling -> Dense: a sparse-gradient
    first layer (only the rows of the tokens in a batch get gradient)."""
    return _token_classifier(vocab=50, samples=256, seed=SEED, epochs=8)


def healthy_small_embedding() -> Setup:
    """`healthy_embedding` with a vocabulary of 1000: the pooled embeddings
    (initialized within +-0.05) spread about 0.01, less than Adam's first
    steps move the Dense biases (about the learning rate each), so in its
    first steps up to a quarter of the ReLU units (TensorFlow) are inactive
    on every training sample and about half on every recorded batch
    (rarely active ones look dead on 128 samples); they come back as the
    embeddings grow, and the model fits (accuracy 1.0)."""
    # Seed 1: one of the seeds that showed it.
    return _token_classifier(vocab=1000, samples=512, seed=1, epochs=6)


def healthy_autoencoder() -> Setup:
    """A dense autoencoder (16 -> 8 -> 4 -> 8 -> 16, ReLU) reconstructing
    inputs that lie near a 4-dimensional subspace."""
    keras.utils.set_random_seed(SEED)
    rng = _rng(0)
    z = rng.normal(size=(256, 4))
    x = (z @ rng.normal(size=(4, 16)) / 2 + 0.05 * rng.normal(size=(256, 16))).astype(
        "float32"
    )
    model = keras.Sequential(
        [
            keras.Input((16,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(4),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(16),
        ]
    )
    _compiled(model, keras.optimizers.Adam(3e-3), "mse")
    return Setup(model, x, x, epochs=8)


def raw_features(n=256, seed=0):
    """Unstandardized features spanning about -14..8 (offsets and scales differ
    per feature, as in raw tabular data); a linear-threshold binary label."""
    rng = _rng(seed)
    z = rng.normal(size=(n, 8))
    scale = np.array([3.0, 0.5, 2.0, 1.0, 2.5, 0.2, 1.5, 3.0])
    offset = np.array([-5.0, 2.0, -3.0, 4.0, -6.0, 0.0, 1.0, -2.0])
    x = np.clip(z * scale + offset, -14, 8).astype("float32")
    y = (z @ rng.normal(size=8) > 0).astype("int32")
    return x, y


def healthy_unstandardized_tanh() -> Setup:
    """A tanh first layer fed raw features spanning about -14..8: part of its
    outputs sit near +-1, yet Adam trains it to high accuracy. Not a training
    failure (a pre-training `unstandardized_inputs` warning at most)."""
    keras.utils.set_random_seed(SEED)
    x, y = raw_features()
    model = dense_stack(8, ["tanh"], 1, "sigmoid", width=16)
    _compiled(model, keras.optimizers.Adam(3e-2), "binary_crossentropy")
    return Setup(model, x, y, epochs=8)


def healthy_bottleneck() -> Setup:
    """A ReLU MLP with an 8-unit bottleneck between 64-unit layers: some of its
    few units are rarely active, but the model trains well."""
    keras.utils.set_random_seed(SEED)
    x, y = classification()
    model = keras.Sequential(
        [
            keras.Input((16,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    _compiled(model, keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    return Setup(model, x, y, epochs=8)


RARE_BATCHES = (3, 40, 41, 90, 120, 121, 150, 151, 152, 180, 200, 201, 230, 231)


def healthy_rare_class_weighted() -> Setup:
    """A rare class (14 of 1024 samples) weighted 99x, in batches of 4 (shuffle
    off): a batch holding one of its samples has a gradient norm 60-145x the
    early level, and such batches come two and three in a row (batches
    40-41, 150-152), but the weighted loss falls 7x in 2 epochs."""
    keras.utils.set_random_seed(SEED)
    rng = _rng(0)
    x = rng.normal(size=(1024, 16)).astype("float32")
    y = np.zeros(1024, "int32")
    rows = [b * 4 + 1 for b in RARE_BATCHES]
    y[rows] = 1
    x[rows, :3] += 2.0
    model = dense_stack(16, ["relu"] * 2, 2, "softmax")
    _compiled(model, keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    weights = np.where(y == 1, 99.0, 1.0).astype("float32")
    return Setup(model, x, y, epochs=2, batch_size=4, sample_weight=weights)


def healthy_two_heads() -> Setup:
    """`saturated_head_of_two` with the flag head as Keras initialises it
    (bias 0) under binary cross-entropy, for 160 steps: both heads learn."""
    return _two_heads(0.0, "binary_crossentropy", epochs=20)


# The noise of `healthy_noisier_later`'s targets: its standard deviation
# grows linearly along the data between these.
NOISE_STD = (0.1, 3.0)
NOISY_SAMPLES = 2048


def healthy_noisier_later() -> Setup:
    """A regression on time-ordered data (not shuffled) whose targets get
    noisier along the data (noise std 0.1 to 3): the loss of each epoch's
    later batches is 3-9x where training began while Adam at 1e-3 fits the
    signal (its steps move the weights by under 1% of their norm), and the
    loss falls to the noise's floor. Not a divergence."""
    keras.utils.set_random_seed(SEED)
    rng = _rng(0)
    x = rng.normal(size=(NOISY_SAMPLES, 8)).astype("float32")
    noise = np.linspace(*NOISE_STD, len(x)) * rng.normal(size=len(x))
    y = x[:, 0] + np.sin(x[:, 1]) + noise
    model = dense_stack(8, ["relu"] * 2, 1, None, width=64)
    _compiled(model, keras.optimizers.Adam(1e-3), "mse")
    return Setup(model, x, y.astype("float32")[:, None], epochs=2)


def _new_task(stream: bool) -> Setup:
    """A classifier fitted on one task (loss about 1e-3), then trained on a
    new one: after 16 more batches of the first task (`stream`,
    time-ordered; the new task where the first has no data, so both can be
    fitted), or alone, shuffled (a new labelling of the same inputs)."""
    keras.utils.set_random_seed(SEED)
    x_a, y_a = classification(n=512, classes=4)
    x_b, y_b = classification(n=1024, classes=4, seed=11)
    model = dense_stack(16, ["relu"] * 3, 4, "softmax", width=64)
    _compiled(model, keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x_a, y_a, batch_size=32, epochs=20, verbose=0)
    _compiled(model, keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
    if not stream:
        return Setup(model, x_b, y_b, epochs=6)
    x_b += 3.0
    x, y = np.concatenate([x_a, x_b]), np.concatenate([y_a, y_b])
    return Setup(model, x, y, epochs=8)


def healthy_new_task_stream() -> Setup:
    """A classifier fitted on one task goes on training on a time-ordered
    stream (not shuffled): 16 more batches of that task, then a new one
    from step 16 (`_new_task`). The gradient norm jumps 165x with the first
    new batch and stays up while the loss of the new task falls, Adam
    moving the weights by under 1% of their norm a step: new data the
    model adapts to, not an explosion."""
    return _new_task(stream=True)


def healthy_new_task_shuffled() -> Setup:
    """The fitted classifier of `_new_task` trained on the new task alone,
    shuffled: confidently wrong from the first step (the loss 6-9x that of
    knowing nothing for the first steps) with its kernels at about He's
    scale, then learning it: not initial weights far too large."""
    return _new_task(stream=False)


def healthy_unet() -> Setup:
    """A small U-Net (ReLU convolutions, a pooled 8-channel bottleneck, skip
    connections by concatenation, sigmoid output, binary cross-entropy)
    segmenting smooth random images by sign. The task is solved mostly
    through the full-resolution skip, so the bottleneck and its decoder get
    gradients hundreds of times smaller than the output layer: a branch the
    gradient goes around, not vanishing gradients."""
    keras.utils.set_random_seed(SEED)
    rng = _rng(0)
    noise = rng.normal(size=(256, 16, 16, 1))
    kernel = np.ones(5) / 5  # A 5-pixel box blur along each axis.
    for axis in (1, 2):
        noise = np.apply_along_axis(np.convolve, axis, noise, kernel, "same")
    x = (noise / noise.std()).astype("float32")
    y = (x > 0).astype("float32")
    layers = keras.layers
    inputs = keras.Input((16, 16, 1))
    e1 = layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    e2 = layers.Conv2D(32, 3, padding="same", activation="relu")(
        layers.MaxPooling2D()(e1)
    )
    b = layers.Conv2D(8, 3, padding="same", activation="relu")(
        layers.MaxPooling2D()(e2)
    )
    d2 = layers.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu")(b)
    d2 = layers.Concatenate()([d2, e2])
    d1 = layers.Conv2DTranspose(16, 3, strides=2, padding="same", activation="relu")(d2)
    d1 = layers.Concatenate()([d1, e1])
    outputs = layers.Conv2D(1, 1, activation="sigmoid")(d1)
    model = keras.Model(inputs, outputs)
    _compiled(model, keras.optimizers.Adam(1e-3), "binary_crossentropy")
    return Setup(model, x, y, epochs=24)


BACKEND = keras.backend.backend()
# On JAX, Keras's sparse categorical cross-entropy of a softmax output takes
# the probabilities and clips them (TensorFlow's backend takes the logits the
# softmax kept): the lr 50 step saturates the softmax (probabilities exactly
# 0 or 1, derivative 0), every gradient is exactly 0 from step 151 and the
# loss sticks at ~10; no dead units: training has stopped (vanishing
# gradients at their extreme), after an update that threw the weights out
# (the last hidden layer's norm 2.8 -> 13.3 across step 150: an explosion).
LR_JUMP_ONSETS = (
    {EXPLODING: 150, VANISHING: 150}
    if BACKEND == "jax"
    else {EXPLODING: 150, DEAD: 150}
)
FAILURES = [
    Case("dead_relu", dead_relu, {DEAD: 0}),
    Case("dead_relu_batch8", dead_relu_batch8, {DEAD: 0}),
    Case("dead_relu_spe8", dead_relu_spe8, {DEAD: 0}),
    Case("dead_relu_output", dead_relu_output, {DEAD: 3}),
    Case("vanishing_sigmoid", vanishing_sigmoid, {VANISHING: 0}),
    Case("vanishing_sigmoid_spe4", vanishing_sigmoid_spe4, {VANISHING: 0}),
    Case("vanishing_sigmoid_spe8", vanishing_sigmoid_spe8, {VANISHING: 0}),
    Case("saturated_tanh", saturated_tanh, {SATURATED: 0}),
    Case("saturated_tanh_stack", saturated_tanh_stack, {SATURATED: 0}),
    Case("saturated_elu", saturated_elu, {SATURATED: 0}),
    Case("nan_batch", nan_batch, {NON_FINITE: NAN_STEP}),
    Case("explode_to_nan", explode_to_nan, {EXPLODING: 0, NON_FINITE: 2}),
    Case("explode_finite", explode_finite, {EXPLODING: 0}),
    Case("exploding_rnn", exploding_rnn, {EXPLODING: 0}),
    Case("exploding_relu_rnn", exploding_relu_rnn, {EXPLODING: 0}),
    Case("churning_rnn_regression", churning_rnn_regression, {EXPLODING: 0}),
    Case("closed_gates_lstm", closed_gates_lstm, {VANISHING: 0}),
    Case("bad_batch", bad_batch, {EXPLODING: BAD_BATCH_STEP}),
    Case("huge_init_adam", huge_init_adam, {EXPLODING: 0}),
    Case("thrown_tanh_adam", thrown_tanh_adam, {EXPLODING: 0}),
    Case(
        "attention_adam_high",
        attention_adam_high,
        {EXPLODING: 0, VANISHING: 5},
        lead=2,
    ),
    Case("saturated_attention", saturated_attention, {SATURATED: 0}),
    Case("lr_jump", lr_jump, LR_JUMP_ONSETS),
    Case(
        "lr_jump_adam_bn",
        lr_jump_adam_bn,
        {EXPLODING: JUMP_EPOCH * JUMP_STEPS_PER_EPOCH},
    ),
    Case(
        "lr_jump_adam_bn_spe4",
        lr_jump_adam_bn_spe4,
        {EXPLODING: JUMP_EPOCH * JUMP_STEPS_PER_EPOCH},
    ),
    Case("zero_gradients", zero_gradients, {EXPLODING: 16, VANISHING: 16}),
    Case("saturated_output_mse", saturated_output_mse, {VANISHING: 0}),
    Case("updates_clipped_away", updates_clipped_away, {VANISHING: 0}),
    Case("saturated_head_of_two", saturated_head_of_two, {SATURATED: 0}),
    Case("layer_dies_late", layer_dies_late, {DEAD: DIE_STEP}),
    Case("units_die_late", units_die_late, {DEAD: DIE_STEP}),
    Case(
        "units_die_gradually", units_die_gradually, {DEAD: HALF_SILENCED_STEP}, lead=4
    ),
]
HEALTHY = [
    Case("healthy_converges", healthy_converges, {}),
    Case("healthy_cnn_bn_dropout", healthy_cnn_bn_dropout, {}),
    Case("healthy_tanh_regression", healthy_tanh_regression, {}),
    Case("healthy_deep_tanh", healthy_deep_tanh, {}),
    Case("healthy_deep_leaky_relu", healthy_deep_leaky_relu, {}),
    Case("healthy_lstm", healthy_lstm, {}),
    Case("healthy_gru", healthy_gru, {}),
    Case("healthy_attention", healthy_attention, {}),
    Case("healthy_attention_routing", healthy_attention_routing, {}),
    Case("healthy_normalized_head", healthy_normalized_head, {}),
    Case("healthy_embedding", healthy_embedding, {}),
    Case("healthy_small_embedding", healthy_small_embedding, {}),
    Case("healthy_autoencoder", healthy_autoencoder, {}),
    Case("healthy_unstandardized_tanh", healthy_unstandardized_tanh, {}),
    Case("healthy_bottleneck", healthy_bottleneck, {}),
    Case("healthy_rare_class_weighted", healthy_rare_class_weighted, {}),
    Case("healthy_unet", healthy_unet, {}),
    Case("healthy_new_task_stream", healthy_new_task_stream, {}),
    Case("healthy_new_task_shuffled", healthy_new_task_shuffled, {}),
    Case("healthy_two_heads", healthy_two_heads, {}),
    Case(
        "healthy_noisier_later",
        healthy_noisier_later,
        {},
        loss_floor=float(np.mean(np.linspace(*NOISE_STD, NOISY_SAMPLES) ** 2)),
    ),
]
CASES = FAILURES + HEALTHY
BY_NAME = {case.name: case for case in CASES}


# Detection: fit with the callback at its default settings.


class Recorder(keras.callbacks.Callback):
    """Placed after `GradientDiagnostics`: notes each new finding with the step
    at which it was reported (the last optimizer step run when it appeared)."""

    def __init__(self, diag):
        super().__init__()
        self.diag = diag
        self.reported: list[tuple] = []  # (Finding, reported step)
        self._batches = 0

    def _note(self):
        step = int(self.model.optimizer.iterations) - 1
        if isinstance(self.model.optimizer, keras.optimizers.LossScaleOptimizer):
            # A step whose update loss scaling skipped does not advance the
            # optimizer's count: count the batches (a short last execution
            # of an epoch counts in full).
            step = self._batches - 1
        for finding in self.diag.findings[len(self.reported) :]:
            self.reported.append((finding, step))

    def on_train_batch_end(self, batch, logs=None):
        self._batches += self.model.steps_per_execution or 1
        self._note()

    def on_epoch_end(self, epoch, logs=None):
        self._note()

    def on_train_end(self, logs=None):
        self._note()


@dataclasses.dataclass
class Detection:
    """What `detect` saw: every finding with its reported step, and the loss."""

    reported: list[tuple]  # (Finding, reported step), in order of appearance
    losses: list[float]

    @property
    def training(self) -> list[tuple]:
        """The training-failure findings (mode in TRAINING_MODES, severity
        "failure"), with their reported steps."""
        return [
            (f, s)
            for f, s in self.reported
            if f.mode in TRAINING_MODES and f.severity == "failure"
        ]

    @property
    def modes(self) -> set[str]:
        return {f.mode for f, _ in self.training}

    def first(self, mode: str) -> tuple | None:
        """The first reported finding of `mode` and its reported step."""
        hits = [(f, s) for f, s in self.training if f.mode == mode]
        return min(hits, key=lambda fs: (fs[1], fs[0].step)) if hits else None


# Initial weights saved from TensorFlow's build of a case (`initial_weights`).
WEIGHTS_DIR = os.path.join(os.path.dirname(__file__), "initial_weights")


def tensorflow_weights(case: Case) -> list[np.ndarray]:
    """The weights `case.build()` starts from on TensorFlow, saved with
    `np.savez(path, *model.get_weights())`: Keras's seeded initializers draw
    other weights on JAX, so a run there starts from these to be the same."""
    with np.load(os.path.join(WEIGHTS_DIR, f"{case.name}.npz")) as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


def detect(case: Case, initial_weights=None, **options) -> Detection:
    """Fits `case` with `GradientDiagnostics(check_model=False)` at default
    settings (warnings silenced) and a `Recorder` after it, from
    `initial_weights` if given (a list for `model.set_weights`). `options`
    are passed on to `GradientDiagnostics` (for exploration: the tests and
    the benchmark use none)."""
    from keras_actloss.callbacks import GradientDiagnostics, GradientHealthWarning

    setup = case.build()
    if initial_weights is not None:
        setup.model.set_weights(initial_weights)
    diag = GradientDiagnostics(check_model=False, **options)
    recorder = Recorder(diag)
    kwargs = setup.fit_kwargs()
    kwargs["callbacks"] = [diag, recorder, *kwargs["callbacks"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GradientHealthWarning)
        history = setup.model.fit(setup.x, setup.y, **kwargs)
    return Detection(recorder.reported, [float(v) for v in history.history["loss"]])


@dataclasses.dataclass
class ModeScore:
    mode: str
    onset: int
    finding_step: int | None
    reported_step: int | None
    lead: int = 0  # `Case.lead`

    @property
    def delay(self) -> int | None:
        return None if self.reported_step is None else self.reported_step - self.onset

    @property
    def detected(self) -> bool:
        """Reported within the window, with a finding step not before onset
        (less `lead`; non-finite: found and reported at the very step)."""
        if self.reported_step is None:
            return False
        if self.mode == NON_FINITE:
            return self.finding_step == self.onset == self.reported_step
        if self.finding_step is None:
            return False
        return self.onset - self.lead <= self.finding_step and self.delay <= WINDOW


def score(case: Case, detection: Detection) -> tuple[list[ModeScore], list]:
    """Per expected mode its `ModeScore`; and the false alarms: findings of an
    unexpected training mode, or of an expected one placed before its onset
    (less `Case.lead`)."""
    scores = []
    for mode, onset in case.onsets.items():
        hit = detection.first(mode)
        found = (hit[0].step, hit[1]) if hit else (None, None)
        scores.append(ModeScore(mode, onset, *found, case.lead))
    false = [
        (f, s)
        for f, s in detection.training
        if f.mode not in case.onsets
        or (f.step is not None and f.step < case.onsets[f.mode] - case.lead)
    ]
    return scores, false


# Confirmation: the same training in a plain GradientTape loop.


def _activation(layer) -> str | None:
    """The name of the activation a layer applies to its output, if any."""
    if isinstance(layer, keras.layers.RNN):
        return None
    if isinstance(layer, keras.layers.ReLU):
        return "relu"
    if isinstance(layer, keras.layers.LeakyReLU):
        return "leaky_relu"
    fn = getattr(layer, "activation", None)
    name = getattr(fn, "__name__", None) or getattr(fn, "name", None)
    if name is None and fn is not None:
        name = type(fn).__name__.lower()
    return name


@dataclasses.dataclass
class Confirmation:
    """Per-step measurements of a plain GradientTape run (index = step).

    `dead` and `saturated` are measured on the whole training set with the
    weights the step starts from; `layer_rms` is the RMS over all gradient
    elements of a layer's trainable weights.
    """

    losses: list[float]
    global_norm: list[float]
    non_finite: list[bool]
    weights_finite: list[bool]  # every weight finite after the step's update
    layer_rms: dict[str, list[float]]
    # ||w_after - w_before|| / ||w_before|| of a layer's trainable weights.
    update_ratio: dict[str, list[float]]
    dead: dict[str, list[float]]
    saturated: dict[str, list[float]]
    learning_rate: list[float]
    initial_loss: float
    final_loss: float
    final_accuracy: float | None

    @property
    def weighted(self) -> list[str]:
        return list(self.layer_rms)

    def first_non_finite(self) -> int | None:
        return next((i for i, bad in enumerate(self.non_finite) if bad), None)

    def rms_ratio(self, step: int) -> float:
        """First weighted layer's gradient RMS over the last one's."""
        first, last = self.weighted[0], self.weighted[-1]
        return self.layer_rms[first][step] / self.layer_rms[last][step]

    def max_dead(self, step: int) -> float:
        return max((v[step] for v in self.dead.values()), default=0.0)

    def max_saturated(self, step: int) -> float:
        return max((v[step] for v in self.saturated.values()), default=0.0)


def _unit_fractions(layer, outputs) -> tuple[str, float]:
    """("dead", fraction of units zero on every sample) for a ReLU layer, or
    ("saturated", fraction of saturated outputs) for a sigmoid/tanh one."""
    a = np.asarray(outputs, dtype="float64")
    with np.errstate(invalid="ignore"):
        if _activation(layer) == "relu":
            # NaN outputs compare False: a NaN unit is broken, not dead.
            return "dead", float(np.all(a.reshape(-1, a.shape[-1]) <= 0, axis=0).mean())
        if _activation(layer) == "tanh":
            return "saturated", float((np.abs(a) > 0.99).mean())
        return "saturated", float(((a < 0.01) | (a > 0.99)).mean())


def confirm(case: Case) -> Confirmation:
    """Trains `case` without the callback in a plain `tf.GradientTape` loop
    (same seed, model, batches and learning rates) and measures it.
    TensorFlow only (imported here: `detect` runs on JAX too)."""
    import tensorflow as tf

    setup = case.build()
    model = setup.model
    layers = [
        layer
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
    ]
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    probe = keras.Model(inputs, [layer.output for layer in layers])
    # Several outputs: the model's own (a dict or list), not the last layer's.
    several = len(model.outputs) > 1
    weighted = [layer for layer in layers if layer.trainable_weights]
    owner = {id(v): layer.name for layer in weighted for v in layer.trainable_weights}
    watched = [
        (i, layer)
        for i, layer in enumerate(layers)
        if _activation(layer) in ("relu", "sigmoid", "tanh") and i < len(layers) - 1
    ]  # The output layer's confidence is neither dead units nor saturation.
    x, y, bs = setup.x, setup.y, setup.batch_size
    variables = model.trainable_variables
    x_all = tf.convert_to_tensor(x)

    def forward(inputs, training):
        outs = probe(inputs, training=training)  # A lone output is not a list.
        return list(outs) if isinstance(outs, list | tuple) else [outs]

    @tf.function
    def whole_set():
        outs = forward(x_all, training=False)
        y_pred = model(x_all, training=False) if several else outs[-1]
        return [outs[i] for i, _ in watched], y_pred

    @tf.function(reduce_retracing=True)
    def gradients(xb, yb, wb):
        with tf.GradientTape() as tape:
            if several:
                y_pred = model(xb, training=True)
            else:
                y_pred = forward(xb, training=True)[-1]
            loss = model.compute_loss(
                x=xb, y=yb, y_pred=y_pred, sample_weight=wb, training=True
            )
        grads = tape.gradient(loss, variables)
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
        return loss, [tf.convert_to_tensor(g) for g in grads]

    model.optimizer.build(variables)
    apply = tf.function(lambda grads: model.optimizer.apply(grads, variables))
    watched_outs, y_pred = whole_set()
    result = Confirmation(
        losses=[],
        global_norm=[],
        non_finite=[],
        weights_finite=[],
        layer_rms={layer.name: [] for layer in weighted},
        update_ratio={layer.name: [] for layer in weighted},
        dead={},
        saturated={},
        learning_rate=[],
        initial_loss=_full_loss(model, setup, y_pred),
        final_loss=math.nan,
        final_accuracy=None,
    )
    for epoch in range(setup.epochs):
        if setup.schedule is not None:
            model.optimizer.learning_rate.assign(setup.schedule(epoch))
        for start in range(0, len(x), bs):
            if setup.perturb is not None and len(result.losses) in setup.perturb[0]:
                setup.perturb[1](model)
                watched_outs, y_pred = whole_set()
            for (_, layer), outs in zip(watched, watched_outs):
                kind, value = _unit_fractions(layer, outs)
                getattr(result, kind).setdefault(layer.name, []).append(value)
            batch = slice(start, start + bs)
            wb = None if setup.sample_weight is None else setup.sample_weight[batch]
            yb = {k: v[batch] for k, v in y.items()} if several else y[batch]
            loss, grads = gradients(x[batch], yb, wb)
            sums = {name: [0.0, 0] for name in result.layer_rms}
            total, finite = 0.0, bool(np.isfinite(float(loss)))
            for g, v in zip(grads, variables):
                g = np.asarray(g, dtype="float64")
                finite = finite and bool(np.all(np.isfinite(g)))
                with np.errstate(over="ignore", invalid="ignore"):
                    sq = float(np.sum(g * g))
                total += sq
                if id(v) in owner:
                    sums[owner[id(v)]][0] += sq
                    sums[owner[id(v)]][1] += g.size
            for name, (sq, size) in sums.items():
                result.layer_rms[name].append(math.sqrt(sq / max(size, 1)))
            result.losses.append(float(loss))
            result.global_norm.append(math.sqrt(total))
            result.non_finite.append(not finite)
            result.learning_rate.append(float(model.optimizer.learning_rate))
            before = [np.asarray(v, dtype="float64") for v in variables]
            apply(grads)
            after = [np.asarray(v, dtype="float64") for v in variables]
            result.weights_finite.append(
                all(bool(np.all(np.isfinite(v))) for v in after)
            )
            _update_ratios(result.update_ratio, owner, variables, before, after)
            watched_outs, y_pred = whole_set()
    result.final_loss = _full_loss(model, setup, y_pred)
    pred = None if several else np.asarray(y_pred)
    if pred is not None and pred.ndim == 2 and y.ndim == 1:
        labels = pred.argmax(axis=1) if pred.shape[1] > 1 else pred[:, 0] > 0.5
        result.final_accuracy = float(np.mean(labels == y))
    return result


def _update_ratios(out, owner, variables, before, after) -> None:
    """Appends each layer's `||w_after - w_before|| / ||w_before||`."""
    sums = {name: [0.0, 0.0] for name in out}
    for v, b, a in zip(variables, before, after):
        if id(v) in owner:
            with np.errstate(over="ignore", invalid="ignore"):
                sums[owner[id(v)]][0] += float(np.sum((a - b) ** 2))
                sums[owner[id(v)]][1] += float(np.sum(b * b))
    for name, (delta, weight) in sums.items():
        out[name].append(math.sqrt(delta / weight) if weight > 0 else math.inf)


def _full_loss(model, setup: Setup, y_pred) -> float:
    """The compiled loss on the whole training set (weighted as trained)."""
    return float(
        model.compute_loss(
            x=setup.x,
            y=setup.y,
            y_pred=y_pred,
            sample_weight=setup.sample_weight,
            training=False,
        )
    )
