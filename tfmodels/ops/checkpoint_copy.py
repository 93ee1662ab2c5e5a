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
    if src.shape != dst.shape or dst.dtype not in DTYPE_CODES:
        return None
    return _run(src, dst)


def count_nonfinite(array):
    """The number of NaN / Inf values in a float array, with the compiled scan; None when it does not apply."""
    return _run(array, None)


def _run(source, target):
    """The kernel on `source` (copied into `target`, or only counted when that is None): the NaN / Inf count,
    or None where the kernel does not apply (dtypes, layouts, op mode, no library)."""
    if source.dtype not in DTYPE_CODES:
        return None
    if source.size == 0:
        return 0
    source = _as_matrix(source)
    layout = _rows(source)
    target = None if target is None else _as_matrix(target)
    target_layout = (0, False) if target is None else _rows(target)
    if layout is None or target_layout is None or target_layout[1]:
        return None
    function = _compiled()
    if function is None:
        return None
    (source_stride, transposed), target_stride = layout, target_layout[0]
    # The kernel reads its source row by row: a transposed view is handed over as the array it views.
    rows, cols = (source.shape[1], source.shape[0]) if transposed else source.shape
    code = DTYPE_CODES[source.dtype]
    count = function(source.ctypes.data, code, rows, cols, source_stride,
                     None if target is None else target.ctypes.data,
                     code if target is None else DTYPE_CODES[target.dtype], target_stride, int(transposed),
                     _threads())
    return None if count < 0 else int(count)
