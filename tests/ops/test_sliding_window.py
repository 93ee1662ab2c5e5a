"""The sliding-window ops: custom op (C++) vs pure-TF twin vs a numpy loop reference, outputs and gradients,
numeric gradient checks, dtypes, bad inputs, XLA, and the twin's O(seq * window) memory."""
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import graph_op_types
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


# ---------------------------------------------------------------------------------------------------------------
# The fused op: softmax(QK) PV in one pass (CPU inference)

def _separate(w, keep, gkeep):
    """The three-op composition the fused op computes for every row (its twin)."""
    from tfmodels.core import attention as attn

    def run(q, k, v, gk, gv):
        probs = attn.stable_softmax(sw.sliding_window_qk(q, k, w, keep, gk, gkeep))
        return sw.sliding_window_pv(probs, v, gv, window=w)
    return run


def _rows_kept(keep, output):
    """The fused op's output from its twin's: zero in the rows of the positions not kept (written out here, not
    through sw.zero_rows_not_kept, so that the test states the contract itself)."""
    return np.where(np.asarray(keep)[:, :, None, None], np.asarray(output), 0)


def _attention_inputs(shape, seed=0, dtype=tf.float32, all_masked_row=False):
    """q, k, v, gk, gv (dtype) and the masks; padding at the end of the last sequence, one global key dropped."""
    b, s, h, d, x, w = shape
    rng = np.random.RandomState(seed)
    q, k, v = (tf.constant(rng.randn(b, s, h, d).astype("float32"), dtype) for _ in range(3))
    gk, gv = (tf.constant(rng.randn(b, x, h, d).astype("float32"), dtype) for _ in range(2))
    keep = np.ones((b, s), bool)
    keep[-1, s - s // 3:] = False
    gkeep = np.ones((b, x), bool)
    gkeep[-1, x - 1:] = False
    if all_masked_row:  # no key of the first sequence is kept: its rows (uniform over every column in the three
        # ops) are zero in the fused op
        keep[0] = False
        gkeep[0] = False
    return q, k, v, gk, gv, tf.constant(keep), tf.constant(gkeep)


# Long sequences with narrow windows: blocks of rows whose values all lie in the sequence, which the float32 op
# reads in place (heads * dim apart), between the blocks at either end, which it copies; a head size of 20 takes
# the tiles' scalar tail.
INTERIOR_SHAPES = [(2, 400, 3, 32, 1, 16), (1, 500, 2, 20, 2, 24)]


@pytest.mark.parametrize("shape", SHAPES + [(2, 300, 2, 64, 1, 128), (2, 200, 4, 64, 2, 128)] + INTERIOR_SHAPES,
                         ids=str)
def test_fused_attention_equals_the_three_ops(shape):
    w = shape[-1]
    q, k, v, gk, gv, keep, gkeep = _attention_inputs(shape, all_masked_row=shape[0] > 1)
    separate = _separate(w, keep, gkeep)
    with dispatch.op_mode("custom"):
        fused = sw.fused_sliding_window_attention(q, k, v, w, keep, gk, gv, gkeep, twin=separate)
        expected = _rows_kept(keep, separate(q, k, v, gk, gv))
    np.testing.assert_allclose(fused.numpy(), expected, rtol=1e-5, atol=2e-6)
    assert np.all(fused.numpy()[~keep.numpy()] == 0)


def test_fused_attention_bfloat16_is_closer_to_float32_than_the_three_ops():
    """bfloat16 inputs: the fused op keeps scores and probabilities in float32 and rounds once; the three ops round
    the scores and probabilities to bfloat16 in between."""
    shape = (2, 200, 2, 64, 2, 64)
    w = shape[-1]
    q, k, v, gk, gv, keep, gkeep = _attention_inputs(shape, dtype=tf.bfloat16)
    as_float = [tf.cast(t, tf.float32) for t in (q, k, v, gk, gv)]
    with dispatch.op_mode("custom"):
        exact = _rows_kept(keep, _separate(w, keep, gkeep)(*as_float))
        fused = sw.fused_sliding_window_attention(q, k, v, w, keep, gk, gv, gkeep,
                                                  twin=_separate(w, keep, gkeep))
        separate = _rows_kept(keep, tf.cast(_separate(w, keep, gkeep)(q, k, v, gk, gv), tf.float32))
    assert fused.dtype == tf.bfloat16
    fused_error = np.abs(tf.cast(fused, tf.float32).numpy() - exact)
    separate_error = np.abs(separate - exact)
    # one rounding to bfloat16 of outputs below ~4 in magnitude
    assert fused_error.max() <= 2.0 ** -7 * max(1.0, np.abs(exact).max())
    assert fused_error.mean() < separate_error.mean()


def test_fused_attention_gradients_are_the_three_ops_gradients():
    shape = (2, 70, 2, 16, 2, 8)
    w = shape[-1]
    q, k, v, gk, gv, keep, gkeep = _attention_inputs(shape)
    separate = _separate(w, keep, gkeep)
    upstream = tf.constant(np.random.RandomState(3).randn(*q.shape).astype("float32"))
    with dispatch.op_mode("custom"):
        results = []
        for run in (lambda *t: sw.fused_sliding_window_attention(*t[:3], w, keep, t[3], t[4], gkeep, twin=separate),
                    lambda *t: tf.where(keep[:, :, None, None], separate(*t), 0.0)):
            tensors = [q, k, v, gk, gv]
            with tf.GradientTape() as tape:
                tape.watch(tensors)
                out = run(*tensors)
            results.append(tape.gradient(out, tensors, output_gradients=upstream))
    for fused, expected in zip(*results):
        np.testing.assert_allclose(fused.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_local_attention_runs_the_fused_op_only_without_probabilities_head_mask_or_dropout():
    from tfmodels.ops import sliding_window_attention as swa
    shape = (2, 40, 2, 8, 1, 4)
    q, k, v, *_ = _attention_inputs(shape)
    merged = np.ones((2, 40), np.int32)
    merged[:, 0] = 2          # a global token
    merged[-1, 30:] = 0       # padding
    plan = swa.GlobalPlan(tf.constant(merged))

    def op_types(**kwargs):
        return graph_op_types(lambda: swa.local_attention(q, k, v, plan, 4, **kwargs)[0])

    with dispatch.op_mode("custom"):
        assert "TFModels>SlidingWindowAttention" in op_types(need_probs=False)
        for kwargs in (dict(), dict(need_probs=False, head_mask=tf.ones([2])),
                       dict(need_probs=False, dropout=lambda p: p)):
            types = op_types(**kwargs)
            assert "TFModels>SlidingWindowAttention" not in types and "TFModels>SlidingWindowQK" in types, kwargs
        fused, none = swa.local_attention(q, k, v, plan, 4, need_probs=False)
        separate, probs = swa.local_attention(q, k, v, plan, 4)
    assert none is None and probs.shape == (2, 40, 2, 1 + 9)
    np.testing.assert_allclose(fused.numpy(), separate.numpy(), rtol=1e-5, atol=2e-6)
    not_local = merged != 1   # the global token and the padding: no local attention, zero
    for rows in (fused, separate, probs):
        assert np.all(rows.numpy()[not_local] == 0) and np.all(np.abs(rows.numpy()[~not_local]).sum(-1) > 0)
    with dispatch.op_mode("reference"):
        assert "TFModels>SlidingWindowAttention" not in op_types(need_probs=False)


def test_merge_global_rows_places_each_global_row_and_nothing_else():
    """Sequences with 2, 1 and 0 global tokens (filler slots in the last two): each global token's row is its
    slot's output, every other row is the local output as given; the gradient goes back the same way."""
    from tfmodels.ops import sliding_window_attention as swa
    merged = np.ones((3, 12), np.int32)
    merged[0, [2, 7]] = 2
    merged[1, 0] = 2
    merged[1, 9:] = 0
    plan = swa.GlobalPlan(tf.constant(merged))
    rng = np.random.RandomState(5)
    local = tf.constant(rng.randn(3, 12, 2, 4).astype("float32"))
    local = sw.zero_rows_not_kept(local, plan.local)
    global_output = tf.constant(rng.randn(3, 2, 2, 4).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch([local, global_output])
        merged_rows = swa.merge_global_rows(local, global_output, plan)
    expected = local.numpy().copy()
    expected[0, 2], expected[0, 7], expected[1, 0] = global_output[0, 0], global_output[0, 1], global_output[1, 0]
    np.testing.assert_array_equal(merged_rows.numpy(), expected)
    upstream = rng.randn(3, 12, 2, 4).astype("float32")
    d_local, d_global = tape.gradient(merged_rows, [local, global_output], output_gradients=tf.constant(upstream))
    np.testing.assert_array_equal(d_local.numpy(), upstream)
    expected_global = np.zeros((3, 2, 2, 4), np.float32)
    expected_global[0, 0], expected_global[0, 1], expected_global[1, 0] = upstream[0, 2], upstream[0, 7], upstream[1, 0]
    np.testing.assert_array_equal(d_global.numpy(), expected_global)


def test_fused_attention_bad_inputs_raise_invalid_argument():
    module = dispatch.op_module("sliding_window")
    q = tf.zeros([2, 8, 2, 4])
    keep = tf.ones([2, 8], tf.bool)
    gk = tf.zeros([2, 1, 2, 4])
    gkeep = tf.ones([2, 1], tf.bool)
    attention = module.tf_models_sliding_window_attention
    cases = [
        (lambda: attention(q, q, keep, gk, gkeep, q[:, :5], gk, window=2), "value must have the shape of query"),
        (lambda: attention(q, q, keep, gk, gkeep, q, gk[:, :, :1], window=2), "global_value must have the shape"),
        (lambda: attention(q, q, keep[:, :5], gk, gkeep, q, gk, window=2), "key_keep"),
        (lambda: attention(q, q[:, :5], keep, gk, gkeep, q, gk, window=2), "same shape"),
        (lambda: attention(q, q, keep, gk, gkeep[:, :0], q, gk, window=2), "global_keep"),
        (lambda: attention(q, q, keep, gk, gkeep, q, gk, window=-1), "window"),
    ]
    for call, message in cases:
        with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=message):
            call()
