"""benchmarks/common.py: the interleaved measurement that the MRA op-vs-twin ratios rest on."""
import time

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
