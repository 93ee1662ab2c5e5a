"""The platform wheel: built from the checkout, installed into a fresh virtual environment where no C++ compiler
is on PATH, its own compiled ops run YOSO, MRA and Longformer (op mode custom) and agree with the pure-TF twins."""
import configparser
import glob
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import build_backend
import pytest

from tfmodels.ops import loader

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOLERANCE = 1e-5  # the model tests' op-vs-twin tolerance (max abs difference), e.g. tests/models/mra

# Runs in the venv. Prints one JSON line: where tfmodels came from, and per model the library its custom op
# loaded and the largest difference from the twin, or why the custom op is unavailable.
_CHILD = """
import json, os, shutil, sys
import numpy as np
assert shutil.which("g++") is None, shutil.which("g++")
import tfmodels
from tfmodels.ops import dispatch, loader

configs = sys.argv[1]
rng = np.random.RandomState(0)


def inputs(length, vocab_size, global_first=False):
    ids = rng.randint(3, vocab_size, (2, length)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, length // 2:] = 0  # a padded example: the ops' masking path too
    ids[mask == 0] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    if global_first:
        batch["global_attention_mask"] = np.eye(1, length, dtype=np.int32).repeat(2, 0)
    return batch


models = [  # YOSO's sampled path is the one with the LSH ops (its inference hashes with a fixed seed)
    ("yoso", "lsh", tfmodels.YosoConfig, tfmodels.YosoModel, dict(use_expectation=False), inputs(48, 99)),
    ("mra", "block_sparse", tfmodels.MraConfig, tfmodels.MraModel, {}, inputs(100, 1000)),
    ("longformer", "sliding_window", tfmodels.LongformerConfig, tfmodels.LongformerModel, {},
     inputs(40, 1000, global_first=True)),
]
results = []
for name, family, config_class, model_class, overrides, batch in models:
    model = model_class(config_class.from_pretrained(os.path.join(configs, f"{name}-tiny.json"), **overrides))
    try:
        with dispatch.op_mode("custom"):
            custom = model(**batch, training=False).last_hidden_state.numpy()
    except RuntimeError as error:
        results.append({"model": name, "error": str(error)})
        continue
    with dispatch.op_mode("reference"):
        twin = model(**batch, training=False).last_hidden_state.numpy()
    results.append({"model": name, "family": family, "library": loader.OpLibrary.get(family).path,
                    "difference": float(np.abs(custom - twin).max())})
print(json.dumps({"tfmodels": tfmodels.__file__, "results": results}))
"""


def _copy_checkout(destination):
    """What the wheel is built from, copied out of the checkout: an in-place build would write build/ and
    *.egg-info into the working tree that other processes use."""
    os.makedirs(destination)
    for name in ("setup.py", "setup.cfg", "pyproject.toml", "build_backend.py", "MANIFEST.in", "README.md"):
        shutil.copy(os.path.join(ROOT, name), destination)
    for name in ("tfmodels", "custom_ops"):
        shutil.copytree(os.path.join(ROOT, name), os.path.join(destination, name),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"))


def _run(command, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.mark.slow
def test_wheel_runs_its_compiled_ops_without_a_compiler(tmp_path):
    source, dist, venv = tmp_path / "source", tmp_path / "dist", tmp_path / "venv"
    _copy_checkout(source)
    # The TensorFlow installed here, not a second download into an isolated build environment (build_backend.py).
    _run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(dist)],
         timeout=1800)
    [wheel] = glob.glob(str(dist / "*.whl"))

    # A platform wheel for this Python, with both builds of every family and the complete sources.
    python_tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    platform_tag = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    assert os.path.basename(wheel).endswith(f"-{python_tag}-{python_tag}-{platform_tag}.whl"), wheel
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    families = loader.families()
    assert {"block_sparse", "lsh", "sliding_window"} <= set(families)
    assert {f"tfmodels/_compiled_ops/{loader.prebuilt_name(family, target)}" for family in families
            for target in loader.PREBUILT_TARGETS} <= names
    sources = {os.path.relpath(path, source).replace("custom_ops", "tfmodels/_custom_ops", 1)
               for pattern in ("*.cc",) + loader.HEADER_PATTERNS
               for path in glob.glob(os.path.join(source, "custom_ops", "*", pattern))}
    assert any(path.endswith(".cuh") for path in sources) and sources <= names, sources - names

    # A fresh venv that sees the installed TensorFlow (no second download) but gets tfmodels from the wheel.
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)])
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index", "--force-reinstall",
          wheel])

    def run_child(target=None):
        env = {"PATH": str(venv / "bin"), "HOME": str(tmp_path / "home"),
               "TFMODELS_OPS_CACHE": str(tmp_path / "cache"), "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
        if target:
            env["TFMODELS_OPS_MARCH"] = target
        os.makedirs(tmp_path / "cwd", exist_ok=True)  # not the checkout: `import tfmodels` must find the wheel
        output = _run([str(venv / "bin" / "python"), "-c", _CHILD, os.path.join(ROOT, "configs")], env=env,
                      cwd=tmp_path / "cwd", timeout=900)
        report = json.loads(output.strip().splitlines()[-1])
        assert report["tfmodels"].startswith(str(venv) + os.sep), report["tfmodels"]
        return report["results"]

    flags = loader.cpu_flags()
    runnable = [target for target, needed in loader.PREBUILT_TARGETS.items() if needed <= flags]
    if not runnable:  # a CPU below x86-64-v3: no compiled op fits and there is no compiler; the reason is given
        for result in run_child():
            assert "lacks the x86-64-v3 features" in result["error"], result
        return
    # First the build the loader picks from the CPU flags (the best one), then the others this CPU runs.
    assert loader.prebuilt_target(flags) == runnable[0]
    for target in runnable:
        results = run_child(target if target != runnable[0] else None)
        assert [result["model"] for result in results] == ["yoso", "mra", "longformer"]
        for result in results:
            assert "error" not in result, result
            assert os.path.dirname(result["library"]).startswith(str(venv) + os.sep), result
            assert os.path.basename(result["library"]) == loader.prebuilt_name(result["family"], target), result
            assert result["difference"] <= TOLERANCE, result


def test_wheel_builds_require_the_pinned_tensorflow():
    """An isolated wheel build installs the TensorFlow that setup.cfg pins (pyproject.toml cannot read it)."""
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    assert build_backend.TENSORFLOW in config["options"]["install_requires"].split("\n")
