"""The layering of the code, read from its imports (every ``import``, at any depth of a module, counts).

- ``vitmodels`` imports nothing of vitsweep's.
- The shared layer, ``server.core`` and ``migrations``, imports only itself and ``vitmodels``: never the API,
  the CLI, reports or ``worker``.
- ``worker`` imports only the shared layer, ``vitmodels`` and itself.
- The rest of ``server`` (API, CLI, reports, the stack) may import any of them.
- No module imports itself back through others (no import cycle).

The checker runs on the real tree, and on a copy of it with a forbidden import and a cycle planted, to show it
would catch them.
"""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("server", "worker", "vitmodels", "migrations")
SHARED = ("server.core", "migrations")
# layer -> the layers its modules may import (besides libraries)
ALLOWED: dict[str, tuple[str, ...]] = {
    "vitmodels": ("vitmodels",),
    "shared": ("shared", "vitmodels"),
    "worker": ("worker", "shared", "vitmodels"),
    "server": ("server", "worker", "shared", "vitmodels"),
}


def layer(module: str) -> str:
    if any(module == s or module.startswith(s + ".") for s in SHARED):
        return "shared"
    return module.split(".", 1)[0]


def modules(root: Path) -> dict[str, Path]:
    """Every module of our packages under ``root``: dotted name -> file."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """(imported module of ours, line) for every import statement in the module ``name``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import sub` imports the submodule when there is one, else a name of pkg itself
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            if target.split(".", 1)[0] in PACKAGES:
                yield target, node.lineno


def check(root: Path) -> list[str]:
    """Every import that breaks a layer rule, and every import cycle, as readable lines."""
    known = modules(root)
    graph: dict[str, set[str]] = {m: set() for m in known}
    problems = []
    for name, path in known.items():
        for target, line in imports(name, path, known):
            if layer(target) not in ALLOWED[layer(name)]:
                problems.append(f"{path.relative_to(root)}:{line}: {name} ({layer(name)}) imports {target} ({layer(target)})")
            if target in known and target != name:
                graph[name].add(target)
    problems.extend(f"import cycle: {' -> '.join(c)}" for c in cycles(graph))
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_layers_hold() -> None:
    problems = check(ROOT)
    assert not problems, "\n".join(problems)


def test_the_checker_catches_a_planted_import_and_cycle(tmp_path: Path) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    assert check(tmp_path) == []
    queue = tmp_path / "server" / "core" / "queue.py"
    queue.write_text(queue.read_text() + "\n\ndef _planted() -> None:\n    from worker.trial import TrialRunner  # noqa\n")
    models = tmp_path / "vitmodels" / "cnn.py"
    models.write_text(models.read_text() + "\nfrom server.cli import app  # noqa\n")
    objectives = tmp_path / "server" / "core" / "objectives.py"
    objectives.write_text(objectives.read_text() + "\nfrom server.core import sweeps  # noqa\n")
    problems = check(tmp_path)
    assert any("server.core.queue (shared) imports worker.trial (worker)" in p for p in problems), problems
    assert any("vitmodels.cnn (vitmodels) imports server.cli" in p for p in problems), problems
    assert any(p.startswith("import cycle:") and "server.core.objectives" in p for p in problems), problems
