"""Parity with Hugging Face PyTorch MRA (transformers 4.57.6) on a CPU.

HF's MRA needs its CUDA extension (without it `mra2_attention` returns zeros); here its three kernel calls run
on the pure-torch stand-in of tests/parity/mra/hf_kernels.py, checked first against dense softmax (all blocks
selected) and against an independent block-sparse softmax (some blocks selected). HF-written checkpoints
(every parameter randomised) load into our classes and give the same loss, logits and hidden states at atol
1e-5, on batch 1 and on unpadded batches, where the reference is correct. For padded batches (where the
reference is not: NaN from its integer mask conversion, and a mask mis-ordered over heads for batch > 1) each
row equals the example run alone, and those examples match HF run alone.
"""
import math

import numpy as np
import pytest
import tensorflow as tf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import tfmodels  # noqa: E402
from tests import helpers  # noqa: E402
from tests.parity.mra import hf_kernels  # noqa: E402
from tfmodels.core.checkpoint import named_variables  # noqa: E402
from transformers.models.mra import modeling_mra  # noqa: E402

# max_position_embeddings 128 and block_per_row 2: 8 high-resolution blocks; at 128 tokens that is half of the
# 4 x 4 block grid, so both resolutions are in play. HF needs lengths that are multiples of 32 with at least
# 8 blocks in the grid: 96 and 128.
TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=128, block_per_row=2)
HEADS = ["MraModel", "MraForMaskedLM", "MraForSequenceClassification", "MraForMultipleChoice",
         "MraForTokenClassification", "MraForQuestionAnswering"]
CONFIG_KW = {"MraForSequenceClassification": {"num_labels": 3}, "MraForTokenClassification": {"num_labels": 5}}


@pytest.fixture(autouse=True)
def standin_kernels():
    previous = hf_kernels.install(modeling_mra)
    yield
    modeling_mra.mra_cuda_kernel = previous


def build_pair(name, tmp_path, seed=0, **config_kwargs):
    hf_config = transformers.MraConfig(**{**TINY, **config_kwargs})
    hf_model = helpers.hf_checkpoint(getattr(transformers, name), hf_config, str(tmp_path), seed=seed)
    ours, info = getattr(tfmodels, name).from_pretrained(str(tmp_path), output_loading_info=True)
    assert not info.missing and not info.mismatched and not info.unexpected, info.report()
    return hf_model, ours


def labelled_inputs(name, config, batch, length, seed=1):
    rng = np.random.RandomState(seed)
    ids = rng.randint(3, config.vocab_size, (batch, length)).astype(np.int32)  # no pad ids: no padding
    inputs = {"input_ids": ids}
    if name == "MraForMultipleChoice":
        inputs = {"input_ids": np.stack([ids, ids[:, ::-1]], 1), "labels": rng.randint(0, 2, batch).astype(np.int32)}
    elif name == "MraForMaskedLM":
        labels = rng.randint(0, config.vocab_size, ids.shape)
        inputs["labels"] = np.where(rng.rand(*ids.shape) < 0.3, labels, -100).astype(np.int32)
    elif name == "MraForTokenClassification":
        inputs["labels"] = rng.randint(0, config.num_labels, ids.shape).astype(np.int32)
    elif name == "MraForSequenceClassification":
        inputs["labels"] = rng.randint(0, config.num_labels, batch).astype(np.int32)
    elif name == "MraForQuestionAnswering":
        # one position past the end: clamped and ignored, as in the reference
        inputs["start_positions"] = np.array([1, 40, 500][:batch], np.int32)
        inputs["end_positions"] = np.array([3, 80, 2][:batch], np.int32)
    return inputs


def compare(hf_model, ours, inputs, with_mask=False):
    if with_mask:  # an all-ones mask (the reference handles that one right)
        inputs = {**inputs, "attention_mask": np.ones_like(inputs["input_ids"])}
    with torch.no_grad():
        expected = hf_model(**helpers.torch_inputs(inputs), output_hidden_states=True)
    got = ours(**inputs, output_hidden_states=True, training=False)
    fields = [f for f in ("loss", "logits", "start_logits", "end_logits", "last_hidden_state", "hidden_states")
              if f in got]
    helpers.assert_outputs_close(got, expected, fields)
    return got


# ---------------------------------------------------------------------------------------------------------------
# The stand-in kernels


def test_standin_with_every_block_selected_is_dense_softmax():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 128, 32) for _ in range(3))
    dense = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(32), -1) @ v
    for mode in ("full", "sparse"):
        out = modeling_mra.mra2_attention(q, k, v, torch.ones(6, 128), num_blocks=16, approx_mode=mode)
        assert float((out - dense).abs().max()) <= 1e-6, mode  # DESIGN §7: about 5e-7


def test_standin_sparse_mode_is_softmax_over_the_selected_blocks():
    """An independent reference: in approx_mode "sparse" the output is the softmax restricted to the selected
    blocks. The selection is recomputed from the reference's own low-resolution scores."""
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 2, 128, 32) for _ in range(3))
    out = modeling_mra.mra2_attention(q, k, v, torch.ones(2, 128), num_blocks=6, approx_mode="sparse")
    qf, kf = q.reshape(2, 128, 32), k.reshape(2, 128, 32)
    low, _, _, _ = modeling_mra.get_low_resolution_logit(qf, kf, 32, torch.ones(2, 128))
    normalised = low - low.max(dim=-1, keepdim=True).values  # the reference ranks row-normalised scores
    chosen = torch.topk(normalised.reshape(2, -1), 6, dim=-1).indices
    allowed = torch.zeros(2, 16, dtype=torch.bool).scatter_(1, chosen, True).reshape(2, 4, 4)
    allowed = allowed.repeat_interleave(32, 1).repeat_interleave(32, 2)
    scores = (qf @ kf.transpose(-1, -2) / math.sqrt(32)).masked_fill(~allowed, -math.inf)
    expected = torch.nan_to_num(torch.softmax(scores, -1)) @ v.reshape(2, 128, 32)
    assert float((out.reshape(2, 128, 32) - expected).abs().max()) <= 1e-5
    assert float((out.reshape(2, 128, 32) - torch.softmax(qf @ kf.transpose(-1, -2) / math.sqrt(32), -1)
                  @ v.reshape(2, 128, 32)).abs().max()) > 1e-2  # not dense: the sparsity is real


# ---------------------------------------------------------------------------------------------------------------
# Every head


@pytest.mark.parametrize("name", HEADS)
def test_every_head_matches_reference(name, tmp_path):
    hf_model, ours = build_pair(name, tmp_path, **CONFIG_KW.get(name, {}))
    for batch, length, with_mask in ((1, 128, False), (3, 128, True), (1, 96, True)):
        inputs = labelled_inputs(name, ours.config, batch, length)
        if name == "MraModel":
            inputs.pop("labels", None)
        got = compare(hf_model, ours, inputs, with_mask)
        if name != "MraModel":
            assert "loss" in got


@pytest.mark.parametrize("config_kwargs", [{"approx_mode": "sparse"},
                                           {"initial_prior_first_n_blocks": 1, "initial_prior_diagonal_n_blocks": 3},
                                           {"block_per_row": 1, "hidden_act": "relu"},
                                           {"hidden_size": 64, "num_attention_heads": 1},  # head_dim 64
                                           {"position_embedding_type": "relative_key"}],
                         ids=["sparse", "priors", "budget4-relu", "head_dim64", "relative_key"])
def test_attention_options_match_reference(config_kwargs, tmp_path):
    hf_model, ours = build_pair("MraForMaskedLM", tmp_path, **config_kwargs)
    for batch, length in ((2, 128), (1, 96)):
        compare(hf_model, ours, labelled_inputs("MraForMaskedLM", ours.config, batch, length, seed=length))


@pytest.mark.parametrize("problem_type,num_labels", [("regression", 1), ("multi_label_classification", 4)])
def test_sequence_classification_problem_types(problem_type, num_labels, tmp_path):
    hf_model, ours = build_pair("MraForSequenceClassification", tmp_path, num_labels=num_labels,
                                problem_type=problem_type)
    inputs = labelled_inputs("MraForSequenceClassification", ours.config, 2, 128)
    rng = np.random.RandomState(3)
    if problem_type == "regression":
        inputs["labels"] = rng.randn(2).astype(np.float32)
    else:
        inputs["labels"] = (rng.rand(2, num_labels) > 0.5).astype(np.float32)
    compare(hf_model, ours, inputs)


def test_loss_gradients_match_reference(tmp_path):
    """Backward through the stand-in (HF's autograd functions call sparse_dense_mm / mm_to_sparse) vs ours."""
    hf_model, ours = build_pair("MraForSequenceClassification", tmp_path, num_labels=3)
    inputs = labelled_inputs("MraForSequenceClassification", ours.config, 2, 128)
    hf_model.zero_grad()
    hf_model(**helpers.torch_inputs(inputs)).loss.backward()
    reference = {name: p.grad.numpy() for name, p in hf_model.named_parameters()}
    named = named_variables(ours)
    with tf.GradientTape() as tape:
        loss = ours(**inputs, training=False).loss
    grads = tape.gradient(loss, [n.variable for n in named])
    assert len(named) == len(reference)
    for n, grad in zip(named, grads):
        grad = tf.convert_to_tensor(grad).numpy()
        if n.permutation is not None:
            grad = np.transpose(grad, np.argsort(n.permutation))
        helpers.assert_close(grad, reference[n.name], 1e-5, f"grad {n.name}")


# ---------------------------------------------------------------------------------------------------------------
# Padded batches


def test_padded_batch_rows_equal_examples_alone_and_the_reference(tmp_path):
    hf_model, ours = build_pair("MraForMaskedLM", tmp_path)
    lengths = [128, 96, 77, 33, 6]
    ids, mask = helpers.padded_ids(len(lengths), 128, 99, 1, seed=4, lengths=lengths)
    batched = ours(input_ids=ids, attention_mask=mask, training=False).logits.numpy()
    assert np.all(np.isfinite(batched))
    for i, n in enumerate(lengths):
        alone = ours(input_ids=ids[i:i + 1, :n], training=False).logits.numpy()
        helpers.assert_close(batched[i, :n], alone[0], 1e-5, f"row {i} (length {n}) vs alone")
        if n % 32 == 0:  # the reference runs these lengths alone
            with torch.no_grad():
                expected = hf_model(torch.tensor(ids[i:i + 1, :n], dtype=torch.long)).logits
            helpers.assert_close(alone, expected, 1e-5, f"example {i} alone vs HF")
    # What the reference does with the same padded batch (why we do not copy it): NaN.
    with torch.no_grad():
        reference = hf_model(torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask)).logits
    assert not torch.isfinite(reference).all()


def test_padding_masks_match_reference_run_per_example(tmp_path):
    """The reference's mask path is right for one example once its additive mask uses the -10000 convention
    that `1 + mask / 10000` was written for (HF now fills with the dtype's minimum, which overflows to NaN):
    then HF run on each padded example alone matches our row of the padded batch (lengths here keep the
    4-block grid, so the per-example grid is the reference's). HF run on the whole batch does not: it repeats
    the mask over heads as mask[r % batch] where row r = b * heads + h needs mask[b]."""
    hf_model, ours = build_pair("MraForTokenClassification", tmp_path, num_labels=5)
    hf_model.base_model.get_extended_attention_mask = lambda mask, shape, *args, **kwargs: \
        (1.0 - mask[:, None, None, :].float()) * -10000.0
    lengths = [128, 120, 100, 97]
    ids, mask = helpers.padded_ids(len(lengths), 128, 99, 1, seed=5, lengths=lengths)
    labels = np.where(mask == 1, np.random.RandomState(6).randint(0, 5, ids.shape), -100).astype(np.int32)
    got = ours(input_ids=ids, attention_mask=mask, training=False).logits.numpy()
    whole = hf_model(torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask)).logits.detach().numpy()
    whole_matches = []
    for i, n in enumerate(lengths):
        inputs = {"input_ids": ids[i:i + 1], "attention_mask": mask[i:i + 1], "labels": labels[i:i + 1]}
        with torch.no_grad():
            expected = hf_model(**helpers.torch_inputs(inputs))
        helpers.assert_close(got[i, :n], expected.logits[0, :n], 1e-5, f"row {i} (length {n})")
        helpers.assert_close(ours(**inputs, training=False).loss, expected.loss, 1e-5, f"loss {i}")
        whole_matches.append(np.abs(whole[i, :n] - got[i, :n]).max() <= 1e-5)
    assert not all(whole_matches)  # the reference's batch-level mask order is wrong; ours is per example


def test_our_checkpoint_loads_into_reference(tmp_path):
    """HF-format save_pretrained from our model loads into HF PyTorch and gives the same outputs."""
    config = tfmodels.MraConfig(**TINY)
    ours = tfmodels.MraForMaskedLM(config)
    ours.build_model()
    ours.save_pretrained(str(tmp_path), hf_format=True)
    hf_model = transformers.MraForMaskedLM.from_pretrained(str(tmp_path)).eval()
    compare(hf_model, ours, labelled_inputs("MraForMaskedLM", config, 2, 128))
