"""YOSO's attention (Zeng et al., "You Only Sample (Almost) Once", ICML 2021), as Hugging Face's YOSO computes it,
on the LSH primitives of tfmodels.ops.lsh:

- `expectation_attention` (YOSO-E): (1 - arccos(q k^T) / pi)^L V with the reference's backward
  (d/dq uses (L/2) E k, as YosoCumulation does);
- `lsh_attention` (YOSO): the sampled estimate of the same, lsh_cumulation in the forward pass, and in the
  backward either LSH cumulations (`lsh_backward=True`, the reference's YosoLSHCumulation) or the expectation.
"""
import math

import tensorflow as tf

from tfmodels.core.gradients import custom_gradient
from tfmodels.ops.lsh import lsh_cumulation, lsh_weighted_cumulation


def expectation(query, key, query_mask, key_mask, hash_code_len):
    """E[q, k] = (1 - arccos(<q, k>) / pi)^L for unit vectors, masked: the collision probability of L random
    hyperplanes. <q, k> is clipped to [-1, 1] (rounding can push it just past 1, where the reference gives NaN)."""
    cosine = tf.clip_by_value(tf.matmul(query, key, transpose_b=True), -1.0, 1.0)
    collision = (1.0 - tf.acos(cosine) / math.pi) ** hash_code_len
    return collision * tf.cast(query_mask, query.dtype)[:, :, None] * tf.cast(key_mask, query.dtype)[:, None, :]


def _expectation_backward(grad, query, key, value, expected, hash_code_len):
    """The reference's backward of the expectation: weighted = (grad V^T) * E, dq = weighted (L/2) K,
    dk = weighted^T (L/2) Q, dv = E^T grad."""
    weighted = tf.matmul(grad, value, transpose_b=True) * expected
    grad_query = tf.matmul(weighted, (hash_code_len / 2.0) * key)
    grad_key = tf.matmul(weighted, (hash_code_len / 2.0) * query, transpose_a=True)
    grad_value = tf.matmul(expected, grad, transpose_a=True)
    return grad_query, grad_key, grad_value


def expectation_attention(query, key, value, query_mask, key_mask, hash_code_len):
    """YOSO-E: E V with E the collision probabilities (see `expectation`). query/key [B, N, d] unit vectors,
    value [B, N, dv], masks [B, N] (1 keep, 0 pad). Dense: O(N^2) time and memory, as the reference."""

    @custom_gradient
    def attend(q, k, v):
        expected = expectation(q, k, query_mask, key_mask, hash_code_len)

        def grad(upstream):
            return _expectation_backward(upstream, q, k, v, expected, hash_code_len)

        return tf.matmul(expected, v), grad

    return attend(query, key, value)


def lsh_attention(query, key, value, query_mask, key_mask, query_code, key_code, hash_code_len, lsh_backward=True):
    """YOSO's sampled attention: lsh_cumulation of `value` over the hash collisions given by the codes
    (int32 [B, N, num_hash]). Backward: `lsh_backward=True` estimates the gradients with LSH cumulations (the
    reference's YosoLSHCumulation): dv = cumulation^T(grad), dq = weighted_cumulation(grad, v; (L/2) k),
    dk = weighted_cumulation(v, grad; (L/2) q); otherwise the expectation's backward (dense, O(N^2))."""
    capacity = 2 ** int(hash_code_len)
    query_mask, key_mask = tf.cast(query_mask, tf.int32), tf.cast(key_mask, tf.int32)

    @custom_gradient
    def attend(q, k, v):
        out = lsh_cumulation(query_mask, query_code, key_mask, key_code, v, capacity)

        def grad(upstream):
            if lsh_backward:
                half = hash_code_len / 2.0
                grad_value = lsh_cumulation(key_mask, key_code, query_mask, query_code, upstream, capacity)
                grad_query = lsh_weighted_cumulation(query_mask, query_code, upstream, key_mask, key_code, v,
                                                     half * k, capacity)
                grad_key = lsh_weighted_cumulation(key_mask, key_code, v, query_mask, query_code, upstream,
                                                   half * q, capacity)
                return grad_query, grad_key, grad_value
            expected = expectation(q, k, query_mask, key_mask, hash_code_len)
            return _expectation_backward(upstream, q, k, v, expected, hash_code_len)

        return out, grad

    return attend(tf.cast(query, tf.float32), tf.cast(key, tf.float32), tf.cast(value, tf.float32))
