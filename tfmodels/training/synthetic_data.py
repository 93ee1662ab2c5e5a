"""Tiny generated data sets for every task type, so that recipes and end-to-end tests run offline:
extractive QA (SQuAD-style JSON), token labelling (CoNLL), multiple choice (JSONL), masked-LM text, and a tiny
image set (class folders; image + mask folders for segmentation). Deterministic for a seed; written into
tfmodels/assets/data/ by scripts/make_assets.py. Nothing is downloaded.
"""
import random

import numpy as np

FIRST_NAMES = "Anna Ben Clara David Emma Felix Greta Hugo Ines Jonas Karla Leo Mia Noah Olga Paul".split()
LAST_NAMES = "Schmidt Martin Rossi Garcia Novak Berg Dubois Silva Weber Costa".split()
CITIES = "Paris Berlin Rome Madrid Lisbon Vienna Prague Oslo Dublin Athens Warsaw Zurich".split()
ORGANISATIONS = [("Acme", "Corp"), ("Blue", "River", "Bank"), ("Nova", "Labs"), ("Sun", "Trading"),
                 ("Green", "Field", "Farms"), ("Delta", "Air")]
JOBS = "teacher doctor baker pilot farmer painter lawyer nurse writer chef".split()
COLORS = "red blue green yellow black white orange purple".split()
ANIMALS = "cat dog horse parrot rabbit goat".split()


# ---------------------------------------------------------------------------------------------------------------
# Question answering (SQuAD v1.1 layout)


def _facts(rng, people):
    facts = []
    for name in people:
        kind = rng.choice(["city", "job", "pet"])
        if kind == "city":
            answer = rng.choice(CITIES)
            facts.append((f"{name} lives in {answer}.", f"Where does {name} live?", answer))
        elif kind == "job":
            answer = rng.choice(JOBS)
            facts.append((f"{name} works as a {answer}.", f"What does {name} work as?", answer))
        else:
            color, animal = rng.choice(COLORS), rng.choice(ANIMALS)
            facts.append((f"{name} owns a {color} {animal}.", f"What color is the {animal} of {name}?", color))
    return facts


def squad(num_paragraphs, seed, title="tiny-qa"):
    """A SQuAD-style dict: paragraphs of 2-4 facts about people, one question per fact, answers with
    character offsets into the context."""
    rng = random.Random(seed)
    paragraphs = []
    for p in range(num_paragraphs):
        people = rng.sample(FIRST_NAMES, rng.randint(2, 4))
        facts = _facts(rng, people)
        context, qas = "", []
        for i, (sentence, question, answer) in enumerate(facts):
            start = len(context) + sentence.rindex(answer)
            context += sentence + " "
            qas.append({"id": f"{seed}-{p}-{i}", "question": question,
                        "answers": [{"text": answer, "answer_start": start}]})
        context = context.strip()
        for qa in qas:
            a = qa["answers"][0]
            assert context[a["answer_start"]:a["answer_start"] + len(a["text"])] == a["text"]
        paragraphs.append({"context": context, "qas": qas})
    return {"version": "1.1", "data": [{"title": title, "paragraphs": paragraphs}]}


# ---------------------------------------------------------------------------------------------------------------
# Token labelling (CoNLL-2003 style tags)


def ner_sentences(num, seed):
    """[(words, tags)] with persons, locations and organisations in a few sentence templates."""
    rng = random.Random(seed)

    def person():
        words = [rng.choice(FIRST_NAMES)] + ([rng.choice(LAST_NAMES)] if rng.random() < 0.6 else [])
        return words, ["B-PER"] + ["I-PER"] * (len(words) - 1)

    def location():
        return [rng.choice(CITIES)], ["B-LOC"]

    def organisation():
        words = list(rng.choice(ORGANISATIONS))
        return words, ["B-ORG"] + ["I-ORG"] * (len(words) - 1)

    templates = [
        [person, "visited", location, "with", organisation],
        [organisation, "opened", "an", "office", "in", location],
        [person, "works", "for", organisation, "in", location],
        ["Yesterday", person, "met", person, "in", location],
        [person, "left", organisation, "and", "moved", "to", location],
        ["The", "team", "from", location, "joined", organisation],
    ]
    sentences = []
    for _ in range(num):
        words, tags = [], []
        for part in rng.choice(templates):
            if callable(part):
                w, t = part()
            else:
                w, t = [part], ["O"]
            words.extend(w)
            tags.extend(t)
        words.append(".")
        tags.append("O")
        sentences.append((words, tags))
    return sentences


def conll_text(sentences):
    """CoNLL layout: one `word tag` per line, a blank line between sentences."""
    return "\n\n".join("\n".join(f"{w} {t}" for w, t in zip(words, tags)) for words, tags in sentences) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Multiple choice and masked-LM text


def multiple_choice(num, seed, num_choices=4):
    """{"context", "question", "choices", "label"}: which city / job / color the context states."""
    rng = random.Random(seed)
    rows = []
    for _ in range(num):
        people = rng.sample(FIRST_NAMES, rng.randint(1, 3))
        facts = _facts(rng, people)
        sentence, question, answer = rng.choice(facts)
        pool = CITIES if answer in CITIES else JOBS if answer in JOBS else COLORS
        choices = rng.sample([x for x in pool if x != answer], num_choices - 1)
        label = rng.randrange(num_choices)
        choices.insert(label, answer)
        rows.append({"context": " ".join(f[0] for f in facts), "question": question, "choices": choices,
                     "label": label})
    return rows


def mlm_lines(num, seed):
    from tfmodels.training import synthetic_text
    rng = random.Random(seed)
    return [synthetic_text.sentence(rng) for _ in range(num)]


# ---------------------------------------------------------------------------------------------------------------
# Images: coloured shapes on a noisy background

SHAPES = ["circle", "square", "triangle"]
SEGMENTATION_LABELS = ["background"] + SHAPES


def _shape_mask(kind, size, cx, cy, r):
    y, x = np.mgrid[0:size, 0:size]
    if kind == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= r ** 2
    if kind == "square":
        return (np.abs(x - cx) <= r * 0.85) & (np.abs(y - cy) <= r * 0.85)
    # triangle pointing up: apex (cx, cy - r), base at cy + r
    inside_y = (y >= cy - r) & (y <= cy + r)
    half_width = (y - (cy - r)) / 2.0
    return inside_y & (np.abs(x - cx) <= half_width)


def _background(rng, size):
    base = rng.randint(0, 90, size=3)
    noise = rng.randint(-20, 21, size=(size, size, 3))
    return np.clip(base[None, None, :] + noise, 0, 255)


def _colour(rng):
    return rng.randint(130, 256, size=3)


def shape_image(rng, kind, size=32):
    """(uint8 [size, size, 3] image, bool mask) with one shape of `kind`."""
    image = _background(rng, size)
    r = rng.randint(size // 5, size // 3 + 1)
    cx, cy = rng.randint(r, size - r), rng.randint(r, size - r)
    mask = _shape_mask(kind, size, cx, cy, r)
    image[mask] = _colour(rng)
    return image.astype(np.uint8), mask


def classification_images(per_class, seed, size=32):
    """{class name: [uint8 images]} for the shape classes."""
    rng = np.random.RandomState(seed)
    return {kind: [shape_image(rng, kind, size)[0] for _ in range(per_class)] for kind in SHAPES}


def segmentation_images(num, seed, size=32):
    """[(uint8 image, uint8 mask)]: one or two shapes; mask value = index in SEGMENTATION_LABELS."""
    rng = np.random.RandomState(seed)
    pairs = []
    for _ in range(num):
        image = _background(rng, size)
        mask = np.zeros((size, size), np.uint8)
        for _ in range(rng.randint(1, 3)):
            kind = SHAPES[rng.randint(len(SHAPES))]
            r = rng.randint(size // 6, size // 4 + 1)
            cx, cy = rng.randint(r, size - r), rng.randint(r, size - r)
            region = _shape_mask(kind, size, cx, cy, r)
            image[region] = _colour(rng)
            mask[region] = SEGMENTATION_LABELS.index(kind)
        pairs.append((image.astype(np.uint8), mask))
    return pairs


def encode_png(array):
    import tensorflow as tf
    array = np.asarray(array, np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return tf.io.encode_png(array).numpy()
