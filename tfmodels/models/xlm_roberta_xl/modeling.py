"""XLM-RoBERTa-XL: a pre-LayerNorm RoBERTa (the XL and XXL checkpoints), with every documented task head.

Differences from RoBERTa that matter for parity: layer norm *before* attention and feed-forward, a final
encoder LayerNorm, no LayerNorm on the embeddings, no dropout after the feed-forward output, and position ids
counted from pad_token_id + 1 over non-padding tokens (fairseq's make_positions).
"""
import keras
import numpy as np
import tensorflow as tf

from tfmodels.core import attention as attn, blocks, encoder
from tfmodels.core import layers, outputs as out, tasks, text_heads
from tfmodels.core.inputs import check_rank, check_same_shape, text_reference
from tfmodels.core.layers import apply_chunking
from tfmodels.core.text_heads import TextPreTrainedModel, standard_heads
from tfmodels.models.xlm_roberta_xl.checkpoint import XLM_ROBERTA_XL_CHECKPOINT_MAP
from tfmodels.models.xlm_roberta_xl.configuration import XLMRobertaXLConfig


class XLMRobertaXLSelfAttention(encoder.SelfAttentionBase):
    def __init__(self, config, position_embedding_type=None, **kwargs):
        super().__init__(config, **kwargs)
        ir = config.initializer_range
        self.dropout = layers.dropout(config.attention_probs_dropout_prob)
        self.position_embedding_type = position_embedding_type or config.position_embedding_type
        self.max_position_embeddings = config.max_position_embeddings
        if self.position_embedding_type in ("relative_key", "relative_key_query"):
            self.distance_embedding = layers.embedding(2 * config.max_position_embeddings - 1, self.head_dim, ir,
                                                       name="distance_embedding")

    def call(self, hidden_states, attention_mask=None, head_mask=None, encoder_hidden_states=None,
             past_key_value=None, training=False, need_probs=True):
        query = self.project(self.query, hidden_states)
        is_cross = encoder_hidden_states is not None
        if is_cross and past_key_value is not None:
            key, value = past_key_value  # cross-attention keys/values are computed once and cached
        else:
            source = encoder_hidden_states if is_cross else hidden_states
            key, value = self.project(self.key, source), self.project(self.value, source)
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
        return layers.apply_dense_dropout_residual(self.dense, self.dropout, hidden_states, residual, training)


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
        return layers.apply_dense(self.dense, hidden_states, residual=residual)


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
        layers.share_one_graph(self.layer)
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


class XLMRobertaXLMainLayer(keras.layers.Layer):
    """Embeddings + encoder (+ pooler): the part every head shares. Takes already-normalised inputs."""

    def __init__(self, config, add_pooling_layer=True, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        # RoBERTa's padding-aware positions, and no LayerNorm on the embeddings (the layers normalise first).
        self.embeddings = encoder.TextEmbeddings(config, padding_aware_positions=True, layer_norm=False,
                                                 name="embeddings")
        self.encoder = XLMRobertaXLEncoder(config, name="encoder")
        self.pooler = encoder.Pooler(config, name="pooler") if add_pooling_layer else None

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


class XLMRobertaXLPreTrainedModel(TextPreTrainedModel):
    config_class = XLMRobertaXLConfig
    base_model_prefix = "roberta"
    input_names = _ENCODER_INPUTS
    checkpoint_map = XLM_ROBERTA_XL_CHECKPOINT_MAP
    main_layer_class = XLMRobertaXLMainLayer
    lm_head_path = "lm_head"
    lm_head_activation = "gelu"
    classifier_activation = "tanh"
    multiple_choice_style = "pooled"
    multiple_choice_dropout = "hidden_dropout_prob"
    token_loss_ignores_padding = True

    def dummy_inputs(self):
        inputs = super().dummy_inputs()
        if self.config.add_cross_attention and "encoder_hidden_states" in self.input_names:
            inputs["encoder_hidden_states"] = np.zeros((2, 3, self.config.hidden_size), np.float32)
        return inputs


_DECODER_OPTIONS = ("use_cache", "output_attentions", "output_hidden_states", "return_dict")


class XLMRobertaXLModel(text_heads.BaseModelHead, tasks.BaseModelTask, XLMRobertaXLPreTrainedModel):
    """The bare encoder (or decoder, with is_decoder=True) returning hidden states and the pooled output."""

    output_class = out.BaseModelOutputWithPoolingAndCrossAttentions
    input_names = _ENCODER_INPUTS + _DECODER_INPUTS + ("past_key_values",)
    option_names = _DECODER_OPTIONS


class XLMRobertaXLForCausalLM(text_heads.MaskedLMHead, tasks.CausalLMTask, XLMRobertaXLPreTrainedModel):
    """Left-to-right LM (set is_decoder=True); `past_key_values` caches keys/values for incremental decoding,
    and cross-attention over `encoder_hidden_states` when add_cross_attention=True. (The LM head is the masked
    LM's.)"""

    input_names = _ENCODER_INPUTS + _DECODER_INPUTS + ("past_key_values",)
    option_names = _DECODER_OPTIONS

    def forward(self, inputs, labels, options, training=False):
        if labels.get("labels") is not None:
            options["use_cache"] = False  # as the reference: no cache when computing a loss
        return super().forward(inputs, labels, options, training)


class XLMRobertaXLForMaskedLM(text_heads.MaskedLMHead, tasks.MaskedLMTask, XLMRobertaXLPreTrainedModel):
    input_names = _ENCODER_INPUTS + _DECODER_INPUTS


class XLMRobertaXLForMultipleChoice(text_heads.MultipleChoiceHead, tasks.MultipleChoiceTask,
                                    XLMRobertaXLPreTrainedModel):
    """Inputs of shape [batch, num_choices, seq]; scores each choice from the pooled output. List inputs take
    TFRobertaForMultipleChoice's order (the list rule), not the PyTorch forward's."""

    input_names = _ENCODER_INPUTS


XLMRobertaXLForSequenceClassification, XLMRobertaXLForTokenClassification, XLMRobertaXLForQuestionAnswering = (
    standard_heads(XLMRobertaXLPreTrainedModel, ("ForSequenceClassification", "ForTokenClassification",
                                                 "ForQuestionAnswering")))


# The TF names of the reference documents are the same classes.
TFXLMRobertaXLModel = XLMRobertaXLModel
TFXLMRobertaXLForCausalLM = XLMRobertaXLForCausalLM
TFXLMRobertaXLForMaskedLM = XLMRobertaXLForMaskedLM
TFXLMRobertaXLForSequenceClassification = XLMRobertaXLForSequenceClassification
TFXLMRobertaXLForMultipleChoice = XLMRobertaXLForMultipleChoice
TFXLMRobertaXLForTokenClassification = XLMRobertaXLForTokenClassification
TFXLMRobertaXLForQuestionAnswering = XLMRobertaXLForQuestionAnswering
