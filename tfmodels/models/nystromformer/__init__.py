from tfmodels.models.nystromformer.configuration import NystromformerConfig
from tfmodels.models.nystromformer.modeling import (
    NystromformerForMaskedLM, NystromformerForMultipleChoice, NystromformerForQuestionAnswering,
    NystromformerForSequenceClassification, NystromformerForTokenClassification, NystromformerModel,
    NystromformerPreTrainedModel, TFNystromformerForMaskedLM, TFNystromformerForMultipleChoice,
    TFNystromformerForQuestionAnswering, TFNystromformerForSequenceClassification,
    TFNystromformerForTokenClassification, TFNystromformerModel)
