"""Issue 16's target table in one run: the benchmark scripts its targets rest on, one after another on this
machine, then every target read back from their measurements.

    python benchmarks/targets.py                               # or: tfmodels bench targets
    python benchmarks/targets.py --large-dir /tmp/xlckpt       # keep bench_large's 7 GB checkpoint there, reuse it
    python benchmarks/targets.py --skip large,bf16_matmul      # without the 3.5B model (it needs ~16 GB free)

Each script runs as `tfmodels bench NAME` runs it (benchmarks.common.run_script): its tables go to the terminal
and to OUTPUT_DIR/NAME.txt, its measurements to OUTPUT_DIR/NAME.jsonl. The targets are computed from those
records, never from the printed tables, and printed as a Markdown table (also OUTPUT_DIR/targets.md) under the
CPU line: model, AVX-512 / AMX flags, and the sgemm rates each script measured at its start. A forward's share of
the sgemm rate is its script's FLOP count over its time, against the faster of TF's and PyTorch's sgemm in that
same script (benchmarks.machine). The bf16 targets hold where the CPU has AMX-BF16; elsewhere their figures are
printed and marked as shown only, as are bench_large's figures for a bfloat16 product form other than the default
(tfmodels.ops.dense_epilogue). The last script, bench_profile, has no target: it splits the two forwards with an
sgemm-share target by op on this CPU, and XLNet's forward at 512 tokens beside HF TF's. About 15 minutes on 2
cores (AMD EPYC), a third of it the 3.5B model.
"""
import argparse
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

from benchmarks import bench_longformer, bench_xlm_roberta_xl  # noqa: E402
from benchmarks.common import read_records, run_script  # noqa: E402
from benchmarks.machine import SGEMM_SIZE, cpu_features, cpu_model, gflops  # noqa: E402

BF16 = ("bfloat16", "mixed_bfloat16")
# The commands of docs/benchmarks.md's issue-16 runs, in their order.
SCRIPTS = {
    "xlm_roberta_xl": ["--lengths", "2048,4096", "--modes", "forward", "--dtypes", "float32," + ",".join(BF16)],
    "longformer": ["--lengths", "4096", "--hf-tf-max-length", "0"],
    "nystromformer": ["--lengths", "4096", "--modes", "forward"],
    "yoso": ["--lengths", "4096"],
    "mra": ["--lengths", "4096", "--modes", "forward"],
    "xlnet": ["--lengths", "512,2048"],
    "beit": ["--sizes", "224,384", "--dtypes", "float32," + ",".join(BF16)],
    "large": [],
    "bf16_matmul": ["--repeats", "7"],
    # No target: where the two forwards with an sgemm-share target spend their time on this CPU (per op type, and
    # TF's projections alone against the sgemm rate), for a share that is not met; and XLNet at 512 beside HF's TF
    # model, the ratio closest to its target on the Intel Xeon.
    "profile": ["--families", "longformer,xlm_roberta_xl,xlnet:512", "--length", "4096", "--hf-tf", "xlnet"],
}
MET, NOT_MET, NOT_MEASURED = "met", "NOT met", "not measured"
SHOWN_ONLY = "shown only (see the target)"


class Records:
    """One script's measurements: `get(function, **params)` is the last result recorded with exactly those params
    (None when there is none, or it failed); `sgemm` the faster sgemm rate (GFLOP/s) the script measured."""

    def __init__(self, records):
        self.records = records

    def get(self, function, **params):
        found = [r["result"] for r in self.records if r["function"] == function and r["params"] == params]
        return found[-1] if found and "error" not in found[-1] else None

    def sgemm(self):
        rates = [gflops(2.0 * SGEMM_SIZE ** 3, result)
                 for result in (self.get("sgemm_tf"), self.get("sgemm_torch")) if result]
        return max(rates) if rates else None


def time_ratio(a, b):
    """a's median time over b's, or None where either is missing."""
    return a["median_s"] / b["median_s"] if a and b else None


def share(flops, result, sgemm):
    """The step's GFLOP/s over the sgemm rate, or None."""
    return gflops(flops, result) / sgemm if result and sgemm else None


def check(target, values, holds, unit="x", condition=True):
    """A row [target, figures, verdict]: `values` are the measured figures (None: not measured), met when `holds`
    is true of each. A row whose `condition` is false (an AMX target on a CPU without AMX, a bfloat16 product form
    that is not the default) is shown, not judged."""
    figures = " / ".join("-" if v is None else f"{v:.2f}{unit}" for v in values)
    if any(v is None for v in values):
        verdict = NOT_MEASURED
    elif not condition:
        verdict = SHOWN_ONLY
    else:
        verdict = MET if all(holds(v) for v in values) else NOT_MET
    return [target, figures, verdict]


def dense_rows(runs, amx):
    rows = []
    xl, beit = runs.get("xlm_roberta_xl"), runs.get("beit")
    lengths, sizes = (2048, 4096), (224, 384)
    if xl:
        ours = {(n, d): xl.get("ours", length=n, mode="forward", dtype=d) for n in lengths for d in ("float32",) + BF16}
        hf = {(n, d): xl.get("hf", length=n, mode="forward", dtype=d) for n in lengths for d in ("float32", "bfloat16")}
        rows.append(check("XLM-R-XL forward <= 1.0x HF SDPA at 2048 / 4096",
                          [time_ratio(ours[n, "float32"], hf[n, "float32"]) for n in lengths], lambda v: v <= 1.0))
        rows.append(check("XLM-R-XL forward >= 70% of sgemm at 2048 / 4096",
                          [share(bench_xlm_roberta_xl.forward_flops(n, "forward"), ours[n, "float32"], xl.sgemm())
                           for n in lengths], lambda v: v >= 0.70, unit=""))
    if beit:
        ours_b = {(s, d): beit.get("ours", size=s, batch=4, dtype=d) for s in sizes for d in ("float32",) + BF16}
        hf_b = {(s, d): beit.get("hf", size=s, batch=4, dtype=d) for s in sizes for d in ("float32", "bfloat16")}
        rows.append(check("BEiT (issue 8) <= 1.0x HF at 224 / 384",
                          [time_ratio(ours_b[s, "float32"], hf_b[s, "float32"]) for s in sizes], lambda v: v <= 1.0))
    if xl and beit:
        where_amx = " (where the CPU has AMX-BF16)"
        for dtype in BF16:
            cases = [(ours[n, "float32"], ours[n, dtype], hf[n, "bfloat16"]) for n in lengths] + \
                    [(ours_b[s, "float32"], ours_b[s, dtype], hf_b[s, "bfloat16"]) for s in sizes]
            rows.append(check(f"{dtype} >= 2x our fp32: XLM-R-XL 2048 / 4096, BEiT 224 / 384{where_amx}",
                              [time_ratio(fp32, bf16) for fp32, bf16, _ in cases], lambda v: v >= 2.0,
                              condition=amx))
            rows.append(check(f"{dtype} no slower than HF bf16 autocast: the same four{where_amx}",
                              [time_ratio(bf16, theirs) for _, bf16, theirs in cases], lambda v: v <= 1.0,
                              condition=amx))
    return rows


def efficient_attention_rows(runs):
    rows = []
    longformer = runs.get("longformer")
    if longformer:
        ours = {m: longformer.get("ours", length=4096, mode=m) for m in ("forward", "forward_backward")}
        hf = {m: longformer.get("hf", length=4096, mode=m) for m in ("forward", "forward_backward")}
        rows.append(check("Longformer forward <= 0.6x HF at 4096", [time_ratio(ours["forward"], hf["forward"])],
                          lambda v: v <= 0.6))
        rows.append(check("Longformer forward+backward <= 0.8x",
                          [time_ratio(ours["forward_backward"], hf["forward_backward"])], lambda v: v <= 0.8))
        rows.append(check("Longformer forward >= 70% of sgemm",
                          [share(bench_longformer.forward_flops(4096, "forward"), ours["forward"],
                                 longformer.sgemm())], lambda v: v >= 0.70, unit=""))
    for name, label, limit in (("nystromformer", "Nystromformer", 0.8), ("mra", "MRA", 0.7)):
        if runs.get(name):
            ours, hf = (runs[name].get(side, length=4096, mode="forward") for side in ("ours", "hf"))
            rows.append(check(f"{label} forward <= {limit}x HF at 4096", [time_ratio(ours, hf)],
                              lambda v, limit=limit: v <= limit))
    if runs.get("yoso"):
        ours = runs["yoso"].get("ours", length=4096, mode="forward", op_mode="custom")
        hf = runs["yoso"].get("hf", length=4096, mode="forward")
        rows.append(check("YOSO >= 8x faster than HF YOSO-E at 4096", [time_ratio(hf, ours)], lambda v: v >= 8.0))
    xlnet = runs.get("xlnet")
    if xlnet:
        ours, torch, tf = ({n: xlnet.get(side, length=n, mode="forward") for n in (512, 2048)}
                           for side in ("ours", "hf", "hf_tf"))
        rows.append(check("XLNet (issue 7) <= 1.0x HF PyTorch at 512 / 2048",
                          [time_ratio(ours[n], torch[n]) for n in (512, 2048)], lambda v: v <= 1.0))
        rows.append(check("XLNet (issue 7) <= 0.7x HF TF at 512 / 2048",
                          [time_ratio(ours[n], tf[n]) for n in (512, 2048)], lambda v: v <= 0.7))
    return rows


def large_rows(runs):
    large = runs.get("large")
    if not large:
        return []
    rows = []
    for mine, params in ((r["result"], r["params"]) for r in large.records if r["function"] == "ours"):
        form = mine["form"]
        hf = large.get("hf", batch=params["batch"], length=params["length"])  # HF on the same input
        # The targets are the model as it runs by default; another bfloat16 product form is shown beside it.
        default = form == mine["default_form"]
        label = f"bench_large ({form}{'' if default else ', not the default form'})"
        ready = (mine["load_s"] + mine["forward_first_s"]) / (hf["load_s"] + hf["forward_first_s"]) if hf else None
        rows.append(check(f"{label} second forward <= 1.0x HF", [mine["forward_s"] / hf["forward_s"] if hf else None],
                          lambda v: v <= 1.0, condition=default))
        rows.append(check(f"{label} load + first forward <= 1.5x HF", [ready], lambda v: v <= 1.5,
                          condition=default))
        rows.append(check(f"{label} peak RSS <= 1.25x the weights",
                          [mine["peak_rss_gb"] * 1024 ** 3 / mine["weight_bytes"]], lambda v: v <= 1.25,
                          condition=default))
    return rows


def target_table(runs, amx):
    """The Markdown table of every target whose script ran (`runs`: {script name: Records})."""
    rows = dense_rows(runs, amx) + efficient_attention_rows(runs) + large_rows(runs)
    lines = ["| target (issue 16) | measured | |", "|---|---|---|"]
    return "\n".join(lines + [f"| {' | '.join(row)} |" for row in rows])


def machine_line(runs):
    rates = ", ".join(f"{name} {runs[name].sgemm():.0f}" for name in runs if runs[name].sgemm())
    return (f"CPU: {cpu_model()} [{' '.join(cpu_features()) or 'no AVX2'}]; faster sgemm rate (TF or PyTorch, "
            f"GFLOP/s, 2048^3, 2 threads) at each script's start: {rates or 'none measured'}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="bench-results")
    parser.add_argument("--skip", default="", help=f"comma-separated scripts not to run, of {', '.join(SCRIPTS)}")
    parser.add_argument("--large-dir", help="bench_large's checkpoint folder: kept after the run, and reused when "
                                            "it holds one (default: written, then deleted)")
    args = parser.parse_args(argv)
    skipped = set(filter(None, args.skip.split(",")))
    unknown = skipped - set(SCRIPTS)
    if unknown:
        parser.error(f"unknown scripts {sorted(unknown)}; choose from {', '.join(SCRIPTS)}")
    runs, failed = {}, []
    for name, script_args in SCRIPTS.items():
        if name in skipped:
            continue
        if name == "large" and args.large_dir:
            script_args = ["--dir", args.large_dir, "--keep", "--reuse"]
        print(f"\n=== bench_{name} {' '.join(script_args)}", flush=True)
        returncode, records = run_script(name, script_args, args.output_dir)
        if returncode != 0:
            failed.append(name)
        runs[name] = Records(read_records(records))
    report = machine_line(runs) + "\n\n" + target_table(runs, "amx_bf16" in cpu_features())
    if failed:
        report += f"\n\nThese scripts exited with an error (their targets read \"{NOT_MEASURED}\" where it hit): " + \
            ", ".join(failed)
    print("\n" + report)
    with open(os.path.join(args.output_dir, "targets.md"), "w", encoding="utf-8") as f:
        f.write(report + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
