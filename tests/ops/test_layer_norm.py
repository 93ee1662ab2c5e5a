"""The fused layer-norm op (custom_ops/layer_norm) against its twin, Keras' LayerNormalization: bfloat16 and
float32 outputs (the same float32 arithmetic in another order: at most one bfloat16 rounding step apart, or a few
float32 ones), gradients, NaN / Inf, bad inputs, dynamic shapes, and which path core.layers.LayerNormalization
takes (bfloat16 or float32 inference: the op; float16, training, another axis: Keras). Random shapes, NaN / Inf and bad inputs are also fuzzed
(tests/ops/fuzz_ops.py)."""
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import graph_op_types
from tfmodels.core import layers
from tfmodels.ops import dispatch, layer_norm

RNG = np.random.RandomState(0)


@pytest.fixture(scope="module", autouse=True)
def compiled_op():
    with dispatch.op_mode("custom"):
        assert dispatch.use_custom_op(layer_norm.FAMILY), "the layer_norm op must build here"


def _layer(width, dtype="bfloat16", **kwargs):
    layer = layers.layer_norm(1e-5, dtype=dtype, **kwargs)
    layer.build((None, width))
    layer.gamma.assign(tf.cast(RNG.randn(width), layer.gamma.dtype))
    layer.beta.assign(tf.cast(RNG.randn(width), layer.beta.dtype))
    return layer


# How far apart the op and Keras may be, relative: one bfloat16 rounding step; for float32, the mean and variance
# summed in another order (a few float32 steps of the terms).
STEPS = {tf.bfloat16: 2 ** -7, tf.float32: 2 ** -18}


def assert_within_a_rounding(got, expected, terms=None, floor=1e-6):
    """Values from the same float32 arithmetic in another order (or another approximation of a function): equal,
    or STEPS[dtype] (relative) plus `floor` (absolute) apart, with the same NaN / Inf pattern. `terms`: the
    magnitude of the terms each output sums (|x inv| + |beta - mean inv|), where they may cancel: the step is
    relative to it."""
    step = STEPS[tf.as_dtype(got.dtype)]
    got, expected = (tf.cast(t, tf.float32).numpy() for t in (got, expected))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(expected))
    finite = np.isfinite(expected)
    bound = step * np.maximum(np.abs(expected), 0 if terms is None else terms)[finite] + floor
    difference = np.abs(got[finite] - expected[finite])
    assert (difference <= bound).all(), np.max(difference)


def _run(layer, inputs, mode, training=None):
    calls = []
    original = layer_norm.fused_layer_norm

    def counting(*args):
        calls.append(1)
        return original(*args)
    layer_norm.fused_layer_norm = counting
    try:
        with dispatch.op_mode(mode):
            return layer(inputs, training=training), len(calls)
    finally:
        layer_norm.fused_layer_norm = original


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("shape", [(2, 7, 2560), (3, 17), (4, 1), (2, 0, 16), (1, 5, 768), (33,)])
def test_op_equals_keras_layer_norm(shape, dtype):
    inputs = tf.cast(RNG.randn(*shape) * 3 + 1, dtype)
    layer = _layer(shape[-1], dtype)
    fused, calls = _run(layer, inputs, "custom")
    twin, twin_calls = _run(layer, inputs, "reference")
    assert (calls, twin_calls) == (1, 0)
    assert fused.dtype == twin.dtype == dtype and fused.shape == twin.shape
    assert_within_a_rounding(fused, twin)
    if fused.shape.num_elements() > 1000 and dtype == "bfloat16":  # mostly bit-identical: summed in lanes
        assert np.mean(tf.cast(fused, tf.float32).numpy() == tf.cast(twin, tf.float32).numpy()) > 0.99


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_nonfinite_rows_give_keras_nan_pattern(dtype):
    values = RNG.randn(5, 40).astype(np.float32)
    values[1, 3], values[2, 0], values[3, 39] = np.nan, np.inf, -np.inf
    inputs = tf.cast(values, dtype)
    layer = _layer(40, dtype)
    assert_within_a_rounding(_run(layer, inputs, "custom")[0], _run(layer, inputs, "reference")[0])


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_gradients_are_the_twins(dtype):
    inputs = tf.cast(RNG.randn(2, 9, 48), dtype)
    weights = tf.cast(RNG.randn(2, 9, 48), tf.float32)
    layer = _layer(48, dtype)
    gradients = {}
    for mode in ("custom", "reference"):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            loss = tf.reduce_sum(tf.cast(_run(layer, inputs, mode)[0], tf.float32) * weights)
        gradients[mode] = tape.gradient(loss, [inputs, layer.gamma, layer.beta])
    for fused, twin in zip(gradients["custom"], gradients["reference"]):
        np.testing.assert_array_equal(tf.cast(fused, tf.float32).numpy(), tf.cast(twin, tf.float32).numpy())


@pytest.mark.parametrize("case", ["float32", "float16", "training", "not the last axis", "no beta", "mixed_bfloat16"])
def test_which_path_the_layer_takes(case):
    width, dtype, kwargs, training = 24, "bfloat16", {}, None
    if case in ("float32", "float16"):
        dtype = case
    elif case == "training":
        training = True
    elif case == "not the last axis":
        kwargs = {"axis": 1}
    elif case == "no beta":
        kwargs = {"center": False}
    elif case == "mixed_bfloat16":
        dtype = "mixed_bfloat16"  # float32 variables, bfloat16 compute: the op
    layer = layers.layer_norm(1e-5, dtype=dtype, **kwargs)
    inputs = tf.cast(RNG.randn(3, width, width), layer.compute_dtype)
    outputs, calls = _run(layer, inputs, "custom", training)
    assert calls == (1 if case in ("mixed_bfloat16", "float32") else 0), case
    expected, _ = _run(layer, inputs, "reference", training)
    if case == "float16":
        np.testing.assert_array_equal(outputs.numpy(), expected.numpy())
    else:
        assert_within_a_rounding(outputs, expected)


def test_bad_inputs_raise():
    module = dispatch.op_module(layer_norm.FAMILY)
    x = tf.cast(RNG.randn(2, 8), tf.bfloat16)
    with pytest.raises(tf.errors.InvalidArgumentError, match="gamma"):
        module.tf_models_layer_norm(x, tf.ones([7]), tf.zeros([8]), epsilon=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="beta"):
        module.tf_models_layer_norm(x, tf.ones([8]), tf.zeros([8, 1]), epsilon=1e-5)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="rank"):
        module.tf_models_layer_norm(tf.constant(1.0, tf.bfloat16), tf.ones([1]), tf.zeros([1]), epsilon=1e-5)


def test_dynamic_shapes_in_a_graph():
    """Lengths unknown until run time (a SavedModel signature, Keras symbolic inputs): the op takes them."""
    layer = _layer(32)

    @tf.function(input_signature=[tf.TensorSpec([None, None, 32], tf.bfloat16)])
    def normalise(x):
        return layer(x)
    inputs = tf.cast(RNG.randn(2, 11, 32), tf.bfloat16)
    with dispatch.op_mode("custom"):
        got = normalise(inputs)
        assert "TFModels>LayerNorm" in graph_op_types(normalise)
    assert_within_a_rounding(got, _run(layer, inputs, "reference")[0])
