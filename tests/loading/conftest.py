"""Shared fixtures of the loading tests: HF-written tiny checkpoints of every family served by a test Hub on
127.0.0.1 (see hub_server.py), and HF TF-written tf_model.h5 checkpoints of every XLNet / Longformer TF head."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests import helpers
from tests.loading.hub_server import TestHub
from tfmodels.registry import ASSETS_DIR

HERE = os.path.dirname(os.path.abspath(__file__))
TEXT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
TOKEN_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
SEQ_LABELS = {0: "negative", 1: "neutral", 2: "positive"}
IMAGE = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
             image_size=32, patch_size=8, drop_path_rate=0.0, use_relative_position_bias=True,
             id2label={i: f"class_{i}" for i in range(5)})
SEGMENTATION = dict(IMAGE, num_hidden_layers=4, out_indices=[1, 2, 3, 4], use_auxiliary_head=False, pool_scales=[1, 2])

# Vocabulary sizes are the tokenizers' (tfmodels/assets): ALBERT 465, RoBERTa 1000, XLM-R 1002, XLNet 983.
# repo id -> (HF class, HF config class, config, tokenizer class, tokenizer assets, how weights are saved)
REPOS = {
    "tiny/yoso-mlm": ("YosoForMaskedLM", "YosoConfig", dict(TEXT, vocab_size=465, max_position_embeddings=64),
                      "AlbertTokenizer", "albert", "safetensors+bin"),
    "tiny/nystromformer-cls": ("NystromformerForSequenceClassification", "NystromformerConfig",
                               dict(TEXT, vocab_size=465, max_position_embeddings=64, segment_means_seq_len=16,
                                    num_landmarks=4, id2label=SEQ_LABELS), "AlbertTokenizer", "albert", "bin"),
    "tiny/mra-ner": ("MraForTokenClassification", "MraConfig", dict(TEXT, vocab_size=1000, max_position_embeddings=128,
                                                                    block_per_row=2, id2label=TOKEN_LABELS),
                     "RobertaTokenizer", "roberta", "safetensors"),
    "tiny/longformer-qa": ("LongformerForQuestionAnswering", "LongformerConfig",
                           dict(TEXT, vocab_size=1000, max_position_embeddings=80,
                                attention_window=[4, 8]),
                           "LongformerTokenizer", "roberta", "safetensors"),
    "tiny/xlm-roberta-xl-mlm": ("XLMRobertaXLForMaskedLM", "XLMRobertaXLConfig",
                                dict(TEXT, vocab_size=1002, max_position_embeddings=64), "XLMRobertaTokenizer",
                                "xlm_roberta", "sharded"),
    "tiny/beit-cls": ("BeitForImageClassification", "BeitConfig", IMAGE, None, None, "safetensors"),
    "tiny/beit-seg": ("BeitForSemanticSegmentation", "BeitConfig", SEGMENTATION, None, None, "safetensors"),
    "tiny/beit-mim": ("BeitForMaskedImageModeling", "BeitConfig", dict(IMAGE, use_mask_token=True), None, None,
                      "safetensors"),
}
# The repo whose only weights are an HF TF tf_model.h5 (written by TFXLNetForSequenceClassification).
H5_REPO = "tiny/xlnet-cls"

XLNET = dict(vocab_size=1000, d_model=32, n_layer=2, n_head=4, d_inner=37, mem_len=None)
LONGFORMER = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                  max_position_embeddings=80, type_vocab_size=2, attention_window=[4, 8])
# Every head that has an HF TF class (HF has no TFXLNetForQuestionAnswering, the beam-search head).
TF_HEADS = {
    "XLNetModel": XLNET, "XLNetLMHeadModel": XLNET, "XLNetForSequenceClassification": dict(XLNET, num_labels=3),
    "XLNetForMultipleChoice": XLNET, "XLNetForTokenClassification": dict(XLNET, num_labels=5),
    "XLNetForQuestionAnsweringSimple": XLNET,
    "LongformerModel": LONGFORMER, "LongformerForMaskedLM": LONGFORMER,
    "LongformerForSequenceClassification": dict(LONGFORMER, num_labels=3),
    "LongformerForMultipleChoice": LONGFORMER, "LongformerForTokenClassification": dict(LONGFORMER, num_labels=5),
    "LongformerForQuestionAnswering": LONGFORMER,
}
SHARDED_H5_HEAD = "XLNetForSequenceClassification"  # also written as tf_model-0000x-of-0000y.h5 shards


def tf_head_inputs(name):
    """Batch 3 with padding (XLNet: left, segments; Longformer: right, global tokens); [3, 2, L] for choices."""
    if name.startswith("XLNet"):
        ids, mask = helpers.padded_ids(3, 10, 99, 5, seed=1, side="left", low=9)
        inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": (ids == 5).astype(np.int32) * 2}
    else:
        ids, mask = helpers.padded_ids(3, 13, 99, 1, seed=1, low=3)
        ids[:, 0] = 0
        global_mask = np.zeros_like(mask)
        global_mask[:, 0] = 1
        global_mask[0, 4] = 1
        inputs = {"input_ids": ids, "attention_mask": mask, "global_attention_mask": global_mask}
    if name.endswith("MultipleChoice"):
        inputs = {k: np.stack([v, np.roll(v, 1, axis=0)], 1) for k, v in inputs.items()}
    return {k: v.astype(np.int32) for k, v in inputs.items()}


@pytest.fixture(scope="session")
def tf_checkpoints(tmp_path_factory):
    """{head: {"pt_dir", "tf_dir", "inputs", "tf_outputs"}} written by transformers' TF classes in a subprocess
    (tf-keras), from randomised PyTorch weights (pt_dir); "sharded" holds the sharded h5 of SHARDED_H5_HEAD."""
    root = tmp_path_factory.mktemp("hf_tf")
    heads, result = [], {}
    for name, config in list(TF_HEADS.items()) + [("sharded", TF_HEADS[SHARDED_H5_HEAD])]:
        pt_name = SHARDED_H5_HEAD if name == "sharded" else name
        family = "XLNet" if pt_name.startswith("XLNet") else "Longformer"
        inputs = tf_head_inputs(pt_name)
        np.savez(root / f"{name}_in.npz", **inputs)
        heads.append({"tf_class": "TF" + pt_name, "pt_class": pt_name, "config_class": family + "Config",
                      "config": config, "pt_dir": str(root / name / "pt"), "tf_dir": str(root / name / "tf"),
                      "inputs": str(root / f"{name}_in.npz"), "outputs": str(root / f"{name}_out.npz"),
                      "max_shard_size": "20KB" if name == "sharded" else None})
        result[name] = {"pt_dir": heads[-1]["pt_dir"], "tf_dir": heads[-1]["tf_dir"], "inputs": inputs,
                        "outputs": heads[-1]["outputs"]}
    with open(root / "spec.json", "w") as f:
        json.dump({"heads": heads}, f)
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, os.path.join(HERE, "make_tf_checkpoints.py"), str(root / "spec.json")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for entry in result.values():
        entry["tf_outputs"] = dict(np.load(entry.pop("outputs")))
    return result


def write_hf_repo(repo_id, directory, seed=0):
    """An HF-written checkpoint directory of `repo_id` (see REPOS), with its tokenizer or image processor."""
    import transformers
    hf_class, config_class, config, tokenizer_class, assets, saving = REPOS[repo_id]
    hf_config = getattr(transformers, config_class)(**config)
    torch_model = helpers.randomize_torch_model(getattr(transformers, hf_class)(hf_config), seed=seed)
    directory = str(directory)
    if saving in ("safetensors", "safetensors+bin"):
        torch_model.save_pretrained(directory)
    if saving in ("bin", "safetensors+bin"):
        torch_model.save_pretrained(directory, safe_serialization=False)
    if saving == "sharded":
        torch_model.save_pretrained(directory, max_shard_size="30KB")
    if tokenizer_class:
        getattr(transformers, tokenizer_class).from_pretrained(os.path.join(ASSETS_DIR, assets)) \
            .save_pretrained(directory)
    else:
        transformers.BeitImageProcessor(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32}) \
            .save_pretrained(directory)
    return directory


class Hub:
    """The running test Hub: `url`, `server` (a TestHub), `dirs` {repo id: the directory it serves (main)},
    `old` {repo id: (commit, directory) of the older commit tagged v1}, `cache` (HF_HUB_CACHE)."""


@pytest.fixture(scope="session")
def test_hub(tmp_path_factory, tf_checkpoints):
    """The test Hub, with HF_ENDPOINT pointing at it and a fresh HF cache, for the whole session."""
    import transformers
    from huggingface_hub import constants, file_download
    root = tmp_path_factory.mktemp("hub")
    hub = Hub()
    hub.server, hub.dirs, hub.old = TestHub(), {}, {}
    for repo_id in REPOS:
        hub.dirs[repo_id] = write_hf_repo(repo_id, root / repo_id)
    # An older commit (other weights) of the sharded repo, tagged v1, then main.
    old = write_hf_repo("tiny/xlm-roberta-xl-mlm", root / "old" / "xlm-roberta-xl-mlm", seed=7)
    hub.old["tiny/xlm-roberta-xl-mlm"] = (hub.server.add_commit("tiny/xlm-roberta-xl-mlm", old, refs=("v1",)), old)
    for repo_id, directory in hub.dirs.items():
        hub.server.add_commit(repo_id, directory)
    # Only tf_model.h5 (HF TF-written), with XLNet's tokenizer.
    h5_dir = root / H5_REPO
    h5_dir.mkdir(parents=True)
    for name in os.listdir(tf_checkpoints[SHARDED_H5_HEAD]["tf_dir"]):
        os.link(os.path.join(tf_checkpoints[SHARDED_H5_HEAD]["tf_dir"], name), h5_dir / name)
    transformers.XLNetTokenizer.from_pretrained(os.path.join(ASSETS_DIR, "xlnet")).save_pretrained(str(h5_dir))
    hub.dirs[H5_REPO] = str(h5_dir)
    hub.server.add_commit(H5_REPO, str(h5_dir))
    # A repo without weights.
    bare = root / "tiny" / "no-weights"
    bare.mkdir(parents=True)
    for name in ("config.json", "spiece.model", "tokenizer_config.json"):
        os.link(os.path.join(hub.dirs["tiny/yoso-mlm"], name), bare / name)
    hub.server.add_commit("tiny/no-weights", str(bare))
    hub.url = hub.server.start()
    hub.cache = str(root / "cache")
    # huggingface_hub reads HF_ENDPOINT and HF_HUB_CACHE when it is imported (transformers imported it already):
    # set the variables for subprocesses and the module constants for this process.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_ENDPOINT", hub.url)
        patch.setenv("HF_HUB_CACHE", hub.cache)
        patch.setattr(constants, "ENDPOINT", hub.url)
        patch.setattr(constants, "HF_HUB_CACHE", hub.cache)
        template = hub.url + "/{repo_id}/resolve/{revision}/{filename}"
        patch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        patch.setattr(file_download, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        yield hub
    hub.server.stop()
