"""Load and crash test of `rlhf label serve`, and the PandaLM agreement tables.

    python bench/label.py load      # 20 annotators x 50 labels over HTTP, then SIGKILL mid-stream
    python bench/label.py pandalm   # PandaLM's 999 pairs, 3 annotators: kappa table and leaderboard

load: one server (uvicorn, SQLite in WAL mode) on 127.0.0.1 only; each annotator fetches its
next task page and submits an answer with the request id from the form, like a browser (a
Bearer token instead of the cookie). One submission in ten is sent twice, as a client retrying
after a lost response would; the retry must not store a second label. Checks: all 1,000
labels stored exactly once; then the server is SIGKILLed while annotators are submitting, and
every label that got a success response must be in the database after a restart.
Prints p50/p99 submission latency and labels per second, and the CPU it ran on.
"""

from __future__ import annotations

import http.client
import json
import random
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu, free_port  # noqa: E402

ANNOTATORS, LABELS_EACH = 20, 50
PANDALM = Path(__file__).resolve().parents[2] / "shared" / "data" / "pandalm" / "testset-v1.json"
CHOICES = ("a3", "a2", "a1", "tie", "b1", "b2", "b3", "both_bad")


def start_server(db: str, port: int) -> tuple[subprocess.Popen, str | None]:
    """`rlhf label serve` in a child process; returns it and the admin token it printed (first start)."""
    proc = subprocess.Popen([sys.executable, "-m", "rlhf.cli", "label", "serve", "--db", db, "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    first = proc.stdout.readline()
    token = first.split(": ", 1)[1].strip() if first.startswith("admin token") else None
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # drain
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc, token
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the server did not start")


def request(url: str, token: str, data: dict | None = None, timeout: float = 30) -> tuple[int, str]:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, headers={"authorization": f"Bearer {token}",
                                                          "accept": "application/json" if data else "text/html"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


class Annotator(threading.Thread):
    """Fetch the next task page, answer it, record the latency and what was acknowledged."""

    def __init__(self, base: str, token: str, goal: int, seed: int, stop: threading.Event | None = None):
        super().__init__(daemon=True)
        self.base, self.token, self.goal, self.stop = base, token, goal, stop or threading.Event()
        self.rng = random.Random(seed)
        self.acknowledged: list[tuple[str, int]] = []  # (request id, label id) that got a success response
        self.latencies: list[float] = []
        self.retries = self.duplicates = self.conflicts = 0
        self.error: str | None = None

    def run(self):
        try:
            while len(self.acknowledged) < self.goal and not self.stop.is_set():
                status, page = request(f"{self.base}/annotate", self.token)
                match = re.search(r'action="/annotate/(\d+)"', page)
                if status != 200 or match is None:
                    raise RuntimeError(f"no task page ({status})")
                form = dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"', page))
                form["choice"] = self.rng.choice(CHOICES)
                url = f"{self.base}/annotate/{match.group(1)}"
                start = time.perf_counter()
                status, body = request(url, self.token, form)
                self.latencies.append(time.perf_counter() - start)
                if status == 403:  # another annotator filled the task between our page and our answer
                    self.conflicts += 1
                    continue
                if status != 200:
                    raise RuntimeError(f"submission failed ({status}): {body[:200]}")
                label_id = json.loads(body)["label_id"]
                self.acknowledged.append((form["request_id"], label_id))
                if self.rng.random() < 0.1:  # a client retrying after a lost response
                    self.retries += 1
                    status, again = request(url, self.token, form)
                    self.duplicates += status != 200 or json.loads(again) != {"label_id": label_id, "created": False}
        except (OSError, RuntimeError, http.client.HTTPException, ValueError) as err:  # the crash phase ends this way
            self.error = f"{type(err).__name__}: {err}"


def setup(tmp: Path, tasks: int) -> tuple[str, int]:
    rows = [{"prompt": f"Prompt {i}", "responses": [f"answer {i} from A", f"answer {i} from B"],
             "models": ["model-a", "model-b"]} for i in range(tasks)]
    data = tmp / "candidates.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    db = str(tmp / "bench.db")
    subprocess.run([sys.executable, "-m", "rlhf.cli", "label", "import", "--db", db, "--project", "bench",
                    str(data)], check=True, capture_output=True)
    return db, free_port()


def invite_all(base: str, admin: str, n: int) -> list[str]:
    tokens = []
    for k in range(n):
        status, page = request(f"{base}/admin/projects/1/invite", admin, {"name": f"annotator-{k:02d}"})
        tokens.append(re.search(r"/join/([A-Za-z0-9_-]+)", page).group(1))
    return tokens


def stored(db: str) -> list[tuple[int, str, int]]:
    with sqlite3.connect(db) as c:
        return c.execute("SELECT annotator_id, request_id, id FROM labels WHERE undone_at IS NULL").fetchall()


def load() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="rlhf-label-bench-"))
    db, port = setup(tmp, tasks=2 * ANNOTATORS * LABELS_EACH)
    base = f"http://127.0.0.1:{port}"
    server, admin = start_server(db, port)
    try:
        tokens = invite_all(base, admin, ANNOTATORS)
        workers = [Annotator(base, t, LABELS_EACH, seed=k) for k, t in enumerate(tokens)]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        wall = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait()
    errors = [w.error for w in workers if w.error]
    rows = stored(db)
    acknowledged = {label for w in workers for _, label in w.acknowledged}
    latencies = sorted(x for w in workers for x in w.latencies)
    print(f"CPU: {cpu()}")
    print(f"{ANNOTATORS} annotators x {LABELS_EACH} labels: {len(acknowledged)} acknowledged, {len(rows)} stored, "
          f"{len({(a, r) for a, r, _ in rows})} distinct (annotator, request id); "
          f"{sum(w.retries for w in workers)} retried submissions, {sum(w.duplicates for w in workers)} duplicated, "
          f"{sum(w.conflicts for w in workers)} lost races for a task; errors: {errors or 'none'}")
    print(f"submission latency p50 {1000 * statistics.median(latencies):.1f} ms, "
          f"p99 {1000 * latencies[int(0.99 * (len(latencies) - 1))]:.1f} ms; "
          f"{len(acknowledged) / wall:.1f} labels/s ({wall:.1f} s, page fetch + answer per label)")
    ok = (not errors and len(rows) == len(acknowledged) == ANNOTATORS * LABELS_EACH
          and {r[2] for r in rows} == acknowledged and not any(w.duplicates for w in workers))
    print("exactly once:", "PASS" if ok else "FAIL")

    # Crash: restart on the same database, kill -9 while 20 annotators submit, count survivors.
    server, _ = start_server(db, port)
    stop = threading.Event()
    workers = [Annotator(base, t, 10**6, seed=100 + k, stop=stop) for k, t in enumerate(tokens)]
    for w in workers:
        w.start()
    deadline = time.time() + 60
    while sum(len(w.acknowledged) for w in workers) < 200 and time.time() < deadline:
        time.sleep(0.01)  # kill mid-stream, once a few hundred answers are in flight or done
    server.send_signal(signal.SIGKILL)
    server.wait()
    stop.set()
    for w in workers:
        w.join(timeout=60)
    acked = {(r, label) for w in workers for r, label in w.acknowledged}
    after = {(r, i) for _, r, i in stored(db)}
    missing = acked - after
    print(f"SIGKILL during submissions: {len(acked)} acknowledged before the kill, "
          f"{len(missing)} missing after restart: {'PASS' if not missing and acked else 'FAIL'}")
    if not ok or missing or not acked:
        sys.exit(1)


def pandalm() -> None:
    """Import PandaLM's testset and print the dashboard's kappa table and leaderboard as Markdown."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from rlhf.feedback import dashboard, repo
    from rlhf.feedback.importer import import_pandalm
    from rlhf.feedback.store import open_store

    sessions = open_store(str(Path(tempfile.mkdtemp()) / "pandalm.db"))
    with sessions() as s:
        project = repo.create_project(s, "pandalm", "pairwise", overlap=3)
        result = import_pandalm(s, project, PANDALM)
        s.commit()
        d = dashboard.build(s, project, rounds=1000)
    print(f"{result.tasks} pairs, {result.labels} labels; Krippendorff's alpha {d.alpha:.3f}\n")
    print("| annotators | pairs | Cohen's kappa |\n|---|---|---|")
    for k in d.kappa:
        print(f"| {k['a']} - {k['b']} | {k['n']} | {k['kappa']:.3f} |")
    print("\n| model | battles | win rate | Bradley-Terry (95% CI) | Elo (95% CI) |\n|---|---|---|---|---|")
    for r in d.leaderboard:
        print(f"| {r['model']} | {r['battles']} | {r['win_rate']:.3f} | {r['bt']:.0f} ({r['bt_low']:.0f} to "
              f"{r['bt_high']:.0f}) | {r['elo']:.0f} ({r['elo_low']:.0f} to {r['elo_high']:.0f}) |")


if __name__ == "__main__":
    {"load": load, "pandalm": pandalm}[sys.argv[1] if len(sys.argv) > 1 else "load"]()
