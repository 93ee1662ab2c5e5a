from tfmodels.models.nystromformer.configuration import NystromformerConfig
from tfmodels.models.nystromformer.modeling import (
    NystromformerForMaskedLM, NystromformerForMultipleChoice, NystromformerForQuestionAnswering,
    NystromformerForSequenceClassification, NystromformerForTokenClassification, NystromformerModel,
    NystromformerPreTrainedModel, TFNystromformerForMaskedLM, TFNystromformerForMultipleChoice,
    TFNystromformerForQuestionAnswering, TFNystromformerForSequenceClassification,
    TFNystromformerForTokenClassification, TFNystromformerModel)

from tfmodels.registry import FamilySpec as _FamilySpec  # noqa: E402

__family__ = _FamilySpec("nystromformer", prefix="Nystromformer", tokenizer="AlbertTokenizer",
                         tokenizer_assets="albert")
