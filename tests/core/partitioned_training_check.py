"""Run in a fresh process by tests/core/test_large.py: train a tiny XLM-R-XL twice and compare.

1. Single process, the ordinary way: Keras optimizer on `model.trainable_variables`, N steps (dropout on).
2. The same model loaded (from_pretrained, inside the strategy scope) into a ParameterServerStrategy whose
   partitioner splits the embeddings and every dense kernel across two parameter-server processes; the same N
   steps run on a worker process through the ClusterCoordinator, with training.parameter_server.train_step.

Prints `RESULT {json}`: per-step losses of both, the largest weight difference after training, and where every
partitioned variable's shards and the optimizer's slots live.
"""
import json
import os
import sys
import tempfile

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfmodels  # noqa: E402
from tfmodels.core import checkpoint as ckpt  # noqa: E402
from tfmodels.training import parameter_server as distributed  # noqa: E402
from tfmodels.core.layers import _seed_generators  # noqa: E402

CONFIG = dict(vocab_size=99, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
              max_position_embeddings=32, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
STEPS = 3
LEARNING_RATE = 0.01
MIN_SHARD_BYTES = 256  # 16 x 16 float32 kernels (1 KB) split in two; 16-float biases (64 B) stay whole


def batches():
    rng = np.random.RandomState(0)
    out = []
    for _ in range(STEPS):
        ids = rng.randint(3, CONFIG["vocab_size"], (2, 9)).astype(np.int32)
        mask = np.ones_like(ids)
        mask[1, 6:] = 0
        ids[mask == 0] = 1
        labels = np.where(rng.rand(*ids.shape) < 0.3, ids, -100).astype(np.int32)
        out.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return out


def weights(model):
    return {n.name: np.asarray(tf.convert_to_tensor(ckpt.backing_variable(n.variable)))
            for n in ckpt.named_variables(model)}


def seed_states(model):
    return [g.state.numpy() for g in _seed_generators(model)]


def set_seed_states(model, states):
    for generator, state in zip(_seed_generators(model), states):
        generator.state.assign(state)


def single_process(directory):
    keras.utils.set_random_seed(0)
    model = tfmodels.XLMRobertaXLForMaskedLM(tfmodels.XLMRobertaXLConfig(**CONFIG))
    model.build_model()
    model.save_pretrained(directory, hf_format=True)
    initial = weights(model)
    seeds = seed_states(model)
    optimizer = keras.optimizers.Adam(LEARNING_RATE)

    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            loss = model(batch, training=True).loss
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    losses = [float(step({k: tf.constant(v) for k, v in b.items()})) for b in batches()]
    return seeds, losses, initial, weights(model)


def partitioned(directory, seeds):
    with distributed.local_cluster(num_ps=2, num_workers=1) as cluster:
        strategy, coordinator = distributed.parameter_server_strategy(
            distributed.chief_resolver(cluster), min_shard_bytes=MIN_SHARD_BYTES)
        with strategy.scope():
            model = tfmodels.XLMRobertaXLForMaskedLM.from_pretrained(directory)
            optimizer = distributed.build_optimizer(keras.optimizers.Adam(LEARNING_RATE), model)
        set_seed_states(model, seeds)
        step = distributed.train_step(model, optimizer)

        @tf.function
        def worker_step(batch):
            return strategy.run(step, args=(batch,))

        losses = []
        for b in batches():
            result = coordinator.schedule(worker_step, args=({k: tf.constant(v) for k, v in b.items()},))
            coordinator.join()
            losses.append(float(result.fetch()))
        layout = {n.name: distributed.shard_devices(n.variable) for n in ckpt.named_variables(model)}
        # Adam's slots follow the order of the variables it was built on: the shards.
        colocated = []
        for shard, momentum, velocity in zip(distributed.variable_components(model.trainable_variables),
                                             optimizer._momentums, optimizer._velocities):
            colocated.append(shard.device == ckpt.backing_variable(momentum).device ==
                             ckpt.backing_variable(velocity).device)
        processes = cluster.processes
        result = losses, weights(model), layout, colocated
    stopped = all(p.poll() is not None for p in processes)
    return result + (len(processes), stopped)


_lookups = []
_embedding_lookup = tf.nn.embedding_lookup


def _counting_lookup(params, ids, *args, **kwargs):
    """Records lookups on partitioned tables (core.layers.Embedding's path for ShardedVariables)."""
    _lookups.append(type(params).__name__)
    return _embedding_lookup(params, ids, *args, **kwargs)


def main():
    tf.nn.embedding_lookup = _counting_lookup
    with tempfile.TemporaryDirectory() as directory:
        seeds, reference_losses, initial, reference = single_process(directory)
        losses, trained, layout, colocated, servers, stopped = partitioned(directory, seeds)
    diffs = {name: float(np.max(np.abs(trained[name] - reference[name]))) for name in reference}
    changes = {name: float(np.max(np.abs(reference[name] - initial[name]))) for name in reference}
    result = {"reference_losses": reference_losses, "losses": losses, "max_weight_diff": max(diffs.values()),
              "worst": max(diffs, key=diffs.get), "unchanged_by_training": [n for n, c in changes.items() if c == 0],
              "layout": layout, "slots_colocated": colocated, "partitioned_lookups": sorted(set(_lookups)),
              "servers": servers, "servers_stopped": stopped}
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
