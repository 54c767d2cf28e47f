"""`latprune compile` end to end through the CLI, as a build step: a trained reference model on
real Fashion-MNIST images (a .npz subset), the shipped ORT table, engines emitted and verified,
the report, the cache, the depfile, every exit code from a real bad input, and SIGINT."""
from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import compiler
import latency_tables
from compiler.data import split_train
from compiler.models import reference
from helpers import MODEL, SHAPE, SHIPPED, latprune, latprune_async

pytestmark = pytest.mark.slow  # CLI subprocesses and end-to-end builds: the quick tier leaves them out


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> Path:
    """1,200 real Fashion-MNIST training images (x, y) and 400 held-out ones (x_val, y_val)."""
    (xt, yt), (xv, yv) = split_train()
    path = tmp_path_factory.mktemp("data") / "fmnist.npz"
    np.savez(path, x=xt[:1200].numpy(), y=yt[:1200].numpy(), x_val=xv[:400].numpy(), y_val=yv[:400].numpy())
    return path


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    """The shipped table where this machine is the device it was measured on (same CPU, ORT
    version, threads); elsewhere (another CI host, a newer ORT) a coarse table profiled here."""
    import targets

    shipped = latency_tables.load(SHIPPED)
    if shipped.fingerprint == targets.get("onnxruntime-cpu", threads=1).fingerprint():
        return SHIPPED
    path = tmp_path_factory.mktemp("table") / "t.json"
    r = latprune("profile", MODEL, "--input-shape", SHAPE, "--out", str(path), "--grid-points", "3",
                 "--variants", "4", "--off-step-variants", "0", "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    return path


def tolerance(table: Path) -> str:
    """How far the measured engine may exceed its budget in these tests. With the shipped table
    (this is the device it was measured on): the product's default 3%. With a coarse table
    profiled in the fixture on another host, a prediction can be far off: 20-30% low on an
    Intel Xeon, about 2x low for a pruned variant on one CI host (measured 0.21 ms against a
    0.10 ms budget). These tests check the build's plumbing, not the table's fidelity, which
    tools/bench_latency_model.py measures. For the same reason the safety margin is the default
    (the table's stated error) only with the shipped table: a coarse one states 20-30%, which
    would confine the search to models too small for the accuracy checks below (the margin itself is tested in test_search and test_pipeline)."""
    return "0.03" if table == SHIPPED else "3.0"


def margin(table: Path) -> str:
    return "auto" if table == SHIPPED else "0"


def compile_args(npz: Path, table: Path, out: Path, *extra: str) -> list[str]:
    return ["compile", MODEL, "--input-shape", SHAPE, "--data", str(npz), "--table", str(table), "--out", str(out),
            "--evaluations", "6", "--tolerance", tolerance(table), "--safety-margin", margin(table), "--quiet", *extra]


def test_compile_emits_verified_engines_and_a_report(npz, table, tmp_path) -> None:
    out = tmp_path / "build"
    dep = tmp_path / "build.d"
    r = latprune(*compile_args(npz, table, out, "--budget", "0.6x", "--json", "--depfile", str(dep),
                               "--finetune-epochs", "0.2"))
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(r.stdout)  # --json: the report on stdout, progress on stderr
    assert rep == json.loads((out / "report.json").read_text())
    t = rep["targets"]["onnxruntime-cpu"]
    v = t["verify"]
    assert v["within_budget"] and v["outputs_match"]
    # a budget relative to the unpruned model is judged against its engine, timed beside ours
    assert v["budget_share"] == 0.6 and v["measured_share"] <= 0.6 * (1 + float(tolerance(table)))
    assert v["measured_share"] == pytest.approx(v["measured_ms"] / v["unpruned_measured_ms"])
    assert v["engine"] == v["unpruned_engine"] == "onnxruntime-cpu"
    assert t["predicted_ms"] <= t["budget_ms"] == pytest.approx(0.6 * t["full_ms"])
    assert t["params"]["pruned"] < t["params"]["original"] and t["macs"]["pruned"] < t["macs"]["original"]
    acc = t["accuracy"]
    assert acc["original"] > 0.8 and acc["adabn"] > 0.3 and acc["finetuned"] is not None, (t["search"]["archive"], t["uniform"], t["budget_ms"], t["floor_ms"], t["full_ms"], acc)
    assert {f"onnxruntime-cpu/{p}" for p in rep["passes"]} | {"lower", "evaluate_original", "sparsity", "total"} == set(rep["seconds"])
    assert (out / "report.html").read_text().count("data:image/png;base64") == 2
    # the emitted artifacts: a reloadable pruned model, ONNX, and the ORT-optimised engine
    files = t["files"]
    pruned = compiler.load(files["pytorch"])
    x = torch.from_numpy(np.load(npz)["x_val"][:1])  # the engine is built for batch 1
    sess = ort.InferenceSession(files["onnx"], providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, pruned(x).detach().numpy(), rtol=1e-3, atol=1e-4)
    assert Path(files["engine"]).name == "model.ort.onnx"
    # a Make/Ninja depfile naming the report and what it was built from
    deps = dep.read_text()
    assert deps.startswith(f"{(out / 'report.json').as_posix()}: ") and str(npz) in deps and "models.py" in deps
    # same inputs and seed: the rebuild is served from the build key, and says so
    t0 = time.perf_counter()
    again = latprune(*compile_args(npz, table, out, "--budget", "0.6x", "--json", "--finetune-epochs", "0.2"))
    assert again.returncode == 0 and json.loads(again.stdout)["cached"] is True
    assert json.loads(again.stdout)["targets"]["onnxruntime-cpu"]["widths"] == t["widths"]
    assert time.perf_counter() - t0 < 60
    # an edited table is a changed input: rebuilt, not served from the cache
    edited = _foreign_table(table, tmp_path, 1.001)
    r3 = latprune(*compile_args(npz, edited, out, "--budget", "0.6x", "--json", "--finetune-epochs", "0.2",
                                "--no-verify"))
    assert r3.returncode == 0 and not json.loads(r3.stdout).get("cached"), r3.stderr[-2000:]


def test_compile_is_deterministic_for_a_seed(npz, table, tmp_path) -> None:
    """Same inputs and seed, separate caches: the same search and the same widths. The confirm
    pass and verification measure the device, so they are off here (README, Determinism)."""
    reps = []
    for name in ("a", "b"):
        r = latprune(*compile_args(npz, table, tmp_path / name, "--budget", "0.7x", "--json", "--confirm", "0",
                                   "--no-verify", "--cache-dir", str(tmp_path / f"cache-{name}")))
        assert r.returncode == 0, r.stderr[-2000:]
        reps.append(json.loads(r.stdout)["targets"]["onnxruntime-cpu"])
    assert reps[0]["widths"] == reps[1]["widths"]
    assert reps[0]["search"]["archive"] == reps[1]["search"]["archive"]


def _foreign_table(table: Path, tmp_path: Path, scale: float, **fingerprint: object) -> Path:
    """The table as if measured on another device: latencies scaled, fingerprint changed. The
    empty-run overhead and the corrections' terms in ms (per weight MB, offset) scale with them,
    so every prediction scales by `scale`: a negative offset left as it was once made the
    unpruned model's prediction negative (the test then passed a budget of '-0.01ms')."""
    t = latency_tables.load(table)
    t.fingerprint.update(fingerprint)
    t.overhead_ms *= scale
    for e in t.entries.values():
        e.points = {k: [v[0] * scale, v[1] * scale, v[2] * scale, v[3]] for k, v in e.points.items()}
    for m in t.models.values():
        if m.get("correction"):
            c = m["correction"]["coef"]
            m["correction"]["coef"] = [c[0], c[1] * scale, c[2] * scale]
    path = tmp_path / "foreign.json"
    t.save(path)
    return path


@pytest.mark.parametrize("case", ["untraceable", "corrupt_table", "foreign_table", "nan_data", "wrong_shape",
                                  "infeasible", "over_budget", "two_tables"])
def test_exit_codes_from_real_bad_inputs(case, npz, table, tmp_path) -> None:
    out = tmp_path / "out"
    args = compile_args(npz, table, out)
    if case == "untraceable":
        args[1] = "tests/cli_models.py:untraceable"
    elif case == "corrupt_table":
        bad = tmp_path / "t.json"
        bad.write_text(table.read_text()[:5000])
        args[args.index("--table") + 1] = str(bad)
    elif case == "foreign_table":
        args[args.index("--table") + 1] = str(_foreign_table(table, tmp_path, 1.0, device="Cortex-A72"))
    elif case in ("nan_data", "wrong_shape"):
        z = dict(np.load(npz))
        if case == "nan_data":
            z["x"][3, 0, 5, 5] = np.nan
        else:
            z["x"] = np.repeat(z["x"], 3, axis=1)
        bad = tmp_path / "bad.npz"
        np.savez(bad, **z)
        args[args.index("--data") + 1] = str(bad)
    elif case == "infeasible":
        args += ["--budget", "0.05x"]
    elif case == "two_tables":  # one target, two tables
        args += ["--table", str(table)]
    elif case == "over_budget":  # a faster device's table, forced onto this one: the engine misses it
        # A budget in ms, 0.95x of what that table predicts for the unpruned model: about 0.4x of
        # its real time here. (A relative budget is judged as a ratio to the unpruned engine
        # timed beside it, in which the table's scale cancels: with a coarse table profiled on
        # an AVX2 CI host the engine then met 0.8x.)
        foreign = _foreign_table(table, tmp_path, 0.4, device="a faster CPU")
        unpruned_ms = latency_tables.load(foreign).predict(reference(MODEL.split(":")[1]), torch.zeros(1, 1, 28, 28))
        args[args.index("--table") + 1] = str(foreign)
        args += ["--force", "--budget", f"{0.95 * unpruned_ms:.6f}ms", "--tolerance", "0.03", "--safety-margin", "0"]
    r = latprune(*args)
    want = {"infeasible": 3, "over_budget": 4}.get(case, 2)
    assert r.returncode == want, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "latprune: error:" in r.stderr
    msg = r.stderr.split("latprune: error:")[-1]
    expect = {"untraceable": "trace", "corrupt_table": "corrupt", "foreign_table": "device", "nan_data": "NaN",
              "wrong_shape": "shape", "infeasible": "smallest reachable latency", "over_budget": "over the budget", "two_tables": "one per target"}
    assert expect[case] in msg, msg
    if case == "over_budget":  # the report says why, the summary shows it, the artifacts are there to inspect
        assert json.loads((out / "report.json").read_text())["status"] == "verification_failed"
        assert "measured" in r.stdout and "pruned" in r.stdout and "report:" in r.stdout, r.stdout
    else:
        assert not out.exists()


def test_sigint_mid_search_leaves_nothing_and_the_rerun_resumes(npz, table, tmp_path) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    # what is checked is the interrupt and the resume, not the budget: a wide tolerance (the last
    # --tolerance wins) keeps a burst of host load during verification (CI once measured a
    # 0.156 ms budget's engine at 0.189 ms) from failing it
    args = compile_args(npz, table, out, "--cache-dir", str(cache), "--budget", "0.6x", "--tolerance", "0.5")
    args[args.index("--evaluations") + 1] = "40"
    proc = latprune_async(*args)
    scores = cache / "scores"
    deadline = time.time() + 240
    # interrupt as soon as the search has saved its first scores (every 4 evaluations), so the
    # signal lands mid-search: a fixed wait once raced the end of a build whose search had got
    # faster (CI: the signal came as the process exited, which then died of SIGINT, rc -2)
    while time.time() < deadline and proc.poll() is None and next(scores.glob("*.json"), None) is None:
        time.sleep(0.1)
    assert proc.poll() is None, f"the build ended (exit {proc.returncode}) before the search saved any score"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err and "Traceback" not in err
    left = {p.name for p in tmp_path.glob(".out*")} - {".out.lock"}  # the lock file stays, by design
    assert not out.exists() and not left  # no partial build, no staging left
    saved = json.loads(next(scores.glob("*.json")).read_text())["scores"]
    assert saved, "the interrupted search saved no scores"
    r = latprune(*args, "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    stats = json.loads(r.stdout)["targets"]["onnxruntime-cpu"]["search"]["stats"]
    assert stats["cache_hits"] >= 1 and stats["evaluations"] <= 40 - stats["cache_hits"]




@pytest.mark.tvm
def test_compile_on_tvm_llvm_profiles_tunes_and_verifies(npz, tmp_path) -> None:
    """Cold: no table given, so compile profiles the model on TVM into its cache first. Untuned
    (--trials 0) to keep the test short; the tuned path's database is tested in test_targets."""
    out, cache = tmp_path / "out", tmp_path / "cache"
    r = latprune("compile", "tests/cli_models.py:small_fmnist", "--input-shape", SHAPE, "--data", str(npz),
                 "--target", "tvm-llvm", "--trials", "0", "--budget", "0.8x", "--evaluations", "4",
                 "--tolerance", "0.5", "--out", str(out), "--cache-dir", str(cache), "--quiet", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    t = json.loads(r.stdout)["targets"]["tvm-llvm"]
    assert t["fingerprint"]["target"] == "tvm-llvm" and Path(t["table"]).parent == cache / "tables"
    assert latency_tables.load(t["table"]).fingerprint == t["fingerprint"]
    v = t["verify"]
    assert v["outputs_match"] and v["within_budget"] and v["measured_ms"] > 0 and t["predicted_ms"] <= t["budget_ms"]
    files = {k: Path(p) for k, p in t["files"].items()}
    assert files["engine"].read_bytes()[:4] == b"\x7fELF" and files["params"].exists()
    assert files["tuning_db"].is_dir() and files["tuning_db"].parent == out / "tvm-llvm"
    assert (cache / "tvm_tuning" / "tvm-llvm").is_dir()  # the database lives with the table, for the next build
    x = torch.from_numpy(np.load(npz)["x_val"][:1])
    assert compiler.load(files["pytorch"])(x).shape == (1, 10)


@pytest.mark.tvm
@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-gcc") is None,
                    reason="needs gcc-aarch64-linux-gnu (CI installs it with apt-get)")
def test_compile_cross_compiles_for_tvm_aarch64(npz, table, tmp_path) -> None:
    """With no ARM device attached: a table measured elsewhere (forced), --no-verify, and an
    aarch64 shared library out. Without those flags the error says what to give."""
    out = tmp_path / "out"
    base = ["compile", MODEL, "--input-shape", SHAPE, "--data", str(npz), "--target", "tvm-aarch64", "--trials", "0",
            "--out", str(out), "--evaluations", "4", "--budget", "0.7x", "--quiet"]
    no_table = latprune(*base)
    assert no_table.returncode == 2 and "--table" in no_table.stderr and "--rpc" in no_table.stderr
    no_device = latprune(*base, "--table", str(table), "--force")
    assert no_device.returncode == 2 and "--no-verify" in no_device.stderr and not out.exists()
    r = latprune(*base, "--table", str(table), "--force", "--no-verify", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(r.stdout)
    assert rep["status"] == "unverified" and "skipped" in rep["targets"]["tvm-aarch64"]["verify"]
    files = rep["targets"]["tvm-aarch64"]["files"]
    head = Path(files["engine"]).read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 183  # EM_AARCH64
    reloaded = compiler.load(files["pytorch"])
    assert Path(files["onnx"]).exists() and reloaded.meta["latprune"]["widths"] == rep["targets"]["tvm-aarch64"]["widths"]
