"""The fused dense-attention op (custom_ops/dense_attention) against its twin, core.attention's chunked path:
outputs and gradients over the bias layouts the families use, dynamic shapes, bad inputs, bfloat16, and which
path a model takes (inference, float32 or bfloat16: the op; training, attention weights, float16: the twin).
Random shapes, NaN / Inf and bad inputs are also fuzzed (tests/ops/fuzz_ops.py)."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import tfmodels
from tests.helpers import padded_ids, traced_forward
from tfmodels.core import attention as attn
from tfmodels.ops import dense_attention, dispatch

RNG = np.random.RandomState(0)


@pytest.fixture(scope="module", autouse=True)
def compiled_op():
    with dispatch.op_mode("custom"):
        assert dispatch.use_custom_op(dense_attention.FAMILY), "the dense_attention op must build here"


def _attention_and_gradients(query, key, value, bias, mode):
    inputs = [tf.constant(x) for x in (query, key, value)] + ([] if bias is None else [tf.constant(bias)])
    with dispatch.op_mode(mode), tf.GradientTape() as tape:
        tape.watch(inputs)
        context = attn.scaled_dot_product_attention(*inputs[:3], inputs[3] if bias is not None else None,
                                                    need_probs=False)[0]
        weights = tf.reshape(tf.sin(tf.range(tf.size(context), dtype=context.dtype)), tf.shape(context))
        loss = tf.reduce_sum(context * weights)
    return [context.numpy()] + [g.numpy() for g in tape.gradient(loss, inputs)]


def _masked(shape, fraction=0.25):
    values = RNG.randn(*shape).astype(np.float32)
    return np.where(RNG.rand(*shape) < fraction, np.finfo(np.float32).min, values).astype(np.float32)


@pytest.mark.parametrize("batch, heads, queries, keys, dim, bias_shape", [
    (2, 4, 37, 53, 64, (2, 1, 1, 53)),        # padding mask, as the text encoders pass it
    (2, 3, 50, 50, 16, (1, 3, 50, 50)),       # a per-head bias over every pair (BEiT's relative positions)
    (2, 2, 19, 130, 80, (2, 1, 19, 130)),     # a 3-D mask; head size 80 (XLM-R-XL's published one)
    (2, 2, 9, 70, 24, None),                  # no mask; head size not a whole number of vectors
    (2, 4, 700, 700, 64, (2, 1, 1, 700)),     # several blocks of query rows per head
])
def test_op_equals_its_twin_with_gradients(batch, heads, queries, keys, dim, bias_shape):
    query, key, value = (RNG.randn(batch, heads, n, dim).astype(np.float32) for n in (queries, keys, keys))
    bias = None if bias_shape is None else _masked(bias_shape)
    fused = _attention_and_gradients(query, key, value, bias, "custom")
    twin = _attention_and_gradients(query, key, value, bias, "reference")
    for name, a, b in zip(["context", "d_query", "d_key", "d_value", "d_bias"], fused, twin):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-5, err_msg=name)


def test_dynamic_shapes_in_a_graph():
    """Lengths unknown until run time (a SavedModel signature, Keras symbolic inputs): the op takes them."""
    spec = tf.TensorSpec([None, 2, None, 32], tf.float32)

    @tf.function(input_signature=[spec, spec, spec, tf.TensorSpec([None, 1, 1, None], tf.float32)])
    def attention(query, key, value, bias):
        return attn.scaled_dot_product_attention(query, key, value, bias, need_probs=False)[0]

    query, key, value = (RNG.randn(2, 2, n, 32).astype(np.float32) for n in (11, 29, 29))
    bias = _masked((2, 1, 1, 29))
    with dispatch.op_mode("custom"):
        fused = attention(query, key, value, bias).numpy()
        graph = attention.get_concrete_function().graph
    assert any(op.type == "TFModels>DenseAttention" for op in graph.get_operations())
    twin = attn.scaled_dot_product_attention(*(tf.constant(x) for x in (query, key, value, bias)), need_probs=True)[0]
    np.testing.assert_allclose(fused, twin.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("defect, message", [
    ("key", "key dimension 3"), ("value", "value dimension 2"), ("bias", "bias dimension 1 must be 1 or 2"),
    ("rank", "query must have rank 4"),
])
def test_bad_inputs_are_clear_errors(defect, message):
    shapes = {"query": (2, 2, 5, 8), "key": (2, 2, 6, 8), "value": (2, 2, 6, 8), "bias": (2, 1, 1, 6)}
    shapes.update({"key": (2, 2, 6, 9)} if defect == "key" else {"value": (2, 2, 7, 8)} if defect == "value"
                  else {"bias": (2, 3, 1, 6)} if defect == "bias" else {"query": (2, 5, 8)} if defect == "rank" else {})
    tensors = {name: tf.zeros(shape) for name, shape in shapes.items()}
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        dispatch.op_module(dense_attention.FAMILY).tf_models_dense_attention(
            tensors["query"], tensors["key"], tensors["value"], tensors["bias"], scale=1.0)


@pytest.mark.parametrize("mode", ["custom", "reference"])
@pytest.mark.parametrize("need_probs", [False, True])
def test_a_mask_that_would_enlarge_the_scores_is_refused_on_every_path(mode, need_probs):
    """TF would broadcast a mask with a bigger batch (or more queries) into a bigger output; the op refuses it,
    and so does every path of core.attention, before either runs."""
    query, key, value = tf.zeros([1, 2, 5, 8]), tf.zeros([1, 2, 6, 8]), tf.zeros([1, 2, 6, 8])
    for mask_shape in ([3, 1, 1, 6], [1, 1, 4, 6], [1, 1, 1, 7], [1, 1, 1, 1, 6]):
        with dispatch.op_mode(mode), pytest.raises(ValueError, match="attention mask"):
            attn.scaled_dot_product_attention(query, key, value, tf.zeros(mask_shape), need_probs=need_probs)


def test_a_mask_constant_over_the_keys_runs_the_twin_on_every_path():
    query, key, value = (tf.constant(RNG.randn(2, 2, 5, 8).astype(np.float32)) for _ in range(3))
    bias = tf.constant(RNG.randn(2, 1, 5, 1).astype(np.float32))
    assert not dense_attention.use_fused_attention(query, bias)
    expected = attn.scaled_dot_product_attention(query, key, value, None, need_probs=True)[0]
    with dispatch.op_mode("custom"):
        got = attn.scaled_dot_product_attention(query, key, value, bias, need_probs=False)[0]
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)  # softmax ignores it


def test_a_model_runs_the_op_in_inference_only():
    """XLM-R-XL (batch 2, padding): inference runs the op and equals the twin's forward; training and returned
    attention weights run the twin."""
    config = tfmodels.XLMRobertaXLConfig.from_json_file("configs/xlm-roberta-xl-tiny.json")
    model = tfmodels.XLMRobertaXLModel(config)
    ids, mask = padded_ids(2, 40, config.vocab_size, config.pad_token_id, lengths=[40, 27])
    inputs = {"input_ids": tf.constant(ids), "attention_mask": tf.constant(mask)}
    with dispatch.op_mode("custom"):
        types, forward = traced_forward(model, inputs, training=False)
        fused = forward().last_hidden_state.numpy()
        assert "TFModels>DenseAttention" in types
        for kwargs in ({"training": True}, {"training": False, "output_attentions": True}):
            assert "TFModels>DenseAttention" not in traced_forward(model, inputs, **kwargs)[0], kwargs
    with dispatch.op_mode("reference"):
        types, forward = traced_forward(model, inputs, training=False)
        assert "TFModels>DenseAttention" not in types
        np.testing.assert_allclose(fused, forward().last_hidden_state.numpy(), rtol=1e-5, atol=1e-5)


def test_float16_and_biases_of_another_rank_use_the_twin():
    assert not dense_attention.use_fused_attention(tf.zeros([1, 2, 3, 8], tf.float16), None)
    assert not dense_attention.use_fused_attention(tf.zeros([1, 2, 3, 8]), tf.zeros([1, 3]))  # not rank 4
    assert dense_attention.use_fused_attention(tf.zeros([1, 2, 3, 8]), None)
    assert dense_attention.use_fused_attention(tf.zeros([1, 2, 3, 8], tf.bfloat16), tf.zeros([1, 1, 1, 3]))


def bfloat16_tolerance(value):
    """(rtol, atol) of the bfloat16 op against the float32 twin on the same (bfloat16) inputs. The op computes in
    float32 and rounds the output once: at most half an ulp, 2^-9 of |output| (bfloat16 keeps 8 significant
    bits). On AMX tiles and AVX512-BF16 vectors it also rounds the unnormalised probabilities to bfloat16 before the
    value product: each term p_j v_j off by at most 2^-9 of itself, so the row by at most 2^-9 sum_j p_j |v_j| <=
    2^-9 max |v| after the normalisation. Float32 rounding (~1e-7 relative) is far below both; each bound is doubled for it. NaN / Inf
    values (the fuzz's) give NaN / Inf outputs, compared as such: the bound takes the finite ones."""
    return 2.0 ** -8, 2.0 ** -8 * float(np.max(np.abs(value), initial=0.0, where=np.isfinite(value)))


BFLOAT16_CASES = [
    (2, 4, 37, 53, 64, (2, 1, 1, 53)),        # padding mask
    (2, 3, 50, 50, 16, (1, 3, 50, 50)),       # a per-head bias over every pair (BEiT)
    (2, 2, 19, 130, 80, (2, 1, 19, 130)),     # a 3-D mask; head size 80 (not a multiple of 32)
    (2, 2, 9, 70, 24, None),                  # no mask; head size 24 (not a multiple of 16)
    (1, 2, 700, 700, 64, (1, 1, 1, 700)),     # several blocks of query rows per head
]


# The cases in a process of their own (another build or kernel; tests/ops/test_amx_emulation.py too).
BFLOAT16_CASES_SCRIPT = ("from tests.ops import test_dense_attention as t\n"
                         "for case in t.BFLOAT16_CASES: t.check_bfloat16(*case)\n")


@pytest.mark.parametrize("batch, heads, queries, keys, dim, bias_shape", BFLOAT16_CASES)
def test_bfloat16_op_equals_the_float32_twin_and_its_gradients_the_twins(batch, heads, queries, keys, dim,
                                                                        bias_shape):
    """bfloat16 runs the op (on AMX tiles where the CPU has them) in inference; its gradient is the bfloat16
    twin's, whichever path ran the forward pass."""
    check_bfloat16(batch, heads, queries, keys, dim, bias_shape)


@pytest.mark.parametrize("setting", [
    {"TFMODELS_DENSE_ATTENTION_BF16": "float32"},      # CPUs without bfloat16 products: inputs converted while packed
    {"TFMODELS_DENSE_ATTENTION_BF16": "avx512_bf16"},  # CPUs with AVX512-BF16 but no AMX (where this one has it)
    {"TFMODELS_OPS_MARCH": "x86-64-v3"},  # the bfloat16 kernels of the portable wheel build (AVX2 vectors elsewhere)
])
def test_bfloat16_in_other_builds_and_paths(setting):
    """The same cases in a fresh process (the op chooses its bfloat16 kernel once per process; a build target is
    per process)."""
    environment = dict(os.environ, **setting, TFMODELS_OP_MODE="custom")
    result = subprocess.run([sys.executable, "-c", BFLOAT16_CASES_SCRIPT], env=environment, capture_output=True,
                            text=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert result.returncode == 0, result.stderr[-4000:]


def test_an_unknown_bfloat16_kernel_setting_is_a_clear_error():
    script = ("import tensorflow as tf\n"
              "from tfmodels.ops import dense_attention\n"
              "x = tf.zeros([1, 1, 4, 8], tf.bfloat16)\n"
              "dense_attention.fused_attention(x, x, x, None, 1.0, twin=None)")
    environment = dict(os.environ, TFMODELS_DENSE_ATTENTION_BF16="tiles", TFMODELS_OP_MODE="custom")
    result = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert result.returncode != 0
    assert "TFMODELS_DENSE_ATTENTION_BF16 must be amx, avx512_bf16 or float32 (or unset), got 'tiles'" in result.stderr


def check_bfloat16(batch, heads, queries, keys, dim, bias_shape):
    query, key, value = (tf.cast(RNG.randn(batch, heads, n, dim).astype(np.float32), tf.bfloat16).numpy()
                         for n in (queries, keys, keys))
    bias = None if bias_shape is None else tf.cast(_masked(bias_shape), tf.bfloat16).numpy()
    fused = _attention_and_gradients(query, key, value, bias, "custom")
    twin = _attention_and_gradients(query, key, value, bias, "reference")
    as_float = [None if x is None else tf.constant(x.astype(np.float32)) for x in (query, key, value, bias)]
    with dispatch.op_mode("reference"):
        expected = attn.scaled_dot_product_attention(*as_float, need_probs=False)[0].numpy()
    rtol, atol = bfloat16_tolerance(value.astype(np.float32))
    np.testing.assert_allclose(fused[0].astype(np.float32), expected, rtol=rtol, atol=atol, err_msg="context")
    for name, a, b in zip(["d_query", "d_key", "d_value", "d_bias"], fused[1:], twin[1:]):
        np.testing.assert_array_equal(a, b, err_msg=name)
