"""XLNet: our forward (and optionally forward+backward) time and peak memory against HF PyTorch and HF TF
(TFXLNetModel on tf-keras), same config and weights layout, each measurement in a fresh process, medians of
repeats.

    python benchmarks/bench_xlnet.py [--lengths 512,2048] [--repeats 5] [--rounds 3] [--modes forward] [--jit]

Targets (issue 7): forward time <= 1.0x HF PyTorch and <= 0.7x HF TF at 512 and 2048. At 512 a step is 20-30 ms
and the machine's drift between two processes is as large as the margin: the three sides run in `--rounds`
rounds of fresh processes, interleaved (common.measure_rounds), and each figure is the median over the rounds.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from benchmarks.common import (format_table, measure, measure_rounds, megabytes, ratio, seconds,  # noqa: E402
                               set_torch_threads)
from benchmarks.machine import dense_attention_flops, efficiency, encoder_flops, header  # noqa: E402

CONFIG = dict(vocab_size=1000, d_model=256, n_layer=2, n_head=4, d_inner=1024, dropout=0.0, mem_len=None,
              summary_last_dropout=0.0)


def _inputs(length, batch):
    """Left padding on the last row (1/8 of it), as XLNet's tokenizer pads."""
    import numpy as np
    rng = np.random.RandomState(0)
    ids = rng.randint(9, CONFIG["vocab_size"], (batch, length)).astype("int32")
    mask = np.ones_like(ids)
    mask[-1, :length // 8] = 0
    ids[mask == 0] = 5
    return ids, mask


def ours(length, mode, batch=1, jit=False):
    import tensorflow as tf
    import tfmodels
    model = tfmodels.XLNetModel(tfmodels.XLNetConfig(**CONFIG))
    ids, mask = (tf.constant(a) for a in _inputs(length, batch))
    model(input_ids=ids[:, :8], attention_mask=mask[:, :8])

    @tf.function(jit_compile=jit)
    def forward():
        out = model(input_ids=ids, attention_mask=mask, use_mems=False, training=False)
        return tf.reduce_sum(out.last_hidden_state)

    @tf.function(jit_compile=jit)
    def forward_backward():
        with tf.GradientTape() as tape:
            out = model(input_ids=ids, attention_mask=mask, use_mems=False, training=True)
            loss = tf.reduce_sum(out.last_hidden_state)
        return [tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_variables)
                if g is not None]

    step = forward if mode == "forward" else forward_backward
    return lambda: [t.numpy() for t in tf.nest.flatten(step())]


def hf(length, mode, batch=1):
    import torch
    import transformers
    set_torch_threads()
    model = transformers.XLNetModel(transformers.XLNetConfig(**CONFIG))
    ids, mask = (torch.tensor(a, dtype=torch.long) for a in _inputs(length, batch))
    if mode == "forward":
        model.eval()

        def step():
            with torch.no_grad():
                return model(input_ids=ids, attention_mask=mask, use_mems=False).last_hidden_state.sum().item()
        return step
    model.train()

    def step():
        model.zero_grad(set_to_none=True)
        model(input_ids=ids, attention_mask=mask, use_mems=False).last_hidden_state.sum().backward()
    return step


def hf_tf(length, mode, batch=1):
    # HF's TF models need Keras 2 (tf-keras): chosen before TensorFlow is imported in this fresh process.
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf
    import transformers
    model = transformers.TFXLNetModel(transformers.XLNetConfig(**CONFIG))
    ids, mask = (tf.constant(a) for a in _inputs(length, batch))
    model(input_ids=ids[:, :8], attention_mask=mask[:, :8])

    @tf.function
    def forward():
        out = model(input_ids=ids, attention_mask=mask, use_mems=False, training=False)
        return tf.reduce_sum(out.last_hidden_state)

    @tf.function
    def forward_backward():
        with tf.GradientTape() as tape:
            out = model(input_ids=ids, attention_mask=mask, use_mems=False, training=True)
            loss = tf.reduce_sum(out.last_hidden_state)
        return [tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_variables)
                if g is not None]

    step = forward if mode == "forward" else forward_backward
    return lambda: [t.numpy() for t in tf.nest.flatten(step())]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="512,2048")
    parser.add_argument("--modes", default="forward")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per side, interleaved")
    parser.add_argument("--jit", action="store_true", help="also measure ours with jit_compile=True (XLA)")
    args = parser.parse_args()
    module = "benchmarks.bench_xlnet"
    sgemm = header()
    rows = []
    for mode in args.modes.split(","):
        for length in [int(x) for x in args.lengths.split(",")]:
            params = {"length": length, "mode": mode}
            torch_ref, tf_ref, result = measure_rounds(
                module, [("hf", params), ("hf_tf", params), ("ours", params)], rounds=args.rounds,
                repeats=args.repeats)
            flops = forward_flops(length, mode)
            row = [mode, length, seconds(result), seconds(torch_ref), seconds(tf_ref), ratio(result, torch_ref),
                   ratio(result, tf_ref), efficiency(flops, result, sgemm), efficiency(flops, torch_ref, sgemm),
                   megabytes(result), megabytes(torch_ref), megabytes(tf_ref)]
            if args.jit:
                xla = measure(module, "ours", {**params, "jit": True}, repeats=args.repeats)
                row += [seconds(xla), ratio(xla, torch_ref)]
            rows.append(row)
            print(format_table(_headers(args.jit), rows[-1:]).splitlines()[-1], flush=True)
            for name, res in (("HF torch", torch_ref), ("HF TF", tf_ref), ("ours", result)):
                if "error" in res:
                    print(f"{name} failed: {res['error']}", file=sys.stderr)
    print()
    print("XLNet, d_model 256, 4 heads, 2 layers, d_inner 1024, batch 1 (1/8 left padding); CPU, 2 threads; "
          f"medians over {args.rounds} interleaved rounds of fresh processes")
    print(format_table(_headers(args.jit), rows))


def forward_flops(length, mode, batch=1):
    """Content-stream relative attention per layer: content scores Q K^T and the output P V (dense), position
    scores of each query against the 2N relative positions, and the projection of those 2N position embeddings."""
    hidden = CONFIG["d_model"]
    relative = dense_attention_flops(length, 2 * length, hidden, batch) / 2 + 2.0 * batch * 2 * length * hidden ** 2
    return encoder_flops(length, hidden, CONFIG["d_inner"], CONFIG["n_layer"],
                         dense_attention_flops(length, length, hidden, batch) + relative, batch, mode)


def _headers(jit):
    headers = ["mode", "length", "ours s", "HF torch s", "HF TF s", "vs torch", "vs TF", "ours GFLOP/s (x sgemm)",
               "torch GFLOP/s (x sgemm)", "ours MB", "torch MB", "TF MB"]
    return headers + (["ours XLA s", "XLA vs torch"] if jit else [])


if __name__ == "__main__":
    main()
