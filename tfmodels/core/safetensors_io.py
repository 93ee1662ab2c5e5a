"""Read and write safetensors files, tensor by tensor and chunk by chunk.

Why our own: the `safetensors` package's numpy API has no bfloat16, and the big checkpoints are bf16. The
format is simple (an 8-byte little-endian header size, a JSON header, then raw little-endian tensors).

Three ways to read. `read_rows` reads into arrays we own. `mapped_rows` gives rows of a tensor as a read-only
view of a mapping of just those bytes, unmapped when the view is dropped: used when a tensor must be converted
(transposed, cast) anyway, it reads the page cache in place, without the copy into a buffer that a read makes
(a third of the time of loading a transposed bf16 kernel); mapping a whole shard for that would instead keep
every page read in the process's resident memory while the map lives. `mapped` gives a copy-on-write view of
the memory-mapped file: used for tensors that are kept as they are, which a variable then adopts (only the
pages a computation touches become resident).

Writing aligns tensor data to 64 bytes where the format allows (the header is padded with spaces so that the
data starts on a 64-byte boundary, and tensors whose size is a multiple of 64 bytes come first), so that the
files we write can be mapped and adopted by TensorFlow, which needs 64-byte-aligned buffers.

Writing streams too: a tensor may be given as a `LazyTensor` (shape, dtype and a function yielding its data in
row chunks), so that a checkpoint larger than memory can be written, or a model saved variable by variable,
without ever holding a second copy of the weights.
"""
import json
import math
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
MAX_HEADER_BYTES = 100 << 20  # the format's own limit (the safetensors package refuses larger headers)


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


def _is_index(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_entries(path, entries, data_bytes):
    """Check every tensor's header entry before anything is read, so that a hostile or damaged file fails at
    open time with the tensor's name: known dtype, a shape of non-negative ints, data offsets that hold exactly
    the shape's bytes, inside the data section, tensors end to end without sharing bytes."""
    spans = []
    for name, entry in entries.items():
        where = f"{path}: tensor {name!r}"
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
            raise ValueError(f"{where}: header entry needs dtype, shape and data_offsets, got {entry!r:.200}")
        code, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(code, str) or code not in DTYPES:
            raise ValueError(f"{where} has unsupported dtype {code!r} (supported: {', '.join(DTYPES)})")
        if not isinstance(shape, list) or not all(_is_index(d) for d in shape):
            raise ValueError(f"{where}: shape must be a list of non-negative integers, got {shape!r:.200}")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_index(o) for o in offsets) \
                or offsets[0] > offsets[1]:
            raise ValueError(f"{where}: data_offsets must be [begin, end] with 0 <= begin <= end, got "
                             f"{offsets!r:.200}")
        begin, end = offsets
        needed = math.prod(shape) * DTYPES[code].itemsize
        if end - begin != needed:
            raise ValueError(f"{where}: its shape {tuple(shape)} of {code} needs {needed} bytes but data_offsets "
                             f"[{begin}, {end}] hold {end - begin}")
        if end > data_bytes:
            raise ValueError(f"{where}: data_offsets [{begin}, {end}] run past the end of the data ({data_bytes} "
                             "bytes; truncated file?)")
        if end > begin:
            spans.append((begin, end, name))
    spans.sort()
    for (_, end, first), (begin, _, second) in zip(spans, spans[1:]):
        if begin < end:
            raise ValueError(f"{path}: tensors {first!r} and {second!r} overlap in the file (data_offsets)")
        if begin > end:
            raise ValueError(f"{path}: {begin - end} bytes between tensors {first!r} and {second!r} belong to no "
                             "tensor (the format lays tensors end to end)")
    # As the format requires (and the safetensors package checks): the tensors fill the data section exactly,
    # so that a header whose size field was altered cannot shift every tensor's bytes unnoticed.
    covered = spans[-1][1] if spans else 0
    if (spans and spans[0][0] != 0) or covered != data_bytes:
        raise ValueError(f"{path}: the tensors cover bytes [{spans[0][0] if spans else 0}, {covered}) of a data "
                         f"section of {data_bytes} bytes (truncated, padded or damaged file)")


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
            file_size = os.fstat(f.fileno()).st_size
            if file_size < 8:
                raise ValueError(f"{path}: {file_size} bytes is too short for a safetensors file (truncated?)")
            (header_size,) = struct.unpack("<Q", f.read(8))
            if header_size > min(file_size - 8, MAX_HEADER_BYTES):
                raise ValueError(f"{path}: the header claims {header_size} bytes but the file has {file_size - 8} "
                                 "after its size field (truncated, or not a safetensors file)")
            try:
                header = json.loads(f.read(header_size).decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ValueError(f"{path}: the safetensors header is not valid JSON ({exc})") from None
        if not isinstance(header, dict):
            raise ValueError(f"{path}: the safetensors header is not a JSON object")
        self.metadata = header.pop("__metadata__", None) or {}
        if not isinstance(self.metadata, dict) or not all(isinstance(v, str) for v in self.metadata.values()):
            raise ValueError(f"{path}: __metadata__ must map names to strings, got {self.metadata!r:.200}")
        self.entries = header
        self._data_start = 8 + header_size
        self._size = file_size
        _check_entries(path, header, file_size - self._data_start)
        self._file = None
        self._map = None

    def keys(self):
        return list(self.entries)

    def __contains__(self, name):
        return name in self.entries

    def shape(self, name):
        return tuple(self.entries[name]["shape"])

    def dtype(self, name):
        return DTYPES[self.entries[name]["dtype"]]  # checked when the file was opened

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
        dtype, shape = self.dtype(name), self.shape(name)
        begin = self.entries[name]["data_offsets"][0]
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
        if not 0 <= start <= stop <= shape[0]:
            raise ValueError(f"{self.path}: bad row range [{start}, {stop}) for tensor {name!r} of shape {shape}")
        if out.size:
            _read_exact(self._handle(), self._data_start + begin + start * row_bytes, out.reshape(-1).view(np.uint8))
        return out

    def mapped_rows(self, name, start, stop):
        """Rows [start, stop) along axis 0 as a read-only array over a mapping of only their bytes (see the module
        docstring): nothing is copied, and the mapping, so the pages in the process's resident memory, goes away
        with the array. A 0-d tensor or an empty range is read instead."""
        dtype, shape = self.dtype(name), self.shape(name)
        if not shape or start == stop:
            return self.read_rows(name, start, stop)
        if not 0 <= start <= stop <= shape[0]:
            raise ValueError(f"{self.path}: bad row range [{start}, {stop}) for tensor {name!r} of shape {shape}")
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        if row_bytes == 0:
            return self.read_rows(name, start, stop)
        self._check_size()
        offset = self._data_start + self.entries[name]["data_offsets"][0] + start * row_bytes
        return np.memmap(self.path, dtype=dtype, mode="r", offset=offset, shape=(stop - start,) + shape[1:])

    def _check_size(self):
        # Mapped bytes beyond the end of a file that shrank since it was checked would kill the process (SIGBUS)
        # when touched: refuse to map a file whose size changed.
        if os.path.getsize(self.path) != self._size:
            raise ValueError(f"{self.path} changed size since it was opened ({self._size} bytes then, "
                             f"{os.path.getsize(self.path)} now)")

    def mapped(self, name):
        """The tensor as a copy-on-write view of the memory-mapped file (writes go to private pages, never to
        the file), or None for a 0-d or empty tensor. Nothing is read until the view's pages are touched; the
        map lives as long as the view (or anything adopting its memory), also after close()."""
        shape, dtype = self.shape(name), self.dtype(name)
        begin, end = self.entries[name]["data_offsets"]
        if not shape or begin == end:
            return None
        if self._map is None:
            self._check_size()
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
