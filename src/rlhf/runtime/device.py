"""Where and how a run computes: seeding, device choice, bf16 autocast, batches to the device,
peak memory."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    """`name` ("auto": CUDA if present); under a launcher "auto" and "cuda" are this rank's GPU."""
    from .dist import device

    return device(name)


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(getattr(torch.backends.mkldnn, "is_available", lambda: False)()) and _cpu_has_bf16()


def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


def _cpu_has_bf16() -> bool:
    flags = _cpuinfo()
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16"))


SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")  # what decides fp32/bf16 matmul speed


def machine_facts(cpuinfo: str | None = None) -> dict:
    """Which machine a figure comes from, written into every summary.json and bench result so that
    numbers from different CPUs are never compared blind: the CPU's model name, the flags that
    decide matmul speed, cores and torch threads, and whether bf16 runs natively."""
    import os
    import platform
    import re

    text = _cpuinfo() if cpuinfo is None else cpuinfo
    name = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    first_flags = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
    flags = set(first_flags.group(1).split()) if first_flags else set()
    return {
        "cpu": name.group(1).strip() if name else (platform.processor() or platform.machine() or "unknown"),
        "flags": {flag: flag in flags for flag in SPEED_FLAGS},
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "bf16_native": any(flag in flags for flag in ("avx512_bf16", "amx_bf16")),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
    }


def effective_precision(precision: str, device: torch.device | str) -> str:
    """The precision a run really computes in: "bf16" only where asked and the hardware has it.

    A CPU without AVX512-BF16 or AMX emulates bf16 matmuls about 45 times slower than fp32
    (measured on an AVX2 EPYC), so there bf16 is never used, whatever the flag says."""
    device = torch.device(device)
    return "bf16" if precision == "bf16" and bf16_supported(device) else "fp32"


def autocast(precision: str, device: torch.device):
    """bf16 autocast where asked and supported; fp32 master weights and optimiser state either way."""
    if effective_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(batch: dict, device: torch.device) -> dict:
    """The batch with its tensors on `device` (counts and other values as they are)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
