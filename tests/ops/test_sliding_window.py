"""The sliding-window ops: custom op (C++) vs pure-TF twin vs a numpy loop reference, outputs and gradients,
numeric gradient checks, dtypes, bad inputs, XLA, and the twin's O(seq * window) memory."""
import numpy as np
import pytest
import tensorflow as tf

from tfmodels.ops import dispatch
from tfmodels.ops import sliding_window as sw

# (batch, seq, heads, dim, num_global, window): odd lengths, a window wider than the sequence, w = 0, no
# global keys, head sizes that are not multiples of the SIMD width, more rows than one work block.
SHAPES = [(2, 13, 2, 5, 2, 2), (1, 70, 3, 16, 1, 3), (2, 5, 2, 4, 3, 6), (1, 9, 1, 3, 1, 0),
          (2, 130, 2, 64, 0, 8), (1, 67, 1, 20, 2, 32)]


@pytest.fixture(scope="module", autouse=True)
def custom_op_available():
    with dispatch.op_mode("custom"):
        assert dispatch.use_custom_op("sliding_window"), "the sliding_window custom op must build here"


def random_inputs(shape, dtype=np.float64, seed=0):
    b, s, h, d, x, w = shape
    rng = np.random.RandomState(seed)
    return dict(q=rng.randn(b, s, h, d).astype(dtype), k=rng.randn(b, s, h, d).astype(dtype),
                gk=rng.randn(b, x, h, d).astype(dtype), keep=rng.rand(b, s) > 0.3, gkeep=rng.rand(b, x) > 0.3,
                p=rng.randn(b, s, h, x + 2 * w + 1).astype(dtype), v=rng.randn(b, s, h, d).astype(dtype),
                gv=rng.randn(b, x, h, d).astype(dtype))


def numpy_qk(q, k, w, keep, gk, gkeep):
    b, s, h, _ = q.shape
    x = gk.shape[1]
    out = np.full((b, s, h, x + 2 * w + 1), np.finfo(q.dtype).min, q.dtype)
    for bi in range(b):
        for i in range(s):
            for c in range(x):
                if gkeep[bi, c]:
                    out[bi, i, :, c] = (q[bi, i] * gk[bi, c]).sum(-1)
            for j in range(2 * w + 1):
                m = i + j - w
                if 0 <= m < s and keep[bi, m]:
                    out[bi, i, :, x + j] = (q[bi, i] * k[bi, m]).sum(-1)
    return out


def numpy_pv(p, v, gv):
    b, s, h, _ = v.shape
    x = gv.shape[1]
    w = (p.shape[-1] - x - 1) // 2
    out = np.einsum("bshx,bxhd->bshd", p[..., :x], gv)
    for bi in range(b):
        for i in range(s):
            for j in range(2 * w + 1):
                m = i + j - w
                if 0 <= m < s:
                    out[bi, i] += p[bi, i, :, x + j, None] * v[bi, m]
    return out


def run_qk(mode, a, w):
    with dispatch.op_mode(mode):
        return sw.sliding_window_qk(a["q"], a["k"], w, a["keep"], a["gk"], a["gkeep"]).numpy()


def run_pv(mode, a):
    with dispatch.op_mode(mode):
        return sw.sliding_window_pv(a["p"], a["v"], a["gv"]).numpy()


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_custom_op_and_twin_equal_the_loop_reference(shape):
    a = random_inputs(shape)
    w = shape[-1]
    expected = numpy_qk(a["q"], a["k"], w, a["keep"], a["gk"], a["gkeep"])
    np.testing.assert_allclose(run_qk("custom", a, w), expected, atol=1e-12, rtol=0)
    np.testing.assert_allclose(run_qk("reference", a, w), expected, atol=1e-12, rtol=0)
    expected = numpy_pv(a["p"], a["v"], a["gv"])
    np.testing.assert_allclose(run_pv("custom", a), expected, atol=1e-12, rtol=0)
    np.testing.assert_allclose(run_pv("reference", a), expected, atol=1e-12, rtol=0)


def _gradients(mode, a, w, seed):
    rng = np.random.RandomState(seed)
    q, k, gk, p, v, gv = (tf.constant(a[n]) for n in ("q", "k", "gk", "p", "v", "gv"))
    upstream_scores = tf.constant(rng.randn(*a["p"].shape))
    upstream_out = tf.constant(rng.randn(*a["q"].shape))
    with dispatch.op_mode(mode):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([q, k, gk, p, v, gv])
            scores = sw.sliding_window_qk(q, k, w, a["keep"], gk, a["gkeep"])
            scores = tf.where(scores > -1e300, scores, tf.zeros_like(scores))  # the masked fill is constant
            qk_loss = tf.reduce_sum(scores * upstream_scores)
            pv_loss = tf.reduce_sum(sw.sliding_window_pv(p, v, gv) * upstream_out)
        grads = tape.gradient(qk_loss, [q, k, gk]) + tape.gradient(pv_loss, [p, v, gv])
    return [g.numpy() for g in grads]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_custom_gradients_equal_twin_gradients(shape):
    a = random_inputs(shape, seed=1)
    custom = _gradients("custom", a, shape[-1], seed=2)
    reference = _gradients("reference", a, shape[-1], seed=2)
    names = ["d_query", "d_key", "d_global_key", "d_probs", "d_value", "d_global_value"]
    for name, got, expected in zip(names, custom, reference):
        np.testing.assert_allclose(got, expected, atol=1e-12, rtol=0, err_msg=name)


# Shapes at the edges of the CPU tiles: 6-row tiles over blocks of 64 rows (seq 200: a last block of 8 rows),
# panels of 64 float32 (32 float64) key columns and bands that start and end inside a vector (w = 37), more global
# keys than one panel, head sizes below, at and past a whole tile of 4 (AVX-512) or 2 (AVX2) vectors.
EDGE_SHAPES = [(1, 200, 2, 40, 70, 37), (2, 131, 1, 72, 3, 37), (1, 64, 1, 17, 0, 40)]


@pytest.mark.parametrize("dtype,atol", [("float64", 1e-12), ("float32", 1e-4)])
@pytest.mark.parametrize("shape", EDGE_SHAPES, ids=str)
def test_tile_edges(shape, dtype, atol):
    a = random_inputs(shape, np.float64, seed=5)
    w = shape[-1]
    cast = {n: (a[n].astype(dtype) if np.ndim(a[n]) == 4 else a[n]) for n in a}
    scores = run_qk("custom", cast, w)
    expected = numpy_qk(*(cast[n].astype(np.float64) for n in ("q", "k")), w, a["keep"],
                        cast["gk"].astype(np.float64), a["gkeep"])
    valid = expected > -1e30
    np.testing.assert_allclose(scores[valid], expected[valid], atol=atol, rtol=0)
    assert np.all(scores[~valid] == np.finfo(dtype).min)
    expected = numpy_pv(*(cast[n].astype(np.float64) for n in ("p", "v", "gv")))
    np.testing.assert_allclose(run_pv("custom", cast), expected, atol=atol, rtol=0)
    if dtype == "float64":  # the transposed products, through the gradients
        custom = _gradients("custom", a, w, seed=6)
        reference = _gradients("reference", a, w, seed=6)
        for got, want in zip(custom, reference):
            np.testing.assert_allclose(got, want, atol=1e-12, rtol=0)


@pytest.mark.parametrize("shape", [(2, 11, 2, 3, 2, 2), (1, 7, 1, 4, 1, 4)], ids=str)
def test_numeric_gradients_of_the_custom_ops(shape):
    a = random_inputs(shape, seed=3)
    w = shape[-1]
    with dispatch.op_mode("custom"):
        valid = sw.sliding_window_qk(a["q"], a["k"], w, a["keep"], a["gk"], a["gkeep"]) > -1e300

        def qk(q, k, gk):
            return tf.where(valid, sw.sliding_window_qk(q, k, w, a["keep"], gk, a["gkeep"]), tf.zeros([], tf.float64))

        theoretical, numeric = tf.test.compute_gradient(qk, [tf.constant(a[n]) for n in ("q", "k", "gk")])
        for t, n in zip(theoretical, numeric):
            np.testing.assert_allclose(t, n, atol=1e-7)
        theoretical, numeric = tf.test.compute_gradient(
            lambda p, v, gv: sw.sliding_window_pv(p, v, gv), [tf.constant(a[n]) for n in ("p", "v", "gv")])
        for t, n in zip(theoretical, numeric):
            np.testing.assert_allclose(t, n, atol=1e-7)


@pytest.mark.parametrize("dtype,atol", [("float32", 1e-5), ("float16", 2e-2), ("bfloat16", 1e-1)])
def test_reduced_precision_dtypes(dtype, atol):
    shape = (2, 37, 2, 16, 1, 4)
    a = random_inputs(shape, np.float32, seed=4)
    w = shape[-1]
    cast = {n: tf.cast(a[n], dtype) for n in ("q", "k", "gk", "p", "v", "gv")}
    for mode in ("custom", "reference"):
        with dispatch.op_mode(mode):
            scores = sw.sliding_window_qk(cast["q"], cast["k"], w, a["keep"], cast["gk"], a["gkeep"])
            out = sw.sliding_window_pv(cast["p"], cast["v"], cast["gv"])
        assert scores.dtype == dtype and out.dtype == dtype
        expected_scores = numpy_qk(*(np.asarray(tf.cast(cast[n], tf.float32)) for n in ("q", "k")), w, a["keep"],
                                   np.asarray(tf.cast(cast["gk"], tf.float32)), a["gkeep"])
        valid = expected_scores > -1e30
        np.testing.assert_allclose(np.asarray(tf.cast(scores, tf.float32))[valid], expected_scores[valid],
                                   atol=atol * 10, rtol=atol)
        assert np.all(np.asarray(tf.cast(scores, tf.float32))[~valid] == np.finfo(dtype if dtype != "bfloat16"
                                                                                 else np.float32).min
                      ) or dtype == "bfloat16"
        expected_out = numpy_pv(*(np.asarray(tf.cast(cast[n], tf.float32)) for n in ("p", "v", "gv")))
        np.testing.assert_allclose(np.asarray(tf.cast(out, tf.float32)), expected_out, atol=atol * 10, rtol=atol)


def test_bad_inputs_raise_invalid_argument():
    module = dispatch.op_module("sliding_window")
    q = tf.zeros([2, 8, 2, 4])
    keep = tf.ones([2, 8], tf.bool)
    gk = tf.zeros([2, 1, 2, 4])
    gkeep = tf.ones([2, 1], tf.bool)
    cases = [
        (lambda: module.tf_models_sliding_window_qk(q[0], q[0], keep, gk, gkeep, window=2), "query must have rank 4"),
        (lambda: module.tf_models_sliding_window_qk(q, q[:, :5], keep, gk, gkeep, window=2), "same shape"),
        (lambda: module.tf_models_sliding_window_qk(q, q, keep[:, :5], gk, gkeep, window=2), "key_keep"),
        (lambda: module.tf_models_sliding_window_qk(q, q, keep, gk[:, :, :1], gkeep, window=2), "global_key"),
        (lambda: module.tf_models_sliding_window_qk(q, q, keep, gk, gkeep[:1], window=2), "global_keep"),
        (lambda: module.tf_models_sliding_window_pv(tf.zeros([2, 8, 2, 5]), q, gk), "X \\+ 2w \\+ 1 columns"),
        (lambda: module.tf_models_sliding_window_pv(tf.zeros([2, 7, 2, 6]), q, gk), "probs"),
        (lambda: module.tf_models_sliding_window_pv(tf.zeros([2, 8, 2, 6]), q, gk[:, :, :, :3]), "global_value"),
    ]
    for call, message in cases:
        with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=message):
            call()
    with pytest.raises(ValueError, match="window must be >= 0"):
        sw.sliding_window_qk(q, q, -1)
    with pytest.raises(ValueError, match="rank 4"):
        sw.sliding_window_qk(q[0], q[0], 2)


def test_twin_compiles_with_xla_and_dispatch_uses_it_there():
    shape = (2, 45, 2, 8, 2, 5)
    a = random_inputs(shape, np.float32, seed=5)
    w = shape[-1]

    @tf.function(jit_compile=True)
    def compiled(q, k, gk, p, v, gv):
        with tf.GradientTape() as tape:
            tape.watch([q, k, v])
            scores = sw.sliding_window_qk(q, k, w, a["keep"], gk, a["gkeep"])
            out = sw.sliding_window_pv(tf.nn.softmax(scores), v, gv)
            loss = tf.reduce_sum(out * out)
        return scores, sw.sliding_window_pv(p, v, gv), tape.gradient(loss, [q, k, v])

    inputs = [tf.constant(a[n]) for n in ("q", "k", "gk", "p", "v", "gv")]
    scores, out, grads = compiled(*inputs)
    with dispatch.op_mode("custom"):
        q, k, gk, p, v, gv = inputs
        with tf.GradientTape() as tape:
            tape.watch([q, k, v])
            expected_scores = sw.sliding_window_qk(q, k, w, a["keep"], gk, a["gkeep"])
            loss = tf.reduce_sum(tf.square(sw.sliding_window_pv(tf.nn.softmax(expected_scores), v, gv)))
        expected_grads = tape.gradient(loss, [q, k, v])
        np.testing.assert_allclose(scores.numpy(), expected_scores.numpy(), atol=1e-5, rtol=0)
        np.testing.assert_allclose(out.numpy(), sw.sliding_window_pv(p, v, gv).numpy(), atol=1e-5)
    for got, expected in zip(grads, expected_grads):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-4)


def test_twin_memory_is_linear_in_the_sequence_length():
    """No tensor of the twin's graphs (forward and backward) holds seq x seq elements."""
    batch, seq, heads, dim, window = 1, 2048, 2, 8, 16

    @tf.function
    def step(q, k, v):
        with tf.GradientTape() as tape:
            tape.watch([q, k, v])
            scores = sw.sliding_window_qk_reference(q, k, window)
            out = sw.sliding_window_pv_reference(tf.nn.softmax(scores), v, window=window)
            loss = tf.reduce_sum(out)
        return tape.gradient(loss, [q, k, v])

    spec = tf.TensorSpec([batch, seq, heads, dim], tf.float32)
    graph = step.get_concrete_function(spec, spec, spec).graph
    largest = 0
    for op in graph.get_operations():
        for output in op.outputs:
            if output.shape.is_fully_defined():
                largest = max(largest, output.shape.num_elements())
    band = batch * seq * heads * (3 * window + 1)
    assert largest <= band, f"an intermediate has {largest} elements, more than seq * (3w + 1) * heads = {band}"
    assert largest < seq * seq


def test_op_mode_reference_never_loads_the_library():
    a = random_inputs((1, 10, 1, 4, 1, 2), np.float32)
    with dispatch.op_mode("reference"):
        graph = tf.function(lambda q, k: sw.sliding_window_qk(q, k, 2)).get_concrete_function(
            tf.TensorSpec([1, 10, 1, 4]), tf.TensorSpec([1, 10, 1, 4])).graph
    assert not any(op.type.startswith("TFModels") for op in graph.get_operations())
    with dispatch.op_mode("custom"):
        graph = tf.function(lambda q, k: sw.sliding_window_qk(q, k, 2)).get_concrete_function(
            tf.TensorSpec([1, 10, 1, 4]), tf.TensorSpec([1, 10, 1, 4])).graph
    assert any(op.type == "TFModels>SlidingWindowQK" for op in graph.get_operations())
    del a
