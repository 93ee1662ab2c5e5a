"""Issue 20, killed writes: a SIGKILL at any moment of `save_pretrained` (our format and HF's, switching between
them), `export` or a training job leaves the previous copy or the new one, loadable; a killed training run
resumes with no lost step and no repeated batch.

The writers run in tests/hardening/killed_writes_driver.py (ten kills each, at spread-out fractions of a measured
write); what they left is loaded in a fresh process. The unit tests below drive core.atomic's own cases: the
two-rename fallback, a swap killed between its renames, leftovers of killed writes, files kept beside weights.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tfmodels.core import atomic

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(mode, root):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [ROOT_DIR, os.environ.get("PYTHONPATH")] if p))
    result = subprocess.run([sys.executable, "-m", "tests.hardening.killed_writes_driver", mode, str(root)],
                            cwd=ROOT_DIR, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-4000:]


def check_writes(killed, kind):
    """Every killed save / export left the old copy or the new one; a write not killed midway left the new one."""
    attempts = [a for a in killed["writes"] if a["kind"] == kind]
    assert len(attempts) == 10
    found = [a["found"] for a in attempts]
    assert all(f in ("old", "new") for f in found), attempts
    # a kill before the write completed never shows the new copy only partly; one that came after it shows it
    for attempt in attempts:
        if not attempt["killed_midway"]:
            assert attempt["found"] == "new", attempt
        if kind == "export":
            assert attempt["visible_versions"] == ["1"], attempt  # TF Serving sees no half-written version
    if kind == "save":  # every format switch was killed at least once
        assert {(a["previous"], a["new"]) for a in attempts} == {
            ("ours", "hf"), ("hf", "ours"), ("ours-sharded", "hf-sharded"), ("hf-sharded", "ours-sharded"),
            ("hf", "hf-sharded")}


def check_training(killed):
    """The run killed ten times ends with the weights of an uninterrupted one, and logged the same loss and
    metrics at every step."""
    run = killed["training"]
    assert len(run["kills"]) >= 5 and sum(k["killed_midway"] for k in run["kills"]) >= 5, run["kills"]
    # every killed process backed up at least one step before its kill, so each restart resumed further on
    resume_points = [k["resumed_from"] for k in run["kills"]]  # [epoch, steps of it trained]
    assert resume_points[0] == [0, 0] and all(b > a for a, b in zip(resume_points, resume_points[1:])), run["kills"]
    assert run["final_weights_equal"], run["final_max_difference"]
    reference, resumed = run["history"]["reference"], run["history"]["killed"]
    assert [r["epoch"] for r in resumed] == [r["epoch"] for r in reference] == list(range(len(reference)))
    for expected, actual in zip(reference, resumed):  # one step per epoch: the loss of every step
        assert expected.keys() == actual.keys()
        for key in expected:
            assert actual[key] == pytest.approx(expected[key], abs=1e-6), (key, expected, actual)


# One test for all the kills: pytest-xdist hands a module's tests to different workers, and each worker would run
# the kills again for a fixture they shared.
@pytest.mark.slow
def test_killed_writes_leave_old_or_new_copy_and_training_resumes_step_for_step(tmp_path):
    _run("write", tmp_path)
    _run("verify", tmp_path)
    with open(tmp_path / "verified.json") as f:
        killed = json.load(f)
    check_writes(killed, "save")
    check_writes(killed, "export")
    check_training(killed)


# ---------------------------------------------------------------------------------------------------------------
# core.atomic's cases


def _write(folder, files):
    for name, text in files.items():
        with open(os.path.join(folder, name), "w") as f:
            f.write(text)


def _read(folder):
    return {name: open(os.path.join(folder, name)).read() for name in sorted(os.listdir(folder))}


@pytest.mark.parametrize("exchange", [True, False])
def test_replacing_directory_swaps_and_keeps_files(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    path = tmp_path / "ckpt"
    with atomic.replacing_directory(path) as staging:
        _write(staging, {"config.json": "1", "model.safetensors": "w1"})
    _write(path, {"tokenizer.json": "t", "model.safetensors.tmp": "half"})
    with atomic.replacing_directory(path, keep=lambda name: not name.startswith("model.")) as staging:
        _write(staging, {"config.json": "2", "model.weights.h5": "w2"})
    assert _read(path) == {"config.json": "2", "model.weights.h5": "w2", "tokenizer.json": "t"}
    assert os.listdir(tmp_path) == ["ckpt"]  # no temporary folder or backup left behind
    with pytest.raises(RuntimeError):
        with atomic.replacing_directory(path) as staging:
            _write(staging, {"config.json": "3"})
            raise RuntimeError("killed")
    assert _read(path)["config.json"] == "2" and os.listdir(tmp_path) == ["ckpt"]


def test_swap_killed_between_renames_is_read_and_recovered(tmp_path):
    """The two-rename fallback killed after its first rename: only the backup holds a copy."""
    from tfmodels import YosoConfig
    path = tmp_path / "ckpt"
    path.mkdir()
    YosoConfig(num_labels=3).save_pretrained(path)
    os.rename(path, atomic.backup_path(path))
    assert atomic.readable_path(str(path)) == atomic.backup_path(path)
    assert YosoConfig.from_pretrained(os.path.join(atomic.readable_path(str(path)), "config.json")).num_labels == 3
    with atomic.replacing_directory(path) as staging:  # the next write puts the copy back first
        assert os.path.isdir(path) and not os.path.exists(atomic.backup_path(path))
        _write(staging, {"config.json": "{}"})
    assert _read(path) == {"config.json": "{}"}


def test_leftovers_of_killed_writes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = tmp_path / f".ckpt.partial-{dead.stdout.strip()}-x1"
    leftover.mkdir()
    (leftover / "model.safetensors").write_text("half")
    nested = tmp_path / f"..ckpt.partial-{dead.stdout.strip()}-x3.partial-{dead.stdout.strip()}-y"
    nested.mkdir()  # a save_pretrained killed inside the temporary folder of a bigger write (best/, an export)
    ours = tmp_path / f".ckpt.partial-{os.getpid()}-x2"  # a write of this process is never touched
    ours.mkdir()
    with atomic.replacing_directory(tmp_path / "ckpt") as staging:
        _write(staging, {"config.json": "{}"})
    assert sorted(os.listdir(tmp_path)) == sorted([ours.name, "ckpt"])


def test_save_pretrained_keeps_other_files_and_drops_stale_weights(tmp_path):
    from tfmodels import YosoConfig, YosoForSequenceClassification
    model = YosoForSequenceClassification(YosoConfig(vocab_size=40, hidden_size=8, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=16)).build_model()
    model.save_pretrained(tmp_path / "m", hf_format=True, max_shard_size=0.000005)
    (tmp_path / "m" / "tokenizer.json").write_text("{}")
    (tmp_path / "m" / "model.safetensors.tmp").write_text("left by a killed save of an older version")
    model.save_pretrained(tmp_path / "m")
    assert sorted(os.listdir(tmp_path / "m")) == ["config.json", "model.weights.h5", "tokenizer.json"]
    loaded = YosoForSequenceClassification.from_pretrained(tmp_path / "m")
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(model.weights, loaded.weights))
