"""Weight initializers, and a switch that skips random initialisation when weights will be loaded anyway.

Loading a 3.5B-parameter checkpoint should not first draw 3.5B random numbers: inside `skip_init()` every
initializer made here returns zeros, which TF allocates without computing anything.
"""
import contextlib
import threading

import keras
import tensorflow as tf

_state = threading.local()


def init_is_skipped():
    return getattr(_state, "depth", 0) > 0


@contextlib.contextmanager
def skip_init():
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1


@keras.saving.register_keras_serializable(package="tfmodels")
class SkippableInitializer(keras.initializers.Initializer):
    """Wraps a Keras initializer; gives zeros instead while `skip_init()` is active."""

    def __init__(self, inner):
        self.inner = keras.initializers.get(inner)

    def __call__(self, shape, dtype=None):
        if init_is_skipped():
            return tf.zeros(shape, dtype=dtype or "float32")
        return self.inner(shape, dtype=dtype)

    def get_config(self):
        return {"inner": keras.initializers.serialize(self.inner)}

    @classmethod
    def from_config(cls, config):
        return cls(keras.initializers.deserialize(config["inner"]))


def normal(stddev):
    """The truncated normal that Hugging Face models use for weights (`initializer_range`)."""
    return SkippableInitializer(keras.initializers.TruncatedNormal(stddev=stddev))


def constant(value):
    return SkippableInitializer(keras.initializers.Constant(value))


zeros = "zeros"
ones = "ones"
