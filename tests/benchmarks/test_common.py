"""benchmarks/common.py: the interleaved measurement that the MRA op-vs-twin ratios rest on, the interleaved rounds
of fresh processes that bench_xlnet's ratios rest on, a call in a fresh process (bench_profile), and how the
tables print a measurement not made."""
import time

from benchmarks import common
from benchmarks.common import measure_interleaved


def steps(short_s, long_s):
    """Measurement function (run in the child process): a short and a long step."""
    return {"short": lambda: time.sleep(short_s), "long": lambda: time.sleep(long_s)}


def test_interleaved_measurement_reports_per_round_ratios_against_the_first_step():
    result = measure_interleaved("tests.benchmarks.test_common", "steps", {"short_s": 0.01, "long_s": 0.03},
                                 rounds=5, warmup=1)
    assert "error" not in result, result
    assert set(result["steps"]) == {"short", "long"} and set(result["ratios"]) == {"long"}
    short, long_ = result["steps"]["short"]["median_s"], result["steps"]["long"]["median_s"]
    assert 0.009 < short < long_, result
    spread = result["ratios"]["long"]
    # Sleeps of 10 and 30 ms: the ratio of each round is about 3 whatever else the machine is doing.
    assert spread["min"] <= spread["median"] <= spread["max"]
    assert 2.0 < spread["median"] < 3.5, result


def test_interleaved_measurement_reports_a_failing_step_as_an_error():
    result = measure_interleaved("tests.benchmarks.test_common", "steps", {"short_s": -1.0, "long_s": 0.01},
                                 rounds=3, warmup=1)
    assert "error" in result and "sleep length must be non-negative" in result["error"], result


def test_a_measurement_not_made_prints_skipped_and_a_failed_one_error():
    not_made, failed, made = common.skipped("longer than --hf-tf-max-length 0"), {"error": "boom"}, \
        {"median_s": 0.5, "peak_mb": 12.4}
    assert [common.seconds(r) for r in (not_made, failed, made)] == ["skipped", "error", "0.500"]
    assert [common.megabytes(r) for r in (not_made, failed, made)] == ["skipped", "error", "12"]
    assert common.ratio(made, not_made) == common.ratio(failed, made) == "n/a"


def sleeper(seconds, log):
    """Measurement function: a step that sleeps; appends its length to `log` when built (the order of the
    processes)."""
    with open(log, "a") as f:
        f.write(f"{seconds}\n")
    return lambda: time.sleep(seconds)


def test_rounds_alternate_the_order_of_fresh_processes_and_combine_their_results(tmp_path, monkeypatch):
    log = str(tmp_path / "order")
    recorded = tmp_path / "record.jsonl"
    monkeypatch.setenv(common.RECORD_ENV, str(recorded))
    calls = [("sleeper", {"seconds": 0.002, "log": log}), ("sleeper", {"seconds": 0.006, "log": log})]
    short, long_ = common.measure_rounds("tests.benchmarks.test_common", calls, rounds=3, repeats=2, warmup=1)
    # One process per call and round, the order reversed every other round.
    with open(log) as f:
        assert f.read().split() == ["0.002", "0.006", "0.006", "0.002", "0.002", "0.006"]
    assert short["rounds"] == long_["rounds"] == 3
    assert 0.0015 < short["median_s"] < long_["median_s"] and short["min_s"] <= short["median_s"]
    assert len(recorded.read_text().splitlines()) == 2  # the combined results only, one per call
    failing = common.measure_rounds("tests.benchmarks.test_common", [("sleeper", {"seconds": -1.0, "log": log})],
                                    rounds=2, repeats=1, warmup=1)
    assert "error" in failing[0] and "non-negative" in failing[0]["error"]


def environment(names):
    """Call function (run in a fresh process): the process's values of some environment variables."""
    import os
    return {name: os.environ.get(name) for name in names}


def test_a_call_runs_in_a_fresh_process_with_the_benchmark_threads_and_returns_its_value():
    result = common.call("tests.benchmarks.test_common", "environment",
                         {"names": ["TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS"]}, threads=3)
    assert result == {"TF_NUM_INTRAOP_THREADS": "3", "OMP_NUM_THREADS": "3"}
    failed = common.call("tests.benchmarks.test_common", "environment", {"wrong": 1})
    assert "unexpected keyword argument 'wrong'" in failed["error"], failed
