"""The build hook: everything about the project is in pyproject.toml except this.

When the project is installed, the modules named in ``messages/compiled.py`` are
compiled to C extensions with mypyc (pinned in ``[build-system]``), one mypyc group
per package: the switch's CPU per authorization was 8-23% lower in the benchmarks
with the codec compiled, and 15-17% lower again with the HSM, ledger and pipeline
modules (BENCHMARKS.md). The extensions are optional: with no C compiler, or with
ATM_SWITCH_PURE_PYTHON set, the install carries on and the same modules run as
plain Python.

Beside each package's compiled modules the build writes the SHA-256 of each source
it compiled (``RECORD_NAME``); the package uses its compiled modules only while
their sources still match it (messages/compiled.py).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent


def _constant(name: str) -> Any:
    """A constant of messages/compiled.py, read without importing the package (its
    dependencies are not in the build environment)."""
    tree = ast.parse((HERE / "messages" / "compiled.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return ast.literal_eval(value)
    raise RuntimeError(f"messages/compiled.py has no {name}")


MODULES: dict[str, tuple[str, ...]] = _constant("COMPILED_MODULES")
GROUP_SUFFIX: str = _constant("GROUP_SUFFIX")
RECORD_NAME: str = _constant("RECORD_NAME")
PURE_PYTHON_ENV: str = _constant("PURE_PYTHON_ENV")


class _BuildExt(build_ext):
    """build_ext that records, package by package, which sources the compiled
    modules were built from, and only when every module of the package was built."""

    def run(self) -> None:
        for package in MODULES:
            for target in self._records(package):  # a failed build leaves no old record
                target.unlink(missing_ok=True)
        self._built: set[str] = set()
        super().run()
        for package, modules in MODULES.items():
            if {f"{package}.{m}" for m in modules} - self._built:
                continue  # no C compiler (a warning was printed): the sources are used
            digests = {f"{m}.py": hashlib.sha256(
                (HERE / package / f"{m}.py").read_bytes()).hexdigest() for m in modules}
            for target in self._records(package):
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n",
                                  encoding="utf-8")

    def _records(self, package: str) -> list[Path]:
        targets = [Path(self.build_lib) / package / RECORD_NAME]
        if self.inplace:
            targets.append(HERE / package / RECORD_NAME)
        return targets

    def build_extension(self, ext: Extension) -> None:
        super().build_extension(ext)  # raises when it fails
        self._built.add(ext.name)


def _extensions() -> list[Extension]:
    if os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:  # built without the [build-system] requirements
        return []
    # One mypyc build per package: a package's modules call each other directly and
    # other packages through Python, so each package can fall back to its sources alone.
    extensions: list[Extension] = []
    for package, modules in MODULES.items():
        extensions += mypycify([f"{package}/{m}.py" for m in modules], opt_level="3",
                               group_name=f"{package}{GROUP_SUFFIX}")
    for extension in extensions:
        extension.optional = True  # no C compiler: a warning, and the source is used
    return extensions


setup(ext_modules=_extensions(), cmdclass={"build_ext": _BuildExt})
