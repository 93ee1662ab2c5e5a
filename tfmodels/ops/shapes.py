"""Static shape agreement between an op's inputs, checked in its Python wrapper, so that the pure-TF twin refuses
what the compiled op refuses (InvalidArgument there, ValueError here). Without it a twin accepts some mismatches
silently: where a dimension is zero its gathers and segment sums have nothing to fail on. Sizes known only at run
time are left to the compiled op's checks and to the twin's own ops."""
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
