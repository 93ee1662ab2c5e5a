"""Run in a fresh process by tests/helpers.export_and_check. It must never import tfmodels: it stands for a
TF Serving host that has stock TensorFlow and TF Text and nothing of ours.

For each exported SavedModel: every op in its graphs must be registered in stock TensorFlow (TF Text ops count:
TF Serving ships them); then the signatures run on the given inputs (with the dtypes the signatures declare;
encoded image files for serving_image) and the outputs are written back.
"""
import json
import os
import sys

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry


def op_types(path):
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    ops, functions = set(), set()
    for meta_graph in saved.meta_graphs:
        library = meta_graph.graph_def.library
        functions.update(f.signature.name for f in library.function)
        ops.update(n.op for n in meta_graph.graph_def.node)
        for function in library.function:
            ops.update(n.op for n in function.node_def)
    return ops - functions


def main(spec_path):
    with open(spec_path) as f:
        jobs = json.load(f)
    ops_needed = set()
    for job in jobs:
        ops_needed |= op_types(job["path"])
    if any(op_def_registry.get(op) is None for op in ops_needed):
        import tensorflow_text  # noqa: F401  (registers the TF Text ops that TF Serving also links)
    missing = sorted(op for op in ops_needed if op_def_registry.get(op) is None)
    if missing:
        print(f"ops not in stock TensorFlow / TF Text: {missing}", file=sys.stderr)
        return 1
    for job in jobs:
        loaded = tf.saved_model.load(job["path"])
        inputs = dict(np.load(job["inputs"]))
        results = {}
        default = loaded.signatures["serving_default"]
        specs = default.structured_input_signature[1]
        for key, value in default(**{n: tf.constant(inputs[n], s.dtype) for n, s in specs.items()}).items():
            results[f"default/{key}"] = value.numpy()
        if job.get("int64", True):
            int64 = loaded.signatures["serving_int64"]
            specs = int64.structured_input_signature[1]
            for key, value in int64(**{n: tf.constant(inputs[n], s.dtype) for n, s in specs.items()}).items():
                results[f"int64/{key}"] = value.numpy()
        if "images" in job:
            data = []
            for image_path in job["images"]:
                with open(image_path, "rb") as f:
                    data.append(f.read())
            for key, value in loaded.signatures["serving_image"](image_bytes=tf.constant(data)).items():
                results[f"image/{key}"] = value.numpy()
        if "texts" in job:
            text_fn = loaded.signatures["serving_text"]
            for key, value in text_fn(text=tf.constant(job["texts"])).items():
                results[f"text/{key}"] = value.numpy()
        np.savez(job["outputs"], **results)
    assert "tfmodels" not in sys.modules, "the serving check must not import tfmodels"
    print(f"checked {len(jobs)} SavedModels, {len(ops_needed)} op types, all stock")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
