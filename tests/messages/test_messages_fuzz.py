"""A small run of the fuzz script, so the contract check itself stays working."""

from __future__ import annotations

import pytest

from benchmarks.fuzz_messages import main, run, seed_messages
from messages.codec import decode, encode
from messages.profiles import ASCII


def test_small_fuzz_run_holds_the_contract() -> None:
    report = run(count=3000, seed=7)
    assert report.inputs == 3000
    assert report.decoded + report.decode_errors == report.inputs
    assert report.decoded > 300 and report.decode_errors > 300  # both paths exercised
    assert report.views_parsed > 0 and report.field_errors > 0


def test_seed_messages_are_valid() -> None:
    for msg in seed_messages():
        assert decode(encode(msg, ASCII), ASCII) == msg


def test_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--count", "200", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "inputs            200" in out and "contract          held" in out
