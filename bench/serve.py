"""Throughput and latency of `rlhf serve` under load: continuous batching against a plain
`transformers` `generate` loop (one request at a time) behind the same API.

    python bench/serve.py                      # tiny Llama (random weights), 1/8/32 clients, both engines
    python bench/serve.py --model DIR --max-tokens 128
    python bench/serve.py --soak               # 64 streaming clients for 10 minutes (bench/serve_soak.py)

For each engine a server runs in its own process (`rlhf serve --engine continuous|serial`) on
127.0.0.1 only. At each load level N, N streaming clients (asyncio) each send a bounded
number of /v1/completions requests one after another (sampling at temperature 1 with a fixed
seed per request, so both engines get the same work) and read the server-sent events. Reported:
requests/s and generated tokens/s (from the usage counts) over the level's wall time, p50/p99
time to first token, and the speed-up over 1 client. Prints the CPU it ran on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORKER_ENV, build_model_dir, cpu, format_table, free_port, machine  # noqa: E402

PROMPTS = ["Once upon a time", "Tom had a red ball.", "The dog was sad because", "Lily went to the park",
           "One day, a little bird", "The sun was hot and"]


def start_server(model: Path, engine: str, precision: str, threads: int, log: Path,
                 extra: list[str] = ()) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "rlhf.cli", "serve", "--model", f"bench={model}", "--port", str(port),
           "--engine", engine, "--precision", precision, "--threads", str(threads), *extra]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env={**os.environ, **WORKER_ENV})
    url = f"http://127.0.0.1:{port}/v1"
    import httpx

    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited; see {log}")
        try:
            if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server did not start; see {log}")


async def one_request(url: str, prompt: str, max_tokens: int, seed: int) -> tuple[float, int]:
    """(time to first token, generated tokens) of one streamed completion.

    A bare HTTP/1.0 client on asyncio streams (the response then ends with the connection, no
    chunked framing): it shares the CPU with the server, so it does as little as it can and
    parses only what is measured (the first text, errors, the usage event)."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    body = json.dumps({"model": "bench", "prompt": prompt, "max_tokens": max_tokens, "temperature": 1.0,
                       "seed": seed, "stream": True, "stream_options": {"include_usage": True}}).encode()
    start, first, tokens = time.perf_counter(), None, 0
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"POST /v1/completions HTTP/1.0\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    status = await reader.readline()
    if b" 200 " not in status:
        raise RuntimeError(f"server answered {status!r}: {await reader.read()}")
    async for line in reader:
        if not line.startswith(b"data: ") or (first is not None and b'"usage": {' not in line and b'"error"' not in line):
            continue
        if line.startswith(b"data: [DONE]"):
            break
        event = json.loads(line[6:])
        if "error" in event:
            raise RuntimeError(event["error"]["message"])
        if first is None and event["choices"] and event["choices"][0]["text"]:
            first = time.perf_counter() - start
        if event.get("usage"):
            tokens = event["usage"]["completion_tokens"]
    writer.close()
    return (first if first is not None else time.perf_counter() - start), tokens


async def load_level(url: str, clients: int, requests_each: int, max_tokens: int) -> dict:
    ttfts: list[float] = []
    tokens = 0

    async def client_loop(c: int) -> None:
        nonlocal tokens
        for k in range(requests_each):
            seed = c * 1000 + k
            ttft, n = await one_request(url, PROMPTS[seed % len(PROMPTS)], max_tokens, seed)
            ttfts.append(ttft)
            tokens += n

    await one_request(url, PROMPTS[0], 4, 0)  # warm-up
    start = time.perf_counter()
    await asyncio.gather(*(client_loop(c) for c in range(clients)))
    wall = time.perf_counter() - start
    ttfts.sort()
    return {"clients": clients, "requests": clients * requests_each, "wall_s": wall,
            "req_per_s": clients * requests_each / wall, "tok_per_s": tokens / wall,
            "ttft_p50_ms": 1000 * statistics.median(ttfts),
            "ttft_p99_ms": 1000 * ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))]}


def main() -> None:
    if "--soak" in sys.argv[1:]:
        import serve_soak

        sys.exit(serve_soak.main([a for a in sys.argv[1:] if a != "--soak"]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="model directory (default: a tiny Llama with random weights)")
    parser.add_argument("--levels", default="1,8,32", help="concurrent clients per level")
    parser.add_argument("--engines", default="continuous,serial")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--requests", type=int, default=64, help="requests per level at least (each client sends "
                                                                     "max(2, this / clients))")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=0, help="the server's torch threads (0: torch's default)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--soak", action="store_true", help="a long soak instead (bench/serve_soak.py; its own options)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rlhf-bench-serve-"))
    model = args.model or build_model_dir(Path(tempfile.gettempdir()) / "rlhf-bench-serve-model")
    levels = [int(x) for x in args.levels.split(",")]
    print(f"CPU: {cpu()}\nmodel: {model}, max_tokens {args.max_tokens}, temperature 1, {args.precision}, "
          f"server threads {args.threads or 'default'}",
          flush=True)
    results = []
    for engine in args.engines.split(","):
        proc, url = start_server(model, engine, args.precision, args.threads, work / f"{engine}.log")
        try:
            for n in levels:
                row = asyncio.run(load_level(url, n, max(2, args.requests // n), args.max_tokens))
                results.append({"engine": engine, **row})
                print(f"  {engine} x{n}: {row['req_per_s']:.2f} req/s, {row['tok_per_s']:.0f} tok/s", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    base = {r["engine"]: r["tok_per_s"] for r in results if r["clients"] == levels[0]}
    rows = [[r["engine"], r["clients"], r["requests"], r["req_per_s"], r["tok_per_s"], r["ttft_p50_ms"],
             r["ttft_p99_ms"], r["tok_per_s"] / base[r["engine"]]] for r in results]
    print(format_table(["engine", "clients", "requests", "req/s", "tok/s", "TTFT p50 ms", "TTFT p99 ms",
                        f"vs {levels[0]} client x"], rows))
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu(), "machine": machine(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
