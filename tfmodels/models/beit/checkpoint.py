"""How BEiT weights are named in Hugging Face checkpoints, beyond the default naming.

Our layers carry the reference's module names. Two things differ: each pyramid-pooling block of the UperNet
head is an nn.Sequential of (AdaptiveAvgPool2d, ConvModule), so its conv module sits at index 1; and HF's
buffers (BatchNorm's num_batches_tracked, the relative_position_index of old checkpoints) are not weights.
"""
from tfmodels.core.checkpoint import CheckpointMap

BEIT_CHECKPOINT_MAP = CheckpointMap(
    renames=[(r"psp_modules\.(\d+)\.", r"psp_modules.\1.1.")],
    ignore=[r"(^|\.)num_batches_tracked$", r"(^|\.)relative_position_index$"],
)
