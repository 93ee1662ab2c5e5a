"""custom_gradient: tf.custom_gradient without its memory leak in graph mode.

In a graph (every tf.function trace: Keras's train, predict and serving functions, exports), tf.custom_gradient
registers the call's gradient function in TensorFlow's global gradient registry under a new name, and nothing
ever removes it. That function holds the traced graph's tensors, so every trace that reaches a custom gradient
keeps its whole FuncGraph, the concrete functions made from it, the layers it closes over and any constants,
for the life of the process: a retrace per input shape, a model built and traced per test, or a second export
each leak their graphs (~60 MB per tiny model and trace set in our tests, the weights themselves for an export
that folds them in). Each use in tfmodels is a custom op's twin gradient or a hand-written backward pass, so
every model has one.

Here the registry keeps a small stand-in that reaches the gradient function through a weak reference to its
graph; the graph holds the function, and when the graph is collected the registry entry goes too. Semantics are
TensorFlow's own (tf.custom_gradient runs unchanged; only where its gradient function lives changes), in eager
mode (which registers nothing) and in graphs, for tapes, tf.gradients and SavedModel's traced gradients alike.
Why our own: TF has no public way to unregister a gradient (its Registry refuses a name twice and has no
removal), so this reaches its registry's dict; if TF's internals change, the stand-in is skipped with one warning
and the gradient stays as TF registered it (correct, only leaked).
"""
import functools
import weakref

import tensorflow as tf
from tensorflow.python.framework import ops

# Where each graph keeps the gradient functions of its custom-gradient calls: {registry name: function}.
_FUNCTIONS_ATTRIBUTE = "_tfmodels_custom_gradients"


def custom_gradient(f):
    """tf.custom_gradient(f) whose registered gradient lives as long as the graph it was traced in."""
    wrapped = tf.custom_gradient(f)

    @functools.wraps(f)
    def call(*args):
        result = wrapped(*args)
        if not tf.executing_eagerly():
            _tie_to_graph(result)
        return result

    return call


def _tie_to_graph(result):
    """Move the gradient function that tf.custom_gradient registered for `result` (the IdentityN op that its
    outputs come from, marked with the registry name) from the global registry onto that op's graph."""
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
