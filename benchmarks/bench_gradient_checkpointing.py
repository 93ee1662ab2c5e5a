"""Gradient checkpointing (config.gradient_checkpointing, core.layers.run_layer): peak memory and time of one
training step with and without it, for any family. Each measurement runs in a fresh process
(benchmarks.common.measure: peak RSS added by the step over the built model, medians of repeats).

    python benchmarks/bench_gradient_checkpointing.py                                   # XLM-R-XL, 4096 tokens
    python benchmarks/bench_gradient_checkpointing.py --model LongformerModel --set attention_window=256
    python benchmarks/bench_gradient_checkpointing.py --model YosoModel --lengths 1024,4096 --eager

--model is any model class exported by tfmodels; the config is the class's defaults shrunk to SMALL (hidden
256, 4 heads, 4 layers, FFN 1024, as the dense benchmarks use), plus --set KEY=JSON overrides. The step is
forward (training=True, dropout on) + gradient of the mean square of the first output w.r.t. every trainable
weight, in a tf.function (the way `fit` runs it) unless --eager. The script also checks, in one process, that
both settings give the same gradients (same weights, same dropout seeds).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from benchmarks.common import format_table, measure, megabytes, seconds  # noqa: E402

SMALL = dict(hidden_size=256, num_attention_heads=4, num_hidden_layers=4, intermediate_size=1024, vocab_size=1000)


def _config(model_name, length, overrides):
    import tfmodels
    cls = getattr(tfmodels, model_name)
    defaults = cls.config_class.defaults
    values = {k: v for k, v in SMALL.items() if k in defaults}
    if "max_position_embeddings" in defaults:
        pad = defaults.get("pad_token_id") or 0
        values["max_position_embeddings"] = max(defaults["max_position_embeddings"], length + pad + 2)
    values.update(overrides)
    return cls, cls.config_class(**values)


def _inputs(model, batch, length):
    import numpy as np
    rng = np.random.RandomState(0)
    config = model.config
    if model.main_input_name == "pixel_values":
        side = int(round(length ** 0.5)) * config.patch_size
        return {"pixel_values": rng.randn(batch, config.num_channels, side, side).astype("float32")}
    ids = rng.randint(5, config.vocab_size, (batch, length)).astype("int32")
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def _model(model_name, length, overrides, checkpointing, batch):
    import tensorflow as tf
    cls, config = _config(model_name, length, {**overrides, "gradient_checkpointing": checkpointing})
    model = cls(config)
    model.build_model()
    inputs = {k: tf.constant(v) for k, v in _inputs(model, batch, length).items()}
    return model, inputs


def _loss(output):
    import tensorflow as tf
    first = output["last_hidden_state"] if "last_hidden_state" in output else output[0]
    return tf.reduce_mean(tf.square(tf.cast(first, tf.float32)))


def step(model_name, length, overrides, checkpointing, batch=1, eager=False):
    """Measurement entry point (benchmarks.common.measure): returns the training step to time."""
    import tensorflow as tf
    model, inputs = _model(model_name, length, overrides, checkpointing, batch)

    def train_step():
        with tf.GradientTape() as tape:
            loss = _loss(model(inputs, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        return loss, [tf.reduce_sum(tf.convert_to_tensor(g)) for g in grads if g is not None]

    run = train_step if eager else tf.function(train_step)
    return lambda: [t.numpy() for t in tf.nest.flatten(run())]


def gradient_difference(model_name, length, overrides, batch=1, eager=False):
    """Max |grad(plain) - grad(checkpointed)| over all weights, same weights and dropout seeds."""
    import numpy as np
    import tensorflow as tf

    from tfmodels.core.layers import _seed_generators
    plain, inputs = _model(model_name, length, overrides, False, batch)
    recomputed, _ = _model(model_name, length, overrides, True, batch)
    for a, b in zip(recomputed.weights, plain.weights):
        a.assign(b)
    for a, b in zip(_seed_generators(recomputed), _seed_generators(plain)):
        a.state.assign(b.state)
    results = []
    for model in (plain, recomputed):
        def grads(model=model):
            with tf.GradientTape() as tape:
                loss = _loss(model(inputs, training=True))
            return loss, tape.gradient(loss, model.trainable_variables)
        results.append((grads if eager else tf.function(grads))())
    (loss_a, grads_a), (loss_b, grads_b) = results
    pairs = [(tf.convert_to_tensor(a).numpy(), tf.convert_to_tensor(b).numpy())
             for a, b in zip(grads_a, grads_b) if a is not None or b is not None]
    diff = max(float(np.max(np.abs(a - b))) for a, b in pairs)
    scale = max(float(np.max(np.abs(a))) for a, _ in pairs)
    return {"loss_plain": float(loss_a), "loss_checkpointed": float(loss_b), "max_grad_diff": diff,
            "max_grad": scale}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="XLMRobertaXLModel")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON")
    parser.add_argument("--lengths", default="4096")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--eager", action="store_true")
    parser.add_argument("--check-length", type=int, default=512,
                        help="sequence length of the gradient-equality check (0 to skip)")
    args = parser.parse_args()
    overrides = {}
    for item in args.set:
        key, value = item.split("=", 1)
        overrides[key] = json.loads(value)
    rows = []
    for length in [int(x) for x in args.lengths.split(",")]:
        results = {}
        for checkpointing in (False, True):
            params = {"model_name": args.model, "length": length, "overrides": overrides,
                      "checkpointing": checkpointing, "batch": args.batch, "eager": args.eager}
            results[checkpointing] = measure("benchmarks.bench_gradient_checkpointing", "step", params,
                                             repeats=args.repeats, warmup=1)
        plain, recomputed = results[False], results[True]
        saved = "n/a" if "error" in plain or "error" in recomputed else \
            f"{1 - recomputed['peak_mb'] / plain['peak_mb']:.0%}"
        slower = "n/a" if "error" in plain or "error" in recomputed else \
            f"{recomputed['median_s'] / plain['median_s']:.2f}"
        rows.append([length, megabytes(plain), megabytes(recomputed), saved, seconds(plain), seconds(recomputed),
                     slower])
        for name, r in (("plain", plain), ("checkpointed", recomputed)):
            if "error" in r:
                print(f"{name} at {length}: {r['error']}", file=sys.stderr)
    print(f"{args.model}, {json.dumps({**SMALL, **overrides})}, batch {args.batch}, "
          f"{'eager' if args.eager else 'tf.function'}; CPU, 2 threads; peak = RSS added by one training step")
    print(format_table(["length", "peak MB plain", "peak MB checkpointed", "memory saved", "step s plain",
                        "step s checkpointed", "time ratio"], rows))
    if args.check_length:
        import tensorflow as tf
        tf.random.set_seed(0)
        check = gradient_difference(args.model, args.check_length, overrides, args.batch, args.eager)
        print(f"gradients at {args.check_length} tokens, dropout on: max |plain - checkpointed| = "
              f"{check['max_grad_diff']:.3g} (largest gradient {check['max_grad']:.3g}); losses "
              f"{check['loss_plain']:.6f} / {check['loss_checkpointed']:.6f}")


if __name__ == "__main__":
    main()
