#!/usr/bin/env bash
# Create .venv with latprune and its test dependencies (TVM included), the ARM cross compiler
# that the tvm-aarch64 target links with, qemu-user (tools/arm_emulator.py runs the aarch64
# engine under it) and Fashion-MNIST (Debian package).
# Idempotent and quick to re-run: apt waits for another package manager's lock instead of
# failing, and the pip installs are skipped while pyproject.toml, this script and the Python
# that made .venv are unchanged (a stamp in .venv records them).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
APT=(-o DPkg::Lock::Timeout=600 -qq)
apt_retry() {  # apt-get update takes the lists lock, which DPkg::Lock::Timeout does not cover everywhere
  local i
  for i in $(seq 1 60); do
    "$@" && return 0
    echo "setup: apt is busy (another package manager holds its lock?); retrying in 10 s ($i/60)" >&2
    sleep 10
  done
  return 1
}
if { ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64-static >/dev/null ||
     [ ! -d /usr/share/datasets/fashion-mnist ]; } && command -v apt-get >/dev/null; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  apt_retry $SUDO apt-get "${APT[@]}" update
  apt_retry $SUDO apt-get "${APT[@]}" install -y gcc-aarch64-linux-gnu qemu-user-static dataset-fashion-mnist >/dev/null
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=$(cat pyproject.toml tools/setup.sh | sha256sum | cut -c1-16)-$(.venv/bin/python -c 'import sys; print(sys.version.split()[0])')
if [ "$(cat .venv/.latprune-setup 2>/dev/null)" = "$stamp" ] && .venv/bin/python -c 'import importlib.util as u, sys
sys.exit(not all(u.find_spec(m) for m in ("torch", "torchvision", "onnxruntime", "tvm", "pytest", "compiler")))'; then
  exit 0
fi
# torch 2.14.1 + torchvision 0.29.1 are the newest pair these machines' pip offers (see README);
# onnxruntime 1.31.1 is the version the shipped latency tables were measured with (a table is
# refused for another version: its kernels may differ).
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1 onnxruntime==1.31.1
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
echo "$stamp" > .venv/.latprune-setup
