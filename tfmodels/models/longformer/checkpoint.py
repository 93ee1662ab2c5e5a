"""How Longformer weights are named in Hugging Face checkpoints, beyond the default naming.

Our layers carry the reference's module names, so only the LM head needs a word: HF ties `lm_head.decoder`
to the word embeddings and to `lm_head.bias` and drops the tied copies when saving.
HF TF checkpoints (tf_model.h5 of the TF classes) need no map of their own: core.tf_h5 turns their
variable names into these PyTorch names by transformers' own rule.
"""
from tfmodels.core.checkpoint import CheckpointMap

LONGFORMER_CHECKPOINT_MAP = CheckpointMap(
    renames=[(r"^lm_head\.bias$", ["lm_head.bias", "lm_head.decoder.bias"])],
    ignore=[r"(^|\.)position_ids$", r"(^|\.)token_type_ids$", r"^lm_head\.decoder\.bias$",
            r"^lm_head\.decoder\.weight$"],
)
