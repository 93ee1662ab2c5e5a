"""Sliding-window (banded) attention products of Longformer: the custom ops and their pure-TF twins.

Layout (Longformer's): query / key / value [batch, seq, heads, dim]; scores and probabilities
[batch, seq, heads, X + 2w + 1], where the first X columns belong to X global keys [batch, X, heads, dim] and
column X + j to the key at position i + j - w (one-sided window w, band of 2w + 1).

- `sliding_window_qk(query, key, window, key_keep, global_key, global_keep)`: the banded scores. Entries whose
  key lies outside the sequence, or is not kept (`key_keep[b, m]` False, `global_keep[b, c]` False), hold the
  lowest value of the dtype (softmax gives them exactly zero weight).
- `sliding_window_pv(probs, value, global_value)`: out_i = sum_c probs[i, c] global_value_c +
  sum_j probs[i, X + j] value_{i+j-w}; band entries outside the sequence are ignored.

- `fused_sliding_window_attention(...)`: sliding_window_pv(softmax(sliding_window_qk(...)), ...) as one CPU op
  (float32 and bfloat16, for inference: its gradient is the composition's), the scores of a block of rows kept
  in cache from the product to the values, with the rows of the positions not kept zero
  (`zero_rows_not_kept`); `use_fused_attention` says where it runs.

Both have gradients. The custom ops (custom_ops/sliding_window, C++ with TF's thread pool, and CUDA) are used
when the op mode allows (tfmodels.ops.dispatch); the twins below are made of stock TF ops, compile with XLA,
and need O(seq * w) memory: the sequence is cut into chunks of w rows, each chunk meets the 3w keys around it,
and the band is read off the [w, 3w] chunk products by a pad-and-reshape skew (no [seq, seq] matrix).
"""
import tensorflow as tf

from tfmodels.ops import dispatch
from tfmodels.ops.shapes import agree

FAMILY = "sliding_window"


def _prepare(query, key, window, key_keep, global_key, global_keep):
    window = int(window)
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    query = tf.convert_to_tensor(query)
    key = tf.convert_to_tensor(key, dtype=query.dtype)
    if query.shape.rank != 4 or key.shape.rank != 4:
        raise ValueError(f"query and key must have rank 4 [batch, seq, heads, dim], got {query.shape} and {key.shape}")
    batch, seq = tf.shape(query)[0], tf.shape(query)[1]
    if key_keep is None:
        key_keep = tf.ones([batch, seq], tf.bool)
    key_keep = tf.cast(key_keep, tf.bool)
    if global_key is None:
        global_key = tf.zeros([batch, 0, tf.shape(query)[2], tf.shape(query)[3]], query.dtype)
    global_key = tf.convert_to_tensor(global_key, dtype=query.dtype)
    if global_keep is None:
        global_keep = tf.ones(tf.shape(global_key)[:2], tf.bool)
    global_keep = tf.cast(global_keep, tf.bool)
    agree("sliding_window_qk", *((("key", key, axis), ("query", query, axis)) for axis in range(4)),
          (("key_keep", key_keep, 0), ("query", query, 0)), (("key_keep", key_keep, 1), ("query", query, 1)),
          *((("global_key", global_key, axis), ("query", query, axis)) for axis in (0, 2, 3)),
          (("global_keep", global_keep, 0), ("query", query, 0)),
          (("global_keep", global_keep, 1), ("global_key", global_key, 1)))
    return query, key, window, key_keep, global_key, global_keep


@tf.autograph.experimental.do_not_convert
def sliding_window_qk(query, key, window, key_keep=None, global_key=None, global_keep=None):
    """Banded scores [batch, seq, heads, X + 2w + 1] (see the module docstring)."""
    query, key, window, key_keep, global_key, global_keep = _prepare(query, key, window, key_keep, global_key,
                                                                     global_keep)
    if dispatch.use_custom_op(FAMILY):
        return dispatch.op_module(FAMILY).tf_models_sliding_window_qk(query, key, key_keep, global_key, global_keep,
                                                                      window=window)
    return sliding_window_qk_reference(query, key, window, key_keep, global_key, global_keep)


@tf.autograph.experimental.do_not_convert
def sliding_window_pv(probs, value, global_value=None, window=None):
    """Band-weighted sum of values [batch, seq, heads, dim] (see the module docstring). `window` (w) is read
    from the static shapes when not given."""
    value = tf.convert_to_tensor(value)
    probs = tf.convert_to_tensor(probs, dtype=value.dtype)
    if probs.shape.rank != 4 or value.shape.rank != 4:
        raise ValueError(f"probs and value must have rank 4, got {probs.shape} and {value.shape}")
    if global_value is None:
        global_value = tf.zeros([tf.shape(value)[0], 0, tf.shape(value)[2], tf.shape(value)[3]], value.dtype)
    global_value = tf.convert_to_tensor(global_value, dtype=value.dtype)
    agree("sliding_window_pv", *((("probs", probs, axis), ("value", value, axis)) for axis in range(3)),
          *((("global_value", global_value, axis), ("value", value, axis)) for axis in (0, 2, 3)))
    if dispatch.use_custom_op(FAMILY):
        return dispatch.op_module(FAMILY).tf_models_sliding_window_pv(probs, value, global_value)
    return sliding_window_pv_reference(probs, value, global_value, window)


def use_fused_attention(query):
    """Whether `fused_sliding_window_attention` may run here: float32 or bfloat16, no GPU to run on (the op has
    CPU kernels only), and the op mode allows the compiled ops."""
    if query.dtype not in (tf.float32, tf.bfloat16):
        return False
    return dispatch.use_cpu_op(FAMILY)


def zero_rows_not_kept(output, key_keep):
    """output [batch, seq, heads, ...] with the rows of the positions not kept (key_keep [batch, seq] False) zero,
    as the fused op writes them: in Longformer those rows are the global tokens' (their output comes from the
    global attention) and the padding's."""
    return tf.where(key_keep[:, :, None, None], output, tf.zeros([], output.dtype))


@tf.autograph.experimental.do_not_convert
def fused_sliding_window_attention(query, key, value, window, key_keep, global_key, global_value, global_keep,
                                   twin):
    """zero_rows_not_kept(sliding_window_pv(softmax(sliding_window_qk(query, key, window, key_keep, global_key,
    global_keep)), value, global_value), key_keep) [batch, seq, heads, dim] with the compiled op.
    `twin(query, key, value, global_key, global_value)` computes the attention with the separate ops (every row);
    the gradient differentiates it with the same rows zero (the masks are closed over: they have no gradient)."""
    query, key, window, key_keep, global_key, global_keep = _prepare(query, key, window, key_keep, global_key,
                                                                     global_keep)
    value = tf.convert_to_tensor(value, dtype=query.dtype)
    global_value = tf.convert_to_tensor(global_value, dtype=query.dtype)
    agree("sliding_window_attention", *((("value", value, axis), ("query", query, axis)) for axis in range(4)),
          *((("global_value", global_value, axis), ("global_key", global_key, axis)) for axis in range(4)))
    module = dispatch.op_module(FAMILY)
    return dispatch.with_twin_gradient(
        lambda q, k, v, gk, gv: module.tf_models_sliding_window_attention(q, k, key_keep, gk, global_keep, v, gv,
                                                                          window=window),
        lambda *tensors: zero_rows_not_kept(twin(*tensors), key_keep), query, key, value, global_key, global_value)


# ---------------------------------------------------------------------------------------------------------------
# Gradients of the custom ops (explicit gradient ops)

@tf.RegisterGradient("TFModels>SlidingWindowQK")
def _sliding_window_qk_grad(op, grad):
    module = dispatch.op_module(FAMILY)
    query, key, key_keep, global_key, global_keep = op.inputs
    d_query, d_key, d_global_key = module.tf_models_sliding_window_qk_grad(
        grad, query, key, key_keep, global_key, global_keep, window=op.get_attr("window"))
    return [d_query, d_key, None, d_global_key, None]


@tf.RegisterGradient("TFModels>SlidingWindowPV")
def _sliding_window_pv_grad(op, grad):
    module = dispatch.op_module(FAMILY)
    probs, value, global_value = op.inputs
    return list(module.tf_models_sliding_window_pv_grad(grad, probs, value, global_value))


# ---------------------------------------------------------------------------------------------------------------
# Pure-TF twins


def _lowest(dtype):
    return tf.constant(dtype.min, dtype)


def _chunk_windows(x, window, chunks):
    """x [B, S_pad + 2w, ...] (already padded by w in front) -> [B, chunks, 3w, ...]: chunk t sees rows
    [t*w, t*w + 3w) of x, i.e. positions t*w - w .. t*w + 2w - 1."""
    shape = tf.shape(x)
    rest = shape[2:]
    blocks = tf.reshape(x, tf.concat([[shape[0], chunks + 2, window], rest], 0))
    windows = tf.concat([blocks[:, :-2], blocks[:, 1:-1], blocks[:, 2:]], axis=2)
    return windows


def _skew(x, window):
    """[..., w, 3w] -> [..., w, 2w + 1] with out[r, j] = x[r, r + j]."""
    shape = tf.shape(x)
    lead = shape[:-2]
    flat = tf.reshape(x, tf.concat([lead, [3 * window * window]], 0))
    paddings = tf.concat([tf.zeros([tf.size(lead), 2], tf.int32), [[0, window]]], 0)
    flat = tf.pad(flat, paddings)
    rows = tf.reshape(flat, tf.concat([lead, [window, 3 * window + 1]], 0))
    return rows[..., :2 * window + 1]


def _unskew(x, window):
    """[..., w, 2w + 1] -> [..., w, 3w] with out[r, r + j] = x[r, j] and zeros elsewhere."""
    shape = tf.shape(x)
    lead = shape[:-2]
    paddings = tf.concat([tf.zeros([tf.size(lead) + 1, 2], tf.int32), [[0, window]]], 0)
    rows = tf.pad(x, paddings)  # [..., w, 3w + 1]
    flat = tf.reshape(rows, tf.concat([lead, [window * (3 * window + 1)]], 0))
    flat = flat[..., :3 * window * window]
    return tf.reshape(flat, tf.concat([lead, [window, 3 * window]], 0))


def _pad_sequence(x, before, after, value=0):
    paddings = [[0, 0], [before, after]] + [[0, 0]] * (x.shape.rank - 2)
    return tf.pad(x, paddings, constant_values=tf.cast(value, x.dtype) if x.dtype != tf.bool else value)


def _band_keep(key_keep, window, seq, chunks, pad_end):
    """[B, S] bool -> [B, S, 2w + 1]: key i + j - w exists and is kept."""
    keep = _pad_sequence(key_keep, window, pad_end + window, False)          # [B, S_pad + 2w]
    windows = _chunk_windows(keep, window, chunks)                            # [B, n, 3w]
    tiled = tf.broadcast_to(windows[:, :, None, :], tf.concat([tf.shape(windows)[:2], [window, 3 * window]], 0))
    band = _skew(tf.cast(tiled, tf.int8), window)                             # [B, n, w, 2w + 1]
    band = tf.reshape(band, [tf.shape(key_keep)[0], chunks * window, 2 * window + 1])
    return tf.cast(band[:, :seq], tf.bool)


def sliding_window_qk_reference(query, key, window, key_keep=None, global_key=None, global_keep=None):
    """Pure-TF twin of TFModels>SlidingWindowQK (same semantics, O(seq * w) memory, XLA-compilable)."""
    query, key, window, key_keep, global_key, global_keep = _prepare(query, key, window, key_keep, global_key,
                                                                     global_keep)
    dtype = query.dtype
    batch, seq, heads, dim = (tf.shape(query)[i] for i in range(4))
    if window == 0:
        band = tf.reduce_sum(query * key, axis=-1, keepdims=True)
        keep = key_keep[:, :, None, None]
    else:
        chunks = (seq + window - 1) // window
        pad_end = chunks * window - seq
        q = tf.reshape(_pad_sequence(query, 0, pad_end), [batch, chunks, window, heads, dim])
        k = _chunk_windows(_pad_sequence(key, window, pad_end + window), window, chunks)  # [B, n, 3w, H, D]
        products = tf.einsum("bnrhd,bnshd->bnhrs", q, k)                                 # [B, n, H, w, 3w]
        band = _skew(products, window)                                                   # [B, n, H, w, 2w+1]
        band = tf.transpose(band, [0, 1, 3, 2, 4])
        band = tf.reshape(band, [batch, chunks * window, heads, 2 * window + 1])[:, :seq]
        keep = _band_keep(key_keep, window, seq, chunks, pad_end)[:, :, None, :]
    band = tf.where(keep, band, _lowest(dtype))
    global_scores = tf.einsum("bshd,bxhd->bshx", query, global_key)
    global_scores = tf.where(global_keep[:, None, None, :], global_scores, _lowest(dtype))
    return tf.concat([global_scores, band], axis=-1)


def _infer_window(probs, global_value, window):
    if window is not None:
        window = int(window)
        if window < 0:
            raise ValueError(f"window must be >= 0, got {window}")
        return window
    columns, num_global = probs.shape[-1], global_value.shape[1]
    if columns is None or num_global is None:
        raise ValueError("sliding_window_pv needs `window` when the numbers of columns or global keys are not "
                         "known when the graph is built")
    band_width = columns - num_global
    if band_width < 1 or band_width % 2 != 1:
        raise ValueError(f"probs must have X + 2w + 1 columns, got {columns} with X = {num_global}")
    return (band_width - 1) // 2


def sliding_window_pv_reference(probs, value, global_value=None, window=None):
    """Pure-TF twin of TFModels>SlidingWindowPV (same semantics, O(seq * w) memory, XLA-compilable)."""
    value = tf.convert_to_tensor(value)
    probs = tf.convert_to_tensor(probs, dtype=value.dtype)
    batch, seq, heads, dim = (tf.shape(value)[i] for i in range(4))
    if global_value is None:
        global_value = tf.zeros([batch, 0, heads, dim], value.dtype)
    global_value = tf.convert_to_tensor(global_value, dtype=value.dtype)
    window = _infer_window(probs, global_value, window)
    band_width = 2 * window + 1
    global_probs, band_probs = probs[..., :-band_width], probs[..., -band_width:]
    out = tf.einsum("bshx,bxhd->bshd", global_probs, global_value)
    if window == 0:
        return out + band_probs * value
    chunks = (seq + window - 1) // window
    pad_end = chunks * window - seq
    p = tf.reshape(_pad_sequence(band_probs, 0, pad_end), [batch, chunks, window, heads, band_width])
    p = _unskew(tf.transpose(p, [0, 1, 3, 2, 4]), window)                                 # [B, n, H, w, 3w]
    v = _chunk_windows(_pad_sequence(value, window, pad_end + window), window, chunks)    # [B, n, 3w, H, D]
    local = tf.einsum("bnhrs,bnshd->bnrhd", p, v)
    local = tf.reshape(local, [batch, chunks * window, heads, dim])[:, :seq]
    return out + local
