"""Input normalisation and validation shared by every model.

Models accept, as the reference documents describe, keyword arguments, or as their first argument a single
tensor (the main input), a list/tuple in the documented order, or a dict keyed by the documented names.
Numpy arrays, Python lists and tf tensors of int32 or int64 are accepted alike; integer inputs become int32.

The one list-order rule (README "List inputs"): a list's elements take a class's `input_names` in order, then
its label names. `input_names` is the order of the class's HF TensorFlow twin where one existed (XLNet,
Longformer; TFData2VecVision for BEiT), else that of the closest HF TF sibling, TFRoberta (input_ids,
attention_mask, token_type_ids, position_ids, head_mask, inputs_embeds): YOSO, MRA, Nystromformer, XLM-R-XL.
An element whose dtype or rank cannot be the input it lands on is an error naming the order (`list_to_dict`).
"""
import numpy as np
import tensorflow as tf

# Inputs that hold integer ids or positions: converted to int32.
INTEGER_INPUTS = frozenset({
    "input_ids", "token_type_ids", "position_ids", "labels", "start_positions", "end_positions",
    "cls_index", "decoder_input_ids", "global_attention_mask", "input_mask", "bool_masked_pos",
})


def _to_tensor(name, value):
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, dict):
        return value
    if isinstance(value, (list, tuple)) and value and not isinstance(value[0], (int, float, bool, list)):
        # A structure of tensors (past_key_values, mems, hidden states): convert the leaves.
        return tf.nest.map_structure(lambda v: _to_tensor(name, v), value)
    if not tf.is_tensor(value) and not hasattr(value, "shape"):
        value = np.asarray(value)
    if isinstance(value, np.ndarray):
        if value.dtype == np.float64:
            value = value.astype(np.float32)
        value = tf.convert_to_tensor(value)
    if name in INTEGER_INPUTS and tf.is_tensor(value) and value.dtype in (tf.int64, tf.int16, tf.int8, tf.uint8):
        value = tf.cast(value, tf.int32)
    if name in INTEGER_INPUTS and tf.is_tensor(value) and value.dtype == tf.bool:
        value = tf.cast(value, tf.int32)
    return value


# What a list element must be for the input it lands on: its dtype kind ("integer" also takes bool, "number" any
# numeric dtype) and its rank, relative to the ids' rank ("+0": [batch, seq], or [batch, choices, seq] for
# multiple choice) or absolute. Inputs not listed (labels, mems, past_key_values) are not checked.
_LIST_ELEMENTS = {
    "input_ids": ("integer", "+0"), "attention_mask": ("number", "+0"), "token_type_ids": ("integer", "+0"),
    "position_ids": ("integer", "+0"), "global_attention_mask": ("number", "+0"), "input_mask": ("number", "+0"),
    "inputs_embeds": ("float", "+1"), "head_mask": ("float", (1, 2)), "perm_mask": ("number", (3,)),
    "target_mapping": ("number", (3,)), "encoder_hidden_states": ("float", (3,)),
    "encoder_attention_mask": ("number", (2,)), "pixel_values": ("float", (4,)), "bool_masked_pos": ("integer", (2,)),
}
_KINDS = {"integer": lambda d: d.is_integer or d.is_bool, "float": lambda d: d.is_floating,
          "number": lambda d: d.is_integer or d.is_bool or d.is_floating}


def _dtype_and_rank(value):
    if not tf.is_tensor(value) and not hasattr(value, "dtype"):
        value = np.asarray(value)
    return tf.as_dtype(value.dtype), value.shape.rank if tf.is_tensor(value) else len(value.shape)


def list_order(names):
    return "(" + ", ".join(names) + ")"


def list_to_dict(model_name, names, values):
    """The dict of a list input: element i is input names[i] (see the module docstring). An element whose dtype
    or rank cannot be that input raises a ValueError naming the order."""
    if len(values) > len(names):
        raise ValueError(f"{model_name} got {len(values)} list inputs but takes at most {len(names)}, in the order "
                         f"{list_order(names)}")
    mapped = dict(zip(names, values))
    present = {name: _dtype_and_rank(value) for name, value in mapped.items()
               if name in _LIST_ELEMENTS and value is not None and not isinstance(value, (bool, str))}
    ids_rank = present["input_ids"][1] if "input_ids" in present else None
    if ids_rank is None and "inputs_embeds" in present:
        ids_rank = present["inputs_embeds"][1] - 1
    for position, name in enumerate(names):
        if name not in present:
            continue
        dtype, rank = present[name]
        kind, ranks = _LIST_ELEMENTS[name]
        if isinstance(ranks, str):
            ranks = (ids_rank + int(ranks),) if ids_rank is not None else (rank,)
        if not _KINDS[kind](dtype) or rank not in ranks:
            expected = " or ".join(str(r) for r in ranks)
            raise ValueError(f"{model_name} takes list inputs in the order {list_order(names)}: element {position} "
                             f"is {name}, which must be {kind} of rank {expected}, but got {dtype.name} of rank "
                             f"{rank}. Pass a dict or keyword arguments to name the inputs.")
    return mapped


def normalize_inputs(model_name, input_names, option_names, main_input_name, inputs, kwargs):
    """Return (tensors, options): tensors maps every documented input name to a tensor or None.

    input_names: the documented tensor inputs in documented order (labels included).
    option_names: python-level switches (output_attentions, return_dict, ...), taken from kwargs only.
    """
    values = {}
    if isinstance(inputs, dict):
        values.update(inputs)
    elif isinstance(inputs, (list, tuple)):
        values.update(list_to_dict(model_name, input_names, inputs))
    elif inputs is not None:
        values[main_input_name] = inputs
    for key, value in kwargs.items():
        if key in values and values[key] is not None and value is not None:
            raise ValueError(f"{model_name} got {key!r} twice (in the first argument and as a keyword)")
        if value is not None or key not in values:
            values[key] = value
    options = {name: values.pop(name) for name in option_names if name in values}
    unknown = [k for k in values if k not in input_names]
    if unknown:
        raise ValueError(f"{model_name} got unexpected input(s) {unknown}; it accepts "
                         f"{', '.join(input_names)} and options {', '.join(option_names)}")
    tensors = {name: _to_tensor(name, values.get(name)) for name in input_names}
    return tensors, options


# ----------------------------------------------------------------------------------------------------------
# Validation. Static checks raise ValueError at trace time; dynamic ones use tf.debugging (which raise
# InvalidArgumentError with the same message eagerly and in graphs; XLA drops them).

def check_rank(name, tensor, ranks):
    ranks = (ranks,) if isinstance(ranks, int) else tuple(ranks)
    rank = tensor.shape.rank
    if rank is not None and rank not in ranks:
        expected = " or ".join(str(r) for r in ranks)
        raise ValueError(f"{name} must have rank {expected}, got shape {tensor.shape}")


def check_ids_in_range(name, ids, upper, what="vocab_size"):
    """0 <= ids < upper. (On GPU an out-of-range gather silently gives zeros: we never let that happen.)"""
    if tf.executing_eagerly() and isinstance(ids, tf.Tensor):
        if tf.size(ids) > 0:
            low, high = int(tf.reduce_min(ids)), int(tf.reduce_max(ids))
            if low < 0 or high >= upper:
                bad = high if high >= upper else low
                raise ValueError(f"{name} contains id {bad}, outside [0, {upper}) ({what}={upper})")
        return ids
    with tf.control_dependencies([
        tf.debugging.assert_less(ids, tf.cast(upper, ids.dtype), message=f"{name} contains ids >= {what} ({upper})"),
        tf.debugging.assert_non_negative(ids, message=f"{name} contains negative ids"),
    ]):
        return tf.identity(ids)


def check_same_shape(name_a, a, name_b, b):
    if a is None or b is None:
        return
    sa, sb = a.shape, b.shape
    if sa.rank is not None and sb.rank is not None:
        if sa.rank != sb.rank or not sa.is_compatible_with(sb):
            raise ValueError(f"{name_b} has shape {sb} but {name_a} has shape {sa}; they must match")
    if tf.executing_eagerly():
        if tuple(a.shape) != tuple(b.shape):
            raise ValueError(f"{name_b} has shape {tuple(b.shape)} but {name_a} has shape {tuple(a.shape)}")


def text_reference(input_ids, inputs_embeds, **aligned):
    """Checks a text encoder's inputs and returns a [batch, length] tensor to measure them by: exactly one of
    input_ids [batch, length] and inputs_embeds [batch, length, hidden]; every `aligned` tensor (masks, token
    types, positions; None ones are skipped) of rank 2 and the same shape."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("Pass exactly one of input_ids and inputs_embeds")
    if input_ids is not None:
        check_rank("input_ids", input_ids, 2)
        reference = input_ids
    else:
        check_rank("inputs_embeds", inputs_embeds, 3)
        reference = inputs_embeds[:, :, 0]
    for name, value in aligned.items():
        if value is not None:
            check_rank(name, value, 2)
            check_same_shape("input_ids", reference, name, value)
    return reference


def check_max_length(name, length, maximum, reason):
    """length (python int or scalar tensor) <= maximum."""
    if isinstance(length, int) or (tf.is_tensor(length) and tf.executing_eagerly()):
        if int(length) > maximum:
            raise ValueError(f"{name} has length {int(length)}, longer than the maximum {maximum} ({reason})")
        return []
    return [tf.debugging.assert_less_equal(length, tf.cast(maximum, length.dtype),
                                           message=f"{name} is longer than {maximum} ({reason})")]
