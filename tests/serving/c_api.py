"""TensorFlow's C API (ctypes over the tensorflow wheel's libtensorflow_cc.so.2), just enough to serve a
SavedModel the way TF Serving does: the C++ SavedModel loader (`TF_LoadSessionFromSavedModel`: a Session whose
variables are restored from the checkpoint by name) and `TF_SessionRun` on the signature's tensors.

Nothing here imports TensorFlow's Python (nor tensorflow_text's): the library is found with
importlib.util.find_spec, which locates a package without importing it. Op libraries (TF Text's kernels, which
TF Serving links into its binary) are added with `TF_LoadLibrary`.
"""
import ctypes
import glob
import importlib.util
import os

import numpy as np

from tests.serving import protos

_NUMPY_TYPES = protos.NUMERIC_DTYPES  # TF_DataType values are the DataType enum's
_TF_TYPES = {np.dtype(v): k for k, v in _NUMPY_TYPES.items()}
TF_STRING = 7
_TSTRING_SIZE = 24  # sizeof(TF_TString) (tensorflow/core/platform/ctstring_internal.h), on 64-bit hosts


class _Output(ctypes.Structure):  # TF_Output
    _fields_ = [("oper", ctypes.c_void_p), ("index", ctypes.c_int)]


class _Buffer(ctypes.Structure):  # TF_Buffer
    _fields_ = [("data", ctypes.c_void_p), ("length", ctypes.c_size_t), ("data_deallocator", ctypes.c_void_p)]


def package_dir(name):
    return importlib.util.find_spec(name).submodule_search_locations[0]


def _load_library():
    lib = ctypes.CDLL(os.path.join(package_dir("tensorflow"), "libtensorflow_cc.so.2"))
    signatures = {
        "TF_NewStatus": ([], ctypes.c_void_p), "TF_DeleteStatus": ([ctypes.c_void_p], None),
        "TF_GetCode": ([ctypes.c_void_p], ctypes.c_int), "TF_Message": ([ctypes.c_void_p], ctypes.c_char_p),
        "TF_NewGraph": ([], ctypes.c_void_p), "TF_DeleteGraph": ([ctypes.c_void_p], None),
        "TF_NewSessionOptions": ([], ctypes.c_void_p), "TF_DeleteSessionOptions": ([ctypes.c_void_p], None),
        "TF_NewBuffer": ([], ctypes.POINTER(_Buffer)), "TF_DeleteBuffer": ([ctypes.POINTER(_Buffer)], None),
        "TF_LoadSessionFromSavedModel": ([ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p,
                                          ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_void_p,
                                          ctypes.POINTER(_Buffer), ctypes.c_void_p], ctypes.c_void_p),
        "TF_GraphOperationByName": ([ctypes.c_void_p, ctypes.c_char_p], ctypes.c_void_p),
        "TF_SessionRun": ([ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(_Output),
                           ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.POINTER(_Output),
                           ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
                           ctypes.c_void_p, ctypes.c_void_p], None),
        "TF_CloseSession": ([ctypes.c_void_p, ctypes.c_void_p], None),
        "TF_DeleteSession": ([ctypes.c_void_p, ctypes.c_void_p], None),
        "TF_AllocateTensor": ([ctypes.c_int, ctypes.POINTER(ctypes.c_int64), ctypes.c_int, ctypes.c_size_t],
                              ctypes.c_void_p),
        "TF_DeleteTensor": ([ctypes.c_void_p], None), "TF_TensorType": ([ctypes.c_void_p], ctypes.c_int),
        "TF_NumDims": ([ctypes.c_void_p], ctypes.c_int), "TF_Dim": ([ctypes.c_void_p, ctypes.c_int], ctypes.c_int64),
        "TF_TensorData": ([ctypes.c_void_p], ctypes.c_void_p),
        "TF_TensorByteSize": ([ctypes.c_void_p], ctypes.c_size_t),
        "TF_StringInit": ([ctypes.c_void_p], None),
        "TF_StringCopy": ([ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t], None),
        "TF_StringGetDataPointer": ([ctypes.c_void_p], ctypes.c_void_p),
        "TF_StringGetSize": ([ctypes.c_void_p], ctypes.c_size_t),
        "TF_StringDealloc": ([ctypes.c_void_p], None),
        "TF_LoadLibrary": ([ctypes.c_char_p, ctypes.c_void_p], ctypes.c_void_p),
    }
    for name, (argtypes, restype) in signatures.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = argtypes, restype
    return lib


_LIB = _load_library()


class _Status:
    def __enter__(self):
        self.status = _LIB.TF_NewStatus()
        return self.status

    def __exit__(self, *exc):
        _LIB.TF_DeleteStatus(self.status)


def _check(status, what):
    if _LIB.TF_GetCode(status) != 0:
        raise RuntimeError(f"{what}: {_LIB.TF_Message(status).decode(errors='replace')}")


def load_text_ops():
    """Register TF Text's ops and kernels from the op libraries of the tensorflow_text wheel (what TF Serving
    has linked in), without importing tensorflow_text. Returns the library paths."""
    paths = sorted(glob.glob(os.path.join(package_dir("tensorflow_text"), "python", "ops", "_*.so")))
    for path in paths:
        with _Status() as status:
            _LIB.TF_LoadLibrary(path.encode(), status)
            _check(status, f"TF_LoadLibrary({path})")
    return paths


def _to_tensor(value):
    """A new TF_Tensor holding numpy array `value` (bytes objects -> TF_STRING)."""
    value = np.ascontiguousarray(value)
    dims = (ctypes.c_int64 * value.ndim)(*value.shape)
    if value.dtype == object or value.dtype.kind == "S":
        tensor = _LIB.TF_AllocateTensor(TF_STRING, dims, value.ndim, value.size * _TSTRING_SIZE)
        data = _LIB.TF_TensorData(tensor)
        for i, item in enumerate(value.reshape(-1)):
            _LIB.TF_StringInit(data + i * _TSTRING_SIZE)
            _LIB.TF_StringCopy(data + i * _TSTRING_SIZE, bytes(item), len(item))
        return tensor
    tensor = _LIB.TF_AllocateTensor(_TF_TYPES[value.dtype], dims, value.ndim, value.nbytes)
    ctypes.memmove(_LIB.TF_TensorData(tensor), value.ctypes.data, value.nbytes)
    return tensor


def _delete_tensor(tensor):
    # The C API frees a tensor's buffer, not the heap memory of long TF_TStrings in it.
    if _LIB.TF_TensorType(tensor) == TF_STRING:
        data = _LIB.TF_TensorData(tensor)
        for i in range(_LIB.TF_TensorByteSize(tensor) // _TSTRING_SIZE):
            _LIB.TF_StringDealloc(data + i * _TSTRING_SIZE)
    _LIB.TF_DeleteTensor(tensor)


def _to_numpy(tensor):
    shape = tuple(_LIB.TF_Dim(tensor, i) for i in range(_LIB.TF_NumDims(tensor)))
    data = _LIB.TF_TensorData(tensor)
    if _LIB.TF_TensorType(tensor) == TF_STRING:
        count = int(np.prod(shape, dtype=np.int64))
        items = np.empty(count, object)
        for i in range(count):
            address = data + i * _TSTRING_SIZE
            items[i] = ctypes.string_at(_LIB.TF_StringGetDataPointer(address), _LIB.TF_StringGetSize(address))
        return items.reshape(shape)
    dtype = _NUMPY_TYPES[_LIB.TF_TensorType(tensor)]
    return np.frombuffer(ctypes.string_at(data, _LIB.TF_TensorByteSize(tensor)), dtype).reshape(shape).copy()


class SavedModelSession:
    """A SavedModel loaded by the C++ loader (tags {"serve"}, as TF Serving loads it) and its signatures."""

    def __init__(self, path, tags=("serve",)):
        self.graph = _LIB.TF_NewGraph()
        options = _LIB.TF_NewSessionOptions()
        meta_graph = _LIB.TF_NewBuffer()
        tag_array = (ctypes.c_char_p * len(tags))(*[t.encode() for t in tags])
        try:
            with _Status() as status:
                self.session = _LIB.TF_LoadSessionFromSavedModel(options, None, path.encode(), tag_array, len(tags),
                                                                 self.graph, meta_graph, status)
                _check(status, f"TF_LoadSessionFromSavedModel({path})")
            self.meta_graph_def = protos.meta_graph_def_class().FromString(
                ctypes.string_at(meta_graph.contents.data, meta_graph.contents.length))
        finally:
            _LIB.TF_DeleteBuffer(meta_graph)
            _LIB.TF_DeleteSessionOptions(options)
        # `__saved_model_init_op` is the loader's own entry, not a signature that clients can call
        self.signatures = {name: sig for name, sig in self.meta_graph_def.signature_def.items()
                           if not name.startswith("__")}

    def describe(self):
        """{signature: {"inputs": {key: dtype}, "outputs": {key: dtype}}}, dtypes as numpy names."""
        def dtype(info):
            return "string" if info.dtype == TF_STRING else np.dtype(_NUMPY_TYPES[info.dtype]).name

        return {name: {"inputs": {k: dtype(v) for k, v in sig.inputs.items()},
                       "outputs": {k: dtype(v) for k, v in sig.outputs.items()}}
                for name, sig in self.signatures.items()}

    def _output(self, tensor_name):
        op_name, index = tensor_name.rsplit(":", 1)
        operation = _LIB.TF_GraphOperationByName(self.graph, op_name.encode())
        if not operation:
            raise KeyError(f"no operation {op_name} in the loaded graph")
        return _Output(operation, int(index))

    def run(self, signature, inputs):
        """Run `signature` on {input key: numpy array} (exactly its inputs, with its dtypes); returns
        {output key: numpy array}."""
        sig = self.signatures[signature]
        if set(inputs) != set(sig.inputs):
            raise ValueError(f"{signature} takes {sorted(sig.inputs)}, got {sorted(inputs)}")
        feeds, values = [], []
        try:
            for key, info in sig.inputs.items():
                value = np.asarray(inputs[key])
                expected = "string" if info.dtype == TF_STRING else np.dtype(_NUMPY_TYPES[info.dtype])
                got = "string" if value.dtype == object or value.dtype.kind == "S" else value.dtype
                if got != expected:
                    raise TypeError(f"{signature}/{key} takes {expected}, got {got}")
                feeds.append(self._output(info.name))
                values.append(_to_tensor(value))
            keys = sorted(sig.outputs)
            fetches = [self._output(sig.outputs[k].name) for k in keys]
            results = (ctypes.c_void_p * len(keys))()
            with _Status() as status:
                _LIB.TF_SessionRun(self.session, None, (_Output * len(feeds))(*feeds),
                                   (ctypes.c_void_p * len(values))(*values), len(values),
                                   (_Output * len(fetches))(*fetches), results, len(fetches), None, 0, None, status)
                _check(status, f"TF_SessionRun({signature})")
            outputs = {}
            for key, tensor in zip(keys, results):
                outputs[key] = _to_numpy(tensor)
                _LIB.TF_DeleteTensor(tensor)
            return outputs
        finally:
            for tensor in values:
                _delete_tensor(tensor)

    def close(self):
        with _Status() as status:
            _LIB.TF_CloseSession(self.session, status)
            _LIB.TF_DeleteSession(self.session, status)
        _LIB.TF_DeleteGraph(self.graph)
