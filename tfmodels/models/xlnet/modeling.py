"""XLNet: Transformer-XL relative attention with two-stream (content + query) attention, recurrence memory,
permutation language modelling and every documented task head, including the beam-search SQuAD head.

Layout: the reference works time-major ([len, batch, ...]); we work batch-first and keep the reference's layout
only where users see it: `mems` are lists of [mem_len, batch, d_model] tensors, in and out, so that memories
move between this implementation and the reference unchanged.

What matters for parity: relative positions run from klen down to -qlen+1 ("bi") or to 0 ("uni"), clamped by
clamp_len, with forward and backward halves of the batch under bi_data; the content stream may always attend to
itself (non_tgt_mask) while the query stream may not; memories count as segment 0 and are always visible;
masked scores get -1e30 (-65500 in float16) after scaling, as the reference subtracts.
"""
import math
import warnings

import keras
import numpy as np
import tensorflow as tf

from tfmodels.core import attention as attn
from tfmodels.core import initializers, layers, losses, outputs as out, serialization, tasks
from tfmodels.core.activations import gelu, get_activation
from tfmodels.core.heads import SequenceSummary
from tfmodels.core.inputs import check_ids_in_range, check_rank, check_same_shape, text_reference
from tfmodels.core.layers import apply_chunking
from tfmodels.core.modeling import PreTrainedModel
from tfmodels.models.xlnet.checkpoint import XLNET_CHECKPOINT_MAP
from tfmodels.models.xlnet.configuration import XLNetConfig
from tfmodels.ops import dense_attention

_MEMS_DOC = ("mems: list of config.n_layer tensors [mem_len, batch, d_model] (the reference's layout), the hidden "
             "states entering each layer for the previous segment(s); feed them back as `mems`.")

XLNetModelOutput = out.define_output(
    "XLNetModelOutput", ("last_hidden_state", "mems", "hidden_states", "attentions"),
    "XLNetModel output: last_hidden_state [batch, num_predict or seq, d_model]. " + _MEMS_DOC)
XLNetLMHeadModelOutput = out.define_output(
    "XLNetLMHeadModelOutput", ("loss", "logits", "mems", "hidden_states", "attentions"))
XLNetForSequenceClassificationOutput = out.define_output(
    "XLNetForSequenceClassificationOutput", ("loss", "logits", "mems", "hidden_states", "attentions"))
XLNetForTokenClassificationOutput = out.define_output(
    "XLNetForTokenClassificationOutput", ("loss", "logits", "mems", "hidden_states", "attentions"))
XLNetForMultipleChoiceOutput = out.define_output(
    "XLNetForMultipleChoiceOutput", ("loss", "logits", "mems", "hidden_states", "attentions"))
XLNetForQuestionAnsweringSimpleOutput = out.define_output(
    "XLNetForQuestionAnsweringSimpleOutput",
    ("loss", "start_logits", "end_logits", "mems", "hidden_states", "attentions"))
XLNetForQuestionAnsweringOutput = out.define_output(
    "XLNetForQuestionAnsweringOutput",
    ("loss", "start_top_log_probs", "start_top_index", "end_top_log_probs", "end_top_index", "cls_logits", "mems",
     "hidden_states", "attentions"),
    "Beam-search SQuAD output. As in the reference, the *_log_probs fields hold softmax probabilities; "
    "end_top_* are [batch, end_n_top * start_n_top], end candidate major.")


def linear(x, kernel):
    """x [..., in] @ kernel [in, out] as one 2-D matmul. (TF 2.21's oneDNN BatchMatMulV2 returns garbage or
    crashes when a rank-4 [B >= 4, 1, M, K] input is broadcast against a weight matrix, so no batch
    broadcasting here.)"""
    if x.shape.rank == 2:
        return tf.matmul(x, kernel)
    shape = tf.shape(x)
    y = tf.matmul(tf.reshape(x, [-1, tf.shape(kernel)[0]]), kernel)
    y = tf.reshape(y, tf.concat([shape[:-1], tf.shape(kernel)[1:]], axis=0))
    y.set_shape(x.shape[:-1].concatenate(kernel.shape[1:]))
    return y


def _mask_fill(dtype):
    """What the reference subtracts from masked scores."""
    return 65500.0 if dtype == tf.float16 else 1e30


def _masked_logits(x, p_mask):
    """The reference's p_mask application: x * (1 - p) - 1e30 * p."""
    if p_mask is None:
        return x
    p_mask = tf.cast(p_mask, x.dtype)
    return x * (1 - p_mask) - tf.cast(_mask_fill(x.dtype), x.dtype) * p_mask


# ---------------------------------------------------------------------------------------------------------------
# Layers


def _bias_terms(position, ef, seg_diff, additive_mask):
    """position [b, n, q, k] + the segment term (ef [b, n, q, 2]: column 1 where seg_diff [b, q, k], else 0)
    + additive_mask [b, 1, q|1, k], each when given (None when none is)."""
    terms = [position, None if ef is None else tf.where(seg_diff[:, None], ef[..., 1:], ef[..., :1]), additive_mask]
    total = None
    for term in terms:
        if term is not None:
            total = term if total is None else total + term
    return total


def _shift_blocks(x, ef, seg_diff, additive_mask):
    """x [b, n, t, block, klen + block]: each block of query rows against its window of positions
    (XLNetRelativeAttention.position_scores) -> _bias_terms(position term [b, n, t * block, klen], ...).

    Not compiled with XLA, although fusing the shift with the additions saves about 3% of the forward pass: it
    cost ~48 MB of peak memory and ~200 ms of compilation per new shape, and an XLA cluster in an exported
    SavedModel needs a TF Serving build with XLA's CPU JIT."""
    batch, heads, blocks, block, width = (tf.shape(x)[i] for i in range(5))
    klen = width - block
    x = tf.reshape(x, [batch, heads, blocks, width, block])[:, :, :, 1:]  # rel_shift, per block
    x = tf.reshape(x, [batch, heads, blocks, block, width - 1])[..., :klen]
    return _bias_terms(tf.reshape(x, [batch, heads, blocks * block, klen]), ef, seg_diff, additive_mask)


class XLNetRelativeAttention(keras.layers.Layer):
    """Relative multi-head attention with content, position and segment terms; two-stream when given `g`."""

    POSITION_BLOCK = 64  # query rows per block of the position term (position_scores)

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.n_head = config.n_head
        self.d_head = config.d_head
        self.d_model = config.d_model
        self.scale = 1.0 / math.sqrt(config.d_head)
        self.layer_norm = layers.layer_norm(config.layer_norm_eps, name="layer_norm")
        self.dropout = layers.dropout(config.dropout)

    def build(self, input_shape=None):
        init = initializers.normal(self.config.initializer_range)
        shape = (self.d_model, self.n_head, self.d_head)
        for name in ("q", "k", "v", "o", "r"):
            setattr(self, name, layers.add_weight(self, name, shape, init))
        for name in ("r_r_bias", "r_s_bias", "r_w_bias"):
            setattr(self, name, layers.add_weight(self, name, (self.n_head, self.d_head), init))
        self.seg_embed = layers.add_weight(self, "seg_embed", (2, self.n_head, self.d_head), init)
        self.layer_norm.build((None, None, self.d_model))
        self.built = True

    # --- projections -------------------------------------------------------------------------------------

    def _weight(self, variable, dtype):
        """[d_model, n_head, d_head] -> [d_model, n_head * d_head] in the compute dtype."""
        return tf.reshape(tf.cast(variable, dtype), [self.d_model, self.n_head * self.d_head])

    def _heads(self, x):
        """[batch, len, n*d] -> [batch, n, len, d]."""
        batch, length = tf.shape(x)[0], tf.shape(x)[1]
        x = tf.reshape(x, [batch, length, self.n_head, self.d_head])
        return layers.permute(x, [0, 2, 1, 3])

    def position_keys(self, pos_emb):
        """pos_emb [rlen, d] or [batch, rlen, d] -> [1 or batch, n, rlen, d_head]: a shared encoding is projected
        once."""
        projected = linear(pos_emb, self._weight(self.r, pos_emb.dtype))
        if pos_emb.shape.rank == 2:
            rlen = tf.shape(pos_emb)[0]
            return layers.permute(tf.reshape(projected, [rlen, self.n_head, self.d_head]), [1, 0, 2])[None]
        return self._heads(projected)

    # --- attention core ----------------------------------------------------------------------------------

    @staticmethod
    def rel_shift(x, klen):
        """[b, n, q, rlen] -> [b, n, q, klen] with out[..., i, j] = x[..., i, j + q - i] (Transformer-XL shift)."""
        batch, heads, qlen, rlen = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2], tf.shape(x)[3]
        x = tf.reshape(x, [batch, heads, rlen, qlen])[:, :, 1:, :]
        x = tf.reshape(x, [batch, heads, qlen, rlen - 1])
        # (The reshape, free, gives no queries their klen columns too: without rows, rlen - 1 may be < klen.)
        return tf.reshape(x[:, :, :, :klen], [batch, heads, qlen, klen])

    def position_scores(self, q_head, k_head_r, klen, ef=None, seg_diff=None, additive_mask=None):
        """rel_shift(q_head @ k_head_r^T, klen) plus the segment and mask terms (_bias_terms): the additive bias
        [b, n, q, klen] of the content scores.

        Each query row uses only klen of the rlen = klen + qlen relative positions, so with "bi" attention and a
        static qlen that is a multiple of POSITION_BLOCK, each block of that many query rows is multiplied by the
        window of klen + block positions its rows use (gathered from k_head_r) and shifted on its own: the same
        dot products (bit-identical in our checks) for a little over half the multiply-adds of the full product,
        and smaller copies in the shift. Otherwise (uni attention, whose shift wraps rows into masked scores;
        dynamic or other lengths) the full product is shifted."""
        block = self.POSITION_BLOCK
        qlen, d_head = q_head.shape[2], q_head.shape[3]
        # Shared position keys [1, ...] are broadcast over the batch: the matmuls then need no batch broadcasting.
        k_head_r = tf.broadcast_to(k_head_r, tf.concat([tf.shape(q_head)[:1], tf.shape(k_head_r)[1:]], axis=0))
        if self.config.attn_type != "bi" or not qlen or qlen % block:  # (not qlen: unknown, or no rows)
            position = self.rel_shift(tf.matmul(q_head, k_head_r, transpose_b=True), klen)
            return _bias_terms(position, ef, seg_diff, additive_mask)
        batch, heads, blocks = tf.shape(q_head)[0], tf.shape(q_head)[1], qlen // block
        # Block t (rows t * block ...) uses positions qlen - (t + 1) * block + [0, klen + block).
        index = (qlen - block) - block * tf.range(blocks)[:, None] + tf.range(klen + block)[None, :]
        windows = tf.gather(k_head_r, index, axis=2)                                 # [b, n, t, klen + block, d]
        x = tf.matmul(tf.reshape(q_head, [batch, heads, blocks, block, d_head]), windows, transpose_b=True)
        return _shift_blocks(x, ef, seg_diff, additive_mask)

    def rel_attn_core(self, q_head, k_head_h, v_head_h, k_head_r, seg_diff, additive_mask, head_mask, training,
                      need_probs=True):
        """q_head [b, n, q, d]; k/v [b, n, k, d]; k_head_r [1 or b, n, rlen, d]; seg_diff [b, q, k] bool;
        additive_mask [b, 1, q|1, k]. Returns (context [b, n, q, d], probs [b, n, q, k] or None when
        need_probs is False)."""
        dtype = q_head.dtype
        scale = tf.cast(self.scale, dtype)
        bias = lambda name: tf.cast(getattr(self, name), dtype)[None, :, None, :]  # noqa: E731
        # The position and segment terms (scaled, as the content term will be) and the mask form one additive
        # bias to the content scores (ac + bd + ef) * scale, so that the content term, softmax and values can
        # run as core attention (the fused CPU op in float32 and bfloat16 inference when the weights are not
        # returned).
        ef = None
        if seg_diff is not None:
            ef = tf.einsum("bnqd,snd->bnqs", (q_head + bias("r_s_bias")) * scale, tf.cast(self.seg_embed, dtype))
        content_query, position_query = q_head + bias("r_w_bias"), (q_head + bias("r_r_bias")) * scale
        klen = tf.shape(k_head_h)[2]
        inference = training is None or training is False
        if self.config.attn_type == "bi" and not need_probs and inference and head_mask is None \
                and dense_attention.use_relative_attention(q_head, additive_mask):
            # Float32 CPU inference: the position term, softmax and values in one op (its rel_shift is the "bi"
            # encoding's, rlen = klen + qlen). The segment term and the mask are its additive bias.
            def twin(query, key, value, pos_query, pos_key, extra):
                position = self.position_scores(pos_query, pos_key, klen, additive_mask=extra)
                return attn.scaled_dot_product_attention(query, key, value, position, need_probs=False)[0]
            extra = _bias_terms(None, ef, seg_diff, additive_mask)
            return dense_attention.relative_attention(content_query, k_head_h, v_head_h, position_query, k_head_r,
                                                      extra, self.scale, twin), None
        scores_bias = self.position_scores(position_query, k_head_r, klen, ef, seg_diff, additive_mask)
        return attn.scaled_dot_product_attention(content_query, k_head_h, v_head_h, scores_bias, head_mask,
                                                 self.dropout, training, need_probs=need_probs)

    def post_attention(self, residual, context, training):
        """context [b, n, len, d] -> layer_norm(dropout(context @ o) + residual)."""
        batch, length = tf.shape(context)[0], tf.shape(context)[2]
        context = tf.reshape(layers.permute(context, [0, 2, 1, 3]), [batch, length, self.n_head * self.d_head])
        # o^T as [n * d_head, d_model] through a reshape, so that grappler does not fold the transpose into the
        # MatMul (oneDNN's transposed-operand MatMul runs about twice as long here).
        kernel = tf.reshape(tf.transpose(tf.cast(self.o, context.dtype), [1, 2, 0]), [-1, self.d_model])
        attn_out = linear(context, kernel)
        attn_out = self.dropout(attn_out, training=training)
        return self.layer_norm(attn_out + residual)

    def call(self, h, g, mask_h, mask_g, pos_emb, seg_diff, mems=None, target_mapping=None, head_mask=None,
             training=False, need_probs=True):
        dtype = h.dtype
        k_head_r = self.position_keys(tf.cast(pos_emb, dtype))
        if mems is None:
            # One projection for queries, keys and values.
            qkv = linear(h, tf.concat([self._weight(w, dtype) for w in (self.q, self.k, self.v)], axis=1))
            # One transpose to [3, b, n, len, d]: unstacking its first axis shares the buffer (no copies).
            batch, length = tf.shape(h)[0], tf.shape(h)[1]
            qkv = tf.reshape(qkv, [batch, length, 3, self.n_head, self.d_head])
            q_h, k_h, v_h = tf.unstack(layers.permute(qkv, [2, 0, 3, 1, 4]))
        else:
            cat = tf.concat([tf.cast(mems, dtype), h], axis=1)
            q_h = self._heads(linear(h, self._weight(self.q, dtype)))
            kv = linear(cat, tf.concat([self._weight(self.k, dtype), self._weight(self.v, dtype)], axis=1))
            k_h, v_h = (self._heads(t) for t in tf.split(kv, 2, axis=-1))
        context_h, probs_h = self.rel_attn_core(q_h, k_h, v_h, k_head_r, seg_diff, mask_h, head_mask, training,
                                                need_probs)
        output_h = self.post_attention(h, context_h, training)
        if g is None:
            return output_h, None, probs_h
        # Query stream: the same keys and values, queries from g; target_mapping places the predictions.
        q_g = self._heads(linear(g, self._weight(self.q, dtype)))
        if target_mapping is not None:
            target_mapping = tf.cast(target_mapping, dtype)
            q_g = tf.einsum("bnmd,bml->bnld", q_g, target_mapping)
        context_g, probs_g = self.rel_attn_core(q_g, k_h, v_h, k_head_r, seg_diff, mask_g, head_mask, training,
                                                need_probs)
        if target_mapping is not None:
            context_g = tf.einsum("bnld,bml->bnmd", context_g, target_mapping)
        output_g = self.post_attention(g, context_g, training)
        return output_h, output_g, (probs_h, probs_g)


class XLNetFeedForward(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        ir = config.initializer_range
        self.layer_norm = layers.layer_norm(config.layer_norm_eps, name="layer_norm")
        self.layer_1 = layers.dense(config.d_inner, ir, name="layer_1")
        self.layer_2 = layers.dense(config.d_model, ir, name="layer_2")
        self.dropout = layers.dropout(config.dropout)
        self.activation_function = get_activation(config.ff_activation)

    def call(self, inp, training=False):
        # Exact GELU with the same bits in eager calls and graphs (the generation loop and beam search call the
        # model both ways): apply_dense's fused GELU differs between the two.
        if self.activation_function is gelu:
            x = layers.apply_dense_exact_gelu(self.layer_1, inp)
        else:
            x = self.activation_function(layers.apply_dense(self.layer_1, inp))
        x = self.dropout(x, training=training)
        # A 2-D MatMul + BiasAdd (+ the residual Add where dropout is the identity) that oneDNN fuses, where the
        # Keras layer runs a Tensordot and separate adds.
        return self.layer_norm(layers.apply_dense_dropout_residual(self.layer_2, self.dropout, x, inp, training))


class XLNetLayer(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.rel_attn = XLNetRelativeAttention(config, name="rel_attn")
        self.ff = XLNetFeedForward(config, name="ff")

    def call(self, output_h, output_g, mask_h, mask_g, pos_emb, seg_diff, mems=None, target_mapping=None,
             head_mask=None, training=False, need_probs=True):
        output_h, output_g, probs = self.rel_attn(output_h, output_g, mask_h, mask_g, pos_emb, seg_diff, mems,
                                                  target_mapping, head_mask, training=training,
                                                  need_probs=need_probs)
        feed_forward = lambda x: self.ff(x, training=training)  # noqa: E731
        chunk = self.config.chunk_size_feed_forward
        if output_g is not None:
            output_g = apply_chunking(feed_forward, chunk, output_g)
        output_h = apply_chunking(feed_forward, chunk, output_h)
        return output_h, output_g, probs


def positional_encoding(pos_seq, d_model):
    """Sinusoids [len, d_model] (sin half, then cos half) for float32 positions, as the reference."""
    freq_seq = tf.range(0, d_model, 2.0)
    inv_freq = 1.0 / tf.pow(10000.0, freq_seq / d_model)
    sinusoid = pos_seq[:, None] * inv_freq[None, :]
    return tf.concat([tf.sin(sinusoid), tf.cos(sinusoid)], axis=-1)


class XLNetMainLayer(serialization.ConfigLayer):
    """Embedding, relative encodings, masks and the layer stack; keyword arguments as the reference's model."""

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.word_embedding = layers.embedding(config.vocab_size, config.d_model, config.initializer_range,
                                               name="word_embedding")
        self.layer = [XLNetLayer(config, name=f"layer_{i}") for i in range(config.n_layer)]
        layers.share_one_graph(self.layer)
        self.dropout = layers.dropout(config.dropout)

    def build(self, input_shape=None):
        self.word_embedding.build(None)
        self.mask_emb = layers.add_weight(self, "mask_emb", (1, 1, self.config.d_model),
                                          initializers.normal(self.config.initializer_range))
        self.built = True

    # --- pieces ------------------------------------------------------------------------------------------

    def relative_positional_encoding(self, qlen, klen, batch, training):
        """[rlen, d] (or [batch, rlen, d] with bi_data / dropout in training), rlen = klen + qlen ("bi") or
        klen + 1 ("uni"): distances klen, klen - 1, ..., down to -qlen + 1 or 0."""
        config = self.config
        end = -qlen if config.attn_type == "bi" else -1
        fwd = tf.cast(tf.range(klen, end, -1), tf.float32)
        if config.clamp_len > 0:
            fwd = tf.clip_by_value(fwd, -float(config.clamp_len), float(config.clamp_len))
        pos_emb = positional_encoding(fwd, config.d_model)
        if config.bi_data:
            bwd = tf.cast(tf.range(-klen, -end, 1), tf.float32)
            if config.clamp_len > 0:
                bwd = tf.clip_by_value(bwd, -float(config.clamp_len), float(config.clamp_len))
            half = batch // 2
            fwd_emb = tf.broadcast_to(pos_emb[None], [half, tf.shape(pos_emb)[0], config.d_model])
            bwd_emb = positional_encoding(bwd, config.d_model)
            bwd_emb = tf.broadcast_to(bwd_emb[None], [half, tf.shape(bwd_emb)[0], config.d_model])
            pos_emb = tf.concat([fwd_emb, bwd_emb], axis=0)
        elif training and config.dropout > 0:
            # The reference drops out a per-example copy of the encodings.
            pos_emb = tf.broadcast_to(pos_emb[None], [batch, tf.shape(pos_emb)[0], config.d_model])
        return pos_emb

    def attention_masks(self, qlen, mlen, batch, input_mask, perm_mask, dtype):
        """Additive masks (0 or -1e30) for the content stream [b, 1, q|1, k] and the query stream, or None."""
        config = self.config
        klen = mlen + qlen
        total = None  # > 0 where masked, broadcastable to [b, q, k]
        if config.attn_type == "uni":
            rows = tf.range(qlen)[:, None]
            cols = tf.range(klen)[None, :]
            causal = cols > rows + mlen
            if config.same_length:
                causal = tf.logical_or(causal, tf.logical_and(cols < qlen, cols < rows))
            total = tf.cast(causal, dtype)[None]
        data = None
        if input_mask is not None:
            data = tf.cast(input_mask, dtype)[:, None, :]
        if perm_mask is not None:
            data = tf.cast(perm_mask, dtype) if data is None else data + tf.cast(perm_mask, dtype)
        if data is not None:
            data = tf.pad(data, [[0, 0], [0, 0], [mlen, 0]])  # memories are always visible
            total = data if total is None else total + data
        if total is None:
            return None, None
        mask_g = tf.where(total > 0, tf.constant(-_mask_fill(dtype), dtype), tf.zeros([], dtype))
        # The content stream sees itself: its mask is the query stream's with the diagonal zeroed, by one
        # multiplication (by 0 or 1, exact) of the often much smaller [b, 1, k] padding mask.
        not_own = tf.cast(tf.not_equal(tf.range(klen)[None, :], tf.range(qlen)[:, None] + mlen), dtype)
        return (mask_g * not_own)[:, None], mask_g[:, None]

    def cache_mem(self, current, previous):
        """New memory [b, m, d] from this segment's layer input (and the previous memory)."""
        config = self.config
        if config.reuse_len is not None and config.reuse_len > 0:
            current = current[:, :config.reuse_len]
        new = current if previous is None else tf.concat([tf.cast(previous, current.dtype), current], axis=1)
        if config.mem_len:
            new = new[:, -config.mem_len:]
        return tf.stop_gradient(new)

    # --- forward -----------------------------------------------------------------------------------------

    def call(self, input_ids=None, attention_mask=None, mems=None, perm_mask=None, target_mapping=None,
             token_type_ids=None, input_mask=None, head_mask=None, inputs_embeds=None, use_mems=None,
             output_attentions=False, output_hidden_states=False, use_cache=None, training=False):
        config = self.config
        if attention_mask is not None and input_mask is not None:
            raise ValueError("You can only use one of input_mask (1 for padding) and attention_mask (0 for padding)")
        reference = text_reference(input_ids, inputs_embeds, attention_mask=attention_mask, input_mask=input_mask,
                                   token_type_ids=token_type_ids)
        if use_cache is not None:
            warnings.warn("XLNet: `use_cache` is deprecated, use `use_mems`", FutureWarning)
            use_mems = use_cache if use_mems is None else use_mems
        if use_mems is None:
            use_mems = config.use_mems_train if training else config.use_mems_eval
        batch, qlen = tf.shape(reference)[0], tf.shape(reference)[1]
        if input_ids is not None:
            input_ids = check_ids_in_range("input_ids", input_ids, config.vocab_size)
            word_emb = self.word_embedding(input_ids)
        else:
            word_emb = tf.cast(inputs_embeds, self.compute_dtype)
        dtype = word_emb.dtype
        self._check_structure(reference, mems, perm_mask, target_mapping, batch, qlen)

        mlen = 0
        mems_bf = [None] * config.n_layer
        if mems is not None:
            mlen = tf.shape(mems[0])[0]
            mems_bf = [tf.transpose(tf.cast(m, dtype), [1, 0, 2]) for m in mems]
        klen = mlen + qlen

        if input_mask is None and attention_mask is not None:
            input_mask = 1.0 - tf.cast(attention_mask, dtype)
        mask_h, mask_g = self.attention_masks(qlen, mlen, batch, input_mask, perm_mask, dtype)

        output_h = self.dropout(word_emb, training=training)
        output_g = None
        if target_mapping is not None:
            num_predict = tf.shape(target_mapping)[1]
            mask_emb = tf.cast(self.mask_emb, dtype)
            output_g = self.dropout(tf.broadcast_to(mask_emb, [batch, num_predict, config.d_model]),
                                    training=training)

        seg_diff = None
        if token_type_ids is not None:
            cat_ids = tf.pad(tf.cast(token_type_ids, tf.int32), [[0, 0], [mlen, 0]])  # memories: segment 0
            seg_diff = tf.not_equal(tf.cast(token_type_ids, tf.int32)[:, :, None], cat_ids[:, None, :])

        if config.bi_data:
            tf.debugging.assert_equal(batch % 2, 0, message="bi_data=True needs an even batch size "
                                                            "(forward and backward halves)")
        pos_emb = self.relative_positional_encoding(qlen, klen, batch, training)
        pos_emb = self.dropout(tf.cast(pos_emb, dtype), training=training)

        head_masks = attn.head_mask_per_layer(head_mask, config.n_layer, dtype)
        new_mems, hidden_states, attentions = [], [], []
        for i, layer_module in enumerate(self.layer):
            if use_mems:
                new_mems.append(self.cache_mem(output_h, mems_bf[i]))
            if output_hidden_states:
                hidden_states.append((output_h, output_g) if output_g is not None else output_h)
            output_h, output_g, probs = layers.run_layer(
                layer_module, config.gradient_checkpointing and training, output_h, output_g, mask_h, mask_g,
                pos_emb, seg_diff, mems_bf[i], target_mapping, head_masks[i], training=training,
                need_probs=output_attentions)
            if output_attentions:
                attentions.append(probs)
        if output_hidden_states:
            hidden_states.append((output_h, output_g) if output_g is not None else output_h)
            if output_g is not None:
                hidden_states = [h for pair in hidden_states for h in pair]
        output = self.dropout(output_g if output_g is not None else output_h, training=training)
        return XLNetModelOutput(
            last_hidden_state=output,
            mems=tuple(tf.transpose(m, [1, 0, 2]) for m in new_mems) if use_mems else None,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None)

    def _check_structure(self, reference, mems, perm_mask, target_mapping, batch, qlen):
        config = self.config
        if mems is not None:
            if not isinstance(mems, (list, tuple)) or len(mems) != config.n_layer:
                count = len(mems) if isinstance(mems, (list, tuple)) else type(mems).__name__
                raise ValueError(f"mems must be a list of {config.n_layer} tensors (one per layer), got {count}")
            for i, mem in enumerate(mems):
                check_rank(f"mems[{i}]", mem, 3)
                if mem.shape[-1] is not None and mem.shape[-1] != config.d_model:
                    raise ValueError(f"mems[{i}] must be [mem_len, batch, d_model={config.d_model}], got {mem.shape}")
                if tf.executing_eagerly() and int(tf.shape(mem)[1]) != int(batch):
                    raise ValueError(f"mems[{i}] has batch {int(tf.shape(mem)[1])} ([mem_len, batch, d_model]) but "
                                     f"the inputs have batch {int(batch)}")
        if perm_mask is not None:
            check_rank("perm_mask", perm_mask, 3)
            if tf.executing_eagerly() and tuple(perm_mask.shape) != (int(batch), int(qlen), int(qlen)):
                raise ValueError(f"perm_mask must be [batch, seq, seq] = {(int(batch), int(qlen), int(qlen))}, got "
                                 f"{tuple(perm_mask.shape)}")
        if target_mapping is not None:
            check_rank("target_mapping", target_mapping, 3)
            if tf.executing_eagerly() and (int(target_mapping.shape[0]) != int(batch)
                                           or int(target_mapping.shape[2]) != int(qlen)):
                raise ValueError(f"target_mapping must be [batch, num_predict, seq] with batch {int(batch)} and seq "
                                 f"{int(qlen)}, got {tuple(target_mapping.shape)}")
        if config.bi_data and tf.executing_eagerly() and int(batch) % 2:
            raise ValueError(f"bi_data=True needs an even batch size (forward and backward halves), got {int(batch)}")


# ---------------------------------------------------------------------------------------------------------------
# Head layers


class XLNetLMLoss(keras.layers.Layer):
    """The LM projection `lm_loss`: logits = h @ W^T + b, W tied to the word embeddings by default."""

    def __init__(self, config, tied_embeddings=None, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.tied_embeddings = tied_embeddings

    def build(self, input_shape=None):
        if self.tied_embeddings is None:
            self.weight = layers.add_weight(self, "weight", (self.config.vocab_size, self.config.d_model),
                                            initializers.normal(self.config.initializer_range))
        self.bias = layers.add_weight(self, "bias", (self.config.vocab_size,), "zeros")
        self.built = True

    def call(self, hidden_states):
        weight = self.tied_embeddings() if self.tied_embeddings is not None else self.weight
        logits = linear(hidden_states, tf.transpose(tf.cast(weight, hidden_states.dtype)))
        return logits + tf.cast(self.bias, logits.dtype)


class XLNetPoolerStartLogits(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.dense = layers.dense(1, config.initializer_range, name="dense")

    def call(self, hidden_states, p_mask=None):
        return _masked_logits(tf.squeeze(self.dense(hidden_states), -1), p_mask)


class XLNetPoolerEndLogits(keras.layers.Layer):
    """End logits from [hidden ; start state]: dense_0, tanh, LayerNorm, dense_1. The concatenation is never
    built: hidden @ W_top + start @ W_bottom (so the beam search costs [batch, seq, k] not [.., 2 * hidden])."""

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.hidden_size = config.d_model
        self.dense_0 = layers.dense(config.d_model, config.initializer_range, name="dense_0")
        self.activation = tf.tanh
        self.LayerNorm = layers.layer_norm(config.layer_norm_eps, name="LayerNorm")
        self.dense_1 = layers.dense(1, config.initializer_range, name="dense_1")

    def build(self, input_shape=None):
        self.dense_0.build((None, 2 * self.hidden_size))
        self.dense_1.build((None, self.hidden_size))
        self.LayerNorm.build((None, self.hidden_size))
        self.built = True

    def call(self, hidden_states, start_states, p_mask=None):
        """hidden_states [b, s, (1,) h]; start_states [b, 1, (k,) h] broadcastable to it. Returns [b, s(, k)]."""
        dtype = hidden_states.dtype
        kernel = tf.cast(self.dense_0.kernel, dtype)
        x = (linear(hidden_states, kernel[:self.hidden_size])
             + linear(tf.cast(start_states, dtype), kernel[self.hidden_size:]) + tf.cast(self.dense_0.bias, dtype))
        x = self.LayerNorm(self.activation(x))
        x = linear(x, tf.cast(self.dense_1.kernel, dtype)) + tf.cast(self.dense_1.bias, dtype)
        return _masked_logits(tf.squeeze(x, -1), p_mask)


class XLNetPoolerAnswerClass(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.hidden_size = config.d_model
        self.dense_0 = layers.dense(config.d_model, config.initializer_range, name="dense_0")
        self.activation = tf.tanh
        self.dense_1 = layers.dense(1, config.initializer_range, use_bias=False, name="dense_1")

    def call(self, hidden_states, start_states, cls_index=None):
        """start_states [b, h]; the <cls> state is at cls_index (default: the last position)."""
        if cls_index is not None:
            cls_state = tf.gather(hidden_states, tf.reshape(tf.cast(cls_index, tf.int32), [-1]), axis=1,
                                  batch_dims=1)
        else:
            cls_state = hidden_states[:, -1]
        x = self.activation(self.dense_0(tf.concat([tf.cast(start_states, cls_state.dtype), cls_state], -1)))
        return tf.squeeze(self.dense_1(x), -1)


# ---------------------------------------------------------------------------------------------------------------
# Models

_INPUTS = ("input_ids", "attention_mask", "mems", "perm_mask", "target_mapping", "token_type_ids", "input_mask",
           "head_mask", "inputs_embeds")
# use_cache: the reference's deprecated name of use_mems.
_OPTIONS = ("use_mems", "output_attentions", "output_hidden_states", "return_dict", "use_cache")


class XLNetPreTrainedModel(PreTrainedModel):
    config_class = XLNetConfig
    base_model_prefix = "transformer"
    input_names = _INPUTS
    option_names = _OPTIONS
    checkpoint_map = XLNET_CHECKPOINT_MAP
    input_embeddings_path = "word_embedding"
    serving_input_names = ("input_ids", "attention_mask", "token_type_ids")

    def _main_layer(self):
        return XLNetMainLayer(self.config, name="transformer")

    # --- training with recurrence memory -----------------------------------------------------------------

    def fit(self, *args, callbacks=None, **kwargs):
        """Keras fit. With config.use_mems_train=True the memory of each training step is fed to the next one
        (as the reference's Trainer does with past_index): consecutive batches continue the same streams row by
        row. A smaller batch (the last one) continues the first rows; a larger one starts without memory; the
        memory is cleared at the start of each epoch. Pass `mems` in the inputs to manage memory yourself."""
        callbacks = list(callbacks or [])
        if self.config.use_mems_train:
            state = self._training_memory()
            state.reset()
            callbacks.append(_ResetMemory(state))
            if self.jit_compile:
                # Memories change shape between steps: no XLA for this training loop.
                self.jit_compile = False
                self.train_function = None
        return super().fit(*args, callbacks=callbacks, **kwargs)

    def _training_memory(self):
        state = self.__dict__.get("_tfm_training_memory")
        if state is None:
            state = _TrainingMemory(self.config.n_layer, self.config.d_model, self.compute_dtype)
            object.__setattr__(self, "_tfm_training_memory", state)
        return state

    def train_step(self, data):
        state = self.__dict__.get("_tfm_training_memory")
        if state is None or not self.config.use_mems_train:
            return super().train_step(data)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x = dict(self._inputs_dict(x))
        if x.get("mems") is not None:
            return super().train_step(data)
        reference = x.get("input_ids", x.get("inputs_embeds"))
        batch = tf.shape(reference)[0]
        if isinstance(self, tasks.MultipleChoiceTask):
            batch = batch * tf.shape(reference)[1]
        x["mems"] = state.read(batch)
        # compute_loss (called inside the step with this step's outputs) stores the new memory.
        object.__setattr__(self, "_tfm_carry_memory", True)
        try:
            return super().train_step(keras.utils.pack_x_y_sample_weight(x, y, sample_weight))
        finally:
            object.__setattr__(self, "_tfm_carry_memory", False)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x, y, y_pred, sample_weight, training)
        if training and self.__dict__.get("_tfm_carry_memory") and isinstance(y_pred, out.ModelOutput) \
                and y_pred.get("mems") is not None:
            with tf.control_dependencies(self._training_memory().write(y_pred["mems"])):
                loss = tf.identity(loss)
        return loss

    def predict_step(self, data):
        # Memories belong to one batch's streams: predict() would concatenate them across batches. Drop them.
        result = super().predict_step(data)
        if isinstance(result, out.ModelOutput) and "mems" in result:
            result = type(result)([(k, v) for k, v in result.items() if k != "mems"])
        return result


class _TrainingMemory:
    """Per-layer memories carried between training steps: variables of changing shape, [m, batch, d_model]."""

    def __init__(self, n_layer, d_model, dtype):
        self.d_model = d_model
        self.dtype = dtype
        self.variables = [tf.Variable(tf.zeros([0, 0, d_model], dtype), shape=tf.TensorShape(None),
                                      trainable=False, name=f"training_mems_{i}") for i in range(n_layer)]

    def reset(self):
        for variable in self.variables:
            variable.assign(tf.zeros([0, 0, self.d_model], self.dtype))

    def read(self, batch):
        mems = []
        for variable in self.variables:
            value = variable.read_value()
            fits = tf.shape(value)[1] >= batch
            value = tf.cond(fits, lambda v=value: v[:, :batch],
                            lambda v=value: tf.zeros([0, batch, self.d_model], v.dtype))
            value.set_shape([None, None, self.d_model])
            mems.append(value)
        return mems

    def write(self, mems):
        return [variable.assign(tf.cast(mem, self.dtype)) for variable, mem in zip(self.variables, mems)]


class _ResetMemory(keras.callbacks.Callback):
    def __init__(self, state):
        super().__init__()
        self.state = state

    def on_epoch_begin(self, epoch, logs=None):
        self.state.reset()


class XLNetModel(tasks.BaseModelTask, XLNetPreTrainedModel):
    """The bare XLNet: last hidden states (of the query stream when target_mapping is given) and mems."""

    output_class = XLNetModelOutput

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.transformer = self._main_layer()


class XLNetLMHeadModel(tasks.MaskedLMTask, XLNetPreTrainedModel):
    """XLNet with the LM projection (tied to the word embeddings). Labels [batch, num_predict] (or [batch, seq]
    without target_mapping); -100 is ignored."""

    output_class = XLNetLMHeadModelOutput
    output_embeddings_path = "lm_loss"

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.transformer = self._main_layer()
        tied = None
        if config.tie_word_embeddings:
            tied = lambda: self.transformer.word_embedding.embeddings  # noqa: E731
        self.lm_loss = XLNetLMLoss(config, tied_embeddings=tied, name="lm_loss")

    def head(self, base_outputs, inputs, training=False):
        return {"logits": self.lm_loss(base_outputs.last_hidden_state)}

    def generate(self, input_ids, max_new_tokens=20, do_sample=False, temperature=1.0, top_k=0,
                 eos_token_id="config", pad_token_id=None, use_mems=True, seed=None):
        """Left-to-right decoding as the reference documents it: a dummy token is appended at each step, hidden
        from every position by perm_mask and predicted through target_mapping. With `use_mems` the previous
        steps' hidden states come from `mems` (the last real token is re-encoded with the new one, as the
        reference's prepare_inputs_for_generation does); without, the whole sequence is re-encoded.

        input_ids: [batch, len] prompts without padding (the reference's generation ignores attention masks).
        Greedy by default; `do_sample` draws from softmax(logits / temperature), restricted to the top_k.
        Returns int32 [batch, len + new tokens]; rows that produced `eos_token_id` (by default the config's, as
        the reference; None never stops) continue with `pad_token_id`, and decoding stops when all rows have."""
        if eos_token_id == "config":
            eos_token_id = self.config.eos_token_id
        ids = tf.cast(tf.convert_to_tensor(input_ids), tf.int32)
        check_rank("input_ids", ids, 2)
        batch = int(ids.shape[0])
        if pad_token_id is None:
            pad_token_id = self.config.pad_token_id if self.config.pad_token_id is not None else 0
        generator = tf.random.Generator.from_seed(seed) if (do_sample and seed is not None) else None
        finished = tf.zeros([batch], tf.bool)
        mems = None
        offset = 2
        for _ in range(max_new_tokens):
            if mems is not None:
                step_ids = ids[:, -offset:]
                mems = [m[:-offset] for m in mems]
            else:
                step_ids = ids
            step_ids = tf.concat([step_ids, tf.zeros([batch, 1], tf.int32)], axis=1)
            length = int(step_ids.shape[1])
            perm_mask = np.zeros((batch, length, length), np.float32)
            perm_mask[:, :, -1] = 1.0
            target_mapping = np.zeros((batch, 1, length), np.float32)
            target_mapping[:, 0, -1] = 1.0
            result = self(input_ids=step_ids, perm_mask=perm_mask, target_mapping=target_mapping, mems=mems,
                          use_mems=use_mems, training=False)
            logits = tf.cast(result.logits[:, -1], tf.float32)
            if do_sample:
                logits = logits / temperature
                if top_k:
                    kth = tf.math.top_k(logits, k=min(top_k, int(logits.shape[-1]))).values[:, -1:]
                    logits = tf.where(logits < kth, tf.fill(tf.shape(logits), -np.inf), logits)
                if generator is not None:
                    seeds = generator.uniform_full_int([2], tf.int32)
                    next_token = tf.random.stateless_categorical(logits, 1, seed=seeds)[:, 0]
                else:
                    next_token = tf.random.categorical(logits, 1)[:, 0]
            else:
                next_token = tf.argmax(logits, axis=-1)
            next_token = tf.cast(next_token, tf.int32)
            next_token = tf.where(finished, tf.cast(pad_token_id, tf.int32), next_token)
            ids = tf.concat([ids, next_token[:, None]], axis=1)
            if eos_token_id is not None:
                finished = tf.logical_or(finished, tf.equal(next_token, eos_token_id))
                if bool(tf.reduce_all(finished)):
                    break
            mems = list(result.mems) if use_mems and result.mems is not None else None
        return ids


class XLNetForSequenceClassification(tasks.SequenceClassificationTask, XLNetPreTrainedModel):
    """Sequence summary (by default the last token, <cls>) -> logits_proj."""

    output_class = XLNetForSequenceClassificationOutput

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.transformer = self._main_layer()
        self.sequence_summary = SequenceSummary(config, config.initializer_range, name="sequence_summary")
        self.logits_proj = layers.dense(config.num_labels, config.initializer_range, name="logits_proj")

    def head(self, base_outputs, inputs, training=False):
        summary = self.sequence_summary(base_outputs.last_hidden_state, training=training)
        return {"logits": self.logits_proj(summary)}


class XLNetForTokenClassification(tasks.TokenClassificationTask, XLNetPreTrainedModel):
    output_class = XLNetForTokenClassificationOutput

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.transformer = self._main_layer()
        self.classifier = layers.dense(config.num_labels, config.initializer_range, name="classifier")

    def head(self, base_outputs, inputs, training=False):
        return {"logits": self.classifier(base_outputs.last_hidden_state)}


class XLNetForMultipleChoice(tasks.MultipleChoiceTask, XLNetPreTrainedModel):
    """Inputs [batch, num_choices, seq]; mems, perm_mask and target_mapping are passed as given (per flattened
    row), as the reference does."""

    output_class = XLNetForMultipleChoiceOutput
    input_names = ("input_ids", "token_type_ids", "input_mask", "attention_mask", "mems", "perm_mask",
                   "target_mapping", "head_mask", "inputs_embeds")
    _per_choice = ("input_ids", "token_type_ids", "input_mask", "attention_mask", "inputs_embeds")

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.transformer = self._main_layer()
        self.sequence_summary = SequenceSummary(config, config.initializer_range, name="sequence_summary")
        self.logits_proj = layers.dense(1, config.initializer_range, name="logits_proj")

    def base_inputs(self, inputs):
        flat = super().base_inputs({k: v for k, v in inputs.items() if k in self._per_choice})
        return {**{k: v for k, v in inputs.items() if k not in self._per_choice}, **flat}

    def head(self, base_outputs, inputs, training=False):
        summary = self.sequence_summary(base_outputs.last_hidden_state, training=training)
        return {"logits": self.logits_proj(summary)}


class XLNetForQuestionAnsweringSimple(tasks.QuestionAnsweringTask, XLNetPreTrainedModel):
    """Start and end logits per token (config.num_labels must be 2)."""

    output_class = XLNetForQuestionAnsweringSimpleOutput

    def __init__(self, config, **kwargs):
        if config.num_labels != 2:
            raise ValueError(f"XLNetForQuestionAnsweringSimple needs num_labels=2 (start, end), got {config.num_labels}")
        super().__init__(config, **kwargs)
        self.transformer = self._main_layer()
        self.qa_outputs = layers.dense(config.num_labels, config.initializer_range, name="qa_outputs")

    def head(self, base_outputs, inputs, training=False):
        return {"logits": self.qa_outputs(base_outputs.last_hidden_state)}


class XLNetForQuestionAnswering(tasks.HeadTask, XLNetPreTrainedModel):
    """SQuAD 2.0 head with beam search over start_n_top starts x end_n_top ends and an answerability score.

    With start_positions and end_positions the output holds the loss only: start and end cross entropy (end
    logits conditioned on the true start), plus 0.5 x binary cross entropy of cls_logits against is_impossible
    when is_impossible and cls_index are given. Otherwise: start_top_log_probs / start_top_index
    [batch, start_n_top], end_top_log_probs / end_top_index [batch, end_n_top * start_n_top] and cls_logits
    [batch]. p_mask (1 = cannot be in the answer) masks both start and end logits.
    """

    output_class = XLNetForQuestionAnsweringOutput
    input_names = _INPUTS + ("start_positions", "end_positions", "is_impossible", "cls_index", "p_mask")
    label_names = ("start_positions", "end_positions", "is_impossible")

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.transformer = self._main_layer()
        self.start_logits = XLNetPoolerStartLogits(config, name="start_logits")
        self.end_logits = XLNetPoolerEndLogits(config, name="end_logits")
        self.answer_class = XLNetPoolerAnswerClass(config, name="answer_class")

    def has_labels(self, labels):
        return labels.get("start_positions") is not None and labels.get("end_positions") is not None

    def _labels_into_inputs(self, data):
        # The loss needs the forward pass (end logits at the true start): labels given as y join the inputs.
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if y is None:
            return data
        x = {**self._inputs_dict(x), **self._labels_from(x, y)}
        return keras.utils.pack_x_y_sample_weight(x, None, sample_weight)

    def train_step(self, data):
        return super().train_step(self._labels_into_inputs(data))

    def test_step(self, data):
        return super().test_step(self._labels_into_inputs(data))

    def forward(self, inputs, labels, options, training=False):
        return_dict = options.pop("return_dict", True)
        inputs = dict(inputs)
        cls_index, p_mask = inputs.pop("cls_index", None), inputs.pop("p_mask", None)
        for name in ("start_positions", "end_positions", "is_impossible"):
            inputs.pop(name, None)
        labels = {k: v for k, v in labels.items() if v is not None}
        base = self.transformer(**inputs, **options, training=training)
        hidden = base.last_hidden_state
        if p_mask is not None:
            check_rank("p_mask", p_mask, 2)
            check_same_shape("last_hidden_state[..., 0]", hidden[:, :, 0], "p_mask", p_mask)
        start_logits = self.start_logits(hidden, p_mask)
        if self.has_labels(labels):
            fields = {"loss": self.task_loss(labels, {"start_logits": start_logits, "hidden_states": hidden,
                                                      "p_mask": p_mask, "cls_index": cls_index}, inputs)}
        else:
            fields = self.beam_search(hidden, start_logits, p_mask, cls_index)
        fields.update({k: v for k, v in base.items() if k in ("mems", "hidden_states", "attentions")})
        result = self.output_class(**fields)
        return result if return_dict else result.to_tuple()

    def task_loss(self, labels, outputs, inputs):
        if "hidden_states" not in outputs or not tf.is_tensor(outputs.get("hidden_states")):
            raise ValueError("XLNetForQuestionAnswering computes its loss inside the forward pass: put "
                             "start_positions and end_positions (and optionally is_impossible, cls_index) in the "
                             "inputs")
        hidden, p_mask = outputs["hidden_states"], outputs["p_mask"]
        start_positions = tf.reshape(tf.cast(labels["start_positions"], tf.int32), [-1])
        end_positions = tf.reshape(tf.cast(labels["end_positions"], tf.int32), [-1])
        start_states = tf.gather(hidden, start_positions, axis=1, batch_dims=1)[:, None]   # [b, 1, h]
        end_logits = self.end_logits(hidden, start_states, p_mask)
        loss = (losses.cross_entropy(outputs["start_logits"], start_positions)
                + losses.cross_entropy(end_logits, end_positions)) / 2.0
        cls_index = outputs.get("cls_index")
        if cls_index is not None and labels.get("is_impossible") is not None:
            cls_logits = self.answer_class(hidden, tf.gather(hidden, start_positions, axis=1, batch_dims=1),
                                           cls_index)
            target = tf.reshape(tf.cast(labels["is_impossible"], tf.float32), [-1])
            cls_loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
                labels=target, logits=tf.cast(cls_logits, tf.float32)))
            loss = loss + 0.5 * cls_loss
        return loss

    def beam_search(self, hidden, start_logits, p_mask, cls_index):
        config = self.config
        start_probs = attn.stable_softmax(start_logits)                                    # [b, s]
        start_top_probs, start_top_index = tf.math.top_k(start_probs, k=config.start_n_top)  # [b, k]
        start_states = tf.gather(hidden, start_top_index, axis=1, batch_dims=1)             # [b, k, h]
        end_p_mask = p_mask[:, :, None] if p_mask is not None else None
        end_logits = self.end_logits(hidden[:, :, None, :], start_states[:, None, :, :], end_p_mask)  # [b, s, k]
        end_probs = attn.stable_softmax(tf.transpose(end_logits, [0, 2, 1]))                # [b, k, s]
        end_top_probs, end_top_index = tf.math.top_k(end_probs, k=config.end_n_top)         # [b, k, e]
        # The reference's order: [b, e, k] flattened, end candidate major.
        end_top_probs = tf.reshape(tf.transpose(end_top_probs, [0, 2, 1]), [-1, config.start_n_top * config.end_n_top])
        end_top_index = tf.reshape(tf.transpose(end_top_index, [0, 2, 1]), [-1, config.start_n_top * config.end_n_top])
        weighted_start = tf.einsum("blh,bl->bh", hidden, tf.cast(start_probs, hidden.dtype))
        cls_logits = self.answer_class(hidden, weighted_start, cls_index)
        return {"start_top_log_probs": start_top_probs, "start_top_index": start_top_index,
                "end_top_log_probs": end_top_probs, "end_top_index": end_top_index, "cls_logits": cls_logits}


# The TF names of the reference documents are the same classes.
TFXLNetModel = XLNetModel
TFXLNetLMHeadModel = XLNetLMHeadModel
TFXLNetForSequenceClassification = XLNetForSequenceClassification
TFXLNetForMultipleChoice = XLNetForMultipleChoice
TFXLNetForTokenClassification = XLNetForTokenClassification
TFXLNetForQuestionAnsweringSimple = XLNetForQuestionAnsweringSimple
TFXLNetForQuestionAnswering = XLNetForQuestionAnswering
TFXLNetMainLayer = XLNetMainLayer
TFXLNetPreTrainedModel = XLNetPreTrainedModel
