import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

TINY_MODEL = f"{Path(__file__).parent / 'cli_models.py'}:tiny"  # absolute: tests may run in a scratch folder
TINY_SHAPE = "1,3,16,16"


@pytest.fixture(scope="session")
def tiny_table(tmp_path_factory) -> Path:
    """A coarse onnxruntime-cpu table for cli_models.tiny, profiled once per test session."""
    from compiler.cli import main

    path = tmp_path_factory.mktemp("tiny_table") / "tiny.json"
    assert main(["profile", TINY_MODEL, "--input-shape", TINY_SHAPE, "--out", str(path), "--grid-points", "2",
                 "--variants", "2", "--quiet"]) == 0
    return path
