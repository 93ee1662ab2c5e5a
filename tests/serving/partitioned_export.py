"""Run in a fresh process by tests/serving/test_serving.py: `python -m tests.serving.partitioned_export PATH`.

Builds a tiny XLM-R-XL classifier with its weights partitioned across two parameter servers of a local cluster
(from_pretrained inside a ParameterServerStrategy scope whose partitioner splits the embeddings and kernels),
exports it to PATH from the chief, and writes PATH/../expected.npz: the partitioned model's logits on the test
inputs, the same model's logits unpartitioned, and how many weights were split.
"""
import os
import sys
import tempfile

import numpy as np

import tfmodels
from tests.serving.test_serving import FEED, TINY
from tfmodels.training import parameter_server


def main(path):
    config = tfmodels.XLMRobertaXLConfig(**TINY)
    reference = tfmodels.XLMRobertaXLForSequenceClassification(config).build_model()
    unpartitioned = reference(FEED, training=False).logits.numpy()
    with tempfile.TemporaryDirectory() as checkpoint, parameter_server.local_cluster(num_ps=2) as cluster:
        reference.save_pretrained(checkpoint, hf_format=True)
        strategy, _ = parameter_server.parameter_server_strategy(parameter_server.chief_resolver(cluster),
                                                                 min_shard_bytes=256)
        with strategy.scope():
            model = tfmodels.XLMRobertaXLForSequenceClassification.from_pretrained(checkpoint)
        partitioned = sum(len(parameter_server.shard_devices(v)) > 1 for v in model.variables)
        model.export(path)
        logits = model(FEED, training=False).logits.numpy()
    np.savez(os.path.join(path, "..", "expected.npz"), logits=logits, unpartitioned=unpartitioned,
             partitioned=partitioned)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
