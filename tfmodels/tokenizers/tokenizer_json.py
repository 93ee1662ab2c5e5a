"""Reading HF's fast-tokenizer file (tokenizer.json) into what our tokenizers are built from.

A repository may ship only tokenizer.json. We read it with `json` rather than with the `tokenizers` library: that
library is not a dependency of tfmodels (setup.cfg), and our tokenizers need only the sub-word model, which the
file spells out:
- byte-level BPE (RoBERTa, Longformer): `model.vocab` ({token: id}) and `model.merges` (ranked pairs, written as
  "a b" strings or, by newer versions, as [a, b] lists) are exactly vocab.json and merges.txt;
- sentencepiece families (XLNet, ALBERT, XLM-RoBERTa): the file holds the Unigram pieces with their scores (or
  the BPE vocabulary of a BPE sentencepiece model) and, in its `Precompiled` normalizer, sentencepiece's own
  normalisation table. From these we rebuild the sentencepiece model proto (sentencepiece ships its schema as
  `sentencepiece_model_pb2`), so the same sentencepiece code runs on it as on a .model file. The rebuilt model
  keeps the pieces, scores, normalisation and dummy prefix; what tokenizer.json does not record (the trainer's
  settings, which piece was user-defined rather than a control symbol) does not change the encoding of text.
"""
import base64
import json

from sentencepiece import sentencepiece_model_pb2

NORMAL, UNKNOWN, CONTROL, USER_DEFINED = (sentencepiece_model_pb2.ModelProto.SentencePiece.Type.Value(name)
                                          for name in ("NORMAL", "UNKNOWN", "CONTROL", "USER_DEFINED"))
MODEL_TYPES = {"Unigram": sentencepiece_model_pb2.TrainerSpec.ModelType.Value("UNIGRAM"),
               "BPE": sentencepiece_model_pb2.TrainerSpec.ModelType.Value("BPE")}


def read(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def bpe_vocab_and_merges(data):
    """(vocab {token: id}, merges [(a, b)] in rank order) of a byte-level BPE tokenizer.json."""
    model = data["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"Expected a BPE model in tokenizer.json, found {model.get('type')!r}")
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return dict(model["vocab"]), merges


def vocabulary(data):
    """[(piece, score)] in id order; BPE pieces score by rank (sentencepiece BPE merges the best score first)."""
    model = data["model"]
    if model.get("type") == "Unigram":
        return [(piece, float(score)) for piece, score in model["vocab"]]
    if model.get("type") == "BPE":
        ordered = sorted(model["vocab"].items(), key=lambda item: item[1])
        return [(piece, -float(i)) for i, (piece, _) in enumerate(ordered)]
    raise ValueError(f"tokenizer.json holds a {model.get('type')!r} model; a sentencepiece tokenizer needs Unigram "
                     "or BPE")


def unknown_piece(data):
    model = data["model"]
    if model.get("type") == "Unigram":
        unk_id = model.get("unk_id")
        return None if unk_id is None else model["vocab"][unk_id][0]
    return model.get("unk_token")


def piece_type(data, piece):
    """The sentencepiece type of a piece: the unknown piece, special added tokens as control symbols, other added
    tokens as user-defined pieces, the rest normal."""
    if piece == unknown_piece(data):
        return UNKNOWN
    for token in data.get("added_tokens", ()):
        if token["content"] == piece:
            return CONTROL if token.get("special") else USER_DEFINED
    return NORMAL


def sentencepiece_model_proto(data, pieces):
    """A serialized sentencepiece ModelProto from tokenizer.json `data` and `pieces` [(piece, score, type)] in
    sentencepiece id order (which a family may lay out differently from the tokenizer.json ids)."""
    unknown = [i for i, (_, _, kind) in enumerate(pieces) if kind == UNKNOWN]
    if not unknown:
        raise ValueError("tokenizer.json names no unknown token; sentencepiece needs one")
    trainer = sentencepiece_model_pb2.TrainerSpec(
        model_type=MODEL_TYPES[data["model"]["type"]], vocab_size=len(pieces), unk_id=unknown[0], bos_id=-1,
        eos_id=-1, pad_id=-1, byte_fallback=bool(data["model"].get("byte_fallback", False)), hard_vocab_limit=False)
    charsmap = _precompiled_charsmap(data.get("normalizer"))
    normalizer = sentencepiece_model_pb2.NormalizerSpec(
        name="nmt_nfkc" if charsmap else "identity", precompiled_charsmap=charsmap,
        add_dummy_prefix=_adds_prefix(data.get("pre_tokenizer")), remove_extra_whitespaces=True,
        escape_whitespaces=True)
    proto = sentencepiece_model_pb2.ModelProto(trainer_spec=trainer, normalizer_spec=normalizer)
    for piece, score, kind in pieces:
        proto.pieces.add(piece=piece, score=score, type=kind)
    return proto.SerializeToString()


def _precompiled_charsmap(normalizer):
    if not normalizer:
        return b""
    if normalizer.get("type") == "Precompiled":
        return base64.b64decode(normalizer.get("precompiled_charsmap") or "")
    for inner in normalizer.get("normalizers", ()):
        charsmap = _precompiled_charsmap(inner)
        if charsmap:
            return charsmap
    return b""


def _adds_prefix(pre_tokenizer):
    """Whether the Metaspace pre-tokenizer puts "▁" before the text (sentencepiece's add_dummy_prefix)."""
    if not pre_tokenizer:
        return True
    if pre_tokenizer.get("type") == "Metaspace":
        if "prepend_scheme" in pre_tokenizer:
            return pre_tokenizer["prepend_scheme"] != "never"
        return bool(pre_tokenizer.get("add_prefix_space", True))
    return all(_adds_prefix(inner) for inner in pre_tokenizer.get("pretokenizers", ()))
