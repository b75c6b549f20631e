"""Run the real switch as a separate process, for end-to-end and fault tests.

`SwitchProcess` starts `python -m switch.cli serve` on free loopback ports
against a given database DSN, waits until /readyz answers 200, and can stop it
gracefully (SIGTERM), kill it (SIGKILL) and start it again on the same ports.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from switch.demo import DEMO_ACQUIRER, DEMO_TAK, DEMO_TMK, DEMO_TPK, demo_pan

READY_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def switch_env(dsn: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATM_SWITCH_")}
    env["ATM_SWITCH_DATABASE_URL"] = dsn
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def run_cli(args: list[str], dsn: str, *, timeout_s: float = 60.0,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "switch.cli", *args],
                          env=switch_env(dsn, env), capture_output=True, text=True,
                          timeout=timeout_s, check=False)


@dataclass
class SwitchProcess:
    dsn: str
    workdir: Path
    config_text: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    ports: dict[str, int] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / "switch.log"

    def start(self) -> None:
        args = [sys.executable, "-m", "switch.cli", "serve",
                "--listen", f"127.0.0.1:{self.port}",
                "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
                "--data-dir", str(self.workdir / "state")]
        if self.config_text is not None:
            path = self.workdir / "switch.toml"
            path.write_text(self.config_text, encoding="utf-8")
            args += ["--config", str(path)]
        args += self.extra_args
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(args, env=switch_env(self.dsn, self.env), stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.starts += 1
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"switch exited with {self.proc.returncode}:\n"
                                   + self.log_path.read_text(errors="replace")[-4000:])
            try:
                with urllib.request.urlopen(self.url("/readyz"), timeout=1.0) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError("switch did not become ready:\n"
                           + self.log_path.read_text(errors="replace")[-4000:])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.metrics_port}{path}"

    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.url("/metrics"), timeout=5.0) as resp:
            return str(resp.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples called ``name`` (e.g. ``atm_switch_replays_total``)
        whose labels include ``labels``, from /metrics now (blocking)."""
        total = 0.0
        for family in text_string_to_metric_families(self.metrics_text()):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v
                                               for k, v in labels.items()):
                    total += float(sample.value)
        return total

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        code = self.proc.returncode
        self.proc = None
        return int(code)

    def kill(self) -> None:
        """SIGKILL: no shutdown at all, as a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# -- test data ---------------------------------------------------------------

TPK = DEMO_TPK
TMK = DEMO_TMK
TAK = DEMO_TAK
ACQUIRER = DEMO_ACQUIRER


def card(n: int, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"pan": demo_pan(n), "expiry": "3012", "pin": "1234",
                             "balance": 100_000, "currency": "840", "daily_limit": 500_000}
    entry.update(extra)
    return entry


def write_provisioning(path: Path, terminals: list[dict[str, Any]],
                       cards: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"terminals": terminals, "cards": cards}), encoding="utf-8")
    return path


def terminal(tid: str, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": tid, "tpk": TPK, "tmk": TMK, "acquirer": ACQUIRER,
                             "cash": 50_000_000}
    entry.update(extra)
    return entry
