"""TF-free CUDA harness tooling: compile the kernels with nvcc and compare them with the CPU kernels on a GPU,
driven by numpy through ctypes. This module must not import TensorFlow: the GPU machine has CUDA and numpy but
no TensorFlow.

    python tests/ops/cuda_harness.py            # build every custom_ops/<family>/harness.cu and run its cases

Each op family provides custom_ops/<family>/harness.cu (extern "C" entry points that run the CPU functor or the
CUDA kernel on raw device/host pointers) and tests/ops/<family>_harness_cases.py with `run(library) -> list of
(case name, max abs difference, tolerance)`.
"""
import ctypes
import glob
import importlib
import os
import shutil
import subprocess
import sys
import tempfile

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


def run_family(family, library_path):
    sys.path.insert(0, ROOT)
    cases = importlib.import_module(f"tests.ops.{family}_harness_cases")
    return cases.run(ctypes.CDLL(library_path))


def main():
    if not nvcc_available():
        print("nvcc not found: cannot build the CUDA harness")
        return 2
    if not gpu_available():
        print("no CUDA GPU visible: the harness compiles but cannot run here")
        return 2
    failures = 0
    for family in harness_families():
        library = build_harness(family)
        for name, difference, tolerance in run_family(family, library):
            status = "ok" if difference <= tolerance else "FAIL"
            failures += status == "FAIL"
            print(f"{family:16s} {name:50s} max|gpu-cpu| = {difference:.3e} (tol {tolerance:.0e}) {status}")
    print("all CUDA harness cases passed" if not failures else f"{failures} CUDA harness case(s) FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
