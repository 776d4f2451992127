"""The shape of the package: the import graph of src/napari_reg has no cycle, no module is
over 400 lines, the core stays free of GUI and file-format libraries, and the front door
(``from napari_reg import register, ...``) does not load napari or Qt.

The graph is read from the source with ``ast`` (every ``import`` statement, including
those inside functions: a lazy import that closes a circle is still a circle in the
design), not from what happens to be imported at run time.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "napari_reg"
MAX_LINES = 400

# Modules still over the limit while other work splits them (the lead shrinks this list;
# a module that gets under the limit needs no change here).
KNOWN_OVER_LIMIT: set[str] = set()
# Import cycles still being untangled (each a set of modules that reach each other).
KNOWN_CYCLES: list[set[str]] = []
# Third-party packages the registration core must never import (GUI, file formats).
CORE_FORBIDDEN = {"napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui",
                  "nibabel", "superqt", "vispy"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def _is_type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _imports(name: str, path: Path, modules: set[str] | frozenset[str] = frozenset()
             ) -> list[str]:
    """Absolute names of what ``path`` imports: ``from a import b`` gives ``a.b`` when
    that is one of ``modules``, else ``a`` (b is then a name defined in a)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if _is_type_checking_block(node):
            return  # annotations only: never executed
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                submodule = f"{module}.{alias.name}"
                found.append(submodule if submodule in modules else module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {i for i in _imports(name, path, set(modules)) if i in modules} - {name}
            for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    counter = [0]

    def connect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_the_graph_reader_sees_relative_and_lazy_imports(tmp_path):
    """The checker itself: a relative import inside a function is an edge, a
    TYPE_CHECKING-only import is not, and a two-module circle is found."""
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import c\n"
              "def f():\n    from .b import g\n")
    (tmp_path / "a.py").write_text(source)
    found = _imports("pkg.sub.a", tmp_path / "a.py", {"pkg.sub.b", "pkg.sub.c"})
    assert found == ["typing", "pkg.sub.b"]
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [{"a", "b"}]


def test_no_import_cycle():
    cycles = [c for c in _cycles(_graph()) if c not in KNOWN_CYCLES]
    assert not cycles, f"import cycles: {[sorted(c) for c in cycles]}"


def test_no_module_over_the_line_limit():
    too_long = {}
    for name, path in _modules().items():
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES and name not in KNOWN_OVER_LIMIT:
            too_long[name] = n
    assert not too_long, f"modules over {MAX_LINES} lines (split them by concept): {too_long}"


def test_core_imports_no_gui_and_no_file_formats():
    bad = {}
    for name, path in _modules().items():
        if not name.startswith(f"{PACKAGE}.core"):
            continue
        roots = {imported.split(".")[0] for imported in _imports(name, path)}
        if roots & CORE_FORBIDDEN:
            bad[name] = sorted(roots & CORE_FORBIDDEN)
        if any(i.startswith(f"{PACKAGE}.") and not i.startswith(f"{PACKAGE}.core")
               for i in _imports(name, path)):
            bad[name] = bad.get(name, []) + ["napari_reg outside core"]
    assert not bad, f"core modules importing GUI / file-format code: {bad}"


@pytest.mark.parametrize("names", [
    "register, resample, load_volume, save_volume, read_transform, write_transform",
    "RegistrationResult, RegistrationError, CancelToken, Volume",
])
def test_front_door_imports_without_napari_or_qt(names):
    code = (f"import sys; from napari_reg import {names}; "
            "loaded = sorted(m for m in ('napari', 'qtpy', 'PyQt5', 'magicgui') "
            "if m in sys.modules); assert not loaded, loaded")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": str(SRC), "PATH": ""})
    assert done.returncode == 0, done.stderr


def test_plain_package_import_is_cheap():
    """napari imports the package to find the plugin: that must not load the core."""
    code = ("import sys, napari_reg; heavy = sorted(m for m in sys.modules if "
            "m.startswith(('napari_reg.core', 'napari_reg.io', 'scipy', 'nibabel'))); "
            "assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": str(SRC), "PATH": ""})
    assert done.returncode == 0, done.stderr


def test_every_refusal_error_is_a_napari_reg_error():
    """Each module's own error type derives from the one root, so callers catch one type
    (read from the source, so a new ``class XError(ValueError)`` fails here)."""
    plain = {}
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and node.name.endswith(("Error", "Refused")):
                bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
                if "ValueError" in bases and node.name != "NapariRegError":
                    plain[f"{name}.{node.name}"] = sorted(bases)
    assert not plain, f"errors deriving from ValueError instead of NapariRegError: {plain}"
    code = ("from napari_reg import NapariRegError, RegistrationError; "
            "from napari_reg.core.image import VolumeError; "
            "from napari_reg.io.transforms._common import TransformFileError; "
            "assert issubclass(RegistrationError, NapariRegError); "
            "assert issubclass(VolumeError, NapariRegError); "
            "assert issubclass(TransformFileError, NapariRegError); "
            "assert issubclass(NapariRegError, ValueError)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": str(SRC), "PATH": ""})
    assert done.returncode == 0, done.stderr
