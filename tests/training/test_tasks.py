"""The table of training tasks (one TrainingTask per registry task) and the strategies that cannot carry XLNet's
training memory refusing it clearly instead of dropping it (the fit loop on one replica carries it)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import tfmodels
from tfmodels.registry import TASKS, resolve_config_path
from tfmodels.training import job as job_lib, parameter_server, recipe as recipe_lib, runner
from tfmodels.training.distributed import train_multi_worker
from tfmodels.training.tasks import TRAINING_TASKS, get_task


def test_every_registry_task_has_one_training_task():
    assert list(TRAINING_TASKS) == list(TASKS)
    for name, task in TRAINING_TASKS.items():
        assert task.name == name and task.modality == TASKS[name][1]
    assert not hasattr(runner, "IMAGE_TASKS") and not hasattr(runner, "DEFAULT_MONITOR")
    with pytest.raises(ValueError, match="unknown task"):
        get_task("translation")


def test_monitors_and_pipelines_per_task():
    monitors = {name: task.monitor for name, task in TRAINING_TASKS.items()}
    assert monitors == {
        "base": ("val_loss", "min"), "sequence-classification": ("val_accuracy", "max"),
        "token-classification": ("val_f1", "max"), "question-answering": ("val_f1", "max"),
        "masked-lm": ("val_loss", "min"), "multiple-choice": ("val_accuracy", "max"),
        "causal-lm": ("val_loss", "min"), "image-classification": ("val_accuracy", "max"),
        "semantic-segmentation": ("val_mean_iou", "max"), "masked-image-modeling": ("val_loss", "min")}
    text_pipelines = {name for name, task in TRAINING_TASKS.items() if task.data_class is not None}
    assert text_pipelines == {"sequence-classification", "token-classification", "question-answering",
                              "masked-lm", "multiple-choice"}
    assert get_task("semantic-segmentation").image_targets == "mask"
    assert get_task("image-classification").image_targets == "label"
    assert get_task("question-answering").config_overrides() == {"num_labels": 2}
    names = [[m.name for m in group] if isinstance(group, list) else group.name
             for group in get_task("question-answering").fit_metrics(None, True)]
    assert names == [["start_accuracy"], ["end_accuracy"]]
    assert [m.name for m in get_task("sequence-classification").fit_metrics(3, True)] == ["accuracy", "f1"]
    assert get_task("causal-lm").fit_metrics(None, True) == []


def test_prediction_examples_per_task():
    assert get_task("question-answering").example("Who?", "Ann did.") == {"question": "Who?", "context": "Ann did."}
    assert get_task("multiple-choice").example("Pick | a | b") == {"context": "Pick ", "choices": ["a", "b"]}
    assert get_task("token-classification").example("Ann runs") == {"words": ["Ann", "runs"]}
    assert get_task("sequence-classification").example("x", "y") == {"text": "x", "text_pair": "y"}
    with pytest.raises(ValueError, match="predict does not handle task 'causal-lm'"):
        get_task("causal-lm").format_predictions(None, [])


def test_training_memory_is_carried_by_fit_on_one_replica_only():
    config = tfmodels.XLNetConfig.from_pretrained(resolve_config_path("xlnet-tiny"), use_mems_train=True)
    job_lib.check_training_memory(config, "fit", replicas=1)
    for loop, replicas in (("fit", 2), ("multi-worker", 1), ("parameter-server", 1)):
        with pytest.raises(ValueError, match="use_mems_train=True: the .* cannot carry the training memory"):
            job_lib.check_training_memory(config, loop, replicas)
    for loop, replicas in (("fit", 2), ("multi-worker", 4), ("parameter-server", 1)):
        job_lib.check_training_memory(config.copy(use_mems_train=False), loop, replicas)


def test_multi_worker_loop_refuses_xlnet_training_memory(tmp_path):
    recipe = recipe_lib.load_recipe("listops-xlnet", [
        "model.overrides.use_mems_train=true", "data.limit=16", f"training.output_dir={tmp_path}"])
    with pytest.raises(ValueError, match="multi-worker loop"):
        train_multi_worker(job_lib.Job(recipe), tf.distribute.get_strategy())


def test_parameter_server_step_refuses_xlnet_training_memory():
    config = tfmodels.XLNetConfig.from_pretrained(resolve_config_path("xlnet-tiny"), use_mems_train=True)
    model = tfmodels.XLNetForSequenceClassification(config)
    with pytest.raises(ValueError, match="parameter-server loop"):
        parameter_server.train_step(model, keras.optimizers.SGD())
    parameter_server.train_step(tfmodels.XLNetForSequenceClassification(config.copy(use_mems_train=False)),
                                keras.optimizers.SGD())


def test_fit_loop_trains_xlnet_with_training_memory_on_one_replica(tmp_path):
    recipe = recipe_lib.load_recipe("listops-xlnet", [
        "model.overrides.use_mems_train=true", "model.overrides.mem_len=16", "data.limit=16", "data.batch_size=8",
        "training.epochs=1", "training.steps_per_epoch=2", "data.validation=null", "data.test=null",
        "training.verbose=0", "training.tensorboard=false", "training.strategy=default",
        f"training.output_dir={tmp_path}"])
    summary = runner.train(recipe, evaluate_after=False, export_after=False)
    assert summary["steps"] == 2 and all(np.isfinite(summary["history"]["loss"]))
