"""The pure pieces of the benches' efficiency figures (bench/efficiency.py): FLOP arithmetic, the
matmul peak, the whole-process clock, the targets."""

import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import efficiency  # noqa: E402


def test_training_flops_count_trained_six_and_frozen_two_per_parameter_and_token():
    # 1,000 trained and 500 frozen parameters at 10 tokens/s: 6*1000*10 + 2*500*10 = 70,000 FLOP/s
    assert efficiency.training_flops_per_s(10.0, 1000, 500) == 70_000
    peak = {"fp32_gflops": 1e-4, "bf16_gflops": 7e-4}  # 100,000 and 700,000 FLOP/s
    assert efficiency.peak_fraction(70_000, peak, "fp32") == pytest.approx(0.7)
    assert efficiency.peak_fraction(70_000, peak, "bf16") == pytest.approx(0.1)
    with pytest.raises(ValueError, match="fp16"):
        efficiency.peak_fraction(1.0, peak, "fp16")
    with pytest.raises(ValueError, match="negative"):
        efficiency.training_flops_per_s(-1.0, 10)


def test_efficiency_divides_by_the_peak_of_the_precision_the_matmuls_ran_in():
    peak = {"fp32_gflops": 1e-4, "bf16_gflops": 1e-3}
    # bf16 asked, but the probe saw fp32 matmuls (a CPU without native bf16): the fp32 peak counts
    run = {"tokens_per_s": 10.0, "dtypes": "matmuls float32, weights float32"}
    assert efficiency.efficiency(run, "bf16", peak, 1000) == {
        "flops_per_s": 60_000, "peak_precision": "fp32", "peak_fraction": pytest.approx(0.6)}
    run = {"tokens_per_s": 10.0, "dtypes": "matmuls bfloat16, weights float32"}
    assert efficiency.efficiency(run, "bf16", peak, 1000)["peak_fraction"] == pytest.approx(0.06)
    assert efficiency.precision_used({}, "bf16") == "bf16"
    # a worker that knows what it computed in (ours on a CPU without native bf16) overrides both
    assert efficiency.precision_used({"precision_used": "fp32", "dtypes": "matmuls bfloat16"}, "bf16") == "fp32"


def test_matmul_peak_is_finite_and_positive_on_a_tiny_size():
    peak = efficiency.matmul_peak(threads=1, sizes=(32,), repeats=2)
    assert peak["threads"] == 1 and peak["sizes"] == [32]
    for key in ("fp32_gflops", "bf16_gflops"):
        assert math.isfinite(peak[key]) and peak[key] > 0
    with pytest.raises(ValueError, match="sizes"):
        efficiency.matmul_peak(sizes=())


def test_matmul_params_leave_out_embeddings_and_count_the_head(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(vocab_size=10, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=2, tie_word_embeddings=False).save_pretrained(tmp_path)
    # attention q,k,v,o 4*8*8 = 256; MLP gate,up,down 3*8*16 = 384; norms 3*8 = 24 -> 664
    assert efficiency.matmul_params(tmp_path, "causal") == 664 + 10 * 8  # LM head 10 x 8
    assert efficiency.matmul_params(tmp_path, "reward") == 664 + 8  # score head 8 -> 1
    with pytest.raises(ValueError, match="head"):
        efficiency.matmul_params(tmp_path, "value")


def test_whole_process_clock_starts_at_the_parents_stamp():
    code = ("import sys, time; sys.path.insert(0, sys.argv[1]); import efficiency; time.sleep(0.2); "
            "print(efficiency.whole_process_s())")
    env_stamp = time.time() - 5.0  # as if spawned five seconds ago
    out = subprocess.run([sys.executable, "-c", code, str(BENCH)], capture_output=True, text=True, check=True,
                         env={"PATH": "", efficiency.SPAWN_TIME_ENV: repr(env_stamp)})
    elapsed = float(out.stdout)
    assert 5.2 <= elapsed < 5.2 + 30  # the sleep and the interpreter's start on top of the five seconds


def test_proc_start_time_is_when_the_process_started():
    before = time.time()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        started = efficiency.proc_start_time(str(child.pid))
    finally:
        child.kill()
        child.wait()
    assert before - 1.5 <= started <= time.time() + 1.5  # /proc's boot time is whole seconds
    assert efficiency.process_start_time({}) <= time.time()


def test_targets_per_stage_and_the_peak_target_only_for_fp32_on_the_small_preset():
    checks = efficiency.check_targets("sft", 1.6, 1.4, 0.6, "fp32", "small")
    assert checks == {"in_loop": True, "whole_process": False, "peak_fraction": True}
    assert efficiency.check_targets("ppo", 1.6, 2.1, 0.4, "fp32", "small") == {
        "in_loop": False, "whole_process": True, "peak_fraction": False}
    assert efficiency.check_targets("dpo", 2.0, 2.0, 0.1, "fp32", "tiny")["peak_fraction"] is None
    assert efficiency.check_targets("rm", 2.0, 2.0, 0.1, "bf16", "small")["peak_fraction"] is None
    assert efficiency.verdict(checks) == "in-loop met, whole NOT met, peak met"


def test_compare_sides_takes_medians_and_divides_trl_seconds_by_ours():
    peak = {"fp32_gflops": 1e-3, "bf16_gflops": 1e-2}  # 1e6 FLOP/s in fp32
    fp32 = "matmuls float32, weights float32"
    ours = [{"tokens_per_s": t, "whole_process_s": w, "dtypes": fp32} for t, w in ((100, 10), (300, 30), (200, 20))]
    trl = [{"tokens_per_s": 100.0, "whole_process_s": 50.0, "dtypes": fp32}]
    row = efficiency.compare_sides("sft", ours, trl, "fp32", peak, 1000, preset="small")
    # medians: ours 200 tokens/s and 20 s; 6 * 1000 * 200 = 1.2e6 FLOP/s = 120% of the fp32 peak
    assert row["in_loop_ratio"] == 2.0 and row["whole_ratio"] == 2.5
    assert row["ours"]["peak_fraction"] == pytest.approx(1.2) and row["trl"]["peak_fraction"] == pytest.approx(0.6)
    assert row["targets"] == {"in_loop": True, "whole_process": True, "peak_fraction": True}
    assert row["cells"] == [20, 50.0, 2.5, pytest.approx(120.0), pytest.approx(60.0)]


def test_ppo_bench_counts_trained_and_forward_only_parameters_per_algorithm():
    import ppo

    # PPO: policy and value model (reward-model size) trained 4 epochs; sampling, reference,
    # reward model and the value model's rollout pass forward-only
    assert ppo.model_flop_params("ppo", 10, 3) == (4 * 10 + 4 * 3, 2 * 10 + 2 * 3)
    # RLOO/GRPO: one update epoch of the policy; sampling, reference and reward model forward-only
    assert ppo.model_flop_params("grpo", 10, 3) == (10, 2 * 10 + 3)
