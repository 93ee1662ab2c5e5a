"""`tfmodels predict`: run an exported SavedModel (as TF Serving would: through its signatures) or a checkpoint
directory (save_pretrained output) on texts, data files or images, and print readable results: label names
with probabilities, tags per word, answer spans, filled-in masks, segmentation class shares.

SavedModel mode needs TensorFlow (+ TF Text for raw-text signatures) and the tokenizer files the export keeps in
assets.extra/; it does not build a tfmodels model.
"""
import json
import os

import numpy as np
import tensorflow as tf

from tfmodels.training import readers
from tfmodels.training.data import _ids, _offset_of
from tfmodels.training.exporting import METADATA_DIR, read_metadata
from tfmodels.training.metrics import best_span

SPIECE = "\u2581"


def _softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def examples_from(task, texts=None, text_pairs=None, input_path=None, images=None, limit=None):
    """Rows to predict on: from --text/--text-pair, an input file, or image files."""
    if images:
        rows = [{"image": path} for path in images]
    elif texts:
        pairs = text_pairs or [None] * len(texts)
        rows = []
        for text, pair in zip(texts, pairs):
            if task == "question-answering":
                rows.append({"question": text, "context": pair or ""})
            elif task == "multiple-choice":
                parts = text.split("|")
                rows.append({"context": parts[0], "choices": [p.strip() for p in parts[1:]]})
            elif task == "token-classification":
                rows.append({"words": text.split()})
            else:
                rows.append({"text": text, **({"text_pair": pair} if pair else {})})
    elif input_path:
        rows = readers.read(input_path)
    else:
        raise ValueError("nothing to predict: give --text, --input or --image")
    return rows[:limit] if limit else rows


def _load_tokenizer(directory, class_name=None):
    from tfmodels.training.runner import _tokenizer_class
    if class_name is None:
        config_path = os.path.join(directory, "tokenizer_config.json")
        with open(config_path, encoding="utf-8") as f:
            class_name = json.load(f)["tokenizer_class"]
    return _tokenizer_class(class_name).from_pretrained(directory)


class SavedModelRunner:
    """Calls the signatures of an exported SavedModel."""

    def __init__(self, path):
        self.metadata = read_metadata(path)
        if not self.metadata:
            raise ValueError(f"{path} has no {METADATA_DIR}/tfmodels.json: export it with `tfmodels export`")
        signatures_needed = set(self.metadata.get("signatures", []))
        if any(s.startswith("serving_text") for s in signatures_needed):
            import tensorflow_text  # noqa: F401  (registers the tokenizer ops of the text signature)
        self.loaded = tf.saved_model.load(path)
        self.task = self.metadata["task"]
        self.label_names = self.metadata.get("label_names")
        tokenizer_dir = os.path.join(path, METADATA_DIR, "tokenizer")
        self.tokenizer = _load_tokenizer(tokenizer_dir, self.metadata.get("tokenizer_class")) \
            if os.path.isdir(tokenizer_dir) else None

    def text(self, texts, pairs=None):
        if pairs is not None:
            fn = self.loaded.signatures["serving_text_pair"]
            out = fn(text=tf.constant(texts), text_pair=tf.constant(pairs))
        else:
            out = self.loaded.signatures["serving_text"](text=tf.constant(texts))
        return {k: v.numpy() for k, v in out.items()}

    def ids(self, inputs):
        fn = self.loaded.signatures["serving_default"]
        names = list(fn.structured_input_signature[1])
        out = fn(**{n: tf.constant(inputs[n], tf.int32) for n in names})
        return {k: v.numpy() for k, v in out.items()}

    def images(self, paths):
        encoded = [tf.io.read_file(p) for p in paths]
        out = self.loaded.signatures["serving_image"](image_bytes=tf.stack(encoded))
        return {k: v.numpy() for k, v in out.items()}


class CheckpointRunner:
    """Builds the model from a save_pretrained directory and calls it in Python."""

    def __init__(self, path, task=None):
        from tfmodels.registry import TASKS, families
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
        architecture = (config.get("architectures") or [None])[0]
        family = next((s for s in families().values() if s.name == config.get("model_type")), None)
        if family is None:
            raise ValueError(f"{path}: model_type {config.get('model_type')!r} is not a known family")
        if task is None:
            task = next((t for t in family.tasks() if family.head_class_name(t) == architecture), None)
        if task is None:
            raise ValueError(f"{path}: cannot tell the task of {architecture}; pass --task ({', '.join(TASKS)})")
        self.task = task
        self.model = family.head_class(task).from_pretrained(path)
        self.label_names = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self.tokenizer = None
        if family.tokenizer or os.path.isfile(os.path.join(path, "tokenizer_config.json")):
            self.tokenizer = _load_tokenizer(path) if os.path.isfile(os.path.join(path, "tokenizer_config.json")) \
                else family.default_tokenizer()
        self.metadata = {"image_settings": None}
        if family.modality == "image":
            from tfmodels.training.data import PipelineImageProcessor, image_settings
            if os.path.isfile(os.path.join(path, PipelineImageProcessor.file_name)):  # saved by `tfmodels train`
                self.metadata["image_settings"] = PipelineImageProcessor.from_pretrained(path).settings
            else:
                size = getattr(self.model.config, "image_size", None)
                self.metadata["image_settings"] = image_settings(overrides={"image_size": size})

    def text(self, texts, pairs=None):
        encoded = self.tokenizer(texts, pairs, padding=True, return_tensors="np")
        inputs = {k: v for k, v in encoded.items() if k in self.model.all_input_names}
        out = self.model(inputs, training=False)
        result = {k: np.asarray(v) for k, v in out.items() if k in self.model.serving_output_names}
        result.update(encoded)
        return result

    def ids(self, inputs):
        out = self.model({k: v for k, v in inputs.items() if k in self.model.all_input_names}, training=False)
        return {k: np.asarray(v) for k, v in out.items() if k in self.model.serving_output_names}

    def images(self, paths):
        from tfmodels.training.data import preprocess_image_bytes
        settings = self.metadata["image_settings"]
        pixels = tf.stack([preprocess_image_bytes(tf.io.read_file(p), settings) for p in paths])
        out = self.model({"pixel_values": pixels}, training=False)
        return {k: np.asarray(v) for k, v in out.items() if k in self.model.serving_output_names}


def load_runner(path, task=None):
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return SavedModelRunner(path)
    if os.path.isfile(os.path.join(path, "config.json")):
        return CheckpointRunner(path, task)
    raise ValueError(f"{path} is neither a SavedModel nor a checkpoint directory with config.json")


def predict(runner, rows, top_k=1):
    """Readable predictions, one dict per row (also printed by the CLI)."""
    task, tokenizer, names = runner.task, runner.tokenizer, runner.label_names
    results = []
    if task in ("sequence-classification",):
        texts = [r["text"] for r in rows]
        pairs = [r["text_pair"] for r in rows] if all("text_pair" in r for r in rows) else None
        out = runner.text(texts, pairs)
        probs = _softmax(out["logits"])
        for row, p in zip(rows, probs):
            order = np.argsort(-p)[:top_k]
            results.append({"input": row["text"], "label": names[order[0]], "score": float(p[order[0]]),
                            "top": [(names[i], float(p[i])) for i in order], "gold": row.get("label")})
    elif task == "token-classification":
        texts = [r.get("text") or " ".join(r["words"]) for r in rows]
        out = runner.text(texts)
        predicted = out["logits"].argmax(-1)
        for n, text in enumerate(texts):
            mask = out["attention_mask"][n]
            special = set(tokenizer.all_special_ids)
            pairs = [(tokenizer.convert_ids_to_tokens(int(i)), names[int(t)])
                     for i, t, m in zip(out["input_ids"][n], predicted[n], mask) if m and int(i) not in special]
            results.append({"input": text, "tags": _merge_word_tags(pairs)})
    elif task == "question-answering":
        questions, contexts = [r["question"] for r in rows], [r["context"] for r in rows]
        out = runner.text(questions, contexts)
        for n, (question, context) in enumerate(zip(questions, contexts)):
            q_len = len(_ids(tokenizer, question))
            c_len = len(_ids(tokenizer, context))
            first = _offset_of(tokenizer, "B", q_len, c_len)
            if tokenizer.padding_side == "left":
                first += int((out["attention_mask"][n] == 0).sum())
            limit = min(first + c_len - 1, len(out["input_ids"][n]) - 1)
            start, end = best_span(out["start_logits"][n], out["end_logits"][n], first, limit)
            answer = tokenizer.decode(out["input_ids"][n][start:end + 1], skip_special_tokens=True).strip()
            gold = [a["text"] for a in rows[n].get("answers", [])]
            results.append({"question": question, "answer": answer, "span": [int(start), int(end)],
                            "score": float(out["start_logits"][n][start] + out["end_logits"][n][end]),
                            "gold": gold or None})
    elif task == "multiple-choice":
        from tfmodels.training.data import MultipleChoiceData
        processor = MultipleChoiceData(tokenizer, max_length=512)
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
        out = runner.ids(inputs)
        probs = _softmax(out["logits"])
        for row, p in zip(rows, probs):
            best = int(p.argmax())
            results.append({"context": row.get("context"), "answer": row["choices"][best], "score": float(p[best]),
                            "gold": row["choices"][row["label"]] if "label" in row else None})
    elif task == "masked-lm":
        texts = [r["text"] for r in rows]
        out = runner.text(texts)
        for n, text in enumerate(texts):
            ids = out["input_ids"][n]
            filled = [tokenizer.convert_ids_to_tokens(int(out["logits"][n][i].argmax()))
                      for i in np.flatnonzero(ids == tokenizer.mask_token_id)]
            results.append({"input": text, "masks": filled})
    elif task in ("image-classification", "semantic-segmentation"):
        out = runner.images([r["image"] for r in rows])
        for n, row in enumerate(rows):
            if task == "image-classification":
                p = _softmax(out["logits"][n])
                results.append({"image": row["image"], "label": names[int(p.argmax())], "score": float(p.max()),
                                "gold": row.get("label")})
            else:
                logits = out["logits"][n]
                classes = logits.argmax(0) if logits.shape[0] == len(names) else logits.argmax(-1)
                shares = np.bincount(classes.reshape(-1), minlength=len(names)) / classes.size
                results.append({"image": row["image"],
                                "classes": {names[i]: round(float(s), 3) for i, s in enumerate(shares) if s > 0}})
    else:
        raise ValueError(f"predict does not handle task {task!r}")
    return results


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


def format_result(result):
    return json.dumps(result, ensure_ascii=False, default=str)
