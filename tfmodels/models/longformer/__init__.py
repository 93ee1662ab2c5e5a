from tfmodels.models.longformer.configuration import LongformerConfig
from tfmodels.models.longformer.modeling import (
    LongformerBaseModelOutput, LongformerBaseModelOutputWithPooling, LongformerForMaskedLM,
    LongformerForMultipleChoice, LongformerForQuestionAnswering, LongformerForSequenceClassification,
    LongformerForTokenClassification, LongformerMaskedLMOutput, LongformerModel, LongformerMultipleChoiceModelOutput,
    LongformerPreTrainedModel, LongformerQuestionAnsweringModelOutput, LongformerSelfAttention,
    LongformerSequenceClassifierOutput, LongformerTokenClassifierOutput, TFLongformerForMaskedLM,
    TFLongformerForMultipleChoice, TFLongformerForQuestionAnswering, TFLongformerForSequenceClassification,
    TFLongformerForTokenClassification, TFLongformerModel, TFLongformerSelfAttention)
