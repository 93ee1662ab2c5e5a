"""Parity with Hugging Face PyTorch YOSO (transformers 4.57.6), expectation mode (YOSO-E: the only path the
reference runs without CUDA): HF-written checkpoints loaded into our classes, batch >= 2 with padding, atol 1e-5
for logits, hidden states, attention contexts, losses and gradients.

The reference ignores padding in its attention (it maps the 0/1 attention_mask through int(1 + mask / 10000),
which is 1 everywhere); we exclude padded keys, as the original YOSO code does. With padding, the reference is
therefore run with that one bug fixed (`hf_padding_fixed`: its cumulation receives the real 0/1 masks, exactly
what the original code passes); without padding it runs unmodified. `test_reference_padding_leak` documents the
difference.
"""
import contextlib

import numpy as np
import pytest
import tensorflow as tf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import tfmodels  # noqa: E402
from tests import helpers  # noqa: E402
from tfmodels.core.checkpoint import named_variables  # noqa: E402

modeling_yoso = pytest.importorskip("transformers.models.yoso.modeling_yoso")

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64)
PAIRS = [("YosoModel", {}), ("YosoForMaskedLM", {}), ("YosoForSequenceClassification", {"num_labels": 3}),
         ("YosoForMultipleChoice", {}), ("YosoForTokenClassification", {"num_labels": 5}),
         ("YosoForQuestionAnswering", {})]
LENGTHS = [10, 7, 4]


@contextlib.contextmanager
def hf_padding_fixed(attention_mask):
    """Run HF YOSO with the real padding mask reaching its attention (see the module docstring)."""
    original = modeling_yoso.YosoCumulation
    mask = torch.tensor(np.asarray(attention_mask).reshape(-1, np.asarray(attention_mask).shape[-1]),
                        dtype=torch.int32)

    class MaskedCumulation:
        @staticmethod
        def apply(query_mask, key_mask, query, key, value, config):
            per_head = mask.repeat_interleave(query.shape[0] // mask.shape[0], dim=0)
            return original.apply(per_head, per_head, query, key, value, config)

    modeling_yoso.YosoCumulation = MaskedCumulation
    try:
        yield
    finally:
        modeling_yoso.YosoCumulation = original


def build_pair(name, tmp_path, seed=0, **config_kwargs):
    hf_config = transformers.YosoConfig(**{**TINY, **config_kwargs})
    hf_model = helpers.hf_checkpoint(getattr(transformers, name), hf_config, str(tmp_path), seed=seed)
    ours, info = getattr(tfmodels, name).from_pretrained(str(tmp_path), output_loading_info=True)
    assert not info.missing and not info.mismatched and not info.unexpected, info.report()
    return hf_model, ours


def labelled_inputs(name, config, batch=3, length=10, lengths=LENGTHS):
    ids, mask = helpers.padded_ids(batch, length, config.vocab_size, config.pad_token_id, seed=1, lengths=lengths)
    rng = np.random.RandomState(2)
    inputs = {"input_ids": ids, "attention_mask": mask}
    if name == "YosoForMultipleChoice":
        inputs = {"input_ids": np.stack([ids, ids[:, ::-1]], 1), "attention_mask": np.stack([mask, mask[:, ::-1]], 1),
                  "labels": rng.randint(0, 2, batch).astype(np.int32)}
    elif name == "YosoForMaskedLM":
        inputs["labels"] = np.where(mask == 1, rng.randint(0, config.vocab_size, ids.shape), -100).astype(np.int32)
    elif name == "YosoForTokenClassification":
        inputs["labels"] = rng.randint(0, config.num_labels, ids.shape).astype(np.int32)
    elif name == "YosoForSequenceClassification":
        inputs["labels"] = rng.randint(0, config.num_labels, batch).astype(np.int32)
    elif name == "YosoForQuestionAnswering":
        # one position past the end: clamped and ignored, as in the reference
        inputs["start_positions"] = np.array([1, 4, 50][:batch], np.int32)
        inputs["end_positions"] = np.array([3, 8, 2][:batch], np.int32)
    return inputs


def compare(hf_model, ours, inputs, fields=None, atol=1e-5, fixed=True):
    context = hf_padding_fixed(inputs["attention_mask"]) if fixed else contextlib.nullcontext()
    with torch.no_grad(), context:
        expected = hf_model(**helpers.torch_inputs(inputs), output_hidden_states=True, output_attentions=True)
    got = ours(**inputs, output_hidden_states=True, output_attentions=True, training=False)
    fields = fields or [f for f in ("loss", "logits", "start_logits", "end_logits", "last_hidden_state",
                                    "hidden_states", "attentions") if f in got]
    assert set(fields) <= set(expected.keys()), (fields, list(expected.keys()))
    helpers.assert_outputs_close(got, expected, fields, atol=atol)
    return got, expected


@pytest.mark.parametrize("name,config_kwargs", PAIRS, ids=[p[0] for p in PAIRS])
def test_every_head_matches_reference_with_padding(name, config_kwargs, tmp_path):
    hf_model, ours = build_pair(name, tmp_path, **config_kwargs)
    inputs = labelled_inputs(name, ours.config)
    got, _ = compare(hf_model, ours, inputs)
    if name != "YosoModel":
        assert "loss" in got
    assert len(got.attentions) == 2 and got.attentions[0].shape[-1] == TINY["hidden_size"]


@pytest.mark.parametrize("name", ["YosoForMaskedLM", "YosoForTokenClassification"])
def test_unpadded_batch_matches_the_unmodified_reference(name, tmp_path):
    hf_model, ours = build_pair(name, tmp_path, num_labels=4)
    inputs = labelled_inputs(name, ours.config, lengths=[10, 10, 10])
    compare(hf_model, ours, inputs, fixed=False)


def test_reference_padding_leak(tmp_path):
    """Ours: a padded batch gives the real tokens exactly the outputs of the unpadded sequences. The unmodified
    reference does not (padding leaks into its attention), which is why padded parity fixes its masking."""
    hf_model, ours = build_pair("YosoModel", tmp_path)
    ids, mask = helpers.padded_ids(2, 10, 99, 1, seed=3, lengths=[10, 6])
    alone = ours(input_ids=ids[1:, :6], training=False).last_hidden_state.numpy()
    padded = ours(input_ids=ids, attention_mask=mask, training=False).last_hidden_state.numpy()
    helpers.assert_close(padded[1, :6], alone[0], 1e-5, "ours, padded vs alone")
    with torch.no_grad():
        hf_alone = hf_model(torch.tensor(ids[1:, :6], dtype=torch.long)).last_hidden_state.numpy()
        hf_padded = hf_model(torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask)
                             ).last_hidden_state.numpy()
    helpers.assert_close(hf_alone[0], alone[0], 1e-5, "reference vs ours, unpadded")
    assert np.abs(hf_padded[1, :6] - hf_alone[0]).max() > 1e-3  # the reference's padding leak


@pytest.mark.parametrize("problem_type,num_labels", [("regression", 1), ("multi_label_classification", 4),
                                                     ("single_label_classification", 3)])
def test_sequence_classification_problem_types(problem_type, num_labels, tmp_path):
    hf_model, ours = build_pair("YosoForSequenceClassification", tmp_path, num_labels=num_labels,
                                problem_type=problem_type)
    inputs = labelled_inputs("YosoForSequenceClassification", ours.config)
    rng = np.random.RandomState(3)
    if problem_type == "regression":
        inputs["labels"] = rng.randn(3).astype(np.float32)
    elif problem_type == "multi_label_classification":
        inputs["labels"] = (rng.rand(3, num_labels) > 0.5).astype(np.float32)
    compare(hf_model, ours, inputs, ["loss", "logits"])


@pytest.mark.parametrize("kind", ["relative_key", "relative_key_query"])
def test_relative_position_types_match_reference(kind, tmp_path):
    hf_model, ours = build_pair("YosoForMaskedLM", tmp_path, position_embedding_type=kind)
    compare(hf_model, ours, labelled_inputs("YosoForMaskedLM", ours.config), ["loss", "logits", "attentions"])


def test_conv_window_matches_reference(tmp_path):
    hf_model, ours = build_pair("YosoForTokenClassification", tmp_path, conv_window=3, num_labels=3,
                                hash_code_len=5)
    assert ours.yoso.encoder.layer[0].attention.self.conv.kernel.shape == (3, 1, 4, 1)
    compare(hf_model, ours, labelled_inputs("YosoForTokenClassification", ours.config))


def test_inputs_embeds_token_types_and_position_ids_match_reference(tmp_path):
    hf_model, ours = build_pair("YosoModel", tmp_path, type_vocab_size=2)
    _, mask = helpers.padded_ids(2, 6, 99, 1, seed=7)
    rng = np.random.RandomState(8)
    inputs = {"inputs_embeds": rng.randn(2, 6, 32).astype(np.float32), "attention_mask": mask,
              "token_type_ids": np.array([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1]], np.int32),
              "position_ids": np.array([[2, 3, 4, 5, 6, 7], [9, 8, 7, 6, 5, 4]], np.int32)}
    compare(hf_model, ours, inputs, ["last_hidden_state", "attentions"])


def test_loss_gradients_match_reference(tmp_path):
    """YOSO-E's backward is the reference's (L/2-scaled, not the exact derivative of arccos): every parameter's
    gradient of the classification loss matches, with padding."""
    hf_model, ours = build_pair("YosoForSequenceClassification", tmp_path, num_labels=3)
    inputs = labelled_inputs("YosoForSequenceClassification", ours.config)
    hf_model.zero_grad()
    with hf_padding_fixed(inputs["attention_mask"]):
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


def test_our_checkpoint_loads_into_reference(tmp_path):
    """HF-format save_pretrained from our model loads into HF PyTorch and gives the same outputs."""
    config = tfmodels.YosoConfig(**TINY, conv_window=3)
    ours = tfmodels.YosoForMaskedLM(config)
    ours.build_model()
    ours.save_pretrained(str(tmp_path), hf_format=True)
    hf_model = transformers.YosoForMaskedLM.from_pretrained(str(tmp_path)).eval()
    inputs = labelled_inputs("YosoForMaskedLM", config)
    with torch.no_grad(), hf_padding_fixed(inputs["attention_mask"]):
        expected = hf_model(**helpers.torch_inputs(inputs))
    helpers.assert_outputs_close(ours(**inputs, training=False), expected, ["loss", "logits"])
