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
import mmap

import ml_dtypes
import numpy as np
import tensorflow as tf

ALIGNMENT = 64  # TensorFlow's EIGEN_MAX_ALIGN_BYTES: it shares only buffers aligned so
# dtypes that DLPack hands from numpy to TensorFlow without a copy (bfloat16 goes as uint16 + bitcast)
_DLPACK_DTYPES = {np.dtype(t) for t in ("float16", "float32", "float64", "int8", "int16", "int32", "int64",
                                        "uint8", "uint16", "uint32", "uint64")}


# Buffers of at least this many bytes come from a mapping of their own, in base pages (see aligned_empty).
BASE_PAGE_BUFFER_BYTES = 2 << 20


def aligned_empty(shape, dtype):
    """An uninitialised C-contiguous numpy array whose data is aligned for TensorFlow (no page is touched
    until written).

    A large buffer is an anonymous mapping of its own advised to use base pages (MADV_NOHUGEPAGE), where numpy
    would advise transparent huge pages for it. Why: on the project's machines (KVM guests that report free memory
    to the host, `page_reporting.page_reporting_order=11` on their kernel command line, so that memory faults on
    the host again when reused) a fresh huge page cost ~1.9 ms to fault in, and a 3.5B-parameter bf16 load, whose
    transposed weights are written into these buffers, took 9.7-10.1 s with numpy's advice against 4.7-5.0 s in
    base pages (AMD EPYC, alternating fresh processes), with the forward after it unchanged. PyTorch's CPU
    allocator uses base pages too.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    no_huge_pages = getattr(mmap, "MADV_NOHUGEPAGE", None)  # Linux only
    if nbytes >= BASE_PAGE_BUFFER_BYTES and no_huge_pages is not None:
        # Private (a shared anonymous mapping is shmem, whose faults cost more), page-aligned; the array keeps it
        # alive, and a tensor made from the array keeps the array.
        mapping = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE)
        mapping.madvise(no_huge_pages)
        return np.frombuffer(mapping, dtype, count=nbytes // dtype.itemsize).reshape(shape)
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
