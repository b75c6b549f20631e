"""Which modules of this package are compiled with mypyc, and whether the compiled
ones are used.

``setup.py`` compiles the modules named in COMPILED_MODULES when the project is
installed and a C compiler is there (it reads this file's constants without
importing the package, so only the standard library may be imported here). They
are the per-message work: decode, encode, framing, the MTI, the field types and
the request and response views, which every request and answer goes through. The
source stays the reference: it is the same code, type-checked by mypy, and the
tests hold both forms to the same results.

A compiled module sits beside its source and Python would load it first, even
after the source changed. So the sources are used instead, all of them together
(compiled modules call each other directly), when:

- ``ATM_SWITCH_PURE_PYTHON`` is set to anything but ``0`` or an empty string;
- any source differs from the one compiled: the build records each source's
  SHA-256 in RECORD_NAME, and writes it only when every module was compiled
  (``make`` installs again after any change to the package).

:func:`state` says which, for the switch's start-up log and the benchmark report.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

COMPILED_MODULES = ("codec", "framing", "mti", "fields", "views")
GROUP_NAME = "messages_compiled"   # mypyc's shared library: messages_compiled__mypyc
RECORD_NAME = "compiled_sources.json"
PURE_PYTHON_ENV = "ATM_SWITCH_PURE_PYTHON"

_HERE = Path(__file__).resolve().parent
_PACKAGE = __name__.rpartition(".")[0]


def _extension(name: str) -> Path | None:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = _HERE / f"{name}{suffix}"
        if path.exists():
            return path
    return None


# Looked for once, at import: what the finder below and state() go by.
_EXTENSIONS = {name: _extension(name) for name in COMPILED_MODULES}


def _source_reason() -> str | None:
    """Why the sources are used although compiled modules are there (None: the
    compiled modules are used, or there are none)."""
    if os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0"):
        return f"{PURE_PYTHON_ENV} is set"
    if all(path is None for path in _EXTENSIONS.values()):
        return None
    missing = [name for name, path in _EXTENSIONS.items() if path is None]
    if missing:
        return f"{_PACKAGE}/{missing[0]}.py was not compiled (run make)"
    try:
        record = json.loads((_HERE / RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"no record of the sources compiled ({RECORD_NAME}; run make)"
    for name in COMPILED_MODULES:
        digest = hashlib.sha256((_HERE / f"{name}.py").read_bytes()).hexdigest()
        if not isinstance(record, dict) or record.get(f"{name}.py") != digest:
            return f"{_PACKAGE}/{name}.py differs from the one compiled (run make)"
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
    if any(path is None for path in _EXTENSIONS.values()):
        return "pure Python (not compiled at install)"
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    loaded = [sys.modules.get(f"{_PACKAGE}.{name}") for name in COMPILED_MODULES]
    if all(m is None or str(getattr(m, "__file__", "")).endswith(suffixes) for m in loaded):
        return "compiled (mypyc)"
    return "pure Python (not compiled at install)"
