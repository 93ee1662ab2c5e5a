from tfmodels.models.longformer.configuration import LongformerConfig
from tfmodels.models.longformer.modeling import (
    LongformerBaseModelOutput, LongformerBaseModelOutputWithPooling, LongformerForMaskedLM,
    LongformerForMultipleChoice, LongformerForQuestionAnswering, LongformerForSequenceClassification,
    LongformerForTokenClassification, LongformerMaskedLMOutput, LongformerModel, LongformerMultipleChoiceModelOutput,
    LongformerPreTrainedModel, LongformerQuestionAnsweringModelOutput, LongformerSelfAttention,
    LongformerSequenceClassifierOutput, LongformerTokenClassifierOutput, TFLongformerForMaskedLM,
    TFLongformerForMultipleChoice, TFLongformerForQuestionAnswering, TFLongformerForSequenceClassification,
    TFLongformerForTokenClassification, TFLongformerModel, TFLongformerSelfAttention)

from tfmodels.registry import FamilySpec as _FamilySpec  # noqa: E402

# Position ids start at pad_token_id + 1 (RoBERTa style); the model pads to the window itself, the data
# pipeline pads to it too so that a batch is not padded twice.
__family__ = _FamilySpec("longformer", prefix="Longformer", tokenizer="LongformerTokenizer",
                         tokenizer_assets="roberta", pad_to_multiple_of="attention_window",
                         max_length=lambda config: config.max_position_embeddings - config.pad_token_id - 1)
