"""In-graph tokenizers: strings -> model inputs with TensorFlow and TF Text ops only, so that a SavedModel
with a raw-text signature runs in stock TensorFlow Serving.

Built from a Python tokenizer (`tokenizer.in_graph(max_length=...)`), they reproduce its semantics: special
tokens split out of the text with their lstrip/rstrip flags, the same sub-word model and id mapping, the
truncation strategy "longest_first", the special-token template, and padding on the tokenizer's side.
"""
import functools
import re
import sys
import unicodedata

import tensorflow as tf

# RE2 character class equivalent to Python's str.isspace() (what str.strip() removes).
_PY_WHITESPACE = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())
_WS_CLASS = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in _PY_WHITESPACE) + "]"


def character_class(predicate):
    """An RE2 character class of every code point for which `predicate(char)` holds (as ranges)."""
    ranges, start, previous = [], None, None
    for code in range(sys.maxunicode + 1):
        if 0xD800 <= code <= 0xDFFF:  # surrogates never occur in valid UTF-8
            continue
        if predicate(chr(code)):
            if start is None:
                start = code
            elif code != previous + 1:
                ranges.append((start, previous))
                start = code
            previous = code
    if start is not None:
        ranges.append((start, previous))
    parts = [f"\\x{{{a:x}}}" if a == b else f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in ranges]
    return "[" + "".join(parts) + "]"


_CLASSES = {}


# Plain Python even when first called while autograph traces a tokenizer (a SavedModel export): a converted loop
# over every code point costs minutes.
@tf.autograph.experimental.do_not_convert
def cached_class(name, predicate):
    """`character_class(predicate)`, built once per process under `name` (a scan of every code point)."""
    if name not in _CLASSES:
        _CLASSES[name] = character_class(predicate)
    return _CLASSES[name]


def normalize_sentencepiece_input(text, remove_space, keep_accents, do_lower_case, combining_class):
    """XLNet's and ALBERT's text normalisation before sentencepiece, in graph: whitespace runs to one space and
    stripped, `` and '' to ", accents removed (NFKD, then the combining marks of `combining_class`, an RE2
    class), lower case."""
    if remove_space:
        text = tf.strings.regex_replace(text, _WS_CLASS + "+", " ")
        text = tf.strings.regex_replace(text, "^ | $", "")
    text = tf.strings.regex_replace(text, "``", '"')
    text = tf.strings.regex_replace(text, "''", '"')
    if not keep_accents:
        text = outside_unassigned(text, lambda part: _tf_text().normalize_utf8(part, "NFKD"))
        text = tf.strings.regex_replace(text, combining_class, "")
    if do_lower_case:
        text = lower(text)
    return text


# NUL bytes: TF Text's regex_split and tf.strings.lower end each string at its first NUL (they read it as a C
# string), while the reference tokenizes NUL like any other character; the two wrappers below keep it.


def regex_split(text, pattern):
    """[n] strings -> ragged [n, None] pieces: TF Text's regex_split keeping the delimiters, NUL-safe. The split
    runs on a copy with NUL written as \\x01 (one byte, and like NUL a control character: the same class in every
    pattern used here) and the original strings are cut at the same byte offsets."""
    text = tf.convert_to_tensor(text, tf.string)
    # TF Text's op itself: its Python wrapper adds ~200 validation ops per call, and an encoding calls this up to
    # seven times (ops built while tracing are what an export with a tokenizer spends its time on).
    group = f"({pattern})"  # as the wrapper: an alternation must not bind to anything else
    _, begins, ends, splits = _regex_split_op()(tf.strings.regex_replace(text, "\\x00", "\x01"), group, group)
    # The pieces are joined from the strings' bytes: cutting them with substr from the whole string gathered
    # once per piece copied that string once per piece (quadratic: gigabytes for a 64 KB text).
    chars = tf.strings.bytes_split(text)                                      # ragged [n, bytes]
    row_start = tf.gather(chars.row_splits[:-1], value_rowids(splits))       # in the flat bytes
    byte_ranges = tf.ragged.range(row_start + begins, row_start + ends)
    piece_bytes = ragged_from_splits(tf.gather(chars.flat_values, byte_ranges.flat_values), byte_ranges.row_splits)
    return ragged_from_splits(join_rows(piece_bytes), splits)


def _lower_icu(text):
    """[n] strings lower-cased by tf.strings.lower (UTF-8), NUL-safe: the parts between NULs are lowered on their
    own (NUL is neither cased nor case-ignorable, so no context rule sees across it)."""
    parts = tf.strings.split(text, "\x00")
    rows = value_rowids(parts.row_splits)
    # The NULs go back as data: a separator attribute would be cut at its NUL too.
    last = tf.equal(tf.range(tf.size(rows, out_type=rows.dtype)), tf.gather(parts.row_splits[1:] - 1, rows))
    lowered = tf.strings.join([tf.strings.lower(parts.flat_values, encoding="utf-8"), tf.where(last, "", "\x00")])
    return tf.strings.unsorted_segment_join(lowered, rows, tf.size(text))


# Unicode versions: the reference runs Python's unicodedata and str.lower (Unicode 14.0 in Python 3.11), TF Text's
# NFKD a newer ICU (it decomposes U+1CCD8, a Unicode 16 letter, to "C") and tf.strings.lower an older one (it
# leaves U+2C2F, a Unicode 14 capital, as it is). Two wrappers give Python's results: `outside_unassigned` keeps
# what Python's database does not know away from the ICU ops, and `lower` maps the capitals that TF's ICU misses.


def outside_unassigned(text, transform):
    """[n] strings -> `transform` ([n] strings -> [n] strings) applied to each string's runs of code points that
    Python's Unicode database assigns; the unassigned ones stay as they are, as Python's NFKD and str.lower
    leave them. Unassigned code points are starters there, with no case: nothing reorders or cases across them,
    so transforming the runs on their own gives Python's result for the whole string."""
    unassigned = cached_class("unassigned", lambda c: unicodedata.category(c) == "Cn") + "+"
    parts = regex_split(text, unassigned)
    flat = parts.flat_values
    kept = tf.strings.regex_full_match(flat, unassigned)
    return join_rows(parts.with_flat_values(tf.where(kept, flat, transform(flat))))


@tf.autograph.experimental.do_not_convert  # as cached_class
@functools.lru_cache(maxsize=None)
def _lower_gaps():
    """{character: Python's lower case} where tf.strings.lower gives another (probed once, eagerly)."""
    cased = [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF and chr(c).lower() != chr(c)]
    with tf.init_scope():
        icu = [s.decode("utf-8") for s in _lower_icu(tf.constant(cased)).numpy()]
    return {c: c.lower() for c, lowered in zip(cased, icu) if lowered != c.lower()}


def lower(text):
    """[n] strings lower-cased (UTF-8) as Python's str.lower: NUL-safe, the code points unassigned in Python's
    Unicode database kept, and the capitals that TF's ICU does not know lowered by a table. (Not reproduced: to
    TF's ICU those capitals are not cased, so a capital sigma next to one can take the other final-sigma form.)"""
    gaps = _lower_gaps()
    if not gaps:
        return outside_unassigned(text, _lower_icu)
    keys = sorted(gaps)
    gap_class = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in keys) + "]"

    def lower_known(part):
        pieces = regex_split(part, gap_class)
        flat = pieces.flat_values
        match = tf.equal(tf.expand_dims(flat, 1), tf.constant(keys))  # [pieces, gaps]: a gap character alone
        mapped = tf.gather(tf.constant([gaps[k] for k in keys]), tf.argmax(tf.cast(match, tf.int32), axis=1))
        lowered = tf.where(tf.reduce_any(match, axis=1), mapped, _lower_icu(flat))
        return join_rows(pieces.with_flat_values(lowered))

    return outside_unassigned(text, lower_known)


def lower_each_character(text):
    """Lower case one character at a time, as the reference's XLNet and ALBERT do before the special tokens are
    split out: tf.strings.lower applies the final-sigma rule like Python's str.lower on a whole string, where a
    capital sigma on its own always becomes σ."""
    return lower(tf.strings.regex_replace(text, "\u03a3", "\u03c3"))


def _tf_text():
    """tensorflow_text, imported on first use: importing it costs ~0.12 GiB of resident memory (its shared
    libraries), which a process that never tokenizes in-graph (e.g. inference on ids) should not pay."""
    import tensorflow_text
    return tensorflow_text


def _regex_split_op():
    """TF Text's RegexSplitWithOffsets op, unwrapped: (tokens, begins, ends, row splits) of [n] strings."""
    _tf_text()
    from tensorflow_text.python.ops import regex_split_ops
    return regex_split_ops.gen_regex_split_ops.regex_split_with_offsets


def ragged_from_splits(values, row_splits):
    """A ragged tensor from row splits that an op built (valid by construction): without the validation ops."""
    return tf.RaggedTensor.from_row_splits(values, row_splits, validate=False)


def value_rowids(row_splits):
    """The row of each value (RaggedTensor.value_rowids in a few ops instead of ~70): how many rows end at or
    before its position."""
    positions = tf.range(row_splits[-1], dtype=row_splits.dtype)
    # The op itself: tf.searchsorted's wrapper adds ~40 reshaping ops.
    return tf.raw_ops.UpperBound(sorted_inputs=tf.expand_dims(row_splits[1:], 0), values=tf.expand_dims(positions, 0),
                                 out_type=row_splits.dtype)[0]


def ragged_from_lengths(values, row_lengths):
    """RaggedTensor.from_row_lengths without its validation ops (the lengths are built to match the values)."""
    return ragged_from_splits(values, tf.concat([[0], tf.cumsum(tf.cast(row_lengths, tf.int64))], 0))


def concat_rows(*rts):
    """Ragged [n, None] tensors -> ragged [n, None], row i the rows i of each in turn: tf.concat(axis=1) as one
    gather (the ragged concat adds ~80 ops)."""
    splits = [tf.cast(rt.row_splits, tf.int64) for rt in rts]
    lengths = [s[1:] - s[:-1] for s in splits]
    out_splits = tf.concat([[0], tf.cumsum(tf.add_n(lengths))], 0)
    rows = value_rowids(out_splits)
    within = tf.range(out_splits[-1]) - tf.gather(out_splits, rows)         # position in the output row
    source, offset, before = tf.zeros_like(rows), 0, tf.zeros_like(rows)     # `before`: the row's earlier inputs
    for rt, split, length in zip(rts, splits, lengths):
        here = (within >= before) & (within < before + tf.gather(length, rows))
        source = tf.where(here, offset + tf.gather(split, rows) + within - before, source)
        offset += tf.size(rt.flat_values, out_type=tf.int64)
        before += tf.gather(length, rows)
    return ragged_from_splits(tf.gather(tf.concat([rt.flat_values for rt in rts], 0), source), out_splits)


def join_rows(rt):
    """Ragged [n, None] strings -> [n]: each row's strings concatenated in order (the kernel of reduce_join on a
    ragged tensor, without the ~100 ops of its wrapper)."""
    return tf.strings.unsorted_segment_join(rt.flat_values, value_rowids(rt.row_splits), rt.nrows())


def _row_lengths(rt):
    return tf.cast(rt.row_lengths(), tf.int32)


def _keep_first(rt, lengths):
    """Keep the first `lengths[i]` items of row i of a ragged [batch, None] tensor."""
    positions = tf.ragged.range(_row_lengths(rt))
    return tf.ragged.boolean_mask(rt, positions < tf.expand_dims(lengths, 1))


def _keep_last(rt, lengths):
    row = _row_lengths(rt)
    positions = tf.ragged.range(row)
    return tf.ragged.boolean_mask(rt, positions >= tf.expand_dims(row - lengths, 1))


def _reverse_rows(rt):
    starts = rt.row_starts()
    lengths = rt.row_lengths()
    rows = rt.value_rowids()
    within = tf.range(tf.size(rt.values, out_type=tf.int64)) - tf.gather(starts, rows)
    source = tf.gather(starts, rows) + tf.gather(lengths, rows) - 1 - within
    return tf.RaggedTensor.from_row_splits(tf.gather(rt.values, source), rt.row_splits)


class InGraphTokenizer(tf.Module):
    """Base: subclasses implement `_subword_ids(flat_pieces) -> ragged [pieces, None] of model ids`."""

    def __init__(self, special_tokens, strip_flags, template_single, template_pair, pad_id, padding_side="right",
                 truncation_side="right", max_length=None, return_token_type_ids=True, name=None):
        """special_tokens: {token string: id}; strip_flags: {token string: (lstrip, rstrip)};
        templates: lists of ("A" | "B" | (id, type_id)) with A/B given as ("A", type_id)."""
        super().__init__(name=name)
        self.special_strings = sorted(special_tokens, key=len, reverse=True)
        self.special_ids = [special_tokens[t] for t in self.special_strings]
        self.lstrip = [bool(strip_flags.get(t, (False, False))[0]) for t in self.special_strings]
        self.rstrip = [bool(strip_flags.get(t, (False, False))[1]) for t in self.special_strings]
        self.template_single = template_single
        self.template_pair = template_pair
        self.pad_id = int(pad_id)
        self.padding_side = padding_side
        self.truncation_side = truncation_side
        self.max_length = max_length
        self.return_token_type_ids = return_token_type_ids
        self._pattern = "|".join(re.escape(t) for t in self.special_strings) if self.special_strings else None

    # ---------------------------------------------------------------------------------------------------

    def _subword_ids(self, flat_pieces):
        raise NotImplementedError

    def encode(self, text):
        """[batch] strings -> ragged [batch, None] ids without special-token template."""
        text = tf.convert_to_tensor(text, tf.string)
        if self._pattern is None:
            return self._subword_ids(text)
        pieces = regex_split(text, self._pattern)
        flat = pieces.flat_values
        match = tf.stack([tf.equal(flat, t) for t in self.special_strings], axis=1)  # [pieces, specials]
        is_special = tf.reduce_any(match, axis=1)
        special_index = tf.argmax(tf.cast(match, tf.int32), axis=1, output_type=tf.int32)
        lstrip = tf.logical_and(is_special, tf.gather(tf.constant(self.lstrip), special_index))
        rstrip = tf.logical_and(is_special, tf.gather(tf.constant(self.rstrip), special_index))
        # Neighbours within the same row: a piece before an lstrip special loses its trailing whitespace,
        # a piece after an rstrip special its leading whitespace.
        row = value_rowids(pieces.row_splits)
        same_next = tf.concat([tf.equal(row[1:], row[:-1]), [False]], 0)
        same_prev = tf.concat([[False], tf.equal(row[1:], row[:-1])], 0)
        next_lstrip = tf.logical_and(same_next, tf.concat([lstrip[1:], [False]], 0))
        prev_rstrip = tf.logical_and(same_prev, tf.concat([[False], rstrip[:-1]], 0))
        flat = tf.where(next_lstrip, tf.strings.regex_replace(flat, _WS_CLASS + "+$", ""), flat)
        flat = tf.where(prev_rstrip, tf.strings.regex_replace(flat, "^" + _WS_CLASS + "+", ""), flat)
        words = self._subword_ids(tf.where(is_special, tf.fill(tf.shape(flat), ""), flat))  # none for a special
        # Each piece gives its words or (a special) its one id, and a text the ids of its pieces in order: one
        # gather from [word ids, special id of each piece] (ragged concat and merge_dims cost hundreds of ops).
        word_splits = tf.cast(words.row_splits, tf.int64)
        lengths = word_splits[1:] - word_splits[:-1] + tf.cast(is_special, tf.int64)
        id_splits = tf.concat([[0], tf.cumsum(lengths)], 0)                          # per piece
        piece = value_rowids(id_splits)                                             # of each id
        word_count = tf.size(words.flat_values, out_type=tf.int64)
        source = tf.where(tf.gather(is_special, piece), word_count + piece,
                          tf.gather(word_splits, piece) + tf.range(id_splits[-1]) - tf.gather(id_splits, piece))
        special_ids = tf.gather(tf.constant(self.special_ids, tf.int32), special_index)
        ids = tf.gather(tf.concat([tf.cast(words.flat_values, tf.int32), special_ids], 0), source)
        return ragged_from_splits(ids, tf.gather(id_splits, pieces.row_splits))

    # Traced once per tokenizer and called as a function: an export traces the text and the text-pair signatures
    # (three sequences), each of which would otherwise build the encoding's thousands of ops again.
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)
    def _encode_once(self, text):
        return self.encode(text)

    # ---------------------------------------------------------------------------------------------------

    def _num_special(self, template):
        return sum(1 for item in template if item[0] not in ("A", "B"))

    def _truncate(self, ids_a, ids_b, max_length):
        cut = _keep_last if self.truncation_side == "left" else _keep_first
        len_a = _row_lengths(ids_a)
        if ids_b is None:
            remove = tf.maximum(len_a + self._num_special(self.template_single) - max_length, 0)
            # As the reference: a sequence too short to lose `remove` tokens is left untouched.
            remove = tf.where(len_a > remove, remove, 0)
            return cut(ids_a, len_a - remove), None
        len_b = _row_lengths(ids_b)
        remove = tf.maximum(len_a + len_b + self._num_special(self.template_pair) - max_length, 0)
        first = tf.minimum(tf.abs(len_b - len_a), remove)
        second = remove - first
        a_longer = len_a > len_b
        remove_a = tf.where(a_longer, first + second // 2, second // 2)
        remove_b = tf.where(a_longer, second - second // 2, first + second - second // 2)
        return cut(ids_a, len_a - remove_a), cut(ids_b, len_b - remove_b)

    def _assemble(self, template, ids_a, ids_b):
        batch = tf.cast(ids_a.nrows(), tf.int64)
        one_per_row = tf.range(batch + 1)
        id_parts, type_parts = [], []
        for item in template:
            if item[0] in ("A", "B"):
                part = ids_a if item[0] == "A" else ids_b
                id_parts.append(part)
                type_parts.append(part.with_flat_values(tf.fill(tf.shape(part.flat_values), item[1])))
            else:
                id_parts.append(ragged_from_splits(tf.fill([batch], tf.constant(item[0], tf.int32)), one_per_row))
                type_parts.append(ragged_from_splits(tf.fill([batch], tf.constant(item[1], tf.int32)), one_per_row))
        return concat_rows(*id_parts), concat_rows(*type_parts)

    def _pad(self, rt, value, length=None):
        if self.padding_side == "left":
            dense = _reverse_rows(rt).to_tensor(default_value=value, shape=None if length is None else [None, length])
            return tf.reverse(dense, axis=[1])
        return rt.to_tensor(default_value=value, shape=None if length is None else [None, length])

    def __call__(self, text, text_pair=None, max_length=None, pad_to_max_length=False):
        """[batch] strings (and pairs) -> dict of int32 [batch, length] tensors."""
        max_length = max_length or self.max_length
        ids_a = self._encode_once(text)
        ids_b = self._encode_once(text_pair) if text_pair is not None else None
        if max_length is not None:
            ids_a, ids_b = self._truncate(ids_a, ids_b, max_length)
        template = self.template_pair if ids_b is not None else self.template_single
        ids, types = self._assemble(template, ids_a, ids_b)
        length = max_length if pad_to_max_length else None
        result = {"input_ids": self._pad(ids, self.pad_id, length),
                  "attention_mask": self._pad(tf.ones_like(ids), 0, length)}
        if self.return_token_type_ids:
            result["token_type_ids"] = self._pad(types, 0, length)
        return result


class SentencePieceInGraphTokenizer(InGraphTokenizer):
    """Sentencepiece through TF Text's SentencepieceOp, with the family's id offset and unknown-id mapping."""

    def __init__(self, model_proto, id_offset, sp_unk_id, unk_id, **kwargs):
        super().__init__(**kwargs)
        self.sentencepiece = _tf_text().SentencepieceTokenizer(model=model_proto, out_type=tf.int32)
        self.id_offset = int(id_offset)
        self.sp_unk_id = int(sp_unk_id)
        self.unk_id = int(unk_id)

    def _subword_ids(self, flat_pieces):
        ids = self.sentencepiece.tokenize(flat_pieces)
        return tf.ragged.map_flat_values(
            lambda v: tf.where(tf.equal(v, self.sp_unk_id), self.unk_id, v + self.id_offset), ids)


def template_items(tokenizer, template_items_spec):
    """Turn a Python Template's item list into in-graph items: ("A", type) / ("B", type) / (id, type)."""
    items = []
    for item in template_items_spec:
        type_id = tokenizer.template.type_ids[item]
        items.append((item, type_id) if item in ("A", "B") else (tokenizer._special_id(item), type_id))
    return items


def sentencepiece_in_graph(tokenizer, max_length=None):
    """The in-graph twin of a SentencePieceTokenizer."""
    specials = {t: tokenizer.convert_tokens_to_ids(t) for t in tokenizer.all_special_tokens}
    strip = {t: tokenizer.token_strip_flags(t) for t in tokenizer.all_special_tokens}
    return SentencePieceInGraphTokenizer(
        tokenizer.serialized_model, tokenizer.id_offset, tokenizer.sp_unk_id,
        tokenizer.sp_id_to_model_id(tokenizer.sp_unk_id), special_tokens=specials, strip_flags=strip,
        template_single=template_items(tokenizer, tokenizer.template.single),
        template_pair=template_items(tokenizer, tokenizer.template.pair), pad_id=tokenizer.pad_token_id,
        padding_side=tokenizer.padding_side, truncation_side=tokenizer.truncation_side, max_length=max_length,
        return_token_type_ids="token_type_ids" in tokenizer.model_input_names)
