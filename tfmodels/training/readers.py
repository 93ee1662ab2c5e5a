"""Readers: files -> lists of Python dict rows. One reader per format; `read(path, format=None)` picks by
extension. Paths may start with `assets:` (the bundled data in tfmodels/assets).

- JSONL (`.jsonl`): one JSON object per line.
- JSON (`.json`): a list of objects, or a SQuAD-style dict (`{"data": [{"paragraphs": [{"context", "qas"}]}]}`)
  which becomes one row per question: {"id", "question", "context", "answers": [{"text", "answer_start"}]}.
- CSV / TSV (`.csv`, `.tsv`): a header line names the columns.
- CoNLL (`.conll`, `.bio`, `.iob`): `word ... tag` per line, blank lines between sentences (`-DOCSTART-` lines
  are skipped) -> {"words": [...], "tags": [...]}.
- Plain text (`.txt`): one example per non-empty line -> {"text"}.
- TFRecord (`.tfrecord`, `.tfrec`): tf.train.Example records -> one row per record (bytes features become
  str, int64 / float lists become lists, or scalars when they hold one value). `write_tfrecord` writes rows.
- Image folders (a directory `root/<class>/*.png|jpg|...`) -> {"image": path, "label": class}.
- Image + mask folders (a directory with `images/` and `masks/`, files paired by stem) -> {"image", "mask"}.
"""
import csv
import json
import os

from tfmodels.registry import ASSETS_DIR

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
FORMATS = ("jsonl", "json", "squad", "csv", "tsv", "conll", "text", "tfrecord", "image_folder", "image_mask_folder")


def resolve_path(path, base=None):
    """`assets:relative` -> the bundled asset; a relative path is taken from the current directory, else from
    `base` (the recipe's folder) or the repository root."""
    if path is None:
        return None
    if path.startswith("assets:"):
        return os.path.join(ASSETS_DIR, path[len("assets:"):])
    if os.path.isabs(path) or os.path.exists(path):
        return path
    for root in (base, os.path.dirname(os.path.dirname(ASSETS_DIR)) if base is None else None):
        if root and os.path.exists(os.path.join(root, path)):
            return os.path.join(root, path)
    return path


def detect_format(path):
    if os.path.isdir(path):
        if os.path.isdir(os.path.join(path, "images")) and os.path.isdir(os.path.join(path, "masks")):
            return "image_mask_folder"
        return "image_folder"
    lower = path.lower()
    for ext, fmt in ((".jsonl", "jsonl"), (".json", "json"), (".csv", "csv"), (".tsv", "tsv"), (".conll", "conll"),
                     (".bio", "conll"), (".iob", "conll"), (".txt", "text"), (".tfrecord", "tfrecord"),
                     (".tfrec", "tfrecord")):
        if lower.endswith(ext):
            return fmt
    raise ValueError(f"cannot tell the format of {path!r} from its name; set data.format to one of {FORMATS}")


def read(path, format=None, **options):
    """Rows of the file (or folder) at `path`."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"data file {path!r} not found")
    format = format or detect_format(path)
    readers = {"jsonl": read_jsonl, "json": read_json, "squad": read_squad, "csv": read_csv,
               "tsv": lambda p, **o: read_csv(p, delimiter="\t", **o), "conll": read_conll, "text": read_text,
               "tfrecord": read_tfrecord, "image_folder": read_image_folder,
               "image_mask_folder": read_image_mask_folder}
    if format not in readers:
        raise ValueError(f"unknown data format {format!r}; formats: {', '.join(FORMATS)}")
    rows = readers[format](path, **options)
    if not rows:
        raise ValueError(f"{path} holds no examples")
    return rows


def read_jsonl(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{number}: not JSON ({e})") from None
    return rows


def read_json(path):
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if isinstance(data, dict) and "data" in data:
        return squad_rows(data)
    if isinstance(data, list):
        return data
    raise ValueError(f"{path}: expected a list of examples or a SQuAD-style dict with 'data'")


def read_squad(path):
    with open(path, encoding="utf-8") as f:
        return squad_rows(json.load(f))


def squad_rows(data):
    rows = []
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                rows.append({"id": qa.get("id", str(len(rows))), "question": qa["question"],
                             "context": paragraph["context"], "answers": qa.get("answers", [])})
    return rows


def read_csv(path, delimiter=","):
    with open(path, encoding="utf-8", newline="") as f:
        return [dict(row) for row in csv.DictReader(f, delimiter=delimiter)]


def read_conll(path, word_column=0, tag_column=-1):
    rows, words, tags = [], [], []
    with open(path, encoding="utf-8") as f:
        for line in list(f) + [""]:
            parts = line.split()
            if not parts or parts[0] == "-DOCSTART-":
                if words:
                    rows.append({"words": words, "tags": tags})
                words, tags = [], []
                continue
            if len(parts) < 2:
                raise ValueError(f"{path}: CoNLL line without a tag: {line!r}")
            words.append(parts[word_column])
            tags.append(parts[tag_column])
    return rows


def read_text(path):
    with open(path, encoding="utf-8") as f:
        return [{"text": line.rstrip("\n")} for line in f if line.strip()]


def read_tfrecord(path):
    import tensorflow as tf
    rows = []
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        example = tf.train.Example.FromString(record)
        row = {}
        for key, feature in example.features.feature.items():
            kind = feature.WhichOneof("kind")
            values = list(getattr(feature, kind).value)
            if kind == "bytes_list":
                values = [v.decode("utf-8") for v in values]
            row[key] = values[0] if len(values) == 1 and not key.endswith(("_ids", "_mask", "tags", "words")) \
                else values
        rows.append(row)
    return rows


def write_tfrecord(path, rows):
    """Write rows (str, int, float, or lists of them) as tf.train.Example records."""
    import tensorflow as tf

    def feature(value):
        values = value if isinstance(value, (list, tuple)) else [value]
        if all(isinstance(v, str) for v in values):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode("utf-8") for v in values]))
        if all(isinstance(v, (int, bool)) for v in values):
            return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))
        return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for row in rows:
            example = tf.train.Example(features=tf.train.Features(feature={k: feature(v) for k, v in row.items()}))
            writer.write(example.SerializeToString())
    return path


def _image_files(folder):
    return sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))


def read_image_folder(path):
    classes = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
    if not classes:
        raise ValueError(f"{path}: an image folder needs one sub-folder per class")
    rows = []
    for label in classes:
        for file_name in _image_files(os.path.join(path, label)):
            rows.append({"image": os.path.join(path, label, file_name), "label": label})
    return rows


def read_image_mask_folder(path):
    images, masks = os.path.join(path, "images"), os.path.join(path, "masks")
    by_stem = {os.path.splitext(f)[0]: f for f in _image_files(masks)}
    rows = []
    for file_name in _image_files(images):
        stem = os.path.splitext(file_name)[0]
        if stem not in by_stem:
            raise ValueError(f"{path}: image {file_name} has no mask in masks/")
        rows.append({"image": os.path.join(images, file_name), "mask": os.path.join(masks, by_stem[stem])})
    return rows
