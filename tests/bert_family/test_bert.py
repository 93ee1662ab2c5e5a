"""The eighth family of docs/adding_a_family.md: a plain BERT built on the core skeleton, kept in the tests.

This test registers it (the CLI's registry walks tfmodels.models only), runs every standard head through the
shared behaviour helpers, and checks every head against HF's BertModel heads on an HF-written checkpoint
(every parameter randomised): batch 3 with padding and token types, logits / hidden states / attentions /
pooler output / losses at atol 1e-5.
"""
import numpy as np
import pytest

import tests.bert_family as bert_family
from tests import helpers
from tests.family_spec import STANDARD_HEADS, TextFamily
from tfmodels import registry

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64, type_vocab_size=2)
FAMILY = TextFamily("Bert", package=bert_family, config_defaults=TINY, length=10)
HEADS = FAMILY.heads()
HEAD_KWARGS = {"ForSequenceClassification": {"num_labels": 3}, "ForTokenClassification": {"num_labels": 5}}


def with_token_types(inputs):
    """Second half of every sequence is segment 1 (both token type rows are used)."""
    ids = np.asarray(inputs["input_ids"])
    types = np.zeros_like(ids)
    types[..., ids.shape[-1] // 2:] = 1
    return {**inputs, "token_type_ids": types}


def test_registered_by_the_test(monkeypatch):
    assert "bert" not in registry.families()
    spec = bert_family.__family__
    monkeypatch.setattr(spec, "module", "tests.bert_family")
    monkeypatch.setitem(registry.families(), "bert", spec)
    found = registry.families()["bert"]
    assert found.config_class is bert_family.BertConfig
    assert found.tasks() == ["base", "sequence-classification", "token-classification", "question-answering",
                             "masked-lm", "multiple-choice"]
    assert {found.head_class(task) for task in found.tasks()} == set(HEADS)


@pytest.mark.parametrize("head", HEADS, ids=lambda h: h.__name__)
def test_every_head_behaves(head, tmp_path):
    config = FAMILY.config(**HEAD_KWARGS.get(FAMILY.suffix(head), {}))
    model = head(config)
    inputs = FAMILY.inputs(head, config)
    helpers.run_call_styles_test(model, inputs, model.input_names)
    if head is not bert_family.BertModel:
        helpers.run_fit_test(model, FAMILY.inputs(head, config, labels=True), model.label_names)
    helpers.run_save_load_test(model, inputs, tmp_path)
    helpers.run_functional_test(model, inputs, FAMILY.main_field(head))
    max_length = None if head is bert_family.BertForMultipleChoice else config.max_position_embeddings
    helpers.run_bad_inputs_test(model, inputs, config.vocab_size, max_length=max_length)


@pytest.mark.parametrize("suffix", STANDARD_HEADS)
def test_every_head_matches_hf(suffix, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.BertConfig(**TINY, **HEAD_KWARGS.get(suffix, {}))
    hf_config._attn_implementation = "eager"  # returns the attention probabilities
    hf_model = helpers.hf_checkpoint(getattr(transformers, "Bert" + suffix), hf_config, str(tmp_path))
    head = FAMILY.head(suffix)
    ours, info = head.from_pretrained(str(tmp_path), output_loading_info=True)
    assert not info.missing and not info.mismatched and not info.unexpected, info.report()
    inputs = with_token_types(FAMILY.inputs(head, ours.config, batch=3, labels=suffix != "Model"))
    assert np.any(np.asarray(inputs["attention_mask"]) == 0), "the batch must be padded"
    with torch.no_grad():
        expected = hf_model(**helpers.torch_inputs(inputs), output_hidden_states=True, output_attentions=True)
    got = ours(**inputs, output_hidden_states=True, output_attentions=True, training=False)
    fields = [f for f in ("loss", "logits", "start_logits", "end_logits", "last_hidden_state", "pooler_output",
                          "hidden_states", "attentions") if f in expected]
    assert sorted(fields) == sorted(got.keys())
    helpers.assert_outputs_close(got, expected, fields)
