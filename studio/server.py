"""`generate.py studio`: bind, print the address, serve until Ctrl+C."""
from __future__ import annotations

import ipaddress
import os
import socket
import sys

from gan.errors import UserError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free one), or a one-line error."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UserError(f"--host {host}: not an address of this machine ({e.strerror})") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        if e.errno == 98 or "in use" in str(e):
            raise UserError(f"port {port} on {host} is in use (another studio?); pass --port N, or --port 0 "
                            "for any free one") from None
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    sock.listen(128)
    return sock


def serve(spec: str, device, host: str = "127.0.0.1", port: int = 7860, precision: str = "no",
          vgg_weights: str | None = None, max_upload_mb: float = 20.0, poll_s: float = 2.0) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import uvicorn

        from .app import create_app
        from .state import Studio
    except ImportError as e:
        raise UserError(f"the studio needs its extra ({e.name} is missing): pip install 'artgan[studio]'") from None
    from pathlib import Path

    if not Path(spec).exists() and spec.count("/") != 1:
        raise UserError(f"--model {spec}: no such file or directory")
    if max_upload_mb <= 0:
        raise UserError("--max-upload-mb must be positive")
    sock = bind(host, port)
    port = sock.getsockname()[1]
    loopback = _is_loopback(host)
    shown = f"[{host}]" if ":" in host else host
    allowed = {f"{h}:{port}" for h in ("127.0.0.1", "localhost", "[::1]")} | {f"{shown}:{port}"} if loopback else None
    studio = Studio(spec, device, precision, vgg_weights, max_upload_mb, allowed, poll_s)
    loaded = studio.source.current()
    if not loopback:
        print(f"warning: --host {host} serves the studio to every machine that can reach this one, and anyone "
              "there can use it (and this machine's CPU/GPU); use the default 127.0.0.1 to keep it to yourself",
              file=sys.stderr)
    if loaded is None:
        print(f"warning: {studio.source.error}; the page says so until a model loads", file=sys.stderr)
    what = f"{loaded.sampler.cfg.arch} {loaded.sampler.cfg.resolution}px, {loaded.label}" if loaded else "no model yet"
    print(f"artgan studio: http://{'127.0.0.1' if loopback and host != '::1' else shown}:{port}/ ({what}; "
          "Ctrl+C stops it)", flush=True)
    config = uvicorn.Config(create_app(studio), log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=3)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
