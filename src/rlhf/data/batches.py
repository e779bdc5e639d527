"""Whether a data set can fill a batch: one check, one message, for the preflight and the stages.

A training stage cuts each epoch into full batches of `batch_size` examples and drops the
remainder (rlhf.train.loop.BatchPlan), and with several processes each takes an equal share of
every batch. So a run needs at least `batch_size` examples, and a batch size that divides among
the processes. `check_batch` says so before anything is written or loaded, naming the flag to
change and a value that fits. No torch here: `rlhf.doctor.inputs` calls it on the rows it reads.
"""

from __future__ import annotations


def fitting_batch_size(n: int, world: int = 1) -> int:
    """The largest power of two per process, times the process count, that `n` examples fill
    (5 examples, 1 process: 4); 0 when `n` is fewer than the processes."""
    per_process = n // world
    if per_process < 1:
        return 0
    return (1 << (per_process.bit_length() - 1)) * world


def batch_problem(n: int, batch_size: int, world: int = 1, what: str = "training examples", source: str = "",
                  flag: str = "--batch-size") -> str | None:
    """Why `n` examples cannot train at `batch_size` over `world` processes, or None when they can.

    `what`: the examples' name (e.g. "preferences"); `source`: where they come from (a file name),
    said first; `flag`: the option that sets the batch size, named in the way out."""
    held = f"{source} holds {n} {what}" if source else f"only {n} {what}"
    if batch_size % world:
        fit = batch_size + world - batch_size % world
        fit = fit if fit <= n else (fitting_batch_size(n, world) or fit)
        return (f"the batch size {batch_size} does not divide among {world} processes: choose a multiple of "
                f"{world} (e.g. {flag} {fit})")
    if n >= batch_size:
        return None
    per = f" over {world} processes" if world > 1 else ""
    fit = fitting_batch_size(n, world)
    if not fit and n:
        return f"{held}, fewer than the {world} processes (each takes a share of every batch): add data or run fewer"
    if not fit:
        return f"{held}, fewer than one batch of {batch_size}{per}: add data"
    return f"{held}, fewer than one batch of {batch_size}{per}: pass {flag} {fit} (or add data)"


def check_batch(n: int, batch_size: int, world: int = 1, what: str = "training examples", source: str = "",
                flag: str = "--batch-size") -> None:
    """Raise ValueError with `batch_problem`'s message when `n` examples cannot fill a batch."""
    problem = batch_problem(n, batch_size, world, what, source, flag)
    if problem:
        raise ValueError(problem)
