"""core.gradients.custom_gradient: tf.custom_gradient's gradients, without keeping every traced graph alive."""
import gc
import logging
import os
import subprocess
import sys
import weakref

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import ops

import tfmodels
from tfmodels.core import gradients, logging as tfm_logging
from tfmodels.ops import dispatch


@gradients.custom_gradient
def _clipped_square(x):
    """x^2 with the gradient 2x clipped to [-1, 1] (a gradient autodiff would not give)."""
    def gradient(upstream):
        return upstream * tf.clip_by_value(2.0 * x, -1.0, 1.0)
    return tf.square(x), gradient


X = np.array([[-2.0, -0.25, 0.0], [0.3, 1.5, 4.0]], np.float32)
EXPECTED_GRADIENT = 3.0 * np.clip(2.0 * X, -1.0, 1.0)


def _gradient(x):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = 3.0 * _clipped_square(x)
    return tape.gradient(y, x)


def _registry_names():
    return set(ops.gradient_registry.list())


def test_gradients_are_the_custom_ones_eagerly_in_graphs_and_under_tf_gradients():
    x = tf.constant(X)
    np.testing.assert_allclose(_gradient(x), EXPECTED_GRADIENT)
    np.testing.assert_allclose(tf.function(_gradient)(x), EXPECTED_GRADIENT)
    np.testing.assert_allclose(tf.function(_gradient, jit_compile=True)(x), EXPECTED_GRADIENT)
    in_graph = tf.function(lambda x: tf.gradients(3.0 * _clipped_square(x), x)[0])
    np.testing.assert_allclose(in_graph(x), EXPECTED_GRADIENT)
    # second order: the tape records the custom gradient's own ops
    @tf.function
    def second(x):
        with tf.GradientTape() as outer:
            outer.watch(x)
            first = _gradient(x)
        return outer.gradient(first, x)
    np.testing.assert_allclose(second(x), np.where(np.abs(2.0 * X) < 1.0, 6.0, 0.0))


def _square(x):
    return tf.square(x), lambda upstream: 2.0 * x * upstream


def _sine(x):
    return tf.sin(x)


@pytest.mark.parametrize("tfs, ours", [(tf.custom_gradient(_square), gradients.custom_gradient(_square)),
                                       (tf.recompute_grad(_sine), gradients.recompute_grad(_sine))],
                         ids=["custom_gradient", "recompute_grad"])
def test_a_traced_graph_and_its_registry_entry_go_when_the_function_goes(tfs, ours):
    """TF's own keeps each trace's FuncGraph in its gradient registry for good (the control); ours lets it be
    collected with its function, and the registry is as it was."""
    def traced_graph_ref(wrapped):
        def traced(x):
            return wrapped(x)

        graph = tf.function(traced).get_concrete_function(tf.TensorSpec([None], tf.float32)).graph
        return weakref.ref(graph)

    gc.collect()
    before = _registry_names()
    leaked = traced_graph_ref(tfs)
    gc.collect()
    assert leaked() is not None and len(_registry_names() - before) == 1

    before = _registry_names()
    collected = [traced_graph_ref(ours) for _ in range(3)]
    gc.collect()
    assert all(ref() is None for ref in collected)
    assert _registry_names() == before


@pytest.mark.parametrize("style", ["eager", "graph", "xla"])
def test_recompute_grad_gives_autodiffs_gradients(style):
    """Gradient checkpointing of a function of its arguments and of a layer's weights: the gradients of both are
    autodiff's; the forward pass runs once, the backward pass runs it again."""
    import keras
    dense = keras.layers.Dense(3, activation="tanh")
    dense.build((None, 3))
    runs = []

    def block(x, scale):
        runs.append(1)
        return dense(x) * scale + tf.sin(x)

    def gradient(function):
        x, scale = tf.constant(X), tf.constant(0.7)
        with tf.GradientTape() as tape:
            tape.watch([x, scale])
            y = tf.reduce_sum(function(x, scale) * x)
        return tape.gradient(y, [x, scale] + dense.trainable_variables)

    run = {"eager": gradient, "graph": tf.function(gradient), "xla": tf.function(gradient, jit_compile=True)}[style]
    got = run(gradients.recompute_grad(block))
    assert len(runs) == 2
    want = gradient(block)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("gradient_checkpointing", [False, True])
def test_a_model_traced_again_and_again_keeps_no_old_graph(gradient_checkpointing):
    """A model whose every layer norm runs the custom op with its twin gradient (and, with gradient
    checkpointing, every layer recomputed), traced for training in graphs per new input shape and dropped:
    nothing of it stays."""
    def train_step_graph(length):
        config = tfmodels.NystromformerConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                              num_attention_heads=2, intermediate_size=20, num_landmarks=4,
                                              segment_means_seq_len=8, max_position_embeddings=40,
                                              gradient_checkpointing=gradient_checkpointing)
        model = tfmodels.NystromformerForSequenceClassification(config)

        @tf.function
        def step(ids):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(model({"input_ids": ids}, training=True).logits)
            return tape.gradient(loss, model.trainable_variables)

        grads = step(tf.ones([2, length], tf.int32))
        named = {v.path: g for v, g in zip(model.trainable_variables, grads) if g is not None}
        assert any("LayerNorm/gamma" in name for name in named) and all(np.isfinite(tf.convert_to_tensor(g)).all() for g in named.values())
        return weakref.ref(model), weakref.ref(step.get_concrete_function(tf.ones([2, length], tf.int32)).graph)

    gc.collect()
    before = _registry_names()
    refs = [train_step_graph(length) for length in (8, 12)]
    gc.collect()
    assert all(model() is None and graph() is None for model, graph in refs)
    assert _registry_names() == before


def test_saved_model_keeps_the_custom_gradient(tmp_path):
    """tf.saved_model.save traces each registered custom gradient (experimental_custom_gradients, on by default)
    while the function's graph is alive: the loaded function, in a fresh process, differentiates with it."""
    module = tf.Module()
    module.f = tf.function(lambda x: 3.0 * _clipped_square(x), input_signature=[tf.TensorSpec([None, 3])])
    module.f.get_concrete_function()
    path = str(tmp_path / "saved")
    tf.saved_model.save(module, path)
    code = ("import sys, numpy as np, tensorflow as tf\n"
            "f = tf.saved_model.load(sys.argv[1]).f\n"
            "x = tf.constant(np.array(sys.argv[2:], np.float32).reshape(2, 3))\n"
            "with tf.GradientTape() as tape:\n"
            "    tape.watch(x)\n"
            "    y = f(x)\n"
            "print(' '.join(str(v) for v in tape.gradient(y, x).numpy().ravel()))\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, "-c", code, path, *map(str, X.ravel())], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded_gradient = np.array(result.stdout.split(), np.float32).reshape(2, 3)
    np.testing.assert_allclose(loaded_gradient, EXPECTED_GRADIENT)


def test_without_the_registry_internals_one_warning_and_tfs_own_gradient(monkeypatch, caplog):
    """Where TF's registry is not as expected, the gradient stays as tf.custom_gradient registered it (correct,
    only kept), and one warning says so."""
    class RegistryWithoutItsDict:
        def __init__(self, registry):
            self.lookup, self.register, self.list = registry.lookup, registry.register, registry.list

    monkeypatch.setattr(ops, "gradient_registry", RegistryWithoutItsDict(ops.gradient_registry))
    monkeypatch.setattr(tfm_logging, "_already_warned", set())
    monkeypatch.setattr(logging.getLogger("tfmodels"), "propagate", True)  # for caplog
    with caplog.at_level(logging.WARNING, logger="tfmodels"):
        for _ in range(2):
            np.testing.assert_allclose(tf.function(_gradient)(tf.constant(X)), EXPECTED_GRADIENT)
    warnings = [r.getMessage() for r in caplog.records if "custom_gradient" in r.getMessage()]
    assert len(warnings) == 1 and "AttributeError" in warnings[0] and "kept" in warnings[0], warnings


def test_twin_gradients_of_custom_ops_in_graphs_equal_the_twins():
    """with_twin_gradient (every compiled op's backward pass) through the stand-in: the fused layer norm op's
    gradients in a graph equal autodiff of its twin."""
    from tfmodels.ops import layer_norm
    rng = np.random.RandomState(0)
    x = tf.constant(rng.randn(2, 5, 8).astype(np.float32))
    gamma = tf.constant(np.linspace(0.5, 1.5, 8, dtype=np.float32))
    beta = tf.constant(np.linspace(-0.2, 0.2, 8, dtype=np.float32))
    weights = tf.constant(rng.randn(2, 5, 8).astype(np.float32))

    def twin(x, gamma, beta):
        mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
        return gamma * (x - mean) * tf.math.rsqrt(variance + 1e-5) + beta

    def grads(norm):
        with tf.GradientTape() as tape:
            tape.watch([x, gamma, beta])
            loss = tf.reduce_sum(norm(x, gamma, beta) * weights)
        return tape.gradient(loss, [x, gamma, beta])

    with dispatch.op_mode("custom"):
        got = tf.function(lambda: grads(lambda *t: layer_norm.fused_layer_norm(*t, 1e-5, twin)))()
    for g, w in zip(got, grads(twin)):
        np.testing.assert_allclose(g, w, atol=1e-5)
