"""Every head of every family (found through the registry and each family's package, so a new family or head is
covered as soon as it exists) exported with every signature it has, and served through TensorFlow's C++
SavedModel loader by the C API harness (helpers.export_and_check): serving_default, serving_int64, serving_text
and serving_text_pair (every head that takes [batch, length] ids, with the family's bundled tokenizer),
serving_image (image heads); outputs equal the Keras model's to 1e-5, and every warm-up request runs."""
import io
import os

import numpy as np
import PIL.Image
import pytest

from tests import helpers
from tfmodels import registry
from tfmodels.core.modeling import PreTrainedModel

TEXTS = ["A first sentence.", "Une deuxième phrase!", "Drittes Beispiel, 1999"]  # pairs fit 64 positions


def family_heads(spec):
    """Every model class of the family package (aliases once), in name order."""
    heads = []
    for name, value in sorted(vars(spec.package()).items()):
        if (isinstance(value, type) and issubclass(value, PreTrainedModel) and name.startswith(spec.prefix)
                and not name.endswith("PreTrainedModel") and value not in heads):
            heads.append(value)
    return heads


def tiny_config(spec, head, vocab_size=None):
    name = f"{spec.name}-tiny.json"
    if head.__name__.endswith("ForSemanticSegmentation"):
        name = f"{spec.name}-tiny-segmentation.json"
    config = spec.config_class().from_pretrained(os.path.join(registry.CONFIGS_DIR, name))
    if vocab_size and config.vocab_size < vocab_size:  # every id the tokenizer makes must be in the table
        config = spec.config_class().from_pretrained(os.path.join(registry.CONFIGS_DIR, name), vocab_size=vocab_size)
    return config


def text_inputs(model, tokenizer):
    encoded = tokenizer(TEXTS, padding=True, return_tensors="np")
    ids = encoded["input_ids"]
    inputs = {name: encoded.get(name, np.zeros_like(ids)) for name in model.serving_input_names
              if name in model.all_input_names}
    if model.serving_input_spec("input_ids").shape.rank == 3:  # multiple choice: two choices per example
        inputs = {k: np.stack([v, v[::-1]], axis=1) for k, v in inputs.items()}
    return inputs


def encoded_images(size):
    rng = np.random.RandomState(0)
    data = []
    for i, (height, width) in enumerate([(size + 8, size), (size, size + 16)]):
        buffer = io.BytesIO()
        pixels = rng.randint(0, 256, (height, width, 3)).astype(np.uint8)
        PIL.Image.fromarray(pixels).save(buffer, format="PNG" if i == 0 else "JPEG")
        data.append(buffer.getvalue())
    return data


def image_inputs(model, processor, images):
    pixels = processor([helpers._decode_reference(data) for data in images], return_tensors="np")["pixel_values"]
    inputs = {"pixel_values": pixels}
    if "bool_masked_pos" in model.serving_input_names:
        patch_height, patch_width = model.config.patch_size_2d
        patches = (pixels.shape[2] // patch_height) * (pixels.shape[3] // patch_width)
        inputs["bool_masked_pos"] = np.random.RandomState(1).randint(0, 2, (len(images), patches)).astype(np.int32)
    return inputs


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(registry.families()))
def test_every_head_and_signature_serves_through_the_cpp_loader(family, tmp_path):
    spec = registry.get_family(family)
    jobs = []
    if spec.modality == "image":
        for head in family_heads(spec):
            model = head(tiny_config(spec, head))
            size = model.config.image_size
            processor = spec.image_processor_class()(size={"height": size + 8, "width": size + 8}, crop_size=size)
            images = encoded_images(size)
            jobs.append((head.__name__, model, image_inputs(model, processor, images), processor, images))
    else:
        tokenizer = spec.default_tokenizer()
        for head in family_heads(spec):
            model = head(tiny_config(spec, head, vocab_size=len(tokenizer)))
            jobs.append((head.__name__, model, text_inputs(model, tokenizer), tokenizer, TEXTS))
    results = helpers.export_and_check(jobs, tmp_path)
    served = {signature for result in results for signature in result["signatures"]}
    kinds = ("serving_image",) if spec.modality == "image" else ("serving_text", "serving_text_pair")
    assert served == {"serving_default", "serving_int64", *kinds}, served
