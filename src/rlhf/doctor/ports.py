"""Whether a server can listen where it is asked to, checked before it loads anything.

`rlhf serve` (8000, as OpenAI-compatible servers do) and `rlhf label serve` (8080) default to
different ports so the loop's recipe runs both side by side; a port already taken is one line
naming the flag, before the models load, not uvicorn's `[Errno 98]` after them.
"""

from __future__ import annotations

import errno
import socket

# command -> its default port (rlhf.config: ServeConfig.port, LabelServeConfig.port)
SERVERS = {"serve": 8000, "label serve": 8080}


def port_problem(host: str, port: int) -> str | None:
    """Why `host:port` cannot be listened on now, or None. Binds and closes a socket with
    SO_REUSEADDR, as uvicorn binds its own; port 0 (the system picks) always passes."""
    if port == 0:
        return None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        return f"--host {host}: {err.strerror or err}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                others = ", ".join(f"rlhf {name} takes {default}" for name, default in SERVERS.items())
                return f"port {port} on {host} is already in use by another server ({others} by default): " \
                       f"pass --port N with a free one"
            if err.errno == errno.EACCES:
                return f"port {port} on {host} needs privileges this user lacks: pass --port 1024 or above"
            return f"cannot listen on {host}:{port} ({err.strerror or err}): pass another --host or --port"
    return None


def check_port(host: str, port: int) -> None:
    """Raise ValueError with `port_problem`'s one line when `host:port` cannot be listened on."""
    problem = port_problem(host, port)
    if problem:
        raise ValueError(problem)
