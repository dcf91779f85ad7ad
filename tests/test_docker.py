"""docker/Dockerfile builds both compiled parts: every C source of setup.py's extensions is copied
in before the dependency install that compiles them (the image's last step then refuses to build
unless ``retinaface env`` reports both active; that needs Docker and is not run here)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _extension_sources() -> set:
    """The .c files named in setup.py's ``Extension(...)`` calls."""
    tree = ast.parse((REPO / "setup.py").read_text())
    sources = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Extension":
            sources.update(elt.value for elt in node.args[1].elts)
    return sources


def test_setup_declares_the_one_compiled_part():
    assert _extension_sources() == {"retinaface/_detect_kernels.c"}


def test_dockerfile_copies_every_c_source_before_the_install_that_compiles_it():
    lines = (REPO / "docker" / "Dockerfile").read_text().splitlines()
    install = next(i for i, line in enumerate(lines) if re.search(r"pip install .*-e ", line))
    copied_before = set()
    for line in lines[:install]:
        if line.startswith("COPY "):
            *sources, destination = line.split()[1:]
            for source in sources:
                copied_before.add(source)
    missing = sorted(source for source in _extension_sources() if source not in copied_before)
    assert not missing, f"docker/Dockerfile installs before copying {missing}: that part would not be built"

