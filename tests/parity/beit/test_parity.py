"""Parity with Hugging Face PyTorch (transformers 4.57.6): HF-written checkpoints (every parameter and BatchNorm
statistic randomised) loaded into our classes, batch 3, atol 1e-5: hidden states, attentions, pooler, MIM
logits and loss, classification losses, segmentation logits and loss with the auxiliary head, head_mask, a
second (non-square) image size and one that is not a whole number of patches; the bfloat16 forward to a few
bfloat16 steps."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import tensorflow as tf  # noqa: E402

import tfmodels  # noqa: E402
from tests import helpers  # noqa: E402

# A: per-layer relative bias, absolute positions, mask token, mean pooling, layer scale.
# B: shared relative bias, [CLS] pooling with the final LayerNorm, no layer scale.
BASE = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            image_size=32, patch_size=8, num_labels=5, drop_path_rate=0.0)
CONFIG_A = dict(BASE, use_relative_position_bias=True, use_absolute_position_embeddings=True, use_mask_token=True,
                layer_scale_init_value=0.1, use_mean_pooling=True)
CONFIG_B = dict(BASE, use_shared_relative_position_bias=True, use_mean_pooling=False, layer_scale_init_value=0.0)
SEGMENTATION = dict(BASE, num_hidden_layers=4, out_indices=[1, 2, 3, 4], use_relative_position_bias=True,
                    use_auxiliary_head=True, auxiliary_channels=16, auxiliary_num_convs=2,
                    auxiliary_concat_input=True, pool_scales=[1, 2, 3])
FIELDS = ("loss", "logits", "last_hidden_state", "pooler_output", "hidden_states", "attentions")


def build_pair(name, config_kwargs, tmp_path, seed=0):
    hf_config = transformers.BeitConfig(**config_kwargs, attn_implementation="eager")
    hf_model = helpers.hf_checkpoint(getattr(transformers, name), hf_config, str(tmp_path), seed=seed)
    ours, info = getattr(tfmodels, name).from_pretrained(str(tmp_path), output_loading_info=True)
    assert not info.missing and not info.mismatched and not info.unexpected, info.report()
    return hf_model, ours


def pixels(batch=3, height=32, width=32, seed=1):
    return np.random.RandomState(seed).randn(batch, 3, height, width).astype(np.float32)


def compare(hf_model, ours, inputs, fields=FIELDS, atol=helpers.ATOL, **options):
    with torch.no_grad():
        expected = hf_model(**helpers.torch_inputs(inputs), output_hidden_states=True, output_attentions=True,
                            **options)
    got = ours(**inputs, output_hidden_states=True, output_attentions=True, training=False, **options)
    present = [f for f in fields if f in got]
    assert set(present) <= set(expected.keys()), (present, list(expected.keys()))
    helpers.assert_outputs_close(got, expected, present, atol=atol)
    return got, expected


@pytest.mark.parametrize("config", [CONFIG_A, CONFIG_B], ids=["layer_bias_abs_mean", "shared_bias_cls"])
def test_base_model_at_two_image_sizes(config, tmp_path):
    hf_model, ours = build_pair("BeitModel", config, tmp_path)
    got, _ = compare(hf_model, ours, {"pixel_values": pixels()})
    assert len(got.hidden_states) == 3 and got.attentions[0].shape == (3, 4, 17, 17)
    # A second, non-square size: position embeddings (bicubic) and relative bias tables (bilinear) interpolated.
    got, _ = compare(hf_model, ours, {"pixel_values": pixels(height=48, width=40, seed=2)},
                     interpolate_pos_encoding=True)
    assert got.attentions[0].shape == (3, 4, 31, 31)
    compare(hf_model, ours, {"pixel_values": pixels(height=24, width=24, seed=3)})



def test_image_size_not_divisible_by_patch(tmp_path):
    """The patch embedding drops the pixels past the last whole patch, as the reference's strided convolution."""
    hf_model, ours = build_pair("BeitModel", CONFIG_A, tmp_path)
    got, _ = compare(hf_model, ours, {"pixel_values": pixels(height=46, width=39, seed=4)},
                     interpolate_pos_encoding=True)
    assert got.attentions[0].shape == (3, 4, 21, 21)


def test_training_forward_without_dropout_matches_reference(tmp_path):
    """training=True takes the unfused attention output (layer scale, drop path, residual as separate ops;
    inference folds them into the projection): with no dropout and no drop path, the same numbers."""
    hf_model, ours = build_pair("BeitModel", CONFIG_A, tmp_path)
    values = pixels(seed=6)
    with torch.no_grad():
        expected = hf_model(pixel_values=torch.tensor(values))
    got = ours(pixel_values=values, training=True)
    helpers.assert_outputs_close(got, expected, ["last_hidden_state", "pooler_output"])


@pytest.mark.parametrize("config", [CONFIG_A, CONFIG_B], ids=["layer_bias_abs_mean", "shared_bias_cls"])
def test_bfloat16_forward_within_bfloat16_steps_of_the_float32_reference(config, tmp_path):
    """bfloat16 variables and compute, eagerly and in a tf.function (grappler's oneDNN fusions, as the benchmark
    runs it), at the configured size and a non-divisible one: within 4 bfloat16 steps (2 ** -5 relative) of
    the largest float32 output (about 1% is typical)."""
    hf_model, _ = build_pair("BeitModel", config, tmp_path)
    ours = tfmodels.BeitModel.from_pretrained(str(tmp_path), dtype="bfloat16")
    graph = tf.function(lambda values: ours(pixel_values=values, training=False, interpolate_pos_encoding=True))
    for height, width in ((32, 32), (46, 39)):
        values = pixels(height=height, width=width, seed=5)
        with torch.no_grad():
            expected = hf_model(pixel_values=torch.tensor(values), interpolate_pos_encoding=True)
        for got in (ours(pixel_values=values, training=False, interpolate_pos_encoding=True),
                    graph(tf.constant(values))):
            for field in ("last_hidden_state", "pooler_output"):
                reference = getattr(expected, field).numpy()
                assert getattr(got, field).dtype == tf.bfloat16
                helpers.assert_close(tf.cast(getattr(got, field), tf.float32), reference,
                                     float(np.abs(reference).max()) * 2.0 ** -5, name=field)


def test_masked_image_modeling_logits_and_loss(tmp_path):
    hf_model, ours = build_pair("BeitForMaskedImageModeling", CONFIG_A, tmp_path)
    rng = np.random.RandomState(4)
    masked = (rng.rand(3, 16) < 0.4).astype(np.int32)
    labels = rng.randint(0, 50, int(masked.sum())).astype(np.int64)
    inputs = {"pixel_values": pixels(), "bool_masked_pos": masked, "labels": labels}
    with torch.no_grad():
        expected = hf_model(pixel_values=torch.tensor(inputs["pixel_values"]),
                            bool_masked_pos=torch.tensor(masked, dtype=torch.bool), labels=torch.tensor(labels),
                            output_hidden_states=True, output_attentions=True)
    got = ours(**inputs, output_hidden_states=True, output_attentions=True, training=False)
    helpers.assert_outputs_close(got, expected, ["loss", "logits", "hidden_states", "attentions"])
    # Per-patch labels [batch, num_patches] (only masked patches count) give the same loss.
    per_patch = np.full((3, 16), 7, np.int64)
    per_patch[masked == 1] = labels
    helpers.assert_close(ours(**{**inputs, "labels": per_patch}, training=False).loss, expected.loss)
    # Second image size with masking.
    masked2 = (rng.rand(3, 30) < 0.5).astype(np.int32)
    labels2 = rng.randint(0, 50, int(masked2.sum()))
    big = pixels(height=48, width=40, seed=5)
    with torch.no_grad():
        expected = hf_model(pixel_values=torch.tensor(big), bool_masked_pos=torch.tensor(masked2, dtype=torch.bool),
                            labels=torch.tensor(labels2), interpolate_pos_encoding=True)
    got = ours(pixel_values=big, bool_masked_pos=masked2, labels=labels2, interpolate_pos_encoding=True)
    helpers.assert_outputs_close(got, expected, ["loss", "logits"])


@pytest.mark.parametrize("problem_type,num_labels", [(None, 5), ("regression", 1),
                                                     ("multi_label_classification", 4)])
def test_image_classification_losses(problem_type, num_labels, tmp_path):
    config = dict(CONFIG_A, num_labels=num_labels, problem_type=problem_type)
    hf_model, ours = build_pair("BeitForImageClassification", config, tmp_path)
    rng = np.random.RandomState(6)
    if problem_type is None:
        labels = rng.randint(0, num_labels, 3)
    elif problem_type == "regression":
        labels = rng.randn(3).astype(np.float32)
    else:
        labels = (rng.rand(3, num_labels) > 0.5).astype(np.float32)
    compare(hf_model, ours, {"pixel_values": pixels(), "labels": labels})
    if problem_type is None:
        compare(hf_model, ours, {"pixel_values": pixels(height=40, width=48, seed=7), "labels": labels},
                interpolate_pos_encoding=True)


def test_classification_with_shared_bias_and_head_mask(tmp_path):
    hf_model, ours = build_pair("BeitForImageClassification", CONFIG_B, tmp_path)
    head_mask = np.array([[1, 0, 1, 1], [0.5, 1, 1, 0]], np.float32)
    got, _ = compare(hf_model, ours, {"pixel_values": pixels(), "head_mask": head_mask,
                                      "labels": np.array([0, 3, 4])})
    np.testing.assert_allclose(got.attentions[0].numpy()[:, 1], 0.0)


def test_semantic_segmentation_logits_and_loss_with_auxiliary_head(tmp_path):
    hf_model, ours = build_pair("BeitForSemanticSegmentation", SEGMENTATION, tmp_path)
    rng = np.random.RandomState(8)
    labels = rng.randint(0, 5, (3, 32, 32))
    labels[0, :5] = 255  # ignored pixels
    labels[2, :, 20:] = 255
    got, expected = compare(hf_model, ours, {"pixel_values": pixels(), "labels": labels})
    assert got.logits.shape == (3, 5, 16, 16)
    # The auxiliary head matters: without it the loss differs, and equals the reference's without it.
    assert abs(float(got.loss) - float(expected.loss)) < 1e-5
    # Labels of another size than the input (logits are upsampled to the labels), and no auxiliary head.
    small = rng.randint(0, 5, (3, 20, 28))
    compare(hf_model, ours, {"pixel_values": pixels(), "labels": small}, fields=("loss", "logits"))


def test_segmentation_without_auxiliary_head_and_single_conv(tmp_path):
    config = dict(SEGMENTATION, use_auxiliary_head=False, auxiliary_concat_input=False, pool_scales=[1, 2, 3, 6],
                  use_mean_pooling=False)
    hf_model, ours = build_pair("BeitForSemanticSegmentation", config, tmp_path)
    labels = np.random.RandomState(9).randint(0, 5, (3, 32, 32))
    compare(hf_model, ours, {"pixel_values": pixels(), "labels": labels}, fields=("loss", "logits"))


def test_our_checkpoint_loads_into_reference(tmp_path):
    """HF-format save_pretrained from our models (BatchNorm statistics included) loads into HF PyTorch."""
    for name, config in (("BeitForSemanticSegmentation", SEGMENTATION), ("BeitForMaskedImageModeling", CONFIG_A)):
        ours = getattr(tfmodels, name)(tfmodels.BeitConfig(**config))
        ours.build_model()
        directory = str(tmp_path / name)
        ours.save_pretrained(directory, hf_format=True)
        hf_model = getattr(transformers, name).from_pretrained(directory, attn_implementation="eager").eval()
        inputs = {"pixel_values": pixels()}
        compare(hf_model, ours, inputs, fields=("logits", "hidden_states"))
