"""The codec's modules compiled with mypyc at install (messages.compiled).

The rest of the suite tests the form in use, compiled after `make`. Here: that
the compiled form is in use when it should be and the source when it should not,
and that both forms give the same answers, so a machine without a C compiler (or
with ATM_SWITCH_PURE_PYTHON set) runs the same codec.
"""

from __future__ import annotations

import dataclasses
import importlib.machinery
import importlib.util
import inspect
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msg_strategies import (
    MUTATIONS,
    iso_messages,
    mutate,
    reversal_requests,
    transaction_requests,
)

import messages
from messages import codec, compiled, fields, framing, mti, views
from messages.codec import IsoMessage
from messages.errors import MessageError
from messages.profiles import ASCII, BINARY, Profile

PACKAGE_DIR = Path(messages.__file__).resolve().parent
PROFILES = [ASCII, BINARY]
EXTENSION_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)


def _source(name: str) -> ModuleType:
    """The module's source, loaded beside the form in use under another name."""
    alias = f"_source_of_messages_{name}"
    spec = importlib.util.spec_from_file_location(alias, PACKAGE_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[alias] = module  # dataclasses look their module up while decorating
    spec.loader.exec_module(module)
    return module


SOURCE_CODEC = _source("codec")
SOURCE_FRAMING = _source("framing")
SOURCE_MTI = _source("mti")
SOURCE_FIELDS = _source("fields")
SOURCE_VIEWS = _source("views")  # over the form in use of the modules it imports


def _c_compiler() -> bool:
    cc = sysconfig.get_config_var("CC") or ""
    return bool(cc) and shutil.which(cc.split()[0]) is not None


def _compiled_is_expected() -> bool:
    return os.environ.get(compiled.PURE_PYTHON_ENV, "") in ("", "0") and _c_compiler()


def _run_python(code: str, cwd: Path, **env: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.splitlines()


_SHOW = ("import messages.codec as c, messages.compiled as k; "
         "print(c.__file__); print(k.state())")


# --------------------------------------------------------------------------- which form


@pytest.mark.skipif(not _compiled_is_expected(),
                    reason="no C compiler, or the pure-Python form was asked for")
def test_the_installed_modules_are_compiled_and_in_use() -> None:
    # Fails when the install fell back to the source (the extensions are optional)
    # or a source was edited without installing again (`make` does).
    assert compiled.state() == "compiled (mypyc)"
    for module in (codec, framing, mti, fields, views):
        assert str(module.__file__).endswith(EXTENSION_SUFFIXES), module.__name__


def test_the_environment_variable_selects_the_source(tmp_path: Path) -> None:
    path, state = _run_python(_SHOW, tmp_path, ATM_SWITCH_PURE_PYTHON="1")
    assert path == str(PACKAGE_DIR / "codec.py")
    assert state == "pure Python (ATM_SWITCH_PURE_PYTHON is set)"


@pytest.mark.skipif(not str(codec.__file__).endswith(EXTENSION_SUFFIXES),
                    reason="the compiled form is not in use")
def test_a_source_that_differs_from_the_compiled_one_is_used_instead(tmp_path: Path) -> None:
    # A copy of the package (compiled modules included) ahead on the path, so the
    # checkout's own files keep their times.
    copy = tmp_path / "messages"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    path, state = _run_python(_SHOW, tmp_path, PYTHONPATH=str(tmp_path))
    assert path.startswith(str(copy)) and path.endswith(EXTENSION_SUFFIXES)
    assert state == "compiled (mypyc)"

    edited = copy / "mti.py"  # one of them edited after the install
    edited.write_text(edited.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
    path, state = _run_python(_SHOW, tmp_path, PYTHONPATH=str(tmp_path))
    assert path == str(copy / "codec.py")  # all of them from source, not only mti
    assert state == "pure Python (messages/mti.py differs from the one compiled (run make))"

    edited.write_text(edited.read_text(encoding="utf-8").removesuffix("# edited\n"),
                      encoding="utf-8")  # as compiled again: the time does not matter
    path, state = _run_python(_SHOW, tmp_path, PYTHONPATH=str(tmp_path))
    assert path.endswith(EXTENSION_SUFFIXES) and state == "compiled (mypyc)"

    (copy / compiled.RECORD_NAME).unlink()  # a build that failed part-way leaves none
    path, state = _run_python(_SHOW, tmp_path, PYTHONPATH=str(tmp_path))
    assert path == str(copy / "codec.py")
    assert state.startswith("pure Python (no record of the sources compiled")


# --------------------------------------------------------------------------- constructors


# Read from the sources: a compiled constructor shows no signature (the record's
# hashes make the compiled classes these).
SPELLED_OUT = [SOURCE_CODEC.IsoMessage, SOURCE_MTI.Mti, SOURCE_FIELDS.Pan,
               SOURCE_FIELDS.Track2, SOURCE_FIELDS.PinBlock, SOURCE_FIELDS.ProcessingCode,
               SOURCE_FIELDS.AdditionalAmount, SOURCE_VIEWS.TransactionRequest]


def _parameters(cls: type) -> list[tuple[str, object]]:
    """(name, default) of the constructor's parameters."""
    owner = next(klass for klass in cls.__mro__ if "__init__" in vars(klass))
    params = list(inspect.signature(vars(owner)["__init__"]).parameters.values())[1:]
    return [(p.name, p.default) for p in params]


@pytest.mark.parametrize("cls", SPELLED_OUT, ids=lambda c: c.__name__)
def test_spelled_out_constructors_take_exactly_the_fields(cls: type) -> None:
    # These classes write their __init__ (init=False) so that mypyc compiles it:
    # its parameters must be the dataclass fields, with the same defaults.
    def default(f: dataclasses.Field[object]) -> object:
        if f.default is not dataclasses.MISSING:
            return f.default
        if f.default_factory is not dataclasses.MISSING:
            return None  # built in the constructor (IsoMessage's fields)
        return inspect.Parameter.empty

    expected = {f.name: default(f) for f in dataclasses.fields(cls)}
    assert dict(_parameters(cls)) == expected
    assert len(_parameters(cls)) == len(expected)


# --------------------------------------------------------------------------- same answers


def _outcome(call: Callable[[], IsoMessage]) -> tuple[object, ...]:
    try:
        msg = call()
    except MessageError as exc:
        return ("refused", type(exc).__name__, str(exc))
    return ("decoded", msg.mti, dict(msg.fields), msg.checked)


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(msg=iso_messages())
def test_both_forms_encode_and_decode_alike(profile: Profile, msg: IsoMessage) -> None:
    raw = codec.encode(msg, profile)
    assert SOURCE_CODEC.encode(SOURCE_CODEC.IsoMessage(msg.mti, dict(msg.fields)),
                               profile) == raw
    assert _outcome(lambda: codec.decode(raw, profile)) == \
        _outcome(lambda: SOURCE_CODEC.decode(raw, profile))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    msg=iso_messages(),
    profile=st.sampled_from(PROFILES),
    **MUTATIONS,
)
def test_both_forms_refuse_alike(msg: IsoMessage, profile: Profile, position: int, byte: int,
                                 action: str) -> None:
    raw = mutate(codec.encode(msg, profile), position, byte, action)
    assert _outcome(lambda: codec.decode(raw, profile)) == \
        _outcome(lambda: SOURCE_CODEC.decode(raw, profile))


def _view(module: ModuleType, class_name: str, msg: IsoMessage) -> tuple[object, ...]:
    try:
        view = getattr(module, class_name).from_iso(msg)
    except MessageError as exc:
        return ("refused", type(exc).__name__, str(exc))
    back = view.to_iso()
    return ("read", dataclasses.asdict(view), back.mti, dict(back.fields))


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(request=st.one_of(transaction_requests(), reversal_requests()),
       drop=st.sets(st.integers(2, 128), max_size=3), code=st.sampled_from(["00", "05", "51"]))
def test_both_forms_read_and_answer_requests_alike(request: object, drop: set[int],
                                                   code: str) -> None:
    full = request.to_iso()  # type: ignore[attr-defined]
    msg = full.with_fields(dict.fromkeys(drop))  # some fields missing, mandatory ones too
    name = type(request).__name__
    assert _view(views, name, msg) == _view(SOURCE_VIEWS, name, msg)
    answers = [module.respond(full, code, approval_code="123456" if code == "00" else None)
               for module in (views, SOURCE_VIEWS)]
    assert [(a.mti, dict(a.fields)) for a in answers] == \
        [(answers[0].mti, dict(answers[0].fields))] * 2


def _frames(module: ModuleType, chunks: list[bytes], header: str) -> list[object]:
    framer = module.Framer(module.LengthHeader[header], frame_bytes_max=64)
    seen: list[object] = []
    for chunk in chunks:
        framer.feed(chunk)
        while True:
            try:
                frame = framer.next_frame()
            except MessageError as exc:
                seen.append(type(exc).__name__)
                if type(exc).__name__ != "EmptyFrame":
                    return seen
                continue
            if frame is None:
                break
            seen.append(frame.payload)
    return seen


@settings(max_examples=200, deadline=None)
@given(stream=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=8),
       header=st.sampled_from(["BINARY2", "ASCII4"]))
def test_both_forms_frame_a_stream_alike(stream: bytes, cuts: list[int], header: str) -> None:
    bounds = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]
    chunks = [stream[a:b] for a, b in pairwise(bounds)]
    assert _frames(framing, chunks, header) == _frames(SOURCE_FRAMING, chunks, header)


@given(text=st.text(alphabet="0123456789X ", max_size=5))
def test_both_forms_read_an_mti_alike(text: str) -> None:
    def read(module: ModuleType) -> tuple[object, ...]:
        try:
            parsed = module.Mti.parse(text)
        except MessageError as exc:
            return ("refused", str(exc))
        shown = (str(parsed), parsed.is_request, parsed.is_advice, parsed.is_repeat,
                 str(parsed.original()))
        try:
            return (*shown, str(parsed.response()))
        except MessageError as exc:
            return (*shown, "no response", str(exc))

    assert read(mti) == read(SOURCE_MTI)
