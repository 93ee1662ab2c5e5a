"""Nyströmformer: our forward and forward+backward time and peak memory against HF PyTorch, same config (hidden
256, 4 heads, 2 layers, 64 landmarks, conv kernel 65), each measurement in a fresh process, medians of repeats.

    python benchmarks/bench_nystromformer.py [--lengths 512,2048,4096,8192,16384] [--repeats 5] [--jit]

The reference only runs its landmark attention at length == segment_means_seq_len, so both sides are built with
segment_means_seq_len = length (ours would run at any length with the same config).

Targets (issue 4): forward time ratio <= 0.8 of HF at 4096; time and peak memory linear in the length
(16384 costs <= 4.5x of 4096), also with jit_compile=True.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from benchmarks.common import format_table, measure, megabytes, ratio, seconds, set_torch_threads  # noqa: E402
from benchmarks.machine import efficiency, encoder_flops, header  # noqa: E402

CONFIG = dict(vocab_size=1000, hidden_size=256, num_hidden_layers=2, num_attention_heads=4, intermediate_size=1024,
              max_position_embeddings=16400, num_landmarks=64, conv_kernel_size=65, hidden_dropout_prob=0.0,
              attention_probs_dropout_prob=0.0, pad_token_id=0)
MODULE = "benchmarks.bench_nystromformer"


def _inputs(length, batch):
    import numpy as np
    rng = np.random.RandomState(0)
    ids = rng.randint(5, CONFIG["vocab_size"], (batch, length)).astype("int32")
    mask = np.ones_like(ids)
    mask[-1, length - length // 8:] = 0  # padding present
    ids[mask == 0] = CONFIG["pad_token_id"]
    return ids, mask


def ours(length, mode, batch=1, jit=False):
    import tensorflow as tf
    import tfmodels
    config = tfmodels.NystromformerConfig(**CONFIG, segment_means_seq_len=length)
    model = tfmodels.NystromformerModel(config)
    ids, mask = (tf.constant(a) for a in _inputs(length, batch))
    model(input_ids=ids[:, :8], attention_mask=mask[:, :8])

    @tf.function(jit_compile=jit)
    def forward():
        return tf.reduce_sum(model(input_ids=ids, attention_mask=mask, training=False).last_hidden_state)

    @tf.function(jit_compile=jit)
    def forward_backward():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(input_ids=ids, attention_mask=mask, training=True).last_hidden_state)
        # dense gradients, as torch computes them for its embeddings too
        return [tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_variables)]

    step = forward if mode == "forward" else forward_backward
    return lambda: [t.numpy() for t in tf.nest.flatten(step())]


def hf(length, mode, batch=1):
    import torch
    import transformers
    set_torch_threads()
    config = transformers.NystromformerConfig(**CONFIG, segment_means_seq_len=length)
    model = transformers.NystromformerModel(config)
    ids, mask = (torch.tensor(a, dtype=torch.long) for a in _inputs(length, batch))
    if mode == "forward":
        model.eval()

        def step():
            with torch.no_grad():
                return model(input_ids=ids, attention_mask=mask).last_hidden_state.sum().item()
        return step
    model.train()

    def step():
        model.zero_grad(set_to_none=True)
        model(input_ids=ids, attention_mask=mask).last_hidden_state.sum().backward()
    return step


def _growth(results, key, column):
    """16384 cost over 4096 cost, per (mode, side)."""
    if 4096 not in results or 16384 not in results:
        return "n/a"
    a, b = results[4096].get(column), results[16384].get(column)
    if not a or not b or "error" in a or "error" in b:
        return "n/a"
    return f"{b[key] / a[key]:.2f}" if a[key] else "n/a"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="512,2048,4096,8192,16384")
    parser.add_argument("--modes", default="forward,forward_backward")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--jit", action="store_true", help="also measure ours with jit_compile=True (XLA)")
    args = parser.parse_args()
    sgemm = header()
    rows, growth_rows = [], []
    for mode in args.modes.split(","):
        results = {}
        for length in [int(x) for x in args.lengths.split(",")]:
            params = {"length": length, "mode": mode}
            repeats = args.repeats if length <= 4096 else max(3, args.repeats - 2)
            reference = measure(MODULE, "hf", params, repeats=repeats)
            tf_graph = measure(MODULE, "ours", params, repeats=repeats)
            results[length] = {"hf": reference, "ours": tf_graph}
            flops = forward_flops(length, mode)
            row = [mode, length, seconds(tf_graph), seconds(reference), ratio(tf_graph, reference),
                   efficiency(flops, tf_graph, sgemm), efficiency(flops, reference, sgemm),
                   megabytes(tf_graph), megabytes(reference)]
            if args.jit:
                xla = measure(MODULE, "ours", {**params, "jit": True}, repeats=repeats)
                results[length]["xla"] = xla
                row += [seconds(xla), ratio(xla, reference), megabytes(xla)]
            rows.append(row)
            print(format_table(_headers(args.jit), rows[-1:]).splitlines()[-1], flush=True)
        for side in ("ours", "hf") + (("xla",) if args.jit else ()):
            growth_rows.append([mode, side, _growth(results, "median_s", side), _growth(results, "peak_mb", side)])
    print()
    print("Nystromformer, hidden 256, 4 heads, 2 layers, 64 landmarks, conv 65, batch 1 (1/8 padding); CPU, 2 threads")
    print(format_table(_headers(args.jit), rows))
    print()
    print("Growth from 4096 to 16384 tokens (linear: 4.0; target <= 4.5)")
    print(format_table(["mode", "side", "time x", "peak memory x"], growth_rows))


def forward_flops(length, mode, batch=1):
    """Landmark attention per layer, L landmarks: kernel_1 = softmax(Q Kl^T) [N, L], kernel_2 [L, L], kernel_3
    = softmax(Ql K^T) [L, N], then kernel_1 (pinv(kernel_2) (kernel_3 V)); the pseudo-inverse is 4 L x L x L
    matmuls per iteration and head; the depthwise convolution of V is N x K x hidden multiply-adds."""
    from tfmodels.models.nystromformer.modeling import PINV_ITERATIONS
    hidden, landmarks, heads = CONFIG["hidden_size"], CONFIG["num_landmarks"], CONFIG["num_attention_heads"]
    attention = 2.0 * batch * hidden * (4 * length * landmarks + 2 * landmarks ** 2 +
                                        length * CONFIG["conv_kernel_size"]) + \
        2.0 * batch * heads * PINV_ITERATIONS * 4 * landmarks ** 3
    return encoder_flops(length, hidden, CONFIG["intermediate_size"], CONFIG["num_hidden_layers"], attention,
                         batch, mode)


def _headers(jit):
    headers = ["mode", "length", "ours s", "HF s", "ratio", "ours GFLOP/s (x sgemm)", "HF GFLOP/s (x sgemm)",
               "ours peak MB", "HF peak MB"]
    return headers + (["ours XLA s", "XLA ratio", "XLA peak MB"] if jit else [])


if __name__ == "__main__":
    main()
