"""Host (CPU) buffers that TensorFlow tensors and variables can adopt without a copy.

Why this exists: loading a big model should hold each weight once. A CPU variable adopts the buffer of the
tensor assigned to it when nothing else refers to that buffer, and a tensor made from a numpy array through
DLPack shares the array's memory when the array is 64-byte aligned (TensorFlow's allocation alignment). So the
loader builds each weight in a numpy buffer (a fresh aligned one, or a copy-on-write view of a memory-mapped
checkpoint file), and the variable takes that buffer over.

The same route also keeps placeholders out of TensorFlow's own CPU allocator: with oneDNN on, TensorFlow
serves large CPU allocations from a BFC pool that never gives its regions back and keeps bookkeeping that is
resident (about 3% of each region); a placeholder for every weight of a 7 GB model made that pool grow by
7 GB and kept ~0.2 GB resident after the weights had moved out.
"""
import ml_dtypes
import numpy as np
import tensorflow as tf

ALIGNMENT = 64  # TensorFlow's EIGEN_MAX_ALIGN_BYTES: it shares only buffers aligned so
# dtypes that DLPack hands from numpy to TensorFlow without a copy (bfloat16 goes as uint16 + bitcast)
_DLPACK_DTYPES = {np.dtype(t) for t in ("float16", "float32", "float64", "int8", "int16", "int32", "int64",
                                        "uint8", "uint16", "uint32", "uint64")}


def aligned_empty(shape, dtype):
    """An uninitialised C-contiguous numpy array whose data is aligned for TensorFlow (no page is touched
    until written)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, np.uint8)
    offset = (-raw.ctypes.data) % ALIGNMENT
    return raw[offset:offset + nbytes].view(dtype).reshape(shape)


def is_shareable(array):
    """Whether tensor_from_numpy(array) shares the array's memory instead of copying it."""
    return (array.flags.c_contiguous and array.flags.writeable and array.ctypes.data % ALIGNMENT == 0
            and array.size > 0 and (array.dtype in _DLPACK_DTYPES or array.dtype == np.dtype(ml_dtypes.bfloat16)))


def tensor_from_numpy(array):
    """A CPU tf.Tensor that shares `array`'s memory when it can (see is_shareable); otherwise a copy.
    Assigning such a tensor to a CPU variable makes the variable adopt the buffer: loading then costs no copy
    at all. (The first in-place update of that variable, e.g. by an optimizer, moves it into TensorFlow's own
    memory once, because TF does not update foreign buffers.)"""
    array = np.asarray(array)
    if not is_shareable(array):
        return tf.convert_to_tensor(array)
    if array.dtype == np.dtype(ml_dtypes.bfloat16):
        return tf.bitcast(tf.experimental.dlpack.from_dlpack(array.view(np.uint16).__dlpack__()), tf.bfloat16)
    return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
