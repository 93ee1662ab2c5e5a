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

from tfmodels.core import attention as attn, blocks
from tfmodels.core import initializers, layers, outputs as out, tasks
from tfmodels.core.heads import ClassificationHead, LMHead
from tfmodels.core.inputs import check_ids_in_range, check_max_length, check_rank, check_same_shape, text_reference
from tfmodels.core.layers import apply_chunking
from tfmodels.core.modeling import PreTrainedModel
from tfmodels.models.nystromformer.checkpoint import NYSTROMFORMER_CHECKPOINT_MAP
from tfmodels.models.nystromformer.configuration import NystromformerConfig

# The reference's position ids start at 2 (fairseq-style offset, no padding-aware counting).
POSITION_OFFSET = 2
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


class NystromformerEmbeddings(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        ir = config.initializer_range
        self.word_embeddings = layers.embedding(config.vocab_size, config.hidden_size, ir, name="word_embeddings")
        self.position_embeddings = layers.embedding(config.max_position_embeddings + POSITION_OFFSET,
                                                    config.hidden_size, ir, name="position_embeddings")
        self.token_type_embeddings = layers.embedding(config.type_vocab_size, config.hidden_size, ir,
                                                      name="token_type_embeddings")
        self.LayerNorm = layers.layer_norm(config.layer_norm_eps, name="LayerNorm")
        self.dropout = layers.dropout(config.hidden_dropout_prob)

    def build(self, input_shape=None):
        # Built explicitly: with inputs_embeds the word table is unused but still a checkpoint weight.
        for table in (self.word_embeddings, self.position_embeddings, self.token_type_embeddings):
            table.build(None)
        self.LayerNorm.build([None, None, self.config.hidden_size])
        self.built = True

    def call(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None, training=False):
        config = self.config
        if input_ids is not None:
            input_ids = check_ids_in_range("input_ids", input_ids, config.vocab_size)
            inputs_embeds = self.word_embeddings(input_ids)
            if config.pad_token_id is not None:
                # The reference's nn.Embedding(padding_idx=pad_token_id): the padding row gets no gradient.
                is_pad = tf.equal(input_ids, config.pad_token_id)[..., None]
                inputs_embeds = tf.where(is_pad, tf.stop_gradient(inputs_embeds), inputs_embeds)
        batch, seq_len = tf.shape(inputs_embeds)[0], tf.shape(inputs_embeds)[1]
        if position_ids is None:
            position_ids = tf.range(POSITION_OFFSET, seq_len + POSITION_OFFSET)[None]
        else:
            position_ids = check_ids_in_range("position_ids", position_ids,
                                              config.max_position_embeddings + POSITION_OFFSET,
                                              "max_position_embeddings + 2")
        if token_type_ids is None:
            token_type_ids = tf.zeros([batch, seq_len], tf.int32)
        token_type_ids = check_ids_in_range("token_type_ids", token_type_ids, config.type_vocab_size,
                                            "type_vocab_size")
        embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids)
        embeddings = embeddings + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(embeddings), training=training)


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


class NystromformerSelfAttention(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.num_landmarks = config.num_landmarks
        ir = config.initializer_range
        self.query = layers.dense(config.hidden_size, ir, name="query")
        self.key = layers.dense(config.hidden_size, ir, name="key")
        self.value = layers.dense(config.hidden_size, ir, name="value")
        self.conv = None
        if config.conv_kernel_size is not None:
            self.conv = NystromformerConv(self.num_heads, config.conv_kernel_size, ir, name="conv")

    def build(self, input_shape):
        for dense in (self.query, self.key, self.value):
            dense.build(input_shape)
        if self.conv is not None:
            self.conv.build(None)
        self.built = True

    def call(self, hidden_states, attention_mask=None, head_mask=None, output_attentions=False):
        """hidden_states [B, N, hidden]; attention_mask additive [B, 1, 1, N] (or None); head_mask [1, H, 1, 1]."""
        # Divided (not multiplied by the inverse) as the reference does: the pseudo-inverse amplifies ulps.
        divisor = tf.cast(np.sqrt(np.sqrt(self.head_dim)), hidden_states.dtype)
        query = self.query(hidden_states) / divisor
        key = self.key(hidden_states) / divisor
        value = self.value(hidden_states)
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

    def _split(self, x):
        return attn.split_heads(x, self.num_heads, self.head_dim)

    def _exact(self, query, key, value, attention_mask, head_mask):
        scores = tf.matmul(self._split(query), self._split(key), transpose_b=True)
        if attention_mask is not None:
            scores = scores + tf.cast(attention_mask, scores.dtype)
        probs = attn.stable_softmax(scores)
        if head_mask is not None:
            probs = probs * head_mask
        return tf.matmul(probs, self._split(value)), probs

    def _nystrom(self, query, key, value, attention_mask, head_mask, output_attentions):
        q_landmarks = self._split(segment_means(query, self.num_landmarks))      # [B, H, L, D]
        k_landmarks = self._split(segment_means(key, self.num_landmarks))
        query, key, value = self._split(query), self._split(key), self._split(value)
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


class NystromformerAttention(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.self = NystromformerSelfAttention(config, name="self")
        self.output_ = blocks.PostNormOutput(config, name="output")

    def call(self, hidden_states, attention_mask=None, head_mask=None, output_attentions=False, training=False):
        context, probs = self.self(hidden_states, attention_mask, head_mask, output_attentions=output_attentions)
        return self.output_(context, hidden_states, training=training), probs


class NystromformerLayer(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.attention = NystromformerAttention(config, name="attention")
        self.intermediate = blocks.Intermediate(config, name="intermediate")
        self.output_ = blocks.PostNormOutput(config, config.intermediate_size, name="output")

    def call(self, hidden_states, attention_mask=None, head_mask=None, output_attentions=False, training=False):
        attention_output, probs = self.attention(hidden_states, attention_mask, head_mask,
                                                 output_attentions=output_attentions, training=training)

        def feed_forward(x):
            return self.output_(self.intermediate(x), x, training=training)

        layer_output = apply_chunking(feed_forward, self.config.chunk_size_feed_forward, attention_output)
        return layer_output, probs


class NystromformerEncoder(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.layer = [NystromformerLayer(config, name=f"layer_{i}") for i in range(config.num_hidden_layers)]

    def call(self, hidden_states, attention_mask=None, head_mask=None, output_attentions=False,
             output_hidden_states=False, training=False):
        all_hidden, all_attentions = [], []
        head_masks = attn.head_mask_per_layer(head_mask, len(self.layer), hidden_states.dtype)
        for i, layer_module in enumerate(self.layer):
            if output_hidden_states:
                all_hidden.append(hidden_states)
            hidden_states, probs = layers.run_layer(
                layer_module, self.config.gradient_checkpointing and training, hidden_states, attention_mask,
                head_masks[i], output_attentions=output_attentions, training=training)
            if output_attentions:
                all_attentions.append(probs)
        if output_hidden_states:
            all_hidden.append(hidden_states)
        return out.BaseModelOutputWithPastAndCrossAttentions(
            last_hidden_state=hidden_states,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None)


class NystromformerMainLayer(keras.layers.Layer):
    """Embeddings + encoder: the part every head shares. Takes already-normalised inputs."""

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.embeddings = NystromformerEmbeddings(config, name="embeddings")
        self.encoder = NystromformerEncoder(config, name="encoder")

    def call(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
             inputs_embeds=None, output_attentions=False, output_hidden_states=False, training=False):
        config = self.config
        reference = text_reference(input_ids, inputs_embeds, token_type_ids=token_type_ids, position_ids=position_ids)
        seq_len = tf.shape(reference)[1]
        static_len = reference.shape[1]
        asserts = check_max_length("input_ids", static_len if static_len is not None else seq_len,
                                   config.max_position_embeddings,
                                   f"max_position_embeddings={config.max_position_embeddings}")
        if asserts:
            with tf.control_dependencies(asserts):
                seq_len = tf.identity(seq_len)
        embedding_output = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds,
                                           training=training)
        dtype = embedding_output.dtype
        # No mask: the reference adds an all-zero mask, which changes nothing; skipping it saves a pass.
        additive_mask = None
        if attention_mask is not None:
            check_rank("attention_mask", attention_mask, 2)
            check_same_shape("input_ids", reference, "attention_mask", attention_mask)
            additive_mask = attn.padding_mask_to_additive(attention_mask, dtype)
        encoded = self.encoder(embedding_output, additive_mask, head_mask, output_attentions=output_attentions,
                               output_hidden_states=output_hidden_states, training=training)
        return encoded


# ---------------------------------------------------------------------------------------------------------------
# Models

_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "head_mask", "inputs_embeds")


class NystromformerPreTrainedModel(PreTrainedModel):
    config_class = NystromformerConfig
    base_model_prefix = "nystromformer"
    input_names = _INPUTS
    checkpoint_map = NYSTROMFORMER_CHECKPOINT_MAP


class NystromformerModel(tasks.BaseModelTask, NystromformerPreTrainedModel):
    """The bare encoder returning hidden states (no pooler, as the reference)."""

    output_class = out.BaseModelOutputWithPastAndCrossAttentions

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.nystromformer = NystromformerMainLayer(config, name="nystromformer")


class NystromformerOnlyMLMHead(keras.layers.Layer):
    """`cls.predictions`: transform (dense, activation, LayerNorm), decoder tied to the word embeddings, bias."""

    def __init__(self, config, tied_embeddings=None, **kwargs):
        super().__init__(**kwargs)
        self.predictions = LMHead(config.hidden_size, config.vocab_size, config.layer_norm_eps,
                                  config.initializer_range, activation=config.hidden_act,
                                  tied_embeddings=tied_embeddings, name="predictions")

    def call(self, sequence_output):
        return self.predictions(sequence_output)


class NystromformerForMaskedLM(tasks.MaskedLMTask, NystromformerPreTrainedModel):
    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.nystromformer = NystromformerMainLayer(config, name="nystromformer")
        tied = None
        if config.tie_word_embeddings:
            tied = lambda: self.nystromformer.embeddings.word_embeddings.embeddings  # noqa: E731
        self.cls = NystromformerOnlyMLMHead(config, tied_embeddings=tied, name="cls")

    def head(self, base_outputs, inputs, training=False):
        return {"logits": self.cls(base_outputs.last_hidden_state)}


class NystromformerForSequenceClassification(tasks.SequenceClassificationTask, NystromformerPreTrainedModel):
    """Classification from the first token: dropout, dense, hidden_act, dropout, out_proj."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.nystromformer = NystromformerMainLayer(config, name="nystromformer")
        self.classifier = ClassificationHead(config.hidden_size, config.num_labels, config.hidden_dropout_prob,
                                             config.initializer_range, activation=config.hidden_act,
                                             name="classifier")

    def head(self, base_outputs, inputs, training=False):
        return {"logits": self.classifier(base_outputs.last_hidden_state, training=training)}


class NystromformerForMultipleChoice(tasks.MultipleChoiceTask, NystromformerPreTrainedModel):
    """Inputs [batch, num_choices, seq]; each choice scored from its first token: pre_classifier, ReLU,
    classifier (no dropout, as the reference)."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.nystromformer = NystromformerMainLayer(config, name="nystromformer")
        self.pre_classifier = layers.dense(config.hidden_size, config.initializer_range, name="pre_classifier")
        self.classifier = layers.dense(1, config.initializer_range, name="classifier")

    def head(self, base_outputs, inputs, training=False):
        pooled = tf.nn.relu(self.pre_classifier(base_outputs.last_hidden_state[:, 0]))
        return {"logits": self.classifier(pooled)}


class NystromformerForTokenClassification(tasks.TokenClassificationTask, NystromformerPreTrainedModel):
    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.nystromformer = NystromformerMainLayer(config, name="nystromformer")
        self.dropout = layers.dropout(config.hidden_dropout_prob)
        self.classifier = layers.dense(config.num_labels, config.initializer_range, name="classifier")

    def head(self, base_outputs, inputs, training=False):
        return {"logits": self.classifier(self.dropout(base_outputs.last_hidden_state, training=training))}


class NystromformerForQuestionAnswering(tasks.QuestionAnsweringTask, NystromformerPreTrainedModel):
    """Extractive QA: start and end logits per token. As the reference, the head sets config.num_labels = 2."""

    def __init__(self, config, **kwargs):
        if isinstance(config, dict):
            config = NystromformerConfig.from_dict(config)
        if isinstance(config, NystromformerConfig) and config.num_labels != 2:
            config.num_labels = 2
        super().__init__(config, **kwargs)
        self.nystromformer = NystromformerMainLayer(config, name="nystromformer")
        self.qa_outputs = layers.dense(2, config.initializer_range, name="qa_outputs")

    def head(self, base_outputs, inputs, training=False):
        return {"logits": self.qa_outputs(base_outputs.last_hidden_state)}


# The TF names of the reference documents are the same classes.
TFNystromformerModel = NystromformerModel
TFNystromformerForMaskedLM = NystromformerForMaskedLM
TFNystromformerForSequenceClassification = NystromformerForSequenceClassification
TFNystromformerForMultipleChoice = NystromformerForMultipleChoice
TFNystromformerForTokenClassification = NystromformerForTokenClassification
TFNystromformerForQuestionAnswering = NystromformerForQuestionAnswering
