"""Pad a sequence axis to a multiple (attention window, block, landmark count) and remove the padding again."""
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
    static = tensor.shape[axis]
    if static is not None:
        shape = padded.shape.as_list()
        shape[axis] = static + (-static) % multiple
        padded = tf.ensure_shape(padded, shape)
    return padded, pad_len


def unpad(tensor, length, axis=1):
    """Keep the first `length` positions of `axis`."""
    begin = [0] * tensor.shape.rank
    size = [-1] * tensor.shape.rank
    size[axis] = length
    return tf.slice(tensor, begin, size)
