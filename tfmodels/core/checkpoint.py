"""Hugging Face checkpoint import and export, shared by every family.

How names line up: `named_variables(model)` walks the layer tree through attribute names, as PyTorch's
`named_parameters` walks modules, and names each Keras variable the way PyTorch would name the matching
parameter (a Dense `kernel` becomes `weight`, transposed; an attribute `output_` names the module `output`,
since Keras reserves `output`). Sub-layers are named after the reference's
modules, so most names already agree; what differs is declared per family in a `CheckpointMap` (renames,
keys to ignore, special layouts). One loader applies it: it streams tensors from safetensors, HF TF h5
(core.tf_h5, names converted to PyTorch's) or PyTorch zip pickles (core.torch_pickle, read without torch and
without running pickle code), sharded or not, into the variables, and reports missing, unexpected and
mis-shaped weights by name.

Memory: loading never holds more than the model plus one chunk. Tensors that need a new layout or dtype (a
Dense kernel is transposed) are converted chunk by chunk (at most `LOAD_CHUNK_BYTES` at a time, rows of the
checkpoint tensor, each mapped from a safetensors file for just that chunk, or read) into a buffer the variable
adopts; tensors that
need no change are memory-mapped and adopted as they lie in the file (load_tensor), as PyTorch's loaders do.
The variables themselves were created without initialising their memory (initializers.skip_init).
Writing (`hf_state_dict(..., lazy=True)` + `write_hf_weights`) streams variable by variable the same way.
"""
import dataclasses
import json
import os
import re
import zipfile

import keras
import ml_dtypes
import numpy as np
import tensorflow as tf

from tfmodels.core import initializers, tf_h5
from tfmodels.core.host_memory import aligned_empty, is_shareable, tensor_from_numpy
from tfmodels.core.logging import logger
from tfmodels.core.safetensors_io import LazyTensor, SafetensorsFile, write_safetensors
from tfmodels.core.torch_pickle import TorchZipFile
from tfmodels.ops import checkpoint_copy

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
TF_WEIGHTS_NAME = "tf_model.h5"
TF_WEIGHTS_INDEX_NAME = "tf_model.h5.index.json"
PT_WEIGHTS_NAME = "pytorch_model.bin"
PT_WEIGHTS_INDEX_NAME = "pytorch_model.bin.index.json"

# Weight formats of HF checkpoints in order of preference: format -> (single file, index of a sharded one).
# safetensors can be memory-mapped; h5 and the torch zip are read tensor by tensor.
WEIGHT_FORMATS = {
    "safetensors": (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME),
    "h5": (TF_WEIGHTS_NAME, TF_WEIGHTS_INDEX_NAME),
    "bin": (PT_WEIGHTS_NAME, PT_WEIGHTS_INDEX_NAME),
}


def choose_weights(file_names, weights_format=None):
    """(format, file name) of the weights to load among `file_names`: the index of a sharded checkpoint or
    the single file, safetensors first, then h5, then bin; `weights_format` restricts the choice to one
    format. None when there is none."""
    if weights_format is not None and weights_format not in WEIGHT_FORMATS:
        raise ValueError(f"weights_format must be one of {', '.join(WEIGHT_FORMATS)}, got {weights_format!r}")
    names = set(file_names)
    for fmt in [weights_format] if weights_format else WEIGHT_FORMATS:
        single, index = WEIGHT_FORMATS[fmt]
        for file_name in (index, single):
            if file_name in names:
                return fmt, file_name
    return None


def read_index(path):
    """{tensor name: shard file} of a sharded checkpoint's index (names as the shards hold them). A damaged index,
    or one naming a shard outside its directory, is refused with the index's path."""
    try:
        with open(path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a checkpoint index (a JSON object with a weight_map): "
                         f"{type(exc).__name__}: {exc}") from None
    if not isinstance(weight_map, dict):
        raise ValueError(f"{path}: weight_map must map tensor names to shard files")
    for name, file_name in weight_map.items():
        if not isinstance(file_name, str) or os.path.basename(file_name) != file_name or file_name in ("", ".", ".."):
            raise ValueError(f"{path}: tensor {name!r} is mapped to {file_name!r}, which is not a file name in the "
                             "index's directory")
    if os.path.basename(path) == TF_WEIGHTS_INDEX_NAME:  # full TF variable names -> PyTorch names
        return {tf_h5.torch_name(name.split("/", 1)[-1])[0]: file_name for name, file_name in weight_map.items()}
    return weight_map


# How each Keras layer type names and lays out its variables in a PyTorch state dict:
# variable name -> (torch name, axis permutation that turns the torch array into ours, initializer attribute).
LEAF_RULES = [
    (keras.layers.Dense, {"kernel": ("weight", (1, 0), "kernel_initializer"),
                          "bias": ("bias", None, "bias_initializer")}),
    (keras.layers.LayerNormalization, {"gamma": ("weight", None, "gamma_initializer"),
                                       "beta": ("bias", None, "beta_initializer")}),
    (keras.layers.Embedding, {"embeddings": ("weight", None, "embeddings_initializer")}),
    (keras.layers.Conv2DTranspose, {"kernel": ("weight", (2, 3, 1, 0), "kernel_initializer"),
                                    "bias": ("bias", None, "bias_initializer")}),
    (keras.layers.DepthwiseConv2D, {"kernel": ("weight", (2, 3, 0, 1), "depthwise_initializer"),
                                    "bias": ("bias", None, "bias_initializer")}),
    (keras.layers.Conv2D, {"kernel": ("weight", (2, 3, 1, 0), "kernel_initializer"),
                           "bias": ("bias", None, "bias_initializer")}),
    (keras.layers.Conv1D, {"kernel": ("weight", (2, 1, 0), "kernel_initializer"),
                           "bias": ("bias", None, "bias_initializer")}),
    (keras.layers.BatchNormalization, {"gamma": ("weight", None, "gamma_initializer"),
                                       "beta": ("bias", None, "beta_initializer"),
                                       "moving_mean": ("running_mean", None, "moving_mean_initializer"),
                                       "moving_variance": ("running_var", None, "moving_variance_initializer")}),
]


@dataclasses.dataclass
class NamedVariable:
    name: str                 # PyTorch-style name, e.g. "roberta.encoder.layer.0.attention.self.query.weight"
    variable: object          # the keras.Variable
    layer: object             # the layer that owns it
    permutation: tuple = None  # torch array -> ours
    initializer: object = None


def _leaf_rule(layer):
    for layer_type, rule in LEAF_RULES:
        if isinstance(layer, layer_type):
            return rule
    return {}


def _own_variables(layer):
    return list(layer._trainable_variables) + list(layer._non_trainable_variables)


def named_variables(root):
    """All variables under `root` with PyTorch-style names, in a deterministic order.

    A layer reachable twice (a tied embedding used by an LM head) is named at its first occurrence.
    """
    seen, result = set(), []

    def visit(layer, prefix):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        rule = _leaf_rule(layer)
        custom = getattr(layer, "_tfm_initializers", {})
        for variable in _own_variables(layer):
            short = variable.name.split("/")[-1]
            torch_name, permutation, init_attr = rule.get(short, (short, None, None))
            init = getattr(layer, init_attr, None) if init_attr else custom.get(short)
            result.append(NamedVariable(prefix + torch_name, variable, layer, permutation, init))
        for attr, value in vars(layer).items():
            if attr.startswith("_"):
                continue
            # Keras reserves some attribute names (output, input, weights, ...): `output_` names `output`.
            attr = attr[:-1] if attr.endswith("_") else attr
            if isinstance(value, keras.layers.Layer):
                visit(value, f"{prefix}{attr}.")
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, keras.layers.Layer):
                        visit(item, f"{prefix}{attr}.{i}.")
            elif isinstance(value, dict):
                for key, item in value.items():
                    if isinstance(item, keras.layers.Layer):
                        visit(item, f"{prefix}{attr}.{key}.")

    visit(root, "")
    return result


@dataclasses.dataclass
class CheckpointMap:
    """A family's differences from the default naming, declared once in models/<family>/checkpoint.py.

    renames: (regex on our name, replacement or list of alternative replacements); applied in order, the
        first alternative present in the checkpoint wins.
    ignore: regexes of checkpoint keys that are expected to be unused (buffers, tied copies).
    transforms: regex on our name -> (to_ours, to_torch): functions on numpy arrays for layouts that are not
        a plain permutation (fused projections, reshaped biases).
    """
    renames: list = dataclasses.field(default_factory=list)
    ignore: list = dataclasses.field(default_factory=list)
    transforms: dict = dataclasses.field(default_factory=dict)

    def candidates(self, name):
        names = [name]
        for pattern, replacement in self.renames:
            alternatives = replacement if isinstance(replacement, (list, tuple)) else [replacement]
            updated = []
            for current in names:
                if re.search(pattern, current):
                    updated.extend(re.sub(pattern, alt, current) for alt in alternatives)
                else:
                    updated.append(current)
            names = updated
        return names

    def transform_for(self, name):
        for pattern, funcs in self.transforms.items():
            if re.search(pattern, name):
                return funcs
        return None

    def is_ignored(self, key):
        return any(re.search(pattern, key) for pattern in self.ignore)


# ------------------------------------------------------------------------------------------------------------
# Reading checkpoint directories


class CheckpointReader:
    """Lazy name -> numpy array access over the weight files of an HF checkpoint directory: safetensors,
    HF TF h5 or PyTorch zip pickles, single or sharded (see `choose_weights` for which one is read)."""

    def __init__(self, directory, weights_format=None):
        self.directory = directory
        self._files = {}        # file name -> SafetensorsFile, TFH5File or TorchZipFile
        self._where = {}        # tensor name -> file name
        chosen = choose_weights(os.listdir(directory), weights_format)
        if chosen is None:
            wanted = [name for fmt in ([weights_format] if weights_format else WEIGHT_FORMATS)
                      for name in WEIGHT_FORMATS[fmt]]
            raise FileNotFoundError(f"No weights in {directory}: expected {', '.join(wanted)} or our own "
                                    "model.weights.h5")
        self.format, file_name = chosen
        if file_name.endswith(".index.json"):
            self._where = read_index(os.path.join(directory, file_name))
            self.kind = f"{self.format} (sharded)"
            self._check_shards(file_name)
        else:
            self._where = {k: file_name for k in self._open(file_name).keys()}
            self.kind = self.format

    def _check_shards(self, index_name):
        """Open every shard once (headers only) before any weight is assigned: a missing or damaged shard, or
        one without the tensors the index puts there, fails the load before it starts, naming the file."""
        missing = sorted({f for f in self._where.values() if not os.path.isfile(os.path.join(self.directory, f))})
        if missing:
            raise FileNotFoundError(f"{os.path.join(self.directory, index_name)} names shard(s) that are not in "
                                    f"{self.directory}: {', '.join(missing)}")
        for file_name, names in self.files():
            held = set(self._open(file_name).keys())
            absent = [name for name in names if name not in held]
            if absent:
                raise ValueError(f"{os.path.join(self.directory, file_name)} does not hold tensor(s) that "
                                 f"{index_name} puts there: {', '.join(absent[:10])}")
            self.release(file_name)

    def _open(self, file_name):
        if file_name not in self._files:
            path = os.path.join(self.directory, file_name)
            opener = {"safetensors": SafetensorsFile, "h5": tf_h5.TFH5File, "bin": TorchZipFile}[self.format]
            self._files[file_name] = opener(path)
        return self._files[file_name]

    def keys(self):
        return list(self._where)

    def __contains__(self, name):
        return name in self._where

    def files(self):
        """Checkpoint files in order, each with the names it holds: load shard by shard."""
        by_file = {}
        for name, file_name in self._where.items():
            by_file.setdefault(file_name, []).append(name)
        return sorted(by_file.items())

    def get(self, name):
        """The whole tensor as a numpy array (a fresh copy)."""
        return self._open(self._where[name]).get(name)

    def spec(self, name):
        """(shape, numpy dtype) of a tensor, without reading it."""
        f = self._open(self._where[name])
        return tuple(f.shape(name)), np.dtype(f.dtype(name))

    def read_rows(self, name, start, stop, out=None):
        """Rows [start, stop) along axis 0 of a tensor, read without touching the rest (into `out` if given)."""
        return self._open(self._where[name]).read_rows(name, start, stop, out=out)

    def rows(self, name, start, stop, mmap=True):
        """Rows [start, stop) along axis 0 to be read once (counted, permuted, cast): with `mmap`, from a
        safetensors file, a view of a mapping of just those rows that goes away with it (no copy, see
        SafetensorsFile.mapped_rows); otherwise a fresh array read from the file."""
        f = self._open(self._where[name])
        if mmap and isinstance(f, SafetensorsFile):
            return f.mapped_rows(name, start, stop)
        return f.read_rows(name, start, stop)

    def mapped(self, name):
        """A copy-on-write memory-mapped view of a tensor (safetensors only, see SafetensorsFile.mapped), or
        None."""
        return self._open(self._where[name]).mapped(name)

    def release(self, file_name):
        f = self._files.pop(file_name, None)
        if f is not None:
            f.close()


# ------------------------------------------------------------------------------------------------------------
# Loading


@dataclasses.dataclass
class LoadingInfo:
    mapped: list
    missing: list
    unexpected: list
    mismatched: list   # (name, checkpoint shape, model shape)
    source: str = ""

    def report(self):
        lines = [f"mapped {len(self.mapped)} weights from {self.source}"]
        if self.missing:
            lines.append(f"missing from the checkpoint (newly initialised): {', '.join(self.missing)}")
        if self.unexpected:
            lines.append(f"unused checkpoint weights: {', '.join(self.unexpected)}")
        if self.mismatched:
            lines.append("shape mismatches: " + ", ".join(f"{n} checkpoint {c} vs model {m}"
                                                           for n, c, m in self.mismatched))
        return "\n".join(lines)


def _resolve(name, checkpoint_map, available, prefix):
    """The checkpoint key holding our variable `name`, trying the base-model prefix both ways."""
    for candidate in checkpoint_map.candidates(name):
        options = [candidate]
        if prefix and candidate.startswith(prefix + "."):
            options.append(candidate[len(prefix) + 1:])
        elif prefix:
            options.append(f"{prefix}.{candidate}")
        for option in options:
            if option in available:
                return option
    return None


LOAD_CHUNK_BYTES = 64 << 20  # at most this much of a tensor is in flight (read, permuted, cast) at a time


def backing_variable(variable):
    """The TensorFlow variable that stores a Keras variable's value: a tf.Variable, or a ShardedVariable when
    the model was built under a ParameterServerStrategy with a variable partitioner."""
    if isinstance(variable, keras.Variable):
        return variable.value
    return variable


def variable_components(variables):
    """The tf.Variables that hold `variables` (Keras or TF): a partitioned variable gives its shards, in order."""
    components = []
    for variable in tf.nest.flatten(variables):
        backing = backing_variable(variable)
        if isinstance(backing, tf.Variable):
            components.append(backing)
        elif hasattr(backing, "variables"):  # ShardedVariable
            components.extend(backing.variables)
        else:
            raise TypeError(f"Not a variable: {variable!r}")
    return components


def assign_array(variable, array):
    """Give a (Keras or TF) variable the value of a numpy array, without a copy on CPU when the array is
    aligned (see tensor_from_numpy); a ShardedVariable takes its shards' slices."""
    backing_variable(variable).assign(tensor_from_numpy(array))


COPY_TILE = 256  # rows and columns of the tiles copy_into moves at a time (2 x 256 KiB of float32: in L2)


def copy_into(dst, src):
    """dst[...] = src, numpy casting on the way (bfloat16 via ml_dtypes, round to nearest even).

    Why not just that assignment: numpy copies a transposed 2-D view (a Dense kernel from HF's [out, in]
    layout) element by element across the strides, at cache-miss speed; for a multi-billion-parameter model
    that was most of the load time (~10x slower than copying 256 x 256 tiles, whose rows stay in cache). A
    copy without a cast moves the bits as unsigned integers of the same width, because ml_dtypes' bfloat16
    copies element by element through Python-level dtype functions (3x slower)."""
    if src.dtype == dst.dtype:
        unsigned = np.dtype(f"u{src.dtype.itemsize}")
        src, dst = src.view(unsigned), dst.view(unsigned)
    if src.ndim != 2 or src.flags.c_contiguous:
        dst[...] = src
        return
    rows, cols = src.shape
    for i in range(0, rows, COPY_TILE):
        for j in range(0, cols, COPY_TILE):
            dst[i:i + COPY_TILE, j:j + COPY_TILE] = src[i:i + COPY_TILE, j:j + COPY_TILE]


def copy_counting(dst, src):
    """dst[...] = src, and the number of NaN / Inf values in src: in one compiled pass where it applies
    (ops.checkpoint_copy: 2-D views, float32 / bfloat16 / float16), else with numpy (count_nonfinite, then
    copy_into); the same bits and count either way."""
    count = checkpoint_copy.copy_counting(dst, src)
    if count is None:
        count = count_nonfinite(src.T if src.ndim == 2 and src.T.flags.c_contiguous else src)
        copy_into(dst, src)
    return count


def load_tensor(reader, key, named, transform=None, chunk_bytes=None, mmap=True):
    """Read checkpoint tensor `key` into the variable of `named` (a NamedVariable), converting layout and dtype.

    Returns (mismatch, non-finite count): mismatch is None on success or (checkpoint shape in our layout, model
    shape) when the shapes differ; the count is of the NaN / Inf values in the checkpoint tensor.

    The value is assembled in an aligned buffer of the variable's dtype and layout, which the variable then
    adopts (no further copy on CPU). Rows of the checkpoint tensor are read (with `mmap`, mapped for that chunk
    only: see CheckpointReader.rows), permuted and cast into it at most `chunk_bytes` at a time; when neither
    layout nor dtype changes they are read straight into it. So loading a tensor costs its own size plus one
    chunk, and a model its own size plus one chunk.

    With `mmap`, a tensor that needs no change (same layout and dtype, e.g. embedding tables, norms, biases)
    and lies 64-byte aligned in a safetensors file is not read at all: the variable adopts a copy-on-write view
    of the memory-mapped file, so only the pages a computation touches become resident (an embedding lookup
    touches only the rows it gathers), and an update writes private pages, never the file."""
    chunk_bytes = LOAD_CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    variable = named.variable
    model_shape = tuple(int(d) for d in variable.shape)
    dtype = numpy_dtype(variable.dtype)
    if transform is not None:
        array = transform[0](np.asarray(reader.get(key)))
        if tuple(array.shape) != model_shape:
            return (tuple(array.shape), model_shape), 0
        out = aligned_empty(model_shape, dtype)
        out[...] = array
        nonfinite = count_nonfinite(array)
        del array
        assign_array(variable, out)
        return None, nonfinite
    shape, source_dtype = reader.spec(key)
    permutation = tuple(named.permutation) if named.permutation is not None and \
        len(shape) == len(named.permutation) else None
    if permutation == tuple(range(len(shape))):
        permutation = None
    ours = tuple(shape[p] for p in permutation) if permutation else tuple(shape)
    if ours != model_shape:
        return (ours, model_shape), 0
    if not shape:
        out = aligned_empty(model_shape, dtype)
        out[...] = value = reader.get(key)
        assign_array(variable, out)
        return None, count_nonfinite(value)
    unchanged = permutation is None and source_dtype == dtype
    row_bytes = max(1, int(np.prod(shape[1:], dtype=np.int64)) * max(source_dtype.itemsize, dtype.itemsize))
    rows = max(1, chunk_bytes // row_bytes)
    if mmap and unchanged and isinstance(backing_variable(variable), tf.Variable):
        view = reader.mapped(key)
        if view is not None and is_shareable(view):
            assign_array(variable, view)
            # Counted through temporary mappings of a chunk each (the page cache), not the view, whose pages would
            # all become resident.
            return None, sum(count_nonfinite(reader.rows(key, start, min(start + rows, shape[0])))
                             for start in range(0, shape[0], rows))
    out = aligned_empty(model_shape, dtype)
    nonfinite = 0
    axis = permutation.index(0) if permutation else 0
    for start in range(0, shape[0], rows):
        stop = min(start + rows, shape[0])
        if unchanged:
            nonfinite += count_nonfinite(reader.read_rows(key, start, stop, out=out[start:stop]))
            continue
        chunk = reader.rows(key, start, stop, mmap)
        if permutation:
            chunk = np.transpose(chunk, permutation)
        index = [slice(None)] * len(model_shape)
        index[axis] = slice(start, stop)
        nonfinite += copy_counting(out[tuple(index)], chunk)
        del chunk
    assign_array(variable, out)
    return None, nonfinite


_FLOAT_DTYPES = (np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


NONFINITE_SCAN_ELEMENTS = 1 << 16  # elements screened at a time: the shifted copy of a block stays in L2


def count_nonfinite(array):
    """How many NaN / Inf values a (float) array holds; 0 for integer and bool arrays.

    Every loaded byte goes through this, so it is the compiled scan (ops.checkpoint_copy) where that applies.
    Otherwise numpy's, and why not just np.isfinite there: on bfloat16 (ml_dtypes) it runs at ~0.5 GB/s, a tenth
    of a 3.5B-parameter load. A float is NaN or Inf exactly when its exponent bits are all ones, i.e. when its
    bits shifted left by one (dropping the sign) are >= the exponent mask shifted so; the blocks are screened
    with that integer maximum (~3x faster) and only a block that has such a value is counted with isfinite."""
    array = np.asarray(array)
    if array.dtype not in _FLOAT_DTYPES:
        return 0
    compiled = checkpoint_copy.count_nonfinite(array)
    if compiled is not None:
        return compiled
    if not array.flags.c_contiguous:
        return int(array.size - np.count_nonzero(np.isfinite(array)))
    values = array.reshape(-1)
    bits = values.view(f"u{array.dtype.itemsize}")
    limit = np.array(np.inf, array.dtype).view(bits.dtype) << 1  # Inf: all exponent bits set, mantissa zero
    shifted = np.empty(min(bits.size, NONFINITE_SCAN_ELEMENTS), bits.dtype)
    count = 0
    for start in range(0, bits.size, NONFINITE_SCAN_ELEMENTS):
        block = bits[start:start + NONFINITE_SCAN_ELEMENTS]
        np.left_shift(block, 1, out=shifted[:block.size])
        if shifted[:block.size].max() >= limit:
            part = values[start:start + NONFINITE_SCAN_ELEMENTS]
            count += int(part.size - np.count_nonzero(np.isfinite(part)))
    return count


def load_hf_weights(model, reader, checkpoint_map, prefix, ignore_mismatched_sizes=False, initialised_missing=True,
                    chunk_bytes=None, mmap=True):
    """Assign the tensors of an HF checkpoint (a CheckpointReader) to the (built) model's variables, file by
    file (each shard is closed before the next is opened) and tensor by tensor (see `load_tensor`, also for
    `mmap`)."""
    directory = reader.directory
    available = set(reader.keys())
    targets, missing = {}, []
    variables = named_variables(model)
    for named in variables:
        key = _resolve(named.name, checkpoint_map, available, prefix)
        if key is None:
            missing.append(named)
        else:
            targets.setdefault(key, []).append(named)
    mapped, mismatched, mismatched_files, nonfinite = [], [], set(), {}
    for file_name, names in reader.files():
        for key in names:
            for named in targets.get(key, []):
                try:
                    problem, bad_values = load_tensor(reader, key, named, checkpoint_map.transform_for(named.name),
                                                      chunk_bytes, mmap=mmap)
                except (OSError, EOFError, ValueError, TypeError, KeyError, zipfile.BadZipFile) as exc:
                    # A file damaged past its (checked) header: the caller gets no model, and the file and tensor.
                    raise ValueError(f"{os.path.join(directory, file_name)}: tensor {key!r} could not be read: "
                                     f"{type(exc).__name__}: {exc}") from exc
                if bad_values:
                    nonfinite.setdefault(file_name, {})[key] = bad_values
                if problem is not None:
                    mismatched.append((named.name,) + problem)
                    mismatched_files.add(file_name)
                    missing.append(named)
                    continue
                mapped.append(named.name)
        reader.release(file_name)
    used = set(targets) & available
    unexpected = sorted(k for k in available - used if not checkpoint_map.is_ignored(k))
    info = LoadingInfo(mapped=mapped, missing=[n.name for n in missing], unexpected=unexpected,
                       mismatched=mismatched, source=f"{directory} ({reader.kind})")
    if mismatched and not ignore_mismatched_sizes:
        raise ValueError(f"Checkpoint {directory} ({', '.join(sorted(mismatched_files))}) does not fit "
                         f"{type(model).__name__}:\n{info.report()}\n"
                         "Pass ignore_mismatched_sizes=True to initialise those weights afresh instead.")
    if nonfinite:
        # HF loads such weights silently; they are loaded here too (a model may be meant to be fixed up), but
        # never without a word.
        logger.warning("Checkpoint weights with NaN or Inf values were loaded as they are: " + "; ".join(
            f"{os.path.join(directory, file_name)}: " + ", ".join(f"{key} ({count})" for key, count in counts.items())
            for file_name, counts in nonfinite.items()))
    if initialised_missing:
        for named in missing:
            _initialise(named)
    return info


def numpy_dtype(dtype):
    """numpy dtype for a Keras/TF dtype name; bfloat16 comes from ml_dtypes."""
    name = getattr(dtype, "name", dtype)
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


def _initialise(named):
    init = named.initializer
    if init is None:
        init = initializers.SkippableInitializer(keras.initializers.Zeros())
    if isinstance(init, initializers.SkippableInitializer):
        init = init.inner
    init = keras.initializers.get(init)
    backing_variable(named.variable).assign(init(tuple(named.variable.shape), dtype=named.variable.dtype))


# ------------------------------------------------------------------------------------------------------------
# Writing HF checkpoints (so a model trained here goes back to PyTorch)


def _variable_chunks(variable, axis, inverse, dtype, chunk_bytes):
    """Yield a variable's value in the torch layout, rows of torch axis 0 at a time (our `axis`)."""
    target = backing_variable(variable)
    if not isinstance(target, tf.Variable):  # a ShardedVariable: read its shards once, as one tensor
        target = tf.convert_to_tensor(target)
    shape = [int(d) for d in variable.shape]
    row_bytes = max(1, int(np.prod(shape, dtype=np.int64)) // max(shape[axis], 1)) * dtype.itemsize
    rows = max(1, chunk_bytes // row_bytes)
    for start in range(0, shape[axis], rows):
        index = [slice(None)] * len(shape)
        index[axis] = slice(start, min(start + rows, shape[axis]))
        chunk = np.asarray(target[tuple(index)])  # the slice's buffer itself (`.numpy()` would copy it again)
        if inverse is None:
            yield chunk.astype(dtype, copy=False)
            continue
        # Into the torch layout with the loader's compiled copy (its NaN / Inf count, from the same pass, is not
        # needed here), or numpy's tiled one where that does not apply: numpy's own copy of a transposed view (what
        # writing it contiguously would do) walks it element by element, half the time of saving a 3.5B model.
        out = np.empty([chunk.shape[i] for i in inverse], dtype)
        view = np.transpose(chunk, inverse)
        if checkpoint_copy.copy_counting(out, view) is None:
            copy_into(out, view)
        yield out


def hf_state_dict(model, checkpoint_map, strip_prefix=None, dtype=None, lazy=False, chunk_bytes=None):
    """Our variables as {HF name: numpy array} (the first rename alternative names each weight).

    `lazy=True` gives `LazyTensor`s instead, which read their variable (chunk by chunk) only when written:
    `write_hf_weights` then saves a model of any size with one chunk of extra memory."""
    chunk_bytes = LOAD_CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    state = {}
    for named in named_variables(model):
        name = checkpoint_map.candidates(named.name)[0]
        if strip_prefix and name.startswith(strip_prefix + "."):
            name = name[len(strip_prefix) + 1:]
        transform = checkpoint_map.transform_for(named.name)
        rank = len(named.variable.shape)
        permutation = named.permutation if named.permutation is not None and rank == len(named.permutation) \
            else None
        if lazy and transform is None and rank > 0:
            out_dtype = np.dtype(dtype) if dtype is not None else numpy_dtype(named.variable.dtype)
            inverse = tuple(int(i) for i in np.argsort(permutation)) if permutation else None
            axis = permutation.index(0) if permutation else 0
            shape = tuple(int(named.variable.shape[i]) for i in inverse) if inverse else \
                tuple(int(d) for d in named.variable.shape)
            state[name] = LazyTensor(
                shape, out_dtype,
                lambda v=named.variable, a=axis, i=inverse, d=out_dtype: _variable_chunks(v, a, i, d, chunk_bytes))
            continue
        array = np.asarray(named.variable.numpy())
        if transform is not None:
            array = transform[1](array)
        elif permutation is not None:
            array = np.transpose(array, np.argsort(permutation))
        if dtype is not None:
            array = array.astype(dtype)
        state[name] = np.ascontiguousarray(array)
    return state


def write_hf_weights(state, directory, max_shard_bytes=None):
    """Write a state dict ({name: numpy array or LazyTensor}) as model.safetensors, or as shards of at most
    `max_shard_bytes` (a tensor larger than that gets a shard of its own) plus model.safetensors.index.json.
    Shards are written one after the other and lazy tensors chunk by chunk. The files are written in place:
    `save_pretrained` calls this on a fresh temporary folder that replaces the checkpoint once complete."""
    os.makedirs(directory, exist_ok=True)
    metadata = {"format": "pt"}
    if not max_shard_bytes or sum(a.nbytes for a in state.values()) <= max_shard_bytes:
        write_safetensors(os.path.join(directory, SAFE_WEIGHTS_NAME), state, metadata)
        return [SAFE_WEIGHTS_NAME]
    shards, current, size = [], {}, 0
    for name, array in state.items():
        if current and size + array.nbytes > max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name] = array
        size += array.nbytes
    shards.append(current)
    weight_map, files = {}, []
    for i, shard in enumerate(shards):
        file_name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(os.path.join(directory, file_name), shard, metadata)
        weight_map.update({name: file_name for name in shard})
        files.append(file_name)
    index = {"metadata": {"total_size": int(sum(a.nbytes for a in state.values()))}, "weight_map": weight_map}
    with open(os.path.join(directory, SAFE_WEIGHTS_INDEX_NAME), "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2, sort_keys=True)
    return files


_SHARD_PATTERN = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")


def is_hf_weights_file(name):
    """Whether a file name is part of the safetensors weights we write (single file, shards, index): a new save
    does not keep such files of a previous one, which a loader would prefer."""
    return name in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME) or bool(_SHARD_PATTERN.match(name))


def log_loading_info(info, model_name):
    logger.info(f"{model_name}: {info.report()}")
    if info.missing:
        logger.warning(f"{model_name}: weights not in the checkpoint were newly initialised: "
                       f"{', '.join(info.missing)}. Train the model before using it for predictions.")
    if info.unexpected:
        logger.warning(f"{model_name}: checkpoint weights not used by this model: {', '.join(info.unexpected)}")
