"""`rlhf label serve` as a user runs it: the admin token printed once on the first start,
never in the server's log, and the app answering on loopback."""

import socket
import subprocess
import sys
import time
import urllib.request


def _serve(db: str, port: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "rlhf.cli", "label", "serve", "--db", db, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline()


def _wait(url: str) -> int:
    for _ in range(200):
        try:
            return urllib.request.urlopen(url, timeout=1).status
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{url} never answered")


def _stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    return proc.communicate(timeout=20)[1]


def test_first_start_prints_the_admin_token_once(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    db = str(tmp_path / "labels.db")
    proc, first = _serve(db, port)
    try:
        assert first.startswith("admin token (shown once, keep it): ")
        token = first.split(": ", 1)[1].strip()
        base = f"http://127.0.0.1:{port}"
        assert _wait(f"{base}/healthz") == 200
        assert urllib.request.urlopen(f"{base}/health", timeout=5).status == 200
        metrics = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        assert 'rlhf_label_requests_total{route="/healthz",status="200"} 1.0' in metrics
        admin = urllib.request.Request(f"{base}/admin", headers={"authorization": f"Bearer {token}"})
        assert urllib.request.urlopen(admin, timeout=5).status == 200
    finally:
        log = _stop(proc)
    assert token not in log and "GET /admin 200" in log  # requests are logged, the token is not
    proc, again = _serve(db, port)
    try:
        assert "admin token" not in again and "/admin" in again
    finally:
        _stop(proc)
