"""The tree's import hygiene: no file edits ``sys.path``, and the package's modules import each other without a
cycle (module-level imports; an import inside a function runs when it is called, after both modules loaded)."""

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "modeling_lact_audio"
# Generated or third-party trees: the environment, build output, data, and the exported model folders (their
# code is byte-checked against the package by tests/scripts/test_export_checkpoint.py).
SKIPPED = {".venv", "build", ".git", "data", "cache", "outputs", "checkpoints", "node_modules", "site"}


def _python_files(root: Path = ROOT) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if not SKIPPED & set(p.relative_to(root).parts[:-1]))


def _sys_path_edits(tree: ast.AST) -> list[int]:
    """Lines that change ``sys.path`` (assign to it or to an item, call a mutating method) or call
    ``site.addsitedir``."""
    lines = []
    is_sys_path = lambda node: (
        isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    )
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if is_sys_path(target) or (isinstance(target, ast.Subscript) and is_sys_path(target.value)):
                    lines.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner, method = node.func.value, node.func.attr
            if is_sys_path(owner) and method in {"insert", "append", "extend", "remove", "pop", "clear"}:
                lines.append(node.lineno)
            if isinstance(owner, ast.Name) and owner.id == "site" and method == "addsitedir":
                lines.append(node.lineno)
    return sorted(lines)


def test_no_file_edits_sys_path():
    offenders = {}
    for path in _python_files():
        lines = _sys_path_edits(ast.parse(path.read_text(), str(path)))
        if lines:
            offenders[str(path.relative_to(ROOT))] = lines
    assert not offenders, f"files that edit sys.path (import from the installed package instead): {offenders}"


# setup.py's package_dir: the folders installed as subpackages of PACKAGE
INSTALLED_AS = {PACKAGE: PACKAGE, "processors": f"{PACKAGE}.processors", "kernels": f"{PACKAGE}.kernels"}


def _module_name(path: Path, root: Path, installed_as: dict) -> str | None:
    """The installed module name of a file of the package (None for a file outside it)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[0] not in installed_as:
        return None
    parts = installed_as[parts[0]].split(".") + parts[1:]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(tree: ast.Module) -> list[ast.stmt]:
    """Import statements that run when the module is imported: at top level and inside top-level ``if``/``try``
    (``if TYPE_CHECKING:`` blocks excluded: they never run)."""
    found, pending = [], list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If):
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                pending += node.body + node.orelse
        elif isinstance(node, ast.Try):
            pending += node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body]
    return found


def import_graph(root: Path = ROOT, installed_as: dict = INSTALLED_AS) -> dict[str, set[str]]:
    """``{module: the package modules it imports at import time}`` for every module under ``root`` whose top
    folder ``installed_as`` maps to an installed package name."""
    names = {p: _module_name(p, root, installed_as) for p in _python_files(root)}
    files = {name: p for p, name in names.items() if name is not None}
    graph = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        edges = set()
        for node in _top_level_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = name.split(".")
                    base = base[: len(base) - node.level + (1 if is_package else 0)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module
                # `from pkg import sub` imports the module pkg.sub when there is one, else a name of pkg
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in files else module for a in node.names]
            for target in targets:
                while target and target not in files:  # `import a.b.c` of a name: its nearest module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 50 and "modeling_lact_audio.kernels.chunk" in graph
    assert "modeling_lact_audio.modeling_lact_audio" in graph["modeling_lact_audio.quantization"]
    assert "modeling_lact_audio.kernels" in graph["modeling_lact_audio.lact_ops"]  # through the try block
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        pytest.fail(f"import cycle in the package: {' -> '.join(error.args[1])}")


def test_the_checks_catch_what_they_look_for():
    edits = ast.parse("import sys, site\nsys.path.insert(0, 'x')\nsys.path = []\nsite.addsitedir('y')\nsys.path[0]='z'")
    assert _sys_path_edits(edits) == [2, 3, 4, 5]
    assert _sys_path_edits(ast.parse("import sys\nprint(sys.path)\nfrom os import path\npath.join('a')")) == []
    lazy = ast.parse(
        "import os\nif TYPE_CHECKING:\n    import typing\ndef f():\n    import json\n"
        "try:\n    import re\nexcept ImportError:\n    pass"
    )
    assert sorted(n.names[0].name for n in _top_level_imports(lazy)) == ["os", "re"]


def test_the_graph_finds_a_cycle_through_relative_and_mapped_imports(tmp_path):
    """A package on disk: pkg/a imports the mapped subpackage pkg.ops (folder ops/) with ``from .ops import``,
    ops/__init__ imports pkg.b, and b imports a with ``from . import a``: a cycle a -> ops -> b -> a. A lazy
    import inside a function (c -> a) and a TYPE_CHECKING import (a -> c) are no edges."""
    files = {
        "pkg/__init__.py": "",
        "pkg/a.py": "from typing import TYPE_CHECKING\nfrom .ops import run\nif TYPE_CHECKING:\n    from . import c\n",
        "pkg/b.py": "import os\nfrom . import a\n",
        "pkg/c.py": "def f():\n    from .a import run\n",
        "ops/__init__.py": "from pkg.b import thing\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path, {"pkg": "pkg", "ops": "pkg.ops"})
    assert graph == {
        "pkg": set(),
        "pkg.a": {"pkg.ops"},
        "pkg.b": {"pkg.a"},
        "pkg.c": set(),
        "pkg.ops": {"pkg.b"},
    }
    with pytest.raises(graphlib.CycleError):
        tuple(graphlib.TopologicalSorter(graph).static_order())
