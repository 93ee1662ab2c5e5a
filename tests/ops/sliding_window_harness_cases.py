"""GPU-vs-CPU cases of the sliding-window kernels for the TF-free CUDA harness (tests/ops/cuda_harness.py).

No TensorFlow here: numpy arrays go through ctypes to custom_ops/sliding_window/harness.cu, which runs the CPU
functors (sliding_window_kernels.h) and the CUDA kernels (sliding_window_kernels.cuh) on the same inputs.
`cpu_only(library)` checks the CPU functors against a numpy reference (usable on a machine without a GPU).
"""
import ctypes

import numpy as np

# (batch, seq, heads, dim, num_global, window): odd lengths, windows wider than the sequence, head sizes that
# are not multiples of the vector width, no global keys, and a head size (300) past the scores kernel's
# shared-memory staging (256).
SHAPES = [(2, 37, 3, 16, 2, 4), (1, 130, 2, 64, 1, 8), (2, 9, 1, 5, 0, 6), (1, 200, 4, 70, 3, 16),
          (3, 64, 2, 32, 1, 0), (2, 23, 2, 300, 2, 3)]
TOLERANCE = {np.float32: 2e-5, np.float64: 1e-12}


def _pointer(array):
    return None if array is None else array.ctypes.data_as(ctypes.c_void_p)


def _call(library, name, dtype, device, shape, *arrays, fill=None):
    suffix = "f32" if dtype == np.float32 else "f64"
    function = getattr(library, f"sw_{name}_{suffix}")
    scalar = ctypes.c_float if dtype == np.float32 else ctypes.c_double
    args = [ctypes.c_int(device)] + [ctypes.c_int64(v) for v in shape]
    args += [_pointer(a) for a in arrays[:-1]]
    if fill is not None:
        args.append(scalar(fill))
    args.append(_pointer(arrays[-1]))
    status = function(*args)
    if status != 0:
        raise RuntimeError(f"sw_{name}_{suffix} failed with CUDA error {status}")
    return arrays[-1]


def _inputs(shape, dtype, seed):
    b, s, h, d, x, w = shape
    rng = np.random.RandomState(seed)
    q, k = (rng.randn(b, s, h, d).astype(dtype) for _ in range(2))
    gk = rng.randn(b, x, h, d).astype(dtype)
    keep = rng.rand(b, s) > 0.3
    gkeep = rng.rand(b, x) > 0.3
    p = rng.randn(b, s, h, x + 2 * w + 1).astype(dtype)
    return q, k, gk, keep, gkeep, p


def _run_all(library, device, shape, dtype, seed=0):
    b, s, h, d, x, w = shape
    q, k, gk, keep, gkeep, p = _inputs(shape, dtype, seed)
    out = {}
    out["scores"] = _call(library, "scores", dtype, device, shape, q, k, gk, keep, gkeep,
                          np.zeros((b, s, h, x + 2 * w + 1), dtype), fill=-1e30)
    out["apply"] = _call(library, "apply", dtype, device, shape, p, k, gk, keep, gkeep, np.zeros_like(q))
    out["apply_transposed"] = _call(library, "apply_transposed", dtype, device, shape, p, q, keep, np.zeros_like(q))
    out["global_apply_transposed"] = _call(library, "global_apply_transposed", dtype, device, shape, p, q, gkeep,
                                           np.zeros_like(gk))
    return out


def numpy_reference(shape, dtype, seed=0):
    """The four kernels written out in numpy (loops over the band)."""
    b, s, h, d, x, w = shape
    q, k, gk, keep, gkeep, p = _inputs(shape, dtype, seed)
    scores = np.full((b, s, h, x + 2 * w + 1), -1e30, np.float64)
    apply = np.zeros((b, s, h, d))
    transposed = np.zeros((b, s, h, d))
    for bi in range(b):
        for i in range(s):
            for c in range(x):
                if gkeep[bi, c]:
                    scores[bi, i, :, c] = (q[bi, i] * gk[bi, c]).sum(-1)
                    apply[bi, i] += p[bi, i, :, c, None] * gk[bi, c]
            for j in range(2 * w + 1):
                m = i + j - w
                if 0 <= m < s and keep[bi, m]:
                    scores[bi, i, :, x + j] = (q[bi, i] * k[bi, m]).sum(-1)
                    apply[bi, i] += p[bi, i, :, x + j, None] * k[bi, m]
                if 0 <= m < s and keep[bi, i]:
                    transposed[bi, i] += p[bi, m, :, x + 2 * w - j, None] * q[bi, m]
    global_t = np.einsum("bshx,bshd->bxhd", p[..., :x], q) * gkeep[:, :, None, None]
    return {"scores": scores, "apply": apply, "apply_transposed": transposed, "global_apply_transposed": global_t}


def random_shapes(rng, count):
    """`count` shapes drawn from `rng` (a numpy RandomState), in SHAPES' form: windows up to past the sequence, up
    to three global keys, head sizes on both sides of the shared-memory staging."""
    return [(rng.randint(1, 4), rng.randint(1, 61), rng.randint(1, 4), rng.randint(1, 301), rng.randint(0, 4),
             rng.randint(0, 21)) for _ in range(count)]


def run(library, shapes=SHAPES):
    """GPU vs CPU for every kernel, shape and dtype: list of (case, max abs difference, tolerance)."""
    results = []
    for dtype in (np.float32, np.float64):
        for shape in shapes:
            cpu = _run_all(library, 0, shape, dtype)
            gpu = _run_all(library, 1, shape, dtype)
            for name in cpu:
                diff = float(np.max(np.abs(cpu[name].astype(np.float64) - gpu[name]))) if cpu[name].size else 0.0
                results.append((f"{name} {np.dtype(dtype).name} {shape}", diff, TOLERANCE[dtype]))
    return results


def cpu_only(library):
    """CPU functors vs the numpy reference (float64)."""
    results = []
    for shape in SHAPES:
        cpu = _run_all(library, 0, shape, np.float64)
        expected = numpy_reference(shape, np.float64)
        for name in cpu:
            diff = float(np.max(np.abs(cpu[name] - expected[name]))) if cpu[name].size else 0.0
            results.append((f"cpu {name} {shape}", diff, 1e-10))
    return results
