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
from tfmodels.training.data import label_index
from tfmodels.training.exporting import METADATA_DIR, read_metadata
from tfmodels.training.job import tokenizer_class
from tfmodels.training.tasks import get_task


def examples_from(task, texts=None, text_pairs=None, input_path=None, images=None, limit=None):
    """Rows to predict on: from --text/--text-pair, an input file, or image files."""
    if images:
        rows = [{"image": path} for path in images]
    elif texts:
        pairs = text_pairs or [None] * len(texts)
        rows = [get_task(task).example(text, pair) for text, pair in zip(texts, pairs)]
    elif input_path:
        rows = readers.read(input_path)
    else:
        raise ValueError("nothing to predict: give --text, --input or --image")
    return rows[:limit] if limit else rows


def _load_tokenizer(directory, class_name=None):
    if class_name is None:
        config_path = os.path.join(directory, "tokenizer_config.json")
        with open(config_path, encoding="utf-8") as f:
            class_name = json.load(f)["tokenizer_class"]
    return tokenizer_class(class_name).from_pretrained(directory)


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
    """Readable predictions, one dict per row (also printed by the CLI), in the task's format. A classification
    row that has a label gets it as "gold" by name (a data file's label may be an index or the name) and
    "correct": whether the predicted label is that one."""
    results = get_task(runner.task).format_predictions(runner, rows, top_k)
    names = getattr(runner, "label_names", None) or []
    for result in results:
        if result.get("gold") is not None and result.get("label") in names:
            result["gold"] = names[label_index(result["gold"], names)]
            result["correct"] = result["label"] == result["gold"]
    return results


def format_result(result):
    return json.dumps(result, ensure_ascii=False, default=str)
