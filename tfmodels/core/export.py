"""SavedModel export for TF Serving, one per task head.

Signatures:
- `serving_default`: the model's numeric inputs, with dynamic batch and sizes, as `model.serving_input_spec`
  describes them: int32 ids and masks for text models, float32 `pixel_values` [batch, channels, height, width]
  for image models (named as the model's inputs);
- `serving_int64`: the same with int64 in place of every int32 input (exported when there is one);
- `serving_text` (and `serving_text_pair` for heads that take pairs), when a tokenizer is given: raw strings in,
  tokenised inside the graph by TF Text ops; the model inputs are returned beside the outputs so that clients
  can map token positions back (answer spans, tags);
- `serving_image`, when an image processor is given: encoded images (JPEG, PNG, GIF or BMP bytes, `image_bytes`
  [batch]) in, decoded and preprocessed inside the graph by core TF ops (the processor's `in_graph()`).
Custom ops are traced with their pure-TF twins (op mode "reference"), so the SavedModel needs nothing beyond
stock TensorFlow and TF Text. Weights are variables, never graph constants, so models over 2 GB export too.
"""
import os

import tensorflow as tf

from tfmodels.ops.dispatch import op_mode

SERVING_DEFAULT = "serving_default"


def export_saved_model(model, path, tokenizer=None, max_length=None, input_names=None, output_names=None,
                       text_pairs=None, image_processor=None):
    """Write `model` as a SavedModel at `path` and return the signature names.

    input_names: tensor inputs of the numeric signatures (default: model.serving_input_names it accepts);
    output_names: outputs to serve (default: model.serving_output_names);
    text_pairs: also export `serving_text_pair` (default: for every head except multiple choice);
    image_processor: an image processor with `in_graph()` (e.g. BeitImageProcessor): adds `serving_image`.
    """
    input_names = tuple(input_names or [n for n in model.serving_input_names if n in model.all_input_names])
    output_names = tuple(output_names or model.serving_output_names)
    specs = [model.serving_input_spec(name) for name in input_names]
    if tokenizer is not None and (model.main_input_name != "input_ids" or "input_ids" not in input_names or
                                  specs[input_names.index("input_ids")].shape.rank != 2):
        raise ValueError("A raw-text signature needs a single- or pair-sequence head taking [batch, length] "
                         "input_ids; multiple choice takes [batch, choices, length] ids")
    if image_processor is not None and model.main_input_name != "pixel_values":
        raise ValueError(f"An encoded-image signature needs an image model; {type(model).__name__} takes "
                         f"{model.main_input_name}")
    if not model.built or not model.weights:
        model.build_model()

    def run(inputs):
        with op_mode("reference"):
            result = model(inputs, training=False, return_dict=True)
        return {name: result[name] for name in output_names if name in result}

    # The model is traced once, here; the int64 and text signatures call this function.
    @tf.function(input_signature=specs, autograph=False)
    def serve(*tensors):
        return run(dict(zip(input_names, tensors)))

    root = tf.Module()
    root.model_variables = list(model.variables)
    root.serve = serve
    signatures = {SERVING_DEFAULT: serve.get_concrete_function()}

    if any(spec.dtype == tf.int32 for spec in specs):
        int64_specs = [tf.TensorSpec(s.shape, tf.int64, name=s.name) if s.dtype == tf.int32 else s for s in specs]

        @tf.function(input_signature=int64_specs, autograph=False)
        def serve_int64(*tensors):
            return serve(*[tf.cast(t, tf.int32) if t.dtype == tf.int64 else t for t in tensors])

        root.serve_int64 = serve_int64
        signatures["serving_int64"] = serve_int64.get_concrete_function()

    if tokenizer is not None:
        graph_tokenizer = tokenizer.in_graph(max_length=max_length)
        root.tokenizer = graph_tokenizer

        def text_run(encoded):
            ids = encoded["input_ids"]
            result = dict(serve(*[encoded[name] if name in encoded else tf.zeros_like(ids) for name in input_names]))
            result.update({k: v for k, v in encoded.items() if k not in result})
            return result

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")], autograph=False)
        def serve_text(text):
            return text_run(graph_tokenizer(text))

        root.serve_text = serve_text
        signatures["serving_text"] = serve_text.get_concrete_function()
        if text_pairs is None:
            text_pairs = True
        if text_pairs:
            @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text"),
                                          tf.TensorSpec([None], tf.string, name="text_pair")], autograph=False)
            def serve_text_pair(text, text_pair):
                return text_run(graph_tokenizer(text, text_pair))

            root.serve_text_pair = serve_text_pair
            signatures["serving_text_pair"] = serve_text_pair.get_concrete_function()

    if image_processor is not None:
        main = model.main_input_name
        graph_processor = image_processor.in_graph()
        root.image_processor = graph_processor

        # Traced separately from `serve`: only pixel_values come from the images, other inputs stay unset.
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")], autograph=False)
        def serve_image(image_bytes):
            return run({main: graph_processor(image_bytes)[main]})

        root.serve_image = serve_image
        signatures["serving_image"] = serve_image.get_concrete_function()

    os.makedirs(path, exist_ok=True)
    tf.saved_model.save(root, path, signatures=signatures,
                        options=tf.saved_model.SaveOptions(experimental_custom_gradients=False))
    return sorted(signatures)


# ---------------------------------------------------------------------------------------------------------------
# Inspection: which ops a SavedModel needs (used by the tests, and by `tfmodels export --check`)


def saved_model_op_types(path):
    """Every op type in the graphs of a SavedModel (function calls to its own library excluded)."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    ops, functions = set(), set()
    for meta_graph in saved.meta_graphs:
        library = meta_graph.graph_def.library
        functions.update(f.signature.name for f in library.function)
        ops.update(node.op for node in meta_graph.graph_def.node)
        for function in library.function:
            ops.update(node.op for node in function.node_def)
    return sorted(ops - functions)
