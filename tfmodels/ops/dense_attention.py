"""Dense softmax attention as one fused CPU op: softmax((query * scale) key^T + bias) value, per head; and its
variant with a relative position term (Transformer-XL / XLNet), `relative_attention`.

The op (custom_ops/dense_attention) computes a block of query rows of one head at a time, its scores held in a
cache-sized scratch from the product to the softmax to the values, where stock TensorFlow writes the whole
[batch, heads, queries, keys] score tensor to memory and reads it back twice (see the C++ file for the figures).

It covers float32 and bfloat16 inference on the CPU, the cases where TensorFlow's three-op path is slowest
(bfloat16 products run on AMX tiles or AVX512-BF16 vectors where the CPU has them); core.attention calls `fused_attention` only when
`use_fused_attention` says so and keeps its own path otherwise (training, attention weights wanted, dropout,
float16, XLA, a GPU, export for TF Serving: op mode "reference"). That path is this op's twin, and the tests
compare the two. The op has no gradient kernel: its gradient recomputes the forward pass with the twin the caller
passes and differentiates that.
"""
import tensorflow as tf

from tfmodels.ops import dispatch

FAMILY = "dense_attention"


def use_fused_attention(query, bias):
    """Whether `fused_attention` may run here: float32 or bfloat16, a rank-4 bias with a value per key (or none), no
    GPU to run on, and the op mode allows the compiled op (in "auto" mode a library that fails to load gives one
    warning and False)."""
    if query.dtype not in (tf.float32, tf.bfloat16):
        return False
    if bias is not None and (bias.shape.rank != 4 or bias.shape[3] == 1):  # the op takes a bias row per key
        return False
    return dispatch.use_cpu_op(FAMILY)


def fused_attention(query, key, value, bias, scale, twin):
    """softmax((query * scale) key^T + bias) value with the compiled op. query [B, H, Q, D], key [B, H, K, D],
    value [B, H, K, E]; bias [B or 1, H or 1, Q or 1, K] additive (None: no bias). `twin(query, key, value,
    bias)` computes the same with stock TF ops; the gradient differentiates it."""
    if bias is None:
        bias = tf.zeros([1, 1, 1, tf.shape(key)[2]], query.dtype)
    module = dispatch.op_module(FAMILY)
    return dispatch.with_twin_gradient(
        lambda q, k, v, b: module.tf_models_dense_attention(q, k, v, b, scale=float(scale)), twin,
        query, key, value, tf.cast(bias, query.dtype))


def use_relative_attention(query, bias):
    """Whether `relative_attention` may run here: use_fused_attention's conditions, in float32 only (bfloat16 takes
    the dense op, the position term computed by the caller's twin)."""
    return query.dtype == tf.float32 and use_fused_attention(query, bias)


def relative_attention(query, key, value, position_query, position_key, bias, scale, twin):
    """softmax((query * scale) key^T + rel_shift(position_query position_key^T) + bias) value with the compiled op
    (custom_ops/dense_attention/relative_attention_ops.cc): query i meets position_key rows j + Q - i, j < K.

    query, position_query [B, H, Q, D] (position_query already scaled); key [B, H, K, D]; value [B, H, K, E];
    position_key [B or 1, H, R >= K + Q, D]; bias [B or 1, H or 1, Q or 1, K] (None: no bias). `twin` takes the
    same six inputs and computes the same with stock TF ops; the gradient differentiates it."""
    if bias is None:
        bias = tf.zeros([1, 1, 1, tf.shape(key)[2]], query.dtype)
    module = dispatch.op_module(FAMILY)
    return dispatch.with_twin_gradient(
        lambda q, k, v, pq, pk, b: module.tf_models_relative_attention(q, k, v, pq, pk, b, scale=float(scale)),
        twin, query, key, value, position_query, position_key, tf.cast(bias, query.dtype))
