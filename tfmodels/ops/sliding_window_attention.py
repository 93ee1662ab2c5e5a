"""Longformer's attention (Beltagy et al., "Longformer: The Long-Document Transformer", 2020), computed as
Hugging Face's `LongformerSelfAttention` does, on the banded primitives of tfmodels.ops.sliding_window.

Every token attends to the tokens within the one-sided window w of it (the band, memory O(seq * w)) and to every
token marked global; tokens marked global attend to the whole sequence through their own projections
(query_global / key_global / value_global), and their rows of the output come from that global attention.

The layer (models/longformer) owns the projections; the functions here take projected tensors and the global
projections' weights, so that the algorithm sits beside its ops, as block_sparse_attention does for MRA:

- `GlobalPlan(merged_mask)`: which tokens are global and where their slots are, once per forward pass;
- `local_attention(query, key, value, plan, window)`: the band plus the global keys, for every row (in CPU
  inference without the probabilities, the fused op `sliding_window.fused_sliding_window_attention`);
- `global_attention(hidden_states, plan, query, key_global, value_global)`: the rows of the global tokens;
- `merge_global_rows(local_output, global_output, plan)`: the global rows put in place of their local ones.
"""
import tensorflow as tf

from tfmodels.core import attention as attn
from tfmodels.ops import sliding_window
from tfmodels.ops.sliding_window import sliding_window_pv, sliding_window_qk


class GlobalPlan:
    """Which tokens are global and where their slots are, computed once per forward pass (all layers share it).

    merged_mask [B, S]: 0 padding, 1 local token, 2 global token (attention_mask * (global_attention_mask + 1)).
    is_masked / is_global / local [B, S] bool: padding, global tokens, tokens in the local windows;
    positions [B, X] int32: the position of global slot x (slots in order of position); valid [B, X]: slot x
    holds a global token (sequences have different numbers of them); slot_index [B, S]: the slot of a global
    token, X elsewhere (a zero row is appended when gathering slot outputs back). `num_slots` fixes X (XLA needs
    it static); by default X is the largest number of global tokens of a sequence in the batch.
    """

    def __init__(self, merged_mask, num_slots=None):
        self.is_masked = tf.equal(merged_mask, 0)
        self.is_global = tf.greater(merged_mask, 1)
        self.local = tf.equal(merged_mask, 1)
        seq = tf.shape(merged_mask)[1]
        global_int = tf.cast(self.is_global, tf.int32)
        count = tf.reduce_sum(global_int, axis=1)
        if num_slots is None:
            num_slots = tf.reduce_max(tf.concat([count, [0]], axis=0))
            if tf.executing_eagerly():
                num_slots = int(num_slots)
        self.num_slots = num_slots
        positions = tf.range(seq)[None, :]
        order = tf.where(self.is_global, positions, positions + seq)  # global positions first, in order
        _, self.positions = tf.math.top_k(-order, k=num_slots, sorted=True)
        self.positions = tf.cast(self.positions, tf.int32)
        self.valid = tf.range(num_slots)[None, :] < count[:, None]
        slot = tf.cumsum(global_int, axis=1) - 1
        self.slot_index = tf.where(self.is_global, slot, num_slots)


def local_attention(query, key, value, plan, window, head_mask=None, dropout=None, need_probs=True):
    """Every row attends to its band (one-sided `window`) and to the global keys.

    query (already divided by sqrt(dim)) / key / value [B, S, H, D] -> output [B, S, H, D] and probabilities
    [B, S, H, X + 2w + 1] (global columns first), or None for them when `need_probs` is False. head_mask [H]
    scales the probabilities; `dropout` (a callable, None when inactive) is applied to them before the values are
    summed. Without probabilities, head mask or dropout, the fused op runs where it can (CPU, float32 or
    bfloat16): the same attention without the probabilities in memory."""
    global_key = tf.gather(key, plan.positions, batch_dims=1)        # [B, X, H, D]
    global_value = tf.gather(value, plan.positions, batch_dims=1)

    def separate(query, key, value, global_key, global_value):
        scores = sliding_window_qk(query, key, window, plan.local, global_key, plan.valid)
        probs = attn.stable_softmax(scores)
        if head_mask is not None:
            probs = probs * tf.cast(head_mask, probs.dtype)[None, None, :, None]
        if dropout is not None:
            probs = dropout(probs)
        return sliding_window_pv(probs, value, global_value, window=window), probs

    if not need_probs and head_mask is None and dropout is None and sliding_window.use_fused_attention(query):
        output = sliding_window.fused_sliding_window_attention(
            query, key, value, window, plan.local, global_key, global_value, plan.valid,
            twin=lambda *tensors: separate(*tensors)[0])
        return output, None
    return separate(query, key, value, global_key, global_value)


def global_attention(hidden_states, plan, query, key_global, value_global, head_mask=None, dropout=None):
    """Global tokens attend to every token: output [B, X, H, D] and probabilities [B, H, X, S].

    query [B, X, H, D]: the global tokens' query_global projections, divided by sqrt(D); key_global /
    value_global: (kernel [E, H, D], bias [H, D]) of the global key and value projections.

    The reference projects every token with key_global / value_global ([S, E] x [E, E] each). Here the
    projections are folded into the few global queries instead: scores = (q_x Wk^T) . h_s + q_x . bk and
    output = (sum_s p_s h_s) Wv + (sum_s p_s) bv, which costs O(X * H * S * E) instead of O(S * E^2) and is
    used while X * H <= E (always for the usual few global tokens); the direct form is used otherwise.
    """
    key_kernel, key_bias = key_global
    value_kernel, value_bias = value_global
    heads, embed = key_bias.shape[0], key_kernel.shape[0]

    def folded_scores():
        folded = tf.einsum("bxhd,ehd->bhxe", query, key_kernel)
        return tf.einsum("bhxe,bse->bhxs", folded, hidden_states) + \
            tf.einsum("bxhd,hd->bhx", query, key_bias)[..., None]

    def direct_scores():
        keys = tf.einsum("bse,ehd->bshd", hidden_states, key_kernel) + key_bias
        return tf.einsum("bxhd,bshd->bhxs", query, keys)

    fold = plan.num_slots * heads <= embed  # a python bool when the number of slots is known, else a tensor
    if isinstance(fold, bool):
        scores = folded_scores() if fold else direct_scores()
    else:
        scores = tf.cond(fold, folded_scores, direct_scores)
    lowest = attn.mask_value(scores.dtype)
    scores = tf.where(plan.valid[:, None, :, None], scores, lowest)
    scores = tf.where(plan.is_masked[:, None, None, :], lowest, scores)
    probs = attn.stable_softmax(scores)
    if head_mask is not None:
        probs = probs * tf.cast(head_mask, probs.dtype)[None, :, None, None]
    if dropout is not None:
        probs = dropout(probs)

    def folded_output():
        summary = tf.einsum("bhxs,bse->bxhe", probs, hidden_states)
        weights = tf.transpose(tf.reduce_sum(probs, axis=-1), [0, 2, 1])            # [B, X, H]
        return tf.einsum("bxhe,ehd->bxhd", summary, value_kernel) + weights[..., None] * value_bias

    def direct_output():
        values = tf.einsum("bse,ehd->bshd", hidden_states, value_kernel) + value_bias
        return tf.einsum("bhxs,bshd->bxhd", probs, values)

    if isinstance(fold, bool):
        output = folded_output() if fold else direct_output()
    else:
        output = tf.cond(fold, folded_output, direct_output)
    return output, probs


def merge_global_rows(local_output, global_output, plan):
    """[B, S, H, D]: the global tokens' rows from `global_output` [B, X, H, D], padding rows zero, the other rows
    from `local_output`. Also returns the [B, S, 1, 1] mask of the rows that did not come from the band."""
    no_local_row = tf.logical_or(plan.is_masked, plan.is_global)[:, :, None, None]
    zeros = tf.zeros_like(local_output[:, :1])
    padded = tf.concat([global_output, zeros], axis=1)                              # slot X: zeros
    global_rows = tf.gather(padded, plan.slot_index, batch_dims=1)                  # [B, S, H, D]
    return tf.where(no_local_row, global_rows, local_output), no_local_row
