"""The LSH op family (YOSO): fast hashing and LSH cumulation, as custom ops (C++ / CUDA, custom_ops/lsh/) with
pure-TensorFlow twins of identical semantics.

Ops (each dispatches through `tfmodels.ops.dispatch`: the compiled op in "auto"/"custom" mode when its library
loads, the twin in "reference" mode, under XLA and in exported SavedModels):

- `fast_hash(vectors, mask, projections, num_hash, hash_code_len)` -> int32 codes [B, N, num_hash]: vectors
  zero-padded to P = projections.shape[-1], then for each part x -> H D2 H D1 H D0 x (H: unnormalised
  Walsh-Hadamard transform, Dk: the random sign diagonals in `projections` [B, 3, num_part, P]); the signs of
  the outputs, hash_code_len bits per code. Masked vectors get code 0. The op and the twin do the same IEEE
  additions, subtractions and multiplications in the same order, so their codes are identical.
- `lsh_cumulation(query_mask, query_code, key_mask, key_code, value, capacity)`:
  out[b, q] = query_mask / H * sum_h sum_{unmasked k with key_code[b,k,h] == query_code[b,q,h]} value[b, k].
- `lsh_weighted_cumulation(query_mask, query_code, query_weight, key_mask, key_code, key_weight, value, capacity)`:
  the same with each colliding pair weighted by <query_weight[b,q], key_weight[b,k]>.

Their gradients (with respect to values and weights, for fixed codes) are exact and are again LSH cumulations.
Randomness is never drawn inside an op: `fast_hash_projections` / `gaussian_projections` make it from a seed.
The YOSO attention built on them is tfmodels.ops.lsh_attention.
"""

import tensorflow as tf

from tfmodels.ops import dispatch
from tfmodels.ops.shapes import agree, checked_range

FAMILY = "lsh"
MIN_PADDED_DIM = 32  # the reference pads heads below the CUDA warp size (32) to 32 before hashing
MAX_HASH_CODE_LEN = 30  # codes are int32 bucket numbers and tables have 2^L rows: the kernels' kMaxCodeLen


# ---------------------------------------------------------------------------------------------------------------
# Shapes and randomness


def padded_dim(dim, hash_code_len):
    """The Hadamard size P for vectors of size `dim`: the next power of two >= max(dim, hash_code_len, 32)."""
    size = max(int(dim), int(hash_code_len), MIN_PADDED_DIM)
    return 1 << (size - 1).bit_length()


def num_parts(num_hash, padded, hash_code_len):
    """Independent random rotations needed: each gives padded // hash_code_len codes."""
    per_part = padded // hash_code_len
    return max(1, -(-int(num_hash) // per_part))


def fast_hash_projections(seed, batch, dim, num_hash, hash_code_len):
    """Random sign diagonals [batch, 3, num_part, P] (float32 +-1) for `fast_hash`, from a stateless seed
    (a [2] int tensor, e.g. from keras.random.SeedGenerator)."""
    padded = padded_dim(dim, hash_code_len)
    shape = tf.stack([batch, 3, num_parts(num_hash, padded, hash_code_len), padded])
    bits = tf.random.stateless_uniform(shape, seed=seed, minval=0, maxval=2, dtype=tf.int32)
    return tf.cast(2 * bits - 1, tf.float32)


def gaussian_projections(seed, batch, dim, num_hash, hash_code_len):
    """Gaussian projection matrices [batch, dim, num_hash * hash_code_len] for `gaussian_hash`."""
    shape = tf.stack([batch, dim, num_hash * hash_code_len])
    return tf.random.stateless_normal(shape, seed=seed, dtype=tf.float32)


# ---------------------------------------------------------------------------------------------------------------
# fast_hash


def _hadamard(x, size):
    """Unnormalised Walsh-Hadamard transform over the last axis (static `size`, a power of two), as butterflies
    of stride size/2 down to 1: exactly the additions and subtractions the kernels perform."""
    shape = tf.shape(x)
    flat = tf.reshape(x, [-1, size])
    stride = size // 2
    while stride >= 1:
        pairs = tf.reshape(flat, [-1, size // (2 * stride), 2, stride])
        a, b = pairs[:, :, 0], pairs[:, :, 1]
        flat = tf.reshape(tf.stack([a + b, a - b], axis=2), [-1, size])
        stride //= 2
    return tf.reshape(flat, shape)


def _pack_bits(signs, hash_code_len):
    """bool [..., n * L] -> int32 codes [..., n] with bit i of code j = signs[..., j * L + i]."""
    shape = tf.shape(signs)
    bits = tf.reshape(tf.cast(signs, tf.int32), tf.concat([shape[:-1], [-1, hash_code_len]], 0))
    weights = tf.bitwise.left_shift(tf.ones([hash_code_len], tf.int32), tf.range(hash_code_len))
    return tf.reduce_sum(bits * weights, axis=-1)


def fast_hash_twin(vectors, mask, projections, num_hash, hash_code_len):
    """Pure-TF twin of the fast_hash op (compiles with XLA)."""
    vectors = tf.convert_to_tensor(vectors, tf.float32)
    projections = tf.convert_to_tensor(projections, tf.float32)
    size = projections.shape[-1]
    if size is None:
        raise ValueError("fast_hash needs the padded dimension (projections.shape[-1]) to be static")
    dim = vectors.shape[-1]
    pad = size - dim if dim is not None else size - tf.shape(vectors)[-1]
    x = tf.pad(vectors, [[0, 0], [0, 0], [0, pad]])[:, :, None, :]  # [B, N, 1, P]
    for round_ in range(3):
        x = x * projections[:, None, round_]                        # [B, N, num_part, P]
        x = _hadamard(x, size)
    per_part = size // hash_code_len
    codes = _pack_bits(x[..., :per_part * hash_code_len] > 0, hash_code_len)  # [B, N, num_part, per_part]
    shape = tf.shape(codes)
    codes = tf.reshape(codes, tf.concat([shape[:2], [-1]], 0))[:, :, :num_hash]
    return tf.where(tf.not_equal(mask, 0)[:, :, None], codes, 0)


def fast_hash(vectors, mask, projections, num_hash, hash_code_len):
    """Hash codes [B, N, num_hash] (int32) of `vectors` [B, N, D]; see the module docstring."""
    # Checked here for the twin too, which would otherwise pack the bits into overflowing or empty codes.
    if not 1 <= int(hash_code_len) <= MAX_HASH_CODE_LEN or int(num_hash) < 1:
        raise ValueError(f"fast_hash needs 1 <= hash_code_len <= {MAX_HASH_CODE_LEN} and num_hash >= 1, got "
                         f"hash_code_len={hash_code_len}, num_hash={num_hash}")
    _check_projections(vectors, projections, num_hash, hash_code_len)
    mask = tf.cast(mask, tf.int32)
    agree("fast_hash", (("mask", mask, 0), ("vectors", vectors, 0)), (("mask", mask, 1), ("vectors", vectors, 1)),
          (("projections", projections, 0), ("vectors", vectors, 0)))
    if dispatch.use_custom_op(FAMILY):
        return dispatch.op_module(FAMILY).tf_models_lsh_fast_hash(
            tf.cast(vectors, tf.float32), mask, tf.cast(projections, tf.float32), num_hash=int(num_hash),
            hash_code_len=int(hash_code_len))
    return fast_hash_twin(vectors, mask, projections, num_hash, hash_code_len)


def _check_projections(vectors, projections, num_hash, hash_code_len):
    """The static shape checks of the op, for the twin too (its Hadamard butterflies would silently run on a size
    that is not a power of two, and its slices would drop extra parts)."""
    shape = tf.TensorShape(getattr(projections, "shape", None) or tf.convert_to_tensor(projections).shape)
    if shape.rank is None:
        return
    size, dim = (shape[-1] if shape.rank else None), tf.TensorShape(getattr(vectors, "shape", None)).as_list()
    if shape.rank != 4 or shape[1] not in (3, None):
        raise ValueError(f"projections must be [batch, 3, num_part, padded_dim], got shape {shape}")
    if size is not None:
        vector_dim = dim[-1] if dim and dim[-1] is not None else 0
        if size & (size - 1) or size < max(vector_dim, int(hash_code_len), 1):
            raise ValueError(f"projections dimension 3 (padded dimension) must be a power of two >= the vector "
                             f"dimension ({vector_dim}) and >= hash_code_len ({hash_code_len}), got {size}")
        parts = num_parts(num_hash, size, hash_code_len)
        if shape[2] not in (parts, None):
            raise ValueError(f"projections dimension 2 must be {parts} parts (ceil(num_hash / (padded_dim / "
                             f"hash_code_len))), got shape {shape}")


def gaussian_hash(vectors, mask, projections, hash_code_len):
    """Codes from Gaussian random projections (the reference's `use_fast_hash=False` path), pure TF:
    projections [B, D, num_hash * L]. Unlike the reference, keys are hashed with their own projections (the
    reference returns the key codes for the queries too)."""
    projected = tf.matmul(tf.cast(vectors, tf.float32), projections)
    codes = _pack_bits(projected > 0, hash_code_len)
    return tf.where(tf.not_equal(tf.cast(mask, tf.int32), 0)[:, :, None], codes, 0)


tf.no_gradient("TFModels>LshFastHash")


# ---------------------------------------------------------------------------------------------------------------
# lsh_cumulation and lsh_weighted_cumulation


def _bucket_ids(query_mask, query_code, key_mask, key_code, capacity):
    """Row ids into a [B * H * capacity (+1 for masked keys)] table of buckets."""
    batch, num_hash = tf.shape(key_code)[0], tf.shape(key_code)[2]
    base = (tf.range(batch)[:, None, None] * num_hash + tf.range(num_hash)[None, None, :]) * capacity
    total = batch * num_hash * capacity
    key_ids = tf.where(tf.not_equal(key_mask, 0)[:, :, None], base + key_code, total)
    query_ids = base + tf.where(tf.not_equal(query_mask, 0)[:, :, None], query_code, 0)
    return query_ids, key_ids, total + 1


def _cumulate(query_mask, query_ids, key_ids, num_segments, value):
    """sum over hashes of the bucket sums of `value` [B, Nk, D] read at the query buckets, / H, masked."""
    shape = tf.shape(key_ids)
    dim = tf.shape(value)[2]
    data = tf.broadcast_to(value[:, :, None, :], tf.concat([shape, [dim]], 0))
    table = tf.math.unsorted_segment_sum(tf.reshape(data, [-1, dim]), tf.reshape(key_ids, [-1]), num_segments)
    summed = tf.reduce_sum(tf.gather(table, query_ids), axis=2)
    out = summed / tf.cast(shape[2], value.dtype)
    return tf.where(tf.not_equal(query_mask, 0)[:, :, None], out, tf.zeros_like(out))


def lsh_cumulation_twin(query_mask, query_code, key_mask, key_code, value, hashtable_capacity):
    """Pure-TF twin of the lsh_cumulation op: bucket sums by unsorted_segment_sum, O(N * H * D) memory."""
    value = tf.convert_to_tensor(value, tf.float32)
    query_ids, key_ids, segments = _bucket_ids(query_mask, query_code, key_mask, key_code, hashtable_capacity)
    return _cumulate(query_mask, query_ids, key_ids, segments, value)


def _validated_codes(codes, capacity):
    """codes in [0, capacity): the compiled CPU kernel checks this itself; this check also covers the twin (an
    out-of-range code would silently land in another batch element's or hash's bucket) and the GPU kernel (which
    skips such codes)."""
    if int(capacity) < 1:
        raise ValueError(f"hashtable_capacity must be >= 1, got {capacity}")
    return checked_range(tf.convert_to_tensor(codes, tf.int32), int(capacity),
                         f"hash codes must lie in [0, hashtable_capacity={int(capacity)})", lower=0)


def _check_cumulation_shapes(op, query_mask, query_code, key_mask, key_code, value):
    agree(op, (("query_mask", query_mask, 0), ("query_code", query_code, 0)),
          (("query_mask", query_mask, 1), ("query_code", query_code, 1)),
          (("key_code", key_code, 0), ("query_code", query_code, 0)),
          (("key_code", key_code, 2), ("query_code", query_code, 2)),
          (("key_mask", key_mask, 0), ("query_code", query_code, 0)),
          (("key_mask", key_mask, 1), ("key_code", key_code, 1)),
          (("value", value, 0), ("query_code", query_code, 0)),
          (("value", value, 1), ("key_code", key_code, 1)))


def lsh_cumulation(query_mask, query_code, key_mask, key_code, value, hashtable_capacity):
    """[B, Nq, D]: see the module docstring."""
    query_code = _validated_codes(query_code, hashtable_capacity)
    key_code = _validated_codes(key_code, hashtable_capacity)
    query_mask, key_mask = tf.cast(query_mask, tf.int32), tf.cast(key_mask, tf.int32)
    _check_cumulation_shapes("lsh_cumulation", query_mask, query_code, key_mask, key_code, value)
    if dispatch.use_custom_op(FAMILY):
        return dispatch.op_module(FAMILY).tf_models_lsh_cumulation(
            query_mask, query_code, key_mask, key_code, tf.cast(value, tf.float32),
            hashtable_capacity=int(hashtable_capacity))
    return lsh_cumulation_twin(query_mask, query_code, key_mask, key_code, value, hashtable_capacity)


def lsh_weighted_cumulation_twin(query_mask, query_code, query_weight, key_mask, key_code, key_weight, value,
                                 hashtable_capacity):
    """Pure-TF twin of the lsh_weighted_cumulation op: one bucket-sum pass per weight dimension w,
    sum_w query_weight[..., w] * cumulation(key_weight[..., w] * value), in a while loop (O(N * H * D) memory)."""
    query_weight = tf.convert_to_tensor(query_weight, tf.float32)
    key_weight = tf.convert_to_tensor(key_weight, tf.float32)
    value = tf.convert_to_tensor(value, tf.float32)
    query_ids, key_ids, segments = _bucket_ids(query_mask, query_code, key_mask, key_code, hashtable_capacity)
    weight_dim = tf.shape(query_weight)[2]

    def body(w, total):
        part = _cumulate(query_mask, query_ids, key_ids, segments, value * tf.gather(key_weight, w, axis=2)[..., None])
        return w + 1, total + tf.gather(query_weight, w, axis=2)[..., None] * part

    out_shape = tf.concat([tf.shape(query_code)[:2], tf.shape(value)[2:]], 0)
    _, out = tf.while_loop(lambda w, _: w < weight_dim, body, [tf.constant(0), tf.zeros(out_shape, tf.float32)])
    # A query that meets no key (masked, or alone in all its buckets) sums nothing: 0 whatever its weights, as
    # in the op (the products above would turn a NaN or Inf weight times the empty sums into NaN).
    meets_keys = _cumulate(query_mask, query_ids, key_ids, segments, tf.ones_like(value[:, :, :1])) > 0
    return tf.where(meets_keys, out, tf.zeros_like(out))


def lsh_weighted_cumulation(query_mask, query_code, query_weight, key_mask, key_code, key_weight, value,
                            hashtable_capacity):
    """[B, Nq, D]: see the module docstring."""
    query_code = _validated_codes(query_code, hashtable_capacity)
    key_code = _validated_codes(key_code, hashtable_capacity)
    query_mask, key_mask = tf.cast(query_mask, tf.int32), tf.cast(key_mask, tf.int32)
    _check_cumulation_shapes("lsh_weighted_cumulation", query_mask, query_code, key_mask, key_code, value)
    agree("lsh_weighted_cumulation",
          (("query_weight", query_weight, 0), ("query_code", query_code, 0)),
          (("query_weight", query_weight, 1), ("query_code", query_code, 1)),
          (("key_weight", key_weight, 0), ("query_code", query_code, 0)),
          (("key_weight", key_weight, 1), ("key_code", key_code, 1)),
          (("key_weight", key_weight, 2), ("query_weight", query_weight, 2)))
    if dispatch.use_custom_op(FAMILY):
        return dispatch.op_module(FAMILY).tf_models_lsh_weighted_cumulation(
            query_mask, query_code, tf.cast(query_weight, tf.float32), key_mask, key_code,
            tf.cast(key_weight, tf.float32), tf.cast(value, tf.float32), hashtable_capacity=int(hashtable_capacity))
    return lsh_weighted_cumulation_twin(query_mask, query_code, query_weight, key_mask, key_code, key_weight, value,
                                        hashtable_capacity)


@tf.RegisterGradient("TFModels>LshCumulation")
def _lsh_cumulation_grad(op, grad):
    query_mask, query_code, key_mask, key_code, _ = op.inputs
    capacity = op.get_attr("hashtable_capacity")
    module = dispatch.op_module(FAMILY)
    grad_value = module.tf_models_lsh_cumulation(key_mask, key_code, query_mask, query_code, grad,
                                                 hashtable_capacity=capacity)
    return [None, None, None, None, grad_value]


@tf.RegisterGradient("TFModels>LshWeightedCumulation")
def _lsh_weighted_cumulation_grad(op, grad):
    query_mask, query_code, query_weight, key_mask, key_code, key_weight, value = op.inputs
    capacity = op.get_attr("hashtable_capacity")
    weighted = dispatch.op_module(FAMILY).tf_models_lsh_weighted_cumulation
    grad_query_weight = weighted(query_mask, query_code, grad, key_mask, key_code, value, key_weight,
                                 hashtable_capacity=capacity)
    grad_key_weight = weighted(key_mask, key_code, value, query_mask, query_code, grad, query_weight,
                               hashtable_capacity=capacity)
    grad_value = weighted(key_mask, key_code, key_weight, query_mask, query_code, query_weight, grad,
                          hashtable_capacity=capacity)
    return [None, None, grad_query_weight, None, None, grad_key_weight, grad_value]
