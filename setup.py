"""The build hook: everything about the project is in pyproject.toml except this.

When the project is installed, the modules named in ``messages/compiled.py`` are
compiled to C extensions with mypyc (pinned in ``[build-system]``), which takes
about a third off the codec's CPU per message. The extensions are optional: with
no C compiler, or with ATM_SWITCH_PURE_PYTHON set, the install carries on and the
same modules run as plain Python.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).resolve().parent


def _compiled_modules() -> tuple[str, ...]:
    # Read, not imported: the package's dependencies are not in the build environment.
    tree = ast.parse((HERE / "messages" / "compiled.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "COMPILED_MODULES" for t in node.targets):
            names = ast.literal_eval(node.value)
            assert isinstance(names, tuple) and all(isinstance(n, str) for n in names)
            return names
    raise RuntimeError("messages/compiled.py names no COMPILED_MODULES")


def _extensions() -> list[Extension]:
    if os.environ.get("ATM_SWITCH_PURE_PYTHON", "") not in ("", "0"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:  # built without the [build-system] requirements
        return []
    extensions: list[Extension] = mypycify(
        [f"messages/{name}.py" for name in _compiled_modules()], opt_level="3",
        group_name="messages_compiled")
    for extension in extensions:
        extension.optional = True  # no C compiler: a warning, and the source is used
    return extensions


setup(ext_modules=_extensions())
