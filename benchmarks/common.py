"""Shared benchmark machinery: every measurement runs in its own fresh process, so that peak memory is that
measurement's alone and no framework warms another's caches.

A benchmark script defines measurement functions `def measure_x(**params) -> callable` that build a model and
return the step to time (a zero-argument function). `measure(spec)` runs one in a subprocess and returns
{"median_s", "min_s", "peak_mb"}: the median of `repeats` timed samples after `warmup` calls (a
sample of a short step repeats it for ~MIN_SAMPLE_S and gives the time per call), and the peak resident
memory added by the step (warm-up included) over the process's memory after building (Linux VmHWM, reset through clear_refs).
Compare ratios measured in one run: these machines are noisy (about ±20% run to run). Every result is also
appended to $TFMODELS_BENCH_RECORD when set (`tfmodels bench` sets it and draws benchmarks.plot's picture).

`measure_interleaved(spec)` times several steps of one process against each other instead: the measurement
function returns {name: step}, and each round times one sample of every step (the order reversed every other
round), so that a slow spell of the machine hits all of them alike; it reports each step's median and, per
step, the median (min, max) over rounds of its time / the first step's time. Use it for ratios of two
implementations that can share a process (an op and its twin); peak memory is not separable there.

`measure_rounds(module, calls, rounds)` is the same idea across processes, for implementations that cannot share
one (ours on Keras 3 against HF's TF classes on tf-keras): each call is measured `rounds` times, each time in a
fresh process, the order of the calls reversed every other round.
"""
import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
MIN_SAMPLE_S = 0.2  # a timed sample lasts at least about this long (short steps are repeated within it)
RECORD_ENV = "TFMODELS_BENCH_RECORD"  # where measure() appends its results for the picture (benchmarks.plot)


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _child(module_name, function_name, params, repeats, warmup):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, ROOT)
    module = importlib.import_module(module_name)
    step = getattr(module, function_name)(**params)
    # Reset the peak before the warm-up: allocators (TF's BFC, torch's caching) keep what the first call
    # took, so a peak measured after warm-up would miss the step's real working set.
    baseline = _status_kb("VmRSS")
    _reset_peak()
    calls = _warm_up(step, warmup)
    times = [_sample(step, calls) for _ in range(repeats)]
    peak = _status_kb("VmHWM")
    return {"median_s": statistics.median(times), "min_s": min(times),
            "peak_mb": max(0.0, (peak - baseline) / 1024.0), "rss_mb": peak / 1024.0}


def _warm_up(step, warmup):
    """Runs the step `warmup` times; returns the calls per timed sample. A step of a few milliseconds is at the
    mercy of the scheduler: each timed sample then runs the step back to back, enough calls for ~MIN_SAMPLE_S
    (judged by the last warm-up call; 1 without warm-up), and records the time per call."""
    last = None
    for _ in range(warmup):
        start = time.perf_counter()
        step()
        last = time.perf_counter() - start
    return 1 if last is None else max(1, min(1000, int(MIN_SAMPLE_S / max(last, 1e-6))))


def _sample(step, calls):
    start = time.perf_counter()
    for _ in range(calls):
        step()
    return (time.perf_counter() - start) / calls


def _child_interleaved(module_name, function_name, params, rounds, warmup):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, ROOT)
    module = importlib.import_module(module_name)
    steps = getattr(module, function_name)(**params)
    names = list(steps)
    calls = {name: _warm_up(steps[name], warmup) for name in names}
    times = {name: [] for name in names}
    for index in range(rounds):
        for name in (names if index % 2 == 0 else names[::-1]):
            times[name].append(_sample(steps[name], calls[name]))
    first = times[names[0]]
    result = {"steps": {name: {"median_s": statistics.median(t), "min_s": min(t)} for name, t in times.items()},
              "ratios": {}}
    for name in names[1:]:
        ratios = [x / y for x, y in zip(times[name], first)]
        result["ratios"][name] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
    return result


def measure(module_name, function_name, params, repeats=5, warmup=2, threads=2, timeout=1800, interleaved=False):
    """Run one measurement in a fresh process; returns its result dict (or {"error": ...})."""
    result = _measure(module_name, function_name, params, repeats, warmup, threads, timeout, interleaved)
    record(function_name, params, result)
    return result


def measure_rounds(module_name, calls, rounds=3, repeats=5, warmup=2, threads=2, timeout=1800):
    """Measurements [(function_name, params)] run `rounds` times each, every run in a fresh process, the order of
    the calls reversed every other round: a slow spell of the machine then hits every call alike (the ratio of two
    20 ms steps measured one after the other moved by half between runs of the same code). Returns one result per
    call: the median of its rounds' medians, the least min and the largest peak (a round's error is the result)."""
    runs = [[] for _ in calls]
    order = list(range(len(calls)))
    for index in range(rounds):
        for i in (order if index % 2 == 0 else order[::-1]):
            function_name, params = calls[i]
            runs[i].append(_measure(module_name, function_name, params, repeats, warmup, threads, timeout, False))
    results = []
    for (function_name, params), results_of_call in zip(calls, runs):
        error = next((r for r in results_of_call if "error" in r), None)
        result = error or {"median_s": statistics.median(r["median_s"] for r in results_of_call),
                           "min_s": min(r["min_s"] for r in results_of_call),
                           "peak_mb": max(r["peak_mb"] for r in results_of_call),
                           "rss_mb": max(r["rss_mb"] for r in results_of_call), "rounds": len(results_of_call)}
        record(function_name, params, result)
        results.append(result)
    return results


def measure_dtype_rounds(module_name, params, dtypes, rounds=3, repeats=5):
    """Our forward ("ours") under each Keras dtype policy in `dtypes` and HF's ("hf") as its reference: float32
    against float32, both bfloat16 policies against bf16 autocast, HF measured once per reference dtype. All in
    interleaved rounds of fresh processes (measure_rounds). Returns [(dtype, ours result, reference result)]."""
    def reference_dtype(dtype):
        return "float32" if dtype == "float32" else "bfloat16"
    references = list(dict.fromkeys(reference_dtype(dtype) for dtype in dtypes))
    results = measure_rounds(module_name, [("hf", {**params, "dtype": d}) for d in references]
                             + [("ours", {**params, "dtype": d}) for d in dtypes], rounds=rounds, repeats=repeats)
    by_dtype = dict(zip(references, results))
    return [(dtype, ours, by_dtype[reference_dtype(dtype)]) for dtype, ours in zip(dtypes, results[len(references):])]


def _measure(module_name, function_name, params, repeats, warmup, threads, timeout, interleaved):
    return _run_child(["--interleaved" if interleaved else "--child", module_name, function_name, json.dumps(params),
                       str(repeats), str(warmup)], threads, timeout)


def call(module_name, function_name, params, threads=2, timeout=1800):
    """`function(**params)` of `module`, run in a fresh process with the benchmarks' thread settings: its return
    value (JSON), or {"error": ...}. For a measurement that is not one timed step (benchmarks/bench_profile.py)."""
    return _run_child(["--call", module_name, function_name, json.dumps(params)], threads, timeout)


def _run_child(arguments, threads, timeout):
    """Runs `python -m benchmarks.common ARGUMENTS` with `threads` threads a side; returns the RESULT it printed."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", OMP_NUM_THREADS=str(threads),
               TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS="1", CUDA_VISIBLE_DEVICES="",
               TFMODELS_BENCH_THREADS=str(threads), PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = [sys.executable, "-m", "benchmarks.common", *arguments]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
        result = next((json.loads(line[len("RESULT "):]) for line in reversed(completed.stdout.splitlines())
                       if line.startswith("RESULT ")), None) or {"error": (completed.stderr or completed.stdout)[-1500:]}
    except subprocess.TimeoutExpired:
        result = {"error": f"timed out after {timeout}s"}
    return result


def record(function_name, params, result):
    """Append a measurement to $TFMODELS_BENCH_RECORD when set (`tfmodels bench` and benchmarks/targets.py set it):
    benchmarks.plot draws these records and benchmarks.targets reads its targets from them."""
    path = os.environ.get(RECORD_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"function": function_name, "params": params, "result": result}) + "\n")


def read_records(path):
    """The measurements `record` appended to `path`: [{"function", "params", "result"}], in order."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def run_script(name, args, output_dir):
    """Runs benchmarks/bench_NAME.py with `args` in a process of its own: its output goes to this terminal and, as
    it comes, to OUTPUT_DIR/NAME.txt, and every measurement it makes to OUTPUT_DIR/NAME.jsonl (emptied first).
    Returns (its exit code, the records' path)."""
    os.makedirs(output_dir, exist_ok=True)
    table, records = (os.path.abspath(os.path.join(output_dir, f"{name}.{ext}")) for ext in ("txt", "jsonl"))
    open(records, "w").close()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [ROOT, os.environ.get("PYTHONPATH")] if p))
    env[RECORD_ENV] = records
    with open(table, "w", encoding="utf-8") as copy, subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "benchmarks", f"bench_{name}.py"), *args], env=env,
            stdout=subprocess.PIPE, text=True) as process:
        for line in process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            copy.write(line)
    return process.returncode, records


def measure_interleaved(module_name, function_name, params, rounds=11, warmup=2, threads=2, timeout=1800):
    """Run one interleaved measurement in a fresh process (see the module's doc); returns
    {"steps": {name: {"median_s", "min_s"}}, "ratios": {name: {"median", "min", "max"}}} or {"error": ...}."""
    return measure(module_name, function_name, params, repeats=rounds, warmup=warmup, threads=threads,
                   timeout=timeout, interleaved=True)


def set_torch_threads():
    import torch
    threads = int(os.environ.get("TFMODELS_BENCH_THREADS", "2"))
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)


def format_table(headers, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(str(h).rjust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(v).rjust(w) for v, w in zip(row, widths)) for row in rows]
    return "\n".join(out)


def ratio(a, b):
    if not a or not b or "error" in a or "error" in b:
        return "n/a"
    return f"{a['median_s'] / b['median_s']:.2f}"


def skipped(reason):
    """The result of a measurement deliberately not made: it counts as no number everywhere ("error" in it), and
    the tables print "skipped" for it rather than "error"."""
    return {"error": reason, "skipped": True}


def _missing(result):
    return "skipped" if result.get("skipped") else "error"


def seconds(result):
    return _missing(result) if "error" in result else f"{result['median_s']:.3f}"


def megabytes(result):
    return _missing(result) if "error" in result else f"{result['peak_mb']:.0f}"


def main():
    parser = argparse.ArgumentParser()
    group = parser.add_mutually_exclusive_group(required=True)
    for flag in ("--child", "--interleaved"):
        group.add_argument(flag, nargs=5, metavar=("MODULE", "FUNCTION", "PARAMS", "REPEATS", "WARMUP"))
    group.add_argument("--call", nargs=3, metavar=("MODULE", "FUNCTION", "PARAMS"))
    args = parser.parse_args()
    if args.call:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        module_name, function_name, params = args.call
        result = getattr(importlib.import_module(module_name), function_name)(**json.loads(params))
    else:
        child = _child if args.child else _child_interleaved
        module_name, function_name, params, repeats, warmup = args.child or args.interleaved
        result = child(module_name, function_name, json.loads(params), int(repeats), int(warmup))
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
