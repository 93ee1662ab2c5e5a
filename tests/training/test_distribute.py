"""Keras fit under MirroredStrategy with two replicas (two logical CPUs, in a fresh process) trains exactly like
one replica: the model's internal loss is scaled by the replica count (core: PreTrainedModel.compute_loss), so
the all-reduced gradient is the gradient of the global batch mean. And mixed precision (bf16) trains and exports."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tfmodels.training import recipe as recipe_lib, runner

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["data.limit=16", "data.batch_size=8", "training.epochs=1", "training.steps_per_epoch=2",
        "data.validation=null", "data.test=null", "training.verbose=0", "optimizer.name=sgd",
        "optimizer.learning_rate=0.5", "optimizer.clipnorm=null", "schedule.warmup_ratio=0",
        "schedule.decay=constant", "model.overrides.hidden_dropout_prob=0.0",
        "model.overrides.attention_probs_dropout_prob=0.0", "training.tensorboard=false"]

DRIVER = """
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tfmodels.training import recipe as recipe_lib, runner
overrides, out = json.loads(sys.argv[1]), sys.argv[2]
results = {}
for name, extra in (("one", ["training.strategy=default"]),
                    ("two", ["training.strategy=mirrored", 'training.devices=["/cpu:0","/cpu:1"]'])):
    recipe = recipe_lib.load_recipe("demo-xlm-roberta-xl-sentiment", overrides + extra +
                                    [f"training.output_dir={out}/{name}"])
    summary = runner.train(recipe, evaluate_after=False, export_after=False)
    results[name] = {"loss": summary["history"]["loss"], "steps": summary["steps"]}
print("RESULT " + json.dumps(results))
"""


@pytest.mark.slow
def test_mirrored_two_replicas_train_like_one(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(TINY), str(tmp_path)], capture_output=True,
                            text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads(next(l for l in result.stdout.splitlines() if l.startswith("RESULT "))[7:])
    assert summary["one"]["steps"] == summary["two"]["steps"] == 2
    assert summary["two"]["loss"] == pytest.approx(summary["one"]["loss"], abs=1e-5)
    from tfmodels import XLMRobertaXLForSequenceClassification as Model
    one = Model.from_pretrained(str(tmp_path / "one" / "final"))
    two = Model.from_pretrained(str(tmp_path / "two" / "final"))
    for a, b in zip(one.weights, two.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-5, err_msg=a.path)


@pytest.mark.slow
def test_bf16_mixed_precision_trains_and_exports(tmp_path):
    import keras
    recipe = recipe_lib.load_recipe("demo-xlm-roberta-xl-sentiment", TINY + [
        "training.mixed_precision=bf16", "optimizer.name=adamw", "optimizer.learning_rate=0.001",
        f"training.output_dir={tmp_path}", "export.smoke_test=false"])
    summary = runner.train(recipe, evaluate_after=False, export_after=True)
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    assert summary["steps"] == 2 and all(np.isfinite(summary["history"]["loss"]))
    from tests.serving import harness
    feed = {"input_ids": np.array([[0, 5, 6, 2]], np.int32), "attention_mask": np.ones((1, 4), np.int32)}
    served = harness.serve_ok([{"path": summary["export_dir"], "requests": [("serving_default", feed)],
                                "warmup": True, "text_ops": True}])[0]  # through TF Serving's C++ loader
    assert served["outputs"][0]["logits"].dtype == np.float32 and served["outputs"][0]["logits"].shape == (1, 2)
