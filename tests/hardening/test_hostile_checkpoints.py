"""Hostile checkpoints and configs (issue 20): each damaged file gives a clear error naming the file and the
tensor or key, in a fresh process that exits normally (never a signal), with no model returned; NaN weights
load with one warning. Small valid checkpoints are written first (our safetensors, HF PyTorch's .bin, HF TF's
tf_model.h5), then damaged one way per case; hostile_driver.py loads every case of the module, and runs the
safetensors fuzz, in one fresh child process (a fresh process per group would only pay TensorFlow's import again)."""
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile

import h5py
import numpy as np
import pytest

import tfmodels

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(os.path.dirname(HERE))
TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64)
XLNET = dict(vocab_size=99, d_model=32, n_layer=2, n_head=4, d_inner=37, mem_len=None)


def run_driver(cases, tmp_path):
    """{case name: result} of the driver's child process, which must end normally."""
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"cases": cases}))
    done = subprocess.run([sys.executable, os.path.join(HERE, "hostile_driver.py"), str(spec)],
                          capture_output=True, text=True, timeout=600, cwd=REPO_DIR)
    assert done.returncode == 0, f"driver ended with {done.returncode} (negative: a signal)\n{done.stderr[-3000:]}"
    results = {}
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
            results[result["name"]] = result
    assert set(results) == {case["name"] for case in cases}, done.stderr[-3000:]
    return results


def assert_refused(result, file_name, *names):
    """No model came back, and the error names the file and the tensor / key."""
    assert not result["returned"] and result["error_type"], result
    assert file_name in result["message"], result
    for name in names:
        assert name in result["message"], result


def copy_checkpoint(source, target):
    target.mkdir()
    for name in os.listdir(source):
        (target / name).write_bytes((source / name).read_bytes())
    return target


# ------------------------------------------------------------------------------------------------------------
# safetensors (our writer: HF format), sharded checkpoints and config.json


def read_safetensors(path):
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + size]), data[8 + size:]


def write_safetensors_raw(path, header, payload):
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + payload)


def edit_header(directory, edit):
    path = directory / "model.safetensors"
    header, payload = read_safetensors(path)
    payload = edit(header, payload)
    write_safetensors_raw(path, header, payload)


def two_same_size(header):
    """Two tensors of the same byte size (both LayerNorm biases of one layer)."""
    names = sorted(n for n in header if n.endswith("LayerNorm.bias"))
    return names[0], names[1]


@pytest.fixture(scope="module")
def safe_cases(tmp_path_factory):
    root = tmp_path_factory.mktemp("safe")
    valid = root / "valid"
    model = tfmodels.YosoModel(tfmodels.YosoConfig(**TINY))
    model.build_model()
    model.save_pretrained(str(valid), hf_format=True)
    sharded = root / "sharded_valid"
    model.save_pretrained(str(sharded), hf_format=True, max_shard_size=10e-6)  # ~10 KB shards
    header, _ = read_safetensors(valid / "model.safetensors")
    first, second = two_same_size(header)
    word = "embeddings.word_embeddings.weight"
    cases, expect = [], {}

    def case(name, make, file_name, *names, directory_from=valid, cls="YosoModel"):
        directory = copy_checkpoint(directory_from, root / name)
        make(directory)
        cases.append({"name": name, "kind": "load", "class": cls, "path": str(directory)})
        expect[name] = (file_name,) + names

    def truncate(fraction):
        def make(directory):
            path = directory / "model.safetensors"
            data = path.read_bytes()
            path.write_bytes(data[:int(len(data) * fraction)])
        return make

    def set_entry(name, **fields):
        def edit(header, payload):
            header[name].update(fields)
            return payload
        return lambda directory: edit_header(directory, edit)

    case("truncated data", truncate(0.9), "model.safetensors", "run past the end")
    case("truncated header", truncate(0.001), "model.safetensors")
    case("overlapping offsets", set_entry(second, data_offsets=header[first]["data_offsets"]), "model.safetensors",
         first, second, "overlap")
    end = len(read_safetensors(valid / "model.safetensors")[1])
    size = header[first]["data_offsets"][1] - header[first]["data_offsets"][0]
    case("offsets past the end", set_entry(first, data_offsets=[end, end + size]), "model.safetensors", first)
    case("unknown dtype", set_entry(word, dtype="F8_E9M9"), "model.safetensors", word, "F8_E9M9")
    case("shape lies about the data length", set_entry(word, shape=[50, 32]), "model.safetensors", word)
    case("absurd header size", lambda d: (d / "model.safetensors").write_bytes(
        struct.pack("<Q", 1 << 62) + (valid / "model.safetensors").read_bytes()[8:]), "model.safetensors")
    case("metadata not strings", lambda d: edit_header(d, lambda h, p: h.update(__metadata__={"format": 1}) or p),
         "model.safetensors", "__metadata__")
    case("header not JSON", lambda d: (d / "model.safetensors").write_bytes(
        struct.pack("<Q", 4) + b"{{{{" + b"\0" * 16), "model.safetensors", "JSON")

    def nan_weights(directory):
        def edit(header, payload):
            payload = bytearray(payload)
            begin = header[word]["data_offsets"][0]
            payload[begin:begin + 12] = np.array([np.nan, np.inf, np.nan], np.float32).tobytes()
            return bytes(payload)
        edit_header(directory, edit)
    case("nan weights", nan_weights, "model.safetensors", word)

    def config_edit(**values):
        def make(directory):
            config = json.loads((directory / "config.json").read_text())
            config.update(values)
            (directory / "config.json").write_text(json.dumps(config))
        return make

    case("shape does not fit the model", config_edit(intermediate_size=40), "model.safetensors",
         "intermediate.dense.weight")

    # sharded: the index names a shard that is not there, or a shard outside the directory
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[-1]
    case("index names a missing shard", lambda d: os.remove(d / shard), "model.safetensors.index.json", shard,
         directory_from=sharded)

    def escaping_index(directory):
        data = json.loads((directory / "model.safetensors.index.json").read_text())
        data["weight_map"][word] = "../" + shard
        (directory / "model.safetensors.index.json").write_text(json.dumps(data))
    case("index names a file outside the directory", escaping_index, "model.safetensors.index.json", word,
         directory_from=sharded)
    case("index not JSON", lambda d: (d / "model.safetensors.index.json").write_text("{"),
         "model.safetensors.index.json", directory_from=sharded)

    # config.json: wrong types, non-positive sizes, heads that do not divide the hidden size
    for key, value, message in (("hidden_size", "32", "hidden_size"), ("num_hidden_layers", 0, "num_hidden_layers"),
                                ("vocab_size", -5, "vocab_size"), ("intermediate_size", [37], "intermediate_size"),
                                ("num_attention_heads", 5, "num_attention_heads"),
                                ("max_position_embeddings", 64.5, "max_position_embeddings"),
                                ("output_hidden_states", "yes", "output_hidden_states"),
                                ("pad_token_id", "1", "pad_token_id"), ("id2label", ["a", "b"], "id2label")):
        case(f"config {key}={value!r}", config_edit(**{key: value}), "config.json", message)
    case("config not JSON", lambda d: (d / "config.json").write_text("{'hidden_size': 32"), "config.json")
    return cases, expect


def check_safetensors_indexes_and_configs(safe_cases, driven):
    """Damaged safetensors, indexes and configs give clean errors; NaN weights load with one warning."""
    cases, expect = safe_cases
    results = {case["name"]: driven[case["name"]] for case in cases}
    nan = results.pop("nan weights")
    assert nan["returned"] and not nan["error_type"], nan
    warned = [w for w in nan["warnings"] if "NaN or Inf" in w]
    word = "embeddings.word_embeddings.weight"
    assert len(warned) == 1 and "model.safetensors" in warned[0] and f"{word} (3)" in warned[0], nan["warnings"]
    for name, result in results.items():
        assert_refused(result, *expect[name])


# ------------------------------------------------------------------------------------------------------------
# pytorch_model.bin (HF PyTorch's writer) and tf_model.h5 (HF TF's writer)


def rewrite_zip(path, replace):
    """Rewrite a zip file with some entries' bytes replaced ({entry name suffix: bytes})."""
    with zipfile.ZipFile(path) as f:
        entries = {info.filename: f.read(info) for info in f.infolist()}
    with zipfile.ZipFile(path, "w") as f:
        for name, data in entries.items():
            for suffix, new in replace.items():
                if name.endswith(suffix):
                    data = new(data)
            f.writestr(name, data)


class _Reduce:
    """Pickles to a call of `function(*args)`: what an attacker's checkpoint does."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.fixture(scope="module")
def binary_cases(tmp_path_factory):
    import torch
    import transformers
    root = tmp_path_factory.mktemp("binary")
    bin_dir = root / "bin_valid"
    torch.manual_seed(0)
    transformers.YosoModel(transformers.YosoConfig(**TINY)).save_pretrained(str(bin_dir), safe_serialization=False)
    h5_dir = root / "h5_valid"
    spec = root / "h5_spec.json"
    spec.write_text(json.dumps({"heads": [{
        "tf_class": "TFXLNetModel", "pt_class": "XLNetModel", "config_class": "XLNetConfig", "config": XLNET,
        "pt_dir": str(root / "h5_pt"), "tf_dir": str(h5_dir), "inputs": str(root / "in.npz"),
        "outputs": str(root / "out.npz")}]}))
    np.savez(root / "in.npz", input_ids=np.array([[5, 6, 7], [8, 9, 1]], np.int32))
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, os.path.join(REPO_DIR, "tests", "loading", "make_tf_checkpoints.py"),
                           str(spec)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    marker = root / "pickle_code_ran"
    cases, expect = [], {}

    def case(name, source, make, file_name, *names, cls):
        directory = copy_checkpoint(source, root / name)
        make(directory)
        cases.append({"name": name, "kind": "load", "class": cls, "path": str(directory)})
        expect[name] = (file_name,) + names

    def bin_case(name, make, *names):
        case(name, bin_dir, lambda d: make(d / "pytorch_model.bin"), "pytorch_model.bin", *names, cls="YosoModel")

    bin_case("bin truncated", lambda p: p.write_bytes(p.read_bytes()[:len(p.read_bytes()) // 2]))
    bin_case("bin bad pickle opcodes", lambda p: rewrite_zip(p, {"/data.pkl": lambda d: d[:2] + b"\xfe" + d[3:]}),
             "UnpicklingError")
    word = "embeddings.word_embeddings.weight"

    def offset_out_of_range(path):
        # The word embeddings' rebuild call: its storage offset (BININT1 0 after the storage) becomes 65535.
        def edit(data):
            at = data.index(b"Q", data.index(word.encode()))  # BINPERSID: the storage of the next tensor
            assert data[at + 1:at + 3] == b"K\x00", data[at:at + 8]
            return data[:at + 1] + b"M\xff\xff" + data[at + 3:]
        rewrite_zip(path, {"/data.pkl": edit})
    bin_case("bin storage offset out of range", offset_out_of_range, word)
    with zipfile.ZipFile(bin_dir / "pytorch_model.bin") as f:
        storages = [n for n in f.namelist() if "/data/" in n]
    bin_case("bin storage shorter than the pickle says",
             lambda p: rewrite_zip(p, {storages[0]: lambda d: d[:len(d) // 2]}), "storage")

    def damage_last_storage(path):
        # One byte of the last storage's data (stored uncompressed) flipped: the header and pickle are intact, so
        # the load starts and fails at that tensor, after the earlier ones were assigned (its CRC no longer fits).
        with zipfile.ZipFile(path) as f:
            entries = [i for i in f.infolist() if "/data/" in i.filename]
        info = max(entries, key=lambda i: int(i.filename.rsplit("/", 1)[-1]))
        data = bytearray(path.read_bytes())
        name_length, extra_length = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
        data[info.header_offset + 30 + name_length + extra_length + info.file_size // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    bin_case("bin tensor data damaged mid-load", damage_last_storage, "tensor '", "CRC")
    bin_case("bin pickle calls a global", lambda p: rewrite_zip(p, {"/data.pkl": lambda d: pickle.dumps(
        {word: _Reduce(os.system, f"touch {marker}")}, protocol=2)}), "posix.system")

    def h5_case(name, make, *names):
        case(name, h5_dir, lambda d: make(d / "tf_model.h5"), "tf_model.h5", *names, cls="XLNetModel")

    h5_case("h5 truncated", lambda p: p.write_bytes(p.read_bytes()[:len(p.read_bytes()) // 2]))
    h5_case("h5 random bytes", lambda p: p.write_bytes(np.random.RandomState(0).bytes(4096)))

    def wrong_shape(path):
        with h5py.File(path, "r+") as f:
            group = f["transformer"]
            weight_names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
            name = next(n for n in weight_names if n.endswith("layer_._1/ff/layer_norm/gamma:0"))
            del group[name]
            group.create_dataset(name, data=np.ones([5], np.float32))
    h5_case("h5 dataset of a wrong shape", wrong_shape, "layer.1.ff.layer_norm.weight", "(5,)")

    def missing_dataset(path):
        with h5py.File(path, "r+") as f:
            group = f["transformer"]
            name = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]][0]
            del group[name]
    h5_case("h5 weight listed but missing", missing_dataset, "transformer")
    return cases, expect, marker


def check_bin_and_h5(binary_cases, driven):
    """Corrupt pytorch_model.bin and tf_model.h5 files give clean errors and run no pickle code."""
    cases, expect, marker = binary_cases
    results = {case["name"]: driven[case["name"]] for case in cases}
    for name, result in results.items():
        assert_refused(result, *expect[name])
    assert results["bin pickle calls a global"]["error_type"] == "UnsafePickleError"
    assert not marker.exists(), "the pickle's code ran"


# ------------------------------------------------------------------------------------------------------------
# Fuzz: byte flips and truncations of a valid safetensors file


@pytest.fixture(scope="module")
def fuzz_case(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    rng = np.random.RandomState(0)
    tensors = {"a.weight": rng.randn(16, 8).astype(np.float32), "b.bias": rng.randn(5).astype(np.float32),
               "c.ids": np.arange(12, dtype=np.int64).reshape(3, 4), "d.half": rng.randn(7, 3).astype(np.float16)}
    from tfmodels.core.safetensors_io import write_safetensors
    (root / "valid").mkdir()
    path = root / "valid" / "model.safetensors"
    write_safetensors(str(path), tensors, {"format": "pt"})
    (root / "work").mkdir()
    return {"name": "fuzz", "kind": "fuzz", "path": str(path), "count": 200, "seed": 0, "workdir": str(root / "work")}


def check_mutated_safetensors(driven):
    """Byte flips and truncations load exactly or fail cleanly; both outcomes exercised."""
    result = driven["fuzz"]
    assert not result["error_type"], result
    assert result["failures"] == [], result["failures"]
    assert result["errors"] + result["loaded"] == 200
    assert result["errors"] >= 50 and result["loaded"] >= 50, result


# One test for every case: pytest-xdist hands a module's tests to different workers, each of which would build the
# checkpoints and start the driver again for the fixtures they share.
@pytest.mark.slow  # HF writes the .bin here and tf_model.h5 in a tf-keras child; one driver child loads all cases
def test_hostile_checkpoints_give_clean_errors_in_a_fresh_process(safe_cases, binary_cases, fuzz_case, tmp_path):
    driven = run_driver(safe_cases[0] + binary_cases[0] + [fuzz_case], tmp_path)
    check_safetensors_indexes_and_configs(safe_cases, driven)
    check_bin_and_h5(binary_cases, driven)
    check_mutated_safetensors(driven)
