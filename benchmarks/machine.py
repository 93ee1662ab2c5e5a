"""What machine a benchmark ran on, and how much of it a model used.

The project's machines differ (AMD EPYC without AVX-512-FP16 on one, Intel Xeon with AVX-512-FP16 and AMX on
another), and the reference's speed differs with them: PyTorch's sgemm runs 2-3x faster on the Intel one. A
ratio against the reference measured on one vendor says little about the other; a model's achieved GFLOP/s as a
share of the plain sgemm rate measured in the same run does carry over. So every benchmark table starts with
`header()` (CPU model, its vector/matrix extensions, the sgemm rate now) and reports its forwards as
`efficiency(flops, result, sgemm)`.

FLOP counts are the model's matrix work (2 flops per multiply-add), counted from its shapes by `encoder_flops`
and an attention term per family; element-wise work (softmax, GELU, layer norms) is not counted, as in any
GFLOP/s figure. A forward+backward counts 3x the forward (each matmul has two gradient matmuls).
"""
from benchmarks.common import measure

FEATURES = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8", "amx_tile")
SGEMM_SIZE = 2048


def cpu_model():
    return _cpuinfo_field("model name") or "unknown CPU"


def cpu_features():
    flags = set((_cpuinfo_field("flags") or "").split())
    return [feature for feature in FEATURES if feature in flags]


def _cpuinfo_field(name):
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def sgemm_tf(size=SGEMM_SIZE):
    import numpy as np
    import tensorflow as tf
    a = tf.constant(np.random.RandomState(0).randn(size, size).astype(np.float32))
    matmul = tf.function(lambda: tf.matmul(a, a))
    return lambda: matmul().numpy()


def sgemm_torch(size=SGEMM_SIZE):
    import torch
    from benchmarks.common import set_torch_threads
    set_torch_threads()
    a = torch.randn(size, size, generator=torch.Generator().manual_seed(0))
    return lambda: (a @ a).sum().item()


def measure_sgemm(threads=2, repeats=7):
    """The sgemm rate (GFLOP/s) of TF's and of PyTorch's matmul now, each in a fresh process with the benchmarks'
    thread settings; `rate` is the faster of the two, the machine's attainable float32 matmul rate."""
    rates = {}
    for name in ("sgemm_tf", "sgemm_torch"):
        result = measure("benchmarks.machine", name, {}, repeats=repeats, warmup=3, threads=threads)
        rates[name[len("sgemm_"):]] = None if "error" in result else gflops(2.0 * SGEMM_SIZE ** 3, result)
    measured = [r for r in rates.values() if r]
    rates["rate"] = max(measured) if measured else None
    return rates


def header(threads=2):
    """Prints and returns the machine line of a benchmark table: CPU, extensions, sgemm rates of this run."""
    sgemm = measure_sgemm(threads)
    rate = lambda r: "error" if r is None else f"{r:.0f}"  # noqa: E731
    line = (f"CPU: {cpu_model()} [{' '.join(cpu_features()) or 'no AVX2'}]; {threads} threads; sgemm {SGEMM_SIZE}^3: "
            f"TF {rate(sgemm['tf'])} GFLOP/s, PyTorch {rate(sgemm['torch'])} GFLOP/s")
    print(line, flush=True)
    return sgemm


def gflops(flops, result):
    """The GFLOP/s of one measured step (a measurement result) that does `flops`."""
    return flops / result["median_s"] / 1e9


def efficiency(flops, result, sgemm):
    """'GFLOP/s (share of the sgemm rate)' of one measured step that does `flops`."""
    if not result or "error" in result or not sgemm.get("rate"):
        return "n/a"
    achieved = gflops(flops, result)
    return f"{achieved:.0f} ({achieved / sgemm['rate']:.2f})"


def encoder_flops(length, hidden, intermediate, layers, attention_per_layer, batch=1, mode="forward"):
    """Matmul flops of a post-embedding transformer encoder: per layer the Q, K, V and output projections
    (4 x hidden^2 per token), the feed-forward (2 x hidden x intermediate per token) and the family's attention
    term (flops of one layer's attention over the batch). forward_backward counts 3x."""
    per_layer = 2.0 * batch * length * (4 * hidden * hidden + 2 * hidden * intermediate) + attention_per_layer
    return layers * per_layer * (3 if mode == "forward_backward" else 1)


def dense_attention_flops(query_len, key_len, hidden, batch=1):
    """QK^T and PV of every head: 2 x 2 x queries x keys x (heads x head_dim)."""
    return 4.0 * batch * query_len * key_len * hidden
