"""XLNetTokenizer parity with HF's XLNetTokenizer (slow, 4.57.6) on a few hundred varied strings, Python and
in-graph: normalisation (remove_space, quotes, NFKD without accents, lower case), the digit-comma rule, special
tokens (<mask> eats the space before it; <eop>, <eod>), <sep>/<cls> at the end, segment ids 0/1/2, left padding
with segment 3, truncation, decoding and saving."""
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import tfmodels
from tfmodels.tokenizers import XLNetTokenizer
from tfmodels.training.synthetic_text import tokenizer_test_strings

transformers = pytest.importorskip("transformers")

MODEL = os.path.join(os.path.dirname(tfmodels.__file__), "assets", "xlnet", "spiece.model")
SPECIALS = ["<mask>", "<sep>", "<cls>", "<pad>", "<unk>", "<s>", "</s>", "<eop>", "<eod>"]
EXTRA = ["In 1999, 2004, and 7, the team won; x9, 12,", "``Quoted'' and ''twice``", "naïve café Ångström",
         "ΚΌΣΜΟΣ ΣΑΣ Σ", "<SEP> upper-case special, <Mask>", "tokens<sep>glued<cls>together<eop>x <eod>",
         "a <mask>  <mask> b", "İstanbul ẞ ǅ", "1,2,3,4, 5 ,6"]
OPTIONS = {"default": {}, "lower": {"do_lower_case": True}, "accents": {"keep_accents": True, "remove_space": False}}


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("xlnet_tok"))
    shutil.copy(MODEL, directory)
    return directory


@pytest.fixture(scope="module", params=list(OPTIONS), ids=list(OPTIONS))
def tokenizers(request, directory):
    options = OPTIONS[request.param]
    return (transformers.XLNetTokenizer.from_pretrained(directory, **options),
            XLNetTokenizer.from_pretrained(directory, **options))


@pytest.fixture(scope="module")
def strings():
    return tokenizer_test_strings(300, special_tokens=SPECIALS) + EXTRA


def test_bundled_model_has_the_xlnet_layout(directory):
    ours = XLNetTokenizer.from_pretrained(directory)
    ids = [ours.convert_tokens_to_ids(t) for t in ["<unk>", "<s>", "</s>", "<cls>", "<sep>", "<pad>", "<mask>",
                                                    "<eod>", "<eop>"]]
    assert ids == list(range(9))
    assert (ours.pad_token_id, ours.cls_token_id, ours.sep_token_id, ours.mask_token_id) == (5, 3, 4, 6)
    # The rule that splits "▁1999," into "▁1999" "," is exercised by this model.
    assert "▁1999," in ours.get_vocab()
    tokens = ours.tokenize("in 1999, then")
    assert tokens[tokens.index("▁1999") + 1] == ","


def test_single_strings_ids_tokens_and_decode(tokenizers, strings):
    hf, ours = tokenizers
    assert len(ours) == len(hf) and ours.get_vocab() == hf.get_vocab()
    assert sorted(ours.all_special_ids) == sorted(hf.all_special_ids)
    for text in strings:
        assert ours.tokenize(text) == hf.tokenize(text), text
        expected = hf(text)
        got = ours(text)
        for key in ("input_ids", "token_type_ids", "attention_mask"):
            assert got[key] == expected[key], (key, text)
        assert ours.decode(got["input_ids"]) == hf.decode(expected["input_ids"]), text
        assert ours.decode(got["input_ids"], skip_special_tokens=True) == \
            hf.decode(expected["input_ids"], skip_special_tokens=True), text


@pytest.mark.parametrize("options", [
    dict(padding=True),
    dict(padding=True, truncation=True, max_length=12),
    dict(padding="max_length", truncation=True, max_length=40),
    dict(padding=True, truncation="only_second", max_length=30),
    dict(padding=True, pad_to_multiple_of=8, return_special_tokens_mask=True),
])
def test_batches_of_pairs(tokenizers, strings, options):
    hf, ours = tokenizers
    first, second = strings[0:200:2], strings[1:200:2]
    expected = hf(first, second, return_tensors="np", **options)
    got = ours(first, second, return_tensors="np", **options)
    assert sorted(got) == sorted(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    assert (got["input_ids"][:, 0] == ours.pad_token_id).any()  # left padding
    assert set(np.unique(got["token_type_ids"])) <= {0, 1, 2, 3}


def test_single_batches_truncation_and_tf_tensors(tokenizers, strings):
    hf, ours = tokenizers
    expected = hf(strings, padding=True, truncation=True, max_length=16, return_tensors="np")
    got = ours(strings, padding=True, truncation=True, max_length=16, return_tensors="tf")
    assert got["input_ids"].dtype == tf.int32
    for key in expected:
        np.testing.assert_array_equal(got[key].numpy(), expected[key], err_msg=key)
    assert ours.encode(strings[20]) == hf.encode(strings[20])
    assert ours.encode(EXTRA[0], EXTRA[1]) == hf.encode(EXTRA[0], EXTRA[1])


@pytest.mark.parametrize("max_length", [None, 7, 16])
def test_in_graph_tokenizer_equals_python(directory, strings, max_length):
    check_in_graph(XLNetTokenizer.from_pretrained(directory), strings, max_length)


def test_in_graph_tokenizer_options_equal_python(tokenizers, strings):
    check_in_graph(tokenizers[1], strings, 16)


def check_in_graph(ours, strings, max_length):
    graph = ours.in_graph(max_length=max_length)
    compiled = tf.function(lambda a, b: graph(a, b))
    truncation = max_length is not None
    expected = ours(strings, padding=True, truncation=truncation, max_length=max_length, return_tensors="np")
    got = graph(tf.constant(strings))
    assert sorted(got) == sorted(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key].numpy(), expected[key], err_msg=key)
    first, second = strings[::2], strings[1::2]
    count = min(len(first), len(second))
    first, second = first[:count], second[:count]
    expected = ours(first, second, padding=True, truncation=truncation, max_length=max_length, return_tensors="np")
    got = compiled(tf.constant(first), tf.constant(second))
    for key in expected:
        np.testing.assert_array_equal(got[key].numpy(), expected[key], err_msg=key)


def test_save_and_reload_in_hf_layout(directory, tmp_path):
    ours = XLNetTokenizer.from_pretrained(directory, do_lower_case=True)
    ours.save_pretrained(str(tmp_path))
    assert os.path.isfile(os.path.join(str(tmp_path), "spiece.model"))
    again = XLNetTokenizer.from_pretrained(str(tmp_path))
    reloaded_hf = transformers.XLNetTokenizer.from_pretrained(str(tmp_path))
    assert again.do_lower_case and reloaded_hf.do_lower_case
    text = "Hello <mask> World, größer! 1999, 2000"
    assert again(text)["input_ids"] == ours(text)["input_ids"] == reloaded_hf(text)["input_ids"]
    assert again.padding_side == "left" and again.additional_special_tokens == ["<eop>", "<eod>"]
