"""XLMRobertaTokenizer parity with HF's XLMRobertaTokenizer (slow, 4.57.6) on a few hundred varied strings,
Python and in-graph."""
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import tfmodels
from tfmodels.tokenizers import XLMRobertaTokenizer
from tfmodels.training.synthetic_text import tokenizer_test_strings

transformers = pytest.importorskip("transformers")

MODEL = os.path.join(os.path.dirname(tfmodels.__file__), "assets", "xlm_roberta", "sentencepiece.bpe.model")
SPECIALS = ["<mask>", "<s>", "</s>", "<pad>", "<unk>"]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("xlmr_tok"))
    shutil.copy(MODEL, directory)
    return transformers.XLMRobertaTokenizer.from_pretrained(directory), XLMRobertaTokenizer.from_pretrained(directory)


@pytest.fixture(scope="module")
def strings():
    return tokenizer_test_strings(300, special_tokens=SPECIALS)


def test_single_strings_ids_tokens_and_decode(tokenizers, strings):
    hf, ours = tokenizers
    assert len(ours) == len(hf) and ours.get_vocab() == hf.get_vocab()
    for text in strings:
        assert ours.tokenize(text) == hf.tokenize(text), text
        expected = hf(text)
        got = ours(text)
        assert got["input_ids"] == expected["input_ids"], text
        assert got["attention_mask"] == expected["attention_mask"]
        assert ours.decode(got["input_ids"]) == hf.decode(expected["input_ids"])
        assert ours.decode(got["input_ids"], skip_special_tokens=True) == \
            hf.decode(expected["input_ids"], skip_special_tokens=True)


@pytest.mark.parametrize("options", [
    dict(padding=True),
    dict(padding=True, truncation=True, max_length=12),
    dict(padding="max_length", truncation=True, max_length=40),
    dict(padding=True, truncation="only_second", max_length=30),
    dict(padding=True, truncation="only_first", max_length=30),
    dict(padding=True, pad_to_multiple_of=8, return_token_type_ids=True, return_special_tokens_mask=True),
])
def test_batches_of_pairs(tokenizers, strings, options):
    hf, ours = tokenizers
    first, second = strings[0:200:2], strings[1:200:2]
    expected = hf(first, second, return_tensors="np", **options)
    got = ours(first, second, return_tensors="np", **options)
    assert sorted(got) == sorted(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def test_single_batches_truncation_and_tf_tensors(tokenizers, strings):
    hf, ours = tokenizers
    expected = hf(strings, padding=True, truncation=True, max_length=16, return_tensors="np")
    got = ours(strings, padding=True, truncation=True, max_length=16, return_tensors="tf")
    assert got["input_ids"].dtype == tf.int32
    np.testing.assert_array_equal(got["input_ids"].numpy(), expected["input_ids"])
    np.testing.assert_array_equal(got["attention_mask"].numpy(), expected["attention_mask"])
    assert ours.encode(strings[20]) == hf.encode(strings[20])


@pytest.mark.parametrize("max_length", [None, 7, 16])
def test_in_graph_tokenizer_equals_python(tokenizers, strings, max_length):
    _, ours = tokenizers
    graph = ours.in_graph(max_length=max_length)
    compiled = tf.function(lambda a, b: graph(a, b))
    truncation = max_length is not None
    expected = ours(strings, padding=True, truncation=truncation, max_length=max_length, return_tensors="np")
    got = graph(tf.constant(strings))
    for key in ("input_ids", "attention_mask"):
        np.testing.assert_array_equal(got[key].numpy(), expected[key], err_msg=key)
    first, second = strings[::2], strings[1::2]
    expected = ours(first, second, padding=True, truncation=truncation, max_length=max_length, return_tensors="np")
    got = compiled(tf.constant(first), tf.constant(second))
    np.testing.assert_array_equal(got["input_ids"].numpy(), expected["input_ids"])


def test_save_and_reload_in_hf_layout(tokenizers, tmp_path):
    hf, ours = tokenizers
    ours.save_pretrained(str(tmp_path))
    assert os.path.isfile(os.path.join(str(tmp_path), "sentencepiece.bpe.model"))
    again = XLMRobertaTokenizer.from_pretrained(str(tmp_path))
    reloaded_hf = transformers.XLMRobertaTokenizer.from_pretrained(str(tmp_path))
    text = "Hello <mask> world, größer!"
    assert again(text)["input_ids"] == ours(text)["input_ids"] == reloaded_hf(text)["input_ids"]
    assert again.mask_token_id == hf.mask_token_id == len(hf) - 1
    assert (again.pad_token_id, again.bos_token_id, again.eos_token_id, again.unk_token_id) == (1, 0, 2, 3)
