"""Where a forward's time goes on this CPU: a family's forward, as its benchmark script times it (same config,
batch 1, 2 threads), under TF's profiler, its time per op type and its costliest ops; then TF's float32 MatMul
+ BiasAdd alone at the model's projection shapes, as a share of the sgemm rate measured in this run.

    python benchmarks/bench_profile.py [--families longformer,xlm_roberta_xl] [--length 4096] [--hf-tf FAMILIES]
    tfmodels bench profile -- --families mra,xlnet:512 --length 4096 --hf-tf xlnet

A family may name its own length (`xlnet:512`). `--hf-tf` profiles Hugging Face's TF model of those families as
their script builds it too (Longformer and XLNet, whose reference has TF classes): both run on TF's ops, so the
two splits say which parts a ratio to HF TF measured on one CPU is made of.

The benchmarks give a forward's GFLOP/s as a share of the sgemm rate; that share carries between CPUs only as
far as the forward's parts keep their own shares, and the parts do not scale alike: a matmul follows the CPU's
FMA rate, an element-wise pass its memory bandwidth (the Intel Xeon's sgemm rate is ~1.8x the AMD EPYC's, its
memory per core not). This script gives the parts: the projections' rate against sgemm at the model's own shapes
(small K or N runs below the 2048^3 rate; the op's own time, without a call's dispatch), and the time of
everything else. Each family runs in a fresh process (benchmarks.common.call); the profile is TF's (tf.profiler,
read from its XSpace trace), the ops' own time on the executor thread, summed per step.
"""
import argparse
import glob
import importlib
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from benchmarks.common import _sample, _warm_up, call, format_table, record  # noqa: E402
from benchmarks.machine import gflops, header  # noqa: E402

# The families whose script's `ours(length, "forward")` is a text model's forward at `length` tokens.
FAMILIES = ("longformer", "xlm_roberta_xl", "mra", "nystromformer", "yoso", "xlnet")
TOP_OPS = 8  # the costliest single ops listed
# Ops that run a function: their span holds the ops of the function, which count on their own.
CALLS = {"PartitionedCall", "StatefulPartitionedCall", "If", "StatelessIf", "While", "StatelessWhile", "Case",
         "StatelessCase"}


def projection_shapes(family, length):
    """The [M, K, N] of the family's benchmark model's projections: Q/K/V/output, the FFN's two."""
    config = importlib.import_module(f"benchmarks.bench_{family}").CONFIG
    hidden = config.get("hidden_size", config.get("d_model"))
    inner = config.get("intermediate_size", config.get("d_inner"))
    return [[length, hidden, hidden], [length, hidden, inner], [length, inner, hidden]]


def op_times(trace_dir, steps):
    """({op type: seconds per step}, {op name: seconds per step}) from the XSpace trace TF's profiler wrote to
    `trace_dir` over `steps` steps: the TF op events, named "op name:op type" (the ops of a function call
    count, the call's own span not)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    by_type, by_name = {}, {}
    for path in glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True):
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
        for plane in space.planes:
            for line in plane.lines:
                for event in line.events:
                    metadata = plane.event_metadata[event.metadata_id]
                    name, _, op_type = metadata.name.rpartition(":")
                    if not name or name.endswith(":") or " " in op_type or op_type in CALLS:
                        continue  # not an op ("ExecutorState::Process", "EagerLocalExecute: ...") or a call's span
                    seconds = event.duration_ps / 1e12 / steps
                    by_type[op_type] = by_type.get(op_type, 0.0) + seconds
                    by_name[name] = by_name.get(name, 0.0) + seconds
    return by_type, by_name


def profiled(run, steps):
    """Calls `run()` `steps` times under TF's profiler; returns (op times per step as op_times gives them,
    seconds per step)."""
    import tensorflow as tf
    trace_dir = tempfile.mkdtemp(prefix="tfmodels-profile-")
    try:
        tf.profiler.experimental.start(trace_dir)
        start = time.perf_counter()
        for _ in range(steps):
            run()
        seconds = (time.perf_counter() - start) / steps
        tf.profiler.experimental.stop()
        by_type, by_name = op_times(trace_dir, steps)
    finally:
        shutil.rmtree(trace_dir, ignore_errors=True)
    if not by_type:
        raise RuntimeError("the profiler's trace held no op events")
    return by_type, by_name, seconds


def projection_seconds(shape, repeats):
    """The time of TF's float32 MatMul + BiasAdd at [M, K] x [K, N] (the fused kernel the models run), as the
    profiler sees the op: without the call's dispatch and the copy of its output that a timed call would add."""
    import tensorflow as tf
    m, k, n = shape
    rng = tf.random.Generator.from_seed(0)
    a, b, bias = rng.normal([m, k]), rng.normal([k, n]), rng.normal([n])
    matmul = tf.function(lambda: tf.nn.bias_add(tf.matmul(a, b), bias))
    for _ in range(3):
        matmul()
    by_type, _, _ = profiled(matmul, max(repeats, 10))
    return sum(by_type.values())


def sides(family):
    """The sides of a family this script can profile: ours, and HF's TF model where the script builds one."""
    return ("ours", "hf_tf") if hasattr(importlib.import_module(f"benchmarks.bench_{family}"), "hf_tf") else ("ours",)


def profile(family, length, repeats=5, side="ours"):
    """Child process: the forward's median step time, its op times under the profiler and the projections' times
    (JSON). `side`: "ours", or "hf_tf" (HF's TF model, as the family's script builds it)."""
    step = getattr(importlib.import_module(f"benchmarks.bench_{family}"), side)(length, "forward")
    calls = _warm_up(step, 3)
    step_s = statistics.median(_sample(step, calls) for _ in range(repeats))
    by_type, by_name, profiled_s = profiled(step, repeats)
    projections = [{"shape": shape, "median_s": projection_seconds(shape, repeats)}
                   for shape in projection_shapes(family, length)]
    top = sorted(by_name.items(), key=lambda item: -item[1])[:TOP_OPS]
    return {"step_s": step_s, "profiled_step_s": profiled_s, "op_types": by_type, "top_ops": top,
            "projections": projections}


def report(family, length, result, sgemm_rate, side="ours"):
    """The printed tables of one family's profile."""
    step = result["profiled_step_s"]
    title = family if side == "ours" else f"{family} (HF TF)"
    types = sorted(result["op_types"].items(), key=lambda item: -item[1])
    listed = [(op_type, seconds) for op_type, seconds in types if seconds >= 0.001 * step]
    rest = step - sum(seconds for _, seconds in listed)
    rows = [[op_type, f"{1000 * s:.2f}", f"{100 * s / step:.1f}%"] for op_type, s in listed]
    rows.append(["(outside any op, and op types under 0.1%)", f"{1000 * rest:.2f}", f"{100 * rest / step:.1f}%"])
    lines = [f"{title}, forward at {length} tokens: {1000 * result['step_s']:.1f} ms a step "
             f"({1000 * step:.1f} ms under the profiler)",
             format_table(["op type", "ms / step", "of the step"], rows), "",
             format_table(["costliest ops", "ms / step"], [[name[-90:], f"{1000 * s:.2f}"]
                                                          for name, s in result["top_ops"]]), ""]
    gemm_rows = []
    for projection in result["projections"]:
        m, k, n = projection["shape"]
        rate = gflops(2.0 * m * k * n, projection)
        share = f"{rate / sgemm_rate:.2f}" if sgemm_rate else "n/a"
        gemm_rows.append([f"[{m}, {k}] x [{k}, {n}]", f"{1000 * projection['median_s']:.2f}", f"{rate:.0f}", share])
    lines += ["TF's float32 MatMul + BiasAdd alone at the model's projection shapes (the op's own time):",
              format_table(["shape", "ms", "GFLOP/s", "x sgemm"], gemm_rows)]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default="longformer,xlm_roberta_xl",
                        help=f"comma-separated, each FAMILY or FAMILY:LENGTH, of {', '.join(FAMILIES)}")
    parser.add_argument("--length", type=int, default=4096, help="of the families that name none")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hf-tf", default="", help="comma-separated families of those listed whose HF TF model is "
                                                    "profiled too (longformer, xlnet)")
    args = parser.parse_args()
    runs = []
    for item in args.families.split(","):
        family, _, length = item.partition(":")
        if not length.isdigit() and length:
            parser.error(f"{item}: the length after ':' must be a number")
        runs.append((family, int(length or args.length)))
    unknown = sorted({family for family, _ in runs} - set(FAMILIES))
    if unknown:
        parser.error(f"unknown families {unknown}; choose from {', '.join(FAMILIES)}")
    hf_tf = [family for family in args.hf_tf.split(",") if family]
    listed = {family for family, _ in runs}
    for family in hf_tf:
        if family not in listed or "hf_tf" not in sides(family):
            parser.error(f"--hf-tf {family}: not a listed family whose script builds HF's TF model")
    sgemm = header()
    failed = False
    for family, length in runs:
        for side in ("ours", "hf_tf") if family in hf_tf else ("ours",):
            params = {"family": family, "length": length, "repeats": args.repeats, "side": side}
            result = call("benchmarks.bench_profile", "profile", params)
            record("profile", params, result)
            print()
            if "error" in result:
                failed = True
                print(f"{family} ({side}): the profile failed:\n{result['error']}")
            else:
                print(report(family, length, result, sgemm["rate"], side), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
