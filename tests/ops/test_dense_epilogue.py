"""The dense-epilogue op (custom_ops/dense_epilogue) against its twin (float32 TF ops), in bfloat16 and float32;
the matmul form of core.layers.apply_dense that runs it in bfloat16 (TFMODELS_BF16_PRODUCT=matmul); and
core.layers.apply_dense_exact_gelu, which runs it in float32. Outputs (bit-equal without an activation; with exact
GELU, one rounding step apart), the GELU's accuracy against float64, NaN / Inf, gradients, bad inputs, dynamic
shapes, which path each function takes, eager and graph calls to the bit, and a model in the matmul form against the
same model in the inner-product form. Random shapes, NaN / Inf and bad inputs are also fuzzed
(tests/ops/fuzz_ops.py)."""
import math

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import graph_op_types
from tests.ops.test_layer_norm import assert_within_a_rounding as within_a_layer_norm_rounding
from tfmodels.core import activations, layers
from tfmodels.ops import dense_epilogue, dispatch

RNG = np.random.RandomState(0)


@pytest.fixture(scope="module", autouse=True)
def compiled_op():
    with dispatch.op_mode("custom"):
        assert dispatch.use_custom_op(dense_epilogue.FAMILY), "the dense_epilogue op must build here"


def _values(dtype, *shape, scale=1.0):
    return tf.cast(RNG.randn(*shape) * scale, dtype)


def _bf16(*shape, scale=1.0):
    return _values(tf.bfloat16, *shape, scale=scale)


def _f32(t):
    return tf.cast(t, tf.float32).numpy()


def assert_within_a_rounding(got, expected, residual=None):
    """The same float32 arithmetic, GELU's erfc from another approximation: equal, or one rounding step of the
    dtype apart (relative), with the same NaN / Inf pattern. Absolute slack: in bfloat16 1e-30, where the tail leaves
    float32's normal range; in float32 1e-9, where GELU's negative tail is below 1e-9 and both erfc approximations
    are off by more than a step (relative error ~|z|^2 float32 steps, from the rounding of the exponent -z^2). With a
    `residual`, the step is relative to the terms summed (which may cancel)."""
    terms = None if residual is None else np.abs(_f32(expected)) + 2 * np.abs(_f32(residual))
    within_a_layer_norm_rounding(got, expected, terms, floor=1e-30 if got.dtype == tf.bfloat16 else 1e-9)


def _both(x, bias, residual, activation):
    with dispatch.op_mode("custom"):
        got = dense_epilogue.dense_epilogue(x, bias, residual, activation)
    return got, dense_epilogue.epilogue_twin(x, bias, residual, activation)


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float32])
@pytest.mark.parametrize("activation", ["linear", "gelu"])
@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("shape", [(2, 7, 2560), (3, 300), (5, 1), (0, 16), (4, 257), (17,)])
def test_op_equals_twin(shape, activation, with_residual, dtype):
    x, bias = _values(dtype, *shape, scale=3.0), _values(dtype, shape[-1])
    residual = _values(dtype, *shape) if with_residual else None
    got, expected = _both(x, bias, residual, activation)
    assert got.dtype == dtype and got.shape == shape
    if activation == "linear":  # one float32 sum (two), rounded once: the same bits
        np.testing.assert_array_equal(_f32(got), _f32(expected))
    else:
        assert_within_a_rounding(got, expected, residual)
        if got.shape.num_elements() > 1000 and dtype == tf.bfloat16:  # most round to the same bfloat16
            assert np.mean(_f32(got) == _f32(expected)) > 0.9


def test_gelu_against_float64():
    """Every bfloat16 input from -12 to 12: the op's GELU is the float64 truth rounded to bfloat16, or one step
    from it (where the truth is within ~1e-7 of a rounding boundary), the negative tail included."""
    values = np.unique(_f32(tf.cast(np.linspace(-12, 12, 200001), tf.bfloat16)))
    with dispatch.op_mode("custom"):
        got = _f32(dense_epilogue.dense_epilogue(tf.cast(values[None], tf.bfloat16), tf.zeros([values.size]),
                                                 None, "gelu"))[0]
    truth = np.array([0.5 * v * math.erfc(-v / math.sqrt(2)) for v in values.astype(np.float64)])
    rounded_truth = _f32(tf.cast(truth, tf.bfloat16))
    step = 2.0 ** (np.floor(np.log2(np.maximum(np.abs(truth), 1e-38))) - 7)  # one bfloat16 step at the truth
    assert (np.abs(got - rounded_truth) <= step).all()
    assert np.mean(got == rounded_truth) > 0.999


def test_float32_gelu_against_float64():
    """float32 inputs from -14 to 10: the op's GELU is as close to the float64 truth as TF's own tf.nn.gelu: within
    2e-6 (relative) where |GELU| >= 1e-3, and 3e-5 in the negative tail down to 1e-37 (TF's: 1.1e-6 and 1.5e-5).
    The tail's error grows with z^2: the rounding of the exponent -z^2 in float32."""
    values = np.linspace(-14, 10, 240001).astype(np.float32)
    with dispatch.op_mode("custom"):
        got = dense_epilogue.dense_epilogue(tf.constant(values[None]), tf.zeros([values.size]), None, "gelu")
    got = got.numpy()[0].astype(np.float64)
    truth = np.array([0.5 * v * math.erfc(-v / math.sqrt(2)) for v in values.astype(np.float64)])
    relative = np.abs(got - truth) / np.maximum(np.abs(truth), 1e-300)
    assert relative[np.abs(truth) >= 1e-3].max() < 2e-6
    assert relative[np.abs(truth) >= 1e-37].max() < 3e-5
    assert np.abs(got - truth).max() < 1e-6


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float32])
def test_nonfinite_values_give_the_twins_pattern(dtype):
    values = RNG.randn(4, 40).astype(np.float32) * 3
    values[0, 3], values[1, 0], values[2, 39], values[3, 7] = np.nan, np.inf, -np.inf, -1e30
    for activation in ("linear", "gelu"):
        for residual in (None, _values(dtype, 4, 40)):
            got, expected = _both(tf.cast(values, dtype), _values(dtype, 40), residual, activation)
            assert_within_a_rounding(got, expected, residual)


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float32])
def test_gradients_are_the_twins(dtype):
    x, bias, residual = _values(dtype, 6, 48, scale=2.0), _values(dtype, 48), _values(dtype, 6, 48)
    weights = tf.cast(RNG.randn(6, 48), tf.float32)
    gradients = {}
    for name, run in (("op", dense_epilogue.dense_epilogue), ("twin", dense_epilogue.epilogue_twin)):
        with tf.GradientTape() as tape:
            tape.watch([x, bias, residual])
            with dispatch.op_mode("custom"):
                loss = tf.reduce_sum(tf.cast(run(x, bias, residual, "gelu"), tf.float32) * weights)
        gradients[name] = tape.gradient(loss, [x, bias, residual])
    for got, expected in zip(gradients["op"], gradients["twin"]):
        np.testing.assert_array_equal(_f32(got), _f32(expected))


def test_bad_inputs_raise():
    module = dispatch.op_module(dense_epilogue.FAMILY)
    x = _bf16(2, 8)
    with pytest.raises(tf.errors.InvalidArgumentError, match="bias"):
        module.tf_models_dense_epilogue(x, _bf16(7), [], activation="linear")
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="residual|shape"):
        module.tf_models_dense_epilogue(x, _bf16(8), [_bf16(2, 7)], activation="gelu")
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="residual"):
        module.tf_models_dense_epilogue(x, _bf16(8), [x, x], activation="gelu")
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="rank"):
        module.tf_models_dense_epilogue(tf.constant(1.0, tf.bfloat16), _bf16(1), [], activation="linear")
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError, TypeError)):
        module.tf_models_dense_epilogue(x, _bf16(8), [], activation="relu")
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError, TypeError)):  # x and bias of two dtypes
        module.tf_models_dense_epilogue(x, tf.zeros([8]), [], activation="linear")
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError, TypeError, tf.errors.NotFoundError)):
        module.tf_models_dense_epilogue(tf.zeros([2, 8], tf.float16), tf.zeros([8], tf.float16), [],
                                        activation="linear")
    with pytest.raises(ValueError, match="one of"):
        dense_epilogue.dense_epilogue(x, _bf16(8), None, "relu")


def test_dynamic_shapes_in_a_graph():
    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.bfloat16), tf.TensorSpec([None], tf.bfloat16),
                                  tf.TensorSpec([None, None], tf.bfloat16)])
    def epilogue(x, bias, residual):
        return dense_epilogue.dense_epilogue(x, bias, residual, "gelu")
    x, bias, residual = _bf16(5, 33), _bf16(33), _bf16(5, 33)
    with dispatch.op_mode("custom"):
        got = epilogue(x, bias, residual)
        assert "TFModels>DenseEpilogue" in graph_op_types(epilogue)
    assert_within_a_rounding(got, dense_epilogue.epilogue_twin(x, bias, residual, "gelu"))


# ---------------------------------------------------------------------------------------------------------------
# core.layers.apply_dense in the matmul form


def _dense(units, dtype="bfloat16", **kwargs):
    layer = layers.dense(units, 0.5, dtype=dtype, **kwargs)
    layer.build((None, 24))
    if layer.use_bias:
        layer.bias.assign(tf.cast(RNG.randn(units), layer.bias.dtype))
    return layer


@pytest.mark.parametrize("case", ["linear", "gelu", "residual", "layer scale", "no bias", "mixed_bfloat16"])
def test_apply_dense_matmul_form_equals_the_inner_product_form(case, monkeypatch):
    dtype = "mixed_bfloat16" if case == "mixed_bfloat16" else "bfloat16"
    layer = _dense(16, dtype, use_bias=case != "no bias")
    inputs = _bf16(3, 5, 24)
    kwargs = {"activation": activations.gelu} if case == "gelu" else {}
    if case == "residual":
        kwargs["residual"] = _bf16(3, 5, 16)
    if case == "layer scale":
        kwargs.update(scale=tf.cast(RNG.rand(16), tf.bfloat16), residual=_bf16(3, 5, 16))
    monkeypatch.setenv("TFMODELS_BF16_PRODUCT", "inner_product")
    expected = layers.apply_dense(layer, inputs, **kwargs)
    assert "TFModels>DenseEpilogue" not in graph_op_types(lambda x: layers.apply_dense(layer, x, **kwargs), inputs)
    monkeypatch.setenv("TFMODELS_BF16_PRODUCT", "matmul")
    with dispatch.op_mode("custom"):
        got = layers.apply_dense(layer, inputs, **kwargs)
        types = graph_op_types(lambda x: layers.apply_dense(layer, x, **kwargs), inputs)
    assert {"MatMul", "TFModels>DenseEpilogue"} <= types and "BiasAdd" not in types
    assert got.dtype == tf.bfloat16 and got.shape == expected.shape
    # The matmul form rounds the product to bfloat16 before the bias: one more rounding step than the fused kernel,
    # relative to the terms summed (which may cancel).
    product = _f32(inputs) @ _f32(layer.kernel) * (_f32(kwargs["scale"]) if "scale" in kwargs else 1.0)
    terms = np.abs(product) + np.abs(_f32(expected)) + (np.abs(_f32(kwargs["residual"])) if "residual" in kwargs
                                                         else 0.0)
    tolerance = 2 ** -7 * terms + 1e-6
    assert (np.abs(_f32(got) - _f32(expected)) <= tolerance).all()


@pytest.mark.parametrize("case", ["float32", "float16", "gelu_tanh", "reference mode"])
def test_apply_dense_keeps_the_fused_form(case, monkeypatch):
    """What the epilogue does not cover takes MatMul + BiasAdd (+ activation) as before: other dtypes, other
    activations, and the twins-only op mode (SavedModel export)."""
    monkeypatch.setenv("TFMODELS_BF16_PRODUCT", "matmul")
    dtype = case if case in ("float32", "float16") else "bfloat16"
    layer = _dense(16, dtype)
    activation = activations.gelu_tanh if case == "gelu_tanh" else None
    inputs = tf.cast(RNG.randn(3, 24), layer.compute_dtype)
    with dispatch.op_mode("reference" if case == "reference mode" else "custom"):
        types = graph_op_types(lambda x: layers.apply_dense(layer, x, activation), inputs)
    assert "TFModels>DenseEpilogue" not in types and "BiasAdd" in types


def test_unknown_product_form_raises(monkeypatch):
    monkeypatch.setenv("TFMODELS_BF16_PRODUCT", "brgemm")
    with pytest.raises(ValueError, match="TFMODELS_BF16_PRODUCT must be one of"):
        layers.apply_dense(_dense(4), _bf16(2, 24))


def test_a_model_in_the_matmul_form(monkeypatch):
    """XLM-R-XL in bfloat16, eagerly (twice: the second call runs its layers through the shared graph) and in a
    graph: the matmul form runs the op, and stays within bfloat16 rounding of the inner-product form. (The form is
    read when a function is traced: set TFMODELS_BF16_PRODUCT before the first call.)"""
    import tfmodels
    config = tfmodels.XLMRobertaXLConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                         intermediate_size=64, max_position_embeddings=40)
    ids = tf.constant(RNG.randint(3, 99, (2, 9)), tf.int32)
    mask = tf.constant([[1] * 9, [1] * 6 + [0] * 3], tf.int32)
    monkeypatch.setenv("TFMODELS_BF16_PRODUCT", "matmul")
    model = tfmodels.XLMRobertaXLModel(config, dtype="bfloat16")
    calls = []
    original = dense_epilogue.dense_epilogue
    monkeypatch.setattr(dense_epilogue, "dense_epilogue", lambda *a: calls.append(1) or original(*a))
    with dispatch.op_mode("custom"):
        results = [_f32(model(input_ids=ids, attention_mask=mask).last_hidden_state) for _ in range(2)]
        assert len(calls) >= 6  # q, k, v, attention output, intermediate, output: of each layer, or once shared
        calls.clear()
        results.append(_f32(tf.function(model)(input_ids=ids, attention_mask=mask).last_hidden_state))
        assert len(calls) == 2 * 6
    monkeypatch.setenv("TFMODELS_BF16_PRODUCT", "inner_product")
    expected = _f32(tf.function(model)(input_ids=ids, attention_mask=mask).last_hidden_state)
    valid = _f32(mask).astype(bool)
    for got in results:
        difference = np.abs(got - expected)[valid]
        assert 0 < difference.mean() < 0.02 * np.abs(expected[valid]).mean(), difference.mean()


# ---------------------------------------------------------------------------------------------------------------
# core.layers.apply_dense_exact_gelu: the op in float32


def test_exact_gelu_is_tf_gelu_bit_for_bit():
    """apply_dense_exact_gelu's fallback GELU (one element-wise pass fewer) computes tf.nn.gelu's numbers exactly."""
    x = RNG.standard_normal(100000).astype(np.float32) * np.float32(4.0)
    x = np.concatenate([x, [0.0, -0.0, 1e-30, -1e-30, 30.0, -30.0, 1e30, -1e30]]).astype(np.float32)
    for dtype in (tf.float32, tf.bfloat16, tf.float16):
        values = tf.cast(x, dtype)
        expected = tf.cast(tf.nn.gelu(values, approximate=False), tf.float32).numpy()
        np.testing.assert_array_equal(_f32(layers.exact_gelu(values)), expected)


def _exact_gelu_paths(layer, inputs, mode):
    """(eager result, graph result, the graph's op types) of apply_dense_exact_gelu in op mode `mode`."""
    with dispatch.op_mode(mode):
        eager = layers.apply_dense_exact_gelu(layer, inputs)
        graph = tf.function(lambda x: layers.apply_dense_exact_gelu(layer, x))(inputs)
        types = graph_op_types(lambda x: layers.apply_dense_exact_gelu(layer, x), inputs)
    return eager, graph, types


@pytest.mark.parametrize("use_bias", [True, False])
def test_apply_dense_exact_gelu_runs_the_op_in_float32(use_bias):
    """A MatMul and the op, the same bits eagerly and in a graph, and within a float32 rounding step of TF's ops
    (MatMul + BiasAdd, then its GELU), which the twins-only op mode (SavedModel export) runs."""
    layer = _dense(40, "float32", use_bias=use_bias)
    inputs = _values(tf.float32, 3, 7, 24, scale=2.0)
    eager, graph, types = _exact_gelu_paths(layer, inputs, "custom")
    assert {"MatMul", "TFModels>DenseEpilogue"} <= types and not {"BiasAdd", "Erfc"} & types
    assert eager.dtype == tf.float32 and eager.shape == (3, 7, 40)
    np.testing.assert_array_equal(eager.numpy(), graph.numpy())
    expected_eager, expected_graph, reference_types = _exact_gelu_paths(layer, inputs, "reference")
    assert "Erfc" in reference_types and "TFModels>DenseEpilogue" not in reference_types
    assert_within_a_rounding(eager, expected_eager)
    assert_within_a_rounding(graph, expected_graph)
    product = inputs.numpy() @ layer.kernel.numpy() + (layer.bias.numpy() if use_bias else 0.0)
    truth = 0.5 * product * np.vectorize(math.erfc)(-product / math.sqrt(2))
    np.testing.assert_allclose(eager.numpy(), truth, rtol=1e-5, atol=1e-5)


def test_apply_dense_exact_gelu_gradients_are_tfs():
    layer = _dense(16, "float32")
    inputs = _values(tf.float32, 4, 24)
    gradients = {}
    for mode in ("custom", "reference"):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            with dispatch.op_mode(mode):
                loss = tf.reduce_sum(layers.apply_dense_exact_gelu(layer, inputs) * tf.range(16, dtype=tf.float32))
        gradients[mode] = tape.gradient(loss, [inputs, layer.kernel, layer.bias])
    for got, expected in zip(gradients["custom"], gradients["reference"]):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
        assert np.abs(got.numpy()).max() > 0.1


@pytest.mark.parametrize("dtype", ["bfloat16", "mixed_bfloat16", "float16"])
def test_apply_dense_exact_gelu_other_dtypes_keep_tfs_gelu(dtype):
    """Other dtypes: apply_dense (bfloat16 in its product form, the inner product by default) and TF's GELU, the
    same ops eagerly and in a graph. (Whether TF's own eager and graph float16 ops agree to the bit is TF's: they
    differ by a float16 step on some subnormal outputs.)"""
    layer = _dense(16, dtype)
    inputs = tf.cast(RNG.randn(3, 24), layer.compute_dtype)
    eager, graph, types = _exact_gelu_paths(layer, inputs, "custom")
    assert "TFModels>DenseEpilogue" not in types and "Erfc" in types

    def reference(x):
        return layers.exact_gelu(layers.apply_dense(layer, x))
    np.testing.assert_array_equal(_f32(eager), _f32(reference(inputs)))
    np.testing.assert_array_equal(_f32(graph), _f32(tf.function(reference)(inputs)))
