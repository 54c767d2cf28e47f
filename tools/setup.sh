#!/usr/bin/env bash
# Create .venv with latprune and its test dependencies (TVM included), and the ARM cross
# compiler that the tvm-aarch64 target links with, and Fashion-MNIST (Debian package).
# Idempotent; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if { ! command -v aarch64-linux-gnu-gcc >/dev/null || [ ! -d /usr/share/datasets/fashion-mnist ]; } && command -v apt-get >/dev/null; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq gcc-aarch64-linux-gnu dataset-fashion-mnist >/dev/null
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch 2.14.1 + torchvision 0.29.1 are the newest pair these machines' pip offers (see design.md);
# onnxruntime 1.31.1 is the version the shipped latency tables were measured with (a table is
# refused for another version: its kernels may differ).
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1 onnxruntime==1.31.1
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
