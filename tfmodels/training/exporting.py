"""Export for TF Serving from a training job: the shared exporter (tfmodels.core.export) writes the SavedModel of
the task head; this module adds what serving a trained job needs beside it:

- `assets.extra/tfmodels.json`: task, family, label names, signature names, max length (read by `predict`);
- `assets.extra/tokenizer/`: the tokenizer files, so `predict` can show tokens and answer strings;
- TF Serving warm-up requests (`assets.extra/tf_serving_warmup_requests`, written by the core exporter);
- for image heads, the core exporter's `serving_image` signature (encoded PNG / JPEG bytes, [batch] strings)
  with the training pipeline's preprocessing in the graph (data.PipelineImageProcessor: decode, resize,
  rescale, normalise exactly as the model was trained).

Exports go to numbered version folders (`export/1`), the layout TF Serving's model server expects; a version
folder appears (or is replaced) whole, with its metadata, once complete.
"""
import json
import os

from tfmodels.core import atomic
from tfmodels.training.data import PipelineImageProcessor

METADATA_DIR = "assets.extra"
METADATA_FILE = "tfmodels.json"


def text_signature_supported(model):
    """A raw-text signature needs [batch, length] input_ids (not multiple choice's [batch, choices, length])."""
    return (model.main_input_name == "input_ids" and "input_ids" in model.all_input_names
            and model.serving_input_spec("input_ids").shape.rank == 2)


def export_job_model(model, path, task, family, label_names=None, tokenizer=None, max_length=None,
                     image_settings=None, text_signatures=True):
    """Export `model` (a float32 model outside any distribution strategy) to `path`; returns the signatures.
    text_signatures=False leaves the raw-text signatures out (a SavedModel that needs no TF Text ops); the
    tokenizer files are kept beside it all the same."""
    use_tokenizer = tokenizer if (tokenizer is not None and text_signature_supported(model)
                                  and family.modality == "text") else None
    image_processor = PipelineImageProcessor(image_settings) if image_settings is not None else None
    # The SavedModel and what `predict` needs beside it appear together, once complete (core.atomic).
    with atomic.replacing_directory(path) as staging:
        signatures = list(model.export(staging, tokenizer=use_tokenizer, max_length=max_length,
                                       image_processor=image_processor, text_signatures=text_signatures))
        extra = os.path.join(staging, METADATA_DIR)
        os.makedirs(extra, exist_ok=True)
        metadata = {"task": task, "family": family.name, "model_class": type(model).__name__,
                    "label_names": list(label_names) if label_names else None, "signatures": sorted(signatures),
                    "max_length": max_length, "image_settings": image_settings,
                    "output_names": list(model.serving_output_names)}
        if tokenizer is not None:
            tokenizer.save_pretrained(os.path.join(extra, "tokenizer"))
            metadata["tokenizer_class"] = type(tokenizer).__name__
        with open(os.path.join(extra, METADATA_FILE), "w", encoding="utf-8") as f:
            json.dump(metadata, f, indent=2)
    return sorted(signatures)


def read_metadata(path):
    file_path = os.path.join(path, METADATA_DIR, METADATA_FILE)
    if not os.path.isfile(file_path):
        return {}
    with open(file_path, encoding="utf-8") as f:
        return json.load(f)
