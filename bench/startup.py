"""How long a stage makes its user wait: from the command to the first training step, and to the
error for a broken data file (which must come before any model is loaded).

    python bench/startup.py                # sft, rm and dpo on the shipped base, best of 3
    python bench/startup.py --src ../old/src   # the same with another checkout's package (before/after)

Each measurement is a fresh `rlhf` process (imports included), timed from its start until the
first line of metrics.jsonl appears (first step) or until it exits (bad input). Prints a table
with the CPU named; `--json FILE` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORKER_ENV, cpu, machine  # noqa: E402


SOURCE: dict[str, str] = {}  # {"PYTHONPATH": DIR} with --src: the measured processes run that checkout


def _rlhf() -> list[str]:
    return [sys.executable, "-m", "rlhf.cli"]


def time_to_first_step(args: list[str], out: Path) -> float:
    """Seconds from process start until `out/metrics.jsonl` holds a line; the process is then stopped."""
    import os

    metrics = out / "metrics.jsonl"
    start = time.perf_counter()
    proc = subprocess.Popen(_rlhf() + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, **WORKER_ENV, **SOURCE})
    try:
        while proc.poll() is None:
            if metrics.exists() and metrics.stat().st_size > 0:
                return time.perf_counter() - start
            time.sleep(0.01)
        raise RuntimeError(f"rlhf {' '.join(args)} exited ({proc.returncode}) before its first step: "
                           f"{proc.stderr.read().decode()[-800:]}")
    finally:
        proc.kill()
        proc.wait()


def time_to_error(args: list[str]) -> tuple[float, str]:
    """Seconds until the process exits with an error, and the error's last line."""
    import os

    start = time.perf_counter()
    done = subprocess.run(_rlhf() + args, capture_output=True, text=True, env={**os.environ, **WORKER_ENV, **SOURCE})
    elapsed = time.perf_counter() - start
    if done.returncode == 0:
        raise RuntimeError(f"rlhf {' '.join(args)} succeeded on a broken file")
    return elapsed, (done.stderr.strip().splitlines() or ["?"])[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--src", type=Path, help="run the rlhf package of this src/ directory (e.g. an older checkout's)")
    args = parser.parse_args()
    if args.src:
        SOURCE["PYTHONPATH"] = str(args.src.resolve())
    from rlhf.resources import BASE_MODEL

    tmp = Path(tempfile.mkdtemp(prefix="rlhf-startup-"))
    demos = tmp / "demos.jsonl"
    demos.write_text("".join(json.dumps({"prompt": f"Once upon a time {i}", "completion": " a dog ran."}) + "\n"
                             for i in range(64)))
    pairs = tmp / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Once upon a time {i}", "chosen": " a happy dog.",
                                         "rejected": " a sad cat."}) + "\n" for i in range(64)))
    broken = tmp / "broken.jsonl"
    broken.write_text("".join(json.dumps({"prompt": f"p{i}", "completion": " c"}) + "\n" for i in range(500))
                      + '{"prompt": "unclosed\n')
    broken_pairs = tmp / "broken-pairs.jsonl"
    broken_pairs.write_text("".join(json.dumps({"prompt": "p", "chosen": " a", "rejected": " b"}) + "\n" for _ in range(500))
                            + '{"prompt": "p", "chosen": 3}\n')
    common = ["--model", str(BASE_MODEL), "--max-steps", "2", "--log-every", "1", "--no-progress", "--precision", "fp32",
              "--save-every", "0"]
    stages = {
        "sft": (["sft", "--data", str(demos), "--batch-size", "8", "--max-length", "64"], ["sft", "--data", str(broken)]),
        "rm": (["rm", "--data", str(pairs), "--batch-size", "8", "--max-length", "64"], ["rm", "--data", str(broken_pairs)]),
        "dpo": (["dpo", "--data", str(pairs), "--batch-size", "8", "--max-length", "64", "--kl-prompts", "0"],
                ["dpo", "--data", str(broken_pairs)]),
    }
    results = {}
    for name, (good, bad) in stages.items():
        firsts, errors, message = [], [], ""
        for i in range(args.repeats):
            out = tmp / f"{name}-{i}"
            firsts.append(time_to_first_step(good + common + ["--out", str(out)], out))
            seconds, message = time_to_error(bad + ["--model", str(BASE_MODEL), "--out", str(tmp / f"{name}-bad-{i}")])
            errors.append(seconds)
        results[name] = {"first_step_s": min(firsts), "bad_input_error_s": min(errors), "error": message}
    print(f"CPU: {cpu()}")
    print(f"{'stage':<6} {'to first step s':>16} {'to bad-input error s':>21}  error")
    for name, r in results.items():
        print(f"{name:<6} {r['first_step_s']:>16.2f} {r['bad_input_error_s']:>21.2f}  {r['error'][:90]}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
