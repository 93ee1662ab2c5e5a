"""XLM-RoBERTa's tokenizer (also XLM-RoBERTa-XL/XXL): sentencepiece BPE with the fairseq id layout.

fairseq ids: <s> 0, <pad> 1, </s> 2, <unk> 3, then sentencepiece piece k (k >= 3) at k + 1, and <mask> last.
Sequences: `<s> A </s>` and `<s> A </s></s> B </s>`, token type ids all 0.
"""
from tfmodels.tokenizers import tokenizer_json
from tfmodels.tokenizers.base import Template
from tfmodels.tokenizers.sentencepiece import SentencePieceTokenizer


class XLMRobertaTokenizer(SentencePieceTokenizer):
    vocab_files_names = {"vocab_file": "sentencepiece.bpe.model"}
    model_input_names = ("input_ids", "attention_mask")
    default_special_tokens = {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
                              "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>"}
    strip_flags = {"mask_token": (True, False)}  # <mask> eats the space before it
    template = Template(single=("cls_token", "A", "sep_token"),
                        pair=("cls_token", "A", "sep_token", "sep_token", "B", "sep_token"),
                        type_ids={"cls_token": 0, "A": 0, "sep_token": 0, "B": 0})
    fixed_token_ids = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    id_offset = 1

    def _init_fixed_ids(self):
        super()._init_fixed_ids()
        self.token_to_fixed_id["<mask>"] = len(self.sp_model) + self.id_offset

    @property
    def vocab_size(self):
        return len(self.sp_model) + self.id_offset + 1  # + <mask>

    @classmethod
    def sentencepiece_pieces(cls, data):
        """tokenizer.json holds fairseq's layout (<s> <pad> </s> <unk>, the sentencepiece pieces from id 3 on, then
        <mask>); sentencepiece's is <unk> 0, <s> 1, </s> 2, then the pieces."""
        fairseq = set(cls.fixed_token_ids) | {"<mask>"}
        return ([("<unk>", 0.0, tokenizer_json.UNKNOWN), ("<s>", 0.0, tokenizer_json.CONTROL),
                 ("</s>", 0.0, tokenizer_json.CONTROL)]
                + [(piece, score, tokenizer_json.NORMAL) for piece, score in tokenizer_json.vocabulary(data)
                   if piece not in fairseq])


class XLMRobertaTokenizerFast(XLMRobertaTokenizer):
    """The reference's fast name: offsets (return_offsets_mapping) are available on both; a pair is truncated
    (longest_first) as the fast tokenizer does."""

    fast_truncation = True
