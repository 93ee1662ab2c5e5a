from tfmodels.models.xlnet.configuration import XLNetConfig
from tfmodels.models.xlnet.modeling import (
    TFXLNetForMultipleChoice, TFXLNetForQuestionAnswering, TFXLNetForQuestionAnsweringSimple,
    TFXLNetForSequenceClassification, TFXLNetForTokenClassification, TFXLNetLMHeadModel, TFXLNetMainLayer,
    TFXLNetModel, TFXLNetPreTrainedModel, XLNetForMultipleChoice, XLNetForMultipleChoiceOutput,
    XLNetForQuestionAnswering, XLNetForQuestionAnsweringOutput, XLNetForQuestionAnsweringSimple,
    XLNetForQuestionAnsweringSimpleOutput, XLNetForSequenceClassification, XLNetForSequenceClassificationOutput,
    XLNetForTokenClassification, XLNetForTokenClassificationOutput, XLNetLMHeadModel, XLNetLMHeadModelOutput,
    XLNetMainLayer, XLNetModel, XLNetModelOutput, XLNetPreTrainedModel)
from tfmodels.tokenizers.xlnet import XLNetTokenizer
