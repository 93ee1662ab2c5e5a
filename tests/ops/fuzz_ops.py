"""Property-based fuzz of every custom op through its public wrapper (hypothesis), against its pure-TF twin.

Each op has one property that draws a case of one of three kinds:
- "good": random shapes with zero-sized batch / length / heads, length 1, odd head sizes, windows and block
  grids at their limits; the compiled op ("custom" mode) and the twin ("reference" mode) must agree, outputs
  and, where the op has a gradient, gradients;
- "nonfinite": the same with NaN / +-Inf written into the float inputs: the same NaN / Inf pattern from both
  (sliding_window_pv: the op equals its definition evaluated in numpy, and the twin, whose chunked einsum
  multiplies structural zeros by values, equals it wherever the twin is not NaN; sliding_window_attention: the
  same, its definition being the compiled QK and PV ops around the softmax);
- "bad": out-of-range indices or codes, mismatched shapes, wrong ranks or dtypes, bad attributes: both must
  raise InvalidArgumentError (or a ValueError / TypeError from the wrapper), never crash or return numbers.

`test_fuzz_ops.py` runs it in-process on the normal build; `test_sanitizers.py` runs this module as a script
(`python -m tests.ops.fuzz_ops MAX_EXAMPLES`) in a subprocess that loads the AddressSanitizer +
UndefinedBehaviorSanitizer build. The script prints one line `FUZZ_CASES {json}`: per op, the cases by kind.
"""
import collections
import json
import sys

import numpy as np
import tensorflow as tf
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tfmodels.core import attention as attn
from tfmodels.ops import block_sparse as bs
from tfmodels.ops import dense_attention, dispatch, lsh
from tfmodels.ops import sliding_window as sw

BAD_INPUT_ERRORS = (tf.errors.InvalidArgumentError, ValueError, TypeError)
CASES = collections.defaultdict(collections.Counter)  # op -> kind -> cases run
KINDS = ("good", "nonfinite", "bad")


# ---------------------------------------------------------------------------------------------------------------
# Running one case under both implementations


def _numpy(outputs):
    return [np.asarray(t) for t in tf.nest.flatten(outputs) if t is not None]


def _outcome(fn):
    try:
        return _numpy(fn())
    except BAD_INPUT_ERRORS as error:
        return error


def both(fn):
    """fn() with the compiled op, then with the twin: two lists of numpy outputs (or the errors raised)."""
    with dispatch.op_mode("custom"):
        custom = _outcome(fn)
    with dispatch.op_mode("reference"):
        twin = _outcome(fn)
    return custom, twin


def with_gradients(fn, *inputs):
    """fn(*inputs)'s outputs followed by the gradients of sum(output * fixed weights) with respect to inputs."""
    inputs = [tf.convert_to_tensor(x) for x in inputs]
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        outputs = [o for o in tf.nest.flatten(fn(*inputs)) if o.dtype.is_floating]
        loss = tf.add_n([tf.reduce_sum(tf.where(tf.math.is_finite(o), o, 0) * _weights(o)) for o in outputs])
    return outputs + [g if g is not None else tf.zeros_like(x) for g, x in zip(tape.gradient(loss, inputs), inputs)]


def _weights(tensor):
    return tf.reshape(tf.sin(tf.cast(tf.range(tf.size(tensor)), tensor.dtype) + 1), tf.shape(tensor))


def check(op, kind, fn, exact=None):
    """Run one case of `op` and check the property of its kind.

    `exact` (optional): the op's definition evaluated in numpy, for an op whose twin computes structural zeros
    times values (0 * NaN = NaN reaches outputs that do not depend on that value): with it, a nonfinite case
    needs the compiled op to equal the definition, NaN / Inf pattern included, and the twin to equal it
    wherever the twin is not NaN."""
    CASES[op][kind] += 1
    custom, twin = both(fn)
    if kind == "nonfinite" and exact is not None:
        _check_against_definition(op, custom, twin, exact())
        return
    if kind == "bad":
        for name, result in (("custom op", custom), ("twin", twin)):
            assert isinstance(result, Exception), f"{op}: bad input accepted by the {name}, gave {result}"
        return
    _assert_accepted(op, kind, custom, twin)
    assert len(custom) == len(twin)
    for index, (a, b) in enumerate(zip(custom, twin)):
        assert a.shape == b.shape, f"{op} output {index}: shapes {a.shape} vs {b.shape}"
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{op} output {index}: NaN pattern")
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=f"{op} output {index}")


def _assert_accepted(op, kind, custom, twin):
    for name, result in (("custom op", custom), ("twin", twin)):
        if isinstance(result, Exception):
            raise AssertionError(f"{op}: valid {kind} input rejected by the {name}: {result}")


def _check_against_definition(op, custom, twin, expected):
    _assert_accepted(op, "nonfinite", custom, twin)
    for index, (a, b, e) in enumerate(zip(custom, twin, expected)):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(e), err_msg=f"{op} output {index}: NaN pattern")
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5, err_msg=f"{op} output {index}")
        assert np.isnan(b)[np.isnan(e)].all(), f"{op} output {index}: the twin lost a NaN"
        np.testing.assert_allclose(b[~np.isnan(b)], e[~np.isnan(b)], rtol=1e-5, atol=1e-5,
                                   err_msg=f"{op} output {index}: twin")


# ---------------------------------------------------------------------------------------------------------------
# Drawing inputs


def floats(data, shape, kind, dtype=np.float32):
    """Random values of `shape`; for kind "nonfinite", some of them NaN, +Inf or -Inf."""
    seed = data.draw(st.integers(0, 2**16), label="seed")
    values = np.random.RandomState(seed).randn(*shape).astype(dtype)
    if kind == "nonfinite" and values.size:
        flat = values.reshape(-1)
        count = data.draw(st.integers(1, min(3, flat.size)), label="nonfinite count")
        for _ in range(count):
            position = data.draw(st.integers(0, flat.size - 1), label="nonfinite position")
            flat[position] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]), label="nonfinite value")
    return values


def bits(data, shape):
    seed = data.draw(st.integers(0, 2**16), label="mask seed")
    return (np.random.RandomState(seed).rand(*shape) > 0.3).astype(np.int32)


def kind_of(data):
    return data.draw(st.sampled_from(KINDS), label="kind")


# ---------------------------------------------------------------------------------------------------------------
# LSH (YOSO)


def fuzz_fast_hash(data):
    kind = kind_of(data)
    batch, length = data.draw(st.integers(0, 2)), data.draw(st.integers(0, 4))
    dim = data.draw(st.sampled_from([1, 3, 5, 31, 33]))
    code_len, num_hash = data.draw(st.integers(1, lsh.MAX_HASH_CODE_LEN)), data.draw(st.integers(1, 4))
    vectors = floats(data, (batch, length, dim), kind)
    mask = bits(data, (batch, length))
    projections = lsh.fast_hash_projections([1, 2], batch, dim, num_hash, code_len)
    if kind == "bad":
        defect = data.draw(st.sampled_from(["code_len", "num_hash", "mask", "padded", "parts", "rank"]))
        if defect == "code_len":
            code_len = data.draw(st.sampled_from([0, lsh.MAX_HASH_CODE_LEN + 1]))
        elif defect == "num_hash":
            num_hash = 0
        elif defect == "mask":
            mask = bits(data, (batch + 1, length))
        elif defect == "padded":
            projections = tf.concat([projections, projections[..., :1]], axis=-1)  # not a power of two
        elif defect == "parts":
            projections = tf.concat([projections, projections], axis=2)
        else:
            vectors = vectors[..., 0]
    check("fast_hash", kind, lambda: lsh.fast_hash(vectors, mask, projections, num_hash, code_len))


def _codes(data, batch, length, hashes, capacity):
    seed = data.draw(st.integers(0, 2**16), label="code seed")
    return np.random.RandomState(seed).randint(0, capacity, (batch, length, hashes)).astype(np.int32)


def fuzz_lsh_cumulation(data):
    _fuzz_cumulation(data, weighted=False)


def fuzz_lsh_weighted_cumulation(data):
    _fuzz_cumulation(data, weighted=True)


def _fuzz_cumulation(data, weighted):
    op = "lsh_weighted_cumulation" if weighted else "lsh_cumulation"
    kind = kind_of(data)
    batch, num_query, num_key = (data.draw(st.integers(0, 2)), data.draw(st.integers(0, 4)),
                                 data.draw(st.integers(0, 4)))
    hashes, dim, weight_dim = data.draw(st.integers(1, 3)), data.draw(st.sampled_from([1, 2, 5])), \
        data.draw(st.integers(1, 3))
    capacity = 2 ** data.draw(st.integers(0, 4))
    query_mask, key_mask = bits(data, (batch, num_query)), bits(data, (batch, num_key))
    query_code, key_code = _codes(data, batch, num_query, hashes, capacity), _codes(data, batch, num_key, hashes,
                                                                                    capacity)
    value = floats(data, (batch, num_key, dim), kind)
    query_weight = floats(data, (batch, num_query, weight_dim), kind)
    key_weight = floats(data, (batch, num_key, weight_dim), kind)
    if kind == "bad":
        defect = data.draw(st.sampled_from(["code_high", "code_negative", "value", "hashes", "mask", "capacity"]))
        codes = query_code if data.draw(st.booleans()) or not key_code.size else key_code
        if defect in ("code_high", "code_negative") and codes.size:
            codes.reshape(-1)[data.draw(st.integers(0, codes.size - 1))] = capacity if defect == "code_high" else -1
        elif defect == "value":
            value = floats(data, (batch, num_key + 1, dim), "good")
        elif defect == "hashes":
            key_code = _codes(data, batch, num_key, hashes + 1, capacity)
        elif defect == "mask":
            query_mask = bits(data, (batch, num_query + 1))
        else:
            capacity = 0
        if defect in ("code_high", "code_negative") and not codes.size:
            capacity = 0  # no code to spoil: an impossible capacity instead
    if weighted:
        def run(qw, kw, v):
            return lsh.lsh_weighted_cumulation(query_mask, query_code, qw, key_mask, key_code, kw, v, capacity)
        inputs = (query_weight, key_weight, value)
    else:
        def run(v):
            return lsh.lsh_cumulation(query_mask, query_code, key_mask, key_code, v, capacity)
        inputs = (value,)
    check(op, kind, lambda: with_gradients(run, *inputs) if kind == "good" else run(*inputs))


# ---------------------------------------------------------------------------------------------------------------
# Block-sparse (MRA)


def _grid(data):
    batch = data.draw(st.integers(0, 2))
    rows, cols = data.draw(st.integers(0, 3)), data.draw(st.integers(0, 3))
    slots = data.draw(st.integers(0, 4))
    seed = data.draw(st.integers(0, 2**16), label="index seed")
    indices = np.random.RandomState(seed).randint(-1, max(rows * cols, 1), (batch, slots)).astype(np.int32)
    if rows * cols == 0:
        indices[:] = -1
    return batch, rows, cols, slots, indices


def _spoil_indices(data, indices, limit):
    """An index past the grid where there is a slot; else None (the caller spoils something else)."""
    if not indices.size:
        return None
    spoiled = indices.copy()
    spoiled.reshape(-1)[data.draw(st.integers(0, indices.size - 1))] = limit + data.draw(st.integers(0, 3))
    return spoiled


def fuzz_sddmm(data):
    kind = kind_of(data)
    batch, rows, cols, _, indices = _grid(data)
    dim = data.draw(st.sampled_from([1, 3, 8]))
    a, b = floats(data, (batch, rows * bs.BLOCK, dim), kind), floats(data, (batch, cols * bs.BLOCK, dim), kind)
    if kind == "bad":
        spoiled = _spoil_indices(data, indices, rows * cols)
        if spoiled is not None and data.draw(st.booleans()):
            indices = spoiled
        else:
            b = data.draw(st.sampled_from([b[..., :0], a[:, :, None], np.zeros((batch, 5, dim), np.float32),
                                           a.astype(int)]))
    check("sddmm", kind, lambda: with_gradients(lambda x, y: bs.sddmm(x, y, indices), a, b) if kind == "good"
          else bs.sddmm(a, b, indices))


def fuzz_spmm(data):
    kind = kind_of(data)
    batch, rows, cols, slots, indices = _grid(data)
    transpose = data.draw(st.booleans())
    dim = data.draw(st.sampled_from([1, 3, 8]))
    dense_blocks, out_blocks = (rows, cols) if transpose else (cols, rows)
    blocks = floats(data, (batch, slots, bs.BLOCK, bs.BLOCK), kind)
    dense = floats(data, (batch, dense_blocks * bs.BLOCK, dim), kind)
    if kind == "bad":
        spoiled = _spoil_indices(data, indices, rows * cols)
        defect = data.draw(st.sampled_from(["indices", "blocks", "dense", "out_blocks"]))
        if defect == "indices" and spoiled is not None:
            indices = spoiled
        elif defect == "blocks" or (defect == "indices"):
            blocks = blocks[:, :, :16]
        elif defect == "dense":  # one row too many (one too few is no defect when there are none)
            dense = np.zeros((batch, dense.shape[1] + 1, dim), np.float32)
        else:
            out_blocks = -1

    def run(x, y):
        return bs.spmm(x, indices, y, out_blocks, transpose_blocks=transpose)
    check("spmm", kind, lambda: with_gradients(run, blocks, dense) if kind == "good" else run(blocks, dense))


def fuzz_row_max(data):
    _fuzz_row_reduce(data, is_max=True)


def fuzz_row_sum(data):
    _fuzz_row_reduce(data, is_max=False)


def _fuzz_row_reduce(data, is_max):
    op = "row_max" if is_max else "row_sum"
    reduce = bs.row_max if is_max else bs.row_sum
    kind = kind_of(data)
    batch, rows, cols, slots, indices = _grid(data)
    blocks = floats(data, (batch, slots, bs.BLOCK, bs.BLOCK), kind)
    if kind == "good" and is_max and blocks.size and data.draw(st.booleans()):
        blocks = np.round(blocks)  # ties: the gradient is shared between them
    if kind == "bad":
        spoiled = _spoil_indices(data, indices, rows * cols)
        defect = data.draw(st.sampled_from(["indices", "slots", "rows", "indices_dtype"]))
        if defect == "indices" and spoiled is not None:
            indices = spoiled
        elif defect in ("slots", "indices"):
            indices = np.concatenate([indices, np.full((batch, 1), -1, np.int32)], axis=1)
        elif defect == "rows":
            rows = -1
        else:
            indices = indices.astype(np.float32)
    check(op, kind, lambda: with_gradients(lambda x: reduce(x, indices, rows, cols), blocks) if kind == "good"
          else reduce(blocks, indices, rows, cols))


def fuzz_attention(data):
    kind = kind_of(data)
    batch, rows, cols, _, indices = _grid(data)
    dim, value_dim = data.draw(st.sampled_from([1, 3, 8])), data.draw(st.sampled_from([1, 2, 5]))
    query = floats(data, (batch, rows * bs.BLOCK, dim), kind)
    key = floats(data, (batch, cols * bs.BLOCK, dim), kind)
    value = floats(data, (batch, cols * bs.BLOCK, value_dim), kind)
    key_mask = bits(data, (batch, cols * bs.BLOCK)) if data.draw(st.booleans()) else None
    scale = data.draw(st.sampled_from([1.0, 0.125]))
    if kind == "bad":
        spoiled = _spoil_indices(data, indices, rows * cols)
        defect = data.draw(st.sampled_from(["indices", "value", "query", "key_mask"]))
        if defect == "indices" and spoiled is not None:
            indices = spoiled
        elif defect in ("value", "indices"):
            value = floats(data, (batch + 1, cols * bs.BLOCK, value_dim), "good")
        elif defect == "query":
            query = query[:, :, :, None]
        else:
            key_mask = bits(data, (batch, cols * bs.BLOCK + 1))

    def run(q, k, v):
        return bs.attention(q, k, v, indices, key_mask, scale)
    # With a NaN score in a row, that row's out and norm are NaN in both; its row_max (a stabilising shift)
    # is unspecified (block_sparse.attention's docstring): compared for finite inputs only.
    check("attention", kind, lambda: with_gradients(run, query, key, value) if kind == "good"
          else run(query, key, value)[:2 if kind == "nonfinite" else 3])


# ---------------------------------------------------------------------------------------------------------------
# Sliding window (Longformer)


def _band(data):
    batch, seq, heads = data.draw(st.integers(0, 2)), data.draw(st.integers(0, 6)), data.draw(st.integers(0, 2))
    dim, num_global = data.draw(st.sampled_from([1, 3, 4])), data.draw(st.integers(0, 2))
    window = data.draw(st.sampled_from([0, 1, 2, seq, seq + 1]))
    return batch, seq, heads, dim, num_global, window


def fuzz_sliding_window_qk(data):
    kind = kind_of(data)
    batch, seq, heads, dim, num_global, window = _band(data)
    query, key = floats(data, (batch, seq, heads, dim), kind), floats(data, (batch, seq, heads, dim), kind)
    global_key = floats(data, (batch, num_global, heads, dim), kind)
    key_keep, global_keep = bits(data, (batch, seq)) > 0, bits(data, (batch, num_global)) > 0
    if kind == "bad":
        defect = data.draw(st.sampled_from(["window", "key", "keep", "global_key", "rank"]))
        if defect == "window":
            window = -1
        elif defect == "key":
            key = floats(data, (batch, seq + 1, heads, dim), "good")
        elif defect == "keep":
            key_keep = bits(data, (batch, seq + 1)) > 0
        elif defect == "global_key":
            global_key = floats(data, (batch, num_global, heads, dim + 1), "good")
        else:
            query, key = query[..., 0], key[..., 0]

    def run(q, k, g):
        return sw.sliding_window_qk(q, k, window, key_keep, g, global_keep)
    check("sliding_window_qk", kind, lambda: with_gradients(run, query, key, global_key) if kind == "good"
          else run(query, key, global_key))


def fuzz_sliding_window_pv(data):
    kind = kind_of(data)
    batch, seq, heads, dim, num_global, window = _band(data)
    probs = floats(data, (batch, seq, heads, num_global + 2 * window + 1), kind)
    value = floats(data, (batch, seq, heads, dim), kind)
    global_value = floats(data, (batch, num_global, heads, dim), kind)
    if kind == "bad":
        defect = data.draw(st.sampled_from(["even_band", "value", "global_value", "rank"]))
        if defect == "even_band":
            probs = probs[..., 1:]
        elif defect == "value":
            value = floats(data, (batch, seq + 1, heads, dim), "good")
        elif defect == "global_value":
            global_value = floats(data, (batch, num_global, heads + 1, dim), "good")
        else:
            probs = probs[..., 0]

    def run(p, v, g):
        return sw.sliding_window_pv(p, v, g)
    check("sliding_window_pv", kind, lambda: with_gradients(run, probs, value, global_value) if kind == "good"
          else run(probs, value, global_value), exact=lambda: [_pv_definition(probs, value, global_value, window)])


def fuzz_sliding_window_attention(data):
    """The fused op (softmax of the banded scores times the values, in one pass) against the same three steps:
    the twins in reference mode; for NaN / Inf inputs, the compiled QK and PV ops around the softmax define it
    (the twin's chunked einsum multiplies structural zeros by values, see fuzz_sliding_window_pv)."""
    kind = kind_of(data)
    batch, seq, heads, dim, num_global, window = _band(data)
    query, key, value = (floats(data, (batch, seq, heads, dim), kind) for _ in range(3))
    global_key, global_value = (floats(data, (batch, num_global, heads, dim), kind) for _ in range(2))
    key_keep, global_keep = bits(data, (batch, seq)) > 0, bits(data, (batch, num_global)) > 0
    if kind == "bad":
        defect = data.draw(st.sampled_from(["window", "value", "keep", "global_value", "rank"]))
        if defect == "window":
            window = -1
        elif defect == "value":
            value = floats(data, (batch, seq + 1, heads, dim), "good")
        elif defect == "keep":
            key_keep = bits(data, (batch, seq + 1)) > 0
        elif defect == "global_value":
            global_value = floats(data, (batch, num_global, heads, dim + 1), "good")
        else:
            query, key, value = query[..., 0], key[..., 0], value[..., 0]

    def separate(q, k, v, gk, gv):
        probs = attn.stable_softmax(sw.sliding_window_qk(q, k, window, key_keep, gk, global_keep))
        return sw.sliding_window_pv(probs, v, gv, window=window)

    def run(q, k, v, gk, gv):
        q = tf.convert_to_tensor(q)
        if sw.use_fused_attention(q):
            return sw.fused_sliding_window_attention(q, k, v, window, key_keep, gk, gv, global_keep, separate)
        return sw.zero_rows_not_kept(separate(q, k, v, gk, gv), key_keep)

    def compiled_steps():  # the rows of the positions not kept are zero, as the fused op writes them
        with dispatch.op_mode("custom"):
            return _numpy(sw.zero_rows_not_kept(separate(query, key, value, global_key, global_value), key_keep))
    inputs = (query, key, value, global_key, global_value)
    check("sliding_window_attention", kind, lambda: with_gradients(run, *inputs) if kind == "good"
          else run(*inputs), exact=compiled_steps)


def _pv_definition(probs, value, global_value, window):
    """out_i = sum_c p[i, c] gv_c + sum_j p[i, X + j] v_{i+j-w}, with v zero outside the sequence."""
    num_global, seq = global_value.shape[1], value.shape[1]
    out = np.einsum("bshx,bxhd->bshd", probs[..., :num_global], global_value) if num_global else \
        np.zeros(value.shape, value.dtype)
    padded = np.pad(value, ((0, 0), (window, window), (0, 0), (0, 0)))
    with np.errstate(invalid="ignore"):  # NaN / Inf are the point here
        for j in range(2 * window + 1):
            # Row i meets padded row i + j (zero outside the sequence, still multiplied, as the op does).
            out = out + probs[..., num_global + j, None] * padded[:, j:j + seq]
    return out


# ---------------------------------------------------------------------------------------------------------------
# Dense attention (the fused CPU op behind core.attention's inference path)


def fuzz_dense_attention(data):
    kind = kind_of(data)
    batch, heads = data.draw(st.integers(0, 2)), data.draw(st.integers(0, 3))
    queries, keys = data.draw(st.sampled_from([0, 1, 5, 7, 70])), data.draw(st.sampled_from([0, 1, 3, 64, 65, 130]))
    dim, value_dim = data.draw(st.sampled_from([1, 3, 16, 24])), data.draw(st.sampled_from([1, 8, 17]))
    query = floats(data, (batch, heads, queries, dim), kind)
    key = floats(data, (batch, heads, keys, dim), kind)
    value = floats(data, (batch, heads, keys, value_dim), kind)
    bias_shape = [data.draw(st.sampled_from([1, size]), label="bias dim") for size in (batch, heads, queries)]
    bias = None if data.draw(st.booleans()) else np.where(
        bits(data, bias_shape + [keys]) > 0, floats(data, bias_shape + [keys], "good"), np.finfo(np.float32).min)
    if kind == "bad":
        defect = data.draw(st.sampled_from(["key", "value", "bias"]))
        if defect == "key":
            key = floats(data, (batch, heads, keys, dim + 1), "good")
        elif defect == "value":
            value = floats(data, (batch, heads, keys + 1, value_dim), "good")
        else:
            bias = floats(data, (batch + 2, 1, 1, keys), "good")

    def run(q, k, v, *b):  # tensors, as the layers pass them
        q, k, v, *b = (tf.convert_to_tensor(x) for x in (q, k, v, *b))
        return attn.scaled_dot_product_attention(q, k, v, b[0] if b else None, need_probs=False)[0]
    inputs = (query, key, value) + (() if bias is None else (bias.astype(np.float32),))
    if not data.draw(st.booleans(), label="bfloat16"):
        check("dense_attention", kind, lambda: with_gradients(run, *inputs) if kind == "good" else run(*inputs))
        return
    # bfloat16: the op computes in float32 and rounds its output once, so it is held to the float32 twin on the
    # same (bfloat16) inputs at the bfloat16 tolerance, NaN / Inf pattern included. Its gradient is the bfloat16
    # twin's on either path (tests/ops/test_dense_attention.py checks that).
    from tests.ops.test_dense_attention import bfloat16_tolerance
    CASES["dense_attention"][kind] += 1
    half = [tf.cast(x, tf.bfloat16) for x in inputs]
    with dispatch.op_mode("custom"):
        custom = _outcome(lambda: run(*half))
    with dispatch.op_mode("reference"):
        twin = _outcome(lambda: run(*(tf.cast(x, tf.float32) for x in half)))
    if kind == "bad":
        for name, result in (("custom op", custom), ("twin", twin)):
            assert isinstance(result, Exception), f"dense_attention: bad bfloat16 input accepted by the {name}"
        return
    _assert_accepted("dense_attention", kind, custom, twin)
    output, expected = custom[0].astype(np.float32), twin[0]
    np.testing.assert_array_equal(np.isnan(output), np.isnan(expected), err_msg="bfloat16: NaN pattern")
    rtol, atol = bfloat16_tolerance(tf.cast(half[2], tf.float32).numpy())
    np.testing.assert_allclose(output, expected, rtol=rtol, atol=atol, err_msg="bfloat16")


def fuzz_relative_attention(data):
    """The relative-position op as XLNet's attention core calls it: the op where use_relative_attention allows it,
    else its twin (XLNet's position term, then core attention); both take the same inputs."""
    kind = kind_of(data)
    batch, heads = data.draw(st.integers(0, 2)), data.draw(st.integers(0, 3))
    queries, keys = data.draw(st.sampled_from([0, 1, 5, 7, 70])), data.draw(st.sampled_from([0, 1, 3, 64, 65, 130]))
    dim, value_dim = data.draw(st.sampled_from([1, 3, 16, 24])), data.draw(st.sampled_from([1, 8, 17]))
    positions = keys + queries + data.draw(st.integers(0, 3), label="extra positions")
    position_batch = data.draw(st.sampled_from([1, batch]), label="position batch")
    query, position_query = (floats(data, (batch, heads, queries, dim), kind) for _ in range(2))
    key = floats(data, (batch, heads, keys, dim), kind)
    value = floats(data, (batch, heads, keys, value_dim), kind)
    position_key = floats(data, (position_batch, heads, positions, dim), kind)
    bias_shape = [data.draw(st.sampled_from([1, size]), label="bias dim") for size in (batch, heads, queries)]
    bias = np.where(bits(data, bias_shape + [keys]) > 0, floats(data, bias_shape + [keys], "good"),
                    np.finfo(np.float32).min)
    if kind == "bad":
        defect = data.draw(st.sampled_from(["key", "position_key", "value"]))
        if defect == "key":
            key = floats(data, (batch, heads, keys, dim + 1), "good")
        elif defect == "position_key":
            position_key = floats(data, (position_batch, heads, positions, dim + 1), "good")
        else:
            value = floats(data, (batch, heads, keys + 1, value_dim), "good")
    layer = _xlnet_attention()
    scale = 1.0 / np.sqrt(dim)

    def twin(q, k, v, pq, pk, b):
        position = layer.position_scores(pq, pk, tf.shape(k)[2], additive_mask=b)
        return attn.scaled_dot_product_attention(q, k, v, position, need_probs=False)[0]

    def run(*tensors):  # tensors, as the layer passes them
        tensors = [tf.convert_to_tensor(x) for x in tensors]
        if dense_attention.use_relative_attention(tensors[0], tensors[5]):
            return dense_attention.relative_attention(*tensors, scale, twin)
        return twin(*tensors)
    inputs = (query, key, value, position_query, position_key, bias)
    check("relative_attention", kind, lambda: with_gradients(run, *inputs) if kind == "good" else run(*inputs))


_XLNET_ATTENTION = []


def _xlnet_attention():
    """An XLNet attention layer ("bi"), for its position term (position_scores uses no weights)."""
    if not _XLNET_ATTENTION:
        import tfmodels
        from tfmodels.models.xlnet.modeling import XLNetRelativeAttention
        _XLNET_ATTENTION.append(XLNetRelativeAttention(tfmodels.XLNetConfig(d_model=8, n_head=1, d_head=8)))
    return _XLNET_ATTENTION[0]


# ---------------------------------------------------------------------------------------------------------------
# The checkpoint loader's copy (plain C through ctypes; its twin is numpy's assignment and np.isfinite)


def fuzz_checkpoint_copy(data):
    """good / nonfinite: the compiled copy writes numpy's bits into a (strided) destination, transposed or not,
    and counts NaN / Inf as np.isfinite does; bad (a dtype it does not convert, an unaligned source, shapes that
    differ): it declines and core.checkpoint.copy_counting's numpy path gives the same answer."""
    import ml_dtypes

    from tfmodels.core import checkpoint as ckpt
    from tfmodels.ops import checkpoint_copy
    kind = kind_of(data)
    rows, cols = (data.draw(st.sampled_from([0, 1, 7, 8, 9, 63, 64, 65, 130]), label=name) for name in "rc")
    dtypes = [np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16), np.dtype(np.float32)]
    source_dtype, target_dtype = (data.draw(st.sampled_from(dtypes), label=name) for name in ("source", "target"))
    if source_dtype != target_dtype and np.dtype(np.float16) in (source_dtype, target_dtype):
        target_dtype = source_dtype  # the kernel casts float32 <-> bfloat16 only; float16 is copied as is
    source = floats(data, (rows, cols), kind).astype(source_dtype)
    transposed = data.draw(st.booleans(), label="transposed")
    shape = (cols, rows) if transposed else (rows, cols)
    margin = data.draw(st.integers(0, 3), label="margin")  # the destination: a slice of a wider buffer
    buffer = np.zeros((shape[0], shape[1] + margin), target_dtype)
    target = buffer[:, margin:]
    view = source.T if transposed else source
    if kind == "bad":
        defect = data.draw(st.sampled_from(["dtype", "unaligned", "shape"]), label="defect")
        if defect == "dtype":
            view = view.astype(np.float64)
        elif defect == "unaligned" and source.size:
            raw = np.zeros(source.nbytes + 1, np.uint8)
            source = np.frombuffer(raw.data, source_dtype, count=source.size, offset=1).reshape(source.shape)
            view = source.T if transposed else source
        else:
            target = np.zeros((shape[0] + 1, shape[1]), target_dtype)
    CASES["checkpoint_copy"][kind] += 1
    expected = np.zeros_like(target)
    if kind == "bad" and expected.shape != view.shape:
        assert checkpoint_copy.copy_counting(target, view) is None, "checkpoint_copy: shapes that differ accepted"
        return
    expected[...] = view
    expected_count = int(view.size - np.count_nonzero(np.isfinite(view)))
    with dispatch.op_mode("custom"):
        count = checkpoint_copy.copy_counting(target, view)
    if kind == "bad":
        assert count is None or not view.size, f"checkpoint_copy: accepted a {defect} defect"
        count = ckpt.copy_counting(target, view)
    assert count == expected_count, (count, expected_count)
    assert np.array_equal(target.view(np.uint8), expected.view(np.uint8)), "checkpoint_copy: bits differ"
    assert not buffer[:, :margin].any(), "checkpoint_copy: wrote outside its destination"
    with dispatch.op_mode("custom"):
        assert checkpoint_copy.count_nonfinite(view) in (None, expected_count)


# ---------------------------------------------------------------------------------------------------------------
# Layer norm (the fused bfloat16 CPU op behind core.layers.LayerNormalization's inference path)


def fuzz_layer_norm(data):
    """good / nonfinite: the op's bfloat16 or float32 output is the twin's (Keras' LayerNormalization) within one
    rounding step (a few for float32), NaN / Inf pattern included, and its gradients are the twin's; bad (gamma or beta of another size or
    rank, a scalar input, which the layer never passes): the op raises."""
    from tests.ops.test_layer_norm import assert_within_a_rounding
    from tfmodels.core import layers
    kind = kind_of(data)
    rank = data.draw(st.integers(1, 3), label="rank")
    shape = [data.draw(st.sampled_from([0, 1, 2, 5]), label="dim") for _ in range(rank - 1)]
    width = data.draw(st.sampled_from([1, 3, 16, 17, 64, 100]), label="width")
    dtype = data.draw(st.sampled_from([tf.bfloat16, tf.float32]), label="dtype")
    inputs = tf.cast(floats(data, shape + [width], kind) * 4 + 1, dtype)
    layer = layers.layer_norm(data.draw(st.sampled_from([1e-12, 1e-5, 0.1]), label="epsilon"), dtype=dtype.name)
    layer.build((None, width))
    layer.gamma.assign(tf.cast(floats(data, (width,), "good"), dtype))
    layer.beta.assign(tf.cast(floats(data, (width,), "good"), dtype))
    # Every draw before the count: a draw that runs out of hypothesis' data ends the case uncounted.
    defect = data.draw(st.sampled_from(["gamma", "beta", "scalar"]), label="defect") if kind == "bad" else None
    CASES["layer_norm"][kind] += 1
    if kind == "bad":
        from tfmodels.ops import layer_norm as op
        gamma = tf.ones([width + 1]) if defect == "gamma" else tf.ones([width])
        beta = tf.zeros([width, 1]) if defect == "beta" else tf.zeros([width])
        x = tf.constant(1.0, dtype) if defect == "scalar" else inputs
        with dispatch.op_mode("custom"):
            outcome = _outcome(lambda: dispatch.op_module(op.FAMILY).tf_models_layer_norm(x, gamma, beta,
                                                                                          epsilon=1e-5))
        assert isinstance(outcome, Exception), f"layer_norm: a bad {defect} accepted"
        return

    def run():
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = layer(inputs)
            loss = tf.reduce_sum(tf.where(tf.math.is_finite(outputs), tf.cast(outputs, tf.float32), 0.0))
        return [outputs] + tape.gradient(loss, [inputs, layer.gamma, layer.beta])
    custom, twin = both(run)
    _assert_accepted("layer_norm", kind, custom, twin)
    x = tf.cast(inputs, tf.float64).numpy()
    gamma, beta = (tf.cast(v, tf.float64).numpy() for v in (layer.gamma, layer.beta))
    with np.errstate(invalid="ignore", over="ignore"):
        mean = x.mean(axis=-1, keepdims=True)
        inv = gamma / np.sqrt(((x - mean) ** 2).mean(axis=-1, keepdims=True) + layer.epsilon)
        terms = np.abs(x * inv) + np.abs(beta - mean * inv)  # the float32 sums cancel up to these
    assert_within_a_rounding(custom[0], twin[0], terms)
    for fused, expected in zip(custom[1:], twin[1:]):  # the gradient is the twin's, recomputed
        np.testing.assert_array_equal(np.isnan(fused), np.isnan(expected))


# ---------------------------------------------------------------------------------------------------------------
# Dense epilogue (the bfloat16 CPU op after a plain MatMul in core.layers.apply_dense's matmul form)


def fuzz_dense_epilogue(data):
    """good / nonfinite, in bfloat16 or float32: the op's output is the twin's (float32 TF ops) within one rounding
    step of the dtype, NaN / Inf pattern included, and its gradients are the twin's; bad (a bias of another size,
    rank or dtype, a residual of another shape, two residuals, a scalar input, an unknown activation): the op
    raises."""
    from tests.ops.test_dense_epilogue import assert_within_a_rounding
    from tfmodels.ops import dense_epilogue
    kind = kind_of(data)
    rank = data.draw(st.integers(1, 3), label="rank")
    shape = [data.draw(st.sampled_from([0, 1, 2, 5]), label="dim") for _ in range(rank - 1)]
    width = data.draw(st.sampled_from([1, 3, 16, 17, 255, 257]), label="width")
    activation = data.draw(st.sampled_from(dense_epilogue.ACTIVATIONS), label="activation")
    dtype = data.draw(st.sampled_from([tf.bfloat16, tf.float32]), label="dtype")
    x = tf.cast(floats(data, shape + [width], kind) * 4, dtype)
    bias = tf.cast(floats(data, [width], kind), dtype)
    residual = tf.cast(floats(data, shape + [width], kind), dtype) \
        if data.draw(st.booleans(), label="residual") else None
    # Every draw before the count: a draw that runs out of hypothesis' data ends the case uncounted.
    defect = data.draw(st.sampled_from(["bias size", "bias rank", "bias dtype", "residual shape", "two residuals",
                                        "scalar", "activation"]), label="defect") if kind == "bad" else None
    CASES["dense_epilogue"][kind] += 1
    if kind == "bad":
        module = dispatch.op_module(dense_epilogue.FAMILY)
        other = tf.float32 if dtype == tf.bfloat16 else tf.bfloat16
        bad_bias = {"bias size": tf.zeros([width + 1], dtype), "bias rank": tf.zeros([width, 1], dtype),
                    "bias dtype": tf.zeros([width], other)}.get(defect, bias)
        residuals = {"residual shape": [tf.zeros(shape + [width + 1], dtype)],
                     "two residuals": [x, x]}.get(defect, [])
        bad_x = tf.constant(1.0, dtype) if defect == "scalar" else x
        bad_activation = "relu" if defect == "activation" else activation
        with dispatch.op_mode("custom"):
            outcome = _outcome(lambda: module.tf_models_dense_epilogue(bad_x, bad_bias, residuals,
                                                                       activation=bad_activation))
        assert isinstance(outcome, Exception), f"dense_epilogue: a bad {defect} accepted"
        return

    def run(implementation):
        inputs = [x, bias] + ([] if residual is None else [residual])
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = implementation(x, bias, residual, activation)
            finite = tf.where(tf.math.is_finite(outputs), tf.cast(outputs, tf.float32), 0.0)
            weights = tf.reshape(tf.cast(tf.range(tf.size(finite)) % 7, tf.float32), tf.shape(finite))
            loss = tf.reduce_sum(finite * weights)
        return [outputs] + tape.gradient(loss, inputs)
    with dispatch.op_mode("custom"):
        custom = _outcome(lambda: run(dense_epilogue.dense_epilogue))
    twin = _outcome(lambda: run(dense_epilogue.epilogue_twin))
    _assert_accepted("dense_epilogue", kind, custom, twin)
    assert_within_a_rounding(tf.constant(custom[0]), tf.constant(twin[0]), residual)
    for got, expected in zip(custom[1:], twin[1:]):  # the gradient is the twin's, recomputed
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
        finite = np.isfinite(expected)
        np.testing.assert_array_equal(got[finite], expected[finite])


PROPERTIES = {"fast_hash": fuzz_fast_hash, "lsh_cumulation": fuzz_lsh_cumulation,
              "lsh_weighted_cumulation": fuzz_lsh_weighted_cumulation, "sddmm": fuzz_sddmm, "spmm": fuzz_spmm,
              "row_max": fuzz_row_max, "row_sum": fuzz_row_sum, "attention": fuzz_attention,
              "sliding_window_qk": fuzz_sliding_window_qk, "sliding_window_pv": fuzz_sliding_window_pv,
              "sliding_window_attention": fuzz_sliding_window_attention,
              "dense_attention": fuzz_dense_attention, "relative_attention": fuzz_relative_attention,
              "checkpoint_copy": fuzz_checkpoint_copy,
              "layer_norm": fuzz_layer_norm, "dense_epilogue": fuzz_dense_epilogue}


def run_property(op, max_examples):
    """Run op's property for max_examples cases (derandomized: the same cases on every run, as CI needs)."""
    # No shrinking: a failing case is reported as drawn (shrinking one costs minutes of TF calls in CI).
    fuzz = settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                    phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))(
        given(st.data())(PROPERTIES[op]))
    fuzz()
    return dict(CASES[op])


def main(argv):
    max_examples = int(argv[1])
    ops = argv[2:] or list(PROPERTIES)
    for op in ops:
        with dispatch.op_mode("custom"):
            assert dispatch.use_custom_op(op_family(op)), f"the custom op of {op} must load"
        run_property(op, max_examples)
    print("FUZZ_CASES " + json.dumps({op: dict(CASES[op]) for op in ops}), flush=True)


def op_family(op):
    return "lsh" if op in ("fast_hash", "lsh_cumulation", "lsh_weighted_cumulation") else \
        "sliding_window" if op.startswith("sliding_window") else \
        "dense_attention" if op in ("dense_attention", "relative_attention") else \
        "checkpoint" if op == "checkpoint_copy" else op if op in ("layer_norm", "dense_epilogue") else "block_sparse"


if __name__ == "__main__":
    main(sys.argv)
