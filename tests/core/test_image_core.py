"""Core pieces added for image models: torch-compatible resampling (core.image_ops), the semantic segmentation
loss, the image/segmentation tasks (private head outputs, forced base options), and pixel serving specs."""
import numpy as np
import pytest
import tensorflow as tf

import tfmodels
from tests import helpers
from tfmodels.core import image_ops, losses, outputs as out, tasks

torch = pytest.importorskip("torch")

SHAPES = [(14, 14, 20, 9), (5, 7, 3, 11), (4, 4, 1, 6), (27, 27, 47, 47), (6, 6, 6, 6), (7, 3, 2, 2)]


@pytest.mark.parametrize("in_h,in_w,out_h,out_w", SHAPES)
def test_resampling_matches_torch_static_and_dynamic(in_h, in_w, out_h, out_w):
    x = np.random.RandomState(0).randn(2, 3, in_h, in_w).astype(np.float32)
    nhwc = tf.constant(np.transpose(x, (0, 2, 3, 1)))
    functions = {"bicubic": image_ops.interpolate_bicubic, "bilinear": image_ops.interpolate_bilinear,
                 "pool": image_ops.adaptive_avg_pool}
    for kind, fn in functions.items():
        if kind == "pool":
            expected = torch.nn.AdaptiveAvgPool2d((out_h, out_w))(torch.tensor(x)).numpy()
        else:
            expected = torch.nn.functional.interpolate(torch.tensor(x), size=(out_h, out_w), mode=kind,
                                                       align_corners=False).numpy()
        static = np.transpose(fn(nhwc, (out_h, out_w)).numpy(), (0, 3, 1, 2))
        helpers.assert_close(static, expected, 1e-5, f"{kind} static")
        dynamic = tf.function(lambda t, h, w: fn(t, (h, w)), autograph=False,  # noqa: B023
                              input_signature=[tf.TensorSpec([None, None, None, 3]), tf.TensorSpec([], tf.int32),
                                               tf.TensorSpec([], tf.int32)])
        helpers.assert_close(np.transpose(dynamic(nhwc, out_h, out_w).numpy(), (0, 3, 1, 2)), expected, 1e-5,
                             f"{kind} dynamic")


def test_resampling_keeps_half_precision_dtype():
    x = tf.random.normal([1, 5, 5, 2], dtype=tf.bfloat16)
    for fn in (image_ops.interpolate_bicubic, image_ops.interpolate_bilinear, image_ops.adaptive_avg_pool):
        assert fn(x, (7, 3)).dtype == tf.bfloat16
    with pytest.raises(ValueError, match="Unknown resampling"):
        image_ops.resampling_matrix("lanczos", 4, 5)


def test_semantic_segmentation_loss_matches_torch():
    rng = np.random.RandomState(1)
    logits = rng.randn(2, 4, 6, 5).astype(np.float32)
    labels = rng.randint(0, 4, (2, 13, 11))
    labels[0, :4] = 255
    upsampled = torch.nn.functional.interpolate(torch.tensor(logits), size=(13, 11), mode="bilinear",
                                                align_corners=False)
    expected = torch.nn.CrossEntropyLoss(ignore_index=255)(upsampled, torch.tensor(labels))
    helpers.assert_close(losses.semantic_segmentation_loss(labels, logits, 255), expected, 1e-5)
    assert float(losses.semantic_segmentation_loss(np.full((2, 13, 11), 255), logits, 255)) == 0.0


class _Toy(tasks.SemanticSegmentationTask, tfmodels.PreTrainedModel):
    """A minimal head over a fake base model: checks private outputs and forced base options."""

    config_class = tfmodels.BeitConfig
    base_model_prefix = "base"
    main_input_name = "pixel_values"
    input_names = ("pixel_values",)
    base_options = {"output_hidden_states": True}

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.seen = {}

        def base(pixel_values=None, output_hidden_states=False, output_attentions=False, training=False):
            self.seen["output_hidden_states"] = output_hidden_states
            return out.BaseModelOutput(last_hidden_state=pixel_values, hidden_states=(pixel_values,))

        self.base = base

    def head(self, base_outputs, inputs, training=False):
        logits = tf.transpose(inputs["pixel_values"][..., :3], [0, 3, 1, 2])
        return {"logits": logits, "_auxiliary_logits": logits * 2.0}


def test_segmentation_task_private_outputs_and_forced_base_options():
    config = tfmodels.BeitConfig(num_labels=3, auxiliary_loss_weight=0.5)
    model = _Toy(config)
    pixels = np.random.RandomState(2).randn(2, 4, 4, 3).astype(np.float32)
    labels = np.random.RandomState(3).randint(0, 3, (2, 4, 4))
    result = model.forward({"pixel_values": tf.constant(pixels)}, {"labels": labels},
                           {"output_hidden_states": None, "output_attentions": None, "return_dict": True})
    assert model.seen["output_hidden_states"] is True
    assert list(result.keys()) == ["loss", "logits"]  # no hidden states (not asked), no private key
    logits = np.transpose(pixels, (0, 3, 1, 2))
    expected = losses.semantic_segmentation_loss(labels, logits, 255) + \
        0.5 * losses.semantic_segmentation_loss(labels, logits * 2.0, 255)
    helpers.assert_close(result.loss, expected, 1e-6)
    asked = model.forward({"pixel_values": tf.constant(pixels)}, {}, {"output_hidden_states": True,
                                                                       "return_dict": True})
    assert "hidden_states" in asked and "loss" not in asked


def test_pixel_serving_specs_and_signatures():
    model = tfmodels.BeitForImageClassification(tfmodels.BeitConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8, image_size=16,
        patch_size=8))
    spec = model.serving_input_spec("pixel_values")
    assert spec.dtype == tf.float32 and spec.shape.as_list() == [None, 3, None, None]
    mim = tfmodels.BeitForMaskedImageModeling(model.config)
    assert mim.serving_input_spec("bool_masked_pos").dtype == tf.int32
    text = tfmodels.XLMRobertaXLForMultipleChoice(tfmodels.XLMRobertaXLConfig(
        vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
        max_position_embeddings=16))
    assert text.serving_input_spec("input_ids").shape.rank == 3
    assert model.dummy_inputs()["pixel_values"].shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="image model"):
        text.export("/tmp/unused", image_processor=tfmodels.BeitImageProcessor())
    with pytest.raises(ValueError, match="raw-text signature"):
        model.export("/tmp/unused", tokenizer=object())
