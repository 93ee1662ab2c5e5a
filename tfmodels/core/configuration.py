"""The config base every family uses: documented defaults, validation, and HF `config.json` compatibility.

A family config declares its documented parameters once, in `defaults` (in the order of the reference's
`__init__` signature, which is also the order positional arguments take: `XLMRobertaXLConfig(1000)` sets
vocab_size), and checks them in `validate()`. Everything else (JSON round trip, the parameters every HF config
shares such as `num_labels` or `is_decoder`, unknown-key errors) lives here.
"""
import copy
import difflib
import json
import numbers
import os

from tfmodels.core import atomic
from tfmodels.core.activations import ACT2FN
from tfmodels.core.logging import logger

CONFIG_NAME = "config.json"

# Parameters that every Hugging Face config carries (PretrainedConfig), with HF's defaults.
COMMON_DEFAULTS = {
    "output_hidden_states": False,
    "output_attentions": False,
    "return_dict": True,
    "is_decoder": False,
    "add_cross_attention": False,
    "tie_word_embeddings": True,
    "chunk_size_feed_forward": 0,
    "problem_type": None,
    "pad_token_id": None,
    "bos_token_id": None,
    "eos_token_id": None,
    "sep_token_id": None,
    "decoder_start_token_id": None,
    "tokenizer_class": None,
    "finetuning_task": None,
    "architectures": None,
    # Recompute each layer in the backward pass to save activation memory (all families).
    "gradient_checkpointing": False,
}

# Keys that HF writes for its own bookkeeping or for features we do not have (generation, torchscript,
# pruning). They are accepted when reading a config.json, kept, and written back unchanged.
HF_PASSTHROUGH_KEYS = {
    "transformers_version", "_name_or_path", "torch_dtype", "dtype", "_attn_implementation",
    "_attn_implementation_autoset", "_commit_hash", "use_bfloat16", "torchscript", "pruned_heads",
    "tf_legacy_loss", "is_encoder_decoder", "cross_attention_hidden_size", "tie_encoder_decoder",
    "task_specific_params", "prefix", "output_past", "output_scores", "return_dict_in_generate",
    "max_length", "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups",
    "diversity_penalty", "temperature", "top_k", "top_p", "typical_p", "repetition_penalty",
    "length_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids",
    "num_return_sequences", "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values",
    "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens", "gradient_checkpointing",
    "transformers.js_config", "tfmodels_version", "model_type", "use_return_dict", "num_labels",
    "id2label", "label2id",
}

_LABEL_KEYS = ("id2label", "label2id", "num_labels")
_TOKEN_ID_KEYS = ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "decoder_start_token_id")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _expected_type(key, default, value):
    """What `value` of parameter `key` should be, judged by its default, or None when it fits. Numbers may come
    as lists (per-layer values, image sizes as pairs: the family's validate() checks those); None stands for
    "not set" wherever the default is not a bool."""
    if key in _TOKEN_ID_KEYS:  # HF allows several end-of-sequence ids
        ids = value if key == "eos_token_id" and isinstance(value, list) else [value]
        return None if value is None or all(_is_int(i) for i in ids) else "a token id (an integer) or null"
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if value is None or default is None:
        return None
    if isinstance(default, (int, float)):
        fits = isinstance(value, (int, float, list, tuple)) and not isinstance(value, bool)
        return None if fits else "a number"
    if isinstance(default, (list, tuple)):
        return None if isinstance(value, (list, tuple)) else "a list"
    if isinstance(default, dict):
        return None if isinstance(value, dict) else "a mapping"
    if isinstance(default, str):  # activations may also be given as functions
        return None if isinstance(value, str) or callable(value) else "a string"
    return None


class PretrainedConfig:
    """Base of all configs. Subclasses set `model_type`, `defaults` and optionally `attribute_map`."""

    model_type = ""
    defaults = {}
    # HF aliases: reading `config.alias` reads `config.target` (e.g. XLNet's n_head -> num_attention_heads).
    attribute_map = {}
    # Keys that published config.json files of the family carry but that configure nothing (legacy fields of
    # the original release): accepted, kept and written back unchanged, like HF_PASSTHROUGH_KEYS.
    passthrough_keys = frozenset()

    def __init__(self, *args, strict=True, **kwargs):
        kwargs = self._with_positional(args, kwargs)
        kwargs = {self.attribute_map.get(k, k) if k not in self.defaults else k: v for k, v in kwargs.items()}
        unknown = [k for k in kwargs if k not in self.defaults and k not in COMMON_DEFAULTS
                   and k not in _LABEL_KEYS and k not in HF_PASSTHROUGH_KEYS and k not in self.passthrough_keys]
        if unknown and strict:
            raise ValueError(self._unknown_keys_message(unknown))
        # Known to from_dict, which tells keys read from a file (kept, with a warning) from typos in code.
        object.__setattr__(self, "_unknown_keys", unknown)
        values = {**COMMON_DEFAULTS, **copy.deepcopy(self.defaults)}
        labels = {k: kwargs.pop(k) for k in _LABEL_KEYS if k in kwargs}
        values.update({k: v for k, v in kwargs.items() if k in values})
        # Kept and written back so that a config.json survives a round trip unchanged.
        self.extra = {k: v for k, v in kwargs.items() if k not in values}
        for key, value in values.items():
            object.__setattr__(self, key, value)
        self._set_labels(**labels)
        self._check_value_types()
        self.validate()

    @classmethod
    def _with_positional(cls, args, kwargs):
        """Positional arguments name the documented parameters in order, as in the reference's signature."""
        names = list(cls.defaults)
        if len(args) > len(names):
            raise TypeError(f"{cls.__name__} takes at most {len(names)} positional arguments ({', '.join(names)}), "
                            f"got {len(args)}")
        named = dict(zip(names, args))
        twice = [name for name in named if name in kwargs]
        if twice:
            raise TypeError(f"{cls.__name__} got multiple values for argument(s) {', '.join(twice)}")
        return {**named, **kwargs}

    # ----------------------------------------------------------------------------------------------------
    # Attribute aliases and labels

    def __getattr__(self, name):
        target = type(self).attribute_map.get(name)
        if target is not None:
            return getattr(self, target)
        # Unknown keys kept with strict=False (or read from a config.json) read as attributes, as in HF.
        extra = self.__dict__.get("extra", {})
        if name in extra:
            return extra[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __setattr__(self, name, value):
        name = type(self).attribute_map.get(name, name)
        if name == "num_labels":
            self._set_labels(num_labels=value)
            return
        object.__setattr__(self, name, value)

    def _set_labels(self, id2label=None, label2id=None, num_labels=None):
        if num_labels is not None and (isinstance(num_labels, bool) or not isinstance(num_labels, numbers.Integral)):
            raise ValueError(f"{type(self).__name__}.num_labels must be an integer, got {num_labels!r}")
        if id2label is not None:
            id2label = {self._label_id("id2label", k): v for k, v in self._mapping("id2label", id2label).items()}
        elif label2id is not None:
            id2label = {self._label_id("label2id", v): k for k, v in self._mapping("label2id", label2id).items()}
        elif num_labels is not None or not hasattr(self, "id2label"):
            n = 2 if num_labels is None else int(num_labels)
            if n < 1:
                raise ValueError(f"num_labels must be >= 1, got {num_labels}")
            old = getattr(self, "id2label", {})
            id2label = {i: old.get(i, f"LABEL_{i}") for i in range(n)}
        else:
            return
        if num_labels is not None and int(num_labels) != len(id2label):
            raise ValueError(f"num_labels={num_labels} disagrees with id2label of {len(id2label)} labels")
        object.__setattr__(self, "id2label", id2label)
        object.__setattr__(self, "label2id", {v: k for k, v in id2label.items()})

    def _mapping(self, key, value):
        if not isinstance(value, dict):
            raise ValueError(f"{type(self).__name__}.{key} must be a mapping, got {value!r:.100}")
        return value

    def _label_id(self, key, value):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{type(self).__name__}.{key}: label ids must be integers, got {value!r:.100}") from None

    @property
    def num_labels(self):
        return len(self.id2label)

    @property
    def use_return_dict(self):
        return self.return_dict

    # ----------------------------------------------------------------------------------------------------
    # Validation helpers for `validate()`

    def validate(self):
        """Subclasses check their documented parameters here and raise ValueError with a clear message."""

    def _check_value_types(self):
        """The type every parameter must have, declared by its default (in `defaults` or COMMON_DEFAULTS), checked
        before `validate()` so that a config.json with a string, list or bool where a number belongs fails with
        the key's name (the families' checks then take the values: sizes positive, heads dividing, ...)."""
        for key, default in {**COMMON_DEFAULTS, **self.defaults}.items():
            expected = _expected_type(key, default, getattr(self, key))
            if expected:
                raise ValueError(f"{type(self).__name__}.{key} must be {expected}, got {getattr(self, key)!r:.100}")

    def _unknown_keys_message(self, unknown):
        known = list(self.defaults) + list(COMMON_DEFAULTS) + list(_LABEL_KEYS)
        parts = []
        for key in unknown:
            close = difflib.get_close_matches(key, known, n=1)
            parts.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        return (f"Unknown config key(s) for {type(self).__name__}: {', '.join(parts)}. "
                f"Documented parameters: {', '.join(self.defaults)}. "
                "Pass strict=False to keep unknown keys as extra attributes.")

    def check_positive_int(self, *names):
        for name in names:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{type(self).__name__}.{name} must be a positive integer, got {value!r}")

    def check_non_negative_int(self, *names):
        for name in names:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{type(self).__name__}.{name} must be a non-negative integer, got {value!r}")

    def check_probability(self, *names):
        for name in names:
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"{type(self).__name__}.{name} must be a probability in [0, 1), got {value!r}")

    def check_positive_float(self, *names):
        for name in names:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{type(self).__name__}.{name} must be a positive number, got {value!r}")

    def check_choice(self, name, choices):
        value = getattr(self, name)
        if value not in choices:
            raise ValueError(f"{type(self).__name__}.{name} must be one of {list(choices)}, got {value!r}")

    def check_activation(self, name):
        value = getattr(self, name)
        if not callable(value) and value not in ACT2FN:
            raise ValueError(f"{type(self).__name__}.{name}={value!r} is not a known activation; "
                             f"supported: {', '.join(sorted(ACT2FN))}")

    def check_divisible(self, name, divisor_name):
        value, divisor = getattr(self, name), getattr(self, divisor_name)
        if value % divisor:
            raise ValueError(f"{type(self).__name__}: {name} ({value}) must be a multiple of "
                             f"{divisor_name} ({divisor})")

    def check_problem_type(self):
        self.check_choice("problem_type", (None, "regression", "single_label_classification",
                                           "multi_label_classification"))

    # ----------------------------------------------------------------------------------------------------
    # Serialisation

    def to_dict(self):
        out = {"model_type": self.model_type}
        for key in list(self.defaults) + list(COMMON_DEFAULTS):
            out[key] = copy.deepcopy(getattr(self, key))
        out["id2label"] = {str(k): v for k, v in self.id2label.items()}
        out["label2id"] = dict(self.label2id)
        out.update(copy.deepcopy(self.extra))
        out["model_type"] = self.model_type
        return out

    @classmethod
    def from_dict(cls, config_dict, strict=True, **overrides):
        values = dict(config_dict)
        if "num_labels" in overrides and "id2label" not in overrides and "label2id" not in overrides:
            # An explicit label count replaces the labels stored in the file (as HF's from_pretrained does).
            values.pop("id2label", None)
            values.pop("label2id", None)
        values.update(overrides)
        model_type = values.get("model_type")
        if model_type and cls.model_type and model_type != cls.model_type:
            raise ValueError(f"config.json has model_type {model_type!r} but {cls.__name__} expects "
                             f"{cls.model_type!r}")
        values.pop("model_type", None)
        # As HF: keys of the file that are no parameter are kept as attributes (and written back), with a
        # warning; a misspelled parameter passed in code is still an error. strict=False: both kept silently.
        config = cls(strict=False, **values)
        typos = [key for key in config._unknown_keys if key in overrides]
        if typos and strict:
            raise ValueError(config._unknown_keys_message(typos))
        from_file = [key for key in config._unknown_keys if key not in overrides]
        if from_file and strict:
            logger.warning(f"{cls.__name__}: keeping config keys that are not parameters of this config as "
                           f"attributes: {', '.join(from_file)}")
        return config

    def to_json_string(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, path):
        # written to a temporary name and renamed, so that a killed save leaves the previous file whole
        atomic.write_text(path, self.to_json_string())

    @classmethod
    def from_json_file(cls, path, strict=True, **overrides):
        """Read a config.json; a file that is no JSON object, or with a value of the wrong type or out of range,
        raises ValueError naming the file and the key."""
        with open(path, encoding="utf-8") as f:
            try:
                values = json.load(f)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ValueError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a JSON object of config keys, got {type(values).__name__}")
        try:
            return cls.from_dict(values, strict=strict, **overrides)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from exc

    def save_pretrained(self, directory):
        os.makedirs(directory, exist_ok=True)
        self.to_json_file(os.path.join(directory, CONFIG_NAME))

    @classmethod
    def from_pretrained(cls, path, strict=True, revision=None, cache_dir=None, local_files_only=False, token=None,
                        **overrides):
        """Read a config from a directory holding config.json (ours or HF's), a JSON file, or a Hub id
        ("org/name", fetched through huggingface_hub: see core.hub)."""
        from tfmodels.core import hub
        options = hub.HubOptions(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
                                 token=token)
        if not os.path.isfile(path):
            path = hub.resolve_file(path, CONFIG_NAME, options)
        return cls.from_json_file(path, strict=strict, **overrides)

    def copy(self, **overrides):
        return type(self).from_dict(self.to_dict(), strict=False, **overrides)

    def __eq__(self, other):
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    def __repr__(self):
        return f"{type(self).__name__} {self.to_json_string()}"
