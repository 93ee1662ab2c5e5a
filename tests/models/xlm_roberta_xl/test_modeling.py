"""XLM-RoBERTa-XL behaviour: every head through the shared helpers, plus decoder cache and cross-attention."""
import os

import numpy as np
import pytest
import tensorflow as tf

import tfmodels
from tests import helpers
from tests.family_spec import TextFamily
from tfmodels.tokenizers import XLMRobertaTokenizer

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "..", "configs")
ASSETS = os.path.join(os.path.dirname(tfmodels.__file__), "assets")

FAMILY = TextFamily("XLMRobertaXL", "xlm-roberta-xl-tiny.json", extra_heads=("ForCausalLM",))
HEADS = FAMILY.heads()
tiny_config, make_inputs = FAMILY.config, FAMILY.inputs


def config_for(head):
    return tiny_config(is_decoder=head is tfmodels.XLMRobertaXLForCausalLM)


@pytest.mark.parametrize("head", HEADS, ids=lambda h: h.__name__)
def test_call_styles_outputs_and_fit(head):
    config = config_for(head)
    model = head(config)
    inputs = make_inputs(head, config)
    output = helpers.run_call_styles_test(model, inputs, model.input_names)
    expected = {"XLMRobertaXLModel": "BaseModelOutputWithPoolingAndCrossAttentions",
                "XLMRobertaXLForCausalLM": "CausalLMOutputWithCrossAttentions",
                "XLMRobertaXLForMaskedLM": "MaskedLMOutput",
                "XLMRobertaXLForSequenceClassification": "SequenceClassifierOutput",
                "XLMRobertaXLForMultipleChoice": "MultipleChoiceModelOutput",
                "XLMRobertaXLForTokenClassification": "TokenClassifierOutput",
                "XLMRobertaXLForQuestionAnswering": "QuestionAnsweringModelOutput"}[head.__name__]
    assert type(output).__name__ == expected
    if head is not tfmodels.XLMRobertaXLModel:
        labelled = make_inputs(head, config, labels=True)
        assert "loss" in model(labelled, training=False)
        helpers.run_fit_test(model, labelled, model.label_names)


@pytest.mark.parametrize("head", HEADS, ids=lambda h: h.__name__)
def test_save_load_functional_and_bad_inputs(head, tmp_path):
    config = config_for(head)
    model = head(config)
    inputs = make_inputs(head, config)
    helpers.run_save_load_test(model, inputs, tmp_path)
    helpers.run_functional_test(model, inputs, FAMILY.main_field(head))
    max_length = None if head is tfmodels.XLMRobertaXLForMultipleChoice else \
        config.max_position_embeddings - config.pad_token_id - 1
    helpers.run_bad_inputs_test(model, inputs, config.vocab_size, max_length=max_length)


def test_export_every_head_loads_in_stock_tensorflow(tmp_path):
    tokenizer = XLMRobertaTokenizer(os.path.join(ASSETS, "xlm_roberta", "sentencepiece.bpe.model"))
    texts = ["A first sentence.", "Une deuxième phrase, plus longue que la première!", "<mask> drittes"]
    jobs = []
    for head in HEADS:
        config = config_for(head)
        model = head(config)
        text_capable = head is not tfmodels.XLMRobertaXLForMultipleChoice
        jobs.append((head.__name__, model, make_inputs(head, config), tokenizer if text_capable else None, texts))
    helpers.export_and_check(jobs, tmp_path)


def test_incremental_decoding_with_cache_matches_full_pass():
    config = tiny_config(is_decoder=True)
    model = tfmodels.XLMRobertaXLForCausalLM(config)
    ids, _ = helpers.padded_ids(2, 7, config.vocab_size, config.pad_token_id, lengths=[7, 7])
    full = model(input_ids=ids, training=False).logits
    step = model(input_ids=ids[:, :4], use_cache=True, training=False)
    logits = [step.logits]
    past = step.past_key_values
    assert len(past) == config.num_hidden_layers and past[0][0].shape == (2, 4, 4, 8)
    for t in range(4, 7):
        step = model(input_ids=ids[:, t:t + 1], attention_mask=np.ones((2, t + 1), np.int32),
                     past_key_values=past, use_cache=True, training=False)
        logits.append(step.logits)
        past = step.past_key_values
    helpers.assert_close(tf.concat(logits, axis=1), full, 1e-5, "cached logits")


def test_cross_attention_decoder_and_cache():
    config = tiny_config(is_decoder=True, add_cross_attention=True)
    model = tfmodels.XLMRobertaXLForCausalLM(config)
    ids, _ = helpers.padded_ids(2, 6, config.vocab_size, config.pad_token_id, lengths=[6, 6])
    encoder = np.random.RandomState(0).randn(2, 5, config.hidden_size).astype(np.float32)
    encoder_mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], np.int32)
    full = model(input_ids=ids, encoder_hidden_states=encoder, encoder_attention_mask=encoder_mask,
                 output_attentions=True, training=False)
    assert len(full.cross_attentions) == 2 and full.cross_attentions[0].shape == (2, 4, 6, 5)
    np.testing.assert_allclose(full.cross_attentions[0].numpy()[1, :, :, 3:], 0.0)
    step = model(input_ids=ids[:, :3], encoder_hidden_states=encoder, encoder_attention_mask=encoder_mask,
                 use_cache=True, training=False)
    assert len(step.past_key_values[0]) == 4
    rest = model(input_ids=ids[:, 3:], encoder_hidden_states=encoder, encoder_attention_mask=encoder_mask,
                 past_key_values=step.past_key_values, use_cache=True, training=False)
    helpers.assert_close(tf.concat([step.logits, rest.logits], 1), full.logits, 1e-5, "cross-attention cache")


def test_config_validation_and_round_trip(tmp_path):
    with pytest.raises(ValueError, match="hiden_size.*did you mean 'hidden_size'"):
        tfmodels.XLMRobertaXLConfig(hiden_size=8)
    with pytest.raises(ValueError, match="multiple of num_attention_heads"):
        tfmodels.XLMRobertaXLConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="position_embedding_type"):
        tfmodels.XLMRobertaXLConfig(position_embedding_type="rotary")
    with pytest.raises(ValueError, match="add_cross_attention"):
        tfmodels.XLMRobertaXLConfig(add_cross_attention=True)
    with pytest.raises(ValueError, match="hidden_act"):
        tfmodels.XLMRobertaXLConfig(hidden_act="nope")
    config = tiny_config(num_labels=3, problem_type="single_label_classification")
    config.save_pretrained(str(tmp_path))
    again = tfmodels.XLMRobertaXLConfig.from_pretrained(str(tmp_path))
    assert again == config and again.num_labels == 3 and again.id2label[2] == "LABEL_2"
    published = tfmodels.XLMRobertaXLConfig.from_pretrained(os.path.join(CONFIGS, "xlm-roberta-xl.json"))
    assert (published.hidden_size, published.num_hidden_layers, published.vocab_size) == (2560, 36, 250880)
    xxl = tfmodels.XLMRobertaXLConfig.from_pretrained(os.path.join(CONFIGS, "xlm-roberta-xxl.json"))
    assert (xxl.hidden_size, xxl.num_hidden_layers, xxl.intermediate_size) == (4096, 48, 16384)


def test_relative_position_embeddings_and_head_mask():
    for kind in ("relative_key", "relative_key_query"):
        config = tiny_config(position_embedding_type=kind)
        model = tfmodels.XLMRobertaXLModel(config)
        inputs = make_inputs(tfmodels.XLMRobertaXLModel, config)
        out = model(**inputs, output_attentions=True, training=False)
        assert out.last_hidden_state.shape == (4, 9, config.hidden_size)
    model = tfmodels.XLMRobertaXLModel(tiny_config())
    inputs = make_inputs(tfmodels.XLMRobertaXLModel, model.config)
    head_mask = np.ones((2, 4), np.float32)
    head_mask[0, 1] = 0.0
    out = model(**inputs, head_mask=head_mask, output_attentions=True, training=False)
    np.testing.assert_allclose(out.attentions[0].numpy()[:, 1], 0.0)
    assert np.abs(out.attentions[1].numpy()[:, 1]).sum() > 0
