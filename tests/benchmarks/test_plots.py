"""benchmarks/plot.py: the picture beside a benchmark's table (time and peak memory against length, ours and the
references), drawn from the measurements benchmarks.common.measure records."""
import json
import os
import subprocess
import sys

import pytest

from benchmarks import common, plot

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECORDS = [
    {"function": "hf", "params": {"length": 256, "mode": "forward"}, "result": {"median_s": 0.2, "peak_mb": 40.0}},
    {"function": "ours", "params": {"length": 256, "mode": "forward"}, "result": {"median_s": 0.1, "peak_mb": 20.0}},
    {"function": "hf", "params": {"length": 512, "mode": "forward"}, "result": {"median_s": 0.6, "peak_mb": 90.0}},
    {"function": "ours", "params": {"length": 512, "mode": "forward"}, "result": {"median_s": 0.2, "peak_mb": 41.0}},
    {"function": "hf_tf", "params": {"length": 512, "mode": "forward"}, "result": {"error": "out of memory"}},
    {"function": "ours", "params": {"length": 512, "mode": "forward", "op_mode": "reference"},
     "result": {"median_s": 0.3, "peak_mb": 45.0}},
]


def sleeper(seconds, length):
    """Measurement function run by common.measure in its child process (a step of `length` tokens, say)."""
    del length
    import time
    return lambda: time.sleep(seconds)


def test_series_group_by_implementation_and_setting_and_skip_failures():
    x_name, lines = plot.series(RECORDS)
    assert x_name == "length"
    assert lines == {"HF PyTorch (mode=forward)": [(256, 0.2, 40.0), (512, 0.6, 90.0)],
                     "ours (mode=forward)": [(256, 0.1, 20.0), (512, 0.2, 41.0)],
                     "ours (mode=forward, op_mode=reference)": [(512, 0.3, 45.0)]}
    with pytest.raises(ValueError, match="no measurement with a length"):
        plot.scaling_figure([RECORDS[4]])


def test_figure_draws_ours_and_the_reference_on_both_panels_with_labelled_axes():
    figure = plot.scaling_figure(RECORDS, "bench test")
    time_axis, memory_axis = figure.axes
    assert time_axis.get_xlabel() == memory_axis.get_xlabel() == "length (tokens)"
    assert "time" in time_axis.get_ylabel() and "memory" in memory_axis.get_ylabel()
    for axis, column in ((time_axis, 1), (memory_axis, 2)):
        drawn = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in axis.get_lines()}
        assert drawn["ours (mode=forward)"] == ([256, 512], [r[column] for r in ((0, 0.1, 20.0), (0, 0.2, 41.0))])
        assert drawn["HF PyTorch (mode=forward)"] == ([256, 512], [r[column] for r in ((0, 0.2, 40.0),
                                                                                      (0, 0.6, 90.0))])
    legend = [t.get_text() for t in memory_axis.get_legend().get_texts()]
    assert "ours (mode=forward)" in legend and "HF PyTorch (mode=forward)" in legend


@pytest.mark.slow  # two fresh processes (the measurement, then the drawing with TensorFlow imported)
def test_measure_records_and_the_command_writes_a_png(tmp_path, monkeypatch):
    import matplotlib.image
    records = tmp_path / "bench.jsonl"
    monkeypatch.setenv(common.RECORD_ENV, str(records))
    result = common.measure("tests.benchmarks.test_plots", "sleeper", {"seconds": 0.001, "length": 64},
                            repeats=1, warmup=1)
    assert "median_s" in result, result
    recorded = [json.loads(line) for line in records.read_text().splitlines()]
    assert recorded == [{"function": "sleeper", "params": {"seconds": 0.001, "length": 64}, "result": result}]
    with open(records, "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in RECORDS)
    picture = tmp_path / "bench.png"
    done = subprocess.run([sys.executable, "-m", "benchmarks.plot", str(records), str(picture)], cwd=ROOT,
                          capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0 and f"wrote {picture}" in done.stdout, done.stderr[-2000:]
    pixels = matplotlib.image.imread(picture)
    assert pixels.shape[:2] == (500, 1300) and pixels.std() > 0  # figsize (13, 5) at 100 dpi, not blank
