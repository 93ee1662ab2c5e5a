"""Two MultiWorkerMirroredStrategy workers on localhost (TF_CONFIG with free ports, no GPU) train the demo recipe
with tfmodels' distributed train step and must end with identical weights, having trained the same steps."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_end_with_identical_weights(tmp_path):
    ports = free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    overrides = ["--set", "training.epochs=2", "--set", "training.steps_per_epoch=3", "--set", "data.batch_size=8",
                 "--set", "data.limit=64", "--set", "data.validation=null", "--set", "data.test=null",
                 "--set", "training.checkpoint_every=2", "--set", f"training.output_dir={tmp_path / 'run'}",
                 "--set", "training.strategy=multi_worker"]
    processes = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
                   CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
        command = [sys.executable, os.path.join(HERE, "multi_worker_driver.py"), "demo-xlm-roberta-xl-sentiment",
                   str(tmp_path / f"worker{index}.npz")] + overrides
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True))
    outputs = []
    for process in processes:
        try:
            out, _ = process.communicate(timeout=420)
        except subprocess.TimeoutExpired:
            for p in processes:
                p.kill()
            raise
        outputs.append(out)
        assert process.returncode == 0, out[-4000:]
    first, second = (np.load(tmp_path / f"worker{i}.npz") for i in range(2))
    assert int(first["replicas"]) == 2 and int(second["replicas"]) == 2
    assert int(first["steps"]) == int(second["steps"]) == 6
    names = [k for k in first.files if k.startswith("w")]
    assert names and sorted(names) == sorted(k for k in second.files if k.startswith("w"))
    for name in names:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
    # the chief (worker 0) wrote the final model, and both removed their checkpoints whole (atomic.remove_directory
    # leaves no partial copy behind)
    assert os.path.isfile(tmp_path / "run" / "final" / "config.json")
    assert not os.path.exists(tmp_path / "run" / "checkpoints")
    scratch = tmp_path / "run" / ".scratch"
    assert not os.path.isdir(scratch) or not os.listdir(scratch)
    assert not [name for name in os.listdir(tmp_path / "run") if "partial" in name]
