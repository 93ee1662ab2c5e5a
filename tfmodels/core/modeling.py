"""The pretrained-model base every model class derives from.

A family provides a main layer (embeddings + encoder, a keras Layer with explicit keyword arguments) and,
for each task head, a class that mixes a task from `tfmodels.core.tasks` with the family's pretrained base and
implements `head()`. This base provides the rest, once for every family:

- `call` accepting kwargs, or a tensor / list / dict first argument (numpy or tf, int32 or int64);
- `save_pretrained` / `from_pretrained` (our config.json + model.weights.h5, or an HF checkpoint directory);
- training on the model's own loss: `compile(optimizer)` then `fit` with labels inside the inputs or as y;
- `export` to a SavedModel for TF Serving (see tfmodels.core.export).
"""
import functools
import os
import re
import warnings

import keras
import numpy as np
import tensorflow as tf

from tfmodels.core import atomic
from tfmodels.core import checkpoint as ckpt, serialization
from tfmodels.core.initializers import skip_init
from tfmodels.core.inputs import list_to_dict, normalize_inputs
from tfmodels.core.layers import dtype_policy_scope
from tfmodels.core.model_methods import ModelMethods
from tfmodels.core.outputs import ModelOutput

WEIGHTS_NAME = "model.weights.h5"
SHARDED_WEIGHTS_NAME = "model.weights.json"

DEFAULT_OPTIONS = ("output_attentions", "output_hidden_states", "return_dict")
_OWN_SHARD_PATTERN = re.compile(r"^model_\d{5}\.weights\.h5$")  # Keras' shard names


def is_own_weights_file(name):
    """Whether a file name is one of our Keras-format weights (single file, or the sharded index and its shards)."""
    return name in (WEIGHTS_NAME, SHARDED_WEIGHTS_NAME) or bool(_OWN_SHARD_PATTERN.match(name))


def _kept_beside_new_weights(name):
    """Files of a previous save_pretrained that the new copy keeps (tokenizer files, notes): not the previous
    weights in either format (a loader would prefer a stale file of the other format), nor a `*.tmp` left by a
    write that was killed (older versions wrote weights in place)."""
    return not (is_own_weights_file(name) or ckpt.is_hf_weights_file(name) or name.endswith(".tmp"))


def _arrays_to_tensors(value):
    if isinstance(value, np.ndarray):
        return tf.convert_to_tensor(value.astype(np.float32) if value.dtype == np.float64 else value)
    if isinstance(value, dict):
        return {k: _arrays_to_tensors(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and any(isinstance(v, (np.ndarray, list, tuple, dict)) for v in value):
        return type(value)(_arrays_to_tensors(v) for v in value)
    return value


def scale_loss_for_replicas(loss):
    """The loss divided by the number of replicas in sync, as Keras' compiled losses do: under a tf.distribute
    strategy the replicas' gradients are summed, so each replica must contribute its share of the mean.
    (Keras' train/test steps multiply the value back for the loss they report.)"""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss / tf.cast(replicas, loss.dtype) if replicas > 1 else loss


def _snake_case(name):
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def _building_under_its_dtype(init):
    """A model class's __init__ that makes its sub-layers under the `dtype=` it is given, as from_pretrained(dtype=)
    and keras-hub's models do: Keras gives a model's dtype to the model alone, so `FooModel(config,
    dtype="bfloat16")` would build float32 layers under a model whose policy reads bfloat16 (and a .keras round
    trip, which builds under the saved policy, would turn it into another model)."""
    @functools.wraps(init)
    def init_under_dtype(self, *args, **kwargs):
        dtype = kwargs.get("dtype")
        with dtype_policy_scope(None if dtype is None else keras.dtype_policies.get(dtype)):
            return init(self, *args, **kwargs)
    init_under_dtype._tfm_builds_under_its_dtype = True
    return init_under_dtype


class PreTrainedModel(ModelMethods, keras.Model):
    """Base of every model class. See the module docstring for what a family must provide."""

    config_class = None
    base_model_prefix = ""          # attribute holding the main layer; HF's base_model_prefix
    main_input_name = "input_ids"
    input_names = ()                # documented tensor inputs in documented order (labels excluded)
    option_names = DEFAULT_OPTIONS  # python switches, defaulting to the config attribute of the same name
    label_names = ()                # set by the task
    output_class = None             # set by the task (or the family for its base model)
    checkpoint_map = ckpt.CheckpointMap()
    hf_architecture = None          # HF class name written to config.json; defaults to our class name
    serving_input_names = ("input_ids", "attention_mask")
    is_base_model = False           # the bare model: HF writes its weights without the prefix

    def __init__(self, config, name=None, **kwargs):
        if isinstance(config, dict):
            config = self.config_class.from_dict(config)
        if self.config_class is not None and not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        super().__init__(name=name or _snake_case(type(self).__name__), **kwargs)
        self.config = config

    # ---------------------------------------------------------------------------------------------------
    # Keras plumbing

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        serialization.register(cls)  # keras.models.load_model finds every model class by name
        if not getattr(cls.__init__, "_tfm_builds_under_its_dtype", False):
            cls.__init__ = _building_under_its_dtype(cls.__init__)

    def build(self, *args, **kwargs):
        # Sub-layers build themselves on the first call; there is no input shape to plan from here.
        self.built = True

    def get_config(self):
        return {"config": self.config.to_dict(), "name": self.name, "trainable": self.trainable,
                "dtype": keras.dtype_policies.serialize(self.dtype_policy)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        model_config = cls.config_class.from_dict(config.pop("config"), strict=False)
        return cls(model_config, **config)  # the saved dtype: every sub-layer is made under it (see __init_subclass__)

    def get_build_config(self):
        # A .keras file must hold the weights a call would create: a model never called is built here, before
        # Keras writes the variables. The loader rebuilds the same variables from the dummy inputs.
        if not self.built or not self.weights:
            self.build_model()
        return {"dummy_inputs": True}

    def build_from_config(self, config):
        self.build_model()

    @property
    def base_model(self):
        return getattr(self, self.base_model_prefix)

    @property
    def all_input_names(self):
        return tuple(self.input_names) + tuple(n for n in self.label_names if n not in self.input_names)

    # ---------------------------------------------------------------------------------------------------
    # Calling

    def __call__(self, *args, **kwargs):
        # Keras rejects keyword arguments that mix numpy arrays and tensors: make every array a tensor first.
        args = tuple(_arrays_to_tensors(a) for a in args)
        kwargs = {k: _arrays_to_tensors(v) for k, v in kwargs.items()}
        return super().__call__(*args, **kwargs)

    def call(self, inputs=None, training=False, output_attentions=None, output_hidden_states=None,
             return_dict=None, use_cache=None, use_mems=None, interpolate_pos_encoding=None, **kwargs):
        # The switches are named parameters because Keras rejects python values mixed with tensors in **kwargs.
        switches = dict(output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                        return_dict=return_dict, use_cache=use_cache, use_mems=use_mems,
                        interpolate_pos_encoding=interpolate_pos_encoding)
        kwargs.update({k: v for k, v in switches.items() if v is not None})
        tensors, options = normalize_inputs(type(self).__name__, self.all_input_names, self.option_names,
                                            self.main_input_name, inputs, kwargs)
        options = self.resolve_options(options)
        labels = {name: tensors.pop(name) for name in self.label_names if name in tensors}
        return self.forward(tensors, labels, options, training=training)

    def resolve_options(self, options):
        resolved = {}
        for name in self.option_names:
            value = options.get(name)
            if value is None:
                value = getattr(self.config, name, None)
            if tf.is_tensor(value):
                value = bool(value)
            resolved[name] = value
        return resolved

    def forward(self, inputs, labels, options, training=False):
        raise NotImplementedError(f"{type(self).__name__} must mix in a task from tfmodels.core.tasks")

    def dummy_inputs(self):
        """Small inputs that touch every weight (used to build the model before loading weights): ids and mask
        for text models, images of config.image_size for image models (main_input_name "pixel_values")."""
        if self.main_input_name == "pixel_values":
            size = self.config.image_size
            height, width = (size, size) if isinstance(size, int) else size
            pixels = np.random.RandomState(0).uniform(-1, 1, (2, self.config.num_channels, height, width))
            return {"pixel_values": pixels.astype(np.float32)}
        ids = np.arange(2 * 8, dtype=np.int32).reshape(2, 8) % max(self.config.vocab_size - 1, 1)
        ids = ids + 1 if self.config.vocab_size > 2 else ids
        return {"input_ids": ids.astype(np.int32), "attention_mask": np.ones((2, 8), np.int32)}

    def build_model(self):
        """Create every variable by running the dummy inputs once."""
        # A layer without a build() of its own whose sub-layers are unbuilt is built by Keras by first tracing
        # its call() on symbolic inputs, and again at every nesting level inside that trace: for XLM-R-XL's 36
        # layers that graph construction took most of from_pretrained's time. Such layers have no state of their
        # own, so they are marked built: the one eager call below builds every sub-layer that does have a build().
        for layer in self._flatten_layers(include_self=False):
            if not layer.built and getattr(layer.build, "_is_default", False):
                layer.built = True
        self(self.dummy_inputs(), training=False)
        self.apply_config_pruning()  # a pruned checkpoint's layers (config.pruned_heads), as HF's post_init
        return self

    # ---------------------------------------------------------------------------------------------------
    # Training on the model's own loss

    def _inputs_dict(self, x):
        if isinstance(x, dict):
            return x
        if isinstance(x, (list, tuple)):
            return list_to_dict(type(self).__name__, self.all_input_names, x)  # the call's list rule
        return {self.main_input_name: x}

    def _labels_from(self, x, y):
        if y is not None:
            if isinstance(y, dict):
                return y
            if isinstance(y, (list, tuple)):
                return dict(zip(self.label_names, y))
            return {self.label_names[0]: y}
        x = self._inputs_dict(x)
        return {name: x[name] for name in self.label_names if name in x}

    @staticmethod
    def main_prediction(y_pred):
        if isinstance(y_pred, ModelOutput):
            if "logits" in y_pred:
                return y_pred["logits"]
            # Caches for the next call (XLNet's time-major mems, past key values) are not predictions.
            values = [v for k, v in y_pred.items() if k not in ("loss", "mems", "past_key_values")]
            return values[0] if len(values) == 1 else tuple(values)
        return y_pred

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = y_pred.get("loss") if isinstance(y_pred, ModelOutput) else None
        if loss is None and y is not None and self._compile_loss is None:
            labels = self._labels_from(x, y)
            labels = {k: tf.convert_to_tensor(v) if not tf.is_tensor(v) else v for k, v in labels.items()}
            loss = self.task_loss(labels, dict(y_pred), self._inputs_dict(x))
        if loss is None:
            if self._compile_loss is None:
                raise ValueError(
                    f"{type(self).__name__} got no labels to compute its loss: put {list(self.label_names)} in the "
                    "input dict, pass them as y, or compile() with a Keras loss.")
            return super().compute_loss(x, y, self.main_prediction(y_pred), sample_weight, training)
        if sample_weight is not None:
            raise ValueError("sample_weight is not supported with the model's internal loss; compile() with a "
                             "Keras loss to weight samples.")
        for extra in self.losses:
            loss = loss + tf.cast(extra, loss.dtype)
        return scale_loss_for_replicas(loss)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if y is None:
            labels = self._labels_from(x, None)
            if len(labels) == 1:
                y = next(iter(labels.values()))
            elif labels:
                y = tuple(labels[name] for name in self.label_names if name in labels)
        return super().compute_metrics(x, y, self.main_prediction(y_pred), sample_weight)

    def task_loss(self, labels, outputs, inputs):
        raise ValueError(f"{type(self).__name__} has no task loss (it is a base model)")

    # ---------------------------------------------------------------------------------------------------
    # Saving and loading

    def save_pretrained(self, directory, max_shard_size=None, hf_format=False, dtype=None):
        """Write config.json and the weights.

        Our format: model.weights.h5 (Keras), or with `max_shard_size` (GB) Keras' sharded format
        (model.weights.json + model_NNNNN.weights.h5). With `hf_format=True`, model.safetensors under
        the Hugging Face names instead (shards of at most `max_shard_size` GB + model.safetensors.index.json),
        so that the PyTorch reference loads it; `dtype` (e.g. "bfloat16") converts on the way. The HF writer
        streams variable by variable, so saving needs no second copy of the model.

        The save is atomic (core.atomic.replacing_directory): the complete checkpoint is written into a
        temporary folder beside `directory`, fsynced, and then takes its place by a rename, so a process killed
        at any moment leaves the previous checkpoint or the new one, never new weights beside an old config (a
        config that changed shape would not load them). Other files of `directory` (tokenizer files) are carried
        over; the previous weights, of either format, are not, so a loader never picks up a stale file.
        """
        if dtype is not None and not hf_format:
            raise ValueError("save_pretrained(dtype=...) converts HF-format weights only (hf_format=True); our "
                             "Keras format stores the variables as they are")
        if not self.built or not self.weights:
            self.build_model()
        config_dict = self.config.to_dict()
        config_dict["architectures"] = [self.hf_architecture or type(self).__name__]
        with atomic.replacing_directory(directory, keep=_kept_beside_new_weights) as staging:
            self.config.__class__.from_dict(config_dict, strict=False).save_pretrained(staging)
            if hf_format:
                state = ckpt.hf_state_dict(self, self.checkpoint_map,
                                           strip_prefix=self.base_model_prefix if self.is_base_model else None,
                                           dtype=None if dtype is None else ckpt.numpy_dtype(dtype), lazy=True)
                max_bytes = int(max_shard_size * 1024 ** 3) if max_shard_size else None
                ckpt.write_hf_weights(state, staging, max_shard_bytes=max_bytes)
            elif max_shard_size:
                self.save_weights(os.path.join(staging, SHARDED_WEIGHTS_NAME), max_shard_size=max_shard_size)
            else:
                self.save_weights(os.path.join(staging, WEIGHTS_NAME))

    @classmethod
    def from_pretrained(cls, path, config=None, dtype=None, allow_pickle=None, ignore_mismatched_sizes=False,
                        output_loading_info=False, strict=True, mmap=True, weights_format=None, revision=None,
                        cache_dir=None, local_files_only=False, token=None, **config_overrides):
        """Load our own directory (config.json + model.weights.h5), a Hugging Face checkpoint directory, or a
        Hub id ("org/name"). HF weights are read from model.safetensors, tf_model.h5 (HF's TF classes) or
        pytorch_model.bin (read without torch by a reader that runs no pickle code), sharded or not, preferred
        in that order; `weights_format` ("safetensors", "h5", "bin") picks one.

        Hub ids go through huggingface_hub (`revision`, `cache_dir`, `local_files_only`, `token`; HF_HUB_OFFLINE,
        HF_ENDPOINT) and fetch only config.json and one set of weights (see core.hub). `dtype` ("float32",
        "bfloat16", "float16" or a Keras policy such as "mixed_bfloat16") creates the variables in that dtype
        directly. With `mmap` (the default), safetensors tensors that need no conversion are memory-mapped
        rather than read (see core.checkpoint.load_tensor); `mmap=False` reads everything into memory, e.g. for
        files on a network file system that may change under the process. `allow_pickle` is no longer needed
        (it was the opt-in for torch's unpickler) and is ignored with a warning."""
        from tfmodels.core import hub
        if allow_pickle is not None:
            warnings.warn("from_pretrained(allow_pickle=...) is no longer needed and has no effect: "
                          "pytorch_model.bin is read by a restricted reader that never runs pickle code",
                          FutureWarning, stacklevel=2)
        options = hub.HubOptions(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
                                 token=token)
        # A local directory whose atomic save was killed between its two renames is read from its backup name.
        path, weights_format = hub.model_files(atomic.readable_path(path), options, weights_format)
        if config is None:
            config = cls.config_class.from_pretrained(path, strict=strict, **config_overrides)
        elif config_overrides:
            config = config.copy(**config_overrides)
        own_single = os.path.join(path, WEIGHTS_NAME)
        own_sharded = os.path.join(path, SHARDED_WEIGHTS_NAME)
        own = os.path.isfile(own_single) or os.path.isfile(own_sharded)
        # HF weights are opened before the model is built, so that a missing or refused file fails fast.
        reader = None if own else ckpt.CheckpointReader(path, weights_format=weights_format)
        with dtype_policy_scope(dtype), skip_init():
            model = cls(config)
            model.build_model()
        if own:
            model.load_weights(own_single if os.path.isfile(own_single) else own_sharded)
            info = ckpt.LoadingInfo(mapped=[v.name for v in ckpt.named_variables(model)], missing=[],
                                    unexpected=[], mismatched=[], source=f"{path} (tfmodels)")
        else:
            info = ckpt.load_hf_weights(model, reader, cls.checkpoint_map, cls.base_model_prefix,
                                        ignore_mismatched_sizes=ignore_mismatched_sizes, mmap=mmap)
            ckpt.log_loading_info(info, cls.__name__)
        return (model, info) if output_loading_info else model

    # ---------------------------------------------------------------------------------------------------
    # Export

    @property
    def serving_output_names(self):
        skip = {"loss", "hidden_states", "attentions", "cross_attentions", "past_key_values", "mems",
                "global_attentions", "reshaped_hidden_states"}
        return tuple(f for f in self.output_class.fields if f not in skip)

    def serving_input_spec(self, name):
        """The tf.TensorSpec of input `name` in the numeric serving signatures (dynamic batch and sizes).

        Integer inputs (ids, masks, positions) are int32 [batch, length] ([batch, choices, length] for multiple
        choice); an int64 twin signature is exported beside them. Pixel inputs are float32 [batch, num_channels,
        height, width], the layout the reference documents. Other float inputs need a family override."""
        from tfmodels.core.tasks import MultipleChoiceTask
        if name == "pixel_values":
            return tf.TensorSpec([None, self.config.num_channels, None, None], tf.float32, name=name)
        rank = 3 if isinstance(self, MultipleChoiceTask) else 2
        return tf.TensorSpec([None] * rank, tf.int32, name=name)

    def export(self, filepath, tokenizer=None, max_length=None, image_processor=None, **kwargs):
        """Write a SavedModel for TF Serving (see tfmodels.core.export.export_saved_model): `tokenizer` adds the
        raw-text signatures, `image_processor` the encoded-image signature."""
        from tfmodels.core.export import export_saved_model
        return export_saved_model(self, filepath, tokenizer=tokenizer, max_length=max_length,
                                  image_processor=image_processor, **kwargs)

    def num_parameters(self):
        return int(sum(np.prod(v.shape) for v in self.weights))

    def __repr__(self):
        return f"<{type(self).__name__} {self.config.model_type}>"

