"""The package's import graph runs one way: down the layers, never up, never in a circle.

Every `import` in `src/rlhf` (module level and inside functions alike) is read with `ast`, and
each module is placed in the layer of the longest matching prefix in LAYERS. A module may import
modules of lower layers, and modules of its own package (same layer) as long as the graph has
no cycle. `rlhf.feedback` must also run with the web dependencies alone: no torch, no train/,
no models/. A plug-in named in the code by a string of the form "rlhf.x.y:obj" (a `module:function`
scorer, a labeler) is imported at run time, but it is an edge all the same: it must also run down
the layers (a lower layer reaching the demo's oracle registers nothing: `rlhf.demo` registers it,
`rlhf.labelers.registry`). The CLI's stage table names bare modules and is not read.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first. docs/architecture.md draws the same table (tests/test_docs.py checks it).
LAYERS = {
    "rlhf.algos": 0,
    "rlhf.config": 0,
    "rlhf.data.records": 0,
    "rlhf.resources": 0,
    "rlhf.intervals": 0,
    "rlhf.logs": 0,  # logging helpers, plain Python: every layer, the feedback app included  # confidence intervals, plain Python: evaluation and the feedback app share them
    "rlhf.data": 1,
    "rlhf.runtime": 1,
    "rlhf.models": 2,
    "rlhf.rollout": 3,
    "rlhf.labelers": 4,
    "rlhf.rewards": 4,
    "rlhf.eval": 5,
    "rlhf.train": 6,
    "rlhf.feedback": 7,
    "rlhf.serve": 8,  # captures feedback into rlhf.feedback's store
    "rlhf.demo": 8,
    "rlhf.doctor": 8,
    "rlhf.iterate": 8,  # exports from rlhf.feedback's store, runs rlhf.train's stages
    "rlhf.cli": 9,
    "rlhf.__main__": 10,  # `python -m rlhf` (what `accelerate launch -m rlhf` runs): the CLI
    "rlhf.api": 10,  # the Python API: the CLI's commands as functions
    "rlhf": 11,  # the package's own __init__ (re-exports the API)
}

# Packages that must never reach torch or the training stack.
TORCH_FREE = {"rlhf.feedback": ("torch", "rlhf.train", "rlhf.models", "rlhf.rollout", "rlhf.runtime")}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / "rlhf").rglob("*.py"))}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module `name` imports (rlhf modules resolved to files; others by top-level name)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from pkg import sub` imports the submodule, not the package's __init__.
            subs = {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules}
            found.update(subs)
            if len(subs) < len(node.names):
                found.add(target)
    return found


PLUGIN_NAME = re.compile(r"(rlhf(?:\.\w+)+):\w+")


def plugin_names_of(source: str) -> set[str]:
    """Modules that string constants of the form "rlhf.x.y:obj" name (docstrings and messages,
    which only mention such a name, are not matched: the whole string must be the name)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = PLUGIN_NAME.fullmatch(node.value)
            if match:
                names.add(match.group(1))
    return names


def layer_of(name: str) -> tuple[str, int]:
    prefix = max((p for p in LAYERS if name == p or name.startswith(p + ".")), key=len)
    return prefix, LAYERS[prefix]


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: {m for m in imports_of(name, path, modules) if m in modules}
            for name, path in modules.items()}


def test_every_module_has_a_layer():
    unplaced = [m for m in all_modules() if not any(m == p or m.startswith(p + ".") for p in LAYERS)]
    assert not unplaced


def upward_edges(edges: dict[str, set[str]]) -> list[str]:
    upward = []
    for name, deps in edges.items():
        package, layer = layer_of(name)
        for dep in deps:
            dep_package, dep_layer = layer_of(dep)
            if dep_layer > layer or (dep_layer == layer and dep_package != package):
                upward.append(f"{name} (layer {layer}) imports {dep} (layer {dep_layer})")
    return sorted(upward)


def test_imports_run_down_the_layers():
    upward = upward_edges(graph())
    assert not upward, "imports that run upward or sideways:\n" + "\n".join(upward)


def plugin_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: plugin_names_of(path.read_text(encoding="utf-8")) for name, path in modules.items()}


def test_plugin_names_run_down_the_layers():
    modules = all_modules()
    edges = plugin_graph()
    unknown = sorted(f"{name} names {dep}" for name, deps in edges.items() for dep in deps if dep not in modules)
    assert not unknown, "plug-in names of modules that do not exist:\n" + "\n".join(unknown)
    upward = upward_edges(edges)
    assert not upward, "plug-ins named upward or sideways:\n" + "\n".join(upward)


def test_a_plugin_name_is_an_edge():
    # What labelers/pairs.py once held: the demo's oracle named by a string, an upward edge.
    source = ('NAMED = {"oracle": "rlhf.demo.oracle:SentimentOracle"}\n'
              '"""Docs may say rlhf.demo.oracle:gold_reward."""\n')
    names = plugin_names_of(source)
    assert names == {"rlhf.demo.oracle"}
    assert upward_edges({"rlhf.labelers.pairs": names}) == [
        "rlhf.labelers.pairs (layer 4) imports rlhf.demo.oracle (layer 8)"]


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph as a list of nodes, or None (iterative DFS, three colours)."""
    colour = {n: 0 for n in edges}
    for root in edges:
        if colour[root]:
            continue
        stack = [(root, iter(sorted(edges[root])))]
        path = [root]
        colour[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = 2
                stack.pop()
                path.pop()
            elif colour.get(child) == 1:
                return path[path.index(child):] + [child]
            elif colour.get(child) == 0:
                colour[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(edges[child]))))
    return None


def test_no_import_cycles():
    # A package's __init__ re-exporting its own submodules is not a cycle unless a submodule
    # imports the package back, which the graph keeps as an edge.
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


@pytest.mark.parametrize("package", sorted(TORCH_FREE))
def test_torch_free_packages(package):
    modules = all_modules()
    bad = []
    for name, path in modules.items():
        if name == package or name.startswith(package + "."):
            for dep in imports_of(name, path, modules):
                if any(dep == f or dep.startswith(f + ".") for f in TORCH_FREE[package]):
                    bad.append(f"{name} imports {dep}")
    assert not bad
