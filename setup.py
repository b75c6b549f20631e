"""The build hook: everything about the project is in pyproject.toml except this.

When the project is installed, the modules named in ``messages/compiled.py`` are
compiled to C extensions with mypyc (pinned in ``[build-system]``): the switch's
CPU per authorization was 8-23% lower in the benchmarks (BENCHMARKS.md). The
extensions are optional: with no C compiler, or with ATM_SWITCH_PURE_PYTHON set,
the install carries on and the same modules run as plain Python.

Beside the compiled modules the build writes the SHA-256 of each source it
compiled (``RECORD_NAME``); the package uses the compiled modules only while
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
PACKAGE = "messages"


def _constant(name: str) -> Any:
    """A constant of messages/compiled.py, read without importing the package (its
    dependencies are not in the build environment)."""
    tree = ast.parse((HERE / PACKAGE / "compiled.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise RuntimeError(f"messages/compiled.py has no {name}")


MODULES: tuple[str, ...] = _constant("COMPILED_MODULES")
GROUP: str = _constant("GROUP_NAME")
RECORD_NAME: str = _constant("RECORD_NAME")
PURE_PYTHON_ENV: str = _constant("PURE_PYTHON_ENV")


class _BuildExt(build_ext):
    """build_ext that records which sources the compiled modules were built from,
    and only when every one of them was built."""

    def run(self) -> None:
        targets = [Path(self.build_lib) / PACKAGE / RECORD_NAME]
        if self.inplace:
            targets.append(HERE / PACKAGE / RECORD_NAME)
        for target in targets:  # a failed build leaves no record of an older one
            target.unlink(missing_ok=True)
        self._built: set[str] = set()
        super().run()
        if {ext.name for ext in self.extensions} - self._built:
            return  # no C compiler (a warning was printed): the sources are used
        digests = {f"{name}.py": hashlib.sha256(
            (HERE / PACKAGE / f"{name}.py").read_bytes()).hexdigest() for name in MODULES}
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n",
                              encoding="utf-8")

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
    extensions: list[Extension] = mypycify(
        [f"{PACKAGE}/{name}.py" for name in MODULES], opt_level="3", group_name=GROUP)
    for extension in extensions:
        extension.optional = True  # no C compiler: a warning, and the source is used
    return extensions


setup(ext_modules=_extensions(), cmdclass={"build_ext": _BuildExt})
