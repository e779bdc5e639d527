"""The loop's two servers run side by side, and a taken port is one line naming --port (issue 27
item 4: `rlhf serve ... --db ...` after `rlhf label serve` ended in `[Errno 98] address already in use`)."""

from __future__ import annotations

import socket

import pytest

from rlhf.cli import main
from rlhf.config import LabelServeConfig, ServeConfig


@pytest.fixture
def taken_port():
    """A port another server listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_the_two_servers_default_to_different_ports():
    assert ServeConfig().port == 8000  # as OpenAI-compatible servers do
    assert LabelServeConfig().port == 8080
    from rlhf.doctor.ports import port_problem

    assert port_problem("127.0.0.1", 0) is None


def test_label_serve_on_a_taken_port_is_one_line(taken_port, tmp_path, capsys):
    assert main(["label", "serve", "--db", str(tmp_path / "f.db"), "--port", str(taken_port)]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and f"port {taken_port} on 127.0.0.1 is already in use" in lines[0], captured.err
    assert "--port" in lines[0] and "Traceback" not in captured.err
    assert "admin token" not in captured.out  # refused before the app starts


def test_serve_on_a_taken_port_fails_before_loading_models(taken_port, tiny_model_dir, capsys):
    assert main(["serve", "--model", str(tiny_model_dir), "--port", str(taken_port)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already in use" in err[0] and "pass --port N" in err[0]
    from rlhf.doctor.ports import port_problem

    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    assert port_problem("127.0.0.1", port) is None
