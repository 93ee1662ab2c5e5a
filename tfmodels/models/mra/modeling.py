"""MRA: a BERT/RoBERTa-style encoder with multi-resolution (MRA-2) attention, with every documented task head.

The attention itself lives in tfmodels/models/mra/attention.py (on the block_sparse custom ops, or their pure-TF
twins under XLA / for export). Differences from RoBERTa that matter for parity: position ids are simply
2, 3, ... (not padding-aware), the position table has max_position_embeddings + 2 rows, the classification head
uses config.hidden_act, and the multiple-choice head is pre_classifier + ReLU + classifier on the first token.
"""
import keras
import tensorflow as tf

from tfmodels.core import attention as attn, blocks
from tfmodels.core import layers, outputs as out, tasks
from tfmodels.core.heads import ClassificationHead, LMHead
from tfmodels.core.inputs import check_ids_in_range, check_max_length, check_rank, check_same_shape, text_reference
from tfmodels.core.layers import apply_chunking
from tfmodels.core.modeling import PreTrainedModel
from tfmodels.ops.block_sparse_attention import mra2_attention
from tfmodels.models.mra.checkpoint import MRA_CHECKPOINT_MAP
from tfmodels.models.mra.configuration import MraConfig

# HF's MraModel output (BaseModelOutputWithCrossAttentions; MRA has no pooler).
BaseModelOutputWithCrossAttentions = out.define_output(
    "BaseModelOutputWithCrossAttentions", ("last_hidden_state", "hidden_states", "attentions", "cross_attentions"))

POSITION_OFFSET = 2  # the reference's position ids start at 2 (its buffer is arange(max_positions) + 2)


class MraEmbeddings(keras.layers.Layer):
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
        # Built explicitly: with a non-absolute position type the position table is unused but still a weight.
        for table in (self.word_embeddings, self.position_embeddings, self.token_type_embeddings):
            table.build(None)
        self.LayerNorm.build([None, None, self.config.hidden_size])
        self.built = True

    def call(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None, training=False):
        config = self.config
        if input_ids is not None:
            input_ids = check_ids_in_range("input_ids", input_ids, config.vocab_size)
            inputs_embeds = self.word_embeddings(input_ids)
        batch, seq_len = tf.shape(inputs_embeds)[0], tf.shape(inputs_embeds)[1]
        if token_type_ids is None:
            token_type_ids = tf.zeros([batch, seq_len], tf.int32)
        token_type_ids = check_ids_in_range("token_type_ids", token_type_ids, config.type_vocab_size,
                                            "type_vocab_size")
        embeddings = inputs_embeds + tf.cast(self.token_type_embeddings(token_type_ids), inputs_embeds.dtype)
        if config.position_embedding_type == "absolute":
            if position_ids is None:
                position_ids = tf.range(seq_len)[None, :] + POSITION_OFFSET
            position_ids = check_ids_in_range("position_ids", position_ids,
                                              config.max_position_embeddings + POSITION_OFFSET,
                                              "max_position_embeddings + 2")
            embeddings = embeddings + tf.cast(self.position_embeddings(position_ids), embeddings.dtype)
        return self.dropout(self.LayerNorm(embeddings), training=training)


class MraSelfAttention(keras.layers.Layer):
    """Query/key/value projections and the MRA-2 attention (no attention dropout: the reference has no
    probability matrix to drop from)."""

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        ir = config.initializer_range
        self.query = layers.dense(config.hidden_size, ir, name="query")
        self.key = layers.dense(config.hidden_size, ir, name="key")
        self.value = layers.dense(config.hidden_size, ir, name="value")
        # The compiled block_sparse ops cannot run under XLA: Keras must not jit-compile models holding this.
        self.supports_jit = False

    def call(self, hidden_states, attention_mask=None, head_mask=None, output_attentions=False):
        config = self.config
        query = attn.split_heads(self.query(hidden_states), self.num_heads, self.head_dim)
        key = attn.split_heads(self.key(hidden_states), self.num_heads, self.head_dim)
        value = attn.split_heads(self.value(hidden_states), self.num_heads, self.head_dim)
        context, probs = mra2_attention(
            query, key, value, attention_mask, num_blocks=config.num_high_resolution_blocks,
            approx_mode=config.approx_mode, initial_prior_first_n_blocks=config.initial_prior_first_n_blocks,
            initial_prior_diagonal_n_blocks=config.initial_prior_diagonal_n_blocks,
            output_probs=output_attentions)
        if head_mask is not None:
            context = context * tf.cast(head_mask, context.dtype)
            if probs is not None:
                probs = probs * tf.cast(head_mask, probs.dtype)
        return attn.merge_heads(context), probs


class MraAttention(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.self = MraSelfAttention(config, name="self")
        self.output_ = blocks.PostNormOutput(config, name="output")

    def call(self, hidden_states, attention_mask=None, head_mask=None, output_attentions=False, training=False):
        context, probs = self.self(hidden_states, attention_mask, head_mask, output_attentions=output_attentions)
        return self.output_(context, hidden_states, training=training), probs


class MraLayer(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.attention = MraAttention(config, name="attention")
        self.intermediate = blocks.Intermediate(config, name="intermediate")
        self.output_ = blocks.PostNormOutput(config, config.intermediate_size, name="output")

    def call(self, hidden_states, attention_mask=None, head_mask=None, output_attentions=False, training=False):
        attention_output, probs = self.attention(hidden_states, attention_mask, head_mask,
                                                 output_attentions=output_attentions, training=training)

        def feed_forward(x):
            return self.output_(self.intermediate(x), x, training=training)

        return apply_chunking(feed_forward, self.config.chunk_size_feed_forward, attention_output), probs


class MraEncoder(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.layer = [MraLayer(config, name=f"layer_{i}") for i in range(config.num_hidden_layers)]

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
        return BaseModelOutputWithCrossAttentions(
            last_hidden_state=hidden_states,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None)


class MraMainLayer(keras.layers.Layer):
    """Embeddings + encoder: the part every head shares. Takes already-normalised inputs."""

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.embeddings = MraEmbeddings(config, name="embeddings")
        self.encoder = MraEncoder(config, name="encoder")

    def call(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
             inputs_embeds=None, output_attentions=False, output_hidden_states=False, training=False):
        config = self.config
        reference = text_reference(input_ids, inputs_embeds, token_type_ids=token_type_ids, position_ids=position_ids)
        seq_len = reference.shape[1] if reference.shape[1] is not None else tf.shape(reference)[1]
        asserts = []
        if position_ids is None and config.position_embedding_type == "absolute":
            asserts = check_max_length("input_ids", seq_len, config.max_position_embeddings,
                                       f"max_position_embeddings={config.max_position_embeddings}")
        if attention_mask is not None:
            check_rank("attention_mask", attention_mask, 2)
            check_same_shape("input_ids", reference, "attention_mask", attention_mask)
        embedding_output = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds, training=training)
        if asserts:
            with tf.control_dependencies(asserts):
                embedding_output = tf.identity(embedding_output)
        encoded = self.encoder(embedding_output, attention_mask, head_mask, output_attentions=output_attentions,
                               output_hidden_states=output_hidden_states, training=training)
        return encoded


# ---------------------------------------------------------------------------------------------------------------
# Models

_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "head_mask", "inputs_embeds")


class MraPreTrainedModel(PreTrainedModel):
    config_class = MraConfig
    base_model_prefix = "mra"
    input_names = _INPUTS
    checkpoint_map = MRA_CHECKPOINT_MAP

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.supports_jit = False  # the block_sparse custom ops cannot be XLA-compiled


class MraModel(tasks.BaseModelTask, MraPreTrainedModel):
    """The bare MRA encoder returning the hidden states (and, on request, every layer's hidden states and the
    effective attention weights)."""

    output_class = BaseModelOutputWithCrossAttentions

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.mra = MraMainLayer(config, name="mra")


class MraForMaskedLM(tasks.MaskedLMTask, MraPreTrainedModel):
    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.mra = MraMainLayer(config, name="mra")
        tied = None
        if config.tie_word_embeddings:
            tied = lambda: self.mra.embeddings.word_embeddings.embeddings  # noqa: E731
        # HF's cls.predictions (transform.dense, transform.LayerNorm, decoder, bias): see checkpoint.py.
        self.cls = LMHead(config.hidden_size, config.vocab_size, config.layer_norm_eps, config.initializer_range,
                          activation=config.hidden_act, tied_embeddings=tied, name="cls")

    def head(self, base_outputs, inputs, training=False):
        return {"logits": self.cls(base_outputs.last_hidden_state)}


class MraForSequenceClassification(tasks.SequenceClassificationTask, MraPreTrainedModel):
    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.mra = MraMainLayer(config, name="mra")
        self.classifier = ClassificationHead(config.hidden_size, config.num_labels, config.hidden_dropout_prob,
                                             config.initializer_range, activation=config.hidden_act,
                                             name="classifier")

    def head(self, base_outputs, inputs, training=False):
        return {"logits": self.classifier(base_outputs.last_hidden_state, training=training)}


class MraForMultipleChoice(tasks.MultipleChoiceTask, MraPreTrainedModel):
    """Inputs of shape [batch, num_choices, seq]; each choice is scored from its first token through
    pre_classifier, ReLU and classifier."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.mra = MraMainLayer(config, name="mra")
        self.pre_classifier = layers.dense(config.hidden_size, config.initializer_range, name="pre_classifier")
        self.classifier = layers.dense(1, config.initializer_range, name="classifier")

    def head(self, base_outputs, inputs, training=False):
        pooled = tf.nn.relu(self.pre_classifier(base_outputs.last_hidden_state[:, 0]))
        return {"logits": self.classifier(pooled)}


class MraForTokenClassification(tasks.TokenClassificationTask, MraPreTrainedModel):
    loss_ignores_padding = True  # as the reference: positions with attention_mask 0 are left out of the loss

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.mra = MraMainLayer(config, name="mra")
        self.dropout = layers.dropout(config.hidden_dropout_prob)
        self.classifier = layers.dense(config.num_labels, config.initializer_range, name="classifier")

    def head(self, base_outputs, inputs, training=False):
        return {"logits": self.classifier(self.dropout(base_outputs.last_hidden_state, training=training))}


class MraForQuestionAnswering(tasks.QuestionAnsweringTask, MraPreTrainedModel):
    """Extractive QA: start and end logits per token. The reference forces num_labels = 2; so do we."""

    def __init__(self, config, **kwargs):
        if config.num_labels != 2:
            config = config.copy(num_labels=2)
        super().__init__(config, **kwargs)
        self.mra = MraMainLayer(config, name="mra")
        self.qa_outputs = layers.dense(2, config.initializer_range, name="qa_outputs")

    def head(self, base_outputs, inputs, training=False):
        return {"logits": self.qa_outputs(base_outputs.last_hidden_state)}


# The TF-style names are the same classes.
TFMraModel = MraModel
TFMraForMaskedLM = MraForMaskedLM
TFMraForSequenceClassification = MraForSequenceClassification
TFMraForMultipleChoice = MraForMultipleChoice
TFMraForTokenClassification = MraForTokenClassification
TFMraForQuestionAnswering = MraForQuestionAnswering

__all__ = ["BaseModelOutputWithCrossAttentions", "MraPreTrainedModel", "MraModel", "MraForMaskedLM",
           "MraForSequenceClassification", "MraForMultipleChoice", "MraForTokenClassification",
           "MraForQuestionAnswering", "TFMraModel", "TFMraForMaskedLM", "TFMraForSequenceClassification",
           "TFMraForMultipleChoice", "TFMraForTokenClassification", "TFMraForQuestionAnswering"]
