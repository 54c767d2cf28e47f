"""The CLI against malformed arguments, files and data, as a fuzzer would drive it: every case
must end with exit 2 or 3, one `latprune: error:` line and no traceback, having changed no file
outside OUT and the cache. Runs in-process (compiler.cli.main) so that many cases stay cheap."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import compiler
from compiler.cli import main
from helpers import TINY_MODEL as TINY
from helpers import TINY_SHAPE as SHAPE

pytestmark = pytest.mark.slow  # CLI subprocesses and end-to-end builds: the quick tier leaves them out

MODELS = Path(TINY.rpartition(":")[0])


@pytest.fixture
def table(tiny_table: Path) -> Path:
    return tiny_table


def npz(path: Path, n: int = 64, labels: np.ndarray | None = None, **extra: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, n) if labels is None else labels
    arrays = {"x": rng.standard_normal((n, 3, 16, 16)).astype(np.float32), "y": y, **extra}
    np.savez(path, **arrays)
    return path


def rewritten_table(src: Path, dst: Path, edit: Callable[[dict], None]) -> Path:
    """A table edited and re-checksummed: what a hand edit that also fixes the checksum looks like."""
    from latency_tables.table import _digest

    d = json.loads(src.read_text())
    edit(d)
    d["sha256"] = _digest(d)
    dst.write_text(json.dumps(d))
    return dst


def snapshot(root: Path, skip: tuple[Path, ...]) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if any(p == s or s in p.parents or (s != root and p.name.startswith(f".{s.name}.")) for s in skip):
            continue
        out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def compile_args(data: Path, table: Path, out: Path, *extra: str) -> list[str]:
    return ["compile", TINY, "--input-shape", SHAPE, "--data", str(data), "--table", str(table), "--out", str(out),
            "--evaluations", "2", "--quiet", *extra]


def cases(d: Path, table: Path) -> dict[str, tuple[list[str], int, str]]:
    """name -> (argv, expected exit code, a phrase the error must contain)."""
    good = npz(d / "good.npz")
    out = d / "build"
    (d / "afile").write_text("not a folder")
    (d / "foreign").mkdir()
    (d / "foreign" / "CMakeCache.txt").write_text("keep me")
    (d / "x.npy").write_bytes(b"\x93NUMPY")
    (d / "notes.txt").write_text("hello")
    (d / "binary.json").write_bytes(b"\xff\xfe\x00garbage")
    (d / "empty_dir").mkdir()
    (d / "garbage.pt2").write_bytes(b"PK\x03\x04 not really")
    model_file = d / "m.latprune"
    compiler.save(compiler.prune(__import__("cli_models").tiny(), torch.randn(1, 3, 16, 16), None), model_file)
    step0 = rewritten_table(table, d / "step0.json", lambda t: t.update(step=0))
    empty = rewritten_table(table, d / "empty.json", lambda t: t.update(entries={}))
    nan_coef = rewritten_table(table, d / "nan.json", lambda t: [m.setdefault("correction", {}).update(
        coef=[1.0, 0.0, 1e999]) for m in t["models"].values()])
    foreign = rewritten_table(table, d / "foreign_fp.json", lambda t: t["fingerprint"].update(threads=7))
    c = {
        "npz x/y lengths differ": (compile_args(npz(d / "len.npz", labels=np.zeros(10, int)), table, out), 2, "items"),
        "data is a .npy": (compile_args(d / "x.npy", table, out), 2, ".npy file"),
        "data is a .txt": (compile_args(d / "notes.txt", table, out), 2, ".txt file"),
        "data folder empty": (compile_args(d / "empty_dir", table, out), 2, "ImageFolder"),
        "data missing": (compile_args(d / "nope.npz", table, out), 2, "no such file"),
        "labels out of range": (compile_args(npz(d / "hi.npz", labels=np.full(64, 10)), table, out), 2, "outside [0, 10)"),
        "negative labels": (compile_args(npz(d / "neg.npz", labels=-np.ones(64, int)), table, out), 2, "outside [0, 10)"),
        "float labels": (compile_args(npz(d / "fl.npz", labels=np.zeros(64)), table, out), 2, "integer class labels"),
        "NaN inputs": (compile_args(npz(d / "nan.npz", x_val=np.full((8, 3, 16, 16), np.nan, np.float32),
                                        y_val=np.zeros(8, int)), table, out), 2, "NaN"),
        "wrong input shape": (compile_args(npz(d / "shape.npz", x_val=np.zeros((8, 1, 16, 16), np.float32),
                                               y_val=np.zeros(8, int)), table, out), 2, "shape"),
        "data fn returns a list": (compile_args(good, table, out)[:5] + ["data_fns:not_a_pair"]
                                   + compile_args(good, table, out)[6:], 2, "must return"),
        "data fn missing": (compile_args(good, table, out)[:5] + ["data_fns:nothing"]
                            + compile_args(good, table, out)[6:], 2, "data_fns"),
        "eval factory returns a string": (compile_args(good, table, out, "--eval", "data_fns:a_string"), 2,
                                          "returned a str"),
        "eval_fn returns a string": (compile_args(good, table, out, "--eval", "data_fns:scores_a_string"), 2,
                                     "eval_fn returned a str"),
        "eval module missing": (compile_args(good, table, out, "--eval", "no_such_mod:f"), 2, "--eval"),
        "out parent is a file": (compile_args(good, table, d / "afile" / "sub"), 2, "afile"),
        "out is a file": (compile_args(good, table, d / "afile"), 2, "not a folder"),
        "out is the working folder": (compile_args(good, table, Path(".")), 2, "current folder"),
        "out holds foreign files": (compile_args(good, table, d / "foreign"), 2, "did not write"),
        "cache dir is a file": (compile_args(good, table, out, "--cache-dir", str(d / "afile")), 2, "not a folder"),
        "table not UTF-8": (compile_args(good, d / "binary.json", out), 2, "not UTF-8"),
        "table is a model file": (["inspect", str(model_file)], 2, "not a latency table"),
        "table step 0, checksum redone": (compile_args(good, step0, out), 2, "malformed"),
        "table without entries, checksum redone": (compile_args(good, empty, out), 2, "no block entries"),
        "table with infinite correction": (compile_args(good, nan_coef, out), 2, "malformed"),
        "table of another target": (compile_args(good, foreign, out), 2, "threads: table has 7"),
        "table missing": (compile_args(good, d / "none.json", out), 2, "cannot read"),
        "two tables, one target": (compile_args(good, table, out, "--table", str(table)), 2, "2 latency tables"),
        "inspect a folder": (["inspect", str(d)], 2, "cannot"),
        "inspect missing": (["inspect", str(d / "missing.json")], 2, "cannot read"),
        "show a table": (["show", str(table)], 2, "not a readable latprune model"),
        "show missing": (["show", str(d / "missing.latprune")], 2, "no such file"),
        "slimming without sparsity training": (compile_args(good, table, out, "--importance", "slimming"), 2,
                                               "sparsity-train"),
        "budget is words": (compile_args(good, table, out, "--budget", "fast"), 2, "cannot read latency budget"),
        "budget negative": (compile_args(good, table, out, "--budget=-1ms"), 2, "budget"),
        "budget under the floor": (compile_args(good, table, out, "--budget", "0.00001ms"), 3, "below the smallest"),
        "memory limit garbage": (compile_args(good, table, out, "--memory-limit", "lots"), 2, "memory size"),
        "memory limit too small": (compile_args(good, table, out, "--memory-limit", "1K"), 2, "over the limit"),
        "profile a huge input": (["profile", TINY, "--input-shape", "1,3,10000,10000", "--out", str(d / "t.json"),
                                  "--quiet"], 2, "needs about"),
        "rpc for onnxruntime": (compile_args(good, table, out, "--rpc", "127.0.0.1:9"), 2, "only apply to TVM"),
        "rpc timeout for onnxruntime": (compile_args(good, table, out, "--rpc-timeout", "5"), 2, "only apply to TVM"),
        "aarch64 with no device": (compile_args(good, table, out, "--target", "tvm-aarch64", "--table", str(table)),
                                   2, "ARM device"),
        "model module missing": (compile_args(good, table, out)[:1] + ["no_such_mod:f"] + compile_args(good, table, out)[2:],
                                 2, "cannot import"),
        "model untraceable": (compile_args(good, table, out)[:1] + [f"{MODELS}:untraceable"]
                              + compile_args(good, table, out)[2:], 2, "cannot trace"),
        "model is not a module": (compile_args(good, table, out)[:1] + [f"{MODELS}:not_a_model"]
                                  + compile_args(good, table, out)[2:], 2, "not a torch.nn.Module"),
        "pt2 is garbage": (compile_args(good, table, out)[:1] + [str(d / "garbage.pt2")] + compile_args(good, table, out)[2:],
                           2, "not a torch.export archive"),
        "input shape text": (["profile", TINY, "--input-shape", "1,3,a,16", "--out", str(d / "t.json")], 2,
                             "comma-separated"),
    }
    return c


def run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    return code, capsys.readouterr().err


def test_malformed_inputs_get_one_clear_line_and_change_nothing(table, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    all_cases = cases(tmp_path, table)
    failures = []
    for name, (argv, want, phrase) in all_cases.items():
        out = Path(argv[argv.index("--out") + 1]).resolve() if "--out" in argv else tmp_path / "none"
        skip = (out, out.with_name(".latprune-cache"), tmp_path / "t.json")
        before = snapshot(tmp_path, skip)
        code, err = run(argv, capsys)
        after = snapshot(tmp_path, skip)
        lines = [ln for ln in err.splitlines() if ln.startswith("latprune: error:")]
        if code != want or "Traceback" in err or len(lines) != 1 or phrase not in lines[0] or before != after:
            failures.append(f"{name}: exit {code} (want {want}), changed {set(before) ^ set(after) or '-'}, "
                            f"stderr {err.strip()[-300:]!r}")
    print(f"{len(all_cases)} malformed invocations, {len(all_cases) - len(failures)} clear exits")
    assert not failures, "\n".join(failures)
    assert (tmp_path / "foreign" / "CMakeCache.txt").read_text() == "keep me"


NUMERIC = ["--threads", "--trials", "--batch-size", "--adabn-batches", "--eval-images", "--finetune-epochs",
           "--evaluations", "--tolerance", "--sparsity-train", "--sparsity", "--steps", "--step-epochs",
           "--rpc-timeout"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flag=st.sampled_from(NUMERIC),
       value=st.one_of(st.integers(max_value=-1).map(str), st.sampled_from(["nan", "inf", "-inf", "", "1e", "x", "-0.5"]),
                       st.text(min_size=1, max_size=6).filter(lambda s: not s.strip().lstrip("+").isdigit())))
def test_bad_numbers_are_usage_errors(flag, value, capsys) -> None:
    code, err = run(["compile", TINY, "--input-shape", SHAPE, "--data", "x.npz", flag + "=" + value], capsys)
    assert code == 2 and "Traceback" not in err and f"argument {flag}" in err, (flag, value, err)


def test_an_unknown_importance_is_a_usage_error(capsys) -> None:
    code, err = run(["compile", TINY, "--input-shape", SHAPE, "--data", "x.npz", "--importance", "magic"], capsys)
    assert code == 2 and "Traceback" not in err and "argument --importance: invalid choice" in err, err


@pytest.mark.parametrize("value", ["4", "24,x", "", "24,,20"])
def test_bad_resolutions_are_usage_errors(value, capsys) -> None:
    code, err = run(["compile", TINY, "--input-shape", SHAPE, "--data", "x.npz", "--resolutions=" + value], capsys)
    assert code == 2 and "Traceback" not in err and "argument --resolutions" in err, err
