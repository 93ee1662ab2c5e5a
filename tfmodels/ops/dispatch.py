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
