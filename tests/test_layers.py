"""The package's import layers: no circles, no lower layer importing a higher one, and no module importing
another's private (underscore) names.

Layers, lowest first: ``quantbench.common`` → ``calibration_data``, ``runtimes`` → ``exporters`` →
``reports`` → ``harness`` (the API in ``quantbench/__init__.py`` sits on top). Imports inside functions
count: a lazy import is still a dependency, and a circle through one still ties two modules together.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"common": ROOT / "quantbench" / "common", "calibration_data": ROOT / "calibration_data",
            "runtimes": ROOT / "runtimes", "exporters": ROOT / "exporters", "reports": ROOT / "reports",
            "harness": ROOT / "harness"}
# What each top-level package may import (besides itself).
ALLOWED = {
    "common": set(),
    "calibration_data": {"common"},
    "runtimes": {"common"},
    "exporters": {"common", "calibration_data", "runtimes"},
    "reports": {"common"},
    "harness": {"common", "calibration_data", "runtimes", "exporters", "reports"},
}

# Single edges that cross a layer on purpose, each with its reason.
EXCEPTIONS = {
    # The PyTorch baseline runs the source model itself: its adapter builds the module from the recipe.
    ("quantbench.runtimes.torch_rt", "quantbench.exporters.torch_models"),
}


def _module_name(package: str, path: Path) -> str:
    rel = path.relative_to(PACKAGES[package]).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(["quantbench", package, *parts])


def _imports(module: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - node.level + 1]
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)
    return {name for name in found if name.startswith("quantbench.")}


def _graph() -> dict[str, set[str]]:
    modules: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            modules[_module_name(package, path)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {dep for dep in _imports(name, path) if dep in modules and dep != name}
    return graph


def _private_imports(module: str, source: str, is_pkg: bool = False) -> list[str]:
    """``from <another quantbench module> import _name`` in ``module``'s ``source``, as "module:line name"
    (an ``import x as _x`` alias is fine: the name imported is public)."""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        if (target == "quantbench" or target.startswith("quantbench.")) and target != module:
            found += [f"{module}:{node.lineno} {target}.{a.name}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def _top(module: str) -> str:
    return module.split(".")[1]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_real_imports():
    graph = _graph()
    # A known edge in each direction the rules care about: the checker must see lazy and relative imports.
    assert "quantbench.harness.cli" in graph
    assert any(_top(d) == "reports" for d in graph["quantbench.harness.cli"])
    assert any(d.startswith("quantbench.common") for m in graph for d in graph[m])


def test_no_import_circles():
    cycles = _cycles(_graph())
    assert cycles == [], "import circles: " + "; ".join(" ↔ ".join(c) for c in cycles)


def test_no_lower_layer_imports_a_higher_one():
    graph = _graph()
    wrong = sorted(f"{m} → {d}" for m, deps in graph.items() for d in deps
                   if _top(d) != _top(m) and _top(d) not in ALLOWED[_top(m)] and (m, d) not in EXCEPTIONS)
    assert wrong == [], "imports up the layers:\n" + "\n".join(wrong)


def test_the_cycle_finder_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_private_names_imported_across_modules():
    sources = {"quantbench": (ROOT / "quantbench" / "__init__.py", True)}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            sources[_module_name(package, path)] = (path, path.name == "__init__.py")
    assert len(sources) > 50
    wrong = sorted(hit for module, (path, is_pkg) in sources.items()
                   for hit in _private_imports(module, path.read_text(), is_pkg))
    assert wrong == [], ("private names imported from another module (make them public or move them):\n"
                         + "\n".join(wrong))


def test_the_private_import_check_finds_planted_ones():
    source = ("from quantbench.reports.charts import _layout, esc\n"
              "import quantbench.reports.charts as _charts\n"
              "from .calibrate import calibrate_session as _session, __doc__\n"
              "def f():\n"
              "    from .calibrate import _session\n"
              "    from ..common import _helper\n")
    assert _private_imports("quantbench.exporters.weight_rounding", source) == [
        "quantbench.exporters.weight_rounding:1 quantbench.reports.charts._layout",
        "quantbench.exporters.weight_rounding:5 quantbench.exporters.calibrate._session",
        "quantbench.exporters.weight_rounding:6 quantbench.common._helper"]
    # In a package's __init__, "." is the package itself.
    assert _private_imports("quantbench.reports", "from .charts import _error\n", is_pkg=True) == [
        "quantbench.reports:1 quantbench.reports.charts._error"]


def test_readme_layout_names_every_sub_package():
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    layout = layout[: layout.index("\n## ", 1)]
    subs = sorted(p.parent.relative_to(ROOT / "harness").as_posix() for p in (ROOT / "harness").rglob("__init__.py")
                  if p.parent != ROOT / "harness")
    missing = [s for s in subs if f"`{s.split('/')[-1]}/`" not in layout]
    assert missing == [], f"README's Layout does not name harness sub-packages {missing}"
    assert "quantbench/common/" in layout
