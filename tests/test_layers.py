"""The package layers, checked on the source: the core imports neither `latency_tables` nor
`targets`, those two never import the pipeline, and no module imports itself back through a
chain of imports, function-local ones included (only `if TYPE_CHECKING:` blocks are exempt)."""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("compiler", "latency_tables", "targets")
# What each layer may import, bottom to top; the pipeline is `compiler` outside `compiler.core`.
ALLOWED = {
    "core": {"core"},
    "targets": {"core", "targets"},
    "latency_tables": {"core", "targets", "latency_tables"},
    "pipeline": {"core", "targets", "latency_tables", "pipeline"},
}


def layer(module: str) -> str:
    return "core" if module.startswith("compiler.core") else "pipeline" if module.startswith("compiler") \
        else module.split(".")[0]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(path: Path) -> set[str]:
    """Project modules `path` imports anywhere in its body, resolved to module names."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking(node):
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                base = ".".join(up[:len(up) - node.level + 1] + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def graph() -> nx.DiGraph:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    names = {module_name(p) for p in files}
    g = nx.DiGraph()
    for p in files:
        me = module_name(p)
        g.add_node(me)
        for target in imports(p):
            if target in names and target != me and not me.startswith(target + "."):
                g.add_edge(me, target)  # a package's own __init__ is not an import of its parent
    return g


def test_layers_import_only_downwards() -> None:
    bad = [f"{a} ({layer(a)}) imports {b} ({layer(b)})" for a, b in graph().edges if layer(b) not in ALLOWED[layer(a)]]
    assert not bad, bad


def test_no_import_cycles() -> None:
    cycles = list(nx.simple_cycles(graph()))
    assert not cycles, cycles


def test_the_walk_sees_what_it_must() -> None:
    """The checks above would pass on an empty graph: make sure the walk finds known edges."""
    g = graph()
    assert g.has_edge("latency_tables.profile", "targets.base")
    assert g.has_edge("compiler.pipeline", "latency_tables")
    assert g.has_edge("compiler.core.groups", "compiler.core.propagate")
