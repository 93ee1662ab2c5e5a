"""The bfloat16 projections of XLM-RoBERTa-XL at full width (bench_large's model): our dense layer against
PyTorch's, the matrix rate each reaches, each measurement in a fresh process, medians of repeats.

    python benchmarks/bench_bf16_matmul.py [--tokens 1024] [--repeats 7]

Why this exists: bench_large's second forward is matmul-bound (its projections are ~5.8 of its ~5.9 TFLOP), so
its ratio to HF is the ratio of these rates. Ours is `core.layers.apply_dense` as the model runs it in eager
bfloat16 (one graph function, MatMul + BiasAdd (+ GELU) (+ residual Add) fused by TF's oneDNN), on Keras'
[in, out] kernels; PyTorch's is `torch.nn.functional.linear` on HF's [out, in] weights. Four weight matrices
rotate, so the weights come from memory as in the model (each is 13-52 MB).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from benchmarks.common import format_table, measure, seconds, set_torch_threads  # noqa: E402
from benchmarks.machine import header  # noqa: E402

MODULE = "benchmarks.bench_bf16_matmul"
HIDDEN, INTERMEDIATE = 2560, 10240  # facebook/xlm-roberta-xl
# (name, inputs, outputs, activation, residual): the four projection shapes of an XL layer.
SHAPES = [("attention q/k/v/o", HIDDEN, HIDDEN, None, False),
          ("attention output + residual", HIDDEN, HIDDEN, None, True),
          ("intermediate + GELU", HIDDEN, INTERMEDIATE, "gelu", False),
          ("output + residual", INTERMEDIATE, HIDDEN, None, True)]
ROTATION = 4


def ours(tokens, inputs, outputs, activation, residual):
    import numpy as np
    import tensorflow as tf

    from tfmodels.core import layers
    from tfmodels.core.activations import gelu
    rng = np.random.RandomState(0)
    with layers.dtype_policy_scope("bfloat16"):
        denses = [layers.dense(outputs, 0.02) for _ in range(ROTATION)]
    x = tf.cast(rng.randn(tokens, inputs), tf.bfloat16)
    skip = tf.cast(rng.randn(tokens, outputs), tf.bfloat16) if residual else None
    for dense in denses:
        dense.build([None, inputs])
    calls = {"count": 0}

    def step():
        dense = denses[calls["count"] % ROTATION]
        calls["count"] += 1
        return layers.apply_dense(dense, x, gelu if activation else None, residual=skip).numpy()  # waits for the result
    return step


def hf(tokens, inputs, outputs, activation, residual):
    import torch
    set_torch_threads()
    generator = torch.Generator().manual_seed(0)
    weights = [(torch.randn(outputs, inputs, generator=generator) * 0.02).bfloat16() for _ in range(ROTATION)]
    bias = torch.zeros(outputs).bfloat16()
    x = torch.randn(tokens, inputs, generator=generator).bfloat16()
    skip = torch.randn(tokens, outputs, generator=generator).bfloat16() if residual else None
    calls = {"count": 0}

    def step():
        weight = weights[calls["count"] % ROTATION]
        calls["count"] += 1
        with torch.no_grad():
            y = torch.nn.functional.linear(x, weight, bias)
            y = torch.nn.functional.gelu(y) if activation else y
            return y + skip if residual else y  # CPU ops are synchronous: the result is complete here
    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=1024, help="rows (bench_large: 2 x 512)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    header()
    rows = []
    for name, inputs, outputs, activation, residual in SHAPES:
        params = {"tokens": args.tokens, "inputs": inputs, "outputs": outputs, "activation": activation,
                  "residual": residual}
        flops = 2.0 * args.tokens * inputs * outputs
        mine = measure(MODULE, "ours", params, repeats=args.repeats, warmup=ROTATION)
        theirs = measure(MODULE, "hf", params, repeats=args.repeats, warmup=ROTATION)
        rate = lambda r: "error" if "error" in r else f"{flops / r['median_s'] / 1e12:.2f}"  # noqa: E731
        ratio = "n/a" if "error" in mine or "error" in theirs else f"{mine['median_s'] / theirs['median_s']:.2f}"
        rows.append([name, f"[{args.tokens}, {inputs}] x [{inputs}, {outputs}]", seconds(mine), seconds(theirs),
                     rate(mine), rate(theirs), ratio])
        print(format_table(_HEADERS, rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(f"XLM-RoBERTa-XL projections in bfloat16, {args.tokens} tokens; CPU, 2 threads")
    print(format_table(_HEADERS, rows))


_HEADERS = ["projection", "shape", "ours s", "torch s", "ours TFLOP/s", "torch TFLOP/s", "ours / torch"]


if __name__ == "__main__":
    main()
