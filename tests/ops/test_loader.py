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
from tfmodels import cli
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


# /proc/cpuinfo "flags" of real CPUs (their instruction-set part): which of the wheel's builds each one runs.
_BASE = "fpu cx8 cmov mmx fxsr sse sse2 ht syscall nx lm pni ssse3 cx16 sse4_1 sse4_2 popcnt lahf_lm"
_AVX2 = "fma movbe xsave avx f16c abm bmi1 avx2 bmi2"
CPU_FLAGS = {
    "Intel Sapphire Rapids": f"{_BASE} {_AVX2} avx512f avx512dq avx512ifma avx512cd avx512bw avx512vl avx512_bf16 "
                             "avx512vbmi avx512_vnni avx512_fp16 amx_bf16 amx_tile amx_int8",
    "AMD Zen 4 (EPYC 9004)": f"{_BASE} {_AVX2} avx512f avx512dq avx512ifma avx512cd avx512bw avx512vl avx512_bf16 "
                             "avx512vbmi avx512_vbmi2 avx512_vnni avx512_bitalg avx512_vpopcntdq",
    "Intel Skylake-SP": f"{_BASE} {_AVX2} avx512f avx512dq avx512cd avx512bw avx512vl",
    "AMD Zen 3 (EPYC 7003)": f"{_BASE} {_AVX2} sha_ni vaes vpclmulqdq",
    "Intel Haswell": f"{_BASE} {_AVX2}",
    "Intel Xeon Phi (AVX-512 without BW/DQ/VL)": f"{_BASE} {_AVX2} avx512f avx512cd avx512pf avx512er",
    "Intel Sandy Bridge (AVX, no AVX2)": f"{_BASE} xsave avx",
    "Intel Atom / Nehalem (SSE4.2)": _BASE,
}
EXPECTED_TARGET = {"Intel Sapphire Rapids": "x86-64-v4", "AMD Zen 4 (EPYC 9004)": "x86-64-v4",
                   "Intel Skylake-SP": "x86-64-v4", "AMD Zen 3 (EPYC 7003)": "x86-64-v3", "Intel Haswell": "x86-64-v3",
                   "Intel Xeon Phi (AVX-512 without BW/DQ/VL)": "x86-64-v3",
                   "Intel Sandy Bridge (AVX, no AVX2)": None, "Intel Atom / Nehalem (SSE4.2)": None}


@pytest.mark.parametrize("cpu", list(CPU_FLAGS))
def test_the_cpu_flags_pick_the_prebuilt_target(cpu):
    assert loader.prebuilt_target(set(CPU_FLAGS[cpu].split())) == EXPECTED_TARGET[cpu]


def test_this_cpu_runs_what_the_loader_picks():
    """Cross-check of the flag table on the host: every feature that -march=<the picked target> adds to the x86-64
    baseline, g++'s own CPU detection (-march=native) finds on this CPU too."""
    target = loader.prebuilt_target(loader.cpu_flags()) or "x86-64"

    def macros(arch):
        output = subprocess.run(["g++", f"-march={arch}", "-dM", "-E", "-x", "c++", os.devnull], capture_output=True,
                                text=True, check=True).stdout
        return {line.split()[1] for line in output.splitlines()}

    assert macros(target) - macros("x86-64") <= macros("native")


def test_target_flags_turn_avx512fp16_off_after_the_target():
    """-mno-avx512fp16 must come after -march (a later -march=sapphirerapids would turn FP16 back on); feature
    flags written after the -march value are kept, in order."""
    assert loader.cpu_target_flags("sapphirerapids") == ["-march=sapphirerapids", "-mno-avx512fp16"]
    assert loader.cpu_target_flags("znver3 -mavx512f -mavx512bw") == ["-march=znver3", "-mavx512f", "-mavx512bw",
                                                                       "-mno-avx512fp16"]


@pytest.fixture
def installed_libraries(monkeypatch, tmp_path, fixture_ops):
    """A wheel's compiled-ops folder (the loader only looks at the file names to choose one)."""
    folder = tmp_path / "compiled"
    folder.mkdir()
    monkeypatch.setattr(loader, "COMPILED_DIR", str(folder))
    for target in loader.PREBUILT_TARGETS:
        (folder / loader.prebuilt_name("addone", target)).write_bytes(b"")
    return folder


@pytest.mark.parametrize("cpu", ["Intel Sapphire Rapids", "AMD Zen 3 (EPYC 7003)"])
def test_installed_library_follows_the_cpu(installed_libraries, monkeypatch, cpu):
    monkeypatch.setattr(loader, "cpu_flags", lambda: set(CPU_FLAGS[cpu].split()))
    path, why_not = loader.OpLibrary.get("addone").installed_library()
    assert path == str(installed_libraries / loader.prebuilt_name("addone", EXPECTED_TARGET[cpu])) and why_not is None
    monkeypatch.setenv("TFMODELS_OPS_MARCH", "x86-64-v3")  # picks the portable one on any CPU
    path, _ = loader.OpLibrary.get("addone").installed_library()
    assert path == str(installed_libraries / loader.prebuilt_name("addone", "x86-64-v3"))


def test_without_a_fitting_installed_library_the_reason_is_given(installed_libraries, monkeypatch):
    """No installed library for this TensorFlow or this CPU, and no compiler: the op is unavailable and the
    reason names both."""
    for path in installed_libraries.iterdir():
        path.rename(installed_libraries / path.name.replace(f"-tf{tf.__version__}-", "-tf2.0.0-"))
    monkeypatch.setenv("PATH", "")
    library = loader.OpLibrary.get("addone")
    assert library.load() is None
    assert f"no installed compiled ops for {loader.prebuilt_target(loader.cpu_flags())} and TensorFlow " \
           f"{tf.__version__}" in library.error and "-tf2.0.0-x86-64-v3.so" in library.error
    assert "no C++ compiler (g++)" in library.error
    monkeypatch.setattr(loader, "cpu_flags", lambda: set(CPU_FLAGS["Intel Sandy Bridge (AVX, no AVX2)"].split()))
    assert loader.OpLibrary.get("addone").installed_library() == (
        None, "this CPU lacks the x86-64-v3 features (AVX2, FMA, BMI2, ...) the installed compiled ops need")


def test_a_source_install_has_no_installed_library(fixture_ops):
    assert not os.path.isdir(loader.COMPILED_DIR)  # a checkout: libraries are compiled on first use
    assert loader.OpLibrary.get("addone").installed_library() == (None, None)


def test_build_ops_reports_each_failed_family_and_builds_the_others(monkeypatch, tmp_path, capsys):
    """`tfmodels build-ops`: the broken family's first compiler error, the family after it still built, exit 1."""
    root = tmp_path / "ops"
    shutil.copytree(FIXTURES, root, ignore=shutil.ignore_patterns("addone"))
    shutil.copytree(os.path.join(FIXTURES, "addone"), root / "copy_after_broken")  # builds after 'broken'
    monkeypatch.setenv("TFMODELS_CUSTOM_OPS_DIR", str(root))
    monkeypatch.setenv("TFMODELS_OPS_CACHE", str(tmp_path / "cache"))
    loader.OpLibrary._registry.clear()
    try:
        assert cli.main(["build-ops", "--cuda", "no"]) == 1
    finally:
        loader.OpLibrary._registry.clear()
    out, err = capsys.readouterr()
    [failed] = err.strip().splitlines()
    assert failed.startswith("broken: FAILED: compiling failed (") and "broken.cc:1:1: error:" in failed, failed
    [built] = out.strip().splitlines()
    assert built.startswith("copy_after_broken: ") and os.path.isfile(built.split(": ", 1)[1])


# g++ knows -march=znver4 from 12.3 on (Debian 12's g++ is 12.2); before that, the same instruction set spelled
# out as GCC 13 defines znver4: Zen 3 plus Zen 4's AVX-512 extensions and GFNI.
ZEN4_FOR_OLDER_GXX = ("znver3 -mavx512f -mavx512dq -mavx512ifma -mavx512cd -mavx512bw -mavx512vl -mavx512bf16 "
                      "-mavx512vbmi -mavx512vbmi2 -mgfni -mavx512vnni -mavx512bitalg -mavx512vpopcntdq")


@pytest.mark.slow
def test_every_family_compiles_for_every_x86_64_target(tmp_path):
    """Every op family builds, with the loader's compile command and flags, for the portable target and the
    AVX-512 ones of both vendors (Ice Lake; Sapphire Rapids with AVX512-FP16 and AMX; Zen 4), whatever CPU runs the
    test. The builds run side by side (each g++ uses one core)."""
    knows_znver4 = subprocess.run(["g++", "-march=znver4", "-E", "-x", "c++", "-o", os.devnull, os.devnull],
                                  capture_output=True).returncode == 0
    targets = {"x86-64-v3": "x86-64-v3", "icelake-server": "icelake-server", "sapphirerapids": "sapphirerapids",
               "znver4": "znver4" if knows_znver4 else ZEN4_FOR_OLDER_GXX}
    families = loader.families()
    assert {"block_sparse", "lsh", "sliding_window"} <= set(families)

    def build(job):
        family, name = job
        try:
            loader.compile_library(family, str(tmp_path / f"{family}-{name}.so"), arch=targets[name])
        except RuntimeError as error:
            return f"{family} for {name}: {str(error).splitlines()[0]}"
        return None

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        failures = [failure for failure in pool.map(build, [(f, name) for f in families for name in targets])
                    if failure]
    assert not failures, "\n".join(failures)
    assert all(os.path.getsize(tmp_path / f"{family}-{name}.so") > 0 for family in families for name in targets)
