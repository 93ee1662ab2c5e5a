"""Full-set evaluation: run the model over a split, then score the predictions with the task's usual metrics
(tfmodels.training.metrics). Used after training, by `tfmodels evaluate`, and every epoch on the validation set
(EvaluationCallback), whose `val_*` values drive the best-model export."""
import numpy as np
import tensorflow as tf

from tfmodels.training import metrics as m
from tfmodels.training.data import IGNORE_INDEX

LABEL_FEATURES = {"question-answering": ("start_positions", "end_positions")}


def _forward_fn(model, task, element_spec):
    @tf.function(input_signature=[element_spec])
    def forward(batch):
        outputs = model(batch, training=False)
        result = {}
        if outputs.get("loss") is not None:
            result["loss"] = tf.cast(outputs["loss"], tf.float32)
        if task == "question-answering":
            result["start_logits"] = tf.cast(outputs["start_logits"], tf.float32)
            result["end_logits"] = tf.cast(outputs["end_logits"], tf.float32)
        elif task in ("token-classification", "masked-lm"):
            result["predictions"] = tf.argmax(outputs["logits"], axis=-1, output_type=tf.int32)
        elif task == "semantic-segmentation":
            labels = batch["labels"]
            logits = m.resize_segmentation_logits(outputs["logits"], tf.shape(labels)[1], tf.shape(labels)[2],
                                                  channels_first=getattr(model, "_tfm_channels_first", True))
            result["predictions"] = tf.argmax(logits, axis=-1, output_type=tf.int32)
        else:
            result["logits"] = tf.cast(outputs["logits"], tf.float32)
        return result
    return forward


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
    """{metric: value} for the whole split (loss included when the split has labels)."""
    outputs, batches = predict_split(model, dataset, task, batch_size)
    results = {}
    loss = _mean_loss(outputs, batches)
    if loss is not None:
        results["loss"] = loss
    if task in ("sequence-classification", "image-classification", "multiple-choice"):
        if "labels" not in batches[0]:
            return results
        logits = np.concatenate([o["logits"] for o in outputs])
        labels = np.concatenate([b["labels"] for b in batches])
        scores = m.accuracy_and_macro_f1(labels, logits.argmax(-1), logits.shape[-1])
        results.update(scores if task != "multiple-choice" else {"accuracy": scores["accuracy"]})
    elif task == "token-classification":
        gold_tags, predicted_tags, correct, total = [], [], 0, 0
        word_ids = dataset.auxiliary["word_ids"]
        n = 0
        for o, b in zip(outputs, batches):
            for row in range(len(o["predictions"])):
                ids = word_ids[n]
                width = o["predictions"].shape[1]
                offset = width - len(ids) if tokenizer is not None and tokenizer.padding_side == "left" else 0
                labels = b["labels"][row][offset:offset + len(ids)]
                predicted = o["predictions"][row][offset:offset + len(ids)]
                valid = labels != IGNORE_INDEX
                correct += int((predicted[valid] == labels[valid]).sum())
                total += int(valid.sum())
                first = [i for i, w in enumerate(ids) if w >= 0]
                gold_tags.append([label_names[labels[i]] for i in first])
                predicted_tags.append([label_names[predicted[i]] for i in first])
                n += 1
        results["accuracy"] = correct / max(total, 1)
        results.update(m.entity_scores(gold_tags, predicted_tags))
    elif task == "question-answering":
        texts, answers = [], []
        n = 0
        for o, b in zip(outputs, batches):
            for row in range(len(o["start_logits"])):
                ids = b["input_ids"][row]
                first = dataset.auxiliary["context_start"][n]
                length = dataset.auxiliary["context_length"][n]
                if tokenizer is not None and tokenizer.padding_side == "left":
                    first += int((b["attention_mask"][row] == 0).sum())
                start, end = m.best_span(o["start_logits"][row], o["end_logits"][row], first, first + length - 1,
                                         max_answer_length)
                texts.append(tokenizer.decode(ids[start:end + 1], skip_special_tokens=True).strip())
                answers.append([a["text"] for a in dataset.rows[n].get("answers", [])])
                n += 1
        results.update(m.squad_scores(texts, answers))
    elif task == "masked-lm":
        correct = total = 0
        for o, b in zip(outputs, batches):
            valid = b["labels"] != IGNORE_INDEX
            correct += int((o["predictions"][valid] == b["labels"][valid]).sum())
            total += int(valid.sum())
        results["accuracy"] = correct / max(total, 1)
        if loss is not None:
            results["perplexity"] = m.perplexity(loss)
    elif task == "semantic-segmentation":
        labels = np.concatenate([b["labels"].reshape(-1) for b in batches])
        predicted = np.concatenate([o["predictions"].reshape(-1) for o in outputs])
        results.update(m.mean_iou(labels, predicted, len(label_names)))
    return results
