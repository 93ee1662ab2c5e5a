"""The block_sparse custom ops (MRA): compiled op vs numpy vs pure-TF twin, outputs and gradients, numerical
gradient checks, input validation, XLA for the twin, and the TF-free harness's CPU entry points."""
import ctypes
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import graph_op_types
from tests.ops import block_sparse_harness_cases as cases
from tests.ops import cuda_harness
from tfmodels.ops import block_sparse as bs
from tfmodels.ops import dispatch, loader

BLOCK = 32
# batch, row blocks, column blocks, dim, slots (odd dims, a single row, unused slots, more slots than blocks...)
SHAPES = [(2, 3, 3, 16, 5), (3, 4, 2, 7, 6), (1, 1, 5, 33, 4), (2, 5, 5, 8, 25), (2, 2, 3, 1, 0)]


@pytest.fixture(scope="module", autouse=True)
def _library():
    with dispatch.op_mode("custom"):
        assert dispatch.use_custom_op("block_sparse"), "the block_sparse op library must build here"


def make_case(shape, seed, dtype=np.float32, duplicates=False):
    batch, rows, cols, dim, slots = shape
    rng = np.random.RandomState(seed)
    indices = cases.random_indices(rng, batch, rows, cols, slots, duplicates=duplicates)
    a = rng.randn(batch, rows * BLOCK, dim).astype(dtype)
    b = rng.randn(batch, cols * BLOCK, dim).astype(dtype)
    blocks = rng.randn(batch, slots, BLOCK, BLOCK).astype(dtype)
    return rows, cols, indices, a, b, blocks


def all_ops(rows, cols, indices, a, b, blocks):
    """Every public function on one case: name -> (function of its differentiable inputs, those inputs)."""
    return {
        "sddmm": (lambda a, b: bs.sddmm(a, b, indices), (a, b)),
        "spmm": (lambda blocks, dense: bs.spmm(blocks, indices, dense, rows), (blocks, b)),
        "spmm_transposed": (lambda blocks, dense: bs.spmm(blocks, indices, dense, cols, transpose_blocks=True),
                            (blocks, a)),
        "row_max": (lambda blocks: bs.row_max(blocks, indices, rows, cols), (blocks,)),
        "row_sum": (lambda blocks: bs.row_sum(blocks, indices, rows, cols), (blocks,)),
    }


def run(mode, fn, inputs, seed=0):
    """Output and gradients (of a random projection of the output) in one op mode."""
    tensors = [tf.constant(x) for x in inputs]
    with dispatch.op_mode(mode), tf.GradientTape() as tape:
        tape.watch(tensors)
        out = fn(*tensors)
        weights = tf.constant(np.random.RandomState(seed).randn(*out.shape).astype(out.dtype.as_numpy_dtype))
        finite = tf.where(tf.math.is_finite(out), out, tf.zeros_like(out))
        loss = tf.reduce_sum(finite * weights)
    grads = tape.gradient(loss, tensors)
    return out.numpy(), [g.numpy() if g is not None else None for g in grads]


def assert_same(x, y, atol, name):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    assert x.shape == y.shape, f"{name}: {x.shape} vs {y.shape}"
    same_inf = np.isinf(x) & (x == y)
    diff = np.abs(np.where(same_inf, 0, x) - np.where(same_inf, 0, y))
    assert diff.size == 0 or diff.max() <= atol, f"{name}: max difference {diff.max():.3g} > {atol}"


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}R{}C{}D{}K{}".format(*s))
def test_op_matches_numpy_and_twin_outputs_and_gradients(shape):
    rows, cols, indices, a, b, blocks = make_case(shape, seed=sum(shape))
    references = {
        "sddmm": cases.sddmm_ref(a, b, indices),
        "spmm": cases.spmm_ref(blocks, indices, b, rows, False),
        "spmm_transposed": cases.spmm_ref(blocks, indices, a, cols, True),
        "row_max": cases.row_reduce_ref(blocks, indices, rows, cols, True),
        "row_sum": cases.row_reduce_ref(blocks, indices, rows, cols, False),
    }
    for name, (fn, inputs) in all_ops(rows, cols, indices, a, b, blocks).items():
        custom, custom_grads = run("custom", fn, inputs)
        twin, twin_grads = run("reference", fn, inputs)
        assert_same(custom, references[name], 1e-4, f"{name} op vs numpy")
        assert_same(custom, twin, 1e-4, f"{name} op vs twin")
        for i, (g_op, g_twin) in enumerate(zip(custom_grads, twin_grads)):
            assert_same(g_op, g_twin, 1e-4, f"{name} gradient {i} op vs twin")


def test_random_shapes_and_duplicate_slots_op_vs_twin():
    rng = np.random.RandomState(7)
    for trial in range(6):
        shape = (int(rng.randint(1, 4)), int(rng.randint(1, 6)), int(rng.randint(1, 6)), int(rng.randint(1, 70)),
                 int(rng.randint(0, 12)))
        rows, cols, indices, a, b, blocks = make_case(shape, seed=trial, duplicates=trial % 2 == 1)
        for name, (fn, inputs) in all_ops(rows, cols, indices, a, b, blocks).items():
            custom, custom_grads = run("custom", fn, inputs, seed=trial)
            twin, twin_grads = run("reference", fn, inputs, seed=trial)
            assert_same(custom, twin, 1e-4, f"{shape} {name}")
            for g_op, g_twin in zip(custom_grads, twin_grads):
                assert_same(g_op, g_twin, 1e-4, f"{shape} {name} gradient")


@pytest.mark.parametrize("mode", ["custom", "reference"])
def test_numerical_gradients(mode):
    """tf.test.compute_gradient (float64): analytic Jacobians equal finite differences, op and twin alike.

    Each op input is a fixed random linear image of a few parameters and the output is projected to a few values,
    so the check runs through the op's gradient in random directions with small Jacobians."""
    rows, cols, indices, a, b, blocks = make_case((2, 2, 3, 3, 4), seed=3, dtype=np.float64)
    rng = np.random.RandomState(11)
    params = 5
    with dispatch.op_mode(mode):
        for name, (fn, inputs) in all_ops(rows, cols, indices, a, b, blocks).items():
            bases = [tf.constant(rng.randn(params, *x.shape)) for x in inputs]
            offsets = [tf.constant(x) for x in inputs]
            projection = None

            def composite(*thetas):
                nonlocal projection
                args = [o + tf.tensordot(t, basis, axes=1) for t, basis, o in zip(thetas, bases, offsets)]
                out = fn(*args)
                out = tf.where(tf.math.is_finite(out), out, tf.zeros_like(out))  # rows without blocks: -inf
                if projection is None:
                    projection = tf.constant(rng.randn(4, *out.shape))
                return tf.tensordot(projection, out, axes=out.shape.rank)

            thetas = [tf.constant(rng.randn(params) * 0.1) for _ in inputs]
            theoretical, numerical = tf.test.compute_gradient(composite, thetas, delta=1e-5)
            for t, n in zip(theoretical, numerical):
                np.testing.assert_allclose(t, n, rtol=1e-5, atol=1e-5, err_msg=f"{mode} {name}")


def test_row_max_gradient_shares_ties_and_skips_empty_rows():
    blocks = np.zeros((1, 2, BLOCK, BLOCK), np.float32)
    blocks[0, 0, 0, :2] = 5.0          # row 0: two maxima in slot 0 ...
    blocks[0, 1, 0, 7] = 5.0           # ... and one in slot 1
    indices = np.array([[0, 1]], np.int32)  # both in row block 0 of a 2 x 2 grid; row block 1 has none
    for mode in ("custom", "reference"):
        out, (grad,) = run(mode, lambda x: bs.row_max(x, indices, 2, 2), (blocks,))
        assert np.all(np.isneginf(out[0, BLOCK:])) and out[0, 0] == 5.0
        with dispatch.op_mode(mode), tf.GradientTape() as tape:
            x = tf.constant(blocks)
            tape.watch(x)
            y = bs.row_max(x, indices, 2, 2)[:, 0]
        g = tape.gradient(y, x).numpy()
        np.testing.assert_allclose([g[0, 0, 0, 0], g[0, 0, 0, 1], g[0, 1, 0, 7]], [1 / 3] * 3, rtol=1e-6)
        assert np.isclose(g.sum(), 1.0)


def test_bad_inputs_raise_clear_errors():
    rows, cols, indices, a, b, blocks = make_case((2, 2, 2, 4, 3), seed=1)
    bad = indices.copy()
    bad[1, 0] = rows * cols
    module = bs._ops()
    for mode in ("custom", "reference"):
        with dispatch.op_mode(mode):
            with pytest.raises(tf.errors.InvalidArgumentError, match="indices"):
                bs.sddmm(a, b, bad)
            with pytest.raises(tf.errors.InvalidArgumentError, match="indices"):
                bs.row_sum(blocks, bad, rows, cols)
            with pytest.raises(ValueError, match="multiple of the block size"):
                bs.sddmm(a[:, :-1], b, indices)
            with pytest.raises(ValueError, match="rank 4"):
                bs.row_max(blocks[0], indices, rows, cols)
            with pytest.raises(ValueError, match="agree"):
                bs.spmm(blocks[:, :2], indices, b, rows)
            with pytest.raises(ValueError, match=">= 0"):
                bs.spmm(blocks, indices, b, -1)
    # The compiled kernels validate on their own (e.g. when called from a graph without the Python checks).
    with pytest.raises(tf.errors.InvalidArgumentError, match="outside the grid"):
        module.tf_models_block_sparse_sddmm(a, b, bad)
    with pytest.raises(tf.errors.InvalidArgumentError, match="multiple of the block size"):
        module.tf_models_block_sparse_spmm(blocks, indices, b[:, 1:], rows)
    with pytest.raises(tf.errors.InvalidArgumentError, match="feature size"):
        module.tf_models_block_sparse_sddmm(a, b[:, :, :3], indices)
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_col_blocks must be >= 0"):
        module.tf_models_block_sparse_row_max(blocks, indices, rows, -2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="batch"):
        module.tf_models_block_sparse_spmm(blocks, indices, b[:1], rows)


def test_graph_mode_dynamic_shapes_and_xla_twin():
    rows, cols, indices, a, b, blocks = make_case((2, 3, 3, 8, 4), seed=5)
    spec = tf.TensorSpec([None, None, 8], tf.float32)

    @tf.function(input_signature=[spec, spec, tf.TensorSpec([None, None], tf.int32)])
    def graph(a, b, indices):
        blocks = bs.sddmm(a, b, indices)
        return bs.spmm(blocks, indices, b, tf.shape(a)[1] // BLOCK)

    @tf.function(jit_compile=True)
    def compiled(a, b, indices):
        blocks = bs.sddmm(a, b, indices, validate=False)
        out = bs.spmm(blocks, indices, b, rows, validate=False)
        return out, bs.row_max(blocks, indices, rows, cols, validate=False), bs.row_sum(blocks, indices, rows, cols,
                                                                                       validate=False)

    with dispatch.op_mode("custom"):
        expected = graph(a, b, indices).numpy()
    with dispatch.op_mode("auto"):  # inside XLA the twin is used even in auto mode
        out, maxima, sums = compiled(a, b, indices)
    assert_same(out, expected, 1e-4, "XLA twin vs graph op")
    assert_same(maxima, cases.row_reduce_ref(cases.sddmm_ref(a, b, indices).astype(np.float32), indices, rows, cols,
                                             True), 1e-4, "XLA row max")
    assert np.all(np.isfinite(sums))


@pytest.mark.skipif(not cuda_harness.nvcc_available(), reason="nvcc is not installed on this machine")
def test_harness_cpu_entry_points_match_numpy_and_gpu_when_present(tmp_path):
    """The TF-free harness builds with nvcc; its CPU entry points match numpy. Its GPU entry points are compared
    with the CPU ones only where a CUDA GPU is visible (python tests/ops/cuda_harness.py)."""
    library = ctypes.CDLL(cuda_harness.build_harness("block_sparse", str(tmp_path)))
    for name, difference, tolerance in cases.run_cpu(library):
        assert difference <= tolerance, f"{name}: {difference:.3g}"
    if cuda_harness.gpu_available():
        for name, difference, tolerance in cases.run(library):
            assert difference <= tolerance, f"GPU {name}: {difference:.3g}"


# ------------------------------------------------------------------------------------------------------------
# The fused high-resolution attention (TFModels>BlockSparseAttention) vs its twin (the primitives composed)


def make_attention_case(shape, seed, dtype=np.float32, masked=True, duplicates=False):
    """query/key/value, indices with unused slots and row blocks without slots, and a key mask with a fully
    masked column block (or None)."""
    batch, rows, cols, dim, dim_v, slots = shape
    rng = np.random.RandomState(seed)
    indices = cases.random_indices(rng, batch, rows, cols, slots, duplicates=duplicates)
    if rows > 1:  # the last row block of example 0 has no slot
        indices[0][indices[0] // cols == rows - 1] = -1
    query = (rng.randn(batch, rows * BLOCK, dim) * 0.5).astype(dtype)
    key = (rng.randn(batch, cols * BLOCK, dim) * 0.5).astype(dtype)
    value = rng.randn(batch, cols * BLOCK, dim_v).astype(dtype)
    mask = None
    if masked:
        mask = (rng.rand(batch, cols * BLOCK) > 0.3).astype(dtype)
        mask[0, :BLOCK] = 0  # a column block with every key masked
    return query, key, value, indices, mask


def run_attention(mode, query, key, value, indices, mask, scale, use_norm=True, seed=0):
    tensors = [tf.constant(x) for x in (query, key, value)]
    with dispatch.op_mode(mode), tf.GradientTape() as tape:
        tape.watch(tensors)
        out, norm, row_max = bs.attention(*tensors, indices, mask, scale=scale)
        rng = np.random.RandomState(seed)
        loss = tf.reduce_sum(out * rng.randn(*out.shape).astype(out.dtype.as_numpy_dtype))
        if use_norm:
            loss += tf.reduce_sum(norm * rng.randn(*norm.shape).astype(norm.dtype.as_numpy_dtype))
    grads = tape.gradient(loss, tensors)
    return [out.numpy(), norm.numpy(), row_max.numpy()], [g.numpy() for g in grads]


def assert_close_relative(x, y, rtol, name):
    """|x - y| <= rtol * max |y| (+inf/-inf must agree)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    assert x.shape == y.shape, f"{name}: {x.shape} vs {y.shape}"
    assert np.array_equal(np.isinf(x), np.isinf(y)) and np.array_equal(x[np.isinf(x)], y[np.isinf(y)]), name
    finite = np.isfinite(y)
    assert np.all(np.isfinite(x[finite])), f"{name}: not finite"
    if finite.any():
        scale = max(np.abs(y[finite]).max(), 1.0)
        diff = np.abs(x[finite] - y[finite]).max()
        assert diff <= rtol * scale, f"{name}: max difference {diff:.3g} > {rtol} * {scale:.3g}"


ATTENTION_SHAPES = [(2, 3, 3, 16, 16, 5), (3, 4, 2, 7, 9, 6), (1, 1, 5, 33, 64, 4), (2, 5, 5, 64, 64, 25),
                    (2, 2, 3, 1, 3, 0), (1, 3, 3, 70, 65, 9)]


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("shape", ATTENTION_SHAPES, ids=lambda s: "B{}R{}C{}D{}E{}K{}".format(*s))
def test_attention_op_matches_twin_outputs_and_gradients(shape, masked):
    query, key, value, indices, mask = make_attention_case(shape, seed=sum(shape), masked=masked)
    for use_norm in (True, False):  # False: no upstream gradient for norm (the op's grad_norm is empty)
        custom, custom_grads = run_attention("custom", query, key, value, indices, mask, 0.3, use_norm)
        twin, twin_grads = run_attention("reference", query, key, value, indices, mask, 0.3, use_norm)
        for name, x, y in zip(("out", "norm", "row_max"), custom, twin):
            assert_close_relative(x, y, 1e-5, f"{name} op vs twin")
        for name, x, y in zip(("query", "key", "value"), custom_grads, twin_grads):
            assert_close_relative(x, y, 1e-5, f"d {name} op vs twin (use_norm={use_norm})")
    # Row blocks without slots: out 0, norm 0, row_max -inf (example 0's last row block when it has more than one).
    if shape[1] > 1:
        assert np.all(custom[0][0, -BLOCK:] == 0) and np.all(custom[1][0, -BLOCK:] == 0)
        assert np.all(np.isneginf(custom[2][0, -BLOCK:]))
    if masked:  # masked keys get no weight, hence no key or value gradient
        dead = mask == 0
        assert np.all(custom_grads[1][dead] == 0) and np.all(custom_grads[2][dead] == 0)


def test_attention_op_hands_its_weights_to_the_gradient():
    """The op's fourth output (for the gradient only): A = exp(S - row max) * key mask per selected block,
    query-major like sddmm's blocks, zeros for unused slots."""
    query, key, value, indices, mask = make_attention_case((2, 5, 5, 64, 64, 25), seed=3, masked=True)
    out, norm, row_max, weights = (t.numpy() for t in bs._ops().tf_models_block_sparse_attention(
        query, key, value, mask, indices, scale=0.3))
    num_cols = key.shape[1] // BLOCK
    valid = indices >= 0
    rows, cols = np.maximum(indices, 0) // num_cols, np.maximum(indices, 0) % num_cols
    scores = bs.sddmm_twin(query.astype(np.float64), key.astype(np.float64), indices).numpy() * 0.3
    slot_mask = np.take_along_axis(mask.reshape(mask.shape[0], num_cols, BLOCK), cols[..., None], 1)[:, :, None, :]
    shift = np.take_along_axis(row_max.reshape(row_max.shape[0], -1, BLOCK), rows[..., None], 1)[..., None]
    expected = np.where(valid[..., None, None], np.exp(scores * slot_mask - shift) * slot_mask, 0.0)
    assert (~valid).any() and valid.any()
    assert np.all(weights[~valid] == 0)
    assert_close_relative(weights, expected, 1e-5, "weights")
    # The forward's outputs follow from them: norm = row sums over each row block's slots.
    norm_from_weights = np.zeros_like(norm.reshape(norm.shape[0], -1, BLOCK), dtype=np.float64)
    for b, s in zip(*np.nonzero(valid)):
        norm_from_weights[b, rows[b, s]] += weights[b, s].sum(axis=1)
    assert_close_relative(norm, norm_from_weights.reshape(norm.shape), 1e-5, "norm")


def test_attention_random_shapes_and_duplicate_slots_op_vs_twin():
    rng = np.random.RandomState(17)
    for trial in range(6):
        shape = tuple(int(x) for x in (rng.randint(1, 4), rng.randint(1, 6), rng.randint(1, 6), rng.randint(1, 70),
                                       rng.randint(1, 70), rng.randint(0, 12)))
        query, key, value, indices, mask = make_attention_case(shape, seed=trial, masked=trial % 2 == 0,
                                                               duplicates=trial % 3 == 1)
        scale = float(rng.uniform(0.05, 1.0))
        custom, custom_grads = run_attention("custom", query, key, value, indices, mask, scale, seed=trial)
        twin, twin_grads = run_attention("reference", query, key, value, indices, mask, scale, seed=trial)
        for x, y in zip(custom + custom_grads, twin + twin_grads):
            assert_close_relative(x, y, 1e-5, f"{shape}")


def test_attention_on_gpu_composes_the_compiled_primitives(monkeypatch):
    """The fused op has no CUDA kernel: where TF sees a GPU, attention() composes sddmm/row_max/spmm/row_sum
    (compiled, with CUDA kernels). Simulated here: same numbers, and no fused op in the graph."""
    query, key, value, indices, mask = make_attention_case((2, 3, 3, 16, 8, 6), seed=4)
    fused, fused_grads = run_attention("custom", query, key, value, indices, mask, 0.25)
    monkeypatch.setattr(bs, "_gpu_visible", lambda: True)
    composed, composed_grads = run_attention("custom", query, key, value, indices, mask, 0.25)
    for x, y in zip(composed + composed_grads, fused + fused_grads):
        assert_close_relative(x, y, 1e-5, "composed vs fused")
    with dispatch.op_mode("custom"):
        types = graph_op_types(lambda q, k, v: bs.attention(q, k, v, indices, mask, scale=0.25),
                               *(tf.TensorSpec(x.shape, tf.float32) for x in (query, key, value)))
    assert "TFModels>BlockSparseAttention" not in types and "TFModels>BlockSparseSddmm" in types, types


# Run in a fresh process (a second build of the same ops cannot be loaded next to the first).
_PORTABLE_BUILD_CHECK = """
import glob, os, shutil, subprocess
import numpy as np
from tests.ops.test_block_sparse_ops import ATTENTION_SHAPES, make_attention_case, run_attention, assert_close_relative
from tfmodels.ops import block_sparse as bs
assert bs._ops() is not None
libraries = glob.glob(os.path.join(os.environ["TFMODELS_OPS_CACHE"], "*block_sparse*.so"))
assert libraries, "not built in the test cache"
if shutil.which("objdump"):  # built without AVX-512 indeed: not one AVX-512 register in the code
    code = subprocess.run(["objdump", "-d", libraries[0]], capture_output=True, text=True, check=True).stdout
    assert "%zmm" not in code, "the library uses AVX-512"
for shape in ATTENTION_SHAPES:
    case = make_attention_case(shape, seed=sum(shape), masked=True)
    custom = run_attention("custom", *case, 0.3)
    twin = run_attention("reference", *case, 0.3)
    for x, y in zip(custom[0] + custom[1], twin[0] + twin[1]):
        assert_close_relative(x, y, 1e-5, str(shape))
print("PORTABLE BUILD OK")
"""


def test_attention_built_without_avx512_matches_the_twin(tmp_path):
    """Built without AVX-512, the kernels take their portable paths (the AVX-512 ones are compiled out); outputs
    and gradients still match the twin. The build is the wheel's portable one (x86-64-v3, AVX2) where this CPU
    runs it, else the x86-64 baseline: any x86-64 CPU runs this test."""
    target = "x86-64-v3" if loader.PREBUILT_TARGETS["x86-64-v3"] <= loader.cpu_flags() else "x86-64"
    env = dict(os.environ, TFMODELS_OPS_MARCH=target, TFMODELS_OPS_CACHE=str(tmp_path),
               TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run([sys.executable, "-c", _PORTABLE_BUILD_CHECK], env=env, cwd=root, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0 and "PORTABLE BUILD OK" in result.stdout, result.stderr[-3000:]


@pytest.mark.parametrize("mode", ["custom", "reference"])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_attention_numerical_gradients(mode, masked):
    """tf.test.compute_gradient (float64) through the fused op's gradient op (custom) and the twin, in random
    directions of query, key and value. row_max is a stabilising shift without gradient, so the checked values
    are the shift-free out * exp(row_max) and norm * exp(row_max) (sums of exp(S) v and exp(S)), projected."""
    query, key, value, indices, mask = make_attention_case((2, 2, 3, 3, 2, 4), seed=9, dtype=np.float64,
                                                           masked=masked)
    rng = np.random.RandomState(12)
    params = 4
    inputs = (query, key, value)
    bases = [tf.constant(rng.randn(params, *x.shape)) for x in inputs]
    offsets = [tf.constant(x) for x in inputs]
    project_out = tf.constant(rng.randn(3, *query.shape[:2], value.shape[2]))
    project_norm = tf.constant(rng.randn(3, *query.shape[:2]))

    def composite(tq, tk, tv):
        args = [o + tf.tensordot(t, basis, axes=1) for t, basis, o in zip((tq, tk, tv), bases, offsets)]
        out, norm, row_max = bs.attention(*args, indices, mask, scale=0.7)
        unshift = tf.exp(tf.where(tf.math.is_finite(row_max), row_max, tf.zeros_like(row_max)))
        out, norm = out * unshift[..., None], norm * unshift
        return tf.tensordot(project_out, out, axes=3) + tf.tensordot(project_norm, norm, axes=2)

    thetas = [tf.constant(rng.randn(params) * 0.1) for _ in inputs]
    with dispatch.op_mode(mode):
        theoretical, numerical = tf.test.compute_gradient(composite, thetas, delta=1e-5)
    for t, n in zip(theoretical, numerical):
        np.testing.assert_allclose(t, n, rtol=1e-5, atol=1e-5, err_msg=f"{mode}")


def test_attention_bad_inputs_raise_clear_errors():
    query, key, value, indices, mask = make_attention_case((2, 2, 2, 4, 3, 3), seed=2)
    bad = indices.copy()
    bad[1, 0] = 4
    for mode in ("custom", "reference"):
        with dispatch.op_mode(mode):
            with pytest.raises(tf.errors.InvalidArgumentError, match="indices"):
                bs.attention(query, key, value, bad, mask)
            with pytest.raises(ValueError, match="multiple of the block size"):
                bs.attention(query[:, :-1], key, value, indices, mask)
            with pytest.raises(ValueError, match="rank 2"):
                bs.attention(query, key, value, indices, mask[0])
    module = bs._ops()
    no_mask = np.zeros([0], np.float32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="outside the grid"):
        module.tf_models_block_sparse_attention(query, key, value, mask, bad)
    with pytest.raises(tf.errors.InvalidArgumentError, match="feature size"):
        module.tf_models_block_sparse_attention(query, key[:, :, :3], value, no_mask, indices)
    with pytest.raises(tf.errors.InvalidArgumentError, match="length of key"):
        module.tf_models_block_sparse_attention(query, key, value[:, :BLOCK], no_mask, indices)
    with pytest.raises(tf.errors.InvalidArgumentError, match="key_mask"):
        module.tf_models_block_sparse_attention(query, key, value, mask[:, :BLOCK], indices)
    with pytest.raises(tf.errors.InvalidArgumentError, match="batch"):
        module.tf_models_block_sparse_attention(query[:1], key, value, mask, indices)
    out, norm, row_max, weights = module.tf_models_block_sparse_attention(query, key, value, mask, indices)
    with pytest.raises(tf.errors.InvalidArgumentError, match="weights"):
        module.tf_models_block_sparse_attention_grad(query, key, value, indices, weights[:, 1:], out, norm)
    with pytest.raises(tf.errors.InvalidArgumentError, match="weights"):
        module.tf_models_block_sparse_attention_grad(query, key, value, indices, weights[..., 1:], out, norm)
    with pytest.raises(tf.errors.InvalidArgumentError, match="grad_out"):
        module.tf_models_block_sparse_attention_grad(query, key, value, indices, weights, out[..., :1], norm)
    with pytest.raises(tf.errors.InvalidArgumentError, match="grad_norm"):
        module.tf_models_block_sparse_attention_grad(query, key, value, indices, weights, out, norm[:1])
