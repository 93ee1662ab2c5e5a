"""Read and write safetensors files with numpy memory maps.

Why our own: the `safetensors` package's numpy API has no bfloat16, and the big checkpoints are bf16. The
format is simple (an 8-byte little-endian header size, a JSON header, then raw little-endian tensors), and a
memory map lets us stream a shard tensor by tensor without ever holding a second copy of the model.
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


class SafetensorsFile:
    """Lazy access to the tensors of one .safetensors file."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            (header_size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_size))
        self.metadata = header.pop("__metadata__", None) or {}
        self.entries = header
        self._data_start = 8 + header_size
        self._map = None

    def keys(self):
        return list(self.entries)

    def __contains__(self, name):
        return name in self.entries

    def shape(self, name):
        return tuple(self.entries[name]["shape"])

    def get(self, name):
        """The tensor as a read-only numpy array backed by the file (no copy)."""
        entry = self.entries[name]
        code = entry["dtype"]
        if code not in DTYPES:
            raise ValueError(f"{self.path}: tensor {name!r} has unsupported dtype {code}")
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        begin, end = entry["data_offsets"]
        raw = self._map[self._data_start + begin:self._data_start + end]
        return raw.view(DTYPES[code]).reshape(entry["shape"])

    def close(self):
        self._map = None


def write_safetensors(path, tensors, metadata=None):
    """Write {name: numpy array} to `path` (arrays of any DTYPES dtype, bfloat16 included)."""
    header, offset = {}, 0
    arrays = {}
    for name, array in tensors.items():
        array = np.ascontiguousarray(array)
        if array.dtype not in CODES:
            raise ValueError(f"Cannot write tensor {name!r} of dtype {array.dtype} to safetensors")
        arrays[name] = array
        header[name] = {"dtype": CODES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * ((8 - len(encoded) % 8) % 8)  # keep tensor data 8-byte aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for array in arrays.values():
            f.write(array.tobytes(order="C"))
    os.replace(tmp, path)
