"""Read and write safetensors files, tensor by tensor and chunk by chunk.

Why our own: the `safetensors` package's numpy API has no bfloat16, and the big checkpoints are bf16. The
format is simple (an 8-byte little-endian header size, a JSON header, then raw little-endian tensors).

Two ways to read. `read_rows` reads into arrays we own: used when a tensor must be converted (transposed, cast)
anyway; mapping a shard to copy it would keep every page read in the process's resident memory while the map
lives, whereas a read goes through the kernel's page cache, reclaimable and not part of the process.
`mapped` gives a copy-on-write view of the memory-mapped file: used for tensors that are kept as they are,
which a variable then adopts (only the pages a computation touches become resident).

Writing aligns tensor data to 64 bytes where the format allows (the header is padded with spaces so that the
data starts on a 64-byte boundary, and tensors whose size is a multiple of 64 bytes come first), so that the
files we write can be mapped and adopted by TensorFlow, which needs 64-byte-aligned buffers.

Writing streams too: a tensor may be given as a `LazyTensor` (shape, dtype and a function yielding its data in
row chunks), so that a checkpoint larger than memory can be written, or a model saved variable by variable,
without ever holding a second copy of the weights.
"""
import json
import os
import struct

import ml_dtypes
import numpy as np

DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype("<i8"), "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"), "I8": np.dtype("i1"), "U8": np.dtype("u1"), "BOOL": np.dtype("bool"),
}
CODES = {dtype: code for code, dtype in DTYPES.items()}

ALIGNMENT = 64      # tensor data alignment in the files we write (TensorFlow shares 64-byte-aligned buffers)
_MAX_READ = 1 << 30  # bytes per read() call (Linux caps a single read at just under 2 GB)


class LazyTensor:
    """A tensor written on demand: `chunks()` yields arrays whose concatenation along axis 0 is the tensor
    (a 0-d or 1-d tensor may come as one chunk). Used to write checkpoints without materialising them."""

    def __init__(self, shape, dtype, chunks):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self._chunks = chunks
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def chunks(self):
        return self._chunks()

    def numpy(self):
        parts = [np.asarray(c, self.dtype) for c in self.chunks()]
        if not parts:
            return np.zeros(self.shape, self.dtype)
        return np.concatenate([p.reshape((-1,) + self.shape[1:]) for p in parts]).reshape(self.shape) \
            if self.shape else parts[0].reshape(())


def _read_exact(f, offset, out):
    """Fill the byte view `out` from file `f` at `offset`."""
    view = memoryview(out).cast("B")
    f.seek(offset)
    done = 0
    while done < len(view):
        n = f.readinto(view[done:done + _MAX_READ])
        if not n:
            raise EOFError(f"{getattr(f, 'name', 'file')}: unexpected end of file")
        done += n


class SafetensorsFile:
    """Lazy access to the tensors of one .safetensors file; every read is a fresh array owned by the caller."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            (header_size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_size))
        self.metadata = header.pop("__metadata__", None) or {}
        self.entries = header
        self._data_start = 8 + header_size
        self._file = None
        self._map = None

    def keys(self):
        return list(self.entries)

    def __contains__(self, name):
        return name in self.entries

    def shape(self, name):
        return tuple(self.entries[name]["shape"])

    def dtype(self, name):
        code = self.entries[name]["dtype"]
        if code not in DTYPES:
            raise ValueError(f"{self.path}: tensor {name!r} has unsupported dtype {code}")
        return DTYPES[code]

    def _handle(self):
        if self._file is None:
            self._file = open(self.path, "rb", buffering=0)
        return self._file

    def get(self, name, out=None):
        """The whole tensor, read into a new array (or into `out`, a C-contiguous array of its shape/dtype)."""
        shape = self.shape(name)
        return self.read_rows(name, 0, shape[0] if shape else None, out=out)

    def read_rows(self, name, start, stop, out=None):
        """Rows [start, stop) along axis 0 (`stop=None` on a 0-d tensor), read into a new array, or into `out`
        (C-contiguous, of the tensor's dtype and the rows' shape) so that no intermediate copy is made."""
        entry, dtype, shape = self.entries[name], self.dtype(name), self.shape(name)
        begin, end = entry["data_offsets"]
        expected = (stop - start,) + shape[1:] if shape else ()
        if out is None:
            out = np.empty(expected, dtype)
        elif out.shape != expected or out.dtype != dtype or not out.flags.c_contiguous:
            raise ValueError(f"{self.path}: cannot read {name!r} rows into an array of shape {out.shape}, dtype "
                             f"{out.dtype} (need C-contiguous {expected}, {dtype})")
        if not shape:
            _read_exact(self._handle(), self._data_start + begin, out.reshape(1).view(np.uint8))
            return out
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        if not 0 <= start <= stop <= shape[0] or begin + shape[0] * row_bytes != end:
            raise ValueError(f"{self.path}: bad row range [{start}, {stop}) for tensor {name!r} of shape {shape}")
        if out.size:
            _read_exact(self._handle(), self._data_start + begin + start * row_bytes, out.reshape(-1).view(np.uint8))
        return out

    def mapped(self, name):
        """The tensor as a copy-on-write view of the memory-mapped file (writes go to private pages, never to
        the file), or None for a 0-d or empty tensor. Nothing is read until the view's pages are touched; the
        map lives as long as the view (or anything adopting its memory), also after close()."""
        shape, dtype = self.shape(name), self.dtype(name)
        begin, end = self.entries[name]["data_offsets"]
        if not shape or begin == end:
            return None
        if end - begin != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise ValueError(f"{self.path}: tensor {name!r} has {end - begin} bytes, its shape {shape} needs "
                             f"{int(np.prod(shape, dtype=np.int64)) * dtype.itemsize}")
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="c")
        return self._map[self._data_start + begin:self._data_start + end].view(dtype).reshape(shape)

    def close(self):
        self._map = None  # views handed out keep the mapping alive
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *_exc_info):
        self.close()


def _spec(name, value):
    if isinstance(value, LazyTensor):
        dtype, shape, nbytes = value.dtype, value.shape, value.nbytes
    else:
        value = np.asarray(value)
        dtype, shape, nbytes = value.dtype, value.shape, value.nbytes
    if dtype not in CODES:
        raise ValueError(f"Cannot write tensor {name!r} of dtype {dtype} to safetensors")
    return dtype, tuple(shape), nbytes


def write_safetensors(path, tensors, metadata=None):
    """Write {name: numpy array or LazyTensor} to `path` (any DTYPES dtype, bfloat16 included).

    Lazy tensors are produced and written one chunk at a time, so the file may be larger than memory."""
    specs = {name: _spec(name, value) for name, value in tensors.items()}
    # tensors of a multiple of 64 bytes first (stable order otherwise): all of them then start 64-byte aligned
    order = sorted(tensors, key=lambda name: specs[name][2] % ALIGNMENT != 0)
    header, offset = {}, 0
    for name in order:
        dtype, shape, nbytes = specs[name]
        header[name] = {"dtype": CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * ((-(8 + len(encoded))) % ALIGNMENT)  # data starts 64-byte aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for name in order:
            value = tensors[name]
            expected = header[name]["data_offsets"][1] - header[name]["data_offsets"][0]
            written = 0
            parts = value.chunks() if isinstance(value, LazyTensor) else [value]
            for part in parts:
                part = np.ascontiguousarray(part, dtype=DTYPES[header[name]["dtype"]])
                f.write(part.reshape(-1).view(np.uint8).data)
                written += part.nbytes
            if written != expected:
                raise ValueError(f"Tensor {name!r}: wrote {written} bytes, its shape and dtype need {expected}")
    os.replace(tmp, path)
