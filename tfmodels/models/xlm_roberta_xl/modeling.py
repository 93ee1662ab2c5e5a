"""XLM-RoBERTa-XL: a pre-LayerNorm RoBERTa (the XL and XXL checkpoints), with every documented task head.

Differences from RoBERTa that matter for parity: layer norm *before* attention and feed-forward, a final
encoder LayerNorm, no LayerNorm on the embeddings, no dropout after the feed-forward output, and position ids
counted from pad_token_id + 1 over non-padding tokens (fairseq's make_positions).
"""
import keras
import numpy as np
import tensorflow as tf

from tfmodels.core import attention as attn, blocks
from tfmodels.core import layers, outputs as out, tasks
from tfmodels.core.heads import ClassificationHead, LMHead
from tfmodels.core.inputs import check_ids_in_range, check_max_length, check_rank, check_same_shape, text_reference
from tfmodels.core.layers import apply_chunking
from tfmodels.core.modeling import PreTrainedModel
from tfmodels.models.xlm_roberta_xl.checkpoint import XLM_ROBERTA_XL_CHECKPOINT_MAP
from tfmodels.models.xlm_roberta_xl.configuration import XLMRobertaXLConfig


def create_position_ids_from_input_ids(input_ids, padding_idx, past_key_values_length=0):
    """Positions padding_idx+1, padding_idx+2, ... over non-padding tokens; padding_idx on padding."""
    mask = tf.cast(tf.not_equal(input_ids, padding_idx), tf.int32)
    incremental = (tf.cumsum(mask, axis=1) + past_key_values_length) * mask
    return incremental + padding_idx


class XLMRobertaXLEmbeddings(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        ir = config.initializer_range
        self.word_embeddings = layers.embedding(config.vocab_size, config.hidden_size, ir, name="word_embeddings")
        self.position_embeddings = layers.embedding(config.max_position_embeddings, config.hidden_size, ir,
                                                    name="position_embeddings")
        self.token_type_embeddings = layers.embedding(config.type_vocab_size, config.hidden_size, ir,
                                                      name="token_type_embeddings")
        self.dropout = layers.dropout(config.hidden_dropout_prob)

    def build(self, input_shape=None):
        # Built explicitly: with relative positions the position table is unused but still a checkpoint weight.
        for table in (self.word_embeddings, self.position_embeddings, self.token_type_embeddings):
            table.build(None)
        self.built = True

    def call(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None,
             past_key_values_length=0, training=False):
        config = self.config
        if input_ids is not None:
            input_ids = check_ids_in_range("input_ids", input_ids, config.vocab_size)
            inputs_embeds = self.word_embeddings(input_ids)
        batch, seq_len = tf.shape(inputs_embeds)[0], tf.shape(inputs_embeds)[1]
        if position_ids is None:
            if input_ids is not None:
                position_ids = create_position_ids_from_input_ids(input_ids, config.pad_token_id,
                                                                  past_key_values_length)
            else:
                start = config.pad_token_id + 1 + past_key_values_length
                position_ids = tf.broadcast_to(tf.range(start, start + seq_len)[None], [batch, seq_len])
        if token_type_ids is None:
            token_type_ids = tf.zeros([batch, seq_len], tf.int32)
        token_type_ids = check_ids_in_range("token_type_ids", token_type_ids, config.type_vocab_size,
                                            "type_vocab_size")
        embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids)
        if config.position_embedding_type == "absolute":
            position_ids = check_ids_in_range("position_ids", position_ids, config.max_position_embeddings,
                                              "max_position_embeddings")
            embeddings = embeddings + self.position_embeddings(position_ids)
        return self.dropout(embeddings, training=training)


class XLMRobertaXLSelfAttention(keras.layers.Layer):
    def __init__(self, config, position_embedding_type=None, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        ir = config.initializer_range
        self.query = layers.dense(config.hidden_size, ir, name="query")
        self.key = layers.dense(config.hidden_size, ir, name="key")
        self.value = layers.dense(config.hidden_size, ir, name="value")
        self.dropout = layers.dropout(config.attention_probs_dropout_prob)
        self.position_embedding_type = position_embedding_type or config.position_embedding_type
        self.max_position_embeddings = config.max_position_embeddings
        if self.position_embedding_type in ("relative_key", "relative_key_query"):
            self.distance_embedding = layers.embedding(2 * config.max_position_embeddings - 1, self.head_dim, ir,
                                                       name="distance_embedding")

    def call(self, hidden_states, attention_mask=None, head_mask=None, encoder_hidden_states=None,
             past_key_value=None, training=False, need_probs=True):
        query = attn.split_heads(self.query(hidden_states), self.num_heads, self.head_dim)
        is_cross = encoder_hidden_states is not None
        if is_cross and past_key_value is not None:
            key, value = past_key_value  # cross-attention keys/values are computed once and cached
        else:
            source = encoder_hidden_states if is_cross else hidden_states
            key = attn.split_heads(self.key(source), self.num_heads, self.head_dim)
            value = attn.split_heads(self.value(source), self.num_heads, self.head_dim)
            if past_key_value is not None:
                key = tf.concat([past_key_value[0], key], axis=2)
                value = tf.concat([past_key_value[1], value], axis=2)
        extra = None
        if self.position_embedding_type in ("relative_key", "relative_key_query"):
            extra = self._relative_scores(query, key, past_key_value is not None)
        context, probs = attn.scaled_dot_product_attention(query, key, value, attention_mask, head_mask,
                                                           self.dropout, training, extra_scores=extra,
                                                           need_probs=need_probs)
        return attn.merge_heads(context), probs, (key, value)

    def _relative_scores(self, query, key, has_past):
        query_len, key_len = tf.shape(query)[2], tf.shape(key)[2]
        if has_past:
            # The reference uses the last key position for every query when a cache is given.
            left = tf.reshape(key_len - 1, [1, 1])
        else:
            left = tf.range(query_len)[:, None]
        distance = left - tf.range(key_len)[None, :]
        positional = self.distance_embedding(distance + self.max_position_embeddings - 1)
        positional = tf.cast(positional, query.dtype)
        scores = tf.einsum("bhld,lrd->bhlr", query, positional)
        if self.position_embedding_type == "relative_key_query":
            scores = scores + tf.einsum("bhrd,lrd->bhlr", key, positional)
        return scores


class XLMRobertaXLSelfOutput(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.dense = layers.dense(config.hidden_size, config.initializer_range, name="dense")
        self.dropout = layers.dropout(config.hidden_dropout_prob)

    def call(self, hidden_states, residual, training=False):
        return self.dropout(self.dense(hidden_states), training=training) + residual


class XLMRobertaXLAttention(keras.layers.Layer):
    """Pre-LN attention block: LayerNorm -> (self or cross) attention -> dense -> dropout -> + residual."""

    def __init__(self, config, position_embedding_type=None, **kwargs):
        super().__init__(**kwargs)
        self.self_attn_layer_norm = layers.layer_norm(config.layer_norm_eps, name="self_attn_layer_norm")
        self.self = XLMRobertaXLSelfAttention(config, position_embedding_type, name="self")
        self.output_ = XLMRobertaXLSelfOutput(config, name="output")

    def call(self, hidden_states, attention_mask=None, head_mask=None, encoder_hidden_states=None,
             past_key_value=None, training=False, need_probs=True):
        normed = self.self_attn_layer_norm(hidden_states)
        context, probs, present = self.self(normed, attention_mask, head_mask, encoder_hidden_states,
                                            past_key_value, training=training, need_probs=need_probs)
        return self.output_(context, hidden_states, training=training), probs, present


class XLMRobertaXLOutput(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.dense = layers.dense(config.hidden_size, config.initializer_range, name="dense")

    def call(self, hidden_states, residual):
        return self.dense(hidden_states) + residual


class XLMRobertaXLLayer(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.attention = XLMRobertaXLAttention(config, name="attention")
        if config.add_cross_attention:
            self.crossattention = XLMRobertaXLAttention(config, position_embedding_type="absolute",
                                                        name="crossattention")
        self.intermediate = blocks.Intermediate(config, name="intermediate")
        self.output_ = XLMRobertaXLOutput(config, name="output")
        self.LayerNorm = layers.layer_norm(config.layer_norm_eps, name="LayerNorm")

    def feed_forward(self, attention_output):
        return self.output_(self.intermediate(self.LayerNorm(attention_output)), attention_output)

    def call(self, hidden_states, attention_mask=None, head_mask=None, encoder_hidden_states=None,
             encoder_attention_mask=None, past_key_value=None, training=False, need_probs=True):
        self_past = past_key_value[:2] if past_key_value is not None else None
        attention_output, self_probs, present = self.attention(
            hidden_states, attention_mask, head_mask, past_key_value=self_past, training=training,
            need_probs=need_probs)
        cross_probs = None
        if self.config.is_decoder and encoder_hidden_states is not None:
            if not self.config.add_cross_attention:
                raise ValueError("encoder_hidden_states were passed but the config has add_cross_attention=False")
            cross_past = past_key_value[2:] if past_key_value is not None and len(past_key_value) == 4 else None
            attention_output, cross_probs, cross_present = self.crossattention(
                attention_output, encoder_attention_mask, head_mask, encoder_hidden_states, cross_past,
                training=training, need_probs=need_probs)
            present = tuple(present) + tuple(cross_present)
        layer_output = apply_chunking(self.feed_forward, self.config.chunk_size_feed_forward, attention_output)
        return layer_output, self_probs, cross_probs, tuple(present)


class XLMRobertaXLEncoder(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.layer = [XLMRobertaXLLayer(config, name=f"layer_{i}") for i in range(config.num_hidden_layers)]
        self.LayerNorm = layers.layer_norm(config.layer_norm_eps, name="LayerNorm")

    def call(self, hidden_states, attention_mask=None, head_mask=None, encoder_hidden_states=None,
             encoder_attention_mask=None, past_key_values=None, use_cache=False, output_attentions=False,
             output_hidden_states=False, training=False):
        all_hidden, all_attentions, all_cross, presents = [], [], [], []
        head_masks = attn.head_mask_per_layer(head_mask, len(self.layer), hidden_states.dtype)
        for i, layer_module in enumerate(self.layer):
            if output_hidden_states:
                all_hidden.append(hidden_states)
            past = past_key_values[i] if past_key_values is not None else None
            hidden_states, probs, cross_probs, present = layers.run_layer(
                layer_module, self.config.gradient_checkpointing and training and not use_cache,
                hidden_states, attention_mask, head_masks[i], encoder_hidden_states, encoder_attention_mask,
                past, training=training, need_probs=output_attentions)
            if use_cache:
                presents.append(present)
            if output_attentions:
                all_attentions.append(probs)
                if self.config.add_cross_attention and cross_probs is not None:
                    all_cross.append(cross_probs)
        hidden_states = self.LayerNorm(hidden_states)
        if output_hidden_states:
            all_hidden.append(hidden_states)
        return out.BaseModelOutputWithPastAndCrossAttentions(
            last_hidden_state=hidden_states,
            past_key_values=tuple(presents) if use_cache else None,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None,
            cross_attentions=tuple(all_cross) if output_attentions and all_cross else None)


class XLMRobertaXLPooler(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.dense = layers.dense(config.hidden_size, config.initializer_range, name="dense")

    def call(self, hidden_states):
        return tf.tanh(self.dense(hidden_states[:, 0]))


class XLMRobertaXLMainLayer(keras.layers.Layer):
    """Embeddings + encoder (+ pooler): the part every head shares. Takes already-normalised inputs."""

    def __init__(self, config, add_pooling_layer=True, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.embeddings = XLMRobertaXLEmbeddings(config, name="embeddings")
        self.encoder = XLMRobertaXLEncoder(config, name="encoder")
        self.pooler = XLMRobertaXLPooler(config, name="pooler") if add_pooling_layer else None

    def call(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
             inputs_embeds=None, encoder_hidden_states=None, encoder_attention_mask=None, past_key_values=None,
             use_cache=None, output_attentions=False, output_hidden_states=False, training=False):
        config = self.config
        reference = text_reference(input_ids, inputs_embeds, token_type_ids=token_type_ids, position_ids=position_ids)
        use_cache = bool(use_cache) and config.is_decoder
        batch, seq_len = tf.shape(reference)[0], tf.shape(reference)[1]
        past_length = 0
        if past_key_values is not None:
            if len(past_key_values) != config.num_hidden_layers:
                raise ValueError(f"past_key_values has {len(past_key_values)} entries; the model has "
                                 f"{config.num_hidden_layers} layers")
            past_length = tf.shape(past_key_values[0][0])[2]
        if position_ids is None and config.position_embedding_type == "absolute":
            asserts = check_max_length("input_ids", seq_len + past_length,
                                       config.max_position_embeddings - config.pad_token_id - 1,
                                       f"max_position_embeddings={config.max_position_embeddings}, positions start "
                                       f"at pad_token_id+1={config.pad_token_id + 1}")
            if asserts:
                with tf.control_dependencies(asserts):
                    seq_len = tf.identity(seq_len)
        embedding_output = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds,
                                           past_key_values_length=past_length, training=training)
        dtype = embedding_output.dtype
        if attention_mask is None:
            attention_mask = tf.ones([batch, seq_len + past_length], tf.int32)
        else:
            check_rank("attention_mask", attention_mask, (2, 3))
            if attention_mask.shape.rank == 2 and past_key_values is None:
                check_same_shape("input_ids", reference, "attention_mask", attention_mask)
        if config.is_decoder and attention_mask.shape.rank == 2:
            extended_mask = attn.causal_padding_additive_mask(attention_mask, seq_len, dtype)
        else:
            extended_mask = attn.padding_mask_to_additive(attention_mask, dtype)
        encoder_extended_mask = None
        if config.is_decoder and encoder_hidden_states is not None:
            if encoder_attention_mask is None:
                encoder_attention_mask = tf.ones(tf.shape(encoder_hidden_states)[:2], tf.int32)
            encoder_extended_mask = attn.padding_mask_to_additive(encoder_attention_mask, dtype)
            encoder_hidden_states = tf.cast(encoder_hidden_states, dtype)
        encoded = self.encoder(embedding_output, extended_mask, head_mask, encoder_hidden_states,
                               encoder_extended_mask, past_key_values, use_cache=use_cache,
                               output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                               training=training)
        sequence_output = encoded.last_hidden_state
        return out.BaseModelOutputWithPoolingAndCrossAttentions(
            last_hidden_state=sequence_output,
            pooler_output=self.pooler(sequence_output) if self.pooler is not None else None,
            past_key_values=encoded.past_key_values,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
            cross_attentions=encoded.cross_attentions)


# ---------------------------------------------------------------------------------------------------------------
# Models

_ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "head_mask", "inputs_embeds")
_DECODER_INPUTS = ("encoder_hidden_states", "encoder_attention_mask")


class XLMRobertaXLPreTrainedModel(PreTrainedModel):
    config_class = XLMRobertaXLConfig
    base_model_prefix = "roberta"
    input_names = _ENCODER_INPUTS
    checkpoint_map = XLM_ROBERTA_XL_CHECKPOINT_MAP

    def dummy_inputs(self):
        inputs = super().dummy_inputs()
        if self.config.add_cross_attention and "encoder_hidden_states" in self.input_names:
            inputs["encoder_hidden_states"] = np.zeros((2, 3, self.config.hidden_size), np.float32)
        return inputs

    def _lm_head(self):
        tied = None
        if self.config.tie_word_embeddings:
            tied = lambda: self.roberta.embeddings.word_embeddings.embeddings  # noqa: E731
        return LMHead(self.config.hidden_size, self.config.vocab_size, self.config.layer_norm_eps,
                      self.config.initializer_range, activation="gelu", tied_embeddings=tied, name="lm_head")

    def _classifier_dropout(self):
        rate = self.config.classifier_dropout
        return self.config.hidden_dropout_prob if rate is None else rate


class XLMRobertaXLModel(tasks.BaseModelTask, XLMRobertaXLPreTrainedModel):
    """The bare encoder (or decoder, with is_decoder=True) returning hidden states and the pooled output."""

    output_class = out.BaseModelOutputWithPoolingAndCrossAttentions
    input_names = _ENCODER_INPUTS + _DECODER_INPUTS + ("past_key_values",)
    option_names = ("use_cache", "output_attentions", "output_hidden_states", "return_dict")

    def __init__(self, config, add_pooling_layer=True, **kwargs):
        super().__init__(config, **kwargs)
        self.roberta = XLMRobertaXLMainLayer(config, add_pooling_layer=add_pooling_layer, name="roberta")


class XLMRobertaXLForCausalLM(tasks.CausalLMTask, XLMRobertaXLPreTrainedModel):
    """Left-to-right LM (set is_decoder=True); `past_key_values` caches keys/values for incremental decoding,
    and cross-attention over `encoder_hidden_states` when add_cross_attention=True."""

    input_names = _ENCODER_INPUTS + _DECODER_INPUTS + ("past_key_values",)
    option_names = ("use_cache", "output_attentions", "output_hidden_states", "return_dict")

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.roberta = XLMRobertaXLMainLayer(config, add_pooling_layer=False, name="roberta")
        self.lm_head = self._lm_head()

    def forward(self, inputs, labels, options, training=False):
        if labels.get("labels") is not None:
            options["use_cache"] = False  # as the reference: no cache when computing a loss
        return super().forward(inputs, labels, options, training)

    def head(self, base_outputs, inputs, training=False):
        return {"logits": self.lm_head(base_outputs.last_hidden_state)}


class XLMRobertaXLForMaskedLM(tasks.MaskedLMTask, XLMRobertaXLPreTrainedModel):
    input_names = _ENCODER_INPUTS + _DECODER_INPUTS

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.roberta = XLMRobertaXLMainLayer(config, add_pooling_layer=False, name="roberta")
        self.lm_head = self._lm_head()

    def head(self, base_outputs, inputs, training=False):
        return {"logits": self.lm_head(base_outputs.last_hidden_state)}


class XLMRobertaXLForSequenceClassification(tasks.SequenceClassificationTask, XLMRobertaXLPreTrainedModel):
    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.roberta = XLMRobertaXLMainLayer(config, add_pooling_layer=False, name="roberta")
        self.classifier = ClassificationHead(config.hidden_size, config.num_labels, self._classifier_dropout(),
                                             config.initializer_range, activation="tanh", name="classifier")

    def head(self, base_outputs, inputs, training=False):
        return {"logits": self.classifier(base_outputs.last_hidden_state, training=training)}


class XLMRobertaXLForMultipleChoice(tasks.MultipleChoiceTask, XLMRobertaXLPreTrainedModel):
    """Inputs of shape [batch, num_choices, seq]; scores each choice from the pooled output."""

    input_names = ("input_ids", "token_type_ids", "attention_mask", "labels", "position_ids", "head_mask",
                   "inputs_embeds")

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.roberta = XLMRobertaXLMainLayer(config, add_pooling_layer=True, name="roberta")
        self.dropout = layers.dropout(config.hidden_dropout_prob)
        self.classifier = layers.dense(1, config.initializer_range, name="classifier")

    def head(self, base_outputs, inputs, training=False):
        pooled = self.dropout(base_outputs.pooler_output, training=training)
        return {"logits": self.classifier(pooled)}


class XLMRobertaXLForTokenClassification(tasks.TokenClassificationTask, XLMRobertaXLPreTrainedModel):
    loss_ignores_padding = True

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.roberta = XLMRobertaXLMainLayer(config, add_pooling_layer=False, name="roberta")
        self.dropout = layers.dropout(self._classifier_dropout())
        self.classifier = layers.dense(config.num_labels, config.initializer_range, name="classifier")

    def head(self, base_outputs, inputs, training=False):
        return {"logits": self.classifier(self.dropout(base_outputs.last_hidden_state, training=training))}


class XLMRobertaXLForQuestionAnswering(tasks.QuestionAnsweringTask, XLMRobertaXLPreTrainedModel):
    """Extractive QA: start and end logits per token (config.num_labels must be 2, as in the reference)."""

    def __init__(self, config, **kwargs):
        if config.num_labels != 2:
            raise ValueError(f"XLMRobertaXLForQuestionAnswering needs num_labels=2 (start, end), got {config.num_labels}")
        super().__init__(config, **kwargs)
        self.roberta = XLMRobertaXLMainLayer(config, add_pooling_layer=False, name="roberta")
        self.qa_outputs = layers.dense(config.num_labels, config.initializer_range, name="qa_outputs")

    def head(self, base_outputs, inputs, training=False):
        return {"logits": self.qa_outputs(base_outputs.last_hidden_state)}


# The TF names of the reference documents are the same classes.
TFXLMRobertaXLModel = XLMRobertaXLModel
TFXLMRobertaXLForCausalLM = XLMRobertaXLForCausalLM
TFXLMRobertaXLForMaskedLM = XLMRobertaXLForMaskedLM
TFXLMRobertaXLForSequenceClassification = XLMRobertaXLForSequenceClassification
TFXLMRobertaXLForMultipleChoice = XLMRobertaXLForMultipleChoice
TFXLMRobertaXLForTokenClassification = XLMRobertaXLForTokenClassification
TFXLMRobertaXLForQuestionAnswering = XLMRobertaXLForQuestionAnswering
