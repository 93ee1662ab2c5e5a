"""Longformer (sliding-window attention, window 256, global attention on <s>): our forward and forward+backward
time and peak memory against HF PyTorch and HF TF (TFLongformerModel, transformers 4.57.6 with tf-keras), same
config, each measurement in a fresh process, medians of repeats.

    python benchmarks/bench_longformer.py [--lengths 512,1024,2048,4096,8192,16384] [--repeats 5] [--twin]

Targets (issue 5), at 4096 tokens: forward <= 0.6x HF PyTorch's time and <= 0.4x HF TF's; forward+backward
<= 0.8x HF PyTorch's; memory linear in the length (our peak at 16384 <= 4.5x our peak at 4096).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from benchmarks.common import format_table, measure, megabytes, ratio, seconds, set_torch_threads, skipped  # noqa: E402
from benchmarks.machine import dense_attention_flops, efficiency, encoder_flops, header  # noqa: E402

CONFIG = dict(vocab_size=1000, hidden_size=256, num_hidden_layers=2, num_attention_heads=4, intermediate_size=1024,
              max_position_embeddings=16400, attention_window=256, hidden_dropout_prob=0.0,
              attention_probs_dropout_prob=0.0)
MODULE = "benchmarks.bench_longformer"


def _inputs(length, batch):
    import numpy as np
    rng = np.random.RandomState(0)
    ids = rng.randint(5, CONFIG["vocab_size"], (batch, length)).astype("int32")
    ids[:, 0] = 0
    mask = np.ones_like(ids)
    global_mask = np.zeros_like(ids)
    global_mask[:, 0] = 1  # <s> attends globally, as for classification
    return ids, mask, global_mask


def ours(length, mode, batch=1, op_mode="custom", jit=False):
    import tensorflow as tf

    import tfmodels
    from tfmodels.ops import dispatch
    dispatch.set_op_mode(op_mode)
    model = tfmodels.LongformerModel(tfmodels.LongformerConfig(**CONFIG), add_pooling_layer=False)
    ids, mask, global_mask = (tf.constant(a) for a in _inputs(length, batch))
    model(input_ids=ids[:, :8], attention_mask=mask[:, :8], global_attention_mask=global_mask[:, :8])

    @tf.function(jit_compile=jit)
    def forward():
        return tf.reduce_sum(model(input_ids=ids, attention_mask=mask, global_attention_mask=global_mask,
                                   training=False).last_hidden_state)

    @tf.function(jit_compile=jit)
    def forward_backward():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(input_ids=ids, attention_mask=mask, global_attention_mask=global_mask,
                                       training=True).last_hidden_state)
        # dense gradients, as torch computes them for its embeddings too
        return [tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_variables)]

    step = forward if mode == "forward" else forward_backward
    return lambda: [t.numpy() for t in tf.nest.flatten(step())]


def hf(length, mode, batch=1):
    import torch
    import transformers
    set_torch_threads()
    model = transformers.LongformerModel(transformers.LongformerConfig(**CONFIG), add_pooling_layer=False)
    ids, mask, global_mask = (torch.tensor(a, dtype=torch.long) for a in _inputs(length, batch))
    if mode == "forward":
        model.eval()

        def step():
            with torch.no_grad():
                return model(input_ids=ids, attention_mask=mask,
                             global_attention_mask=global_mask).last_hidden_state.sum().item()
        return step
    model.train()

    def step():
        model.zero_grad(set_to_none=True)
        model(input_ids=ids, attention_mask=mask, global_attention_mask=global_mask).last_hidden_state.sum().backward()
    return step


def hf_tf(length, mode, batch=1):
    # HF's TF classes need Keras 2 (tf-keras): switch before TensorFlow is imported in this fresh process.
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf
    import transformers
    # TFLongformerModel has no add_pooling_layer argument; its pooler works on one row (negligible here).
    model = transformers.TFLongformerModel(transformers.LongformerConfig(**CONFIG))
    ids, mask, global_mask = (tf.constant(a) for a in _inputs(length, batch))
    model(input_ids=ids[:, :8], attention_mask=mask[:, :8], global_attention_mask=global_mask[:, :8])

    @tf.function
    def forward():
        return tf.reduce_sum(model(input_ids=ids, attention_mask=mask, global_attention_mask=global_mask,
                                   training=False).last_hidden_state)

    # HF TF's backward fails inside a tf.function (transformers 4.57.6, tf-keras: "Incompatible shapes:
    # [1,512,4,258] vs. [1,512,4,257]" in the gradient of its global-attention scores); it runs eagerly.
    def forward_backward():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(input_ids=ids, attention_mask=mask, global_attention_mask=global_mask,
                                       training=True).last_hidden_state)
        # (its pooler gets no gradient: None)
        return [tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_variables) if g is not None]

    step = forward if mode == "forward" else forward_backward
    return lambda: [t.numpy() for t in tf.nest.flatten(step())]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="512,1024,2048,4096,8192,16384")
    parser.add_argument("--modes", default="forward,forward_backward")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hf-tf-max-length", type=int, default=8192,
                        help="longest length measured for HF TF (it needs O(n * w) memory too, but slowly)")
    parser.add_argument("--twin", action="store_true", help="also measure ours with the pure-TF twin ops")
    args = parser.parse_args()
    sgemm = header()
    rows = []
    for mode in args.modes.split(","):
        for length in [int(x) for x in args.lengths.split(",")]:
            params = {"length": length, "mode": mode}
            repeats = args.repeats if length <= 2048 else max(3, args.repeats - 2)
            torch_result = measure(MODULE, "hf", params, repeats=repeats)
            tf_result = measure(MODULE, "hf_tf", params, repeats=repeats) if length <= args.hf_tf_max_length \
                else skipped(f"longer than --hf-tf-max-length {args.hf_tf_max_length}")
            mine = measure(MODULE, "ours", params, repeats=repeats)
            flops = forward_flops(length, mode)
            row = [mode, length, seconds(mine), seconds(torch_result), seconds(tf_result), ratio(mine, torch_result),
                   ratio(mine, tf_result), efficiency(flops, mine, sgemm), efficiency(flops, torch_result, sgemm),
                   megabytes(mine), megabytes(torch_result), megabytes(tf_result)]
            if args.twin:
                twin = measure(MODULE, "ours", {**params, "op_mode": "reference"}, repeats=repeats)
                row += [seconds(twin), ratio(twin, torch_result), megabytes(twin)]
            rows.append(row)
            print(format_table(_headers(args.twin), rows[-1:]).splitlines()[-1], flush=True)
    print()
    print("Longformer, hidden 256, 4 heads, 2 layers, window 256, <s> global, batch 1; CPU, 2 threads")
    print(format_table(_headers(args.twin), rows))
    _memory_growth(rows)


def _memory_growth(rows):
    for mode in sorted({r[0] for r in rows}):
        peaks = {r[1]: r[9] for r in rows if r[0] == mode}
        if "4096" in map(str, peaks) and "16384" in map(str, peaks):
            try:
                growth = float(peaks[16384]) / float(peaks[4096])
            except (ValueError, ZeroDivisionError):
                continue
            print(f"{mode}: our peak memory at 16384 / at 4096 = {growth:.2f} (linear would be 4.0)")


def forward_flops(length, mode, batch=1, global_tokens=1):
    """Each query attends its window (attention_window + 1 keys) and the global token; the global token's
    query attends every key."""
    hidden = CONFIG["hidden_size"]
    attention = dense_attention_flops(length, CONFIG["attention_window"] + 1 + global_tokens, hidden, batch) + \
        dense_attention_flops(global_tokens, length, hidden, batch)
    return encoder_flops(length, hidden, CONFIG["intermediate_size"], CONFIG["num_hidden_layers"], attention,
                         batch, mode)


def _headers(twin):
    headers = ["mode", "length", "ours s", "HF torch s", "HF TF s", "vs torch", "vs HF TF", "ours GFLOP/s (x sgemm)",
               "torch GFLOP/s (x sgemm)", "ours MB", "torch MB", "HF TF MB"]
    return headers + (["twin s", "twin vs torch", "twin MB"] if twin else [])


if __name__ == "__main__":
    main()
