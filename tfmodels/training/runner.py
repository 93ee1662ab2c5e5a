"""`tfmodels train / evaluate / export`: the job of a recipe (tfmodels.training.job) trained with `model.fit` and
callbacks (or, under MultiWorkerMirroredStrategy, by tfmodels.training.distributed), then evaluation, best-model
export, and a smoke test of the export in a fresh process.

Run directory (training.output_dir, default runs/<recipe name>):
    recipe.json        the resolved recipe (defaults and --set overrides applied)
    checkpoints/       BackupAndRestore state every training.checkpoint_every steps (removed once final/ is saved)
    best/              save_pretrained of the best model by training.monitor (+ tokenizer files)
    final/             save_pretrained at the end of training (+ tokenizer files)
    history.csv, logs/ per-epoch metrics (CSV) and TensorBoard logs
    curves.png         loss and metrics per epoch, train and validation (from history.csv; `plot` extra)
    metrics.json       evaluation of the exported model on data.test (or data.validation)
    export/1/          the SavedModel for TF Serving
"""
import json
import os
import subprocess
import sys
import time

import keras

from tfmodels.core import atomic
from tfmodels.core.logging import logger
from tfmodels.training import callbacks as cb
from tfmodels.training import evaluation, exporting
from tfmodels.training.distributed import train_multi_worker
from tfmodels.training.job import (Job, check_training_memory, choose_strategy, has_tokenizer_files, is_chief,
                                   plan_steps, save_recipe, train_stream)


def train(recipe, extra_callbacks=(), evaluate_after=True, export_after=None):
    """Run the recipe's training; returns a summary dict (steps, metrics, paths, timings)."""
    started = time.time()
    # The strategy first: MultiWorkerMirroredStrategy must be created before TensorFlow runs any op.
    strategy_name, strategy = choose_strategy(recipe["training"]["strategy"], recipe["training"]["devices"])
    keras.utils.set_random_seed(int(recipe["training"]["seed"]))
    job = Job(recipe)
    if strategy_name == "multi_worker":
        summary = train_multi_worker(job, strategy, extra_callbacks)
    else:
        summary = _train_fit(job, strategy, extra_callbacks)
    summary["strategy"] = strategy_name
    summary["train_seconds"] = time.time() - started
    if not is_chief():
        return summary
    return finish(job, summary, evaluate_after, export_after)


def prebuild(model, dataset, batch_size):
    """Build the compiled metrics (and the optimizer) on a real batch before `fit`.

    Under a tf.distribute strategy, Keras' fit builds whatever is unbuilt from a batch it first reduces across
    replicas with MEAN (`_maybe_symbolic_build`), which turns integer ids and labels into floats: the model then
    mistakes class labels for multi-label targets. With everything built beforehand that step has nothing to do.
    """
    batch = next(iter(dataset.epoch(batch_size, shuffle=False)))
    outputs = model(batch, training=False)
    model.compute_metrics(batch, None, outputs)
    model.reset_metrics()
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def _train_fit(job, strategy, extra_callbacks):
    save_recipe(job)
    with strategy.scope():
        config = job.model_config()
    check_training_memory(config, "fit", strategy.num_replicas_in_sync)
    train_data = job.dataset("train", config)
    validation = job.dataset("validation", config)
    data_steps, steps_per_epoch, epochs, total_steps = plan_steps(job, train_data)
    backup_dir = os.path.join(job.output_dir, "checkpoints")
    epoch, trained = cb.resume_point(backup_dir)
    consumed = epoch * steps_per_epoch + trained
    history_csv = os.path.join(job.output_dir, "history.csv")
    cb.truncate_history(history_csv, epoch)  # rows a killed run logged after its last backup come again
    stream = train_stream(job, train_data, consumed, total_steps, data_steps)
    with strategy.scope():
        model = job.build_model(config, job.policy())
        job.compile(model, total_steps)
        prebuild(model, train_data, job.batch_size)
    monitor, mode = job.monitor()
    callbacks = []
    if validation is not None:
        callbacks.append(cb.EvaluationCallback(validation, job.task, job.eval_batch_size, job.tokenizer,
                                               job.label_names))
    backup = cb.ResumableBackup(backup_dir, save_freq=int(job.recipe["training"]["checkpoint_every"]),
                                steps_per_epoch=steps_per_epoch)
    callbacks += [
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.CSVLogger(history_csv, append=True),
        cb.TrainingCurves(os.path.join(job.output_dir, "history.csv"), job.recipe["name"]),  # curves.png
    ]
    if validation is not None:
        callbacks.append(cb.BestModelCheckpoint(os.path.join(job.output_dir, "best"), monitor, mode,
                                                job.preprocessor))
    if job.recipe["training"]["tensorboard"]:
        callbacks.append(cb.TensorBoardScalars(os.path.join(job.output_dir, "logs")))
    callbacks.append(backup)  # after the epoch's logs and best model: see ResumableBackup.on_train_batch_end
    callbacks += list(extra_callbacks)
    logger.info(f"training {type(model).__name__} ({model.num_parameters():,} parameters) on "
                f"{train_data.num_examples} examples: {epochs} epochs x {steps_per_epoch} steps, batch "
                f"{job.batch_size}, strategy {type(strategy).__name__} ({strategy.num_replicas_in_sync} replicas)")
    history = model.fit(stream, epochs=epochs, steps_per_epoch=steps_per_epoch, callbacks=callbacks,
                        verbose=job.recipe["training"]["verbose"], shuffle=False)
    final_dir = os.path.join(job.output_dir, "final")
    with atomic.replacing_directory(final_dir) as staging:  # the model and its preprocessor together
        model.save_pretrained(staging)
        if job.preprocessor is not None:
            job.preprocessor.save_pretrained(staging)
    # Only now: a run killed before this point resumes from the backup (at its end) instead of starting afresh.
    backup.remove()
    return {"steps": int(model.optimizer.iterations.numpy()), "planned_steps": total_steps,
            "history": {k: [float(x) for x in v] for k, v in history.history.items()},
            "final_dir": final_dir, "model": model, "config": config}


def finish(job, summary, evaluate_after=True, export_after=None):
    """Evaluate the best (or final) model on the test split and export it, in float32 and outside any strategy."""
    best_dir = os.path.join(job.output_dir, "best")
    use_best = job.recipe["export"]["use_best"] and os.path.isfile(os.path.join(best_dir, "config.json"))
    source = best_dir if use_best else summary["final_dir"]
    summary["evaluated_from"] = source
    model = None
    if evaluate_after or (job.recipe["export"]["enabled"] if export_after is None else export_after):
        model = job.family.head_class(job.task).from_pretrained(source)
    if evaluate_after:
        split = "test" if job.recipe["data"]["test"] else "validation" if job.recipe["data"]["validation"] else None
        if split is not None:
            results = evaluation.evaluate(model, job.dataset(split, model.config), job.task, job.eval_batch_size,
                                          job.tokenizer, job.label_names)
            summary["metrics"] = {f"{split}_{k}": v for k, v in results.items()}
            with open(os.path.join(job.output_dir, "metrics.json"), "w", encoding="utf-8") as f:
                json.dump(summary["metrics"], f, indent=2)
            print(f"{split}: " + ", ".join(f"{k} {v:.4f}" for k, v in results.items()), flush=True)
    if job.recipe["export"]["enabled"] if export_after is None else export_after:
        summary["export_dir"] = export(job, model)
        if job.recipe["export"]["smoke_test"]:
            summary["smoke_test"] = smoke_test(job, summary["export_dir"])
    summary.pop("model", None)
    return summary


def export(job, model, path=None, text_signatures=True):
    """Export for TF Serving (exporting.export_job_model); text_signatures=False: numeric signatures only."""
    path = path or job.path(job.recipe["export"]["path"]) or os.path.join(job.output_dir, "export", "1")
    max_length = job.recipe["export"]["max_length"] or (None if job.is_image else job.max_length(model.config))
    signatures = exporting.export_job_model(
        model, path, job.task, job.family, job.label_names, job.tokenizer, max_length,
        job.image_settings() if job.is_image else None, text_signatures=text_signatures)
    print(f"exported {path} ({', '.join(signatures)})", flush=True)
    return path


def smoke_test(job, export_dir, limit=5):
    """Reload the SavedModel in a fresh process (`tfmodels predict`) and print its predictions."""
    split = next((s for s in ("test", "validation", "train") if job.recipe["data"][s]), None)
    command = [sys.executable, "-m", "tfmodels", "predict", export_dir, "--limit", str(limit)]
    examples = job.recipe["predict"]["examples"]
    if examples:
        for example in examples:
            command += ["--text", example]
    else:
        command += ["--input", job.path(job.recipe["data"][split])]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), env.get("PYTHONPATH")] if p)
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    print(f"fresh-process prediction with the SavedModel ({' '.join(command[1:4])} ...):")
    print(result.stdout.rstrip())
    if result.returncode != 0:
        raise RuntimeError(f"the exported model failed in a fresh process:\n{result.stderr[-3000:]}")
    return result.stdout


# ---------------------------------------------------------------------------------------------------------------
# Evaluate / export from a checkpoint


def evaluate_checkpoint(recipe, checkpoint, split="test"):
    job = Job(recipe)
    model = job.family.head_class(job.task).from_pretrained(checkpoint)
    dataset = job.dataset(split, model.config)
    if dataset is None:
        raise ValueError(f"the recipe has no data.{split}")
    if job.tokenizer is not None and has_tokenizer_files(type(job.tokenizer), checkpoint):
        job._tokenizer = type(job.tokenizer).from_pretrained(checkpoint)
    return evaluation.evaluate(model, dataset, job.task, job.eval_batch_size, job.tokenizer, job.label_names)


def export_checkpoint(recipe, checkpoint, path, text_signatures=True):
    job = Job(recipe)
    model = job.family.head_class(job.task).from_pretrained(checkpoint)
    if job.tokenizer is not None and has_tokenizer_files(type(job.tokenizer), checkpoint):
        job._tokenizer = type(job.tokenizer).from_pretrained(checkpoint)
    return export(job, model, path, text_signatures=text_signatures)
