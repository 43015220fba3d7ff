"""Tests for keras_actloss.diagnostics.step_stats, on the test's backend."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_actloss import activations
from keras_actloss.callbacks import _model_plan
from keras_actloss.diagnostics import step_activations, step_stats
from keras_actloss.diagnostics.step_stats import NORM_MIN_ELEMENTS, RowLayout
from tests.backend_support import FLOAT_DTYPES, tensorflow_only, traced

# Two shapes below the norm threshold (one segment sum), two above (one
# L2 norm each), interleaved so the row's column order differs from theirs.
SHAPES = [(3, 4), (NORM_MIN_ELEMENTS,), (7,), (300, 70)]


def _np(x):
    return ops.convert_to_numpy(x)


def _row(tensors, jit=False, **kwargs):
    """`norm_row` of NumPy `tensors`, eager or traced, as NumPy (its layout
    from an eager call: the same tensors give the same layout)."""
    layout = step_stats.norm_row(tensors, **kwargs).layout

    def run(*ts):
        out = step_stats.norm_row(list(ts), **kwargs)
        return [x for x in (out.row, out.extremes, out.joined) if x is not None]

    fn = traced(run) if jit else run
    return [_np(x) for x in fn(*[ops.convert_to_tensor(t) for t in tensors])], layout


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("jit", [False, True])
def test_norm_row_gives_numpy_sums_of_squares(rng, dtype, jit):
    xs = [rng.normal(size=shape).astype(dtype) for shape in SHAPES]
    expected = [np.sum(x.astype("float64") ** 2) for x in xs]
    rtol = 1e-3 if dtype == "float16" else 1e-5
    (row,), layout = _row(xs, jit)
    assert row.dtype == np.float32 and row.shape == (1, len(xs))
    # Large tensors first (as norms), then the small ones (as squares).
    assert layout == RowLayout((1, 3, 0, 2), (True, True, False, False))
    np.testing.assert_allclose(row[0, 0], np.sqrt(expected[1]), rtol=rtol)
    np.testing.assert_allclose(layout.squares(row[0]), expected, rtol=rtol)
    np.testing.assert_allclose(layout.total(row[0].tolist()), sum(expected), rtol=rtol)
    # Only large tensors, only one small one.
    for part in (slice(1, None, 2), slice(0, 1)):
        (row,), layout = _row(xs[part], jit)
        np.testing.assert_allclose(layout.squares(row[0]), expected[part], rtol=rtol)


def test_row_layout_is_norm_rows_from_shapes(rng):
    xs = [rng.normal(size=shape).astype("float32") for shape in SHAPES]
    layout = step_stats.row_layout(SHAPES)
    assert layout == RowLayout((1, 3, 0, 2), (True, True, False, False))
    assert layout == step_stats.norm_row(xs).layout
    assert step_stats.row_layout([]) == RowLayout()


# Small tensors of one shape, apart in tensor order, and a large one: the
# row puts the large one first, then each shape's small tensors side by
# side, at the first of them (the four 3x4 kernels are one stack's view).
RUN_SHAPES = [(3, 4), (5,), (3, 4), (2, 2, 2), (3, 4), (5,), (3, 4)]
RUN_SHAPES.append((NORM_MIN_ELEMENTS,))
RUN_ORDER = (7, 0, 2, 4, 6, 1, 5, 3)


@pytest.mark.parametrize("jit", [False, True])
def test_norm_row_groups_small_tensors_of_one_shape(rng, jit):
    xs = [rng.normal(size=shape).astype("float32") for shape in RUN_SHAPES]
    xs[5][[0, 3]] = 0.0  # Two silent elements, in the second 5-vector.
    expected = [np.sum(x.astype("float64") ** 2) for x in xs]
    layout = step_stats.row_layout(RUN_SHAPES)
    assert layout == RowLayout(RUN_ORDER, (True,) + (False,) * 7)

    def run(*ts):
        out = step_stats.norm_row(list(ts), extremes=True, joined=True, silent=True)
        return out.row, out.extremes, out.joined, out.silent

    fn = traced(run) if jit else run
    row, ends, joined, silent = (_np(x) for x in fn(*xs))
    np.testing.assert_allclose(layout.squares(row[0]), expected, rtol=1e-5)
    np.testing.assert_array_equal(ends[0, :8], [xs[i].max() for i in RUN_ORDER])
    np.testing.assert_array_equal(ends[0, 8:], [xs[i].min() for i in RUN_ORDER])
    np.testing.assert_array_equal(
        joined, np.concatenate([xs[i].reshape(-1) for i in RUN_ORDER])
    )
    assert float(silent) == 2.0


@tensorflow_only
def test_norm_row_views_a_run_of_kernels_as_one_stack(rng):
    import tensorflow as tf

    xs = [rng.normal(size=shape).astype("float32") for shape in RUN_SHAPES]
    graph = (
        tf.function(lambda *ts: step_stats.norm_row(list(ts)).row)
        .get_concrete_function(*xs)
        .graph
    )
    types = [op.type for op in graph.get_operations()]
    # One `Pack` of the four 3x4 kernels (and one of the large tensor's
    # norm), views of it and of the 2x2x2 kernel, and the row's `[1, m]`.
    assert types.count("Pack") == 2
    assert types.count("Reshape") == 3


def test_norm_row_of_nothing():
    out = step_stats.norm_row([], extremes=True, joined=True)
    assert tuple(out.row.shape) == (1, 0) and out.layout == RowLayout()
    assert tuple(out.extremes.shape) == (1, 0) and tuple(out.joined.shape) == (0,)


def test_norm_row_extremes_and_joined_follow_the_columns(rng):
    xs = [rng.normal(size=shape).astype("float32") for shape in SHAPES]
    (_, ends, joined), layout = _row(xs, jit=True, extremes=True, joined=True)
    m = len(xs)
    assert ends.shape == (1, 2 * m)
    np.testing.assert_array_equal(ends[0, :m], [xs[i].max() for i in layout.order])
    np.testing.assert_array_equal(ends[0, m:], [xs[i].min() for i in layout.order])
    np.testing.assert_array_equal(
        joined, np.concatenate([xs[i].reshape(-1) for i in layout.order])
    )
    out = step_stats.norm_row(xs[:1])
    assert out.extremes is None and out.joined is None
    # Without the norms (a caller that has the row): the same layout,
    # extremes and joined elements, no row.
    (ends_only, joined_only), same = _row(
        xs, jit=True, extremes=True, joined=True, norms=False
    )
    assert same == layout
    np.testing.assert_array_equal(ends_only, ends)
    np.testing.assert_array_equal(joined_only, joined)
    assert step_stats.norm_row(xs, norms=False).row is None


@tensorflow_only
def test_norm_row_unknown_shape(rng):
    import tensorflow as tf

    x = rng.normal(size=(50, 100)).astype("float32")
    spec = tf.TensorSpec([None, None], "float32")
    fn = tf.function(lambda t: step_stats.norm_row([t]).row, input_signature=[spec])
    # An unknown size is treated as large: its column is the norm.
    np.testing.assert_allclose(
        fn(x).numpy(), [[np.sqrt(np.sum(x.astype("float64") ** 2))]], rtol=1e-5
    )


@pytest.mark.parametrize("shape", SHAPES)
def test_norm_row_propagates_non_finite(rng, shape):
    xs = [rng.normal(size=s).astype("float32") for s in SHAPES]
    at = SHAPES.index(shape)
    flat = xs[at].reshape(-1)
    flat[1] = np.inf
    (row,), layout = _row(xs, jit=True)
    squares = layout.squares(row[0])
    assert squares[at] == np.inf
    assert np.isfinite(np.delete(squares, at)).all()
    flat[2] = np.nan
    (row,), layout = _row(xs, jit=True)
    assert np.isnan(layout.squares(row[0])[at])
    assert layout.first_non_finite(row[0]) == at
    assert np.isnan(layout.total(row[0].tolist()))


@pytest.mark.parametrize("scale", [None, 4.0])
@pytest.mark.parametrize("shapes", [SHAPES, SHAPES[1::2], SHAPES[::2]])
def test_alarm_is_the_unscaled_squared_norm_and_rate(rng, scale, shapes):
    xs = [rng.normal(size=s).astype("float32") for s in shapes]

    def run(*ts):
        out = step_stats.norm_row(list(ts))
        return step_stats.alarm(out.row, out.layout, scale, 0.25)

    total, rate, zeros, silent, loss = _np(traced(run)(*xs))
    expected = sum(np.sum(x.astype("float64") ** 2) for x in xs) / (scale or 1) ** 2
    np.testing.assert_allclose(total, expected, rtol=1e-5)
    assert rate == 0.25
    assert zeros == silent == loss == 0  # Not asked for: 0.


def test_alarm_ends_with_the_loss(rng):
    x = rng.normal(size=(3, 4)).astype("float32")

    def run(t, loss):
        out = step_stats.norm_row([t])
        return step_stats.alarm(out.row, out.layout, None, 0.25, None, loss)

    alarm = _np(traced(run)(x, np.float32(2.5)))
    np.testing.assert_allclose(
        alarm, [np.sum(x.astype("float64") ** 2), 0.25, 0, 0, 2.5], rtol=1e-6
    )


def test_alarm_counts_the_columns_that_are_exactly_zero(rng):
    # The first and the last tensor entirely zero (a layer that fell
    # silent), one small (a sum-of-squares column) and one large (a norm
    # column); the others random.
    xs = [rng.normal(size=s).astype("float32") for s in SHAPES]
    xs[0][...] = 0.0
    xs[-1][...] = 0.0

    def run(*ts):
        out = step_stats.norm_row(list(ts))
        return step_stats.alarm(out.row, out.layout, None, 0.25), out.row

    (alarm, row) = traced(run)(*xs)
    total, _, zeros, *_ = _np(alarm)
    assert zeros == 2
    expected = sum(np.sum(x.astype("float64") ** 2) for x in xs)
    np.testing.assert_allclose(total, expected, rtol=1e-5)
    layout = step_stats.norm_row([keras.ops.convert_to_tensor(x) for x in xs]).layout
    assert layout.zeros(_np(row)[0].tolist()) == 2
    # Rows of a ring at once (padding columns past the layout not counted):
    # this row, the same with its first tensor non-zero, and no zero.
    rows = np.zeros((3, len(SHAPES) + 2))
    rows[:, : len(SHAPES)] = _np(row)[0]
    rows[1, layout.order.index(0)] = 1.0
    rows[2, : len(SHAPES)] = 1.0
    np.testing.assert_array_equal(layout.zeros(rows), [2, 1, 0])


@pytest.mark.parametrize(
    "counts, size, expected",
    [
        # 5 elements, 5 wanted: stride 1, all of them.
        ([4, 1], 5, [[0, 1, 2, 3], [0]]),
        # 16 elements, 4 wanted: stride 4, global positions 0, 4, 8, 12;
        # 12 is the second tensor's element 12 - 10 = 2.
        ([10, 6], 4, [[0, 4, 8], [2]]),
        # Fewer elements than wanted: all of them.
        ([3], 64, [[0, 1, 2]]),
        # 100 elements, 8 wanted: stride 12, positions 0, 12, ..., 84; the
        # 2-element middle tensor (positions 50-51) holds none of them.
        ([50, 2, 48], 8, [[0, 12, 24, 36, 48], [], [8, 20, 32]]),
    ],
)
def test_sample_positions(counts, size, expected):
    out = step_stats.sample_positions(counts, size)
    assert [a.tolist() for a in out] == expected
    assert all(a.dtype == np.int32 for a in out)


@pytest.mark.parametrize("sliced", [False, True], ids=["gather", "sliced"])
@pytest.mark.parametrize("scale", [None, 2.0])
def test_gradient_sample_is_each_layers_strided_sample(rng, scale, sliced):
    # Tensors 0 and 2 are layer 1's, tensor 1 layer 0's, tensor 3 is not
    # monitored; layer 2 has no gradient in the step (its sample is zeros).
    # Tensor 4 (float16, 2x2x3) is layer 3's: all 12 of its elements.
    # Tensors 5 and 6 (10 and 9 elements) are layer 4's: stride 19 // 6 =
    # 3, positions 0, 3, 6, 9 of the first and 12 - 10 = 2, 5 of the second.
    shapes = [(NORM_MIN_ELEMENTS + 4,), (30, 3), (9,), (5,), (2, 2, 3), (10,), (9,)]
    layers = [1, 0, 1, -1, 3, 4, 4]
    sizes = {0: 40, 1: 100, 2: 3, 3: 12, 4: 6}
    dtypes = ["float32"] * 4 + ["float16"] + ["float32"] * 2
    xs = [rng.normal(size=s).astype(d) for s, d in zip(shapes, dtypes)]
    counts = [x.size for x in xs]

    def run(*ts):
        if sliced:
            return step_stats.sliced_sample(list(ts), layers, sizes, scale)
        out = step_stats.norm_row(list(ts), joined=True, pad=True)
        index = step_stats.sample_index(counts, layers, out.layout, sizes)
        return step_stats.gradient_sample(out.joined, index, scale)

    sample = _np(traced(run)(*xs))
    # Reference: each layer's tensors flattened in tensor order, every
    # (total // size)-th element, then zeros up to the size.
    expected = []
    for i, size in sizes.items():
        flat = np.concatenate(
            [np.zeros(0)] + [x.reshape(-1) for x, n in zip(xs, layers) if n == i]
        )
        taken = flat[:: max(1, flat.size // size)][:size]
        expected.append(np.pad(taken, (0, size - taken.size)))
    expected = np.concatenate(expected) / (scale or 1.0)
    assert sample.dtype == np.float32
    np.testing.assert_allclose(sample, expected, rtol=1e-6)
    assert _np(step_stats.gradient_sample(xs[0], np.zeros(0, "int32"), None)).size == 0
    assert _np(step_stats.sliced_sample(xs, layers, {}, None)).size == 0


class _Plan:
    def __init__(self, name, channel_axis=-1, unit_variable=None):
        self.profile = activations.profile(name)
        self.channel_axis = channel_axis
        self.unit_variable = unit_variable

    @staticmethod
    def measured(kept):  # What the step kept is the output (`LayerPlan`).
        return kept

    @staticmethod
    def counted(measured):  # Every element counts.
        return None


def test_activation_vector_matches_numpy(rng):
    plans = [_Plan("relu"), _Plan("sigmoid"), _Plan("relu", 1), _Plan("relu")]
    relu = [np.maximum(rng.normal(size=(4, 3, 5)), 0.0).astype("float32")]
    relu[0][:, :, 2] = 0.0  # Unit 2 is dead.
    shared = [rng.random((4, 6)).astype("float32") for _ in range(2)]
    first = [np.maximum(rng.normal(size=(4, 2, 7)), 0.0).astype("float32")]
    # Layer 3's two calls disagree on their unit count: left out.
    mixed = [np.ones((4, 2), "float32"), np.ones((4, 3), "float32")]
    outputs = {0: relu, 1: shared, 2: first, 3: mixed}

    def run(outs):
        return step_activations.activation_vector(outs, plans, batch=4)[0]

    _, layout = step_activations.activation_vector(outputs, plans, batch=4)
    vector = _np(traced(run)(outputs))
    assert layout == (
        step_activations.ActivationEntry(0, 5, False, 15),
        step_activations.ActivationEntry(1, 0, True, 12),
        step_activations.ActivationEntry(2, 2, False, 14),
    )
    # Sigmoid saturates outside (0.01, 0.99) (its profile).
    low, high = plans[1].profile.saturation_bounds
    assert (low, high) == (0.01, 0.99)
    s = np.concatenate(shared)
    expected = np.concatenate(
        [
            # The per-unit counts first, layer after layer.
            np.sum(relu[0] > 0, axis=(0, 1)),
            # Units on axis 1 (channels first).
            np.sum(first[0] > 0, axis=(0, 2)),
            # Then the scalars: both calls of the shared layer, summed.
            [np.sum((s <= 0.01) | (s >= 0.99))],
        ]
    )
    np.testing.assert_array_equal(vector, expected)
    assert step_activations.activation_vector({}, plans) == (None, ())


def test_activation_vector_counts_layers_judged_by_sign_with_their_gradient(rng):
    # Two linear layers judged by sign (`units_by_sign`), 4 units each: a
    # unit counts its elements above 0, plus 1 where its vector weight's
    # gradient is not 0. Layer 0: unit 1 at most 0 everywhere without
    # gradient (0: dead), unit 2 at most 0 everywhere with a gradient (1),
    # unit 3 with no gradient but positive elements. Layer 1's gradient is
    # missing (TensorFlow leaves a variable no gradient reaches out): the
    # layer is left out. A variable of another layer is not taken.
    b0, b1, other = object(), object(), object()
    plans = [_Plan("relu", unit_variable=b0), _Plan("relu", unit_variable=b1)]
    for plan in plans:
        plan.profile = _model_plan.BY_SIGN
    x = rng.normal(size=(6, 2, 4)).astype("float32")
    x[:, :, 1] = -np.abs(x[:, :, 1])
    x[:, :, 2] = -np.abs(x[:, :, 2])
    x[0, 0, 3] = 1.0
    grad = np.array([0.5, 0.0, -2.0, 0.0], "float32")
    units = step_activations.unit_gradients(
        plans, [grad, np.ones(3, "float32")], [b0, other]
    )
    assert list(units) == [0]

    def run(outs, g):
        return step_activations.activation_vector(
            outs, plans, batch=6, unit_grads={0: g}
        )[0]

    outputs = {0: [x], 1: [x]}
    _, layout = step_activations.activation_vector(
        outputs, plans, batch=6, unit_grads=units
    )
    assert layout == (step_activations.ActivationEntry(0, 4, False, 8),)
    expected = np.sum(x > 0, axis=(0, 1)) + (grad != 0)
    np.testing.assert_array_equal(_np(traced(run)(outputs, grad)), expected)
    assert list(_np(traced(run)(outputs, grad))).count(0.0) == 1


def test_activation_vector_counts_layers_on_other_batches_apart(rng):
    # A ReLU layer run on 2 samples in a step whose data batch is 4 (a
    # GAN's generator on its latents): its elements are counted in the
    # step (2 x 3 x 5 = 30, after its per-unit counts) and its samples
    # noted; the same with the data's batch unknown.
    plans = [_Plan("relu")]
    relu = np.maximum(rng.normal(size=(2, 3, 5)), 0.0).astype("float32")
    for batch in (4, None):

        def run(outs, batch=batch):
            return step_activations.activation_vector(outs, plans, batch=batch)[0]

        _, layout = step_activations.activation_vector({0: [relu]}, plans, batch=batch)
        assert layout == (step_activations.ActivationEntry(0, 5, False, None, 2),)
        expected = [*np.sum(relu > 0, axis=(0, 1)), 30]
        np.testing.assert_array_equal(_np(traced(run)({0: [relu]})), expected)


@tensorflow_only
def test_activation_vector_counts_elements_of_unknown_shape(rng):
    import tensorflow as tf

    x = np.maximum(rng.normal(size=(4, 6, 3)), 0.0).astype("float32")
    spec = tf.TensorSpec([None, None, 3], "float32")
    found = {}

    def run(t):
        vector, found["layout"] = step_activations.activation_vector(
            {0: [t]}, [_Plan("relu")]
        )
        return vector

    vector = tf.function(run, input_signature=[spec])(x).numpy()
    assert found["layout"] == (step_activations.ActivationEntry(0, 3, False, None),)
    np.testing.assert_array_equal(vector, [*np.sum(x > 0, axis=(0, 1)), x.size])


def test_keras_backend_is_the_one_under_test():
    # The module picks its primitives by backend: the test runs them there.
    prim = step_stats._backend_primitives()
    x = np.arange(6, dtype="float32").reshape(2, 3)
    np.testing.assert_allclose(_np(prim.l2(prim.row(x))), [[np.sqrt(55.0)]])
    assert keras.backend.backend() in ("tensorflow", "jax")


def test_silent_counts_zero_elements_of_the_small_vectors_only(rng):
    # A bias of 8 with units 1 and 5 at exactly 0 (inactive on the whole
    # batch), a small matrix with 3 zeros (not a vector: not counted), a
    # large vector with zeros (not small: not counted) and a small vector
    # with one zero: 2 + 1 = 3 silent elements.
    bias = rng.normal(size=8).astype("float32")
    bias[[1, 5]] = 0.0
    matrix = rng.normal(size=(3, 4)).astype("float32")
    matrix[0, :3] = 0.0
    large = np.zeros(NORM_MIN_ELEMENTS, "float32")
    vector = np.array([0.0, 2.0, -1.0], "float32")

    def run(*ts):
        out = step_stats.norm_row(list(ts), silent=True)
        return out.silent, step_stats.alarm(out.row, out.layout, None, 0.1, out.silent)

    silent, alarm = traced(run)(bias, matrix, large, vector)
    assert float(_np(silent)) == 3.0
    # The alarm carries it as its fourth value; the large zero tensor is
    # its one zero column.
    np.testing.assert_array_equal(_np(alarm)[2:4], [1.0, 3.0])
    # No small vector: 0.
    only = traced(lambda t: step_stats.norm_row([t], silent=True).silent)(matrix)
    assert float(_np(only)) == 0.0
    # Nothing small: 0.
    only = traced(lambda t: step_stats.norm_row([t], silent=True).silent)(large)
    assert float(_np(only)) == 0.0
