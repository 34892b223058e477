"""Layering (issue 13 section 2): only the index modules build or touch a native index.

``_native`` is imported by ``index.py`` and its private parts (``_index_*.py``), by ``exact.py``,
and, for module-level facts (limits, build information, SIMD level), by ``__init__.py`` and
``_validation.py``; the wrapped native object (``._index``) is touched only by the index modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "avq_plugin"
INDEX_MODULES = {"index.py", "exact.py", "_wrapper.py"} | {p.name for p in PACKAGE.glob("_index_*.py")}
NATIVE_IMPORTERS = INDEX_MODULES | {"__init__.py", "_validation.py"}


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "data" not in p.relative_to(PACKAGE).parts)


def _imports_native(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if (node.module or "").endswith("_native") or any(a.name == "_native" for a in node.names):
                return True
        elif isinstance(node, ast.Import) and any(a.name.endswith("._native") for a in node.names):
            return True
    return False


def test_only_the_index_modules_import_native():
    offenders = [
        str(p.relative_to(PACKAGE))
        for p in _modules()
        if _imports_native(ast.parse(p.read_text())) and not (p.parent == PACKAGE and p.name in NATIVE_IMPORTERS)
    ]
    assert offenders == []
    assert {"_index_base.py", "_index_io.py", "_index_protected.py"} <= INDEX_MODULES  # the index's private parts


def test_only_the_index_modules_touch_the_native_object():
    offenders = []
    for p in _modules():
        if p.parent == PACKAGE and p.name in INDEX_MODULES:
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "_index":
                offenders.append(f"{p.relative_to(PACKAGE)}:{node.lineno}")
    assert offenders == []
