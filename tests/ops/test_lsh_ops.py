"""The LSH op family (YOSO): compiled ops vs their pure-TF twins vs a numpy reference of the semantics, on odd
shapes with masks; gradients (op vs twin, tf.test.compute_gradient, the reference's backward formulas); bad
inputs; XLA; dispatch; the TF-free harness (host build); convergence of the sampled attention to its expectation.
"""
import ctypes
import os
import shutil
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import graph_op_types
from tests.ops import cuda_harness
from tests.ops import lsh_harness_cases as cases
from tfmodels.ops import dispatch, loader, lsh, lsh_attention

# (batch, num_query, num_key, dim, weight_dim, num_hash, code_len)
# The last one has few buckets with many rows and small W, D: the weighted kernel's factored (bucket summary) path.
SHAPES = [(1, 1, 1, 1, 1, 1, 1), (2, 7, 9, 5, 3, 3, 4), (3, 37, 29, 17, 17, 13, 6), (2, 65, 50, 33, 33, 32, 9),
          (2, 40, 41, 64, 64, 65, 8), (2, 60, 70, 4, 2, 5, 2)]
IDS = ["B{}Nq{}Nk{}D{}W{}H{}L{}".format(*s) for s in SHAPES]


@pytest.fixture(scope="module")
def ops():
    library = loader.OpLibrary.get("lsh")
    module = library.load()
    assert module is not None, f"the lsh ops failed to build: {library.error}"
    return module


def inputs_for(shape, seed=0):
    """Queries/keys hashed with shared projections, masks with padding, values and weights."""
    case = cases.make_case(shape, seed)
    batch, _, _, dim, _, num_hash, code_len = shape
    projections = lsh.fast_hash_projections(tf.constant([seed, 1]), batch, dim, num_hash, code_len)
    with dispatch.op_mode("reference"):
        case["query_code"] = lsh.fast_hash(case["queries"], case["query_mask"], projections, num_hash, code_len)
        case["key_code"] = lsh.fast_hash(case["keys"], case["key_mask"], projections, num_hash, code_len)
    case["tf_projections"] = projections
    return case


def both_modes(fn):
    with dispatch.op_mode("custom"):
        custom = fn()
    with dispatch.op_mode("reference"):
        reference = fn()
    return custom, reference


def close(a, b, tol=1e-5, name=""):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(1.0, float(np.max(np.abs(b)))) if b.size else 1.0
    diff = float(np.max(np.abs(a - b))) / scale if a.size else 0.0
    assert diff <= tol, f"{name}: relative difference {diff:.3g} > {tol}"
    return diff


# ---------------------------------------------------------------------------------------------------------------
# Forward


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_fast_hash_codes_identical_in_op_twin_and_numpy(ops, shape):
    case = inputs_for(shape)
    _, _, _, _, _, num_hash, code_len = shape
    run = lambda: lsh.fast_hash(case["queries"], case["query_mask"], case["tf_projections"], num_hash,  # noqa
                                code_len).numpy()
    custom, twin = both_modes(run)
    expected = cases.reference_fast_hash(case["queries"], case["query_mask"], case["tf_projections"].numpy(),
                                         num_hash, code_len)
    np.testing.assert_array_equal(custom, twin)
    np.testing.assert_array_equal(custom, expected)
    assert custom.shape == (shape[0], shape[1], num_hash) and custom.dtype == np.int32
    assert custom.max() < 2 ** code_len and custom.min() >= 0
    assert np.all(custom[case["query_mask"] == 0] == 0)
    # hashing looks at directions only: a positive rescaling gives the same codes
    scaled = lsh.fast_hash(case["queries"] * 3.0, case["query_mask"], case["tf_projections"], num_hash, code_len)
    np.testing.assert_array_equal(scaled.numpy(), custom)


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_cumulations_equal_in_op_twin_and_numpy(ops, shape):
    case = inputs_for(shape, seed=1)
    capacity = case["capacity"]
    args = (case["query_mask"], case["query_code"], case["key_mask"], case["key_code"])
    custom, twin = both_modes(lambda: lsh.lsh_cumulation(*args, case["value"], capacity).numpy())
    expected = cases.reference_cumulation(case["query_mask"], case["query_code"].numpy(), case["key_mask"],
                                          case["key_code"].numpy(), case["value"])
    close(custom, twin, name="lsh_cumulation op vs twin")
    close(custom, expected, name="lsh_cumulation op vs numpy")
    weighted = lambda: lsh.lsh_weighted_cumulation(  # noqa: E731
        case["query_mask"], case["query_code"], case["query_weight"], case["key_mask"], case["key_code"],
        case["key_weight"], case["value"], capacity).numpy()
    custom, twin = both_modes(weighted)
    expected = cases.reference_cumulation(case["query_mask"], case["query_code"].numpy(), case["key_mask"],
                                          case["key_code"].numpy(), case["value"], case["query_weight"],
                                          case["key_weight"])
    close(custom, twin, name="lsh_weighted_cumulation op vs twin")
    close(custom, expected, name="lsh_weighted_cumulation op vs numpy")
    assert np.all(custom[case["query_mask"] == 0] == 0)


def test_large_code_lengths_chunk_the_hash_tables(ops):
    """16-bit codes: 65536 buckets x 40 columns x 30 hashes exceed the CPU table budget, so lsh_cumulation works
    in chunks of hashes, and the weighted kernel buckets by sorting (no per-code arrays); both equal the twin."""
    shape = (2, 50, 60, 40, 8, 30, 16)
    case = inputs_for(shape, seed=2)
    args = (case["query_mask"], case["query_code"], case["key_mask"], case["key_code"], case["value"],
            case["capacity"])
    custom, twin = both_modes(lambda: lsh.lsh_cumulation(*args).numpy())
    close(custom, twin, name="chunked lsh_cumulation")
    weighted = lambda: lsh.lsh_weighted_cumulation(  # noqa: E731
        case["query_mask"], case["query_code"], case["query_weight"], case["key_mask"], case["key_code"],
        case["key_weight"], case["value"], case["capacity"]).numpy()
    custom, twin = both_modes(weighted)
    close(custom, twin, name="sorted-bucket lsh_weighted_cumulation")


# ---------------------------------------------------------------------------------------------------------------
# Gradients


@pytest.mark.parametrize("shape", SHAPES[1:4], ids=IDS[1:4])
def test_op_gradients_equal_twin_gradients(ops, shape):
    case = inputs_for(shape, seed=3)
    capacity = case["capacity"]
    rng = np.random.RandomState(4)
    upstream = rng.randn(shape[0], shape[1], shape[3]).astype(np.float32)
    tensors = [tf.constant(case[k]) for k in ("query_weight", "key_weight", "value")]

    def gradients():
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            plain = lsh.lsh_cumulation(case["query_mask"], case["query_code"], case["key_mask"], case["key_code"],
                                       tensors[2], capacity)
            weighted = lsh.lsh_weighted_cumulation(case["query_mask"], case["query_code"], tensors[0],
                                                   case["key_mask"], case["key_code"], tensors[1], tensors[2],
                                                   capacity)
            loss = tf.reduce_sum(plain * upstream) + tf.reduce_sum(weighted * upstream * 0.5)
        return [g.numpy() for g in tape.gradient(loss, tensors)]

    custom, twin = both_modes(gradients)
    for name, a, b in zip(("query_weight", "key_weight", "value"), custom, twin):
        close(a, b, name=f"gradient wrt {name}")


@pytest.mark.parametrize("mode", ["custom", "reference"])
def test_compute_gradient_checks(ops, mode):
    """Analytic (registered op gradients / twin autodiff) vs numeric Jacobians; both ops are (bi)linear in
    their float inputs for fixed codes, so finite differences are accurate."""
    case = inputs_for((2, 6, 7, 5, 3, 4, 3), seed=5)
    capacity = case["capacity"]
    codes = (case["query_mask"], case["query_code"], case["key_mask"], case["key_code"])
    with dispatch.op_mode(mode):
        theoretical, numerical = tf.test.compute_gradient(
            tf.function(lambda v: lsh.lsh_cumulation(*codes, v, capacity)), [tf.constant(case["value"])])
        assert np.max(np.abs(theoretical[0] - numerical[0])) < 2e-3
        assert np.abs(theoretical[0]).max() > 0.1  # the Jacobian is not trivially zero

        @tf.function  # traced once: the numeric Jacobian evaluates it hundreds of times
        def weighted(qw, kw, v):
            return lsh.lsh_weighted_cumulation(case["query_mask"], case["query_code"], qw, case["key_mask"],
                                               case["key_code"], kw, v, capacity)

        theoretical, numerical = tf.test.compute_gradient(
            weighted, [tf.constant(case[k]) for k in ("query_weight", "key_weight", "value")])
        for t, n in zip(theoretical, numerical):
            assert np.max(np.abs(t - n)) < 5e-3


def _collisions(query_code, key_code, query_mask, key_mask):
    counts = (query_code[:, :, None, :] == key_code[:, None, :, :]).sum(-1).astype(np.float64)
    return counts * query_mask[:, :, None] * key_mask[:, None, :] / query_code.shape[2]


def test_lsh_attention_backward_is_the_reference_lsh_backward(ops):
    """lsh_backward=True: dv = C^T g, dq = ((g v^T) * C) (L/2) k, dk = ((g v^T) * C)^T (L/2) q with C the
    collision frequencies (YosoLSHCumulation.backward); identical in op and twin mode."""
    shape = (2, 23, 23, 12, 12, 16, 5)
    case = inputs_for(shape, seed=6)
    length = shape[-1]
    q, k, v = (tf.constant(case[n]) for n in ("queries", "keys", "value"))
    mask = case["query_mask"]
    codes = case["query_code"], lsh.fast_hash(case["keys"], mask, case["tf_projections"], shape[5], length)
    upstream = np.random.RandomState(7).randn(2, 23, 12).astype(np.float32)

    def run(lsh_backward):
        with tf.GradientTape() as tape:
            tape.watch([q, k, v])
            out = lsh_attention.lsh_attention(q, k, v, mask, mask, codes[0], codes[1], length,
                                              lsh_backward=lsh_backward)
            loss = tf.reduce_sum(out * upstream)
        return [out.numpy()] + [g.numpy() for g in tape.gradient(loss, [q, k, v])]

    custom, twin = both_modes(lambda: run(True))
    for a, b in zip(custom, twin):
        close(a, b, name="lsh attention op vs twin")
    collisions = _collisions(codes[0].numpy(), codes[1].numpy(), mask, mask)
    gv_t = np.einsum("bqd,bkd->bqk", upstream, case["value"]) * collisions
    expected = [np.einsum("bqk,bkd->bqd", collisions, case["value"]),
                np.einsum("bqk,bkd->bqd", gv_t, (length / 2) * case["keys"]),
                np.einsum("bqk,bqd->bkd", gv_t, (length / 2) * case["queries"]),
                np.einsum("bqk,bqd->bkd", collisions, upstream)]
    for name, a, b in zip(("out", "dq", "dk", "dv"), custom, expected):
        close(a, b, 2e-5, name=f"lsh backward {name}")
    # lsh_backward=False: the expectation's backward (dense)
    qn, kn = (x / np.linalg.norm(x, axis=-1, keepdims=True) for x in (case["queries"], case["keys"]))
    q, k = tf.constant(qn), tf.constant(kn)
    with dispatch.op_mode("custom"):
        got = run(False)
    cosine = np.clip(np.einsum("bqd,bkd->bqk", qn, kn), -1, 1)
    expectation = (1 - np.arccos(cosine) / np.pi) ** length * mask[:, :, None] * mask[:, None, :]
    weighted = np.einsum("bqd,bkd->bqk", upstream, case["value"]) * expectation
    expected = [np.einsum("bqk,bkd->bqd", weighted, (length / 2) * kn),
                np.einsum("bqk,bqd->bkd", weighted, (length / 2) * qn),
                np.einsum("bqk,bqd->bkd", expectation, upstream)]
    for name, a, b in zip(("dq", "dk", "dv"), got[1:], expected):
        close(a, b, 2e-5, name=f"expectation backward {name}")


def test_expectation_attention_matches_the_reference_autograd_function():
    """YOSO-E forward and its (non-exact, L/2-scaled) backward against the reference's YosoCumulation."""
    torch = pytest.importorskip("torch")
    from transformers.models.yoso.modeling_yoso import YosoCumulation

    rng = np.random.RandomState(8)
    q, k = (x / np.linalg.norm(x, axis=-1, keepdims=True) for x in rng.randn(2, 3, 11, 8).astype(np.float32))
    v, upstream = rng.randn(2, 3, 11, 8).astype(np.float32)
    mask = np.ones((3, 11), np.int32)
    mask[1, 7:] = 0
    tq, tk, tv = (torch.tensor(x, requires_grad=True) for x in (q, k, v))
    reference = YosoCumulation.apply(torch.tensor(mask), torch.tensor(mask), tq, tk, tv, {"hash_code_len": 7})
    reference.backward(torch.tensor(upstream))
    tensors = [tf.constant(x) for x in (q, k, v)]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        out = lsh_attention.expectation_attention(*tensors, mask, mask, 7)
        loss = tf.reduce_sum(out * upstream)
    grads = tape.gradient(loss, tensors)
    close(out.numpy(), reference.detach().numpy(), name="expectation forward")
    for g, t in zip(grads, (tq, tk, tv)):
        close(g.numpy(), t.grad.numpy(), name="expectation backward")


# ---------------------------------------------------------------------------------------------------------------
# Bad inputs, XLA, dispatch, build


def test_bad_inputs_raise_invalid_argument(ops):
    vectors = np.zeros((2, 5, 8), np.float32)
    mask = np.ones((2, 5), np.int32)
    projections = np.ones((2, 3, 2, 32), np.float32)
    fast_hash = ops.tf_models_lsh_fast_hash
    with pytest.raises(tf.errors.InvalidArgumentError, match="vectors must have rank 3"):
        fast_hash(vectors[0], mask, projections, num_hash=5, hash_code_len=4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="mask dimension 1"):
        fast_hash(vectors, mask[:, :4], projections, num_hash=5, hash_code_len=4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="power of two"):
        fast_hash(vectors, mask, np.ones((2, 3, 2, 24), np.float32), num_hash=5, hash_code_len=4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="projections dimension 2"):
        fast_hash(vectors, mask, projections, num_hash=17, hash_code_len=4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="hash_code_len must be in"):
        fast_hash(vectors, mask, projections, num_hash=1, hash_code_len=31)
    codes = np.zeros((2, 5, 3), np.int32)
    value = np.zeros((2, 5, 4), np.float32)
    cumulation = ops.tf_models_lsh_cumulation
    with pytest.raises(tf.errors.InvalidArgumentError, match="key_code holds 16 .* codes must lie in"):
        cumulation(mask, codes, mask, codes + 16, value, hashtable_capacity=16)
    with pytest.raises(tf.errors.InvalidArgumentError, match="query_code holds -1"):
        cumulation(mask, codes - 1, mask, codes, value, hashtable_capacity=16)
    with pytest.raises(tf.errors.InvalidArgumentError, match="value dimension 1"):
        cumulation(mask, codes, mask, codes, value[:, :4], hashtable_capacity=16)
    with pytest.raises(tf.errors.InvalidArgumentError, match="key_code dimension 2"):
        cumulation(mask, codes, mask, codes[:, :, :2], value, hashtable_capacity=16)
    with pytest.raises(tf.errors.InvalidArgumentError, match="key_weight dimension 2"):
        ops.tf_models_lsh_weighted_cumulation(mask, codes, value, mask, codes, value[:, :, :3], value,
                                              hashtable_capacity=16)


def test_twins_compile_with_xla_and_match_the_ops(ops):
    case = inputs_for(SHAPES[2], seed=9)
    _, _, _, _, _, num_hash, code_len = SHAPES[2]
    capacity = case["capacity"]

    def pipeline(queries, keys, value, query_weight, key_weight, projections):
        query_code = lsh.fast_hash(queries, case["query_mask"], projections, num_hash, code_len)
        key_code = lsh.fast_hash(keys, case["key_mask"], projections, num_hash, code_len)
        plain = lsh.lsh_cumulation(case["query_mask"], query_code, case["key_mask"], key_code, value, capacity)
        weighted = lsh.lsh_weighted_cumulation(case["query_mask"], query_code, query_weight, case["key_mask"],
                                               key_code, key_weight, value, capacity)
        return query_code, plain, weighted

    args = [case[n] for n in ("queries", "keys", "value", "query_weight", "key_weight")] + [case["tf_projections"]]
    compiled = tf.function(pipeline, jit_compile=True)
    xla = compiled(*args)
    assert not any(t.startswith("TFModels") for t in graph_op_types(compiled, *args))
    with dispatch.op_mode("custom"):
        eager = pipeline(*args)
    np.testing.assert_array_equal(xla[0].numpy(), eager[0].numpy())
    close(xla[1].numpy(), eager[1].numpy(), name="xla lsh_cumulation")
    close(xla[2].numpy(), eager[2].numpy(), name="xla lsh_weighted_cumulation")


def test_dispatch_puts_the_custom_ops_in_the_graph(ops):
    case = inputs_for(SHAPES[1])

    def traced_ops(mode):
        with dispatch.op_mode(mode):
            return graph_op_types(lambda v: lsh.lsh_cumulation(case["query_mask"], case["query_code"],
                                                               case["key_mask"], case["key_code"], v, 16),
                                  tf.TensorSpec([None, None, 5], tf.float32))

    assert "TFModels>LshCumulation" in traced_ops("custom")
    assert "TFModels>LshCumulation" not in traced_ops("reference")


def test_build_all_builds_the_lsh_library(ops):
    built = loader.build_all(with_cuda=False)
    assert "lsh" in built and os.path.isfile(built["lsh"])
    assert built["lsh"] == loader.OpLibrary.get("lsh").library_path(with_cuda=False)


@pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler")
def test_harness_host_build_matches_numpy(tmp_path):
    """The TF-free harness (the GPU test's driver) built host-only: its CPU entry points agree with numpy, and
    without a GPU its CUDA entry points report that they are not compiled in."""
    target = str(tmp_path / "harness_lsh_host.so")
    command = ["g++", "-std=c++17", "-O2", "-shared", "-fPIC", "-pthread", "-x", "c++",
               f"-I{cuda_harness.CUSTOM_OPS}", os.path.join(cuda_harness.CUSTOM_OPS, "lsh", "harness.cu"),
               "-o", target]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    library = ctypes.CDLL(target)
    results = cases.run_cpu_reference(library)
    assert len(results) == 3 * len(cases.SHAPES)
    for name, difference, tolerance in results:
        assert difference <= tolerance, f"{name}: {difference} > {tolerance}"
    assert library.lsh_harness_has_gpu() == 0
    with pytest.raises(RuntimeError, match="returned -1"):
        cases.run(library)


# ---------------------------------------------------------------------------------------------------------------
# Statistics


def sampled_error(num_hash, seeds=3, batch=2, length=384, dim=32, code_len=9, keys_share_codes=False):
    """Relative error ||lsh_cumulation - E V|| / ||E V|| averaged over projection seeds, for unit queries and
    keys that are noisy copies of (permuted) queries."""
    rng = np.random.RandomState(0)
    queries = rng.randn(batch, length, dim).astype(np.float32)
    keys = queries[:, rng.permutation(length)] + 0.7 * rng.randn(batch, length, dim).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=-1, keepdims=True)
    keys /= np.linalg.norm(keys, axis=-1, keepdims=True)
    value = rng.randn(batch, length, dim).astype(np.float32)
    mask = np.ones((batch, length), np.int32)
    expected = lsh_attention.expectation_attention(queries, keys, value, mask, mask, code_len).numpy()
    errors = []
    for seed in range(seeds):
        projections = lsh.fast_hash_projections(tf.constant([seed, 11]), batch, dim, num_hash, code_len)
        key_code = lsh.fast_hash(keys, mask, projections, num_hash, code_len)
        query_code = key_code if keys_share_codes else lsh.fast_hash(queries, mask, projections, num_hash,
                                                                     code_len)
        sampled = lsh_attention.lsh_attention(queries, keys, value, mask, mask, query_code, key_code, code_len).numpy()
        errors.append(np.linalg.norm(sampled - expected) / np.linalg.norm(expected))
    return float(np.mean(errors))


def test_sampled_attention_converges_to_the_expectation(ops):
    """Monte Carlo: the error falls like 1/sqrt(num_hash) (x0.25 from 8 to 128 hashes). Hashing the keys for
    the queries too (the reference's non-fast-hash bug) does not converge."""
    errors = {h: sampled_error(h) for h in (8, 32, 128)}
    assert errors[8] > errors[32] > errors[128], errors
    assert 0.15 < errors[128] / errors[8] < 0.4, errors
    assert errors[128] < 0.8, errors
    broken = sampled_error(128, seeds=1, keys_share_codes=True)
    assert broken > 2 * errors[128], (broken, errors)
