"""The picture beside a benchmark's table: time and peak memory against the input length, one line per
implementation (ours, the references) and setting, drawn from the measurements `common.measure` recorded.

`tfmodels bench NAME` sets TFMODELS_BENCH_RECORD to a JSONL file, every measurement of the run is appended to
it ({"function", "params", "result"}: the same results the table prints), and then this module draws it:

    python -m benchmarks.plot RECORDS.jsonl OUT.png [--title TITLE]

Needs matplotlib (the `plot` extra).
"""
import argparse
import math

from benchmarks.common import read_records

# The measurement functions' names in the bench scripts, as the legend shows them.
NAMES = {"ours": "ours", "hf": "HF PyTorch", "hf_tf": "HF TF"}
X_KEYS = ("length", "size")  # the swept parameter: sequence length, or image size (BEiT)


def series(records):
    """{legend label: [(x, seconds, peak MB)] sorted by x} from the records that have a length (or size) and a
    timing; a failed measurement (an "error" result) leaves a gap. Returns (x parameter name, series)."""
    result, x_name = {}, None
    for record in records:
        params, measured = record["params"], record["result"]
        x_key = next((k for k in X_KEYS if k in params), None)
        if x_key is None or "median_s" not in measured:
            continue
        x_name = x_name or x_key
        settings = ", ".join(f"{k}={v}" for k, v in sorted(params.items()) if k != x_key)
        name = NAMES.get(record["function"], record["function"])
        label = f"{name} ({settings})" if settings else name
        result.setdefault(label, []).append((params[x_key], measured["median_s"], measured.get("peak_mb", math.nan)))
    return x_name, {label: sorted(points) for label, points in sorted(result.items())}


def scaling_figure(records, title=None):
    """Two panels, time and peak memory against the length (log-log), one line per series; None without
    matplotlib; ValueError when no record has a length and a timing."""
    x_name, lines = series(records)
    if not lines:
        raise ValueError("no measurement with a length (or size) and a time to draw")
    from tfmodels.training.callbacks import pyplot  # (TensorFlow comes with it: only when drawing)
    plt = pyplot("benchmark picture")
    if plt is None:
        return None
    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(13, 5))
    for label, points in lines.items():
        xs = [p[0] for p in points]
        style = "o-" if label.startswith("ours") else "s--"
        time_axis.plot(xs, [p[1] for p in points], style, label=label, markersize=4)
        memory_axis.plot(xs, [p[2] for p in points], style, label=label, markersize=4)
    for axis, quantity in ((time_axis, "time per step (s, median)"), (memory_axis, "peak memory added (MB)")):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel(f"{x_name} (tokens)" if x_name == "length" else f"image {x_name} (pixels)")
        axis.set_ylabel(quantity)
        axis.grid(alpha=0.3, which="both")
    time_axis.set_title("time")
    memory_axis.set_title("peak memory")
    memory_axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("records")
    parser.add_argument("output")
    parser.add_argument("--title")
    args = parser.parse_args()
    try:
        figure = scaling_figure(read_records(args.records), args.title)
    except ValueError as error:  # a benchmark that sweeps no length (bench_large, bench_gradient_checkpointing)
        print(f"no picture: {error}")
        return 0
    if figure is None:
        return 0
    from tfmodels.training.callbacks import save_figure
    save_figure(figure, args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
