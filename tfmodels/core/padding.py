"""Pad a sequence axis to a multiple (attention window, block, landmark count) and remove the padding again.

Both keep the static rank and every static dimension they can: with a dynamic length (a Keras functional model
on `keras.Input((None,))`) a pad or slice by tensor amounts would otherwise lose the feature sizes too, and the
layers built on the result (a pooler, a user's Dense) could not infer their kernels' shapes."""
import tensorflow as tf


def pad_amount(length, multiple):
    """How many positions to add so that `length` becomes a multiple of `multiple` (python int or tensor)."""
    return (multiple - length % multiple) % multiple


def pad_to_multiple(tensor, multiple, axis=1, value=0):
    """Pad `tensor` along `axis` at the end to a multiple of `multiple`. Returns (padded, pad_len)."""
    length = tf.shape(tensor)[axis]
    pad_len = pad_amount(length, multiple)
    rank = tensor.shape.rank
    paddings = [[0, 0]] * rank
    paddings[axis] = [0, pad_len]
    padded = tf.pad(tensor, paddings, constant_values=tf.cast(value, tensor.dtype))
    shape = tensor.shape.as_list()
    static = shape[axis]
    shape[axis] = None if static is None else static + pad_amount(static, multiple)
    return tf.ensure_shape(padded, shape), pad_len


def unpad(tensor, length, axis=1):
    """Keep the first `length` positions of `axis` (python int or scalar tensor). A strided slice, not tf.slice:
    its shape inference keeps the other static dimensions where a slice by a size tensor forgets them all."""
    index = [slice(None)] * tensor.shape.rank
    index[axis] = slice(None, length)
    return tensor[tuple(index)]
