"""ALBERT's tokenizer (also used by the published Nyströmformer and YOSO checkpoints): sentencepiece (unigram)
with the ALBERT id layout and text preprocessing, Python and in-graph.

Ids are sentencepiece's own: <pad> 0, <unk> 1, [CLS] 2, [SEP] 3, [MASK] 4 (control symbols), then the pieces.
Sequences: `[CLS] A [SEP]` and `[CLS] A [SEP] B [SEP]`, token type ids 0 up to the first [SEP] and 1 after it.

Preprocessing, as the reference (transformers' slow AlbertTokenizer):
1. with do_lower_case, every character outside the special tokens is lowercased on its own (so a final
   capital sigma becomes σ, not ς) before the special tokens are split out ([MASK] eats the space before it);
2. each remaining piece: with remove_space, whitespace runs become one space and the ends are stripped;
   `` and '' become "; without keep_accents, NFKD and combining marks dropped; with do_lower_case, lowercased;
3. sentencepiece; a piece ending in a digit and a comma ("▁9,") is re-split as ["▁9", ","].
"""
import unicodedata

import tensorflow as tf

from tfmodels.tokenizers.base import Template
from tfmodels.tokenizers.in_graph import (SentencePieceInGraphTokenizer, cached_class, concat_rows, join_rows,
                                          lower_each_character, normalize_sentencepiece_input, ragged_from_lengths,
                                          ragged_from_splits, regex_split, template_items, value_rowids)
from tfmodels.tokenizers.sentencepiece import (SPIECE_UNDERLINE, SentencePieceTokenizer, normalize_with_alignment)


class AlbertTokenizer(SentencePieceTokenizer):
    vocab_files_names = {"vocab_file": "spiece.model"}
    model_input_names = ("input_ids", "token_type_ids", "attention_mask")
    default_special_tokens = {"bos_token": "[CLS]", "eos_token": "[SEP]", "unk_token": "<unk>",
                              "sep_token": "[SEP]", "pad_token": "<pad>", "cls_token": "[CLS]",
                              "mask_token": "[MASK]"}
    strip_flags = {"mask_token": (True, False)}  # [MASK] eats the space before it
    template = Template(single=("cls_token", "A", "sep_token"),
                        pair=("cls_token", "A", "sep_token", "B", "sep_token"),
                        type_ids={"cls_token": 0, "A": 0, "sep_token": 0, "B": 1})
    # Token type of each item of the pair template: the closing [SEP] belongs to the second segment.
    pair_type_ids = (0, 0, 0, 1, 1)
    split_digit_comma = True

    def __init__(self, vocab_file=None, do_lower_case=True, remove_space=True, keep_accents=False, **kwargs):
        self.do_lower_case = bool(do_lower_case)
        self.remove_space = bool(remove_space)
        self.keep_accents = bool(keep_accents)
        super().__init__(vocab_file, **kwargs)

    @classmethod
    def _extra_init_args(cls):
        return super()._extra_init_args() + ("do_lower_case", "remove_space", "keep_accents")

    def _extra_config(self):
        return {**super()._extra_config(), "do_lower_case": self.do_lower_case, "remove_space": self.remove_space,
                "keep_accents": self.keep_accents}

    @property
    def vocab_size(self):
        return len(self.sp_model)

    # ---------------------------------------------------------------------------------------------------
    # Text -> pieces

    def tokenize(self, text, **options):
        if self.do_lower_case:
            # Character by character, outside the special tokens, before they are split out (as the reference).
            text = "".join(piece if is_special else "".join(c.lower() for c in piece)
                           for piece, is_special in self._special_parts(text))
        return super().tokenize(text, **options)

    def _special_parts(self, text):
        if self._special_pattern is None:
            return [(text, False)]
        specials = set(self.all_special_tokens)
        return [(p, p in specials) for p in self._special_pattern.split(text) if p]

    def preprocess_text(self, text):
        if self.remove_space:
            text = " ".join(text.strip().split())
        text = text.replace("``", '"').replace("''", '"')
        if not self.keep_accents:
            text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
        if self.do_lower_case:
            text = text.lower()
        return text

    def preprocess_with_alignment(self, text):
        return normalize_with_alignment(text, self.remove_space, self.keep_accents, self.do_lower_case)

    # ---------------------------------------------------------------------------------------------------
    # Pieces -> text

    def convert_tokens_to_string(self, tokens):
        specials = set(self.all_special_tokens)
        text, pending, after_special = "", [], False
        for token in tokens:
            if token not in specials:
                pending.append(token)
                after_special = False
                continue
            text += ("" if after_special else " ") + self.sp_model.decode(pending) + token
            pending, after_special = [], True
        return (text + self.sp_model.decode(pending)).strip()

    # ---------------------------------------------------------------------------------------------------
    # Templates: the second segment's [SEP] has token type 1

    def _apply_template(self, ids_a, ids_b=None):
        ids, types, special = super()._apply_template(ids_a, ids_b)
        if ids_b is not None:
            types = [0] * (len(ids_a) + 2) + [1] * (len(ids_b) + 1)
        return ids, types, special

    def in_graph(self, max_length=None):
        """The TF Text twin of this tokenizer (for raw-string SavedModel signatures)."""
        specials = {t: self.convert_tokens_to_ids(t) for t in self.all_special_tokens}
        strip = {t: self.token_strip_flags(t) for t in self.all_special_tokens}
        pair = [(item[0], type_id) for item, type_id in zip(template_items(self, self.template.pair),
                                                            self.pair_type_ids)]
        return AlbertInGraphTokenizer(
            self.serialized_model, 0, self.sp_unk_id, self.sp_id_to_model_id(self.sp_unk_id),
            do_lower_case=self.do_lower_case, remove_space=self.remove_space, keep_accents=self.keep_accents,
            comma_id=self.sp_model.PieceToId(","), special_tokens=specials, strip_flags=strip,
            template_single=template_items(self, self.template.single), template_pair=pair,
            pad_id=self.pad_token_id, padding_side=self.padding_side, truncation_side=self.truncation_side,
            max_length=max_length, return_token_type_ids="token_type_ids" in self.model_input_names)


class AlbertInGraphTokenizer(SentencePieceInGraphTokenizer):
    """ALBERT preprocessing and number handling with TF / TF Text ops, on top of the shared in-graph tokenizer."""

    def __init__(self, *args, do_lower_case=True, remove_space=True, keep_accents=False, comma_id=None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.do_lower_case = do_lower_case
        self.remove_space = remove_space
        self.keep_accents = keep_accents
        self.comma_id = int(comma_id)
        self.combining_class = cached_class("combining", lambda c: unicodedata.combining(c) != 0)
        self.digit_class = cached_class("digit", str.isdigit)

    def encode(self, text):
        text = tf.convert_to_tensor(text, tf.string)
        if self.do_lower_case:
            text = self._lower_outside_specials(text)
        return super().encode(text)

    def _lower_outside_specials(self, text):
        if self._pattern is None:
            return lower_each_character(text)
        pieces = regex_split(text, self._pattern)
        flat = pieces.flat_values
        is_special = tf.reduce_any(tf.stack([tf.equal(flat, t) for t in self.special_strings], axis=1), axis=1)
        lowered = tf.where(is_special, flat, lower_each_character(flat))
        return join_rows(pieces.with_flat_values(lowered))

    def _preprocess(self, text):
        return normalize_sentencepiece_input(text, self.remove_space, self.keep_accents, self.do_lower_case,
                                             self.combining_class)

    def _subword_ids(self, flat_pieces):
        ids = self.sentencepiece.tokenize(self._preprocess(flat_pieces))           # ragged [texts, pieces]
        per_piece = self._split_digit_commas(ids.flat_values)                        # ragged [pieces, None]
        ids = ragged_from_splits(per_piece.flat_values, tf.gather(per_piece.row_splits, ids.row_splits))  # merged
        return tf.ragged.map_flat_values(
            lambda v: tf.where(tf.equal(v, self.sp_unk_id), self.unk_id, v + self.id_offset), ids)

    def _split_digit_commas(self, piece_ids):
        """[pieces] sentencepiece ids -> ragged [pieces, None]: "▁9," -> ["▁9", ","], others unchanged."""
        underline = SPIECE_UNDERLINE
        strings = self.sentencepiece.id_to_string(piece_ids)
        split = tf.strings.regex_full_match(strings, "(?s).*" + self.digit_class + ",")
        stripped = tf.strings.regex_replace(tf.strings.regex_replace(strings, ",$", ""), underline, "")
        parts = self.sentencepiece.tokenize(tf.where(split, stripped, ""))         # empty rows where not split
        starts = parts.row_starts()
        has_parts = parts.row_lengths() > 0
        values = parts.values
        safe_values = tf.concat([values, tf.zeros([1], values.dtype)], 0)
        first = tf.gather(safe_values, tf.where(has_parts, starts, tf.size(values, out_type=starts.dtype)))
        first_string = self.sentencepiece.id_to_string(first)
        piece_starts_word = tf.strings.regex_full_match(strings, "(?s)" + underline + ".*")
        first_starts_word = tf.strings.regex_full_match(first_string, "(?s)" + underline + ".*")
        fix = split & has_parts & ~piece_starts_word & first_starts_word
        drop_first = fix & tf.equal(first_string, underline)
        replace_first = fix & ~drop_first
        replacement = self.sentencepiece.string_to_id(tf.strings.regex_replace(first_string, "^" + underline, ""))
        rows = value_rowids(parts.row_splits)
        is_first = tf.equal(tf.range(tf.size(values, out_type=starts.dtype)), tf.gather(starts, rows))
        values = tf.where(is_first & tf.gather(replace_first, rows), tf.gather(replacement, rows), values)
        keep = ~(is_first & tf.gather(drop_first, rows))
        parts = ragged_from_lengths(tf.boolean_mask(values, keep),
                                    parts.row_lengths() - tf.cast(drop_first, parts.row_splits.dtype))
        comma = ragged_from_lengths(tf.fill([tf.reduce_sum(tf.cast(split, tf.int64))],
                                            tf.constant(self.comma_id, values.dtype)), tf.cast(split, tf.int64))
        original = ragged_from_lengths(tf.cast(tf.boolean_mask(piece_ids, ~split), values.dtype),
                                       tf.cast(~split, tf.int64))
        return concat_rows(original, parts, comma)
