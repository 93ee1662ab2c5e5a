"""The reference's embeddings are nn.Embedding(..., padding_idx=pad_token_id): the pad row of the word table gets
no gradient (and with RoBERTa's padding-aware positions, that of the position table too). The shared
core.encoder.TextEmbeddings reproduces it for every family that uses it; here each family's gradient of the
whole table equals HF PyTorch's, and the pad row's is exactly zero.

The pad id appears as an ordinary, attended token (no attention mask), so that the reference runs where it is
right (YOSO's and MRA's padding masks are handled differently there, see their parity tests) and the pad
positions reach the loss.
"""
import numpy as np
import pytest
import tensorflow as tf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import tfmodels  # noqa: E402
from tests import helpers  # noqa: E402
from tests.parity.mra import hf_kernels  # noqa: E402
from tests.parity.mra.test_parity import TINY as MRA_TINY  # noqa: E402
from tests.parity.nystromformer.test_parity import LENGTH as NYSTROMFORMER_LENGTH  # noqa: E402
from tests.parity.longformer.test_parity import LENGTH as LONGFORMER_LENGTH  # noqa: E402
from tests.parity.longformer.test_parity import TINY as LONGFORMER_TINY  # noqa: E402
from tests.parity.nystromformer.test_parity import TINY as NYSTROMFORMER_TINY  # noqa: E402
from tests.parity.xlm_roberta_xl.test_parity import TINY as XLM_ROBERTA_XL_TINY  # noqa: E402
from tests.parity.yoso.test_parity import TINY as YOSO_TINY  # noqa: E402
from transformers.models.mra import modeling_mra  # noqa: E402

# family: (model class name, config keyword arguments, sequence length, tables with a padding_idx)
FAMILIES = {
    "yoso": ("YosoModel", YOSO_TINY, 10, ("word_embeddings",)),
    "mra": ("MraModel", MRA_TINY, 128, ("word_embeddings",)),
    "nystromformer": ("NystromformerModel", NYSTROMFORMER_TINY, NYSTROMFORMER_LENGTH, ("word_embeddings",)),
    "xlm_roberta_xl": ("XLMRobertaXLModel", {**XLM_ROBERTA_XL_TINY, "attn_implementation": "eager"}, 10,
                       ("word_embeddings", "position_embeddings")),
    "longformer": ("LongformerModel", LONGFORMER_TINY, LONGFORMER_LENGTH, ("word_embeddings", "position_embeddings")),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_pad_rows_get_no_gradient(family, tmp_path):
    name, config_kwargs, length, tables = FAMILIES[family]
    config_class = getattr(transformers, name.replace("Model", "Config"))
    hf_model = helpers.hf_checkpoint(getattr(transformers, name), config_class(**config_kwargs), str(tmp_path))
    ours = getattr(tfmodels, name).from_pretrained(str(tmp_path))
    pad = ours.config.pad_token_id
    rng = np.random.RandomState(0)
    ids = rng.randint(0, ours.config.vocab_size, (2, length)).astype(np.int32)
    ids[:, -3:] = pad
    ids[0, 1] = pad
    weights = rng.randn(2, length, ours.config.hidden_size).astype(np.float32)

    previous = hf_kernels.install(modeling_mra) if family == "mra" else None
    try:
        hf_model.zero_grad()
        hidden = hf_model(input_ids=torch.tensor(ids, dtype=torch.long)).last_hidden_state
        (hidden * torch.tensor(weights)).mean().backward()
    finally:
        if family == "mra":
            modeling_mra.mra_cuda_kernel = previous
    tables = [(getattr(ours.base_model.embeddings, table).embeddings,
               getattr(hf_model.embeddings, table).weight.grad.numpy()) for table in tables]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(ours(input_ids=ids, training=False).last_hidden_state * weights)
    grads = tape.gradient(loss, [variable for variable, _ in tables])
    for (variable, expected), grad in zip(tables, grads):
        name = variable.path
        grad = tf.convert_to_tensor(grad).numpy()
        assert not np.any(expected[pad]), f"{name}: the reference's pad row should get no gradient"
        assert np.any(expected), f"{name}: real rows get a gradient"
        assert not np.any(grad[pad]), f"{family}: the pad row of {name} got a gradient"
        helpers.assert_close(grad, expected, 1e-5, f"{family} d loss / d {name}")
