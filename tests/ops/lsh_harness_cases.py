"""Cases for the LSH CUDA harness (custom_ops/lsh/harness.cu), driven by numpy through ctypes; no TensorFlow.

`run(library)` compares the CUDA kernels with the CPU kernels on a GPU machine (tests/ops/cuda_harness.py);
`run_cpu_reference(library)` compares the CPU entry points with a numpy reference of the semantics (usable on a
host-only build of the harness, see tests/ops/test_lsh_ops.py). Both return (case name, max difference, tolerance).
Hash codes are compared exactly (difference = number of differing codes, tolerance 0).
"""
import ctypes

import numpy as np

# (batch, num_query, num_key, dim, weight_dim, num_hash, code_len): odd lengths, heads that are not powers of two
# or below the warp size, one hash and many, short and long codes.
SHAPES = [
    (1, 1, 1, 1, 1, 1, 1),
    (2, 7, 9, 5, 3, 3, 4),
    (3, 37, 29, 17, 17, 13, 6),
    (2, 128, 100, 33, 33, 32, 9),
    (4, 257, 255, 64, 64, 65, 8),
    (2, 64, 70, 100, 16, 16, 12),
    (2, 5, 6, 1000, 7, 3, 8),  # a Hadamard block of 1024 threads, CUDA's largest
]

_f32 = ctypes.POINTER(ctypes.c_float)
_i32 = ctypes.POINTER(ctypes.c_int32)
_i64 = ctypes.c_int64


def _ptr(array, kind):
    return array.ctypes.data_as(kind) if array is not None else ctypes.cast(None, kind)


def _bind(library):
    library.lsh_fast_hash.argtypes = [ctypes.c_int, _f32, _i32, _f32] + [_i64] * 7 + [_i32]
    library.lsh_cumulation.argtypes = [ctypes.c_int, ctypes.c_int, _i32, _i32, _f32, _i32, _i32, _f32, _f32] + \
        [_i64] * 7 + [_f32]
    return library


def padded_dim(dim, code_len):
    size = max(dim, code_len, 32)
    return 1 << (size - 1).bit_length()


def num_parts(num_hash, padded, code_len):
    return max(1, -(-num_hash // (padded // code_len)))


def fast_hash(library, use_gpu, vectors, mask, projections, num_hash, code_len):
    batch, num_vectors, dim = vectors.shape
    codes = np.zeros((batch, num_vectors, num_hash), np.int32)
    status = library.lsh_fast_hash(use_gpu, _ptr(vectors, _f32), _ptr(mask, _i32), _ptr(projections, _f32), batch,
                                   num_vectors, dim, projections.shape[3], projections.shape[2], num_hash, code_len,
                                   _ptr(codes, _i32))
    if status != 0:
        raise RuntimeError(f"lsh_fast_hash(use_gpu={use_gpu}) returned {status}")
    return codes


def cumulation(library, use_gpu, query_mask, query_code, key_mask, key_code, value, capacity, query_weight=None,
               key_weight=None):
    batch, num_query, num_hash = query_code.shape
    weighted = query_weight is not None
    out = np.zeros((batch, num_query, value.shape[2]), np.float32)
    status = library.lsh_cumulation(use_gpu, int(weighted), _ptr(query_mask, _i32), _ptr(query_code, _i32),
                                    _ptr(query_weight, _f32), _ptr(key_mask, _i32), _ptr(key_code, _i32),
                                    _ptr(key_weight, _f32), _ptr(value, _f32), batch, num_query, key_code.shape[1],
                                    num_hash, query_weight.shape[2] if weighted else 0, value.shape[2], capacity,
                                    _ptr(out, _f32))
    if status != 0:
        raise RuntimeError(f"lsh_cumulation(use_gpu={use_gpu}, weighted={weighted}) returned {status}")
    return out


def make_case(shape, seed):
    batch, num_query, num_key, dim, weight_dim, num_hash, code_len = shape
    rng = np.random.RandomState(seed)
    padded = padded_dim(dim, code_len)
    case = {
        "queries": rng.randn(batch, num_query, dim).astype(np.float32),
        "keys": rng.randn(batch, num_key, dim).astype(np.float32),
        "query_mask": (rng.rand(batch, num_query) > 0.2).astype(np.int32),
        "key_mask": (rng.rand(batch, num_key) > 0.2).astype(np.int32),
        "projections": (2 * rng.randint(0, 2, (batch, 3, num_parts(num_hash, padded, code_len), padded)) - 1
                        ).astype(np.float32),
        "value": rng.randn(batch, num_key, dim).astype(np.float32),
        "query_weight": rng.randn(batch, num_query, weight_dim).astype(np.float32),
        "key_weight": rng.randn(batch, num_key, weight_dim).astype(np.float32),
        "num_hash": num_hash, "code_len": code_len, "capacity": 2 ** code_len,
    }
    case["query_mask"][0, 0] = 1
    case["key_mask"][0, 0] = 1
    # keys near the queries, so that buckets are shared
    shared = min(num_query, num_key)
    case["keys"][:, :shared] = case["queries"][:, :shared] + 0.3 * case["keys"][:, :shared]
    return case


def _run_case(library, case, use_gpu):
    codes_q = fast_hash(library, use_gpu, case["queries"], case["query_mask"], case["projections"],
                        case["num_hash"], case["code_len"])
    codes_k = fast_hash(library, use_gpu, case["keys"], case["key_mask"], case["projections"], case["num_hash"],
                        case["code_len"])
    return codes_q, codes_k


def random_shapes(rng, count):
    """`count` shapes drawn from `rng` (a numpy RandomState), in SHAPES' form: heads up to 300 (Hadamard blocks up
    to 512 threads), codes up to 8 bits."""
    return [(rng.randint(1, 4), rng.randint(1, 41), rng.randint(1, 41), rng.randint(1, 301), rng.randint(1, 71),
             rng.randint(1, 41), rng.randint(1, 9)) for _ in range(count)]


def run(library, shapes=SHAPES):
    """CUDA vs CPU kernels, on the same inputs (the cumulations on the CPU's codes)."""
    library = _bind(library)
    results = []
    for i, shape in enumerate(shapes):
        case = make_case(shape, seed=i)
        name = "B{}xNq{}xNk{}xD{}xW{}xH{}xL{}".format(*shape)
        cpu_q, cpu_k = _run_case(library, case, 0)
        gpu_q, gpu_k = _run_case(library, case, 1)
        results.append((f"fast_hash {name}", float(np.sum(cpu_q != gpu_q) + np.sum(cpu_k != gpu_k)), 0.0))
        common = (case["query_mask"], cpu_q, case["key_mask"], cpu_k, case["value"], case["capacity"])
        for weighted in (False, True):
            extra = {"query_weight": case["query_weight"], "key_weight": case["key_weight"]} if weighted else {}
            cpu = cumulation(library, 0, *common, **extra)
            gpu = cumulation(library, 1, *common, **extra)
            scale = max(1.0, float(np.max(np.abs(cpu))))
            label = "lsh_weighted_cumulation" if weighted else "lsh_cumulation"
            results.append((f"{label} {name}", float(np.max(np.abs(cpu - gpu))) / scale if cpu.size else 0.0, 1e-5))
    return results


# ---------------------------------------------------------------------------------------------------------------
# numpy reference of the semantics (custom_ops/lsh/lsh_kernels.h)


def _hadamard(x):
    x = x.copy()
    size = x.shape[-1]
    stride = size // 2
    while stride >= 1:
        pairs = x.reshape(-1, size // (2 * stride), 2, stride)
        a, b = pairs[:, :, 0].copy(), pairs[:, :, 1].copy()
        pairs[:, :, 0], pairs[:, :, 1] = a + b, a - b
        x = pairs.reshape(x.shape)
        stride //= 2
    return x


def reference_fast_hash(vectors, mask, projections, num_hash, code_len):
    batch, num_vectors, dim = vectors.shape
    _, _, num_part, padded = projections.shape
    per_part = padded // code_len
    codes = np.zeros((batch, num_vectors, num_hash), np.int32)
    weights = 1 << np.arange(code_len)
    for b in range(batch):
        x = np.zeros((num_vectors, padded), np.float32)
        x[:, :dim] = vectors[b]
        parts = []
        for p in range(num_part):
            y = x
            for r in range(3):
                y = _hadamard(y * projections[b, r, p])
            bits = (y[:, :per_part * code_len] > 0).reshape(num_vectors, per_part, code_len)
            parts.append((bits * weights).sum(-1))
        codes[b] = np.concatenate(parts, axis=1)[:, :num_hash] * (mask[b][:, None] != 0)
    return codes


def reference_cumulation(query_mask, query_code, key_mask, key_code, value, query_weight=None, key_weight=None):
    collisions = (query_code[:, :, None, :] == key_code[:, None, :, :]).sum(-1).astype(np.float64)
    collisions *= query_mask[:, :, None] * key_mask[:, None, :]
    if query_weight is not None:
        collisions *= np.einsum("bqw,bkw->bqk", query_weight.astype(np.float64), key_weight)
    return np.einsum("bqk,bkd->bqd", collisions, value) / query_code.shape[2]


def run_cpu_reference(library):
    """CPU entry points vs the numpy reference."""
    library = _bind(library)
    results = []
    for i, shape in enumerate(SHAPES):
        case = make_case(shape, seed=i)
        name = "B{}xNq{}xNk{}xD{}xW{}xH{}xL{}".format(*shape)
        codes_q, codes_k = _run_case(library, case, 0)
        expected_q = reference_fast_hash(case["queries"], case["query_mask"], case["projections"], case["num_hash"],
                                         case["code_len"])
        results.append((f"fast_hash {name}", float(np.sum(codes_q != expected_q)), 0.0))
        common = (case["query_mask"], codes_q, case["key_mask"], codes_k, case["value"])
        for weighted in (False, True):
            extra = {"query_weight": case["query_weight"], "key_weight": case["key_weight"]} if weighted else {}
            got = cumulation(library, 0, *common, case["capacity"], **extra)
            expected = reference_cumulation(*common, **extra)
            scale = max(1.0, float(np.max(np.abs(expected))))
            label = "lsh_weighted_cumulation" if weighted else "lsh_cumulation"
            results.append((f"{label} {name}", float(np.max(np.abs(got - expected))) / scale, 1e-5))
    return results
