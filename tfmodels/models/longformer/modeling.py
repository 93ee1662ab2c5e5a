"""Longformer: RoBERTa with sliding-window local attention plus global attention, with every task head.

Attention of a layer with window W (one-sided w = W / 2): every token attends to the tokens within w of it
(the band, computed by the `sliding_window` custom op or its pure-TF twin, memory O(seq * w)) and to every
token marked global; tokens marked global attend to the whole sequence through their own projections
(query_global / key_global / value_global). The algorithm is tfmodels.ops.sliding_window_attention; this
module holds the layers, which own the projections. Sequences are padded to a multiple of the largest window inside
the model, as the reference does, and every output is returned at the input length.

Differences from the reference, all in what is returned, never in the numbers:
- `global_attentions` is returned whenever `output_attentions` is set (shape (batch, heads, seq, 0) when no
  token is global), as TFLongformer does; PyTorch omits it then.
- `global_attentions` has the input length (PyTorch returns the padded length; at the padded positions it
  holds 0, or 1/padded length in the filler slots of sequences with fewer global tokens than the batch).
"""
import math

import keras
import tensorflow as tf

from tfmodels.core import blocks, encoder, layers, outputs as out, tasks, text_heads
from tfmodels.core.inputs import check_ids_in_range, check_max_length, text_reference
from tfmodels.core.layers import apply_chunking, apply_dense
from tfmodels.core.logging import warn_once
from tfmodels.core.padding import pad_to_multiple, unpad
from tfmodels.core.text_heads import TextPreTrainedModel
from tfmodels.models.longformer.checkpoint import LONGFORMER_CHECKPOINT_MAP
from tfmodels.models.longformer.configuration import LongformerConfig
from tfmodels.ops import dispatch
from tfmodels.ops import sliding_window_attention as swa

_GLOBAL = ("global_attentions",)
LongformerBaseModelOutput = out.define_output(
    "LongformerBaseModelOutput", ("last_hidden_state", "hidden_states", "attentions") + _GLOBAL)
LongformerBaseModelOutputWithPooling = out.define_output(
    "LongformerBaseModelOutputWithPooling",
    ("last_hidden_state", "pooler_output", "hidden_states", "attentions") + _GLOBAL)
LongformerMaskedLMOutput = out.define_output(
    "LongformerMaskedLMOutput", ("loss", "logits", "hidden_states", "attentions") + _GLOBAL)
LongformerQuestionAnsweringModelOutput = out.define_output(
    "LongformerQuestionAnsweringModelOutput",
    ("loss", "start_logits", "end_logits", "hidden_states", "attentions") + _GLOBAL)
LongformerSequenceClassifierOutput = out.define_output(
    "LongformerSequenceClassifierOutput", ("loss", "logits", "hidden_states", "attentions") + _GLOBAL)
LongformerMultipleChoiceModelOutput = out.define_output(
    "LongformerMultipleChoiceModelOutput", ("loss", "logits", "hidden_states", "attentions") + _GLOBAL)
LongformerTokenClassifierOutput = out.define_output(
    "LongformerTokenClassifierOutput", ("loss", "logits", "hidden_states", "attentions") + _GLOBAL)


# ---------------------------------------------------------------------------------------------------------------
# Global attention masks that the heads put in place when none is given (as the reference)


def _separator_global_mask(input_ids, sep_token_id, before_sep_token, head_name):
    """Global attention on the tokens before the first separator (question tokens), or after the second one
    (before_sep_token=False), for inputs with exactly three separators per sequence (`<s> A </s></s> B </s>`).
    Otherwise no token is global, with a warning (as TFLongformer; PyTorch raises)."""
    is_sep = tf.equal(input_ids, sep_token_id)
    counts = tf.reduce_sum(tf.cast(is_sep, tf.int32), axis=1)
    well_formed = tf.reduce_all(tf.equal(counts, 3))
    if tf.executing_eagerly() and not bool(well_formed):
        warn_once(f"{head_name}-separators",
                  f"{head_name}: there should be exactly three separator tokens ({sep_token_id}) in every sequence "
                  "to put global attention on the question tokens; global attention is disabled for this call. "
                  "Pass `global_attention_mask` to choose the global tokens.")
    first = tf.argmax(tf.cast(is_sep, tf.int32), axis=1, output_type=tf.int32)[:, None]
    positions = tf.range(tf.shape(input_ids)[1])[None, :]
    mask = positions < first if before_sep_token else positions > first + 1
    return tf.where(well_formed, tf.cast(mask, tf.int32), tf.zeros_like(input_ids, tf.int32))


def _has_rank(tensor, rank):
    return tensor is not None and tensor.shape.rank == rank


def _first_token_global_mask(reference):
    """Global attention on the first token (<s>, the classification token)."""
    positions = tf.range(tf.shape(reference)[1])[None, :]
    return tf.cast(tf.equal(positions, 0), tf.int32) * tf.ones_like(reference[:, :1], tf.int32)


# ---------------------------------------------------------------------------------------------------------------
# Layers


class LongformerSelfAttention(encoder.SelfAttentionBase):
    """The projections of one layer; the attention itself is tfmodels.ops.sliding_window_attention."""

    def __init__(self, config, layer_id, **kwargs):
        super().__init__(config, **kwargs)
        self.embed_dim = config.hidden_size
        ir = config.initializer_range
        self.query_global = layers.dense(self.embed_dim, ir, name="query_global")
        self.key_global = layers.dense(self.embed_dim, ir, name="key_global")
        self.value_global = layers.dense(self.embed_dim, ir, name="value_global")
        self.dropout = layers.dropout(config.attention_probs_dropout_prob)
        self.global_dropout = layers.dropout(config.attention_probs_dropout_prob)
        self.layer_id = layer_id
        self.attention_window = config.attention_windows()[layer_id]
        self.one_sided_attn_window_size = self.attention_window // 2
        # The sliding-window custom op cannot run inside XLA: Keras must not jit-compile a model using it.
        self.supports_jit = False

    def build(self, input_shape=None):
        for dense in (self.query, self.key, self.value, self.query_global, self.key_global, self.value_global):
            dense.build([None, None, self.embed_dim])
        self.built = True

    def _split(self, x):
        batch, seq = tf.shape(x)[0], tf.shape(x)[1]
        return tf.reshape(x, [batch, seq, self.num_heads, self.head_dim])

    def _per_head(self, dense, dtype):
        """(kernel [E, H, D], bias [H, D]) of a projection, in the compute dtype."""
        kernel = tf.reshape(tf.cast(dense.kernel, dtype), [self.embed_dim, self.num_heads, self.head_dim])
        return kernel, tf.reshape(tf.cast(dense.bias, dtype), [self.num_heads, self.head_dim])

    def call(self, hidden_states, plan, layer_head_mask=None, output_attentions=False, training=False):
        dtype = hidden_states.dtype
        scale = tf.cast(math.sqrt(self.head_dim), dtype)
        query = self._split(apply_dense(self.query, hidden_states) / scale)
        key = self._split(apply_dense(self.key, hidden_states))
        value = self._split(apply_dense(self.value, hidden_states))
        # No dropout callable in inference, where the fused op may then run (as core.attention decides).
        inference = training is None or training is False
        dropout = None if inference else (lambda p: self.dropout(p, training=training))
        output, probs = swa.local_attention(query, key, value, plan, self.one_sided_attn_window_size,
                                            layer_head_mask, dropout, need_probs=output_attentions)
        global_hidden = tf.gather(hidden_states, plan.positions, batch_dims=1)          # [B, X, E]
        global_query = self._split(apply_dense(self.query_global, global_hidden) / scale)
        global_output, global_probs = swa.global_attention(
            hidden_states, plan, global_query, self._per_head(self.key_global, dtype),
            self._per_head(self.value_global, dtype), layer_head_mask,
            lambda p: self.global_dropout(p, training=training))
        output = swa.merge_global_rows(output, global_output, plan)
        output = tf.reshape(output, [tf.shape(hidden_states)[0], tf.shape(hidden_states)[1], self.embed_dim])
        return output, probs, (global_probs if output_attentions else None)


class LongformerAttention(keras.layers.Layer):
    def __init__(self, config, layer_id=0, **kwargs):
        super().__init__(**kwargs)
        self.self = LongformerSelfAttention(config, layer_id, name="self")
        self.output_ = blocks.PostNormOutput(config, name="output")

    def call(self, hidden_states, plan, layer_head_mask=None, output_attentions=False, training=False):
        context, probs, global_probs = self.self(hidden_states, plan=plan, layer_head_mask=layer_head_mask,
                                                 output_attentions=output_attentions, training=training)
        return self.output_(context, hidden_states, training=training), probs, global_probs


class LongformerLayer(keras.layers.Layer):
    def __init__(self, config, layer_id=0, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.attention = LongformerAttention(config, layer_id, name="attention")
        self.intermediate = blocks.Intermediate(config, name="intermediate")
        self.output_ = blocks.PostNormOutput(config, config.intermediate_size, name="output")

    def feed_forward(self, attention_output, training=False):
        return self.output_(self.intermediate(attention_output), attention_output, training=training)

    def call(self, hidden_states, plan, layer_head_mask=None, output_attentions=False, training=False):
        attention_output, probs, global_probs = self.attention(
            hidden_states, plan=plan, layer_head_mask=layer_head_mask, output_attentions=output_attentions,
            training=training)
        layer_output = apply_chunking(lambda x: self.feed_forward(x, training=training),
                                      self.config.chunk_size_feed_forward, attention_output)
        return layer_output, probs, global_probs


class LongformerEncoder(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.layer = [LongformerLayer(config, layer_id=i, name=f"layer_{i}") for i in range(config.num_hidden_layers)]

    def call(self, hidden_states, plan, head_mask=None, output_attentions=False, output_hidden_states=False,
             training=False):
        all_hidden, all_attentions, all_global = [], [], []
        head_masks = _head_masks(head_mask, len(self.layer), hidden_states.dtype)
        for i, layer_module in enumerate(self.layer):
            if output_hidden_states:
                all_hidden.append(hidden_states)
            # The layer itself (its dropout seeds are replayed in the recomputation); the plan and the head mask
            # need no gradient and are passed as keyword arguments.
            hidden_states, probs, global_probs = layers.run_layer(
                layer_module, self.config.gradient_checkpointing and training, hidden_states, plan=plan,
                layer_head_mask=head_masks[i], output_attentions=output_attentions, training=training)
            if output_attentions:
                all_attentions.append(probs)
                all_global.append(global_probs)
        if output_hidden_states:
            all_hidden.append(hidden_states)
        return hidden_states, all_hidden, all_attentions, all_global


def _head_masks(head_mask, num_layers, dtype):
    """None, [heads] or [layers, heads] -> a list of per-layer [heads] masks (or None)."""
    if head_mask is None:
        return [None] * num_layers
    head_mask = tf.cast(head_mask, dtype)
    if head_mask.shape.rank == 1:
        return [head_mask] * num_layers
    if head_mask.shape.rank == 2:
        return [head_mask[i] for i in range(num_layers)]
    raise ValueError(f"head_mask must have rank 1 [num_heads] or 2 [num_layers, num_heads], got {head_mask.shape}")


class LongformerMainLayer(keras.layers.Layer):
    """Embeddings + encoder (+ pooler): the part every head shares. Takes already-normalised inputs."""

    def __init__(self, config, add_pooling_layer=True, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.embeddings = encoder.TextEmbeddings(config, padding_aware_positions=True, name="embeddings")
        self.encoder = LongformerEncoder(config, name="encoder")
        self.pooler = encoder.Pooler(config, name="pooler") if add_pooling_layer else None
        self.pad_multiple = max(config.attention_windows())

    def call(self, input_ids=None, attention_mask=None, head_mask=None, global_attention_mask=None,
             token_type_ids=None, position_ids=None, inputs_embeds=None, output_attentions=False,
             output_hidden_states=False, training=False):
        config = self.config
        reference = text_reference(input_ids, inputs_embeds, attention_mask=attention_mask,
                                   global_attention_mask=global_attention_mask, token_type_ids=token_type_ids,
                                   position_ids=position_ids)
        if input_ids is not None:
            input_ids = check_ids_in_range("input_ids", input_ids, config.vocab_size)
            reference = input_ids
        batch, seq_len = tf.shape(reference)[0], tf.shape(reference)[1]
        if position_ids is None and input_ids is not None:
            asserts = check_max_length("input_ids", seq_len, config.max_position_embeddings - config.pad_token_id - 1,
                                       f"max_position_embeddings={config.max_position_embeddings}, positions start "
                                       f"at pad_token_id+1={config.pad_token_id + 1}")
            if asserts:
                with tf.control_dependencies(asserts):
                    seq_len = tf.identity(seq_len)
        mask = tf.ones([batch, seq_len], tf.int32) if attention_mask is None else tf.cast(attention_mask, tf.int32)
        if global_attention_mask is not None:
            global_mask = tf.cast(global_attention_mask, tf.int32)
            num_slots = None
            if dispatch._inside_xla():
                # XLA needs a static number of global slots: the first xla_max_global_tokens global tokens.
                num_slots = config.xla_max_global_tokens
                global_mask = global_mask * tf.cast(tf.cumsum(global_mask, axis=1) <= num_slots, tf.int32)
            mask = mask * (global_mask + 1)
        else:
            num_slots = 0 if dispatch._inside_xla() else None
        if token_type_ids is None:
            token_type_ids = tf.zeros([batch, seq_len], tf.int32)
        if position_ids is None:
            if input_ids is not None:
                position_ids = encoder.create_position_ids_from_input_ids(input_ids, config.pad_token_id)
            else:
                start = config.pad_token_id + 1
                position_ids = tf.broadcast_to(tf.range(start, start + seq_len)[None], [batch, seq_len])

        # Pad to a multiple of the largest window (the padded tokens are masked out) and embed.
        multiple = self.pad_multiple
        mask, _ = pad_to_multiple(mask, multiple, value=0)
        token_type_ids, _ = pad_to_multiple(token_type_ids, multiple, value=0)
        position_ids, _ = pad_to_multiple(position_ids, multiple, value=config.pad_token_id)
        if input_ids is not None:
            input_ids, _ = pad_to_multiple(input_ids, multiple, value=config.pad_token_id)
        else:
            inputs_embeds, _ = pad_to_multiple(inputs_embeds, multiple, value=0)
        embedding_output = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds, training=training)
        plan = swa.GlobalPlan(mask, num_slots)
        hidden, all_hidden, all_attentions, all_global = self.encoder(
            embedding_output, plan=plan, head_mask=head_mask, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, training=training)
        sequence_output = unpad(hidden, seq_len)
        attentions = global_attentions = None
        if output_attentions:
            # [B, S, H, X + 2w + 1] -> [B, H, S, X + 2w + 1]; [B, H, X, S] -> [B, H, S, X]
            attentions = tuple(unpad(tf.transpose(a, [0, 2, 1, 3]), seq_len, axis=2) for a in all_attentions)
            global_attentions = tuple(unpad(tf.transpose(g, [0, 1, 3, 2]), seq_len, axis=2) for g in all_global)
        return LongformerBaseModelOutputWithPooling(
            last_hidden_state=sequence_output,
            pooler_output=self.pooler(sequence_output) if self.pooler is not None else None,
            hidden_states=tuple(unpad(h, seq_len) for h in all_hidden) if output_hidden_states else None,
            attentions=attentions,
            global_attentions=global_attentions)


# ---------------------------------------------------------------------------------------------------------------
# Models (input order of the TF reference classes, so that list inputs mean what they meant there)

_MODEL_INPUTS = ("input_ids", "attention_mask", "head_mask", "global_attention_mask", "token_type_ids",
                 "position_ids", "inputs_embeds")
_CLASSIFIER_INPUTS = ("input_ids", "attention_mask", "head_mask", "token_type_ids", "position_ids",
                      "global_attention_mask", "inputs_embeds")


class LongformerPreTrainedModel(TextPreTrainedModel):
    config_class = LongformerConfig
    base_model_prefix = "longformer"
    input_names = _MODEL_INPUTS
    checkpoint_map = LONGFORMER_CHECKPOINT_MAP
    main_layer_class = LongformerMainLayer
    lm_head_path = "lm_head"
    lm_head_activation = "gelu"
    classifier_activation = "tanh"
    multiple_choice_style = "pooled"
    supports_head_pruning = False  # its global query/key/value projections are not pruned (core.model_methods)


class LongformerModel(text_heads.BaseModelHead, tasks.BaseModelTask, LongformerPreTrainedModel):
    """The bare encoder returning hidden states and the pooled output (`add_pooling_layer=True`)."""

    output_class = LongformerBaseModelOutputWithPooling


class LongformerForMaskedLM(text_heads.MaskedLMHead, tasks.MaskedLMTask, LongformerPreTrainedModel):
    output_class = LongformerMaskedLMOutput


class LongformerForSequenceClassification(text_heads.SequenceClassificationHead, tasks.SequenceClassificationTask,
                                          LongformerPreTrainedModel):
    """Classification from the first token; without `global_attention_mask` the first token is global."""

    output_class = LongformerSequenceClassifierOutput
    input_names = _CLASSIFIER_INPUTS

    def base_inputs(self, inputs):
        if inputs.get("global_attention_mask") is None:
            reference = inputs.get("input_ids")
            if reference is None and _has_rank(inputs.get("inputs_embeds"), 3):
                reference = inputs["inputs_embeds"][:, :, 0]
            if _has_rank(reference, 2):  # (other ranks fail in the main layer's input checks)
                inputs = {**inputs, "global_attention_mask": _first_token_global_mask(reference)}
        return inputs


class LongformerForMultipleChoice(text_heads.MultipleChoiceHead, tasks.MultipleChoiceTask, LongformerPreTrainedModel):
    """Inputs [batch, num_choices, seq]; scores each choice from the pooled output. Without
    `global_attention_mask`, the tokens after the question (`<s> question </s></s> choice </s>`) are global."""

    output_class = LongformerMultipleChoiceModelOutput
    input_names = _CLASSIFIER_INPUTS

    def base_inputs(self, inputs):
        flat = super().base_inputs(inputs)
        if flat.get("global_attention_mask") is None and _has_rank(flat.get("input_ids"), 2):
            flat = {**flat, "global_attention_mask": _separator_global_mask(
                flat["input_ids"], self.config.sep_token_id, False, type(self).__name__)}
        return flat


class LongformerForTokenClassification(text_heads.TokenClassificationHead, tasks.TokenClassificationTask,
                                       LongformerPreTrainedModel):
    output_class = LongformerTokenClassifierOutput
    input_names = _CLASSIFIER_INPUTS


class LongformerForQuestionAnswering(text_heads.QuestionAnsweringHead, tasks.QuestionAnsweringTask,
                                     LongformerPreTrainedModel):
    """Extractive QA. Without `global_attention_mask`, the question tokens (before the first separator of
    `<s> question </s></s> context </s>`) are global."""

    output_class = LongformerQuestionAnsweringModelOutput

    def base_inputs(self, inputs):
        if inputs.get("global_attention_mask") is None and _has_rank(inputs.get("input_ids"), 2):
            inputs = {**inputs, "global_attention_mask": _separator_global_mask(
                inputs["input_ids"], self.config.sep_token_id, True, type(self).__name__)}
        return inputs


# The TF names of the reference documents are the same classes.
TFLongformerModel = LongformerModel
TFLongformerForMaskedLM = LongformerForMaskedLM
TFLongformerForSequenceClassification = LongformerForSequenceClassification
TFLongformerForMultipleChoice = LongformerForMultipleChoice
TFLongformerForTokenClassification = LongformerForTokenClassification
TFLongformerForQuestionAnswering = LongformerForQuestionAnswering
TFLongformerSelfAttention = LongformerSelfAttention
