"""SavedModels served as TF Serving serves them: TensorFlow's C++ SavedModel loader through the C API
(tests/serving/harness.py), in fresh processes that import no Python of TensorFlow, TF Text or tfmodels.

Every head of every family goes through the harness in its family's export test (tests/models/*/test_modeling.py,
via helpers.export_and_check); here: why naive variable tracking fails there, models built every way (loaded
from a Hugging Face checkpoint, memory-mapped; dtype policies; gradient checkpointing; partitioned weights), the
warm-up file, and the numeric-only export with stock TensorFlow and saved_model_cli."""
import os
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfmodels
from tests import helpers
from tests.serving import harness, protos
from tfmodels.core import export
from tfmodels.core.export import WARMUP_FILE
from tfmodels.ops import op_mode
from tfmodels.tokenizers import XLMRobertaTokenizer

ASSETS = os.path.join(os.path.dirname(tfmodels.__file__), "assets")
# vocab_size: the bundled XLM-R tokenizer's (1002 pieces)
TINY = dict(vocab_size=1002, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=20,
            max_position_embeddings=40)
IDS = np.array([[0, 5, 6, 7, 2], [0, 9, 2, 1, 1]], np.int32)
FEED = {"input_ids": IDS, "attention_mask": (IDS != 1).astype(np.int32)}
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")


def tiny_classifier(**overrides):
    model = tfmodels.XLMRobertaXLForSequenceClassification(tfmodels.XLMRobertaXLConfig(**{**TINY, **overrides}))
    return model.build_model()


def tokenizer():
    return XLMRobertaTokenizer(os.path.join(ASSETS, "xlm_roberta", "sentencepiece.bpe.model"))


def test_keras_variables_fail_in_the_cpp_loader_and_the_exporter_serves(tmp_path):
    """The control for the harness: a tf.Module that tracks Keras 3 Variables loads in Python but fails in the
    C++ loader (the bug export.py works around); the exporter's SavedModel of the same model serves."""
    model = tiny_classifier()
    naive = tf.Module()
    naive.variables_ = list(model.variables)
    naive.serve = tf.function(lambda input_ids, attention_mask: {"logits": model(
        {"input_ids": input_ids, "attention_mask": attention_mask}, training=False).logits},
        input_signature=[tf.TensorSpec([None, None], tf.int32, name="input_ids"),
                         tf.TensorSpec([None, None], tf.int32, name="attention_mask")])
    naive_path, path = str(tmp_path / "naive"), str(tmp_path / "export")
    with op_mode("reference"):  # stock ops only (as model.export traces): the variables are what fails here
        signature = naive.serve.get_concrete_function()
    tf.saved_model.save(naive, naive_path, signatures=signature)
    model.export(path)
    expected = model(FEED, training=False).logits.numpy()
    python_loaded = tf.saved_model.load(naive_path).signatures["serving_default"](
        **{k: tf.constant(v) for k, v in FEED.items()})["logits"]
    helpers.assert_close(python_loaded, expected)  # Python's loader hides the problem
    naive_result, result = harness.serve([
        {"path": naive_path, "requests": [("serving_default", FEED)]},
        {"path": path, "requests": [("serving_default", FEED)]}])
    assert "Could not find variable" in naive_result["error"], naive_result["error"]
    assert result["error"] is None, result["error"]
    helpers.assert_close(result["outputs"][0]["logits"], expected)


def test_the_exporter_tracks_the_backing_variables_its_functions_read():
    """What export.py tracks is exactly what the traced functions capture: the Keras variables' backing
    tf.Variables (the objects themselves), never the Keras wrappers."""
    model = tiny_classifier()
    function = tf.function(lambda ids: model({"input_ids": ids}, training=False).logits).get_concrete_function(
        tf.TensorSpec([None, None], tf.int32))
    tracked = export._served_variables(model, [function])
    assert {id(v) for v in tracked} == {id(v) for v in function.variables} and len(tracked) > 10
    backing = {id(v.value) for v in model.variables}
    assert all(id(v) in backing and not isinstance(v, keras.Variable) for v in tracked)


def _hf_checkpoint(directory):
    """A tiny XLM-R-XL classifier written by transformers' PyTorch class (safetensors)."""
    import torch
    import transformers
    torch.manual_seed(0)
    config = transformers.XLMRobertaXLConfig(**TINY, num_labels=3)
    model = transformers.XLMRobertaXLForSequenceClassification(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():  # every weight random, so that no mis-mapped one can hide
            parameter.uniform_(-0.2, 0.2)
    model.save_pretrained(directory)
    with torch.no_grad():
        return model(input_ids=torch.tensor(IDS, dtype=torch.long),
                     attention_mask=torch.tensor(FEED["attention_mask"], dtype=torch.long)).logits.numpy()


def test_models_built_every_way_serve_through_the_cpp_loader(tmp_path):
    """from_pretrained on an HF-written checkpoint (memory-mapped, initialisation skipped), in float32, bfloat16
    and mixed_bfloat16; a model with gradient checkpointing. Outputs equal Keras (and the float32 one the
    PyTorch reference) to 1e-5; the two that compute in bfloat16 to one bfloat16 step."""
    checkpoint = str(tmp_path / "hf")
    torch_logits = _hf_checkpoint(checkpoint)
    cls = tfmodels.XLMRobertaXLForSequenceClassification
    models = {dtype or "float32": cls.from_pretrained(checkpoint, dtype=dtype)
              for dtype in (None, "bfloat16", "mixed_bfloat16")}
    helpers.assert_close(models["float32"](FEED, training=False).logits, torch_logits)
    assert models["bfloat16"].variables[0].dtype == "bfloat16"
    assert models["mixed_bfloat16"].variables[0].dtype == "float32"
    models["gradient_checkpointing"] = tiny_classifier(gradient_checkpointing=True)
    jobs, expected = [], []
    for name, model in models.items():
        path = str(tmp_path / name)
        model.export(path)
        jobs.append({"path": path, "requests": [("serving_default", FEED)], "warmup": True})
        expected.append(model(FEED, training=False).logits)
    for name, job, logits, result in zip(models, jobs, expected, harness.serve_ok(jobs)):
        # bfloat16 and mixed_bfloat16 compute in bfloat16: the session's graph (Grappler, oneDNN fusions) may
        # round a last bit differently from eager Keras, so they are held to one bfloat16 step of their outputs.
        atol = float(np.abs(logits).max()) * 2.0 ** -7 if "bfloat16" in name else 1e-5
        helpers.assert_close(result["outputs"][0]["logits"], logits, atol, name=job["path"])
        assert len(result["warmup"]) == 2
    helpers.assert_close(harness.serve_ok(jobs[:1])[0]["outputs"][0]["logits"], torch_logits)


@pytest.mark.slow
def test_partitioned_model_serves_through_the_cpp_loader(tmp_path):
    """Weights partitioned across two parameter servers (ShardedVariables of CachingVariables), exported by the
    chief (in a subprocess: connecting to a cluster changes the process's eager context for good)."""
    path = str(tmp_path / "export")
    result = subprocess.run([sys.executable, "-m", "tests.serving.partitioned_export", path], cwd=harness.ROOT,
                            env=dict(ENV, PYTHONPATH=harness.ROOT), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    expected = np.load(os.path.join(path, "..", "expected.npz"))
    assert int(expected["partitioned"]) >= 2, "the embeddings were not split across the two servers"
    served = harness.serve_ok([{"path": path, "requests": [("serving_default", FEED)], "warmup": True}])[0]
    helpers.assert_close(served["outputs"][0]["logits"], expected["logits"])
    helpers.assert_close(served["outputs"][0]["logits"], expected["unpartitioned"])


def test_warmup_file_parses_and_its_requests_run(tmp_path):
    """One PredictionLog per signature, read by TF's own TFRecord reader and TF Serving's message class here,
    and by the harness's reader (CRCs checked) in the serving process, which runs them all."""
    from tensorflow_serving.apis import prediction_log_pb2

    model = tiny_classifier()
    path = str(tmp_path / "export")
    signatures = model.export(path, tokenizer=tokenizer())
    assert signatures == ["serving_default", "serving_int64", "serving_text", "serving_text_pair"]
    records = [r.numpy() for r in tf.data.TFRecordDataset(os.path.join(path, WARMUP_FILE))]
    assert protos.read_tfrecords(os.path.join(path, WARMUP_FILE)) == records
    logs = [prediction_log_pb2.PredictionLog.FromString(r) for r in records]
    requests = [log.predict_log.request for log in logs]
    assert [r.model_spec.signature_name for r in requests] == signatures
    assert sorted(requests[0].inputs) == ["attention_mask", "input_ids"]
    assert tf.make_ndarray(requests[1].inputs["input_ids"]).dtype == np.int64
    assert tf.make_ndarray(requests[3].inputs["text_pair"]).shape == (1,)

    served = harness.serve_ok([{"path": path, "requests": [], "warmup": True, "text_ops": True}])[0]
    assert [w["signature"] for w in served["warmup"]] == signatures
    for warmup, request in zip(served["warmup"], requests):
        for key, proto in request.inputs.items():
            np.testing.assert_array_equal(warmup["inputs"][key], tf.make_ndarray(proto))
    for warmup in served["warmup"][:2]:
        helpers.assert_close(warmup["outputs"]["logits"], model(warmup["inputs"], training=False).logits)
    text = served["warmup"][2]["outputs"]
    helpers.assert_close(text["logits"], model({"input_ids": text["input_ids"],
                                                "attention_mask": text["attention_mask"]}, training=False).logits)

    with open(os.path.join(path, WARMUP_FILE), "r+b") as f:  # flip one bit inside the first record's data
        f.seek(12 + len(records[0]) // 2)
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte ^ 1]))
    with pytest.raises(ValueError, match="data CRC mismatch in record 0"):
        protos.read_tfrecords(os.path.join(path, WARMUP_FILE))


def _stock_tensorflow_load(path):
    """Load a SavedModel with tf.saved_model.load in a fresh process with stock TensorFlow (no TF Text)."""
    code = ("import sys, tensorflow as tf; tf.saved_model.load(sys.argv[1]); "
            "assert 'tensorflow_text' not in sys.modules; print('loaded')")
    return subprocess.run([sys.executable, "-c", code, path], env=ENV, capture_output=True, text=True, timeout=600)


def test_numeric_only_export_loads_in_stock_tensorflow_and_saved_model_cli(tmp_path):
    """text_signatures=False: no TF Text op in the SavedModel, so stock TensorFlow and `saved_model_cli show
    --all` / `run` take it. The export with text signatures needs TF Text's ops in the loading binary."""
    model = tiny_classifier()
    numeric, text = str(tmp_path / "numeric"), str(tmp_path / "text")
    assert model.export(numeric, tokenizer=tokenizer(), text_signatures=False) == ["serving_default",
                                                                                    "serving_int64"]
    model.export(text, tokenizer=tokenizer())
    expected = model(FEED, training=False).logits.numpy()

    numeric_served, text_without_ops = harness.serve([
        {"path": numeric, "requests": [("serving_default", FEED)], "warmup": True},
        {"path": text, "requests": [("serving_default", FEED)]}])
    assert numeric_served["error"] is None, numeric_served["error"]
    helpers.assert_close(numeric_served["outputs"][0]["logits"], expected)
    assert "Op type not registered" in text_without_ops["error"], text_without_ops["error"]

    assert _stock_tensorflow_load(numeric).stdout.strip() == "loaded"
    assert "Op type not registered" in _stock_tensorflow_load(text).stderr

    saved_model_cli = shutil.which("saved_model_cli")
    shown = subprocess.run([saved_model_cli, "show", "--all", "--dir", numeric], env=ENV, capture_output=True,
                           text=True, timeout=600)
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "signature_def['serving_default']" in shown.stdout and "signature_def['serving_int64']" in shown.stdout
    assert "serving_text" not in shown.stdout
    for key, value in FEED.items():
        np.save(str(tmp_path / f"{key}.npy"), value)
    inputs = ";".join(f"{key}={tmp_path / key}.npy" for key in FEED)
    ran = subprocess.run([saved_model_cli, "run", "--dir", numeric, "--tag_set", "serve", "--signature_def",
                          "serving_default", "--inputs", inputs], env=ENV, capture_output=True, text=True,
                         timeout=600)
    assert ran.returncode == 0, ran.stderr[-3000:]
    printed = ran.stdout.split("Result for output key logits:")[1]
    values = np.array([float(x) for x in re.findall(r"-?\d+\.\d*(?:e[-+]?\d+)?", printed)], np.float32)
    helpers.assert_close(values.reshape(expected.shape), expected)
