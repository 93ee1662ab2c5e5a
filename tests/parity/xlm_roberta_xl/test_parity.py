"""Parity with Hugging Face PyTorch (transformers 4.57.6): HF-written checkpoints loaded into our classes,
batch >= 2 with padding, atol 1e-5 for logits, hidden states, attentions, losses and gradients."""
import numpy as np
import pytest
import tensorflow as tf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import tfmodels  # noqa: E402
from tests import helpers  # noqa: E402
from tfmodels.core.checkpoint import named_variables  # noqa: E402

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64)
PAIRS = [("XLMRobertaXLModel", {}), ("XLMRobertaXLForMaskedLM", {}),
         ("XLMRobertaXLForCausalLM", {"is_decoder": True}),
         ("XLMRobertaXLForSequenceClassification", {"num_labels": 3}),
         ("XLMRobertaXLForMultipleChoice", {}), ("XLMRobertaXLForTokenClassification", {"num_labels": 5}),
         ("XLMRobertaXLForQuestionAnswering", {})]


def build_pair(name, tmp_path, seed=0, **config_kwargs):
    hf_config = transformers.XLMRobertaXLConfig(**{**TINY, **config_kwargs}, attn_implementation="eager")
    hf_model = helpers.hf_checkpoint(getattr(transformers, name), hf_config, str(tmp_path), seed=seed)
    ours, info = getattr(tfmodels, name).from_pretrained(str(tmp_path), output_loading_info=True)
    assert not info.missing and not info.mismatched, info.report()
    assert not info.unexpected, info.report()
    return hf_model, ours


def labelled_inputs(name, config, batch=3, length=10):
    ids, mask = helpers.padded_ids(batch, length, config.vocab_size, config.pad_token_id, seed=1)
    rng = np.random.RandomState(2)
    inputs = {"input_ids": ids, "attention_mask": mask}
    if name == "XLMRobertaXLForMultipleChoice":
        inputs = {"input_ids": np.stack([ids, ids[:, ::-1]], 1), "attention_mask": np.stack([mask, mask[:, ::-1]], 1),
                  "labels": rng.randint(0, 2, batch).astype(np.int32)}
    elif name in ("XLMRobertaXLForMaskedLM", "XLMRobertaXLForCausalLM"):
        inputs["labels"] = np.where(mask == 1, rng.randint(0, config.vocab_size, ids.shape), -100).astype(np.int32)
    elif name == "XLMRobertaXLForTokenClassification":
        inputs["labels"] = rng.randint(0, config.num_labels, ids.shape).astype(np.int32)
    elif name == "XLMRobertaXLForSequenceClassification":
        inputs["labels"] = rng.randint(0, config.num_labels, batch).astype(np.int32)
    elif name == "XLMRobertaXLForQuestionAnswering":
        # one position past the end: clamped and ignored, as in the reference
        inputs["start_positions"] = np.array([1, 4, 50][:batch], np.int32)
        inputs["end_positions"] = np.array([3, 8, 2][:batch], np.int32)
    return inputs


@pytest.mark.parametrize("name,config_kwargs", PAIRS, ids=[p[0] for p in PAIRS])
def test_every_head_matches_reference(name, config_kwargs, tmp_path):
    hf_model, ours = build_pair(name, tmp_path, **config_kwargs)
    inputs = labelled_inputs(name, ours.config)
    if name == "XLMRobertaXLModel":
        inputs.pop("labels", None)
    with torch.no_grad():
        expected = hf_model(**helpers.torch_inputs(inputs), output_hidden_states=True, output_attentions=True)
    got = ours(**inputs, output_hidden_states=True, output_attentions=True, training=False)
    fields = [f for f in ("loss", "logits", "start_logits", "end_logits", "last_hidden_state", "pooler_output",
                          "hidden_states", "attentions") if f in got]
    assert set(fields) - {"pooler_output"} <= {k for k in expected.keys()} | {"loss"}
    helpers.assert_outputs_close(got, expected, fields)


@pytest.mark.parametrize("problem_type,num_labels", [("regression", 1), ("multi_label_classification", 4),
                                                     ("single_label_classification", 3)])
def test_sequence_classification_problem_types(problem_type, num_labels, tmp_path):
    hf_model, ours = build_pair("XLMRobertaXLForSequenceClassification", tmp_path, num_labels=num_labels,
                                problem_type=problem_type)
    inputs = labelled_inputs("XLMRobertaXLForSequenceClassification", ours.config)
    rng = np.random.RandomState(3)
    if problem_type == "regression":
        inputs["labels"] = rng.randn(3).astype(np.float32)
    elif problem_type == "multi_label_classification":
        inputs["labels"] = (rng.rand(3, num_labels) > 0.5).astype(np.float32)
    with torch.no_grad():
        expected = hf_model(**helpers.torch_inputs(inputs))
    got = ours(**inputs, training=False)
    helpers.assert_outputs_close(got, expected, ["loss", "logits"])


def test_causal_lm_step_by_step_with_cache(tmp_path):
    hf_model, ours = build_pair("XLMRobertaXLForCausalLM", tmp_path, is_decoder=True)
    ids, _ = helpers.padded_ids(2, 8, 99, 1, lengths=[8, 8], seed=4)
    with torch.no_grad():
        ref = hf_model(torch.tensor(ids[:, :5], dtype=torch.long), use_cache=True)
    got = ours(input_ids=ids[:, :5], use_cache=True, training=False)
    helpers.assert_close(got.logits, ref.logits, name="prefix logits")
    past_ref, past = ref.past_key_values, got.past_key_values
    for t in range(5, 8):
        mask = np.ones((2, t + 1), np.int32)
        with torch.no_grad():
            ref = hf_model(torch.tensor(ids[:, t:t + 1], dtype=torch.long), attention_mask=torch.tensor(mask),
                           past_key_values=past_ref, use_cache=True)
        got = ours(input_ids=ids[:, t:t + 1], attention_mask=mask, past_key_values=past, use_cache=True,
                   training=False)
        helpers.assert_close(got.logits, ref.logits, name=f"step {t} logits")
        past_ref, past = ref.past_key_values, got.past_key_values
    for layer in range(2):
        helpers.assert_close(past[layer][0], past_ref.self_attention_cache.layers[layer].keys, name="cached keys")


def test_cross_attention_decoder_matches_reference(tmp_path):
    hf_model, ours = build_pair("XLMRobertaXLForCausalLM", tmp_path, is_decoder=True, add_cross_attention=True)
    ids, mask = helpers.padded_ids(2, 7, 99, 1, lengths=[7, 5], seed=5)
    encoder = np.random.RandomState(6).randn(2, 4, 32).astype(np.float32)
    encoder_mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], np.int32)
    with torch.no_grad():
        ref = hf_model(torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                       encoder_hidden_states=torch.tensor(encoder), encoder_attention_mask=torch.tensor(encoder_mask),
                       output_attentions=True)
    got = ours(input_ids=ids, attention_mask=mask, encoder_hidden_states=encoder,
               encoder_attention_mask=encoder_mask, output_attentions=True, training=False)
    helpers.assert_outputs_close(got, ref, ["logits", "attentions", "cross_attentions"])


@pytest.mark.parametrize("kind", ["relative_key", "relative_key_query"])
def test_relative_position_embeddings_match_reference(kind, tmp_path):
    hf_model, ours = build_pair("XLMRobertaXLForMaskedLM", tmp_path, position_embedding_type=kind)
    inputs = labelled_inputs("XLMRobertaXLForMaskedLM", ours.config)
    with torch.no_grad():
        expected = hf_model(**helpers.torch_inputs(inputs), output_attentions=True)
    got = ours(**inputs, output_attentions=True, training=False)
    helpers.assert_outputs_close(got, expected, ["loss", "logits", "attentions"])


def test_head_mask_inputs_embeds_and_token_types_match_reference(tmp_path):
    hf_model, ours = build_pair("XLMRobertaXLModel", tmp_path, type_vocab_size=2)
    ids, mask = helpers.padded_ids(2, 6, 99, 1, seed=7)
    embeds = np.random.RandomState(8).randn(2, 6, 32).astype(np.float32)
    types = np.array([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1]], np.int32)
    head_mask = np.array([[1, 0, 1, 1], [0.5, 1, 1, 0]], np.float32)
    with torch.no_grad():
        ref = hf_model(inputs_embeds=torch.tensor(embeds), attention_mask=torch.tensor(mask),
                       token_type_ids=torch.tensor(types, dtype=torch.long), head_mask=torch.tensor(head_mask),
                       output_attentions=True)
    got = ours(inputs_embeds=embeds, attention_mask=mask, token_type_ids=types, head_mask=head_mask,
               output_attentions=True, training=False)
    helpers.assert_outputs_close(got, ref, ["last_hidden_state", "pooler_output", "attentions"])


def test_loss_gradients_match_reference(tmp_path):
    hf_model, ours = build_pair("XLMRobertaXLForSequenceClassification", tmp_path, num_labels=3)
    inputs = labelled_inputs("XLMRobertaXLForSequenceClassification", ours.config)
    hf_model.zero_grad()
    hf_model(**helpers.torch_inputs(inputs)).loss.backward()
    reference = {name: p.grad.numpy() for name, p in hf_model.named_parameters()}
    named = named_variables(ours)
    with tf.GradientTape() as tape:
        loss = ours(**inputs, training=False).loss
    grads = tape.gradient(loss, [n.variable for n in named])
    assert len(named) == len(reference)
    for n, grad in zip(named, grads):
        expected = reference[n.name]
        grad = grad.numpy() if not isinstance(grad, tf.IndexedSlices) else tf.convert_to_tensor(grad).numpy()
        if n.permutation is not None:
            grad = np.transpose(grad, np.argsort(n.permutation))
        helpers.assert_close(grad, expected, 1e-5, f"grad {n.name}")


def test_our_checkpoint_loads_into_reference(tmp_path):
    """HF-format save_pretrained from our model loads into HF PyTorch and gives the same outputs."""
    config = tfmodels.XLMRobertaXLConfig(**TINY, num_labels=2)
    ours = tfmodels.XLMRobertaXLForMaskedLM(config)
    ours.build_model()
    ours.save_pretrained(str(tmp_path), hf_format=True)
    hf_model = transformers.XLMRobertaXLForMaskedLM.from_pretrained(str(tmp_path)).eval()
    inputs = labelled_inputs("XLMRobertaXLForMaskedLM", config)
    with torch.no_grad():
        expected = hf_model(**helpers.torch_inputs(inputs))
    helpers.assert_outputs_close(ours(**inputs, training=False), expected, ["loss", "logits"])
