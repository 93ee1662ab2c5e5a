"""How YOSO weights are named in Hugging Face checkpoints, beyond the default naming.

The encoder carries the reference's module names. The masked-LM head is the shared core LMHead (dense,
layer_norm, decoder, bias) where the reference nests BERT's cls.predictions.transform.{dense,LayerNorm};
HF ties the decoder to the word embeddings and its bias to cls.predictions.bias and drops the tied copies.
"""
from tfmodels.core.checkpoint import CheckpointMap

YOSO_CHECKPOINT_MAP = CheckpointMap(
    renames=[(r"^cls\.dense\.", "cls.predictions.transform.dense."),
             (r"^cls\.layer_norm\.", "cls.predictions.transform.LayerNorm."),
             (r"^cls\.bias$", ["cls.predictions.bias", "cls.predictions.decoder.bias"]),
             (r"^cls\.decoder\.", "cls.predictions.decoder.")],
    ignore=[r"(^|\.)position_ids$", r"(^|\.)token_type_ids$", r"^cls\.predictions\.decoder\.bias$",
            r"^cls\.predictions\.decoder\.weight$"],
)
