"""Runs one scenario of selftest.cu on its emulated build and prints {"status": CUDA status, "out": values} as
JSON: `python tests/ops/cuda_emulation/selftest.py LIBRARY SCENARIO SCHEDULE`. A process of its own per scenario,
because the emulation's fault handler ends the process on a memory error (tests/ops/test_cuda_emulation.py)."""
import ctypes
import json
import sys

import numpy as np

BLOCKS, THREADS = 3, 64


def inputs():
    return np.arange(BLOCKS * THREADS, dtype=np.float32) * np.float32(0.5) + np.float32(1.0)


def run(library, scenario):
    floats = ctypes.POINTER(ctypes.c_float)
    values = inputs()
    out = np.zeros_like(values)
    pointer = lambda a: a.ctypes.data_as(floats)  # noqa: E731
    if scenario in ("rotate_without_barrier", "rotate_with_barrier"):
        status = library.selftest_rotate_left(pointer(values), pointer(out), BLOCKS, THREADS,
                                              int(scenario == "rotate_with_barrier"))
    elif scenario == "divergent_barrier":
        status = library.selftest_divergent_barrier(pointer(out), THREADS)
    elif scenario == "warp_sum":
        status = library.selftest_warp_sum(pointer(values), pointer(out), BLOCKS, THREADS)
    elif scenario == "write_past_end":
        status = library.selftest_write_past_end(pointer(out), 7)
    elif scenario == "shared_overflow":
        status = library.selftest_shared_overflow(pointer(out))
    elif scenario == "read_unwritten_shared":
        status = library.selftest_read_unwritten_shared(pointer(out), THREADS)
    elif scenario == "oversized_block":
        status = library.selftest_oversized_block(pointer(out))
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    return {"status": status, "out": [None if np.isnan(v) else float(v) for v in out]}


if __name__ == "__main__":
    library = ctypes.CDLL(sys.argv[1])
    library.cuda_emulation_set_schedule(int(sys.argv[3]))
    print(json.dumps(run(library, sys.argv[2])))
