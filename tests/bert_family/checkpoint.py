"""BERT's masked-LM head is the core LMHead (cls.dense, cls.layer_norm, cls.decoder, cls.bias) where HF nests
cls.predictions.transform.{dense,LayerNorm}; HF ties the decoder to the word embeddings and drops the copies."""
from tfmodels.core.checkpoint import CheckpointMap

BERT_CHECKPOINT_MAP = CheckpointMap(
    renames=[(r"^cls\.dense\.", "cls.predictions.transform.dense."),
             (r"^cls\.layer_norm\.", "cls.predictions.transform.LayerNorm."),
             (r"^cls\.bias$", ["cls.predictions.bias", "cls.predictions.decoder.bias"]),
             (r"^cls\.decoder\.", "cls.predictions.decoder.")],
    ignore=[r"(^|\.)position_ids$", r"(^|\.)token_type_ids$", r"^cls\.predictions\.decoder\.(bias|weight)$"],
)
