"""How Nyströmformer weights are named in Hugging Face checkpoints, beyond the default naming.

Our layers carry the reference's module names. The masked-LM head is the shared LMHead, whose transform
sub-layers are named `dense` / `layer_norm` where the reference nests them as `transform.dense` /
`transform.LayerNorm`; HF ties `cls.predictions.decoder` to the word embeddings and to `cls.predictions.bias`.
"""
from tfmodels.core.checkpoint import CheckpointMap

NYSTROMFORMER_CHECKPOINT_MAP = CheckpointMap(
    renames=[(r"^cls\.predictions\.dense\.", "cls.predictions.transform.dense."),
             (r"^cls\.predictions\.layer_norm\.", "cls.predictions.transform.LayerNorm."),
             (r"^cls\.predictions\.bias$", ["cls.predictions.bias", "cls.predictions.decoder.bias"])],
    ignore=[r"(^|\.)position_ids$", r"(^|\.)token_type_ids$", r"^cls\.predictions\.decoder\.bias$",
            r"^cls\.predictions\.decoder\.weight$"],
)
