from tfmodels.models.mra.configuration import MraConfig
from tfmodels.models.mra.modeling import (
    BaseModelOutputWithCrossAttentions, MraForMaskedLM, MraForMultipleChoice, MraForQuestionAnswering,
    MraForSequenceClassification, MraForTokenClassification, MraModel, MraPreTrainedModel, TFMraForMaskedLM,
    TFMraForMultipleChoice, TFMraForQuestionAnswering, TFMraForSequenceClassification, TFMraForTokenClassification,
    TFMraModel)
