"""Regenerate the bundled assets in tfmodels/assets/ (tokenizer models and small datasets), offline.

    python scripts/make_assets.py [--only xlm_roberta,data]

Everything is derived from tfmodels.training.synthetic_text with fixed seeds (sentencepiece training is not
byte-for-byte deterministic, so the committed files are the reference the tests were run with).
"""
import argparse
import json
import os
import random
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tfmodels.training import synthetic_text  # noqa: E402

ASSETS = os.path.join(os.path.dirname(__file__), "..", "tfmodels", "assets")


def train_sentencepiece(output_path, vocab_size, model_type, extra_lines=(), **ids):
    import sentencepiece as spm

    with tempfile.TemporaryDirectory() as tmp:
        corpus_path = os.path.join(tmp, "corpus.txt")
        with open(corpus_path, "w", encoding="utf-8") as f:
            f.write("\n".join(synthetic_text.corpus() + list(extra_lines)))
        prefix = os.path.join(tmp, "spm")
        spm.SentencePieceTrainer.train(
            input=corpus_path, model_prefix=prefix, vocab_size=vocab_size, model_type=model_type,
            character_coverage=0.9995, hard_vocab_limit=False, minloglevel=2, num_threads=1,
            **ids)
        os.makedirs(os.path.dirname(output_path), exist_ok=True)
        with open(prefix + ".model", "rb") as src, open(output_path, "wb") as dst:
            dst.write(src.read())


def make_xlm_roberta():
    # The XLM-R layout: unk 0, <s> 1, </s> 2, no pad piece (the tokenizer adds the fairseq offset).
    train_sentencepiece(os.path.join(ASSETS, "xlm_roberta", "sentencepiece.bpe.model"), 1000, "bpe",
                        unk_id=0, bos_id=1, eos_id=2, pad_id=-1)


def make_albert():
    # The ALBERT spiece layout: <pad> 0, <unk> 1, control symbols [CLS] 2, [SEP] 3, [MASK] 4, no <s>/</s>;
    # unigram, trained on text preprocessed as AlbertTokenizer does (lowercased, accents stripped).
    import random
    import unicodedata

    import sentencepiece as spm

    def preprocess(line):
        line = unicodedata.normalize("NFKD", " ".join(line.split()))
        return "".join(c for c in line if not unicodedata.combining(c)).lower()

    # Lists of numbers ("3, 40, 7") and thousands separators, so that pieces such as "▁1," exist and the
    # tokenizer's number rule ("▁9," -> "▁9" ",") is exercised.
    rng = random.Random(99)
    numbers = [", ".join(str(rng.randint(1, 12) * rng.choice([1, 1, 10, 100])) for _ in range(rng.randint(2, 6)))
               + f" and {rng.randint(1, 9)},000" for _ in range(1500)]
    output_path = os.path.join(ASSETS, "albert", "spiece.model")
    with tempfile.TemporaryDirectory() as tmp:
        corpus_path = os.path.join(tmp, "corpus.txt")
        with open(corpus_path, "w", encoding="utf-8") as f:
            f.write("\n".join(preprocess(line) for line in synthetic_text.corpus() + numbers))
        prefix = os.path.join(tmp, "spm")
        spm.SentencePieceTrainer.train(
            input=corpus_path, model_prefix=prefix, vocab_size=1000, model_type="unigram",
            character_coverage=0.9995, hard_vocab_limit=False, minloglevel=2, num_threads=1,
            pad_id=0, unk_id=1, bos_id=-1, eos_id=-1, pad_piece="<pad>", unk_piece="<unk>",
            control_symbols=["[CLS]", "[SEP]", "[MASK]"], split_by_number=False)
        os.makedirs(os.path.dirname(output_path), exist_ok=True)
        with open(prefix + ".model", "rb") as src, open(output_path, "wb") as dst:
            dst.write(src.read())


def make_xlnet():
    # The XLNet spiece layout (xlnet-base-cased): unk 0, <s> 1, </s> 2, control symbols <cls> 3, <sep> 4,
    # <pad> 5, <mask> 6, <eod> 7, then the user-defined <eop> 8 and the punctuation XLNet keeps whole; unigram.
    # Number lists ("1999, 2004,") make the model learn pieces that end in a digit and a comma, which XLNet's
    # tokenizer re-splits: the bundled model exercises that rule.
    rng = random.Random(77)
    numbers = [", ".join(str(rng.choice([rng.randint(0, 20), rng.randint(1900, 2030)]))
                         for _ in range(rng.randint(2, 6))) + rng.choice([", and more.", ",", "."])
               for _ in range(3000)]
    train_sentencepiece(os.path.join(ASSETS, "xlnet", "spiece.model"), 2000, "unigram", extra_lines=numbers,
                        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                        control_symbols=["<cls>", "<sep>", "<pad>", "<mask>", "<eod>"],
                        user_defined_symbols=["<eop>", ".", "(", ")", '"', "-", "\u2013", "\u00a3", "\u20ac"])


def write_jsonl(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def make_data():
    write_jsonl(os.path.join(ASSETS, "data", "sentiment", "train.jsonl"), synthetic_text.sentiment_examples(800, 1))
    write_jsonl(os.path.join(ASSETS, "data", "sentiment", "test.jsonl"), synthetic_text.sentiment_examples(200, 2))


BUILDERS = {"xlm_roberta": make_xlm_roberta, "albert": make_albert, "xlnet": make_xlnet, "data": make_data}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default=",".join(BUILDERS), help="comma-separated: " + ", ".join(BUILDERS))
    args = parser.parse_args()
    for name in args.only.split(","):
        BUILDERS[name]()
        print(f"built {name}")


if __name__ == "__main__":
    main()
