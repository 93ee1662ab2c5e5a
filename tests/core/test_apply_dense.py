"""core.layers.apply_dense: the numbers and gradients of calling the Dense layer, for any input rank, with
mixed precision and symbolic shapes, and quantized layers (the speed-up it exists for is measured by
benchmarks/bench_longformer.py, not here)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmodels.core import layers
from tfmodels.core.activations import gelu


@pytest.mark.parametrize("shape", [(6, 8), (2, 5, 8), (2, 3, 4, 8)])
def test_same_outputs_and_gradients_as_calling_the_layer(shape):
    dense = layers.dense(7, 0.5)
    x = tf.constant(np.random.RandomState(0).randn(*shape).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        expected = gelu(dense(x))
        got = layers.apply_dense(dense, x, gelu)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-6)
    for a, b in zip(tape.gradient(got, [x] + dense.trainable_variables),
                    tape.gradient(expected, [x] + dense.trainable_variables)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)


def test_builds_the_layer_mixed_precision_and_symbolic_shapes():
    with layers.dtype_policy_scope("mixed_bfloat16"):
        dense = keras.layers.Dense(4, activation="tanh")
    x = tf.random.normal([3, 5, 6])
    out = layers.apply_dense(dense, tf.cast(x, tf.bfloat16))
    assert dense.built and dense.kernel.dtype == "float32" and out.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(out, tf.float32).numpy(), dense(x).numpy(), atol=2e-2)
    fn = tf.function(lambda t: layers.apply_dense(dense, t)).get_concrete_function(
        tf.TensorSpec([None, None, 6], tf.bfloat16))
    assert fn.output_shapes.as_list() == [None, None, 4]


def test_quantized_layer_is_called_as_usual():
    dense = layers.dense(6, 0.5)
    x = tf.random.normal([2, 3, 4])
    dense.build(x.shape)
    dense.quantize("int8")
    np.testing.assert_allclose(layers.apply_dense(dense, x, gelu).numpy(), gelu(dense(x)).numpy(), atol=1e-6)
