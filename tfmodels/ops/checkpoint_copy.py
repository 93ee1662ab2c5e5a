"""The checkpoint loader's compiled copy (custom_ops/checkpoint): a tensor moved into the buffer that a variable
adopts, transposed and cast (float32 <-> bfloat16) as needed, with its NaN / Inf values counted, in one pass on
several threads. numpy's way (core.checkpoint.copy_into and count_nonfinite) is its twin: the same bits and the
same count, in three passes on one thread, and it runs wherever this one does not (another pair of dtypes,
unaligned or oddly strided arrays, op mode "reference", a library that did not build).

The library holds plain C functions called through ctypes (which releases the GIL); it is built and shipped like
the op families, and follows the op mode like them ("custom": this or an error; "auto": this, or numpy with one
warning naming why).
"""
import ctypes
import os
import threading

import ml_dtypes
import numpy as np

from tfmodels.ops import dispatch

FAMILY = "checkpoint"
DTYPE_CODES = {np.dtype(ml_dtypes.bfloat16): 0, np.dtype(np.float16): 1, np.dtype(np.float32): 2}
_function = {}
_lock = threading.Lock()


def _compiled():
    """The C function tfm_checkpoint_copy, or None where op mode and library say numpy copies instead."""
    if not dispatch.use_custom_op(FAMILY, fallback="numpy's copy, which gives the same values more slowly"):
        return None
    library = dispatch.op_library(FAMILY)
    with _lock:
        if library.path not in _function:
            function = ctypes.CDLL(library.path).tfm_checkpoint_copy
            function.restype = ctypes.c_int64
            function.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                 ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_int, ctypes.c_int]
            _function[library.path] = function
        return _function[library.path]


def _threads():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _rows(array):
    """(row stride in elements, transposed) when `array` is a 2-D view the kernel walks directly: rows or columns
    adjacent, the other axis a whole number of elements apart, elements aligned; else None."""
    size = array.itemsize
    if array.ndim != 2 or array.ctypes.data % size:
        return None
    rows, cols = array.strides
    if cols == size and rows % size == 0 and rows >= 0:
        return rows // size, False
    if rows == size and cols % size == 0 and cols >= 0:
        return cols // size, True
    return None


def _as_matrix(array):
    """A C-contiguous array of any rank as [rows, last axis]; other arrays as they are."""
    if array.ndim != 2 and array.flags.c_contiguous and array.ndim > 0 and array.size:
        return array.reshape(-1, array.shape[-1])
    return array


def copy_counting(dst, src):
    """dst[...] = src (dtypes cast as numpy casts them) and the number of NaN / Inf values in src, with the
    compiled copy; None when it does not apply (the caller then copies with numpy)."""
    if src.shape != dst.shape or src.dtype not in DTYPE_CODES or dst.dtype not in DTYPE_CODES:
        return None
    if src.size == 0:
        return 0
    src, dst = _as_matrix(src), _as_matrix(dst)
    source, target = _rows(src), _rows(dst)
    if source is None or target is None or target[1]:
        return None
    function = _compiled()
    if function is None:
        return None
    (src_stride, transposed), (dst_stride, _) = source, target
    # The kernel reads its source row by row: a transposed view is handed over as the array it views.
    rows, cols = (src.shape[1], src.shape[0]) if transposed else src.shape
    count = function(src.ctypes.data, DTYPE_CODES[src.dtype], rows, cols, src_stride, dst.ctypes.data,
                     DTYPE_CODES[dst.dtype], dst_stride, int(transposed), _threads())
    return None if count < 0 else int(count)


def count_nonfinite(array):
    """The number of NaN / Inf values in a float array, with the compiled scan; None when it does not apply."""
    if array.dtype not in DTYPE_CODES:
        return None
    if array.size == 0:
        return 0
    array = _as_matrix(array)
    layout = _rows(array)
    if layout is None:
        return None
    function = _compiled()
    if function is None:
        return None
    stride, transposed = layout
    rows, cols = (array.shape[1], array.shape[0]) if transposed else array.shape
    code = DTYPE_CODES[array.dtype]
    return int(function(array.ctypes.data, code, rows, cols, stride, None, code, 0, 0, _threads()))
