"""Layer normalisation as one fused CPU op (custom_ops/layer_norm), for bfloat16 and float32 inference.

Keras' LayerNormalization is about ten TensorFlow ops, each a pass over the tensor in memory; on bfloat16 inputs
the casts around its float32 arithmetic make it a tenth of a large model's eager forward pass, and in float32 it
took ~1.2 ms per [4096, 256] tensor in a graph on a 2-core EPYC where the op takes ~0.4 ms. The op computes the
same float32 arithmetic (tf.nn.moments' two-pass mean and variance, then gamma and beta) in one pass over each row
and rounds once. core.layers.LayerNormalization calls it when `use_fused_layer_norm` says so and is otherwise
Keras' layer, which is the op's twin: the tests compare the two, and the op's gradient recomputes the twin.
"""
import tensorflow as tf

from tfmodels.ops import dispatch

FAMILY = "layer_norm"


def use_fused_layer_norm(inputs):
    """Whether `fused_layer_norm` may run here: bfloat16 or float32 inputs, no GPU to run on, and the op mode allows the
    compiled op (in "auto" mode a library that fails to load gives one warning and False). The caller checks
    the axis (the last one, of a known rank)."""
    if inputs.dtype not in (tf.bfloat16, tf.float32):
        return False
    return dispatch.use_cpu_op(FAMILY)


def fused_layer_norm(inputs, gamma, beta, epsilon, twin):
    """Normalises `inputs` (bfloat16 or float32) over the last axis with the compiled op: gamma * (x - mean) /
    sqrt(variance + epsilon) + beta in float32, rounded once. `twin(inputs, gamma, beta)` computes the same with
    stock TF ops (gamma and beta as float32 tensors); the gradient differentiates it."""
    module = dispatch.op_module(FAMILY)
    return dispatch.with_twin_gradient(
        lambda x, scale, offset: module.tf_models_layer_norm(x, scale, offset, epsilon=float(epsilon)), twin,
        inputs, tf.cast(gamma, tf.float32), tf.cast(beta, tf.float32))
