"""The CUDA kernels on the CPU emulation (tests/ops/cuda_emulation): every harness case of every op family, and
the emulation's own checks shown to fire on kernels that break CUDA's rules. No GPU has been lent to this project
yet; this executes the kernels' logic meanwhile. It does not replace `python tests/ops/cuda_harness.py` on a GPU."""
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.ops import cuda_harness
from tests.ops.cuda_emulation import selftest

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler")

SELFTEST = os.path.join(cuda_harness.EMULATION, "selftest.cu")
LAUNCH_FAILURE, INVALID_CONFIGURATION = 719, 9


@pytest.mark.parametrize("shapes", [[], ["--random-shapes", "12", "--seed", "1"]], ids=["fixed", "random"])
def test_every_harness_case_passes_under_emulation(shapes):
    """`python tests/ops/cuda_harness.py --emulate`: every family's GPU entry points equal its CPU kernels within
    the harness tolerances, on the fixed shapes and on 12 random ones per family, with the threads of each block
    run in index order and in reverse order, and kernels did run (launch counts). A process of its own: the
    emulation's fault handler ends it on a memory error."""
    result = subprocess.run([sys.executable, os.path.join(cuda_harness.ROOT, "tests", "ops", "cuda_harness.py"),
                             "--emulate", *shapes], capture_output=True, text=True, cwd=cuda_harness.ROOT, timeout=900)
    assert result.returncode == 0, (result.stdout[-6000:], result.stderr[-3000:])
    assert "all CUDA harness cases passed under emulation" in result.stdout
    assert " FAIL" not in result.stdout
    for family in cuda_harness.harness_families():
        for label in cuda_harness.SCHEDULES.values():
            counts = re.findall(rf"^{family}\s+\[{label}\] (\d+) kernel launches emulated$", result.stdout, re.M)
            assert len(counts) == 1 and int(counts[0]) > 0, (family, label, result.stdout[-3000:])
            cases = re.findall(rf"^{family}\s+\[{label}\] .* ok$", result.stdout, re.M)
            assert len(cases) >= 10, (family, label, len(cases))


def test_sliding_window_harness_cpu_functors_match_numpy(tmp_path):
    """The sliding-window harness calls CUDA unconditionally, so it has no host-only build as the LSH and
    block-sparse harnesses do: on its emulated build, its CPU functors (the reference of the GPU cases) agree with
    numpy in float64 on every shape."""
    from tests.ops import sliding_window_harness_cases as cases
    results = cases.cpu_only(cuda_harness.build_emulated_harness("sliding_window", str(tmp_path)))
    assert len(results) >= 4 * len(cases.SHAPES)
    for name, difference, tolerance in results:
        assert difference <= tolerance, f"{name}: {difference} > {tolerance}"


def test_emulation_rewrites_every_launch_of_the_sources():
    """No `<<<` survives the rewriting in any CUDA source of custom_ops, and a launch spread over lines, with
    template arguments and all four launch parameters, becomes one call."""
    for root, _, files in os.walk(cuda_harness.CUSTOM_OPS):
        for name in files:
            if name.endswith((".cu", ".cuh", ".cu.cc")):
                with open(os.path.join(root, name)) as f:
                    assert "<<<" not in cuda_harness.emulated_source(f.read()), name
    source = "Kernel<false, T><<<BlocksFor(n), 256, bytes,\n stream>>>(\n a, b);\nextern __shared__ float buf[];"
    assert cuda_harness.emulated_source(source) == (
        '::cuda_emulation::Launch("Kernel<false, T>", ::cuda_emulation::Configure(BlocksFor(n), 256, bytes,\n '
        'stream), Kernel<false, T>, \n a, b);\nfloat* buf = ::cuda_emulation::DynamicShared<float>();')


@pytest.fixture(scope="module")
def selftest_library(tmp_path_factory):
    folder = tmp_path_factory.mktemp("emulated_selftest")
    cuda_harness.build_emulated(SELFTEST, str(folder), "selftest")
    return str(folder / "selftest_emulated.so")


def _scenario(library, scenario, schedule=0):
    result = subprocess.run([sys.executable, selftest.__file__, library, scenario, str(schedule)],
                            capture_output=True, text=True, cwd=cuda_harness.ROOT, timeout=120)
    outcome = json.loads(result.stdout) if result.returncode == 0 else None
    return result, outcome


def test_a_missing_barrier_shows_as_different_results_in_the_two_schedules(selftest_library):
    values = selftest.inputs().reshape(selftest.BLOCKS, selftest.THREADS)
    expected = np.roll(values, -1, axis=1).ravel().tolist()
    for schedule in cuda_harness.SCHEDULES:
        _, synchronised = _scenario(selftest_library, "rotate_with_barrier", schedule)
        assert synchronised == {"status": 0, "out": expected}
    runs = [_scenario(selftest_library, "rotate_without_barrier", schedule)[1] for schedule in cuda_harness.SCHEDULES]
    assert all(run["status"] == 0 for run in runs)
    assert runs[0]["out"] != expected and runs[1]["out"] != expected and runs[0]["out"] != runs[1]["out"]


def test_a_barrier_that_half_the_block_skips_fails_the_launch(selftest_library):
    result, outcome = _scenario(selftest_library, "divergent_barrier")
    assert outcome["status"] == LAUNCH_FAILURE
    assert "a barrier that not every thread reaches in DivergentBarrierKernel, block (0, 0, 0): 32 of 64 threads " \
           "wait at __syncthreads, 0 at a warp barrier, 32 exited" in result.stderr


def test_warp_shuffles_exchange_within_each_warp(selftest_library):
    values = selftest.inputs().reshape(-1, 32)
    expected = np.repeat(values.sum(axis=1, dtype=np.float64), 32)
    for schedule in cuda_harness.SCHEDULES:
        _, outcome = _scenario(selftest_library, "warp_sum", schedule)
        assert outcome["status"] == 0
        np.testing.assert_allclose(outcome["out"], expected, rtol=1e-6)


def test_a_write_past_an_allocation_ends_the_process_naming_the_kernel(selftest_library):
    result, _ = _scenario(selftest_library, "write_past_end")
    assert result.returncode == 86, (result.returncode, result.stderr[-2000:])
    assert re.search(r"cuda_emulation: invalid memory access at 0x[0-9a-f]+ in WritePastEndKernel, block \(0, 0, 0\), "
                     r"thread \(0, 0, 0\): past the end of a device allocation", result.stderr), result.stderr[-2000:]


def test_an_index_past_a_shared_array_ends_the_process_with_ubsan_report(selftest_library):
    result, _ = _scenario(selftest_library, "shared_overflow")
    assert result.returncode != 0
    assert "runtime error: index 64 out of bounds for type 'float [64]'" in result.stderr, result.stderr[-2000:]


def test_unwritten_dynamic_shared_memory_reads_as_nan(selftest_library):
    _, outcome = _scenario(selftest_library, "read_unwritten_shared")
    assert outcome["status"] == 0 and outcome["out"][:selftest.THREADS] == [None] * selftest.THREADS


def test_a_block_larger_than_cuda_allows_is_refused(selftest_library):
    result, outcome = _scenario(selftest_library, "oversized_block")
    assert outcome["status"] == INVALID_CONFIGURATION
    assert "invalid launch of DivergentBarrierKernel: grid (1, 1, 1), block (2048, 1, 1)" in result.stderr


@pytest.mark.skipif(not cuda_harness.nvcc_available(), reason="nvcc is not installed on this machine")
def test_the_selftest_kernels_are_cuda_that_nvcc_compiles(tmp_path):
    """The self-test's kernels are real CUDA (the emulation runs the same text), not a dialect of the emulation."""
    command = ["nvcc", "-std=c++17", "-c", *cuda_harness.ARCHS[2:], SELFTEST, "-o", str(tmp_path / "selftest.o")]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
