"""Write HF TF checkpoints (tf_model.h5) with transformers' own TF classes, and their outputs.

Run in a subprocess with USE_TF=1 TF_USE_LEGACY_KERAS=1 (the TF classes need tf-keras):
    python make_tf_checkpoints.py SPEC.json
SPEC: {"heads": [{"tf_class", "pt_class", "config_class", "config", "pt_dir", "tf_dir", "inputs", "outputs",
"max_shard_size"}]}. For each head a PyTorch model with every parameter randomised is saved to pt_dir, loaded by
the TF class (from_pt), saved with the TF class's save_pretrained to tf_dir (sharded with max_shard_size), and
the TF model's outputs on the npz `inputs` are written to the npz `outputs`.
"""
import json
import sys

import numpy as np
import tensorflow as tf
import torch
import transformers


def randomised(model, seed=0, std=0.2):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator) * std
            param.copy_(1.0 + noise if "LayerNorm.weight" in name or "layer_norm.weight" in name else noise)
    return model.eval()


def main(spec_path):
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    for head in spec["heads"]:
        config = getattr(transformers, head["config_class"])(**head["config"])
        torch.manual_seed(0)
        randomised(getattr(transformers, head["pt_class"])(config)).save_pretrained(head["pt_dir"])
        model = getattr(transformers, head["tf_class"]).from_pretrained(head["pt_dir"], from_pt=True)
        model.save_pretrained(head["tf_dir"], max_shard_size=head.get("max_shard_size") or "10GB")
        inputs = {k: tf.constant(v) for k, v in np.load(head["inputs"]).items()}
        outputs = model(inputs, training=False)
        np.savez(head["outputs"], **{k: v.numpy() for k, v in outputs.items() if hasattr(v, "numpy")})


if __name__ == "__main__":
    main(sys.argv[1])
