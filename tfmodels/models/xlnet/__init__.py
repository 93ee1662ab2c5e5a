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

from tfmodels.registry import FamilySpec as _FamilySpec  # noqa: E402

# Relative positions: no length limit. The QA recipe task trains the span head XLNetForQuestionAnsweringSimple
# (the beam-search XLNetForQuestionAnswering is for inference with start/end_n_top).
__family__ = _FamilySpec("xlnet", prefix="XLNet", tokenizer="XLNetTokenizer", tokenizer_assets="xlnet",
                         heads={"question-answering": "XLNetForQuestionAnsweringSimple"})
