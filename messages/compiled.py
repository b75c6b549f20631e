"""Which modules of this package are compiled with mypyc, and whether the compiled
ones are used.

``setup.py`` compiles the modules named in COMPILED_MODULES when the project is
installed and a C compiler is there (it reads this file without importing the
package, so only the standard library may be imported here). They are the
codec's per-message work: decode, encode, framing and the MTI, which every
request and answer goes through. The source stays the reference: it is the same
code, type-checked by mypy, and the tests hold both forms to the same results.

A compiled module sits beside its source and Python would load it first, even
after the source changed. So the source is used instead, for all of them
together (compiled modules call each other directly), when:

- ``ATM_SWITCH_PURE_PYTHON`` is set to anything but ``0`` or an empty string;
- any of their sources is newer than its compiled module (edited, or checked
  out, since the last install: ``make`` installs again).

:func:`state` says which, for the switch's start-up log and the benchmark report.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

COMPILED_MODULES = ("codec", "framing", "mti")
PURE_PYTHON_ENV = "ATM_SWITCH_PURE_PYTHON"

_HERE = Path(__file__).resolve().parent
_PACKAGE = __name__.rpartition(".")[0]


def _extension(name: str) -> Path | None:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = _HERE / f"{name}{suffix}"
        if path.exists():
            return path
    return None


def _source_reason() -> str | None:
    """Why the source is used although compiled modules are there (None: they are
    used, or there are none)."""
    if os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0"):
        return f"{PURE_PYTHON_ENV} is set"
    for name in COMPILED_MODULES:
        extension = _extension(name)
        if extension is not None and \
                extension.stat().st_mtime < (_HERE / f"{name}.py").stat().st_mtime:
            return f"{_PACKAGE}/{name}.py is newer than its compiled module (run make)"
    return None


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Finds the compiled modules' sources ahead of the compiled files."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != _PACKAGE or name not in COMPILED_MODULES:
            return None
        return importlib.util.spec_from_file_location(fullname, _HERE / f"{name}.py")


_reason = _source_reason()
if _reason is not None and not any(isinstance(f, _SourceFirst) for f in sys.meta_path):
    sys.meta_path.insert(0, _SourceFirst())


def state() -> str:
    """"compiled (mypyc)", or "pure Python" and why."""
    if _reason is not None:
        return f"pure Python ({_reason})"
    if all(_extension(name) is not None for name in COMPILED_MODULES):
        loaded = [sys.modules.get(f"{_PACKAGE}.{name}") for name in COMPILED_MODULES]
        if all(m is None or str(getattr(m, "__file__", "")).endswith(
                tuple(importlib.machinery.EXTENSION_SUFFIXES)) for m in loaded):
            return "compiled (mypyc)"
    return "pure Python (not compiled at install)"
