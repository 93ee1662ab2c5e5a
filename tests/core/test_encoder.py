"""The shared text-encoder skeleton (core.encoder, core.text_heads): one output class per name across families,
RoBERTa's position ids, the QA num_labels rule, and the heads every family gets from the same code."""
import importlib
import inspect
import os

import numpy as np
import pytest

import tfmodels
from tfmodels.core import encoder, outputs, text_heads

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "configs")


def test_one_class_per_exported_name():
    """No two different classes star-exported under one name (the last import used to win)."""
    modules = [outputs] + [importlib.import_module(f"tfmodels.models.{family}") for family in
                           ("yoso", "mra", "nystromformer", "longformer", "xlm_roberta_xl", "xlnet", "beit")]
    exported = {}
    for module in modules:
        names = getattr(module, "__all__", [n for n in vars(module) if not n.startswith("_")])
        for name in names:
            value = getattr(module, name)
            if inspect.isclass(value):
                assert exported.setdefault(name, value) is value, f"two classes named {name}"


def test_base_output_isinstance_across_families():
    ids = np.array([[5, 6, 7, 1]], np.int32)
    for model_class, config_file in ((tfmodels.YosoModel, "yoso-tiny.json"), (tfmodels.MraModel, "mra-tiny.json")):
        config = model_class.config_class.from_pretrained(os.path.join(CONFIGS, config_file))
        output = model_class(config)(ids, training=False)
        assert isinstance(output, tfmodels.BaseModelOutputWithCrossAttentions)
        assert type(output) is outputs.BaseModelOutputWithCrossAttentions


def test_roberta_position_ids_count_real_tokens_from_pad_plus_one():
    ids = np.array([[0, 5, 6, 1, 1], [0, 1, 7, 8, 9]], np.int32)
    positions = encoder.create_position_ids_from_input_ids(ids, padding_idx=1).numpy()
    np.testing.assert_array_equal(positions, [[2, 3, 4, 1, 1], [2, 1, 3, 4, 5]])
    after_cache = encoder.create_position_ids_from_input_ids(ids, padding_idx=1, past_key_values_length=3).numpy()
    np.testing.assert_array_equal(after_cache, [[5, 6, 7, 1, 1], [5, 1, 6, 7, 8]])


def test_one_question_answering_num_labels_rule():
    """Where the reference forces 2 labels, a copy of the config gets them; elsewhere other values are refused."""
    config = tfmodels.YosoConfig.from_pretrained(os.path.join(CONFIGS, "yoso-tiny.json"), num_labels=5)
    model = tfmodels.YosoForQuestionAnswering(config)
    assert model.config.num_labels == 2 and config.num_labels == 5
    for family in (tfmodels.MraForQuestionAnswering, tfmodels.NystromformerForQuestionAnswering):
        assert family.qa_forces_two_labels
    for refusing, config_file in ((tfmodels.XLMRobertaXLForQuestionAnswering, "xlm-roberta-xl-tiny.json"),
                                  (tfmodels.LongformerForQuestionAnswering, "longformer-tiny.json")):
        config = refusing.config_class.from_pretrained(os.path.join(CONFIGS, config_file), num_labels=3)
        with pytest.raises(ValueError, match="num_labels=2"):
            refusing(config)


def test_standard_heads_are_named_after_the_family_and_defined_in_its_module():
    classes = text_heads.standard_heads(tfmodels.YosoPreTrainedModel)
    assert [c.__name__ for c in classes] == ["Yoso" + suffix for suffix, *_ in text_heads.STANDARD_HEADS]
    assert all(c.__module__ == "tfmodels.models.yoso.modeling" for c in classes)
    assert tfmodels.YosoForMaskedLM.__qualname__ == "YosoForMaskedLM"
    # Every text family's standard heads come from the same mixins: no family writes its own.
    for prefix in ("Yoso", "Mra", "Nystromformer", "Longformer", "XLMRobertaXL"):
        for suffix, task, head, _ in text_heads.STANDARD_HEADS:
            model_class = getattr(tfmodels, prefix + suffix)
            assert issubclass(model_class, (head, task)), model_class
            assert issubclass(model_class, head), f"{model_class.__name__} does not use the shared {head.__name__}"
