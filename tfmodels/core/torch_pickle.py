"""Read PyTorch's `torch.save` zip files (pytorch_model.bin) without torch and without running pickle code.

A torch zip file holds `<archive>/data.pkl` (a pickle of the state dict) and one raw entry per storage
(`<archive>/data/<key>`). Unpickling a file from the Hub with the standard unpickler can run any code the file
names, so this reader subclasses `pickle.Unpickler` and resolves only the globals a plain state dict needs:
`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2` / `_rebuild_parameter` and the typed storage
classes (`torch.FloatStorage`, ...). Each resolves to a function of this module that builds numpy arrays; any
other global (`os.system`, `builtins.eval`, a torch function that is not a tensor rebuild, ...) raises
`UnsafePickleError` before anything is called. Storages are read from the zip with numpy, lazily, when a tensor
that views them is requested.

Not supported (clear error): torch's legacy pre-1.6 format (a tar / pickle stream rather than a zip), and
tensors whose storage is not one of the dtypes below.
"""
import collections
import pickle
import zipfile

import ml_dtypes
import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names something a plain state dict does not hold; nothing it names was executed."""


# torch storage class name -> numpy dtype of its elements
STORAGE_DTYPES = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}


class _StorageType:
    """What `torch.FloatStorage` etc. unpickle to: only a dtype, never callable."""

    def __init__(self, name):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]


class _Storage:
    """A storage of the zip file, read on first use."""

    def __init__(self, archive, key, dtype, numel):
        self.archive, self.key, self.dtype, self.numel = archive, key, dtype, numel
        self._array = None

    def array(self):
        if self._array is None:
            # The entry's size was checked against numel when the file was opened (TorchZipFile._check_tensor).
            data = self.archive.read_storage(self.key)
            self._array = np.frombuffer(data, dtype=self.dtype.newbyteorder(self.archive.byteorder))
        return self._array


class _TensorRef:
    """A tensor of the state dict: a strided view into a storage, materialised on request."""

    def __init__(self, storage, offset, shape, strides):
        self.storage, self.offset, self.shape, self.strides = storage, offset, shape, strides

    @property
    def dtype(self):
        return self.storage.dtype

    def view(self):
        """A read-only strided view of the storage (native byte order views need no copy)."""
        source = self.storage.array()
        itemsize = source.dtype.itemsize
        # np.ndarray over a buffer checks that offset, shape and strides stay inside the buffer.
        return np.ndarray(self.shape, dtype=source.dtype, buffer=source, offset=self.offset * itemsize,
                          strides=tuple(s * itemsize for s in self.strides))


def _check_ints(what, values):
    if not isinstance(values, tuple) or not all(isinstance(v, int) and v >= 0 for v in values):
        raise UnsafePickleError(f"tensor {what} must be a tuple of non-negative ints, got {values!r}")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *_autograd_state):
    # The trailing arguments (requires_grad, backward hooks, metadata) are autograd state: weights need none.
    if not isinstance(storage, _Storage):
        raise UnsafePickleError("a tensor rebuild got something other than a storage of this file")
    if not isinstance(storage_offset, int) or storage_offset < 0:
        raise UnsafePickleError(f"bad storage offset {storage_offset!r}")
    _check_ints("size", size)
    _check_ints("stride", stride)
    if len(size) != len(stride):
        raise UnsafePickleError(f"tensor size {size} and stride {stride} differ in rank")
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *_autograd_state):
    if not isinstance(data, _TensorRef):
        raise UnsafePickleError("a parameter rebuild got something other than a tensor")
    return data


# (module, name) -> what it unpickles to. Everything else is refused.
_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}
_ALLOWED.update({("torch", name): _StorageType(name) for name in STORAGE_DTYPES})


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, file, archive):
        super().__init__(file)
        self.archive = archive
        self.storages = {}

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.archive.path} refers to {module}.{name}, which a plain PyTorch state dict does not hold. "
                "It was not loaded (unpickling it could run code). Convert the checkpoint to safetensors in an "
                "environment you trust if you need it.") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and isinstance(pid[4], int)):
            raise UnsafePickleError(f"{self.archive.path}: unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if key not in self.storages:
            self.storages[key] = _Storage(self.archive, key, storage_type.dtype, numel)
        return self.storages[key]


class TorchZipFile:
    """Name -> tensor access to a torch zip file holding a state dict (arrays read lazily per storage)."""

    def __init__(self, path):
        self.path = path
        if not zipfile.is_zipfile(path):
            with open(path, "rb") as f:
                start = f.read(2)
            if start[:1] == b"\x80" or start == b"PK":  # a pickle stream, or a zip without its end (truncated)
                raise ValueError(f"{path} is not a complete zip file: either it was written by torch.save before "
                                 "PyTorch 1.6 (legacy format, not supported: load it once with torch and save it "
                                 "again, safetensors preferred) or it is truncated")
            raise ValueError(f"{path} is neither a torch zip checkpoint nor a legacy torch file (corrupt?)")
        try:
            self._zip = zipfile.ZipFile(path)
            self._open_state_dict()
        except UnsafePickleError as exc:
            if path in str(exc):
                raise
            raise UnsafePickleError(f"{path}: {exc}") from None
        except Exception as exc:  # a damaged archive or pickle: the reader's many error types, one message
            if isinstance(exc, ValueError) and path in str(exc):
                raise
            raise ValueError(f"{path} is damaged: {type(exc).__name__}: {exc}") from exc

    def _open_state_dict(self):
        path = self.path
        names = self._zip.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise ValueError(f"{path}: expected one <archive>/data.pkl entry in the torch zip file")
        self._prefix = pickles[0][:-len("data.pkl")]
        byteorder = self._prefix + "byteorder"
        self.byteorder = "<"
        if byteorder in names and self._zip.read(byteorder).decode().strip() == "big":
            self.byteorder = ">"
        with self._zip.open(pickles[0]) as f:
            state = _StateDictUnpickler(f, self).load()
        if not isinstance(state, dict):
            raise UnsafePickleError(f"{path} does not hold a state dict (got {type(state).__name__})")
        self._tensors = {}
        for key, value in state.items():
            if not isinstance(key, str) or not isinstance(value, _TensorRef):
                raise UnsafePickleError(f"{path}: state dict entry {key!r:.100} is not a name -> tensor pair")
            self._check_tensor(key, value)
            self._tensors[key] = value

    def _check_tensor(self, name, ref):
        """Check, when the file is opened, that tensor `name` lies inside a storage entry of the right size."""
        storage = ref.storage
        try:
            entry_bytes = self._zip.getinfo(f"{self._prefix}data/{storage.key}").file_size
        except KeyError:
            raise ValueError(f"{self.path}: tensor {name!r} refers to storage {storage.key!r}, which the zip file "
                             "does not hold") from None
        if entry_bytes != storage.numel * storage.dtype.itemsize:
            raise ValueError(f"{self.path}: tensor {name!r}: storage {storage.key} holds {entry_bytes} bytes, the "
                             f"pickle says {storage.numel} elements of {storage.dtype}")
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.strides))
        if all(ref.shape) and last >= storage.numel:
            raise ValueError(f"{self.path}: tensor {name!r} of size {ref.shape}, stride {ref.strides} at offset "
                             f"{ref.offset} runs past the end of its storage ({storage.numel} elements)")

    def read_storage(self, key):
        return self._zip.read(f"{self._prefix}data/{key}")

    def keys(self):
        return list(self._tensors)

    def shape(self, name):
        return tuple(self._tensors[name].shape)

    def dtype(self, name):
        return self._tensors[name].dtype

    def get(self, name):
        return np.array(self._tensors[name].view(), dtype=self.dtype(name))

    def read_rows(self, name, start, stop, out=None):
        rows = self._tensors[name].view()[start:stop]
        if out is None:
            return np.array(rows, dtype=self.dtype(name))
        out[...] = rows
        return out

    def mapped(self, name):
        return None

    def close(self):
        self._tensors = {}
        self._zip.close()

