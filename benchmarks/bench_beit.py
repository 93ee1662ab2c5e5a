"""BEiT forward: our time and peak memory against HF PyTorch (SDPA attention), base width at tiny depth (hidden 768,
12 heads, 2 layers, relative position bias per layer, mean pooling), images of 224 and 384 pixels, each
measurement in a fresh process, medians of repeats.

    python benchmarks/bench_beit.py [--sizes 224,384] [--batch 4] [--repeats 5] [--rounds 3] [--jit]
        [--dtypes float32,bfloat16,mixed_bfloat16]

The measurements of one size run in `--rounds` rounds of fresh processes, interleaved (common.measure_rounds), and
each figure is the median over the rounds (one slow process then moves no figure; see bench_xlm_roberta_xl.py).

Target (issue 8): our forward time <= HF's (ratio <= 1.0) at 224 and 384.

bf16 inference (issue 16): with --dtypes, our model is also built under those Keras dtype policies ("bfloat16":
bf16 variables and compute; "mixed_bfloat16": float32 variables, bf16 compute) and measured against HF under
torch.autocast("cpu", torch.bfloat16); "vs our fp32" is our float32 forward's time over this one. Target where the
CPU has AMX-BF16: >= 2x our float32, ratio to HF bf16 <= 1.0.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from benchmarks.common import (format_table, measure, measure_dtype_rounds, megabytes, ratio, seconds,  # noqa: E402
                               set_torch_threads)
from benchmarks.machine import dense_attention_flops, efficiency, encoder_flops, header  # noqa: E402

CONFIG = dict(hidden_size=768, num_hidden_layers=2, num_attention_heads=12, intermediate_size=3072, image_size=224,
              patch_size=16, use_relative_position_bias=True, use_mean_pooling=True, drop_path_rate=0.0)


def _pixels(size, batch):
    import numpy as np
    return np.random.RandomState(0).randn(batch, 3, size, size).astype("float32")


def ours(size, batch=4, jit=False, dtype="float32"):
    import tensorflow as tf
    import tfmodels
    from tfmodels.core.layers import dtype_policy_scope
    with dtype_policy_scope(dtype):
        model = tfmodels.BeitModel(tfmodels.BeitConfig(**CONFIG))
    model.build_model()
    pixels = tf.constant(_pixels(size, batch))

    @tf.function(jit_compile=jit)
    def forward():
        out = model(pixel_values=pixels, training=False)
        return tf.reduce_sum(tf.cast(out.last_hidden_state, tf.float32)) + \
            tf.reduce_sum(tf.cast(out.pooler_output, tf.float32))

    return lambda: forward().numpy()


def hf(size, batch=4, dtype="float32"):
    """HF's model in float32; any other dtype: under torch.autocast("cpu", torch.bfloat16)."""
    import contextlib

    import torch
    import transformers
    set_torch_threads()
    model = transformers.BeitModel(transformers.BeitConfig(**CONFIG, attn_implementation="sdpa")).eval()
    pixels = torch.tensor(_pixels(size, batch))
    precision = contextlib.nullcontext if dtype == "float32" else (lambda: torch.autocast("cpu", torch.bfloat16))

    def step():
        with torch.no_grad(), precision():
            out = model(pixel_values=pixels)
            return (out.last_hidden_state.float().sum() + out.pooler_output.float().sum()).item()
    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="224,384")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per measurement, interleaved")
    parser.add_argument("--jit", action="store_true", help="also measure ours with jit_compile=True (XLA)")
    parser.add_argument("--dtypes", default="float32",
                        help="Keras dtype policies of our model, e.g. float32,bfloat16,mixed_bfloat16 (non-float32: "
                             "against HF under bf16 autocast)")
    args = parser.parse_args()
    module = "benchmarks.bench_beit"
    sgemm = header()
    rows = []
    dtypes = args.dtypes.split(",")
    for size in [int(s) for s in args.sizes.split(",")]:
        params = {"size": size, "batch": args.batch}
        fp32 = None
        for dtype, tf_graph, reference in measure_dtype_rounds(module, params, dtypes, args.rounds, args.repeats):
            fp32 = tf_graph if dtype == "float32" else fp32
            flops = forward_flops(size, args.batch)
            row = ["forward", size, (size // 16) ** 2 + 1, dtype, seconds(tf_graph), seconds(reference),
                   ratio(tf_graph, reference), ratio(fp32, tf_graph), efficiency(flops, tf_graph, sgemm),
                   efficiency(flops, reference, sgemm), megabytes(tf_graph), megabytes(reference)]
            if args.jit:
                xla = measure(module, "ours", {**params, "dtype": dtype, "jit": True}, repeats=args.repeats)
                row += [seconds(xla), ratio(xla, reference)]
            rows.append(row)
            print(format_table(_headers(args.jit), rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(f"BEiT, hidden 768, 12 heads, 2 layers, relative position bias, batch {args.batch}; CPU, 2 threads; "
          "HF column: SDPA in float32, or under bf16 autocast for the bf16 policies; "
          f"medians over {args.rounds} interleaved rounds of fresh processes")
    print(format_table(_headers(args.jit), rows))


def forward_flops(size, batch):
    """The patch embedding (a patch x patch convolution with stride patch: one matmul per patch), then a dense
    encoder over the patches and [CLS]."""
    hidden, patch = CONFIG["hidden_size"], CONFIG["patch_size"]
    patches = (size // patch) ** 2
    tokens = patches + 1
    embedding = 2.0 * batch * patches * hidden * 3 * patch * patch
    return embedding + encoder_flops(tokens, hidden, CONFIG["intermediate_size"], CONFIG["num_hidden_layers"],
                                     dense_attention_flops(tokens, tokens, hidden, batch), batch)


def _headers(jit):
    headers = ["mode", "image", "tokens", "dtype", "ours s", "HF sdpa s", "ratio", "vs our fp32",
               "ours GFLOP/s (x sgemm)", "HF GFLOP/s (x sgemm)", "ours peak MB", "HF peak MB"]
    return headers + (["ours XLA s", "XLA ratio"] if jit else [])


if __name__ == "__main__":
    main()
