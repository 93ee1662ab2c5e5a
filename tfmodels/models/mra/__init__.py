from tfmodels.models.mra.configuration import MraConfig
from tfmodels.models.mra.modeling import (
    MraForMaskedLM, MraForMultipleChoice, MraForQuestionAnswering,
    MraForSequenceClassification, MraForTokenClassification, MraModel, MraPreTrainedModel, TFMraForMaskedLM,
    TFMraForMultipleChoice, TFMraForQuestionAnswering, TFMraForSequenceClassification, TFMraForTokenClassification,
    TFMraModel)

from tfmodels.registry import FamilySpec as _FamilySpec  # noqa: E402

# Blocks of 32 tokens: the model pads itself, the data pipeline pads to the block so that it need not.
__family__ = _FamilySpec("mra", prefix="Mra", tokenizer="RobertaTokenizer", tokenizer_assets="roberta",
                         pad_to_multiple_of=32)
