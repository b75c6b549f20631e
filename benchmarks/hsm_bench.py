"""Soft-HSM microbenchmark: PIN verifications per second on one core.

Two scenarios, each over a pool of distinct cards so the work is not one cached
answer: ISO 9564 format 0 under a TDES TPK verified by Visa PVV, and format 4 under
an AES TPK verified by IBM 3624 offset. Keys are unwrapped once and then served from
the HSM's in-memory cache, as in the running switch.

    python -m benchmarks.hsm_bench [--iterations N] [--cards N]

Prints one JSON line. A benchmark, not a test: the target (< 50 µs per verification)
is reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from collections.abc import Sequence

from hsm.keys import KeyAlgorithm, KeyUsage, MasterKey
from hsm.results import HsmResult
from hsm.soft import PinVerification, SoftHsm
from hsm.terminal import encrypt_pin_block

# Published test keys (never production material).
TPK_TDES_HEX = "0123456789ABCDEFFEDCBA9876543210"
TPK_AES_HEX = "2B7E151628AED2A6ABF7158809CF4F3C"
PVK_HEX = "FEDCBA98765432100123456789ABCDEF"
TARGET_US = 50.0


def _luhn_pan(rng: random.Random) -> str:
    body = "4" + "".join(rng.choice("0123456789") for _ in range(14))
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return body + str((10 - total % 10) % 10)


def build_requests(hsm: SoftHsm, cards: int, seed: int = 8583) -> dict[str, list[PinVerification]]:
    rng = random.Random(seed)
    tpk = hsm.import_clear_key(KeyUsage.TPK, KeyAlgorithm.TDES2, TPK_TDES_HEX)
    tpk_aes = hsm.import_clear_key(KeyUsage.TPK, KeyAlgorithm.AES128, TPK_AES_HEX)
    pvk = hsm.import_clear_key(KeyUsage.PVK, KeyAlgorithm.TDES2, PVK_HEX)
    pvv_reqs, ibm_reqs = [], []
    for _ in range(cards):
        pan = _luhn_pan(rng)
        pin = "".join(rng.choice("0123456789") for _ in range(rng.choice((4, 4, 4, 6))))
        pvv = hsm.generate_pvv(pvk, pan, "1", pin)
        pvv_reqs.append(PinVerification(encrypt_pin_block(TPK_TDES_HEX, pin, pan, 0), pan, 0,
                                        tpk, "pvv", pvk, pvki="1", pvv=pvv))
        offset = hsm.generate_ibm3624_offset(pvk, pan, pin)
        ibm_reqs.append(PinVerification(encrypt_pin_block(TPK_AES_HEX, pin, pan, 4), pan, 4,
                                        tpk_aes, "ibm3624", pvk, offset=offset))
    return {"format0_pvv": pvv_reqs, "format4_ibm3624": ibm_reqs}


def measure(hsm: SoftHsm, requests: Sequence[PinVerification], iterations: int) -> dict[str, float]:
    for req in requests:  # warm the key cache and check every request verifies
        assert hsm.verify_pin(req) is HsmResult.OK, "benchmark request does not verify"
    count = len(requests)
    verify = hsm.verify_pin
    start = time.perf_counter()
    for i in range(iterations):
        verify(requests[i % count])
    elapsed = time.perf_counter() - start
    us = elapsed / iterations * 1e6
    return {"verifications_per_s": round(iterations / elapsed), "us_per_verification": round(us, 2)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--iterations", type=int, default=50_000)
    parser.add_argument("--cards", type=int, default=1_000)
    args = parser.parse_args(argv)
    if args.iterations <= 0 or args.cards <= 0:
        parser.error("--iterations and --cards must be positive")
    hsm = SoftHsm(MasterKey.demo())
    scenarios = {
        name: measure(hsm, reqs, args.iterations)
        for name, reqs in build_requests(hsm, args.cards).items()
    }
    report = {
        "benchmark": "hsm_pin_verification",
        "python": platform.python_version(),
        "iterations": args.iterations,
        "cards": args.cards,
        "target_us": TARGET_US,
        "scenarios": scenarios,
        "within_target": all(s["us_per_verification"] < TARGET_US for s in scenarios.values()),
    }
    sys.stdout.write(json.dumps(report, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
