"""The layout's promises (docs/architecture.md), read from the source: no import cycles between Airloop's modules
(imports inside functions included), Airflow imported only in ``orchestration/`` (and the plugin file
``airloop_ui.py``), and no module much over 400 lines without its docstring saying why."""

from __future__ import annotations

import ast
from pathlib import Path

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
MAX_LINES = 420  # "about 400"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PLUGINS.rglob("*.py"):
        parts = list(path.relative_to(PLUGINS).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> tuple[set[str], bool]:
    """(the Airloop modules that ``name`` imports anywhere in its file, whether it imports Airflow)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    deps, airflow = set(), False
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            targets = [(base, a.name) for a in node.names]
        else:
            continue
        for base, attr in targets:
            airflow |= base.split(".")[0] == "airflow"
            if attr and f"{base}.{attr}" in modules:
                deps.add(f"{base}.{attr}")
            elif base in modules:
                deps.add(base)
    return deps - {name}, airflow


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_cycle_and_an_airflow_import(tmp_path):
    (tmp_path / "a.py").write_text("from b import f\nimport airflow.sdk\n")
    (tmp_path / "b.py").write_text("def f():\n    from a import g\n")
    modules = {"a": tmp_path / "a.py", "b": tmp_path / "b.py"}
    deps = {n: _imports(n, p, modules) for n, p in modules.items()}
    assert _cycles({n: d for n, (d, _) in deps.items()}) == [["a", "b"]]
    assert [n for n, (_, airflow) in deps.items() if airflow] == ["a"]


def test_there_are_no_import_cycles_between_airloop_modules():
    modules = _modules()
    graph = {name: _imports(name, path, modules)[0] for name, path in modules.items()}
    assert len(graph) > 50, "the checker read too few modules"
    assert _cycles(graph) == []


def test_only_orchestration_imports_airflow():
    modules = _modules()
    importers = {n for n, p in modules.items() if _imports(n, p, modules)[1]}
    assert "airloop.orchestration.dagkit" in importers, "the checker missed a known Airflow import"
    outside = sorted(n for n in importers if not n.startswith("airloop.orchestration") and n != "airloop_ui")
    assert outside == [], f"these modules import Airflow outside orchestration/: {outside}"


def test_long_modules_say_why_they_are_long():
    unexplained = []
    for name, path in _modules().items():
        text = path.read_text()
        if text.count("\n") > MAX_LINES and "lines" not in (ast.get_docstring(ast.parse(text)) or ""):
            unexplained.append(f"{name}: {text.count(chr(10))} lines")
    assert unexplained == []
