"""The one list-input rule (README "List inputs"): a list takes a class's `input_names` in order, and that order
is the one of the class's HF TensorFlow twin (XLNet, Longformer; TFData2VecVision for BEiT) or of its closest HF
TF sibling, TFRoberta (YOSO, MRA, Nystromformer, XLM-RoBERTa-XL). An element that cannot be the input it lands
on is a ValueError naming the order."""
import inspect

import keras
import numpy as np
import pytest

import tfmodels
from tests.family_spec import TextFamily
from tfmodels.core.modeling import PreTrainedModel

HEADS = sorted((cls for name, cls in vars(tfmodels).items()
                if isinstance(cls, type) and issubclass(cls, PreTrainedModel) and not name.startswith("TF")
                and not name.endswith("PreTrainedModel")), key=lambda cls: cls.__name__)
# Our families whose HF TF twin existed, and the sibling of the others (prefix -> HF TF prefix).
TWIN_PREFIX = {"XLNet": "XLNet", "Longformer": "Longformer", "Beit": "Data2VecVision", "Yoso": "Roberta",
               "Mra": "Roberta", "Nystromformer": "Roberta", "XLMRobertaXL": "Roberta"}
# Our heads without a TF class of that name: the HF TF class whose order they take.
TWIN_HEAD = {"XLNetForQuestionAnswering": "TFXLNetForQuestionAnsweringSimple",
             "BeitForMaskedImageModeling": "TFData2VecVisionModel"}
DECODER_INPUTS = ("encoder_hidden_states", "encoder_attention_mask", "past_key_values")
NOT_TENSORS = {"use_mems", "use_cache", "output_attentions", "output_hidden_states", "return_dict", "training",
               "labels", "start_positions", "end_positions"}


def _hf_tf_order(head):
    import transformers
    name = head.__name__
    prefix = next(p for p in sorted(TWIN_PREFIX, key=len, reverse=True) if name.startswith(p))
    twin = getattr(transformers, TWIN_HEAD.get(name, "TF" + TWIN_PREFIX[prefix] + name[len(prefix):]))
    return [p for p in list(inspect.signature(twin.call).parameters)[1:] if p not in NOT_TENSORS]


def test_every_head_takes_the_hf_tf_order_and_documents_it():
    assert len(HEADS) >= 38
    for head in HEADS:
        ours = [n for n in head.input_names if n not in head.label_names]
        reference = _hf_tf_order(head)
        # TFRoberta's decoder inputs are only ours where the family is a decoder (XLM-R-XL).
        assert set(reference) - set(ours) <= set(DECODER_INPUTS), (head.__name__, ours, reference)
        reference = [n for n in reference if n in ours]
        # HF TF's tensor inputs first, in its order; ours beyond them (XLNet QA's p_mask, ...) after.
        assert ours[:len(reference)] == reference, (head.__name__, ours, reference)
        order = "(" + ", ".join(tuple(head.input_names) + tuple(n for n in head.label_names
                                                               if n not in head.input_names)) + ")"
        assert f"List inputs take this order: {order}." in head.__doc__, head.__name__


def _model(prefix, config_file, suffix, **overrides):
    family = TextFamily(prefix, config_file)
    config = family.config(**overrides)
    head = family.head(suffix)
    return family, head(config), family.inputs(head, config, labels=True)


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_xlm_roberta_xl_multiple_choice_takes_roberta_order_in_call_and_fit():
    # The first case: [input_ids, attention_mask] raised (the PyTorch order put the mask on token types).
    _, model, inputs = _model("XLMRobertaXL", "xlm-roberta-xl-tiny.json", "ForMultipleChoice")
    ids, mask, labels = inputs["input_ids"], inputs["attention_mask"], inputs["labels"]
    expected = model(input_ids=ids, attention_mask=mask, labels=labels)
    listed = model([ids, mask, None, None, None, None, labels])
    _close(listed.logits, expected.logits)
    _close(listed.loss, expected.loss)
    assert not np.allclose(model(input_ids=ids).logits, expected.logits)  # the mask matters: it was used
    # fit with a list x follows the same order (labels after the inputs).
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    loss = model.evaluate([ids, mask, None, None, None, None, labels], batch_size=len(ids), verbose=0)
    np.testing.assert_allclose(loss, float(expected.loss), rtol=1e-5)


def test_xlnet_multiple_choice_takes_hf_tf_order():
    # The second case: TFXLNetForMultipleChoice's order puts token_type_ids second, so the rule keeps
    # that (documented); the mask goes fourth.
    _, model, inputs = _model("XLNet", "xlnet-tiny.json", "ForMultipleChoice")
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    assert model.input_names[:4] == ("input_ids", "token_type_ids", "input_mask", "attention_mask")
    _close(model([ids, mask]).logits, model(input_ids=ids, token_type_ids=mask).logits)
    _close(model([ids, None, None, mask]).logits, model(input_ids=ids, attention_mask=mask).logits)


def test_longformer_global_mask_third_is_a_clear_error_and_fourth_works():
    # The third case: HF TF's order has head_mask third; an integer [batch, seq] mask cannot be one.
    _, model, inputs = _model("Longformer", "longformer-tiny.json", "Model")
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    global_mask = np.zeros_like(mask)
    global_mask[:, 0] = 1
    with pytest.raises(ValueError, match=r"takes list inputs in the order \(input_ids, attention_mask, head_mask, "
                                         r"global_attention_mask.*element 2 is head_mask, which must be float of "
                                         r"rank 1 or 2, but got int32 of rank 2"):
        model([ids, mask, global_mask])
    expected = model(input_ids=ids, attention_mask=mask, global_attention_mask=global_mask)
    _close(model([ids, mask, None, global_mask]).last_hidden_state, expected.last_hidden_state)


def test_roberta_order_families_take_token_types_third():
    # (YOSO and MRA share Nystromformer's classes and order: the order test above covers them.)
    _, model, inputs = _model("Nystromformer", "nystromformer-tiny.json", "ForSequenceClassification",
                              type_vocab_size=2)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    types = (np.arange(ids.shape[1])[None] >= 4).astype(np.int32).repeat(len(ids), 0)
    expected = model(input_ids=ids, attention_mask=mask, token_type_ids=types)
    _close(model([ids, mask, types]).logits, expected.logits)


def test_element_that_cannot_fit_names_the_order():
    _, model, inputs = _model("Yoso", "yoso-tiny.json", "Model")
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    with pytest.raises(ValueError, match=r"element 1 is attention_mask, which must be number of rank 2, but got "
                                         r"int32 of rank 3"):
        model([ids, mask[:, None]])
    with pytest.raises(ValueError, match=r"element 0 is input_ids, which must be integer"):
        model([ids.astype(np.float32), mask])
    with pytest.raises(ValueError, match=r"got 8 list inputs but takes at most 6, in the order \(input_ids"):
        model([ids, mask] + [None] * 6)
    with pytest.raises(ValueError, match=r"element 4 is head_mask"):  # fit's list x takes the same rule
        model._inputs_dict([ids, mask, None, None, mask])
