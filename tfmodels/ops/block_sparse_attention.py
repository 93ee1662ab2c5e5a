"""MRA-2 attention (Zeng et al., "Multi Resolution Analysis (MRA) for Approximate Self-Attention", ICML 2022),
computed as Hugging Face's `mra2_attention` does, on the block-sparse primitives of tfmodels.ops.block_sparse.

Per head, positions form blocks of 32. The low-resolution scores compare block means of queries and keys. The
`num_blocks` best blocks (after the priors) are computed at full resolution (a block-sparse softmax
numerator); in approx_mode "full" every other block contributes its low-resolution score, once per key token.
Both parts share one numerically stable normaliser: each is taken relative to its own maximum and the two are
rescaled to the larger one before they are added.

Beyond the reference:
- any sequence length: padded to a multiple of 32 inside, unpadded on the way out;
- padded batches are handled per example: each example uses the block grid of its own length (up to its last
  non-masked position) and its own budget `min(num_blocks, its_blocks ** 2)`, so a right-padded example gives
  what it gives alone (the reference mis-orders its mask over heads for batch > 1, and its integer conversion of
  the additive mask turns any padding into NaN);
- the effective attention weights can be returned (the reference has none to return).
"""
import math

import numpy as np
import tensorflow as tf

from tfmodels.ops import block_sparse as bs

PENALTY = 1e4       # the reference's additive mask value (exp(-1e4) is exactly 0 in float32)
PRIOR = 5e3         # the reference's bonus for prior blocks in the selection
EPSILON = 1e-6      # the reference's guard in block means and in the final normaliser


def _block_means(x, mask, counts, meta, num_blocks):
    """[BH, L, D] -> [BH, nb, D]: sums of the kept positions of each block of 32 divided by (their count + 1e-6),
    as the reference (which zeroes padded positions first; a [1, 32] x [32, D] product per block here)."""
    dim = x.shape[-1]
    tiles = tf.reshape(x, tf.stack([meta * num_blocks, bs.BLOCK, dim]))
    if mask is None:
        sums = tf.reduce_sum(tiles, axis=1)
    else:
        sums = tf.matmul(tf.reshape(mask, tf.stack([meta * num_blocks, 1, bs.BLOCK])), tiles)
    return tf.reshape(sums, tf.stack([meta, num_blocks, dim])) / tf.expand_dims(counts + EPSILON, 2)


def _repeat_blocks(x, meta, num_blocks):
    """[BH, nb] -> [BH, nb * 32] or [BH, nb, D] -> [BH, nb * 32, D], each block value repeated 32 times."""
    if x.shape.rank == 2:
        tiled = tf.broadcast_to(tf.expand_dims(x, 2), tf.stack([meta, num_blocks, bs.BLOCK]))
        return tf.reshape(tiled, tf.stack([meta, num_blocks * bs.BLOCK]))
    dim = x.shape[-1]
    tiled = tf.broadcast_to(tf.expand_dims(x, 2), tf.stack([meta, num_blocks, bs.BLOCK, dim]))
    return tf.reshape(tiled, tf.stack([meta, num_blocks * bs.BLOCK, dim]))


def _repeat_heads(x, batch, heads):
    """[B] or [B, L] -> [B * heads] or [B * heads, L]: row b * heads + h holds x[b] (the meta-batch order)."""
    if x.shape.rank == 1:
        return tf.reshape(tf.broadcast_to(tf.expand_dims(x, 1), tf.stack([batch, heads])), [-1])
    length = tf.shape(x)[1]
    tiled = tf.broadcast_to(tf.expand_dims(x, 1), tf.stack([batch, heads, length]))
    return tf.reshape(tiled, tf.stack([-1, length]))


def mra2_attention(query, key, value, mask=None, num_blocks=64, approx_mode="full", initial_prior_first_n_blocks=0,
                   initial_prior_diagonal_n_blocks=0, scale_dim=None, output_probs=False):
    """query/key/value [batch, heads, length, dim] (any float dtype; computed in float32), mask [batch, length]
    (1 keep, 0 padding) or None. Returns (context [batch, heads, length, dim] in the input dtype, probs or None):
    probs [batch, heads, length, length] are the effective attention weights (context = probs @ value).

    scale_dim: the scores are divided by sqrt(scale_dim); the reference pads heads narrower than 32 with zeros
    to 32 and scales by sqrt(32) then (default: max(dim, 32)).
    """
    if approx_mode not in ("full", "sparse"):
        raise ValueError(f"approx_mode must be 'full' or 'sparse', got {approx_mode!r}")
    full = approx_mode == "full"
    out_dtype = query.dtype
    query, key, value = (tf.cast(t, tf.float32) for t in (query, key, value))
    dim, heads, static_length = query.shape[-1], query.shape[1], query.shape[2]
    scale = math.sqrt(scale_dim if scale_dim is not None else max(dim, 32))
    batch, _, length, _ = tf.unstack(tf.shape(query))

    # Pad the sequence to whole blocks (python ints when the length is static).
    aligned = static_length is not None and static_length % bs.BLOCK == 0
    if static_length is not None:
        padded = static_length + (-static_length) % bs.BLOCK
    else:
        padded = (length + bs.BLOCK - 1) // bs.BLOCK * bs.BLOCK
    num_grid = padded // bs.BLOCK
    meta = batch * heads
    if not aligned:
        paddings = tf.stack([[0, 0], [0, 0], [0, padded - length], [0, 0]])
        query, key, value = (tf.pad(t, paddings) for t in (query, key, value))
        if mask is None:
            mask = tf.ones([batch, length], tf.float32)  # the internal padding must be masked
    flat_shape = tf.stack([meta, padded, dim])
    query, key, value = (tf.reshape(t, flat_shape) for t in (query, key, value))
    has_mask = mask is not None
    if has_mask:
        mask = tf.cast(tf.not_equal(mask, 0), tf.float32)
        if not aligned:
            mask = tf.pad(mask, tf.stack([[0, 0], [0, padded - length]]))
        # Each example's grid ends with the block of its last kept position.
        extent = tf.reduce_max(mask * tf.range(1.0, tf.cast(padded, tf.float32) + 1.0), axis=1)
        example_blocks = tf.cast(tf.math.ceil(extent / bs.BLOCK), tf.int32)
        # Meta-batch row b * heads + h belongs to example b (the reference repeats the mask in the wrong order).
        mask = _repeat_heads(mask, batch, heads)                      # [BH, Lp]
        grid_blocks = _repeat_heads(example_blocks, batch, heads)     # [BH]
        # Padded positions are left out of the block sums and the selected scores below instead of being zeroed
        # here (the reference multiplies query, key and value by the mask: the same numbers, three passes more).
        counts = tf.reduce_sum(tf.reshape(mask, tf.stack([meta, num_grid, bs.BLOCK])), axis=2)  # [BH, nb]
        valid_block = tf.expand_dims(tf.range(num_grid), 0) < tf.expand_dims(grid_blocks, 1)  # [BH, nb]
        valid_grid = tf.logical_and(tf.expand_dims(valid_block, 2), tf.expand_dims(valid_block, 1))
    else:
        counts = tf.fill(tf.stack([meta, num_grid]), float(bs.BLOCK))

    # ----- low resolution: block-mean scores -----------------------------------------------------------------
    block_mask = mask if has_mask else None
    query_hat = _block_means(query, block_mask, counts, meta, num_grid)
    key_hat = _block_means(key, block_mask, counts, meta, num_grid)
    if not full:  # only used to choose the blocks: no gradient, as in the reference
        query_hat, key_hat = tf.stop_gradient(query_hat), tf.stop_gradient(key_hat)
    low_logits = tf.matmul(query_hat, key_hat, transpose_b=True) / scale  # [BH, nb, nb]
    # The row max before the empty-block penalty, over the example's own grid. The shift cancels in the result,
    # so it carries no gradient.
    if has_mask:
        low_max = tf.reduce_max(tf.where(tf.expand_dims(valid_block, 1), low_logits, -np.inf), axis=2,
                                keepdims=True)
        low_max = tf.stop_gradient(tf.where(tf.math.is_finite(low_max), low_max, 0.0))
        empty_pair = tf.cast(tf.expand_dims(counts, 2) * tf.expand_dims(counts, 1) < 0.5, tf.float32)
        low_logits = low_logits - PENALTY * empty_pair
    else:
        low_max = tf.stop_gradient(tf.reduce_max(low_logits, axis=2, keepdims=True))

    # ----- block selection: top blocks of the normalised low-resolution scores plus the priors ---------------
    scores = tf.stop_gradient(low_logits - low_max)
    if initial_prior_diagonal_n_blocks > 0 or initial_prior_first_n_blocks > 0:
        scores = _add_priors(scores, num_grid, initial_prior_first_n_blocks, initial_prior_diagonal_n_blocks)
    candidates = tf.where(valid_grid, scores, -np.inf) if has_mask else scores
    candidates = tf.reshape(candidates, tf.stack([meta, num_grid * num_grid]))
    if isinstance(num_grid, int):
        selected = min(num_blocks, num_grid * num_grid)
    else:
        selected = tf.minimum(num_blocks, num_grid * num_grid)
    top_values, indices = tf.math.top_k(candidates, selected, sorted=False)
    if has_mask:
        chosen = tf.math.is_finite(top_values)                               # [BH, K]
        indices = tf.where(chosen, indices, -1)
    if full:
        # As the reference: every block scoring at least the smallest selected score leaves the low resolution.
        if has_mask:
            threshold = tf.reduce_min(tf.where(chosen, top_values, np.inf), axis=1)
            high_mask = tf.logical_and(scores >= tf.reshape(threshold, [-1, 1, 1]), valid_grid)
        else:
            high_mask = scores >= tf.reshape(tf.reduce_min(top_values, axis=1), [-1, 1, 1])

    # ----- high resolution: exact scores on the selected blocks -----------------------------------------------
    key_mask = mask if has_mask else None
    if output_probs:
        # The weights need the selected blocks themselves: the primitives step by step (the fused op's numbers).
        high_out, high_norm, row_max, high_attn = _high_resolution_blocks(query * (1.0 / scale), key, value,
                                                                          indices, key_mask, num_grid, meta)
    else:
        # A padded key scores 0 (as the reference's zeroed key) and gets weight 0.
        high_out, high_norm, row_max = bs.attention(query, key, value, indices, key_mask, scale=1.0 / scale,
                                                    validate=False)
        high_attn = None
    has_high = tf.math.is_finite(row_max)                                # False: row block without blocks
    row_max = tf.stop_gradient(tf.where(has_high, row_max, 0.0))

    high_corr = low_corr = low_attn = None
    if full:
        value_hat = _block_means(value, block_mask, counts, meta, num_grid)
        low_attn = tf.exp(low_logits - low_max - PENALTY * tf.cast(high_mask, tf.float32))
        if has_mask:
            low_attn = tf.where(valid_grid, low_attn, 0.0)
        low_attn = low_attn * tf.expand_dims(counts, 1)
        low_out = tf.matmul(low_attn, value_hat)                                          # [BH, nb, D] per block
        low_norm = _repeat_blocks(tf.reduce_sum(low_attn, axis=2), meta, num_grid)
        low_max_rows = _repeat_blocks(tf.squeeze(low_max, 2), meta, num_grid)
        log_correction = tf.where(has_high, low_max_rows - row_max, 0.0)
        if has_mask:
            log_correction = log_correction * mask
        low_corr = tf.exp(tf.minimum(log_correction, 0.0))
        high_corr = tf.exp(-tf.maximum(log_correction, 0.0))
        denominator = high_norm * high_corr + low_norm * low_corr + EPSILON
        # (high_out * high_corr + low_out * low_corr) / denominator * mask, with the per-position factors folded
        # first and the low-resolution rows broadcast over their block instead of repeated.
        high_weight, low_weight = high_corr / denominator, low_corr / denominator
        if has_mask:
            high_weight, low_weight = high_weight * mask, low_weight * mask
        rows_shape = tf.stack([meta, num_grid, bs.BLOCK, 1])
        context = (tf.reshape(high_out, tf.stack([meta, num_grid, bs.BLOCK, dim])) *
                   tf.reshape(high_weight, rows_shape) +
                   tf.expand_dims(low_out, 2) * tf.reshape(low_weight, rows_shape))
    else:
        denominator = high_norm + EPSILON
        high_weight = 1.0 / denominator
        if has_mask:
            high_weight = high_weight * mask
        context = high_out * tf.expand_dims(high_weight, 2)
    context = tf.reshape(context, tf.stack([batch, heads, padded, dim]))
    if not aligned:
        context = context[:, :, :length]

    probs = None
    if output_probs:
        probs = _effective_probs(high_attn, indices, high_corr, low_attn, low_corr, counts,
                                 mask if has_mask else None, denominator, num_grid, meta, padded)
        probs = tf.reshape(probs, [batch, heads, padded, padded])
        if not aligned:
            probs = probs[:, :, :length, :length]
        probs = tf.cast(probs, out_dtype)
    return tf.cast(context, out_dtype), probs


def _high_resolution_blocks(query, key, value, indices, key_mask, num_grid, meta):
    """bs.attention on the primitives, keeping the blocks: (out, norm, row_max, weights [BH, K, 32, 32])."""
    logits = bs.sddmm(query, key, indices, validate=False)                                  # [BH, K, 32, 32]
    row_max = tf.stop_gradient(bs.row_max(tf.stop_gradient(logits), indices, num_grid, num_grid, validate=False))
    safe_indices = tf.maximum(indices, 0)
    blocks_shape = tf.stack([meta, num_grid, bs.BLOCK])
    shift = tf.where(tf.math.is_finite(row_max), row_max, 0.0)
    slot_max = tf.gather(tf.reshape(shift, blocks_shape), safe_indices // num_grid, batch_dims=1)
    slot_max = tf.where(tf.expand_dims(indices >= 0, 2), slot_max, 0.0)
    weights = tf.exp(logits - tf.expand_dims(slot_max, 3))
    if key_mask is not None:
        # Padded keys: the reference subtracts 1e4 before the exponential; multiplying by the key mask after it
        # gives the same exact zeros (a padded key's score is 0 <= its row's max, so its exponential is finite).
        key_tiles = tf.gather(tf.reshape(key_mask, blocks_shape), safe_indices % num_grid, batch_dims=1)
        weights = weights * tf.expand_dims(key_tiles, 2)
    out = bs.spmm(weights, indices, value, num_grid, validate=False)                 # [BH, Lp, D]
    norm = bs.row_sum(weights, indices, num_grid, num_grid, validate=False)          # [BH, Lp]
    return out, norm, row_max, weights


def _add_priors(scores, num_grid, first_n, diagonal_n):
    """The reference's selection priors, added in its order: +5e3 on a band of diagonal_n diagonal blocks, then
    +5e3 on the first first_n block rows and again on the first first_n block columns."""
    block_range = tf.range(num_grid)
    rows, cols = block_range[:, None], block_range[None, :]
    if diagonal_n > 0:
        band = tf.abs(rows - cols) <= diagonal_n // 2
        scores = scores + tf.cast(band, tf.float32)[None] * PRIOR
    if first_n > 0:
        scores = tf.where((rows < first_n)[None], scores + PRIOR, scores)
        scores = tf.where((cols < first_n)[None], scores + PRIOR, scores)
    return scores


def _effective_probs(high_attn, indices, high_corr, low_attn, low_corr, counts, mask, denominator, num_grid,
                     meta, padded):
    """The dense [BH, Lp, Lp] weights with context = weights @ value (O(length^2): only when asked for)."""
    chosen = indices >= 0
    safe = tf.maximum(indices, 0)
    weights = high_attn
    if high_corr is not None:
        corr = tf.gather(tf.reshape(high_corr, [meta, num_grid, bs.BLOCK]), safe // num_grid, batch_dims=1)
        weights = weights * corr[:, :, :, None]
    weights = tf.where(chosen[:, :, None, None], weights, 0.0)
    grid = num_grid * num_grid
    segments = safe + tf.range(meta)[:, None] * grid
    dense = tf.math.unsorted_segment_sum(weights, segments, meta * grid)    # [BH * nb * nb, 32, 32]
    dense = tf.reshape(dense, [meta, num_grid, num_grid, bs.BLOCK, bs.BLOCK])
    dense = tf.reshape(tf.transpose(dense, [0, 1, 3, 2, 4]), [meta, padded, padded])
    if low_attn is not None:
        # Low resolution: the block's weight on each kept key token (value_hat = block sum / (count + 1e-6)).
        per_token = low_attn / (counts[:, None, :] + EPSILON)
        per_token = tf.repeat(tf.repeat(per_token, bs.BLOCK, axis=1), bs.BLOCK, axis=2)
        dense = dense + per_token * low_corr[:, :, None]
    dense = dense / denominator[:, :, None]
    if mask is not None:
        dense = dense * mask[:, None, :] * mask[:, :, None]
    return dense
