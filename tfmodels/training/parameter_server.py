"""Models larger than one device: weights partitioned across parameter servers (tf.distribute
ParameterServerStrategy with a variable partitioner), for every family.

How Keras 3 layers meet partitioned variables (measured with TF 2.21 / Keras 3.15):
- Building a model inside `strategy.scope()` works as is: each Keras variable's `tf.Variable` is created by the
  strategy, so a large one becomes a `ShardedVariable` whose shards (row blocks of axis 0) live on different
  parameter servers, a small one a `CachingVariable` on one of them. Loading (`from_pretrained` inside the
  scope) assigns each checkpoint tensor to its shards.
- The forward pass works too: ops read a ShardedVariable by concatenating its shards, and embedding lookups go
  through `core.layers.Embedding`, which gathers only the rows it needs from each shard (`tf.nn.embedding_lookup`
  dispatches on ShardedVariable), so a 250k x 4096 table is never fetched whole.
- What does not work: `GradientTape.gradient` with respect to a Keras variable backed by a ShardedVariable
  (`'ShardedVariable' object has no attribute 'handle'`), hence optimizers on `model.trainable_variables`, and
  Keras 3's `fit`, which has no ParameterServerStrategy support at all.

The mechanism here: take gradients with respect to the *shards* (`variable_components`) and apply them with
any Keras optimizer built on those shards (its slot variables are then created beside each shard, on the same
parameter server). `train_step` is that step; without a strategy it is an ordinary single-process step on the
plain variables, with the same arithmetic, so a partitioned run reproduces a single-process run.

`local_cluster` starts parameter-server and worker processes on free localhost ports (tests, demos, one-host
setups) and stops them; on a real cluster each task runs `python -m tfmodels.training.parameter_server serve ...` (or any
`tf.distribute.Server`) and the chief builds the strategy from TF_CONFIG.
"""
import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import time

import tensorflow as tf

from tfmodels.core.checkpoint import variable_components
from tfmodels.training.job import check_training_memory


def shard_devices(variable):
    """Device of each shard of a variable (one entry for an unpartitioned variable)."""
    return [v.device for v in variable_components([variable])]


def parameter_server_strategy(cluster_resolver=None, num_shards=None, min_shard_bytes=256 << 10,
                              max_shard_bytes=None):
    """A ParameterServerStrategy whose variables of at least 2 x `min_shard_bytes` are split along axis 0 into
    up to `num_shards` shards (default: one per parameter server), and its ClusterCoordinator.

    With `max_shard_bytes` instead, every variable is split so that no shard exceeds it (the right choice when
    single tensors are larger than one server's memory). `cluster_resolver` defaults to TF_CONFIG."""
    if cluster_resolver is None:
        cluster_resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    num_ps = len(cluster_resolver.cluster_spec().as_dict().get("ps", []))
    if not num_ps:
        raise ValueError("The cluster has no 'ps' job: a parameter-server strategy needs at least one")
    shards = num_shards or num_ps
    if max_shard_bytes:
        partitioner = tf.distribute.experimental.partitioners.MaxSizePartitioner(max_shard_bytes, max_shards=None)
    else:
        partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(min_shard_bytes, max_shards=shards)
    strategy = tf.distribute.ParameterServerStrategy(cluster_resolver, variable_partitioner=partitioner)
    return strategy, tf.distribute.coordinator.ClusterCoordinator(strategy)


def build_optimizer(optimizer, model):
    """Create the optimizer's slot variables for the model's trainable shards (call inside strategy.scope())."""
    optimizer.build(variable_components(model.trainable_variables))
    return optimizer


def train_step(model, optimizer, loss_fn=None):
    """A step function `step(inputs) -> loss` for the model's own loss (labels inside `inputs`) or
    `loss_fn(model, inputs, training=True)`: gradients with respect to the variables' shards, applied by
    `optimizer` (built with `build_optimizer`). Wrap it in tf.function; under a ParameterServerStrategy run it
    on workers with `coordinator.schedule(fn, args=...)` where `fn` calls `strategy.run(step, args=...)`."""

    check_training_memory(model.config, "parameter-server")

    def step(inputs):
        variables = variable_components(model.trainable_variables)
        with tf.GradientTape() as tape:
            if loss_fn is not None:
                loss = loss_fn(model, inputs, training=True)
            else:
                loss = model(inputs, training=True)["loss"]
            loss = tf.cast(loss, tf.float32)
        gradients = tape.gradient(loss, variables)
        optimizer.apply_gradients([(g, v) for g, v in zip(gradients, variables) if g is not None])
        return loss

    return step


# ------------------------------------------------------------------------------------------------------------
# Local clusters (servers in subprocesses on free localhost ports)


def free_ports(count):
    """`count` distinct free TCP ports on localhost (held open together so that none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("localhost", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def serve(cluster, job, index):
    """Run one tf.distribute.Server task of `cluster` until killed (the body of a server process)."""
    server = tf.distribute.Server(tf.train.ClusterSpec(cluster), job_name=job, task_index=index,
                                  protocol="grpc", start=True)
    print(f"READY {job} {index} {server.target}", flush=True)
    server.join()


class LocalCluster:
    """What `local_cluster` yields: `spec` (job -> addresses, with a "chief" entry for the calling process)
    and the server `processes`."""

    def __init__(self, spec, processes):
        self.spec = spec
        self.processes = processes


@contextlib.contextmanager
def local_cluster(num_ps=2, num_workers=1, timeout=120, env=None):
    """Start `num_ps` parameter servers and `num_workers` workers as processes on free localhost ports, wait
    until each serves, yield a LocalCluster, and stop them on exit (terminate, then kill after 20 s).

    The calling process becomes the chief: `parameter_server_strategy(chief_resolver(cluster))`. GPUs are
    hidden from the servers (CUDA_VISIBLE_DEVICES=""), as on a one-host test."""
    ports = free_ports(1 + num_ps + num_workers)
    cluster = {"chief": [f"localhost:{ports[0]}"],
               "ps": [f"localhost:{p}" for p in ports[1:1 + num_ps]],
               "worker": [f"localhost:{p}" for p in ports[1 + num_ps:]]}
    child_env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    child_env["PYTHONPATH"] = root + os.pathsep + child_env.get("PYTHONPATH", "")
    processes = []
    try:
        for job in ("ps", "worker"):
            for index in range(len(cluster[job])):
                processes.append(subprocess.Popen(
                    [sys.executable, "-m", "tfmodels.training.parameter_server", "serve", json.dumps(cluster), job,
                     str(index)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=child_env))
        deadline = time.monotonic() + timeout
        for process in processes:
            line = ""
            while not line.startswith("READY"):
                remaining = deadline - time.monotonic()
                if process.poll() is not None or remaining <= 0:
                    raise RuntimeError(f"a server of the local cluster did not start (exit {process.poll()})")
                if select.select([process.stdout], [], [], min(remaining, 1.0))[0]:
                    line = process.stdout.readline()
        yield LocalCluster(cluster, processes)
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()


def chief_resolver(cluster):
    """The cluster resolver of the chief (coordinator) task of `cluster` (a LocalCluster or a spec dict)."""
    spec = cluster.spec if isinstance(cluster, LocalCluster) else cluster
    return tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(spec), task_type="chief", task_id=0, rpc_layer="grpc")


def main(argv):
    if len(argv) == 4 and argv[0] == "serve":
        serve(json.loads(argv[1]), argv[2], int(argv[3]))
        return 0
    print("usage: python -m tfmodels.training.parameter_server serve CLUSTER_JSON JOB INDEX", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
