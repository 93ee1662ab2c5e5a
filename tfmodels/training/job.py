"""The training job: what a recipe describes (tokenizer, labels, data, model, optimizer, monitor), built lazily,
and the helpers that both training loops share: the strategy, the chief, the recipe file, the step plan and the
training stream. The fit loop (runner) and the multi-worker loop (distributed) depend on this module; the task's
specifics come from tfmodels.training.tasks.
"""
import importlib
import json
import math
import os

import tensorflow as tf

from tfmodels.core import hub
from tfmodels.core.layers import dtype_policy_scope
from tfmodels.registry import get_family, resolve_config_path
from tfmodels.training import data as data_lib
from tfmodels.training import readers
from tfmodels.training.recipe import resolve_recipe_path
from tfmodels.training.optimization import build_optimizer
from tfmodels.training.tasks import get_task

POLICIES = {"bf16": "mixed_bfloat16", "mixed_bfloat16": "mixed_bfloat16", "fp16": "mixed_float16",
            "mixed_float16": "mixed_float16"}


class Job:
    """Everything a recipe describes, built lazily."""

    def __init__(self, recipe):
        self.recipe = recipe
        self.task = recipe["model"]["task"]
        self.training_task = get_task(self.task)
        self.output_dir = recipe["training"]["output_dir"] or os.path.join("runs", recipe["name"])
        self._hub_snapshots = {}  # Hub id -> its cached snapshot directory
        family = recipe["model"]["family"]
        if not family:
            family = self._load_config_file()["model_type"]
        self.family = get_family(family)
        self._tokenizer = None
        self._rows = {}
        self._datasets = {}
        self._label_names = None

    # ---------------------------------------------------------------------------------------------------
    # Paths, config, tokenizer, labels

    def path(self, value):
        return None if value is None else resolve_recipe_path(value, self.recipe.get("_path"))

    @property
    def pretrained(self):
        """The pretrained checkpoint directory; a Hub id ("org/name") is fetched once into the Hugging Face cache
        (config, weights, tokenizer or image processor files) and read from there."""
        value = self.path(self.recipe["model"]["pretrained"])
        if value and not hub.is_local(value):
            if value not in self._hub_snapshots:
                self._hub_snapshots[value] = hub.snapshot(value, optional=hub.PREPROCESSOR_FILES)
            return self._hub_snapshots[value]
        return value

    def _load_config_file(self):
        source = self.pretrained or resolve_config_path(self.path(self.recipe["model"]["config"]) or "")
        if os.path.isdir(source):
            source = os.path.join(source, "config.json")
        with open(source, encoding="utf-8") as f:
            return json.load(f)

    @property
    def is_image(self):
        return self.training_task.is_image

    @property
    def preprocessor(self):
        """What is saved beside checkpoints: the tokenizer, or the image pipeline's settings."""
        return data_lib.PipelineImageProcessor(self.image_settings()) if self.is_image else self.tokenizer

    @property
    def tokenizer(self):
        if self._tokenizer is None and not self.is_image:
            self._tokenizer = self._build_tokenizer()
        return self._tokenizer

    def _build_tokenizer(self):
        settings = self.recipe["tokenizer"]
        path = self.path(settings.get("path"))
        class_name = settings.get("class") or self.family.tokenizer
        if class_name is None:
            raise ValueError(f"family {self.family.name} has no tokenizer; set tokenizer.class and tokenizer.path")
        cls = tokenizer_class(class_name, self.family)
        if path is None and self.pretrained and has_tokenizer_files(cls, self.pretrained):
            path = self.pretrained
        if path is not None:
            return cls.from_pretrained(path)
        tokenizer = self.family.default_tokenizer() if cls is self.family.tokenizer_class() else None
        if tokenizer is None:
            raise ValueError(f"no tokenizer files: set tokenizer.path for {class_name}")
        return tokenizer

    def rows(self, split):
        if split not in self._rows:
            path = self.path(self.recipe["data"][split])
            if path is None:
                return None
            rows = readers.read(path, self.recipe["data"]["format"] if split == "train" or not os.path.isdir(path)
                                else None)
            limit = self.recipe["data"]["limit" if split == "train" else "eval_limit"]
            self._rows[split] = rows[:limit] if limit else rows
        return self._rows[split]

    @property
    def label_names(self):
        if self._label_names is None:
            self._label_names = self._find_label_names()
        return self._label_names

    def _find_label_names(self):
        given = self.recipe["data"]["labels"]
        if isinstance(given, str):
            with open(self.path(given), encoding="utf-8") as f:
                given = [line.strip() for line in f if line.strip()]
        return self.training_task.label_names(self, given)

    def config_labels(self):
        """The class names of the config file's id2label."""
        config = self._load_config_file()
        if "id2label" in config:
            return [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
        raise ValueError("set data.labels: the labels cannot be read from the data or the config")

    def image_settings(self):
        processor = None
        processor_class = self.family.image_processor_class()
        if processor_class is not None:
            try:
                processor = processor_class.from_pretrained(self.pretrained) if self.pretrained else processor_class()
            except (OSError, TypeError, ValueError):
                processor = processor_class()
        return data_lib.image_settings(processor, self.recipe["data"]["image"])

    def model_config(self):
        """The model config: file / pretrained config + recipe overrides + labels + tokenizer-derived sizes."""
        config_class = self.family.config_class
        overrides = dict(self.recipe["model"]["overrides"])
        names = self.label_names
        if names is not None:
            overrides.setdefault("id2label", {str(i): n for i, n in enumerate(names)})
            overrides.setdefault("label2id", {n: i for i, n in enumerate(names)})
        for key, value in self.training_task.config_overrides().items():
            overrides.setdefault(key, value)
        source = self.pretrained or resolve_config_path(self.path(self.recipe["model"]["config"]))
        config = config_class.from_pretrained(source, strict=False)
        if not self.pretrained and self.tokenizer is not None:
            # Training from scratch: the embedding table follows the tokenizer.
            for key, value in (("vocab_size", self.tokenizer.vocab_size), ("pad_token_id", self.tokenizer.pad_token_id)):
                if key in config.defaults and key not in overrides and value is not None:
                    overrides[key] = value
        return config.copy(**overrides)

    def max_length(self, config=None):
        max_length = int(self.recipe["data"]["max_length"])
        limit = self.family.max_positions(config) if config is not None else None
        return min(max_length, limit) if limit else max_length

    def pad_multiple(self, config):
        given = self.recipe["data"]["pad_to_multiple_of"]
        return int(given) if given else self.family.pad_multiple(config)

    # ---------------------------------------------------------------------------------------------------
    # Data

    def dataset(self, split, config):
        if split in self._datasets:
            return self._datasets[split]
        rows = self.rows(split)
        if rows is None:
            return None
        task = self.training_task
        if task.is_image:
            dataset = data_lib.ImageDataset(rows, self.image_settings(), task.image_targets, self.label_names)
        else:
            if task.data_class is None:
                raise ValueError(f"no data pipeline for task {self.task!r}")
            processor = task.data_class(self.tokenizer, max_length=self.max_length(config),
                                        **self.recipe["data"]["columns"], **task.data_kwargs(self))
            dataset = data_lib.TextDataset(processor, rows, self.pad_multiple(config))
        self._datasets[split] = dataset
        return dataset

    @property
    def batch_size(self):
        return int(self.recipe["data"]["batch_size"])

    @property
    def eval_batch_size(self):
        return int(self.recipe["data"]["eval_batch_size"] or self.batch_size)

    # ---------------------------------------------------------------------------------------------------
    # Model

    def policy(self):
        return POLICIES.get(self.recipe["training"]["mixed_precision"]) or self.recipe["model"]["dtype"]

    def build_model(self, config, policy=None, weights_from=None):
        """The task head: from the pretrained directory (or `weights_from`), else newly initialised."""
        cls = self.family.head_class(self.task)
        source = weights_from or self.pretrained
        if source:
            model = cls.from_pretrained(source, config=config, dtype=policy, ignore_mismatched_sizes=True)
        else:
            with dtype_policy_scope(policy):
                model = cls(config)
                model.build_model()
        if self.is_image:
            model._tfm_channels_first = bool(self.image_settings()["channels_first"])
        return model

    def compile(self, model, steps_total):
        optimizer = build_optimizer(self.recipe["optimizer"], self.recipe["schedule"], steps_total)
        num_labels = len(self.label_names) if self.label_names else None
        channels_first = self.image_settings()["channels_first"] if self.is_image else True
        model.compile(optimizer=optimizer, metrics=self.training_task.fit_metrics(num_labels, channels_first),
                      jit_compile=bool(self.recipe["training"]["jit_compile"]))
        return model

    def monitor(self):
        training = self.recipe["training"]
        default = self.training_task.monitor
        monitor = training["monitor"] or default[0]
        mode = training["monitor_mode"] or ("min" if "loss" in monitor else "max")
        return monitor, mode


def tokenizer_class(name, family=None):
    """A tokenizer class by name: from tfmodels.tokenizers, the family's package, the word-level one, tfmodels."""
    modules = ("tfmodels.tokenizers", family.module if family is not None else None,
               "tfmodels.training.word_tokenizer", "tfmodels")
    for module_name in modules:
        if module_name is None:
            continue
        module = importlib.import_module(module_name)
        if hasattr(module, name):
            return getattr(module, name)
    raise ValueError(f"unknown tokenizer class {name!r}")


def has_tokenizer_files(cls, directory):
    return all(os.path.isfile(os.path.join(directory, f)) for f in cls.vocab_files_names.values())


# ---------------------------------------------------------------------------------------------------------------
# Strategy


def choose_strategy(name="auto", devices=None):
    """default | mirrored (all local GPUs, or `devices`) | multi_worker (TF_CONFIG) | auto (multi_worker when
    TF_CONFIG lists more than one task, mirrored with more than one GPU, else default)."""
    if name == "auto":
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
        workers = sum(len(v) for k, v in cluster.items() if k in ("chief", "worker"))
        if workers > 1:
            name = "multi_worker"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "default"
    if name == "multi_worker":
        return name, tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        return name, tf.distribute.MirroredStrategy(devices)
    return "default", tf.distribute.get_strategy()


def is_chief():
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    task = config.get("task", {})
    cluster = config.get("cluster", {})
    if not task:
        return True
    if "chief" in cluster:
        return task.get("type") == "chief"
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0


def check_training_memory(config, loop, replicas=1):
    """XLNet's `use_mems_train` feeds each training step's memory into the next step. Only the model's own Keras
    `fit` carries it, and only on one replica (the memory is one set of variables, not one per replica): any other
    loop would silently train without it, so it refuses here."""
    if getattr(config, "use_mems_train", False) and (loop != "fit" or replicas > 1):
        raise ValueError(
            f"use_mems_train=True: the {loop} loop with {replicas} replica(s) cannot carry the training memory "
            "from step to step (only Keras fit on one replica does); train with training.strategy=default on "
            "one device, or set model.overrides.use_mems_train=false")


def save_recipe(job):
    os.makedirs(job.output_dir, exist_ok=True)
    with open(os.path.join(job.output_dir, "recipe.json"), "w", encoding="utf-8") as f:
        json.dump({k: v for k, v in job.recipe.items() if not k.startswith("_")}, f, indent=2, default=str)


def plan_steps(job, train_data):
    training = job.recipe["training"]
    data_steps = train_data.steps(job.batch_size)
    steps_per_epoch = int(training["steps_per_epoch"] or data_steps)
    epochs = int(training["epochs"])
    return data_steps, steps_per_epoch, epochs, steps_per_epoch * epochs


def train_stream(job, train_data, consumed, total_steps, data_steps):
    """The batches still to train on: the data epochs concatenated, starting after `consumed` batches. None are
    left for a run killed after its last backup (before its final model was saved): fit then restores that backup,
    trains no epoch, and the run saves its final model."""
    data_epochs = math.ceil(total_steps / data_steps)
    start_epoch, skip = divmod(min(consumed, total_steps), data_steps)
    if start_epoch >= data_epochs:
        start_epoch, skip = data_epochs - 1, data_steps  # the last epoch with all of its batches passed over
    extra = {"augment": job.recipe["data"]["augment"]} if job.is_image else \
        {"bucket_pool": job.recipe["data"]["bucket_pool"]}
    stream = train_data.train_stream(job.batch_size, data_epochs, seed=job.recipe["training"]["seed"],
                                     start_epoch=start_epoch, skip_batches=skip, **extra)
    # An unknown cardinality, so that Keras keeps one iterator over the whole stream. With a known one (image
    # pipelines: no filtering or bucketing) Keras counts the steps it hands out, including the ones a resumed
    # run passes over without reading a batch (ResumableBackup), and stops the epoch early ("ran out of data").
    return stream.filter(lambda *_: True)
