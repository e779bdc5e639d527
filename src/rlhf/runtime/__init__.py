"""The one seam between a stage and the machine it runs on: device, precision, seeding, ranks
(`dist`: one process or several, through accelerate), the run directory and its checkpoints.
Stages import these from here; nothing here knows a stage.

A stage's run holds them in one object: `rt = runtime.init(cfg)` (rlhf.runtime.context.Runtime)."""

from . import dist
from .checkpoint import (
    CHECKPOINT_PREFIX,
    ResumeMismatch,
    UnsafeCheckpoint,
    check_resume_config,
    list_checkpoints,
    load_latest_checkpoint,
    load_state,
    result_config,
    resume_state,
    rng_state,
    save_checkpoint,
    saved_result_config,
    set_rng_state,
)
from .device import (
    autocast,
    bf16_supported,
    effective_precision,
    peak_memory_mb,
    pick_device,
    seed_everything,
    to_device,
)
from .context import Resumed, Runtime, init
from .model_dir import COMPLETE_MARKER, save_pretrained
from .progress import record_context, record_step
from .rundir import RunDir, RunDirNotEmpty
from .guard import NonFiniteError, NonFiniteGuard, advance_schedulers, assert_finite

__all__ = [
    "CHECKPOINT_PREFIX", "RunDir", "autocast", "bf16_supported", "effective_precision", "list_checkpoints", "load_latest_checkpoint",
    "peak_memory_mb", "pick_device", "rng_state", "save_checkpoint", "seed_everything", "set_rng_state", "to_device",
]
__all__ += ["ResumeMismatch", "RunDirNotEmpty", "UnsafeCheckpoint", "check_resume_config", "load_state",
            "record_context", "record_step", "result_config", "resume_state", "saved_result_config"]
__all__ += ["dist"]
__all__ += ["NonFiniteError", "NonFiniteGuard", "advance_schedulers", "assert_finite"]
__all__ += ["COMPLETE_MARKER", "Resumed", "Runtime", "init", "save_pretrained"]
