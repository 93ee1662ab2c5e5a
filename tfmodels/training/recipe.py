"""Recipes: JSON files (configs/recipes/*.json) that say what to train and how. Every key has a default here;
a recipe sets what differs, and the command line overrides any key with `--set section.key=value` (the value
is read as JSON when it parses, else taken as a string: `--set training.epochs=1`, `--set data.labels=["a","b"]`,
`--set training.output_dir=/tmp/run`).

Sections:
- model: family (registry name), config (a file or a name in configs/) or pretrained (a directory: ours or an HF
  checkpoint), task, overrides (config keys), dtype.
- tokenizer: class and path (default: the pretrained directory's files, else the family's bundled tokenizer).
- data: train / validation / test paths (`assets:` = bundled data), format, labels, columns, max_length,
  pad_to_multiple_of (default: the family's attention multiple), batch sizes, bucketing, image settings.
- optimizer (AdamW), schedule (warm-up then linear / cosine / constant), training (epochs, seed, output_dir,
  checkpoint_every, mixed_precision, strategy, monitor), export, predict (examples for the smoke test).
"""
import copy
import json
import os

from tfmodels.registry import CONFIGS_DIR

RECIPES_DIR = os.path.join(CONFIGS_DIR, "recipes")

DEFAULTS = {
    "name": None,
    "description": "",
    "model": {"family": None, "task": None, "config": None, "pretrained": None, "overrides": {}, "dtype": None},
    "tokenizer": {"class": None, "path": None},
    "data": {"format": None, "train": None, "validation": None, "test": None, "labels": None, "columns": {},
             "max_length": 512, "pad_to_multiple_of": None, "batch_size": 16, "eval_batch_size": None,
             "bucket_pool": 16, "limit": None, "eval_limit": None, "mlm_probability": 0.15, "augment": False,
             "image": {}},
    "optimizer": {"name": "adamw", "learning_rate": 5e-5, "weight_decay": 0.01, "beta_1": 0.9, "beta_2": 0.999,
                  "epsilon": 1e-8, "clipnorm": 1.0, "global_clipnorm": None},
    "schedule": {"warmup_ratio": 0.1, "warmup_steps": None, "decay": "linear", "end_learning_rate_ratio": 0.0},
    "training": {"epochs": 3, "seed": 0, "output_dir": None, "checkpoint_every": 100, "mixed_precision": None,
                 "strategy": "auto", "devices": None, "monitor": None, "monitor_mode": None, "tensorboard": True, "verbose": "auto",
                 "jit_compile": False, "steps_per_epoch": None},
    "export": {"enabled": True, "path": None, "max_length": None, "use_best": True, "smoke_test": True},
    "predict": {"examples": []},
}


def _merge(base, update, where=""):
    result = copy.deepcopy(base)
    for key, value in update.items():
        if key not in base:
            raise ValueError(f"unknown recipe key {where + key!r}; known: {', '.join(where + k for k in base)}")
        if isinstance(base[key], dict) and base[key] and isinstance(value, dict) and key not in (
                "overrides", "columns", "image"):
            result[key] = _merge(base[key], value, where + key + ".")
        else:
            result[key] = copy.deepcopy(value)
    return result


def parse_value(text):
    try:
        return json.loads(text)
    except ValueError:
        return text


def apply_overrides(recipe, assignments):
    """`["training.epochs=1", "model.overrides.hidden_size=64"]` -> a new recipe."""
    recipe = copy.deepcopy(recipe)
    for assignment in assignments or []:
        if "=" not in assignment:
            raise ValueError(f"--set expects section.key=value, got {assignment!r}")
        path, value = assignment.split("=", 1)
        keys = path.strip().split(".")
        if keys[0] not in DEFAULTS:
            raise ValueError(f"unknown recipe section {keys[0]!r}; sections: {', '.join(DEFAULTS)}")
        node, defaults = recipe, DEFAULTS
        for i, key in enumerate(keys[:-1]):
            free = isinstance(defaults, dict) and key in ("overrides", "columns", "image")
            if not free and isinstance(defaults, dict) and key not in defaults:
                raise ValueError(f"unknown recipe key {'.'.join(keys[:i + 1])!r}")
            node = node.setdefault(key, {})
            defaults = defaults.get(key, {}) if isinstance(defaults, dict) and not free else None
        last = keys[-1]
        if isinstance(defaults, dict) and defaults is not None and last not in defaults and keys[-2:-1] not in (
                ["overrides"], ["columns"], ["image"]):
            raise ValueError(f"unknown recipe key {path!r}; known in {'.'.join(keys[:-1]) or 'recipe'}: "
                             f"{', '.join(defaults)}")
        node[last] = parse_value(value)
    return recipe


def find_recipe(name_or_path):
    if os.path.isfile(name_or_path):
        return name_or_path
    candidate = os.path.join(RECIPES_DIR, name_or_path if name_or_path.endswith(".json") else name_or_path + ".json")
    if os.path.isfile(candidate):
        return candidate
    raise FileNotFoundError(f"no recipe {name_or_path!r} (not a file, and not in {RECIPES_DIR}); "
                            f"`tfmodels list` shows the bundled recipes")


def load_recipe(name_or_path, overrides=None):
    """The full recipe: defaults < file < overrides, validated. `recipe["_path"]` is the file it came from."""
    path = find_recipe(name_or_path)
    with open(path, encoding="utf-8") as f:
        try:
            raw = json.load(f)
        except ValueError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
    recipe = _merge(DEFAULTS, raw)
    recipe = apply_overrides(recipe, overrides)
    recipe["name"] = recipe["name"] or os.path.splitext(os.path.basename(path))[0]
    recipe["_path"] = os.path.abspath(path)
    validate(recipe)
    return recipe


def validate(recipe):
    from tfmodels.registry import TASKS
    model = recipe["model"]
    if not model["task"] or model["task"] not in TASKS:
        raise ValueError(f"model.task must be one of {', '.join(TASKS)}, got {model['task']!r}")
    if not model["family"] and not model["pretrained"]:
        raise ValueError("the recipe needs model.family (or model.pretrained, whose config names the family)")
    if not model["config"] and not model["pretrained"]:
        raise ValueError("the recipe needs model.config (a configs/ name or file) or model.pretrained")
    if not recipe["data"]["train"] and not recipe["data"]["test"]:
        raise ValueError("the recipe needs data.train (or data.test for evaluation only)")
    training = recipe["training"]
    if not isinstance(training["epochs"], int) or training["epochs"] < 1:
        raise ValueError(f"training.epochs must be a positive integer, got {training['epochs']!r}")
    if training["strategy"] not in ("auto", "default", "mirrored", "multi_worker"):
        raise ValueError("training.strategy must be auto, default, mirrored or multi_worker")
    if training["mixed_precision"] not in (None, "bf16", "mixed_bfloat16", "fp16", "mixed_float16"):
        raise ValueError("training.mixed_precision must be null, 'bf16' or 'fp16'")
    if recipe["schedule"]["decay"] not in ("linear", "cosine", "constant"):
        raise ValueError("schedule.decay must be linear, cosine or constant")
    if recipe["optimizer"]["name"] not in ("adamw", "adam", "sgd"):
        raise ValueError("optimizer.name must be adamw, adam or sgd")
    return recipe


def list_recipes():
    """[(name, task, family, description)] of configs/recipes/*.json."""
    found = []
    if not os.path.isdir(RECIPES_DIR):
        return found
    for file_name in sorted(os.listdir(RECIPES_DIR)):
        if file_name.endswith(".json"):
            with open(os.path.join(RECIPES_DIR, file_name), encoding="utf-8") as f:
                raw = json.load(f)
            model = raw.get("model", {})
            found.append((file_name[:-5], model.get("task"), model.get("family"), raw.get("description", "")))
    return found
