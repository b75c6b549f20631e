from __future__ import annotations

import json
import logging

import pytest

from switch.logs import JsonFormatter, ScrubFilter, scrub

PAN = "4761739001010119"


def test_scrub_masks_luhn_valid_pans_only() -> None:
    assert scrub(f"card {PAN} declined") == "card 476173******0119 declined"
    assert scrub("stan 0000000000123 ok") == "stan 0000000000123 ok"


def test_scrub_hides_track2_and_key_hex() -> None:
    assert "4761739001010119" not in scrub(f"t2 {PAN}=28121010000000000")
    assert scrub("key 0123456789ABCDEFFEDCBA9876543210 loaded") == "key <hex> loaded"


def test_log_records_are_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.scrub")
    record = logger.makeRecord("test.scrub", logging.INFO, __file__, 1,
                               "pan %s pinblock %s", (PAN, "0412AC89ABCDEF67"), None)
    ScrubFilter().filter(record)
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert PAN not in line
    assert "0412AC89ABCDEF67" not in line
    assert entry["msg"].startswith("pan 476173")
