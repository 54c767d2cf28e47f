"""Loading an artifact never runs code from it: one crafted file per attack class, each with a
payload that would create a marker file; every load must refuse with a clear error and the
marker must not exist afterwards."""
from __future__ import annotations

import copy
import io
import json
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import compiler
from compiler.modelspec import load_model
from nets import NETS


def payload_code(mark: Path) -> str:
    return f"__import__('pathlib').Path({str(mark)!r}).touch()"


class Touch:
    """Unpickling this creates the marker file: what a malicious pickle does."""

    def __init__(self, mark: Path) -> None:
        self.mark = str(mark)

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (eval, (f"__import__('pathlib').Path({self.mark!r}).touch()",))


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Any]:
    """A legitimate pruned model file's payload (a residual net with a method call and a get_attr-free graph)."""
    model, x = NETS["squeeze_excite"][0]().eval(), torch.randn(1, 3, 16, 16)
    path = tmp_path_factory.mktemp("ok") / "m.latprune"
    compiler.save(compiler.prune(model, x, None), path)
    compiler.load(path)  # the untouched file loads
    return torch.load(path, weights_only=True)


def crafted(saved: dict[str, Any], tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    payload = copy.deepcopy(saved)
    arch = json.loads(payload["arch"])
    edit(arch)
    payload["arch"] = json.dumps(arch)
    path = tmp_path / "crafted.latprune"
    torch.save(payload, path)
    return path


def first(arch: dict[str, Any], op: str) -> dict[str, Any]:
    return next(n for n in arch["nodes"] if n["op"] == op)


# each edit gets the marker path; together they cover every place a name from the file reaches
ATTACKS: dict[str, Callable[[dict[str, Any], Path], None]] = {
    "call target outside torch": lambda a, m: first(a, "call_function").update(target="os.system"),
    "torch root walked to os": lambda a, m: first(a, "call_function").update(target="torch.os.system"),
    "torch root walked to pickle": lambda a, m: first(a, "call_function").update(
        target="torch.serialization.pickle.loads"),
    "torch.load itself": lambda a, m: first(a, "call_function").update(target="torch.load"),
    "bare builtin eval": lambda a, m: first(a, "call_function").update(target="eval"),
    "builtins.exec": lambda a, m: first(a, "call_function").update(target="builtins.exec"),
    "builtins.__import__": lambda a, m: first(a, "call_function").update(target="builtins.__import__"),
    "placeholder source injection": lambda a, m: first(a, "placeholder").update(target=f"x={payload_code(m)}"),
    "module path quote injection": lambda a, m: first(a, "call_module").update(
        target=f'stem"), {payload_code(m)}, getattr(self, "x'),
    "method name injection": lambda a, m: first(a, "call_method").update(target=f"mean({payload_code(m)}).mean"),
    "dunder method": lambda a, m: first(a, "call_method").update(target="__reduce_ex__"),
    "keyword name injection": lambda a, m: first(a, "call_function")["kwargs"].update(
        {f"x={payload_code(m)}, y": 1}),
    "node name injection": lambda a, m: first(a, "call_function").update(name=f"x = {payload_code(m)}; y"),
    "class name injection": lambda a, m: a.update(class_name=f"X({payload_code(m)})"),
    "module type outside torch.nn": lambda a, m: next(iter(a["modules"].values())).update(type="builtins.eval"),
    "module type walked from torch.nn": lambda a, m: next(iter(a["modules"].values())).update(
        type="torch.nn.modules.module.torch.hub.load"),
    "module argument name injection": lambda a, m: next(iter(a["modules"].values()))["kwargs"].update(
        {"__class__": 1}),
    "dtype that is a function": lambda a, m: first(a, "call_method")["kwargs"].update(dtype={"dtype": "load"}),
    "getattr of a dunder": lambda a, m: a["nodes"].insert(2, {
        "name": "cls", "op": "call_function", "target": "builtins.getattr",
        "args": [{"node": first(a, "placeholder")["name"]}, "__class__"], "kwargs": {}}),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_crafted_graph_is_refused_without_side_effects(saved, tmp_path, attack) -> None:
    mark = tmp_path / "PWNED"
    path = crafted(saved, tmp_path, lambda arch: ATTACKS[attack](arch, mark))
    with pytest.raises(compiler.ArtifactError) as err:
        compiler.load(path)
    assert not mark.exists(), f"{attack}: code from the file ran"
    msg = str(err.value)
    assert "\n" not in msg and ("not" in msg or "refus" in msg), msg  # one line that says what is wrong


def test_pickled_object_in_the_file_is_never_unpickled(saved, tmp_path) -> None:
    mark = tmp_path / "PWNED"
    payload = copy.deepcopy(saved)
    payload["attrs"] = {"evil": Touch(mark)}
    path = tmp_path / "pickle.latprune"
    torch.save(payload, path)
    with pytest.raises(compiler.ArtifactError, match="not a readable latprune model"):
        compiler.load(path)
    assert not mark.exists()


# ---- torch.export archives ---------------------------------------------------------------

def export_tiny(path: Path) -> None:
    from cli_models import tiny

    torch.export.save(torch.export.export(tiny(), (torch.randn(1, 3, 16, 16),)), path)


def rewrite_zip(src: Path, dst: Path, replace: dict[str, bytes], add: dict[str, bytes] | None = None) -> None:
    """Copy a .pt2 zip, replacing or adding records (names relative to the archive's folder)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        prefix = zin.namelist()[0].split("/")[0] + "/"
        for info in zin.infolist():
            rel = info.filename[len(prefix):]
            zout.writestr(info.filename, replace.get(rel, zin.read(info)))
        for rel, data in (add or {}).items():
            zout.writestr(prefix + rel, data)


def evil_pickle(mark: Path) -> bytes:
    buf = io.BytesIO()
    torch.save(Touch(mark), buf)
    return buf.getvalue()


def test_plain_export_archive_loads(tmp_path) -> None:
    export_tiny(tmp_path / "ok.pt2")
    model = load_model(str(tmp_path / "ok.pt2"))
    assert sum(p.numel() for p in model.parameters()) > 0


def test_pickled_sample_inputs_are_refused_though_torch_would_run_them(tmp_path) -> None:
    export_tiny(tmp_path / "ok.pt2")
    mark = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt2"
    rewrite_zip(tmp_path / "ok.pt2", evil, {"data/sample_inputs/model.pt": evil_pickle(mark)})
    with pytest.raises(compiler.BadInputError, match="sample inputs need unrestricted unpickling"):
        load_model(str(evil))
    assert not mark.exists()
    try:  # the attack is live: torch's own loader falls back to weights_only=False and runs it
        torch.export.load(evil)
    except Exception:
        pass
    assert mark.exists(), "the crafted archive no longer exercises torch's unpickling fallback"


def test_pickled_weight_is_refused(tmp_path) -> None:
    export_tiny(tmp_path / "ok.pt2")
    mark = tmp_path / "PWNED"
    with zipfile.ZipFile(tmp_path / "ok.pt2") as z:
        name = next(n for n in z.namelist() if n.endswith("model_weights_config.json"))
        config = json.loads(z.read(name))
    fqn = next(iter(config["config"]))
    config["config"][fqn]["use_pickle"] = True
    weight = config["config"][fqn]["path_name"]
    evil = tmp_path / "evil.pt2"
    rewrite_zip(tmp_path / "ok.pt2", evil, {"data/weights/model_weights_config.json": json.dumps(config).encode(),
                                           f"data/weights/{weight}": evil_pickle(mark)})
    with pytest.raises(compiler.BadInputError, match=f"weight '{fqn}' is a pickled object"):
        load_model(str(evil))
    assert not mark.exists()


def test_custom_object_constant_is_refused(tmp_path) -> None:
    export_tiny(tmp_path / "ok.pt2")
    mark = tmp_path / "PWNED"
    config = {"config": {"obj": {"path_name": "custom_obj_0", "is_param": False, "use_pickle": True,
                                 "tensor_meta": None}}}
    evil = tmp_path / "evil.pt2"
    rewrite_zip(tmp_path / "ok.pt2", evil, {"data/constants/model_constants_config.json": json.dumps(config).encode()},
                {"data/constants/custom_obj_0": pickle.dumps(Touch(mark))})
    with pytest.raises(compiler.BadInputError, match="constant 'obj' is a pickled object"):
        load_model(str(evil))
    assert not mark.exists()


def test_compiled_code_and_legacy_layout_are_refused(tmp_path) -> None:
    export_tiny(tmp_path / "ok.pt2")
    aoti = tmp_path / "aoti.pt2"
    rewrite_zip(tmp_path / "ok.pt2", aoti, {}, {"data/aotinductor/model/model.so": b"\x7fELF"})
    with pytest.raises(compiler.BadInputError, match="AOTInductor compiled code"):
        load_model(str(aoti))
    legacy = tmp_path / "legacy.pt2"
    rewrite_zip(tmp_path / "ok.pt2", legacy, {}, {"data/weights/model.pt": evil_pickle(tmp_path / "PWNED")})
    with pytest.raises(compiler.BadInputError, match="legacy pickled weight layout"):
        load_model(str(legacy))
    assert not (tmp_path / "PWNED").exists()


def test_not_an_archive(tmp_path) -> None:
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"not a zip")
    with pytest.raises(compiler.BadInputError, match="not a torch.export archive"):
        load_model(str(bad))
