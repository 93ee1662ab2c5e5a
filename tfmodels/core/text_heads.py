"""The standard heads of a BERT-style text family, written once: the bare model, masked LM, sequence
classification, multiple choice, token classification and extractive QA.

A family declares its pretrained base (a `TextPreTrainedModel` with its main layer class and the head options
below, which are where the references differ) and gets its six classes from `standard_heads`:

    (YosoModel, YosoForMaskedLM, YosoForSequenceClassification, YosoForMultipleChoice,
     YosoForTokenClassification, YosoForQuestionAnswering) = standard_heads(YosoPreTrainedModel)

Each generated class is `<Prefix><Head>(<Head mixin>, <task mixin>, YosoPreTrainedModel)`, defined in the
family's module. A family whose head differs writes that class itself from the same mixins plus its override
(Longformer's default global attention, XLM-RoBERTa-XL's input orders).
"""
import tensorflow as tf

from tfmodels.core import layers, serialization, tasks
from tfmodels.core.encoder import classifier_dropout
from tfmodels.core.heads import ClassificationHead, LMHead
from tfmodels.core.modeling import PreTrainedModel

TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "head_mask", "inputs_embeds")


class TextPreTrainedModel(PreTrainedModel):
    """Pretrained base of a text family built on core.encoder. Head options (the references' differences):

    - `lm_head_path`: where the masked-LM head lives ("cls"; "cls.predictions" nests it one level deeper);
      `lm_head_activation`: its transform's activation (None: config.hidden_act);
    - `classifier_style`: "first_token" (dropout, dense, activation, dropout, out_proj on the first token, with
      `classifier_activation`, None: config.hidden_act) or "pooled" (dropout, classifier on the pooler output);
    - `multiple_choice_style`: "first_token" (pre_classifier, ReLU, classifier) or "pooled" (dropout, classifier);
      `multiple_choice_dropout`: the config attribute giving that dropout (None: HF's classifier_dropout rule);
    - `token_loss_ignores_padding`: the token-classification loss skips attention_mask 0 positions;
    - `qa_forces_two_labels`: see tasks.QuestionAnsweringTask.
    """

    main_layer_class = None
    input_names = TEXT_INPUTS
    lm_head_path = "cls"
    lm_head_activation = None
    classifier_style = "first_token"
    classifier_activation = None
    multiple_choice_style = "first_token"
    multiple_choice_dropout = None
    token_loss_ignores_padding = False
    qa_forces_two_labels = False
    supports_head_pruning = True  # (core.model_methods.prune_heads)

    def add_main_layer(self, add_pooling_layer=False):
        setattr(self, self.base_model_prefix, self.main_layer_class(
            self.config, add_pooling_layer=add_pooling_layer, name=self.base_model_prefix))

    @property
    def word_embeddings(self):
        return self.base_model.embeddings.word_embeddings.embeddings


class Nest(serialization.ConfigLayer):
    """Holds one layer under a given attribute name (HF's cls.predictions), and calls it."""

    def __init__(self, attribute, inner, **kwargs):
        super().__init__(**kwargs)
        self.attribute = attribute
        setattr(self, attribute, inner)

    def call(self, inputs):
        return getattr(self, self.attribute)(inputs)


class BaseModelHead:
    def __init__(self, config, add_pooling_layer=True, **kwargs):
        super().__init__(config, **kwargs)
        self.add_main_layer(add_pooling_layer)


class MaskedLMHead:
    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        config = self.config
        self.add_main_layer()
        tied = (lambda: self.word_embeddings) if config.tie_word_embeddings else None
        outer, *inner = self.lm_head_path.split(".")
        head = LMHead(config.hidden_size, config.vocab_size, config.layer_norm_eps, config.initializer_range,
                      activation=self.lm_head_activation or config.hidden_act, tied_embeddings=tied,
                      name=inner[0] if inner else outer)
        setattr(self, outer, Nest(inner[0], head, name=outer) if inner else head)
        self.lm_head_attribute = outer

    def head(self, base_outputs, inputs, training=False):
        return {"logits": getattr(self, self.lm_head_attribute)(base_outputs.last_hidden_state)}

    @property
    def output_embeddings_path(self):  # core.model_methods: get_output_embeddings
        return self.lm_head_path


class SequenceClassificationHead:
    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        config = self.config
        self.add_main_layer(self.classifier_style == "pooled")
        if self.classifier_style == "pooled":
            self.dropout = layers.dropout(classifier_dropout(config))
            self.classifier = layers.dense(config.num_labels, config.initializer_range, name="classifier")
        else:
            self.classifier = ClassificationHead(
                config.hidden_size, config.num_labels, classifier_dropout(config), config.initializer_range,
                activation=self.classifier_activation or config.hidden_act, name="classifier")

    def head(self, base_outputs, inputs, training=False):
        if self.classifier_style == "pooled":
            pooled = self.dropout(base_outputs.pooler_output, training=training)
            return {"logits": self.classifier(pooled)}
        return {"logits": self.classifier(base_outputs.last_hidden_state, training=training)}


class MultipleChoiceHead:
    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        config = self.config
        self.add_main_layer(self.multiple_choice_style == "pooled")
        if self.multiple_choice_style == "pooled":
            name = self.multiple_choice_dropout
            self.dropout = layers.dropout(getattr(config, name) if name else classifier_dropout(config))
        else:
            self.pre_classifier = layers.dense(config.hidden_size, config.initializer_range, name="pre_classifier")
        self.classifier = layers.dense(1, config.initializer_range, name="classifier")

    def head(self, base_outputs, inputs, training=False):
        if self.multiple_choice_style == "pooled":
            pooled = self.dropout(base_outputs.pooler_output, training=training)
        else:
            pooled = tf.nn.relu(self.pre_classifier(base_outputs.last_hidden_state[:, 0]))
        return {"logits": self.classifier(pooled)}


class TokenClassificationHead:
    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        config = self.config
        self.add_main_layer()
        self.dropout = layers.dropout(classifier_dropout(config))
        self.classifier = layers.dense(config.num_labels, config.initializer_range, name="classifier")

    @property
    def loss_ignores_padding(self):
        return self.token_loss_ignores_padding

    def head(self, base_outputs, inputs, training=False):
        return {"logits": self.classifier(self.dropout(base_outputs.last_hidden_state, training=training))}


class QuestionAnsweringHead:
    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.add_main_layer()
        self.qa_outputs = layers.dense(2, self.config.initializer_range, name="qa_outputs")

    def head(self, base_outputs, inputs, training=False):
        return {"logits": self.qa_outputs(base_outputs.last_hidden_state)}


STANDARD_HEADS = (
    ("Model", tasks.BaseModelTask, BaseModelHead, "The bare encoder: hidden states (and, asked, every layer's "
                                                  "hidden states and attentions)."),
    ("ForMaskedLM", tasks.MaskedLMTask, MaskedLMHead, "Masked LM head (decoder tied to the word embeddings)."),
    ("ForSequenceClassification", tasks.SequenceClassificationTask, SequenceClassificationHead,
     "Sequence classification / regression, per config.problem_type."),
    ("ForMultipleChoice", tasks.MultipleChoiceTask, MultipleChoiceHead,
     "Multiple choice: inputs [batch, num_choices, seq], one score per choice."),
    ("ForTokenClassification", tasks.TokenClassificationTask, TokenClassificationHead, "Per-token labels."),
    ("ForQuestionAnswering", tasks.QuestionAnsweringTask, QuestionAnsweringHead,
     "Extractive QA: start and end logits per token."),
)


def standard_heads(pretrained_class, suffixes=None):
    """The standard classes of a family (all six in STANDARD_HEADS order, or those of `suffixes` in that order),
    named after `pretrained_class` (`FooPreTrainedModel` -> `FooModel`, `FooForMaskedLM`, ...) and defined in
    its module."""
    prefix = pretrained_class.__name__[:-len("PreTrainedModel")]
    classes = []
    for suffix, task, head, doc in STANDARD_HEADS:
        if suffixes is not None and suffix not in suffixes:
            continue
        name = prefix + suffix
        namespace = {"__module__": pretrained_class.__module__, "__qualname__": name, "__doc__": doc}
        if task is tasks.BaseModelTask:
            namespace["output_class"] = pretrained_class.main_layer_class.output_class
        # The head mixin first: its head() and __init__ come before the task's.
        classes.append(type(name, (head, task, pretrained_class), namespace))
    return tuple(classes)
