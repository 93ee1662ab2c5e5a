"""The bfloat16 projections of XLM-RoBERTa-XL at full width (bench_large's model): our dense layer in both of its
bfloat16 product forms against PyTorch's, the matrix rate each reaches and the oneDNN implementation each runs,
each measurement in a fresh process, medians of repeats.

    python benchmarks/bench_bf16_matmul.py [--tokens 1024] [--repeats 7]

Why this exists: bench_large's second forward is matmul-bound (its projections are ~5.8 of its ~5.9 TFLOP), so
its ratio to HF is the ratio of these rates. Ours is `core.layers.apply_dense` as the model runs it in eager
bfloat16, on Keras' [in, out] kernels, in each form TFMODELS_BF16_PRODUCT picks (tfmodels.ops.dense_epilogue):
- "inner_product" (the default): MatMul + BiasAdd (+ GELU) (+ residual Add) in one graph function, fused by TF's
  remapper into oneDNN's inner-product primitive;
- "matmul": a MatMul alone, oneDNN's matmul primitive (the one PyTorch's linear runs), then our epilogue op
  (bias, GELU, residual in one pass).
PyTorch's is `torch.nn.functional.linear` on HF's [out, in] weights (then GELU, + residual). Four weight matrices
rotate, so the weights come from memory as in the model (each is 13-52 MB). The implementation columns come from
a run of the same step with ONEDNN_VERBOSE=1.
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from benchmarks.common import ROOT, format_table, measure, set_torch_threads  # noqa: E402
from benchmarks.machine import header  # noqa: E402

MODULE = "benchmarks.bench_bf16_matmul"
HIDDEN, INTERMEDIATE = 2560, 10240  # facebook/xlm-roberta-xl
# (name, inputs, outputs, activation, residual): the four projection shapes of an XL layer.
SHAPES = [("attention q/k/v/o", HIDDEN, HIDDEN, None, False),
          ("attention output + residual", HIDDEN, HIDDEN, None, True),
          ("intermediate + GELU", HIDDEN, INTERMEDIATE, "gelu", False),
          ("output + residual", INTERMEDIATE, HIDDEN, None, True)]
ROTATION = 4


def ours(tokens, inputs, outputs, activation, residual, form):
    os.environ["TFMODELS_BF16_PRODUCT"] = form  # read by apply_dense at each call
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


FORMS = ["inner_product", "matmul"]


def onednn_implementation(function_name, params):
    """The oneDNN primitive and implementation a step (`ours`, or PyTorch's `hf`: its CPU build has oneDNN too)
    runs, from a process with ONEDNN_VERBOSE=1 (e.g. "inner_product x64:gemm:jit", "matmul brg_matmul:avx512_core_amx")."""
    command = [sys.executable, "-m", MODULE, "--show-primitive", function_name, json.dumps(params)]
    environment = dict(os.environ, ONEDNN_VERBOSE="1", TF_CPP_MIN_LOG_LEVEL="3")
    completed = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=ROOT, timeout=600)
    executed = [fields for fields in (line.split(",") for line in completed.stdout.splitlines()
                                      if line.startswith("onednn_verbose") and ",exec," in line)
                if fields[5] in ("matmul", "inner_product")]  # not the GELU's eltwise
    return f"{executed[-1][5]} {executed[-1][6]}" if executed else "not seen"


def _show_primitive(function_name, params):
    step = globals()[function_name](**json.loads(params))
    step()
    step()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=1024, help="rows (bench_large: 2 x 512)")
    parser.add_argument("--repeats", type=int, default=7)
    # onednn_implementation's child: --show-primitive FUNCTION PARAMS
    parser.add_argument("--show-primitive", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.show_primitive:
        return _show_primitive(*args.show_primitive)
    header()
    rows = []
    for name, inputs, outputs, activation, residual in SHAPES:
        params = {"tokens": args.tokens, "inputs": inputs, "outputs": outputs, "activation": activation,
                  "residual": residual}
        flops = 2.0 * args.tokens * inputs * outputs
        rate = lambda r: "error" if "error" in r else f"{flops / r['median_s'] / 1e12:.2f}"  # noqa: E731
        theirs = measure(MODULE, "hf", params, repeats=args.repeats, warmup=ROTATION)
        row, ratios = [name, f"[{args.tokens}, {inputs}] x [{inputs}, {outputs}]"], []
        for form in FORMS:
            mine = measure(MODULE, "ours", dict(params, form=form), repeats=args.repeats, warmup=ROTATION)
            row += [rate(mine), onednn_implementation("ours", dict(params, form=form))]
            ratios.append("n/a" if "error" in mine or "error" in theirs
                          else f"{mine['median_s'] / theirs['median_s']:.2f}")
        rows.append(row + [rate(theirs), onednn_implementation("hf", params)] + ratios)
        print(format_table(_HEADERS, rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(f"XLM-RoBERTa-XL projections in bfloat16, {args.tokens} tokens (TFLOP/s); CPU, 2 threads")
    print(format_table(_HEADERS, rows))


_HEADERS = ["projection", "shape", "ours inner_product", "its oneDNN implementation", "ours matmul",
            "its oneDNN implementation", "torch", "torch's oneDNN implementation", "inner_product / torch",
            "matmul / torch"]


if __name__ == "__main__":
    main()
