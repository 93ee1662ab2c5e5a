import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def pytest_configure(config):
    try:
        import transformers
        transformers.logging.set_verbosity_error()
    except ImportError:
        pass


@pytest.fixture(autouse=True)
def _seed():
    import tensorflow as tf
    np.random.seed(0)
    tf.random.set_seed(0)
    import keras
    keras.utils.set_random_seed(0)
