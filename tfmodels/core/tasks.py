"""Task mixins: what a task head adds to a base model, written once for all families.

A family's head class is `class FooForMaskedLM(MaskedLMTask, FooPreTrainedModel)`; it creates its head layers
in `__init__` and implements `head(base_outputs, inputs, training) -> dict of head tensors` (e.g. logits). The
task supplies the labels it takes, the output class, the loss with the reference's semantics, and the
plumbing: base-model call, multiple-choice flattening, QA splitting, copying hidden states and attentions.
"""
import numpy as np
import tensorflow as tf

from tfmodels.core import losses, outputs as out


class BaseModelTask:
    """The bare model: returns the main layer's output."""

    is_base_model = True

    def forward(self, inputs, labels, options, training=False):
        return_dict = options.pop("return_dict", True)
        result = self.base_model(**inputs, **options, training=training)
        return result if return_dict else result.to_tuple()


_OPTION_FIELDS = {"output_hidden_states": "hidden_states", "output_attentions": "attentions"}


class HeadTask:
    """Shared forward pass of every task head.

    `head()` returns the head's output fields; keys starting with "_" are private to `task_loss` (e.g. the
    logits of an auxiliary head) and do not appear in the output. `base_options` are options the head needs
    from the base model whatever the caller asked (a head over intermediate layers needs
    output_hidden_states=True); the matching output fields appear only when the caller asked for them."""

    label_names = ("labels",)
    output_class = None
    base_options = {}

    def head(self, base_outputs, inputs, training=False):
        raise NotImplementedError(f"{type(self).__name__} must implement head()")

    def base_inputs(self, inputs):
        return inputs

    def postprocess(self, head_outputs, inputs):
        return head_outputs

    def has_labels(self, labels):
        return all(labels.get(name) is not None for name in self.label_names)

    def forward(self, inputs, labels, options, training=False):
        return_dict = options.pop("return_dict", True)
        labels = {k: v for k, v in labels.items() if v is not None}
        base_outputs = self.base_model(**self.base_inputs(inputs), **{**options, **self.base_options},
                                       training=training)
        head = self.postprocess(self.head(base_outputs, inputs, training=training), inputs)
        loss = self.task_loss(labels, head, inputs) if self.has_labels(labels) else None
        unrequested = {_OPTION_FIELDS[k] for k, v in self.base_options.items()
                       if k in _OPTION_FIELDS and v and not options.get(k)}
        fields = {k: v for k, v in base_outputs.items()
                  if k in self.output_class.fields and k not in head and k not in unrequested}
        fields.update({k: v for k, v in head.items() if not k.startswith("_")})
        fields["loss"] = loss
        result = self.output_class(**fields)
        return result if return_dict else result.to_tuple()


class MaskedLMTask(HeadTask):
    output_class = out.MaskedLMOutput

    def task_loss(self, labels, outputs, inputs):
        return losses.masked_lm_loss(labels["labels"], outputs["logits"])


class CausalLMTask(HeadTask):
    output_class = out.CausalLMOutputWithCrossAttentions

    def task_loss(self, labels, outputs, inputs):
        return losses.causal_lm_loss(labels["labels"], outputs["logits"])


class SequenceClassificationTask(HeadTask):
    output_class = out.SequenceClassifierOutput

    def task_loss(self, labels, outputs, inputs):
        return losses.sequence_classification_loss(labels["labels"], outputs["logits"], self.config.problem_type,
                                                   self.config.num_labels)


class ImageClassificationTask(SequenceClassificationTask):
    """Image classification: the loss of sequence classification (problem_type as for text), image outputs."""

    output_class = out.ImageClassifierOutput


class SemanticSegmentationTask(HeadTask):
    """Per-pixel classification. The head returns `logits` [batch, num_labels, height, width] (channels first, as
    the reference documents) and optionally `_auxiliary_logits` of the same layout. labels [batch, H, W]: the
    logits are upsampled bilinearly to the label size; pixels equal to config.semantic_loss_ignore_index are
    ignored; the auxiliary loss is added with weight config.auxiliary_loss_weight."""

    output_class = out.SemanticSegmenterOutput

    def task_loss(self, labels, outputs, inputs):
        if self.config.num_labels == 1:
            raise ValueError("The number of labels should be greater than one for semantic segmentation")
        ignore = self.config.semantic_loss_ignore_index
        loss = losses.semantic_segmentation_loss(labels["labels"], outputs["logits"], ignore)
        auxiliary = outputs.get("_auxiliary_logits")
        if auxiliary is not None:
            loss = loss + self.config.auxiliary_loss_weight * losses.semantic_segmentation_loss(
                labels["labels"], auxiliary, ignore)
        return loss


class TokenClassificationTask(HeadTask):
    output_class = out.TokenClassifierOutput
    # XLM-RoBERTa-XL (and RoBERTa-style heads) ignore padded positions in the loss; others do not.
    loss_ignores_padding = False

    def task_loss(self, labels, outputs, inputs):
        mask = inputs.get("attention_mask") if self.loss_ignores_padding else None
        return losses.token_classification_loss(labels["labels"], outputs["logits"], mask)


class MultipleChoiceTask(HeadTask):
    """Inputs [batch, num_choices, seq] are flattened to [batch * num_choices, seq] for the base model; the
    head returns one score per flattened row and the task reshapes them to [batch, num_choices]."""

    output_class = out.MultipleChoiceModelOutput
    # inputs whose trailing axes are features (not flattened past them)
    _feature_inputs = {"inputs_embeds": 2}

    def base_inputs(self, inputs):
        for name in ("input_ids", "inputs_embeds"):
            value = inputs.get(name)
            expected = 3 if name == "input_ids" else 4
            if value is not None and value.shape.rank is not None and value.shape.rank != expected:
                raise ValueError(f"{type(self).__name__}: {name} must have rank {expected} "
                                 f"[batch, num_choices, ...], got shape {value.shape}")
        flat = {}
        for name, value in inputs.items():
            if value is None or not tf.is_tensor(value) or value.shape.rank is None:
                flat[name] = value
                continue
            keep = self._feature_inputs.get(name, 1)
            if value.shape.rank < keep + 2:
                flat[name] = value
                continue
            tail = tf.shape(value)[2:]
            flat[name] = tf.reshape(value, tf.concat([[-1], tail], axis=0))
            flat[name].set_shape([None] + value.shape[2:].as_list())
        return flat

    def dummy_inputs(self):
        inputs = super().dummy_inputs()
        return {k: np.stack([v, v], axis=1) if k in ("input_ids", "attention_mask", "token_type_ids") else v
                for k, v in inputs.items()}

    def postprocess(self, head_outputs, inputs):
        reference = inputs.get("input_ids")
        if reference is None:
            reference = inputs.get("inputs_embeds")
        num_choices = tf.shape(reference)[1]
        logits = tf.reshape(head_outputs["logits"], [-1, num_choices])
        return {**head_outputs, "logits": logits}

    def task_loss(self, labels, outputs, inputs):
        return losses.multiple_choice_loss(labels["labels"], outputs["logits"])


class QuestionAnsweringTask(HeadTask):
    """The head returns `logits` [batch, seq, 2]; the task splits them into start and end logits.

    The one num_labels rule: a span head has two outputs. Where the reference sets config.num_labels = 2 itself
    (YOSO, MRA, Nyströmformer: their pretrained base sets `qa_forces_two_labels`), the model takes a copy of the
    config with 2 (the caller's config is left alone); elsewhere any other value is a ValueError naming the
    class."""

    output_class = out.QuestionAnsweringModelOutput
    label_names = ("start_positions", "end_positions")

    def __init__(self, config, **kwargs):
        if isinstance(config, dict):
            config = self.config_class.from_dict(config)
        if config.num_labels != 2:
            if not getattr(self, "qa_forces_two_labels", False):
                raise ValueError(f"{type(self).__name__} needs num_labels=2 (start, end), got {config.num_labels}")
            config = config.copy(num_labels=2)
        super().__init__(config, **kwargs)

    def postprocess(self, head_outputs, inputs):
        if "logits" not in head_outputs:
            return head_outputs
        logits = head_outputs.pop("logits")
        start_logits, end_logits = tf.unstack(logits, num=2, axis=-1)
        return {**head_outputs, "start_logits": start_logits, "end_logits": end_logits}

    def task_loss(self, labels, outputs, inputs):
        return losses.question_answering_loss(labels["start_positions"], labels["end_positions"],
                                              outputs["start_logits"], outputs["end_logits"])
