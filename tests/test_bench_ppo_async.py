"""bench/ppo.py --async-staleness: which sides run, the async table's arithmetic, and the two
parts of the TRL async worker that replace TRL's GPU-only ones (the tree attention, the weight
transfer), checked against plain references (no vLLM server, no TRL run here)."""

import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import ppo  # noqa: E402
import ppo_async_sides as async_sides  # noqa: E402


def test_sides_add_ours_async_with_k_and_trl_async_for_grpo_with_its_python():
    assert async_sides.sides("grpo", 0, "/x/python") == ["ours", "trl"]
    assert async_sides.sides("rloo", 1, "/x/python") == ["ours", "trl", "ours-async"]
    assert async_sides.sides("grpo", 1, None) == ["ours", "trl", "ours-async"]
    assert async_sides.sides("grpo", 2, "/x/python") == ["ours", "trl", "ours-async", "trl-async"]
    assert [async_sides.worker_name(s, "ppo") for s in ("ours", "trl", "ours-async")] == ["ours", "trl-ppo", "ours"]
    assert async_sides.worker_name("trl-async", "grpo") == "trl-async"


def test_parse_args_takes_the_staleness_and_refuses_negative_values():
    args = ppo.parse_args(["--async-staleness", "1", "--trl-async-python", "/x/python", "--final-steps", "2"])
    assert (args.async_staleness, args.trl_async_python, args.final_steps) == (1, "/x/python", 2)
    assert ppo.parse_args([]).async_staleness == 0
    with pytest.raises(SystemExit):
        ppo.parse_args(["--async-staleness", "-1"])


def test_async_rows_compare_each_side_with_ours_sync():
    def run(rate, whole, rewards, dropped=0):
        return {"samples_per_s": rate, "whole_process_s": whole, "rewards": rewards, "dropped_stale": dropped}

    runs = {"ours": [run(2.0, 100.0, [0.0, 1.0, 2.0, 3.0]), run(4.0, 120.0, [0.0, 1.0, 2.0, 5.0])],
            "ours-async": [run(5.0, 50.0, [1.0, 1.0, 1.0, 4.0])],
            "trl-async": [run(1.5, 200.0, [0.5, None, 2.0, 2.0], dropped=7)]}
    rows, summary = async_sides.async_rows("grpo", runs, 1, final_steps=2)
    # ours: medians over the two runs: 3 samples/s, 110 s; final reward (2.5 and 3.5) -> 3.0
    assert rows[0] == ["grpo", "ours sync", 3.0, 1.0, 110.0, 1.0, 0.0, 3.0, 4, 0]
    assert rows[1] == ["grpo", "ours async K=1", 5.0, 5.0 / 3.0, 50.0, 110.0 / 50.0, 1.0, 2.5, 4, 0]
    # a step without a reward is left out of the mean of the last two
    assert rows[2][1] == "TRL async K=1" and rows[2][7] == 2.0 and rows[2][9] == 7
    assert summary["ours-async"]["samples_per_s"] == 5.0


def test_varlen_attention_equals_causal_attention_over_each_tree_path():
    ppo_trl_async = pytest.importorskip("ppo_trl_async")  # needs trl (the bench extra)
    torch.manual_seed(0)
    heads, kv_heads, dim = 4, 2, 8
    # a prefix tree of 6 packed tokens: segment 0 = tokens 0-2; segment 1 = tokens 3-4 after segment 0;
    # segment 2 = token 5 after segment 0. Paths: [0,1,2], [0,1,2,3,4], [0,1,2,5]
    paths = [[0, 1, 2], [0, 1, 2, 3, 4], [0, 1, 2, 5]]
    kv_index = torch.tensor([i for path in paths for i in path])
    cu_q = torch.tensor([0, 3, 5, 6], dtype=torch.int32)
    cu_k = torch.tensor([0, 3, 8, 12], dtype=torch.int32)
    q, k, v = torch.randn(6, heads, dim), torch.randn(6, kv_heads, dim), torch.randn(6, kv_heads, dim)
    out = ppo_trl_async.varlen_attention(q, k.index_select(0, kv_index), v.index_select(0, kv_index), cu_q, cu_k, 3, 5)
    assert out.shape == (6, heads, dim)
    # reference: each sequence (root to leaf) on its own with full causal attention, GQA heads repeated
    for sequence in ([0, 1, 2, 3, 4], [0, 1, 2, 5]):
        idx = torch.tensor(sequence)
        ref = torch.nn.functional.scaled_dot_product_attention(
            q[idx].transpose(0, 1), k[idx].transpose(0, 1).repeat_interleave(2, 0),
            v[idx].transpose(0, 1).repeat_interleave(2, 0), is_causal=True).transpose(0, 1)
        torch.testing.assert_close(out[idx], ref, atol=1e-6, rtol=1e-5)


def test_file_weight_transfer_sends_a_tied_head_and_asks_the_server_to_reload(tmp_path, monkeypatch):
    ppo_trl_async = pytest.importorskip("ppo_trl_async")
    import requests
    from safetensors.torch import load_file

    calls = []

    class Answer:
        status_code, text = 200, ""

    def post(url, json, timeout):
        calls.append((url, json, load_file(json["args"][0])))
        return Answer()

    monkeypatch.setattr(requests, "post", post)
    client = type("Client", (), {"server_url": "http://server"})()
    embed = torch.randn(5, 3)
    for tied, expected in ((True, {"model.embed_tokens.weight", "lm_head.weight", "w"}),
                           (False, {"model.embed_tokens.weight", "w"})):
        transfer = ppo_trl_async.FileWeightTransfer(client, tmp_path / str(tied), tied)
        transfer.init_weight_transfer = lambda: None
        transfer.directory.mkdir()
        transfer.send_weights(iter([("model.embed_tokens.weight", embed), ("w", torch.ones(2))]))
        url, body, sent = calls[-1]
        assert url == "http://server/collective_rpc" and body["method"] == "reload_safetensors"
        assert set(sent) == expected and torch.equal(sent["model.embed_tokens.weight"], embed)
        if tied:
            assert torch.equal(sent["lm_head.weight"], embed)
        transfer.destroy()
        assert not transfer.directory.exists()
