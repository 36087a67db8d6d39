"""The kernel reads bottom-up: each module imports, at run time, only modules below it.

Imports under ``if TYPE_CHECKING:`` are annotations only and may point anywhere.
"""

from __future__ import annotations

import ast
from pathlib import Path

import botcriptofy

PACKAGE = Path(botcriptofy.__file__).parent

# Bottom first. A module may import at run time only modules of an earlier layer, or earlier in its own layer.
LAYERS: list[tuple[str, list[str]]] = [
    ("basics", ["_version", "_markers", "_util", "_errors", "_stash", "_types", "_acting", "_cache"]),
    ("settings", ["_settings", "_history", "_fleet"]),
    ("contract, events and HTTP helpers", ["hookspecs", "_manager", "_events", "_http", "_edge", "_idempotency"]),
    ("kernel generation", ["_kernel"]),
    ("runtime", ["_runtime"]),
    ("built-in routes", ["_builtin"]),
    ("service, command line and test fixtures", ["_app", "_serve", "_cli", "testing", "__init__"]),
]
ORDER = [module for _, modules in LAYERS for module in modules]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve(node: ast.Import | ast.ImportFrom, modules: set[str]) -> set[str]:
    """Return the kernel modules an import statement loads."""
    found: set[str] = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            parts = alias.name.split(".")
            if parts[0] == "botcriptofy":
                found.add(parts[1] if len(parts) > 1 else "__init__")
        return found
    if node.level == 0:
        if node.module is None or node.module.split(".")[0] != "botcriptofy":
            return found
        parts = node.module.split(".")
        base = parts[1] if len(parts) > 1 else None
    elif node.level == 1:
        base = node.module.split(".")[0] if node.module else None
    else:
        return found
    if base is not None:
        found.add(base)
        return found
    # ``from . import name``: a submodule, or a name defined by the package's __init__.
    for alias in node.names:
        found.add(alias.name if alias.name in modules else "__init__")
    return found


def runtime_imports(path: Path, modules: set[str]) -> set[str]:
    """The kernel modules ``path`` imports outside ``if TYPE_CHECKING:`` blocks, at any depth."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.update(_resolve(node, modules))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    found.discard(path.stem)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    return {name: runtime_imports(PACKAGE / f"{name}.py", modules) for name in modules}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """Return one import cycle as a list of modules (first repeated last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state:
                cycle = walk(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = walk(start)
            if cycle:
                return cycle
    return None


def order_violations(graph: dict[str, set[str]]) -> list[str]:
    rank = {module: index for index, module in enumerate(ORDER)}
    problems = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if target in rank and module in rank and rank[target] >= rank[module]:
                problems.append(f"{module} imports {target}, which sits above it")
    return problems


def test_every_kernel_module_has_a_place_in_the_order() -> None:
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    assert modules == set(ORDER), f"place new modules in LAYERS: missing {sorted(modules - set(ORDER))}"


def test_kernel_modules_import_only_downwards() -> None:
    graph = import_graph()
    assert order_violations(graph) == []
    assert find_cycle(graph) is None


def test_runtime_does_not_import_the_builtin_routes() -> None:
    graph = import_graph()
    assert "_builtin" not in graph["_runtime"]
    assert "_builtin" not in graph["_kernel"]


def test_the_checker_catches_a_lazy_upward_import_and_a_cycle(tmp_path: Path) -> None:
    lower = tmp_path / "_kernel.py"
    lower.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ._runtime import Runtime\n"
        "def scan():\n    from . import _builtin\n    return _builtin\n"
    )
    modules = {"_kernel", "_runtime", "_builtin"}
    assert runtime_imports(lower, modules) == {"_builtin"}
    graph = {"_kernel": {"_builtin"}, "_builtin": {"_runtime"}, "_runtime": {"_kernel"}}
    assert order_violations(graph) == ["_kernel imports _builtin, which sits above it"]
    assert find_cycle(graph) == ["_builtin", "_runtime", "_kernel", "_builtin"]


def test_public_api_is_unchanged() -> None:
    assert botcriptofy.__all__ == sorted(botcriptofy.__all__, key=str)
    assert {"ApplyResult", "Kernel", "Runtime", "create_app"} <= set(botcriptofy.__all__)
    assert all(hasattr(botcriptofy, name) for name in botcriptofy.__all__)
    assert botcriptofy.Runtime.__mro__[1].__module__ == "botcriptofy._runtime"
