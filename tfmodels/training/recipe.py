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
import difflib
import json
import numbers
import os

from tfmodels.registry import ASSETS_DIR, CONFIGS_DIR

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


# The type of each key whose default is None, or that null turns off (optimizer.clipnorm); the others take their
# default's type. "path" is a string naming a file or folder that must exist, "number" an int or a float.
NULLABLE_TYPES = {
    "model.family": str, "model.task": str, "model.config": str, "model.pretrained": str, "model.dtype": str,
    "tokenizer.class": str, "tokenizer.path": "path", "data.format": str, "data.train": "path",
    "data.validation": "path", "data.test": "path", "data.labels": (list, str), "data.pad_to_multiple_of": int,
    "data.eval_batch_size": int, "data.limit": int, "data.eval_limit": int, "optimizer.global_clipnorm": "number",
    "optimizer.clipnorm": "number",
    "schedule.warmup_steps": int, "training.output_dir": str, "training.mixed_precision": str,
    "training.devices": list, "training.monitor": str, "training.monitor_mode": str, "training.steps_per_epoch": int,
    "training.verbose": (str, int), "export.path": str, "export.max_length": int, "name": str,
}
# Counts and sizes that must be at least 1.
POSITIVE = ("data.max_length", "data.batch_size", "data.eval_batch_size", "data.pad_to_multiple_of", "data.limit",
            "data.eval_limit", "data.bucket_pool", "training.epochs", "training.checkpoint_every",
            "training.steps_per_epoch", "export.max_length")


def _unknown_key(key, known, where):
    """The error for a key the recipe does not have, with the closest known key when one is close."""
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"did you mean {where + close[0]!r}? " if close else ""
    return ValueError(f"unknown recipe key {where + key!r}; {hint}known: {', '.join(where + k for k in known)}")


def _merge(base, update, where=""):
    if not isinstance(update, dict):
        raise ValueError(f"recipe {where.rstrip('.') or 'file'} must be a JSON object, got {update!r}")
    result = copy.deepcopy(base)
    for key, value in update.items():
        if key not in base:
            raise _unknown_key(key, base, where)
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
            raise _unknown_key(keys[0], DEFAULTS, "")
        node, defaults = recipe, DEFAULTS
        for i, key in enumerate(keys[:-1]):
            free = isinstance(defaults, dict) and key in ("overrides", "columns", "image")
            if not free and isinstance(defaults, dict) and key not in defaults:
                raise _unknown_key(key, defaults, ".".join(keys[:i]) + "." if i else "")
            node = node.setdefault(key, {})
            defaults = defaults.get(key, {}) if isinstance(defaults, dict) and not free else None
        last = keys[-1]
        if isinstance(defaults, dict) and defaults is not None and last not in defaults and keys[-2:-1] not in (
                ["overrides"], ["columns"], ["image"]):
            raise _unknown_key(last, defaults, ".".join(keys[:-1]) + "." if len(keys) > 1 else "")
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


def _type_name(kind):
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "a string", int: "an integer", float: "a number", "number": "a number", bool: "true or false",
             list: "a list", dict: "an object", "path": "a path (string)"}
    return " or ".join(names[k] for k in kinds)


def _has_type(value, kind):
    if isinstance(kind, tuple):
        return any(_has_type(value, k) for k in kind)
    if kind in (int, "number", float) and isinstance(value, bool):
        return False
    if kind in ("number", float):
        return isinstance(value, numbers.Real)
    return isinstance(value, str if kind == "path" else kind)


def _check_types(recipe, defaults=DEFAULTS, where=""):
    """Each key holds its default's type (None: NULLABLE_TYPES' type, or None); counts are positive."""
    for key, default in defaults.items():
        name, value = where + key, recipe.get(key)
        if isinstance(default, dict) and default and key not in ("overrides", "columns", "image"):
            _check_types(value, default, name + ".")
            continue
        kind = NULLABLE_TYPES.get(name, type(default) if default is not None else None)
        if value is None and (default is None or name in NULLABLE_TYPES) or kind is None:
            continue
        if not _has_type(value, kind):
            raise ValueError(f"recipe key {name!r} must be {_type_name(kind)}, got {value!r}")
        if name in POSITIVE and value < 1:
            raise ValueError(f"recipe key {name!r} must be at least 1, got {value!r}")


def resolve_recipe_path(value, recipe_path):
    """Where a path of the recipe at `recipe_path` points: `assets:` data, else from the current directory, else
    from two levels above the recipe's folder (the repository root for configs/recipes/); `value` itself when it
    is found nowhere. The job (training.job.Job.path) and the validation below both use it."""
    if value.startswith("assets:"):
        return os.path.join(ASSETS_DIR, value[len("assets:"):])
    roots = (os.getcwd(), os.path.dirname(os.path.dirname(os.path.dirname(recipe_path))) if recipe_path else None)
    for root in roots:
        if root and os.path.exists(os.path.join(root, value)):
            return os.path.join(root, value)
    return value


def _path_exists(value, recipe_path):
    return os.path.exists(resolve_recipe_path(value, recipe_path))


def _check_paths(recipe):
    for name in [k for k, kind in NULLABLE_TYPES.items() if kind == "path"] + ["data.labels"]:
        section, key = name.split(".")
        value = recipe[section][key]
        if isinstance(value, str) and not _path_exists(value, recipe.get("_path")):
            raise FileNotFoundError(f"recipe key {name!r}: no file or folder {value!r}")


def validate(recipe):
    from tfmodels.registry import TASKS, resolve_config_path
    _check_types(recipe)
    _check_paths(recipe)
    model = recipe["model"]
    if model["config"] and not model["pretrained"] and not _path_exists(model["config"], recipe.get("_path")):
        try:
            resolve_config_path(model["config"])
        except FileNotFoundError as error:
            raise FileNotFoundError(f"recipe key 'model.config': {error}") from None
    if not model["task"] or model["task"] not in TASKS:
        raise ValueError(f"model.task must be one of {', '.join(TASKS)}, got {model['task']!r}")
    if not model["family"] and not model["pretrained"]:
        raise ValueError("the recipe needs model.family (or model.pretrained, whose config names the family)")
    if not model["config"] and not model["pretrained"]:
        raise ValueError("the recipe needs model.config (a configs/ name or file) or model.pretrained")
    if not recipe["data"]["train"] and not recipe["data"]["test"]:
        raise ValueError("the recipe needs data.train (or data.test for evaluation only)")
    training = recipe["training"]
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
