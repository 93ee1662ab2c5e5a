from tfmodels.models.yoso.configuration import YosoConfig
from tfmodels.models.yoso.modeling import (
    BaseModelOutputWithCrossAttentions, TFYosoForMaskedLM, TFYosoForMultipleChoice, TFYosoForQuestionAnswering,
    TFYosoForSequenceClassification, TFYosoForTokenClassification, TFYosoModel, YosoForMaskedLM,
    YosoForMultipleChoice, YosoForQuestionAnswering, YosoForSequenceClassification, YosoForTokenClassification,
    YosoModel, YosoPreTrainedModel)
