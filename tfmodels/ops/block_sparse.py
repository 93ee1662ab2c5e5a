"""Block-sparse attention primitives (MRA): custom ops with gradients, and their pure-TF twins.

A grid of `num_row_blocks x num_col_blocks` tiles of 32 x 32 positions. Per batch element b (for attention: the
batch x heads "meta batch"), `indices[b, s]` (int32) selects a tile as `row_block * num_col_blocks + col_block`;
a negative index marks an unused slot (it contributes nothing and its block is zero). A selected tile is stored
densely as `blocks[b, s, i, j]` (row position i, column position j). Dense operands are [batch, length, dim],
length a multiple of 32.

- `sddmm(a, b, indices)`: dense x dense -> selected blocks, `blocks[b,s,i,j] = a[b, r*32+i] . b[b, c*32+j]`.
- `spmm(blocks, indices, dense, num_out_blocks)`: selected blocks x dense -> dense, summed per row block;
  with `transpose_blocks=True` the blocks are transposed (summed per column block).
- `row_max(blocks, indices, num_row_blocks, num_col_blocks)`: per row position, the max over the selected
  blocks of its row block (-inf where a row block has none).
- `row_sum(...)`: the same with sums (0 where none).
- `attention(query, key, value, indices, key_mask, scale)`: the high-resolution part of MRA attention fused
  into one op that never stores the selected blocks: per row block, S = scale * q_r k_c^T over its selected
  blocks with masked keys scoring 0, m = the row max of S (-inf: none), A = exp(S - m) * key_mask; returns
  (sum A v, row sums of A, m). m is a stabilising shift and carries no gradient. Same as composing the four
  primitives (that composition is its twin). A NaN score makes its row's out and norm NaN; that row's m is
  then unspecified (NaN or the largest other score). The fused op has a CPU kernel only: where TF sees a GPU,
  attention() composes the compiled primitives (which have CUDA kernels) instead.

Each function uses the compiled op (custom_ops/block_sparse/, CPU and CUDA kernels) when
`tfmodels.ops.dispatch` says so, else its twin: plain TF ops with the same semantics, which also compile with
XLA. Gradients: sddmm and spmm are each other's gradients; row_sum's gradient broadcasts back to the blocks;
row_max's gradient goes to the maximal elements of each row, shared equally between ties.
"""
import functools

import numpy as np
import tensorflow as tf

from tfmodels.core.gradients import custom_gradient
from tfmodels.ops import dispatch
from tfmodels.ops.shapes import checked_range

FAMILY = "block_sparse"
BLOCK = 32
_OP_DTYPES = (tf.float32, tf.float64)


# ------------------------------------------------------------------------------------------------------------
# Public functions


def sddmm(a, b, indices, validate=True):
    """[B, R*32, D] x [B, C*32, D] -> the selected blocks [B, K, 32, 32] of a @ b^T."""
    a, b = tf.convert_to_tensor(a), tf.convert_to_tensor(b)
    indices = _indices(indices)
    _check_dense("a", a)
    _check_dense("b", b)
    _check_rank("indices", indices, 2)
    if validate:
        indices = _validated(indices, _num_blocks(a), _num_blocks(b))
    if _use_custom(a.dtype):
        return _ops().tf_models_block_sparse_sddmm(a, b, indices)
    return sddmm_twin(a, b, indices)


def spmm(blocks, indices, dense, num_out_blocks, transpose_blocks=False, validate=True):
    """Selected blocks x dense [B, N*32, D] -> [B, num_out_blocks*32, D].

    transpose_blocks=False: out row block r sums blocks (r, c) @ dense block c (N = number of column blocks);
    transpose_blocks=True:  out column block c sums blocks (r, c)^T @ dense block r (N = number of row blocks).
    """
    blocks, dense = tf.convert_to_tensor(blocks), tf.convert_to_tensor(dense)
    indices = _indices(indices)
    _check_blocks(blocks, indices)
    _check_dense("dense", dense)
    num_out_blocks = _block_count("num_out_blocks", num_out_blocks)
    if validate:
        rows, cols = (_num_blocks(dense), num_out_blocks) if transpose_blocks else (num_out_blocks, _num_blocks(dense))
        indices = _validated(indices, rows, cols)
    if _use_custom(blocks.dtype):
        return _ops().tf_models_block_sparse_spmm(blocks, indices, dense, num_out_blocks,
                                                  transpose_blocks=bool(transpose_blocks))
    return spmm_twin(blocks, indices, dense, num_out_blocks, transpose_blocks)


def row_max(blocks, indices, num_row_blocks, num_col_blocks, validate=True):
    """Per row position, the max over its row block's selected blocks: [B, num_row_blocks*32] (-inf: none)."""
    return _row_reduce(blocks, indices, num_row_blocks, num_col_blocks, validate, is_max=True)


def row_sum(blocks, indices, num_row_blocks, num_col_blocks, validate=True):
    """Per row position, the sum over its row block's selected blocks: [B, num_row_blocks*32] (0: none)."""
    return _row_reduce(blocks, indices, num_row_blocks, num_col_blocks, validate, is_max=False)


def attention(query, key, value, indices, key_mask=None, scale=1.0, validate=True):
    """Fused high-resolution attention: query [B, R*32, D], key [B, C*32, D], value [B, C*32, E], indices
    [B, K], key_mask [B, C*32] (1 keep, 0 drop) or None, scale (python float) ->
    (out [B, R*32, E], norm [B, R*32], row_max [B, R*32]).
    """
    query, key, value = (tf.convert_to_tensor(t) for t in (query, key, value))
    indices = _indices(indices)
    for name, tensor in (("query", query), ("key", key), ("value", value)):
        _check_dense(name, tensor)
    _check_rank("indices", indices, 2)
    if key_mask is not None:
        key_mask = tf.cast(key_mask, query.dtype)
        _check_rank("key_mask", key_mask, 2)
    if validate:
        indices = _validated(indices, _num_blocks(query), _num_blocks(key))
    if _use_custom(query.dtype):
        if _gpu_visible():
            # The fused op has a CPU kernel only (no CUDA kernel yet). Where a GPU is visible, compose the four
            # primitives instead: each has a CUDA kernel, and the numbers are the same (it is the twin's
            # composition with the compiled primitives), only the 32 x 32 blocks are materialised.
            return _compose_attention(query, key, value, indices, key_mask, scale, _custom_primitives())
        mask = key_mask if key_mask is not None else tf.zeros([0], query.dtype)
        # The fourth output, the selected blocks' weights, is there for the gradient only.
        return tuple(_ops().tf_models_block_sparse_attention(query, key, value, mask, indices, scale=float(scale))[:3])
    return attention_twin(query, key, value, indices, key_mask, scale)


def _row_reduce(blocks, indices, num_row_blocks, num_col_blocks, validate, is_max):
    blocks = tf.convert_to_tensor(blocks)
    indices = _indices(indices)
    _check_blocks(blocks, indices)
    num_row_blocks = _block_count("num_row_blocks", num_row_blocks)
    num_col_blocks = _block_count("num_col_blocks", num_col_blocks)
    if validate:
        indices = _validated(indices, num_row_blocks, num_col_blocks)
    if _use_custom(blocks.dtype):
        op = _ops().tf_models_block_sparse_row_max if is_max else _ops().tf_models_block_sparse_row_sum
        return op(blocks, indices, num_row_blocks, num_col_blocks)
    twin = row_max_twin if is_max else row_sum_twin
    return twin(blocks, indices, num_row_blocks, num_col_blocks)


# ------------------------------------------------------------------------------------------------------------
# Pure-TF twins (same semantics; XLA-compatible; used in "reference" mode, under XLA and for export)


def _decode(indices, num_col_blocks):
    valid = indices >= 0
    safe = tf.maximum(indices, 0)
    # A grid without columns has only unused slots (the indices are validated): never divide by zero for them.
    num_col_blocks = tf.maximum(tf.cast(num_col_blocks, tf.int32), 1)
    return valid, safe // num_col_blocks, safe % num_col_blocks


def _tiles(dense):
    """[B, N*32, D] -> [B, N, 32, D]."""
    shape = tf.shape(dense)
    return tf.reshape(dense, [shape[0], shape[1] // BLOCK, BLOCK, _last_dim(dense)])


def _gather_tiles(tiles, ids, valid):
    """tiles [B, N, ...] at ids [B, K]; unused slots (not `valid`) read an extra zero tile, which is there even
    when the grid has no tiles at all (N = 0, where a gather of tile 0 would fail)."""
    padded = tf.pad(tiles, [[0, 0], [0, 1]] + [[0, 0]] * (tiles.shape.rank - 2))
    return tf.gather(padded, tf.where(valid, ids, tf.shape(tiles)[1]), batch_dims=1)


def sddmm_twin(a, b, indices):
    valid, rows, cols = _decode(indices, tf.shape(b)[1] // BLOCK)
    a_blocks = _gather_tiles(_tiles(a), rows, valid)  # [B, K, 32, D]
    b_blocks = _gather_tiles(_tiles(b), cols, valid)
    products = tf.matmul(a_blocks, b_blocks, transpose_b=True)
    return tf.where(valid[:, :, None, None], products, tf.zeros([], products.dtype))


def spmm_twin(blocks, indices, dense, num_out_blocks, transpose_blocks=False):
    batch = tf.shape(blocks)[0]
    num_out_blocks = tf.cast(num_out_blocks, tf.int32)
    dense_blocks = tf.shape(dense)[1] // BLOCK
    if transpose_blocks:
        valid, sources, targets = _decode(indices, num_out_blocks)
    else:
        valid, targets, sources = _decode(indices, dense_blocks)
    gathered = _gather_tiles(_tiles(dense), sources, valid)  # [B, K, 32, D]
    products = tf.matmul(blocks, gathered, transpose_a=bool(transpose_blocks))
    products = tf.where(valid[:, :, None, None], products, tf.zeros([], products.dtype))
    segments, count = _segments(valid, targets, batch, num_out_blocks)
    out = tf.math.unsorted_segment_sum(products, segments, count)[:-1]
    return tf.reshape(out, [batch, num_out_blocks * BLOCK, _last_dim(dense)])


def _segments(valid, targets, batch, num_targets):
    """Segment ids of the slots for the per-batch targets, and their number: unused slots go to one extra
    segment at the end (to drop), so that no slot needs a target (there may be none: num_targets = 0)."""
    total = batch * num_targets
    return tf.where(valid, targets + tf.range(batch)[:, None] * num_targets, total), total + 1


def row_sum_twin(blocks, indices, num_row_blocks, num_col_blocks):
    batch = tf.shape(blocks)[0]
    num_row_blocks = tf.cast(num_row_blocks, tf.int32)
    valid, rows, _ = _decode(indices, tf.cast(num_col_blocks, tf.int32))
    sums = tf.where(valid[:, :, None], tf.reduce_sum(blocks, axis=-1), tf.zeros([], blocks.dtype))
    segments, count = _segments(valid, rows, batch, num_row_blocks)
    out = tf.math.unsorted_segment_sum(sums, segments, count)[:-1]
    return tf.reshape(out, [batch, num_row_blocks * BLOCK])


def row_max_twin(blocks, indices, num_row_blocks, num_col_blocks):
    @custom_gradient
    def forward(blocks):
        out = _row_max_values(blocks, indices, num_row_blocks, num_col_blocks)

        def grad(upstream):
            return _row_max_grad(blocks, indices, out, upstream, num_row_blocks, num_col_blocks, row_sum_twin)
        return out, grad
    return forward(blocks)


def _row_max_values(blocks, indices, num_row_blocks, num_col_blocks):
    batch = tf.shape(blocks)[0]
    num_row_blocks = tf.cast(num_row_blocks, tf.int32)
    valid, rows, _ = _decode(indices, tf.cast(num_col_blocks, tf.int32))
    low = tf.constant(-np.inf, blocks.dtype)
    maxima = tf.where(valid[:, :, None], tf.reduce_max(blocks, axis=-1), low)
    segments, count = _segments(valid, rows, batch, num_row_blocks)
    out = tf.math.unsorted_segment_max(maxima, segments, count)[:-1]
    # A NaN propagates, as in the op: TF's max reductions keep or drop it depending on where it sits.
    has_nan = tf.cast(valid[:, :, None] & tf.reduce_any(tf.math.is_nan(blocks), axis=-1), tf.int32)
    nan_rows = tf.math.unsorted_segment_max(has_nan, segments, count)[:-1] > 0
    out = tf.where(nan_rows, tf.constant(np.nan, blocks.dtype), out)
    # Row blocks without a selected block come out as the dtype's lowest value: make them -inf, as the op does.
    counts = tf.math.unsorted_segment_sum(tf.cast(valid, tf.int32), segments, count)[:-1]
    out = tf.where(counts[:, None] > 0, out, low)
    return tf.reshape(out, [batch, num_row_blocks * BLOCK])


def attention_twin(query, key, value, indices, key_mask=None, scale=1.0):
    """The fused attention as the composition of the primitives' twins (autodiff gives its gradient)."""
    twins = (sddmm_twin, row_max_twin, spmm_twin, row_sum_twin)
    return _compose_attention(query, key, value, indices, key_mask, scale, twins)


def _custom_primitives():
    """The compiled primitives (CPU and CUDA kernels), without re-validating the indices."""
    return (lambda a, b, indices: sddmm(a, b, indices, validate=False),
            lambda blocks, indices, rows, cols: row_max(blocks, indices, rows, cols, validate=False),
            lambda blocks, indices, dense, rows: spmm(blocks, indices, dense, rows, validate=False),
            lambda blocks, indices, rows, cols: row_sum(blocks, indices, rows, cols, validate=False))


def _compose_attention(query, key, value, indices, key_mask, scale, primitives):
    """attention() from the primitives (sddmm, row_max, spmm, row_sum): the 32 x 32 blocks are materialised."""
    sddmm_fn, row_max_fn, spmm_fn, row_sum_fn = primitives
    num_rows = tf.shape(query)[1] // BLOCK
    num_cols = tf.shape(key)[1] // BLOCK
    scores = sddmm_fn(query, key, indices) * tf.cast(scale, query.dtype)
    slot_mask = None
    if key_mask is not None:
        valid, _, cols = _decode(indices, num_cols)
        key_tiles = tf.reshape(key_mask, [tf.shape(key_mask)[0], num_cols, BLOCK])
        slot_mask = _gather_tiles(key_tiles, cols, valid)[:, :, None, :]
        scores = scores * slot_mask
    row_max = tf.stop_gradient(row_max_fn(tf.stop_gradient(scores), indices, num_rows, num_cols))
    # -inf marks a row without slots (shift by 0 there); an Inf or NaN score maximum stays, as in the fused op
    # (exp(inf - inf) is NaN: the row's weights are undefined, not silently finite).
    no_slot = tf.equal(row_max, tf.constant(-np.inf, row_max.dtype))
    shift = _gather_rows(tf.where(no_slot, tf.zeros_like(row_max), row_max), indices, num_rows, num_cols)
    weights = tf.exp(scores - shift[..., None])
    if slot_mask is not None:
        weights = weights * slot_mask
    out = spmm_fn(weights, indices, value, num_rows)
    norm = row_sum_fn(weights, indices, num_rows, num_cols)
    return out, norm, row_max


# ------------------------------------------------------------------------------------------------------------
# Gradients (the same formulas for the ops and the twins)


def _gather_rows(values, indices, num_row_blocks, num_col_blocks):
    """values [B, R*32] -> per slot its row block's values [B, K, 32] (0 for unused slots)."""
    valid, rows, _ = _decode(indices, num_col_blocks)
    shape = tf.shape(values)
    tiles = tf.reshape(values, [shape[0], num_row_blocks, BLOCK])
    gathered = _gather_tiles(tiles, rows, valid)
    return tf.where(valid[:, :, None], gathered, tf.zeros([], values.dtype))


def _row_max_grad(blocks, indices, out, upstream, num_row_blocks, num_col_blocks, row_sum_fn):
    num_row_blocks = tf.cast(num_row_blocks, tf.int32)
    num_col_blocks = tf.cast(num_col_blocks, tf.int32)
    valid = (indices >= 0)[:, :, None, None]
    maxima = _gather_rows(out, indices, num_row_blocks, num_col_blocks)
    selected = tf.logical_and(tf.equal(blocks, maxima[..., None]), valid)
    counts = row_sum_fn(tf.cast(selected, blocks.dtype), indices, num_row_blocks, num_col_blocks)
    share = tf.math.divide_no_nan(upstream, counts)
    per_slot = _gather_rows(share, indices, num_row_blocks, num_col_blocks)
    return tf.where(selected, tf.broadcast_to(per_slot[..., None], tf.shape(blocks)), tf.zeros([], blocks.dtype))


def _row_sum_grad(blocks, indices, upstream, num_row_blocks, num_col_blocks):
    per_slot = _gather_rows(upstream, indices, tf.cast(num_row_blocks, tf.int32), tf.cast(num_col_blocks, tf.int32))
    return tf.broadcast_to(per_slot[..., None], tf.shape(blocks))


@tf.RegisterGradient("TFModels>BlockSparseSddmm")
def _sddmm_grad(op, upstream):
    a, b, indices = op.inputs
    module = _ops()
    grad_a = module.tf_models_block_sparse_spmm(upstream, indices, b, tf.shape(a)[1] // BLOCK, transpose_blocks=False)
    grad_b = module.tf_models_block_sparse_spmm(upstream, indices, a, tf.shape(b)[1] // BLOCK, transpose_blocks=True)
    return [grad_a, grad_b, None]


@tf.RegisterGradient("TFModels>BlockSparseSpmm")
def _spmm_grad(op, upstream):
    blocks, indices, dense, _ = op.inputs
    module = _ops()
    dense_blocks = tf.shape(dense)[1] // BLOCK
    if op.get_attr("transpose_blocks"):
        grad_blocks = module.tf_models_block_sparse_sddmm(dense, upstream, indices)
        grad_dense = module.tf_models_block_sparse_spmm(blocks, indices, upstream, dense_blocks,
                                                        transpose_blocks=False)
    else:
        grad_blocks = module.tf_models_block_sparse_sddmm(upstream, dense, indices)
        grad_dense = module.tf_models_block_sparse_spmm(blocks, indices, upstream, dense_blocks,
                                                        transpose_blocks=True)
    return [grad_blocks, None, grad_dense, None]


@tf.RegisterGradient("TFModels>BlockSparseAttention")
def _attention_grad(op, grad_out, grad_norm, *_unused):
    # row_max is a stabilising shift (no gradient, as in the twin); weights is an internal output that
    # attention() never returns, so nothing downstream can have a gradient for it.
    query, key, value, _, indices = op.inputs
    if grad_norm is None:
        grad_norm = tf.zeros([0], query.dtype)
    if grad_out is None:
        grad_out = tf.zeros_like(op.outputs[0])
    grads = _ops().tf_models_block_sparse_attention_grad(query, key, value, indices, op.outputs[3], grad_out,
                                                         grad_norm, scale=op.get_attr("scale"))
    return list(grads) + [None, None]


@tf.RegisterGradient("TFModels>BlockSparseRowSum")
def _row_sum_op_grad(op, upstream):
    blocks, indices, num_row_blocks, num_col_blocks = op.inputs
    return [_row_sum_grad(blocks, indices, upstream, num_row_blocks, num_col_blocks), None, None, None]


@tf.RegisterGradient("TFModels>BlockSparseRowMax")
def _row_max_op_grad(op, upstream):
    blocks, indices, num_row_blocks, num_col_blocks = op.inputs
    module = _ops()
    grad = _row_max_grad(blocks, indices, op.outputs[0], upstream, num_row_blocks, num_col_blocks,
                         module.tf_models_block_sparse_row_sum)
    return [grad, None, None, None]


# ------------------------------------------------------------------------------------------------------------
# Helpers: dispatch and validation


def _ops():
    return dispatch.op_module(FAMILY)


@functools.lru_cache(maxsize=None)
def _gpu_visible():
    """Whether TF sees a GPU (then attention() composes the primitives, which have CUDA kernels)."""
    return bool(tf.config.list_physical_devices("GPU"))


def _use_custom(dtype):
    # The kernels are written for float32 and float64; other dtypes (bf16/fp16) take the twin.
    return dtype in _OP_DTYPES and dispatch.use_custom_op(FAMILY)


def _indices(indices):
    indices = tf.convert_to_tensor(indices)
    if indices.dtype != tf.int32:
        if not indices.dtype.is_integer:
            raise TypeError(f"indices must be an integer tensor, got {indices.dtype.name}")
        indices = tf.cast(indices, tf.int32)
    return indices


def _last_dim(tensor):
    static = tensor.shape[-1]
    return static if static is not None else tf.shape(tensor)[-1]


def _check_rank(name, tensor, rank):
    if tensor.shape.rank is not None and tensor.shape.rank != rank:
        raise ValueError(f"{name} must have rank {rank}, got shape {tensor.shape}")


def _check_dense(name, tensor):
    _check_rank(name, tensor, 3)
    length = tensor.shape[1]
    if length is not None and length % BLOCK:
        raise ValueError(f"{name} length (dimension 1) must be a multiple of the block size {BLOCK}, "
                         f"got shape {tensor.shape}")


def _check_blocks(blocks, indices):
    _check_rank("blocks", blocks, 4)
    _check_rank("indices", indices, 2)
    if blocks.shape.rank == 4 and tuple(blocks.shape[2:]) not in ((BLOCK, BLOCK), (None, None)):
        raise ValueError(f"blocks must be [batch, num_slots, {BLOCK}, {BLOCK}], got shape {blocks.shape}")
    if blocks.shape.rank == 4 and indices.shape.rank == 2 and not blocks.shape[:2].is_compatible_with(indices.shape):
        raise ValueError(f"blocks {blocks.shape} and indices {indices.shape} must agree on [batch, num_slots]")


def _num_blocks(dense):
    return tf.shape(dense)[1] // BLOCK


def _block_count(name, value):
    if isinstance(value, (int, np.integer)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
        return int(value)
    value = tf.convert_to_tensor(value)
    _check_rank(name, value, 0)
    return tf.cast(value, tf.int32)


def _validated(indices, num_row_blocks, num_col_blocks):
    """indices < num_row_blocks * num_col_blocks (negative = unused slot). The compiled CPU kernels check this
    themselves; this check also covers the twins (gathers give silent zeros on GPU) and the GPU kernels."""
    limit = tf.cast(num_row_blocks, tf.int32) * tf.cast(num_col_blocks, tf.int32)
    return checked_range(indices, limit, "indices must be -1 (unused slot) or a block of the grid "
                                         "(< num_row_blocks * num_col_blocks)")
