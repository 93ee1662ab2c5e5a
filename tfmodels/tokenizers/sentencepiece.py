"""Sentencepiece-based tokenizers (XLM-RoBERTa, XLNet, ALBERT): the shared sub-word model and id mapping.

Families differ in how sentencepiece ids map to model ids: XLM-RoBERTa shifts them by one to make room for
fairseq's <pad> (and maps sentencepiece's <unk> 0 to its own 3); XLNet and ALBERT use them as they are. The
same mapping drives the in-graph tokenizer (tfmodels.tokenizers.in_graph), so the two agree by construction.
"""
import os
import shutil

import sentencepiece as spm

from tfmodels.tokenizers.base import PreTrainedTokenizer
from tfmodels.tokenizers.in_graph import sentencepiece_in_graph

SPIECE_UNDERLINE = "\u2581"


class SentencePieceTokenizer(PreTrainedTokenizer):
    vocab_files_names = {"vocab_file": "spiece.model"}
    # Model ids of tokens that sentencepiece does not own (fairseq's <s>, <pad>, </s>, <unk>), by token.
    fixed_token_ids = {}
    id_offset = 0

    def __init__(self, vocab_file, **kwargs):
        self.vocab_file = vocab_file
        self.sp_model = spm.SentencePieceProcessor()
        self.sp_model.Load(str(vocab_file))
        self._init_fixed_ids()
        super().__init__(**kwargs)

    def _init_fixed_ids(self):
        self.token_to_fixed_id = dict(self.fixed_token_ids)

    @property
    def sp_unk_id(self):
        return self.sp_model.unk_id()

    @property
    def vocab_size(self):
        return len(self.sp_model) + self.id_offset + len(
            [i for i in self.token_to_fixed_id.values() if i >= len(self.sp_model) + self.id_offset])

    def _tokenize(self, text):
        return self.sp_model.encode(text, out_type=str)

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

    def save_vocabulary(self, directory):
        target = os.path.join(directory, self.vocab_files_names["vocab_file"])
        if os.path.abspath(target) != os.path.abspath(self.vocab_file):
            shutil.copyfile(self.vocab_file, target)
        return (target,)

    @property
    def serialized_model(self):
        return self.sp_model.serialized_model_proto()

    def in_graph(self, max_length=None):
        """The TF Text twin of this tokenizer (for raw-string SavedModel signatures)."""
        return sentencepiece_in_graph(self, max_length=max_length)
