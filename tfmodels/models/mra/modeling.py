"""MRA: the core text-encoder skeleton with multi-resolution (MRA-2) attention, and every documented task head.

The attention algorithm lives in tfmodels/ops/block_sparse_attention.py (on the block_sparse custom ops, or their
pure-TF twins under XLA / for export). Differences from RoBERTa that matter for parity: position ids are simply
2, 3, ... (not padding-aware), the position table has max_position_embeddings + 2 rows, the classification head
uses config.hidden_act, and the multiple-choice head is pre_classifier + ReLU + classifier on the first token.
"""
import tensorflow as tf

from tfmodels.core import attention as attn, encoder
from tfmodels.core.text_heads import TextPreTrainedModel, standard_heads
from tfmodels.ops.block_sparse_attention import mra2_attention
from tfmodels.models.mra.checkpoint import MRA_CHECKPOINT_MAP
from tfmodels.models.mra.configuration import MraConfig


class MraSelfAttention(encoder.SelfAttentionBase):
    """Query/key/value projections and the MRA-2 attention (no attention dropout: the reference has no
    probability matrix to drop from)."""

    def __init__(self, config, layer_index=0, **kwargs):
        super().__init__(config, **kwargs)
        # The compiled block_sparse ops cannot run under XLA: Keras must not jit-compile models holding this.
        self.supports_jit = False

    def call(self, hidden_states, attention_mask=None, head_mask=None, output_attentions=False, training=False):
        config = self.config
        query, key, value = (self.project(dense, hidden_states) for dense in (self.query, self.key, self.value))
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


class MraLayer(encoder.PostNormLayer):
    attention_class = MraSelfAttention


class MraMainLayer(encoder.TextMainLayer):
    """The skeleton with MRA's layers; positions count from 2 (the reference's buffer is arange(max) + 2)."""

    layer_class = MraLayer
    position_offset = 2
    layers_share_one_graph = True

    def layer_mask(self, attention_mask, embeddings):
        return attention_mask  # mra2_attention takes the 0/1 mask (or None) itself


class MraPreTrainedModel(TextPreTrainedModel):
    config_class = MraConfig
    base_model_prefix = "mra"
    checkpoint_map = MRA_CHECKPOINT_MAP
    main_layer_class = MraMainLayer
    token_loss_ignores_padding = True
    qa_forces_two_labels = True

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.supports_jit = False  # the block_sparse custom ops cannot be XLA-compiled


(MraModel, MraForMaskedLM, MraForSequenceClassification, MraForMultipleChoice, MraForTokenClassification,
 MraForQuestionAnswering) = standard_heads(MraPreTrainedModel)


# The TF-style names are the same classes.
TFMraModel = MraModel
TFMraForMaskedLM = MraForMaskedLM
TFMraForSequenceClassification = MraForSequenceClassification
TFMraForMultipleChoice = MraForMultipleChoice
TFMraForTokenClassification = MraForTokenClassification
TFMraForQuestionAnswering = MraForQuestionAnswering

__all__ = ["MraPreTrainedModel", "MraModel", "MraForMaskedLM", "MraForSequenceClassification", "MraForMultipleChoice",
           "MraForTokenClassification", "MraForQuestionAnswering", "TFMraModel", "TFMraForMaskedLM",
           "TFMraForSequenceClassification", "TFMraForMultipleChoice", "TFMraForTokenClassification",
           "TFMraForQuestionAnswering"]
