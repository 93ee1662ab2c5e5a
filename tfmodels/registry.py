"""The family registry: which model families exist, their task heads, tokenizer / image processor, configs.

There is no central list. Each family package (`tfmodels/models/<family>/__init__.py`) declares itself with one
line (a dunder name, so that `from ... import *` does not export it):

    __family__ = FamilySpec("xlm-roberta-xl", prefix="XLMRobertaXL", tokenizer="XLMRobertaTokenizer",
                            tokenizer_assets="xlm_roberta")

and `families()` discovers every such spec by walking `tfmodels.models`. Task heads are found by naming
convention: the class `<prefix>For<Head>` in the family package (e.g. `XLMRobertaXLForSequenceClassification`);
`heads={task: class name}` overrides a name where a family differs (XLNet's `XLNetForQuestionAnsweringSimple`).
The CLI, recipes and data pipelines only ever talk to this module, so a new family is reachable from a recipe
as soon as its spec line is in place.
"""
import dataclasses
import importlib
import os
import pkgutil

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
ASSETS_DIR = os.path.join(PACKAGE_DIR, "assets")
REPO_DIR = os.path.dirname(PACKAGE_DIR)
CONFIGS_DIR = os.environ.get("TFMODELS_CONFIGS_DIR", os.path.join(REPO_DIR, "configs"))

# task name -> (class-name suffix, modality). The order is the order `tfmodels list` prints.
TASKS = {
    "base": ("Model", "any"),
    "sequence-classification": ("ForSequenceClassification", "text"),
    "token-classification": ("ForTokenClassification", "text"),
    "question-answering": ("ForQuestionAnswering", "text"),
    "masked-lm": ("ForMaskedLM", "text"),
    "multiple-choice": ("ForMultipleChoice", "text"),
    "causal-lm": ("ForCausalLM", "text"),
    "image-classification": ("ForImageClassification", "image"),
    "semantic-segmentation": ("ForSemanticSegmentation", "image"),
    "masked-image-modeling": ("ForMaskedImageModeling", "image"),
}


@dataclasses.dataclass
class FamilySpec:
    """What the CLI needs to know about a family. Everything but `name` and `prefix` has a sensible default.

    name: the family's model_type as in config.json ("xlm-roberta-xl", "yoso", "beit", ...).
    prefix: class-name prefix ("XLMRobertaXL"): `<prefix>Config`, `<prefix>Model`, `<prefix>For<Head>`.
    tokenizer / image_processor: class name (looked up in tfmodels.tokenizers, the family package, then
        tfmodels) of the family's text tokenizer or image processor.
    tokenizer_assets: folder under tfmodels/assets holding a bundled tokenizer model, used when a recipe trains
        from scratch and names no tokenizer.
    heads: {task: class name} for heads that do not follow `<prefix>For<Head>`.
    pad_to_multiple_of: how a batch's length must be padded for the attention: an int, the name of a config
        attribute (e.g. "attention_window", "block_size"; a list value takes its maximum), or a callable
        config -> int. None: any length.
    modality: "text" or "image" (main input input_ids or pixel_values).
    max_length: the longest sequence a config takes: an int, a callable config -> int, or None for the config's
        max_position_embeddings (when it has one; XLM-R-style position ids start at pad_token_id + 1).
    """
    name: str
    prefix: str
    tokenizer: str = None
    image_processor: str = None
    tokenizer_assets: str = None
    heads: dict = dataclasses.field(default_factory=dict)
    pad_to_multiple_of: object = None
    modality: str = "text"
    max_length: object = None
    module: str = None  # filled in by discovery: the package that declared the spec

    # ---------------------------------------------------------------------------------------------------

    def package(self):
        return importlib.import_module(self.module)

    def _lookup(self, class_name):
        for module_name in (self.module, "tfmodels.tokenizers", "tfmodels"):
            if module_name is None:
                continue
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            if hasattr(module, class_name):
                return getattr(module, class_name)
        raise LookupError(f"family {self.name!r}: class {class_name!r} not found in {self.module}, "
                          "tfmodels.tokenizers or tfmodels")

    @property
    def config_class(self):
        return self._lookup(self.prefix + "Config")

    def head_class_name(self, task):
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
        return self.heads.get(task, self.prefix + TASKS[task][0])

    def head_class(self, task):
        name = self.head_class_name(task)
        try:
            return self._lookup(name)
        except LookupError:
            raise ValueError(f"family {self.name!r} has no {task} head ({name}); it has: "
                             f"{', '.join(self.tasks())}") from None

    def tasks(self):
        """The tasks this family has a head for, in TASKS order."""
        package = self.package()
        found = []
        for task in TASKS:
            if hasattr(package, self.head_class_name(task)):
                found.append(task)
        return found

    def tokenizer_class(self):
        return self._lookup(self.tokenizer) if self.tokenizer else None

    def image_processor_class(self):
        return self._lookup(self.image_processor) if self.image_processor else None

    def default_tokenizer(self):
        """The family tokenizer built from its bundled assets (None if the family has none bundled)."""
        cls = self.tokenizer_class()
        if cls is None or not self.tokenizer_assets:
            return None
        return cls.from_pretrained(os.path.join(ASSETS_DIR, self.tokenizer_assets))

    def pad_multiple(self, config):
        """The multiple a batch's sequence length must be padded to for `config` (1 if any length works)."""
        rule = self.pad_to_multiple_of
        if rule is None:
            return 1
        if callable(rule):
            value = rule(config)
        elif isinstance(rule, str):
            value = getattr(config, rule)
        else:
            value = rule
        if isinstance(value, (list, tuple)):
            value = max(value)
        return max(1, int(value))

    def max_positions(self, config):
        """The longest input sequence `config` allows (None: no limit known)."""
        if callable(self.max_length):
            return int(self.max_length(config))
        if self.max_length is not None:
            return int(self.max_length)
        value = getattr(config, "max_position_embeddings", None)
        # XLNet's relative positions have no limit: its config reports max_position_embeddings = -1, as HF's.
        return int(value) if value is not None and value > 0 else None

    def configs(self):
        """Config files in configs/ for this family (by model_type)."""
        import json
        found = []
        if not os.path.isdir(CONFIGS_DIR):
            return found
        for file_name in sorted(os.listdir(CONFIGS_DIR)):
            path = os.path.join(CONFIGS_DIR, file_name)
            if not file_name.endswith(".json") or not os.path.isfile(path):
                continue
            try:
                with open(path, encoding="utf-8") as f:
                    data = json.load(f)
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and data.get("model_type") == self.name:
                found.append(file_name[:-len(".json")])
        return found


_FAMILIES = None


def families(refresh=False):
    """{name: FamilySpec} of every family package that declares `__family__`, discovered by walking tfmodels.models."""
    global _FAMILIES
    if _FAMILIES is not None and not refresh:
        return _FAMILIES
    import tfmodels.models as models_package
    found = {}
    for info in sorted(pkgutil.iter_modules(models_package.__path__), key=lambda i: i.name):
        if not info.ispkg:
            continue
        module_name = f"{models_package.__name__}.{info.name}"
        module = importlib.import_module(module_name)
        spec = getattr(module, "__family__", None)
        if spec is None:
            continue
        if not isinstance(spec, FamilySpec):
            raise TypeError(f"{module_name}.__family__ must be a tfmodels.registry.FamilySpec")
        spec.module = module_name
        if spec.name in found:
            raise ValueError(f"family {spec.name!r} is declared twice ({found[spec.name].module}, {module_name})")
        found[spec.name] = spec
    _FAMILIES = found
    return found


def _normalise(name):
    return name.lower().replace("_", "-")


def get_family(name):
    """The spec of a family by name (model_type, also with underscores, or the class prefix)."""
    specs = families()
    key = _normalise(name)
    for spec in specs.values():
        if key in (_normalise(spec.name), spec.prefix.lower()):
            return spec
    raise ValueError(f"unknown model family {name!r}; known: {', '.join(sorted(specs)) or 'none'}")


def resolve_config_path(name_or_path):
    """A config file path: an existing path, or a name in configs/ ("xlm-roberta-xl-tiny")."""
    if os.path.isfile(name_or_path):
        return name_or_path
    if os.path.isdir(name_or_path) and os.path.isfile(os.path.join(name_or_path, "config.json")):
        return os.path.join(name_or_path, "config.json")
    candidate = os.path.join(CONFIGS_DIR, name_or_path if name_or_path.endswith(".json") else name_or_path + ".json")
    if os.path.isfile(candidate):
        return candidate
    raise FileNotFoundError(f"no config {name_or_path!r} (not a file, and not in {CONFIGS_DIR})")
