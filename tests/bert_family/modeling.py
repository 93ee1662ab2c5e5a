"""BERT (Devlin et al., 2019): the core text-encoder skeleton with dense softmax self-attention, and the six
standard heads. The classification and multiple-choice heads read the pooler output, as the reference's do."""
from tfmodels.core import attention as attn, encoder, layers, outputs as out
from tfmodels.core.text_heads import TextPreTrainedModel, standard_heads
from tests.bert_family.checkpoint import BERT_CHECKPOINT_MAP
from tests.bert_family.configuration import BertConfig


class BertSelfAttention(encoder.SelfAttentionBase):
    """softmax(Q K^T / sqrt(d) + mask) V over heads, dropout on the probabilities."""

    def __init__(self, config, layer_index=0, **kwargs):
        super().__init__(config, **kwargs)
        self.dropout = layers.dropout(config.attention_probs_dropout_prob)

    def call(self, hidden_states, attention_mask=None, head_mask=None, output_attentions=False, training=False):
        query, key, value = (self.split_heads(dense(hidden_states)) for dense in (self.query, self.key, self.value))
        context, probs = attn.scaled_dot_product_attention(query, key, value, attention_mask, head_mask,
                                                           self.dropout, training, need_probs=output_attentions)
        return attn.merge_heads(context), probs


class BertLayer(encoder.PostNormLayer):
    attention_class = BertSelfAttention


class BertMainLayer(encoder.TextMainLayer):
    layer_class = BertLayer
    has_pooler = True
    output_class = out.BaseModelOutputWithPoolingAndCrossAttentions


class BertPreTrainedModel(TextPreTrainedModel):
    config_class = BertConfig
    base_model_prefix = "bert"
    checkpoint_map = BERT_CHECKPOINT_MAP
    main_layer_class = BertMainLayer
    classifier_style = "pooled"
    multiple_choice_style = "pooled"


(BertModel, BertForMaskedLM, BertForSequenceClassification, BertForMultipleChoice, BertForTokenClassification,
 BertForQuestionAnswering) = standard_heads(BertPreTrainedModel)
