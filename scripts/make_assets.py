"""Regenerate the bundled assets in tfmodels/assets/ (tokenizer models and small datasets), offline.

    python scripts/make_assets.py [--only xlm_roberta,data,listops,tasks,images]

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

from tfmodels.training import listops, synthetic_data, synthetic_text  # noqa: E402
from tfmodels.training.word_tokenizer import WordLevelTokenizer  # noqa: E402

ASSETS = os.path.join(os.path.dirname(__file__), "..", "tfmodels", "assets")
# ListOps size and shape: trains in a few minutes on 2 CPU cores (see the listops recipe).
LISTOPS_TRAIN, LISTOPS_EVAL = 8000, 500
# Depths 1, 2 and 3 equally often (see tfmodels/training/listops.py); a depth-1 expression has 4-8 tokens.
LISTOPS_SHAPE = dict(min_length=4, max_length=300, max_depth=3, max_args=6, mixed_depths=True)


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


def write_text(path, text, mode="w"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
        f.write(text)


def make_data():
    write_jsonl(os.path.join(ASSETS, "data", "sentiment", "train.jsonl"), synthetic_text.sentiment_examples(800, 1))
    write_jsonl(os.path.join(ASSETS, "data", "sentiment", "test.jsonl"), synthetic_text.sentiment_examples(200, 2))


def make_listops():
    """ListOps (see tfmodels/training/listops.py): train / validation / test JSONL and the word vocabulary."""
    folder = os.path.join(ASSETS, "data", "listops")
    sizes = {"train": (LISTOPS_TRAIN, 11), "validation": (LISTOPS_EVAL, 12), "test": (LISTOPS_EVAL, 13)}
    for split, (num, seed) in sizes.items():
        write_jsonl(os.path.join(folder, f"{split}.jsonl"), listops.examples(num, seed, **LISTOPS_SHAPE))
    tokenizer = WordLevelTokenizer.from_words(listops.WORDS)
    tokenizer.save_pretrained(folder)


def make_tiny_tasks():
    """Tiny QA (SQuAD JSON), token labelling (CoNLL), multiple choice (JSONL) and masked-LM text."""
    data = os.path.join(ASSETS, "data")
    for split, (num, seed) in {"train": (60, 21), "validation": (12, 22)}.items():
        write_text(os.path.join(data, "qa", f"{split}.json"),
                   json.dumps(synthetic_data.squad(num, seed), indent=1, ensure_ascii=False) + "\n")
    for split, (num, seed) in {"train": (200, 31), "validation": (40, 32)}.items():
        write_text(os.path.join(data, "ner", f"{split}.conll"),
                   synthetic_data.conll_text(synthetic_data.ner_sentences(num, seed)))
    for split, (num, seed) in {"train": (160, 41), "validation": (40, 42)}.items():
        write_jsonl(os.path.join(data, "multiple_choice", f"{split}.jsonl"), synthetic_data.multiple_choice(num, seed))
    for split, (num, seed) in {"train": (400, 51), "validation": (80, 52)}.items():
        write_text(os.path.join(data, "mlm", f"{split}.txt"), "\n".join(synthetic_data.mlm_lines(num, seed)) + "\n")


def make_images():
    """Tiny image set: shapes/<split>/<class>/*.png and shapes_segmentation/<split>/{images,masks}/*.png."""
    root = os.path.join(ASSETS, "data", "shapes")
    for split, (per_class, seed) in {"train": (16, 61), "validation": (6, 62)}.items():
        for label, images in synthetic_data.classification_images(per_class, seed).items():
            for i, image in enumerate(images):
                write_text(os.path.join(root, split, label, f"{i:03d}.png"), synthetic_data.encode_png(image), "wb")
    root = os.path.join(ASSETS, "data", "shapes_segmentation")
    for split, (num, seed) in {"train": (32, 71), "validation": (12, 72)}.items():
        for i, (image, mask) in enumerate(synthetic_data.segmentation_images(num, seed)):
            write_text(os.path.join(root, split, "images", f"{i:03d}.png"), synthetic_data.encode_png(image), "wb")
            write_text(os.path.join(root, split, "masks", f"{i:03d}.png"), synthetic_data.encode_png(mask), "wb")
    write_text(os.path.join(root, "labels.txt"), "\n".join(synthetic_data.SEGMENTATION_LABELS) + "\n")


BUILDERS = {"xlm_roberta": make_xlm_roberta, "albert": make_albert, "xlnet": make_xlnet, "roberta": make_roberta,
            "data": make_data, "listops": make_listops, "tasks": make_tiny_tasks, "images": make_images}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default=",".join(BUILDERS), help="comma-separated: " + ", ".join(BUILDERS))
    args = parser.parse_args()
    for name in args.only.split(","):
        BUILDERS[name]()
        print(f"built {name}")


if __name__ == "__main__":
    main()
