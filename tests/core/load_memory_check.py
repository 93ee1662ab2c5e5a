"""Run in a fresh process by tests/core/test_large.py: how much memory `from_pretrained` adds.

    python tests/core/load_memory_check.py CHECKPOINT_DIR DTYPE

Prints `RESULT {json}`: the resident memory after importing tfmodels (baseline), the peak during loading and
the resident memory after it, both over the baseline, and the bytes of the model's weights.
"""
import json
import os
import sys

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfmodels  # noqa: E402


def status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def main(directory, dtype):
    tf.zeros([1])  # runtime initialised before the baseline
    baseline = status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    model = tfmodels.XLMRobertaXLModel.from_pretrained(directory, dtype=dtype)
    peak, after = status_kb("VmHWM"), status_kb("VmRSS")
    weight_bytes = int(sum(np.prod(v.shape) * tf.as_dtype(v.dtype).size for v in model.weights))
    ids = np.array([[0, 5, 6, 7, 2]], np.int32)
    out = model(input_ids=ids).last_hidden_state
    print("RESULT " + json.dumps({
        "baseline_bytes": baseline * 1024, "peak_over_baseline": (peak - baseline) * 1024,
        "after_over_baseline": (after - baseline) * 1024, "weight_bytes": weight_bytes,
        "finite": bool(np.isfinite(tf.cast(out, tf.float32).numpy()).all()),
        "dtypes": sorted({str(v.dtype) for v in model.weights})}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
