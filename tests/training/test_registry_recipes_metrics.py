"""The family registry, recipes and overrides, the CLI's commands that need no training, metrics and schedule."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfmodels import registry
from tfmodels.training import metrics, recipe as recipe_lib
from tfmodels.training.optimization import WarmupDecay

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_cli(*args):
    """`tfmodels ARGS` in this process (the console script calls the same main)."""
    import contextlib
    import io
    from tfmodels import cli
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(args))
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return Result(code, out.getvalue(), err.getvalue())


def test_python_m_tfmodels_runs_the_cli():
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-m", "tfmodels", "--version"], capture_output=True, text=True,
                            env=env, timeout=300, cwd=ROOT)
    assert result.returncode == 0 and result.stdout.startswith("tfmodels ")


# ---------------------------------------------------------------------------------------------------------------
# Registry


def test_registry_discovers_families_from_their_spec_line():
    spec = registry.get_family("xlm-roberta-xl")
    assert registry.get_family("XLMRobertaXL") is spec and registry.get_family("xlm_roberta_xl") is spec
    assert spec.module == "tfmodels.models.xlm_roberta_xl"
    assert spec.tasks() == ["base", "sequence-classification", "token-classification", "question-answering",
                            "masked-lm", "multiple-choice", "causal-lm"]
    import tfmodels
    assert spec.head_class("question-answering") is tfmodels.XLMRobertaXLForQuestionAnswering
    assert spec.config_class is tfmodels.XLMRobertaXLConfig
    assert "xlm-roberta-xl-tiny" in spec.configs()
    assert type(spec.default_tokenizer()).__name__ == "XLMRobertaTokenizer"
    assert "__family__" not in dir(tfmodels)  # the spec is not exported by `import *`
    with pytest.raises(ValueError, match="no image-classification head"):
        spec.head_class("image-classification")
    with pytest.raises(ValueError, match="unknown model family"):
        registry.get_family("not-a-family")


def test_pad_multiple_rules():
    class Config:
        attention_window = [16, 32]
        block_size = 8

    assert registry.FamilySpec("a", "A").pad_multiple(Config) == 1
    assert registry.FamilySpec("a", "A", pad_to_multiple_of=64).pad_multiple(Config) == 64
    assert registry.FamilySpec("a", "A", pad_to_multiple_of="attention_window").pad_multiple(Config) == 32
    assert registry.FamilySpec("a", "A", pad_to_multiple_of="block_size").pad_multiple(Config) == 8
    assert registry.FamilySpec("a", "A", pad_to_multiple_of=lambda c: 2 * c.block_size).pad_multiple(Config) == 16


def test_max_positions():
    import tfmodels
    config = tfmodels.XLMRobertaXLConfig(max_position_embeddings=130, pad_token_id=1)
    assert registry.get_family("xlm-roberta-xl").max_positions(config) == 128
    assert registry.FamilySpec("a", "A").max_positions(config) == 130
    assert registry.FamilySpec("a", "A", max_length=64).max_positions(config) == 64
    assert registry.get_family("xlnet").max_positions(tfmodels.XLNetConfig()) is None  # no limit (reports -1)


# ---------------------------------------------------------------------------------------------------------------
# Recipes


def test_every_bundled_recipe_loads_and_names_a_known_family():
    names = [name for name, *_ in recipe_lib.list_recipes()]
    assert {"listops-xlm-roberta-xl", "demo-xlm-roberta-xl-sentiment", "ner-xlm-roberta-xl", "qa-xlm-roberta-xl",
            "mlm-xlm-roberta-xl", "multiple-choice-xlm-roberta-xl", "image-classification-beit",
            "semantic-segmentation-beit"} <= set(names)
    tasks = set()
    for name in names:
        recipe = recipe_lib.load_recipe(name)
        tasks.add(recipe["model"]["task"])
        spec = registry.get_family(recipe["model"]["family"])
        assert recipe["model"]["task"] in spec.tasks(), name
        registry.resolve_config_path(recipe["model"]["config"])
    assert tasks == {"sequence-classification", "token-classification", "question-answering", "masked-lm",
                     "multiple-choice", "image-classification", "semantic-segmentation"}


def test_overrides():
    recipe = recipe_lib.load_recipe("listops-xlm-roberta-xl", [
        "training.epochs=1", "data.labels=[\"a\",\"b\"]", "model.overrides.hidden_size=32",
        "training.output_dir=/tmp/x", "training.mixed_precision=bf16", "data.validation=null"])
    assert recipe["training"]["epochs"] == 1 and recipe["data"]["labels"] == ["a", "b"]
    assert recipe["model"]["overrides"]["hidden_size"] == 32 and recipe["training"]["output_dir"] == "/tmp/x"
    assert recipe["training"]["mixed_precision"] == "bf16" and recipe["data"]["validation"] is None
    assert recipe["model"]["overrides"]["num_hidden_layers"] == 2  # the file's other overrides stay
    with pytest.raises(ValueError, match="unknown recipe key 'training.epoch'"):
        recipe_lib.load_recipe("listops-xlm-roberta-xl", ["training.epoch=1"])
    with pytest.raises(ValueError, match="epochs"):
        recipe_lib.load_recipe("listops-xlm-roberta-xl", ["training.epochs=0"])
    with pytest.raises(FileNotFoundError, match="no recipe"):
        recipe_lib.load_recipe("nope")


# ---------------------------------------------------------------------------------------------------------------
# CLI without training


def test_cli_help_teaches_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("train", "evaluate", "predict", "export", "convert", "bench", "build-ops", "list", "--set",
                    "TF_CONFIG", "MultiWorkerMirroredStrategy"):
        assert command in result.stdout, command
    for command in ("train", "convert", "predict"):
        sub = run_cli(command, "--help")
        assert sub.returncode == 0 and "usage: tfmodels " + command in sub.stdout


def test_cli_list_bench_and_build_ops():
    listed = run_cli("list")
    assert listed.returncode == 0
    assert "head    sequence-classification  XLMRobertaXLForSequenceClassification" in listed.stdout
    assert "config  xlm-roberta-xl-tiny" in listed.stdout and "listops-xlm-roberta-xl" in listed.stdout
    bench = run_cli("bench")
    assert bench.returncode == 0 and "xlm_roberta_xl" in bench.stdout
    assert run_cli("bench", "nope").returncode != 0
    built = run_cli("build-ops", "--cuda", "no")
    assert built.returncode == 0, built.stderr[-2000:]
    bad = run_cli("train", "listops-xlm-roberta-xl", "--set", "training.epoch=1")
    assert bad.returncode == 2 and "unknown recipe key" in bad.stderr


def test_cli_convert_reports_loading_and_saves_our_format(tmp_path):
    transformers = pytest.importorskip("transformers", reason="the HF reference writes the checkpoint to convert")
    from tests import helpers
    config = transformers.XLMRobertaXLConfig(vocab_size=99, hidden_size=16, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=20,
                                             max_position_embeddings=40, num_labels=3)
    helpers.hf_checkpoint(transformers.XLMRobertaXLForSequenceClassification, config, str(tmp_path / "hf"))
    result = run_cli("convert", str(tmp_path / "hf"), str(tmp_path / "ours"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "XLMRobertaXLForSequenceClassification: mapped" in result.stdout
    assert "missing: 0, unexpected: 0, mismatched: 0" in result.stdout
    assert os.path.isfile(tmp_path / "ours" / "model.weights.h5")
    as_mlm = run_cli("convert", str(tmp_path / "hf"), str(tmp_path / "mlm"), "--task", "masked-lm", "--strict")
    assert as_mlm.returncode == 1 and "missing from the checkpoint" in as_mlm.stdout


# ---------------------------------------------------------------------------------------------------------------
# Metrics and schedule


def test_entity_and_squad_scores():
    assert metrics.bio_spans(["B-PER", "I-PER", "O", "B-LOC", "I-ORG"]) == [("PER", 0, 1), ("LOC", 3, 3),
                                                                             ("ORG", 4, 4)]
    scores = metrics.entity_scores([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "O"]])
    assert scores == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3)}
    assert metrics.squad_scores(["The Paris", "red car"], [["Paris"], ["blue car"]]) == {
        "exact_match": 50.0, "f1": pytest.approx(75.0)}
    assert metrics.best_span([0, 5, 1, 0], [0, 0, 1, 9], 1, 3) == (1, 3)
    assert metrics.best_span([0, 5, 1, 0], [0, 0, 1, 9], 1, 3, max_answer_length=2) == (2, 3)


def test_streaming_metrics_match_numpy():
    rng = np.random.RandomState(0)
    labels, logits = rng.randint(0, 4, 64), rng.randn(64, 4).astype(np.float32)
    f1 = metrics.MacroF1(4)
    f1.update_state(labels[:30], logits[:30])
    f1.update_state(labels[30:], logits[30:])
    assert float(f1.result()) == pytest.approx(metrics.accuracy_and_macro_f1(labels, logits.argmax(-1), 4)["f1"],
                                               abs=1e-6)
    seg_labels = rng.randint(0, 3, (2, 8, 8))
    seg_labels[0, 0, :] = 255
    seg_logits = rng.randn(2, 3, 4, 4).astype(np.float32)  # channels-first, 1/2 resolution
    miou = metrics.SegmentationMeanIoU(3)
    miou.update_state(seg_labels, seg_logits)
    upsampled = tf.image.resize(seg_logits.transpose(0, 2, 3, 1), [8, 8]).numpy().argmax(-1)
    assert float(miou.result()) == pytest.approx(metrics.mean_iou(seg_labels, upsampled, 3)["mean_iou"], abs=1e-6)
    accuracy = metrics.MaskedAccuracy()
    accuracy.update_state(np.array([[1, -100, 2]]), np.eye(3, dtype=np.float32)[None, [1, 0, 0]])
    assert float(accuracy.result()) == 0.5


def test_warmup_then_decay():
    linear = WarmupDecay(1.0, total_steps=110, warmup_steps=10, decay="linear")
    values = [float(linear(s)) for s in (0, 4, 9, 10, 60, 110, 200)]
    assert values == pytest.approx([0.1, 0.5, 1.0, 1.0, 0.5, 0.0, 0.0])
    cosine = WarmupDecay(2.0, total_steps=20, warmup_steps=0, decay="cosine", end_ratio=0.5)
    assert float(cosine(10)) == pytest.approx(1.5) and float(cosine(20)) == pytest.approx(1.0)
    assert float(WarmupDecay(3.0, 10, 0, "constant")(7)) == 3.0
