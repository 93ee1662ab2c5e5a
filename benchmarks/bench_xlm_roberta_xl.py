"""XLM-RoBERTa-XL (dense attention): our forward and forward+backward time and peak memory against HF PyTorch
with SDPA attention, same config, each measurement in a fresh process, medians of repeats.

    python benchmarks/bench_xlm_roberta_xl.py [--lengths 512,1024,2048,4096] [--repeats 5] [--rounds 3]
        [--dtypes float32,bfloat16,mixed_bfloat16]

The measurements of one length run in `--rounds` rounds of fresh processes, interleaved (common.measure_rounds),
and each figure is the median over the rounds: on the AMD EPYC one slow process in a run of one round each made
our float32 forward at 2048 tokens 3x its usual time (a "NOT met" on unchanged code, 2026-12-08) and the bfloat16
one at 4096 slower than float32 (2026-12-07).

Target (issue 2): our time <= HF's at 2048 and 4096 (ratio <= 1.0), forward and forward+backward.

bf16 inference (issue 16): with --dtypes, the forward is also measured with our model built under those Keras
dtype policies ("bfloat16": bf16 variables and compute; "mixed_bfloat16": float32 variables, bf16 compute) against
HF under torch.autocast("cpu", torch.bfloat16); "vs our fp32" is our float32 forward's time over this one.
Target where the CPU has AMX-BF16: >= 2x our float32, ratio to HF bf16 <= 1.0.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from benchmarks.common import (format_table, measure, measure_dtype_rounds, megabytes, ratio, seconds,  # noqa: E402
                               set_torch_threads)
from benchmarks.machine import dense_attention_flops, efficiency, encoder_flops, header  # noqa: E402

CONFIG = dict(vocab_size=1000, hidden_size=256, num_hidden_layers=2, num_attention_heads=4, intermediate_size=1024,
              max_position_embeddings=16400, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _inputs(length, batch):
    import numpy as np
    rng = np.random.RandomState(0)
    ids = rng.randint(5, CONFIG["vocab_size"], (batch, length)).astype("int32")
    mask = np.ones_like(ids)
    mask[-1, length - length // 8:] = 0  # padding present
    ids[mask == 0] = 1
    return ids, mask


def ours(length, mode, batch=1, jit=False, dtype="float32"):
    import tensorflow as tf
    import tfmodels
    from tfmodels.core.layers import dtype_policy_scope
    with dtype_policy_scope(dtype):
        model = tfmodels.XLMRobertaXLModel(tfmodels.XLMRobertaXLConfig(**CONFIG), add_pooling_layer=False)
    ids, mask = (tf.constant(a) for a in _inputs(length, batch))
    model(input_ids=ids[:, :8], attention_mask=mask[:, :8])

    @tf.function(jit_compile=jit)
    def forward():
        hidden = model(input_ids=ids, attention_mask=mask, training=False).last_hidden_state
        return tf.reduce_sum(tf.cast(hidden, tf.float32))

    @tf.function(jit_compile=jit)
    def forward_backward():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(input_ids=ids, attention_mask=mask, training=True).last_hidden_state)
        # dense gradients, as torch computes them for its embeddings too
        return [tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_variables)]

    step = forward if mode == "forward" else forward_backward
    return lambda: [t.numpy() for t in tf.nest.flatten(step())]


def hf(length, mode, batch=1, dtype="float32"):
    """HF's model in float32; any other dtype: under torch.autocast("cpu", torch.bfloat16) (forward only)."""
    import contextlib

    import torch
    import transformers
    set_torch_threads()
    config = transformers.XLMRobertaXLConfig(**CONFIG, attn_implementation="sdpa")
    model = transformers.XLMRobertaXLModel(config, add_pooling_layer=False)
    ids, mask = (torch.tensor(a, dtype=torch.long) for a in _inputs(length, batch))
    if mode == "forward":
        model.eval()

        precision = contextlib.nullcontext if dtype == "float32" else \
            (lambda: torch.autocast("cpu", torch.bfloat16))

        def step():
            with torch.no_grad(), precision():
                return model(input_ids=ids, attention_mask=mask).last_hidden_state.float().sum().item()
        return step
    model.train()

    def step():
        model.zero_grad(set_to_none=True)
        model(input_ids=ids, attention_mask=mask).last_hidden_state.sum().backward()
    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="512,1024,2048,4096")
    parser.add_argument("--modes", default="forward,forward_backward")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per measurement, interleaved")
    parser.add_argument("--jit", action="store_true", help="also measure ours with jit_compile=True (XLA)")
    parser.add_argument("--dtypes", default="float32",
                        help="Keras dtype policies of our model, e.g. float32,bfloat16,mixed_bfloat16 (non-float32: "
                             "forward only, against HF under bf16 autocast)")
    args = parser.parse_args()
    module = "benchmarks.bench_xlm_roberta_xl"
    sgemm = header()
    rows = []
    for mode in args.modes.split(","):
        for length in [int(x) for x in args.lengths.split(",")]:
            repeats = args.repeats if length <= 2048 else max(3, args.repeats - 2)
            dtypes = args.dtypes.split(",") if mode == "forward" else ["float32"]
            params = {"length": length, "mode": mode}
            fp32 = None
            for dtype, tf_graph, reference in measure_dtype_rounds(module, params, dtypes, args.rounds, repeats):
                fp32 = tf_graph if dtype == "float32" else fp32
                flops = forward_flops(length, mode)
                row = [mode, length, dtype, seconds(tf_graph), seconds(reference), ratio(tf_graph, reference),
                       ratio(fp32, tf_graph), efficiency(flops, tf_graph, sgemm),
                       efficiency(flops, reference, sgemm), megabytes(tf_graph), megabytes(reference)]
                if args.jit:
                    xla = measure(module, "ours", {**params, "dtype": dtype, "jit": True}, repeats=repeats)
                    row += [seconds(xla), ratio(xla, reference)]
                rows.append(row)
                print(format_table(_headers(args.jit), rows[-1:]).splitlines()[-1], flush=True)
    print()
    print("XLM-RoBERTa-XL, hidden 256, 4 heads, 2 layers, batch 1 (last row 1/8 padding); CPU, 2 threads; "
          "HF column: SDPA in float32, or under bf16 autocast for the bf16 policies; "
          f"medians over {args.rounds} interleaved rounds of fresh processes")
    print(format_table(_headers(args.jit), rows))


def forward_flops(length, mode, batch=1):
    hidden = CONFIG["hidden_size"]
    return encoder_flops(length, hidden, CONFIG["intermediate_size"], CONFIG["num_hidden_layers"],
                         dense_attention_flops(length, length, hidden, batch), batch, mode)


def _headers(jit):
    headers = ["mode", "length", "dtype", "ours s", "HF sdpa s", "ratio", "vs our fp32", "ours GFLOP/s (x sgemm)",
               "HF GFLOP/s (x sgemm)", "ours peak MB", "HF peak MB"]
    return headers + (["ours XLA s", "XLA ratio"] if jit else [])


if __name__ == "__main__":
    main()
