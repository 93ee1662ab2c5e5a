"""BEiT behaviour: every head through the shared helpers (call styles, fit, save/load, functional API, bad
inputs, export served through TF's C++ SavedModel loader with the encoded-image signature), plus layouts, image sizes,
drop path, layer scale and configs."""
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import tfmodels
from tests import helpers
from tests.serving import harness

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "..", "configs")

HEADS = [tfmodels.BeitModel, tfmodels.BeitForMaskedImageModeling, tfmodels.BeitForImageClassification,
         tfmodels.BeitForSemanticSegmentation]


def tiny_config(head=None, **overrides):
    name = "beit-tiny-segmentation.json" if head is tfmodels.BeitForSemanticSegmentation else "beit-tiny.json"
    return tfmodels.BeitConfig.from_pretrained(os.path.join(CONFIGS, name), **overrides)


def make_inputs(head, config, batch=4, labels=False, seed=0):
    rng = np.random.RandomState(seed)
    inputs = {"pixel_values": rng.randn(batch, 3, 32, 32).astype(np.float32)}
    if head is tfmodels.BeitForMaskedImageModeling:
        inputs["bool_masked_pos"] = (rng.rand(batch, 16) < 0.4).astype(np.int32)
    if labels and head is tfmodels.BeitForMaskedImageModeling:
        inputs["labels"] = rng.randint(0, config.vocab_size, (batch, 16)).astype(np.int32)
    elif labels and head is tfmodels.BeitForImageClassification:
        inputs["labels"] = rng.randint(0, config.num_labels, batch).astype(np.int32)
    elif labels and head is tfmodels.BeitForSemanticSegmentation:
        target = rng.randint(0, config.num_labels, (batch, 32, 32))
        target[:, :3] = config.semantic_loss_ignore_index
        inputs["labels"] = target.astype(np.int32)
    return inputs


OUTPUT_CLASSES = {"BeitModel": "BeitModelOutputWithPooling", "BeitForMaskedImageModeling": "MaskedLMOutput",
                  "BeitForImageClassification": "ImageClassifierOutput",
                  "BeitForSemanticSegmentation": "SemanticSegmenterOutput"}


@pytest.mark.parametrize("head", HEADS, ids=lambda h: h.__name__)
def test_call_styles_outputs_and_fit(head):
    config = tiny_config(head)
    model = head(config)
    inputs = make_inputs(head, config)
    output = helpers.run_call_styles_test(model, inputs, model.input_names)
    assert type(output).__name__ == OUTPUT_CLASSES[head.__name__]
    # NHWC gives the same outputs as the documented NCHW.
    channels_last = {**inputs, "pixel_values": np.transpose(inputs["pixel_values"], (0, 2, 3, 1))}
    helpers.assert_outputs_close(model(channels_last, training=False), output, list(output.keys()), atol=1e-6)
    if head is not tfmodels.BeitModel:
        labelled = make_inputs(head, config, labels=True)
        assert "loss" in model(labelled, training=False)
        helpers.run_fit_test(model, labelled, model.label_names)


@pytest.mark.parametrize("head", HEADS, ids=lambda h: h.__name__)
def test_save_load_functional_and_bad_inputs(head, tmp_path):
    config = tiny_config(head)
    model = head(config)
    inputs = make_inputs(head, config)
    helpers.run_save_load_test(model, inputs, tmp_path)
    helpers.run_functional_test(model, inputs, "last_hidden_state" if head is tfmodels.BeitModel else "logits")
    helpers.run_bad_inputs_test(model, inputs)


def encoded_images():
    """PNG and JPEG images of different sizes (smaller and larger than the processor's crop)."""
    import PIL.Image
    rng = np.random.RandomState(3)
    data = []
    for i, (height, width) in enumerate([(45, 61), (20, 30), (64, 48)]):
        image = np.clip(rng.rand(height, width, 3) * 80 + np.linspace(0, 170, width)[None, :, None], 0, 255)
        buffer = io.BytesIO()
        PIL.Image.fromarray(image.astype(np.uint8)).save(buffer, format="PNG" if i % 2 == 0 else "JPEG")
        data.append(buffer.getvalue())
    return data


def test_export_every_head_serves_through_the_cpp_loader(tmp_path):
    processor = tfmodels.BeitImageProcessor(size={"height": 40, "width": 40}, crop_size=32)
    jobs = []
    for head in HEADS:
        config = tiny_config(head)
        model = head(config)
        # The encoded-image signature for the heads that serve images (the bare model and MIM take pixels).
        with_images = head in (tfmodels.BeitForImageClassification, tfmodels.BeitForSemanticSegmentation)
        jobs.append((head.__name__, model, make_inputs(head, config), processor if with_images else None,
                     encoded_images()))
    helpers.export_and_check(jobs, tmp_path)
    # The numeric signature takes other image sizes (tables and positions are resized inside the graph).
    model = jobs[2][1]
    other = np.random.RandomState(5).randn(2, 3, 48, 40).astype(np.float32)
    served = harness.serve_ok([{"path": os.path.join(str(tmp_path), "export_BeitForImageClassification"),
                                "requests": [("serving_default", {"pixel_values": other})]}])[0]
    helpers.assert_close(served["outputs"][0]["logits"], model(other, training=False).logits, 1e-5)


def test_relative_position_index_static_and_dynamic_agree():
    from tfmodels.models.beit.modeling import relative_position_index
    for height, width in [(4, 4), (3, 5), (1, 2)]:
        static = relative_position_index(height, width).numpy()
        dynamic = tf.function(lambda h, w: relative_position_index(h, w))(tf.constant(height), tf.constant(width))
        np.testing.assert_array_equal(static, dynamic.numpy())
        size = (2 * height - 1) * (2 * width - 1) + 3
        assert static.max() == size - 1 and static.reshape(height * width + 1, -1)[0, 0] == size - 1


def test_drop_path_layer_scale_and_mask_token_rules():
    config = tiny_config(drop_path_rate=0.5, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = tfmodels.BeitModel(config)
    pixels = make_inputs(tfmodels.BeitModel, config)["pixel_values"]
    first = model(pixels, training=False).last_hidden_state
    helpers.assert_close(model(pixels, training=False).last_hidden_state, first, 0.0)
    assert np.abs(model(pixels, training=True).last_hidden_state.numpy() - first.numpy()).max() > 1e-3
    assert model.beit.encoder.layer[1].drop_path.rate == pytest.approx(0.5)
    assert model.beit.encoder.layer[0].drop_path.rate == 0.0
    no_scale = tfmodels.BeitModel(tiny_config(layer_scale_init_value=0.0)).build_model()
    assert not any("lambda" in v.name for v in no_scale.weights)
    scaled = tfmodels.BeitModel(tiny_config(layer_scale_init_value=0.25)).build_model()
    np.testing.assert_allclose(scaled.beit.encoder.layer[0].lambda_1.numpy(), 0.25)
    with pytest.raises(ValueError, match="use_mask_token"):
        tfmodels.BeitModel(tiny_config(use_mask_token=False))(pixels, bool_masked_pos=np.ones((4, 16), np.int32))
    with pytest.raises(ValueError, match="bool_masked_pos"):
        tfmodels.BeitForMaskedImageModeling(config)(pixels, labels=np.zeros((4, 16), np.int32))


def test_segmentation_outputs_and_options():
    config = tiny_config(tfmodels.BeitForSemanticSegmentation)
    model = tfmodels.BeitForSemanticSegmentation(config)
    inputs = make_inputs(tfmodels.BeitForSemanticSegmentation, config, labels=True)
    out = model(inputs, training=False)
    assert list(out.keys()) == ["loss", "logits"] and out.logits.shape == (4, 5, 16, 16)
    assert len(model(inputs, output_hidden_states=True).hidden_states) == 5
    as_tuple = model(inputs, return_dict=False)
    assert len(as_tuple) == 2
    # The auxiliary loss counts with its weight.
    from tfmodels.core import losses
    main = losses.semantic_segmentation_loss(inputs["labels"], out.logits, 255)
    assert abs(float(out.loss) - float(main)) > 1e-4
    without = tfmodels.BeitForSemanticSegmentation(config.copy(auxiliary_loss_weight=0.0))
    without.build_model()
    for a, b in zip(without.weights, model.weights):
        a.assign(b)
    helpers.assert_close(without(inputs).loss, main, 1e-6)
    # Other input sizes work (the patch grid comes from the input).
    assert model(np.zeros((1, 3, 48, 40), np.float32)).logits.shape == (1, 5, 24, 20)
    with pytest.raises(ValueError, match="out_indices"):
        tfmodels.BeitForSemanticSegmentation(tiny_config())
    with pytest.raises(ValueError, match="greater than one"):
        tfmodels.BeitForSemanticSegmentation(config.copy(num_labels=1))(inputs)


def test_gradient_checkpointing_gives_identical_gradients():
    config = tiny_config(drop_path_rate=0.0, hidden_dropout_prob=0.0)
    inputs = make_inputs(tfmodels.BeitForImageClassification, config, labels=True)
    grads = []
    plain = tfmodels.BeitForImageClassification(config).build_model()
    recomputed = tfmodels.BeitForImageClassification(config.copy(gradient_checkpointing=True)).build_model()
    for a, b in zip(recomputed.weights, plain.weights):
        a.assign(b)
    for model in (plain, recomputed):
        with tf.GradientTape() as tape:
            loss = model(inputs, training=True).loss
        grads.append(tape.gradient(loss, model.trainable_variables))
    assert sum(g is not None for g in grads[0]) == len(grads[0]) - 1  # all but the unused mask token
    for a, b in zip(*grads):
        assert (a is None) == (b is None)
        if a is not None:
            helpers.assert_close(a, b, 1e-6)


def test_config_validation_round_trip_and_published_configs(tmp_path):
    transformers = pytest.importorskip("transformers")
    with pytest.raises(ValueError, match="out_indices"):
        tfmodels.BeitConfig(num_hidden_layers=2, out_indices=[1, 2, 3])
    with pytest.raises(ValueError, match="increasing"):
        tfmodels.BeitConfig(out_indices=[3, 2])
    with pytest.raises(ValueError, match="name different stages"):
        tfmodels.BeitConfig(out_indices=[1], out_features=["stage2"])
    with pytest.raises(ValueError, match="pool_scales"):
        tfmodels.BeitConfig(pool_scales=[])
    with pytest.raises(ValueError, match="smaller than patch_size"):
        tfmodels.BeitConfig(image_size=8, patch_size=16)
    with pytest.raises(ValueError, match="layer_scale_init_value"):
        tfmodels.BeitConfig(layer_scale_init_value=-1)
    with pytest.raises(ValueError, match="drop_path_rate"):
        tfmodels.BeitConfig(drop_path_rate=1.5)
    default = tfmodels.BeitConfig()
    assert (default.out_indices, default.out_features) == ([12], ["stage12"])
    assert (default.image_size, default.patch_size, default.layer_scale_init_value) == (224, 16, 0.1)
    # HF reads ours, we read HF's (which carries stage_names and the aligned backbone fields).
    config = tiny_config(tfmodels.BeitForSemanticSegmentation)
    config.save_pretrained(str(tmp_path / "ours"))
    theirs = transformers.BeitConfig.from_pretrained(str(tmp_path / "ours"))
    assert theirs.out_indices == [1, 2, 3, 4] and theirs.num_labels == 5 and theirs.auxiliary_channels == 16
    theirs.save_pretrained(str(tmp_path / "theirs"))
    with open(str(tmp_path / "theirs" / "config.json")) as f:
        assert "stage_names" in json.load(f)
    again = tfmodels.BeitConfig.from_pretrained(str(tmp_path / "theirs"))
    assert {k: getattr(again, k) for k in again.defaults} == {k: getattr(config, k) for k in config.defaults}
    assert again.id2label == config.id2label
    legacy = tfmodels.BeitConfig(num_hidden_layers=4, segmentation_indices=[1, 2, 3, 4])
    assert legacy.out_features == ["stage1", "stage2", "stage3", "stage4"]
    assert tiny_config().copy(num_hidden_layers=4).out_indices == [4]
    base = tfmodels.BeitConfig.from_pretrained(os.path.join(CONFIGS, "beit-base-patch16-224.json"))
    assert (base.hidden_size, base.num_hidden_layers, base.num_labels, base.use_relative_position_bias) == \
        (768, 12, 1000, True)
    large = tfmodels.BeitConfig.from_pretrained(os.path.join(CONFIGS, "beit-large-patch16-224.json"))
    assert (large.hidden_size, large.num_hidden_layers, large.num_attention_heads, large.layer_scale_init_value) == \
        (1024, 24, 16, 1e-5)
    ade = tfmodels.BeitConfig.from_pretrained(os.path.join(CONFIGS, "beit-base-finetuned-ade-640-640.json"))
    assert (ade.image_size, ade.num_labels, ade.out_indices, ade.window_size) == (640, 150, [3, 5, 7, 11], (40, 40))
    # The ADE model builds on a small dummy image (its tables are sized for 640x640 all the same).
    ade_small = ade.copy(hidden_size=32, num_attention_heads=4, intermediate_size=37, auxiliary_channels=8)
    model = tfmodels.BeitForSemanticSegmentation(ade_small).build_model()
    table = model.beit.encoder.layer[0].attention.attention.relative_position_bias.relative_position_bias_table
    assert table.shape == (79 * 79 + 3, 4)
