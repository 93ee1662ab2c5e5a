"""Activation functions by the names Hugging Face configs use (`hidden_act`, `ff_activation`, ...)."""
import math

import tensorflow as tf


def gelu(x):
    """Exact GELU (erf form), as torch.nn.functional.gelu."""
    return tf.nn.gelu(x, approximate=False)


def gelu_tanh(x):
    """The tanh approximation of GELU ("gelu_new" / "gelu_pytorch_tanh")."""
    return tf.nn.gelu(x, approximate=True)


def quick_gelu(x):
    return x * tf.sigmoid(tf.constant(1.702, x.dtype) * x)


def gelu_fast(x):
    coeff = tf.constant(math.sqrt(2.0 / math.pi), x.dtype)
    return 0.5 * x * (1.0 + tf.tanh(coeff * x * (1.0 + tf.constant(0.044715, x.dtype) * x * x)))


def mish(x):
    return x * tf.tanh(tf.nn.softplus(x))


def linear(x):
    return x


ACT2FN = {
    "gelu": gelu,
    "gelu_python": gelu,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "gelu_fast": gelu_fast,
    "quick_gelu": quick_gelu,
    "relu": tf.nn.relu,
    "relu6": tf.nn.relu6,
    "silu": tf.nn.silu,
    "swish": tf.nn.silu,
    "tanh": tf.tanh,
    "sigmoid": tf.sigmoid,
    "mish": mish,
    "linear": linear,
}


def get_activation(name):
    """The activation called `name`; a clear error for names we do not know."""
    if callable(name):
        return name
    try:
        return ACT2FN[name]
    except KeyError:
        raise ValueError(f"Unknown activation {name!r}; supported: {', '.join(sorted(ACT2FN))}") from None
