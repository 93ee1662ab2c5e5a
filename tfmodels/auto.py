"""Auto classes: pick the family class from config.json's `model_type`, through the family registry.

`AutoModelForSequenceClassification.from_pretrained("org/name")` reads config.json (a directory or a Hub id,
see core.hub), finds the family (tfmodels.registry) and calls its head's `from_pretrained` with every argument.
`from_config(config)` builds a new model. The TF names of the reference documents (`TFAutoModel...`) are the
same classes. Heads follow the registry's tasks; HF's auto mappings differ in one place, XLNet's causal LM,
which is `XLNetLMHeadModel`.
"""
import json

from tfmodels import registry
from tfmodels.core import hub
from tfmodels.core.configuration import CONFIG_NAME

TOKENIZER_CONFIG_NAME = "tokenizer_config.json"
IMAGE_PROCESSOR_CONFIG_NAME = "preprocessor_config.json"
# (model_type, task) -> class name, where HF's auto mapping does not follow the registry's <prefix>For<Head>.
HEAD_OVERRIDES = {("xlnet", "causal-lm"): "XLNetLMHeadModel"}


def _options(kwargs):
    """The Hub options among `from_pretrained` keyword arguments (they stay in kwargs for the class)."""
    return hub.HubOptions(**{key: kwargs[key] for key in ("revision", "cache_dir", "local_files_only", "token")
                             if key in kwargs})


def _read_json(path, file_name, options, required=True):
    local = hub.resolve_file(path, file_name, options, required=required)
    if local is None:
        return None
    with open(local, encoding="utf-8") as f:
        return json.load(f)


def _family(model_type, where):
    try:
        return registry.get_family(model_type or "")
    except ValueError:
        known = ", ".join(sorted(registry.families()))
        raise ValueError(f"{where}: model_type {model_type!r} is not a tfmodels family ({known})") from None


class AutoConfig:
    """`AutoConfig.from_pretrained(path or Hub id)`: the family's config class, read from config.json."""

    @staticmethod
    def from_pretrained(path, **kwargs):
        data = _read_json(path, CONFIG_NAME, _options(kwargs))
        return _family(data.get("model_type"), path).config_class.from_pretrained(path, **kwargs)

    @staticmethod
    def for_model(model_type, **kwargs):
        return _family(model_type, "for_model").config_class(**kwargs)


class _AutoModelBase:
    task = None  # a registry task

    @classmethod
    def model_class(cls, model_type, where="config"):
        family = _family(model_type, where)
        name = HEAD_OVERRIDES.get((family.name, cls.task))
        if name is not None:
            return family._lookup(name)
        return family.head_class(cls.task)

    @classmethod
    def from_pretrained(cls, path, **kwargs):
        """The family's head for this task, loaded by its own `from_pretrained(path, **kwargs)`."""
        config = kwargs.get("config")
        model_type = config.model_type if config is not None else \
            _read_json(path, CONFIG_NAME, _options(kwargs)).get("model_type")
        return cls.model_class(model_type, path).from_pretrained(path, **kwargs)

    @classmethod
    def from_config(cls, config):
        """A newly initialised model of the family of `config` (weights are created on first call)."""
        return cls.model_class(config.model_type)(config)


def _auto_model(class_name, task):
    return type(class_name, (_AutoModelBase,), {"task": task, "__doc__": f"Auto class for the {task} heads."})


AutoModel = _auto_model("AutoModel", "base")
AutoModelForMaskedLM = _auto_model("AutoModelForMaskedLM", "masked-lm")
AutoModelForCausalLM = _auto_model("AutoModelForCausalLM", "causal-lm")
AutoModelForSequenceClassification = _auto_model("AutoModelForSequenceClassification", "sequence-classification")
AutoModelForTokenClassification = _auto_model("AutoModelForTokenClassification", "token-classification")
AutoModelForQuestionAnswering = _auto_model("AutoModelForQuestionAnswering", "question-answering")
AutoModelForMultipleChoice = _auto_model("AutoModelForMultipleChoice", "multiple-choice")
AutoModelForImageClassification = _auto_model("AutoModelForImageClassification", "image-classification")
AutoModelForSemanticSegmentation = _auto_model("AutoModelForSemanticSegmentation", "semantic-segmentation")
AutoModelForMaskedImageModeling = _auto_model("AutoModelForMaskedImageModeling", "masked-image-modeling")


class AutoTokenizer:
    """`AutoTokenizer.from_pretrained(path or Hub id)`: the class named by tokenizer_config.json's
    `tokenizer_class` (a "...Fast" name means its slow twin, which we implement), else the family's tokenizer."""

    @staticmethod
    def from_pretrained(path, **kwargs):
        options = _options(kwargs)
        settings = _read_json(path, TOKENIZER_CONFIG_NAME, options, required=False) or {}
        class_name = settings.get("tokenizer_class")
        if class_name:
            class_name = class_name[:-len("Fast")] if class_name.endswith("Fast") else class_name
            import tfmodels.tokenizers as tokenizers
            cls = getattr(tokenizers, class_name, None)
            if cls is None:
                raise ValueError(f"{path}: tokenizer_class {settings['tokenizer_class']!r} is not one of tfmodels' "
                                 f"tokenizers ({', '.join(tokenizers.__all__[2:])})")
        else:
            family = _family(_read_json(path, CONFIG_NAME, options).get("model_type"), path)
            cls = family.tokenizer_class()
            if cls is None:
                raise ValueError(f"{path}: family {family.name} has no tokenizer")
        return cls.from_pretrained(path, **kwargs)


class AutoImageProcessor:
    """`AutoImageProcessor.from_pretrained(path or Hub id)`: the family's image processor (BEiT's), read from
    preprocessor_config.json."""

    @staticmethod
    def from_pretrained(path, **kwargs):
        options = _options(kwargs)
        settings = _read_json(path, IMAGE_PROCESSOR_CONFIG_NAME, options)
        declared = settings.get("image_processor_type") or settings.get("feature_extractor_type") or ""
        for family in registry.families().values():
            cls = family.image_processor_class()
            # HF names BEiT's processor BeitImageProcessor (BeitImageProcessorFast, BeitFeatureExtractor before).
            if cls is not None and declared.startswith(family.prefix):
                return cls.from_pretrained(path, **kwargs)
        family = _family(_read_json(path, CONFIG_NAME, options).get("model_type"), path)
        cls = family.image_processor_class()
        if cls is None:
            raise ValueError(f"{path}: family {family.name} has no image processor")
        return cls.from_pretrained(path, **kwargs)


TFAutoModel = AutoModel
TFAutoModelForMaskedLM = AutoModelForMaskedLM
TFAutoModelForCausalLM = AutoModelForCausalLM
TFAutoModelForSequenceClassification = AutoModelForSequenceClassification
TFAutoModelForTokenClassification = AutoModelForTokenClassification
TFAutoModelForQuestionAnswering = AutoModelForQuestionAnswering
TFAutoModelForMultipleChoice = AutoModelForMultipleChoice
TFAutoModelForImageClassification = AutoModelForImageClassification
TFAutoModelForSemanticSegmentation = AutoModelForSemanticSegmentation
TFAutoModelForMaskedImageModeling = AutoModelForMaskedImageModeling

__all__ = ["AutoConfig", "AutoTokenizer", "AutoImageProcessor"] + \
    [name for name in dir() if name.startswith(("AutoModel", "TFAutoModel"))]
