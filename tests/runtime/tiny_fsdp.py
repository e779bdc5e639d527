"""What the one-process FSDP2 tests share: a gloo group of one, a tiny Llama with a tied head, and
one optimiser step on fixed tokens."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist


@pytest.fixture
def group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True)
    return LlamaForCausalLM(config)


def train_step(model, optimizer):
    ids = torch.arange(12).view(2, 6) % 50
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    optimizer.zero_grad()
