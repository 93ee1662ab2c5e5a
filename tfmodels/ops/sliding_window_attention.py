"""Longformer's attention (Beltagy et al., "Longformer: The Long-Document Transformer", 2020), computed as
Hugging Face's `LongformerSelfAttention` does, on the banded primitives of tfmodels.ops.sliding_window.

Every token attends to the tokens within the one-sided window w of it (the band, memory O(seq * w)) and to every
token marked global; tokens marked global attend to the whole sequence through their own projections
(query_global / key_global / value_global), and their rows of the output come from that global attention.

The layer (models/longformer) owns the projections; the functions here take projected tensors and the global
projections' weights, so that the algorithm sits beside its ops, as block_sparse_attention does for MRA:

- `GlobalPlan(merged_mask)`: which tokens are global and where their slots are, once per forward pass;
- `local_attention(query, key, value, plan, window)`: the band plus the global keys, for the rows of the local
  tokens, zero in the others (in CPU inference without the probabilities, the fused op
  `sliding_window.fused_sliding_window_attention`, which writes those zeros itself);
- `global_attention(hidden_states, plan, query, key_global, value_global)`: the rows of the global tokens;
- `merge_global_rows(local_output, global_output, plan)`: the global rows added in their (zero) places.
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
    holds a global token (sequences have different numbers of them). `num_slots` fixes X (XLA needs it static);
    by default X is the largest number of global tokens of a sequence in the batch.
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


def local_attention(query, key, value, plan, window, head_mask=None, dropout=None, need_probs=True):
    """Every local token attends to its band (one-sided `window`) and to the global keys.

    query (already divided by sqrt(dim)) / key / value [B, S, H, D] -> output [B, S, H, D] and probabilities
    [B, S, H, X + 2w + 1] (global columns first), or None for them when `need_probs` is False; both are zero in
    the rows of the global tokens and the padding (`plan.local` False), which the local attention does not give.
    head_mask [H] scales the probabilities; `dropout` (a callable, None when inactive) is applied to them before
    the values are summed. Without probabilities, head mask or dropout, the fused op runs where it can (CPU,
    float32 or bfloat16): the same attention without the probabilities in memory."""
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
    output, probs = separate(query, key, value, global_key, global_value)
    output = sliding_window.zero_rows_not_kept(output, plan.local)
    return output, (sliding_window.zero_rows_not_kept(probs, plan.local) if need_probs else None)


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
    """[B, S, H, D]: `local_output` (as local_attention returns it: zero in the rows of the global tokens and the
    padding) with the global tokens' rows of `global_output` [B, X, H, D] added in their places: one scatter of
    the X rows (TF copies local_output into it, one pass), where placing them by a gather and a select over the
    whole [B, S, H, D] output took two passes more (~2% of a Longformer forward at 4096 tokens on a 2-core EPYC)."""
    batch_index = tf.broadcast_to(tf.range(tf.shape(plan.positions)[0])[:, None], tf.shape(plan.positions))
    indices = tf.stack([batch_index, plan.positions], axis=-1)                      # [B, X, 2]
    rows = tf.where(plan.valid[:, :, None, None], global_output, tf.zeros([], global_output.dtype))
    return tf.tensor_scatter_nd_add(local_output, indices, rows)
