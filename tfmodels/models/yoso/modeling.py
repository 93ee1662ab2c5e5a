"""YOSO (Zeng et al., 2021, "You Only Sample (Almost) Once"): a BERT-style post-LayerNorm encoder whose
attention is estimated by locality sensitive hashing, with every documented task head.

Attention per head, on queries/keys/values [batch * heads, seq, head_dim]:
- queries and keys are L2-normalised (always for YOSO-E, while training for the sampled path: hashing only
  looks at directions);
- YOSO-E (use_expectation=True): context = E V with E = (1 - arccos(q.k) / pi)^hash_code_len, exact, pure TF;
- YOSO (use_expectation=False): `num_hash` hash codes per query and key (fast Hadamard hashing or Gaussian
  projections), context = LSH cumulation of the values over the collisions (custom ops, tfmodels.ops.lsh);
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

from tfmodels.core import attention as attn, blocks
from tfmodels.core import initializers, layers, outputs as out, tasks
from tfmodels.core.heads import ClassificationHead, LMHead
from tfmodels.core.inputs import check_ids_in_range, check_max_length, text_reference
from tfmodels.core.layers import apply_chunking
from tfmodels.core.modeling import PreTrainedModel
from tfmodels.models.yoso.checkpoint import YOSO_CHECKPOINT_MAP
from tfmodels.models.yoso.configuration import YosoConfig
from tfmodels.ops import lsh

BaseModelOutputWithCrossAttentions = out.define_output(
    "BaseModelOutputWithCrossAttentions", ("last_hidden_state", "hidden_states", "attentions", "cross_attentions"))

POSITION_OFFSET = 2          # the reference's position ids start at 2 (its table has max_position_embeddings + 2)
INFERENCE_SEED = 20220208    # base of the per-layer hashing seeds used at inference


def l2_normalize(x, epsilon=1e-12):
    """x / max(||x||, epsilon) over the last axis (torch's F.normalize), with a zero gradient at x = 0."""
    squared = tf.reduce_sum(tf.square(x), axis=-1, keepdims=True)
    return x / tf.sqrt(tf.maximum(squared, epsilon * epsilon))


class YosoEmbeddings(keras.layers.Layer):
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
        # Built explicitly: with relative position types the position table is unused but still a weight.
        for table in (self.word_embeddings, self.position_embeddings, self.token_type_embeddings):
            table.build(None)
        self.LayerNorm.build([None, None, self.config.hidden_size])
        self.built = True

    def call(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None, training=False):
        config = self.config
        if input_ids is not None:
            input_ids = check_ids_in_range("input_ids", input_ids, config.vocab_size)
            inputs_embeds = self.word_embeddings(input_ids)
        else:
            inputs_embeds = tf.cast(inputs_embeds, self.compute_dtype)
        batch, seq_len = tf.shape(inputs_embeds)[0], tf.shape(inputs_embeds)[1]
        if token_type_ids is None:
            token_type_ids = tf.zeros([batch, seq_len], tf.int32)
        token_type_ids = check_ids_in_range("token_type_ids", token_type_ids, config.type_vocab_size,
                                            "type_vocab_size")
        embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids)
        if config.position_embedding_type == "absolute":
            if position_ids is None:
                position_ids = tf.broadcast_to(tf.range(seq_len)[None] + POSITION_OFFSET, [batch, seq_len])
            position_ids = check_ids_in_range("position_ids", position_ids,
                                              config.max_position_embeddings + POSITION_OFFSET,
                                              "max_position_embeddings + 2")
            embeddings = embeddings + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(embeddings), training=training)


class YosoSelfAttention(keras.layers.Layer):
    """Queries, keys, values and the YOSO attention (see the module docstring); returns the context
    [batch, seq, hidden]."""

    def __init__(self, config, layer_index=0, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        ir = config.initializer_range
        self.query = layers.dense(config.hidden_size, ir, name="query")
        self.key = layers.dense(config.hidden_size, ir, name="key")
        self.value = layers.dense(config.hidden_size, ir, name="value")
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
        batch_heads, seq_len = tf.shape(query)[0], tf.shape(query)[1]
        seed = self._seed(training)
        if config.use_fast_hash:
            projections = lsh.fast_hash_projections(seed, batch_heads, self.head_dim, config.num_hash,
                                                    config.hash_code_len)
            codes = lsh.fast_hash(tf.concat([query, key], axis=1), tf.concat([mask, mask], axis=1), projections,
                                  config.num_hash, config.hash_code_len)
            return codes[:, :seq_len], codes[:, seq_len:]
        projections = lsh.gaussian_projections(seed, batch_heads, self.head_dim, config.num_hash,
                                               config.hash_code_len)
        return (lsh.gaussian_hash(query, mask, projections, config.hash_code_len),
                lsh.gaussian_hash(key, mask, projections, config.hash_code_len))

    def call(self, hidden_states, attention_mask, head_mask=None, training=False):
        config = self.config
        dtype = hidden_states.dtype
        batch, seq_len = tf.shape(hidden_states)[0], tf.shape(hidden_states)[1]
        heads, dim = self.num_heads, self.head_dim
        query = attn.split_heads(self.query(hidden_states), heads, dim)   # [batch, heads, seq, dim]
        key = attn.split_heads(self.key(hidden_states), heads, dim)
        value = attn.split_heads(self.value(hidden_states), heads, dim)
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
            context = lsh.expectation_attention(query, key, value, mask, mask, config.hash_code_len)
        else:
            query_code, key_code = self._hash(query, key, mask, training)
            context = lsh.lsh_attention(query, key, value, mask, mask, query_code, key_code, config.hash_code_len,
                                        lsh_backward=config.lsh_backward)
        context = tf.cast(tf.reshape(l2_normalize(context), [batch, heads, seq_len, dim]), dtype)
        if conv_value is not None:
            context = context + conv_value
        if head_mask is not None:
            context = context * tf.cast(head_mask, dtype)
        return attn.merge_heads(context)


class YosoAttention(keras.layers.Layer):
    def __init__(self, config, layer_index=0, **kwargs):
        super().__init__(**kwargs)
        self.self = YosoSelfAttention(config, layer_index, name="self")
        self.output_ = blocks.PostNormOutput(config, name="output")

    def call(self, hidden_states, attention_mask, head_mask=None, training=False):
        context = self.self(hidden_states, attention_mask, head_mask, training=training)
        return self.output_(context, hidden_states, training=training), context


class YosoLayer(keras.layers.Layer):
    def __init__(self, config, layer_index=0, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.attention = YosoAttention(config, layer_index, name="attention")
        self.intermediate = blocks.Intermediate(config, name="intermediate")
        self.output_ = blocks.PostNormOutput(config, config.intermediate_size, name="output")

    def feed_forward(self, attention_output, training=False):
        return self.output_(self.intermediate(attention_output), attention_output, training=training)

    def call(self, hidden_states, attention_mask, head_mask=None, training=False):
        attention_output, context = self.attention(hidden_states, attention_mask, head_mask, training=training)
        layer_output = apply_chunking(lambda x: self.feed_forward(x, training=training),
                                      self.config.chunk_size_feed_forward, attention_output)
        return layer_output, context


class YosoEncoder(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.layer = [YosoLayer(config, i, name=f"layer_{i}") for i in range(config.num_hidden_layers)]

    def call(self, hidden_states, attention_mask, head_mask=None, output_attentions=False,
             output_hidden_states=False, training=False):
        all_hidden, all_attentions = [], []
        head_masks = attn.head_mask_per_layer(head_mask, len(self.layer), hidden_states.dtype)
        for i, layer_module in enumerate(self.layer):
            if output_hidden_states:
                all_hidden.append(hidden_states)
            hidden_states, context = layers.run_layer(layer_module, self.config.gradient_checkpointing and training,
                                                      hidden_states, attention_mask, head_masks[i],
                                                      training=training)
            if output_attentions:
                all_attentions.append(context)
        if output_hidden_states:
            all_hidden.append(hidden_states)
        return BaseModelOutputWithCrossAttentions(
            last_hidden_state=hidden_states,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None)


class YosoMainLayer(keras.layers.Layer):
    """Embeddings + encoder: the part every head shares. Takes already-normalised inputs."""

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.embeddings = YosoEmbeddings(config, name="embeddings")
        self.encoder = YosoEncoder(config, name="encoder")

    def call(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
             inputs_embeds=None, output_attentions=False, output_hidden_states=False, training=False):
        config = self.config
        reference = text_reference(input_ids, inputs_embeds, attention_mask=attention_mask,
                                   token_type_ids=token_type_ids, position_ids=position_ids)
        batch, seq_len = tf.shape(reference)[0], tf.shape(reference)[1]
        if position_ids is None and config.position_embedding_type == "absolute":
            asserts = check_max_length("input_ids", seq_len, config.max_position_embeddings,
                                       f"max_position_embeddings={config.max_position_embeddings}")
            if asserts:
                with tf.control_dependencies(asserts):
                    seq_len = tf.identity(seq_len)
        if attention_mask is None:
            attention_mask = tf.ones([batch, seq_len], tf.int32)
        embedding_output = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds,
                                           training=training)
        return self.encoder(embedding_output, attention_mask, head_mask, output_attentions=output_attentions,
                            output_hidden_states=output_hidden_states, training=training)


# ---------------------------------------------------------------------------------------------------------------
# Models

_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "head_mask", "inputs_embeds")


class YosoPreTrainedModel(PreTrainedModel):
    config_class = YosoConfig
    base_model_prefix = "yoso"
    input_names = _INPUTS
    checkpoint_map = YOSO_CHECKPOINT_MAP


class YosoModel(tasks.BaseModelTask, YosoPreTrainedModel):
    """The bare encoder returning the last hidden state (and, when asked, every layer's hidden states and
    attention contexts)."""

    output_class = BaseModelOutputWithCrossAttentions

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.yoso = YosoMainLayer(config, name="yoso")


class YosoForMaskedLM(tasks.MaskedLMTask, YosoPreTrainedModel):
    """Masked LM head (dense, activation, LayerNorm, decoder tied to the word embeddings, bias)."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.yoso = YosoMainLayer(config, name="yoso")
        tied = None
        if config.tie_word_embeddings:
            tied = lambda: self.yoso.embeddings.word_embeddings.embeddings  # noqa: E731
        self.cls = LMHead(config.hidden_size, config.vocab_size, config.layer_norm_eps, config.initializer_range,
                          activation=config.hidden_act, tied_embeddings=tied, name="cls")

    def head(self, base_outputs, inputs, training=False):
        return {"logits": self.cls(base_outputs.last_hidden_state)}


class YosoForSequenceClassification(tasks.SequenceClassificationTask, YosoPreTrainedModel):
    """Classification / regression from the first token (dense, hidden_act, out_proj), per problem_type."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.yoso = YosoMainLayer(config, name="yoso")
        self.classifier = ClassificationHead(config.hidden_size, config.num_labels, config.hidden_dropout_prob,
                                             config.initializer_range, activation=config.hidden_act,
                                             name="classifier")

    def head(self, base_outputs, inputs, training=False):
        return {"logits": self.classifier(base_outputs.last_hidden_state, training=training)}


class YosoForMultipleChoice(tasks.MultipleChoiceTask, YosoPreTrainedModel):
    """Inputs [batch, num_choices, seq]; each choice scored from its first token (pre_classifier, ReLU,
    classifier)."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.yoso = YosoMainLayer(config, name="yoso")
        self.pre_classifier = layers.dense(config.hidden_size, config.initializer_range, name="pre_classifier")
        self.classifier = layers.dense(1, config.initializer_range, name="classifier")

    def head(self, base_outputs, inputs, training=False):
        pooled = tf.nn.relu(self.pre_classifier(base_outputs.last_hidden_state[:, 0]))
        return {"logits": self.classifier(pooled)}


class YosoForTokenClassification(tasks.TokenClassificationTask, YosoPreTrainedModel):
    """Per-token labels; as the reference, padded positions (attention_mask 0) are ignored by the loss."""

    loss_ignores_padding = True

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.yoso = YosoMainLayer(config, name="yoso")
        self.dropout = layers.dropout(config.hidden_dropout_prob)
        self.classifier = layers.dense(config.num_labels, config.initializer_range, name="classifier")

    def head(self, base_outputs, inputs, training=False):
        return {"logits": self.classifier(self.dropout(base_outputs.last_hidden_state, training=training))}


class YosoForQuestionAnswering(tasks.QuestionAnsweringTask, YosoPreTrainedModel):
    """Extractive QA: start and end logits per token. As the reference, the head always has 2 labels."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        if self.config.num_labels != 2:
            self.config = self.config.copy(num_labels=2)
        self.yoso = YosoMainLayer(self.config, name="yoso")
        self.qa_outputs = layers.dense(2, self.config.initializer_range, name="qa_outputs")

    def head(self, base_outputs, inputs, training=False):
        return {"logits": self.qa_outputs(base_outputs.last_hidden_state)}


# The TF names (as the other families of the reference documents have them) are the same classes.
TFYosoModel = YosoModel
TFYosoForMaskedLM = YosoForMaskedLM
TFYosoForSequenceClassification = YosoForSequenceClassification
TFYosoForMultipleChoice = YosoForMultipleChoice
TFYosoForTokenClassification = YosoForTokenClassification
TFYosoForQuestionAnswering = YosoForQuestionAnswering
