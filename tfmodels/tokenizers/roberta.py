"""RoBERTa's byte-level BPE tokenizer (also Longformer's, MRA's): Python and in-graph (TF / TF Text ops).

Reproduces Hugging Face's slow `RobertaTokenizer` (transformers 4.57): text is cut by GPT-2's pre-tokenization
pattern (contractions, letter runs, number runs and other-symbol runs each taking one leading space, and
whitespace runs giving their last space to the next word), every UTF-8 byte of a piece is mapped to a printable
character (`bytes_to_unicode`), and the BPE merges of merges.txt are applied, lowest rank first, all
non-overlapping occurrences left to right. Ids come from vocab.json (unknown symbols -> <unk>).
Sequences: `<s> A </s>` and `<s> A </s></s> B </s>`; token type ids are all 0; `<mask>` eats the space before
it (lstrip), as the reference.

`RobertaTokenizerFast` / `LongformerTokenizerFast` follow the reference's fast tokenizers where they differ: the
prefix space (add_prefix_space, fixed at construction) goes before every piece between special tokens, and words
(is_split_into_words) need add_prefix_space=True. Offsets (`return_offsets_mapping`) are the fast tokenizers':
with trim_offsets (the default) without the spaces a token starts or ends with, else with them.

Character classes: with the `regex` package installed (it comes with transformers) the reference's pattern is
used as is; otherwise an equivalent scanner over Python's Unicode database, which differs only for characters
assigned after that database's Unicode version. The in-graph version uses RE2's Unicode tables.
"""
import functools
import json
import os
import unicodedata

import numpy as np
import tensorflow as tf

from tfmodels.tokenizers import tokenizer_json
from tfmodels.tokenizers.base import SPECIAL_TOKEN_ATTRIBUTES, PreTrainedTokenizer, Template
from tfmodels.tokenizers.in_graph import InGraphTokenizer, regex_split, template_items

VOCAB_FILES_NAMES = {"vocab_file": "vocab.json", "merges_file": "merges.txt"}
PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
CONTRACTIONS = ("s", "t", "re", "ve", "m", "ll", "d")
# \s of the reference's `regex` pattern: Unicode White_Space (Python's str.isspace() also has \x1c-\x1f).
WHITESPACE = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
                       "\u200a\u2028\u2029\u202f\u205f\u3000")


@functools.lru_cache(maxsize=None)
def bytes_to_unicode():
    """Byte -> printable character: printable Latin-1 bytes map to themselves, the other 68 bytes to the
    characters from U+0100 on (so that no symbol is whitespace or a control character)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1))
                 + list(range(ord("\u00ae"), ord("\u00ff") + 1)))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes)))


@functools.lru_cache(maxsize=65536)
def _char_class(char):
    """'s' whitespace, 'L' letter, 'N' number, 'O' anything else (the pattern's three runs)."""
    if char in WHITESPACE:
        return "s"
    category = unicodedata.category(char)[0]
    return category if category in ("L", "N") else "O"


def pretokenize_scanner(text):
    """The reference's pattern, written out as a scanner (used when the `regex` package is missing)."""
    pieces, i, n = [], 0, len(text)
    while i < n:
        char = text[i]
        if char == "'" and i + 1 < n:
            suffix = next((c for c in CONTRACTIONS if text.startswith(c, i + 1)), None)
            if suffix is not None:
                pieces.append("'" + suffix)
                i += 1 + len(suffix)
                continue
        start = i
        if char == " " and i + 1 < n and _char_class(text[i + 1]) != "s":
            i += 1  # the optional leading space of a letter / number / other run
        kind = _char_class(text[i])
        if kind != "s":
            i += 1
            while i < n and _char_class(text[i]) == kind:
                i += 1
            pieces.append(text[start:i])
            continue
        end = i
        while end < n and _char_class(text[end]) == "s":
            end += 1
        if end == n or end - i == 1:
            i = end                    # whitespace up to the end, or one whitespace before a word
        else:
            i = end - 1                # the last whitespace goes with the next word
        pieces.append(text[start:i])
    return pieces


def _regex_pretokenizer():
    try:
        import regex
    except ImportError:
        return None
    compiled = regex.compile(PATTERN)
    return compiled.findall


def load_vocab_and_merges(vocab_file, merges_file):
    with open(vocab_file, encoding="utf-8") as f:
        encoder = json.load(f)
    with open(merges_file, encoding="utf-8") as f:
        # As the reference: the first line is a header, and the text after the last newline is ignored.
        lines = f.read().split("\n")[1:-1]
    merges = [tuple(line.split()) for line in lines]
    return encoder, merges


class RobertaTokenizer(PreTrainedTokenizer):
    """Byte-level BPE tokenizer of RoBERTa (vocab.json + merges.txt), API like the reference's."""

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ("input_ids", "attention_mask")
    default_special_tokens = {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
                              "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>"}
    strip_flags = {"mask_token": (True, False)}  # <mask> eats the space before it
    template = Template(single=("cls_token", "A", "sep_token"),
                        pair=("cls_token", "A", "sep_token", "sep_token", "B", "sep_token"),
                        type_ids={"cls_token": 0, "A": 0, "sep_token": 0, "B": 0})

    call_options = ("add_prefix_space",)
    # The fast tokenizers put the prefix space before each piece between special tokens, not before the text.
    prefix_each_piece = False

    def __init__(self, vocab_file=None, merges_file=None, errors="replace", add_prefix_space=False,
                 trim_offsets=True, tokenizer_file=None, **kwargs):
        self.vocab_file, self.merges_file = vocab_file, merges_file
        if vocab_file is not None and merges_file is not None:
            self.encoder, merges = load_vocab_and_merges(vocab_file, merges_file)
        elif tokenizer_file is not None:
            self.encoder, merges = tokenizer_json.bpe_vocab_and_merges(tokenizer_json.read(tokenizer_file))
        else:
            raise ValueError(f"{type(self).__name__} needs vocab_file and merges_file, or tokenizer_file")
        self.trim_offsets = bool(trim_offsets)
        self.decoder = {v: k for k, v in self.encoder.items()}
        self.bpe_ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.errors = errors
        self.add_prefix_space = bool(add_prefix_space)
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        self.cache = {}
        self._findall = _regex_pretokenizer() or pretokenize_scanner
        super().__init__(**kwargs)
        # Special tokens missing from vocab.json get the next ids, in the reference's order.
        self.added_tokens_encoder = {}
        for attr in SPECIAL_TOKEN_ATTRIBUTES:
            token = getattr(self, attr)
            if token is not None and token not in self.encoder and token not in self.added_tokens_encoder:
                self.added_tokens_encoder[token] = len(self.encoder) + len(self.added_tokens_encoder)
        self.added_tokens_decoder = {v: k for k, v in self.added_tokens_encoder.items()}

    @classmethod
    def _extra_init_args(cls):
        return ("errors", "add_prefix_space", "trim_offsets")

    def _extra_config(self):
        return {"errors": self.errors, "add_prefix_space": self.add_prefix_space, "trim_offsets": self.trim_offsets}

    # ---------------------------------------------------------------------------------------------------

    @property
    def vocab_size(self):
        return len(self.encoder)

    def __len__(self):
        return len(self.encoder) + len(self.added_tokens_encoder)

    def get_vocab(self):
        return {**self.encoder, **self.added_tokens_encoder}

    def _prefixes_text(self, text, add_prefix_space):
        """Whether a space goes before the whole text (the reference's slow tokenizer)."""
        return not self.prefix_each_piece and add_prefix_space and bool(text) and not text[0].isspace()

    def _prefixes_piece(self, piece):
        """Whether a space goes before a piece between special tokens (the reference's fast tokenizer)."""
        return self.prefix_each_piece and self.add_prefix_space and bool(piece) and not piece.startswith(" ")

    def tokenize(self, text, **options):
        """add_prefix_space=True/False (default: the tokenizer's) puts a space before a text that does not start
        with one, so that its first word is tokenized as any other."""
        self._check_call_options(options)
        if self._prefixes_text(text, bool(options.get("add_prefix_space", self.add_prefix_space))):
            text = " " + text
        return super().tokenize(text)

    def tokenize_with_offsets(self, text, **options):
        self._check_call_options(options)
        add_prefix_space = bool(options.get("add_prefix_space", self.add_prefix_space))
        prefixed = self._prefixes_text(text, add_prefix_space)
        tokens, offsets = super().tokenize_with_offsets(" " + text if prefixed else text)
        if prefixed:
            offsets = _without_prefix(offsets)
        if self.trim_offsets:
            specials = set(self.all_special_tokens)
            offsets = [span if token in specials else trim_offsets(token, span, add_prefix_space, i == 0)
                       for i, (token, span) in enumerate(zip(tokens, offsets))]
        return tokens, offsets

    def _special_token_offsets(self, span, outer):
        # Trimming also leaves out the whitespace that the token's lstrip/rstrip took.
        return span if self.trim_offsets else outer

    def _word_options(self, options):
        # As the reference's slow tokenizer: every word of a split text takes a prefix space.
        return {**options, "add_prefix_space": True}

    def pretokenize(self, text):
        """The pieces of GPT-2's pre-tokenization pattern (before the byte mapping and BPE)."""
        return self._findall(text)

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = list(token)
        while len(word) > 1:
            ranked = [(self.bpe_ranks.get(pair, np.inf), pair) for pair in zip(word[:-1], word[1:])]
            rank, (first, second) = min(ranked, key=lambda item: item[0])
            if rank == np.inf:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        self.cache[token] = word
        return word

    def _tokenize(self, text):
        if self._prefixes_piece(text):
            text = " " + text
        tokens = []
        for piece in self.pretokenize(text):
            mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            tokens.extend(self.bpe(mapped))
        return tokens

    def _tokenize_with_offsets(self, text):
        prefixed = self._prefixes_piece(text)
        if prefixed:
            text = " " + text
        result, position = [], 0
        for piece in self.pretokenize(text):  # the pieces cover the text, in order
            source = [position + k for k, char in enumerate(piece) for _ in char.encode("utf-8")]  # per byte
            consumed = 0
            for token in self.bpe("".join(self.byte_encoder[b] for b in piece.encode("utf-8"))):
                # One symbol per byte: a token spans the characters of its bytes (a character split across
                # tokens is in each of them, as in the `tokenizers` library).
                result.append((token, (source[consumed], source[consumed + len(token) - 1] + 1)))
                consumed += len(token)
            position += len(piece)
        if prefixed:
            spans = _without_prefix([span for _, span in result])
            result = [(token, span) for (token, _), span in zip(result, spans)]
        return result

    def _convert_token_to_id(self, token):
        if token in self.added_tokens_encoder:
            return self.added_tokens_encoder[token]
        return self.encoder.get(token, self.encoder.get(self.unk_token, self.added_tokens_encoder.get(self.unk_token)))

    def _convert_id_to_token(self, index):
        if index in self.added_tokens_decoder:
            return self.added_tokens_decoder[index]
        return self.decoder.get(index)

    def convert_tokens_to_string(self, tokens):
        text = "".join(tokens)
        return bytearray(self.byte_decoder[c] for c in text).decode("utf-8", errors=self.errors)

    def _write_vocabulary(self, directory, prefix):
        vocab_path = os.path.join(directory, prefix + VOCAB_FILES_NAMES["vocab_file"])
        merges_path = os.path.join(directory, prefix + VOCAB_FILES_NAMES["merges_file"])
        with open(vocab_path, "w", encoding="utf-8") as f:
            f.write(json.dumps(self.encoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        with open(merges_path, "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n")
            for (first, second), _ in sorted(self.bpe_ranks.items(), key=lambda item: item[1]):
                f.write(f"{first} {second}\n")
        return vocab_path, merges_path

    def in_graph(self, max_length=None):
        """The in-graph twin of this tokenizer, made of TF and TF Text ops (for raw-string SavedModel
        signatures; it runs in stock TensorFlow Serving)."""
        return ByteLevelBPEInGraphTokenizer.from_tokenizer(self, max_length=max_length)


class LongformerTokenizer(RobertaTokenizer):
    """Longformer's tokenizer: RoBERTa's byte-level BPE (the reference's LongformerTokenizer is a copy)."""


class RobertaTokenizerFast(RobertaTokenizer):
    """RobertaTokenizer with the reference's fast-tokenizer behaviour: add_prefix_space is fixed when the tokenizer
    is built and adds a space before every piece between special tokens; text given as words needs it."""

    call_options = ()
    prefix_each_piece = True
    fast_truncation = True

    def _check_call_options(self, options):
        if "add_prefix_space" in options:
            raise ValueError(f"{type(self).__name__} takes add_prefix_space when it is built "
                             f"({type(self).__name__}.from_pretrained(..., add_prefix_space=True)), as the reference's "
                             "fast tokenizer; RobertaTokenizer also takes it per call")
        super()._check_call_options(options)

    def _check_split_words(self, is_split_into_words, options):
        if is_split_into_words and not self.add_prefix_space:
            raise ValueError(f"You need to instantiate {type(self).__name__} with add_prefix_space=True to use it "
                             "with pretokenized inputs.")

    def _word_options(self, options):
        return options


class LongformerTokenizerFast(RobertaTokenizerFast, LongformerTokenizer):
    """Longformer's fast tokenizer: RobertaTokenizerFast (the reference's is a copy)."""


def _without_prefix(offsets):
    """Offsets in " " + text -> offsets in text; the added space counts as the text's first character."""
    return [(max(start - 1, 0), max(end - 1, 1)) for start, end in offsets]


def trim_offsets(token, span, add_prefix_space, is_first):
    """The `tokenizers` library's byte-level offset trimming: leave out the spaces ("Ġ") a token starts or ends
    with; the one space added before a text (add_prefix_space) stays in its first token."""
    space = bytes_to_unicode()[ord(" ")]
    start, end = span
    leading = len(token) - len(token.lstrip(space))
    trailing = len(token) - len(token.rstrip(space))
    if leading and not ((is_first or start == 0) and add_prefix_space and leading == 1):
        start = min(start + leading, end)
    if trailing and end >= trailing:
        end = max(end - trailing, start)
    return start, end


# ---------------------------------------------------------------------------------------------------------------
# In-graph version


def _re2_class(chars):
    return "".join(f"\\x{{{ord(c):x}}}" for c in sorted(chars))


_WS = "[" + _re2_class(WHITESPACE) + "]"
_PY_SPACE = frozenset(c for c in map(chr, range(0x3001)) if c.isspace())  # str.isspace (add_prefix_space)
_WORD_PATTERN = ("'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" + _re2_class(WHITESPACE) + "\\p{L}\\p{N}]+")


class ByteLevelBPEInGraphTokenizer(InGraphTokenizer):
    """Byte-level BPE with TF ops: RE2 pre-tokenization (TF Text regex_split), the byte mapping and the
    vocabulary as hash tables, and the merges as a while loop over all the words of the batch at once."""

    def __init__(self, encoder, merges, unk_id, add_prefix_space=False, **kwargs):
        super().__init__(**kwargs)
        self.add_prefix_space = bool(add_prefix_space)
        byte_map = bytes_to_unicode()
        self.byte_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant([bytes([b]) for b in range(256)]),
                                                tf.constant([byte_map[b].encode("utf-8") for b in range(256)])),
            default_value="")
        self.vocab_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(list(encoder.keys())),
                                                tf.constant(list(encoder.values()), tf.int64)),
            default_value=tf.constant(unk_id, tf.int64))
        keys = [f"{a} {b}" for a, b in merges] or ["\x00 \x00"]
        self.merge_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(keys), tf.range(len(keys), dtype=tf.int64)),
            default_value=tf.constant(np.iinfo(np.int64).max, tf.int64))

    @classmethod
    def from_tokenizer(cls, tokenizer, max_length=None):
        specials = {t: tokenizer.convert_tokens_to_ids(t) for t in tokenizer.all_special_tokens}
        strip = {t: tokenizer.token_strip_flags(t) for t in tokenizer.all_special_tokens}
        merges = [pair for pair, _ in sorted(tokenizer.bpe_ranks.items(), key=lambda item: item[1])]
        return cls(tokenizer.encoder, merges, tokenizer.unk_token_id, add_prefix_space=tokenizer.add_prefix_space,
                   special_tokens=specials, strip_flags=strip,
                   template_single=template_items(tokenizer, tokenizer.template.single),
                   template_pair=template_items(tokenizer, tokenizer.template.pair),
                   pad_id=tokenizer.pad_token_id, padding_side=tokenizer.padding_side,
                   truncation_side=tokenizer.truncation_side, max_length=max_length,
                   return_token_type_ids="token_type_ids" in tokenizer.model_input_names)

    def encode(self, text):
        text = tf.convert_to_tensor(text, tf.string)
        if self.add_prefix_space:
            starts_with_space = tf.strings.regex_full_match(text, "(?s)[" + _re2_class(_PY_SPACE) + "].*")
            text = tf.where(tf.logical_or(tf.equal(text, ""), starts_with_space), text,
                            tf.strings.join([" ", text]))
        return super().encode(text)

    # -----------------------------------------------------------------------------------------------

    def pretokenize(self, pieces):
        """[P] strings -> ragged [P, None] pieces of the reference's pattern."""
        runs = regex_split(pieces, _WS + "+")         # whitespace runs and the rest
        flat = runs.flat_values
        rows = runs.value_rowids()
        n = tf.shape(flat, out_type=tf.int64)[0]
        is_ws = tf.strings.regex_full_match(flat, _WS + "+")
        is_last = tf.logical_not(tf.concat([tf.equal(rows[1:], rows[:-1]), [False]], 0)[:n])
        length = tf.strings.length(flat, unit="UTF8_CHAR")
        head = tf.strings.substr(flat, tf.zeros_like(length), tf.maximum(length - 1, 0), unit="UTF8_CHAR")
        last = tf.strings.substr(flat, tf.maximum(length - 1, 0), tf.ones_like(length), unit="UTF8_CHAR")
        inner_ws = tf.logical_and(is_ws, tf.logical_not(is_last))
        gives_space = tf.logical_and(inner_ws, tf.equal(last, " "))
        # A whitespace run followed by a word keeps all but its last character; that character is a
        # piece of its own, unless it is a space, which becomes the word's leading space.
        part_ws = tf.where(is_ws, tf.where(is_last, flat, head), "")
        part_last = tf.where(tf.logical_and(inner_ws, tf.logical_not(gives_space)), last, "")
        prefixed = tf.concat([[False], gives_space], 0)[:-1]
        words = tf.where(is_ws, "", tf.where(prefixed, tf.strings.join([" ", flat]), flat))
        word_pieces = regex_split(words, _WORD_PATTERN)
        single = lambda x: tf.RaggedTensor.from_tensor(x[:, None])  # noqa: E731
        combined = tf.concat([single(part_ws), single(part_last), word_pieces], axis=1)
        combined = tf.ragged.boolean_mask(combined, tf.not_equal(combined, ""))
        per_piece = tf.RaggedTensor.from_row_splits(combined, runs.row_splits)
        return per_piece.merge_dims(1, 2)

    def _map_bytes(self, words):
        """[N] strings -> [N] strings with every byte replaced by its printable character."""
        chars = tf.strings.bytes_split(words)
        mapped = tf.ragged.map_flat_values(self.byte_table.lookup, chars)
        return tf.strings.reduce_join(mapped, axis=-1)

    def _bpe(self, words):
        """[U] mapped words -> ragged [U, None] BPE symbols (all words merged together, one loop)."""
        symbols = tf.strings.unicode_split(words, "UTF-8")
        values, splits = symbols.flat_values, symbols.row_splits
        num_rows = tf.shape(splits, out_type=tf.int64)[0] - 1
        never = tf.constant(np.iinfo(np.int64).max, tf.int64)

        def step(values, splits, _):
            rows = tf.ragged.row_splits_to_segment_ids(splits)
            count = tf.shape(values, out_type=tf.int64)[0]
            pairs = tf.strings.join([values[:-1], values[1:]], separator=" ")
            same_row = tf.equal(rows[:-1], rows[1:])
            ranks = tf.where(same_row, self.merge_table.lookup(pairs), never)
            best = tf.math.unsorted_segment_min(ranks, rows[:-1], num_rows)
            is_best = tf.logical_and(tf.equal(ranks, tf.gather(best, rows[:-1])), ranks < never)
            # Leftmost non-overlapping occurrences: in a run of consecutive matches (a pair "a a" in
            # "a a a"), every other one from the first.
            index = tf.range(count - 1)
            starts = tf.logical_and(is_best, tf.logical_not(tf.concat([[False], is_best[:-1]], 0)))
            run = tf.cumsum(tf.cast(starts, tf.int64))
            run_start = tf.gather(tf.math.unsorted_segment_min(index, run, tf.reduce_max(
                tf.concat([run, [0]], 0)) + 1), run)
            selected = tf.logical_and(is_best, tf.equal((index - run_start) % 2, 0))
            selected = tf.concat([selected, [False]], 0)
            following = tf.concat([values[1:], [""]], 0)
            merged = tf.where(selected, tf.strings.join([values, following]), values)
            keep = tf.logical_not(tf.concat([[False], selected[:-1]], 0))
            new_values = tf.boolean_mask(merged, keep)
            lengths = tf.math.unsorted_segment_sum(tf.cast(keep, tf.int64), rows, num_rows)
            new_splits = tf.concat([[0], tf.cumsum(lengths)], 0)
            return new_values, new_splits, tf.reduce_any(selected)

        def cond(values, splits, changed):
            return changed

        def body(values, splits, changed):
            return step(values, splits, changed)

        values, splits, _ = tf.while_loop(
            cond, body, [values, splits, tf.shape(values)[0] > 1],
            shape_invariants=[tf.TensorShape([None]), tf.TensorShape([None]), tf.TensorShape([])])
        return tf.RaggedTensor.from_row_splits(values, splits)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)
    def _subword_ids(self, flat_pieces):
        words = self.pretokenize(flat_pieces)                               # [P, W]
        mapped = self._map_bytes(words.flat_values)                          # [N]
        unique, index = tf.unique(mapped)
        symbols = self._bpe(unique)                                          # [U, None]
        ids = tf.ragged.map_flat_values(lambda s: tf.cast(self.vocab_table.lookup(s), tf.int32), symbols)
        per_word = tf.gather(ids, index)                                     # [N, None]
        return tf.RaggedTensor.from_row_splits(per_word, words.row_splits).merge_dims(1, 2)
