"""Malformed recipes through the `tfmodels` command (issue 20): each one ends with one error line on stderr that
names the recipe key or the file, a non-zero exit and no traceback; `--debug` shows the traceback.

Two cases run the real command in a fresh process; the others call `tfmodels.cli.main` (what the command runs)
in the test process to keep CI time down."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfmodels import cli
from tfmodels.registry import REPO_DIR

SENTIMENT = {"model": {"family": "xlm-roberta-xl", "task": "sequence-classification", "config": "xlm-roberta-xl-tiny"},
             "data": {"train": "assets:data/sentiment/train.jsonl", "labels": ["negative", "positive"],
                      "max_length": 16, "batch_size": 4, "limit": 8},
             "training": {"epochs": 1}, "export": {"enabled": False}}
# TensorFlow's own start-up lines (absl logging before it is initialised: not switched off by TF_CPP_MIN_LOG_LEVEL).
TF_NOISE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)|[IWE]\d{4} \d\d:\d\d:)")


def write_recipe(tmp_path, recipe, name="recipe.json"):
    path = tmp_path / name
    path.write_text(recipe if isinstance(recipe, str) else json.dumps(recipe), encoding="utf-8")
    return str(path)


def with_changes(section, **values):
    recipe = json.loads(json.dumps(SENTIMENT))
    recipe.setdefault(section, {}).update(values)
    return recipe


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.strip() and not TF_NOISE.match(line)]


def run_main(capsys, argv):
    code = cli.main(argv)
    lines = error_lines(capsys.readouterr().err)
    return code, lines


def assert_one_error(code, lines, *expected):
    assert code != 0
    assert len(lines) == 1, lines
    assert lines[0].startswith("tfmodels train: error: "), lines[0]
    assert "Traceback" not in lines[0]
    for text in expected:
        assert text in lines[0], lines[0]


@pytest.mark.slow
def test_the_command_prints_one_line_and_debug_the_traceback(tmp_path):
    path = write_recipe(tmp_path, with_changes("training", epochs="3"))
    env = dict(os.environ, PYTHONPATH=REPO_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))
    plain = subprocess.run([sys.executable, "-m", "tfmodels", "train", path], capture_output=True, text=True,
                           env=env, cwd=str(tmp_path), timeout=600)
    assert_one_error(plain.returncode, error_lines(plain.stderr), "'training.epochs'", "must be an integer",
                     "'3'", "--debug")
    assert "Traceback" not in plain.stderr and plain.stdout == ""
    debug = subprocess.run([sys.executable, "-m", "tfmodels", "train", path, "--debug"], capture_output=True,
                           text=True, env=env, cwd=str(tmp_path), timeout=600)
    assert debug.returncode != 0
    assert "Traceback (most recent call last)" in debug.stderr and "training.epochs" in debug.stderr


@pytest.mark.parametrize("recipe, expected", [
    ('{"model": {"family": "xlm-roberta-xl",}', ["not valid JSON", "recipe.json"]),
    ("[1, 2]", ["must be a JSON object"]),
    ({**SENTIMENT, "trainig": {"epochs": 1}}, ["unknown recipe key 'trainig'", "did you mean 'training'"]),
    (with_changes("training", epoch=1), ["unknown recipe key 'training.epoch'", "did you mean 'training.epochs'"]),
    (with_changes("data", batch_size="16"), ["'data.batch_size' must be an integer", "'16'"]),
    (with_changes("data", max_length=0), ["'data.max_length' must be at least 1"]),
    (with_changes("optimizer", learning_rate="fast"), ["'optimizer.learning_rate' must be a number"]),
    (with_changes("export", enabled="no"), ["'export.enabled' must be true or false"]),
    (with_changes("data", labels=7), ["'data.labels' must be a list or a string"]),
    (with_changes("model", task="sequence-clasification"), ["model.task must be one of"]),
    (with_changes("data", train="does/not/exist.jsonl"), ["'data.train'", "does/not/exist.jsonl"]),
    (with_changes("model", config="no-such-config"), ["'model.config'", "no-such-config"]),
])
def test_malformed_recipes(tmp_path, capsys, recipe, expected):
    code, lines = run_main(capsys, ["train", write_recipe(tmp_path, recipe)])
    assert_one_error(code, lines, *expected)


def test_bad_overrides_and_missing_recipe(tmp_path, capsys):
    path = write_recipe(tmp_path, SENTIMENT)
    assert_one_error(*run_main(capsys, ["train", path, "--set", "training.epoch=1"]), "did you mean 'training.epochs'")
    assert_one_error(*run_main(capsys, ["train", path, "--set", "trainng.epochs=1"]), "did you mean 'training'")
    assert_one_error(*run_main(capsys, ["train", path, "--set", "data.batch_size=[1]"]), "'data.batch_size'")
    assert_one_error(*run_main(capsys, ["train", str(tmp_path / "nope.json")]), "no recipe", "nope.json")


@pytest.mark.slow
def test_bad_data(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    recipe = with_changes("data", train=str(empty))
    assert_one_error(*run_main(capsys, ["train", write_recipe(tmp_path, recipe)]), str(empty), "no examples")

    rows = [{"text": "good", "label": "positive"}, {"text": "bad", "label": "negative"},
            {"text": "what?", "label": "maybe"}]
    data = tmp_path / "labels.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    recipe = with_changes("data", train=str(data))
    assert_one_error(*run_main(capsys, ["train", write_recipe(tmp_path, recipe)]), "example 3",
                     "label 'maybe' is not one of the labels")

    data.write_text(json.dumps({"sentence": "no text column", "label": "positive"}) + "\n", encoding="utf-8")
    assert_one_error(*run_main(capsys, ["train", write_recipe(tmp_path, recipe)]), "example 1",
                     "no column 'text'", "data.columns")

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "ok", "label": "positive"}\n{"text": \n', encoding="utf-8")
    recipe = with_changes("data", train=str(broken))
    assert_one_error(*run_main(capsys, ["train", write_recipe(tmp_path, recipe)]), "broken.jsonl:2", "not JSON")


@pytest.mark.slow
def test_images_with_the_wrong_number_of_channels(tmp_path, capsys):
    for label, channels in (("circle", 3), ("square", 1)):
        folder = tmp_path / "images" / label
        folder.mkdir(parents=True)
        for i in range(2):
            pixels = np.full([16, 16, channels], 40 * (i + 1), np.uint8)
            (folder / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    recipe = {"model": {"family": "beit", "task": "image-classification", "config": "beit-tiny",
                        "overrides": {"image_size": 16, "patch_size": 8, "num_channels": 3}},
              "data": {"train": str(tmp_path / "images"), "batch_size": 4, "image": {"image_size": 16}},
              "training": {"epochs": 1, "output_dir": str(tmp_path / "run")}, "export": {"enabled": False}}
    code, lines = run_main(capsys, ["train", write_recipe(tmp_path, recipe), "--no-eval"])
    assert_one_error(code, lines, "3 channels", "square")
