"""tfmodels.training.evaluation: the evaluation step is traced once per model, task and batch spec, and reused by
every later evaluation (EvaluationCallback runs one per epoch)."""
import gc
import weakref

from tfmodels.training import evaluation, recipe as recipe_lib
from tfmodels.training.job import Job


def _evaluated_model(job, dataset):
    """A weak reference to a model that was evaluated once and is referenced by nothing else (made in a function
    of its own: tracing reads the caller's frame locals, which would otherwise keep it)."""
    model = job.build_model(job.model_config())
    evaluation.evaluate(model, dataset, job.task, 8, job.tokenizer, job.label_names)
    assert model in evaluation._FORWARDS
    return weakref.ref(model)


def test_evaluation_step_is_traced_once_across_epochs_and_freed_with_its_model(tmp_path):
    recipe = recipe_lib.load_recipe("listops-xlnet", ["data.limit=16", f"training.output_dir={tmp_path}"])
    job = Job(recipe)
    model = job.build_model(job.model_config())
    dataset = job.dataset("validation", model.config)
    first = evaluation.evaluate(model, dataset, job.task, 8, job.tokenizer, job.label_names)
    second = evaluation.evaluate(model, dataset, job.task, 8, job.tokenizer, job.label_names)
    assert first == second and "loss" in first
    [forward] = evaluation._FORWARDS[model].values()
    assert forward.experimental_get_tracing_count() == 1
    # The cache holds its models weakly: a model referenced by nothing else goes, its entry with it.
    other = _evaluated_model(job, dataset)
    gc.collect()
    assert other() is None and model in evaluation._FORWARDS
