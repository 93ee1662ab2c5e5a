"""The tokenizer base: HF-compatible `__call__`, special tokens, truncation, padding, decoding, saving.

A concrete tokenizer supplies the sub-word model (`_tokenize`, `_convert_token_to_id`, `_convert_id_to_token`,
`convert_tokens_to_string`, `vocab_size`) and a `Template` for its special tokens. This base reproduces the
semantics of transformers' slow tokenizers (PreTrainedTokenizer 4.57): special tokens are split out of the text
first (honouring their lstrip/rstrip flags), truncation strategies longest_first / only_first / only_second,
padding to the longest or to max_length on either side. It also gives what the reference's fast tokenizers add:
character offsets (`return_offsets_mapping`), as the `tokenizers` library computes them.
"""
import dataclasses
import json
import logging
import os
import re

import numpy as np

SPECIAL_TOKEN_ATTRIBUTES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token",
                            "mask_token")
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
TOKENIZER_FILE = "tokenizer.json"
VERY_LARGE_INTEGER = int(1e30)

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Template:
    """Where special tokens go. Items are "A", "B" or a special-token attribute name ("cls_token", ...).

    type_ids gives the token type of each item of `pair` (A and B take theirs for every token);
    single uses the type ids of its items in `pair`."""
    single: tuple
    pair: tuple
    type_ids: dict


class BatchEncoding(dict):
    """A dict of model inputs with attribute access (`enc.input_ids`)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class PreTrainedTokenizer:
    vocab_files_names = {}
    model_input_names = ("input_ids", "attention_mask")
    template = None
    # special-token attribute -> (lstrip, rstrip), as the reference's AddedToken flags
    strip_flags = {}
    default_special_tokens = {}
    padding_side = "right"
    truncation_side = "right"

    def __init__(self, model_max_length=None, padding_side=None, truncation_side=None,
                 clean_up_tokenization_spaces=False, **special_tokens):
        unknown = [k for k in special_tokens if k not in SPECIAL_TOKEN_ATTRIBUTES]
        if unknown:
            raise ValueError(f"{type(self).__name__}: unknown argument(s) {unknown}")
        for attr in SPECIAL_TOKEN_ATTRIBUTES:
            value = special_tokens.get(attr, self.default_special_tokens.get(attr))
            if isinstance(value, dict):  # HF's serialised AddedToken
                value = value.get("content")
            setattr(self, attr, value)
        self.model_max_length = VERY_LARGE_INTEGER if model_max_length is None else int(model_max_length)
        if padding_side is not None:
            self.padding_side = padding_side
        if truncation_side is not None:
            self.truncation_side = truncation_side
        if self.padding_side not in ("left", "right") or self.truncation_side not in ("left", "right"):
            raise ValueError("padding_side and truncation_side must be 'left' or 'right'")
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self._build_special_pattern()

    # ---------------------------------------------------------------------------------------------------
    # Special tokens

    @property
    def special_tokens(self):
        """{attribute: token} for the special tokens that are set."""
        return {a: getattr(self, a) for a in SPECIAL_TOKEN_ATTRIBUTES if getattr(self, a) is not None}

    @property
    def all_special_tokens(self):
        seen = []
        for token in self.special_tokens.values():
            if token not in seen:
                seen.append(token)
        return seen

    @property
    def all_special_ids(self):
        return [self._convert_token_to_id_with_specials(t) for t in self.all_special_tokens]

    def __getattr__(self, name):
        if name.endswith("_token_id") and name[:-3] in SPECIAL_TOKEN_ATTRIBUTES:
            token = getattr(self, name[:-3])
            return None if token is None else self._convert_token_to_id_with_specials(token)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def token_strip_flags(self, token):
        """(lstrip, rstrip) of a special token string."""
        for attr, value in self.special_tokens.items():
            if value == token and attr in self.strip_flags:
                return self.strip_flags[attr]
        return (False, False)

    def _build_special_pattern(self):
        tokens = sorted(self.all_special_tokens, key=len, reverse=True)
        self._special_pattern = re.compile("(" + "|".join(re.escape(t) for t in tokens) + ")") if tokens else None

    # ---------------------------------------------------------------------------------------------------
    # Sub-word model hooks

    def _tokenize(self, text):
        raise NotImplementedError

    def _convert_token_to_id(self, token):
        raise NotImplementedError

    def _convert_id_to_token(self, index):
        raise NotImplementedError

    def convert_tokens_to_string(self, tokens):
        raise NotImplementedError

    @property
    def vocab_size(self):
        raise NotImplementedError

    def __len__(self):
        return self.vocab_size

    def get_vocab(self):
        return {self._convert_id_to_token(i): i for i in range(self.vocab_size)}

    def _convert_token_to_id_with_specials(self, token):
        return self._convert_token_to_id(token)

    # ---------------------------------------------------------------------------------------------------
    # Text -> tokens -> ids

    def split_special_tokens(self, text):
        """Split `text` into (piece, is_special) with the lstrip/rstrip flags applied, as the reference."""
        return [(piece, is_special) for piece, is_special, _, _ in self.split_special_tokens_with_spans(text)]

    def split_special_tokens_with_spans(self, text):
        """[(piece, is_special, (start, end), (outer_start, outer_end))]: the pieces of `split_special_tokens`
        with their character spans in `text`. For a special token, the outer span also covers the whitespace
        that its lstrip/rstrip flags took from its neighbours (the fast tokenizers' offsets of the token)."""
        if self._special_pattern is None:
            return [(text, False, (0, len(text)), (0, len(text)))] if text else []
        specials = set(self.all_special_tokens)
        pieces, position = [], 0
        for part in self._special_pattern.split(text):
            if part:
                end = position + len(part)
                pieces.append([part, part in specials, position, end, position, end])
            position += len(part)
        for i, (piece, is_special, *_) in enumerate(pieces):
            if not is_special:
                continue
            lstrip, rstrip = self.token_strip_flags(piece)
            if rstrip and i + 1 < len(pieces) and not pieces[i + 1][1]:
                stripped = pieces[i + 1][0].lstrip()
                pieces[i][5] += len(pieces[i + 1][0]) - len(stripped)
                pieces[i + 1][2] += len(pieces[i + 1][0]) - len(stripped)
                pieces[i + 1][0] = stripped
            if lstrip and i > 0 and not pieces[i - 1][1]:
                stripped = pieces[i - 1][0].rstrip()
                pieces[i][4] -= len(pieces[i - 1][0]) - len(stripped)
                pieces[i - 1][3] -= len(pieces[i - 1][0]) - len(stripped)
                pieces[i - 1][0] = stripped
        return [(p, special, (start, end), (outer_start, outer_end))
                for p, special, start, end, outer_start, outer_end in pieces if p]

    def tokenize(self, text, **options):
        self._check_call_options(options)
        tokens = []
        for piece, is_special in self.split_special_tokens(text):
            tokens.extend([piece] if is_special else self._tokenize(piece))
        return tokens

    def tokenize_with_offsets(self, text, **options):
        """(tokens, offsets): the tokens of `tokenize` and each one's (start, end) character span in `text`, as
        the reference's fast tokenizers give them (special tokens: their span, with the whitespace they strip)."""
        self._check_call_options(options)
        tokens, offsets = [], []
        for piece, is_special, span, outer in self.split_special_tokens_with_spans(text):
            if is_special:
                tokens.append(piece)
                offsets.append(self._special_token_offsets(span, outer))
                continue
            for token, (start, end) in self._tokenize_with_offsets(piece):
                tokens.append(token)
                offsets.append((span[0] + start, span[0] + end))
        return tokens, offsets

    def _special_token_offsets(self, span, outer):
        return outer

    def _tokenize_with_offsets(self, text):
        """[(token, (start, end))] for a text without special tokens; spans are character offsets in `text`."""
        raise NotImplementedError(f"{type(self).__name__} does not compute offsets")

    # Tokenizer-specific options of `__call__` / `tokenize` (RoBERTa's add_prefix_space); none by default.
    call_options = ()

    def _check_call_options(self, options):
        unknown = [k for k in options if k not in self.call_options]
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected argument(s) {unknown}")

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            return self._convert_token_to_id_with_specials(tokens)
        return [self._convert_token_to_id_with_specials(t) for t in tokens]

    def convert_ids_to_tokens(self, ids, skip_special_tokens=False):
        if isinstance(ids, (int, np.integer)):
            return self._convert_id_to_token(int(ids))
        special_ids = set(self.all_special_ids)
        return [self._convert_id_to_token(int(i)) for i in ids
                if not (skip_special_tokens and int(i) in special_ids)]

    def _text_to_ids(self, text, is_split_into_words=False, with_offsets=False, options=None):
        """(ids, offsets) of a text, a list of words (is_split_into_words) or a list of ids; offsets is None
        unless asked for. The words of a split text are tokenized one by one, and each one's offsets are
        relative to the word, as in the reference."""
        options = options or {}
        if is_split_into_words and isinstance(text, (list, tuple)) and all(isinstance(w, str) for w in text):
            ids, offsets = [], []
            for word in text:
                word_ids, word_offsets = self._text_to_ids(word, False, with_offsets,
                                                           self._word_options(options))
                ids.extend(word_ids)
                offsets.extend(word_offsets or [])
            return ids, (offsets if with_offsets else None)
        if isinstance(text, str):
            if with_offsets:
                tokens, offsets = self.tokenize_with_offsets(text, **options)
                return self.convert_tokens_to_ids(tokens), offsets
            return self.convert_tokens_to_ids(self.tokenize(text, **options)), None
        if isinstance(text, (list, tuple)) and all(isinstance(t, (int, np.integer)) for t in text):
            if with_offsets:
                raise ValueError("return_offsets_mapping needs text, not token ids")
            return [int(t) for t in text], None
        expected = "a list of words" if is_split_into_words else "a string or a list of ids"
        raise ValueError(f"Expected {expected}, got {type(text).__name__}")

    def _word_options(self, options):
        """The tokenize options for one word of a text given as words (is_split_into_words)."""
        return options

    # ---------------------------------------------------------------------------------------------------
    # Special-token templates

    def _special_id(self, item):
        token = getattr(self, item)
        if token is None:
            raise ValueError(f"{type(self).__name__} needs {item} for its template but it is not set")
        return self._convert_token_to_id_with_specials(token)

    def build_inputs_with_special_tokens(self, ids_a, ids_b=None):
        return self._apply_template(ids_a, ids_b)[0]

    def create_token_type_ids_from_sequences(self, ids_a, ids_b=None):
        return self._apply_template(ids_a, ids_b)[1]

    def get_special_tokens_mask(self, ids_a, ids_b=None, already_has_special_tokens=False):
        if already_has_special_tokens:
            special = set(self.all_special_ids)
            return [1 if i in special else 0 for i in ids_a]
        return self._apply_template(ids_a, ids_b)[2]

    def num_special_tokens_to_add(self, pair=False):
        items = self.template.pair if pair else self.template.single
        return sum(1 for item in items if item not in ("A", "B"))

    def _apply_template(self, ids_a, ids_b=None):
        items = self.template.pair if ids_b is not None else self.template.single
        ids, types, special = [], [], []
        for item in items:
            type_id = self.template.type_ids[item]
            if item == "A" or item == "B":
                part = ids_a if item == "A" else ids_b
                ids.extend(part)
                types.extend([type_id] * len(part))
                special.extend([0] * len(part))
            else:
                ids.append(self._special_id(item))
                types.append(type_id)
                special.append(1)
        return ids, types, special

    # ---------------------------------------------------------------------------------------------------
    # Truncation and padding (the reference's algorithms)

    # The fast tokenizers (the `tokenizers` library) split a pair's longest_first budget differently.
    fast_truncation = False

    def truncate_sequences(self, ids, pair_ids=None, num_tokens_to_remove=0, truncation_strategy="longest_first"):
        if num_tokens_to_remove <= 0:
            return ids, pair_ids
        cut = (lambda seq, n: seq[n:]) if self.truncation_side == "left" else (lambda seq, n: seq[:len(seq) - n])
        if truncation_strategy == "only_first" or (truncation_strategy == "longest_first" and pair_ids is None):
            if len(ids) > num_tokens_to_remove:
                ids = cut(ids, num_tokens_to_remove)
        elif truncation_strategy == "longest_first" and self.fast_truncation:
            remove_a, remove_b = _fast_longest_first(len(ids), len(pair_ids), num_tokens_to_remove)
            ids = cut(ids, remove_a) if remove_a > 0 else ids
            pair_ids = cut(pair_ids, remove_b) if remove_b > 0 else pair_ids
        elif truncation_strategy == "longest_first":
            len_a, len_b = len(ids), len(pair_ids)
            first = min(abs(len_b - len_a), num_tokens_to_remove)
            second = num_tokens_to_remove - first
            if len_a > len_b:
                remove_a, remove_b = first + second // 2, second - second // 2
            else:
                remove_a, remove_b = second // 2, first + second - second // 2
            ids = cut(ids, remove_a) if remove_a > 0 else ids
            pair_ids = cut(pair_ids, remove_b) if remove_b > 0 else pair_ids
        elif truncation_strategy == "only_second" and pair_ids is not None:
            if len(pair_ids) > num_tokens_to_remove:
                pair_ids = cut(pair_ids, num_tokens_to_remove)
        return ids, pair_ids

    def prepare_for_model(self, ids, pair_ids=None, add_special_tokens=True, truncation="do_not_truncate",
                          max_length=None, return_token_type_ids=None, return_attention_mask=None,
                          return_special_tokens_mask=False, return_length=False, offsets=None, pair_offsets=None):
        if truncation != "do_not_truncate" and max_length is not None:
            total = len(ids) + (len(pair_ids) if pair_ids is not None else 0)
            total += self.num_special_tokens_to_add(pair_ids is not None) if add_special_tokens else 0
            removed = total - max_length
            if offsets is not None:  # cut the offsets exactly as the ids
                offsets, pair_offsets = self.truncate_sequences(offsets, pair_offsets, removed, truncation)
            ids, pair_ids = self.truncate_sequences(ids, pair_ids, removed, truncation)
        if add_special_tokens:
            input_ids, type_ids, special = self._apply_template(ids, pair_ids)
        else:
            input_ids = ids + (pair_ids or [])
            type_ids = [0] * len(ids) + [1] * len(pair_ids or [])
            special = [0] * len(input_ids)
        encoded = {"input_ids": input_ids}
        if offsets is not None:
            encoded["offset_mapping"] = self._place_offsets(offsets, pair_offsets, add_special_tokens)
        if return_token_type_ids is None:
            return_token_type_ids = "token_type_ids" in self.model_input_names
        if return_token_type_ids:
            encoded["token_type_ids"] = type_ids
        if return_special_tokens_mask:
            encoded["special_tokens_mask"] = special
        if return_length:
            encoded["length"] = len(input_ids)
        return encoded

    def _place_offsets(self, offsets, pair_offsets, add_special_tokens):
        """Offsets in the order of the template's items; special tokens added by the template get (0, 0)."""
        if not add_special_tokens:
            return list(offsets) + list(pair_offsets or [])
        placed = []
        for item in (self.template.pair if pair_offsets is not None else self.template.single):
            if item in ("A", "B"):
                placed.extend(offsets if item == "A" else pair_offsets)
            else:
                placed.append((0, 0))
        return placed

    def pad(self, encoded, padding="longest", max_length=None, pad_to_multiple_of=None, return_attention_mask=None,
            return_tensors=None):
        """Pad a list of encodings (dicts of lists) and stack them into one BatchEncoding."""
        if isinstance(encoded, dict):
            encoded = [dict(zip(encoded, values)) for values in zip(*encoded.values())]
        lengths = [len(e["input_ids"]) for e in encoded]
        if padding in (True, "longest"):
            target = max(lengths) if lengths else 0
        elif padding == "max_length":
            target = max_length if max_length is not None else self.model_max_length
        else:
            target = None
        if target is not None and pad_to_multiple_of:
            target = -(-target // pad_to_multiple_of) * pad_to_multiple_of
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        pad_values = {"input_ids": self.pad_token_id, "token_type_ids": self.pad_token_type_id,
                      "special_tokens_mask": 1, "attention_mask": 0,
                      "offset_mapping": (0, 0)}
        batch = {}
        for e in encoded:
            e = dict(e)
            if return_attention_mask:
                e["attention_mask"] = [1] * len(e["input_ids"])
            missing = (target - len(e["input_ids"])) if target is not None else 0
            for key, value in e.items():
                if key == "length" or missing <= 0:
                    batch.setdefault(key, []).append(value)
                    continue
                fill = pad_values.get(key, 0)
                if fill is None:
                    raise ValueError(f"{type(self).__name__} has no pad_token; set one to pad")
                padded = ([fill] * missing + value) if self.padding_side == "left" else (value + [fill] * missing)
                batch.setdefault(key, []).append(padded)
        return BatchEncoding({k: _as_tensor(v, return_tensors) for k, v in batch.items()})

    pad_token_type_id = 0

    # ---------------------------------------------------------------------------------------------------
    # The main entry point

    def __call__(self, text, text_pair=None, add_special_tokens=True, padding=False, truncation=None,
                 max_length=None, pad_to_multiple_of=None, return_tensors=None, return_token_type_ids=None,
                 return_attention_mask=None, return_special_tokens_mask=False, return_length=False,
                 is_split_into_words=False, return_offsets_mapping=False, **options):
        """Encode one text (or pair), or a batch of texts (or pairs), as the reference does.

        is_split_into_words: a text is a list of words (a batch, a list of such lists), each tokenized on its
        own. return_offsets_mapping: each token's (start, end) characters in its text (in its word, for split
        words), (0, 0) for added special tokens and padding. `options` are the tokenizer's own call options
        (`call_options`, e.g. RoBERTa's add_prefix_space)."""
        self._check_call_options(options)
        self._check_split_words(is_split_into_words, options)
        if is_split_into_words:
            batched = isinstance(text, (list, tuple)) and bool(text) and isinstance(text[0], (list, tuple))
        else:
            batched = isinstance(text, (list, tuple)) and (not text or not isinstance(text[0], (int, np.integer)))
        if batched:
            texts = list(text)
            pairs = list(text_pair) if text_pair is not None else [None] * len(texts)
            if len(pairs) != len(texts):
                raise ValueError(f"Got {len(texts)} texts but {len(pairs)} text pairs")
        else:
            texts, pairs = [text], [text_pair]
        padding, truncation, max_length = self._resolve_strategies(padding, truncation, max_length)
        encoded = []
        for a, b in zip(texts, pairs):
            ids_a, offsets_a = self._text_to_ids(a, is_split_into_words, return_offsets_mapping, options)
            ids_b, offsets_b = (self._text_to_ids(b, is_split_into_words, return_offsets_mapping, options)
                                if b is not None else (None, None))
            encoded.append(self.prepare_for_model(
                ids_a, ids_b, add_special_tokens=add_special_tokens, truncation=truncation, max_length=max_length,
                return_token_type_ids=return_token_type_ids, return_special_tokens_mask=return_special_tokens_mask,
                return_length=return_length, offsets=offsets_a, pair_offsets=offsets_b))
        if not batched and padding is None and return_tensors is None:
            enc = encoded[0]
            if return_attention_mask is not False and (return_attention_mask or
                                                       "attention_mask" in self.model_input_names):
                enc["attention_mask"] = [1] * len(enc["input_ids"])
            return BatchEncoding(enc)
        if padding is None and return_tensors is not None and len({len(e["input_ids"]) for e in encoded}) > 1:
            raise ValueError("Sequences of different lengths need padding=True to become one tensor")
        result = self.pad(encoded, padding=padding or "do_not_pad", max_length=max_length,
                          pad_to_multiple_of=pad_to_multiple_of, return_attention_mask=return_attention_mask,
                          return_tensors=return_tensors)
        if not batched and return_tensors is None:
            return BatchEncoding({k: v[0] for k, v in result.items()})
        return result

    def _check_split_words(self, is_split_into_words, options):
        """Where a tokenizer cannot take words (the fast byte-level BPE without add_prefix_space), say so."""

    def _resolve_strategies(self, padding, truncation, max_length):
        if padding is True:
            padding = "longest"
        elif padding is False or padding == "do_not_pad":
            padding = None
        elif padding not in ("longest", "max_length"):
            raise ValueError(f"padding must be True/False, 'longest', 'max_length' or 'do_not_pad', got {padding!r}")
        if truncation is None:
            truncation = "longest_first" if max_length is not None else "do_not_truncate"
        elif truncation is True:
            truncation = "longest_first"
        elif truncation is False:
            truncation = "do_not_truncate"
        if truncation not in ("longest_first", "only_first", "only_second", "do_not_truncate"):
            raise ValueError(f"Unknown truncation strategy {truncation!r}")
        if max_length is None and (truncation != "do_not_truncate" or padding == "max_length"):
            if self.model_max_length < VERY_LARGE_INTEGER:
                max_length = self.model_max_length
            elif truncation != "do_not_truncate":
                truncation = "do_not_truncate"
        return padding, truncation, max_length

    def encode(self, text, text_pair=None, add_special_tokens=True, padding=False, truncation=None,
               max_length=None, return_tensors=None, **kwargs):
        """The input ids of one text (or pair); with return_tensors, a [1, length] tensor, as the reference."""
        return self(text, text_pair, add_special_tokens=add_special_tokens, padding=padding, truncation=truncation,
                    max_length=max_length, return_tensors=return_tensors, **kwargs)["input_ids"]

    # ---------------------------------------------------------------------------------------------------
    # Decoding

    def decode(self, token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=None):
        if hasattr(token_ids, "numpy"):
            token_ids = token_ids.numpy()
        token_ids = [int(i) for i in np.asarray(token_ids).reshape(-1)]
        tokens = self.convert_ids_to_tokens(token_ids, skip_special_tokens=skip_special_tokens)
        text = self.convert_tokens_to_string(tokens) if tokens else ""
        clean = self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None \
            else clean_up_tokenization_spaces
        return clean_up_tokenization(text) if clean else text

    def batch_decode(self, sequences, skip_special_tokens=False, clean_up_tokenization_spaces=None):
        return [self.decode(s, skip_special_tokens, clean_up_tokenization_spaces) for s in sequences]

    # ---------------------------------------------------------------------------------------------------
    # Saving and loading (HF file layout)

    def save_vocabulary(self, save_directory, filename_prefix=None):
        """Write the vocabulary files into `save_directory` (named `<filename_prefix>-<HF name>` with a prefix)
        and return their paths; as the reference, log an error and return None if it is not a directory."""
        if not os.path.isdir(save_directory):
            logger.error(f"Vocabulary path ({save_directory}) should be a directory")
            return None
        return self._write_vocabulary(save_directory, (filename_prefix + "-") if filename_prefix else "")

    def _write_vocabulary(self, directory, prefix):
        raise NotImplementedError

    def save_pretrained(self, directory):
        os.makedirs(directory, exist_ok=True)
        files = self.save_vocabulary(directory)
        config = {"tokenizer_class": type(self).__name__, "model_max_length": self.model_max_length,
                  "padding_side": self.padding_side, "truncation_side": self.truncation_side,
                  "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces, **self.special_tokens}
        config.update(self._extra_config())
        with open(os.path.join(directory, TOKENIZER_CONFIG_FILE), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, ensure_ascii=False)
        with open(os.path.join(directory, SPECIAL_TOKENS_MAP_FILE), "w", encoding="utf-8") as f:
            json.dump(self.special_tokens, f, indent=2, ensure_ascii=False)
        return files

    def _extra_config(self):
        return {}

    @classmethod
    def from_pretrained(cls, directory, revision=None, cache_dir=None, local_files_only=False, token=None,
                        **kwargs):
        """Load from a directory with the vocabulary files under HF's names (and, optionally, HF's
        tokenizer_config.json / special_tokens_map.json), or from a Hub id ("org/name"), which fetches just
        those files through huggingface_hub (see core.hub). Without the vocabulary files, HF's fast-tokenizer
        file tokenizer.json serves instead (read by tfmodels.tokenizers.tokenizer_json)."""
        from tfmodels.core import hub
        options = hub.HubOptions(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
                                 token=token)
        settings = {}
        for name in (SPECIAL_TOKENS_MAP_FILE, TOKENIZER_CONFIG_FILE):
            path = hub.resolve_file(directory, name, options, required=False)
            if path is not None:
                with open(path, encoding="utf-8") as f:
                    settings.update(json.load(f))
        accepted = set(SPECIAL_TOKEN_ATTRIBUTES) | {"model_max_length", "padding_side", "truncation_side",
                                                   "clean_up_tokenization_spaces"} | set(cls._extra_init_args())
        init = {k: v for k, v in settings.items() if k in accepted}
        init.update(kwargs)
        files = {}
        for arg, file_name in cls.vocab_files_names.items():
            path = hub.resolve_file(directory, file_name, options, required=False)
            if path is None:
                files = {"tokenizer_file": hub.resolve_file(directory, TOKENIZER_FILE, options, required=False)}
                if files["tokenizer_file"] is None:
                    names = " + ".join(cls.vocab_files_names.values())
                    raise FileNotFoundError(f"{cls.__name__} needs {names} or {TOKENIZER_FILE} in {directory}")
                break
            files[arg] = path
        return cls(**files, **init)

    @classmethod
    def _extra_init_args(cls):
        return ()


def _fast_longest_first(len_a, len_b, num_tokens_to_remove):
    """(tokens to remove from a, from b): the `tokenizers` library's longest_first for a pair. The shorter
    sequence keeps all it can up to half the budget, the longer the rest; cut both, the longer keeps the odd one."""
    budget = len_a + len_b - num_tokens_to_remove
    short, long = sorted((len_a, len_b))
    keep_short, keep_long = short, (short if short > budget else max(short, budget - short))
    if keep_short + keep_long > budget:
        keep_short, keep_long = budget // 2, budget // 2 + budget % 2
    keep_a, keep_b = (keep_long, keep_short) if len_a > len_b else (keep_short, keep_long)
    return max(len_a - keep_a, 0), max(len_b - keep_b, 0)


def _as_tensor(values, return_tensors):
    """Lists -> the reference's tensor types: "np" int64, "tf" int32, "pt" int64 (PyTorch only if installed)."""
    if return_tensors is None:
        return values
    if return_tensors not in ("np", "tf", "pt"):
        raise ValueError(f"return_tensors must be None, 'np', 'tf' or 'pt', got {return_tensors!r}")
    array = np.asarray(values, dtype=np.int32 if return_tensors == "tf" else np.int64)
    if return_tensors == "np":
        return array
    if return_tensors == "tf":
        import tensorflow as tf
        return tf.constant(array)
    try:
        import torch
    except ImportError:
        raise ImportError("return_tensors='pt' needs PyTorch, which is not installed (tfmodels does not depend on "
                          "it); use return_tensors='tf' or 'np'") from None
    return torch.from_numpy(array)


def clean_up_tokenization(text):
    """The reference's clean-up of spaces before punctuation and contractions."""
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                          (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(before, after)
    return text
