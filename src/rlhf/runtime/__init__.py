"""The one seam between a stage and the machine it runs on: device, precision, seeding, the run
directory and its checkpoints. Stages import these from here; nothing here knows a stage."""

from .checkpoint import (
    CHECKPOINT_PREFIX,
    list_checkpoints,
    load_latest_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .device import (
    autocast,
    bf16_supported,
    peak_memory_mb,
    pick_device,
    seed_everything,
    to_device,
)
from .rundir import RunDir

__all__ = [
    "CHECKPOINT_PREFIX", "RunDir", "autocast", "bf16_supported", "list_checkpoints", "load_latest_checkpoint",
    "peak_memory_mb", "pick_device", "rng_state", "save_checkpoint", "seed_everything", "set_rng_state", "to_device",
]
