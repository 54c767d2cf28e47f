"""The TVM RPC server an emulated aarch64 board runs (started by tools/arm_emulator.py).

Runs inside the aarch64 Python under qemu-user, so it imports only the standard library and
TVM. It is TVM's own server loop with one addition: it declares itself emulated through the
global function `latprune.device_info`, which the `tvm-aarch64` target asks every device for,
so verification checks the engine's outputs and leaves out its (meaningless) latency. A real
board runs plain `python -m tvm.exec.rpc_server` and declares nothing.

TVM's `rpc.Server` starts its loop in a fresh interpreter (`sys.executable`), which qemu-user
cannot exec without binfmt_misc; the loop is started in this process instead, and each session
is forked from it as usual.
"""
from __future__ import annotations

import argparse
import json
import platform

import tvm
from tvm.rpc import server

DEVICE_INFO = {"emulated": True, "emulator": "qemu-user", "machine": platform.machine()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tracker", required=True, help="HOST:PORT of the RPC tracker to register with")
    p.add_argument("--key", required=True, help="the device key clients request")
    p.add_argument("--port", type=int, required=True, help="first port to try binding")
    args = p.parse_args()
    tvm.register_global_func("latprune.device_info", lambda: json.dumps(DEVICE_INFO))
    host, port = args.tracker.rsplit(":", 1)
    server._popen_start_rpc_server("127.0.0.1", args.port, args.port + 100, tracker_addr=(host, int(port)),
                                   key=args.key, custom_addr="127.0.0.1", silent=True)
    server.PopenRPCServerState.current.thread.join()


if __name__ == "__main__":
    main()
