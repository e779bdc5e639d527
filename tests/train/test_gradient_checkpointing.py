"""--gradient-checkpointing (every training stage, through rt.prepare): the same gradients, the
same trained weights, a run that resumes with it switched."""

from __future__ import annotations

import torch
from safetensors.torch import load_file


def test_the_same_gradients_with_and_without(tiny_model_dir, tmp_path):
    from rlhf.config import SFTConfig
    from rlhf.models.load import load_causal_lm
    from rlhf.runtime import init

    ids = torch.randint(5, 300, (3, 24), generator=torch.Generator().manual_seed(0))
    grads = []
    for checkpointing in (False, True):
        rt = init(SFTConfig(out=str(tmp_path / f"gc-{checkpointing}"), gradient_checkpointing=checkpointing,
                            device="cpu", precision="fp32"))
        model = rt.prepare(load_causal_lm(tiny_model_dir)).train()
        assert model.is_activation_checkpointing == checkpointing
        model(input_ids=ids, labels=ids).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=0, atol=1e-6)


def test_sft_trains_the_same_weights_with_it(tiny_model_dir, demonstrations_file, tmp_path):
    from rlhf.config import SFTConfig
    from rlhf.train import sft

    weights = []
    for checkpointing in (False, True):
        cfg = SFTConfig(model=str(tiny_model_dir), data=str(demonstrations_file), out=str(tmp_path / str(checkpointing)),
                        max_steps=3, batch_size=4, max_length=32, precision="fp32", progress=False, save_every=0,
                        gradient_checkpointing=checkpointing, lr=1e-3)
        weights.append(load_file(str(sft.run(cfg) / "model.safetensors")))
    for name in weights[0]:
        torch.testing.assert_close(weights[1][name], weights[0][name], rtol=0, atol=1e-5)


def test_ppo_with_a_critic_and_lora_runs_with_it(tiny_model_dir, tmp_path):
    import json

    from rlhf.config import PPOConfig
    from rlhf.train import ppo

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Story {i}:"}) + "\n" for i in range(4)))
    for lora in (0, 4):
        out = tmp_path / f"ppo-{lora}"
        ppo.run(PPOConfig(model=str(tiny_model_dir), data=str(prompts), out=str(out), reward="rlhf.demo.oracle:gold_reward",
                          algo="ppo", critic=str(tiny_model_dir), lora_r=lora, max_steps=1, batch_size=2,
                          max_new_tokens=4, max_length=32, progress=False, save_every=0, precision="fp32",
                          gradient_checkpointing=True))
        assert json.loads((out / "summary.json").read_text())["steps"] == 1
