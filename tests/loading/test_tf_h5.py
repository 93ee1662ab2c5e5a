"""tf_model.h5 written by transformers 4.57.6's TF classes (tf-keras), for every head of XLNet and Longformer that
HF has a TF class for: loads with nothing missing, unexpected or mis-shaped, and our outputs equal HF TF's and
HF PyTorch's to 1e-5 (batch 3 with padding). One head also as a sharded h5 (tf_model-0000x-of-0000y.h5)."""
import os

import numpy as np
import pytest
import torch
import transformers

import tfmodels
from tests import helpers
from tests.loading.conftest import SHARDED_H5_HEAD, TF_HEADS

FIELDS = ("logits", "start_logits", "end_logits", "last_hidden_state", "pooler_output")


@pytest.mark.parametrize("name", list(TF_HEADS) + ["sharded"])
def test_hf_tf_h5_loads_and_matches_hf_tf_and_pytorch(name, tf_checkpoints):
    entry = tf_checkpoints[name]
    head = SHARDED_H5_HEAD if name == "sharded" else name
    files = os.listdir(entry["tf_dir"])
    assert ("tf_model.h5.index.json" in files) == (name == "sharded") and not any(
        f.endswith((".safetensors", ".bin")) for f in files)
    ours, info = getattr(tfmodels, head).from_pretrained(entry["tf_dir"], output_loading_info=True)
    assert info.source.endswith("(h5 (sharded))" if name == "sharded" else "(h5)"), info.source
    assert info.mapped and not info.missing and not info.unexpected and not info.mismatched, info.report()
    inputs = entry["inputs"]
    got = ours(inputs, training=False)
    reference = getattr(transformers, head).from_pretrained(entry["pt_dir"]).eval()
    with torch.no_grad():
        expected = reference(**helpers.torch_inputs(inputs))
    compared = [field for field in FIELDS if field in got and got[field] is not None]
    assert compared
    for field in compared:
        helpers.assert_close(got[field], entry["tf_outputs"][field], name=f"{field} vs HF TF")
        helpers.assert_close(got[field], expected[field], name=f"{field} vs HF PyTorch")


def test_weights_format_picks_among_several(tf_checkpoints, tmp_path):
    """A directory with safetensors and h5 loads safetensors by default; weights_format="h5" reads the h5."""
    entry = tf_checkpoints[SHARDED_H5_HEAD]
    for name in os.listdir(entry["tf_dir"]):
        os.link(os.path.join(entry["tf_dir"], name), tmp_path / name)
    for name in os.listdir(entry["pt_dir"]):
        if name.endswith(".safetensors"):
            os.link(os.path.join(entry["pt_dir"], name), tmp_path / name)
    cls = getattr(tfmodels, SHARDED_H5_HEAD)
    default, info = cls.from_pretrained(str(tmp_path), output_loading_info=True)
    assert info.source.endswith("(safetensors)")
    from_h5, info = cls.from_pretrained(str(tmp_path), weights_format="h5", output_loading_info=True)
    assert info.source.endswith("(h5)")
    for a, b in zip(default.weights, from_h5.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(FileNotFoundError, match="pytorch_model.bin"):
        cls.from_pretrained(str(tmp_path), weights_format="bin")
