"""The per-family test spec: what the shared behaviour tests need to know about a text family, written once.

A family's tests declare one spec and parametrise over its heads:

    FAMILY = TextFamily("Yoso", "yoso-tiny.json")
    HEADS = FAMILY.heads()
    config = FAMILY.config(); inputs = FAMILY.inputs(head, config, labels=True); FAMILY.main_field(head)

Inputs are a padded batch (rows of decreasing length, helpers.padded_ids), [batch, 2 choices, length] for
multiple choice, and with `labels=True` the labels each head's task takes: -100 on padding for token-level
labels, spans for QA.
"""
import dataclasses
import os

import numpy as np

import tfmodels
from tests import helpers

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")
STANDARD_HEADS = ("Model", "ForMaskedLM", "ForSequenceClassification", "ForMultipleChoice",
                  "ForTokenClassification", "ForQuestionAnswering")
TOKEN_LABEL_HEADS = ("ForMaskedLM", "ForCausalLM", "ForTokenClassification")


@dataclasses.dataclass
class TextFamily:
    """prefix: class-name prefix ("Yoso"); config_file: its tiny config under configs/ (None: the config class's
    defaults with `config_defaults`); length: the default sequence length; row_lengths: length -> the kept
    tokens of each row (None: helpers.padded_ids' default); extra_heads: suffixes beyond the standard six;
    package: where the classes live (tfmodels, or a test-only family's package)."""

    prefix: str
    config_file: str = None
    length: int = 9
    row_lengths: object = None
    extra_heads: tuple = ()
    package: object = tfmodels
    config_defaults: dict = dataclasses.field(default_factory=dict)

    def config(self, **overrides):
        config_class = getattr(self.package, self.prefix + "Config")
        if self.config_file is None:
            return config_class(**{**self.config_defaults, **overrides})
        return config_class.from_pretrained(os.path.join(CONFIGS, self.config_file), **overrides)

    def head(self, suffix):
        return getattr(self.package, self.prefix + suffix)

    def heads(self):
        return [self.head(suffix) for suffix in STANDARD_HEADS + tuple(self.extra_heads)]

    def suffix(self, head):
        return head.__name__[len(self.prefix):]

    def main_field(self, head):
        return {"Model": "last_hidden_state", "ForQuestionAnswering": "start_logits"}.get(self.suffix(head), "logits")

    def inputs(self, head, config, batch=4, length=None, labels=False, seed=0):
        length = length or self.length
        lengths = self.row_lengths(length)[:batch] if self.row_lengths else None
        ids, mask = helpers.padded_ids(batch, length, config.vocab_size, config.pad_token_id, seed=seed,
                                       lengths=lengths)
        inputs = {"input_ids": ids, "attention_mask": mask}
        rng = np.random.RandomState(seed + 1)
        suffix = self.suffix(head)
        if suffix == "ForMultipleChoice":
            inputs = {"input_ids": np.stack([ids, ids[::-1]], 1), "attention_mask": np.stack([mask, mask[::-1]], 1)}
            if labels:
                inputs["labels"] = rng.randint(0, 2, batch).astype(np.int32)
            return inputs
        if not labels:
            return inputs
        if suffix in TOKEN_LABEL_HEADS:
            classes = config.num_labels if suffix == "ForTokenClassification" else config.vocab_size
            inputs["labels"] = np.where(mask == 1, rng.randint(0, classes, ids.shape), -100).astype(np.int32)
        elif suffix == "ForSequenceClassification":
            inputs["labels"] = rng.randint(0, config.num_labels, batch).astype(np.int32)
        elif suffix == "ForQuestionAnswering":
            inputs["start_positions"] = rng.randint(0, length, batch).astype(np.int32)
            inputs["end_positions"] = rng.randint(0, length, batch).astype(np.int32)
        return inputs
