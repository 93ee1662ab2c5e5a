from tfmodels.models.xlm_roberta_xl.configuration import XLMRobertaXLConfig
from tfmodels.models.xlm_roberta_xl.modeling import (
    TFXLMRobertaXLForCausalLM, TFXLMRobertaXLForMaskedLM, TFXLMRobertaXLForMultipleChoice,
    TFXLMRobertaXLForQuestionAnswering, TFXLMRobertaXLForSequenceClassification,
    TFXLMRobertaXLForTokenClassification, TFXLMRobertaXLModel, XLMRobertaXLForCausalLM, XLMRobertaXLForMaskedLM,
    XLMRobertaXLForMultipleChoice, XLMRobertaXLForQuestionAnswering, XLMRobertaXLForSequenceClassification,
    XLMRobertaXLForTokenClassification, XLMRobertaXLModel, XLMRobertaXLPreTrainedModel)
