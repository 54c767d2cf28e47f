"""Fixtures shared by the tests, and the markers' skip rules.

Markers (registered in pyproject.toml): `slow` (over ~10 s here: end-to-end builds, profiling,
CLI subprocesses; the quick tier `pytest -m "not slow and not tvm"` leaves them out), `tvm`,
`gpu`, `tensorrt`, `arm_emulator` (need those installed or present). A test whose requirement is missing is
skipped with the reason, which `-ra` prints: nothing skips silently."""
import importlib.util
import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from compiler.cli import main  # noqa: E402
from helpers import TINY_MODEL, TINY_SHAPE  # noqa: E402

MISSING = {
    "tvm": None if importlib.util.find_spec("tvm") else
    "TVM is part of the test extras; install with pip install -e '.[test]'",
    "gpu": None if torch.cuda.is_available() else "no CUDA GPU on this machine: GPU tests run on a lent GPU machine",
    "tensorrt": None if importlib.util.find_spec("tensorrt") else
    "TensorRT is not installed (optional extra 'tensorrt')",
    "arm_emulator": None if (shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")) and
    shutil.which("apt-get") else "needs qemu-user and apt-get (tools/setup.sh installs qemu-user-static on Debian/Ubuntu)",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for marker, reason in MISSING.items():
            if reason and marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def tiny_table(tmp_path_factory) -> Path:
    """A coarse onnxruntime-cpu table for cli_models.tiny, profiled once per test session."""
    path = tmp_path_factory.mktemp("tiny_table") / "tiny.json"
    assert main(["profile", TINY_MODEL, "--input-shape", TINY_SHAPE, "--out", str(path), "--grid-points", "2",
                 "--variants", "2", "--off-step-variants", "0", "--quiet"]) == 0
    return path
