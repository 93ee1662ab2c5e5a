"""XLNet's tokenizer: sentencepiece (unigram) with the XLNet special tokens, left padding and special tokens at the
end of the sequence.

Ids are sentencepiece's own: <unk> 0, <s> 1, </s> 2, <cls> 3, <sep> 4, <pad> 5, <mask> 6, <eod> 7, <eop> 8.
Sequences: `A <sep> <cls>` and `A <sep> B <sep> <cls>`; token type ids 0 for A and its <sep>, 1 for B and its
<sep>, 2 for <cls>, and 3 on padding. Padding goes on the left, so that the <cls> summary token (the last one)
stays in place. Before sentencepiece the text is normalised as the reference does (`remove_space`, `` and '' to
", NFKD with combining marks removed unless `keep_accents`, `do_lower_case`), and pieces that end in a digit
and a comma ("▁1999,") are split into the number and the comma.
"""
import re
import unicodedata

import tensorflow as tf

from tfmodels.tokenizers.base import Template, clean_up_tokenization
from tfmodels.tokenizers.in_graph import (InGraphTokenizer, _tf_text, cached_class, lower_each_character,
                                          normalize_sentencepiece_input)
from tfmodels.tokenizers.sentencepiece import (SPIECE_UNDERLINE, SentencePieceTokenizer, normalize_with_alignment)

SEG_ID_A, SEG_ID_B, SEG_ID_CLS, SEG_ID_PAD = 0, 1, 2, 3


class XLNetTokenizer(SentencePieceTokenizer):
    vocab_files_names = {"vocab_file": "spiece.model"}
    model_input_names = ("input_ids", "token_type_ids", "attention_mask")
    padding_side = "left"
    pad_token_type_id = SEG_ID_PAD
    default_special_tokens = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "<sep>",
                              "pad_token": "<pad>", "cls_token": "<cls>", "mask_token": "<mask>"}
    strip_flags = {"mask_token": (True, False)}  # <mask> eats the space before it, like a word
    template = Template(single=("A", "sep_token", "cls_token"),
                        pair=("A", "sep_token", "B", "sep_token", "cls_token"),
                        type_ids={"A": SEG_ID_A, "B": SEG_ID_B, "sep_token": SEG_ID_A, "cls_token": SEG_ID_CLS})
    # Token type of each template item, by position (the second <sep> belongs to segment B).
    template_type_ids = {"single": (SEG_ID_A, SEG_ID_A, SEG_ID_CLS),
                         "pair": (SEG_ID_A, SEG_ID_A, SEG_ID_B, SEG_ID_B, SEG_ID_CLS)}
    split_digit_comma = True

    def __init__(self, vocab_file=None, do_lower_case=False, remove_space=True, keep_accents=False,
                 additional_special_tokens=("<eop>", "<eod>"), **kwargs):
        self.do_lower_case = bool(do_lower_case)
        self.remove_space = bool(remove_space)
        self.keep_accents = bool(keep_accents)
        self.additional_special_tokens = [t.get("content") if isinstance(t, dict) else t
                                          for t in (additional_special_tokens or ())]
        super().__init__(vocab_file, **kwargs)

    # ---------------------------------------------------------------------------------------------------
    # Special tokens: the seven attributes plus <eop> and <eod>

    @property
    def all_special_tokens(self):
        tokens = []
        for token in list(self.special_tokens.values()) + list(self.additional_special_tokens):
            if token not in tokens:
                tokens.append(token)
        return tokens

    def _apply_template(self, ids_a, ids_b=None):
        ids, _, special = super()._apply_template(ids_a, ids_b)
        items = self.template.pair if ids_b is not None else self.template.single
        per_item = self.template_type_ids["pair" if ids_b is not None else "single"]
        types = []
        for item, type_id in zip(items, per_item):
            if item in ("A", "B"):
                types.extend([type_id] * len(ids_a if item == "A" else ids_b))
            else:
                types.append(type_id)
        return ids, types, special

    # ---------------------------------------------------------------------------------------------------
    # Text -> pieces

    def preprocess_text(self, text):
        if self.remove_space:
            text = " ".join(text.strip().split())
        text = text.replace("``", '"').replace("''", '"')
        if not self.keep_accents:
            text = unicodedata.normalize("NFKD", text)
            text = "".join(c for c in text if not unicodedata.combining(c))
        if self.do_lower_case:
            text = text.lower()
        return text

    def tokenize(self, text, **options):
        if self.do_lower_case:
            # As the reference: lower-case everything but the special tokens, one character at a time, before
            # the special tokens are split out (so "<SEP>" becomes the special token "<sep>").
            specials = "|".join(re.escape(t) for t in self.all_special_tokens)
            text = re.sub(f"({specials})|(.+?)", lambda m: m.group(1) or m.group(2).lower(), text)
        return super().tokenize(text, **options)

    def preprocess_with_alignment(self, text):
        return normalize_with_alignment(text, self.remove_space, self.keep_accents, self.do_lower_case)

    # XLNet's ids are sentencepiece's: the special tokens are control symbols of the model.
    def _convert_token_to_id(self, token):
        return self.sp_model.PieceToId(token)

    def _convert_id_to_token(self, index):
        return self.sp_model.IdToPiece(index)

    @property
    def vocab_size(self):
        return len(self.sp_model)

    # ---------------------------------------------------------------------------------------------------
    # Decoding: special tokens are kept as they are, with no space around them (the reference's _decode)

    def decode(self, token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=None):
        if hasattr(token_ids, "numpy"):
            token_ids = token_ids.numpy()
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        tokens = self.convert_ids_to_tokens([int(i) for i in token_ids], skip_special_tokens=skip_special_tokens)
        specials = set(self.all_special_tokens)
        parts, current = [], []
        for token in tokens:
            if token in specials:
                if current:
                    parts.append(self.convert_tokens_to_string(current))
                    current = []
                parts.append(token)
            else:
                current.append(token)
        if current:
            parts.append(self.convert_tokens_to_string(current))
        text = "".join(parts)
        clean = self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None \
            else clean_up_tokenization_spaces
        return clean_up_tokenization(text) if clean else text

    # ---------------------------------------------------------------------------------------------------
    # Saving / loading

    def _extra_config(self):
        return {**super()._extra_config(), "do_lower_case": self.do_lower_case, "remove_space": self.remove_space,
                "keep_accents": self.keep_accents, "additional_special_tokens": list(self.additional_special_tokens)}

    @classmethod
    def _extra_init_args(cls):
        return super()._extra_init_args() + ("do_lower_case", "remove_space", "keep_accents",
                                             "additional_special_tokens")

    def in_graph(self, max_length=None):
        """The TF Text twin of this tokenizer (normalisation, sentencepiece and the digit-comma rule in-graph)."""
        return xlnet_in_graph(self, max_length=max_length)


class XLNetTokenizerFast(XLNetTokenizer):
    """The reference's fast name: offsets (return_offsets_mapping) are available on both; a pair is truncated
    (longest_first) as the fast tokenizer does."""

    fast_truncation = True


# ---------------------------------------------------------------------------------------------------------------
# In-graph twin


class XLNetInGraphTokenizer(InGraphTokenizer):
    """Strings -> XLNet inputs with TF / TF Text ops only (what `XLNetTokenizer` does in Python)."""

    def __init__(self, model_proto, do_lower_case=False, remove_space=True, keep_accents=False,
                 pad_token_type_id=SEG_ID_PAD, **kwargs):
        super().__init__(**kwargs)
        self.do_lower_case = do_lower_case
        self.remove_space = remove_space
        self.keep_accents = keep_accents
        self.pad_token_type_id = int(pad_token_type_id)
        self.pieces = _tf_text().SentencepieceTokenizer(model=model_proto, out_type=tf.string)
        self._combining = cached_class("combining", lambda c: unicodedata.combining(c) != 0)
        self._digit = cached_class("digit", str.isdigit)

    def encode(self, text):
        text = tf.convert_to_tensor(text, tf.string)
        if self.do_lower_case:
            # Before the special tokens are split out, as the Python tokenizer (they are lower case). The
            # reference lowers one character at a time, so a word-final capital sigma becomes σ, not ς.
            text = lower_each_character(text)
        return super().encode(text)

    def _preprocess(self, text):
        return normalize_sentencepiece_input(text, self.remove_space, self.keep_accents, self.do_lower_case,
                                             self._combining)

    def _subword_ids(self, flat_pieces):
        """[n] text pieces -> ragged [n, None] ids, with the digit-comma rule applied."""
        pieces = self.pieces.tokenize(self._preprocess(flat_pieces))      # ragged [n, None] strings
        flat = pieces.flat_values
        count = tf.size(flat)
        hit = tf.strings.regex_full_match(flat, "(?s).*" + self._digit + ",")
        hits = tf.boolean_mask(flat, hit)
        length = tf.strings.length(hits, unit="UTF8_CHAR")
        number = tf.strings.substr(hits, tf.zeros_like(length), length - 1, unit="UTF8_CHAR")
        parts = self.pieces.tokenize(tf.strings.regex_replace(number, SPIECE_UNDERLINE, ""))  # [m, None]
        first = tf.squeeze(parts[:, :1].to_tensor(default_value="", shape=[None, 1]), axis=1)
        starts_word = tf.strings.regex_full_match(hits, SPIECE_UNDERLINE + "(?s).*")
        first_marked = tf.strings.regex_full_match(first, SPIECE_UNDERLINE + "(?s).*")
        fix = tf.logical_and(tf.logical_not(starts_word), first_marked)
        keep_first = tf.logical_not(tf.logical_and(fix, tf.equal(first, SPIECE_UNDERLINE)))
        first = tf.where(fix, tf.strings.substr(first, 1, -1, unit="UTF8_CHAR"), first)
        ones = tf.ones([tf.size(hits)], tf.int64)
        replaced = tf.concat([
            tf.RaggedTensor.from_row_lengths(tf.boolean_mask(first, keep_first), tf.cast(keep_first, tf.int64)),
            parts[:, 1:],
            tf.RaggedTensor.from_row_lengths(tf.fill([tf.size(hits)], ","), ones)], axis=1)
        # Each piece becomes itself, or (a hit) its replacement.
        singles = tf.RaggedTensor.from_row_lengths(flat, tf.ones([count], tf.int64))
        index = tf.where(hit, count + tf.cumsum(tf.cast(hit, tf.int32), exclusive=True), tf.range(count))
        expanded = tf.gather(tf.concat([singles, replaced], axis=0), index)
        tokens = tf.RaggedTensor.from_row_splits(expanded, pieces.row_splits).merge_dims(1, 2)
        return tf.cast(tf.ragged.map_flat_values(self.pieces.string_to_id, tokens), tf.int32)

    def __call__(self, text, text_pair=None, max_length=None, pad_to_max_length=False):
        result = super().__call__(text, text_pair, max_length=max_length, pad_to_max_length=pad_to_max_length)
        # Padding takes the padding segment id (3), as in the Python tokenizer.
        types = result["token_type_ids"]
        result["token_type_ids"] = tf.where(tf.equal(result["attention_mask"], 1), types,
                                            tf.cast(self.pad_token_type_id, types.dtype))
        return result


def xlnet_in_graph(tokenizer, max_length=None):
    """The in-graph twin of an XLNetTokenizer."""
    specials = {t: tokenizer.convert_tokens_to_ids(t) for t in tokenizer.all_special_tokens}
    strip = {t: tokenizer.token_strip_flags(t) for t in tokenizer.all_special_tokens}

    def items(kind):
        spec = tokenizer.template.pair if kind == "pair" else tokenizer.template.single
        return [(item, type_id) if item in ("A", "B") else (tokenizer._special_id(item), type_id)
                for item, type_id in zip(spec, tokenizer.template_type_ids[kind])]

    return XLNetInGraphTokenizer(
        model_proto=tokenizer.serialized_model, special_tokens=specials, strip_flags=strip, template_single=items("single"),
        template_pair=items("pair"), pad_id=tokenizer.pad_token_id, padding_side=tokenizer.padding_side,
        truncation_side=tokenizer.truncation_side, max_length=max_length, return_token_type_ids=True,
        do_lower_case=tokenizer.do_lower_case, remove_space=tokenizer.remove_space,
        keep_accents=tokenizer.keep_accents, pad_token_type_id=tokenizer.pad_token_type_id)
