"""Attention building blocks shared by the families: masks, head splitting, dense scaled dot-product attention.

Masks follow the reference: an additive mask holds 0 where attention is allowed and the most negative value
of the compute dtype where it is not, so that softmax gives exact zeros there.
"""
import tensorflow as tf
from tensorflow.python.util import _pywrap_util_port

from tfmodels.core.gradients import custom_gradient
from tfmodels.core.layers import permute, shape_list
from tfmodels.ops import dense_attention

# Whether TF runs its CPU kernels through oneDNN (TF_ENABLE_ONEDNN_OPTS; no public API tells).
_ONEDNN = _pywrap_util_port.IsMklEnabled()


def mask_value(dtype):
    return tf.constant(tf.as_dtype(dtype).min, dtype=dtype)


def padding_mask_to_additive(attention_mask, dtype):
    """[batch, key_len] (1 keep, 0 pad; any numeric dtype) -> additive [batch, 1, 1, key_len].

    A 3-D mask [batch, query_len, key_len] becomes [batch, 1, query_len, key_len].
    """
    mask = tf.cast(attention_mask, dtype)
    if mask.shape.rank == 2:
        mask = mask[:, None, None, :]
    elif mask.shape.rank == 3:
        mask = mask[:, None, :, :]
    return (1.0 - mask) * mask_value(dtype)


def causal_mask(query_len, key_len, dtype):
    """[1, 1, query_len, key_len] with 1 where query i (the last `query_len` of `key_len` positions) may
    attend key j <= its own position."""
    past = key_len - query_len
    rows = tf.range(query_len)[:, None] + past
    cols = tf.range(key_len)[None, :]
    return tf.cast(cols <= rows, dtype)[None, None]


def causal_padding_additive_mask(attention_mask, query_len, dtype):
    """The decoder mask: causal x padding, as additive [batch, 1, query_len, key_len]."""
    key_len = tf.shape(attention_mask)[1]
    mask = causal_mask(query_len, key_len, dtype) * tf.cast(attention_mask, dtype)[:, None, None, :]
    return (1.0 - mask) * mask_value(dtype)


def head_mask_per_layer(head_mask, num_layers, dtype):
    """HF's get_head_mask: None, [heads] or [layers, heads] -> a list of per-layer [1, heads, 1, 1] or None."""
    if head_mask is None:
        return [None] * num_layers
    head_mask = tf.cast(head_mask, dtype)
    if head_mask.shape.rank == 1:
        return [head_mask[None, :, None, None]] * num_layers
    if head_mask.shape.rank == 2:
        return [head_mask[i][None, :, None, None] for i in range(num_layers)]
    raise ValueError(f"head_mask must have rank 1 [num_heads] or 2 [num_layers, num_heads], got {head_mask.shape}")


def split_heads(x, num_heads, head_dim):
    """[batch, seq, heads * dim] -> [batch, heads, seq, dim]."""
    batch, seq = shape_list(x)[:2]
    x = tf.reshape(x, [batch, seq, num_heads, head_dim])
    return permute(x, [0, 2, 1, 3])


def merge_heads(x):
    """[batch, heads, seq, dim] -> [batch, seq, heads * dim]."""
    batch, heads, seq, dim = shape_list(x)
    x = permute(x, [0, 2, 1, 3])
    return tf.reshape(x, [batch, seq, heads * dim])


CHUNK_SCORE_BYTES = 16 << 20  # float32 scores per head chunk when the attention weights are not needed


def scaled_dot_product_attention(query, key, value, additive_mask=None, head_mask=None, dropout=None,
                                 training=False, extra_scores=None, need_probs=True):
    """Dense softmax attention. query/key/value [batch, heads, seq, dim]; returns (context, probs).

    extra_scores is added before scaling (relative position terms, as XLM-R-XL does); additive_mask after
    scaling (padding masks, and biases that the reference adds to the scaled scores, as BEiT does).

    With `need_probs=False` (the caller will not return the attention weights) and no dropout in play, probs is
    None and the score matrices of all heads are never held at once:
    - float32 or bfloat16 inference on the CPU (not training, no head mask or extra scores) runs the fused op of
      tfmodels.ops.dense_attention, which keeps each block of scores in the cache (the fastest path there;
      bfloat16 is computed in float32 and rounded once, on AMX tiles where the CPU has them);
    - otherwise heads are processed in chunks whose float32 scores stay under CHUNK_SCORE_BYTES: the same
      numbers, with the score matrices of a few heads alive at a time instead of all (the largest activations
      of a long-sequence forward pass). Needs static shapes (always so in eager mode); otherwise one chunk.
    The chunked path is the fused op's twin, and its gradient.
    """
    _check_mask_shape(query, key, additive_mask)
    if not need_probs and (dropout is None or not training):
        if (training is None or training is False) and head_mask is None and extra_scores is None \
                and dense_attention.use_fused_attention(query, additive_mask):
            return dense_attention.fused_attention(query, key, value, additive_mask, _scale(query),
                                                   _chunked_attention), None
        return _chunked_attention(query, key, value, additive_mask, head_mask, extra_scores), None
    # The scores come from a helper so that no name here holds them while the softmax runs: stable_softmax
    # can then free them before its float32 work (peak memory of half-precision inference).
    probs = stable_softmax(_scaled_scores(query, key, additive_mask, extra_scores))
    if dropout is not None:
        probs = dropout(probs, training=training)
    if head_mask is not None:
        probs = probs * head_mask
    return tf.matmul(probs, value), probs


def _check_mask_shape(query, key, additive_mask):
    """The additive mask must broadcast to the scores [batch, heads, queries, keys] without enlarging them (torch's
    attention rule): TF's broadcasting would otherwise turn a mask with a bigger batch into a bigger output,
    silently. Checked where the shapes are static (always in eager mode)."""
    if additive_mask is None or additive_mask.shape.rank is None:
        return
    scores = query.shape[:3].concatenate(key.shape[2:3])
    if additive_mask.shape.rank > 4:
        raise ValueError(f"the additive attention mask has rank {additive_mask.shape.rank}; at most 4 "
                         f"[batch, heads, queries, keys]")
    for size, full in zip(reversed(additive_mask.shape), reversed(scores)):
        if size is not None and full is not None and size not in (1, full):
            raise ValueError(f"the additive attention mask of shape {additive_mask.shape} does not broadcast to "
                             f"the attention scores {scores}: each dimension must be 1 or the scores'")


def _chunked_attention(query, key, value, additive_mask=None, head_mask=None, extra_scores=None):
    """The attention output without its weights, a chunk of heads at a time (see scaled_dot_product_attention)."""
    heads_per_chunk = _heads_per_chunk(query, key)
    if heads_per_chunk is None:  # one chunk holds every head (or the shapes are dynamic)
        return scaled_dot_product_attention(query, key, value, additive_mask, head_mask,
                                            extra_scores=extra_scores)[0]
    contexts = []
    for start in range(0, query.shape[1], heads_per_chunk):
        part = slice(start, start + heads_per_chunk)
        contexts.append(scaled_dot_product_attention(
            query[:, part], key[:, part], value[:, part], _heads(additive_mask, part),
            _heads(head_mask, part), extra_scores=_heads(extra_scores, part))[0])
    return tf.concat(contexts, axis=1)


def _heads_per_chunk(query, key):
    """Heads per chunk for chunked attention, or None when one chunk holds them all (or shapes are dynamic)."""
    batch, heads, query_len = query.shape[:3]
    key_len = key.shape[2]
    if None in (batch, heads, query_len, key_len):
        return None
    per_head = batch * query_len * key_len * 4
    chunk = max(1, CHUNK_SCORE_BYTES // max(per_head, 1))
    return chunk if chunk < heads else None


def _heads(tensor, part):
    """The heads `part` of a [batch, heads, ...] tensor that may broadcast over heads (size 1 there)."""
    if tensor is None or tensor.shape.rank is None or tensor.shape.rank < 4 or tensor.shape[1] == 1:
        return tensor
    return tensor[:, part]


def _scaled_scores(query, key, additive_mask, extra_scores):
    # Scaling the query (seq x dim values) instead of the scores (seq x seq) saves a full pass over the
    # score matrix in the forward and the backward pass; the result differs from scaling afterwards only by
    # float rounding (~1e-7).
    scale = tf.cast(_scale(query), query.dtype)
    scores = tf.matmul(query * scale, key, transpose_b=True)
    if extra_scores is not None:
        scores = scores + extra_scores * scale
    if additive_mask is not None:
        scores = scores + tf.cast(additive_mask, scores.dtype)
    return scores


def _scale(query):
    """The reference's score scale, 1 / sqrt(head size), as a Python float (the fused op's attribute)."""
    return 1.0 / (query.shape[-1] ** 0.5)


def stable_softmax(scores):
    """Softmax over the last axis, computed in float32 for half-precision inputs.

    bfloat16 with oneDNN (TF's default on x86-64 Linux) goes to oneDNN's softmax as is: it reads bf16, computes
    in float32 and rounds once, so its results equal the cast path's bit for bit, in less than half the time in
    eager mode and a sixth in graphs, with no float32 copy of the scores. Without oneDNN, TF's Eigen kernel would
    sum in bfloat16 (errors near 10%): that case casts, as float16 does. In that path each intermediate is
    released as soon as the next exists (in eager mode the peak is two float32 copies of the scores, not two plus
    the input), which is most of the activation memory of a long-sequence forward pass."""
    if scores.dtype not in (tf.float16, tf.bfloat16):
        return tf.nn.softmax(scores, axis=-1)
    if scores.dtype == tf.bfloat16 and _ONEDNN:
        return _onednn_bfloat16_softmax(scores)
    dtype = scores.dtype
    wide = tf.cast(scores, tf.float32)
    del scores  # frees the input if the caller passed a temporary
    wide = tf.nn.softmax(wide, axis=-1)
    return tf.cast(wide, dtype)


@custom_gradient
def _onednn_bfloat16_softmax(scores):
    """oneDNN's bfloat16 softmax (see stable_softmax); its gradient, whose sum over keys TF would take in
    bfloat16, is computed in float32 as the cast path's is."""
    probs = tf.nn.softmax(scores, axis=-1)

    def gradient(upstream):
        wide_probs, wide_upstream = tf.cast(probs, tf.float32), tf.cast(upstream, tf.float32)
        wide = (wide_upstream - tf.reduce_sum(wide_upstream * wide_probs, axis=-1, keepdims=True)) * wide_probs
        return tf.cast(wide, tf.bfloat16)

    return probs, gradient
