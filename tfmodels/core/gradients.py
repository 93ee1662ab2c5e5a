"""custom_gradient and recompute_grad: tf.custom_gradient and tf.recompute_grad without their memory leak in graph
mode.

In a graph (every tf.function trace: Keras's train, predict and serving functions, exports), tf.custom_gradient
registers the call's gradient function in TensorFlow's global gradient registry under a new name, and nothing
ever removes it. That function holds the traced graph's tensors, so every trace that reaches a custom gradient
keeps its whole FuncGraph, the concrete functions made from it, the layers it closes over and any constants,
for the life of the process: a retrace per input shape, a model built and traced per test, or a second export
each leak their graphs (~60 MB per tiny model and trace set in our tests, the weights themselves for an export
that folds them in). tf.recompute_grad is built on it, and registers one more in its backward pass. Each use in
tfmodels is a custom op's twin gradient, a hand-written backward pass or gradient checkpointing, so every model
has one.

Here the registry keeps a small stand-in that reaches the gradient function through a weak reference to its
graph; the graph holds the function, and when the graph is collected the registry entry goes too. custom_gradient
runs tf.custom_gradient unchanged (only where its gradient function lives changes), eagerly (which registers
nothing) and in graphs, for tapes, tf.gradients and SavedModel's traced gradients alike; recompute_grad is
tf.recompute_grad's algorithm on it. Why our own: TF has no public way to unregister a gradient (its Registry
refuses a name twice and has no removal), so this reaches its registry's dict; if TF's internals change, the
stand-in is skipped with one warning and the gradient stays as TF registered it (correct, only leaked).
"""
import weakref

import tensorflow as tf
from tensorflow.python.eager import record
from tensorflow.python.framework import ops

# Where each graph keeps the gradient functions of its custom-gradient calls: {registry name: function}.
_FUNCTIONS_ATTRIBUTE = "_tfmodels_custom_gradients"


def custom_gradient(f):
    """tf.custom_gradient(f) whose registered gradient lives as long as the graph it was traced in."""
    wrapped = tf.custom_gradient(f)

    def call(*args):  # not functools.wraps: AutoGraph would follow __wrapped__ and convert f, not call it
        result = wrapped(*args)
        if not tf.executing_eagerly():
            _tie_to_graph(result)
        return result

    return call


def recompute_grad(f):
    """Gradient checkpointing, as tf.recompute_grad(f) for positional tensor arguments: the forward pass runs
    unrecorded (no tape keeps its activations), the backward pass runs f again under a tape and differentiates
    that, with respect to the arguments and the variables f reads. Ours, on custom_gradient, because
    tf.recompute_grad's backward pass registers a second custom gradient where this module cannot reach it."""
    @custom_gradient
    def forward(*args):
        with record.stop_recording():
            result = f(*args)

        def backward(*upstream, variables=None):
            first = next((g for g in upstream if g is not None), None)
            inputs = [_after(arg, first) for arg in args]
            sources = inputs + list(variables or [])
            with tf.GradientTape() as tape:
                tape.watch(sources)
                recomputed = f(*inputs)
            grads = tape.gradient(recomputed, sources, output_gradients=list(upstream),
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
            if variables is None:
                return grads
            return grads[:len(inputs)], grads[len(inputs):]

        return result, backward

    return forward


def _after(tensor, upstream):
    """`tensor`, computed after `upstream` is: in a graph the recomputation must wait for the gradient to reach
    it, or it may run early and hold its activations as long as the forward pass would have. XLA ignores control
    dependencies, so this is a data dependency that the graph optimiser cannot fold: + 0 chosen by whether one
    element of `upstream` equals itself as a bool (always; NaN casts to True)."""
    if tf.executing_eagerly() or tensor.dtype == tf.bool or upstream is None:
        return tf.identity(tensor)
    element = tf.cast(tf.reduce_max(tf.reshape(upstream, [-1])[:1]), tf.bool)
    zero = tf.where(tf.equal(element, element), 0.0, float("nan"))
    return tensor + tf.cast(zero, tensor.dtype)


def _tie_to_graph(result):
    """Move the gradient function that tf.custom_gradient registered for `result` (the IdentityN op its outputs
    come from, marked with the registry name) from the global registry onto that op's graph: the registry keeps a
    stand-in that finds it through a weak reference to the graph, and loses it with the graph."""
    outputs = [t for t in tf.nest.flatten(result) if isinstance(t, tf.Tensor)]
    if not outputs:
        return
    op = outputs[0].op
    try:
        name = op.get_attr("_gradient_op_type").decode()
        entries = ops.gradient_registry._registry  # pylint: disable=protected-access
        function = entries.pop(name)["type"]
    except (ValueError, AttributeError, KeyError, TypeError) as error:
        from tfmodels.core.logging import warn_once
        warn_once("custom_gradient", f"tf.custom_gradient's registry entry was not found ({type(error).__name__}: "
                  f"{error}); its gradient functions stay registered, and each graph traced through one is kept "
                  "for the life of the process")
        return
    graph = op.graph
    if not hasattr(graph, _FUNCTIONS_ATTRIBUTE):
        setattr(graph, _FUNCTIONS_ATTRIBUTE, {})
    getattr(graph, _FUNCTIONS_ATTRIBUTE)[name] = function
    graph_ref = weakref.ref(graph)

    def stand_in(op, *grads):
        owner = graph_ref()
        if owner is None:  # only an op of a copy of a collected graph could still carry the name
            raise LookupError(f"the graph that registered the custom gradient {name} no longer exists")
        return getattr(owner, _FUNCTIONS_ATTRIBUTE)[name](op, *grads)

    ops.RegisterGradient(name)(stand_in)
    weakref.finalize(graph, entries.pop, name, None)
