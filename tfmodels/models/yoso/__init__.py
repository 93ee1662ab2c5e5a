from tfmodels.models.yoso.configuration import YosoConfig
from tfmodels.models.yoso.modeling import (
    TFYosoForMaskedLM, TFYosoForMultipleChoice, TFYosoForQuestionAnswering,
    TFYosoForSequenceClassification, TFYosoForTokenClassification, TFYosoModel, YosoForMaskedLM,
    YosoForMultipleChoice, YosoForQuestionAnswering, YosoForSequenceClassification, YosoForTokenClassification,
    YosoModel, YosoPreTrainedModel)

from tfmodels.registry import FamilySpec as _FamilySpec  # noqa: E402

__family__ = _FamilySpec("yoso", prefix="Yoso", tokenizer="AlbertTokenizer", tokenizer_assets="albert")
