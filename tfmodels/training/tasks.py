"""What each registry task means to the training job: one `TrainingTask` per task name of `registry.TASKS`.

A task says how its labels are found, which data pipeline and Keras metrics it uses, which validation metric
picks the best model, which outputs evaluation keeps and how they are scored, and how `tfmodels predict`
turns a row of text into an example and model outputs into readable results. The job, the evaluator and the
predictor look a task up here (`get_task`) instead of branching on its name.
"""
import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

from tfmodels.registry import TASKS
from tfmodels.training import data as data_lib
from tfmodels.training import metrics as m
from tfmodels.training import readers

SPIECE = "\u2581"


@dataclasses.dataclass
class EvalContext:
    """What scoring a split needs beside the outputs: the dataset (rows and alignments), tokenizer, labels."""
    dataset: object
    tokenizer: object = None
    label_names: list = None
    loss: float = None
    max_answer_length: int = 30


class TrainingTask:
    """The defaults: no labels, no pipeline-specific metrics, the loss as monitor, logits kept by evaluation."""

    name = None
    monitor = ("val_loss", "min")
    data_class = None  # the text pipeline's processor (tfmodels.training.data), None for image tasks
    image_targets = "label"  # image tasks: what a row's target is (data.ImageDataset): "label" or "mask"

    def __init__(self, name=None):
        self.name = name or self.name

    @property
    def modality(self):
        return TASKS[self.name][1]

    @property
    def is_image(self):
        return self.modality == "image"

    def label_names(self, job, given):
        """The class names of this task's labels (None: the task has no classes)."""
        return None

    def config_overrides(self):
        return {}

    def data_kwargs(self, job):
        """Keyword arguments of `data_class` beside the recipe's columns and max_length."""
        return {}

    def fit_metrics(self, num_labels, channels_first):
        """Keras metrics for `compile(metrics=...)`, matched to the outputs the model's compute_metrics passes."""
        return []

    def eval_outputs(self, outputs, batch, model):
        """The outputs evaluation keeps from one batch (inside a tf.function)."""
        return {"logits": tf.cast(outputs["logits"], tf.float32)}

    def score(self, outputs, batches, context):
        """{metric: value} over a split from the kept outputs and the numpy batches."""
        return {}

    def example(self, text, pair=None):
        """A data row from `tfmodels predict --text TEXT [--text-pair PAIR]`."""
        return {"text": text, **({"text_pair": pair} if pair else {})}

    def format_predictions(self, runner, rows, top_k=1):
        raise ValueError(f"predict does not handle task {self.name!r}")


def _given_or(given, find):
    return [str(x) for x in given] if given else find()


class SequenceClassification(TrainingTask):
    name = "sequence-classification"
    monitor = ("val_accuracy", "max")
    data_class = data_lib.SequenceClassificationData

    def label_names(self, job, given):
        return _given_or(given, lambda: self._labels_from_rows(job))

    @staticmethod
    def _labels_from_rows(job):
        column = job.recipe["data"]["columns"].get("label_column", "label")
        rows = job.rows("train") or job.rows("test")
        if rows is None or column not in rows[0]:
            return job.config_labels()
        return data_lib.label_names_from(rows, column)

    def data_kwargs(self, job):
        return {"label_names": job.label_names}

    def fit_metrics(self, num_labels, channels_first):
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy"), m.MacroF1(num_labels, name="f1")]

    def score(self, outputs, batches, context):
        if "labels" not in batches[0]:
            return {}
        logits = np.concatenate([o["logits"] for o in outputs])
        labels = np.concatenate([b["labels"] for b in batches])
        return m.accuracy_and_macro_f1(labels, logits.argmax(-1), logits.shape[-1])

    def format_predictions(self, runner, rows, top_k=1):
        texts = [r["text"] for r in rows]
        pairs = [r["text_pair"] for r in rows] if all("text_pair" in r for r in rows) else None
        probs = softmax(runner.text(texts, pairs)["logits"])
        names = runner.label_names
        results = []
        for row, p in zip(rows, probs):
            order = np.argsort(-p)[:top_k]
            results.append({"input": row["text"], "label": names[order[0]], "score": float(p[order[0]]),
                            "top": [(names[i], float(p[i])) for i in order], "gold": row.get("label")})
        return results


class ImageClassification(SequenceClassification):
    name = "image-classification"
    data_class = None

    def label_names(self, job, given):
        # Class folders: every sub-folder is a class, also when data.limit keeps only the first rows (which come
        # class by class).
        def find():
            for split in ("train", "test"):
                folder = job.path(job.recipe["data"][split])
                if folder and os.path.isdir(folder) and readers.detect_format(folder) == "image_folder":
                    return sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
            return self._labels_from_rows(job)
        return _given_or(given, find)

    def format_predictions(self, runner, rows, top_k=1):
        out = runner.images([r["image"] for r in rows])
        results = []
        for n, row in enumerate(rows):
            p = softmax(out["logits"][n])
            results.append({"image": row["image"], "label": runner.label_names[int(p.argmax())],
                            "score": float(p.max()), "gold": row.get("label")})
        return results


class MultipleChoice(TrainingTask):
    name = "multiple-choice"
    monitor = ("val_accuracy", "max")
    data_class = data_lib.MultipleChoiceData

    def fit_metrics(self, num_labels, channels_first):
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]

    def score(self, outputs, batches, context):
        if "labels" not in batches[0]:
            return {}
        logits = np.concatenate([o["logits"] for o in outputs])
        labels = np.concatenate([b["labels"] for b in batches])
        return {"accuracy": m.accuracy_and_macro_f1(labels, logits.argmax(-1), logits.shape[-1])["accuracy"]}

    def example(self, text, pair=None):
        parts = text.split("|")  # "context | choice | choice ..."
        return {"context": parts[0], "choices": [p.strip() for p in parts[1:]]}

    def format_predictions(self, runner, rows, top_k=1):
        tokenizer = runner.tokenizer
        processor = data_lib.MultipleChoiceData(tokenizer, max_length=512)
        encoded = [processor.encode_row(r) for r in rows]
        length = max(len(e["input_ids"][0]) for e in encoded)
        choices = max(len(e["input_ids"]) for e in encoded)
        inputs = {}
        for key, fill in (("input_ids", tokenizer.pad_token_id), ("attention_mask", 0)):
            array = np.full((len(rows), choices, length), fill, np.int32)
            for n, e in enumerate(encoded):
                for c, values in enumerate(e[key]):
                    array[n, c, :len(values)] = values
            inputs[key] = array
        probs = softmax(runner.ids(inputs)["logits"])
        results = []
        for row, p in zip(rows, probs):
            best = int(p.argmax())
            results.append({"context": row.get("context"), "answer": row["choices"][best], "score": float(p[best]),
                            "gold": row["choices"][row["label"]] if "label" in row else None})
        return results


def _argmax_predictions(outputs):
    return {"predictions": tf.argmax(outputs["logits"], axis=-1, output_type=tf.int32)}


class TokenClassification(TrainingTask):
    name = "token-classification"
    monitor = ("val_f1", "max")
    data_class = data_lib.TokenClassificationData

    def label_names(self, job, given):
        def find():
            processor = data_lib.TokenClassificationData(None, [], **job.recipe["data"]["columns"])
            tags = set()
            for row in job.rows("train") or job.rows("test"):
                tags.update(str(t) for t in processor.words_and_tags(row)[1])
            return sorted(tags, key=lambda t: (t != "O", t.partition("-")[2], t))
        return _given_or(given, find)

    def data_kwargs(self, job):
        return {"label_names": job.label_names}

    def fit_metrics(self, num_labels, channels_first):
        return [m.MaskedAccuracy(name="accuracy")]

    def eval_outputs(self, outputs, batch, model):
        return _argmax_predictions(outputs)

    def score(self, outputs, batches, context):
        names, tokenizer = context.label_names, context.tokenizer
        gold_tags, predicted_tags, correct, total = [], [], 0, 0
        word_ids = context.dataset.auxiliary["word_ids"]
        n = 0
        for o, b in zip(outputs, batches):
            for row in range(len(o["predictions"])):
                ids = word_ids[n]
                width = o["predictions"].shape[1]
                offset = width - len(ids) if tokenizer is not None and tokenizer.padding_side == "left" else 0
                labels = b["labels"][row][offset:offset + len(ids)]
                predicted = o["predictions"][row][offset:offset + len(ids)]
                valid = labels != data_lib.IGNORE_INDEX
                correct += int((predicted[valid] == labels[valid]).sum())
                total += int(valid.sum())
                first = [i for i, w in enumerate(ids) if w >= 0]
                gold_tags.append([names[labels[i]] for i in first])
                predicted_tags.append([names[predicted[i]] for i in first])
                n += 1
        return {"accuracy": correct / max(total, 1), **m.entity_scores(gold_tags, predicted_tags)}

    def example(self, text, pair=None):
        return {"words": text.split()}

    def format_predictions(self, runner, rows, top_k=1):
        tokenizer, names = runner.tokenizer, runner.label_names
        texts = [r.get("text") or " ".join(r["words"]) for r in rows]
        out = runner.text(texts)
        predicted = out["logits"].argmax(-1)
        special = set(tokenizer.all_special_ids)
        results = []
        for n, text in enumerate(texts):
            pairs = [(tokenizer.convert_ids_to_tokens(int(i)), names[int(t)])
                     for i, t, mask in zip(out["input_ids"][n], predicted[n], out["attention_mask"][n])
                     if mask and int(i) not in special]
            results.append({"input": text, "tags": _merge_word_tags(pairs)})
        return results


class QuestionAnswering(TrainingTask):
    name = "question-answering"
    monitor = ("val_f1", "max")
    data_class = data_lib.QuestionAnsweringData

    def config_overrides(self):
        return {"num_labels": 2}

    def fit_metrics(self, num_labels, channels_first):
        return [[keras.metrics.SparseCategoricalAccuracy(name="start_accuracy")],
                [keras.metrics.SparseCategoricalAccuracy(name="end_accuracy")]]

    def eval_outputs(self, outputs, batch, model):
        return {"start_logits": tf.cast(outputs["start_logits"], tf.float32),
                "end_logits": tf.cast(outputs["end_logits"], tf.float32)}

    def score(self, outputs, batches, context):
        dataset, tokenizer = context.dataset, context.tokenizer
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
                                         context.max_answer_length)
                texts.append(tokenizer.decode(ids[start:end + 1], skip_special_tokens=True).strip())
                answers.append([a["text"] for a in dataset.rows[n].get("answers", [])])
                n += 1
        return m.squad_scores(texts, answers)

    def example(self, text, pair=None):
        return {"question": text, "context": pair or ""}

    def format_predictions(self, runner, rows, top_k=1):
        tokenizer = runner.tokenizer
        questions, contexts = [r["question"] for r in rows], [r["context"] for r in rows]
        out = runner.text(questions, contexts)
        results = []
        for n, (question, context) in enumerate(zip(questions, contexts)):
            q_len = len(data_lib.token_ids(tokenizer, question))
            c_len = len(data_lib.token_ids(tokenizer, context))
            first = data_lib.segment_offset(tokenizer, "B", q_len, c_len)
            if tokenizer.padding_side == "left":
                first += int((out["attention_mask"][n] == 0).sum())
            limit = min(first + c_len - 1, len(out["input_ids"][n]) - 1)
            start, end = m.best_span(out["start_logits"][n], out["end_logits"][n], first, limit)
            answer = tokenizer.decode(out["input_ids"][n][start:end + 1], skip_special_tokens=True).strip()
            gold = [a["text"] for a in rows[n].get("answers", [])]
            results.append({"question": question, "answer": answer, "span": [int(start), int(end)],
                            "score": float(out["start_logits"][n][start] + out["end_logits"][n][end]),
                            "gold": gold or None})
        return results


class MaskedLM(TrainingTask):
    name = "masked-lm"
    data_class = data_lib.MaskedLMData

    def data_kwargs(self, job):
        return {"mlm_probability": job.recipe["data"]["mlm_probability"]}

    def fit_metrics(self, num_labels, channels_first):
        return [m.MaskedAccuracy(name="accuracy")]

    def eval_outputs(self, outputs, batch, model):
        return _argmax_predictions(outputs)

    def score(self, outputs, batches, context):
        correct = total = 0
        for o, b in zip(outputs, batches):
            valid = b["labels"] != data_lib.IGNORE_INDEX
            correct += int((o["predictions"][valid] == b["labels"][valid]).sum())
            total += int(valid.sum())
        results = {"accuracy": correct / max(total, 1)}
        if context.loss is not None:
            results["perplexity"] = m.perplexity(context.loss)
        return results

    def format_predictions(self, runner, rows, top_k=1):
        tokenizer = runner.tokenizer
        texts = [r["text"] for r in rows]
        out = runner.text(texts)
        results = []
        for n, text in enumerate(texts):
            masked = np.flatnonzero(out["input_ids"][n] == tokenizer.mask_token_id)
            filled = [tokenizer.convert_ids_to_tokens(int(out["logits"][n][i].argmax())) for i in masked]
            results.append({"input": text, "masks": filled})
        return results


class SemanticSegmentation(TrainingTask):
    name = "semantic-segmentation"
    monitor = ("val_mean_iou", "max")
    image_targets = "mask"

    def label_names(self, job, given):
        def find():
            for split in ("train", "test"):
                folder = job.path(job.recipe["data"][split])
                labels_file = os.path.join(os.path.dirname(folder.rstrip("/")), "labels.txt") if folder else None
                if labels_file and os.path.isfile(labels_file):
                    with open(labels_file, encoding="utf-8") as f:
                        return [line.strip() for line in f if line.strip()]
            return job.config_labels()
        return _given_or(given, find)

    def fit_metrics(self, num_labels, channels_first):
        return [m.SegmentationMeanIoU(num_labels, channels_first=channels_first, name="mean_iou")]

    def eval_outputs(self, outputs, batch, model):
        labels = batch["labels"]
        logits = m.resize_segmentation_logits(outputs["logits"], tf.shape(labels)[1], tf.shape(labels)[2],
                                              channels_first=getattr(model, "_tfm_channels_first", True))
        return {"predictions": tf.argmax(logits, axis=-1, output_type=tf.int32)}

    def score(self, outputs, batches, context):
        labels = np.concatenate([b["labels"].reshape(-1) for b in batches])
        predicted = np.concatenate([o["predictions"].reshape(-1) for o in outputs])
        return m.mean_iou(labels, predicted, len(context.label_names))

    def format_predictions(self, runner, rows, top_k=1):
        names = runner.label_names
        out = runner.images([r["image"] for r in rows])
        results = []
        for n, row in enumerate(rows):
            logits = out["logits"][n]
            classes = logits.argmax(0) if logits.shape[0] == len(names) else logits.argmax(-1)
            shares = np.bincount(classes.reshape(-1), minlength=len(names)) / classes.size
            results.append({"image": row["image"],
                            "classes": {names[i]: round(float(s), 3) for i, s in enumerate(shares) if s > 0}})
        return results


_SPECIFIC = {task.name: task for task in (
    SequenceClassification(), ImageClassification(), MultipleChoice(), TokenClassification(),
    QuestionAnswering(), MaskedLM(), SemanticSegmentation())}
# Every registry task has an entry: the ones without their own class (base, causal-lm, masked-image-modeling)
# train on the model's loss with the defaults.
TRAINING_TASKS = {name: _SPECIFIC.get(name) or TrainingTask(name) for name in TASKS}


def get_task(name):
    if name not in TRAINING_TASKS:
        raise ValueError(f"unknown task {name!r}; tasks: {', '.join(TRAINING_TASKS)}")
    return TRAINING_TASKS[name]


# ---------------------------------------------------------------------------------------------------------------
# Helpers of the prediction formats


def softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _merge_word_tags(pairs):
    """[(sub-token, tag)] -> "word/TAG ..." (a word's tag is its first sub-token's)."""
    if not any(t.startswith((SPIECE, "\u0120")) for t, _ in pairs):  # word-level vocabulary
        return " ".join(f"{t}/{tag}" for t, tag in pairs)
    words = []
    for token, tag in pairs:
        if token.startswith(SPIECE) or not words or "\u0120" in token[:1]:
            words.append([token.lstrip(SPIECE).lstrip("\u0120"), tag])
        else:
            words[-1][0] += token
    return " ".join(f"{w}/{t}" for w, t in words if w)
