"""End to end, every text task type from its recipe (tiny model, a few steps): train with fit, crash in the
middle of an epoch, resume from the BackupAndRestore checkpoint to the same step count (and, without dropout,
to the same weights as an uninterrupted run), then export every trained head and check the SavedModels in ONE
fresh process that never imports tfmodels: same outputs as the Keras models (tests/serving_check.py)."""
import json
import os

import numpy as np
import pytest

from tests import helpers
from tfmodels.training import callbacks, recipe as recipe_lib, runner
from tfmodels.training.predict import examples_from

TEXT_RECIPES = {
    "sequence-classification": "demo-xlm-roberta-xl-sentiment",
    "token-classification": "ner-xlm-roberta-xl",
    "question-answering": "qa-xlm-roberta-xl",
    "masked-lm": "mlm-xlm-roberta-xl",
    "multiple-choice": "multiple-choice-xlm-roberta-xl",
}
# 2 epochs x 3 steps, a checkpoint every 2 steps; the crash comes after step 5 (mid-epoch 2, after the
# checkpoint at step 4), so one step is lost and must be trained again.
TINY = ["data.limit=24", "data.eval_limit=8", "data.batch_size=8", "data.eval_batch_size=8", "training.epochs=2",
        "training.steps_per_epoch=3", "training.checkpoint_every=2", "training.verbose=0",
        "model.overrides.hidden_dropout_prob=0.0", "model.overrides.attention_probs_dropout_prob=0.0"]
TOTAL_STEPS = 6
CRASH_AFTER = 5


def tiny_recipe(name, output_dir, extra=()):
    return recipe_lib.load_recipe(name, TINY + [f"training.output_dir={output_dir}"] + list(extra))


def weights(model):
    return [v.numpy() for v in model.weights]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Every text task: an uninterrupted run, and a run that crashes and resumes (same output_dir)."""
    runs = {}
    for task, name in TEXT_RECIPES.items():
        root = tmp_path_factory.mktemp(task)
        # per-epoch validation only where its metrics are checked (QA); the CLI test covers it for classification
        recipe = tiny_recipe(name, root / "crashed", [] if task == "question-answering" else ["data.validation=null"])
        with pytest.raises(callbacks.SimulatedCrash):
            runner.train(recipe, extra_callbacks=[callbacks.FailAfterSteps(CRASH_AFTER)], evaluate_after=False,
                         export_after=False)
        checkpoint_dir = root / "crashed" / "checkpoints"
        with open(checkpoint_dir / callbacks.METADATA_FILE) as f:
            saved = json.load(f)
        resumed = runner.train(recipe, evaluate_after=task == "question-answering", export_after=False)
        runs[task] = {"recipe": recipe, "resumed": resumed, "saved": saved, "root": root}
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TEXT_RECIPES))
def test_resume_after_crash_keeps_step_count(trained, task):
    run = trained[task]
    assert run["saved"]["optimizer_step"] == 4 and run["saved"]["mid_epoch"]
    assert run["resumed"]["steps"] == TOTAL_STEPS == run["resumed"]["planned_steps"]
    # the backup is removed once training has finished; logs and the final model are there
    assert not os.path.exists(run["root"] / "crashed" / "checkpoints")
    assert os.path.isfile(run["root"] / "crashed" / "final" / "config.json")
    history = (run["root"] / "crashed" / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch") and len(history) == 3, history
    assert any(f.startswith("events") for f in os.listdir(run["root"] / "crashed" / "logs" / "train"))


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run(trained, tmp_path):
    """Sequence classification without dropout: the crashed-and-resumed run ends with the weights of an
    uninterrupted run (same batches, same optimizer state)."""
    run = trained["sequence-classification"]
    straight = runner.train(tiny_recipe(TEXT_RECIPES["sequence-classification"], tmp_path / "straight",
                                        ["data.validation=null"]), evaluate_after=False, export_after=False)
    assert straight["steps"] == TOTAL_STEPS
    family = runner.Job(run["recipe"]).family
    resumed_model = family.head_class("sequence-classification").from_pretrained(run["resumed"]["final_dir"])
    straight_model = family.head_class("sequence-classification").from_pretrained(straight["final_dir"])
    for a, b in zip(weights(resumed_model), weights(straight_model)):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.slow
def test_qa_evaluation_reports_exact_match_and_f1(trained):
    metrics = trained["question-answering"]["resumed"]["metrics"]
    assert {"test_exact_match", "test_f1", "test_loss"} <= set(metrics)
    assert 0.0 <= metrics["test_exact_match"] <= metrics["test_f1"] <= 100.0


@pytest.mark.slow
def test_exports_reload_in_a_fresh_process_and_match(trained, tmp_path):
    jobs = []
    for task, run in trained.items():
        job = runner.Job(run["recipe"])
        model = job.family.head_class(task).from_pretrained(run["resumed"]["final_dir"])
        dataset = job.dataset("train", model.config)
        batch = next(iter(dataset.model_inputs(4)))
        inputs = {k: v.numpy() for k, v in batch.items() if k in model.serving_input_names}
        texts = None
        if task == "sequence-classification":
            texts = ["What a wonderful and lovely film.", "Der Zug war schrecklich."]
        elif task == "token-classification":
            texts = ["Anna Schmidt visited Berlin with Acme Corp ."]
        tokenizer = job.tokenizer if texts else None
        jobs.append((task, model, inputs, tokenizer, texts))
    helpers.export_and_check(jobs, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["token-classification", "question-answering", "masked-lm", "multiple-choice"])
def test_exported_job_models_predict_readable_results(trained, task, tmp_path):
    from tfmodels.training import predict
    run = trained[task]
    job = runner.Job(run["recipe"])
    model = job.family.head_class(task).from_pretrained(run["resumed"]["final_dir"])
    path = runner.export(job, model, str(tmp_path / "export" / "1"))
    served = predict.load_runner(path)
    assert served.task == task
    if task == "token-classification":
        rows = examples_from(task, ["Anna Schmidt visited Berlin ."])
        tags = predict.predict(served, rows)[0]["tags"].split()
        assert [t.rsplit("/", 1)[0] for t in tags] == ["Anna", "Schmidt", "visited", "Berlin", "."]
        assert all(t.rsplit("/", 1)[1] in job.label_names for t in tags)
    elif task == "question-answering":
        rows = examples_from(task, ["Where does Anna live?"], ["Anna lives in Paris. Ben works as a chef."])
        result = predict.predict(served, rows)[0]
        assert result["answer"] and result["answer"] in rows[0]["context"]
    elif task == "masked-lm":
        result = predict.predict(served, examples_from(task, ["The cat is <mask> today."]))[0]
        assert len(result["masks"]) == 1
    else:
        rows = examples_from(task, ["Anna lives in Oslo. Where does Anna live? | Rome | Oslo | Lima | Paris"])
        assert predict.predict(served, rows)[0]["answer"] in ("Rome", "Oslo", "Lima", "Paris")
