"""Check avq_plugin/_native.pyi against the signatures pybind11 writes into the docstrings.

``python -m mypy.stubtest avq_plugin._native`` checks that the stub and the installed module have
the same names, classes and properties, but it cannot read the parameters of pybind11 functions
(they have no ``__text_signature__``). pybind11 puts them in the first docstring line,
``name(a: type, b: type = default) -> ret``; this script compares, for every function and method
of the stub, the parameter names, their order and which have defaults with that line (an unnamed
binding parameter, ``argN``, must be positional-only in the stub: ``def save(self, path: str, /)``).

Usage: python tools/check_native_stub.py   (against the installed avq_plugin; exit 1 on a mismatch)
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pathlib
import sys


def _split_params(text: str) -> list[str]:
    """Split a parameter list at the top-level commas (types hold brackets and commas)."""
    params, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif ch == "," and depth == 0:
            params.append(text[start:i].strip())
            start = i + 1
    if text[start:].strip():
        params.append(text[start:].strip())
    return params


def runtime_params(obj: object, name: str) -> list[tuple[str, bool]] | None:
    """(name, has_default) of each parameter from pybind11's docstring, without self; None if absent."""
    doc = inspect.getdoc(obj) or ""
    first = doc.splitlines()[0] if doc else ""
    if not first.startswith(name + "(") or ") -> " not in first:
        return None
    inner = first[len(name) + 1 : first.rindex(") -> ")]
    out = []
    for p in _split_params(inner):
        pname = p.split(":", 1)[0].strip()
        if pname != "self":
            out.append((pname, "=" in p.split(":", 1)[-1]))
    return out


def stub_params(fn: ast.FunctionDef) -> list[tuple[str, bool]]:
    """(name, has_default) of each parameter of a stub function, without self.

    A positional-only parameter is named ``argN`` (N its position), as pybind11 names a
    parameter declared without ``py::arg`` (which cannot be passed by keyword).
    """
    args = fn.args.posonlyargs + fn.args.args
    with_default = {a.arg for a in args[len(args) - len(fn.args.defaults) :]}
    with_default |= {a.arg for a, d in zip(fn.args.kwonlyargs, fn.args.kw_defaults) if d is not None}
    posonly = {a.arg for a in fn.args.posonlyargs}
    names = [a.arg for a in args + fn.args.kwonlyargs if a.arg != "self"]
    return [(f"arg{i}" if n in posonly else n, n in with_default) for i, n in enumerate(names)]


def main() -> int:
    module = importlib.import_module("avq_plugin._native")
    stub_path = pathlib.Path(importlib.import_module("avq_plugin").__file__).with_name("_native.pyi")
    tree = ast.parse(stub_path.read_text())
    problems, checked = [], 0

    def check(fn: ast.FunctionDef, owner: object, qualname: str) -> None:
        nonlocal checked
        if any(isinstance(d, ast.Name) and d.id == "property" for d in fn.decorator_list):
            return  # properties: stubtest checks them
        obj = getattr(owner, fn.name, None)
        if obj is None:
            problems.append(f"{qualname}: in the stub, not in the module")
            return
        runtime = runtime_params(obj, fn.name)
        if runtime is None:
            problems.append(f"{qualname}: no pybind11 signature in its docstring (overloaded?)")
            return
        checked += 1
        stub = stub_params(fn)
        if stub != runtime:
            problems.append(f"{qualname}:\n    stub:    {stub}\n    binding: {runtime}")

    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            check(node, module, node.name)
        elif isinstance(node, ast.ClassDef) and hasattr(module, node.name):
            cls = getattr(module, node.name)
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    check(item, cls, f"{node.name}.{item.name}")
    if problems:
        print(f"{stub_path.name} does not match the binding (parameter names, order, defaults):")
        print("\n".join("  " + p for p in problems))
        return 1
    print(f"{stub_path.name}: {checked} signatures match the binding")
    return 0


if __name__ == "__main__":
    sys.exit(main())
