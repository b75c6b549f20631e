"""The HSM benchmark runs and prints one JSON line (a smoke test; no timing asserted)."""

from __future__ import annotations

import json

import pytest

from benchmarks import hsm_bench


def test_benchmark_prints_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert hsm_bench.main(["--iterations", "40", "--cards", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert set(report["scenarios"]) == {"format0_pvv", "format4_ibm3624"}
    for scenario in report["scenarios"].values():
        assert scenario["verifications_per_s"] > 0
        assert scenario["us_per_verification"] > 0
