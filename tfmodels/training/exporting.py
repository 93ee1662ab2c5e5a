"""Export for TF Serving from a training job: the shared exporter (tfmodels.core.export) writes the SavedModel of
the task head; this module adds what serving a trained job needs beside it:

- `assets.extra/tfmodels.json`: task, family, label names, signature names, max length (read by `predict`);
- `assets.extra/tokenizer/`: the tokenizer files, so `predict` can show tokens and answer strings;
- for image heads, a `serving_image` signature taking encoded images (PNG / JPEG bytes, [batch] strings) and
  preprocessing them in the graph exactly as the training pipeline did (decode, resize, rescale, normalise).

Exports go to numbered version folders (`export/1`), the layout TF Serving's model server expects.
"""
import json
import os

import tensorflow as tf

from tfmodels.training.data import preprocess_image_bytes

METADATA_DIR = "assets.extra"
METADATA_FILE = "tfmodels.json"


def text_signature_supported(model):
    """A raw-text signature needs [batch, length] input_ids (not multiple choice's [batch, choices, length])."""
    return (model.main_input_name == "input_ids" and "input_ids" in model.all_input_names
            and model.serving_input_spec("input_ids").shape.rank == 2)


def export_job_model(model, path, task, family, label_names=None, tokenizer=None, max_length=None,
                     image_settings=None):
    """Export `model` (a float32 model outside any distribution strategy) to `path`; returns the signatures."""
    use_tokenizer = tokenizer if (tokenizer is not None and text_signature_supported(model)
                                  and family.modality == "text") else None
    signatures = list(model.export(path, tokenizer=use_tokenizer, max_length=max_length))
    if image_settings is not None:
        signatures.append(add_image_signature(path, image_settings, model.main_input_name))
    extra = os.path.join(path, METADATA_DIR)
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


def add_image_signature(path, settings, input_name="pixel_values", name="serving_image"):
    """Re-save the SavedModel at `path` with one more signature: encoded images -> the serving_default outputs.
    The existing signatures are kept unchanged."""
    loaded = tf.saved_model.load(path)
    default = loaded.signatures["serving_default"]
    input_names = list(default.structured_input_signature[1])
    if input_name not in input_names:
        raise ValueError(f"serving_default of {path} takes {input_names}, not {input_name!r}")
    float_dtype = default.structured_input_signature[1][input_name].dtype

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")], autograph=False)
    def serve_image(image_bytes):
        pixels = tf.map_fn(lambda b: preprocess_image_bytes(b, settings), image_bytes,
                           fn_output_signature=tf.TensorSpec(None, tf.float32))
        return default(**{input_name: tf.cast(pixels, float_dtype)})

    root = tf.Module()
    root.loaded = loaded
    root.serve_image = serve_image
    signatures = dict(loaded.signatures)
    signatures[name] = serve_image.get_concrete_function()
    staging = path.rstrip("/") + ".staging"
    tf.saved_model.save(root, staging, signatures=signatures)
    _replace_dir(staging, path)
    return name


def _replace_dir(source, target):
    import shutil
    keep = os.path.join(target, METADATA_DIR)
    if os.path.isdir(keep):
        shutil.copytree(keep, os.path.join(source, METADATA_DIR), dirs_exist_ok=True)
    shutil.rmtree(target)
    os.replace(source, target)
