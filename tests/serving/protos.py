"""TensorFlow and TF Serving protobuf messages in a process that must not import TensorFlow's Python.

TF's generated modules (`tensorflow.core.protobuf.meta_graph_pb2`, and `tensorflow_serving.apis.*_pb2`, which
import them) live inside the `tensorflow` package, so importing one runs `tensorflow/__init__.py`: all of TF's
Python. Each generated module holds its .proto file as a serialized FileDescriptorProto, though, and protobuf
builds message classes from those. So this module reads the generated files as text (never executing them),
adds their descriptors to a private pool, dependencies first, and makes the classes from the pool.

Also here: TensorProto -> numpy, and the TFRecord framing of TF Serving's warm-up file.
"""
import ast
import importlib
import importlib.util
import os
import struct

import ml_dtypes
import numpy as np
from google.protobuf import descriptor_pool, message_factory

_POOL = descriptor_pool.DescriptorPool()
_ADDED = set()


def _module_file(module):
    """The file of a module, found without importing its packages (find_spec of a top-level name imports
    nothing)."""
    top, *rest = module.split(".")
    root = os.path.dirname(importlib.util.find_spec(top).submodule_search_locations[0])
    return os.path.join(root, top, *rest) + ".py"


def _add(module):
    """Add the descriptor of generated module `module` (and of its dependencies) to the pool."""
    if module in _ADDED:
        return
    _ADDED.add(module)
    if module.startswith("google.protobuf."):  # protobuf's own well-known types: importing them is fine
        _POOL.AddSerializedFile(importlib.import_module(module).DESCRIPTOR.serialized_pb)
        return
    with open(_module_file(module), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    serialized = None
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and any(a.name.endswith("_pb2") for a in node.names):
            for alias in node.names:
                _add(f"{node.module}.{alias.name}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "AddSerializedFile"):
            serialized = node.args[0].value
    _POOL.AddSerializedFile(serialized)


def message_class(module, full_name):
    """The message class `full_name` (e.g. "tensorflow.MetaGraphDef") of generated module `module` (e.g.
    "tensorflow.core.protobuf.meta_graph_pb2")."""
    _add(module)
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(full_name))


def meta_graph_def_class():
    return message_class("tensorflow.core.protobuf.meta_graph_pb2", "tensorflow.MetaGraphDef")


def prediction_log_class():
    return message_class("tensorflow_serving.apis.prediction_log_pb2", "tensorflow.serving.PredictionLog")


# ---------------------------------------------------------------------------------------------------------------
# Tensors

# tensorflow/core/framework/types.proto: DataType enum values of the numeric types the exports use, and DT_STRING
NUMERIC_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 6: np.int8, 9: np.int64,
                  10: np.bool_, 14: ml_dtypes.bfloat16, 19: np.float16}
DT_STRING = 7


def tensor_proto_to_numpy(proto):
    """A TensorProto's value as a numpy array (bytes objects for strings)."""
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    dtype = object if proto.dtype == DT_STRING else NUMERIC_DTYPES[proto.dtype]
    if dtype is object:
        values = np.empty(len(proto.string_val), object)
        values[:] = list(proto.string_val)
    elif proto.tensor_content:
        values = np.frombuffer(proto.tensor_content, dtype)
    else:
        field = {np.float32: "float_val", np.float64: "double_val", np.int32: "int_val", np.uint8: "int_val",
                 np.int8: "int_val", np.int64: "int64_val", np.bool_: "bool_val"}[dtype]
        values = np.array(getattr(proto, field), dtype)
    count = int(np.prod(shape, dtype=np.int64))
    if values.size == 1 and count != 1:  # a single value fills the tensor
        values = np.full(count, values[0], dtype)
    return values.reshape(shape)


# ---------------------------------------------------------------------------------------------------------------
# TFRecord framing: uint64 length, masked CRC-32C of the length, data, masked CRC-32C of the data


def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data):
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_tfrecords(path):
    """The records of a TFRecord file (uncompressed), each CRC checked."""
    records = []
    with open(path, "rb") as f:
        while header := f.read(12):
            if len(header) != 12:
                raise ValueError(f"{path}: truncated record header")
            length_bytes = header[:8]
            (length,), (length_crc,) = struct.unpack("<Q", length_bytes), struct.unpack("<I", header[8:])
            if masked_crc32c(length_bytes) != length_crc:
                raise ValueError(f"{path}: length CRC mismatch in record {len(records)}")
            data, footer = f.read(length), f.read(4)
            if len(data) != length or len(footer) != 4:
                raise ValueError(f"{path}: truncated record {len(records)}")
            if masked_crc32c(data) != struct.unpack("<I", footer)[0]:
                raise ValueError(f"{path}: data CRC mismatch in record {len(records)}")
            records.append(data)
    return records
