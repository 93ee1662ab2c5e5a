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


@pytest.mark.parametrize("scale", [None, 0.3, "vector"])
@pytest.mark.parametrize("shape", [(6, 8), (2, 5, 8)])
def test_scale_and_residual_outputs_and_gradients(shape, scale):
    """residual + scale * layer(x): the scale folded into kernel and bias, the residual added in the fused op."""
    rng = np.random.RandomState(1)
    dense = layers.dense(8, 0.5)
    x = tf.constant(rng.randn(*shape).astype(np.float32))
    residual = tf.constant(rng.randn(*shape).astype(np.float32))
    if scale == "vector":  # a layer scale per unit, as BEiT's lambda_1
        scale = tf.Variable(rng.rand(8).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, residual])
        projected = dense(x)
        expected = residual + (projected if scale is None else projected * scale)
        got = layers.apply_dense(dense, x, scale=scale, residual=residual)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-6)
    sources = [x, residual] + dense.trainable_variables + ([scale] if isinstance(scale, tf.Variable) else [])
    for a, b in zip(tape.gradient(got, sources), tape.gradient(expected, sources)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
    graph = tf.function(lambda t, r: layers.apply_dense(dense, t, scale=scale, residual=r))
    np.testing.assert_allclose(graph(x, residual).numpy(), expected.numpy(), atol=1e-6)


def test_residual_in_bfloat16_eager_matches_float32_within_bfloat16_rounding():
    """Half precision in eager mode runs the graph function (MatMul + BiasAdd + Add, fused by oneDNN): the result
    is the float32 computation on the same bfloat16 operands, within bfloat16 rounding. oneDNN may round the
    product to bfloat16 before adding the residual (its bfloat16 post-op sum on an AMD EPYC without AMX), so the
    bound is a rounding of each term as well as of the sum: where they cancel, that is more than 2^-8 of it."""
    rng = np.random.RandomState(2)
    dense = layers.dense(64, 0.5)
    x = tf.cast(rng.randn(4, 32), tf.bfloat16)
    residual = tf.cast(rng.randn(4, 64), tf.bfloat16)
    dense.build(x.shape)
    got = layers.apply_dense(dense, x, residual=residual)
    assert got.dtype == tf.bfloat16

    def rounded(t):
        return tf.cast(tf.cast(t, tf.bfloat16), tf.float32)
    product = tf.matmul(tf.cast(x, tf.float32), rounded(dense.kernel)) + rounded(dense.bias)
    wide = tf.cast(residual, tf.float32) + product
    terms = np.abs(residual.numpy().astype(np.float32)) + np.abs(product.numpy()) + np.abs(wide.numpy())
    error = np.abs(tf.cast(got, tf.float32).numpy() - wide.numpy())
    assert (error <= 2 ** -8 * terms + 1e-6).all(), (error / terms).max()


def test_the_shared_bfloat16_graph_function_serves_every_rank_and_shape():
    """One graph function serves every eager half-precision apply_dense (the flattening to 2-D inside it): its
    signature relaxes over calls with other shapes and ranks, down to an unknown rank, and every call still
    gets its own numbers and shape."""
    rng = np.random.RandomState(3)
    for units, shape in ((16, (2, 4, 8)), (12, (3, 8)), (16, (2, 3, 4, 35)), (7, (5,)), (7, (2, 5)), (9, (1, 2, 3))):
        dense = keras.layers.Dense(units, dtype="bfloat16")
        x = tf.cast(rng.randn(*shape), tf.bfloat16)
        residual = tf.cast(rng.randn(*shape[:-1], units), tf.bfloat16)
        got = layers.apply_dense(dense, x, residual=residual)
        assert got.shape == shape[:-1] + (units,)
        flat = tf.cast(tf.reshape(x, [-1, shape[-1]]), tf.float32)
        expected = tf.matmul(flat, tf.cast(dense.kernel, tf.float32)) + tf.reshape(tf.cast(residual, tf.float32),
                                                                                    [-1, units])
        np.testing.assert_allclose(tf.cast(got, tf.float32).numpy().reshape(-1, units), expected.numpy(),
                                   rtol=2 ** -6, atol=2 ** -6 * float(np.abs(expected).max()))


def test_scale_with_an_activation_is_refused():
    dense = layers.dense(4, 0.5)
    with pytest.raises(ValueError, match="scale"):
        layers.apply_dense(dense, tf.ones([2, 3]), gelu, scale=0.5)


def test_quantized_layer_takes_scale_and_residual_after_the_call():
    dense = layers.dense(6, 0.5)
    x, residual = tf.random.normal([2, 3, 4]), tf.random.normal([2, 3, 6])
    dense.build(x.shape)
    dense.quantize("int8")
    np.testing.assert_allclose(layers.apply_dense(dense, x, scale=0.5, residual=residual).numpy(),
                               (residual + 0.5 * dense(x)).numpy(), atol=1e-6)


def test_dense_dropout_residual_fuses_only_where_dropout_is_the_identity():
    dense, x, residual = layers.dense(6, 0.5), tf.random.normal([2, 3, 4]), tf.random.normal([2, 3, 6])
    expected = residual + dense(x)
    for rate, training in ((0.5, False), (0.0, True)):
        got = layers.apply_dense_dropout_residual(dense, layers.dropout(rate), x, residual, training)
        np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-6)
    dropped = layers.apply_dense_dropout_residual(dense, layers.dropout(0.5), x, residual, training=True)
    kept = (dropped - residual).numpy()
    # kept units scaled by 1 / (1 - rate); atol for the rounding of subtracting the residual back out
    np.testing.assert_allclose(kept[kept != 0], 2 * (expected - residual).numpy()[kept != 0], rtol=1e-5, atol=1e-6)
    assert (kept == 0).any()
