"""The TVM RPC server an emulated aarch64 board runs (started by tools/arm_emulator.py).

Runs inside the aarch64 Python under qemu-user, so it imports only the standard library and
TVM. It is TVM's own server loop with one addition: it declares itself emulated through the
global function `latprune.device_info`, which the `tvm-aarch64` target asks every device for,
so verification checks the engine's outputs and leaves out its (meaningless) latency. A real
board runs plain `python -m tvm.exec.rpc_server` and declares nothing.

TVM's `rpc.Server` starts its loop in a fresh interpreter (`sys.executable`), which qemu-user
cannot exec without binfmt_misc; the loop runs in this process instead, on the main thread. TVM
forks a child per session; this server serves each session in the server process itself (the
board serves one session at a time either way). Under qemu-user 7.2 a forked session once hung
before its handshake (the client waited 16 min, nothing using CPU), and a CI run's emulated-board
tests later failed and hung in a way that fits the same fault: a session with no timeout is
never reaped, so the board stays taken for good. A fork that inherits a lock another guest
thread (qemu's or TVM's) held is the likely cause, not proven; with no fork there is none to
inherit. A session that ends in an error (a client gone mid-call) is logged and the board
serves the next one, where TVM's loop would stop the server.
"""
from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import platform
import socket
from typing import Any

import tvm
from tvm.rpc import server
from tvm.support import utils

DEVICE_INFO = {"emulated": True, "emulator": "qemu-user", "machine": platform.machine()}


def listen(port: int, tries: int = 100) -> tuple[socket.socket, int]:
    """A socket listening on 127.0.0.1 at the first free port from `port` (as TVM's server binds)."""
    for p in range(port, port + tries):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", p))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                continue
            raise
        sock.listen(1)
        return sock, p
    raise SystemExit(f"no free port in [{port}, {port + tries})")


def serve_here(sock: socket.socket, addr: Any, opts: dict[str, Any], load_library: str | None) -> None:
    """One session, in this process: TVM's `_serving` less its fork. The session's files go
    to a fresh folder, as TVM's do. A client's `-timeout=` is not enforced: nothing here can
    stop a session from outside it (the client's own deadline, --rpc-timeout, still holds)."""
    work = utils.tempdir()
    here = os.getcwd()
    os.chdir(work.path)
    try:
        server._server_env(load_library, work)
        server._ffi_api.ServerLoop(sock.detach())  # TVM's loop owns the socket from here and closes it
    except Exception as exc:  # noqa: BLE001 - one session's failure is not the board's
        server.logger.error("session from %s ended in an error: %s", addr, exc)
    finally:
        os.chdir(here)
        work.remove()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tracker", required=True, help="HOST:PORT of the RPC tracker to register with")
    p.add_argument("--key", required=True, help="the device key clients request")
    p.add_argument("--port", type=int, required=True, help="first port to try binding")
    args = p.parse_args()
    tvm.register_global_func("latprune.device_info", lambda: json.dumps(DEVICE_INFO))
    server.logger.setLevel(logging.ERROR)
    host, port = args.tracker.rsplit(":", 1)
    sock, bound = listen(args.port)
    server._serving = serve_here  # _listen_loop calls it by its module-level name
    server._listen_loop(sock, bound, args.key, (host, int(port)), None, "127.0.0.1")


if __name__ == "__main__":
    main()
