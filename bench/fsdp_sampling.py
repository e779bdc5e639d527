"""MEASURED cost of sampling from an FSDP2-sharded policy on CPU processes (gloo): the decode that
`rlhf ppo --sharding fsdp2` runs inside `rt.gathered` (every unit all-gathered once per rollout,
then hundreds of forwards on whole parameters), against the same decode left to FSDP2's own hooks
(each decoder layer gathered again in the forward of every new token).

The model is bench/fsdp_memory.py's ~110M-parameter Llama (random weights, fp32, nothing
downloaded); each rank decodes `--rows` prompts of `--prompt-len` tokens for `--new-tokens`
tokens (no stop token: every rank runs as many forwards, which the per-token variant needs).

Run: `python bench/fsdp_sampling.py [--processes 2] [--rows 4] [--new-tokens 32]`; it prints one
line per figure (seconds, rank 0's; the slowest rank sets the pace of a collective anyway).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(args) -> None:
    from types import SimpleNamespace

    import torch

    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "bench"))
    from fsdp_memory import llama_config
    from rlhf import runtime
    from rlhf.rollout.generate import SamplingConfig, generate
    from rlhf.runtime import dist
    from transformers import LlamaForCausalLM

    torch.set_num_threads(1)
    cfg = SimpleNamespace(sharding="fsdp2", gradient_checkpointing=False, seed=0, device="cpu", dist_timeout=1800.0,
                          lora_r=0)
    rt = runtime.init(cfg, run_dir=False)
    dist.state()  # the process group
    config = llama_config()
    model = rt.prepare(LlamaForCausalLM(config))
    never = config.vocab_size  # not a token id: no row stops early
    rows = torch.randint(config.vocab_size, (args.rows, args.prompt_len),
                         generator=torch.Generator().manual_seed(rt.rank)).tolist()
    sampling = SamplingConfig(max_new_tokens=args.new_tokens, temperature=1.0)

    def decode():
        return generate(model, rows, sampling, [never], 0, row_seeds=list(range(len(rows))))

    def timed(fn):
        dist.barrier()
        start = time.perf_counter()
        out = fn()
        dist.barrier()
        return time.perf_counter() - start, out

    figures = {}
    for attempt in range(2):  # the first pass warms up the allocator and the kernels
        context = rt.gathered(model)
        figures["gather_s"], _ = timed(context.__enter__)
        figures["decode_gathered_s"], once = timed(decode)
        figures["reshard_s"], _ = timed(lambda: context.__exit__(None, None, None))
        figures["decode_per_token_s"], per_token = timed(decode)
    assert torch.equal(once.response_ids, per_token.response_ids)  # the same samples either way
    if rt.is_main:
        print("RESULT " + json.dumps({"processes": rt.world_size, "param_count": sum(
            p.numel() for p in model.parameters()), **vars(args), **figures}))
    dist.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rows", type=int, default=4, help="prompts each rank decodes")
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args(argv)
    if args.worker:
        del args.worker, args.processes
        return worker(args)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    flags = ["--worker", "--rows", str(args.rows), "--prompt-len", str(args.prompt_len),
             "--new-tokens", str(args.new_tokens)]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.processes),
               "--master_addr", "127.0.0.1", "--master_port", str(port), __file__, *flags]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error",
           "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    load = os.getloadavg()[0]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"failed:\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    print(json.dumps({**result, "load_average_before": load, "load_average_after": os.getloadavg()[0]}, indent=1))


if __name__ == "__main__":
    main()
