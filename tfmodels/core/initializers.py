"""Weight initializers, and a switch that skips random initialisation when weights will be loaded anyway.

Loading a 3.5B-parameter checkpoint should not first draw 3.5B random numbers, nor even write 7 GB of zeros:
inside `skip_init()` every initializer made here returns a placeholder that costs nothing. Small tensors are
zeros; large ones (>= SKIP_UNINITIALISED_BYTES) are *uninitialised* memory (numpy's, see placeholder()), which the
operating system does not back with pages until written, so a model built under skip_init occupies almost no
memory until its weights arrive, and the buffers the loader hands over replace these placeholders without a
second copy ever being resident. The contract: whoever builds under skip_init assigns every variable
afterwards (from_pretrained loads each one from the checkpoint or re-initialises it with its initializer).
"""
import contextlib
import threading

import keras
import tensorflow as tf

from tfmodels.core import host_memory

_state = threading.local()
SKIP_UNINITIALISED_BYTES = 1 << 20


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
            return placeholder(shape, dtype or "float32")
        return self.inner(shape, dtype=dtype)

    def get_config(self):
        return {"inner": keras.initializers.serialize(self.inner)}

    @classmethod
    def from_config(cls, config):
        return cls(keras.initializers.deserialize(config["inner"]))


def placeholder(shape, dtype):
    """What a skipped initializer returns: zeros when small, uninitialised (unbacked) memory when large."""
    dtype = tf.as_dtype(keras.backend.standardize_dtype(dtype))
    shape = [int(d) for d in shape]
    size = 1
    for d in shape:
        size *= d
    if size * dtype.size < SKIP_UNINITIALISED_BYTES:
        return tf.zeros(shape, dtype=dtype)
    if not tf.executing_eagerly():  # inside a graph (a tf.function, some strategies): numpy cannot help there
        return tf.raw_ops.Empty(shape=shape, dtype=dtype, init=False)
    # Numpy memory, not tf.raw_ops.Empty: TensorFlow's CPU allocator would pool it (see core.host_memory).
    return host_memory.tensor_from_numpy(host_memory.aligned_empty(shape, dtype.as_numpy_dtype))


def normal(stddev):
    """The truncated normal that Hugging Face models use for weights (`initializer_range`)."""
    return SkippableInitializer(keras.initializers.TruncatedNormal(stddev=stddev))


def constant(value):
    return SkippableInitializer(keras.initializers.Constant(value))


zeros = "zeros"
ones = "ones"
