"""YOSO (Zeng et al., 2021, "You Only Sample (Almost) Once"): a BERT-style post-LayerNorm encoder whose
attention is estimated by locality sensitive hashing, with every documented task head.

Attention per head, on queries/keys/values [batch * heads, seq, head_dim]:
- queries and keys are L2-normalised (always for YOSO-E, while training for the sampled path: hashing only
  looks at directions);
- YOSO-E (use_expectation=True): context = E V with E = (1 - arccos(q.k) / pi)^hash_code_len, exact, pure TF;
- YOSO (use_expectation=False): `num_hash` hash codes per query and key (fast Hadamard hashing or Gaussian
  projections), context = LSH cumulation of the values over the collisions (tfmodels.ops.lsh_attention, on the custom ops of tfmodels.ops.lsh);
- the context is L2-normalised per position, plus a depthwise convolution of the masked values when
  conv_window is set.

Deliberate differences from the reference (transformers 4.57.6), each a reference bug:
- padding: the reference hands the 0/1 attention_mask to kernels that expect the additive form (it computes
  int(1 + mask / 10000), which is 1 for padding too), so padded tokens leak into every real token's attention.
  Here padded keys are excluded and padded queries get a zero context, as in the original YOSO code;
- use_fast_hash=False: the reference hashes the keys and then returns the key codes for the queries as well;
  here queries and keys each get their own codes;
- head_mask: the reference accepts it and ignores it; here it scales each head's context, as documented;
- arccos: its argument is clipped to [-1, 1] (the reference gives NaN where rounding exceeds 1).
As in the reference, `attentions` (output_attentions=True) holds each layer's context [batch, seq, hidden]
(YOSO has no attention-probability matrix), relative position types only switch the absolute position
embeddings off, and the sampled path draws random projections per call. One addition: at inference the sampled
path uses a fixed seed per layer (`YosoSelfAttention.inference_seed`; None samples anew on every call), so
predictions, exports and saved models are reproducible; in training every step samples afresh.
"""
import keras
import tensorflow as tf

from tfmodels.core import attention as attn, encoder, initializers
from tfmodels.core.text_heads import TextPreTrainedModel, standard_heads
from tfmodels.models.yoso.checkpoint import YOSO_CHECKPOINT_MAP
from tfmodels.models.yoso.configuration import YosoConfig
from tfmodels.ops import lsh, lsh_attention

INFERENCE_SEED = 20220208    # base of the per-layer hashing seeds used at inference


def l2_normalize(x, epsilon=1e-12):
    """x / max(||x||, epsilon) over the last axis (torch's F.normalize), with a zero gradient at x = 0."""
    squared = tf.reduce_sum(tf.square(x), axis=-1, keepdims=True)
    return x / tf.sqrt(tf.maximum(squared, epsilon * epsilon))


class YosoSelfAttention(encoder.SelfAttentionBase):
    """Queries, keys, values and the YOSO attention (see the module docstring); returns the context
    [batch, seq, hidden] twice: as the layer's context and as its `attentions` output."""

    def __init__(self, config, layer_index=0, **kwargs):
        super().__init__(config, **kwargs)
        ir = config.initializer_range
        self.conv = None
        if config.conv_window is not None:
            # The reference's Conv2d(heads, heads, (window, 1), groups=heads) over [batch, heads, seq, head_dim].
            self.conv = keras.layers.DepthwiseConv2D(
                (config.conv_window, 1), padding="same", use_bias=False,
                depthwise_initializer=initializers.normal(ir), name="conv")
        # Training samples fresh hash projections every call; inference uses a fixed seed per layer (set to None
        # to sample on every call, as the reference does).
        self.seed_generator = keras.random.SeedGenerator(name="hash_seed_generator")
        self.inference_seed = (INFERENCE_SEED, layer_index)
        if not config.use_expectation:
            self.supports_jit = False  # the custom ops; under XLA the twins are used anyway

    def build(self, input_shape):
        for dense in (self.query, self.key, self.value):
            dense.build(input_shape)
        if self.conv is not None:
            self.conv.build([None, None, self.head_dim, self.num_heads])
        self.built = True

    def _seed(self, training):
        if training or self.inference_seed is None:
            return tf.cast(self.seed_generator.next(), tf.int32)
        return tf.constant(self.inference_seed, tf.int32)

    def _hash(self, query, key, mask, training):
        config = self.config
        batch_heads = tf.shape(query)[0]
        seed = self._seed(training)
        if config.use_fast_hash:
            projections = lsh.fast_hash_projections(seed, batch_heads, self.head_dim, config.num_hash,
                                                    config.hash_code_len)
            # Each vector is hashed on its own: two calls give the codes of one call on the concatenated queries
            # and keys without copying them into one tensor and slicing the codes apart.
            return tuple(lsh.fast_hash(x, mask, projections, config.num_hash, config.hash_code_len)
                         for x in (query, key))
        projections = lsh.gaussian_projections(seed, batch_heads, self.head_dim, config.num_hash,
                                               config.hash_code_len)
        return (lsh.gaussian_hash(query, mask, projections, config.hash_code_len),
                lsh.gaussian_hash(key, mask, projections, config.hash_code_len))

    def call(self, hidden_states, attention_mask, head_mask=None, output_attentions=False, training=False):
        config = self.config
        dtype = hidden_states.dtype
        batch, seq_len = tf.shape(hidden_states)[0], tf.shape(hidden_states)[1]
        heads, dim = self.num_heads, self.head_dim
        # [batch, heads, seq, dim] each
        query, key, value = (self.project(dense, hidden_states) for dense in (self.query, self.key, self.value))
        conv_value = None
        if self.conv is not None:
            masked = value * tf.cast(attention_mask, dtype)[:, None, :, None]
            conv_value = tf.transpose(self.conv(tf.transpose(masked, [0, 2, 3, 1])), [0, 3, 1, 2])
        flat = lambda x: tf.cast(tf.reshape(x, [-1, seq_len, dim]), tf.float32)  # noqa: E731
        query, key, value = flat(query), flat(key), flat(value)
        mask = tf.repeat(tf.cast(tf.not_equal(attention_mask, 0), tf.int32), heads, axis=0)  # [batch * heads, seq]
        if config.use_expectation or training:
            query, key = l2_normalize(query), l2_normalize(key)
        if config.use_expectation:
            context = lsh_attention.expectation_attention(query, key, value, mask, mask, config.hash_code_len)
        else:
            query_code, key_code = self._hash(query, key, mask, training)
            context = lsh_attention.lsh_attention(query, key, value, mask, mask, query_code, key_code,
                                                  config.hash_code_len, lsh_backward=config.lsh_backward)
        context = tf.cast(tf.reshape(l2_normalize(context), [batch, heads, seq_len, dim]), dtype)
        if conv_value is not None:
            context = context + conv_value
        if head_mask is not None:
            context = context * tf.cast(head_mask, dtype)
        context = attn.merge_heads(context)
        return context, context


class YosoLayer(encoder.PostNormLayer):
    attention_class = YosoSelfAttention


class YosoMainLayer(encoder.TextMainLayer):
    """The skeleton with YOSO's layers; positions count from 2 (the reference's table has
    max_position_embeddings + 2 rows)."""

    layer_class = YosoLayer
    position_offset = 2

    def layer_mask(self, attention_mask, embeddings):
        # The attention takes the 0/1 mask itself (padded keys excluded, padded queries get a zero context).
        return attention_mask if attention_mask is not None else tf.ones(tf.shape(embeddings)[:2], tf.int32)


class YosoPreTrainedModel(TextPreTrainedModel):
    config_class = YosoConfig
    base_model_prefix = "yoso"
    checkpoint_map = YOSO_CHECKPOINT_MAP
    main_layer_class = YosoMainLayer
    token_loss_ignores_padding = True
    qa_forces_two_labels = True


(YosoModel, YosoForMaskedLM, YosoForSequenceClassification, YosoForMultipleChoice, YosoForTokenClassification,
 YosoForQuestionAnswering) = standard_heads(YosoPreTrainedModel)


# The TF names (as the other families of the reference documents have them) are the same classes.
TFYosoModel = YosoModel
TFYosoForMaskedLM = YosoForMaskedLM
TFYosoForSequenceClassification = YosoForSequenceClassification
TFYosoForMultipleChoice = YosoForMultipleChoice
TFYosoForTokenClassification = YosoForTokenClassification
TFYosoForQuestionAnswering = YosoForQuestionAnswering
