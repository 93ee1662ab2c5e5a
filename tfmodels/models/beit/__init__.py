from tfmodels.models.beit.configuration import BeitConfig
from tfmodels.models.beit.image_processing import BeitImageProcessor
from tfmodels.models.beit.modeling import (
    BeitForImageClassification, BeitForMaskedImageModeling, BeitForSemanticSegmentation, BeitModel,
    BeitModelOutputWithPooling, BeitPreTrainedModel, TFBeitForImageClassification, TFBeitForMaskedImageModeling,
    TFBeitForSemanticSegmentation, TFBeitModel)
