"""How MRA weights are named in Hugging Face checkpoints, beyond the default naming.

Our layers carry the reference's module names except the masked-LM head, which is the shared core LMHead
(`cls.dense`, `cls.layer_norm`, `cls.bias`, `cls.decoder`) where HF has `cls.predictions.transform.dense`,
`cls.predictions.transform.LayerNorm`, `cls.predictions.bias` and `cls.predictions.decoder`. HF ties the decoder
to the word embeddings (and its bias to `cls.predictions.bias`) and drops the tied copies when saving.
"""
from tfmodels.core.checkpoint import CheckpointMap

MRA_CHECKPOINT_MAP = CheckpointMap(
    renames=[
        (r"^cls\.dense\.", "cls.predictions.transform.dense."),
        (r"^cls\.layer_norm\.", "cls.predictions.transform.LayerNorm."),
        (r"^cls\.bias$", ["cls.predictions.bias", "cls.predictions.decoder.bias"]),
        (r"^cls\.decoder\.", "cls.predictions.decoder."),
    ],
    ignore=[r"(^|\.)position_ids$", r"(^|\.)token_type_ids$", r"^cls\.predictions\.decoder\.bias$",
            r"^cls\.predictions\.decoder\.weight$"],
)
