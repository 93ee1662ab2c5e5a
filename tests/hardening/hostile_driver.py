"""Run by tests/hardening/test_hostile_checkpoints.py in a fresh process: load damaged checkpoints and configs the
way users do, and report what happened to each.

    python tests/hardening/hostile_driver.py SPEC.json

SPEC: {"cases": [{"name", "kind", "path", ...}]}, kinds:
- "load": `tfmodels.<class>.from_pretrained(path, **kwargs)` (a model or a config class);
- "fuzz": `count` mutations (byte flips, truncations) of the safetensors file `path`, each written to `workdir`
  and read back whole through CheckpointReader (every tensor read and memory-mapped).
Prints one `RESULT {json}` line per case: name, returned (a model / config came back), error_type, message, and
the tfmodels warnings logged meanwhile; a fuzz case reports its counts and every mutation that broke the rule.
"""
import json
import logging
import os
import shutil
import sys

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # noqa: E402

import tfmodels  # noqa: E402
from tfmodels.core.checkpoint import CheckpointReader  # noqa: E402
from tfmodels.core.logging import logger  # noqa: E402
from tfmodels.core.safetensors_io import SafetensorsFile  # noqa: E402


class _Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _load(case):
    cls = getattr(tfmodels, case["class"])
    return cls.from_pretrained(case["path"], **case.get("kwargs", {}))


def _read_all(directory):
    """{name: (bytes read, bytes of the mapped view or None)} of every tensor of a checkpoint directory."""
    reader = CheckpointReader(directory)
    out = {}
    for name in reader.keys():
        view = reader.mapped(name)
        out[name] = (reader.get(name).tobytes(), None if view is None else view.tobytes())
    for file_name, _ in reader.files():
        reader.release(file_name)
    return out


def _fuzz(case):
    """Each mutation must either raise a ValueError naming the file, or read exactly the bytes of the mutated
    file at the original header's offsets (a flip inside tensor data changes that tensor's value, which no reader
    can notice; a flip inside the header may rename a tensor but must not move or resize any)."""
    rng = np.random.RandomState(case.get("seed", 0))
    original = open(case["path"], "rb").read()
    with SafetensorsFile(case["path"]) as f:
        start = f._data_start
        layout = sorted((f.entries[n]["data_offsets"], f.entries[n]["dtype"], f.entries[n]["shape"]) for n in f.keys())
    workdir = case["workdir"]
    file_name = os.path.basename(case["path"])
    errors, loaded, failures = 0, 0, []
    for i in range(case["count"]):
        data = bytearray(original)
        if i % 4 == 3:
            cut = int(rng.randint(0, len(data)))
            del data[cut:]
            what = f"truncated to {cut} bytes"
        else:
            # Half the flips land in the size field and header, where the checks are.
            where = int(rng.randint(0, start)) if i % 2 else int(rng.randint(0, len(data)))
            data[where] ^= int(rng.randint(1, 256))
            what = f"byte {where} flipped"
        directory = os.path.join(workdir, f"m{i}")
        os.makedirs(directory)
        with open(os.path.join(directory, file_name), "wb") as out:
            out.write(data)
        try:
            tensors = _read_all(directory)
        except ValueError as exc:
            errors += 1
            if file_name not in str(exc):
                failures.append(f"{what}: error without the file name: {exc}")
        else:
            loaded += 1
            with SafetensorsFile(os.path.join(directory, file_name)) as f:
                got = sorted((f.entries[n]["data_offsets"], f.entries[n]["dtype"], f.entries[n]["shape"])
                             for n in f.keys())
                by_offset = {tuple(f.entries[n]["data_offsets"]): n for n in f.keys()}
            if got != layout:
                failures.append(f"{what}: loaded with a different layout")
            for (begin, end), _, _ in layout:
                name = by_offset.get((begin, end))
                expected = bytes(data[start + begin:start + end])
                if name is None or tensors[name][0] != expected or tensors[name][1] not in (None, expected):
                    failures.append(f"{what}: tensor at [{begin}, {end}) read wrong")
        shutil.rmtree(directory)
    return {"errors": errors, "loaded": loaded, "failures": failures}


def main(spec_path):
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    for case in spec["cases"]:
        captured = _Warnings()
        logger.addHandler(captured)
        result = {"name": case["name"], "returned": False, "error_type": None, "message": ""}
        try:
            if case["kind"] == "fuzz":
                result.update(_fuzz(case))
            else:
                result["returned"] = _load(case) is not None
        except Exception as exc:  # reported to the test, which judges the type and the message
            result["error_type"], result["message"] = type(exc).__name__, str(exc)
        finally:
            logger.removeHandler(captured)
        result["warnings"] = captured.messages
        print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
