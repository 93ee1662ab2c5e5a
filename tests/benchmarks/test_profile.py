"""benchmarks/bench_profile.py: op times read from TF's profiler trace, the printed tables, and one real run of the
script through `tfmodels bench profile`."""
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from benchmarks import bench_profile
from benchmarks.common import ROOT


def test_the_trace_gives_each_op_its_own_time():
    a = tf.random.stateless_normal([512, 512], seed=[0, 1])

    @tf.function
    def step():
        return tf.sort(tf.matmul(a, a), axis=-1)[:, :1]

    step()
    by_type, by_name, seconds = bench_profile.profiled(step, 4)
    matmul = [t for t in by_type if "MatMul" in t]
    assert len(matmul) == 1 and ("Sort" in by_type or "TopKV2" in by_type), by_type
    assert all(s > 0 for s in by_type.values())
    # per step, never more than the step took; by op name the same time
    assert sum(by_type.values()) <= seconds
    assert sum(by_name.values()) == pytest.approx(sum(by_type.values()))
    assert not set(by_type) & bench_profile.CALLS


def test_the_report_splits_the_step_and_rates_the_projections():
    result = {"step_s": 0.101, "profiled_step_s": 0.1,
              "op_types": {"_MklNativeFusedMatMul": 0.06, "TFModels>SlidingWindowAttention": 0.02,
                           "GatherV2": 0.01, "Cast": 0.00005},
              "top_ops": [["layer_0/intermediate/Gelu/mul_2", 0.012]],
              "projections": [{"shape": [1000, 1000, 1000], "median_s": 0.01}]}
    report = bench_profile.report("longformer", 4096, result, sgemm_rate=400.0)
    lines = report.splitlines()
    assert lines[0] == "longformer, forward at 4096 tokens: 101.0 ms a step (100.0 ms under the profiler)"
    row = {line.split()[0]: line.split()[1:] for line in lines[3:7]}
    assert row["_MklNativeFusedMatMul"] == ["60.00", "60.0%"]
    assert row["TFModels>SlidingWindowAttention"] == ["20.00", "20.0%"]
    assert "Cast" not in row  # under 0.1% of the step: in the rest
    assert row["(outside"][-2:] == ["10.00", "10.0%"]  # 100 ms less the 90 listed
    assert "layer_0/intermediate/Gelu/mul_2      12.00" in report
    # 2 GFLOP in 10 ms: 200 GFLOP/s, half the sgemm rate
    assert lines[-1].split()[-3:] == ["10.00", "200", "0.50"]
    hf_tf = bench_profile.report("xlnet", 512, result, sgemm_rate=400.0, side="hf_tf").splitlines()
    assert hf_tf[0] == "xlnet (HF TF), forward at 512 tokens: 101.0 ms a step (100.0 ms under the profiler)"
    assert hf_tf[1:] == lines[1:]


def test_hf_tf_is_a_side_where_the_script_builds_hf_tf_model():
    assert bench_profile.sides("longformer") == bench_profile.sides("xlnet") == ("ours", "hf_tf")
    for family in ("xlm_roberta_xl", "mra", "nystromformer", "yoso"):
        assert bench_profile.sides(family) == ("ours",)


def test_the_projection_shapes_come_from_the_scripts_config():
    assert bench_profile.projection_shapes("longformer", 4096) == [[4096, 256, 256], [4096, 256, 1024],
                                                                  [4096, 1024, 256]]
    for family in bench_profile.FAMILIES:
        assert bench_profile.projection_shapes(family, 512) == [[512, 256, 256], [512, 256, 1024], [512, 1024, 256]]


@pytest.mark.slow  # the sgemm rates and one profiled family, each in a fresh process (~30 s)
def test_the_command_profiles_a_family(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tfmodels", "bench", "--output-dir", str(tmp_path), "profile", "--",
                           "--families", "longformer:512", "--length", "4096", "--repeats", "2"],
                          capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    assert out.startswith("CPU: ") and "longformer, forward at 512 tokens" in out
    # the compiled op, the fused projections, and the projections alone, in the tables
    assert "TFModels>SlidingWindowAttention" in out and "_MklNativeFusedMatMul" in out, out
    assert "[512, 256] x [256, 1024]" in out
    assert (tmp_path / "profile.txt").read_text() in out
    wrong = subprocess.run([sys.executable, "benchmarks/bench_profile.py", "--families", "bert"], capture_output=True,
                           text=True, cwd=ROOT)
    assert wrong.returncode == 2 and "unknown families ['bert']" in wrong.stderr
    for args, message in ((["--families", "mra", "--hf-tf", "mra"], "--hf-tf mra: not a listed family"),
                          (["--families", "longformer", "--hf-tf", "xlnet"], "--hf-tf xlnet: not a listed family"),
                          (["--families", "xlnet:long"], "xlnet:long: the length after ':' must be a number")):
        refused = subprocess.run([sys.executable, "benchmarks/bench_profile.py", *args], capture_output=True,
                                 text=True, cwd=ROOT)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
