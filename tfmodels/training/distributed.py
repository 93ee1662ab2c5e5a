"""Multi-worker training (MultiWorkerMirroredStrategy from TF_CONFIG) with tfmodels' own distributed train step.

Keras 3 `fit` fails under MultiWorkerMirroredStrategy as shipped (keras-team/keras#20585: a PerReplica value
reaches `_maybe_symbolic_build`, then a reduction on a scalar), so this path does not call `fit`. It keeps what
`fit` gives the single-machine path:

- the same data stream (every worker builds the same deterministic stream of global batches and each replica
  trains on its slice `rows[replica::replicas]`; the last, partial batch of an epoch is dropped so that slices
  are equal and the all-reduced gradient is the gradient of the global batch mean);
- the model's own loss (`compute_loss`, scaled by 1 / replicas, gradients summed across replicas by the
  optimizer's all-reduce), AdamW with the recipe's schedule and clipping;
- a progress bar and the chief's callbacks (validation metrics, best model, CSV and TensorBoard logs);
- checkpoints (model + optimizer) every `checkpoint_every` steps with tf.train.CheckpointManager: the chief
  writes to <output_dir>/checkpoints, the other workers to a scratch folder (every worker must take part in a
  save); a restarted job restores the chief's latest checkpoint and continues at the same step and batch.
"""
import json
import os

import keras
import tensorflow as tf

from tfmodels.core import atomic
from tfmodels.core.logging import logger
from tfmodels.training import callbacks as cb
from tfmodels.training.job import check_training_memory, is_chief, save_recipe, train_stream
from tfmodels.training.optimization import build_optimizer


def _task_index():
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    return f"{task.get('type', 'worker')}-{task.get('index', 0)}"


def _drop_partial(stream, batch_size):
    def full(batch):
        return tf.equal(tf.shape(next(iter(batch.values())))[0], batch_size)
    return stream.filter(full)


def replica_slice(batch):
    """This replica's rows of a global batch: rows replica, replica + replicas, ..."""
    context = tf.distribute.get_replica_context()
    replica = context.replica_id_in_sync_group
    replicas = context.num_replicas_in_sync
    rows = tf.range(tf.cast(replica, tf.int32), tf.shape(next(iter(batch.values())))[0], replicas)
    return {k: tf.gather(v, rows) for k, v in batch.items()}


def make_train_step(model, strategy):
    def step_fn(batch):
        local = replica_slice(batch)
        with tf.GradientTape() as tape:
            outputs = model(local, training=True)
            loss = model.compute_loss(x=local, y=None, y_pred=outputs, training=True)
        gradients = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    @tf.function
    def train_step(batch):
        per_replica = strategy.run(step_fn, args=(batch,))
        # Each replica's loss is its slice mean / replicas: their sum is the global batch mean.
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return train_step


def train_multi_worker(job, strategy, extra_callbacks=()):
    chief = is_chief()
    if chief:
        save_recipe(job)
    with strategy.scope():
        config = job.model_config()
    check_training_memory(config, "multi-worker", strategy.num_replicas_in_sync)
    train_data = job.dataset("train", config)
    validation = job.dataset("validation", config) if chief else None
    batch_size = job.batch_size
    if batch_size % strategy.num_replicas_in_sync:
        raise ValueError(f"data.batch_size ({batch_size}) must be a multiple of the {strategy.num_replicas_in_sync} "
                         "replicas")
    full_batches = max(train_data.num_examples // batch_size, 1)
    training = job.recipe["training"]
    steps_per_epoch = int(training["steps_per_epoch"] or full_batches)
    epochs = int(training["epochs"])
    total_steps = steps_per_epoch * epochs
    data_steps = train_data.steps(batch_size)
    with strategy.scope():
        model = job.build_model(config, job.policy())
        optimizer = build_optimizer(job.recipe["optimizer"], job.recipe["schedule"], total_steps)
        model.compile(optimizer=optimizer)
        optimizer.build(model.trainable_variables)
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    chief_dir = os.path.join(job.output_dir, "checkpoints")
    own_dir = chief_dir if chief else os.path.join(job.output_dir, ".scratch", _task_index(), "checkpoints")
    manager = tf.train.CheckpointManager(checkpoint, own_dir, max_to_keep=2)
    latest = tf.train.latest_checkpoint(chief_dir)
    if latest:
        checkpoint.restore(latest)
        logger.info(f"restored {latest} (step {int(optimizer.iterations.numpy())})")
    step = int(optimizer.iterations.numpy())
    # Batches consumed so far, counted in the full-batch stream (partial batches are dropped below).
    data_epochs = -(-total_steps // full_batches)
    stream = train_stream(job, train_data, 0, data_epochs * data_steps, data_steps)
    stream = _drop_partial(stream, batch_size).skip(step)
    iterator = iter(stream)
    train_step = make_train_step(model, strategy)

    callbacks = list(extra_callbacks)
    if chief:
        if validation is not None:
            monitor, mode = job.monitor()
            callbacks.insert(0, cb.EvaluationCallback(validation, job.task, job.eval_batch_size, job.tokenizer,
                                                      job.label_names))
            callbacks.append(cb.BestModelCheckpoint(os.path.join(job.output_dir, "best"), monitor, mode,
                                                    job.preprocessor))
        callbacks.append(keras.callbacks.CSVLogger(os.path.join(job.output_dir, "history.csv"), append=True))
        callbacks.append(cb.TrainingCurves(os.path.join(job.output_dir, "history.csv"), job.recipe["name"]))
        if training["tensorboard"]:
            callbacks.append(cb.TensorBoardScalars(os.path.join(job.output_dir, "logs")))
    callback_list = keras.callbacks.CallbackList(callbacks, model=model)
    every = int(training["checkpoint_every"])
    logger.info(f"multi-worker training ({_task_index()}, {strategy.num_replicas_in_sync} replicas): {epochs} epochs x "
                f"{steps_per_epoch} steps of global batch {batch_size}, from step {step}")
    callback_list.on_train_begin()
    history = {"loss": []}
    start_epoch = step // steps_per_epoch
    for epoch in range(start_epoch, epochs):
        callback_list.on_epoch_begin(epoch)
        progbar = keras.utils.Progbar(steps_per_epoch, verbose=1 if chief and training["verbose"] != 0 else 0)
        losses = []
        first = step - epoch * steps_per_epoch
        for batch_index in range(first, steps_per_epoch):
            loss = float(train_step(next(iterator)).numpy())
            losses.append(loss)
            step += 1
            progbar.update(batch_index + 1, [("loss", loss)])
            callback_list.on_train_batch_end(batch_index, {"loss": loss})
            if step % every == 0 or step == total_steps:
                manager.save(checkpoint_number=step)
        logs = {"loss": sum(losses) / max(len(losses), 1)}
        callback_list.on_epoch_end(epoch, logs)
        history["loss"].append(logs["loss"])
    callback_list.on_train_end()
    final_dir = os.path.join(job.output_dir, "final")
    if chief:
        model.save_pretrained(final_dir)
        if job.preprocessor is not None:
            job.preprocessor.save_pretrained(final_dir)
    # Whole or gone even if the process is killed midway: a restart then resumes from a complete checkpoint
    # (and finds training done) rather than from a half-deleted one.
    atomic.remove_directory(chief_dir if chief else os.path.join(job.output_dir, ".scratch", _task_index()))
    return {"steps": int(optimizer.iterations.numpy()), "planned_steps": total_steps, "history": history,
            "final_dir": final_dir, "model": model, "config": config}
