"""The main job's recipe for every text family (configs/recipes/listops-<family>.json, each with its efficient
attention): a few training steps on the bundled ListOps data, evaluation on the test split, export with the job's
exporter, and ONE fresh process without tfmodels that reloads all the SavedModels and gives the Keras models'
outputs through serving_default and serving_text (raw ListOps expressions, tokenised in the graph)."""
import time

import numpy as np
import pytest

from tests import helpers
from tfmodels import registry
from tfmodels.training import exporting, job as job_lib, recipe as recipe_lib, runner

TEXT_FAMILIES = sorted(name for name, spec in registry.families().items() if spec.modality == "text")
TINY = ["data.limit=32", "data.eval_limit=16", "data.batch_size=16", "data.eval_batch_size=16", "training.epochs=1",
        "training.steps_per_epoch=2", "training.verbose=0", "training.tensorboard=false", "data.validation=null"]
EXPRESSIONS = ["[MAX 2 9 [MIN 4 7 ] 0 ]", "[SM 3 4 [MED 1 5 8 ] ] 6"]


def test_every_text_family_has_a_listops_recipe():
    assert set(TEXT_FAMILIES) == {"longformer", "mra", "nystromformer", "xlm-roberta-xl", "xlnet", "yoso"}
    for family in TEXT_FAMILIES:
        recipe = recipe_lib.load_recipe(f"listops-{family}")
        assert recipe["model"]["family"] == family and recipe["model"]["task"] == "sequence-classification"
        assert recipe["tokenizer"]["class"] == "WordLevelTokenizer"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    runs = {}
    for family in TEXT_FAMILIES:
        started = time.time()
        output_dir = tmp_path_factory.mktemp(f"listops-{family}")
        recipe = recipe_lib.load_recipe(f"listops-{family}", TINY + [f"training.output_dir={output_dir}"])
        summary = runner.train(recipe, evaluate_after=True, export_after=False)
        runs[family] = {"recipe": recipe, "summary": summary, "seconds": time.time() - started}
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_listops_recipe_trains_and_evaluates(trained, family):
    run = trained[family]
    summary = run["summary"]
    assert summary["steps"] == summary["planned_steps"] == 2
    assert np.isfinite(summary["history"]["loss"]).all()
    metrics = summary["metrics"]
    assert {"test_loss", "test_accuracy", "test_f1"} <= set(metrics) and 0.0 <= metrics["test_accuracy"] <= 1.0
    job = job_lib.Job(run["recipe"])
    assert type(job.model_config()).__name__.lower().startswith(family.replace("-", ""))


@pytest.mark.slow
def test_listops_exports_reload_in_one_fresh_process_and_match(trained, tmp_path):
    jobs = []
    for family, run in trained.items():
        job = job_lib.Job(run["recipe"])
        model = job.family.head_class(job.task).from_pretrained(run["summary"]["final_dir"])
        batch = next(iter(job.dataset("test", model.config).model_inputs(4)))
        inputs = {k: v.numpy() for k, v in batch.items() if k in model.serving_input_names}
        for name in model.serving_input_names:  # e.g. XLNet's token_type_ids: the word-level tokenizer has none
            if name not in inputs and name in model.all_input_names:
                inputs[name] = np.zeros_like(inputs["input_ids"])

        def export(model, path, job=job):
            runner.export(job, model, path)
            return exporting.read_metadata(path)["signatures"]

        jobs.append((family, model, inputs, job.tokenizer, EXPRESSIONS, export))
    helpers.export_and_check(jobs, tmp_path)
