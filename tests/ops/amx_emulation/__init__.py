"""The dense-attention op's AMX kernel on software tiles (amx_emulation.h), for CPUs without AMX.

`emulated_sources(folder)` copies the op sources (custom_ops) into `folder` with the emulation included first in
dense_attention_bf16.h, and `environment(folder)` is the environment in which the op loader builds and loads that
copy (its own cache, op mode custom): every bfloat16 dense attention of that process then runs the AMX kernel's
code, unchanged, on the emulated tiles, and the process prints the emulation's operation counts to stderr at exit.
With `sanitize=True` the copy is built with AddressSanitizer and UBSan, which see each tile load and store as
the memcpy it is emulated with: a tile reading past its buffer is reported, where the hardware reads on.

    python -m tests.ops.amx_emulation [--sanitize] -- COMMAND...
    python -m tests.ops.amx_emulation -- python -m pytest -q tests/parity/beit -k bfloat16
"""
import os
import shutil

from tfmodels.ops import loader

HERE = os.path.dirname(os.path.abspath(__file__))
HEADER = os.path.join(HERE, "amx_emulation.h")
KERNEL_HEADER = os.path.join("dense_attention", "dense_attention_bf16.h")
REPORT_PREFIX = "AMX emulation: "


def emulated_sources(folder):
    """Copy the op sources into folder/custom_ops, the AMX emulation included first in the dense-attention
    kernel header; returns that source root."""
    root = os.path.join(folder, "custom_ops")
    shutil.copytree(loader.source_root(), root)
    shutil.copy(HEADER, os.path.join(root, "dense_attention"))
    kernel_header = os.path.join(root, KERNEL_HEADER)
    with open(kernel_header) as f:
        text = f.read()
    with open(kernel_header, "w") as f:
        f.write('#include "dense_attention/amx_emulation.h"  // tests/ops/amx_emulation: software AMX tiles\n' + text)
    return root


def environment(folder, sanitize=False, base=None):
    """The environment of a process whose dense attention runs on the emulated tiles: the sources of
    `emulated_sources(folder)` (made here if missing), built into folder/cache; with sanitize, their
    AddressSanitizer + UBSan build and the runtime it loads with."""
    root = os.path.join(folder, "custom_ops")
    if not os.path.isdir(root):
        emulated_sources(folder)
    env = dict(os.environ if base is None else base)
    env.pop("TFMODELS_DENSE_ATTENTION_BF16", None)  # the best kernel: AMX, on the emulated tiles
    env.pop("TFMODELS_OPS_MARCH", None)
    env.update(TFMODELS_CUSTOM_OPS_DIR=root, TFMODELS_OPS_CACHE=os.path.join(folder, "cache"),
               TFMODELS_OP_MODE="custom", TFMODELS_OPS_SANITIZE=",".join(loader.SANITIZERS) if sanitize else "")
    if sanitize:
        env.update(loader.sanitizer_environment())
    return env


def report(stderr):
    """The emulation's counts from a process's stderr ({"TDPBF16PS": n, ...}), or None where it printed none."""
    for line in stderr.splitlines():
        if line.startswith(REPORT_PREFIX) and "tile configurations" in line:
            counts = {}
            for part in line[len(REPORT_PREFIX):].split(", "):
                number, name = part.split(" ", 1)
                counts[name] = int(number)
            return counts
    return None
