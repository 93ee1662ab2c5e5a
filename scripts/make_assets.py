"""Regenerate the bundled assets in tfmodels/assets/ (tokenizer models and small datasets), offline.

    python scripts/make_assets.py [--only xlm_roberta,data]

Everything is derived from tfmodels.training.synthetic_text with fixed seeds (sentencepiece training is not
byte-for-byte deterministic, so the committed files are the reference the tests were run with).
"""
import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tfmodels.training import synthetic_text  # noqa: E402

ASSETS = os.path.join(os.path.dirname(__file__), "..", "tfmodels", "assets")


def train_sentencepiece(output_path, vocab_size, model_type, **ids):
    import sentencepiece as spm

    with tempfile.TemporaryDirectory() as tmp:
        corpus_path = os.path.join(tmp, "corpus.txt")
        with open(corpus_path, "w", encoding="utf-8") as f:
            f.write("\n".join(synthetic_text.corpus()))
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


def make_roberta(vocab_size=1000):
    """Byte-level BPE in RoBERTa's layout (vocab.json + merges.txt; <s> 0, <pad> 1, </s> 2, <unk> 3, <mask>
    last), trained with the `tokenizers` library on the synthetic corpus."""
    from tokenizers import ByteLevelBPETokenizer

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(synthetic_text.corpus(), vocab_size=vocab_size - 1, min_frequency=2,
                                special_tokens=specials, show_progress=False)
    directory = os.path.join(ASSETS, "roberta")
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        vocab_path, merges_path = trainer.save_model(tmp)
        with open(vocab_path, encoding="utf-8") as f:
            vocab = json.load(f)
        with open(merges_path, encoding="utf-8") as f:
            merges = [line for line in f.read().split("\n")[1:] if line]
    ordered = sorted(vocab.items(), key=lambda item: item[1])
    assert [token for token, _ in ordered[:4]] == specials, ordered[:4]
    vocab = {token: index for index, (token, _) in enumerate(ordered)}
    vocab["<mask>"] = len(vocab)
    with open(os.path.join(directory, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False, indent=1)
        f.write("\n")
    with open(os.path.join(directory, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(line + "\n" for line in merges))


def write_jsonl(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def make_data():
    write_jsonl(os.path.join(ASSETS, "data", "sentiment", "train.jsonl"), synthetic_text.sentiment_examples(800, 1))
    write_jsonl(os.path.join(ASSETS, "data", "sentiment", "test.jsonl"), synthetic_text.sentiment_examples(200, 2))


BUILDERS = {"xlm_roberta": make_xlm_roberta, "roberta": make_roberta, "data": make_data}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default=",".join(BUILDERS), help="comma-separated: " + ", ".join(BUILDERS))
    args = parser.parse_args()
    for name in args.only.split(","):
        BUILDERS[name]()
        print(f"built {name}")


if __name__ == "__main__":
    main()
