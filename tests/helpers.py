"""Shared test helpers: every family runs each of its heads through these.

Behaviour helpers (no reference needed): call styles, fit, save/load, functional API, export (served through
TensorFlow's C++ SavedModel loader, TF Serving's, in a fresh process that imports no TF Python), bad inputs.
Parity helpers: build a Hugging Face PyTorch model with *every* parameter randomised (so that a mis-mapped bias
or LayerNorm weight cannot hide behind HF's zero/one init), save it with HF's own `save_pretrained`, load that
directory into our class, compare.
"""
import os

import keras
import numpy as np
import tensorflow as tf

from tfmodels.core.outputs import ModelOutput

ATOL = 1e-5


# ---------------------------------------------------------------------------------------------------------------
# Graphs


def graph_op_types(function, *args):
    """The op types in the graph of `function` (a tf.function, or a Python function to trace) traced on `args`
    (tensors or TensorSpecs): which ops a dispatch choice put there."""
    if not hasattr(function, "get_concrete_function"):
        function = tf.function(function)
    return {op.type for op in function.get_concrete_function(*args).graph.get_operations()}


def traced_forward(model, inputs, **kwargs):
    """(the op types of `model(**inputs, **kwargs)` traced as a graph, that graph's tf.function)."""
    forward = tf.function(lambda: model(**inputs, **kwargs))
    return graph_op_types(forward), forward


# ---------------------------------------------------------------------------------------------------------------
# Comparisons


def to_numpy(value):
    if value is None:
        return None
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    if hasattr(value, "numpy"):
        return value.numpy()
    return np.asarray(value)


def assert_close(actual, expected, atol=ATOL, name="value"):
    actual, expected = to_numpy(actual), to_numpy(expected)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != reference {expected.shape}"
    diff = float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64)))) if actual.size else 0.0
    assert diff <= atol, f"{name}: max abs difference {diff:.3g} > {atol}"
    return diff


def assert_outputs_close(ours, reference, fields, atol=ATOL, where=None):
    """Compare named fields (tensors or tuples of tensors) of two outputs. `where` (numpy bool mask over the
    leading axes) restricts the comparison, e.g. to non-padded positions."""
    for field in fields:
        a, b = ours[field], reference[field]
        if isinstance(a, (tuple, list)):
            assert len(a) == len(b), f"{field}: {len(a)} items vs reference {len(b)}"
            for i, (x, y) in enumerate(zip(a, b)):
                assert_close(x, y, atol, f"{field}[{i}]")
        else:
            assert_close(a, b, atol, field)


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face reference models


def randomize_torch_model(model, seed=0, std=0.2):
    """Give every parameter (biases and norms too) random values; LayerNorm weights stay near 1."""
    import torch
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator) * std
            if name.endswith("LayerNorm.weight") or name.endswith("norm.weight") or "layer_norm" in name and \
                    name.endswith("weight"):
                param.copy_(1.0 + noise)
            else:
                param.copy_(noise)
        for name, buffer in model.named_buffers():
            if name.endswith("running_var"):
                buffer.copy_(1.0 + torch.rand(buffer.shape, generator=generator))
            elif name.endswith("running_mean"):
                buffer.copy_(torch.randn(buffer.shape, generator=generator) * std)
    return model.eval()


def hf_checkpoint(hf_class, hf_config, directory, seed=0, std=0.2):
    """Build, randomise and `save_pretrained` an HF model; returns the (eval-mode) torch model."""
    import torch
    torch.manual_seed(seed)
    model = randomize_torch_model(hf_class(hf_config), seed=seed, std=std)
    model.save_pretrained(directory)
    return model


def torch_inputs(inputs):
    import torch
    converted = {}
    for key, value in inputs.items():
        if value is None:
            continue
        array = np.asarray(value)
        converted[key] = torch.tensor(array, dtype=torch.long if array.dtype.kind in "iub" else torch.float32)
    return converted


def padded_ids(batch, length, vocab_size, pad_id, seed=0, lengths=None, low=3, side="right"):
    """Random ids with padding: row i keeps lengths[i] tokens (default: decreasing lengths)."""
    rng = np.random.RandomState(seed)
    ids = rng.randint(low, vocab_size, size=(batch, length)).astype(np.int32)
    if lengths is None:
        lengths = [max(2, length - 3 * i) for i in range(batch)]
    mask = np.zeros((batch, length), np.int32)
    for i, n in enumerate(lengths):
        if side == "right":
            mask[i, :n] = 1
        else:
            mask[i, length - n:] = 1
    ids = np.where(mask == 1, ids, pad_id).astype(np.int32)
    return ids, mask


# ---------------------------------------------------------------------------------------------------------------
# Behaviour helpers


def _outputs_equal(a, b, atol=1e-6):
    assert list(a.keys()) == list(b.keys()), f"fields differ: {list(a.keys())} vs {list(b.keys())}"
    for key in a:
        for x, y in zip(tf.nest.flatten(a[key]), tf.nest.flatten(b[key])):
            assert_close(x, y, atol, key)


def run_call_styles_test(model, inputs, input_order):
    """kwargs, dict, list (documented order), single tensor, numpy int64 and tf int32 give the same outputs;
    return_dict=False gives the tuple; optional outputs appear only when requested."""
    reference = model(**inputs, training=False)
    assert isinstance(reference, ModelOutput)
    _outputs_equal(model(dict(inputs), training=False), reference)
    provided = [n for n in input_order if n in inputs]
    if provided == list(input_order[:len(provided)]) and len(provided) == len(inputs):
        _outputs_equal(model([inputs[n] for n in provided], training=False), reference)
    as_int64 = {k: (np.asarray(v).astype(np.int64) if np.asarray(v).dtype.kind == "i" else v)
                for k, v in inputs.items()}
    _outputs_equal(model(**as_int64, training=False), reference)
    as_tf = {k: tf.constant(v) for k, v in inputs.items()}
    _outputs_equal(model(**as_tf, training=False), reference)
    main = model.main_input_name
    if set(inputs) == {main}:
        _outputs_equal(model(inputs[main], training=False), reference)
    as_tuple = model(**inputs, return_dict=False, training=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(reference)
    for x, y in zip(tf.nest.flatten(as_tuple), tf.nest.flatten(reference.to_tuple())):
        assert_close(x, y, 1e-6)
    assert reference.attentions is None and "attentions" not in reference
    full = model(**inputs, output_attentions=True, output_hidden_states=True, training=False)
    assert full.attentions is not None and full.hidden_states is not None
    return reference


def run_fit_test(model, inputs_with_labels, label_names, steps=2):
    """compile(optimizer) with no loss trains on the internal loss: labels inside x, and (features, labels)."""
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    before = [v.numpy().copy() for v in model.trainable_variables]
    history = model.fit(inputs_with_labels, batch_size=max(1, len(next(iter(inputs_with_labels.values()))) // 2),
                        epochs=1, verbose=0, steps_per_epoch=steps)
    losses = history.history["loss"]
    assert all(np.isfinite(losses)), f"non-finite loss {losses}"
    changed = sum(not np.allclose(b, v.numpy()) for b, v in zip(before, model.trainable_variables))
    assert changed > 0.5 * len(before), f"only {changed}/{len(before)} variables changed after fit"
    features = {k: v for k, v in inputs_with_labels.items() if k not in label_names}
    labels = {k: inputs_with_labels[k] for k in label_names}
    y = labels[label_names[0]] if len(label_names) == 1 else labels
    history = model.fit(features, y, batch_size=2, epochs=1, verbose=0, steps_per_epoch=1)
    assert np.isfinite(history.history["loss"][0])
    return losses


def run_save_load_test(model, inputs, tmp_path):
    """save_pretrained/from_pretrained in our format and in HF format give identical outputs."""
    expected = model(**inputs, training=False)
    for hf_format in (False, True):
        directory = os.path.join(str(tmp_path), "hf" if hf_format else "own")
        model.save_pretrained(directory, hf_format=hf_format)
        assert os.path.isfile(os.path.join(directory, "config.json"))
        restored, info = type(model).from_pretrained(directory, output_loading_info=True)
        assert not info.missing and not info.unexpected and not info.mismatched, info.report()
        _outputs_equal(restored(**inputs, training=False), expected)
    return restored


def run_functional_test(model, inputs, output_field="logits"):
    """The model composes as a layer in the Keras functional API."""
    symbolic = {}
    for name, value in inputs.items():
        value = np.asarray(value)
        symbolic[name] = keras.Input(shape=value.shape[1:], dtype=str(value.dtype), name=name)
    outputs = model(symbolic)
    head = keras.layers.Dense(3, name="user_head")(getattr(outputs, output_field))
    composed = keras.Model(symbolic, head)
    result = composed(inputs)
    assert result.shape[-1] == 3
    composed.compile(optimizer="adam", loss="mse")
    target = np.zeros(result.shape, np.float32)
    composed.fit(inputs, target, epochs=1, verbose=0, batch_size=len(next(iter(inputs.values()))))
    return composed


def export_and_check(models_and_inputs, tmp_path, atol=1e-5):
    """Export each (name, model, inputs, preprocessor, raw) and serve every export through TensorFlow's C++
    SavedModel loader, the one TF Serving uses (tests/serving/harness.py: the C API, in fresh processes that
    import no Python of TensorFlow, TF Text or tfmodels; TF Text's op library is loaded for raw-text exports,
    as TF Serving links it). Every signature's outputs equal the Keras model's, and every export's warm-up
    requests (one per signature) run; the numeric ones equal the Keras model's too.

    preprocessor: None, a tokenizer (raw: texts; checks serving_text and serving_text_pair, each text paired
    with the next, against the model on the Python tokenizer's encoding of the inputs the signatures take;
    heads that take no raw text export without it) or an image
    processor (raw: encoded images as bytes; checks serving_image against the numpy-path processor on the same
    decoded images).
    serving_int64 is checked for models with integer inputs in their signature.
    An optional sixth item, export(model, path) -> signature names, replaces `model.export` (e.g. the training
    job's exporter, which also writes the metadata). Returns the harness results, one per export."""
    from tests.serving import harness

    jobs, checks = [], []
    for name, model, inputs, preprocessor, raw, *export in models_and_inputs:
        path = os.path.join(str(tmp_path), f"export_{name}")
        is_image = getattr(preprocessor, "model_input_names", None) == ["pixel_values"]
        if not is_image and preprocessor is not None and model.serving_input_spec("input_ids").shape.rank != 2:
            preprocessor = None  # multiple choice takes [batch, choices, length] ids: no raw-text signature
        if export:
            signatures = export[0](model, path)
        else:
            signatures = model.export(path, tokenizer=None if is_image else preprocessor,
                                      image_processor=preprocessor if is_image else None)
        assert "serving_default" in signatures
        names = [n for n in model.serving_input_names if n in model.all_input_names]
        specs = {n: model.serving_input_spec(n) for n in names}
        has_int = any(spec.dtype.is_integer for spec in specs.values())
        assert ("serving_int64" in signatures) == has_int, signatures
        feed = {n: np.asarray(inputs[n]).astype(specs[n].dtype.as_numpy_dtype) for n in names}
        expected = _served_outputs(model, inputs)
        requests = [("serving_default", feed)]
        check = [("serving_default", expected)]
        if has_int:
            requests.append(("serving_int64", {k: v.astype(np.int64) if v.dtype == np.int32 else v
                                               for k, v in feed.items()}))
            check.append(("serving_int64", expected))
        if is_image:
            assert "serving_image" in signatures
            requests.append(("serving_image", {"image_bytes": np.array(list(raw), object)}))
            pixels = preprocessor([_decode_reference(data) for data in raw], return_tensors="np")["pixel_values"]
            check.append(("serving_image", _served_outputs(model, pixels)))
        elif preprocessor is not None:
            assert "serving_text" in signatures
            requests.append(("serving_text", {"text": np.array([t.encode() for t in raw], object)}))
            encoded = preprocessor(list(raw), padding=True, return_tensors="np")
            text_expected = _served_outputs(model, {k: v for k, v in encoded.items() if k in names})
            text_expected["input_ids"] = encoded["input_ids"]
            check.append(("serving_text", text_expected))
            if "serving_text_pair" in signatures:  # each text paired with another one
                pairs = list(raw[1:]) + list(raw[:1])
                requests.append(("serving_text_pair", {"text": np.array([t.encode() for t in raw], object),
                                                       "text_pair": np.array([t.encode() for t in pairs], object)}))
                encoded = preprocessor(list(raw), pairs, padding=True, return_tensors="np")
                pair_expected = _served_outputs(model, {k: v for k, v in encoded.items() if k in names})
                pair_expected["input_ids"] = encoded["input_ids"]
                check.append(("serving_text_pair", pair_expected))
        jobs.append({"path": path, "requests": requests, "warmup": True,
                     "text_ops": any(s.startswith("serving_text") for s in signatures)})
        checks.append((model, sorted(signatures), check))
    results = harness.serve_ok(jobs)
    for job, (model, signatures, check), result in zip(jobs, checks, results):
        assert sorted(result["signatures"]) == signatures, (job["path"], sorted(result["signatures"]))
        for (signature, expected), got in zip(check, result["outputs"]):
            for key, value in expected.items():
                assert_close(got[key], value, atol, f"{job['path']} {signature} {key}")
        assert sorted(w["signature"] for w in result["warmup"]) == signatures, "one warm-up request per signature"
        for warmup in result["warmup"]:
            if warmup["signature"] in ("serving_default", "serving_int64"):
                for key, value in _served_outputs(model, warmup["inputs"]).items():
                    assert_close(warmup["outputs"][key], value, atol, f"{job['path']} warm-up {key}")
            for key in model.serving_output_names:
                if key in warmup["outputs"]:
                    assert np.all(np.isfinite(warmup["outputs"][key])), f"{job['path']} warm-up {key}"
    return results


def _served_outputs(model, inputs):
    """The Keras model's outputs that the serving signatures return, as numpy: in op mode "reference", the
    arithmetic an export holds (core.export swaps the custom ops for their twins). The fused CPU ops round
    differently (tested against their twins in tests/ops), which can flip a top-k index between near-equal
    logits (XLNet's beam-search heads)."""
    from tfmodels.ops import dispatch
    with dispatch.op_mode("reference"):
        outputs = model(inputs, training=False)
    return {k: to_numpy(v) for k, v in outputs.items() if k in model.serving_output_names}


def _decode_reference(data):
    """Decode an encoded image as the reference image processors see it: with Pillow, as RGB."""
    import io

    import PIL.Image
    return np.array(PIL.Image.open(io.BytesIO(data)).convert("RGB"))


def run_bad_inputs_test(model, inputs, vocab_size=None, max_length=None, mask_name="attention_mask"):
    """Clear errors for bad inputs. Text models (main input input_ids): ids >= vocab_size, wrong rank, too long
    inputs, mismatched masks, unknown inputs. Image models (pixel_values): wrong rank, wrong channel count,
    images smaller than a patch, bool_masked_pos of the wrong length, unknown inputs."""
    if model.main_input_name == "pixel_values":
        return _run_bad_pixel_inputs_test(model, inputs)
    return _run_bad_id_inputs_test(model, inputs, vocab_size, max_length, mask_name)


def _run_bad_pixel_inputs_test(model, inputs):
    import pytest

    pixels = np.asarray(inputs["pixel_values"])
    config = model.config
    with pytest.raises(ValueError, match="rank"):
        model({**inputs, "pixel_values": pixels[0]}, training=False)
    wrong_channels = np.concatenate([pixels, pixels[:, :1]], axis=1)
    with pytest.raises(ValueError, match="channels"):
        model({**inputs, "pixel_values": wrong_channels}, training=False)
    patch = config.patch_size if isinstance(config.patch_size, int) else config.patch_size[0]
    with pytest.raises(ValueError, match="smaller than one patch"):
        model({k: v for k, v in inputs.items() if k != "bool_masked_pos"} | {"pixel_values": pixels[:, :, :patch - 1]},
              training=False)
    if "bool_masked_pos" in inputs:
        masked = np.asarray(inputs["bool_masked_pos"])
        with pytest.raises(ValueError, match="bool_masked_pos"):
            model({**inputs, "bool_masked_pos": masked[:, :-1]}, training=False)
    with pytest.raises(ValueError, match="unexpected"):
        model({**inputs, "not_an_input": pixels}, training=False)


def _run_bad_id_inputs_test(model, inputs, vocab_size, max_length, mask_name):
    import pytest

    ids = np.asarray(inputs["input_ids"])
    bad = ids.copy()
    bad.flat[0] = vocab_size
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="vocab_size"):
        model({**inputs, "input_ids": bad}, training=False)
    with pytest.raises(ValueError, match="rank"):
        model({**inputs, "input_ids": ids[0]}, training=False)
    if mask_name in inputs:
        mask = np.asarray(inputs[mask_name])
        with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match=mask_name):
            model({**inputs, mask_name: mask[..., :-1]}, training=False)
    with pytest.raises(ValueError, match="unexpected"):
        model({**inputs, "not_an_input": ids}, training=False)
    if max_length is not None:
        shape = list(ids.shape)
        shape[-1] = max_length + 1
        long_ids = np.full(shape, 5, np.int32)
        with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="longer than|exceeds"):
            model({"input_ids": long_ids}, training=False)
