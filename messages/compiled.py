"""Which modules are compiled with mypyc, and whether the compiled ones are used.

``setup.py`` compiles the modules named in COMPILED_MODULES when the project is
installed and a C compiler is there (it reads this file's constants without
importing the package, so only the standard library may be imported here). They
are the per-request work, package by package:

- ``messages``: decode, encode, framing, the MTI, the field types and the request
  and response views, which every request and answer goes through;
- ``ledger``: the operations and results, the store's calls and the group commit;
- ``switch``: the authorization pipeline, its decisions and its caches.

The source stays the reference: it is the same code, type-checked by mypy, and the
tests hold both forms to the same results. Each package is one mypyc group (its
shared library ``<package>_compiled__mypyc``): its compiled modules call each other
directly and call other packages as any Python caller does, so one package can
run from source while the others run compiled.

A compiled module sits beside its source and Python would load it first, even
after the source changed. So a package's sources are used instead, all of its
compiled ones together, when:

- ``ATM_SWITCH_PURE_PYTHON`` is set to anything but ``0`` or an empty string
  (every package);
- any of its sources differs from the one compiled: the build records each
  source's SHA-256 in the package's RECORD_NAME, and writes it only when every
  module of the package was compiled (``make`` installs again after any change).

Each package calls :func:`guard` from its ``__init__`` before any of its modules is
imported. :func:`state` says which form is in use, for the switch's start-up log and
the benchmark report.
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

COMPILED_MODULES: dict[str, tuple[str, ...]] = {
    "messages": ("codec", "framing", "mti", "fields", "views"),
    "ledger": ("model", "batch", "store"),
    "switch": ("cache", "decisions", "pipeline"),
}
GROUP_SUFFIX = "_compiled"   # mypyc's shared library per package: messages_compiled__mypyc
RECORD_NAME = "compiled_sources.json"
PURE_PYTHON_ENV = "ATM_SWITCH_PURE_PYTHON"
COMPILED = "compiled (mypyc)"


def _extension(directory: Path, name: str) -> Path | None:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = directory / f"{name}{suffix}"
        if path.exists():
            return path
    return None


class _Package:
    """One package's compiled modules: found once, when the package is imported."""

    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.directory = directory
        self.modules = COMPILED_MODULES[name]
        self.extensions = {m: _extension(directory, m) for m in self.modules}
        self.reason = self._source_reason()

    def _source_reason(self) -> str | None:
        """Why the sources are used although compiled modules are there (None: the
        compiled modules are used, or there are none)."""
        if os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0"):
            return f"{PURE_PYTHON_ENV} is set"
        if all(path is None for path in self.extensions.values()):
            return None
        missing = [m for m, path in self.extensions.items() if path is None]
        if missing:
            return f"{self.name}/{missing[0]}.py was not compiled (run make)"
        try:
            record = json.loads((self.directory / RECORD_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return f"no record of the sources compiled ({RECORD_NAME}; run make)"
        for module in self.modules:
            digest = hashlib.sha256((self.directory / f"{module}.py").read_bytes()).hexdigest()
            if not isinstance(record, dict) or record.get(f"{module}.py") != digest:
                return f"{self.name}/{module}.py differs from the one compiled (run make)"
        return None

    def state(self) -> str:
        if self.reason is not None:
            return f"pure Python ({self.reason})"
        if any(path is None for path in self.extensions.values()):
            return "pure Python (not compiled at install)"
        suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
        loaded = [sys.modules.get(f"{self.name}.{m}") for m in self.modules]
        if all(m is None or str(getattr(m, "__file__", "")).endswith(suffixes)
               for m in loaded):
            return COMPILED
        return "pure Python (not compiled at install)"


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Finds one package's compiled modules' sources ahead of the compiled files."""

    def __init__(self, package: _Package) -> None:
        self._package = package

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != self._package.name or name not in self._package.modules:
            return None
        return importlib.util.spec_from_file_location(
            fullname, self._package.directory / f"{name}.py")


_GUARDED: dict[str, _Package] = {}


def guard(package: str, init_file: str) -> None:
    """Decide, once, whether ``package`` loads its compiled modules or their sources.
    Called from the package's ``__init__`` (``init_file`` is its ``__file__``)."""
    if package in _GUARDED:
        return
    found = _GUARDED[package] = _Package(package, Path(init_file).resolve().parent)
    if found.reason is not None:
        sys.meta_path.insert(0, _SourceFirst(found))


def state() -> str:
    """"compiled (mypyc)" when every package imported so far runs compiled; otherwise
    "pure Python" and why, for each package whose form is not the compiled one."""
    states = {name: package.state() for name, package in _GUARDED.items()}
    if all(s == COMPILED for s in states.values()):
        return COMPILED
    if len(set(states.values())) == 1:
        return next(iter(states.values()))
    return "; ".join(f"{name}: {s}" for name, s in states.items())


guard(__name__.rpartition(".")[0], str(Path(__file__).with_name("__init__.py")))
