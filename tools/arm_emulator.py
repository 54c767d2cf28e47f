"""An emulated aarch64 board on this host: a TVM RPC server under qemu-user, behind a local tracker.

The `tvm-aarch64` engine is an aarch64 shared library; this runs it without a board, so a
build can check that the engine loads, runs and matches PyTorch (calling convention, symbols,
NEON schedules, parameters). Latency under emulation means nothing: the server declares itself
emulated and `latprune compile` then checks outputs only (README, "ARM boards").

    python tools/arm_emulator.py up [--port 9190] [--key latprune-emu]   # prints the tracker address
    latprune compile ... --target tvm-aarch64 --rpc-tracker 127.0.0.1:9190 --rpc-key latprune-emu --table T
    python tools/arm_emulator.py down [--port 9190]

What it needs: `qemu-aarch64-static` or `qemu-aarch64` (apt-get install qemu-user-static),
apt-get (Debian or Ubuntu, to fetch the arm64 Python; the host's package state is untouched:
a private apt state under the cache is used), and pip (the aarch64 wheels of this host's TVM
version, so both ends speak the same RPC protocol). The sysroot is built once per TVM and
Python version under `--cache` (atomically, under a lock) and reused; `up` is a no-op when the
emulator on that port is already serving the key.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from filelock import FileLock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from compiler.core.atomic import atomic_write_text  # noqa: E402
from compiler.core.hashing import digest  # noqa: E402

SERVER = Path(__file__).with_name("arm_rpc_server.py")
WHEEL_PLATFORM = "manylinux_2_28_aarch64"
SKIP_PACKAGES = {"dpkg", "install-info", "tar", "perl", "perl-base", "perl-modules-5.36", "libperl5.36",
                 "mailcap", "media-types", "mime-support", "readline-common"}  # tools, not the interpreter's
START_TIMEOUT_S = 300  # importing TVM under qemu takes ~20 s on a free core, far more on a busy one


class EmulatorError(Exception):
    """A missing piece or a failed step, said with what to do."""


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "latprune" / "arm-emulator"


def qemu() -> str:
    for name in ("qemu-aarch64-static", "qemu-aarch64"):
        if path := shutil.which(name):
            return path
    raise EmulatorError("qemu-user is not installed: apt-get install qemu-user-static")


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> str:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        raise EmulatorError(f"{what} failed (exit {r.returncode}): {' | '.join(tail)}")
    return r.stdout


class _Apt:
    """apt-get and apt-cache for arm64 with a private state folder: the host's sources, not its
    package database or architecture list."""

    def __init__(self, root: Path) -> None:
        if shutil.which("apt-get") is None:
            raise EmulatorError("apt-get is not available (the arm64 Python comes from Debian/Ubuntu packages); "
                                "on another system, unpack an aarch64 root with python3, numpy and TVM and pass "
                                "--sysroot")
        for d in ("state/lists/partial", "cache/archives/partial"):
            (root / d).mkdir(parents=True, exist_ok=True)
        (root / "status").touch()
        self.opts = [f"-oDir::State={root / 'state'}", f"-oDir::State::status={root / 'status'}",
                     f"-oDir::Cache={root / 'cache'}", "-oAPT::Architecture=arm64", "-oAPT::Architectures::=arm64",
                     "-oDebug::NoLocking=1", "-oAPT::Sandbox::User=root", "-qq"]

    def update(self) -> None:
        _run(["apt-get", *self.opts, "update"], "apt-get update (arm64 package lists)")

    def closure(self, packages: list[str]) -> list[str]:
        out = _run(["apt-cache", *self.opts, "depends", "--recurse", "--no-recommends", "--no-suggests",
                    "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", *packages], "apt-cache depends")
        names = {ln.strip() for ln in out.splitlines() if ln and not ln[0].isspace() and not ln.startswith("<")}
        return sorted(names - SKIP_PACKAGES)

    def python(self) -> str:
        out = _run(["apt-cache", *self.opts, "depends", "python3"], "apt-cache depends python3")
        found = re.findall(r"Depends: (python3\.\d+)\b", out)
        if not found:
            raise EmulatorError("the arm64 package lists name no python3.X interpreter")
        return found[0]

    def download(self, packages: list[str], into: Path) -> None:
        _run(["apt-get", *self.opts, "download", *packages], "apt-get download (arm64 packages)", cwd=into)


def sysroot(cache: Path) -> Path:
    """An aarch64 root with Python, numpy and this host's TVM version: built once, then reused."""
    tvm_version = importlib.metadata.version("apache-tvm")
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / "sysroot.lock")):
        ready = sorted(cache.glob(f"sysroot-{tvm_version}-*/READY"))
        if ready:
            return ready[-1].parent
        apt = _Apt(cache / "apt")
        apt.update()
        python = apt.python()
        root = cache / f"sysroot-{tvm_version}-{digest(tvm_version, python)[:12]}"
        with tempfile.TemporaryDirectory(dir=cache, prefix=".building-") as tmp:
            work = Path(tmp)
            _populate(apt, python, tvm_version, work)
            shutil.rmtree(root, ignore_errors=True)  # ours: an unfinished earlier build (no READY)
            os.replace(work / "root", root)
        return root


def _populate(apt: _Apt, python: str, tvm_version: str, work: Path) -> None:
    debs, wheels, root = work / "debs", work / "wheels", work / "root"
    for d in (debs, wheels, root):
        d.mkdir()
    apt.download(apt.closure([python, "libstdc++6"]), debs)
    for deb in sorted(debs.glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(root)], f"unpacking {deb.name}")
    version = python.removeprefix("python").replace(".", "")
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--platform", WHEEL_PLATFORM,
          "--python-version", version, "--implementation", "cp", "-d", str(wheels), f"apache-tvm=={tvm_version}",
          f"apache-tvm-ffi=={importlib.metadata.version('apache-tvm-ffi')}", "numpy"],
         "pip download (aarch64 wheels of TVM and numpy)")
    site = root / "usr" / "lib" / "python3" / "dist-packages"
    site.mkdir(parents=True, exist_ok=True)
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as z:
            z.extractall(site)
    interpreter = root / "usr" / "bin" / python
    _run([qemu(), "-L", str(root), str(interpreter), "-c", "import numpy, tvm.rpc"],
         "importing TVM in the emulated Python")
    atomic_write_text(root / "READY", json.dumps({"python": python, "tvm": tvm_version}) + "\n")


def interpreter(root: Path) -> Path:
    """The root's Python: the one this tool installed, else the first python3.X in usr/bin."""
    if (root / "READY").exists():
        return root / "usr" / "bin" / json.loads((root / "READY").read_text())["python"]
    found = sorted((root / "usr" / "bin").glob("python3.[0-9]*"))
    if not found:
        raise EmulatorError(f"{root} has no usr/bin/python3.X")
    return found[0]


def _state_path(cache: Path, port: int) -> Path:
    return cache / f"emulator-{port}.json"


def serving(port: int, key: str) -> bool:
    """Whether the tracker on 127.0.0.1:port has a server registered under `key`."""
    from tvm import rpc

    if _port_free(port):
        return False  # nothing listens there (connect_tracker would retry for a minute)
    try:
        servers = rpc.connect_tracker("127.0.0.1", port).summary()["server_info"]
    except Exception:  # noqa: BLE001  (no tracker there, or not a tracker)
        return False
    return any(s["key"] == f"server:{key}" for s in servers)


def up(port: int, key: str, cache: Path, root: Path | None = None) -> dict[str, Any]:
    """Start the tracker and the emulated server (unless they already serve), and wait until the
    server has registered. Returns the state written beside the cache."""
    state_path = _state_path(cache, port)
    if state_path.exists() and serving(port, key):
        return json.loads(state_path.read_text())
    emulator = qemu()
    down(port, cache)  # a stale state from a crashed or rebooted run
    for taken in (port, port + 10):
        if not _port_free(taken):
            raise EmulatorError(f"port {taken} on 127.0.0.1 is in use by something this tool (with this --cache) "
                                "did not start; stop it or give another --port")
    root = root or sysroot(cache)
    logs = cache / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    tracker = _spawn([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port),
                      "--port-end", str(port + 1), "--silent"], logs / f"tracker-{port}.log")
    server = _spawn([emulator, "-L", str(root), str(interpreter(root)), str(SERVER), "--tracker", f"127.0.0.1:{port}",
                     "--key", key, "--port", str(port + 10)], logs / f"server-{port}.log")
    state = {"tracker": f"127.0.0.1:{port}", "key": key, "pids": [tracker.pid, server.pid], "sysroot": str(root)}
    atomic_write_text(state_path, json.dumps(state) + "\n")
    deadline = time.monotonic() + START_TIMEOUT_S
    while not serving(port, key):
        for proc, log in ((tracker, f"tracker-{port}.log"), (server, f"server-{port}.log")):
            if proc.poll() is not None:
                down(port, cache)
                raise EmulatorError(f"the emulated board did not start ({log}: {_first_error(logs / log)})")
        if time.monotonic() > deadline:
            down(port, cache)
            raise EmulatorError(f"the emulated server did not register with the tracker in {START_TIMEOUT_S} s "
                                f"(see {logs})")
        time.sleep(1)
    return state


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _first_error(log: Path) -> str:
    """The first exception line of a log (the cause, not the teardown noise after it)."""
    lines = log.read_text(errors="replace").strip().splitlines()
    errors = [ln.strip() for ln in lines if re.match(r"\s*\w+(Error|Exception): ", ln)]
    return (errors or lines[-3:] or ["no output"])[0]


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # its own process group: down() stops its children too


def down(port: int, cache: Path) -> bool:
    """Stop the emulator on `port` if this tool started it; True if there was one."""
    state_path = _state_path(cache, port)
    if not state_path.exists():
        return False
    ours = []
    for pid in json.loads(state_path.read_text()).get("pids", []):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # gone already
        if b"rpc_tracker" in cmdline or SERVER.name.encode() in cmdline:  # never a recycled pid's process
            try:
                os.killpg(pid, signal.SIGTERM)
                ours.append(pid)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in ours) and time.monotonic() < deadline:
        time.sleep(0.2)  # until the ports are free for the next `up`
    for pid in ours:
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
    state_path.unlink(missing_ok=True)
    return True


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
    except ChildProcessError:
        pass
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[-1][:3]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=("up", "down", "sysroot"))
    p.add_argument("--port", type=int, default=9190, help="the tracker's port on 127.0.0.1 (default 9190)")
    p.add_argument("--key", default="latprune-emu", help="the device key to register (default latprune-emu)")
    p.add_argument("--cache", type=Path, default=default_cache(), help=f"sysroot and state (default {default_cache()})")
    p.add_argument("--sysroot", type=Path, help="an aarch64 root with python3, numpy and TVM to use as is")
    args = p.parse_args()
    try:
        if args.command == "sysroot":
            print(sysroot(args.cache))
        elif args.command == "up":
            state = up(args.port, args.key, args.cache, args.sysroot)
            print(f"emulated aarch64 board serving: --rpc-tracker {state['tracker']} --rpc-key {state['key']}")
        else:
            print("stopped" if down(args.port, args.cache) else f"no emulator of this tool on port {args.port}")
    except EmulatorError as exc:
        print(f"arm_emulator: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
