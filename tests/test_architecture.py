"""The package's shape: no import cycle between modules (inside one part or across parts), every
import points down the layers, and an import inside a function exists only to keep a command light.

Imports inside functions count as edges too: they are how cycles used to be hidden. A *part* is a
sub-package (``retinaface.data``) or a top-level module (``retinaface.config``; each module of ``inference/`` and ``deploy/`` counts as one). An import of the
package's own modules inside a function carries a ``# lazy: <the command it keeps light>`` comment
on the line above its block and must defer a heavy dependency (torch, OpenCV, ...) that its module
does not load already; any other belongs at the top of the module.
"""
from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable, Dict, List, Set, Tuple

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "retinaface"
# what a lazy import may defer: the third-party packages that take long to import
HEAVY = ("torch", "torchvision", "timm", "cv2", "scipy", "onnx", "onnxruntime", "openvino", "matplotlib")
LAZY_MARK = "# lazy:"

# Bottom to top; a part may import parts of its own layer or of layers below, never above.
# (Parts in one layer must not form cycles either: the cycle test checks that.) A part is a
# sub-package ("data") or a top-level module ("config"); the folders that group modules of several
# layers (GROUPING_FOLDERS) are not parts: each module in them is one ("inference.detector").
GROUPING_FOLDERS = ("inference", "deploy")
LAYERS: List[Set[str]] = [
    {"conventions", "version", "fileio", "formats", "zoo", "runtime_interface", "_moved", "_lazy", "inference",
     "deploy"},
    {"box_coder", "priors", "deploy.fusion", "deploy.batch_norm"},
    {"config"},
    {"data"},
    {"models"},
    {"adaptive"},
    {"build", "checkpoint"},
    {"inference.postprocess", "inference.transform", "inference.visualize", "inference.sources", "inference.align",
     "inference.tiling"},
    {"inference.detector", "inference.tta", "inference.profiling", "deploy.parity", "deploy.export", "deploy.runtime",
     "deploy.openvino_backend", "inference.video", "environment", "inference.detect_files",
     "inference.embed_files"},
    {"engine", "evaluation", "recognition", "landmarks", "deploy.quantize", "benchmark_matrix"},
    {"cli"},
    {"__main__"},
]


def part_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 2 and parts[1] in GROUPING_FOLDERS:
        return f"{parts[1]}.{parts[2]}"
    return parts[1] if len(parts) > 1 else ""


def module_name(path: Path, package: Path = PACKAGE) -> str:
    rel = path.relative_to(package.parent).with_suffix("")
    names = list(rel.parts)
    if names[-1] == "__init__":
        names = names[:-1]
    return ".".join(names)


def import_targets(node: ast.stmt, path: Path, package: Path = PACKAGE) -> Tuple[Set[str], Set[str]]:
    """``(package modules, third-party top-level names)`` one import statement of ``path`` names."""
    root = package.name
    name = module_name(path, package)
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]
    own: Set[str] = set()
    other: Set[str] = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            top = alias.name.split(".")[0]
            if top == root:
                own.add(alias.name)
            else:
                other.add(top)
        return own, other
    if not isinstance(node, ast.ImportFrom):
        return own, other
    if node.level:
        base = here.split(".")
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != root:
        other.add(target.split(".")[0])
        return own, other
    for alias in node.names:
        # "from . import x" / "from .pkg import x": x may be a sub-module, else a name of target
        candidate = f"{target}.{alias.name}"
        sub = package.parent / Path(*candidate.split("."))
        # a package, a module, or a compiled module (built from the .c of its name)
        is_module = sub.is_dir() or sub.with_suffix(".py").exists() or sub.with_suffix(".c").exists()
        own.add(candidate if is_module else target)
    return own, other


def imported_modules(path: Path, package: Path = PACKAGE) -> Set[str]:
    """Every package module ``path`` imports, at any depth of its code."""
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        found |= import_targets(node, path, package)[0]
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


def module_graph(package: Path = PACKAGE) -> Dict[str, Set[str]]:
    """Module -> the package modules it imports (function-level imports included), inside its own
    part too. The root package is left out: it only re-exports names lazily (PEP 562)."""
    graph: Dict[str, Set[str]] = {}
    for path in package.rglob("*.py"):
        name = module_name(path, package)
        if name != package.name:
            graph[name] = imported_modules(path, package) - {name}
    return graph


def _load_time_imports(tree: ast.Module) -> List[ast.stmt]:
    """The import statements that run when the module is imported: outside functions and outside
    ``if TYPE_CHECKING:`` blocks."""
    found: List[ast.stmt] = []

    def visit(body: List[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.append(node)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    visit(getattr(node, field, None) or [])

    visit(tree.body)
    return found


def heavy_loaded_by(package: Path = PACKAGE) -> Callable[[str], Set[str]]:
    """``loads(module)``: the heavy third-party packages that importing ``module`` loads: through its
    own load-time imports, those of the package modules they import, and of their parent packages."""
    direct: Dict[str, Tuple[Set[str], Set[str]]] = {}
    for path in package.rglob("*.py"):
        name = module_name(path, package)
        own: Set[str] = set()
        other: Set[str] = set()
        for node in _load_time_imports(ast.parse(path.read_text(), str(path))):
            o, t = import_targets(node, path, package)
            own |= o
            other |= t
        parts = name.split(".")
        own |= {".".join(parts[:k]) for k in range(1, len(parts))}  # parents run first
        direct[name] = (own - {name}, other & set(HEAVY))

    def loads(module: str) -> Set[str]:
        seen: Set[str] = set()
        heavy: Set[str] = set()
        todo = [module]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            parts = name.split(".")
            todo += [".".join(parts[:k]) for k in range(1, len(parts))]
            own, other = direct.get(name, (set(), set()))  # a compiled module has no entry
            heavy |= other
            todo += own
        return heavy

    return loads


@dataclasses.dataclass
class FunctionImport:
    path: Path
    line: int
    code: str
    targets: Set[str]
    commented: bool  # "# lazy: <why>" on the line above its block of imports, or on its own line


def function_level_imports(package: Path = PACKAGE) -> List[FunctionImport]:
    """Imports of the package's own modules inside functions."""
    found: List[FunctionImport] = []
    for path in package.rglob("*.py"):
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines), str(path))
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for body in _bodies(func):
                block_start = None
                for node in body:
                    if not isinstance(node, (ast.Import, ast.ImportFrom)):
                        block_start = None
                        continue
                    if block_start is None:
                        block_start = node.lineno
                    own = import_targets(node, path, package)[0]
                    if not own:
                        continue
                    above = lines[block_start - 2].strip() if block_start >= 2 else ""
                    commented = above.startswith(LAZY_MARK) or LAZY_MARK in lines[node.lineno - 1]
                    found.append(FunctionImport(path, node.lineno, ast.unparse(node), own, commented))
    return found


def _bodies(func: ast.AST) -> List[List[ast.stmt]]:
    """Every statement list inside ``func`` that is not inside a nested function (those are visited
    on their own)."""
    out: List[List[ast.stmt]] = []

    def visit(node: ast.AST) -> None:
        for field in ("body", "orelse", "finalbody", "handlers"):
            body = getattr(node, field, None)
            if not isinstance(body, list):
                continue  # a lambda's or an if-expression's body is one expression
            out.append(body)
            for child in body:
                if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    visit(child)

    visit(func)
    return out


def lazy_import_problems(package: Path = PACKAGE) -> List[str]:
    """Function-level imports of the package's own modules that are not marked ``# lazy:`` or that
    defer no heavy dependency (their module loads all of it already: import them at the top)."""
    loads = heavy_loaded_by(package)
    problems = []
    for imp in function_level_imports(package):
        where = f"{imp.path.relative_to(package.parent)}:{imp.line}"
        module = module_name(imp.path, package)
        deferred = set().union(*(loads(t) for t in imp.targets)) - loads(module)
        if not deferred:
            problems.append(f"{where}: `{imp.code}` defers nothing {module} does not load already; import it "
                            f"at the top")
        elif not imp.commented:
            problems.append(f"{where}: `{imp.code}` defers {sorted(deferred)}; say which command it keeps "
                            f"light in a '{LAZY_MARK} ...' comment above it, or import it at the top")
    return problems


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


def test_no_import_cycle_between_modules():
    # inside one part too: recognition.training <-> recognition.prioritize was one
    cycle = find_cycle(module_graph())
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def write_package(root: Path, files: Dict[str, str]) -> Path:
    """A throw-away package ``root/retinaface`` holding ``files`` (relative path -> source)."""
    package = root / "retinaface"
    for rel, source in {"__init__.py": "", **files}.items():
        path = package / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return package


def test_module_graph_sees_a_cycle_inside_one_part_through_a_function_level_import(tmp_path):
    package = write_package(tmp_path, {
        "part/__init__.py": "",
        "part/a.py": "from .b import helper\n",
        "part/b.py": "def helper():\n    from . import a\n    return a\n",
        "other.py": "from .part import a\n",
    })
    assert find_cycle(module_graph(package)) == ["retinaface.part.a", "retinaface.part.b", "retinaface.part.a"]
    (package / "part" / "b.py").write_text("def helper():\n    return 1\n")
    assert find_cycle(module_graph(package)) == []


def test_lazy_import_rule_on_a_planted_package(tmp_path):
    package = write_package(tmp_path, {
        "light.py": "import numpy\n",
        "heavy.py": "import torch\n",
        "video.py": "import cv2\nfrom .light import numpy\n",
        "user.py": """\
            import torch


            def needs_heavy():
                from .heavy import torch  # the module loads torch already: nothing deferred


            def needs_video():
                # lazy: only the video command needs OpenCV
                import os
                from .video import cv2


            def needs_video_unmarked():
                from .video import cv2


            def needs_light():
                from . import light
            """,
    })
    problems = lazy_import_problems(package)
    assert [p.split(":")[1] for p in problems] == ["5", "15", "19"], problems
    assert "defers nothing" in problems[0] and "defers ['cv2']" in problems[1] and "defers nothing" in problems[2]
    loads = heavy_loaded_by(package)
    assert loads("retinaface.video") == {"cv2"} and loads("retinaface.light") == set()


def test_function_level_imports_only_keep_a_command_light():
    problems = lazy_import_problems()
    assert not problems, "\n".join(problems)


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


# interface values conventions states; every other module imports them by name
INTERFACE_VALUES = {"BGR_MEAN": (104, 117, 123), "FEATURE_STRIDES": (8, 16, 32),
                    "PRIOR_MIN_SIZES": ((16, 32), (64, 128), (256, 512)), "BOX_VARIANCES": (0.1, 0.2),
                    "MIRROR_ORDER": (1, 0, 2, 4, 3)}


def _literal(node: ast.AST):
    """A tuple or list literal as nested tuples (None when it is not a constant literal)."""
    try:
        value = ast.literal_eval(node)
    except ValueError:
        return None

    def nested(v):
        return tuple(nested(x) for x in v) if isinstance(v, (list, tuple)) else v
    return nested(value)


def test_interface_values_are_stated_only_in_conventions():
    from retinaface import conventions

    assert {name: getattr(conventions, name) for name in INTERFACE_VALUES} == INTERFACE_VALUES
    restated = []
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "conventions.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Tuple, ast.List)):
                value = _literal(node)
                restated += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {name}"
                             for name, known in INTERFACE_VALUES.items() if value == known]
    assert not restated, "import these from retinaface.conventions: " + "; ".join(restated)


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
