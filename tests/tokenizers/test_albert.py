"""AlbertTokenizer parity with HF's AlbertTokenizer (slow, 4.57.6) on a few hundred varied strings, Python and
in-graph (TF Text), with the default preprocessing and with the options switched."""
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import tfmodels
from tfmodels.tokenizers import AlbertTokenizer
from tfmodels.training.synthetic_text import tokenizer_test_strings

transformers = pytest.importorskip("transformers")

MODEL = os.path.join(os.path.dirname(tfmodels.__file__), "assets", "albert", "spiece.model")
SPECIALS = ["[MASK]", "[CLS]", "[SEP]", "<pad>", "<unk>"]
EXTRA = ["1, 2, 3, and 4,000", "x9, y7,z 12, 8,", "``Quoted'' text'''", "ΚΌΣΜΟΣ ΣΑΣ Σ", "İstanbul ǅemal ẞ",
         "Ａｃｃｅｎｔｓ: café naïve Ångström", "[mask] lower [MASK]upper", "<UNK> <unk>  <PAD>", "ﬁ ㎒ ½ ²",
         "\u00a0nbsp\u2003em\u3000ideographic ", "tab\tsep\x1c ctrl", "[MASK]", "   [CLS]  [SEP]  ", "9,99 € and 3,5%"]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("albert_tok"))
    shutil.copy(MODEL, directory)
    return transformers.AlbertTokenizer.from_pretrained(directory), AlbertTokenizer.from_pretrained(directory)


@pytest.fixture(scope="module")
def strings():
    return EXTRA + tokenizer_test_strings(300, special_tokens=SPECIALS)


def test_layout_and_vocabulary(tokenizers):
    hf, ours = tokenizers
    assert len(ours) == len(hf) and ours.get_vocab() == hf.get_vocab()
    assert (ours.pad_token_id, ours.unk_token_id, ours.cls_token_id, ours.sep_token_id, ours.mask_token_id) == \
        (hf.pad_token_id, hf.unk_token_id, hf.cls_token_id, hf.sep_token_id, hf.mask_token_id) == (0, 1, 2, 3, 4)
    assert ours.model_input_names == tuple(hf.model_input_names)


def test_single_strings_ids_tokens_and_decode(tokenizers, strings):
    hf, ours = tokenizers
    split_numbers = 0
    for text in strings:
        tokens = ours.tokenize(text)
        assert tokens == hf.tokenize(text), text
        split_numbers += sum(1 for a, b in zip(tokens, tokens[1:]) if b == "," and a[-1:].isdigit())
        expected = hf(text)
        got = ours(text)
        for key in ("input_ids", "token_type_ids", "attention_mask"):
            assert got[key] == expected[key], (key, text)
        assert ours.decode(got["input_ids"]) == hf.decode(expected["input_ids"]), text
        assert ours.decode(got["input_ids"], skip_special_tokens=True) == \
            hf.decode(expected["input_ids"], skip_special_tokens=True), text
    assert split_numbers > 0  # the "▁9," -> "▁9" "," rule ran


@pytest.mark.parametrize("options", [
    dict(padding=True),
    dict(padding=True, truncation=True, max_length=12),
    dict(padding="max_length", truncation=True, max_length=40),
    dict(padding=True, truncation="only_second", max_length=30),
    dict(padding=True, truncation="only_first", max_length=30),
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


@pytest.mark.parametrize("settings", [dict(do_lower_case=False), dict(keep_accents=True, remove_space=False)])
def test_preprocessing_options(tokenizers, strings, settings, tmp_path):
    shutil.copy(MODEL, str(tmp_path))
    hf = transformers.AlbertTokenizer.from_pretrained(str(tmp_path), **settings)
    ours = AlbertTokenizer.from_pretrained(str(tmp_path), **settings)
    expected = hf(strings, padding=True, return_tensors="np")
    got = ours(strings, padding=True, return_tensors="np")
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    graph = ours.in_graph()(tf.constant(strings))
    for key in expected:
        np.testing.assert_array_equal(graph[key].numpy(), expected[key], err_msg=f"in-graph {key}")


@pytest.mark.parametrize("max_length", [None, 7, 16])
def test_in_graph_tokenizer_equals_python(tokenizers, strings, max_length):
    _, ours = tokenizers
    graph = ours.in_graph(max_length=max_length)
    # Traced once (tracing is slow on a busy machine); eager runs the same ops.
    compiled = tf.function(lambda a, b: graph(a, b)) if max_length == 16 else graph
    truncation = max_length is not None
    expected = ours(strings, padding=True, truncation=truncation, max_length=max_length, return_tensors="np")
    got = graph(tf.constant(strings))
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        np.testing.assert_array_equal(got[key].numpy(), expected[key], err_msg=key)
    first, second = strings[::2], strings[1::2]
    expected = ours(first, second, padding=True, truncation=truncation, max_length=max_length, return_tensors="np")
    got = compiled(tf.constant(first), tf.constant(second))
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        np.testing.assert_array_equal(got[key].numpy(), expected[key], err_msg=f"pair {key}")


def test_save_and_reload_in_hf_layout(tokenizers, tmp_path):
    hf, ours = tokenizers
    ours.save_pretrained(str(tmp_path))
    assert os.path.isfile(os.path.join(str(tmp_path), "spiece.model"))
    again = AlbertTokenizer.from_pretrained(str(tmp_path), do_lower_case=False)
    assert again.do_lower_case is False
    ours.save_pretrained(str(tmp_path))
    again = AlbertTokenizer.from_pretrained(str(tmp_path))
    reloaded_hf = transformers.AlbertTokenizer.from_pretrained(str(tmp_path))
    text = "Hello [MASK] world, größer 3, 4!"
    expected = hf(text)["input_ids"]
    assert again(text)["input_ids"] == ours(text)["input_ids"] == reloaded_hf(text)["input_ids"] == expected
    assert again.do_lower_case and not again.keep_accents and again.remove_space
