"""Keras-native serialization (`model.save("m.keras")`, `keras.models.load_model`), written once.

Every model class (through `PreTrainedModel.__init_subclass__`) and every layer class deriving from `ConfigLayer`
is registered with Keras under the package "tfmodels" and its class name, so `load_model` finds it with
`safe_mode` on. A `ConfigLayer` records the arguments it was constructed with and `get_config` writes them as
JSON: a model config as its class name and `to_dict()`, a layer class (e.g. the attention class an encoder
block builds) as its registered name, a layer through Keras' own serialization, plain values as they are.
Nothing is pickled and no Python function is stored: an argument that is a function is refused with an error.
"""
import inspect

import keras

from tfmodels.core.configuration import PretrainedConfig

PACKAGE = "tfmodels"
_LAYER_KWARGS = ("name", "dtype", "trainable", "autocast", "input_shape", "input_dim", "batch_size")


def register(cls):
    """Register `cls` with Keras as "tfmodels>ClassName" (a later class of the same name replaces it)."""
    return keras.saving.register_keras_serializable(package=PACKAGE, name=cls.__name__)(cls)


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def config_class_named(name):
    """The imported PretrainedConfig subclass called `name` (only classes already imported are candidates)."""
    for cls in _subclasses(PretrainedConfig):
        if cls.__name__ == name:
            return cls
    raise ValueError(f"no configuration class {name!r} is imported; import the package that defines it (e.g. "
                     "`import tfmodels`) before loading")


def serialize_config(config):
    return {"class_name": type(config).__name__, "values": config.to_dict()}


def deserialize_config(data):
    return config_class_named(data["class_name"]).from_dict(data["values"], strict=False)


def _serialize_argument(owner, name, value):
    if isinstance(value, PretrainedConfig):
        return {"__tfmodels_config__": serialize_config(value)}
    if inspect.isclass(value):
        registered = keras.saving.get_registered_name(value)
        if keras.saving.get_registered_object(registered) is not value:
            raise ValueError(f"{owner} cannot be serialized: its argument {name}={value.__name__} is a class not "
                             "registered with Keras")
        return {"__tfmodels_class__": registered}
    if callable(value) and not isinstance(value, keras.layers.Layer):
        raise ValueError(f"{owner} cannot be serialized: its argument {name!r} is a Python function, which a "
                         ".keras file does not store (safe_mode refuses code)")
    return keras.saving.serialize_keras_object(value)


def _deserialize_argument(value):
    if isinstance(value, dict) and "__tfmodels_config__" in value:
        return deserialize_config(value["__tfmodels_config__"])
    if isinstance(value, dict) and "__tfmodels_class__" in value:
        found = keras.saving.get_registered_object(value["__tfmodels_class__"])
        if found is None:
            raise ValueError(f"class {value['__tfmodels_class__']!r} is not registered; import its package first")
        return found
    return keras.saving.deserialize_keras_object(value)


class ConfigLayer(keras.layers.Layer):
    """A Keras layer that is registered and serializable whatever its constructor takes (a model config, a layer
    class, a sub-layer): subclasses get both for free."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        register(cls)

    def __new__(cls, *args, **kwargs):
        instance = super().__new__(cls, *args, **kwargs)
        # The constructor's arguments as given (a wrong call fails in __init__ with Python's own message).
        try:
            bound = inspect.signature(cls.__init__).bind(None, *args, **kwargs).arguments
        except TypeError:
            bound = {}
        arguments = {}
        for name, value in list(bound.items())[1:]:
            if inspect.signature(cls.__init__).parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                arguments.update({k: v for k, v in value.items() if k not in _LAYER_KWARGS})
            elif name not in _LAYER_KWARGS:
                arguments[name] = value
        vars(instance)["_tfmodels_arguments"] = arguments
        return instance

    def get_config(self):
        base = {"name": self.name, "trainable": self.trainable,
                "dtype": keras.dtype_policies.serialize(self.dtype_policy)}
        owner = type(self).__name__
        return {**base, **{name: _serialize_argument(owner, name, value)
                           for name, value in self._tfmodels_arguments.items()}}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        dtype = keras.dtype_policies.deserialize(config.pop("dtype")) if "dtype" in config else None
        return cls(dtype=dtype, **{name: _deserialize_argument(value) for name, value in config.items()})
