"""The training job behind `tfmodels train / evaluate / export`: a recipe -> tokenizer, data, model, strategy,
`model.fit` with callbacks, evaluation, best-model export, and a smoke test of the export in a fresh process.

Run directory (training.output_dir, default runs/<recipe name>):
    recipe.json        the resolved recipe (defaults and --set overrides applied)
    checkpoints/       BackupAndRestore state every training.checkpoint_every steps (removed when training ends)
    best/              save_pretrained of the best model by training.monitor (+ tokenizer files)
    final/             save_pretrained at the end of training (+ tokenizer files)
    history.csv, logs/ per-epoch metrics (CSV) and TensorBoard logs
    metrics.json       evaluation of the exported model on data.test (or data.validation)
    export/1/          the SavedModel for TF Serving
"""
import json
import math
import os
import subprocess
import sys
import time

import keras
import tensorflow as tf

from tfmodels.core import hub
from tfmodels.core.layers import dtype_policy_scope
from tfmodels.core.logging import logger
from tfmodels.registry import get_family, resolve_config_path
from tfmodels.training import callbacks as cb
from tfmodels.training import data as data_lib
from tfmodels.training import evaluation, exporting, readers
from tfmodels.training.metrics import fit_metrics
from tfmodels.training.optimization import build_optimizer

DEFAULT_MONITOR = {"sequence-classification": ("val_accuracy", "max"), "image-classification": ("val_accuracy", "max"),
                   "multiple-choice": ("val_accuracy", "max"), "token-classification": ("val_f1", "max"),
                   "question-answering": ("val_f1", "max"), "masked-lm": ("val_loss", "min"),
                   "semantic-segmentation": ("val_mean_iou", "max")}
IMAGE_TASKS = ("image-classification", "semantic-segmentation", "masked-image-modeling")
POLICIES = {"bf16": "mixed_bfloat16", "mixed_bfloat16": "mixed_bfloat16", "fp16": "mixed_float16",
            "mixed_float16": "mixed_float16"}


def _json_default(value):
    return str(value)


class Job:
    """Everything a recipe describes, built lazily."""

    def __init__(self, recipe):
        self.recipe = recipe
        self.task = recipe["model"]["task"]
        self.base_dir = os.path.dirname(recipe.get("_path", "")) or None
        self.output_dir = recipe["training"]["output_dir"] or os.path.join("runs", recipe["name"])
        self._pretrained_config = None
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
        if value is None:
            return None
        if value.startswith("assets:"):
            return readers.resolve_path(value)
        for root in (os.getcwd(), self.base_dir and os.path.dirname(os.path.dirname(self.base_dir))):
            if root and os.path.exists(os.path.join(root, value)):
                return os.path.join(root, value)
        return value

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
        return self.task in IMAGE_TASKS

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
        cls = _tokenizer_class(class_name, self.family)
        if path is None and self.pretrained and _has_tokenizer_files(cls, self.pretrained):
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
        columns = self.recipe["data"]["columns"]
        if self.task in ("sequence-classification", "image-classification"):
            if given:
                return [str(x) for x in given]
            if self.task == "image-classification":
                # Class folders: every sub-folder is a class, also when data.limit keeps only the first rows
                # (which come class by class).
                for split in ("train", "test"):
                    folder = self.path(self.recipe["data"][split])
                    if folder and os.path.isdir(folder) and readers.detect_format(folder) == "image_folder":
                        return sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
            rows = self.rows("train") or self.rows("test")
            if rows is None or columns.get("label_column", "label") not in rows[0]:
                return self._config_labels()
            return data_lib.label_names_from(rows, columns.get("label_column", "label"))
        if self.task == "token-classification":
            if given:
                return [str(x) for x in given]
            rows = self.rows("train") or self.rows("test")
            tags = set()
            processor = data_lib.TokenClassificationData(None, [], **columns)
            for row in rows:
                tags.update(str(t) for t in processor.words_and_tags(row)[1])
            return sorted(tags, key=lambda t: (t != "O", t.partition("-")[2], t))
        if self.task == "semantic-segmentation":
            if given:
                return [str(x) for x in given]
            for split in ("train", "test"):
                folder = self.path(self.recipe["data"][split])
                labels_file = os.path.join(os.path.dirname(folder.rstrip("/")), "labels.txt") if folder else None
                if labels_file and os.path.isfile(labels_file):
                    with open(labels_file, encoding="utf-8") as f:
                        return [line.strip() for line in f if line.strip()]
            return self._config_labels()
        return None

    def _config_labels(self):
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
        if self.task == "question-answering":
            overrides.setdefault("num_labels", 2)
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
        if self.is_image:
            settings = self.image_settings()
            dataset = data_lib.ImageDataset(rows, settings, self.task, self.label_names)
        else:
            columns = self.recipe["data"]["columns"]
            cls = data_lib.TEXT_TASKS.get(self.task)
            if cls is None:
                raise ValueError(f"no data pipeline for task {self.task!r}")
            kwargs = dict(max_length=self.max_length(config), **columns)
            if cls in (data_lib.SequenceClassificationData, data_lib.TokenClassificationData):
                kwargs["label_names"] = self.label_names
            if cls is data_lib.MaskedLMData:
                kwargs["mlm_probability"] = self.recipe["data"]["mlm_probability"]
            dataset = data_lib.TextDataset(cls(self.tokenizer, **kwargs), rows, self.pad_multiple(config))
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
            model, info = cls.from_pretrained(source, config=config, dtype=policy, output_loading_info=True,
                                              ignore_mismatched_sizes=True)
            self.loading_info = info
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
        model.compile(optimizer=optimizer, metrics=fit_metrics(self.task, num_labels, channels_first),
                      jit_compile=bool(self.recipe["training"]["jit_compile"]))
        return model

    def monitor(self):
        training = self.recipe["training"]
        default = DEFAULT_MONITOR.get(self.task, ("val_loss", "min"))
        monitor = training["monitor"] or default[0]
        mode = training["monitor_mode"] or ("min" if "loss" in monitor else "max")
        return monitor, mode


def _tokenizer_class(name, family=None):
    import importlib
    modules = ("tfmodels.tokenizers", family.module if family is not None else None,
               "tfmodels.training.word_tokenizer", "tfmodels")
    for module_name in modules:
        if module_name is None:
            continue
        module = importlib.import_module(module_name)
        if hasattr(module, name):
            return getattr(module, name)
    raise ValueError(f"unknown tokenizer class {name!r}")


def _has_tokenizer_files(cls, directory):
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


# ---------------------------------------------------------------------------------------------------------------
# Train


def _save_recipe(job):
    os.makedirs(job.output_dir, exist_ok=True)
    with open(os.path.join(job.output_dir, "recipe.json"), "w", encoding="utf-8") as f:
        json.dump({k: v for k, v in job.recipe.items() if not k.startswith("_")}, f, indent=2, default=_json_default)


def plan_steps(job, train_data):
    training = job.recipe["training"]
    data_steps = train_data.steps(job.batch_size)
    steps_per_epoch = int(training["steps_per_epoch"] or data_steps)
    epochs = int(training["epochs"])
    return data_steps, steps_per_epoch, epochs, steps_per_epoch * epochs


def train_stream(job, train_data, consumed, total_steps, data_steps):
    """The batches still to train on: the data epochs concatenated, starting after `consumed` batches."""
    data_epochs = math.ceil(total_steps / data_steps)
    start_epoch, skip = divmod(consumed, data_steps)
    extra = {"augment": job.recipe["data"]["augment"]} if job.is_image else \
        {"bucket_pool": job.recipe["data"]["bucket_pool"]}
    stream = train_data.train_stream(job.batch_size, data_epochs, seed=job.recipe["training"]["seed"],
                                     start_epoch=start_epoch, skip_batches=skip, **extra)
    # An unknown cardinality, so that Keras keeps one iterator over the whole stream. With a known one (image
    # pipelines: no filtering or bucketing) Keras counts the steps it hands out, including the ones a resumed
    # run passes over without reading a batch (ResumableBackup), and stops the epoch early ("ran out of data").
    return stream.filter(lambda *_: True)


def train(recipe, extra_callbacks=(), evaluate_after=True, export_after=None):
    """Run the recipe's training; returns a summary dict (steps, metrics, paths, timings)."""
    started = time.time()
    # The strategy first: MultiWorkerMirroredStrategy must be created before TensorFlow runs any op.
    strategy_name, strategy = choose_strategy(recipe["training"]["strategy"], recipe["training"]["devices"])
    keras.utils.set_random_seed(int(recipe["training"]["seed"]))
    job = Job(recipe)
    if strategy_name == "multi_worker":
        from tfmodels.training.distributed import train_multi_worker
        summary = train_multi_worker(job, strategy, extra_callbacks)
    else:
        summary = _train_fit(job, strategy, extra_callbacks)
    summary["strategy"] = strategy_name
    summary["train_seconds"] = time.time() - started
    if not is_chief():
        return summary
    return finish(job, summary, evaluate_after, export_after)


def prebuild(model, dataset, batch_size):
    """Build the compiled metrics (and the optimizer) on a real batch before `fit`.

    Under a tf.distribute strategy, Keras' fit builds whatever is unbuilt from a batch it first reduces across
    replicas with MEAN (`_maybe_symbolic_build`), which turns integer ids and labels into floats: the model then
    mistakes class labels for multi-label targets. With everything built beforehand that step has nothing to do.
    """
    batch = next(iter(dataset.epoch(batch_size, shuffle=False)))
    outputs = model(batch, training=False)
    model.compute_metrics(batch, None, outputs)
    model.reset_metrics()
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def _train_fit(job, strategy, extra_callbacks):
    _save_recipe(job)
    with strategy.scope():
        config = job.model_config()
    train_data = job.dataset("train", config)
    validation = job.dataset("validation", config)
    data_steps, steps_per_epoch, epochs, total_steps = plan_steps(job, train_data)
    backup_dir = os.path.join(job.output_dir, "checkpoints")
    epoch, trained = cb.resume_point(backup_dir)
    consumed = epoch * steps_per_epoch + trained
    stream = train_stream(job, train_data, consumed, total_steps, data_steps)
    with strategy.scope():
        model = job.build_model(config, job.policy())
        job.compile(model, total_steps)
        prebuild(model, train_data, job.batch_size)
    monitor, mode = job.monitor()
    callbacks = []
    if validation is not None:
        callbacks.append(cb.EvaluationCallback(validation, job.task, job.eval_batch_size, job.tokenizer,
                                               job.label_names))
    callbacks += [
        cb.ResumableBackup(backup_dir, save_freq=int(job.recipe["training"]["checkpoint_every"]),
                           steps_per_epoch=steps_per_epoch),
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.CSVLogger(os.path.join(job.output_dir, "history.csv"), append=True),
    ]
    if validation is not None:
        callbacks.append(cb.BestModelCheckpoint(os.path.join(job.output_dir, "best"), monitor, mode,
                                                job.preprocessor))
    if job.recipe["training"]["tensorboard"]:
        callbacks.append(cb.TensorBoardScalars(os.path.join(job.output_dir, "logs")))
    callbacks += list(extra_callbacks)
    logger.info(f"training {type(model).__name__} ({model.num_parameters():,} parameters) on "
                f"{train_data.num_examples} examples: {epochs} epochs x {steps_per_epoch} steps, batch "
                f"{job.batch_size}, strategy {type(strategy).__name__} ({strategy.num_replicas_in_sync} replicas)")
    history = model.fit(stream, epochs=epochs, steps_per_epoch=steps_per_epoch, callbacks=callbacks,
                        verbose=job.recipe["training"]["verbose"], shuffle=False)
    final_dir = os.path.join(job.output_dir, "final")
    model.save_pretrained(final_dir)
    if job.preprocessor is not None:
        job.preprocessor.save_pretrained(final_dir)
    return {"steps": int(model.optimizer.iterations.numpy()), "planned_steps": total_steps,
            "history": {k: [float(x) for x in v] for k, v in history.history.items()},
            "final_dir": final_dir, "model": model, "config": config}


def finish(job, summary, evaluate_after=True, export_after=None):
    """Evaluate the best (or final) model on the test split and export it, in float32 and outside any strategy."""
    best_dir = os.path.join(job.output_dir, "best")
    use_best = job.recipe["export"]["use_best"] and os.path.isfile(os.path.join(best_dir, "config.json"))
    source = best_dir if use_best else summary["final_dir"]
    summary["evaluated_from"] = source
    model = None
    if evaluate_after or (job.recipe["export"]["enabled"] if export_after is None else export_after):
        model = job.family.head_class(job.task).from_pretrained(source)
    if evaluate_after:
        split = "test" if job.recipe["data"]["test"] else "validation" if job.recipe["data"]["validation"] else None
        if split is not None:
            results = evaluation.evaluate(model, job.dataset(split, model.config), job.task, job.eval_batch_size,
                                          job.tokenizer, job.label_names)
            summary["metrics"] = {f"{split}_{k}": v for k, v in results.items()}
            with open(os.path.join(job.output_dir, "metrics.json"), "w", encoding="utf-8") as f:
                json.dump(summary["metrics"], f, indent=2)
            print(f"{split}: " + ", ".join(f"{k} {v:.4f}" for k, v in results.items()), flush=True)
    if job.recipe["export"]["enabled"] if export_after is None else export_after:
        summary["export_dir"] = export(job, model)
        if job.recipe["export"]["smoke_test"]:
            summary["smoke_test"] = smoke_test(job, summary["export_dir"])
    summary.pop("model", None)
    return summary


def export(job, model, path=None):
    path = path or job.path(job.recipe["export"]["path"]) or os.path.join(job.output_dir, "export", "1")
    max_length = job.recipe["export"]["max_length"] or (None if job.is_image else job.max_length(model.config))
    signatures = exporting.export_job_model(
        model, path, job.task, job.family, job.label_names, job.tokenizer, max_length,
        job.image_settings() if job.is_image else None)
    print(f"exported {path} ({', '.join(signatures)})", flush=True)
    return path


def smoke_test(job, export_dir, limit=5):
    """Reload the SavedModel in a fresh process (`tfmodels predict`) and print its predictions."""
    split = next((s for s in ("test", "validation", "train") if job.recipe["data"][s]), None)
    command = [sys.executable, "-m", "tfmodels", "predict", export_dir, "--limit", str(limit)]
    examples = job.recipe["predict"]["examples"]
    if examples:
        for example in examples:
            command += ["--text", example]
    else:
        command += ["--input", job.path(job.recipe["data"][split])]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), env.get("PYTHONPATH")] if p)
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    print(f"fresh-process prediction with the SavedModel ({' '.join(command[1:4])} ...):")
    print(result.stdout.rstrip())
    if result.returncode != 0:
        raise RuntimeError(f"the exported model failed in a fresh process:\n{result.stderr[-3000:]}")
    return result.stdout


# ---------------------------------------------------------------------------------------------------------------
# Evaluate / export from a checkpoint


def evaluate_checkpoint(recipe, checkpoint, split="test"):
    job = Job(recipe)
    model = job.family.head_class(job.task).from_pretrained(checkpoint)
    dataset = job.dataset(split, model.config)
    if dataset is None:
        raise ValueError(f"the recipe has no data.{split}")
    if job.tokenizer is not None and _has_tokenizer_files(type(job.tokenizer), checkpoint):
        job._tokenizer = type(job.tokenizer).from_pretrained(checkpoint)
    return evaluation.evaluate(model, dataset, job.task, job.eval_batch_size, job.tokenizer, job.label_names)


def export_checkpoint(recipe, checkpoint, path):
    job = Job(recipe)
    model = job.family.head_class(job.task).from_pretrained(checkpoint)
    if job.tokenizer is not None and _has_tokenizer_files(type(job.tokenizer), checkpoint):
        job._tokenizer = type(job.tokenizer).from_pretrained(checkpoint)
    return export(job, model, path)
