"""A word-level tokenizer: whitespace-separated words looked up in a fixed vocabulary (vocab.txt, one token per
line, the line number is the id). Used for synthetic tasks with a closed vocabulary such as ListOps, where a
sub-word model would only get in the way.

Special tokens use the XLM-RoBERTa layout so that the XLM-R-style families (pad_token_id 1) work unchanged:
`<s>` 0, `<pad>` 1, `</s>` 2, `<unk>` 3, `<mask>` 4, then the words. Sequences are `<s> A </s>` and
`<s> A </s></s> B </s>`. `in_graph()` gives the TF twin (tf.strings.split + a static hash table: core TF ops
only), so a SavedModel with a raw-text signature needs nothing beyond stock TF Serving.
"""
import os

import tensorflow as tf

from tfmodels.tokenizers.base import PreTrainedTokenizer, Template
from tfmodels.tokenizers.in_graph import InGraphTokenizer, template_items

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
VOCAB_FILE = "vocab.txt"


class WordLevelTokenizer(PreTrainedTokenizer):
    vocab_files_names = {"vocab_file": VOCAB_FILE}
    model_input_names = ("input_ids", "attention_mask")
    default_special_tokens = {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
                              "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>"}
    template = Template(single=("cls_token", "A", "sep_token"),
                        pair=("cls_token", "A", "sep_token", "sep_token", "B", "sep_token"),
                        type_ids={"cls_token": 0, "A": 0, "sep_token": 0, "B": 0})

    def __init__(self, vocab_file=None, vocab=None, **kwargs):
        if vocab is None:
            if vocab_file is None:
                raise ValueError("WordLevelTokenizer needs vocab_file or vocab")
            with open(vocab_file, encoding="utf-8") as f:
                vocab = [line.rstrip("\n") for line in f if line.rstrip("\n")]
        vocab = list(vocab)
        if len(set(vocab)) != len(vocab):
            raise ValueError("WordLevelTokenizer: the vocabulary has duplicate tokens")
        if any(not token or any(c.isspace() for c in token) for token in vocab):
            raise ValueError("WordLevelTokenizer: tokens must be non-empty and contain no whitespace")
        self.vocab_file = vocab_file
        self.vocab = vocab
        self.token_to_id = {token: i for i, token in enumerate(vocab)}
        super().__init__(**kwargs)
        missing = [t for t in self.all_special_tokens if t not in self.token_to_id]
        if missing:
            raise ValueError(f"WordLevelTokenizer: special tokens {missing} are not in the vocabulary")

    @classmethod
    def from_words(cls, words, **kwargs):
        """A tokenizer whose vocabulary is the special tokens followed by `words` (in the given order)."""
        return cls(vocab=list(SPECIALS) + [w for w in words if w not in SPECIALS], **kwargs)

    @property
    def vocab_size(self):
        return len(self.vocab)

    def _tokenize(self, text):
        return text.split()

    def _convert_token_to_id(self, token):
        return self.token_to_id.get(token, self.token_to_id[self.unk_token])

    def _convert_id_to_token(self, index):
        return self.vocab[index]

    def convert_tokens_to_string(self, tokens):
        return " ".join(tokens)

    def save_vocabulary(self, directory):
        path = os.path.join(directory, VOCAB_FILE)
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(self.vocab) + "\n")
        return (path,)

    def in_graph(self, max_length=None):
        specials = {t: self.convert_tokens_to_ids(t) for t in self.all_special_tokens}
        strip = {t: self.token_strip_flags(t) for t in self.all_special_tokens}
        return WordLevelInGraphTokenizer(
            self.vocab, self.token_to_id[self.unk_token], special_tokens=specials, strip_flags=strip,
            template_single=template_items(self, self.template.single),
            template_pair=template_items(self, self.template.pair), pad_id=self.pad_token_id,
            padding_side=self.padding_side, truncation_side=self.truncation_side, max_length=max_length,
            return_token_type_ids="token_type_ids" in self.model_input_names)


class WordLevelInGraphTokenizer(InGraphTokenizer):
    """Whitespace split + vocabulary lookup with TF ops (StringSplitV2, a static hash table)."""

    def __init__(self, vocab, unk_id, **kwargs):
        super().__init__(**kwargs)
        initializer = tf.lookup.KeyValueTensorInitializer(tf.constant(list(vocab)),
                                                          tf.range(len(vocab), dtype=tf.int64))
        self.table = tf.lookup.StaticHashTable(initializer, default_value=int(unk_id))

    def _subword_ids(self, flat_pieces):
        words = tf.strings.split(flat_pieces)
        return tf.ragged.map_flat_values(lambda w: tf.cast(self.table.lookup(w), tf.int32), words)
