"""Search workers: local processes and a local Ray instance find exactly what one process finds
(same candidates, same scores, same pick); what cannot be sent to a worker is a clear error;
Ctrl-C stops the workers and keeps the scores they finished."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import torch

import compiler
import latency_tables
import targets
from cli_models import tiny
from compiler.core.memory import check_fits
from helpers import R20_X, ROOT, default_sigint, kept_l1, r20, search_r20


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Workers score with one torch thread; so does the in-process reference, so that kernels
    sum in the same order and scores can be compared exactly."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def found(res: compiler.SearchResult) -> list[tuple]:
    return [(c.widths, c.score, c.origin, c.latency_ms) for c in res.archive]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["evolution", "random"])
def test_two_worker_processes_find_exactly_what_one_process_finds(strategy: str) -> None:
    one, two = search_r20(strategy=strategy), search_r20(strategy=strategy, workers=2)
    assert found(two) == found(one) and len(one.archive) == 24
    assert two.best.widths == one.best.widths and two.best.score == one.best.score
    assert one.stats["workers"] == 1 and two.stats["workers"] == 2 and two.stats["candidates_per_minute"] > 0


@pytest.mark.slow
def test_a_compile_with_workers_builds_the_same_model(tiny_table, tmp_path: Path) -> None:
    """Through the whole build: the same Widths and the same report of the search, and the
    build cache is shared (workers are not part of the build's key)."""
    table = latency_tables.load(tiny_table)
    x = torch.randn(1, 3, 16, 16)
    calib = [torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    budget = table.predictor(tiny(), x)(None) * 0.9
    runs = {}
    tgt = targets.get("onnxruntime-cpu", threads=1)
    try:
        for n in (1, 2):
            torch.manual_seed(0)  # the same model both times
            runs[n] = compiler.compile(tiny(), x, tgt, budget=f"{budget:.4f}ms", calib_data=calib, eval_fn=kept_l1,
                                       table=str(tiny_table), out_dir=tmp_path / f"out{n}", max_evaluations=12,
                                       workers=n, verify_engines=False, progress=False).report
    finally:
        tgt.close()
    one, two = (runs[n]["targets"]["onnxruntime-cpu"] for n in (1, 2))
    assert two["widths"] == one["widths"] and runs[2]["build_key"] == runs[1]["build_key"]
    assert two["search"]["archive"] == one["search"]["archive"] and two["search"]["stats"]["workers"] == 2


def test_generations_change_the_search_but_not_its_determinism() -> None:
    """generation=1 breeds every child from all scores before it; a larger generation breeds a
    whole generation from the archive as it stood, so the two explore differently."""
    steady, generational = search_r20(generation=1), search_r20(generation=8)
    assert found(search_r20(generation=8)) == found(generational)
    seeds = [c for c in steady.archive if c.origin in ("uniform", "random")]
    assert found(steady)[:len(seeds)] == found(generational)[:len(seeds)]  # the same seed population
    assert found(steady) != found(generational)
    with pytest.raises(compiler.BadInputError, match="generation"):
        search_r20(generation=0)


@pytest.mark.slow
def test_a_local_ray_instance_finds_exactly_what_one_process_finds() -> None:
    one, on_ray = search_r20(max_evaluations=16), search_r20(max_evaluations=16, ray="local", workers=2)
    assert found(on_ray) == found(one) and on_ray.stats["workers"] == 2


def test_an_eval_fn_that_cannot_reach_a_worker_is_a_clear_error() -> None:
    with pytest.raises(compiler.BadInputError, match="module-level function.*workers=1"):
        search_r20(lambda m: 1.0, workers=2)


def test_an_unreachable_ray_cluster_is_a_clear_error() -> None:
    with pytest.raises(compiler.BadInputError, match="cannot reach the Ray cluster"):
        search_r20(ray="127.0.0.1:1", max_evaluations=2)


SCRIPT = """
import sys
sys.path[:0] = [{tests!r}, {root!r}]
import torch
from helpers import search_r20, slow_kept_l1

if __name__ == "__main__":
    torch.set_num_threads(1)
    search_r20(slow_kept_l1, max_evaluations=400, workers=2, cache={cache!r}, cache_key="k")
"""


@pytest.mark.slow
def test_ctrl_c_stops_the_workers_and_keeps_their_finished_scores(tmp_path: Path) -> None:
    cache = tmp_path / "scores.json"
    script = tmp_path / "search.py"
    script.write_text(textwrap.dedent(SCRIPT.format(tests=str(ROOT / "tests"), root=str(ROOT), cache=str(cache))))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)
    deadline = time.time() + 180
    while time.time() < deadline and not (cache.exists() and len(json.loads(cache.read_text())["scores"]) >= 8):
        time.sleep(0.2)
    workers = [p for p in psutil.Process(proc.pid).children(recursive=True) if "resource_tracker" not in " ".join(p.cmdline())]
    assert len(workers) >= 2, "the search did not start its workers"
    seen = len(json.loads(cache.read_text())["scores"])
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err, err[-2000:]
    kept = json.loads(cache.read_text())["scores"]
    assert len(kept) >= seen and all(isinstance(v, float) for v in kept.values())
    _, alive = psutil.wait_procs(workers, timeout=15)
    assert not alive, f"workers still running after Ctrl-C: {alive}"


def test_the_memory_check_counts_every_worker() -> None:
    gm = compiler.lower(r20(), R20_X)
    alone = check_fits(gm, None, train_batch=64)
    assert check_fits(gm, None, train_batch=64, workers=8) > alone
    with pytest.raises(compiler.BadInputError, match="8 search workers.*fewer --workers"):
        check_fits(gm, alone + 1, train_batch=64, workers=8)


def test_the_memory_check_counts_a_pruningnet_generator() -> None:
    """(hidden + 1) generator values per model weight, with gradients and Adam's moments:
    refused with its cause named before any training starts."""
    gm = compiler.lower(r20(), R20_X)
    alone = check_fits(gm, None, train_batch=64)
    weights = sum(t.numel() * t.element_size() for t in gm.state_dict().values())
    assert check_fits(gm, None, train_batch=64, generator_width=32) >= max(alone, 4 * 33 * weights)
    with pytest.raises(compiler.BadInputError, match="PruningNet.*--weights sliced"):
        check_fits(gm, alone + 1, train_batch=64, generator_width=32)
