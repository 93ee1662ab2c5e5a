"""Data level: readers, the word-level tokenizer (Python vs in-graph), the ListOps generator and bundled files,
text pipelines (exact steps with bucketing, padding multiples, resume skipping, labels and spans), and the image
pipelines (class folders, image + mask folders, preprocessing shared with the export signature)."""
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.serving import harness
from tfmodels.registry import get_family
from tfmodels.training import data, listops, readers, synthetic_data
from tfmodels.training.word_tokenizer import WordLevelTokenizer


@pytest.fixture(scope="module")
def xlmr_tokenizer():
    return get_family("xlm-roberta-xl").default_tokenizer()


@pytest.fixture(scope="module")
def listops_tokenizer():
    return WordLevelTokenizer.from_pretrained(readers.resolve_path("assets:data/listops"))


# ---------------------------------------------------------------------------------------------------------------
# Readers


def test_readers_for_every_text_format(tmp_path):
    rows = [{"text": "a b", "label": "x"}, {"text": "c, d", "label": "y"}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "d.csv").write_text('text,label\na b,x\n"c, d",y\n')
    (tmp_path / "d.tsv").write_text("text\tlabel\na b\tx\nc, d\ty\n")
    (tmp_path / "d.txt").write_text("a b\n\nc, d\n")
    (tmp_path / "d.json").write_text(json.dumps(rows))
    for name in ("d.jsonl", "d.csv", "d.tsv", "d.json"):
        assert readers.read(str(tmp_path / name)) == rows, name
    assert readers.read(str(tmp_path / "d.txt")) == [{"text": "a b"}, {"text": "c, d"}]
    (tmp_path / "d.conll").write_text("-DOCSTART- O\n\nAnna B-PER\nlives O\n\nParis B-LOC\n")
    assert readers.read(str(tmp_path / "d.conll")) == [{"words": ["Anna", "lives"], "tags": ["B-PER", "O"]},
                                                       {"words": ["Paris"], "tags": ["B-LOC"]}]
    with pytest.raises(ValueError, match="format"):
        readers.read(str(tmp_path / "d.txt"), format="nope")


def test_tfrecord_round_trip(tmp_path):
    rows = [{"text": "hello world", "label": 1, "input_ids": [0, 5, 6, 2], "score": 0.5},
            {"text": "bye", "label": 0, "input_ids": [0, 7, 2], "score": 1.5}]
    path = readers.write_tfrecord(str(tmp_path / "d.tfrecord"), rows)
    assert readers.read(path) == rows


def test_squad_reader_gives_one_row_per_question():
    rows = readers.read(readers.resolve_path("assets:data/qa/train.json"))
    assert len(rows) > 60 and {"id", "question", "context", "answers"} <= set(rows[0])
    for row in rows:
        answer = row["answers"][0]
        assert row["context"][answer["answer_start"]:][:len(answer["text"])] == answer["text"]


def test_image_folder_readers():
    rows = readers.read(readers.resolve_path("assets:data/shapes/train"))
    assert {r["label"] for r in rows} == set(synthetic_data.SHAPES) and len(rows) == 48
    rows = readers.read(readers.resolve_path("assets:data/shapes_segmentation/train"))
    assert len(rows) == 32 and all(os.path.basename(r["image"]) == os.path.basename(r["mask"]) for r in rows)


# ---------------------------------------------------------------------------------------------------------------
# Word-level tokenizer and ListOps


def test_listops_generator_labels_and_shape():
    rows = listops.examples(200, seed=3, min_length=20, max_length=120)
    assert all(listops.parse(r["text"]) == r["label"] for r in rows)
    assert all(20 <= len(r["text"].split()) <= 120 for r in rows)
    counts = np.bincount([r["label"] for r in rows], minlength=10)
    assert counts.max() - counts.min() <= 1  # balanced
    assert listops.evaluate(("[MED", [1, 5, 8, 9])) == 6 and listops.evaluate(("[SM", [7, 8])) == 5


def test_bundled_listops_files(listops_tokenizer):
    folder = readers.resolve_path("assets:data/listops")
    assert listops_tokenizer.vocab == ["<s>", "<pad>", "</s>", "<unk>", "<mask>"] + list(listops.WORDS)
    for split in ("train", "validation", "test"):
        rows = readers.read(os.path.join(folder, f"{split}.jsonl"))
        assert all(listops.parse(r["text"]) == r["label"] for r in rows[:300]), split
        assert max(len(r["text"].split()) for r in rows) <= 300


def test_word_tokenizer_python_and_in_graph_agree(listops_tokenizer, tmp_path):
    texts = ["[MAX 2 9 [MIN 4 7 ] 0 ]", "[SM 3 ]", "7", "[MED 1 <mask> 8 ] ]", "oops 1 2"]
    encoded = listops_tokenizer(texts, padding=True, return_tensors="np")
    graph = listops_tokenizer.in_graph()(tf.constant(texts))
    np.testing.assert_array_equal(graph["input_ids"].numpy(), encoded["input_ids"])
    np.testing.assert_array_equal(graph["attention_mask"].numpy(), encoded["attention_mask"])
    assert encoded["input_ids"][0][:3].tolist() == [0, 5, 12]  # <s> [MAX 2
    assert listops_tokenizer.convert_ids_to_tokens(3) == "<unk>" and encoded["input_ids"][4][1] == 3
    truncated = listops_tokenizer.in_graph(max_length=4)(tf.constant(texts[:1]))["input_ids"].numpy()
    np.testing.assert_array_equal(truncated, listops_tokenizer(texts[:1], max_length=4, truncation=True,
                                                               return_tensors="np")["input_ids"])
    listops_tokenizer.save_pretrained(str(tmp_path))
    assert WordLevelTokenizer.from_pretrained(str(tmp_path)).vocab == listops_tokenizer.vocab


# ---------------------------------------------------------------------------------------------------------------
# Text pipelines


def _all_batches(ds):
    return [{k: v.numpy() for k, v in b.items()} for b in ds]


def test_bucketing_gives_exact_steps_each_example_once_and_padding_multiples(listops_tokenizer):
    rows = listops.examples(150, seed=5, min_length=5, max_length=90)
    processor = data.SequenceClassificationData(listops_tokenizer, [str(i) for i in range(10)], max_length=128)
    dataset = data.TextDataset(processor, rows, pad_to_multiple_of=16)
    batches = _all_batches(dataset.epoch(16, epoch=0, seed=1, bucket_pool=4))
    assert len(batches) == dataset.steps(16) == math.ceil(150 / 16)
    assert all(b["input_ids"].shape[1] % 16 == 0 for b in batches)
    lengths = sorted(int(m.sum()) for b in batches for m in b["attention_mask"])
    assert lengths == sorted(len(r["text"].split()) + 2 for r in rows)
    # bucketing: padding is much less than with random batches
    waste = sum(b["input_ids"].size - b["attention_mask"].sum() for b in batches)
    plain = _all_batches(dataset.epoch(16, epoch=0, seed=1, bucket_pool=0))
    assert waste < 0.7 * sum(b["input_ids"].size - b["attention_mask"].sum() for b in plain)


def test_epochs_are_deterministic_and_resume_skips_exactly(listops_tokenizer):
    rows = listops.examples(40, seed=6, min_length=5, max_length=40)
    processor = data.SequenceClassificationData(listops_tokenizer, [str(i) for i in range(10)], max_length=64)
    dataset = data.TextDataset(processor, rows)
    first = _all_batches(dataset.epoch(8, epoch=1, seed=2))
    again = _all_batches(dataset.epoch(8, epoch=1, seed=2))
    other = _all_batches(dataset.epoch(8, epoch=2, seed=2))
    assert all((a["input_ids"] == b["input_ids"]).all() for a, b in zip(first, again))
    assert any(a["input_ids"].shape != b["input_ids"].shape or (a["input_ids"] != b["input_ids"]).any()
               for a, b in zip(first, other))
    full = _all_batches(dataset.train_stream(8, 3, seed=2))
    resumed = _all_batches(dataset.train_stream(8, 3, seed=2, start_epoch=1, skip_batches=2))
    assert len(full) == 15 and len(resumed) == 15 - 5 - 2
    for a, b in zip(full[7:], resumed):
        np.testing.assert_array_equal(a["input_ids"], b["input_ids"])


def test_question_answering_spans_decode_to_the_answers(xlmr_tokenizer):
    rows = readers.read(readers.resolve_path("assets:data/qa/validation.json"))
    for side in ("right", "left"):
        tokenizer = type(xlmr_tokenizer).from_pretrained(readers.resolve_path("assets:xlm_roberta"),
                                                         padding_side=side)
        dataset = data.TextDataset(data.QuestionAnsweringData(tokenizer, max_length=96), rows, pad_to_multiple_of=8)
        n = 0
        for batch in _all_batches(dataset.epoch(8, shuffle=False)):
            for ids, start, end in zip(batch["input_ids"], batch["start_positions"], batch["end_positions"]):
                answer = rows[n]["answers"][0]["text"]
                assert tokenizer.decode(ids[start:end + 1]).strip() == answer, (side, n)
                n += 1
        assert n == len(rows)


def test_token_classification_labels_first_subtoken(xlmr_tokenizer):
    rows = readers.read(readers.resolve_path("assets:data/ner/validation.conll"))
    names = data.label_names_from([{"t": t} for r in rows for t in r["tags"]], "t")
    dataset = data.TextDataset(data.TokenClassificationData(xlmr_tokenizer, names, max_length=64), rows)
    batch = next(iter(dataset.epoch(8, shuffle=False)))
    for i in range(8):
        labels = batch["labels"][i].numpy()
        valid = labels[labels != data.IGNORE_INDEX]
        assert [names[t] for t in valid] == rows[i]["tags"]
        assert labels[0] == data.IGNORE_INDEX  # <s>


def test_masked_lm_masking(xlmr_tokenizer):
    rows = readers.read(readers.resolve_path("assets:data/mlm/train.txt"))[:200]
    dataset = data.TextDataset(data.MaskedLMData(xlmr_tokenizer, max_length=64), rows)
    batches = _all_batches(dataset.epoch(50, seed=3))
    again = _all_batches(dataset.epoch(50, seed=3))
    labelled = sum(int((b["labels"] != -100).sum()) for b in batches)
    real = sum(int(b["attention_mask"].sum()) - 2 * len(b["attention_mask"]) for b in batches)
    assert 0.10 < labelled / real < 0.20
    special = set(xlmr_tokenizer.all_special_ids)
    for b, c in zip(batches, again):
        np.testing.assert_array_equal(b["input_ids"], c["input_ids"])
        positions = b["labels"] != -100
        assert not set(b["labels"][positions].tolist()) & special
        assert (b["input_ids"][positions] == xlmr_tokenizer.mask_token_id).mean() > 0.6


def test_multiple_choice_inputs(xlmr_tokenizer):
    rows = readers.read(readers.resolve_path("assets:data/multiple_choice/validation.jsonl"))
    dataset = data.TextDataset(data.MultipleChoiceData(xlmr_tokenizer, max_length=64), rows, pad_to_multiple_of=8)
    batch = next(iter(dataset.epoch(4, shuffle=False)))
    assert batch["input_ids"].shape[:2] == (4, 4) and batch["input_ids"].shape[2] % 8 == 0
    assert batch["labels"].numpy().tolist() == [r["label"] for r in rows[:4]]


# ---------------------------------------------------------------------------------------------------------------
# Images


def test_image_classification_pipeline():
    rows = readers.read(readers.resolve_path("assets:data/shapes/validation"))
    settings = data.image_settings(overrides={"image_size": 32})
    dataset = data.ImageDataset(rows, settings, "label", list(synthetic_data.SHAPES))
    batches = _all_batches(dataset.epoch(8, shuffle=False))
    assert len(batches) == dataset.steps(8) == 3
    pixels = batches[0]["pixel_values"]
    assert pixels.shape == (8, 3, 32, 32) and pixels.dtype == np.float32
    assert pixels.min() >= -1.0 and pixels.max() <= 1.0
    assert [synthetic_data.SHAPES[i] for b in batches for i in b["labels"]] == [r["label"] for r in rows]
    raw = tf.io.decode_png(tf.io.read_file(rows[0]["image"])).numpy().astype(np.float32)
    np.testing.assert_allclose(pixels[0], ((raw / 255.0 - 0.5) / 0.5).transpose(2, 0, 1), atol=1e-5)
    last = data.ImageDataset(rows, data.image_settings(overrides={"image_size": 16, "channels_first": False}),
                             "label", list(synthetic_data.SHAPES))
    assert next(iter(last.epoch(4, shuffle=False)))["pixel_values"].shape == (4, 16, 16, 3)


def test_segmentation_pipeline_masks_and_flips():
    rows = readers.read(readers.resolve_path("assets:data/shapes_segmentation/validation"))
    settings = data.image_settings(overrides={"image_size": 32})
    dataset = data.ImageDataset(rows, settings, "mask")
    plain = _all_batches(dataset.epoch(12, shuffle=False))[0]
    assert plain["pixel_values"].shape == (12, 3, 32, 32) and plain["labels"].shape == (12, 32, 32)
    assert set(np.unique(plain["labels"])) <= {0, 1, 2, 3} and len(np.unique(plain["labels"])) == 4
    mask = tf.io.decode_png(tf.io.read_file(rows[0]["mask"]))[:, :, 0].numpy()
    np.testing.assert_array_equal(plain["labels"][0], mask)
    flipped = _all_batches(dataset.epoch(12, epoch=0, seed=0, shuffle=False, augment=True))[0]
    for i in range(12):
        same = (flipped["labels"][i] == plain["labels"][i]).all()
        mirrored = (flipped["labels"][i] == plain["labels"][i][:, ::-1]).all()
        assert same or mirrored
        if not same:
            np.testing.assert_allclose(flipped["pixel_values"][i], plain["pixel_values"][i][:, :, ::-1])
    reduced = data.ImageDataset(rows, data.image_settings(overrides={"image_size": 32, "reduce_labels": True}),
                                "mask")
    labels = next(iter(reduced.epoch(12, shuffle=False)))["labels"].numpy()
    np.testing.assert_array_equal(labels, np.where(plain["labels"] == 0, 255, plain["labels"] - 1))


def test_image_processor_settings_are_read_from_the_processor():
    class Processor:
        size = {"height": 48, "width": 48}
        image_mean = [0.485, 0.456, 0.406]
        image_std = [0.229, 0.224, 0.225]
        do_reduce_labels = True

    settings = data.image_settings(Processor(), {"image_std": [1.0, 1.0, 1.0]})
    assert settings["image_size"] == [48, 48] and settings["image_mean"] == Processor.image_mean
    assert settings["image_std"] == [1.0, 1.0, 1.0] and settings["reduce_labels"] is True


def test_encoded_image_signature_preprocesses_like_the_pipeline(tmp_path):
    """The job exporter (exporting.export_job_model: the core exporter with data.PipelineImageProcessor) on a tiny
    BEiT: serving_image(encoded bytes) == serving_default(pixels from the training pipeline), for channels-first
    and channels-last settings; the processor called on decoded images gives the pipeline's pixels too."""
    from tfmodels import BeitConfig, BeitForImageClassification
    from tfmodels.training import exporting

    rows = readers.read(readers.resolve_path("assets:data/shapes/validation"))[::4][:4]
    encoded = tf.stack([tf.io.read_file(r["image"]) for r in rows])
    model = BeitForImageClassification(BeitConfig(image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1,
                                                  num_attention_heads=2, intermediate_size=20, num_labels=3))
    model.build_model()
    jobs, expectations = [], []
    for channels_first in (True, False):
        settings = data.image_settings(overrides={"image_size": 16, "channels_first": channels_first,
                                                  "image_mean": [0.4, 0.5, 0.6]})
        path = str(tmp_path / f"export_{channels_first}" / "1")
        signatures = exporting.export_job_model(model, path, "image-classification", get_family("beit"),
                                                list(synthetic_data.SHAPES), image_settings=settings)
        assert signatures == ["serving_default", "serving_image"]
        assert exporting.read_metadata(path)["image_settings"]["channels_first"] is channels_first
        pixels = next(iter(data.ImageDataset(rows, settings, "label", list(synthetic_data.SHAPES))
                           .epoch(4, shuffle=False)))["pixel_values"]
        processor = data.PipelineImageProcessor(settings)
        decoded = [tf.io.decode_png(e, channels=3).numpy() for e in encoded.numpy()]
        np.testing.assert_array_equal(processor(decoded, return_tensors="np")["pixel_values"], pixels.numpy())
        # serving_default takes NCHW pixel_values (the model's serving spec) whatever the pipeline's layout
        nchw = pixels if channels_first else tf.transpose(pixels, [0, 3, 1, 2])
        jobs.append({"path": path, "warmup": True, "requests": [("serving_image", {"image_bytes": encoded.numpy()}),
                                                                ("serving_default", {"pixel_values": nchw.numpy()})]})
        expectations.append(model(pixels)["logits"].numpy())
    # served as TF Serving serves them: the C++ SavedModel loader, through the C API harness
    for result, expected in zip(harness.serve_ok(jobs), expectations):
        served, default = result["outputs"]
        np.testing.assert_allclose(served["logits"], default["logits"], atol=1e-5)
        np.testing.assert_allclose(default["logits"], expected, atol=1e-5)
        assert [w["signature"] for w in result["warmup"]] == ["serving_default", "serving_image"]
