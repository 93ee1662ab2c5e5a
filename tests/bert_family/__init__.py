"""A plain BERT encoder built on the core skeleton: the eighth family of docs/adding_a_family.md, kept in the
tests (tests/bert_family/test_bert.py registers it and checks it against HF's BertModel heads)."""
from tests.bert_family.configuration import BertConfig
from tests.bert_family.modeling import (
    BertForMaskedLM, BertForMultipleChoice, BertForQuestionAnswering, BertForSequenceClassification,
    BertForTokenClassification, BertModel, BertPreTrainedModel)

from tfmodels.registry import FamilySpec as _FamilySpec  # noqa: E402

__all__ = ["BertConfig", "BertPreTrainedModel", "BertModel", "BertForMaskedLM", "BertForSequenceClassification",
           "BertForMultipleChoice", "BertForTokenClassification", "BertForQuestionAnswering"]

__family__ = _FamilySpec("bert", prefix="Bert")
