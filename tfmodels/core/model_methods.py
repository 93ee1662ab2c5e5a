"""The model methods Hugging Face users call, written once for every family (HF 4.57.6 semantics):
`get_input_embeddings`, `set_input_embeddings`, `get_output_embeddings`, `resize_token_embeddings` and
`prune_heads` (families that set `supports_head_pruning`: an encoder layer's attention is found by
`attention_parts`, by default `attention.self` (query, key, value, num_heads, head_dim) and `attention.output_.dense`).

A family says where its layers are: `input_embeddings_path` (under the base model; HF's get_input_embeddings)
and, on heads with an LM projection, `output_embeddings_path` (under the model). The projection layer is ours
(core.heads.LMHead, XLNet's lm_loss): a bias [vocab] plus either the word-embedding matrix (tied) or its own
matrix (`decoder` kernel [hidden, vocab], or `weight` [vocab, hidden]).

Each class's docstring also gets its list-input order (core.inputs: the one list rule).
"""
import contextlib

import keras
import numpy as np

from tfmodels.core.inputs import list_order


@contextlib.contextmanager
def _unlocked(layer):
    """Keras locks a built layer's state; resizing replaces variables in place, so unlock it meanwhile."""
    locked = layer._tracker.locked
    layer._tracker.unlock()
    try:
        yield
    finally:
        if locked:
            layer._tracker.lock()


def replace_variables(layer, new_values):
    """Swap each `layer.<attribute>` of `new_values` (attribute -> array, in the layer's variable order, all of
    them, so that saved weight files keep their order) for a new variable of the array's shape and value."""
    with _unlocked(layer):
        for attribute, values in new_values.items():
            old = getattr(layer, attribute)
            delattr(layer, attribute)  # (untracks the old variable)
            new = layer.add_weight(name=old.name, shape=values.shape, dtype=old.dtype, trainable=old.trainable,
                                   initializer="zeros")
            new.assign(values.astype(new.dtype))
            setattr(layer, attribute, new)


def _resized_rows(old, new_rows, mean_resizing, initializer_range, rng):
    """old [n, d] cut or grown to [new_rows, d] as HF's _get_resized_embeddings: the first rows kept, the added
    ones drawn from N(mean, 1e-9 * covariance) of the old rows (their mean when that is not positive definite),
    or from N(0, initializer_range) without `mean_resizing`."""
    old = old.astype(np.float32)
    added = new_rows - old.shape[0]
    if added <= 0:
        return old[:new_rows]
    if not mean_resizing:
        return np.concatenate([old, rng.normal(0.0, initializer_range, (added, old.shape[1]))]).astype(np.float32)
    mean = old.mean(axis=0)
    centered = old - mean
    covariance = 1e-9 * (centered.T @ centered) / old.shape[0]
    try:
        factor = np.linalg.cholesky(covariance.astype(np.float64))
        rows = mean + rng.standard_normal((added, old.shape[1])) @ factor.T
    except np.linalg.LinAlgError:
        rows = np.repeat(mean[None], added, axis=0)
    return np.concatenate([old, rows]).astype(np.float32)


def _resized_bias(old, new_rows, mean_resizing, rng, tied):
    """HF: a tied head's bias is padded with zeros (tie_weights); an untied head's added entries are
    N(mean, 1e-9 * std) of the old bias with `mean_resizing`, else zeros (its _init_weights)."""
    old = old.astype(np.float32)
    added = new_rows - old.shape[0]
    if added <= 0:
        return old[:new_rows]
    extra = np.zeros(added, np.float32)
    if mean_resizing and not tied:
        extra = rng.normal(old.mean(), 1e-9 * old.std(ddof=1), added).astype(np.float32)
    return np.concatenate([old, extra])


def _follow(root, path):
    for attribute in path.split("."):
        root = getattr(root, attribute)
    return root


class ModelMethods:
    """Mixed into PreTrainedModel (see the module docstring)."""

    input_embeddings_path = "embeddings.word_embeddings"
    output_embeddings_path = None
    supports_head_pruning = False   # families whose attention layers prune_heads can shrink

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        order = tuple(cls.input_names) + tuple(n for n in cls.label_names if n not in cls.input_names)
        if order:
            doc = (cls.__dict__.get("__doc__") or "").rstrip()
            indent = "    " if "\n" in doc else ""  # (a class docstring's own continuation indent)
            cls.__doc__ = (doc + f"\n\n{indent}" if doc else "") + f"List inputs take this order: {list_order(order)}."

    def get_input_embeddings(self):
        """The word-embedding layer (a keras Embedding; BEiT: its patch embeddings)."""
        return _follow(self.base_model, self.input_embeddings_path)

    def set_input_embeddings(self, value):
        """Replace the word embeddings by a keras Embedding layer or a [vocab, hidden] array (HF: the config is
        left alone; use resize_token_embeddings to change the vocabulary size)."""
        parent_path, _, attribute = self.input_embeddings_path.rpartition(".")
        parent = _follow(self.base_model, parent_path) if parent_path else self.base_model
        old = getattr(parent, attribute)
        if not isinstance(old, keras.layers.Embedding):
            raise TypeError(f"{type(self).__name__}'s input embeddings are a {type(old).__name__}, not word "
                            "embeddings: they cannot be set")
        if isinstance(value, keras.layers.Embedding):
            if value.output_dim != old.output_dim:
                raise ValueError(f"the new embeddings have {value.output_dim} dimensions, the model {old.output_dim}")
            with _unlocked(parent):
                parent._tracker.untrack(old)
                setattr(parent, attribute, value)
        else:
            values = np.asarray(value)
            if values.ndim != 2 or values.shape[1] != old.output_dim:
                raise ValueError(f"set_input_embeddings needs a [vocab, {old.output_dim}] array or a keras Embedding, "
                                 f"got shape {values.shape}")
            replace_variables(old, {"_embeddings": values})
            old.input_dim = values.shape[0]
        self._forget_compiled_functions()

    def get_output_embeddings(self):
        """The layer projecting onto the vocabulary (LM heads), or None."""
        return _follow(self, self.output_embeddings_path) if self.output_embeddings_path else None

    def resize_token_embeddings(self, new_num_tokens=None, pad_to_multiple_of=None, mean_resizing=True, seed=None):
        """Grow or shrink the vocabulary to `new_num_tokens` (rounded up to a multiple of `pad_to_multiple_of`):
        rows are kept or cut at the end, added rows initialised as HF does (see _resized_rows; `seed` makes the
        draw reproducible), config.vocab_size updated, and the LM head's matrix (when untied) and bias resized
        with it; a tied head keeps reading the word embeddings. Returns the word-embedding layer."""
        embeddings = self.get_input_embeddings()
        if not isinstance(embeddings, keras.layers.Embedding):
            raise TypeError(f"{type(self).__name__}'s input embeddings are a {type(embeddings).__name__}, not "
                            "word embeddings: there is no vocabulary to resize")
        if pad_to_multiple_of is not None:
            if not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 1:
                raise ValueError(f"pad_to_multiple_of must be a positive integer, got {pad_to_multiple_of!r}")
            if new_num_tokens is None:
                new_num_tokens = embeddings.input_dim
            new_num_tokens = -(-new_num_tokens // pad_to_multiple_of) * pad_to_multiple_of
        if new_num_tokens is None:
            return embeddings
        if isinstance(new_num_tokens, bool) or not isinstance(new_num_tokens, int) or new_num_tokens < 1:
            raise ValueError(f"new_num_tokens must be a positive integer, got {new_num_tokens!r}")
        if not self.built or not self.weights:
            self.build_model()
        rng = np.random.default_rng(seed)
        config = self.config
        if new_num_tokens != embeddings.input_dim:
            replace_variables(embeddings, {"_embeddings": _resized_rows(
                keras.ops.convert_to_numpy(embeddings.embeddings), new_num_tokens, mean_resizing,
                config.initializer_range, rng)})
            embeddings.input_dim = new_num_tokens
        head = self.get_output_embeddings()
        if head is not None:
            self._resize_output_embeddings(head, new_num_tokens, mean_resizing, rng)
        config.vocab_size = new_num_tokens
        self._forget_compiled_functions()
        return embeddings

    def _resize_output_embeddings(self, head, rows, mean_resizing, rng):
        tied = head.tied_embeddings is not None
        bias = _resized_bias(keras.ops.convert_to_numpy(head.bias), rows, mean_resizing, rng, tied)
        ir = self.config.initializer_range
        if tied:
            replace_variables(head, {"bias": bias})
        elif hasattr(head, "decoder"):  # core.heads.LMHead: a Dense decoder, kernel [hidden, vocab]
            kernel = keras.ops.convert_to_numpy(head.decoder.kernel).T
            replace_variables(head.decoder, {"_kernel": _resized_rows(kernel, rows, mean_resizing, ir, rng).T})
            head.decoder.units = rows
            replace_variables(head, {"bias": bias})
        else:  # XLNet's lm_loss: weight [vocab, hidden], then bias
            weight = _resized_rows(keras.ops.convert_to_numpy(head.weight), rows, mean_resizing, ir, rng)
            replace_variables(head, {"weight": weight, "bias": bias})
        if hasattr(head, "vocab_size"):
            head.vocab_size = rows

    # ---------------------------------------------------------------------------------------------------
    # Head pruning

    def prune_heads(self, heads_to_prune):
        """Remove attention heads, {layer: [heads]} in the original numbering, as HF: the query, key and value
        projections lose the heads' columns and the attention output projection their rows; the union with
        earlier prunings is kept in config.pruned_heads (written to config.json, and applied again when the
        model is built, so a pruned checkpoint loads)."""
        self._check_head_pruning()
        if not self.built or not self.weights:
            self.build_model()  # (which applies the config's earlier prunings first)
        pruned = self.pruned_heads
        for layer, heads in heads_to_prune.items():
            self._prune_layer(int(layer), heads, pruned.get(int(layer), set()))
            pruned[int(layer)] = sorted(pruned.get(int(layer), set()) | set(heads))
        self.config.extra["pruned_heads"] = {layer: sorted(heads) for layer, heads in pruned.items()}
        self._forget_compiled_functions()

    @property
    def pruned_heads(self):
        stored = getattr(self.config, "pruned_heads", None) or {}
        return {int(layer): set(heads) for layer, heads in stored.items()}

    def apply_config_pruning(self):
        """Prune the heads config.pruned_heads names (a pruned checkpoint's config.json) from a model just built
        at full size."""
        if self.pruned_heads:
            self._check_head_pruning()
            for layer, heads in self.pruned_heads.items():
                self._prune_layer(layer, heads, set())

    def _check_head_pruning(self):
        if not self.supports_head_pruning:
            raise NotImplementedError(f"{type(self).__name__}: head pruning is not supported for the "
                                      f"{self.config.model_type} family")

    @staticmethod
    def attention_parts(layer):
        """(self-attention with query / key / value / num_heads / head_dim, output projection) of an encoder layer."""
        return layer.attention.self, layer.attention.output_.dense

    def _prune_layer(self, index, heads, already):
        layers = self.base_model.encoder.layer
        if not 0 <= index < len(layers):
            raise ValueError(f"prune_heads: layer {index} does not exist ({len(layers)} layers)")
        attention, output = self.attention_parts(layers[index])
        if getattr(attention, "conv", None) is not None:
            raise NotImplementedError(f"{type(self).__name__}: head pruning with the per-head convolution "
                                      "(conv_window / conv_kernel_size) is not supported (nor by the reference)")
        heads = set(heads) - set(already)
        total = attention.num_heads + len(already)
        if any(not 0 <= h < total for h in heads):
            raise ValueError(f"prune_heads: layer {index} has heads 0..{total - 1}, got {sorted(heads)}")
        # Positions of the remaining heads in the current (already pruned) layout.
        current = [h for h in range(total) if h not in already]
        keep = [i for i, h in enumerate(current) if h not in heads]
        if not heads:
            return
        columns = np.concatenate([np.arange(i * attention.head_dim, (i + 1) * attention.head_dim) for i in keep]
                                 ) if keep else np.zeros([0], np.int64)
        for dense in (attention.query, attention.key, attention.value):
            values = {"_kernel": keras.ops.convert_to_numpy(dense.kernel)[:, columns]}
            if dense.bias is not None:  # (BEiT's key has none)
                values["bias"] = keras.ops.convert_to_numpy(dense.bias)[columns]
            replace_variables(dense, values)
            dense.units = len(columns)
        kernel, bias = (keras.ops.convert_to_numpy(v) for v in (output.kernel, output.bias))
        replace_variables(output, {"_kernel": kernel[columns], "bias": bias})
        output.input_spec = keras.InputSpec(min_ndim=2, axes={-1: len(columns)})  # (Dense checks its input size)
        attention.num_heads = len(keep)

    def _forget_compiled_functions(self):
        # Keras' traced train/test/predict functions captured the old variables.
        for name in ("train_function", "test_function", "predict_function"):
            setattr(self, name, None)
