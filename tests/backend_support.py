"""Gradients and skips for tests that run on TensorFlow and on JAX.

`grad_of_sum` and `weight_grads` differentiate `sum(f(...))` with the
backend's own autodiff (`tf.GradientTape` or `jax.vjp`), so the numerical
tests need no TensorFlow; `tensorflow_only` marks the tests that are about
TensorFlow itself (graph mode, `tf.function`), and `FLOAT64` skips float64
where the backend has none (JAX without `jax_enable_x64`).
"""

import keras
import pytest

BACKEND = keras.backend.backend()

tensorflow_only = pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason=f"about TensorFlow itself (graph mode, tf.function); backend={BACKEND}",
)


def _has_float64():
    if BACKEND != "jax":
        return True
    import jax

    return bool(jax.config.jax_enable_x64)


HAS_FLOAT64 = _has_float64()
needs_float64 = pytest.mark.skipif(
    not HAS_FLOAT64,
    reason="JAX without jax_enable_x64 has no float64 (Keras truncates to float32)",
)
FLOAT64 = pytest.param("float64", marks=needs_float64)
FLOAT_DTYPES = ["float16", "float32", FLOAT64]


def traced(fn, jit_compile=False):
    """`fn` traced as `model.fit` traces the loss: `tf.function` (with XLA if
    `jit_compile`) on TensorFlow, `jax.jit` (always compiled) on JAX."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=jit_compile)
    if BACKEND == "jax":
        import jax

        return jax.jit(fn)
    pytest.skip(f"no tracing helper for backend={BACKEND}")


def grad_of_sum(fn, *args, **kwargs):
    """Returns `fn(*args, **kwargs)` and the gradients of its sum w.r.t. `args`.

    The gradient of the sum of an elementwise function is its derivative at
    each element. Values and gradients are NumPy arrays.
    """
    if BACKEND == "tensorflow":
        import tensorflow as tf

        args = [tf.constant(a) for a in args]
        with tf.GradientTape() as tape:
            for a in args:
                tape.watch(a)
            y = fn(*args, **kwargs)
        grads = tape.gradient(y, args)
    elif BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        args = [jnp.asarray(a) for a in args]
        y, vjp = jax.vjp(lambda *a: fn(*a, **kwargs), *args)
        grads = vjp(jnp.ones_like(y))
    else:
        pytest.skip(f"no gradient helper for backend={BACKEND}")
    return keras.ops.convert_to_numpy(y), [keras.ops.convert_to_numpy(g) for g in grads]


def weight_grads(layer, x):
    """Gradients of `sum(layer(x))` w.r.t. `layer.trainable_weights` (NumPy)."""
    if not layer.built:
        layer(x)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            y = tf.reduce_sum(layer(x))
        grads = tape.gradient(y, layer.trainable_weights)
    elif BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        non_trainable = [v.value for v in layer.non_trainable_weights]

        def total(trainable):
            y, _ = layer.stateless_call(trainable, non_trainable, x)
            return jnp.sum(y)

        grads = jax.grad(total)([v.value for v in layer.trainable_weights])
    else:
        pytest.skip(f"no gradient helper for backend={BACKEND}")
    return [keras.ops.convert_to_numpy(g) for g in grads]


__all__ = [
    "BACKEND",
    "FLOAT64",
    "FLOAT_DTYPES",
    "HAS_FLOAT64",
    "grad_of_sum",
    "needs_float64",
    "tensorflow_only",
    "traced",
    "weight_grads",
]
