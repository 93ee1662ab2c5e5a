"""Metrics: streaming Keras metrics for the progress bar (each task's `fit_metrics`), and task evaluators that score full
predictions on a validation / test set with the usual definitions (`Evaluator`):

- sequence / image classification: accuracy, macro F1;
- token classification: token accuracy, entity-level precision / recall / F1 over BIO spans (as seqeval);
- extractive QA: exact match and F1 over normalised answer strings (as the SQuAD v1.1 script);
- multiple choice: accuracy; masked LM: masked-token accuracy and perplexity;
- semantic segmentation: mean IoU and pixel accuracy (label 255 ignored).
"""
import collections
import math
import re
import string

import keras
import numpy as np
import tensorflow as tf

IGNORE_INDEX = -100
SEGMENTATION_IGNORE = 255


# ---------------------------------------------------------------------------------------------------------------
# Streaming metrics (in the graph, shown by the progress bar)


class MaskedAccuracy(keras.metrics.Metric):
    """Accuracy of argmax(logits) over positions whose label is not `ignore_index`."""

    def __init__(self, ignore_index=IGNORE_INDEX, name="accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.ignore_index = ignore_index
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.cast(y_true, tf.int32)
        predicted = tf.argmax(y_pred, axis=-1, output_type=tf.int32)
        valid = tf.not_equal(y_true, self.ignore_index)
        self.correct.assign_add(tf.reduce_sum(tf.cast(valid & tf.equal(predicted, y_true), "float32")))
        self.total.assign_add(tf.reduce_sum(tf.cast(valid, "float32")))

    def result(self):
        return tf.math.divide_no_nan(self.correct, self.total)


class MacroF1(keras.metrics.Metric):
    """Macro-averaged F1 of argmax(logits) from a streaming confusion matrix."""

    def __init__(self, num_classes, name="f1", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.matrix = self.add_variable(shape=(self.num_classes, self.num_classes), initializer="zeros",
                                        name="confusion")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.reshape(tf.cast(y_true, tf.int32), [-1])
        predicted = tf.reshape(tf.argmax(y_pred, axis=-1, output_type=tf.int32), [-1])
        self.matrix.assign_add(tf.math.confusion_matrix(y_true, predicted, self.num_classes, dtype="float32"))

    def result(self):
        tp = tf.linalg.diag_part(self.matrix)
        precision = tf.math.divide_no_nan(tp, tf.reduce_sum(self.matrix, axis=0))
        recall = tf.math.divide_no_nan(tp, tf.reduce_sum(self.matrix, axis=1))
        f1 = tf.math.divide_no_nan(2 * precision * recall, precision + recall)
        present = tf.cast((tf.reduce_sum(self.matrix, axis=0) + tf.reduce_sum(self.matrix, axis=1)) > 0, "float32")
        return tf.math.divide_no_nan(tf.reduce_sum(f1 * present), tf.reduce_sum(present))


def resize_segmentation_logits(logits, height, width, channels_first=True):
    """[batch, classes, h, w] (or channels-last) logits -> [batch, height, width, classes], bilinear."""
    if channels_first:
        logits = tf.transpose(logits, [0, 2, 3, 1])
    return tf.image.resize(tf.cast(logits, tf.float32), [height, width], method="bilinear")


class SegmentationMeanIoU(keras.metrics.Metric):
    """Mean IoU over classes present in labels or predictions; logits are upsampled to the label size and
    pixels labelled `ignore_index` are skipped."""

    def __init__(self, num_classes, ignore_index=SEGMENTATION_IGNORE, channels_first=True, name="mean_iou",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.channels_first = channels_first
        self.matrix = self.add_variable(shape=(self.num_classes, self.num_classes), initializer="zeros",
                                        name="confusion")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.cast(y_true, tf.int32)
        shape = tf.shape(y_true)
        logits = resize_segmentation_logits(y_pred, shape[1], shape[2], self.channels_first)
        predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
        valid = tf.not_equal(y_true, self.ignore_index)
        self.matrix.assign_add(tf.math.confusion_matrix(tf.boolean_mask(y_true, valid),
                                                        tf.boolean_mask(predicted, valid), self.num_classes,
                                                        dtype="float32"))

    def result(self):
        return mean_iou_from_confusion(self.matrix)


def mean_iou_from_confusion(matrix):
    tp = tf.linalg.diag_part(matrix)
    union = tf.reduce_sum(matrix, axis=0) + tf.reduce_sum(matrix, axis=1) - tp
    present = tf.cast(union > 0, "float32")
    return tf.math.divide_no_nan(tf.reduce_sum(tf.math.divide_no_nan(tp, union) * present), tf.reduce_sum(present))


# ---------------------------------------------------------------------------------------------------------------
# Evaluators (full predictions, numpy / Python)


def accuracy_and_macro_f1(labels, predictions, num_classes):
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    tp = np.diag(matrix).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(matrix.sum(0) > 0, tp / np.maximum(matrix.sum(0), 1), 0.0)
        recall = np.where(matrix.sum(1) > 0, tp / np.maximum(matrix.sum(1), 1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    present = (matrix.sum(0) + matrix.sum(1)) > 0
    return {"accuracy": float((labels == predictions).mean()) if len(labels) else 0.0,
            "f1": float(f1[present].mean()) if present.any() else 0.0}


def bio_spans(tags):
    """(type, start, end) entity spans of a BIO / IOB2 tag sequence (an I- without B- opens a span, as seqeval)."""
    spans, current = [], None
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, kind = tag.partition("-") if tag != "O" else ("O", "", "")
        if current is not None and (prefix in ("O", "B") or kind != current[0]):
            spans.append((current[0], current[1], i - 1))
            current = None
        if prefix == "B" or (prefix == "I" and current is None):
            current = (kind, i)
    return spans


def entity_scores(gold_sequences, predicted_sequences):
    gold = {(n, s) for n, tags in enumerate(gold_sequences) for s in bio_spans(tags)}
    predicted = {(n, s) for n, tags in enumerate(predicted_sequences) for s in bio_spans(tags)}
    tp = len(gold & predicted)
    precision = tp / len(predicted) if predicted else 0.0
    recall = tp / len(gold) if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def normalize_answer(text):
    """SQuAD v1.1 normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(c for c in text.lower() if c not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def squad_f1(prediction, truth):
    pred_tokens, truth_tokens = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = collections.Counter(pred_tokens) & collections.Counter(truth_tokens)
    same = sum(common.values())
    if same == 0:
        return float(pred_tokens == truth_tokens)
    precision, recall = same / len(pred_tokens), same / len(truth_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions, answers):
    """predictions: [str]; answers: [[str, ...]] (any gold answer counts, as SQuAD)."""
    em = f1 = 0.0
    for prediction, golds in zip(predictions, answers):
        golds = golds or [""]
        em += max(float(normalize_answer(prediction) == normalize_answer(g)) for g in golds)
        f1 += max(squad_f1(prediction, g) for g in golds)
    n = max(len(predictions), 1)
    return {"exact_match": 100.0 * em / n, "f1": 100.0 * f1 / n}


def best_span(start_logits, end_logits, first, last, max_answer_length=30):
    """The (start, end) with start <= end < start + max_answer_length inside [first, last] maximising
    start_logit + end_logit."""
    if last < first:
        return first, first
    start = np.asarray(start_logits[first:last + 1], np.float64)
    end = np.asarray(end_logits[first:last + 1], np.float64)
    scores = start[:, None] + end[None, :]
    n = len(start)
    valid = np.triu(np.ones((n, n), bool)) & ~np.triu(np.ones((n, n), bool), k=max_answer_length)
    scores = np.where(valid, scores, -np.inf)
    s, e = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return first + int(s), first + int(e)


def mean_iou(labels, predictions, num_classes, ignore_index=SEGMENTATION_IGNORE):
    labels, predictions = np.asarray(labels).reshape(-1), np.asarray(predictions).reshape(-1)
    keep = labels != ignore_index
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (labels[keep], predictions[keep]), 1)
    tp = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - tp
    present = union > 0
    iou = float((tp[present] / union[present]).mean()) if present.any() else 0.0
    return {"mean_iou": iou, "pixel_accuracy": float(tp.sum() / max(keep.sum(), 1))}


def perplexity(mean_loss):
    return float(math.exp(min(mean_loss, 50.0)))
