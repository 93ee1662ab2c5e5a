"""The README's main job (`tfmodels train configs/recipes/listops-nystromformer.json`, shortened to a few steps):
the export/1 it writes serves through TensorFlow's C++ SavedModel loader (the C API harness), raw ListOps
expressions and token ids alike, with the trained model's outputs and its warm-up requests; and
`tfmodels export --numeric-only` on its checkpoint gives a SavedModel that serves without TF Text's ops."""
import os

import numpy as np
import pytest

from tests import helpers
from tests.serving import harness
from tfmodels import cli
from tfmodels.training import exporting, recipe as recipe_lib, runner

RECIPE = os.path.join(harness.ROOT, "configs", "recipes", "listops-nystromformer.json")
TINY = ["data.limit=32", "data.eval_limit=16", "data.batch_size=16", "data.eval_batch_size=16", "training.epochs=1",
        "training.steps_per_epoch=2", "training.verbose=0", "training.tensorboard=false", "export.smoke_test=false"]
EXPRESSIONS = ["[MAX 2 9 [MIN 4 7 ] 0 ]", "[SM 3 4 [MED 1 5 8 ] ] 6"]


@pytest.mark.slow
def test_main_job_export_serves_through_the_cpp_loader(tmp_path):
    recipe = recipe_lib.load_recipe(RECIPE, TINY + [f"training.output_dir={tmp_path / 'run'}"])
    summary = runner.train(recipe, evaluate_after=False, export_after=True)
    export_dir = summary["export_dir"]
    assert export_dir == str(tmp_path / "run" / "export" / "1")
    job = runner.Job(recipe)
    model = job.family.head_class(job.task).from_pretrained(summary["evaluated_from"])
    encoded = job.tokenizer(EXPRESSIONS, padding=True, return_tensors="np")
    feed = {k: encoded[k].astype(np.int32) for k in ("input_ids", "attention_mask")}
    expected = model(feed, training=False).logits.numpy()

    numeric_dir = str(tmp_path / "numeric" / "1")
    code = cli.main(["export", RECIPE, "--checkpoint", summary["evaluated_from"], "--output", numeric_dir,
                     "--numeric-only"] + [x for o in TINY for x in ("--set", o)])
    assert code == 0
    assert exporting.read_metadata(numeric_dir)["signatures"] == ["serving_default", "serving_int64"]

    served, numeric = harness.serve_ok([
        {"path": export_dir, "warmup": True, "text_ops": True,
         "requests": [("serving_default", feed), ("serving_text", {"text": np.array(
             [e.encode() for e in EXPRESSIONS], object)})]},
        {"path": numeric_dir, "warmup": True, "requests": [("serving_default", feed)]}])
    assert sorted(served["signatures"]) == exporting.read_metadata(export_dir)["signatures"]
    helpers.assert_close(served["outputs"][0]["logits"], expected)
    text = served["outputs"][1]
    helpers.assert_close(text["logits"], model({"input_ids": text["input_ids"],
                                                "attention_mask": text["attention_mask"]}, training=False).logits)
    assert [w["signature"] for w in served["warmup"]] == sorted(served["signatures"])
    helpers.assert_close(numeric["outputs"][0]["logits"], expected)
    assert len(numeric["warmup"]) == 2
