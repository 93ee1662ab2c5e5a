"""The fused relative-position attention op (custom_ops/dense_attention/relative_attention_ops.cc): against its
definition in float64, against its twin (XLNet's position term + core attention) with gradients, through the
XLNet model (inference runs it; training, attention weights, "uni" attention and bfloat16 do not), dynamic shapes
and bad inputs. Random shapes, NaN / Inf and bad inputs are also fuzzed (tests/ops/fuzz_ops.py)."""
import numpy as np
import pytest
import tensorflow as tf

import tfmodels
from tests.helpers import padded_ids, traced_forward
from tests.models.xlnet.test_modeling import tiny_config
from tfmodels.models.xlnet.modeling import XLNetRelativeAttention
from tfmodels.ops import dense_attention, dispatch

RNG = np.random.RandomState(0)
OP = "TFModels>RelativeAttention"


@pytest.fixture(scope="module", autouse=True)
def compiled_op():
    with dispatch.op_mode("custom"):
        assert dispatch.use_custom_op(dense_attention.FAMILY), "the dense_attention ops must build here"


def definition(query, key, value, position_query, position_key, bias, scale):
    """The op's formula in float64: score[i, j] = scale q_i . k_j + pq_i . pk_{j + Q - i} + bias[i, j]."""
    batch, heads, queries, _ = query.shape
    keys = key.shape[2]
    scores = np.einsum("bhqd,bhkd->bhqk", query.astype(np.float64) * scale, key)
    every = np.einsum("bhqd,bhrd->bhqr", position_query.astype(np.float64),
                      np.broadcast_to(position_key, (batch,) + position_key.shape[1:]))
    shifted = np.arange(keys)[None, :] + queries - np.arange(queries)[:, None]
    scores = scores + np.take_along_axis(every, np.broadcast_to(shifted, scores.shape), axis=3) + bias
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    return (probs / probs.sum(-1, keepdims=True)) @ value


def _inputs(batch, heads, queries, keys, dim, value_dim, positions, position_batch, bias_shape):
    query, position_query = (0.5 * RNG.randn(batch, heads, queries, dim).astype(np.float32) for _ in range(2))
    key = 0.5 * RNG.randn(batch, heads, keys, dim).astype(np.float32)
    value = RNG.randn(batch, heads, keys, value_dim).astype(np.float32)
    position_key = 0.5 * RNG.randn(position_batch, heads, positions, dim).astype(np.float32)
    bias = np.where(RNG.rand(*bias_shape) < 0.25, -1e30, RNG.randn(*bias_shape)).astype(np.float32)
    return query, key, value, position_query, position_key, bias


CASES = [  # batch, heads, queries, keys, dim, value_dim, positions, position batch, bias shape
    (2, 4, 37, 53, 16, 16, 90, 1, (2, 1, 1, 53)),        # a padding mask; keys > queries (XLNet's memory)
    (2, 2, 130, 130, 64, 64, 260, 2, (2, 1, 130, 130)),  # several blocks of rows; per-example positions (bi_data)
    (1, 4, 512, 512, 64, 64, 1024, 1, (1, 1, 512, 512)),  # the benchmark's shape
    (2, 2, 7, 20, 8, 5, 40, 2, (1, 2, 7, 20)),           # more positions than needed; odd value size
    (2, 3, 100, 150, 24, 24, 250, 1, (2, 3, 100, 150)),  # a bias per head (XLNet's segment term)
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_op_equals_its_definition(case):
    inputs = _inputs(*case)
    fused = dispatch.op_module(dense_attention.FAMILY).tf_models_relative_attention(*inputs, scale=0.125)
    np.testing.assert_allclose(fused.numpy(), definition(*inputs, 0.125), rtol=1e-5, atol=2e-5)


def _layer(**overrides):
    config = tiny_config(**overrides)
    layer = XLNetRelativeAttention(config)
    layer.build()
    return layer


def _core_and_gradients(layer, tensors, segments, mask, mode):
    """rel_attn_core's context and its gradients with respect to its tensor inputs, in one op mode."""
    seg_diff = None if segments is None else tf.constant(segments)
    with dispatch.op_mode(mode), tf.GradientTape() as tape:
        tape.watch(tensors)
        context, probs = layer.rel_attn_core(*tensors, seg_diff, tf.constant(mask), None, False, need_probs=False)
        weights = tf.sin(tf.reshape(tf.range(tf.size(context), dtype=tf.float32), tf.shape(context)))
        loss = tf.reduce_sum(context * weights)
    assert probs is None
    return [context.numpy()] + [g.numpy() for g in tape.gradient(loss, tensors)]


@pytest.mark.parametrize("segments", [False, True])
@pytest.mark.parametrize("position_batch", [1, 3])
def test_the_xlnet_core_equals_its_twin_with_gradients(segments, position_batch):
    """XLNet's attention core (content, position and segment terms, padding mask; memory: keys > queries) runs the
    op in inference, and its outputs and gradients equal the twin's."""
    layer = _layer()
    batch, heads, queries, keys, dim = 3, layer.n_head, 70, 90, layer.d_head
    tensors = [tf.constant(0.5 * RNG.randn(*shape).astype(np.float32)) for shape in (
        (batch, heads, queries, dim), (batch, heads, keys, dim), (batch, heads, keys, dim),
        (position_batch, heads, keys + queries, dim))]
    seg_diff = RNG.rand(batch, queries, keys) < 0.5 if segments else None
    mask = np.where(RNG.rand(batch, 1, queries, keys) < 0.2, -1e30, 0.0).astype(np.float32)
    fused = _core_and_gradients(layer, tensors, seg_diff, mask, "custom")
    twin = _core_and_gradients(layer, tensors, seg_diff, mask, "reference")
    for name, a, b in zip(["context", "d_query", "d_key", "d_value", "d_position_key"], fused, twin):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-5, err_msg=name)


def _model_inputs(config, length=40, batch=2, token_types=True):
    ids, mask = padded_ids(batch, length, config.vocab_size, config.pad_token_id, lengths=[length, 27], side="left")
    inputs = {"input_ids": tf.constant(ids), "attention_mask": tf.constant(mask)}
    if token_types:
        inputs["token_type_ids"] = tf.constant((np.arange(length) >= length // 2).astype(np.int32)[None]
                                               .repeat(batch, 0))
    return inputs


def test_the_model_runs_the_op_in_float32_inference_only():
    """XLNet (batch 2, left padding, two segments, with and without memory): float32 inference runs the op and
    equals the twin's forward; training, attention weights and bfloat16 do not run it."""
    config = tiny_config(dropout=0.0)
    model = tfmodels.XLNetModel(config)
    inputs = _model_inputs(config)
    with dispatch.op_mode("custom"):
        types, forward = traced_forward(model, inputs, training=False)
        assert OP in types
        fused = forward()
        for kwargs in ({"training": True}, {"training": False, "output_attentions": True}):
            assert OP not in traced_forward(model, inputs, **kwargs)[0], kwargs
        follow = model(**inputs, mems=fused.mems, training=False).last_hidden_state.numpy()
    with dispatch.op_mode("reference"):
        types, forward = traced_forward(model, inputs, training=False)
        assert OP not in types
        twin = forward()
        np.testing.assert_allclose(fused.last_hidden_state.numpy(), twin.last_hidden_state.numpy(), rtol=1e-5,
                                   atol=1e-5)
        expected = model(**inputs, mems=twin.mems, training=False).last_hidden_state.numpy()
    np.testing.assert_allclose(follow, expected, rtol=1e-5, atol=1e-5)
    query = tf.zeros([1, 2, 3, 8])
    assert dense_attention.use_relative_attention(query, None)
    assert not dense_attention.use_relative_attention(tf.cast(query, tf.bfloat16), None)  # the dense op's
    assert not dense_attention.use_relative_attention(tf.cast(query, tf.float16), None)


def test_uni_attention_and_the_query_stream_keep_their_paths():
    """"uni" attention has rlen = klen + 1 (its shift wraps into masked scores): it keeps the twin. The two-stream
    query stream (perm_mask, target_mapping) runs the op, and equals the twin."""
    uni = tfmodels.XLNetModel(tiny_config(attn_type="uni", dropout=0.0))
    with dispatch.op_mode("custom"):
        assert OP not in traced_forward(uni, _model_inputs(uni.config), training=False)[0]
    config = tiny_config(dropout=0.0)
    model = tfmodels.XLNetLMHeadModel(config)
    inputs = _model_inputs(config, length=12, token_types=False)
    perm = np.zeros((2, 12, 12), np.float32)
    perm[:, :, -3:] = 1.0
    target = np.zeros((2, 3, 12), np.float32)
    target[:, np.arange(3), np.arange(9, 12)] = 1.0
    inputs.update(perm_mask=tf.constant(perm), target_mapping=tf.constant(target))
    logits = {}
    for mode in ("custom", "reference"):
        with dispatch.op_mode(mode):
            types, forward = traced_forward(model, inputs, training=False)
            assert (OP in types) == (mode == "custom")
            logits[mode] = forward().logits.numpy()
    np.testing.assert_allclose(logits["custom"], logits["reference"], rtol=1e-5, atol=1e-5)


def test_dynamic_shapes_in_a_graph():
    """Lengths unknown until run time (a SavedModel signature, Keras symbolic inputs): the op takes them."""
    spec = tf.TensorSpec([None, 2, None, 16], tf.float32)

    @tf.function(input_signature=[spec] * 5 + [tf.TensorSpec([None, 1, 1, None], tf.float32)])
    def attention(*inputs):
        return dispatch.op_module(dense_attention.FAMILY).tf_models_relative_attention(*inputs, scale=0.25)

    inputs = _inputs(2, 2, 11, 29, 16, 16, 45, 2, (2, 1, 1, 29))
    np.testing.assert_allclose(attention(*inputs).numpy(), definition(*inputs, 0.25), rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("defect, message", [
    ("short positions", "at least keys \\+ queries = 11 relative positions"),
    ("position query", "position_query must have the query's shape"),
    ("position batch", "position_key dimension 0 must be 1 or 2"),
    ("position heads", "position_key dimension 1 must be 2"),
    ("position size", "position_key dimension 3 must be 8"),
    ("bias", "bias dimension 2 must be 1 or 5"),
    ("rank", "value must have rank 4"),
])
def test_bad_inputs_are_clear_errors(defect, message):
    shapes = {"query": (2, 2, 5, 8), "key": (2, 2, 6, 8), "value": (2, 2, 6, 4), "position_query": (2, 2, 5, 8),
              "position_key": (1, 2, 11, 8), "bias": (2, 1, 1, 6)}
    shapes.update({"short positions": {"position_key": (1, 2, 10, 8)},
                   "position query": {"position_query": (2, 2, 6, 8)},
                   "position batch": {"position_key": (3, 2, 11, 8)},
                   "position heads": {"position_key": (1, 3, 11, 8)},
                   "position size": {"position_key": (1, 2, 11, 7)},
                   "bias": {"bias": (2, 1, 3, 6)}, "rank": {"value": (2, 6, 4)}}[defect])
    tensors = [tf.zeros(shape) for shape in shapes.values()]
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        dispatch.op_module(dense_attention.FAMILY).tf_models_relative_attention(*tensors, scale=1.0)
