"""benchmarks/machine.py: the machine line of every benchmark table and the GFLOP/s shares."""
from benchmarks import machine


def test_the_machine_line_names_the_cpu_its_extensions_and_the_sgemm_rates_of_this_run(capsys):
    sgemm = machine.header(threads=1)
    line = capsys.readouterr().out
    assert machine.cpu_model() in line and "sgemm 2048^3" in line
    with open("/proc/cpuinfo") as f:
        flags = next(row for row in f if row.startswith("flags")).split()
    assert set(machine.cpu_features()) <= set(flags)
    assert all(feature in line for feature in machine.cpu_features())
    # Both libraries measured; any working CPU does more than 1 GFLOP/s on one thread.
    assert sgemm["tf"] > 1 and sgemm["torch"] > 1 and sgemm["rate"] == max(sgemm["tf"], sgemm["torch"])


def test_efficiency_is_achieved_gflops_and_its_share_of_the_sgemm_rate():
    assert machine.efficiency(2e9, {"median_s": 0.01}, {"rate": 400.0}) == "200 (0.50)"
    assert machine.efficiency(2e9, {"error": "timed out"}, {"rate": 400.0}) == "n/a"
    assert machine.efficiency(2e9, {"median_s": 0.01}, {"rate": None}) == "n/a"


def test_encoder_flops_count_projections_feed_forward_and_attention():
    # One layer, 8 tokens, hidden 4, FFN 16: 2 * 8 * (4 * 16 + 2 * 64) = 3072 flops of projections and FFN.
    attention = machine.dense_attention_flops(8, 8, 4)
    assert attention == 4 * 8 * 8 * 4
    assert machine.encoder_flops(8, 4, 16, 1, attention) == 3072 + attention
    assert machine.encoder_flops(8, 4, 16, 2, attention, mode="forward_backward") == 6 * (3072 + attention)
