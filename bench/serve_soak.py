"""A soak of `rlhf serve` (`python bench/serve.py --soak`): many streaming clients for a long time,
some leaving mid-answer, against a real server process on the tiny model; does it stay up, keep
its memory and tell the truth on /metrics?

    python bench/serve.py --soak                          # 64 clients, 600 s, 10% of them leave mid-stream
    python bench/serve.py --soak --clients 8 --duration 20

Each client sends streamed /v1/completions requests one after another (temperature 1, a seed
per request) over a bare HTTP/1.0 connection; a 429 is counted and retried after its
Retry-After. The first `--leave-share` of the clients close the connection after a random 1 to
max_tokens/2 events of every answer. The server runs with `--max-batch 32 --max-queue 16` by
default, so 64 clients do meet its backpressure. Reported, and checked (exit status 1 on a
failed check):

- 5xx answers, error events inside streams and dropped connections: must be zero;
- 429s: counted (the client's and /metrics' counts must agree);
- the server's resident memory (VmRSS) after `--warmup` seconds and at the end: within 10%;
- p50/p99 time to first token (request sent -> first text event), requests/s, tokens/s;
- /metrics against the client's own counts, over the soak (scraped before and after):
  answers by status exactly; tokens: /metrics counts every finished sequence, so it is the
  client's usage sum plus what the leavers' sequences made when they finished before the
  server saw the client go, which lies between 0 and (finished - read to the end) x max_tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import build_model_dir, cpu, format_table, machine  # noqa: E402
from serve import PROMPTS, start_server  # noqa: E402


@dataclass
class Tally:
    """What the clients saw."""

    ok: int = 0  # streams read to [DONE]
    left: int = 0  # streams the client closed mid-answer
    rejected: int = 0  # 429 answers
    server_errors: int = 0  # 5xx answers and error events inside a stream
    dropped: int = 0  # connections that failed or ended early on the server's side
    other: int = 0  # any other status
    tokens: int = 0  # completion tokens of the streams read to the end (their usage)
    ttfts: list = field(default_factory=list)
    messages: list = field(default_factory=list)  # the first few failures, verbatim

    def failed(self, kind: str, message: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.messages) < 20:
            self.messages.append(f"{kind}: {message[:300]}")


async def soak_request(host: str, port: int, body: dict, leave_after: int | None, tally: Tally) -> float:
    """One streamed completion; the seconds to wait before the next (Retry-After of a 429, else 0)."""
    data = json.dumps(body).encode()
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"POST /v1/completions HTTP/1.0\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        status_line = (await reader.readline()).decode()
        status = int(status_line.split()[1]) if status_line.startswith("HTTP/") else 0
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        if status != 200:
            text = (await reader.read()).decode(errors="replace")
            if status == 429:
                tally.rejected += 1
                return float(headers.get("retry-after", "1"))
            tally.failed("server_errors" if status >= 500 else "dropped" if status == 0 else "other", f"{status} {text}")
            return 0.0
        events, first, done = 0, None, False
        async for line in reader:
            if not line.startswith(b"data: "):
                continue
            if line.startswith(b"data: [DONE]"):
                done = True
                break
            if b'"error"' in line:
                tally.failed("server_errors", line.decode())
                return 0.0
            events += 1
            if first is None and b'"text": ""' not in line:
                first = time.perf_counter() - start
                tally.ttfts.append(first)
            if b'"usage": {' in line:
                tally.tokens += json.loads(line[6:])["usage"]["completion_tokens"]
            if leave_after is not None and events >= leave_after:
                tally.left += 1  # gone mid-answer: the server has to notice and free the slot
                return 0.0
        if done:
            tally.ok += 1
        else:
            tally.failed("dropped", f"the stream ended after {events} events without [DONE]")
        return 0.0
    finally:
        writer.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def scrape(url: str) -> dict:
    """{(sample name, sorted labels): value} of the server's /metrics."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url.removesuffix("/v1") + "/metrics", timeout=30).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def grown(before: dict, after: dict, name: str, **labels) -> int:
    """The increase of the samples named `name` whose labels include `labels`, summed (counts: whole numbers)."""
    def total(metrics: dict) -> float:
        return sum(v for (n, ls), v in metrics.items() if n == name and labels.items() <= dict(ls).items())
    return round(total(after) - total(before))


def agreement(before: dict, after: dict, tally: Tally, max_tokens: int) -> list[dict]:
    """The checks of /metrics against the client's counts (see the module docstring)."""
    endpoint = "/v1/completions"
    answered = grown(before, after, "rlhf_requests_total", endpoint=endpoint, status="200")
    rejected = grown(before, after, "rlhf_requests_total", endpoint=endpoint, status="429")
    server_5xx = sum(grown(before, after, "rlhf_requests_total", status=str(code)) for code in range(500, 600))
    tokens = grown(before, after, "rlhf_generation_tokens_total")
    finished = grown(before, after, "rlhf_request_success_total")
    finished_after_leaving = finished - tally.ok
    extra_tokens = tokens - tally.tokens
    return [
        {"check": "answers 200 (read to the end + left)", "client": tally.ok + tally.left, "server": answered,
         "pass": answered == tally.ok + tally.left},
        {"check": "answers 429", "client": tally.rejected, "server": rejected, "pass": rejected == tally.rejected},
        {"check": "5xx answers", "client": tally.server_errors, "server": server_5xx,
         "pass": server_5xx == 0 and tally.server_errors == 0},
        {"check": "sequences finished (>= read to the end, <= + left)", "client": tally.ok, "server": finished,
         "pass": 0 <= finished_after_leaving <= tally.left},
        {"check": "tokens generated (usage sum; + leavers' finished)", "client": tally.tokens, "server": tokens,
         "pass": 0 <= extra_tokens <= max(finished_after_leaving, 0) * max_tokens},
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def soak(url: str, pid: int, args) -> dict:
    host, port = url.split("//")[1].split("/")[0].split(":")
    port = int(port)
    tally = Tally()
    warm_body = {"model": "bench", "prompt": PROMPTS[0], "max_tokens": 4, "stream": True}
    await soak_request(host, port, warm_body, None, Tally())  # the first request loads lazily built kernels
    before = await asyncio.to_thread(scrape, url)
    load_before = os.getloadavg()[0]
    leavers = round(args.leave_share * args.clients)
    start = time.monotonic()
    deadline = start + args.duration
    rss: list[tuple[float, float]] = []

    async def client(c: int) -> None:
        rng = random.Random(c)
        k = 0
        while time.monotonic() < deadline:
            seed = c * 1_000_000 + k
            k += 1
            body = {"model": "bench", "prompt": PROMPTS[seed % len(PROMPTS)], "max_tokens": args.max_tokens,
                    "temperature": 1.0, "seed": seed, "stream": True, "stream_options": {"include_usage": True}}
            leave_after = rng.randint(1, max(1, args.max_tokens // 2)) if c < leavers else None
            try:
                wait = await soak_request(host, port, body, leave_after, tally)
            except (OSError, asyncio.IncompleteReadError, ValueError) as err:
                tally.failed("dropped", repr(err))
                wait = 0.5
            if wait:
                await asyncio.sleep(wait)

    async def watch_memory() -> None:
        while time.monotonic() < deadline:
            rss.append((time.monotonic() - start, rss_mb(pid)))
            await asyncio.sleep(args.sample_every)

    await asyncio.gather(watch_memory(), *(client(c) for c in range(args.clients)))
    wall = time.monotonic() - start
    for _ in range(60):  # until the server has seen every leaver go and counted every answer
        after = await asyncio.to_thread(scrape, url)
        idle = grown({}, after, "rlhf_num_requests_running") == 0 and grown({}, after, "rlhf_num_requests_waiting") == 0
        if idle and all(row["pass"] for row in agreement(before, after, tally, args.max_tokens)[:2]):
            break
        await asyncio.sleep(0.25)
    end_rss = rss_mb(pid)
    load_after = os.getloadavg()[0]
    rss.append((time.monotonic() - start, end_rss))
    warm_rss = next((mb for t, mb in rss if t >= args.warmup), rss[0][1])
    return {"tally": tally, "wall_s": wall, "before": before, "after": after, "rss": rss, "warm_rss_mb": warm_rss,
            "end_rss_mb": end_rss, "leavers": leavers,
            "load_average": (load_before, load_after)}


def report(result: dict, args) -> tuple[str, dict]:
    """The printed table and the JSON of a soak."""
    tally, wall = result["tally"], result["wall_s"]
    growth = result["end_rss_mb"] / result["warm_rss_mb"] - 1
    checks = agreement(result["before"], result["after"], tally, args.max_tokens)
    checks.append({"check": "stream errors and dropped connections", "client": tally.dropped, "server": "",
                   "pass": tally.dropped == 0})
    checks.append({"check": f"RSS end vs after {args.warmup:g} s warm-up (MB)",
                   "client": f"{result['warm_rss_mb']:.1f} -> {result['end_rss_mb']:.1f} ({100 * growth:+.1f}%)",
                   "server": f"max {max(mb for _, mb in result['rss']):.1f}", "pass": abs(growth) <= 0.10})
    answered = tally.ok + tally.left
    figures = {"clients": args.clients, "leaving clients": result["leavers"], "duration s": round(wall, 1),
               "answers 200": answered, "read to the end": tally.ok, "left mid-stream": tally.left,
               "429 (retried)": tally.rejected, "requests/s": round(answered / wall, 2),
               "tokens/s (read to the end)": round(tally.tokens / wall, 1),
               "TTFT p50 ms": round(1000 * percentile(tally.ttfts, 0.5), 1),
               "TTFT p99 ms": round(1000 * percentile(tally.ttfts, 0.99), 1),
               "load average (1 min) at start, end": " / ".join(f"{x:.1f}" for x in result["load_average"])}
    lines = [format_table(["figure", "value"], [[k, v] for k, v in figures.items()]), "",
             format_table(["check", "client", "server /metrics", "pass"],
                          [[c["check"], c["client"], c["server"], "PASS" if c["pass"] else "FAIL"] for c in checks])]
    if tally.messages:
        lines += ["", "first failures:", *tally.messages]
    data = {"cpu": cpu(), "machine": machine(), "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "figures": figures, "checks": checks, "rss_mb": result["rss"],
            "tally": {k: v for k, v in asdict(tally).items() if k != "ttfts"},
            "ttft_ms": {"p50": figures["TTFT p50 ms"], "p99": figures["TTFT p99 ms"],
                        "mean": round(1000 * statistics.fmean(tally.ttfts), 1) if tally.ttfts else None},
            "passed": all(c["pass"] for c in checks)}
    return "\n".join(lines), data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/serve.py --soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="model directory (default: the tiny Llama, random weights)")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--leave-share", type=float, default=0.1, help="share of clients that leave mid-stream")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before the reference memory reading "
                                                                 "(cut to a tenth of --duration when that is shorter)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--max-batch", type=int, default=32, help="the server's --max-batch")
    parser.add_argument("--max-queue", type=int, default=16, help="the server's --max-queue")
    parser.add_argument("--threads", type=int, default=1, help="the server's torch threads")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between memory readings")
    parser.add_argument("--json", type=Path, default=Path("runs/bench-serve-soak/results.json"))
    args = parser.parse_args(argv)
    args.warmup = min(args.warmup, args.duration / 10)
    args.sample_every = min(args.sample_every, max(args.duration / 20, 0.2))
    work = Path(tempfile.mkdtemp(prefix="rlhf-bench-soak-"))
    args.model = args.model or build_model_dir(Path(tempfile.gettempdir()) / "rlhf-bench-serve-model")
    print(f"CPU: {cpu()}\nsoak: {args.clients} streaming clients ({args.leave_share:.0%} leave mid-stream) for "
          f"{args.duration:g} s; model {args.model}, max_tokens {args.max_tokens}; server --max-batch {args.max_batch} "
          f"--max-queue {args.max_queue} --threads {args.threads}; log {work / 'server.log'}", flush=True)
    proc, url = start_server(args.model, "continuous", "fp32", args.threads, work / "server.log",
                             extra=["--max-batch", str(args.max_batch), "--max-queue", str(args.max_queue)])
    try:
        result = asyncio.run(soak(url, proc.pid, args))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    table, data = report(result, args)
    print(table, flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(data, indent=1, default=str))
    print(f"{'all checks passed' if data['passed'] else 'SOME CHECKS FAILED'}; figures in {args.json}")
    return 0 if data["passed"] else 1
