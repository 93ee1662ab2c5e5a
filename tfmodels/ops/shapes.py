"""Input checks of the op wrappers, so that the pure-TF twins refuse what the compiled ops refuse.

`agree`: static shape agreement between an op's inputs (InvalidArgument in the op, ValueError here). Without it
a twin accepts some mismatches silently: where a dimension is zero its gathers and segment sums have nothing to
fail on. Sizes known only at run time are left to the compiled op's checks and to the twin's own ops.
`checked_range`: index or code values inside their table, for the twins and the GPU kernels."""
import tensorflow as tf


def _static(tensor, axis):
    shape = tf.TensorShape(getattr(tensor, "shape", None))
    if shape.rank is None or axis >= shape.rank:
        return None  # (a wrong rank is reported by the op's rank checks)
    return shape[axis]


def agree(op, *pairs):
    """Each pair ((name, tensor, axis), (name, tensor, axis)) must have equal static sizes where both are known."""
    for (name_a, a, axis_a), (name_b, b, axis_b) in pairs:
        size_a, size_b = _static(a, axis_a), _static(b, axis_b)
        if size_a is not None and size_b is not None and size_a != size_b:
            raise ValueError(f"{op}: {name_a} dimension {axis_a} ({size_a}) must equal {name_b} dimension {axis_b} "
                             f"({size_b})")


def checked_range(values, upper, message, lower=None):
    """`values` (int32) with every entry < upper (and >= lower, when given): an InvalidArgumentError at once when
    executing eagerly, else an assertion the returned tensor depends on. Indices or codes outside the range would
    land silently in another slot in the twins' gathers and segment sums."""
    if tf.executing_eagerly():
        if tf.size(values) > 0:
            low, high = int(tf.reduce_min(values)), int(tf.reduce_max(values))
            if high >= int(upper) or (lower is not None and low < lower):
                raise tf.errors.InvalidArgumentError(
                    None, None, f"{message}: got values in [{low}, {high}] (upper bound {int(upper)})")
        return values
    checks = [tf.debugging.assert_less(values, tf.cast(upper, values.dtype), message=message)]
    if lower is not None:
        checks.append(tf.debugging.assert_greater_equal(values, tf.cast(lower, values.dtype), message=message))
    with tf.control_dependencies(checks):
        return tf.identity(values)
