"""`pipeline(task, model=...)`: raw text or images in, Hugging Face's output structures out.

Tasks and what one input gives (as transformers 4.57.6's pipelines; a list of inputs gives a list of these):
- "fill-mask": per mask token, the `top_k` (5) candidates `{"score", "token", "token_str", "sequence"}`, best
  first; with one mask the list of candidates, with several a list per mask.
- "text-classification" ("sentiment-analysis"): `[{"label", "score"}]` with the best label (a one-item list for
  a single string, as HF's legacy default); `top_k=n` gives the n best, `top_k=None` every label. Scores are a
  softmax, or a sigmoid for one label or `problem_type="multi_label_classification"`.
- "token-classification" ("ner"): aggregation "none": `{"entity", "score", "index", "word", "start", "end"}`
  for every token that is not special and not labelled "O": `word` is the token, `start` / `end` its
  character offsets in the text (the tokenizer's offset mapping, as HF's fast tokenizers compute it).
- "question-answering": `{"score", "start", "end", "answer"}` (a list for `top_k` > 1): the span of at most
  `max_answer_len` (15) context tokens with the highest start x end probability (HF's scores: a softmax over
  the context and CLS tokens, the first position zeroed), grown to whole words, equal answers' scores added
  (HF's align_to_words). `answer` is the decoded span; `start` / `end` are its character offsets in the
  context (located by search), or None where the decoded text is not found verbatim.
- "image-classification": the `top_k` (5) `{"label", "score"}` (softmax, or sigmoid for multi-label).
- "image-segmentation": semantic segmentation: `{"score": None, "label", "mask"}` per class present in the
  argmax map of the logits resized (bilinearly) to the input image's size; `mask` is a PIL "L" image (0 or
  255), as HF's; `mask_format="numpy"` gives a uint8 array instead.

Text models are given the tokenizer of their repo or directory (AutoTokenizer), image models the image
processor (AutoImageProcessor); models, tokenizers and processors may also be passed as objects. Images may be
PIL images, file paths or [H, W, C] uint8 arrays.
"""
import numpy as np

from tfmodels import auto, registry

TASKS = {
    "fill-mask": auto.AutoModelForMaskedLM,
    "text-classification": auto.AutoModelForSequenceClassification,
    "token-classification": auto.AutoModelForTokenClassification,
    "question-answering": auto.AutoModelForQuestionAnswering,
    "image-classification": auto.AutoModelForImageClassification,
    "image-segmentation": auto.AutoModelForSemanticSegmentation,
}
ALIASES = {"sentiment-analysis": "text-classification", "ner": "token-classification"}


def _softmax(x, axis=-1):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def pipeline(task, model, tokenizer=None, image_processor=None, **kwargs):
    """A callable for `task` (see the module doc) around `model`: a directory, a Hub id or a model object.
    `kwargs` (revision, cache_dir, local_files_only, token, dtype, weights_format, ...) go to from_pretrained."""
    task = ALIASES.get(task, task)
    if task not in TASKS:
        raise ValueError(f"unknown pipeline task {task!r}; tasks: {', '.join(list(TASKS) + list(ALIASES))}")
    hub_kwargs = {k: kwargs[k] for k in ("revision", "cache_dir", "local_files_only", "token") if k in kwargs}
    if isinstance(model, str):
        if task.startswith("image"):
            image_processor = image_processor or auto.AutoImageProcessor.from_pretrained(model, **hub_kwargs)
        else:
            tokenizer = tokenizer or auto.AutoTokenizer.from_pretrained(model, **hub_kwargs)
        model = TASKS[task].from_pretrained(model, **kwargs)
    elif isinstance(tokenizer, str):
        tokenizer = auto.AutoTokenizer.from_pretrained(tokenizer, **hub_kwargs)
    elif isinstance(image_processor, str):
        image_processor = auto.AutoImageProcessor.from_pretrained(image_processor, **hub_kwargs)
    pipeline_class = {"fill-mask": FillMaskPipeline, "text-classification": TextClassificationPipeline,
                      "token-classification": TokenClassificationPipeline,
                      "question-answering": QuestionAnsweringPipeline,
                      "image-classification": ImageClassificationPipeline,
                      "image-segmentation": ImageSegmentationPipeline}[task]
    return pipeline_class(model, tokenizer=tokenizer, image_processor=image_processor)


class Pipeline:
    def __init__(self, model, tokenizer=None, image_processor=None):
        self.model, self.tokenizer, self.image_processor = model, tokenizer, image_processor
        self.config = model.config
        self.family = registry.get_family(model.config.model_type)
        if self.family.modality == "text" and tokenizer is None:
            raise ValueError(f"{type(self).__name__} needs a tokenizer for {type(model).__name__}")
        if self.family.modality == "image" and image_processor is None:
            raise ValueError(f"{type(self).__name__} needs an image processor for {type(model).__name__}")

    def __call__(self, inputs, **options):
        if isinstance(inputs, (list, tuple)):
            return [self.run_one(item, **options) for item in inputs]
        return self.run_one(inputs, **options)

    def encode(self, text, text_pair=None, offsets=False):
        encoded = self.tokenizer(text, text_pair, padding=True, return_tensors="np",
                                 pad_to_multiple_of=self.family.pad_multiple(self.config),
                                 return_offsets_mapping=offsets)
        return {k: np.asarray(v) for k, v in encoded.items()}

    def forward(self, encoded):
        inputs = {k: v for k, v in encoded.items() if k in self.model.all_input_names}
        return self.model(inputs, training=False)

    def label(self, index):
        return self.config.id2label[int(index)]


class FillMaskPipeline(Pipeline):
    def run_one(self, text, top_k=5):
        encoded = self.encode(text)
        ids = encoded["input_ids"][0]
        positions = np.flatnonzero(ids == self.tokenizer.mask_token_id)
        if positions.size == 0:
            raise ValueError(f"no mask token ({self.tokenizer.mask_token}) in {text!r}")
        logits = np.asarray(self.forward(encoded).logits)[0]
        keep = ids != self.tokenizer.pad_token_id
        results = []
        for position in positions:
            probs = _softmax(logits[position])
            candidates = []
            for token in np.argsort(-probs, kind="stable")[:top_k]:
                filled = ids.copy()
                filled[position] = token
                candidates.append({
                    "score": float(probs[token]), "token": int(token),
                    "token_str": self.tokenizer.decode([int(token)]),
                    "sequence": self.tokenizer.decode(filled[keep], skip_special_tokens=positions.size == 1)})
            results.append(candidates)
        return results[0] if positions.size == 1 else results


class TextClassificationPipeline(Pipeline):
    def __call__(self, inputs, top_k=1):
        if isinstance(inputs, str):
            result = self.run_one(inputs, top_k)
            return [result] if top_k == 1 else result
        return [self.run_one(item, top_k) for item in inputs]

    def run_one(self, text, top_k=1):
        pair = None
        if isinstance(text, dict):
            text, pair = text["text"], text.get("text_pair")
        logits = np.asarray(self.forward(self.encode(text, pair)).logits)[0]
        multi_label = self.config.problem_type == "multi_label_classification" or self.config.num_labels == 1
        scores = _sigmoid(logits) if multi_label else _softmax(logits)
        ranked = [{"label": self.label(i), "score": float(scores[i])} for i in np.argsort(-scores, kind="stable")]
        if top_k == 1:
            return ranked[0]
        return ranked if top_k is None else ranked[:top_k]


class TokenClassificationPipeline(Pipeline):
    def run_one(self, text, ignore_labels=("O",)):
        encoded = self.encode(text, offsets=True)
        offsets = encoded.pop("offset_mapping")[0]
        logits = np.asarray(self.forward(encoded).logits)[0]
        scores = _softmax(logits)
        ids = encoded["input_ids"][0]
        mask = encoded["attention_mask"][0]
        special = set(self.tokenizer.all_special_ids)
        entities = []
        for index, (token_id, keep) in enumerate(zip(ids, mask)):
            if not keep or int(token_id) in special:
                continue
            best = int(scores[index].argmax())
            entity = self.label(best)
            if entity in ignore_labels:
                continue
            entities.append({"entity": entity, "score": float(scores[index, best]), "index": index,
                             "word": self.tokenizer.convert_ids_to_tokens(int(token_id)),
                             "start": int(offsets[index][0]), "end": int(offsets[index][1])})
        return entities


class QuestionAnsweringPipeline(Pipeline):
    def __call__(self, question=None, context=None, top_k=1, max_answer_len=15):
        if question is None or context is None:
            raise ValueError("question-answering needs question= and context=")
        if isinstance(question, (list, tuple)):
            return [self.run_one(q, c, top_k, max_answer_len) for q, c in zip(question, context)]
        return self.run_one(question, context, top_k, max_answer_len)

    def run_one(self, question, context, top_k=1, max_answer_len=15):
        encoded = self.encode(question, context)
        out = self.forward(encoded)
        ids = encoded["input_ids"][0]
        context_mask = self._context_tokens(encoded, question)
        # As HF: the softmax runs over the context tokens and the CLS token(s) (kept for "no answer"), then the
        # first position's probability is zeroed; spans start and end on context (or CLS) tokens.
        allowed = context_mask | (ids == self.tokenizer.cls_token_id)
        start = _softmax(np.where(allowed, np.asarray(out.start_logits)[0], -10000.0))
        end = _softmax(np.where(allowed, np.asarray(out.end_logits)[0], -10000.0))
        start[0] = end[0] = 0.0
        # score of span (i, j) = p_start(i) * p_end(j), for i <= j < i + max_answer_len
        scores = np.tril(np.triu(np.outer(start, end)), max_answer_len - 1)
        tokens = self.tokenizer.convert_ids_to_tokens([int(i) for i in ids])
        answers = {}
        # HF looks at top_k * 2 + 10 candidate spans, since several can grow into the same words.
        for flat in np.argsort(-scores, axis=None, kind="stable")[:top_k * 2 + 10]:
            i, j = np.unravel_index(flat, scores.shape)
            if not (allowed[i] and allowed[j]):
                continue
            score = float(scores[i, j])
            # As HF's align_to_words: the span grows to whole words; equal answers add their scores.
            i, j = self._word_bounds(tokens, context_mask, i, j)
            answer = self.tokenizer.decode(ids[i:j + 1], skip_special_tokens=True).strip()
            if answer in answers:
                answers[answer]["score"] += score
                continue
            char = context.find(answer) if answer else -1
            answers[answer] = {"score": score, "start": char if char >= 0 else None,
                               "end": char + len(answer) if char >= 0 else None, "answer": answer}
        ranked = sorted(answers.values(), key=lambda a: a["score"], reverse=True)[:top_k]
        return ranked[0] if len(ranked) == 1 else ranked

    @staticmethod
    def _word_bounds(tokens, context_mask, i, j):
        """(first, last) token of the words that tokens i..j belong to. A token starts a word when it begins
        with the word marker of sentencepiece ("\u2581") or byte-level BPE ("\u0120"), begins the context, or
        switches between letters/digits and punctuation (where HF's pre-tokenizers split)."""
        def starts_word(k):
            token, previous = tokens[k], tokens[k - 1] if k > 0 else ""
            return (k == 0 or not context_mask[k - 1] or token[:1] in ("\u2581", "\u0120")
                    or token[:1].isalnum() != previous[-1:].isalnum())
        if not context_mask[i] or not context_mask[j]:
            return i, j
        while i > 0 and not starts_word(i):
            i -= 1
        while j + 1 < len(tokens) and context_mask[j + 1] and not starts_word(j + 1):
            j += 1
        return i, j

    def _context_tokens(self, encoded, question):
        """Where the context's tokens are: every family's pair template puts the question's tokens first and
        the context's after them, with only special tokens and padding around."""
        ids = encoded["input_ids"][0]
        content = encoded["attention_mask"][0].astype(bool) & ~np.isin(ids, list(self.tokenizer.all_special_ids))
        question_length = len(self.tokenizer(question, add_special_tokens=False)["input_ids"])
        context = content.copy()
        context[np.flatnonzero(content)[:question_length]] = False
        return context


def _load_image(image):
    """A PIL image, a file path or an [H, W, C] uint8 array -> [H, W, 3] uint8 array."""
    from PIL import Image
    if isinstance(image, str):
        with Image.open(image) as opened:
            return np.asarray(opened.convert("RGB"))
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    return np.asarray(image)


class ImageClassificationPipeline(Pipeline):
    def run_one(self, image, top_k=5):
        pixels = self.image_processor(_load_image(image), return_tensors="np")["pixel_values"]
        logits = np.asarray(self.model({"pixel_values": pixels}, training=False).logits)[0]
        multi_label = self.config.problem_type == "multi_label_classification" or self.config.num_labels == 1
        scores = _sigmoid(logits) if multi_label else _softmax(logits)
        order = np.argsort(-scores, kind="stable")[:min(top_k, len(scores))]
        return [{"label": self.label(i), "score": float(scores[i])} for i in order]


class ImageSegmentationPipeline(Pipeline):
    def run_one(self, image, mask_format="pil"):
        array = _load_image(image)
        pixels = self.image_processor(array, return_tensors="np")["pixel_values"]
        outputs = self.model({"pixel_values": pixels}, training=False)
        segmentation = np.asarray(self.image_processor.post_process_semantic_segmentation(
            outputs, target_sizes=[array.shape[:2]])[0])
        results = []
        for label in np.unique(segmentation):
            mask = ((segmentation == label) * 255).astype(np.uint8)
            if mask_format == "pil":
                from PIL import Image
                mask = Image.fromarray(mask, mode="L")
            results.append({"score": None, "label": self.label(label), "mask": mask})
        return results
