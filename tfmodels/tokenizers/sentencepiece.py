"""Sentencepiece-based tokenizers (XLM-RoBERTa, XLNet, ALBERT): the shared sub-word model and id mapping.

Families differ in how sentencepiece ids map to model ids: XLM-RoBERTa shifts them by one to make room for
fairseq's <pad> (and maps sentencepiece's <unk> 0 to its own 3); XLNet and ALBERT use them as they are. The
same mapping drives the in-graph tokenizer (tfmodels.tokenizers.in_graph), so the two agree by construction.

The model comes from the family's .model file or, without one, from HF's tokenizer.json (see tokenizer_json).
`sp_model_kwargs` go to `sentencepiece.SentencePieceProcessor` as in the reference (e.g. enable_sampling=True,
alpha=0.1, nbest_size=-1 for subword regularisation; seed it with `sentencepiece.set_random_generator_seed`).
"""
import os
import shutil
import unicodedata

import sentencepiece as spm

from tfmodels.tokenizers import tokenizer_json
from tfmodels.tokenizers.base import PreTrainedTokenizer
from tfmodels.tokenizers.in_graph import sentencepiece_in_graph

SPIECE_UNDERLINE = "\u2581"


class SentencePieceTokenizer(PreTrainedTokenizer):
    vocab_files_names = {"vocab_file": "spiece.model"}
    # Model ids of tokens that sentencepiece does not own (fairseq's <s>, <pad>, </s>, <unk>), by token.
    fixed_token_ids = {}
    id_offset = 0
    # XLNet and ALBERT re-split a piece that ends in a digit and a comma ("▁1999," -> "▁1999" ","), as BERT did.
    split_digit_comma = False

    def __init__(self, vocab_file=None, sp_model_kwargs=None, tokenizer_file=None, **kwargs):
        self.vocab_file = vocab_file
        self.sp_model_kwargs = dict(sp_model_kwargs or {})
        self.sp_model = spm.SentencePieceProcessor(**self.sp_model_kwargs)
        if vocab_file is not None:
            self.sp_model.Load(str(vocab_file))
        elif tokenizer_file is not None:
            data = tokenizer_json.read(tokenizer_file)
            self.sp_model.LoadFromSerializedProto(
                tokenizer_json.sentencepiece_model_proto(data, self.sentencepiece_pieces(data)))
        else:
            raise ValueError(f"{type(self).__name__} needs vocab_file ({self.vocab_files_names['vocab_file']}) or "
                             "tokenizer_file (tokenizer.json)")
        self._init_fixed_ids()
        super().__init__(**kwargs)

    @classmethod
    def sentencepiece_pieces(cls, data):
        """[(piece, score, type)] of the sentencepiece model, in its id order, from tokenizer.json `data`. Here
        the model ids are sentencepiece's (XLNet, ALBERT); XLM-RoBERTa overrides it for fairseq's layout."""
        return [(piece, score, tokenizer_json.piece_type(data, piece))
                for piece, score in tokenizer_json.vocabulary(data)]

    @classmethod
    def _extra_init_args(cls):
        return ("sp_model_kwargs",)

    def _extra_config(self):
        return {"sp_model_kwargs": dict(self.sp_model_kwargs)}

    def _init_fixed_ids(self):
        self.token_to_fixed_id = dict(self.fixed_token_ids)

    @property
    def sp_unk_id(self):
        return self.sp_model.unk_id()

    @property
    def vocab_size(self):
        return len(self.sp_model) + self.id_offset + len(
            [i for i in self.token_to_fixed_id.values() if i >= len(self.sp_model) + self.id_offset])

    def preprocess_text(self, text):
        """The text sentencepiece is given (XLNet and ALBERT normalise it first)."""
        return text

    def tokenize_with_offsets(self, text, **options):
        # The lower-casing families (XLNet and ALBERT with do_lower_case) lower the text outside the special
        # tokens before tokenizing; the offsets are mapped back onto the text as given.
        if not getattr(self, "do_lower_case", False):
            return super().tokenize_with_offsets(text, **options)
        lowered, sources = lower_with_alignment(text, self._special_pattern, set(self.all_special_tokens))
        tokens, offsets = super().tokenize_with_offsets(lowered, **options)
        return tokens, map_offsets(offsets, sources, len(text))

    def _tokenize(self, text):
        pieces = []
        for piece in self.sp_model.encode(self.preprocess_text(text), out_type=str):
            if self.split_digit_comma and len(piece) > 1 and piece[-1] == "," and piece[-2].isdigit():
                pieces.extend(self._split_digit_comma(piece))
            else:
                pieces.append(piece)
        return pieces

    def _split_digit_comma(self, piece):
        """"▁9," -> ["▁9", ","]: re-encode without the comma; a piece that did not start a word keeps no word
        boundary."""
        parts = self.sp_model.encode(piece[:-1].replace(SPIECE_UNDERLINE, ""), out_type=str)
        if piece[0] != SPIECE_UNDERLINE and parts and parts[0].startswith(SPIECE_UNDERLINE):
            parts = parts[1:] if len(parts[0]) == 1 else [parts[0][1:]] + parts[1:]
        return parts + [piece[-1]]

    def sp_id_to_model_id(self, sp_id):
        if sp_id == self.sp_unk_id and self.unk_token in self.token_to_fixed_id:
            return self.token_to_fixed_id[self.unk_token]
        return sp_id + self.id_offset

    def _convert_token_to_id(self, token):
        if token in self.token_to_fixed_id:
            return self.token_to_fixed_id[token]
        return self.sp_id_to_model_id(self.sp_model.PieceToId(token))

    def _convert_id_to_token(self, index):
        for token, fixed in self.token_to_fixed_id.items():
            if fixed == index:
                return token
        return self.sp_model.IdToPiece(index - self.id_offset)

    def convert_tokens_to_string(self, tokens):
        return "".join(tokens).replace(SPIECE_UNDERLINE, " ").strip()

    def _write_vocabulary(self, directory, prefix):
        target = os.path.join(directory, prefix + self.vocab_files_names["vocab_file"])
        if self.vocab_file is not None and os.path.isfile(self.vocab_file):
            if os.path.abspath(target) != os.path.abspath(self.vocab_file):
                shutil.copyfile(self.vocab_file, target)
        else:  # built from tokenizer.json: write the model we built, as the reference does without the file
            with open(target, "wb") as f:
                f.write(self.sp_model.serialized_model_proto())
        return (target,)

    # ---------------------------------------------------------------------------------------------------
    # Offsets

    def preprocess_with_alignment(self, text):
        """(the text sentencepiece is given, for each of its characters the index of the character of `text`
        it comes from). The families that normalise the text first (XLNet, ALBERT) override it."""
        return text, list(range(len(text)))

    def _sentencepiece_pieces_with_spans(self, text):
        """[(piece, (start, end))] of sentencepiece on the preprocessed `text`, spans in characters of `text`."""
        processed, source = self.preprocess_with_alignment(text)
        char_of_byte = []
        for i, char in enumerate(processed):
            char_of_byte.extend([i] * len(char.encode("utf-8")))
        char_of_byte.append(len(processed))
        pieces = []
        for piece in self.sp_model.encode(processed, out_type="proto").pieces:
            first = char_of_byte[piece.begin]
            last = char_of_byte[piece.end - 1] if piece.end > piece.begin else first
            chars = [source[i] for i in range(first, min(last + 1, len(processed)))]
            pieces.append((piece.piece, (min(chars), max(chars) + 1) if chars else (len(text), len(text))))
        return pieces

    def _tokenize_with_offsets(self, text):
        result = []
        for piece, span in self._sentencepiece_pieces_with_spans(text):
            if self.split_digit_comma and len(piece) > 1 and piece[-1] == "," and piece[-2].isdigit():
                # The parts share the piece's last characters in order (its span may start with whitespace);
                # the comma is the last one.
                parts = self._split_digit_comma(piece)
                lengths = [len(part.lstrip(SPIECE_UNDERLINE)) for part in parts]
                start = max(span[1] - sum(lengths), span[0])
                for part, length in zip(parts, lengths):
                    result.append((part, metaspace_offsets(text, part, (start, min(start + length, span[1])))))
                    start += length
            else:
                result.append((piece, metaspace_offsets(text, piece, span)))
        return result

    @property
    def serialized_model(self):
        return self.sp_model.serialized_model_proto()

    def in_graph(self, max_length=None):
        """The TF Text twin of this tokenizer (for raw-string SavedModel signatures)."""
        return sentencepiece_in_graph(self, max_length=max_length)


def metaspace_offsets(text, piece, span):
    """The offsets the reference's fast tokenizers give a sentencepiece piece whose characters come from `span`
    of `text`: whitespace inside the span is not part of a word, a "▁" stands for the whitespace character just
    before the word (for the first word of a text, which has none, the word's first character), and a piece whose
    characters all come from one expanded character (a ligature) spans that character. (Not reproduced: a
    character that sentencepiece composes with a following combining mark spans both here, the first alone there.)"""
    start, end = span
    while start < end and text[start].isspace():
        start += 1
    if start == end and piece.strip(SPIECE_UNDERLINE) and end < len(text):
        end = start + 1
    if piece.startswith(SPIECE_UNDERLINE):
        if start > 0 and text[start - 1].isspace():
            space = start - 1
            if text[space] == "\n" and space > 0 and text[space - 1] == "\r":
                space -= 1  # sentencepiece's normaliser makes "\r\n" one space, which the "\r" stands for
            start = space
            if not piece.strip(SPIECE_UNDERLINE):
                end = space + 1
        elif start == end and end < len(text):
            end = start + 1
    return start, end


def normalize_with_alignment(text, remove_space=True, keep_accents=False, do_lower_case=False):
    """XLNet's and ALBERT's text normalisation (`preprocess_text`) and, for each character of the result, the
    index of the character of `text` it comes from. A character that replaces several (a run of whitespace, ``)
    comes from the last of them, as in the `tokenizers` library."""
    chars = list(zip(text, range(len(text))))
    if remove_space:
        words, word, space = [], [], None
        for char, i in chars:
            if char.isspace():
                if word:
                    words.append((space, word))
                    word = []
                space = i
            else:
                word.append((char, i))
        if word:
            words.append((space, word))
        chars = []
        for k, (space, word) in enumerate(words):
            chars.extend(([(" ", space)] if k else []) + word)
    for quotes in ("``", "''"):
        replaced, k = [], 0
        while k < len(chars):
            if k + 1 < len(chars) and chars[k][0] + chars[k + 1][0] == quotes:
                replaced.append(('"', chars[k + 1][1]))
                k += 2
            else:
                replaced.append(chars[k])
                k += 1
        chars = replaced
    if not keep_accents:
        chars = [(c, i) for char, i in chars for c in unicodedata.normalize("NFKD", char)
                 if not unicodedata.combining(c)]
    if do_lower_case:
        # Lower-cased as one string (a final sigma becomes ς, as in the reference); only that context rule
        # exists, and it keeps the length, so the per-character lengths give the alignment.
        lowered = "".join(c for c, _ in chars).lower()
        sources = [i for char, i in chars for _ in char.lower()]
        chars = list(zip(lowered, sources))
    return "".join(c for c, _ in chars), [i for _, i in chars]


def lower_with_alignment(text, special_pattern, specials):
    """Lower-case `text` one character at a time outside the special tokens (XLNet's and ALBERT's do_lower_case
    before the special tokens are split out), with the source index of each resulting character."""
    parts = special_pattern.split(text) if special_pattern is not None else [text]
    lowered, sources, position = [], [], 0
    for part in parts:
        for k, char in enumerate(part):
            out = char if part in specials else char.lower()
            lowered.append(out)
            sources.extend([position + k] * len(out))
        position += len(part)
    return "".join(lowered), sources


def map_offsets(offsets, sources, length):
    """Offsets in a transformed text -> offsets in the original, given each transformed character's source."""
    mapped = []
    for start, end in offsets:
        if end > start:
            mapped.append((sources[start], sources[end - 1] + 1))
        else:
            point = sources[start] if start < len(sources) else length
            mapped.append((point, point))
    return mapped
