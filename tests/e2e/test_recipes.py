"""End to end, every task type from its recipe (tiny model, a few steps): the text tasks with XLM-RoBERTa-XL, image
classification and semantic segmentation with BEiT. Train with fit, crash in the middle of an epoch, resume from
the BackupAndRestore checkpoint to the same step count (and, without dropout, to the same weights as an
uninterrupted run), then export every trained head with the job's exporter and serve the SavedModels through
TF's C++ SavedModel loader (tests/serving, helpers.export_and_check): same outputs as the Keras models, through
serving_default and the raw-text / encoded-image signatures."""
import json
import os

import keras
import numpy as np
import pytest

from tests import helpers
from tfmodels.training import callbacks, data, exporting, job as job_lib, recipe as recipe_lib, runner
from tfmodels.training.predict import examples_from

TEXT_RECIPES = {
    "sequence-classification": "demo-xlm-roberta-xl-sentiment",
    "token-classification": "ner-xlm-roberta-xl",
    "question-answering": "qa-xlm-roberta-xl",
    "masked-lm": "mlm-xlm-roberta-xl",
    "multiple-choice": "multiple-choice-xlm-roberta-xl",
}
IMAGE_RECIPES = {
    "image-classification": "image-classification-beit",
    "semantic-segmentation": "semantic-segmentation-beit",
}
RECIPES = {**TEXT_RECIPES, **IMAGE_RECIPES}
# Tasks whose run keeps per-epoch validation (its metrics are checked); the CLI test covers it for classification.
VALIDATED = ("question-answering", "semantic-segmentation")
# 2 epochs x 3 steps, a checkpoint every 2 steps; the crash comes after step 5 (mid-epoch 2, after the
# checkpoint at step 4), so one step is lost and must be trained again.
TINY = ["data.limit=24", "data.eval_limit=8", "data.batch_size=8", "data.eval_batch_size=8", "training.epochs=2",
        "training.steps_per_epoch=3", "training.checkpoint_every=2", "training.verbose=0",
        "model.overrides.hidden_dropout_prob=0.0", "model.overrides.attention_probs_dropout_prob=0.0"]
TOTAL_STEPS = 6
CRASH_AFTER = 5


def tiny_recipe(name, output_dir, extra=()):
    if name in IMAGE_RECIPES.values():
        extra = ["model.overrides.drop_path_rate=0.0"] + list(extra)
    return recipe_lib.load_recipe(name, TINY + [f"training.output_dir={output_dir}"] + list(extra))


def weights(model):
    return [v.numpy() for v in model.weights]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Every task: a run that crashes and resumes (same output_dir)."""
    runs = {}
    for task, name in RECIPES.items():
        root = tmp_path_factory.mktemp(task)
        recipe = tiny_recipe(name, root / "crashed", [] if task in VALIDATED else ["data.validation=null"])
        with pytest.raises(callbacks.SimulatedCrash):
            runner.train(recipe, extra_callbacks=[callbacks.FailAfterSteps(CRASH_AFTER)], evaluate_after=False,
                         export_after=False)
        checkpoint_dir = root / "crashed" / "checkpoints"
        with open(checkpoint_dir / callbacks.METADATA_FILE) as f:
            saved = json.load(f)
        resumed = runner.train(recipe, evaluate_after=task in VALIDATED, export_after=False)
        runs[task] = {"recipe": recipe, "resumed": resumed, "saved": saved, "root": root}
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("task", list(RECIPES))
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
    family = job_lib.Job(run["recipe"]).family
    resumed_model = family.head_class("sequence-classification").from_pretrained(run["resumed"]["final_dir"])
    straight_model = family.head_class("sequence-classification").from_pretrained(straight["final_dir"])
    for a, b in zip(weights(resumed_model), weights(straight_model)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_a_run_killed_after_its_last_backup_finishes_on_restart(tmp_path):
    """Killed after the backup of its last step, before its final model is saved: the restart restores that backup,
    trains nothing more, and saves the final model (it used to fail with "no epochs left to train")."""
    class CrashAfterTheLastEpoch(keras.callbacks.Callback):  # runs after the backup's own on_epoch_end
        def on_epoch_end(self, epoch, logs=None):
            if epoch == TOTAL_STEPS // 3 - 1:
                raise callbacks.SimulatedCrash("killed after the last backup")

    recipe = tiny_recipe(TEXT_RECIPES["sequence-classification"], tmp_path / "run", ["data.validation=null"])
    with pytest.raises(callbacks.SimulatedCrash):
        runner.train(recipe, extra_callbacks=[CrashAfterTheLastEpoch()], evaluate_after=False, export_after=False)
    epoch, trained = callbacks.resume_point(str(tmp_path / "run" / "checkpoints"))
    assert epoch * 3 + trained == TOTAL_STEPS  # the backup holds every step
    resumed = runner.train(recipe, evaluate_after=False, export_after=False)
    # the optimizer's step count comes from the restored backup: nothing was trained again
    assert resumed["steps"] == TOTAL_STEPS == resumed["planned_steps"]
    assert resumed["history"] == {}
    assert not os.path.exists(tmp_path / "run" / "checkpoints")
    assert os.path.isfile(tmp_path / "run" / "final" / "config.json")


@pytest.mark.slow
def test_qa_evaluation_reports_exact_match_and_f1(trained):
    metrics = trained["question-answering"]["resumed"]["metrics"]
    assert {"test_exact_match", "test_f1", "test_loss"} <= set(metrics)
    assert 0.0 <= metrics["test_exact_match"] <= metrics["test_f1"] <= 100.0


@pytest.mark.slow
def test_segmentation_reports_mean_iou(trained):
    run = trained["semantic-segmentation"]
    metrics = run["resumed"]["metrics"]
    assert {"validation_loss", "validation_mean_iou", "validation_pixel_accuracy"} <= set(metrics) or \
        {"test_loss", "test_mean_iou", "test_pixel_accuracy"} <= set(metrics), metrics
    assert all(0.0 <= v <= 1.0 for k, v in metrics.items() if k.endswith(("mean_iou", "pixel_accuracy")))
    history = run["resumed"]["history"]
    assert "mean_iou" in history and "val_mean_iou" in history, history
    assert os.path.isfile(run["root"] / "crashed" / "best" / "config.json")  # chosen by val_mean_iou


def job_exporter(job):
    """export(model, path) -> signatures, through the training job's exporter (tfmodels train / export)."""
    def export(model, path):
        runner.export(job, model, path)
        return exporting.read_metadata(path)["signatures"]
    return export


@pytest.mark.slow
def test_exports_reload_in_a_fresh_process_and_match(trained, tmp_path):
    jobs = []
    for task, run in trained.items():
        job = job_lib.Job(run["recipe"])
        model = job.family.head_class(task).from_pretrained(run["resumed"]["final_dir"])
        dataset = job.dataset("train", model.config)
        batch = next(iter(dataset.model_inputs(4)))
        inputs = {k: v.numpy() for k, v in batch.items() if k in model.serving_input_names}
        preprocessor, raw = None, None
        if task == "sequence-classification":
            preprocessor, raw = job.tokenizer, ["What a wonderful and lovely film.", "Der Zug war schrecklich."]
        elif task == "token-classification":
            preprocessor, raw = job.tokenizer, ["Anna Schmidt visited Berlin with Acme Corp ."]
        elif task in IMAGE_RECIPES:
            # encoded files from the validation split, against the training pipeline's preprocessing
            preprocessor = data.PipelineImageProcessor(job.image_settings())
            raw = [open(row["image"], "rb").read() for row in job.rows("validation") or job.rows("test")][:3]
        jobs.append((task, model, inputs, preprocessor, raw, job_exporter(job)))
    helpers.export_and_check(jobs, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["token-classification", "question-answering", "masked-lm", "multiple-choice",
                                  "image-classification", "semantic-segmentation"])
def test_exported_job_models_predict_readable_results(trained, task, tmp_path):
    from tfmodels.training import predict
    run = trained[task]
    job = job_lib.Job(run["recipe"])
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
    elif task == "multiple-choice":
        rows = examples_from(task, ["Anna lives in Oslo. Where does Anna live? | Rome | Oslo | Lima | Paris"])
        assert predict.predict(served, rows)[0]["answer"] in ("Rome", "Oslo", "Lima", "Paris")
    else:  # images through serving_image, and the checkpoint runner on the same files agrees
        rows = examples_from(task, input_path=job.path(run["recipe"]["data"]["test"]), limit=3)
        results = predict.predict(served, rows)
        from_checkpoint = predict.predict(predict.load_runner(run["resumed"]["final_dir"]), rows)
        assert len(results) == 3
        if task == "image-classification":
            assert all(r["label"] in job.label_names for r in results)
            assert [r["label"] for r in results] == [r["label"] for r in from_checkpoint]
            np.testing.assert_allclose([r["score"] for r in results], [r["score"] for r in from_checkpoint],
                                       atol=1e-5)
        else:
            assert all(set(r["classes"]) <= set(job.label_names) for r in results)
            assert [r["classes"] for r in results] == [r["classes"] for r in from_checkpoint]
