"""The custom-op machinery: build against the imported TF, cache, load, and the dispatch modes."""
import concurrent.futures
import logging
import os
import shutil
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from tests.ops import cuda_harness
from tfmodels.ops import dispatch, loader

FIXTURES = os.path.join(os.path.dirname(__file__), "fixture_ops")


@pytest.fixture
def fixture_ops(monkeypatch, tmp_path):
    monkeypatch.setenv("TFMODELS_CUSTOM_OPS_DIR", FIXTURES)
    monkeypatch.setenv("TFMODELS_OPS_CACHE", str(tmp_path))
    monkeypatch.setenv("TFMODELS_BUILD_CUDA", "0")
    loader.OpLibrary._registry.clear()
    yield
    loader.OpLibrary._registry.clear()


def test_builds_caches_and_loads(fixture_ops):
    library = loader.OpLibrary.get("addone")
    path = library.build()
    assert os.path.basename(path).startswith(f"_addone_ops-tf{tf.__version__}-cpu-")
    modified = os.path.getmtime(path)
    assert library.build() == path and os.path.getmtime(path) == modified  # cached, not rebuilt
    module = library.load()
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(module.tf_models_test_add_one(x).numpy(), x + 1)
    assert dispatch.use_custom_op("addone")


def test_dispatch_modes_and_fallback_warning(fixture_ops, caplog):
    with dispatch.op_mode("reference"):
        assert not dispatch.use_custom_op("broken")
    assert loader.OpLibrary.get("broken")._tried is False  # reference mode never builds
    with dispatch.op_mode("custom"):
        with pytest.raises(RuntimeError, match="'broken' custom op is unavailable.*compiling failed"):
            dispatch.use_custom_op("broken")
    logger = logging.getLogger("tfmodels")
    logger.propagate = True
    try:
        with caplog.at_level(logging.WARNING, logger="tfmodels"):
            assert not dispatch.use_custom_op("broken")
            assert not dispatch.use_custom_op("broken")
    finally:
        logger.propagate = False
    warnings = [r for r in caplog.records if "pure-TensorFlow twin" in r.getMessage()]
    assert len(warnings) == 1 and "'broken'" in warnings[0].getMessage()


def test_xla_always_uses_the_twin(fixture_ops):
    seen = []

    @tf.function(jit_compile=True)
    def compiled(x):
        seen.append(dispatch.use_custom_op("addone"))
        return x + 1

    compiled(tf.constant(1.0))
    assert seen == [False]
    with dispatch.op_mode("custom"):
        with pytest.raises(RuntimeError, match="XLA"):
            tf.function(lambda x: dispatch.use_custom_op("addone") and x, jit_compile=True)(tf.constant(1.0))


def test_cache_key_covers_every_family_header(monkeypatch, tmp_path):
    """Editing any header of a family (CUDA .cuh included) changes the cached library's key: it is rebuilt."""
    root = tmp_path / "ops"
    shutil.copytree(FIXTURES, root)
    monkeypatch.setenv("TFMODELS_CUSTOM_OPS_DIR", str(root))
    monkeypatch.setenv("TFMODELS_OPS_CACHE", str(tmp_path / "cache"))
    loader.OpLibrary._registry.clear()
    library = loader.OpLibrary.get("addone")
    paths = []
    for header, text in (("kernels.h", "// 1"), ("kernels.h", "// 2"), ("kernels.cuh", "// 1"),
                         ("kernels.cuh", "// 2")):
        (root / "addone" / header).write_text(text)
        paths.append(library.library_path(with_cuda=False))
    assert len(set(paths)) == len(paths)
    loader.OpLibrary._registry.clear()


def test_bad_mode_is_rejected():
    with pytest.raises(ValueError, match="op mode"):
        dispatch.set_op_mode("fast")


@pytest.mark.skipif(not cuda_harness.nvcc_available(), reason="nvcc is not installed on this machine")
def test_cuda_sources_compile_with_nvcc(tmp_path):
    """Every CUDA source (TF GPU kernels, the loader's fixture kernel and the TF-free harnesses) compiles with
    the loader's own nvcc command, which is what `tfmodels build-ops` runs on a GPU machine."""
    sources = [os.path.join(root, f) for base in (cuda_harness.CUSTOM_OPS, FIXTURES) for root, _, files in os.walk(base)
               for f in files if f.endswith(".cu.cc")]
    assert any(s.startswith(FIXTURES) for s in sources)

    def compile_source(numbered):
        number, source = numbered
        command = loader.nvcc_command(source, str(tmp_path / f"k{number}.o"), [cuda_harness.CUSTOM_OPS],
                                      archs=["-gencode", "arch=compute_90,code=sm_90"])
        result = subprocess.run(command, capture_output=True, text=True)
        return source, result.returncode, result.stderr[-3000:]

    def build_harness(family):
        os.makedirs(tmp_path / family, exist_ok=True)
        return cuda_harness.build_harness(family, str(tmp_path / family))

    # nvcc is slow (tens of seconds per file with TF's headers): compile the files side by side.
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        harnesses = [pool.submit(build_harness, family) for family in cuda_harness.harness_families()]
        for source, returncode, stderr in pool.map(compile_source, enumerate(sources)):
            assert returncode == 0, f"{source}:\n{stderr}"
        for harness in harnesses:
            assert os.path.isfile(harness.result())


def test_nvcc_command_prefers_the_toolkit_headers():
    """TF's bundled CUDA headers must not shadow nvcc's own (their launch stubs differ across CUDA versions)."""
    command = loader.nvcc_command("k.cu.cc", "k.o", ["/ops"])
    assert not any("third_party/gpus/cuda" in part for part in command)
    assert command[:2] == ["nvcc", "-c"] and "-I/ops" in command and command[-3:] == ["k.cu.cc", "-o", "k.o"]
