"""BEiT: image transformer with masked image modeling, image classification and semantic segmentation heads, and
its image processor."""
from tfmodels.models.beit.configuration import BeitConfig
from tfmodels.models.beit.image_processing import BeitImageProcessor
from tfmodels.models.beit.modeling import (
    BeitForImageClassification, BeitForMaskedImageModeling, BeitForSemanticSegmentation, BeitModel,
    BeitModelOutputWithPooling, BeitPreTrainedModel, TFBeitForImageClassification, TFBeitForMaskedImageModeling,
    TFBeitForSemanticSegmentation, TFBeitModel)

__all__ = ["BeitConfig", "BeitImageProcessor", "BeitModel", "BeitForMaskedImageModeling",
           "BeitForImageClassification", "BeitForSemanticSegmentation", "BeitModelOutputWithPooling",
           "BeitPreTrainedModel", "TFBeitModel", "TFBeitForMaskedImageModeling", "TFBeitForImageClassification",
           "TFBeitForSemanticSegmentation"]

from tfmodels.registry import FamilySpec as _FamilySpec  # noqa: E402

__family__ = _FamilySpec("beit", prefix="Beit", image_processor="BeitImageProcessor", modality="image")
