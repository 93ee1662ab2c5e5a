"""pytorch_model.bin without torch: HF-written checkpoints (single and sharded, two families) load bit-exactly in
a process where torch cannot be imported, and malicious pickles are refused with nothing executed, with and
without the old allow_pickle opt-in."""
import json
import os
import pickle
import subprocess
import sys
import zipfile

import pytest

import tfmodels
from tests import helpers
from tfmodels.core.torch_pickle import TorchZipFile, UnsafePickleError

REPO_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64)

# Runs in a child process: torch is blocked before anything imports it.
CHILD = r'''
import json, sys
sys.modules["torch"] = None  # `import torch` now raises ImportError
import numpy as np
import tfmodels
from tfmodels.core.checkpoint import named_variables
from tfmodels.core.safetensors_io import SafetensorsFile
from tfmodels.core.torch_pickle import TorchZipFile
cases = json.loads(sys.argv[1])
for case in cases:
    cls = getattr(tfmodels, case["class"])
    from_bin, info = cls.from_pretrained(case["bin"], output_loading_info=True)
    assert info.source.endswith("(bin (sharded))" if case["sharded"] else "(bin)"), info.source
    assert not info.missing and not info.unexpected and not info.mismatched, info.report()
    from_safe = cls.from_pretrained(case["safe"])
    for a, b in zip(named_variables(from_bin), named_variables(from_safe)):
        assert a.name == b.name and np.array_equal(a.variable.numpy(), b.variable.numpy()), a.name
    # tensor by tensor, each .bin file against the safetensors the same model wrote
    safe = SafetensorsFile(case["safe_file"])
    for name in case["bin_files"]:
        f = TorchZipFile(name)
        for key in f.keys():
            if key not in safe:  # a tied copy, which safetensors does not store
                continue
            got, want = f.get(key), safe.get(key)
            assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want), key
print("torch imported:", "torch" in sys.modules and sys.modules["torch"] is not None)
'''


@pytest.fixture(scope="module")
def bin_checkpoints(tmp_path_factory):
    import transformers
    root = tmp_path_factory.mktemp("bin")
    cases = []
    for name, config, sharded in (
            ("YosoForMaskedLM", transformers.YosoConfig(**TINY), False),
            ("XLMRobertaXLForSequenceClassification", transformers.XLMRobertaXLConfig(**TINY, num_labels=3), True)):
        model = helpers.randomize_torch_model(getattr(transformers, name)(config))
        model.half() if sharded else None  # the sharded case is float16: a second storage dtype
        bin_dir, safe_dir = str(root / name / "bin"), str(root / name / "safe")
        model.save_pretrained(bin_dir, safe_serialization=False, max_shard_size="20KB" if sharded else "10GB")
        model.save_pretrained(safe_dir, max_shard_size="10GB")
        bin_files = sorted(os.path.join(bin_dir, f) for f in os.listdir(bin_dir) if f.endswith(".bin"))
        assert len(bin_files) > 1 if sharded else bin_files == [os.path.join(bin_dir, "pytorch_model.bin")]
        cases.append({"class": name, "bin": bin_dir, "safe": safe_dir, "sharded": sharded, "bin_files": bin_files,
                      "safe_file": os.path.join(safe_dir, "model.safetensors")})
    return cases


@pytest.mark.slow  # a child process (~20 s)
def test_bin_loads_bit_exactly_without_torch(bin_checkpoints):
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(bin_checkpoints)], capture_output=True,
                          text=True, timeout=300, cwd=REPO_DIR)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "torch imported: False" in done.stdout


class _Reduce:
    """Pickles to a call of `function(*args)`: what an attacker's checkpoint does."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def _torch_zip(path, payload):
    """A file laid out like torch.save's zip format whose data.pkl pickles `payload`."""
    with zipfile.ZipFile(path, "w") as f:
        f.writestr("archive/data.pkl", pickle.dumps(payload, protocol=2))
        f.writestr("archive/version", "3\n")


@pytest.mark.parametrize("allow_pickle", [None, True])
@pytest.mark.parametrize("attack", ["os.system", "unknown global", "eval in a state dict"])
def test_malicious_pickles_are_refused_and_nothing_runs(attack, allow_pickle, tmp_path):
    marker = tmp_path / "marker"
    command = f"touch {marker}"
    payload = {
        "os.system": _Reduce(os.system, command),
        "unknown global": {"weight": _Reduce(subprocess.call, ["touch", str(marker)])},
        "eval in a state dict": {"weight": _Reduce(eval, f"__import__('os').system({command!r})")},
    }[attack]
    directory = tmp_path / "checkpoint"
    directory.mkdir()
    with open(directory / "config.json", "w") as f:
        json.dump(tfmodels.YosoConfig(**TINY).to_dict(), f)
    _torch_zip(directory / "pytorch_model.bin", payload)
    kwargs = {} if allow_pickle is None else {"allow_pickle": allow_pickle}
    with pytest.warns(FutureWarning) if allow_pickle is not None else _no_warning():
        with pytest.raises(UnsafePickleError, match="plain PyTorch state dict does not hold"):
            tfmodels.YosoModel.from_pretrained(str(directory), **kwargs)
    assert not marker.exists(), "the pickle's code ran"


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_non_state_dict_pickles_and_legacy_files_are_refused(tmp_path):
    bad_pid = tmp_path / "pid.bin"
    with zipfile.ZipFile(bad_pid, "w") as f:
        f.writestr("archive/data.pkl", b"\x80\x02X\x03\x00\x00\x00abcQ.")  # persistent id "abc"
    with pytest.raises(UnsafePickleError, match="unsupported persistent id"):
        TorchZipFile(str(bad_pid))
    not_a_dict = tmp_path / "list.bin"
    _torch_zip(not_a_dict, [1, 2])
    with pytest.raises(UnsafePickleError, match="does not hold a state dict"):
        TorchZipFile(str(not_a_dict))
    legacy = tmp_path / "legacy.bin"
    legacy.write_bytes(pickle.dumps({"weight": 1}))
    with pytest.raises(ValueError, match="legacy"):
        TorchZipFile(str(legacy))
