"""MRA (multi-resolution attention on the block_sparse custom ops): our forward (and forward+backward) time and
peak memory against HF PyTorch MRA, whose three CUDA kernel calls run on the pure-torch stand-in of
tests/parity/mra/hf_kernels.py (HF's own kernels need CUDA); and our custom ops against their pure-TF twins.
Each measurement runs in a fresh process; medians of repeats.

    python benchmarks/bench_mra.py [--lengths 512,1024,2048,4096,8192,16384] [--repeats 5]

The model: hidden 256, 4 heads, 2 layers, batch 1, an all-ones attention mask (HF is only right unpadded),
max_position_embeddings = length, so the high-resolution budget is 4 blocks of 32 x 32 per block row
(block_per_row 4, as in mra-base-512-4) at every length.

Targets (issue 6): forward <= 0.7x HF's time at 4096; linear growth (ours at 16384 <= 4.5x ours at 4096);
custom op >= 3x faster than its twin. Two levels: the `ops` rows time the block-sparse ops alone (the fused
high-resolution attention `block_sparse.attention`, forward and the gradients of q, k, v, on [4, length, 64] with
4 selected 32 x 32 blocks per block row and a key mask) against their pure-TF twins; the `attention` rows time one
layer's whole mra2_attention (which also runs the low-resolution part, block means and top-k selection in plain TF
on both paths), custom op vs twin. For these two, op and twin run in one process, interleaved
(common.measure_interleaved): "twin/ours" is the median over rounds of the twin's time / the op's time in the
same round, with its range in "ratio range" (this machine's speed drifts by tens of percent between processes,
which single fresh-process medians turned into 2x swings of the ratio); the memory columns come from separate
fresh processes.

    python benchmarks/bench_mra.py --modes ops          # the ops alone
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from benchmarks.common import (format_table, measure, measure_interleaved, megabytes, ratio, seconds,  # noqa: E402
                               set_torch_threads, skipped)
from benchmarks.machine import dense_attention_flops, efficiency, encoder_flops, header  # noqa: E402

CONFIG = dict(vocab_size=1000, hidden_size=256, num_hidden_layers=2, num_attention_heads=4, intermediate_size=1024,
              hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, block_per_row=4)


# _KEEP_TENSORS: our steps return their outputs as TF tensors, not numpy arrays. A tf.function call on the CPU
# returns once its outputs are computed (eager execution is synchronous), and a .numpy() of the gradients copies
# them: 48 MB at 16384 in the `ops` rows, about as long as the backward op itself, a cost that HF's steps
# (loss.backward(), gradients left in place) never paid.


def config(length):
    return dict(CONFIG, max_position_embeddings=max(length, 512))


def _inputs(length, batch=1):
    import numpy as np
    rng = np.random.RandomState(0)
    ids = rng.randint(5, CONFIG["vocab_size"], (batch, length)).astype("int32")
    return ids, np.ones_like(ids)


def ours(length, mode, op_mode="custom"):
    import tensorflow as tf
    import tfmodels
    from tfmodels.ops import dispatch
    dispatch.set_op_mode(op_mode)
    model = tfmodels.MraModel(tfmodels.MraConfig(**config(length)))
    ids, mask = (tf.constant(a) for a in _inputs(length))
    model(input_ids=ids[:, :64], attention_mask=mask[:, :64])

    @tf.function
    def forward():
        return tf.reduce_sum(model(input_ids=ids, attention_mask=mask, training=False).last_hidden_state)

    @tf.function
    def forward_backward():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(input_ids=ids, attention_mask=mask, training=True).last_hidden_state)
        return [tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_variables)]

    step = forward if mode == "forward" else forward_backward
    return step  # see _KEEP_TENSORS


def attention(length, op_mode="custom"):
    """One layer's MRA-2 attention alone (the block-sparse part and the low resolution), [1, 4, length, 64]."""
    import numpy as np
    import tensorflow as tf
    from tfmodels.ops.block_sparse_attention import mra2_attention
    from tfmodels.ops import dispatch
    dispatch.set_op_mode(op_mode)
    rng = np.random.RandomState(0)
    q, k, v = (tf.constant(rng.randn(1, 4, length, 64).astype("float32")) for _ in range(3))
    mask = tf.ones([1, length], tf.float32)
    num_blocks = (max(length, 512) // 32) * CONFIG["block_per_row"]

    @tf.function
    def step():
        return mra2_attention(q, k, v, mask, num_blocks=num_blocks)[0]
    step.get_concrete_function()  # traced now, under this op mode
    return step  # see _KEEP_TENSORS


def attention_pair(length):
    """attention() with the custom op and with its twin, for common.measure_interleaved."""
    return {"ours": attention(length), "twin": attention(length, "reference")}


def ops(length, op_mode="custom"):
    """The fused block-sparse attention op (or its twin) forward + gradients, 4 blocks per block row."""
    import numpy as np
    import tensorflow as tf
    from tfmodels.ops import block_sparse as bs, dispatch
    dispatch.set_op_mode(op_mode)
    rng = np.random.RandomState(0)
    q, k, v = (tf.constant(rng.randn(4, length, 64).astype("float32")) for _ in range(3))
    mask = tf.constant((rng.rand(4, length) > 0.1).astype("float32"))
    blocks = length // 32
    rows = []
    for _ in range(4):  # per head: the diagonal block and 3 others in each block row, sorted
        chosen = [sorted({r} | set(rng.choice(blocks, 3, replace=False).tolist()))[:4] for r in range(blocks)]
        rows.append([r * blocks + c for r, cols in enumerate(chosen) for c in cols])
    width = min(len(r) for r in rows)
    indices = tf.constant(np.array([r[:width] for r in rows], dtype=np.int32))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch([q, k, v])
            out, norm, _ = bs.attention(q, k, v, indices, mask, scale=0.125, validate=False)
            loss = tf.reduce_sum(out) + tf.reduce_sum(norm)
        return [loss] + tape.gradient(loss, [q, k, v])
    step.get_concrete_function()  # traced now, under this op mode
    return step  # see _KEEP_TENSORS


def ops_pair(length):
    """ops() with the custom op and with its twin, for common.measure_interleaved."""
    return {"ours": ops(length), "twin": ops(length, "reference")}


def hf(length, mode):
    import torch
    import transformers
    from tests.parity.mra import hf_kernels
    set_torch_threads()
    hf_kernels.install()
    model = transformers.MraModel(transformers.MraConfig(**config(length)))
    ids, mask = (torch.tensor(a, dtype=torch.long) for a in _inputs(length))
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


HEADERS = ["mode", "length", "ours s", "HF s", "ours/HF", "twin s", "twin/ours", "ratio range",
           "ours GFLOP/s (x sgemm)", "ours MB", "HF MB", "twin MB"]


def forward_flops(length, mode):
    """MRA-2 per layer: low-resolution attention over 32-token block means (blocks x blocks scores and their
    product with the block-mean values), then exact attention on block_per_row 32 x 32 blocks per block row.
    The `attention`/`ops` modes time one layer's attention alone (no projections)."""
    from tfmodels.ops.block_sparse import BLOCK
    hidden, blocks = CONFIG["hidden_size"], length // BLOCK
    attention = dense_attention_flops(blocks, blocks, hidden) + \
        dense_attention_flops(length, CONFIG["block_per_row"] * BLOCK, hidden)
    if mode in ("attention", "ops"):
        return attention * (3 if mode == "ops" else 1)
    return encoder_flops(length, hidden, CONFIG["intermediate_size"], CONFIG["num_hidden_layers"], attention, 1, mode)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="512,1024,2048,4096,8192,16384")
    parser.add_argument("--modes", default="forward,attention")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sgemm = header()
    rows, times = [], {}
    module = "benchmarks.bench_mra"
    for mode in args.modes.split(","):
        for length in [int(x) for x in args.lengths.split(",")]:
            repeats = args.repeats if length <= 4096 else max(3, args.repeats - 2)
            spread = "-"
            if mode in ("attention", "ops"):
                paired = measure_interleaved(module, mode + "_pair", {"length": length}, rounds=2 * repeats + 1)
                # Memory from separate fresh processes (one process's peak cannot be split between the two).
                custom_mb = measure(module, mode, {"length": length}, repeats=1)
                twin_mb = measure(module, mode, {"length": length, "op_mode": "reference"}, repeats=1)
                if "error" in paired:
                    custom = twin = paired
                    twin_over_ours = "n/a"
                else:
                    custom = dict(paired["steps"]["ours"], peak_mb=custom_mb.get("peak_mb", float("nan")))
                    twin = dict(paired["steps"]["twin"], peak_mb=twin_mb.get("peak_mb", float("nan")))
                    twin_ratio = paired["ratios"]["twin"]
                    twin_over_ours = f"{twin_ratio['median']:.2f}"
                    spread = f"{twin_ratio['min']:.2f}-{twin_ratio['max']:.2f}"
                reference = skipped("not measured in the paired twin run")
            else:
                reference = measure(module, "hf", {"length": length, "mode": mode}, repeats=repeats)
                custom = measure(module, "ours", {"length": length, "mode": mode}, repeats=repeats)
                twin = measure(module, "ours", {"length": length, "mode": mode, "op_mode": "reference"},
                               repeats=repeats)
                twin_over_ours = ratio(twin, custom)
            times[(mode, length)] = custom
            with_hf = mode not in ("attention", "ops")
            row = [mode, length, seconds(custom), seconds(reference) if with_hf else "-",
                   ratio(custom, reference) if with_hf else "-", seconds(twin), twin_over_ours, spread,
                   efficiency(forward_flops(length, mode), custom, sgemm), megabytes(custom), megabytes(reference) if with_hf else "-", megabytes(twin)]
            rows.append(row)
            print(format_table(HEADERS, rows[-1:]).splitlines()[-1], flush=True)
    print()
    print("MRA, hidden 256, 4 heads, 2 layers, batch 1, block_per_row 4, max_position_embeddings = length; "
          "CPU, 2 threads")
    print(format_table(HEADERS, rows))
    for mode in args.modes.split(","):
        if (mode, 4096) in times and (mode, 16384) in times:
            print(f"{mode}: ours at 16384 / ours at 4096 = {ratio(times[(mode, 16384)], times[(mode, 4096)])} "
                  "(linear: 4.0)")


if __name__ == "__main__":
    main()
