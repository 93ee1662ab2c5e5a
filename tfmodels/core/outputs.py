"""Model output classes with attribute, key and index access, as the reference documents describe.

An output holds only the fields that were computed, in the documented order; a documented field that was not
requested reads as None through attribute access (as in HF) but is absent from keys and tuples. Outputs are
registered as tree nodes for Keras (optree, "keras" namespace) so that they flow through the functional API,
`fit` and `export`; `tf.nest` handles them natively as mappings.
"""
import collections

import optree

__all__ = [
    "ModelOutput", "define_output", "register_output", "BaseModelOutput", "BaseModelOutputWithPooling",
    "BaseModelOutputWithCrossAttentions",
    "BaseModelOutputWithPast", "BaseModelOutputWithPastAndCrossAttentions",
    "BaseModelOutputWithPoolingAndCrossAttentions", "MaskedLMOutput", "CausalLMOutput",
    "CausalLMOutputWithCrossAttentions", "SequenceClassifierOutput", "MultipleChoiceModelOutput",
    "TokenClassifierOutput", "QuestionAnsweringModelOutput", "ImageClassifierOutput", "SemanticSegmenterOutput",
]


class ModelOutput(collections.OrderedDict):
    """Base output. Subclasses list their documented fields in `fields`."""

    fields = ()

    def __init__(self, *args, **kwargs):
        # tf.nest and optree rebuild outputs from (key, value) pairs: accept that form too.
        super().__init__()
        items = list(collections.OrderedDict(*args).items()) + list(kwargs.items())
        present = dict(items)
        unknown = [k for k in present if self.fields and k not in self.fields]
        if unknown:
            raise ValueError(f"{type(self).__name__} has no field(s) {unknown}; fields: {list(self.fields)}")
        order = self.fields or tuple(present)
        for key in order:
            if key in present and present[key] is not None:
                super().__setitem__(key, present[key])

    def __getattr__(self, name):
        if name in self:
            return self[name]
        if name in type(self).fields:
            return None
        raise AttributeError(f"{type(self).__name__} has no field {name!r}")

    def __setattr__(self, name, value):
        if name in type(self).fields:
            self[name] = value
        else:
            super().__setattr__(name, value)

    def __getitem__(self, key):
        if isinstance(key, (int, slice)):
            return self.to_tuple()[key]
        return super().__getitem__(key)

    def __setitem__(self, key, value):
        if self.fields and key not in self.fields:
            raise KeyError(f"{type(self).__name__} has no field {key!r}")
        if value is None:
            self.pop(key, None)
            return
        # Keep the documented order when a field is set late.
        super().__setitem__(key, value)
        if self.fields:
            for name in [f for f in self.fields if f in self]:
                self.move_to_end(name)

    def to_tuple(self):
        return tuple(self.values())

    def __reduce__(self):
        return (type(self), (list(self.items()),))


def _flatten(output):
    return tuple(output.values()), tuple(output.keys()), tuple(output.keys())


def register_output(cls):
    optree.register_pytree_node(cls, _flatten, lambda keys, children: cls(zip(keys, children)),
                                namespace="keras")
    return cls


def define_output(name, fields, doc=""):
    """Create and register an output class with the given documented fields (families use this too)."""
    cls = type(name, (ModelOutput,), {"fields": tuple(fields), "__doc__": doc or f"{name}: {', '.join(fields)}"})
    return register_output(cls)


register_output(ModelOutput)

_HIDDEN = ("hidden_states", "attentions")

BaseModelOutput = define_output("BaseModelOutput", ("last_hidden_state",) + _HIDDEN)
BaseModelOutputWithPooling = define_output(
    "BaseModelOutputWithPooling", ("last_hidden_state", "pooler_output") + _HIDDEN)
# YOSO's and MRA's base-model output (HF names it so although neither has cross-attention).
BaseModelOutputWithCrossAttentions = define_output(
    "BaseModelOutputWithCrossAttentions", ("last_hidden_state",) + _HIDDEN + ("cross_attentions",))
BaseModelOutputWithPast = define_output(
    "BaseModelOutputWithPast", ("last_hidden_state", "past_key_values") + _HIDDEN)
BaseModelOutputWithPastAndCrossAttentions = define_output(
    "BaseModelOutputWithPastAndCrossAttentions",
    ("last_hidden_state", "past_key_values") + _HIDDEN + ("cross_attentions",))
BaseModelOutputWithPoolingAndCrossAttentions = define_output(
    "BaseModelOutputWithPoolingAndCrossAttentions",
    ("last_hidden_state", "pooler_output", "past_key_values") + _HIDDEN + ("cross_attentions",))
MaskedLMOutput = define_output("MaskedLMOutput", ("loss", "logits") + _HIDDEN)
CausalLMOutput = define_output("CausalLMOutput", ("loss", "logits") + _HIDDEN)
CausalLMOutputWithCrossAttentions = define_output(
    "CausalLMOutputWithCrossAttentions",
    ("loss", "logits", "past_key_values") + _HIDDEN + ("cross_attentions",))
SequenceClassifierOutput = define_output("SequenceClassifierOutput", ("loss", "logits") + _HIDDEN)
MultipleChoiceModelOutput = define_output("MultipleChoiceModelOutput", ("loss", "logits") + _HIDDEN)
TokenClassifierOutput = define_output("TokenClassifierOutput", ("loss", "logits") + _HIDDEN)
QuestionAnsweringModelOutput = define_output(
    "QuestionAnsweringModelOutput", ("loss", "start_logits", "end_logits") + _HIDDEN)
ImageClassifierOutput = define_output("ImageClassifierOutput", ("loss", "logits") + _HIDDEN)
SemanticSegmenterOutput = define_output("SemanticSegmenterOutput", ("loss", "logits") + _HIDDEN)
