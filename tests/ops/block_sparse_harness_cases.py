"""Cases for the block-sparse CUDA harness (custom_ops/block_sparse/harness.cu), driven through ctypes.

`run(library)` runs every case with the CUDA kernels and with the CPU kernels and returns
(case name, max |gpu - cpu|, tolerance) per case (tests/ops/cuda_harness.py prints them). `run_cpu(library)`
checks the CPU entry points against numpy (no GPU needed). numpy only: no TensorFlow on the GPU machine.
"""
import ctypes

import numpy as np

BLOCK = 32
TOLERANCE = 1e-4

_f32 = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")
_i32 = np.ctypeslib.ndpointer(np.int32, flags="C_CONTIGUOUS")
_i64 = ctypes.c_int64


def _bind(library):
    for name in ("bs_sddmm_cpu", "bs_sddmm_gpu"):
        fn = getattr(library, name)
        fn.argtypes = [_f32, _f32, _i32, _f32, _i64, _i64, _i64, _i64, _i64]
        fn.restype = ctypes.c_int
    for name in ("bs_spmm_cpu", "bs_spmm_gpu"):
        fn = getattr(library, name)
        fn.argtypes = [_f32, _i32, _f32, _f32, _i64, _i64, _i64, _i64, _i64, ctypes.c_int]
        fn.restype = ctypes.c_int
    for name in ("bs_row_reduce_cpu", "bs_row_reduce_gpu"):
        fn = getattr(library, name)
        fn.argtypes = [_f32, _i32, _f32, _i64, _i64, _i64, _i64, ctypes.c_int]
        fn.restype = ctypes.c_int
    return library


# ------------------------------------------------------------------------------------------------------------
# Inputs and numpy references


def random_indices(rng, batch, rows, cols, slots, unused=0.2, duplicates=False):
    """[batch, slots] block indices (distinct unless `duplicates`), about `unused` of them -1."""
    grid = rows * cols
    out = np.empty((batch, slots), np.int32)
    for b in range(batch):
        if duplicates or slots > grid:
            out[b] = rng.randint(0, max(grid, 1), slots)
        else:
            out[b] = rng.permutation(grid)[:slots]
    out[rng.rand(batch, slots) < unused] = -1
    return out


def sddmm_ref(a, b, indices):
    batch, slots = indices.shape
    cols = b.shape[1] // BLOCK
    out = np.zeros((batch, slots, BLOCK, BLOCK), np.float64)
    for n in range(batch):
        for s, idx in enumerate(indices[n]):
            if idx < 0:
                continue
            r, c = divmod(int(idx), cols)
            out[n, s] = a[n, r * BLOCK:(r + 1) * BLOCK].astype(np.float64) @ \
                b[n, c * BLOCK:(c + 1) * BLOCK].astype(np.float64).T
    return out


def spmm_ref(blocks, indices, dense, num_out_blocks, transpose):
    batch, slots = indices.shape
    out = np.zeros((batch, num_out_blocks * BLOCK, dense.shape[2]), np.float64)
    cols = num_out_blocks if transpose else dense.shape[1] // BLOCK
    for n in range(batch):
        for s, idx in enumerate(indices[n]):
            if idx < 0:
                continue
            r, c = divmod(int(idx), cols)
            block = blocks[n, s].astype(np.float64)
            if transpose:
                out[n, c * BLOCK:(c + 1) * BLOCK] += block.T @ dense[n, r * BLOCK:(r + 1) * BLOCK]
            else:
                out[n, r * BLOCK:(r + 1) * BLOCK] += block @ dense[n, c * BLOCK:(c + 1) * BLOCK]
    return out


def row_reduce_ref(blocks, indices, rows, cols, is_max):
    batch, slots = indices.shape
    out = np.full((batch, rows * BLOCK), -np.inf if is_max else 0.0)
    for n in range(batch):
        for s, idx in enumerate(indices[n]):
            if idx < 0:
                continue
            r = int(idx) // cols
            part = out[n, r * BLOCK:(r + 1) * BLOCK]
            if is_max:
                np.maximum(part, blocks[n, s].max(axis=1), out=part)
            else:
                part += blocks[n, s].astype(np.float64).sum(axis=1)
    return out


SHAPES = [  # batch, rows, cols, dim, slots
    (2, 3, 3, 64, 5),
    (3, 4, 2, 7, 6),
    (1, 1, 5, 130, 4),
    (4, 6, 6, 32, 20),
    (2, 2, 2, 1, 0),
]


def random_shapes(rng, count):
    """`count` shapes drawn from `rng` (a numpy RandomState), in SHAPES' form: up to more slots than blocks (then
    with repeated indices)."""
    shapes = []
    for _ in range(count):
        rows, cols = rng.randint(1, 6), rng.randint(1, 6)
        shapes.append((rng.randint(1, 4), rows, cols, rng.randint(1, 101), rng.randint(0, rows * cols + 3)))
    return shapes


def _cases(seed=0, shapes=SHAPES):
    rng = np.random.RandomState(seed)
    for batch, rows, cols, dim, slots in shapes:
        tag = f"B{batch} R{rows} C{cols} D{dim} K{slots}"
        indices = random_indices(rng, batch, rows, cols, slots)
        a = rng.randn(batch, rows * BLOCK, dim).astype(np.float32)
        b = rng.randn(batch, cols * BLOCK, dim).astype(np.float32)
        blocks = rng.randn(batch, slots, BLOCK, BLOCK).astype(np.float32)
        yield tag, rows, cols, dim, indices, a, b, blocks


# ------------------------------------------------------------------------------------------------------------
# Running the entry points


def _sddmm(library, device, a, b, indices, rows, cols, dim):
    batch, slots = indices.shape
    out = np.zeros((batch, slots, BLOCK, BLOCK), np.float32)
    status = getattr(library, f"bs_sddmm_{device}")(a, b, indices, out, batch, rows, cols, dim, slots)
    assert status == 0, f"bs_sddmm_{device} returned {status}"
    return out


def _spmm(library, device, blocks, indices, dense, rows, cols, transpose):
    batch, slots = indices.shape
    out_blocks = cols if transpose else rows
    out = np.zeros((batch, out_blocks * BLOCK, dense.shape[2]), np.float32)
    status = getattr(library, f"bs_spmm_{device}")(blocks, indices, dense, out, batch, rows, cols, dense.shape[2],
                                                   slots, int(transpose))
    assert status == 0, f"bs_spmm_{device} returned {status}"
    return out


def _row_reduce(library, device, blocks, indices, rows, cols, is_max):
    batch, slots = indices.shape
    out = np.zeros((batch, rows * BLOCK), np.float32)
    status = getattr(library, f"bs_row_reduce_{device}")(blocks, indices, out, batch, rows, cols, slots, int(is_max))
    assert status == 0, f"bs_row_reduce_{device} returned {status}"
    return out


def _outputs(library, device, case):
    tag, rows, cols, dim, indices, a, b, blocks = case
    dense_cols = b  # [B, cols*32, D]
    dense_rows = a  # [B, rows*32, D]
    return {
        f"sddmm {tag}": _sddmm(library, device, a, b, indices, rows, cols, dim),
        f"spmm {tag}": _spmm(library, device, blocks, indices, dense_cols, rows, cols, False),
        f"spmm transposed {tag}": _spmm(library, device, blocks, indices, dense_rows, rows, cols, True),
        f"row max {tag}": _row_reduce(library, device, blocks, indices, rows, cols, True),
        f"row sum {tag}": _row_reduce(library, device, blocks, indices, rows, cols, False),
    }


def _references(case):
    tag, rows, cols, dim, indices, a, b, blocks = case
    return {
        f"sddmm {tag}": sddmm_ref(a, b, indices),
        f"spmm {tag}": spmm_ref(blocks, indices, b, rows, False),
        f"spmm transposed {tag}": spmm_ref(blocks, indices, a, cols, True),
        f"row max {tag}": row_reduce_ref(blocks, indices, rows, cols, True),
        f"row sum {tag}": row_reduce_ref(blocks, indices, rows, cols, False),
    }


def _difference(x, y):
    """max |x - y|, counting equal infinities (rows without a selected block) as equal."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.size == 0:
        return 0.0
    same = np.isinf(x) & (x == y)
    return float(np.max(np.abs(np.where(same, 0.0, x) - np.where(same, 0.0, y))))


def run(library, shapes=SHAPES):
    """GPU kernels vs CPU kernels on every case: [(name, max |gpu - cpu|, tolerance)]."""
    _bind(library)
    results = []
    for case in _cases(shapes=shapes):
        gpu, cpu = _outputs(library, "gpu", case), _outputs(library, "cpu", case)
        results += [(name, _difference(gpu[name], cpu[name]), TOLERANCE) for name in cpu]
    return results


def run_cpu(library):
    """CPU entry points vs numpy: [(name, max |cpu - numpy|, tolerance)] (runs without a GPU)."""
    _bind(library)
    results = []
    for case in _cases():
        cpu, reference = _outputs(library, "cpu", case), _references(case)
        results += [(name, _difference(cpu[name], reference[name]), TOLERANCE) for name in cpu]
    return results
