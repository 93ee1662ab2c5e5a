"""Task data: rows (from tfmodels.training.readers) -> model features -> tf.data pipelines.

Text tasks tokenise in Python with the family tokenizer (so that word and answer alignments are exact), keep the
features as ragged tensors, and batch them through tf.data:

- training: a deterministic shuffle per epoch (seed + epoch), length bucketing (pools of `bucket_pool` batches
  are sorted by length, cut into batches, and the batches shuffled: little padding, and the number of batches
  per epoch is exactly ceil(examples / batch_size)), padding to the longest sequence of the batch rounded up to
  `pad_to_multiple_of` (the efficient-attention families need window / block multiples);
- evaluation: the file order, padded per batch the same way.

Image tasks decode and preprocess inside tf.data (resize, rescale, normalise, optional flips), with pixel
values channels-first by default as the reference's `pixel_values` ([batch, 3, height, width]).

The training stream for `fit` is every remaining epoch concatenated (`train_stream`), so that a run resumed
from a checkpoint in the middle of an epoch continues with exactly the batches the interrupted run had left.
"""
import math

import numpy as np
import tensorflow as tf

IGNORE_INDEX = -100


# ---------------------------------------------------------------------------------------------------------------
# Labels


def label_names_from(rows, column, given=None):
    """Class names: the recipe's list, else the sorted distinct values found in the training rows."""
    if given:
        return [str(x) for x in given]
    values = {row[column] for row in rows}
    if all(isinstance(v, (int, np.integer)) or (isinstance(v, str) and v.lstrip("-").isdigit()) for v in values):
        return [str(v) for v in sorted(int(v) for v in values)]
    return sorted(str(v) for v in values)


def label_index(value, names):
    key = str(value)
    if key in names:
        return names.index(key)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= value < len(names):
        return int(value)  # an index into the given label names
    raise ValueError(f"label {value!r} is not one of the labels {names}")


def _row_label(number, row, names):
    try:
        return label_index(row["label"], names)
    except ValueError as error:
        raise ValueError(f"example {number} ({row.get('image', '')}): {error}") from None


# ---------------------------------------------------------------------------------------------------------------
# Tokenisation helpers


def token_ids(tokenizer, text):
    return tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text)) if text else []


def _num_special(tokenizer, pair):
    return tokenizer.num_special_tokens_to_add(pair=pair)


def segment_offset(tokenizer, part, len_a, len_b):
    """Position where part "A" or "B" starts in the template output."""
    position = 0
    for item in (tokenizer.template.pair if len_b is not None else tokenizer.template.single):
        if item == part:
            return position
        position += len_a if item == "A" else (len_b if item == "B" else 1)
    raise ValueError(f"template has no {part}")


def _encode_pair(tokenizer, ids_a, ids_b=None):
    encoded = {"input_ids": tokenizer.build_inputs_with_special_tokens(ids_a, ids_b)}
    encoded["attention_mask"] = [1] * len(encoded["input_ids"])
    if "token_type_ids" in tokenizer.model_input_names:
        encoded["token_type_ids"] = tokenizer.create_token_type_ids_from_sequences(ids_a, ids_b)
    return encoded


def _truncate(ids, keep):
    return ids[:max(keep, 0)]


# ---------------------------------------------------------------------------------------------------------------
# Task processors: rows -> feature lists


class TextTask:
    """Base of the text processors. `encode(rows)` -> {feature: list per example}; `padding` gives each
    feature's pad value; `examples` keeps what evaluation needs to map predictions back (words, contexts)."""

    label_features = ("labels",)

    def __init__(self, tokenizer, max_length=512, **columns):
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.columns = columns

    def column(self, name, default):
        return self.columns.get(name) or default

    @property
    def padding(self):
        pad = {"input_ids": self.tokenizer.pad_token_id, "attention_mask": 0,
               "token_type_ids": getattr(self.tokenizer, "pad_token_type_id", 0), "labels": IGNORE_INDEX}
        return pad

    def encode(self, rows):
        features = {}
        for number, row in enumerate(rows, 1):
            try:
                encoded = self.encode_row(row)
            except KeyError as error:
                raise ValueError(f"example {number}: no column {error.args[0]!r} (set data.columns); it has "
                                 f"{sorted(row) if isinstance(row, dict) else row!r}") from None
            except ValueError as error:
                raise ValueError(f"example {number}: {error}") from None
            for key, value in encoded.items():
                features.setdefault(key, []).append(value)
        return features


class SequenceClassificationData(TextTask):

    def __init__(self, tokenizer, label_names, max_length=512, **columns):
        super().__init__(tokenizer, max_length, **columns)
        self.label_names = label_names

    def encode_row(self, row):
        text = row[self.column("text_column", "text")]
        pair_column = self.column("text_pair_column", None)
        ids_a = token_ids(self.tokenizer, text)
        ids_b = token_ids(self.tokenizer, row[pair_column]) if pair_column else None
        budget = self.max_length - _num_special(self.tokenizer, ids_b is not None)
        if ids_b is None:
            ids_a = _truncate(ids_a, budget)
        else:
            while len(ids_a) + len(ids_b) > budget:  # longest_first
                if len(ids_a) >= len(ids_b):
                    ids_a = ids_a[:-1]
                else:
                    ids_b = ids_b[:-1]
        encoded = _encode_pair(self.tokenizer, ids_a, ids_b)
        label_column = self.column("label_column", "label")
        if label_column in row:
            encoded["labels"] = label_index(row[label_column], self.label_names)
        return encoded


class TokenClassificationData(TextTask):
    """Words + tags (CoNLL rows, or JSONL with `words`/`tokens` and `tags`/`ner_tags`): each word is tokenised
    on its own; its first sub-token carries the tag, the others and the special tokens -100."""


    def __init__(self, tokenizer, label_names, max_length=512, **columns):
        super().__init__(tokenizer, max_length, **columns)
        self.label_names = label_names

    def words_and_tags(self, row):
        words = row.get(self.column("words_column", "words"), row.get("tokens"))
        tags = row.get(self.column("tags_column", "tags"), row.get("ner_tags"))
        if isinstance(words, str):
            words = words.split()
        return words, tags

    def encode_row(self, row):
        words, tags = self.words_and_tags(row)
        budget = self.max_length - _num_special(self.tokenizer, False)
        ids, labels, word_index = [], [], []
        for i, word in enumerate(words):
            pieces = token_ids(self.tokenizer, word) or [self.tokenizer.unk_token_id]
            if len(ids) + len(pieces) > budget:
                break
            ids.extend(pieces)
            word_index.extend([i] + [-1] * (len(pieces) - 1))
            if tags is not None:
                tag = label_index(tags[i], self.label_names) if not isinstance(tags[i], (int, np.integer)) \
                    else int(tags[i])
                labels.extend([tag] + [IGNORE_INDEX] * (len(pieces) - 1))
        encoded = _encode_pair(self.tokenizer, ids)
        offset = segment_offset(self.tokenizer, "A", len(ids), None)
        total = len(encoded["input_ids"])
        if tags is not None:
            encoded["labels"] = [IGNORE_INDEX] * offset + labels + [IGNORE_INDEX] * (total - offset - len(ids))
        encoded["word_ids"] = [-1] * offset + word_index + [-1] * (total - offset - len(ids))
        return encoded

    @property
    def padding(self):
        return {**super().padding, "word_ids": -1}


class QuestionAnsweringData(TextTask):
    """SQuAD rows: (question, context) pairs; the answer's token span is found exactly by tokenising the
    context in three pieces (before, answer, after). Answers cut off by truncation point at the CLS token."""

    label_features = ("start_positions", "end_positions")

    def encode_row(self, row):
        question = row[self.column("question_column", "question")]
        context = row[self.column("context_column", "context")]
        answers = row.get(self.column("answers_column", "answers")) or []
        q_ids = token_ids(self.tokenizer, question)
        if answers:
            answer = answers[0]
            start_char = int(answer["answer_start"])
            end_char = start_char + len(answer["text"])
            before = token_ids(self.tokenizer, context[:start_char])
            inside = token_ids(self.tokenizer, context[start_char:end_char])
            after = token_ids(self.tokenizer, context[end_char:])
            c_ids = before + inside + after
            span = (len(before), len(before) + len(inside) - 1)
        else:
            c_ids, span = token_ids(self.tokenizer, context), None
        budget = self.max_length - _num_special(self.tokenizer, True) - len(q_ids)
        if budget <= 0:
            raise ValueError(f"question longer than max_length={self.max_length}: {question!r}")
        c_ids = _truncate(c_ids, budget)
        encoded = _encode_pair(self.tokenizer, q_ids, c_ids)
        offset = segment_offset(self.tokenizer, "B", len(q_ids), len(c_ids))
        encoded["context_start"] = offset
        encoded["context_length"] = len(c_ids)
        if span is not None:
            if span[1] < len(c_ids) and span[1] >= span[0]:
                start, end = span[0] + offset, span[1] + offset
            else:
                start = end = encoded["input_ids"].index(self.tokenizer.cls_token_id)
            encoded["start_positions"], encoded["end_positions"] = start, end
        return encoded


class MultipleChoiceData(TextTask):
    """{"context", "question", "choices": [...], "label"}: each choice is paired with context + question;
    inputs [choices, length]."""


    def encode_row(self, row):
        first = " ".join(str(row[c]) for c in (self.column("context_column", "context"),
                                               self.column("question_column", "question")) if row.get(c))
        choices = row[self.column("choices_column", "choices")]
        first_ids = token_ids(self.tokenizer, first)
        rows = []
        for choice in choices:
            choice_ids = token_ids(self.tokenizer, str(choice))
            budget = self.max_length - _num_special(self.tokenizer, True) - len(choice_ids)
            rows.append(_encode_pair(self.tokenizer, _truncate(first_ids, budget), choice_ids))
        length = max(len(r["input_ids"]) for r in rows)
        pad = self.padding
        encoded = {}
        for key in rows[0]:
            padded = []
            for r in rows:
                value = r[key] + [pad[key]] * (length - len(r[key]))
                padded.append(value if self.tokenizer.padding_side == "right" else
                              [pad[key]] * (length - len(r[key])) + r[key])
            encoded[key] = padded
        label_column = self.column("label_column", "label")
        if label_column in row:
            encoded["labels"] = int(row[label_column])
        return encoded


class MaskedLMData(TextTask):
    """Text rows for masked-LM pretraining; masking happens in tf.data (see `mask_tokens`), anew every epoch."""


    def __init__(self, tokenizer, max_length=512, mlm_probability=0.15, **columns):
        super().__init__(tokenizer, max_length, **columns)
        self.mlm_probability = float(mlm_probability)

    def encode_row(self, row):
        ids = _truncate(token_ids(self.tokenizer, row[self.column("text_column", "text")]),
                        self.max_length - _num_special(self.tokenizer, False))
        encoded = _encode_pair(self.tokenizer, ids)
        encoded["special_tokens_mask"] = self.tokenizer.get_special_tokens_mask(ids)
        return encoded

    @property
    def padding(self):
        return {**super().padding, "special_tokens_mask": 1}

    def mask_tokens(self, batch, seed):
        """BERT masking: `mlm_probability` of the real tokens become labels; of those 80% <mask>, 10% a random
        token, 10% unchanged. Stateless randomness from `seed` ([2] int) so a resumed run masks the same way."""
        ids = batch["input_ids"]
        special = tf.cast(batch.pop("special_tokens_mask"), tf.bool) | tf.equal(batch["attention_mask"], 0)
        seeds = tf.random.experimental.stateless_split(seed, 3)
        chosen = (tf.random.stateless_uniform(tf.shape(ids), seeds[0]) < self.mlm_probability) & ~special
        batch["labels"] = tf.where(chosen, ids, IGNORE_INDEX)
        roll = tf.random.stateless_uniform(tf.shape(ids), seeds[1])
        random_ids = tf.random.stateless_uniform(tf.shape(ids), seeds[2], minval=0,
                                                 maxval=self.tokenizer.vocab_size, dtype=tf.int32)
        masked = tf.where(chosen & (roll < 0.8), self.tokenizer.mask_token_id, ids)
        batch["input_ids"] = tf.where(chosen & (roll >= 0.8) & (roll < 0.9), random_ids, masked)
        return batch


# Features that evaluation needs but the model does not take.
AUXILIARY_FEATURES = ("word_ids", "context_start", "context_length")


# ---------------------------------------------------------------------------------------------------------------
# Ragged features -> tf.data


def to_ragged(features):
    """{name: list of ints | lists | lists of lists} -> {name: tensor or RaggedTensor} of the same length."""
    tensors = {}
    for name, values in features.items():
        first = values[0]
        if isinstance(first, (list, tuple)) and first and isinstance(first[0], (list, tuple)):
            inner_lengths = [len(row) for example in values for row in example]
            flat = np.asarray([x for example in values for row in example for x in row], np.int32)
            inner = tf.RaggedTensor.from_row_lengths(flat, np.asarray(inner_lengths, np.int64))
            tensors[name] = tf.RaggedTensor.from_row_lengths(inner, np.asarray([len(e) for e in values], np.int64))
        elif isinstance(first, (list, tuple)):
            flat = np.asarray([x for example in values for x in example], np.int32)
            tensors[name] = tf.RaggedTensor.from_row_lengths(flat, np.asarray([len(e) for e in values], np.int64))
        else:
            tensors[name] = tf.constant(np.asarray(values, np.int32))
    return tensors


def pad_batch(batch, padding, multiple=1, padding_side="right", position_features=("start_positions",
                                                                                   "end_positions")):
    """Ragged batch -> dense tensors padded to the longest sequence, rounded up to `multiple`. With left padding
    (XLNet) the answer positions move right by each row's padding."""
    dense, target, lengths = {}, None, None
    for value in batch.values():
        if isinstance(value, tf.RaggedTensor):
            length = tf.cast(value.bounding_shape()[-1], tf.int32)
            target = length if target is None else tf.maximum(target, length)
    if target is not None and multiple > 1:
        target = (target + multiple - 1) // multiple * multiple
    for name, value in batch.items():
        if not isinstance(value, tf.RaggedTensor):
            dense[name] = value
            continue
        fill = padding.get(name, 0)
        right = value.to_tensor(default_value=fill)
        extra = target - tf.shape(right)[-1]
        right = tf.pad(right, [[0, 0]] * (right.shape.rank - 1) + [[0, extra]], constant_values=fill)
        if padding_side == "left" and value.ragged_rank == 1:
            lengths = tf.cast(value.row_lengths(), tf.int32)
            shift = target - lengths
            index = tf.math.floormod(tf.range(target)[None, :] - shift[:, None], target)
            right = tf.gather(right, index, batch_dims=1)
        dense[name] = right
    if padding_side == "left" and lengths is not None:
        for name in position_features:
            if name in dense:
                dense[name] = dense[name] + (target - lengths)
    return dense


class TextDataset:
    """Encoded features of one split, and the tf.data pipelines over them."""

    def __init__(self, processor, rows, pad_to_multiple_of=1):
        self.processor = processor
        self.rows = rows
        self.features = processor.encode(rows)
        self.auxiliary = {k: self.features.pop(k) for k in AUXILIARY_FEATURES if k in self.features}
        self.tensors = to_ragged(self.features)
        self.num_examples = len(rows)
        self.pad_to_multiple_of = max(1, int(pad_to_multiple_of))

    def steps(self, batch_size):
        return math.ceil(self.num_examples / batch_size)

    def _finish(self, ds, batch_size, seed=None):
        tokenizer = self.processor.tokenizer
        padding = self.processor.padding
        multiple = self.pad_to_multiple_of
        ds = ds.ragged_batch(batch_size).map(
            lambda b: pad_batch(b, padding, multiple, tokenizer.padding_side), num_parallel_calls=tf.data.AUTOTUNE)
        if isinstance(self.processor, MaskedLMData):
            seed_ds = tf.data.Dataset.from_tensor_slices(
                tf.constant([[seed if seed is not None else 0, i] for i in range(self.steps(batch_size))], tf.int64))
            ds = tf.data.Dataset.zip((ds, seed_ds)).map(lambda b, s: self.processor.mask_tokens(b, s))
        return ds

    def epoch(self, batch_size, epoch=0, seed=0, shuffle=True, bucket_pool=16):
        """One epoch of batches. Training: shuffled with seed (seed, epoch), bucketed by length."""
        ds = tf.data.Dataset.from_tensor_slices(self.tensors)
        if not shuffle:
            return self._finish(ds, batch_size, seed=seed * 100003 + epoch).prefetch(tf.data.AUTOTUNE)
        epoch_seed = int(seed) * 100003 + int(epoch)
        ds = ds.shuffle(self.num_examples, seed=epoch_seed, reshuffle_each_iteration=False)
        if bucket_pool and bucket_pool > 1 and self.num_examples > batch_size:
            pool = batch_size * int(bucket_pool)
            ds = ds.ragged_batch(pool).map(_sort_by_length).unbatch()
            ds = self._finish(ds, batch_size, seed=epoch_seed)
            ds = ds.shuffle(int(bucket_pool), seed=epoch_seed + 1, reshuffle_each_iteration=False)
        else:
            ds = self._finish(ds, batch_size, seed=epoch_seed)
        return ds

    def train_stream(self, batch_size, epochs, seed=0, start_epoch=0, skip_batches=0, bucket_pool=16):
        """Epochs start_epoch .. epochs-1 concatenated, the first one without its first `skip_batches`."""
        stream = None
        for epoch in range(start_epoch, epochs):
            ds = self.epoch(batch_size, epoch, seed, shuffle=True, bucket_pool=bucket_pool)
            if epoch == start_epoch and skip_batches:
                ds = ds.skip(skip_batches)
            stream = ds if stream is None else stream.concatenate(ds)
        if stream is None:
            raise ValueError("no epochs left to train")
        return stream.prefetch(tf.data.AUTOTUNE)

    def model_inputs(self, batch_size):
        """Evaluation batches without labels (file order)."""
        labels = set(self.processor.label_features)
        return self.epoch(batch_size, shuffle=False).map(lambda b: {k: v for k, v in b.items() if k not in labels})


def _sort_by_length(batch):
    lengths = batch["input_ids"].row_lengths() if isinstance(batch["input_ids"], tf.RaggedTensor) else None
    if lengths is None:
        return batch
    order = tf.argsort(lengths)
    return {k: tf.gather(v, order) for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------------------------
# Images


IMAGE_DEFAULTS = {"image_size": 224, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
                  "rescale_factor": 1.0 / 255.0, "channels_first": True, "reduce_labels": False}


def image_settings(processor=None, overrides=None):
    """Preprocessing settings: defaults < the family's image processor attributes < the recipe's values."""
    settings = dict(IMAGE_DEFAULTS)
    if processor is not None:
        size = getattr(processor, "size", None)
        if isinstance(size, dict):
            size = size.get("height") or size.get("shortest_edge")
        for key, value in (("image_size", size), ("image_mean", getattr(processor, "image_mean", None)),
                           ("image_std", getattr(processor, "image_std", None)),
                           ("rescale_factor", getattr(processor, "rescale_factor", None)),
                           ("reduce_labels", getattr(processor, "do_reduce_labels", None))):
            if value is not None:
                settings[key] = value
    settings.update({k: v for k, v in (overrides or {}).items() if k in IMAGE_DEFAULTS and v is not None})
    size = settings["image_size"]
    settings["image_size"] = [int(size), int(size)] if isinstance(size, (int, float)) else [int(s) for s in size]
    return settings


def preprocess_image(image, settings):
    """A decoded image [height, width, 3] (values 0..255) -> float32 pixel values, as the model wants them:
    bilinear resize to image_size, rescale, normalise, channels-first unless settings say otherwise."""
    image = tf.convert_to_tensor(image)
    image.set_shape([None, None, 3])
    image = tf.image.resize(tf.cast(image, tf.float32), settings["image_size"], method="bilinear")
    image = image * settings["rescale_factor"]
    image = (image - tf.constant(settings["image_mean"], tf.float32)) / tf.constant(settings["image_std"], tf.float32)
    if settings["channels_first"]:
        image = tf.transpose(image, [2, 0, 1])
    return image


def decode_image_bytes(encoded):
    """Encoded image (PNG / JPEG / BMP / GIF bytes, scalar string) -> uint8 [height, width, 3]."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def preprocess_image_bytes(encoded, settings):
    """Encoded image bytes -> float32 pixel values. Used by the tf.data pipeline and, through
    PipelineImageProcessor.in_graph(), by the exported encoded-image signature alike."""
    return preprocess_image(decode_image_bytes(encoded), settings)


class PipelineImageProcessor:
    """The training pipeline's image preprocessing (`settings` from `image_settings`) in the shape of an image
    processor, so that the core exporter (`model.export(path, image_processor=...)`) builds the `serving_image`
    signature from exactly the code the model was trained with: `in_graph()` maps encoded images [batch] to
    {"pixel_values": ...}; calling it on decoded images (uint8 [H, W, 3] arrays) gives the same pixel values."""

    model_input_names = ["pixel_values"]
    file_name = "image_pipeline.json"

    def __init__(self, settings):
        self.settings = dict(settings)

    def save_pretrained(self, directory):
        """Written beside checkpoints (best/, final/), so that `predict` on a checkpoint preprocesses images as
        the training did."""
        import json
        import os
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, self.file_name), "w", encoding="utf-8") as f:
            json.dump(self.settings, f, indent=2)

    @classmethod
    def from_pretrained(cls, directory):
        import json
        import os
        with open(os.path.join(directory, cls.file_name), encoding="utf-8") as f:
            return cls(json.load(f))

    def __call__(self, images, return_tensors=None):
        pixels = tf.stack([preprocess_image(image, self.settings) for image in images])
        return {"pixel_values": pixels.numpy() if return_tensors == "np" else pixels}

    def in_graph(self):
        return _PipelineImagesInGraph(self.settings)


class _PipelineImagesInGraph:
    def __init__(self, settings):
        self.settings = settings

    def __call__(self, image_bytes):
        pixels = tf.map_fn(lambda data: preprocess_image_bytes(data, self.settings), image_bytes,
                           fn_output_signature=tf.float32)
        return {"pixel_values": pixels}


def preprocess_mask_bytes(encoded, settings):
    mask = tf.io.decode_image(encoded, channels=1, expand_animations=False)
    mask.set_shape([None, None, 1])
    mask = tf.image.resize(mask, settings["image_size"], method="nearest")[:, :, 0]
    mask = tf.cast(mask, tf.int32)
    if settings["reduce_labels"]:
        # As the reference's do_reduce_labels: background 0 -> 255 (ignored), every other label - 1.
        mask = tf.where(tf.equal(mask, 0), 255, mask - 1)
    return mask


class ImageDataset:
    """Image classification (targets "label": rows with a class label) or segmentation (targets "mask": rows
    with the path of a mask image) examples."""

    def __init__(self, rows, settings, targets, label_names=None):
        self.rows = rows
        self.settings = settings
        self.targets_kind = targets
        self.label_names = label_names
        self.num_examples = len(rows)
        self.paths = tf.constant([r["image"] for r in rows])
        if targets == "mask":
            self.targets = tf.constant([r["mask"] for r in rows])
        else:
            self.targets = tf.constant([_row_label(number, r, label_names) for number, r in enumerate(rows, 1)],
                                       tf.int32)

    def steps(self, batch_size):
        return math.ceil(self.num_examples / batch_size)

    def _load(self, path, target, flip=None):
        encoded = tf.io.read_file(path)
        # Training images must be RGB: a grayscale or RGBA file in the data is refused with its name, not
        # converted silently (the decoder below would expand or drop channels).
        channels = tf.shape(tf.io.decode_image(encoded, channels=0, expand_animations=False))[-1]
        check = tf.debugging.Assert(tf.equal(channels, 3), ["training image must have 3 channels (RGB):", path,
                                                            "has", channels])
        with tf.control_dependencies([check]):
            pixels = preprocess_image_bytes(encoded, self.settings)
        width_axis = 2 if self.settings["channels_first"] else 1
        if self.targets_kind == "mask":
            labels = preprocess_mask_bytes(tf.io.read_file(target), self.settings)
            if flip is not None:
                pixels = tf.cond(flip, lambda: tf.reverse(pixels, [width_axis]), lambda: pixels)
                labels = tf.cond(flip, lambda: tf.reverse(labels, [1]), lambda: labels)
        else:
            labels = target
            if flip is not None:
                pixels = tf.cond(flip, lambda: tf.reverse(pixels, [width_axis]), lambda: pixels)
        return {"pixel_values": pixels, "labels": labels}

    def epoch(self, batch_size, epoch=0, seed=0, shuffle=True, augment=False, **unused):
        ds = tf.data.Dataset.from_tensor_slices((self.paths, self.targets))
        epoch_seed = int(seed) * 100003 + int(epoch)
        if shuffle:
            ds = ds.shuffle(self.num_examples, seed=epoch_seed, reshuffle_each_iteration=False)
        if augment:
            flips = tf.random.stateless_uniform([self.num_examples], [epoch_seed, 7]) < 0.5
            ds = tf.data.Dataset.zip((ds, tf.data.Dataset.from_tensor_slices(flips)))
            ds = ds.map(lambda pt, f: self._load(pt[0], pt[1], f), num_parallel_calls=tf.data.AUTOTUNE)
        else:
            ds = ds.map(self._load, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.batch(batch_size)

    def train_stream(self, batch_size, epochs, seed=0, start_epoch=0, skip_batches=0, augment=False, **unused):
        stream = None
        for epoch in range(start_epoch, epochs):
            ds = self.epoch(batch_size, epoch, seed, shuffle=True, augment=augment)
            if epoch == start_epoch and skip_batches:
                ds = ds.skip(skip_batches)
            stream = ds if stream is None else stream.concatenate(ds)
        if stream is None:
            raise ValueError("no epochs left to train")
        return stream.prefetch(tf.data.AUTOTUNE)

    def model_inputs(self, batch_size):
        return self.epoch(batch_size, shuffle=False).map(lambda b: {"pixel_values": b["pixel_values"]})
