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
stock TensorFlow and TF Text (the raw-text signatures need TF Text's ops in the loading binary: TF Serving links
them, plain TensorFlow needs `import tensorflow_text`; `text_signatures=False` leaves those signatures out).
Weights are variables, never graph constants, so models over 2 GB export too.

The SavedModel is written for TensorFlow's C++ loader, the one TF Serving uses (see `_served_variables`), and
carries TF Serving warm-up requests, one small request per signature, in
`assets.extra/tf_serving_warmup_requests` (a TFRecord file of PredictionLog protos). The folder appears whole or
not at all, and replaces an existing export only once complete (core.atomic).
"""
import os

import numpy as np
import tensorflow as tf

from tfmodels.core import atomic
from tfmodels.core.checkpoint import backing_variable
from tfmodels.ops.dispatch import op_mode

SERVING_DEFAULT = "serving_default"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
WARMUP_TEXTS = ("How are you today?", "Fine, thank you.")


def export_saved_model(model, path, tokenizer=None, max_length=None, input_names=None, output_names=None,
                       text_pairs=None, image_processor=None, text_signatures=True):
    """Write `model` as a SavedModel at `path` and return the signature names.

    text_signatures: with a tokenizer, add the raw-text signatures; False gives a numeric-only SavedModel that
        stock TensorFlow loads without TF Text;
    input_names: tensor inputs of the numeric signatures (default: model.serving_input_names it accepts);
    output_names: outputs to serve (default: model.serving_output_names);
    text_pairs: also export `serving_text_pair` (default: for every head except multiple choice);
    image_processor: an image processor with `in_graph()` (e.g. BeitImageProcessor): adds `serving_image`.
    """
    input_names = tuple(input_names or [n for n in model.serving_input_names if n in model.all_input_names])
    output_names = tuple(output_names or model.serving_output_names)
    specs = [model.serving_input_spec(name) for name in input_names]
    if not text_signatures:
        tokenizer = None
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
        return run(_checked_requests(dict(zip(input_names, tensors)), model.main_input_name))

    root = tf.Module()
    root.serve = serve
    signatures = {SERVING_DEFAULT: serve.get_concrete_function()}

    if any(spec.dtype == tf.int32 for spec in specs):
        int64_specs = [tf.TensorSpec(s.shape, tf.int64, name=s.name) if s.dtype == tf.int32 else s for s in specs]

        @tf.function(input_signature=int64_specs, autograph=False)
        def serve_int64(*tensors):
            return serve(*[_to_int32(name, t) if t.dtype == tf.int64 else t for name, t in zip(input_names, tensors)])

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

    root.model_variables = _served_variables(model, signatures.values())
    # Written beside `path` and renamed into place once complete (core.atomic): TF Serving, which loads every
    # numbered version folder it sees, never finds a half-written one, and a killed export leaves the previous.
    with atomic.replacing_directory(path) as staging:
        tf.saved_model.save(root, staging, signatures=signatures,
                            options=tf.saved_model.SaveOptions(experimental_custom_gradients=False))
        _write_warmup_requests(os.path.join(staging, WARMUP_FILE),
                               _warmup_requests(model, input_names, specs, signatures))
    return sorted(signatures)


def _checked_requests(inputs, main_name):
    """Request checks the model's own (ids within the vocabulary, length within the positions) leave to the
    serving graph: no empty batch or sequence (a model would answer an empty output, or fail deep inside),
    and every [batch, length] input shaped as the main one. Failing asserts answer InvalidArgument."""
    main = inputs[main_name]
    shape = tf.shape(main)
    checks = [tf.debugging.assert_positive(shape[0], message=f"{main_name}: the batch is empty (0 rows)")]
    if main.dtype.is_integer:  # ids [batch, (choices,) length]: at least one token per sequence
        checks.append(tf.debugging.assert_positive(shape[-1], message=f"{main_name}: the sequences are empty"))
        checks += [tf.debugging.assert_equal(tf.shape(t), shape, message=f"{name} must have the shape of {main_name}")
                   for name, t in inputs.items() if name != main_name and t.shape.rank == main.shape.rank]
    with tf.control_dependencies(checks):
        return {name: tf.identity(t) for name, t in inputs.items()}


def _to_int32(name, tensor):
    """An int64 request as int32, refusing values that int32 cannot hold (a cast would wrap them around into
    valid-looking ids)."""
    limits = np.iinfo(np.int32)
    high, low = tf.constant(limits.max, tf.int64), tf.constant(limits.min, tf.int64)
    with tf.control_dependencies([tf.debugging.assert_less_equal(tensor, high, message=f"{name}: above int32"),
                                  tf.debugging.assert_greater_equal(tensor, low, message=f"{name}: below int32")]):
        return tf.cast(tensor, tf.int32)


def _served_variables(model, functions):
    """What the SavedModel must track for the traced serving functions: the tf.Variables they read, each once,
    and the model's partitioned weights (ShardedVariables) themselves.

    Why not the Keras variables (`list(model.variables)`, or the model itself): a Keras 3 Variable wraps a
    tf.Variable, and when saved it exports that tf.Variable (the copy the traced functions read) and then
    registers a second, new tf.Variable as itself; the checkpoint and its restore op cover that second one
    only. Python's `tf.saved_model.load` rebinds the functions' captures object by object and never notices;
    the C++ loader (TF Serving, `saved_model_cli run`) restores the checkpoint by name and then runs functions
    that read a variable nobody restored: "Could not find variable ... uninitialized".

    Tracking exactly what the functions capture (as Keras' own ExportArchive does) saves, restores and reads one
    and the same variable, whatever wraps it in the model: a Keras Variable's backing tf.Variable, the shards
    of a partitioned weight, the resource variable inside a parameter-server CachingVariable. A ShardedVariable
    must be tracked as well: functions also read it through a full-shape variable of its own, which only the
    ShardedVariable exports (holding its shards' values). A variable captured but not tracked at all fails
    tf.saved_model.save itself ("not reachable from root")."""
    seen, variables = set(), []
    for function in functions:
        for variable in function.variables:
            if id(variable) not in seen:
                seen.add(id(variable))
                variables.append(variable)
    backing = [backing_variable(v) for v in model.variables]
    return variables + [b for b in backing if not isinstance(b, tf.Variable)]


def _warmup_requests(model, input_names, specs, signatures):
    """One small request per signature: [(signature, {input: numpy array})]."""
    numeric = _example_inputs(model, input_names, specs)
    warmup = [(SERVING_DEFAULT, numeric)]
    if "serving_int64" in signatures:
        warmup.append(("serving_int64", {k: v.astype(np.int64) if v.dtype == np.int32 else v
                                         for k, v in numeric.items()}))
    if "serving_text" in signatures:
        warmup.append(("serving_text", {"text": np.array([WARMUP_TEXTS[0].encode()], object)}))
    if "serving_text_pair" in signatures:
        warmup.append(("serving_text_pair", {"text": np.array([WARMUP_TEXTS[0].encode()], object),
                                             "text_pair": np.array([WARMUP_TEXTS[1].encode()], object)}))
    if "serving_image" in signatures:
        image = tf.io.encode_png(tf.fill([32, 32, 3], tf.constant(128, tf.uint8))).numpy()
        warmup.append(("serving_image", {"image_bytes": np.array([image], object)}))
    return warmup


def _example_inputs(model, input_names, specs):
    """Small valid inputs for the numeric signatures: the model's own dummy inputs (those it is built with);
    inputs they lack (token types, global attention) are zeros."""
    dummy = {k: np.asarray(v) for k, v in model.dummy_inputs().items()}
    inputs = {}
    for name, spec in zip(input_names, specs):
        value = dummy.get(name, np.zeros_like(dummy[model.main_input_name]))
        if spec.shape.rank == value.ndim + 1:  # multiple choice: [batch, choices, length]
            value = np.stack([value, value], axis=1)
        inputs[name] = value.astype(spec.dtype.as_numpy_dtype)
    return inputs


# ---------------------------------------------------------------------------------------------------------------
# TF Serving warm-up requests


def _field(number, payload):
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(value):
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _prediction_log(signature, inputs):
    """A serialized tensorflow.serving.PredictionLog whose predict_log holds a PredictRequest for `signature`
    with `inputs` ({key: numpy array}).

    Encoded field by field (numbers from tensorflow_serving/apis/prediction_log.proto, predict.proto and
    model.proto: PredictionLog.predict_log = 6, PredictLog.request = 1, PredictRequest.model_spec = 1 and
    .inputs = 2 (map entries: key 1, value 2), ModelSpec.signature_name = 3) because tensorflow-serving-api is
    not a dependency of tfmodels; the tests parse these records with TF Serving's own message definitions."""
    model_spec = _field(3, signature.encode())
    request = _field(1, model_spec) + b"".join(
        _field(2, _field(1, key.encode()) + _field(2, tf.make_tensor_proto(value).SerializeToString()))
        for key, value in inputs.items())
    return _field(6, _field(1, request))


def _write_warmup_requests(path, requests):
    """Write [(signature, inputs)] as TF Serving's warm-up file (TFRecord of PredictionLog): TF Serving runs
    them when it loads the model, so the first real request does not pay for graph initialisation."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for signature, inputs in requests:
            writer.write(_prediction_log(signature, inputs))
