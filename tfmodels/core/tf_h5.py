"""Read `tf_model.h5`, the Keras-2 h5 checkpoints that Hugging Face's TF classes (TFXLNet*, TFLongformer*, ...)
wrote, under PyTorch names, streamed with h5py.

Layouts (transformers' modeling_tf_utils): a single file has a `layer_names` attribute listing top-level
groups, each with a `weight_names` attribute; dataset `<group>/<weight name>` holds the variable whose full
TF name is `<weight name>` (`tfxl_net_model/transformer/layer_._0/rel_attn/q:0`). A shard of a sharded
checkpoint (`tf_model-0000x-of-0000y.h5`, index `tf_model.h5.index.json`) lists in `layer_names` datasets
named by the variable name without its first level (`transformer/layer_._0/rel_attn/q:0`). Long attribute
lists are split by Keras into `<name>0`, `<name>1`, ...

Names become PyTorch names by transformers' own rule (convert_tf_weight_name_to_pt_weight_name): drop the
model's scope (first level) and `:0`, `a___b` -> `b`, `_._` separates list items, `/` -> `.`; `kernel`,
`embeddings` and `gamma` are `weight`, `beta` is `bias`. A 2-D `kernel` is a Dense kernel, stored transposed
with respect to PyTorch's Linear weight: it is presented in PyTorch's layout (rows read as columns of the
dataset), so that the shared loader treats every format alike. A tensor repeated under a second layer (the LM
head's tied word embeddings) is read once.
"""
import re

import h5py
import numpy as np

_RENAMES = {"kernel": "weight", "embeddings": "weight", "gamma": "weight", "beta": "bias",
            "moving_mean": "running_mean", "moving_variance": "running_var"}


def _attribute_list(node, name):
    """A string-list attribute, joined from Keras' numbered chunks when it was too long for one attribute."""
    if name in node.attrs:
        values = list(node.attrs[name])
    else:
        values, i = [], 0
        while f"{name}{i}" in node.attrs:
            values.extend(node.attrs[f"{name}{i}"])
            i += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def torch_name(tf_name):
    """(PyTorch name, is a Dense kernel) of a TF variable name without its model scope."""
    name = tf_name.replace(":0", "")
    name = re.sub(r"/[^/]*___([^/]*)/", r"/\1/", name)
    name = re.sub(r"//+", "/", name.replace("_._", "/"))
    parts = name.split("/")
    last = parts[-1]
    parts[-1] = _RENAMES.get(last, last)
    return ".".join(parts), last == "kernel"


class TFH5File:
    """Name -> tensor access to one HF TF h5 file (single or shard), in PyTorch names and layouts."""

    def __init__(self, path):
        self.path = path
        try:
            self._file = h5py.File(path, "r")
        except OSError as exc:
            raise ValueError(f"{path} is not a readable HDF5 file (truncated or corrupt?): {exc}") from None
        self._datasets = {}   # torch name -> (h5 dataset, transposed)
        try:
            self._index()
        except (OSError, KeyError, TypeError) as exc:  # h5py's errors for damaged or missing groups/attributes
            self._file.close()
            raise ValueError(f"{path}: damaged Keras h5 weights file: {type(exc).__name__}: {exc}") from None
        except ValueError:
            self._file.close()
            raise

    def _index(self):
        layer_names = _attribute_list(self._file, "layer_names")
        if not layer_names:
            raise ValueError(f"{self.path} is not a Keras h5 weights file written by a Hugging Face TF model "
                             "(no layer_names attribute)")
        for layer_name in layer_names:
            node = self._node(self._file, layer_name)
            if isinstance(node, h5py.Dataset):  # a shard: datasets named without the model scope
                self._add(layer_name, node)
                continue
            for weight_name in _attribute_list(node, "weight_names"):
                dataset = self._node(node, weight_name)
                self._add(weight_name.split("/", 1)[1] if "/" in weight_name else weight_name, dataset)

    def _node(self, group, name):
        if name not in group:
            raise ValueError(f"{self.path}: {name!r} is listed in the weight names but {group.name} has no such "
                             "entry")
        return group[name]

    def _add(self, tf_name, dataset):
        name, is_kernel = torch_name(tf_name)
        if name in self._datasets:
            return
        if not isinstance(dataset, h5py.Dataset) or dataset.dtype.kind not in "fiub":
            raise ValueError(f"{self.path}: weight {tf_name!r} is not a numeric dataset")
        transposed = is_kernel and dataset.ndim == 2
        if is_kernel and dataset.ndim > 2:
            raise ValueError(f"{self.path}: convolution kernel {tf_name} is not supported (only XLNet and "
                             "Longformer, whose TF kernels are all Dense, have HF TF checkpoints here)")
        self._datasets[name] = (dataset, transposed)

    def keys(self):
        return list(self._datasets)

    def shape(self, name):
        dataset, transposed = self._datasets[name]
        return tuple(reversed(dataset.shape)) if transposed else tuple(dataset.shape)

    def dtype(self, name):
        return np.dtype(self._datasets[name][0].dtype)

    def get(self, name):
        dataset, transposed = self._datasets[name]
        array = dataset[()]
        return np.ascontiguousarray(array.T) if transposed else np.asarray(array)

    def read_rows(self, name, start, stop, out=None):
        dataset, transposed = self._datasets[name]
        rows = np.ascontiguousarray(dataset[:, start:stop].T) if transposed else dataset[start:stop]
        if out is None:
            return rows
        out[...] = rows
        return out

    def mapped(self, name):
        return None

    def close(self):
        self._datasets = {}
        self._file.close()
