"""Every Python snippet in README.md runs as written: in order, in one fresh interpreter (as a
reader pastes them one after another), in an empty working folder."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # CLI subprocesses and end-to-end builds: the quick tier leaves them out

ROOT = Path(__file__).resolve().parents[1]


def snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_readme_has_the_documented_snippets() -> None:
    text = "\n".join(snippets())
    for call in ("compiler.lower(", "compiler.prune(", "tgt.measure(", "latency_tables.profile(", "compiler.search(",
                 "compiler.compile("):
        assert call in text, f"README lost its {call} example"


def test_readme_python_snippets_run_as_written(tmp_path) -> None:
    script = "\n".join(f"print('--- snippet {i}', flush=True)\n{code}" for i, code in enumerate(snippets()))
    (tmp_path / "readme_snippets.py").write_text(script)
    r = subprocess.run([sys.executable, "readme_snippets.py"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=900, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    assert r.stdout.count("--- snippet") == len(snippets())
    assert (tmp_path / "tables" / "r20.json").exists() and (tmp_path / "build" / "r20" / "report.json").exists()
