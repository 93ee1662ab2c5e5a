"""Bad requests to every signature of an exported SavedModel (issue 20): wrong dtype or rank, ids outside the
vocabulary (and negative, and int64 values that int32 cannot hold), inputs longer than the positions, an empty
batch, empty sequences, mismatched shapes, undecodable images. Each one is an error, never an output, and the
serving process goes on to answer the next good request correctly.

Served in fresh processes: Python's `tf.saved_model.load(...).signatures[...]` (the concrete functions), and
TensorFlow's C++ loader through the C API (tests/serving/harness.py, what TF Serving runs) for the numeric
signatures."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tfmodels
from tests.serving import harness
from tfmodels.registry import REPO_DIR
from tfmodels.tokenizers import XLMRobertaTokenizer

ASSETS = os.path.join(os.path.dirname(tfmodels.__file__), "assets")
VOCAB, POSITIONS, PAD = 1002, 40, 1
MAX_LENGTH = POSITIONS - PAD - 1  # XLM-R positions start after the padding id
IDS = np.array([[0, 5, 6, 7, 2], [0, 9, 2, 1, 1]], np.int32)
GOOD = {"input_ids": IDS, "attention_mask": (IDS != PAD).astype(np.int32)}

# The client of the fresh process: loads the SavedModel, runs [(signature, {key: [values, dtype, shape]})] one after
# the other and prints one JSON result per request: {"error": type name or null, "outputs": {key: nested list}}.
CLIENT = r"""
import json, sys
import numpy as np, tensorflow as tf, tensorflow_text  # noqa: F401  (TF Text's ops for the text signatures)
loaded = tf.saved_model.load(sys.argv[1])
results = []
for signature, inputs in json.load(open(sys.argv[2])):
    try:
        kwargs = {k: tf.reshape(tf.constant(v, tf.string) if d == "string" else tf.constant(np.array(v, d)), shape)
                  for k, (v, d, shape) in inputs.items()}
        outputs = loaded.signatures[signature](**kwargs)
        results.append({"error": None, "outputs": {k: v.numpy().tolist() for k, v in outputs.items()}})
    except Exception as error:  # what a server answers: the error, and it goes on
        results.append({"error": type(error).__name__, "message": str(error)[:300]})
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    config = tfmodels.XLMRobertaXLConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2,
                                         num_attention_heads=2, intermediate_size=20,
                                         max_position_embeddings=POSITIONS)
    model = tfmodels.XLMRobertaXLForSequenceClassification(config).build_model()
    tokenizer = XLMRobertaTokenizer(os.path.join(ASSETS, "xlm_roberta", "sentencepiece.bpe.model"))
    path = str(tmp_path_factory.mktemp("bad_requests") / "export")
    model.export(path, tokenizer=tokenizer, max_length=16)
    texts = ["How are you?", "\x00 hostile \u202e text \U0010FFFD"]
    expected = {"ids": model(GOOD, training=False).logits.numpy(),
                "text": model(dict(tokenizer(texts, padding=True, return_tensors="tf")), training=False).logits.numpy()}
    return path, texts, expected


def as_request(signature, **inputs):
    """(signature, {key: [values, dtype, shape]}): JSON for the client; strings as str."""
    request = {}
    for key, value in inputs.items():
        value = np.asarray(value)
        if value.dtype.kind in "OSU":
            request[key] = [[v.decode() if isinstance(v, bytes) else v for v in value.reshape(-1).tolist()],
                            "string", list(value.shape)]
        else:
            request[key] = [value.reshape(-1).tolist(), value.dtype.name, list(value.shape)]
    return signature, request


def run_client(path, requests, tmp_path):
    spec = tmp_path / "requests.json"
    spec.write_text(json.dumps(requests), encoding="utf-8")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    process = subprocess.run([sys.executable, "-c", CLIENT, path, str(spec)], capture_output=True, text=True,
                             env=env, cwd=REPO_DIR, timeout=600)
    assert process.returncode == 0, process.stderr[-3000:]
    return json.loads(process.stdout.strip().splitlines()[-1])


def numeric_bad_requests(signature, dtype):
    ids = IDS.astype(dtype)
    mask = GOOD["attention_mask"].astype(dtype)
    long_ids = np.full([2, MAX_LENGTH + 1], 5, dtype)
    return {
        "id = vocab_size": as_request(signature, input_ids=np.where(ids == 9, VOCAB, ids), attention_mask=mask),
        "negative id": as_request(signature, input_ids=np.where(ids == 9, -1, ids), attention_mask=mask),
        "too long": as_request(signature, input_ids=long_ids, attention_mask=np.ones_like(long_ids)),
        "empty batch": as_request(signature, input_ids=np.zeros([0, 5], dtype), attention_mask=np.zeros([0, 5], dtype)),
        "empty sequences": as_request(signature, input_ids=np.zeros([2, 0], dtype),
                                      attention_mask=np.zeros([2, 0], dtype)),
        "mask shape": as_request(signature, input_ids=ids, attention_mask=mask[:, :3]),
        "wrong rank": as_request(signature, input_ids=ids[0], attention_mask=mask[0]),
        "wrong dtype": as_request(signature, input_ids=ids.astype(np.float32), attention_mask=mask),
    }


def check_every_signature(export, tmp_path):
    """Through tf.saved_model.load's concrete functions: each bad request to each signature is an error, and the
    good request after it is answered right."""
    path, texts, expected = export
    cases = {**{f"int32 {k}": v for k, v in numeric_bad_requests("serving_default", np.int32).items()},
             **{f"int64 {k}": v for k, v in numeric_bad_requests("serving_int64", np.int64).items()},
             "int64 wraps around int32": as_request("serving_int64", input_ids=IDS.astype(np.int64) + (1 << 32),
                                                    attention_mask=GOOD["attention_mask"].astype(np.int64)),
             "text empty batch": as_request("serving_text", text=np.array([], object)),
             "text wrong dtype": as_request("serving_text", text=np.array([1, 2], np.int32)),
             "text wrong rank": as_request("serving_text", text=np.array([[b"a", b"b"]], object)),
             "pair empty batch": as_request("serving_text_pair", text=np.array([], object),
                                            text_pair=np.array([], object)),
             "pair batch sizes differ": as_request("serving_text_pair", text=np.array([b"a", b"b"], object),
                                                   text_pair=np.array([b"c"], object))}
    good = [as_request("serving_default", **GOOD),
            as_request("serving_int64", **{k: v.astype(np.int64) for k, v in GOOD.items()}),
            as_request("serving_text", text=np.array([t.encode() for t in texts], object))]
    requests = []
    for request in cases.values():  # each bad request, then a good one: the process serves on
        requests += [request, good[len(requests) // 2 % len(good)]]
    results = run_client(path, requests, tmp_path)
    for k, name in enumerate(cases):
        assert results[2 * k]["error"] is not None, (name, results[2 * k])
        answer = results[2 * k + 1]
        assert answer["error"] is None, (name, answer)
        which = "text" if k % len(good) == 2 else "ids"
        np.testing.assert_allclose(answer["outputs"]["logits"], expected[which], atol=1e-5, err_msg=name)


def check_the_cpp_loader(export):
    """Through TensorFlow's C++ loader (what TF Serving runs): the same for the numeric signatures."""
    path, _, expected = export
    bad = {**numeric_bad_requests("serving_default", np.int32), "int64 wraps around int32": as_request(
        "serving_int64", input_ids=IDS.astype(np.int64) + (1 << 32),
        attention_mask=GOOD["attention_mask"].astype(np.int64))}
    bad.pop("wrong dtype")  # the harness's client refuses it before TensorFlow sees it
    jobs = []
    for signature, inputs in bad.values():
        feed = {k: np.array(v, dtype=d).reshape(shape) for k, (v, d, shape) in inputs.items()}
        jobs.append({"path": path, "requests": [(signature, feed)], "text_ops": True})
    jobs.append({"path": path, "requests": [("serving_default", GOOD)], "text_ops": True})
    results = harness.serve(jobs)  # all jobs in one serving process: it survives every bad request
    for name, result in zip(bad, results):
        assert result["error"] is not None and "TF_SessionRun" in result["error"], (name, result["error"])
    assert results[-1]["error"] is None
    np.testing.assert_allclose(results[-1]["outputs"][0]["logits"], expected["ids"], atol=1e-5)


# One test for both clients: pytest-xdist hands a module's tests to different workers, each of which would export
# the model again for the fixture they shared.
@pytest.mark.slow
def test_every_signature_refuses_bad_requests_and_serves_on(export, tmp_path):
    check_every_signature(export, tmp_path)
    check_the_cpp_loader(export)
