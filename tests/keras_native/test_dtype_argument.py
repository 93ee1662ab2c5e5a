"""`FooModel(config, dtype=...)`, the Keras habit: every sub-layer is made under that policy, as with
from_pretrained(dtype=...), and the global policy is left as it was."""
import keras
import numpy as np
import pytest

import tfmodels
from tests.models.beit import test_modeling as beit
from tests.models.xlm_roberta_xl import test_modeling as xlm_roberta_xl
from tests.models.yoso import test_modeling as yoso

CASES = [(tfmodels.XLMRobertaXLForMaskedLM, xlm_roberta_xl.tiny_config, {"input_ids": np.ones((2, 5), np.int32)}),
         (tfmodels.YosoModel, yoso.tiny_config, {"input_ids": np.ones((2, 5), np.int32)}),
         (tfmodels.BeitForImageClassification, beit.tiny_config,
          {"pixel_values": np.zeros((2, 3, 32, 32), np.float32)})]
CASES = [pytest.param(*case, id=case[0].__name__) for case in CASES]


@pytest.mark.parametrize("head, config, inputs", CASES)
@pytest.mark.parametrize("dtype, variables", [("bfloat16", "bfloat16"), ("mixed_bfloat16", "float32"),
                                              (keras.DTypePolicy("float16"), "float16")], ids=["bf16", "mixed", "fp16"])
def test_every_layer_takes_the_models_dtype(head, config, inputs, dtype, variables):
    compute = variables if variables != "float32" else "bfloat16"
    model = head(config(), dtype=dtype)
    outputs = model(inputs)
    assert keras.config.dtype_policy().name == "float32"
    assert {weight.dtype for weight in model.weights} == {variables}
    layers = [layer for layer in model._flatten_layers() if layer.weights]
    assert layers and {layer.compute_dtype for layer in layers} == {compute}
    assert outputs[0].dtype == compute
    # The Keras round trip builds the same model
    again = head.from_config(model.get_config())
    again(inputs)
    assert [(w.path, w.dtype) for w in again.weights] == [(w.path, w.dtype) for w in model.weights]


def test_an_unknown_dtype_is_keras_error():
    with pytest.raises(ValueError, match="float8_nonsense"):
        tfmodels.YosoModel(yoso.tiny_config(), dtype="float8_nonsense")
