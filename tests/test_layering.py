"""The package's architecture, checked: imports flow one way and form no cycle.

Sub-packages have ranks (README's layout map); a module may import from its own rank or
below, never above, not even inside a function. Among module-level imports (the ones that
run at import time) there is no cycle, within a sub-package either.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import cnnlab

ROOT = Path(cnnlab.__file__).parent
RANKS: dict[str, int] = {
    "errors": 0,
    "budget": 0,  # the memory budget (imports errors only)
    "fileio": 0,
    "extras": 0,  # which extra an optional feature needs (imports errors only)
    "ops": 1,
    "plots": 1,
    "data": 2,
    "models": 3,
    "engine": 4,
    "train": 5,
    "analysis": 6,
    "interop": 6,
    "figures": 6,
    "serving": 7,
    "report": 8,
    "cli": 9,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported cnnlab module, line, at module level) for every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(n) for n in tree.body}
    found: list[tuple[str, int, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            base = node.module
            targets = [f"{base}.{a.name}" for a in node.names]
            # ``from cnnlab.x import y``: y is a module when such a file exists
            names = [t for t in targets if t in MODULES] or [base]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] == "cnnlab":
                found.append((name, node.lineno, id(node) in top))
    return found


def _top(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANKS else None


def test_every_subpackage_has_a_rank() -> None:
    tops = {m.split(".")[1] for m in MODULES if m.count(".") >= 1}
    assert tops - {"__main__"} <= set(RANKS), tops - set(RANKS)


def test_imports_flow_one_way() -> None:
    wrong = []
    for module, path in MODULES.items():
        here = _top(module)
        if here is None:
            continue
        for target, line, _ in _imports(path):
            there = _top(target)
            if there is not None and RANKS[there] > RANKS[here]:
                wrong.append(f"{module}:{line} imports {target} ({there} is above {here})")
    assert not wrong, "\n".join(wrong)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def _resolve(target: str) -> str | None:
    """The module file an import loads (a package's ``__init__`` for a package)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def test_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        for target, _, at_top in _imports(path):
            resolved = _resolve(target)
            if at_top and resolved is not None and resolved != module:
                graph.setdefault(module, set()).add(resolved)
    assert len(graph) > 40  # the scan saw the package
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_checker_sees_a_cycle_and_an_upward_import() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}}) is None
    assert _top("cnnlab.ops.conv") == "ops" and RANKS["cli"] > RANKS["ops"]


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _top(m) in ("ops", "data")))
def test_low_layers_do_not_need_torch_at_import(module: str) -> None:
    """ops and data are NumPy: importing them must not pull in torch."""
    imported = {name.split(".")[0] for name in _torch_free_imports(MODULES[module])}
    assert "torch" not in imported, f"{module} imports torch at module level"


def _torch_free_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names
