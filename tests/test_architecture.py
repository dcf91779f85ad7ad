"""The package's shape: no import cycles between its parts, and every import points down the layers.

Imports inside functions count too: they are how cycles used to be hidden. A *part* is a
sub-package (``retinaface.data``) or a top-level module (``retinaface.detector``).
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "retinaface"

# Bottom to top; a part may import parts of its own layer or of layers below, never above.
# (Parts in one layer must not form cycles either: the cycle test checks that.)
LAYERS: List[Set[str]] = [
    {"conventions", "version", "fileio", "formats", "zoo"},
    {"box_coder", "priors", "fusion", "batch_norm"},
    {"config"},
    {"data"},
    {"models"},
    {"adaptive"},
    {"build", "checkpoint"},
    {"postprocess", "transform", "visualize", "sources", "matching", "loss", "align", "tiling"},
    {"detector", "tta", "profiling", "parity", "export", "runtime", "openvino_backend", "video", "environment",
     "detect_files"},
    {"engine", "evaluation", "recognition", "quantize", "benchmark_matrix"},
    {"cli"},
    {"__main__"},
]


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    names = list(rel.parts)
    if names[-1] == "__init__":
        names = names[:-1]
    return ".".join(names)


def imported_modules(path: Path) -> Set[str]:
    """Every ``retinaface...`` module ``path`` imports, at any depth of its code."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "retinaface")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "retinaface":
                continue
            if node.module is None or target == "retinaface":
                # "from . import x" / "from retinaface import x": x may be a sub-module
                for alias in node.names:
                    candidate = f"{target}.{alias.name}"
                    sub = PACKAGE.parent / Path(*candidate.split("."))
                    # a package, a module, or a compiled module (built from the .c of its name)
                    is_module = sub.is_dir() or sub.with_suffix(".py").exists() or sub.with_suffix(".c").exists()
                    found.add(candidate if is_module else target)
            else:
                found.add(target)
    return found


def part_graph() -> Dict[str, Set[str]]:
    graph: Dict[str, Set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        source = part_of(module_name(path))
        if not source:
            continue  # the root package only re-exports names lazily
        for target in imported_modules(path):
            dest = part_of(target)
            graph.setdefault(source, set())
            if dest and dest != source:
                graph[source].add(dest)
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


def test_no_import_cycle_between_parts():
    cycle = find_cycle(part_graph())
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_every_import_points_down_the_layers():
    rank = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    graph = part_graph()
    unplaced = sorted(p for p in graph if p not in rank)
    assert not unplaced, f"parts without a layer in tests/test_architecture.py: {unplaced}"
    upward = sorted(f"{src} -> {dst}" for src, dsts in graph.items() for dst in dsts
                    if dst in rank and rank[dst] > rank[src])
    assert not upward, f"imports that point up the layers: {upward}"


def test_library_never_imports_from_the_root_package():
    # the root's names are lazy re-exports: importing them from inside would hide cycles
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.parent == PACKAGE and path.name == "__init__.py":
            continue
        for target in imported_modules(path):
            if target == "retinaface":
                offenders.append(str(path.relative_to(PACKAGE.parent)))
    assert not offenders, f"modules importing names from the root package: {sorted(set(offenders))}"


@pytest.mark.parametrize("module", ["retinaface", "retinaface.conventions", "retinaface.cli"])
def test_cheap_imports_load_no_heavy_dependency(module):
    code = (f"import sys, {module}\n"
            "heavy = sorted(m for m in ('torch', 'torchvision', 'timm', 'cv2', 'scipy') if m in sys.modules)\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"import {module} loaded {out}"


def test_lazy_top_level_names_resolve():
    code = ("import retinaface\n"
            "names = [n for n in retinaface.__all__ if n != '__version__']\n"
            "missing = [n for n in names if getattr(retinaface, n, None) is None]\n"
            "print(missing, sorted(set(names) - set(dir(retinaface))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[] []"
