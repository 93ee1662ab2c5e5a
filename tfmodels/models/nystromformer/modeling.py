"""Nyströmformer: BERT-style post-LayerNorm encoder whose self-attention is the Nyström approximation of softmax
attention (Xiong et al., 2021), with every documented task head.

Attention, as the reference computes it (queries and keys scaled by head_dim ** -1/4):

    landmarks    Q~, K~ = segment means of Q and K                     [L = num_landmarks rows]
    kernel_1     = softmax(Q K~^T)                                     [N, L]   (no mask)
    kernel_2     = softmax(Q~ K~^T)                                    [L, L]
    kernel_3     = softmax(Q~ K^T + padding mask)                      [L, N]
    attention    = kernel_1 pinv(kernel_2)                             [N, L]   (the `attentions` output)
    context      = attention (kernel_3 V) + depthwise_conv(V)

pinv is the reference's iterative Moore-Penrose inverse (6 steps of the cubic Newton-Schulz-like iteration), with
both initial-coefficient options. The depthwise convolution runs along the sequence, one kernel per head shared
over the head dimension, zero-padded by kernel // 2 at both ends.

Exact attention: when num_landmarks == segment_means_seq_len, the reference computes exact softmax attention
(with the padding mask) at every length, and so do we. We also use exact attention when the sequence is not
longer than num_landmarks (every token would be its own landmark: that is the limit the approximation
converges to, and segment means of fewer tokens than landmarks are not defined).

Any length. The reference reshapes the sequence into num_landmarks segments of segment_means_seq_len //
num_landmarks tokens, so it only runs at length == segment_means_seq_len. We form the landmarks from the actual
length N instead: token j belongs to landmark floor(j * L / N). The segments are contiguous, cover the sequence,
and are all non-empty when N > L; their sizes are floor(N / L) or ceil(N / L). When L divides N they are the
reference's equal segments of N / L tokens, so our output at length N equals the reference built with
segment_means_seq_len = N (in particular, at the configured segment_means_seq_len, the reference itself).

Padding: as in the reference, the padding mask enters kernel_3 (and the exact path) only; padded positions
still contribute to the segment means and to the convolution, and the "original" pseudo-inverse coefficient
is a maximum over the whole batch. Results therefore depend on how much padding a batch carries, exactly as the
reference's do; pad to a fixed length (e.g. segment_means_seq_len) for batch-independent outputs.
"""
import keras
import numpy as np
import tensorflow as tf

from tfmodels.core import attention as attn, encoder, initializers, layers, outputs as out
from tfmodels.core.text_heads import TextPreTrainedModel, standard_heads
from tfmodels.models.nystromformer.checkpoint import NYSTROMFORMER_CHECKPOINT_MAP
from tfmodels.models.nystromformer.configuration import NystromformerConfig

PINV_ITERATIONS = 6


# ---------------------------------------------------------------------------------------------------------------
# Attention building blocks (pure TF, XLA-compatible, memory linear in the sequence length)


def segment_means(x, num_landmarks):
    """Landmarks of x [batch, N, channels]: the mean of each of `num_landmarks` contiguous segments -> [batch, L,
    channels]. Token j belongs to segment floor(j * L / N) (equal segments of N / L tokens when L divides N, as the
    reference's reshape; otherwise sizes floor(N / L) and ceil(N / L)). Needs N >= L."""
    length = x.shape[1]
    if length is not None and length % num_landmarks == 0:
        batch, channels = tf.shape(x)[0], x.shape[-1]
        segments = tf.reshape(x, [batch, num_landmarks, length // num_landmarks, channels])
        return tf.reduce_mean(segments, axis=2)
    length = tf.shape(x)[1]
    segment = (tf.range(length) * num_landmarks) // length                       # [N]
    one_hot = tf.one_hot(segment, num_landmarks, axis=0, dtype=x.dtype)          # [L, N]
    counts = tf.maximum(tf.reduce_sum(one_hot, axis=1, keepdims=True), 1.0)
    return tf.matmul(one_hot / counts, x)                                         # broadcasts over batch


def iterative_inverse(matrix, exact_coefficient, iterations=PINV_ITERATIONS):
    """The reference's iterative Moore-Penrose inverse of softmax matrices [..., L, L].

    Z_0 = K^T / c with c the largest column sum: over the whole tensor (exact_coefficient=False, the reference's
    "original" option) or per matrix (True, c = ||K||_1). Then Z <- 1/4 Z (13 I - KZ (15 I - KZ (7 I - KZ))).
    """
    if matrix.dtype in (tf.float16, tf.bfloat16):
        return tf.cast(iterative_inverse(tf.cast(matrix, tf.float32), exact_coefficient, iterations), matrix.dtype)
    column_sums = tf.reduce_sum(matrix, axis=-2)
    if exact_coefficient:
        scale = 1.0 / tf.reduce_max(column_sums, axis=-1)[..., None, None]
    else:
        scale = 1.0 / tf.reduce_max(column_sums)
    value = scale * tf.linalg.matrix_transpose(matrix)
    identity = tf.eye(tf.shape(matrix)[-1], dtype=matrix.dtype)
    for _ in range(iterations):
        kv = tf.matmul(matrix, value)
        inner = tf.matmul(kv, 15.0 * identity - tf.matmul(kv, 7.0 * identity - kv))
        value = tf.matmul(0.25 * value, 13.0 * identity - inner)
    return value


def sequence_depthwise_conv(values, kernel, num_heads, block=128):
    """Depthwise convolution along the sequence: values [batch, N, heads * head_dim], kernel [heads, K] (K odd),
    zero padding K // 2 at both ends; head h's kernel applies to each of its head_dim channels
    (the reference's Conv2d(heads, heads, (K, 1), groups=heads) on [batch, heads, N, head_dim]).

    Computed blockwise as a matmul with a banded Toeplitz matrix: the sequence is cut into blocks of `block`
    positions, each read with its K - 1 neighbours, and multiplied by the [block, block + K - 1] band that holds
    the kernel. Time and memory are linear in N, the work is GEMM-shaped (fast forward and backward, with and
    without XLA).
    """
    kernel_size = kernel.shape[-1]
    batch, length = tf.shape(values)[0], tf.shape(values)[1]
    channels = values.shape[-1]
    head_dim = channels // num_heads
    static_length = values.shape[1]
    if static_length is not None:
        block = min(block, max(static_length, 1))
    half = kernel_size // 2
    num_blocks = (length + block - 1) // block
    padded = tf.pad(values, [[0, 0], [half, half + num_blocks * block - length], [0, 0]])
    frames = tf.signal.frame(padded, block + kernel_size - 1, block, axis=1)   # [B, blocks, block + K - 1, C]
    frames = tf.reshape(frames, [batch, num_blocks, block + kernel_size - 1, num_heads, head_dim])
    offsets = tf.range(block + kernel_size - 1)[None, :] - tf.range(block)[:, None]   # [block, block + K - 1]
    inside = (offsets >= 0) & (offsets < kernel_size)
    band = tf.gather(tf.cast(kernel, values.dtype), tf.clip_by_value(offsets, 0, kernel_size - 1), axis=1)
    band = tf.where(inside[None], band, tf.zeros_like(band))                   # [heads, block, block + K - 1]
    result = tf.einsum("hts,bishd->bithd", band, frames)
    result = tf.reshape(result, [batch, num_blocks * block, channels])
    return result[:, :length]


# ---------------------------------------------------------------------------------------------------------------
# Layers


class NystromformerConv(keras.layers.Layer):
    """The depthwise convolution over the values. Its weight keeps the reference's layout [heads, 1, K, 1]."""

    def __init__(self, num_heads, kernel_size, initializer_range, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.kernel_size = kernel_size
        self.initializer_range = initializer_range

    def build(self, input_shape=None):
        self.weight = layers.add_weight(self, "weight", (self.num_heads, 1, self.kernel_size, 1),
                                        initializers.normal(self.initializer_range))
        self.built = True

    def call(self, values):
        kernel = tf.reshape(self.weight, [self.num_heads, self.kernel_size])
        return sequence_depthwise_conv(values, kernel, self.num_heads)


class NystromformerSelfAttention(encoder.SelfAttentionBase):
    def __init__(self, config, layer_index=0, **kwargs):
        super().__init__(config, **kwargs)
        self.num_landmarks = config.num_landmarks
        self.conv = None
        if config.conv_kernel_size is not None:
            self.conv = NystromformerConv(self.num_heads, config.conv_kernel_size, config.initializer_range,
                                          name="conv")

    def build(self, input_shape):
        for dense in (self.query, self.key, self.value):
            dense.build(input_shape)
        if self.conv is not None:
            self.conv.build(None)
        self.built = True

    def call(self, hidden_states, attention_mask=None, head_mask=None, output_attentions=False, training=False):
        """hidden_states [B, N, hidden]; attention_mask additive [B, 1, 1, N] (or None); head_mask [1, H, 1, 1]."""
        # Divided (not multiplied by the inverse) as the reference does: the pseudo-inverse amplifies ulps.
        divisor = tf.cast(np.sqrt(np.sqrt(self.head_dim)), hidden_states.dtype)
        query = layers.apply_dense(self.query, hidden_states) / divisor
        key = layers.apply_dense(self.key, hidden_states) / divisor
        value = layers.apply_dense(self.value, hidden_states)
        length = hidden_states.shape[1]
        exact = self.config.exact_attention
        if exact or (length is not None and length <= self.num_landmarks):
            context, probs = self._exact(query, key, value, attention_mask, head_mask)
        elif length is not None:
            context, probs = self._nystrom(query, key, value, attention_mask, head_mask, output_attentions)
        else:
            dynamic_length = tf.shape(hidden_states)[1]
            context, probs = tf.cond(
                dynamic_length <= self.num_landmarks,
                lambda: self._exact(query, key, value, attention_mask, head_mask),
                lambda: self._nystrom(query, key, value, attention_mask, head_mask, output_attentions))
        context = attn.merge_heads(context)
        if self.conv is not None:
            context = context + self.conv(value)
        return context, (probs if output_attentions else None)

    def _exact(self, query, key, value, attention_mask, head_mask):
        scores = tf.matmul(self.split_heads(query), self.split_heads(key), transpose_b=True)
        if attention_mask is not None:
            scores = scores + tf.cast(attention_mask, scores.dtype)
        probs = attn.stable_softmax(scores)
        if head_mask is not None:
            probs = probs * head_mask
        return tf.matmul(probs, self.split_heads(value)), probs

    def _nystrom(self, query, key, value, attention_mask, head_mask, output_attentions):
        q_landmarks = self.split_heads(segment_means(query, self.num_landmarks))      # [B, H, L, D]
        k_landmarks = self.split_heads(segment_means(key, self.num_landmarks))
        query, key, value = self.split_heads(query), self.split_heads(key), self.split_heads(value)
        kernel_1 = attn.stable_softmax(tf.matmul(query, k_landmarks, transpose_b=True))       # [B, H, N, L]
        kernel_2 = attn.stable_softmax(tf.matmul(q_landmarks, k_landmarks, transpose_b=True))  # [B, H, L, L]
        scores_3 = tf.matmul(q_landmarks, key, transpose_b=True)                               # [B, H, L, N]
        if attention_mask is not None:
            scores_3 = scores_3 + tf.cast(attention_mask, scores_3.dtype)
        kernel_3 = attn.stable_softmax(scores_3)
        inverse = iterative_inverse(kernel_2, self.config.inv_coeff_init_option)
        new_value = tf.matmul(kernel_3, value)                                                # [B, H, L, D]
        probs = tf.matmul(kernel_1, inverse)                                                  # [B, H, N, L]
        if head_mask is not None:
            probs = probs * head_mask
        return tf.matmul(probs, new_value), probs


class NystromformerLayer(encoder.PostNormLayer):
    attention_class = NystromformerSelfAttention


class NystromformerMainLayer(encoder.TextMainLayer):
    """The skeleton with Nyströmformer's layers; positions count from 2 (fairseq-style offset, no
    padding-aware counting), the base-model output is the reference's BaseModelOutputWithPastAndCrossAttentions."""

    layer_class = NystromformerLayer
    output_class = out.BaseModelOutputWithPastAndCrossAttentions
    position_offset = 2
    layers_share_one_graph = True


class NystromformerPreTrainedModel(TextPreTrainedModel):
    config_class = NystromformerConfig
    base_model_prefix = "nystromformer"
    checkpoint_map = NYSTROMFORMER_CHECKPOINT_MAP
    main_layer_class = NystromformerMainLayer
    lm_head_path = "cls.predictions"
    qa_forces_two_labels = True


(NystromformerModel, NystromformerForMaskedLM, NystromformerForSequenceClassification, NystromformerForMultipleChoice,
 NystromformerForTokenClassification, NystromformerForQuestionAnswering) = standard_heads(NystromformerPreTrainedModel)


# The TF names of the reference documents are the same classes.
TFNystromformerModel = NystromformerModel
TFNystromformerForMaskedLM = NystromformerForMaskedLM
TFNystromformerForSequenceClassification = NystromformerForSequenceClassification
TFNystromformerForMultipleChoice = NystromformerForMultipleChoice
TFNystromformerForTokenClassification = NystromformerForTokenClassification
TFNystromformerForQuestionAnswering = NystromformerForQuestionAnswering
