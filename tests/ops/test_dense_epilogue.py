"""The dense-epilogue op (custom_ops/dense_epilogue) against its twin (float32 TF ops), and the matmul form of
core.layers.apply_dense that runs it (TFMODELS_BF16_PRODUCT=matmul): outputs (bit-equal without an activation;
with exact GELU, one bfloat16 rounding step apart), the GELU's accuracy against float64, NaN / Inf, gradients,
bad inputs, dynamic shapes, which path apply_dense takes, and a model in that form against the same model in the
inner-product form. Random shapes, NaN / Inf and bad inputs are also fuzzed (tests/ops/fuzz_ops.py)."""
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


def _bf16(*shape, scale=1.0):
    return tf.cast(RNG.randn(*shape) * scale, tf.bfloat16)


def _f32(t):
    return tf.cast(t, tf.float32).numpy()


def assert_within_a_rounding(got, expected):
    """The same float32 arithmetic, GELU's erfc from another approximation (relative error ~1e-7): equal, or one
    bfloat16 rounding step apart (relative; 1e-30 absolute, where the tail leaves float32's normal range), with the
    same NaN / Inf pattern."""
    within_a_layer_norm_rounding(got, expected, floor=1e-30)


def _both(x, bias, residual, activation):
    with dispatch.op_mode("custom"):
        got = dense_epilogue.dense_epilogue(x, bias, residual, activation)
    return got, dense_epilogue.epilogue_twin(x, bias, residual, activation)


@pytest.mark.parametrize("activation", ["linear", "gelu"])
@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("shape", [(2, 7, 2560), (3, 300), (5, 1), (0, 16), (4, 257), (17,)])
def test_op_equals_twin(shape, activation, with_residual):
    x, bias = _bf16(*shape, scale=3.0), _bf16(shape[-1])
    residual = _bf16(*shape) if with_residual else None
    got, expected = _both(x, bias, residual, activation)
    assert got.dtype == tf.bfloat16 and got.shape == shape
    if activation == "linear":  # one float32 sum (two), rounded once: the same bits
        np.testing.assert_array_equal(_f32(got), _f32(expected))
    else:
        assert_within_a_rounding(got, expected)
        if got.shape.num_elements() > 1000:
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


def test_nonfinite_values_give_the_twins_pattern():
    values = RNG.randn(4, 40).astype(np.float32) * 3
    values[0, 3], values[1, 0], values[2, 39], values[3, 7] = np.nan, np.inf, -np.inf, -1e30
    for activation in ("linear", "gelu"):
        for residual in (None, _bf16(4, 40)):
            got, expected = _both(tf.cast(values, tf.bfloat16), _bf16(40), residual, activation)
            assert_within_a_rounding(got, expected)


def test_gradients_are_the_twins():
    x, bias, residual = _bf16(6, 48, scale=2.0), _bf16(48), _bf16(6, 48)
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
