"""Full-set evaluation: run the model over a split, then score the predictions with the task's usual metrics
(tfmodels.training.metrics). Used after training, by `tfmodels evaluate`, and every epoch on the validation set
(EvaluationCallback), whose `val_*` values drive the best-model export."""
import weakref

import tensorflow as tf

from tfmodels.training.tasks import EvalContext, get_task

# model -> {(task name, batch spec): its traced forward function}. Evaluation runs every epoch (EvaluationCallback):
# a function made anew each time was traced anew each time. The functions hold the model only weakly, so an
# entry goes when its model does.
_FORWARDS = weakref.WeakKeyDictionary()


def _forward_fn(model, task_name, element_spec):
    """The model's evaluation step for `task_name` on batches of `element_spec`, traced once and then reused."""
    key = (task_name, tuple(sorted(element_spec.items())))
    forwards = _FORWARDS.setdefault(model, {})
    if key not in forwards:
        model_ref, task = weakref.ref(model), get_task(task_name)

        @tf.function(input_signature=[element_spec])
        def forward(batch):
            model = model_ref()
            outputs = model(batch, training=False)
            result = task.eval_outputs(outputs, batch, model)
            if outputs.get("loss") is not None:
                result["loss"] = tf.cast(outputs["loss"], tf.float32)
            return result
        forwards[key] = forward
    return forwards[key]


def predict_split(model, dataset, task, batch_size):
    """Run the model over every batch (file order). Returns (outputs, labels): lists per batch of numpy arrays."""
    batches_ds = dataset.epoch(batch_size, shuffle=False)
    forward = _forward_fn(model, task, batches_ds.element_spec)
    outputs, batches = [], []
    for batch in batches_ds:
        result = forward(batch)
        outputs.append({k: v.numpy() for k, v in result.items()})
        batches.append({k: v.numpy() for k, v in batch.items() if k != "pixel_values"})
    return outputs, batches


def _mean_loss(outputs, batches):
    losses = [(float(o["loss"]), len(next(iter(b.values())))) for o, b in zip(outputs, batches) if "loss" in o]
    if not losses:
        return None
    return sum(loss * n for loss, n in losses) / max(sum(n for _, n in losses), 1)


def evaluate(model, dataset, task, batch_size, tokenizer=None, label_names=None, max_answer_length=30):
    """{metric: value} for the whole split (loss included when the split has labels); the scores are the
    task's (tfmodels.training.tasks)."""
    outputs, batches = predict_split(model, dataset, task, batch_size)
    loss = _mean_loss(outputs, batches)
    results = {} if loss is None else {"loss": loss}
    context = EvalContext(dataset, tokenizer, label_names, loss, max_answer_length)
    results.update(get_task(task).score(outputs, batches, context))
    return results
