"""Every family and every head in a Keras functional model on dynamic shapes (issue 18).

One functional model per family holds all its heads on shared dynamic inputs: `keras.Input((None,))` for ids
and masks, `(None, None)` for multiple choice, `(3, None, None)` for BEiT's pixels. The bare model is loaded
with from_pretrained (already built, as in the README's functional-API example, with a user Dense on the first
token); the heads are placed on the inputs unbuilt. Each head is asked for its hidden states and attentions
too, so that every output field (mems, global attentions, segmentation logits, ...) is checked for its static
rank and feature sizes. The model is compiled, fitted one step on a padded batch, and predicts at two lengths
(two image sizes for BEiT), equal to each head's eager outputs on the same inputs.
"""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests import helpers
from tfmodels import registry
from tfmodels.core import tasks
from tfmodels.core.modeling import PreTrainedModel
from tfmodels.core.padding import pad_to_multiple, unpad

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "configs")
FAMILIES = sorted(registry.families())
BATCH = 3
TEXT_LENGTHS = (11, 7)
IMAGE_SIZES = ((32, 32), (48, 64))  # BEiT's tiny configs: 32x32 images, patches of 8
PER_LAYER = ("hidden_states", "attentions", "global_attentions", "mems")


def head_classes(spec):
    """The family's model classes (bare model and every head; the TF* names are aliases of the same classes)."""
    found = []
    for value in vars(spec.package()).values():
        if (isinstance(value, type) and issubclass(value, PreTrainedModel)
                and not value.__name__.endswith("PreTrainedModel") and value not in found):
            found.append(value)
    return found


def tiny_config(spec, head):
    """The family's tiny config with one layer (each layer is traced three times per head here), except for
    BEiT's segmentation head, which taps four."""
    if head.__name__.endswith("SemanticSegmentation"):
        return head.config_class.from_pretrained(os.path.join(CONFIGS, "beit-tiny-segmentation.json"))
    overrides = {"n_layer": 1} if spec.name == "xlnet" else {"num_hidden_layers": 1}
    if spec.name == "longformer":
        overrides["attention_window"] = [4]
    return head.config_class.from_pretrained(os.path.join(CONFIGS, f"{spec.name}-tiny.json"), **overrides)


def main_field(model):
    if isinstance(model, tasks.BaseModelTask):
        return "last_hidden_state"
    if isinstance(model, tasks.QuestionAnsweringTask):
        return "start_logits"
    if "start_top_log_probs" in model.output_class.fields:  # XLNet's beam-search span head
        return "start_top_log_probs"
    return "logits"


def expected_shape(model, field, config):
    """The static shape a symbolic output must carry: batch and sequence / image axes None, the rest known."""
    hidden, heads = config.hidden_size, config.num_attention_heads
    if field in ("hidden_states", "mems", "last_hidden_state"):
        return (None, None, hidden)
    if field == "attentions" and config.model_type == "yoso":
        return (None, None, hidden)  # as the reference: YOSO's `attentions` are its layers' contexts
    if field in ("attentions", "global_attentions"):
        return (None, heads, None, None)
    if field == "pooler_output":
        return (None, hidden)
    if field in ("start_logits", "end_logits"):
        return (None, None)
    if field in ("start_top_log_probs", "start_top_index"):
        return (None, config.start_n_top)
    if field in ("end_top_log_probs", "end_top_index"):
        return (None, config.start_n_top * config.end_n_top)
    if field == "cls_logits":
        return (None,)
    assert field == "logits", f"no expected shape for {type(model).__name__}.{field}"
    if isinstance(model, tasks.MultipleChoiceTask):
        return (None, None)
    if isinstance(model, tasks.SemanticSegmentationTask):
        return (None, config.num_labels, None, None)
    if isinstance(model, tasks.SequenceClassificationTask):
        return (None, config.num_labels)
    if isinstance(model, tasks.TokenClassificationTask):
        return (None, None, config.num_labels)
    return (None, None, config.vocab_size)  # masked / causal LM, masked image modeling


def flatten(name, output):
    """{head.field[.layer]: tensor} of one model output (per-layer tuples one entry per layer)."""
    flat = {}
    for field, value in output.items():
        if isinstance(value, (tuple, list)):
            flat.update({f"{name}.{field}.{i}": v for i, v in enumerate(value)})
        else:
            flat[f"{name}.{field}"] = value
    return flat


def check_static_shapes(model, output, config):
    num_layers = config.num_hidden_layers
    expected_layers = {"hidden_states": num_layers + 1, "attentions": num_layers, "global_attentions": num_layers,
                       "mems": num_layers}
    assert set(output) >= {"hidden_states", "attentions"}, list(output)
    for field, value in output.items():
        values = value if field in PER_LAYER else (value,)
        if field in PER_LAYER:
            assert len(values) == expected_layers[field], (type(model).__name__, field, len(values))
        for tensor in values:
            assert tuple(tensor.shape) == expected_shape(model, field, config), (
                type(model).__name__, field, tensor.shape)


def text_batch(config, length, multiple_choice, seed):
    """A padded batch; rows long enough hold `<s> q </s></s> a </s>` separators (Longformer's default global
    attention then marks the question tokens; other families read them as ordinary tokens)."""
    ids, mask = helpers.padded_ids(BATCH, length, config.vocab_size, config.pad_token_id, seed=seed)
    sep = getattr(config, "sep_token_id", None)
    if sep is not None:
        for row, kept in enumerate(mask.sum(1)):
            if kept >= 5:
                ids[row, [2, 3, kept - 1]] = sep
    if multiple_choice:
        return {"input_ids": np.stack([ids, ids[::-1]], 1), "attention_mask": np.stack([mask, mask[::-1]], 1)}
    return {"input_ids": ids, "attention_mask": mask}


def family_inputs(image, config, size, seed=0):
    """The functional model's input arrays at one length (or image size), keyed by keras.Input name."""
    if image:
        pixels = np.random.RandomState(seed).uniform(-1, 1, (BATCH, config.num_channels) + size)
        return {"pixel_values": pixels.astype(np.float32)}
    plain = text_batch(config, size, False, seed)
    choices = text_batch(config, size, True, seed)
    return {**plain, "choice_input_ids": choices["input_ids"], "choice_attention_mask": choices["attention_mask"]}


def model_inputs(model, arrays):
    """The part of the family inputs one model takes (by the model's own input names)."""
    if "pixel_values" in arrays:
        return {"pixel_values": arrays["pixel_values"]}
    prefix = "choice_" if isinstance(model, tasks.MultipleChoiceTask) else ""
    return {"input_ids": arrays[prefix + "input_ids"], "attention_mask": arrays[prefix + "attention_mask"]}


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_every_head_in_a_functional_model_with_dynamic_shapes(family, tmp_path):
    spec = registry.families()[family]
    image = spec.modality == "image"
    if image:
        symbolic = {"pixel_values": keras.Input((3, None, None), name="pixel_values")}
    else:
        symbolic = {name: keras.Input(shape, dtype="int32", name=name)
                    for name, shape in (("input_ids", (None,)), ("attention_mask", (None,)),
                                        ("choice_input_ids", (None, None)), ("choice_attention_mask", (None, None)))}
    # The reference needs interpolate_pos_encoding for BEiT's absolute position embeddings at other image sizes.
    options = dict(output_hidden_states=True, output_attentions=True,
                   **({"interpolate_pos_encoding": True} if image else {}))
    if family == "xlnet":
        # XLNet returns mems by config.use_mems_eval at inference and use_mems_train in training (as HF), and a
        # functional model needs one output structure for both: the README says to pass use_mems explicitly.
        options["use_mems"] = True
    models, configs, outputs, losses = {}, {}, {}, {}
    for head in head_classes(spec):
        name = head.__name__
        config = tiny_config(spec, head)
        if issubclass(head, tasks.BaseModelTask):
            head(config).save_pretrained(str(tmp_path / name))
            model = head.from_pretrained(str(tmp_path / name))
            assert model.built and model.weights
        else:
            model = head(config)
        models[name], configs[name] = model, config
        output = model(model_inputs(model, symbolic), **options)
        check_static_shapes(model, output, config)
        field = main_field(model)
        assert getattr(output, field) is output[field]
        outputs.update(flatten(name, output))
        losses[f"{name}.{field}"] = "mse"
        if isinstance(model, tasks.BaseModelTask):
            # The README's example: a user's Dense on the first token of the bare model's hidden states.
            outputs["user_head"] = keras.layers.Dense(3, name="user_head")(output.last_hidden_state[:, 0])
            assert tuple(outputs["user_head"].shape) == (None, 3)
            losses["user_head"] = "mse"
    composed = keras.Model(symbolic, outputs)
    composed.compile(optimizer=keras.optimizers.SGD(1e-3), loss=losses)  # (the optimizer is not under test)

    sizes = IMAGE_SIZES if image else TEXT_LENGTHS
    first_config = next(iter(configs.values()))
    train = family_inputs(image, first_config, sizes[0], seed=1)
    # The targets' shapes from a prediction before training: its predict trace serves the first size again.
    targets = {key: np.zeros(value.shape, np.float32)
               for key, value in composed.predict(train, batch_size=BATCH, verbose=0).items() if key in losses}
    history = composed.fit(train, targets, batch_size=BATCH, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])

    for seed, size in enumerate(sizes):
        arrays = family_inputs(image, first_config, size, seed=seed + 2)
        predicted = composed.predict(arrays, batch_size=BATCH, verbose=0)
        expected = eager_outputs(models, composed, arrays, options)
        assert sorted(predicted) == sorted(expected)
        for key, value in expected.items():
            if key.endswith("top_index"):
                check_top_indices(predicted, expected, key, size)
            else:
                helpers.assert_close(predicted[key], value, name=f"{key} at size {size}")


def check_top_indices(predicted, expected, key, size):
    """XLNet's beam-search indices: equal wherever the log-probabilities they rank are not tied within 1e-5 (graph
    and eager may order near-ties of a tiny random model differently; the log-probabilities are compared too)."""
    # Ranked along the last axis for the starts; the end ranks of each start are [batch, end_n_top, start_n_top],
    # flattened (as HF), so they are ranked along axis 1 of that shape.
    start_n_top = np.shape(expected[key.replace("end_", "start_")])[-1]
    shape = (-1, start_n_top) if key.split(".")[-1].startswith("start") else (len(expected[key]), -1, start_n_top)
    axis = -1 if len(shape) == 2 else 1
    log_probs = np.asarray(expected[key.replace("top_index", "top_log_probs")]).reshape(shape)
    gaps = np.abs(np.diff(log_probs, axis=axis)) <= 1e-5
    tied = np.zeros(log_probs.shape, bool)
    if axis == 1:
        tied[:, 1:] |= gaps
        tied[:, :-1] |= gaps
    else:
        tied[..., 1:] |= gaps
        tied[..., :-1] |= gaps
    tied = tied.reshape(np.shape(expected[key]))
    np.testing.assert_array_equal(np.where(tied, -1, predicted[key]), np.where(tied, -1, expected[key]),
                                  err_msg=f"{key} at size {size}")


def eager_outputs(models, composed, arrays, options):
    """What the functional model must predict: every model called eagerly on its part of `arrays`."""
    expected = {}
    for name, model in models.items():
        output = model(model_inputs(model, arrays), training=False, **options)
        expected.update(flatten(name, output))
        if isinstance(model, tasks.BaseModelTask):
            expected["user_head"] = composed.get_layer("user_head")(output.last_hidden_state[:, 0])
    return expected


def test_padding_keeps_static_dimensions_with_a_dynamic_length():
    """The cause of the Longformer failure: a pad or slice by tensor amounts forgot the hidden size."""
    seen = {}

    @tf.function(input_signature=[tf.TensorSpec([None, None, 4, 6])])
    def round_trip(tensor):
        padded, pad_len = pad_to_multiple(tensor, 8, axis=1)
        restored = unpad(padded, tf.shape(tensor)[1], axis=1)
        seen.update(padded=tuple(padded.shape), restored=tuple(restored.shape))
        return restored, pad_len

    value = np.random.RandomState(0).normal(size=(2, 5, 4, 6)).astype(np.float32)
    restored, pad_len = round_trip(value)
    assert seen == {"padded": (None, None, 4, 6), "restored": (None, None, 4, 6)}
    assert int(pad_len) == 3
    np.testing.assert_array_equal(restored.numpy(), value)
    padded, _ = pad_to_multiple(tf.constant(value), 8, axis=1)
    assert tuple(padded.shape) == (2, 8, 4, 6)
    assert tuple(unpad(padded, 5, axis=1).shape) == (2, 5, 4, 6)
