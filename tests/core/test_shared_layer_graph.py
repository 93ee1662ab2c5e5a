"""core.layers.SharedLayerGraph: an eager inference forward runs every layer of a stack through one graph
function, each layer with its own weights (the speed it exists for is measured by benchmarks/bench_large.py, not
here). On the families that share their layers' graph: XLM-RoBERTa-XL, XLNet and BEiT, and MRA and Nystromformer
through the BERT skeleton (core.encoder.TextMainLayer.layers_share_one_graph); not YOSO, whose layer index seeds
its hashing."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import tfmodels
from tests.models.beit import test_modeling as beit
from tests.models.mra import test_modeling as mra
from tests.models.nystromformer import test_modeling as nystromformer
from tests.models.xlm_roberta_xl.test_modeling import tiny_config
from tests.models.xlnet import test_modeling as xlnet
from tfmodels.core import layers


def _model(dtype, family="xlm_roberta_xl"):
    """A 3-layer model of `family` under `dtype`, built eagerly by a call on shorter inputs (images: the same
    ones), and its batch of 2 with padding. initializer_range 0.3: weights far enough apart that one layer's
    output differs from another's; seeded, so that each test sees the same weights."""
    keras.utils.set_random_seed(0)
    with layers.dtype_policy_scope(dtype):
        if family == "xlm_roberta_xl":
            config = tiny_config(num_hidden_layers=3, hidden_size=64, intermediate_size=96, initializer_range=0.3)
            model = tfmodels.XLMRobertaXLModel(config)
            inputs = _xlm_roberta_xl_inputs(config)
        elif family == "xlnet":
            config = xlnet.tiny_config(n_layer=3, initializer_range=0.3)
            model = tfmodels.XLNetModel(config)
            inputs = xlnet.make_inputs(tfmodels.XLNetModel, config, batch=2, length=11)
        elif family in ("mra", "nystromformer"):  # the BERT skeleton's families (Nystromformer: 11 > 4 landmarks)
            tests = {"mra": mra, "nystromformer": nystromformer}[family]
            config = tests.tiny_config(num_hidden_layers=3, initializer_range=0.3)
            model = getattr(tfmodels, tests.FAMILY.prefix + "Model")(config)
            inputs = tests.make_inputs(model.__class__, config, batch=2)
        else:
            config = beit.tiny_config(num_hidden_layers=3, initializer_range=0.3, use_relative_position_bias=True)
            model = tfmodels.BeitModel(config)
            inputs = beit.make_inputs(tfmodels.BeitModel, config, batch=2)
    inputs = {name: tf.constant(value) for name, value in inputs.items()}
    short = inputs if family == "beit" else {name: value[:, -2:] for name, value in inputs.items()}
    model(short)
    return model, inputs


def _xlm_roberta_xl_inputs(config):
    rng = np.random.RandomState(0)
    ids = rng.randint(3, config.vocab_size, (2, 11)).astype(np.int32)
    mask = np.ones_like(ids)
    ids[1, 7:], mask[1, 7:] = config.pad_token_id, 0  # padding in the second row
    return {"input_ids": ids, "attention_mask": mask}


def _stack(model):
    return [layer for layer in model._flatten_layers() if hasattr(layer, "_tfm_shared_graph")]


def _shared(model):
    stack = _stack(model)
    assert len(stack) == 3 and len({id(layer._tfm_shared_graph) for layer in stack}) == 1
    return stack[0]._tfm_shared_graph


def _float(x):
    return tf.cast(x, tf.float32).numpy()


def _unshared(model):
    """`model` with its layers' mark taken off: every eager call of it runs op by op."""
    for layer in _stack(model):
        del layer._tfm_shared_graph
    return model


def _float32_output(model, inputs):
    """The model's output computed op by op in float32 with its weights: what either half-precision order of work
    approximates."""
    with layers.dtype_policy_scope("float32"):
        reference = _unshared(model.__class__(model.config))
    reference(inputs)
    reference.set_weights([_float(weight) for weight in model.get_weights()])
    return reference(inputs).last_hidden_state.numpy()


@pytest.mark.parametrize("family, dtype", [("xlm_roberta_xl", "bfloat16"), ("xlnet", "bfloat16"), ("beit", "bfloat16"),
                                           ("mra", "bfloat16"), ("nystromformer", "bfloat16"),
                                           ("xlm_roberta_xl", "mixed_bfloat16"), ("xlm_roberta_xl", "float16")])
def test_every_layer_runs_its_own_weights_through_one_trace(family, dtype):
    model, inputs = _model(dtype, family)
    shared = _shared(model)
    assert all(shared.serves(layer, {}) for layer in _stack(model))
    before = shared.tracing_count
    eager = model(inputs).last_hidden_state
    assert shared.tracing_count == before + (family != "beit")  # three layers, one graph per new signature
    graph = tf.function(lambda: model(inputs).last_hidden_state)()
    # Both are the float32 stack's output up to half-precision rounding, in two orders of work: mean errors of
    # 0.004-0.03 on values of mean 0.8 (Nystromformer's pseudo-inverse amplifies them most), the shared call's
    # 0.75-1.5x the graph's over seeds. A stack run with the first layer's weights throughout is ~0.9 off.
    reference = _float32_output(model, inputs)
    eager_error, graph_error = (np.abs(_float(x) - reference).mean() for x in (eager, graph))
    assert eager_error < 2 * graph_error, (eager_error, graph_error)
    model(inputs)
    assert shared.tracing_count == before + (family != "beit")  # the same signature again: no new trace


def test_gradients_reach_each_layers_own_weights():
    """A tape over an eager inference call (saliency, probing) sees every layer's own weights used. Their values
    are not compared: bfloat16 gradients of two orders of work differ by more than their size here."""
    model, inputs = _model("bfloat16")
    weights = [layer.attention.self.query.kernel for layer in _stack(model)]
    count = _shared(model).tracing_count
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.cast(model(inputs).last_hidden_state, tf.float32) ** 2)
    assert _shared(model).tracing_count > count
    for gradient in tape.gradient(loss, weights):
        assert gradient is not None and np.abs(_float(gradient)).mean() > 0


@pytest.mark.parametrize("family, quantized", [("xlm_roberta_xl", False), ("xlm_roberta_xl", True), ("mra", False),
                                               ("xlnet", False)])
def test_float32_inference_shares_the_graph_within_float32_rounding(family, quantized):
    """Eager float32 inference, the reference's users' habit, runs through the shared graph too (int8-quantized
    layers included): a graph's numbers, within float32 rounding of the op-by-op call (parity's 1e-5)."""
    model, inputs = _model("float32", family)
    if quantized:
        model.quantize("int8")
    shared = _shared(model)
    before = shared.tracing_count
    eager = model(inputs).last_hidden_state.numpy()
    assert shared.tracing_count == before + 1
    np.testing.assert_allclose(eager, _unshared(model)(inputs).last_hidden_state.numpy(), rtol=1e-5, atol=1e-5)


def test_training_and_graphs_take_the_plain_call():
    model, inputs = _model("bfloat16")
    count = _shared(model).tracing_count
    model(inputs, training=True)
    tf.function(lambda: model(inputs).last_hidden_state)()
    assert _shared(model).tracing_count == count


def test_a_layer_whose_variables_differ_takes_its_plain_call():
    model, inputs = _model("bfloat16")
    graph = tf.function(lambda: model(inputs).last_hidden_state)
    _stack(model)[1].output_.dense.enable_lora(2)  # one layer with two more weights
    expected = graph()
    shared = _shared(model)
    assert not shared.serves(_stack(model)[1], {})
    assert shared.serves(_stack(model)[2], {})
    difference = np.abs(_float(model(inputs).last_hidden_state) - _float(expected))
    assert difference.mean() < 0.03


def test_saving_after_a_shared_call(tmp_path):
    """The mark is a plain object: neither Keras' .keras file nor tf.saved_model picks up the shared function."""
    model, inputs = _model("bfloat16")
    expected = _float(model(inputs).last_hidden_state)
    assert _shared(model).tracing_count
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    loaded({name: value[:, -2:] for name, value in inputs.items()})  # the original's history of input shapes
    np.testing.assert_array_equal(_float(loaded(inputs).last_hidden_state), expected)
    tf.saved_model.save(model, str(tmp_path / "saved"))
    restored = tf.saved_model.load(str(tmp_path / "saved"))
    assert not any("_run" in name or "SharedLayerGraph" in name for name in dir(restored))


def test_yoso_and_longformer_layers_are_not_shared():
    """YOSO's layer index seeds its hashing and Longformer's may set its window: their layers stay apart."""
    from tests.models.longformer.test_modeling import tiny_config as longformer_config
    from tests.models.yoso.test_modeling import tiny_config as yoso_config
    for model in (tfmodels.YosoModel(yoso_config()), tfmodels.LongformerModel(longformer_config())):
        assert not any(hasattr(layer, "_tfm_shared_graph") for layer in model._flatten_layers())
