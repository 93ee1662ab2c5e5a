"""RobertaTokenizer / LongformerTokenizer parity with HF's slow RobertaTokenizer and LongformerTokenizer
(4.57.6) on a few hundred varied strings (unicode, whitespace runs, <mask> and other special tokens, pairs,
truncation), Python and in-graph."""
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import tfmodels
from tfmodels.tokenizers import LongformerTokenizer, RobertaTokenizer
from tfmodels.tokenizers import roberta
from tfmodels.training.synthetic_text import tokenizer_test_strings

transformers = pytest.importorskip("transformers")

ASSET = os.path.join(os.path.dirname(tfmodels.__file__), "assets", "roberta")
SPECIALS = ["<mask>", "<s>", "</s>", "<pad>", "<unk>"]
# The pre-tokenization pattern's corners: contractions after words, spaces and symbols, whitespace runs before
# words and at the end, non-space whitespace before a word, Unicode spaces, \x1c (space for Python, not for \s).
CORNERS = ["x's 'sam !'s  'll\n\n'd", "a  \n b", "\u00a0hi\u3000there\x1cz", "  's", "''s", " 'tis", "end  ",
           "tab\tword", "\n\nnew", "I'M it'S", "3.14km 2024's", "<mask>", " <mask> ", "a<mask>b", "<s></s>",
           "  <mask>x", "über\u200a<mask>  ok", "ok\r\n\r\nnext", "😀😀 a", "…—«»"]


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("roberta_tok"))
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(ASSET, name), path)
    return path


@pytest.fixture(scope="module")
def tokenizers(directory):
    return transformers.RobertaTokenizer.from_pretrained(directory), RobertaTokenizer.from_pretrained(directory)


@pytest.fixture(scope="module")
def strings():
    return tokenizer_test_strings(300, special_tokens=SPECIALS) + CORNERS


def test_single_strings_ids_tokens_and_decode(tokenizers, strings):
    hf, ours = tokenizers
    assert len(ours) == len(hf) == 1000 and ours.get_vocab() == hf.get_vocab()
    assert (ours.mask_token_id, ours.pad_token_id, ours.bos_token_id, ours.eos_token_id, ours.unk_token_id) == \
        (hf.mask_token_id, 1, 0, 2, 3)
    for text in strings:
        assert ours.tokenize(text) == hf.tokenize(text), text
        expected = hf(text)
        got = ours(text)
        assert got["input_ids"] == expected["input_ids"], text
        assert got["attention_mask"] == expected["attention_mask"]
        assert ours.decode(got["input_ids"]) == hf.decode(expected["input_ids"])
        assert ours.decode(got["input_ids"], skip_special_tokens=True) == \
            hf.decode(expected["input_ids"], skip_special_tokens=True)


def test_scanner_equals_the_reference_pattern(strings):
    """Without the `regex` package the pre-tokenizer is a scanner; it cuts exactly like the pattern."""
    regex = pytest.importorskip("regex")
    pattern = regex.compile(roberta.PATTERN)
    for text in strings:
        assert roberta.pretokenize_scanner(text) == pattern.findall(text), text


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


def test_add_prefix_space_and_longformer_tokenizer(directory, strings):
    hf = transformers.RobertaTokenizer.from_pretrained(directory, add_prefix_space=True)
    ours = RobertaTokenizer.from_pretrained(directory, add_prefix_space=True)
    for text in strings[:120]:
        assert ours(text)["input_ids"] == hf(text)["input_ids"], text
    graph = ours.in_graph()
    expected = ours(strings[:120], padding=True, return_tensors="np")
    np.testing.assert_array_equal(graph(tf.constant(strings[:120]))["input_ids"].numpy(), expected["input_ids"])
    hf_longformer = transformers.LongformerTokenizer.from_pretrained(directory)
    longformer = LongformerTokenizer.from_pretrained(directory)
    assert isinstance(longformer, RobertaTokenizer)
    expected = hf_longformer(strings[:50], strings[50:100], padding=True, truncation=True, max_length=24,
                             return_tensors="np")
    got = longformer(strings[:50], strings[50:100], padding=True, truncation=True, max_length=24, return_tensors="np")
    np.testing.assert_array_equal(got["input_ids"], expected["input_ids"])


@pytest.fixture(scope="module")
def graph_tokenizer(tokenizers):
    return tokenizers[1].in_graph()


@pytest.mark.parametrize("max_length", [None, 7, 16])
def test_in_graph_tokenizer_equals_python(tokenizers, graph_tokenizer, strings, max_length):
    _, ours = tokenizers
    truncation = max_length is not None
    expected = ours(strings, padding=True, truncation=truncation, max_length=max_length, return_tensors="np")
    got = graph_tokenizer(tf.constant(strings), max_length=max_length)
    for key in ("input_ids", "attention_mask"):
        np.testing.assert_array_equal(got[key].numpy(), expected[key], err_msg=key)
    first, second = strings[::2], strings[1::2]
    expected = ours(first, second, padding=True, truncation=truncation, max_length=max_length, return_tensors="np")
    compiled = tf.function(lambda a, b: graph_tokenizer(a, b, max_length=max_length), autograph=False)
    got = compiled(tf.constant(first), tf.constant(second))
    np.testing.assert_array_equal(got["input_ids"].numpy(), expected["input_ids"])


def test_in_graph_tokenizer_uses_only_stock_ops(graph_tokenizer):
    from tensorflow.python.framework import op_def_registry
    concrete = tf.function(lambda a: graph_tokenizer(a, max_length=16), autograph=False).get_concrete_function(
        tf.TensorSpec([None], tf.string))
    ops = {op.type for op in concrete.graph.get_operations()}
    for function in concrete.graph._functions.values():
        ops |= {node.op for node in function.cached_definition.node_def}
    assert all(op_def_registry.get(op) is not None for op in ops)
    assert not any(op.startswith("TFModels") for op in ops)


def test_save_and_reload_in_hf_layout(tokenizers, tmp_path):
    hf, ours = tokenizers
    ours.save_pretrained(str(tmp_path))
    assert os.path.isfile(os.path.join(str(tmp_path), "vocab.json"))
    assert os.path.isfile(os.path.join(str(tmp_path), "merges.txt"))
    again = RobertaTokenizer.from_pretrained(str(tmp_path))
    reloaded_hf = transformers.RobertaTokenizer.from_pretrained(str(tmp_path))
    text = "Hello <mask> world, größer!  done"
    assert again(text)["input_ids"] == ours(text)["input_ids"] == reloaded_hf(text)["input_ids"] == \
        hf(text)["input_ids"]
    assert again.bpe_ranks == ours.bpe_ranks and again.encoder == ours.encoder
