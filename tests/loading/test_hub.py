"""Hub ids, Auto classes and pipelines against the test Hub (tests/loading/hub_server.py) serving HF-written tiny
checkpoints of every family: sharded safetensors, safetensors + bin, bin only, tf_model.h5 only."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tfmodels
from tests.loading.conftest import H5_REPO, REPOS
from tests.loading.hub_server import TestHub
from tfmodels.core.hub import HubError
from tfmodels.core.safetensors_io import SafetensorsFile

REPO_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AUTO = {"ForMaskedLM": tfmodels.AutoModelForMaskedLM, "ForSequenceClassification":
        tfmodels.AutoModelForSequenceClassification, "ForTokenClassification": tfmodels.AutoModelForTokenClassification,
        "ForQuestionAnswering": tfmodels.AutoModelForQuestionAnswering,
        "ForImageClassification": tfmodels.AutoModelForImageClassification,
        "ForSemanticSegmentation": tfmodels.AutoModelForSemanticSegmentation,
        "ForMaskedImageModeling": tfmodels.AutoModelForMaskedImageModeling}
TEXT = "hello world, this is a test"


def auto_class(hf_class):
    return next(cls for suffix, cls in AUTO.items() if hf_class.endswith(suffix))


def assert_same_weights(a, b):
    assert type(a) is type(b)
    names_a = [v.path for v in a.weights]
    assert names_a == [v.path for v in b.weights]
    for x, y in zip(a.weights, b.weights):
        np.testing.assert_array_equal(x.numpy(), y.numpy(), err_msg=x.path)


def check_preprocessor(repo_id, directory):
    if REPOS.get(repo_id, (None,) * 4)[3] or repo_id == H5_REPO:
        hub_tok, dir_tok = tfmodels.AutoTokenizer.from_pretrained(repo_id), \
            tfmodels.AutoTokenizer.from_pretrained(directory)
        assert type(hub_tok) is type(dir_tok)
        assert hub_tok(TEXT, "a pair") == dir_tok(TEXT, "a pair")
        return hub_tok
    hub_proc, dir_proc = tfmodels.AutoImageProcessor.from_pretrained(repo_id), \
        tfmodels.AutoImageProcessor.from_pretrained(directory)
    assert isinstance(hub_proc, tfmodels.BeitImageProcessor) and hub_proc.to_dict() == dir_proc.to_dict()
    return hub_proc


# repo -> the pipeline task it is tried with (every family, every task; BEiT's MIM head has no pipeline)
PIPELINES = {"tiny/yoso-mlm": "fill-mask", "tiny/xlm-roberta-xl-mlm": "fill-mask",
             "tiny/nystromformer-cls": "text-classification", H5_REPO: "text-classification",
             "tiny/mra-ner": "token-classification", "tiny/longformer-qa": "question-answering",
             "tiny/beit-cls": "image-classification", "tiny/beit-seg": "image-segmentation", "tiny/beit-mim": None}


@pytest.mark.parametrize("repo_id", list(PIPELINES))
def test_hub_load_equals_directory_load_and_pipelines(repo_id, test_hub):
    """Model (through its Auto class, or the pipeline's) plus tokenizer / image processor, from the Hub and from
    the directory the Hub serves: the same classes, weights, encodings and pipeline outputs."""
    directory = test_hub.dirs[repo_id]
    hf_class = REPOS[repo_id][0] if repo_id in REPOS else "XLNetForSequenceClassification"
    task = PIPELINES[repo_id]
    if task is None:
        from_hub, from_dir = auto_class(hf_class).from_pretrained(repo_id), \
            auto_class(hf_class).from_pretrained(directory)
    else:
        pipe, pipe_dir = tfmodels.pipeline(task, model=repo_id), tfmodels.pipeline(task, model=directory)
        from_hub, from_dir = pipe.model, pipe_dir.model
    assert type(from_hub).__name__ == hf_class
    assert_same_weights(from_hub, from_dir)
    assert tfmodels.AutoConfig.from_pretrained(repo_id) == type(from_hub.config).from_pretrained(directory)
    check_preprocessor(repo_id, directory)
    if task is not None:
        check_pipeline(task, pipe, pipe_dir)


def test_only_needed_files_are_fetched_and_formats_chosen(test_hub, tmp_path):
    requests = test_hub.server.requests
    start = len(requests)
    model, info = tfmodels.YosoForMaskedLM.from_pretrained("tiny/yoso-mlm", cache_dir=str(tmp_path),
                                                          output_loading_info=True)
    fetched = {path.rsplit("/", 1)[-1] for method, path in requests[start:] if method == "GET"}
    assert fetched == {"config.json", "model.safetensors", "yoso-mlm"}, fetched  # (yoso-mlm: the model-info API)
    assert info.source.endswith("(safetensors)")
    from_bin, info = tfmodels.YosoForMaskedLM.from_pretrained("tiny/yoso-mlm", weights_format="bin",
                                                              output_loading_info=True)
    assert info.source.endswith("(bin)")
    assert_same_weights(model, from_bin)
    start = len(requests)
    tfmodels.XLMRobertaXLForMaskedLM.from_pretrained("tiny/xlm-roberta-xl-mlm", cache_dir=str(tmp_path))
    fetched = sorted(path.rsplit("/", 1)[-1] for method, path in requests[start:] if method == "GET")
    shards = sorted(f for f in os.listdir(test_hub.dirs["tiny/xlm-roberta-xl-mlm"]) if f.endswith(".safetensors"))
    assert len(shards) > 1 and fetched == sorted(["config.json", "model.safetensors.index.json", "xlm-roberta-xl-mlm"]
                                                  + shards), fetched


def test_revision_pinning(test_hub):
    commit, old_dir = test_hub.old["tiny/xlm-roberta-xl-mlm"]
    main = tfmodels.XLMRobertaXLForMaskedLM.from_pretrained("tiny/xlm-roberta-xl-mlm")
    for revision in ("v1", commit):
        pinned = tfmodels.XLMRobertaXLForMaskedLM.from_pretrained("tiny/xlm-roberta-xl-mlm", revision=revision)
        assert_same_weights(pinned, tfmodels.XLMRobertaXLForMaskedLM.from_pretrained(old_dir))
    assert not np.array_equal(pinned.weights[0].numpy(), main.weights[0].numpy())
    assert tfmodels.AutoTokenizer.from_pretrained("tiny/xlm-roberta-xl-mlm", revision="v1")(TEXT)["input_ids"]


def test_clear_errors(test_hub, tmp_path):
    with pytest.raises(HubError, match="neither a local directory nor a model repository"):
        tfmodels.AutoModel.from_pretrained("tiny/does-not-exist")
    with pytest.raises(HubError, match="has no revision 'v9'"):
        tfmodels.YosoModel.from_pretrained("tiny/yoso-mlm", revision="v9")
    with pytest.raises(HubError, match="has no usable weights.*holds: config.json, spiece.model"):
        tfmodels.YosoModel.from_pretrained("tiny/no-weights")
    with pytest.raises(HubError, match="has no usable h5 weights"):
        tfmodels.YosoModel.from_pretrained("tiny/yoso-mlm", weights_format="h5")
    with pytest.raises(HubError, match="not in the Hugging Face cache.*local_files_only=True"):
        tfmodels.YosoModel.from_pretrained("tiny/yoso-mlm", cache_dir=str(tmp_path), local_files_only=True)
    with pytest.raises(HubError, match="neither a local path nor a valid Hub id"):
        tfmodels.YosoConfig.from_pretrained("./no/such/dir")


OFFLINE_CHILD = r'''
import json, sys
import numpy as np
import tfmodels
from tfmodels.core.hub import HubError
expected = np.load(sys.argv[1])
model = tfmodels.AutoModelForMaskedLM.from_pretrained("tiny/yoso-mlm")
tokenizer = tfmodels.AutoTokenizer.from_pretrained("tiny/yoso-mlm")
assert tokenizer("hello world")["input_ids"] == expected["ids"].tolist()
np.testing.assert_array_equal(model(expected["ids"][None]).logits.numpy(), expected["logits"])
for call, message in ((lambda: tfmodels.AutoModel.from_pretrained("tiny/beit-cls"), "HF_HUB_OFFLINE=1"),
                      (lambda: tfmodels.YosoModel.from_pretrained("tiny/yoso-mlm", revision="v1"), "HF_HUB_OFFLINE=1")):
    try:
        call()
        raise SystemExit("no error offline without a cached copy")
    except HubError as error:
        assert message in str(error) and "not in the Hugging Face cache" in str(error), error
print("offline ok")
'''


@pytest.mark.slow  # a child process (~15 s)
def test_second_load_offline_from_cache(test_hub, tmp_path, monkeypatch):
    """Load once from a Hub of its own, stop it, load again (from the cache), then in a process with
    HF_HUB_OFFLINE=1."""
    from huggingface_hub import constants, file_download
    server = TestHub()
    server.add_commit("tiny/yoso-mlm", test_hub.dirs["tiny/yoso-mlm"])
    server.add_commit("tiny/beit-cls", test_hub.dirs["tiny/beit-cls"])
    url = server.start()
    template = url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(file_download, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    cache = str(tmp_path / "cache")
    try:
        model = tfmodels.AutoModelForMaskedLM.from_pretrained("tiny/yoso-mlm", cache_dir=cache)
        ids = np.array(tfmodels.AutoTokenizer.from_pretrained("tiny/yoso-mlm", cache_dir=cache)("hello world")
                       ["input_ids"])
    finally:
        server.stop()
    # The Hub unreachable (not offline): huggingface_hub and we fall back to the cache.
    again = tfmodels.AutoModelForMaskedLM.from_pretrained("tiny/yoso-mlm", cache_dir=cache)
    assert_same_weights(model, again)
    np.savez(tmp_path / "expected.npz", ids=ids, logits=model(ids[None]).logits.numpy())
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=cache, HF_ENDPOINT=url)
    done = subprocess.run([sys.executable, "-c", OFFLINE_CHILD, str(tmp_path / "expected.npz")], env=env,
                          capture_output=True, text=True, timeout=300, cwd=REPO_DIR)
    assert done.returncode == 0 and "offline ok" in done.stdout, done.stderr[-3000:]


def test_auto_classes_dispatch_on_model_type(test_hub):
    """The Auto classes not exercised above: causal LM (XLNet's is XLNetLMHeadModel), multiple choice,
    from_config, AutoConfig.for_model, the TF aliases, and an unknown model_type."""
    causal = tfmodels.AutoModelForCausalLM.from_pretrained("tiny/xlm-roberta-xl-mlm", is_decoder=True)
    assert type(causal) is tfmodels.XLMRobertaXLForCausalLM
    masked = tfmodels.AutoModelForMaskedLM.from_pretrained(test_hub.dirs["tiny/xlm-roberta-xl-mlm"])
    np.testing.assert_array_equal(causal.lm_head.dense.kernel.numpy(), masked.lm_head.dense.kernel.numpy())
    assert type(tfmodels.TFAutoModelForCausalLM.from_pretrained(H5_REPO)) is tfmodels.XLNetLMHeadModel
    assert type(tfmodels.AutoModelForMultipleChoice.from_pretrained("tiny/yoso-mlm")) is tfmodels.YosoForMultipleChoice
    config = tfmodels.AutoConfig.for_model("longformer", **REPOS["tiny/longformer-qa"][2])
    assert type(tfmodels.TFAutoModelForQuestionAnswering.from_config(config)) is tfmodels.LongformerForQuestionAnswering
    assert tfmodels.TFAutoModel is tfmodels.AutoModel
    assert type(tfmodels.AutoModel.from_pretrained("tiny/beit-cls")) is tfmodels.BeitModel
    with pytest.raises(ValueError, match="model_type 'bert' is not a tfmodels family"):
        tfmodels.AutoConfig.for_model("bert")


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _image(seed=0, size=(40, 48)):
    return np.random.RandomState(seed).randint(0, 256, size + (3,), dtype=np.uint8)


def _run(task, pipe, tokenizer):
    if task == "fill-mask":
        return pipe(f"hello {tokenizer.mask_token} world")
    if task == "question-answering":
        return pipe(question="what is this?", context="this is a small test of the answer", top_k=2)
    if task.startswith("image"):
        return pipe(_image())
    return pipe(TEXT)


def check_pipeline(task, pipe, pipe_dir):
    """HF's output structure for the task, and the same outputs from the Hub's and the directory's pipeline."""
    result = _run(task, pipe, pipe.tokenizer)
    again = _run(task, pipe_dir, pipe.tokenizer)
    if task == "image-segmentation":
        assert [(r["label"], r["score"]) for r in result] == [(r["label"], r["score"]) for r in again]
        masks = [np.asarray(r["mask"]) for r in result]
        assert all(m.shape == (40, 48) and set(np.unique(m)) <= {0, 255} for m in masks)
        assert [r["mask"].mode for r in result] == ["L"] * len(result)
        np.testing.assert_array_equal(sum(m // 255 for m in masks), np.ones((40, 48)))  # a partition of the image
        np.testing.assert_array_equal(masks, [np.asarray(r["mask"]) for r in again])
        return
    assert result == again
    config = pipe.model.config
    if task == "fill-mask":
        assert len(result) == 5 and all(set(r) == {"score", "token", "token_str", "sequence"} for r in result)
        scores = [r["score"] for r in result]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
    elif task == "text-classification":
        assert len(result) == 1 and set(result[0]) == {"label", "score"}
        every = pipe(TEXT, top_k=None)
        assert sorted(r["label"] for r in every) == sorted(config.id2label.values())
        assert abs(sum(r["score"] for r in every) - 1) < 1e-6 and every[0] == result[0]
        encoded = pipe.tokenizer(TEXT, return_tensors="np")
        logits = pipe.model({k: v for k, v in encoded.items() if k in pipe.model.all_input_names}).logits.numpy()[0]
        assert result[0]["label"] == config.id2label[int(logits.argmax())]
        assert abs(result[0]["score"] - _softmax(logits).max()) < 1e-6
    elif task == "token-classification":
        assert all(set(r) == {"entity", "score", "index", "word", "start", "end"} and r["entity"] != "O"
                   for r in result)
        ids = pipe.tokenizer(TEXT)["input_ids"]
        assert all(pipe.tokenizer.convert_ids_to_tokens(ids[r["index"]]) == r["word"] for r in result)
        assert all(0 <= r["start"] < r["end"] <= len(TEXT) for r in result)
    elif task == "question-answering":
        assert len(result) == 2 and all(set(r) == {"score", "start", "end", "answer"} for r in result)
        assert result[0]["score"] >= result[1]["score"]
        context = "this is a small test of the answer"
        for r in result:
            assert r["answer"] and (r["start"] is None or context[r["start"]:r["end"]] == r["answer"])
    elif task == "image-classification":
        assert len(result) == 5 and all(set(r) == {"label", "score"} for r in result)
        assert abs(sum(r["score"] for r in result) - 1) < 1e-6


@pytest.mark.slow  # converts and saves (~10 s)
def test_cli_convert_takes_a_hub_id(test_hub, tmp_path):
    from tfmodels import cli
    assert cli.main(["convert", "tiny/mra-ner", str(tmp_path / "out"), "--strict"]) == 0
    converted = tfmodels.MraForTokenClassification.from_pretrained(str(tmp_path / "out"))
    with SafetensorsFile(os.path.join(test_hub.dirs["tiny/mra-ner"], "model.safetensors")) as f:
        np.testing.assert_array_equal(converted.classifier.kernel.numpy(), f.get("classifier.weight").T)
        np.testing.assert_array_equal(converted.mra.embeddings.word_embeddings.embeddings.numpy(),
                                      f.get("mra.embeddings.word_embeddings.weight"))
    assert os.path.isfile(tmp_path / "out" / "vocab.json")


@pytest.fixture(scope="module")
def classification_dirs(tmp_path_factory):
    """HF-written XLM-R-XL sequence and token classifiers (HF's own pipelines run them; HF's Nystromformer and
    MRA cannot run these inputs on CPU)."""
    import transformers
    from tests import helpers
    from tests.loading.conftest import SEQ_LABELS, TEXT as TINY_TEXT, TOKEN_LABELS
    from tfmodels.registry import ASSETS_DIR
    dirs = {}
    for task, name, labels in (("text-classification", "XLMRobertaXLForSequenceClassification", SEQ_LABELS),
                               ("token-classification", "XLMRobertaXLForTokenClassification", TOKEN_LABELS)):
        directory = str(tmp_path_factory.mktemp(task))
        config = transformers.XLMRobertaXLConfig(**TINY_TEXT, vocab_size=1002, max_position_embeddings=64,
                                                 id2label=labels)
        helpers.randomize_torch_model(getattr(transformers, name)(config)).save_pretrained(directory)
        transformers.XLMRobertaTokenizer.from_pretrained(os.path.join(ASSETS_DIR, "xlm_roberta")) \
            .save_pretrained(directory)
        dirs[task] = directory
    return dirs


def _close(ours, theirs, keys):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert {k: a[k] for k in keys} == {k: b[k] for k in keys}
        assert abs(a["score"] - b["score"]) < 1e-5 if b["score"] is not None else a["score"] is None


@pytest.mark.parametrize("task,repo_id", [
    ("fill-mask", "tiny/yoso-mlm"), ("question-answering", "tiny/longformer-qa"),
    ("image-classification", "tiny/beit-cls"), ("image-segmentation", "tiny/beit-seg"),
    ("text-classification", None), ("token-classification", None)])
def test_pipelines_match_hf_pipelines(task, repo_id, test_hub, classification_dirs):
    """Our pipeline against transformers' own (PyTorch model, fast tokenizer) on the same HF checkpoint."""
    import transformers
    from PIL import Image
    directory = test_hub.dirs[repo_id] if repo_id else classification_dirs[task]
    ours, theirs = tfmodels.pipeline(task, model=directory), transformers.pipeline(task, model=directory,
                                                                                   framework="pt")
    if task.startswith("image"):
        got, expected = ours(_image()), theirs(Image.fromarray(_image()))
    else:
        got, expected = _run(task, ours, ours.tokenizer), _run(task, theirs, ours.tokenizer)
    if task == "question-answering":
        _close(got, expected, ("answer", "start", "end"))
    elif task == "fill-mask":
        _close(got, expected, ("token", "token_str", "sequence"))
    elif task == "token-classification":
        assert got
        _close(got, expected, ("entity", "index", "word", "start", "end"))
    elif task == "image-segmentation":
        _close(got, expected, ("label",))
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(np.asarray(a["mask"]), np.asarray(b["mask"]))
    else:
        _close(got, expected, ("label",))


def test_recipe_takes_a_hub_id(test_hub, tmp_path):
    """A recipe's model.pretrained may be a Hub id: its family, config, tokenizer and weights come from the Hub."""
    from tfmodels.training import job as job_lib, recipe as recipe_lib
    path = tmp_path / "hub-recipe.json"
    path.write_text(json.dumps({"model": {"task": "token-classification", "pretrained": "tiny/mra-ner"},
                                "data": {"train": "assets:data/ner"}}))
    job = job_lib.Job(recipe_lib.load_recipe(str(path)))
    assert job.family.name == "mra" and os.path.isfile(os.path.join(job.pretrained, "model.safetensors"))
    assert type(job.tokenizer) is tfmodels.RobertaTokenizer
    assert job.tokenizer("hello world") == tfmodels.RobertaTokenizer.from_pretrained(test_hub.dirs["tiny/mra-ner"])(
        "hello world")
