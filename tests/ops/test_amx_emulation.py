"""The dense-attention op's AMX kernel, run on software tiles (tests/ops/amx_emulation) on every machine: most of
this project's CPUs have no AMX, where the kernel otherwise never runs.

The emulation's own checks first (selftest.cc): its TDPBF16PS equals the exact sum of the bfloat16 products and
the CPU's VDPBF16PS on the same pairs, to float32 rounding; a use of the tiles the hardware faults on ends the
process with the emulation's message. Then the op, built from a copy of custom_ops with the emulation included:
the bfloat16 cases and fuzz of test_dense_attention against the float32 twin, BEiT's bfloat16 forward against
HF's float32 one, and the same cases under AddressSanitizer, which sees every tile load and store."""
import os
import subprocess
import sys

import pytest

from tests.ops import amx_emulation
from tests.ops.test_dense_attention import BFLOAT16_CASES_SCRIPT
from tfmodels.ops import loader

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The emulation asks for AVX512-BF16 as the hardware does (the kernel rounds with it): without it the op must run
# its float32 path and no tile operation at all.
TILES_USABLE = {"avx512f", "avx512bw", "avx512vl", "avx512_bf16"} <= set(loader.cpu_flags())
CASES_SCRIPT = BFLOAT16_CASES_SCRIPT + ("from tfmodels.ops import loader\n"
                                        "print('LIBRARY', loader.OpLibrary.get('dense_attention').path)\n")


@pytest.fixture(scope="module")
def selftest(tmp_path_factory):
    binary = str(tmp_path_factory.mktemp("amx") / "selftest")
    subprocess.run(["g++", "-std=c++17", "-O2", "-Wall", "-Werror", os.path.join(amx_emulation.HERE, "selftest.cc"),
                    "-o", binary], check=True)
    return binary


def test_emulated_tdpbf16ps_equals_the_exact_sum_and_vdpbf16ps(selftest):
    result = subprocess.run([selftest, "product"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("vs double") == 9
    assert ("(no AVX512-BF16)" in result.stdout) != TILES_USABLE
    assert amx_emulation.report(result.stderr)["TDPBF16PS"] == 9


@pytest.mark.parametrize("scenario, message", [
    ("unconfigured", "#UD in TILELOADD: no tile configuration loaded (tile 0)"),
    ("released", "#UD in TILELOADD: no tile configuration loaded (tile 0)"),
    ("shapes", "#UD in TDPBF16PS: the B tile's rows are not the A tile's row width / 4 (tile 2)"),
    ("aliased", "#UD in TDPBF16PS: the three tiles are not distinct (tile 0)"),
    ("reserved", "#GP in LDTILECFG: a reserved byte (2-15) is not 0"),
    ("rows", "#GP in LDTILECFG: more than 16 rows (tile 5)"),
])
def test_a_use_the_hardware_faults_on_ends_the_process_naming_it(selftest, scenario, message):
    result = subprocess.run([selftest, scenario], capture_output=True, text=True)
    assert result.returncode == -6, (result.returncode, result.stdout, result.stderr)  # SIGABRT
    assert amx_emulation.REPORT_PREFIX + message in result.stderr
    assert "no fault" not in result.stdout


def _run_emulated(folder, command, sanitize=False):
    result = subprocess.run(command, env=amx_emulation.environment(str(folder), sanitize=sanitize), cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    counts = amx_emulation.report(result.stderr)
    assert counts is not None, "the op library of the emulation did not run: " + result.stderr[-3000:]
    if TILES_USABLE:
        assert counts["TDPBF16PS"] > 0 and counts["TILERELEASE"] == counts["tile configurations"] > 0, counts
    else:
        assert counts["TDPBF16PS"] == counts["tile configurations"] == 0, counts
    return result.stdout, counts


def test_the_amx_kernel_on_emulated_tiles_equals_the_float32_twin(tmp_path):
    """The op's bfloat16 cases, then its fuzz (bfloat16 in about half the cases, NaN / Inf, bad inputs), then
    BEiT's bfloat16 forward against HF PyTorch's float32 one, all on the emulated tiles of one build."""
    stdout, counts = _run_emulated(tmp_path, [sys.executable, "-c", CASES_SCRIPT])
    assert f"LIBRARY {tmp_path / 'cache'}" in stdout  # the emulated build, not the wheel's or the user's cache
    if TILES_USABLE:
        assert counts["TDPBF16PS"] >= 16000  # every case's products (16,768 with the cases of 2026-12-07)
    stdout, _ = _run_emulated(tmp_path, [sys.executable, "-m", "tests.ops.fuzz_ops", "60", "dense_attention"])
    assert "FUZZ_CASES" in stdout
    stdout, _ = _run_emulated(tmp_path, [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                         "tests/parity/beit/test_parity.py", "-k", "bfloat16"])
    assert "2 passed" in stdout


def test_the_amx_kernel_reads_and_writes_within_its_buffers(tmp_path):
    """AddressSanitizer + UBSan on the emulated build, the op's cases and some of its fuzz (150 fuzz cases were
    clean here on 2026-12-07): each tile load and store is a memcpy it checks."""
    _run_emulated(tmp_path, [sys.executable, "-c", CASES_SCRIPT], sanitize=True)
    stdout, _ = _run_emulated(tmp_path, [sys.executable, "-m", "tests.ops.fuzz_ops", "30", "dense_attention"],
                              sanitize=True)
    assert "FUZZ_CASES" in stdout
