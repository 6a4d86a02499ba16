"""Dependencies run one way. Every import in qbench/, tasks/, baselines/ and trainer/ (those inside
functions too) is read from the source; the test fails on an import cycle, on an engine stage
importing a later one, and on the engine importing a plugin. ARCHITECTURE.md draws the same
layers."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Where each source folder is installed (pyproject's package-dir).
PACKAGES = {"qbench": "qbench", "tasks": "qbench.tasks", "baselines": "qbench.baselines",
            "trainer": "qbench.trainer"}

# The engine's stages, earliest first: a module may import its own stage or an earlier one.
# `qbench` itself (the public names of qbench/__init__.py) and `python -m qbench` come last.
STAGES = {"core": 0, "data": 1, "scoring": 1, "testing": 1, "backends": 2, "results": 3,
          "run": 4, "cli": 5, "": 6, "__main__": 6}
# Plugins register themselves through entry points; they may import the engine and one another
# (without a cycle), and the engine imports none of them.
PLUGINS = ("qbench.tasks", "qbench.baselines", "qbench.trainer")


def module_files(root: Path, packages: dict[str, str]) -> dict[str, Path]:
    modules = {}
    for folder, package in packages.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = [package, *path.relative_to(root / folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of `modules` that `module` imports anywhere in its source. `from a import b`
    counts as importing a.b where that is a module, else a."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(target)
    return found


def import_graph(root: Path, packages: dict[str, str]) -> dict[str, set[str]]:
    modules = module_files(root, packages)
    return {module: imports_of(module, path, modules) for module, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def is_plugin(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in PLUGINS)


def stage_of(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def wrong_way(graph: dict[str, set[str]]) -> list[str]:
    """Engine imports that point at a plugin, at a later stage, or at no known stage."""
    problems = []
    for module, targets in sorted(graph.items()):
        if is_plugin(module):
            continue
        for target in sorted(targets):
            if is_plugin(target):
                problems.append(f"{module} imports the plugin {target}")
            elif stage_of(module) not in STAGES or stage_of(target) not in STAGES:
                problems.append(f"{module} -> {target}: a stage ARCHITECTURE.md does not name")
            elif STAGES[stage_of(target)] > STAGES[stage_of(module)]:
                problems.append(f"{module} ({stage_of(module)}) imports {target} "
                                f"({stage_of(target)}), a later stage")
    return problems


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(ROOT, PACKAGES)


def test_the_graph_covers_every_package(graph):
    for package in PACKAGES.values():
        assert package in graph
    assert len(graph) > 60
    # The reader sees imports inside functions too (the lazy ones are where cycles hide).
    assert "qbench.core.registry" in graph["qbench.cli.main"]


def test_no_import_cycle(graph):
    assert cycles(graph) == []


def test_the_engine_imports_no_plugin_and_no_later_stage(graph):
    assert wrong_way(graph) == []


def test_the_checks_catch_a_cycle_an_upward_import_and_a_plugin_import(tmp_path):
    """The same checks, on a planted tree that breaks each rule once."""
    files = {
        "qbench/__init__.py": "",
        "qbench/core/__init__.py": "",
        "qbench/core/a.py": "def f():\n    from qbench.run import b\n",   # upward, lazily
        "qbench/run/__init__.py": "",
        "qbench/run/b.py": "from qbench.core import a\nfrom . import c\n",
        "qbench/run/c.py": "from .b import thing\n",                         # b <-> c
        "qbench/results/__init__.py": "",
        "qbench/results/d.py": "import qbench.tasks.koniq\n",                 # a plugin
        "tasks/__init__.py": "",
        "tasks/koniq.py": "from qbench.run.b import thing\n",                 # allowed
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    planted = import_graph(tmp_path, {"qbench": "qbench", "tasks": "qbench.tasks"})
    assert planted["qbench.run.c"] == {"qbench.run.b"}
    assert cycles(planted) == [["qbench.core.a", "qbench.run.b", "qbench.run.c"]]
    assert wrong_way(planted) == [
        "qbench.core.a (core) imports qbench.run.b (run), a later stage",
        "qbench.results.d imports the plugin qbench.tasks.koniq"]
