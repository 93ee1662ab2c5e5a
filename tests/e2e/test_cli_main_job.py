"""The main job through the console command: `tfmodels train` (fit, evaluate, export, reload the SavedModel in a
fresh process and predict), then `predict`, `evaluate` and `export` on its outputs, and the TF Serving requests
(REST JSON body and gRPC PredictRequest) for the exported raw-text signature, served by TF's C++ SavedModel loader
(the C API harness, tests/serving)."""
import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.serving import harness
from tfmodels import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = "demo-xlm-roberta-xl-sentiment"
TINY = ["data.limit=64", "data.eval_limit=32", "training.epochs=2", "training.steps_per_epoch=4",
        "data.batch_size=16"]


def cli_main(*args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(list(args))
    return code, out.getvalue()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("main_job") / "run"
    overrides = [x for o in TINY + [f"training.output_dir={run}"] for x in ("--set", o)]
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, "-m", "tfmodels", "train", RECIPE] + overrides, capture_output=True,
                            text=True, env=env, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run, result.stdout


@pytest.mark.slow
def test_train_evaluates_exports_and_predicts_in_a_fresh_process(run_dir):
    run, stdout = run_dir
    assert "trained 8 steps" in stdout and "test_accuracy" in stdout
    assert "fresh-process prediction with the SavedModel" in stdout
    predictions = [json.loads(l) for l in stdout.splitlines() if l.startswith("{")]
    assert len(predictions) == 2 and {p["label"] for p in predictions} <= {"negative", "positive"}
    for name in ("recipe.json", "history.csv", "metrics.json", "best/config.json", "final/model.weights.h5",
                 "best/sentencepiece.bpe.model", "export/1/saved_model.pb", "export/1/assets.extra/tfmodels.json",
                 "curves.png"):
        assert os.path.isfile(run / name), name
    assert not os.path.exists(run / "checkpoints")


@pytest.mark.slow
def test_predict_evaluate_export_commands(run_dir, tmp_path):
    run, _ = run_dir
    code, out = cli_main("predict", str(run / "export" / "1"), "--input", os.path.join(
        ROOT, "tfmodels/assets/data/sentiment/test.jsonl"), "--limit", "3", "--top-k", "2")
    rows = [json.loads(l) for l in out.splitlines()]
    assert code == 0 and len(rows) == 3 and all(len(r["top"]) == 2 for r in rows)
    # the file's labels are indices 0 / 1: shown by name, with whether the prediction is right
    assert all(r["gold"] in ("negative", "positive") and r["correct"] == (r["label"] == r["gold"]) for r in rows)
    code, out = cli_main("predict", str(run / "best"), "--text", "A lovely day.")
    assert code == 0 and json.loads(out)["label"] in ("negative", "positive")
    overrides = [x for o in TINY for x in ("--set", o)]
    code, out = cli_main("evaluate", RECIPE, "--checkpoint", str(run / "best"), *overrides)
    assert code == 0 and 0.0 <= json.loads(out)["test_accuracy"] <= 1.0
    code, out = cli_main("export", RECIPE, "--checkpoint", str(run / "best"), "--output", str(tmp_path / "e" / "1"),
                         *overrides)
    assert code == 0 and os.path.isfile(tmp_path / "e" / "1" / "saved_model.pb")


@pytest.mark.slow
def test_tf_serving_rest_and_grpc_requests(run_dir):
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # the test extra has them
    run, _ = run_dir
    export_dir = str(run / "export" / "1")
    texts = ["What a wonderful and lovely film.", "Der Zug war schrecklich und langweilig."]

    # gRPC: the PredictRequest a client sends to the model server (port 8500)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "sentiment"
    request.model_spec.signature_name = "serving_text"
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(texts))
    received = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    # REST: POST /v1/models/sentiment:predict (port 8501) with this JSON body
    body = json.dumps({"signature_name": "serving_text", "instances": [{"text": t} for t in texts]})
    instances = json.loads(body)["instances"]

    # both served as the model server serves them: TF's C++ SavedModel loader (the C API harness)
    grpc_inputs = {k: tf.make_ndarray(v) for k, v in received.inputs.items()}
    rest_inputs = {"text": np.array([i["text"].encode() for i in instances], object)}
    served = harness.serve_ok([{"path": export_dir, "text_ops": True, "warmup": True, "requests": [
        (received.model_spec.signature_name, grpc_inputs), ("serving_text", rest_inputs)]}])[0]
    assert set(received.inputs) == set(served["signatures"]["serving_text"]["inputs"])
    outputs, rest = served["outputs"]
    response = predict_pb2.PredictResponse()
    for key, value in outputs.items():
        response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
    logits = tf.make_ndarray(response.outputs["logits"])
    assert logits.shape == (2, 2) and "input_ids" in response.outputs
    assert hasattr(prediction_service_pb2_grpc, "PredictionServiceStub")
    np.testing.assert_allclose(rest["logits"], logits, atol=1e-6)
    # the default (int ids) signature gives the same logits for the ids the text signature produced
    ids = {k: rest[k] for k in ("input_ids", "attention_mask")}
    default = harness.serve_ok([{"path": export_dir, "text_ops": True, "requests": [("serving_default", ids)]}])[0]
    np.testing.assert_allclose(default["outputs"][0]["logits"], logits, atol=1e-5)
