"""The fresh-process half of test_keras_saving.py: `python -m tests.keras_native.keras_saving_driver DIR...`.

One process serves every family (a process start and the TF import cost several seconds each). For each DIR it
reads DIR/manifest.json (written by the test), loads every listed `.keras` file with `keras.models.load_model`
(safe_mode on, nothing passed but the file), runs it on the entry's inputs and writes what it got to
DIR/loaded_<n>.npz (every output array, every optimizer variable) and DIR/report.json (per entry: the class, the
variable dtype and the results of the entry's extra checks: further training, save_pretrained, export). The test
compares them with what the saving process computed. A DIR whose loading fails gets DIR/error.txt (the
traceback) instead of a report, and the process goes on with the next DIR, so that only that family's test fails.
"""
import json
import os
import sys
import traceback

import numpy as np


def _array(value):
    # bfloat16 is widened to float32 (exactly) because .npz files cannot hold it.
    array = np.asarray(value)
    return array.astype(np.float32) if array.dtype.name == "bfloat16" else array


def flat_outputs(result):
    """{name: array} of a model output: the fields of a ModelOutput (tuples as name.i), or a single tensor."""
    if not isinstance(result, dict):
        return {"output": _array(result)}
    arrays = {}
    for name, value in result.items():
        if isinstance(value, (tuple, list)):
            arrays.update({f"{name}.{i}": _array(item) for i, item in enumerate(value) if item is not None})
        elif value is not None:
            arrays[name] = _array(value)
    return arrays


def optimizer_arrays(model):
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return {}
    return {f"optimizer.{i}": _array(v) for i, v in enumerate(optimizer.variables)}


def _train_further(model, labelled):
    before = [np.asarray(v) for v in model.trainable_variables]
    history = model.fit(labelled, batch_size=len(next(iter(labelled.values()))), epochs=1, steps_per_epoch=1,
                        verbose=0)
    changed = sum(not np.array_equal(b, np.asarray(v)) for b, v in zip(before, model.trainable_variables))
    return {"loss": float(history.history["loss"][0]), "changed": changed, "trainable": len(before)}


def _save_pretrained(model, inputs, directory):
    model.save_pretrained(directory)
    restored = type(model).from_pretrained(directory)
    expected, got = flat_outputs(model(inputs, training=False)), flat_outputs(restored(inputs, training=False))
    return {"equal": sorted(expected) == sorted(got) and all(np.array_equal(expected[k], got[k]) for k in expected)}


def _export(model, inputs, directory):
    import tensorflow as tf
    model.export(directory)
    served = tf.saved_model.load(directory).signatures["serving_default"](
        **{name: tf.constant(inputs[name]) for name in model.serving_input_names})
    keras_outputs = flat_outputs(model(inputs, training=False))
    return {"max_diff": max(float(np.max(np.abs(np.asarray(served[name]) - keras_outputs[name])))
                            for name in served)}


def load_directory(directory):
    import keras

    with open(os.path.join(directory, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    report = []
    for index, entry in enumerate(manifest):
        model = keras.models.load_model(os.path.join(directory, entry["file"]))
        inputs = dict(np.load(os.path.join(directory, entry["inputs"])))
        arrays = {**flat_outputs(model(inputs, training=False)), **optimizer_arrays(model)}
        np.savez(os.path.join(directory, f"loaded_{index}.npz"), **arrays)
        result = {"class": type(model).__name__, "dtype": str(model.weights[0].dtype)}
        checks = entry.get("checks", [])
        if "export" in checks:
            result["export"] = _export(model, inputs, os.path.join(directory, f"export_{index}"))
        if "save_pretrained" in checks:
            result["save_pretrained"] = _save_pretrained(model, inputs, os.path.join(directory, f"pretrained_{index}"))
        if "train" in checks:
            labelled = dict(np.load(os.path.join(directory, entry["labelled"])))
            result["train"] = _train_further(model, labelled)
        report.append(result)
    with open(os.path.join(directory, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f)


def main(directories):
    import tfmodels  # noqa: F401  (imports every family, which registers its classes)

    for directory in directories:
        try:
            load_directory(directory)
        except Exception:  # reported to that directory's test, which fails with it
            with open(os.path.join(directory, "error.txt"), "w", encoding="utf-8") as f:
                f.write(traceback.format_exc())


if __name__ == "__main__":
    main(sys.argv[1:])
