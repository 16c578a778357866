"""The import graph of src/speechbed: layers that point down, no cycle, small modules.

Run by pytest; ``python tests/test_imports.py`` prints the graph, subpackage by subpackage.

Imports are read from the source (``ast``), not by importing: ``import``/``from`` statements
anywhere (module level, inside functions, under ``if TYPE_CHECKING``), and module names
passed as strings to a call (``importlib.import_module(...)``, a registry's lazy factory).
A registry that names a module in a table (``speechbed.tasks.TASKS``) is a lookup by name,
which the house rules allow, and is not an edge.
"""

from __future__ import annotations

import ast
import graphlib
import re
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src"
_MODULE_NAME = re.compile(r"speechbed(\.[A-Za-z_][A-Za-z0-9_]*)+")
#: The ML code, which the pipeline launches as scripts and never imports.
ML_PACKAGES = ("speechbed.training", "speechbed.tasks", "speechbed.models",
               "speechbed.decoding", "speechbed.mellin", "speechbed.features")  # fmt: skip
#: What may not be imported by code that reads run configs but runs no ML code.
SCHEMA_ONLY = ("speechbed.models", "speechbed.decoding", "speechbed.mellin",
               "speechbed.features.loader", "speechbed.training.trainer",
               "speechbed.training.loop", "speechbed.training.evaluation",
               "speechbed.training.task", "speechbed.training.checkpoints",
               "speechbed.training.data", "speechbed.deployment")  # fmt: skip
#: Each package with what it must never import (DESIGN: layers point down).
FORBIDDEN = {
    "speechbed.pipeline": ML_PACKAGES,
    "speechbed.models": ("speechbed.training", "speechbed.tasks", "speechbed.decoding",
                         "speechbed.corpora", "speechbed.features", "speechbed.jobs",
                         "speechbed.step_runner"),
    "speechbed.decoding": ("speechbed.training", "speechbed.tasks", "speechbed.models",
                           "speechbed.jobs", "speechbed.step_runner"),
    "speechbed.mellin": ("speechbed.training", "speechbed.tasks", "speechbed.models",
                         "speechbed.features", "speechbed.jobs"),
    "speechbed.jobs": ML_PACKAGES + ("speechbed.pipeline", "speechbed.sweep"),
    "speechbed.outputs": ("speechbed.jobs", "speechbed.pipeline", *ML_PACKAGES),
    "speechbed.lineage": ("speechbed.jobs", "speechbed.pipeline", *ML_PACKAGES),
    # the reports and the sweep read run configs through the schema modules only (no torch)
    "speechbed.reports": SCHEMA_ONLY,
    "speechbed.sweep": SCHEMA_ONLY,
    # the trainer serves every recipe and knows none of what is built on it
    "speechbed.training": ("speechbed.deployment", "speechbed.reports", "speechbed.sweep",
                           "speechbed.search", "speechbed.pipeline"),
}  # fmt: skip
MAX_LINES = 420


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted((SOURCE / "speechbed").rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path, known: set[str]) -> dict[str, str]:
    """{imported speechbed module: how} for one module; how is ``top``, ``lazy`` (inside a
    function) or ``typing`` (under ``if TYPE_CHECKING``)."""
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
    # A package's __init__ that re-exports its own modules is no cycle: importing a module
    # runs its parent packages first anyway, so a module's parents are left out.
    parents = {".".join(name.split(".")[:depth]) for depth in range(1, name.count(".") + 1)}
    return {target: how for target, how in found.items() if target not in parents}


def import_graph() -> dict[str, dict[str, str]]:
    """{speechbed module: {speechbed module it imports: how}}."""
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _within(graph: dict[str, dict[str, str]]) -> dict[str, set[str]]:
    return {
        name: {target for target in targets if target in graph} for name, targets in graph.items()
    }


def _within(graph: dict[str, dict[str, str]]) -> dict[str, set[str]]:
    return {
        name: {target for target in targets if target in graph} for name, targets in graph.items()
    }


def _package(name: str) -> str:
    return ".".join(name.split(".")[:2])


def test_no_import_cycle_between_modules() -> None:
    graph = import_graph()
    assert "speechbed.pipeline.scheduler" in graph and len(graph) > 60
    try:
        graphlib.TopologicalSorter(_within(graph)).prepare()
    except graphlib.CycleError as error:
        raise AssertionError(f"import cycle: {' -> '.join(error.args[1])}") from None


def test_layers_point_down() -> None:
    for name, targets in import_graph().items():
        for package, forbidden in FORBIDDEN.items():
            if name == package or name.startswith(package + "."):
                wrong = sorted(
                    target for target in targets
                    if any(target == f or target.startswith(f + ".") for f in forbidden)
                )  # fmt: skip
                assert not wrong, f"{name} imports {wrong}"


def test_the_graph_sees_lazy_and_string_imports() -> None:
    graph = import_graph()
    executors = graph["speechbed.pipeline.executors"]
    assert executors["speechbed.pipeline.container.executor"] == "lazy"  # the registry, by name
    assert executors["speechbed.pipeline.launch"] == "top"
    # The executor interface imports no executor, and neither display nor scheduler the other.
    assert not any(
        target.startswith("speechbed.pipeline.container")
        for target in graph["speechbed.pipeline.launch"]
    )
    assert "speechbed.pipeline.scheduler" not in graph["speechbed.pipeline.display"]
    assert "speechbed.pipeline.display" not in graph["speechbed.pipeline.records"]


def test_no_module_is_much_over_400_lines() -> None:
    for name, path in _modules().items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines <= MAX_LINES, f"{name}: {lines} lines; split it by concern"


def main() -> int:
    graph = import_graph()
    packages: dict[str, set[str]] = {}
    for name, targets in graph.items():
        edges = packages.setdefault(_package(name), set())
        edges.update(_package(t) for t in targets if t in graph and _package(t) != _package(name))
    for package in sorted(packages):
        shown = ", ".join(sorted(p.removeprefix("speechbed.") for p in packages[package]))
        print(f"{package.removeprefix('speechbed.')} -> {shown or '-'}")
    print(f"{len(graph)} modules, no import cycle between modules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
