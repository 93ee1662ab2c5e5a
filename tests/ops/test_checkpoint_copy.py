"""The checkpoint loader's compiled copy (custom_ops/checkpoint, tfmodels/ops/checkpoint_copy.py) against its
twin, numpy's casting assignment and np.isfinite: the same bits, NaN payloads and rounding ties included, on any
number of threads; and the op modes (reference: numpy; auto without the library: numpy and one warning).
tests/ops/fuzz_ops.py fuzzes it (also under the sanitizers); tests/core/test_large.py loads through it."""
import logging

import ml_dtypes
import numpy as np
import pytest

from tfmodels.core import checkpoint as ckpt
from tfmodels.core import logging as tfm_logging
from tfmodels.ops import checkpoint_copy, dispatch
from tfmodels.ops.loader import OpLibrary

BF16 = np.dtype(ml_dtypes.bfloat16)


def _float32(bits):
    return np.array(bits, np.uint32).view(np.float32)


def test_float32_to_bfloat16_rounds_and_quiets_nans_as_ml_dtypes():
    """Round to nearest even (ties both ways, carries into the exponent, overflow to Inf) and NaNs of either sign
    with any payload, against ml_dtypes' cast; the source counted as np.isfinite counts it."""
    special = _float32([0x3f808000, 0x3f818000, 0x3f80ffff, 0x7f7fffff, 0xff7fffff, 0x7f800000, 0xff800000,
                        0x7f800001, 0xff800001, 0x7fc00000, 0x7fffffff, 0x00000001, 0x80000000, 0x007fffff])
    source = np.random.RandomState(0).randn(67, 70).astype(np.float32)
    source.reshape(-1)[::331][:special.size] = special
    for view in (source, source.T):
        with np.errstate(invalid="ignore"):
            expected = view.astype(BF16)
        got = np.zeros(view.shape, BF16)
        with dispatch.op_mode("custom"):
            count = checkpoint_copy.copy_counting(got, view)
        assert count == view.size - np.count_nonzero(np.isfinite(view)) == 6
        assert np.array_equal(got.view(np.uint16), expected.view(np.uint16))


@pytest.mark.parametrize("threads", [1, 3, 7])
@pytest.mark.parametrize("source, target", [(BF16, BF16), (BF16, np.float32), (np.float32, BF16),
                                            (np.float32, np.float32), (np.float16, np.float16)])
def test_transposed_copy_on_any_number_of_threads(monkeypatch, threads, source, target):
    """A Dense kernel's [out, in] -> [in, out] copy, ragged against the 64 x 64 tiles and the 8 x 8 / 4 x 4
    blocks, split across threads: numpy's bits, and the source's NaN / Inf count."""
    monkeypatch.setattr(checkpoint_copy, "_threads", lambda: threads)
    array = (np.random.RandomState(1).randn(203, 133) * 100).astype(source)
    array[0, 0], array[202, 132], array[64, 7] = np.nan, np.inf, -np.inf
    expected = np.ascontiguousarray(array.T, target)
    got = np.full(expected.shape, 7, target)
    with dispatch.op_mode("custom"):
        assert checkpoint_copy.copy_counting(got, array.T) == 3
    assert np.array_equal(got.view(np.uint8), expected.view(np.uint8))


def test_reference_mode_copies_with_numpy():
    array = np.ones((4, 5), np.float32)
    with dispatch.op_mode("reference"):
        assert checkpoint_copy.copy_counting(np.zeros((5, 4), np.float32), array.T) is None
        assert checkpoint_copy.count_nonfinite(array) is None
        got = np.zeros((5, 4), BF16)
        assert ckpt.copy_counting(got, array.T) == 0
    assert (got == 1).all()


def test_without_the_library_auto_mode_warns_once_and_numpy_copies(monkeypatch, caplog):
    """A library that does not load: one warning naming why and what copies instead, then numpy's results;
    "custom" mode raises with the reason."""
    broken = OpLibrary("checkpoint")
    broken._tried, broken._error = True, "RuntimeError: no C++ compiler (g++) on PATH to build the custom ops"
    monkeypatch.setitem(OpLibrary._registry, "checkpoint", broken)
    monkeypatch.setattr(tfm_logging, "_already_warned", set())
    monkeypatch.setattr(logging.getLogger("tfmodels"), "propagate", True)  # for caplog
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    with caplog.at_level(logging.WARNING, logger="tfmodels"):
        for _ in range(2):
            got = np.zeros((4, 3), np.float32)
            assert ckpt.copy_counting(got, array.T) == 0
            assert np.array_equal(got, array.T)
    warnings = [r.getMessage() for r in caplog.records if "'checkpoint' custom op is unavailable" in r.getMessage()]
    assert len(warnings) == 1 and "no C++ compiler" in warnings[0] and "numpy's copy" in warnings[0], warnings
    with dispatch.op_mode("custom"), pytest.raises(RuntimeError, match="no C\\+\\+ compiler"):
        checkpoint_copy.copy_counting(np.zeros((4, 3), np.float32), array.T)
