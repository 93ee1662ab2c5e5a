from tfmodels.models.xlm_roberta_xl.configuration import XLMRobertaXLConfig
from tfmodels.models.xlm_roberta_xl.modeling import (
    TFXLMRobertaXLForCausalLM, TFXLMRobertaXLForMaskedLM, TFXLMRobertaXLForMultipleChoice,
    TFXLMRobertaXLForQuestionAnswering, TFXLMRobertaXLForSequenceClassification,
    TFXLMRobertaXLForTokenClassification, TFXLMRobertaXLModel, XLMRobertaXLForCausalLM, XLMRobertaXLForMaskedLM,
    XLMRobertaXLForMultipleChoice, XLMRobertaXLForQuestionAnswering, XLMRobertaXLForSequenceClassification,
    XLMRobertaXLForTokenClassification, XLMRobertaXLModel, XLMRobertaXLPreTrainedModel)

from tfmodels.registry import FamilySpec as _FamilySpec  # noqa: E402

# The one line that makes the family reachable from the CLI and from recipes (see tfmodels/registry.py).
__family__ = _FamilySpec("xlm-roberta-xl", prefix="XLMRobertaXL", tokenizer="XLMRobertaTokenizer",
                         tokenizer_assets="xlm_roberta",
                         max_length=lambda config: config.max_position_embeddings - config.pad_token_id - 1)
