"""The TVM RPC server an emulated aarch64 board runs (started by tools/arm_emulator.py).

Runs inside the aarch64 Python under qemu-user, so it imports only the standard library and
TVM. It is TVM's own server loop with one addition: it declares itself emulated through the
global function `latprune.device_info`, which the `tvm-aarch64` target asks every device for,
so verification checks the engine's outputs and leaves out its (meaningless) latency. A real
board runs plain `python -m tvm.exec.rpc_server` and declares nothing.

TVM's `rpc.Server` starts its loop in a fresh interpreter (`sys.executable`), which qemu-user
cannot exec without binfmt_misc; the loop runs in this process instead, and each session is
forked from it as usual. It runs on the main thread, not on the thread TVM's in-process starter
gives it: a session forked from the two-thread guest under qemu-user 7.2 once hung before its
handshake (the client waited 16 min, nothing using CPU; a fork racing another guest thread is
the likely cause, not proven), and a fork from a one-thread process is the case qemu-user
handles.
"""
from __future__ import annotations

import argparse
import errno
import json
import logging
import platform
import socket

import tvm
from tvm.rpc import server

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
    server._listen_loop(sock, bound, args.key, (host, int(port)), None, "127.0.0.1")


if __name__ == "__main__":
    main()
