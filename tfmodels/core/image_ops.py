"""Image resampling with PyTorch's semantics, for models whose reference interpolates feature maps.

TF's own resize ops differ from torch's where it matters for parity: `tf.image.resize(..., "bicubic")` uses
Keys' a=-0.5 and renormalises at the borders, torch uses a=-0.75 with clamped indices; TF has no adaptive
average pooling. These functions reproduce `torch.nn.functional.interpolate` (bilinear and bicubic,
align_corners=False, no antialias) and `nn.AdaptiveAvgPool2d` on NHWC tensors, as separable resampling
matrices. Sizes may be python ints (the matrices are numpy constants) or scalar tensors (built in the graph,
so an exported model takes any image size). Everything runs in the input's dtype.
"""
import functools

import numpy as np
import tensorflow as tf

_CUBIC_A = -0.75  # torch's upsample_bicubic2d


def _is_static(*sizes):
    return all(isinstance(s, (int, np.integer)) for s in sizes)


def _cubic_weights(t, xp):
    """torch's get_cubic_upsample_coefficients for fractional offsets t: 4 weights for taps -1, 0, 1, 2."""
    a = _CUBIC_A

    def near(x):  # cubic_convolution1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # cubic_convolution2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]


@functools.lru_cache(maxsize=256)
def _matrix_numpy(kind, in_size, out_size):
    matrix = np.zeros((out_size, in_size), np.float64)
    rows = np.arange(out_size)
    if kind == "adaptive_avg":
        start = (rows * in_size) // out_size
        end = ((rows + 1) * in_size + out_size - 1) // out_size
        for r in rows:
            matrix[r, start[r]:end[r]] = 1.0 / (end[r] - start[r])
        return matrix
    scale = in_size / out_size
    source = scale * (rows + 0.5) - 0.5
    if kind == "bilinear":
        source = np.maximum(source, 0.0)
        low = np.floor(source).astype(np.int64)
        frac = source - low
        high = np.minimum(low + 1, in_size - 1)
        np.add.at(matrix, (rows, low), 1.0 - frac)
        np.add.at(matrix, (rows, high), frac)
        return matrix
    low = np.floor(source).astype(np.int64)
    frac = source - low
    for tap, weight in zip(range(-1, 3), _cubic_weights(frac, np)):
        np.add.at(matrix, (rows, np.clip(low + tap, 0, in_size - 1)), weight)
    return matrix


def _matrix_graph(kind, in_size, out_size):
    """The same matrices built from scalar tensors: one-hot sums over the taps."""
    in_size = tf.cast(in_size, tf.int32)
    out_size = tf.cast(out_size, tf.int32)
    rows = tf.range(out_size)
    cols = tf.range(in_size)[None, :]
    if kind == "adaptive_avg":
        start = (rows * in_size) // out_size
        end = ((rows + 1) * in_size + out_size - 1) // out_size
        inside = tf.logical_and(cols >= start[:, None], cols < end[:, None])
        return tf.cast(inside, tf.float64) / tf.cast(end - start, tf.float64)[:, None]
    scale = tf.cast(in_size, tf.float64) / tf.cast(out_size, tf.float64)
    source = scale * (tf.cast(rows, tf.float64) + 0.5) - 0.5
    if kind == "bilinear":
        source = tf.maximum(source, 0.0)
        low = tf.cast(tf.floor(source), tf.int32)
        frac = source - tf.floor(source)
        taps = [(low, 1.0 - frac), (tf.minimum(low + 1, in_size - 1), frac)]
    else:
        low = tf.cast(tf.floor(source), tf.int32)
        frac = source - tf.floor(source)
        taps = [(tf.clip_by_value(low + tap, 0, in_size - 1), weight)
                for tap, weight in zip(range(-1, 3), _cubic_weights(frac, tf))]
    matrix = tf.zeros(tf.stack([out_size, in_size]), tf.float64)
    for index, weight in taps:
        matrix += tf.one_hot(index, in_size, dtype=tf.float64) * weight[:, None]
    return matrix


def resampling_matrix(kind, in_size, out_size, dtype=tf.float32):
    """[out_size, in_size] matrix M with out = M @ in along one axis. kind: "bilinear", "bicubic" (torch's
    interpolate, align_corners=False) or "adaptive_avg" (torch's adaptive average pooling)."""
    if kind not in ("bilinear", "bicubic", "adaptive_avg"):
        raise ValueError(f"Unknown resampling kind {kind!r}")
    if _is_static(in_size, out_size):
        return tf.constant(_matrix_numpy(kind, int(in_size), int(out_size)), dtype=dtype)
    return tf.cast(_matrix_graph(kind, in_size, out_size), dtype)


def _spatial_size(x):
    static = x.shape.as_list()[1:3]
    dynamic = tf.shape(x)[1:3]
    return [s if s is not None else dynamic[i] for i, s in enumerate(static)]


def _separable(x, kind, size):
    height, width = _spatial_size(x)
    out_h, out_w = size
    if _is_static(height, width, out_h, out_w) and (height, width) == (out_h, out_w) and kind != "adaptive_avg":
        return x  # same size: torch's interpolate is the identity too
    rows = resampling_matrix(kind, height, out_h, x.dtype)
    cols = resampling_matrix(kind, width, out_w, x.dtype)
    x = tf.einsum("oh,bhwc->bowc", rows, x)
    return tf.einsum("pw,bowc->bopc", cols, x)


def interpolate_bicubic(x, size):
    """torch.nn.functional.interpolate(x, size, mode="bicubic", align_corners=False) on NHWC `x`."""
    return _separable(x, "bicubic", size)


def interpolate_bilinear(x, size):
    """torch.nn.functional.interpolate(x, size, mode="bilinear", align_corners=False) on NHWC `x`.

    TF's ResizeBilinear with half-pixel centers samples exactly as torch does (source = (i + 0.5) * scale - 0.5,
    clamped at the borders); it computes in float32, so half-precision inputs are cast there and back."""
    height, width = _spatial_size(x)
    if _is_static(height, width, *size) and (height, width) == tuple(size):
        return x
    resized = tf.image.resize(x, tf.stack(list(size)) if not _is_static(*size) else list(size),
                              method="bilinear", antialias=False)
    return tf.cast(resized, x.dtype)


def adaptive_avg_pool(x, size):
    """torch.nn.AdaptiveAvgPool2d(size) on NHWC `x`: bin i covers [floor(i*in/out), ceil((i+1)*in/out))."""
    return _separable(x, "adaptive_avg", size)
