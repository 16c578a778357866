"""The pipeline package's import graph: no cycle (lazy and typing-only imports included), no ML code.

Run by pytest; ``python tests/test_pipeline_imports.py`` prints the graph, module by module.

Imports are read from the source (``ast``), not by importing: ``import``/``from`` statements
anywhere (module level, inside functions, under ``if TYPE_CHECKING``), and module names
passed as strings to a call (``importlib.import_module(...)``, a registry's lazy factory).
Importing ``a.b.c`` also runs the packages ``a.b`` and ``a``, so each module points at its
parent packages too.
"""

from __future__ import annotations

import ast
import graphlib
import re
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "speechbed.pipeline"
#: The ML code the pipeline launches as scripts and never imports (DESIGN: layers point down).
ML_PACKAGES = ("speechbed.training", "speechbed.models", "speechbed.decoding", "speechbed.mellin",
               "speechbed.features")  # fmt: skip
_MODULE_NAME = re.compile(r"speechbed(\.[A-Za-z_][A-Za-z0-9_]*)+")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    folder = SOURCE.joinpath(*PACKAGE.split("."))
    return {_module_name(path): path for path in sorted(folder.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path, known: set[str]) -> dict[str, str]:
    """{imported speechbed module: how} for one module; how is ``top``, ``lazy`` (inside a
    function), ``typing`` (under ``if TYPE_CHECKING``) or ``parent`` (a package it is in)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, str] = {}

    def add(target: str, how: str) -> None:
        if target.startswith("speechbed") and target != name:
            previous = found.get(target)
            if previous is None or ["typing", "lazy", "top"].index(how) > [
                "typing", "lazy", "top",
            ].index(previous):  # fmt: skip
                found[target] = how

    def visit(node: ast.AST, how: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            how = "lazy" if how == "top" else how
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.body:
                visit(child, "typing")
            for child in node.orelse:
                visit(child, how)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, how)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                add(submodule if submodule in known else base, how)
        elif isinstance(node, ast.Call):
            for argument in node.args:
                if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                    if _MODULE_NAME.fullmatch(argument.value):
                        add(argument.value, "lazy")
        for child in ast.iter_child_nodes(node):
            visit(child, how)

    visit(tree, "top")
    parent = name
    while "." in parent and parent != PACKAGE:
        parent = parent.rpartition(".")[0]
        if parent in known and parent != name:
            found.setdefault(parent, "parent")
    return found


def import_graph() -> dict[str, dict[str, str]]:
    """{pipeline module: {speechbed module it imports: how}}."""
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _within(graph: dict[str, dict[str, str]]) -> dict[str, set[str]]:
    return {
        name: {target for target in targets if target in graph} for name, targets in graph.items()
    }


def test_no_import_cycle_in_the_pipeline_package() -> None:
    graph = import_graph()
    assert "speechbed.pipeline.scheduler" in graph and len(graph) > 10
    try:
        order = list(graphlib.TopologicalSorter(_within(graph)).static_order())
    except graphlib.CycleError as error:
        raise AssertionError(f"import cycle in {PACKAGE}: {' -> '.join(error.args[1])}") from None
    assert set(order) == set(graph)


def test_the_graph_sees_lazy_and_string_imports() -> None:
    graph = import_graph()
    executors = graph["speechbed.pipeline.executors"]
    assert executors["speechbed.pipeline.container.executor"] == "lazy"  # the registry, by name
    assert executors["speechbed.pipeline.launch"] == "top"
    # The executor interface imports no executor, and neither display nor scheduler the other.
    assert not any(
        target.startswith(f"{PACKAGE}.container") for target in graph[f"{PACKAGE}.launch"]
    )
    assert f"{PACKAGE}.scheduler" not in graph[f"{PACKAGE}.display"]
    assert f"{PACKAGE}.display" not in graph[f"{PACKAGE}.records"]


def test_the_pipeline_never_imports_ml_code() -> None:
    for name, targets in import_graph().items():
        ml = sorted(target for target in targets if target.startswith(ML_PACKAGES))
        assert not ml, f"{name} imports {ml}: the pipeline launches ML code as scripts"


def test_no_pipeline_module_is_much_over_400_lines() -> None:
    for name, path in _modules().items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines <= 420, f"{name}: {lines} lines; split it by concern"


def main() -> int:
    graph = import_graph()
    order = list(graphlib.TopologicalSorter(_within(graph)).static_order())
    short = len(PACKAGE) + 1
    for name in order:
        inside = sorted(
            f"{target[short:] or '(package)'}" + ("" if how == "top" else f" [{how}]")
            for target, how in graph[name].items()
            if target in graph and how != "parent"
        )
        outside = sorted(target for target in graph[name] if target not in graph)
        print(f"{name[short:] or PACKAGE} -> {', '.join(inside) or '-'}")
        if outside:
            print(f"    outside the package: {', '.join(outside)}")
    print(f"{len(graph)} modules, no import cycle (dependencies before dependants above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
