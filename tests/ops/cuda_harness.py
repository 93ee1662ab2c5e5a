"""TF-free CUDA harness tooling: compile the kernels with nvcc and compare them with the CPU kernels on a GPU,
driven by numpy through ctypes. This module must not import TensorFlow: the GPU machine has CUDA and numpy but
no TensorFlow.

    python tests/ops/cuda_harness.py            # build every custom_ops/<family>/harness.cu and run its cases
    python tests/ops/cuda_harness.py --emulate  # the same cases on the CPU, the kernels under emulation
    python tests/ops/cuda_harness.py --random-shapes 40 --seed 1   # random shapes instead of the fixed ones

`--emulate` compiles the harness with g++ against tests/ops/cuda_emulation/cuda_runtime.h (a CPU emulation of
the CUDA the kernels use: threads as fibers, barriers, warp shuffles, atomics, guarded device memory, UBSan; see
there) and runs every case twice, with the threads of a block taken in index order and in reverse order between
barriers. It executes the kernels' logic where no GPU is at hand; it does not replace the run on a GPU.

Each op family provides custom_ops/<family>/harness.cu (extern "C" entry points that run the CPU functor or the
CUDA kernel on raw device/host pointers) and tests/ops/<family>_harness_cases.py with `run(library) -> list of
(case name, max abs difference, tolerance)`.
"""
import argparse
import ctypes
import glob
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CUSTOM_OPS = os.path.join(ROOT, "custom_ops")
ARCHS = ["-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=sm_90"]


def nvcc_available():
    return shutil.which("nvcc") is not None


def gpu_available():
    try:
        cudart = ctypes.CDLL("libcudart.so")
    except OSError:
        for candidate in glob.glob("/usr/local/cuda*/lib64/libcudart.so*"):
            try:
                cudart = ctypes.CDLL(candidate)
                break
            except OSError:
                continue
        else:
            return False
    count = ctypes.c_int(0)
    return cudart.cudaGetDeviceCount(ctypes.byref(count)) == 0 and count.value > 0


def harness_families():
    return sorted(os.path.basename(os.path.dirname(p)) for p in glob.glob(os.path.join(CUSTOM_OPS, "*", "harness.cu")))


def build_harness(family, output_dir=None):
    """nvcc the family's harness.cu (which includes its TF-free kernels) into a shared library."""
    source = os.path.join(CUSTOM_OPS, family, "harness.cu")
    output_dir = output_dir or tempfile.mkdtemp(prefix=f"harness_{family}_")
    target = os.path.join(output_dir, f"harness_{family}.so")
    command = ["nvcc", "-std=c++17", "-O2", "--expt-relaxed-constexpr", "-shared", "-Xcompiler", "-fPIC",
               f"-I{CUSTOM_OPS}", *ARCHS, source, "-o", target]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"nvcc failed for {family}:\n{result.stderr[-4000:]}")
    return target


EMULATION = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cuda_emulation")
SCHEDULES = {0: "threads in index order", 1: "threads in reverse order"}
# kernel<<<config>>>( -> cuda_emulation::Launch("kernel", Configure(config), kernel, ...): a kernel name (with its
# template arguments) before the chevrons.
_LAUNCH = re.compile(r"\b([A-Za-z_]\w*(?:<[^<>;{}()]*>)?)\s*<<<(.*?)>>>\s*\(", re.S)
_DYNAMIC_SHARED = re.compile(r"extern\s+__shared__\s+(\w+)\s+(\w+)\s*\[\s*\]\s*;")
_EMULATION_ENTRY_POINTS = """
extern "C" void cuda_emulation_set_schedule(int schedule) { cuda_emulation::schedule = schedule; }
extern "C" long long cuda_emulation_launches() { return cuda_emulation::launches; }
"""


def emulated_source(text):
    """CUDA source text with its launches and dynamic shared memory in the emulation's terms."""
    def launch(match):
        kernel, config = match.groups()
        return f'::cuda_emulation::Launch("{kernel}", ::cuda_emulation::Configure({config}), {kernel}, '

    text = _LAUNCH.sub(launch, text)
    return _DYNAMIC_SHARED.sub(r"\1* \2 = ::cuda_emulation::DynamicShared<\1>();", text)


def build_emulated(source, output_dir, name):
    """g++ one CUDA translation unit (harness.cu or a test's kernels) against the emulation into a shared library,
    with entry points to set the schedule and count the launches. Every .cu/.cuh it includes from custom_ops is
    rewritten the same way (a copy of custom_ops in output_dir)."""
    os.makedirs(output_dir, exist_ok=True)
    tree = os.path.join(output_dir, "custom_ops")
    shutil.rmtree(tree, ignore_errors=True)
    shutil.copytree(CUSTOM_OPS, tree)
    for path in glob.glob(os.path.join(tree, "**", "*.cu*"), recursive=True):
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(emulated_source(text))
    with open(source) as f:
        text = emulated_source(f.read())
    unit = os.path.join(output_dir, f"{name}_emulated.cc")
    with open(unit, "w") as f:
        f.write(text + _EMULATION_ENTRY_POINTS)
    target = os.path.join(output_dir, f"{name}_emulated.so")
    # __CUDACC__ takes the harnesses' GPU paths and the kernels' portable host code, as nvcc's host pass does;
    # no FMA contraction, as the kernels' __f*_rn intrinsics promise; no _FORTIFY_SOURCE, whose longjmp check
    # refuses the fibers' jumps between stacks; UBSan, which bounds the kernels' __shared__ arrays (and checks
    # the CPU kernels beside them).
    command = ["g++", "-std=c++17", "-O1", "-g", "-shared", "-fPIC", "-pthread", "-ffp-contract=off",
               "-D__CUDACC__", "-U_FORTIFY_SOURCE", "-Wno-unknown-pragmas", "-fsanitize=undefined",
               "-fno-sanitize-recover=all", f"-I{EMULATION}", f"-I{tree}", "-x", "c++", unit, "-o", target]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"g++ failed for the emulated {name}:\n{result.stderr[-4000:]}")
    library = ctypes.CDLL(target)
    library.cuda_emulation_set_schedule.argtypes = [ctypes.c_int]
    library.cuda_emulation_launches.restype = ctypes.c_longlong
    return library


def build_emulated_harness(family, output_dir=None):
    """The family's harness.cu on the CPU emulation (see build_emulated)."""
    output_dir = output_dir or tempfile.mkdtemp(prefix=f"emulated_{family}_")
    return build_emulated(os.path.join(CUSTOM_OPS, family, "harness.cu"), output_dir, f"harness_{family}")


def run_family(family, library, random_shapes=0, seed=0):
    """The family's cases on a harness library (a path, or a loaded library): its fixed shapes, or
    `random_shapes` shapes drawn from `seed` (the cases module's random_shapes)."""
    sys.path.insert(0, ROOT)
    cases = importlib.import_module(f"tests.ops.{family}_harness_cases")
    library = ctypes.CDLL(library) if isinstance(library, str) else library
    if random_shapes:
        return cases.run(library, cases.random_shapes(np.random.RandomState(seed), random_shapes))
    return cases.run(library)


def report(family, results, label=""):
    """Prints each case; returns the number that failed."""
    failures = 0
    for name, difference, tolerance in results:
        status = "ok" if difference <= tolerance else "FAIL"
        failures += status == "FAIL"
        print(f"{family:16s} {label}{name:50s} max|gpu-cpu| = {difference:.3e} (tol {tolerance:.0e}) {status}")
    return failures


def emulate(families, random_shapes=0, seed=0):
    """Every case of `families` on the emulation, in both schedules (run_family's cases). Returns the exit
    status."""
    failures = 0
    for family in families:
        library = build_emulated_harness(family)
        for schedule, label in SCHEDULES.items():
            library.cuda_emulation_set_schedule(schedule)
            before = library.cuda_emulation_launches()
            failures += report(family, run_family(family, library, random_shapes, seed), f"[{label}] ")
            print(f"{family:16s} [{label}] {library.cuda_emulation_launches() - before} kernel launches emulated")
    print("all CUDA harness cases passed under emulation" if not failures
          else f"{failures} CUDA harness case(s) FAILED under emulation")
    return 1 if failures else 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emulate", action="store_true", help="run the kernels on the CPU emulation (no GPU)")
    parser.add_argument("--family", action="append", choices=harness_families(),
                        help="only this op family (repeatable; default: all)")
    parser.add_argument("--random-shapes", type=int, default=0, metavar="N",
                        help="N random shapes per family instead of the fixed cases")
    parser.add_argument("--seed", type=int, default=0, help="of the random shapes")
    args = parser.parse_args(argv)
    families = args.family or harness_families()
    if args.emulate:
        return emulate(families, args.random_shapes, args.seed)
    if not nvcc_available():
        print("nvcc not found: cannot build the CUDA harness")
        return 2
    if not gpu_available():
        print("no CUDA GPU visible: the harness compiles but cannot run here")
        return 2
    failures = 0
    for family in families:
        failures += report(family, run_family(family, build_harness(family), args.random_shapes, args.seed))
    print("all CUDA harness cases passed" if not failures else f"{failures} CUDA harness case(s) FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
