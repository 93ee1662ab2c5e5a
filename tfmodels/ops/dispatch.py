"""Which implementation custom-op layers use.

- "auto": the compiled custom op when its library loads, else the pure-TF twin (with one warning naming why);
- "custom": the compiled op or an error;
- "reference": the pure-TF twin only (XLA, TPU, and SavedModel export for stock TF Serving).
"""
import contextlib
import os
import threading

MODES = ("auto", "custom", "reference")
_state = threading.local()


def _check(mode):
    if mode not in MODES:
        raise ValueError(f"op mode must be one of {MODES}, got {mode!r}")
    return mode


def get_op_mode():
    mode = getattr(_state, "mode", None)
    return mode if mode is not None else _check(os.environ.get("TFMODELS_OP_MODE", "auto"))


def set_op_mode(mode):
    _state.mode = _check(mode)


@contextlib.contextmanager
def op_mode(mode):
    previous = getattr(_state, "mode", None)
    _state.mode = _check(mode)
    try:
        yield
    finally:
        _state.mode = previous


def use_custom_op(family, fallback="its pure-TensorFlow twin instead, which gives the same results more slowly"):
    """Whether layers of `family` should call the compiled op now; loads it on first use.

    "reference" mode -> False. "custom" mode -> True, or RuntimeError saying why the op is unavailable.
    "auto" mode -> True when the library loads, else False with one warning naming the reason and `fallback`
    (what runs instead). Inside an XLA compilation the twin is always used: XLA cannot compile custom ops.
    """
    from tfmodels.core.logging import warn_once
    from tfmodels.ops.loader import OpLibrary

    mode = get_op_mode()
    if mode == "reference":
        return False
    if _inside_xla():
        if mode == "custom":
            raise RuntimeError(f"the '{family}' custom op cannot run inside an XLA (jit_compile) function; use "
                               "op mode 'auto' or 'reference' there")
        return False
    library = OpLibrary.get(family)
    if library.load() is not None:
        return True
    if mode == "custom":
        raise RuntimeError(f"the '{family}' custom op is unavailable: {library.error}")
    warn_once(f"op-fallback-{family}", f"the '{family}' custom op is unavailable ({library.error}); using "
              f"{fallback}. Run `tfmodels build-ops` to see the build error, or set TFMODELS_OP_MODE=reference to "
              "silence this.")
    return False


def with_twin_gradient(compiled, twin, *inputs):
    """compiled(*inputs) (a custom op without a gradient kernel), differentiated as twin(*inputs): the backward
    pass recomputes the forward pass with the twin's stock TF ops and takes their gradient."""
    import tensorflow as tf

    from tfmodels.core.gradients import custom_gradient

    @custom_gradient
    def run(*tensors):
        def gradient(grad_outputs):
            watched = list(tensors)
            with tf.GradientTape() as tape:
                tape.watch(watched)
                recomputed = twin(*watched)
            return tape.gradient(recomputed, watched, output_gradients=grad_outputs)
        return compiled(*tensors), gradient

    return run(*inputs)


def use_cpu_op(family, **fallback):
    """use_custom_op(family) (and its `fallback`) for an op with CPU kernels only (the fused inference ops:
    dense_attention, layer_norm, the fused sliding-window attention, dense_epilogue): False wherever TensorFlow
    sees a GPU to run on."""
    import tensorflow as tf
    if tf.config.list_logical_devices("GPU"):
        return False
    return use_custom_op(family, **fallback)


def op_module(family):
    return op_library(family).load()


def op_library(family):
    """The family's OpLibrary (its module, the path it was loaded from, or why it did not load)."""
    from tfmodels.ops.loader import OpLibrary
    return OpLibrary.get(family)


def _inside_xla():
    """True while tracing a function that XLA will compile (tf.function(jit_compile=True), Keras jit_compile)."""
    from tensorflow.python.framework import ops
    from tensorflow.python.ops import control_flow_util
    return control_flow_util.GraphOrParentsInXlaContext(ops.get_default_graph())
