"""How XLNet weights are named in Hugging Face checkpoints, beyond the default naming.

Our layers carry the reference's module and parameter names (rel_attn.q/k/v/o/r as [d_model, n_head, d_head],
r_r_bias, r_s_bias, r_w_bias, seg_embed, mask_emb), so nothing is renamed. The LM projection `lm_loss.weight`
is tied to the word embeddings by default and HF does not write the tied copy.
HF TF checkpoints (tf_model.h5 of the TF classes) need no map of their own: core.tf_h5 turns their
variable names into these PyTorch names by transformers' own rule.
"""
from tfmodels.core.checkpoint import CheckpointMap

XLNET_CHECKPOINT_MAP = CheckpointMap(ignore=[r"^lm_loss\.weight$"])
