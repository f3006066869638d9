"""A throwaway PostgreSQL server for the tests, started on first use and stopped when the session ends.

``initdb`` into a fresh temporary folder, ``pg_ctl start`` listening on 127.0.0.1 at a free port and on a
unix socket inside that folder, ``fsync=off`` and small buffers (nothing here needs to survive a crash),
trust authentication (only this machine can reach it). PostgreSQL refuses to run as root, so as root the
folder is handed to the OS user ``postgres`` (or ``nobody``) and ``initdb``/``pg_ctl`` run as that user.

Two roles: the bootstrap superuser ``postgres`` (:attr:`PostgresServer.admin_url`, for the fixtures' own
``CREATE``/``DROP DATABASE``) and ``shopsense``, a plain login role that owns every test database, as a
deployed shopsense would own its database without being a superuser.

The binaries come from ``$PG_BINDIR``, else ``initdb`` on ``PATH``, else ``pg_config --bindir``, else the
usual install folders. Without them a test that asks for the server is skipped with one line saying how to
enable it, except under ``CI=true``, where a missing or failing PostgreSQL is a failure.

psycopg is imported only when a server is wanted, so the rest of the suite does not pay for it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

MIN_MAJOR = 15
SUPERUSER = "postgres"
ROLE = "shopsense"
"""The role that owns each test database (login, CREATEDB, no superuser)."""
HOST = "127.0.0.1"
START_TIMEOUT_S = 60
ENABLE_HINT = (
    f"PostgreSQL tests skipped: install the PostgreSQL {MIN_MAJOR}+ server binaries "
    "(initdb, pg_ctl, postgres; e.g. apt install postgresql-15) or point PG_BINDIR at them"
)


class PostgresUnavailable(Exception):
    """No usable PostgreSQL binaries on this machine."""


class PostgresStartFailed(Exception):
    """The binaries are there but the server did not come up."""


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


# -- finding the binaries ---------------------------------------------------------------------


def _candidate_bindirs() -> Iterator[Path]:
    if os.environ.get("PG_BINDIR"):
        yield Path(os.environ["PG_BINDIR"])
        return  # an explicit choice is not second-guessed
    on_path = shutil.which("initdb")
    if on_path:
        yield Path(os.path.realpath(on_path)).parent  # Debian's /usr/local/bin links point into the real bindir
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            pass
        else:
            yield Path(out.stdout.strip())

    def version(bindir: Path) -> int:
        digits = re.sub(r"\D", "", bindir.parent.name)
        return int(digits) if digits else 0

    yield from sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)  # Debian, Ubuntu
    yield from sorted(Path("/usr").glob("pgsql-*/bin"), key=version, reverse=True)  # RHEL, Fedora
    for folder in ("/usr/local/pgsql/bin", "/opt/homebrew/opt/postgresql@15/bin", "/usr/local/opt/postgresql@15/bin"):
        yield Path(folder)


def find_bindir() -> tuple[Path, int]:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres`` of version 15 or newer, and that version.

    Raises:
        PostgresUnavailable: none found (the message says what was looked at).
    """
    seen: list[str] = []
    for bindir in _candidate_bindirs():
        if not all(os.access(bindir / exe, os.X_OK) for exe in ("initdb", "pg_ctl", "postgres")):
            continue
        try:
            out = subprocess.run([str(bindir / "initdb"), "--version"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError) as exc:
            seen.append(f"{bindir} ({exc})")
            continue
        match = re.search(r"(\d+)(?:\.\d+)?", out.stdout)
        major = int(match.group(1)) if match else 0
        if major >= MIN_MAJOR:
            return bindir, major
        seen.append(f"{bindir} (version {out.stdout.strip() or '?'})")
    found = f"; found only {', '.join(seen)}" if seen else ""
    raise PostgresUnavailable(f"no PostgreSQL {MIN_MAJOR}+ server binaries (initdb, pg_ctl, postgres){found}")


# -- the server -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged OS user to run PostgreSQL as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresStartFailed("running as root and there is no 'postgres' (or 'nobody') user to run PostgreSQL as")


def _base_folder(user: pwd.struct_passwd | None) -> str:
    """Where the server's folder goes: the temp dir, or /tmp when root's temp dir is closed to the other user."""
    base = Path(tempfile.gettempdir()).resolve()
    if user is None:
        return str(base)
    for folder in (base, *base.parents):
        if not folder.stat().st_mode & 0o001:  # not traversable by others
            return "/tmp"
    return str(base)


@dataclass
class PostgresServer:
    """One running server; :meth:`start` it, :meth:`stop` it (the folder goes too)."""

    bindir: Path
    major: int
    folder: Path = field(init=False)
    port: int = 0
    user: pwd.struct_passwd | None = None
    durable: bool = False
    """``fsync``, ``synchronous_commit`` and ``full_page_writes`` on (PostgreSQL's defaults), for a benchmark that
    measures acknowledged writes; off (the default) for the tests, where nothing needs to survive a crash."""
    settings: dict[str, str] = field(default_factory=dict)
    """More ``postgresql.conf`` settings (name to literal value), applied after the defaults here."""
    _databases: set[str] = field(default_factory=set)

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def socket_dir(self) -> Path:
        return self.folder / "sock"

    @property
    def log(self) -> Path:
        return self.folder / "server.log"

    def url(self, database: str, user: str = ROLE) -> str:
        """``postgresql://USER@127.0.0.1:PORT/DATABASE``."""
        return f"postgresql://{user}@{HOST}:{self.port}/{database}"

    @property
    def admin_url(self) -> str:
        return self.url("postgres", SUPERUSER)

    def _run(self, *args: str, timeout: float = START_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}  # no PGHOST/PGPORT from outside
        env.update(LC_ALL="C", LANG="C", TZ="UTC")
        if self.user is not None:
            kwargs.update(user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[])
            env.update(HOME=str(self.folder), USER=self.user.pw_name, LOGNAME=self.user.pw_name)
        return subprocess.run(
            args, cwd=self.folder, env=env, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
        )

    def _check(self, result: subprocess.CompletedProcess[str], what: str) -> None:
        if result.returncode != 0:
            said = (result.stderr or result.stdout).strip()
            raise PostgresStartFailed(f"{what} failed (exit {result.returncode}): {said}{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            tail = self.log.read_text(errors="replace").strip().splitlines()[-15:]
        except OSError:
            return ""
        return "\nserver log:\n" + "\n".join(tail) if tail else ""

    def start(self) -> None:
        """initdb, configure, start and wait until a connection works.

        Raises:
            PostgresStartFailed: any step failed; the server and its folder are gone again.
        """
        self.user = _run_as()
        self.folder = Path(tempfile.mkdtemp(prefix="shopsense-pg-", dir=_base_folder(self.user)))
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self.socket_dir.mkdir()
        if self.user is not None:
            for path in (self.folder, self.socket_dir):
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
        initdb = self._run(
            str(self.bindir / "initdb"),
            "-D", str(self.data),
            "-U", SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        )  # fmt: skip
        self._check(initdb, "initdb")
        for attempt in range(3):  # the free port may be taken between finding and binding it
            self.port = free_port()
            settings = {
                "listen_addresses": f"'{HOST}'",
                "port": str(self.port),
                "unix_socket_directories": f"'{self.socket_dir}'",
                "fsync": "off",
                "synchronous_commit": "off",
                "full_page_writes": "off",
                "shared_buffers": "16MB",
                "max_connections": "50",
                "max_wal_size": "256MB",
                "timezone": "'UTC'",
                "log_min_messages": "warning",
            }
            if self.durable:
                settings.update(fsync="on", synchronous_commit="on", full_page_writes="on")
            settings.update(self.settings)
            with (self.data / "postgresql.auto.conf").open("a") as conf:
                conf.writelines(f"{k} = {v}\n" for k, v in settings.items())
            started = self._run(
                str(self.bindir / "pg_ctl"), "start", "-D", str(self.data), "-l", str(self.log),
                "-w", "-t", str(START_TIMEOUT_S),
            )  # fmt: skip
            if started.returncode == 0:
                break
            if attempt == 2 or "already in use" not in self._log_tail():
                self._check(started, "pg_ctl start")
        self._wait_ready()
        self._admin(f"CREATE ROLE {ROLE} LOGIN CREATEDB")

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with psycopg.connect(self.admin_url, connect_timeout=5) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise PostgresStartFailed(f"server not accepting connections: {exc}{self._log_tail()}") from exc
                time.sleep(0.1)

    def _admin(self, *statements: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement.encode())

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database owned by ``shopsense``; returns its name."""
        slug = re.sub(r"[^a-z0-9_]", "_", prefix.lower())[:30]
        name = f"{slug}_{uuid.uuid4().hex[:16]}"
        self._admin(f'CREATE DATABASE "{name}" OWNER {ROLE}')
        self._databases.add(name)
        return name

    def drop_database(self, name: str) -> None:
        """Drop it, closing any connection a test left open."""
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._databases.discard(name)

    @contextlib.contextmanager
    def database(self, prefix: str = "t") -> Iterator[str]:
        """The URL of a fresh empty database, dropped afterwards."""
        name = self.create_database(prefix)
        try:
            yield self.url(name)
        finally:
            self.drop_database(name)

    def stop(self) -> None:
        """Stop at once (``-m immediate``: nothing to keep) and remove the folder."""
        folder = getattr(self, "folder", None)
        if folder is None:
            return
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                self._run(
                    str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data), "-m", "immediate", "-w", timeout=30
                )
        shutil.rmtree(folder, ignore_errors=True)
        del self.folder


# -- one server per test session --------------------------------------------------------------

_server: PostgresServer | None = None
_failure: Exception | None = None


def shared_server() -> PostgresServer:
    """The session's server, started on first call; a failure is remembered and raised again at once.

    Raises:
        PostgresUnavailable: no binaries.
        PostgresStartFailed: the server did not start.
    """
    global _server, _failure
    if _server is not None:
        return _server
    if _failure is not None:
        raise _failure
    try:
        bindir, major = find_bindir()
        server = PostgresServer(bindir, major)
        server.start()
    except (PostgresUnavailable, PostgresStartFailed, OSError, subprocess.SubprocessError) as exc:
        _failure = exc if isinstance(exc, PostgresUnavailable | PostgresStartFailed) else PostgresStartFailed(str(exc))
        raise _failure from exc
    _server = server
    atexit.register(stop_shared_server)  # a backstop: the session fixture stops it first
    return server


def stop_shared_server() -> None:
    global _server
    if _server is not None:
        _server.stop()
        _server = None


def require_server() -> PostgresServer:
    """The session's server for a test: skipped without PostgreSQL (a failure under CI), failed if it won't start."""
    problem: str
    try:
        return shared_server()
    except PostgresUnavailable as exc:
        if not in_ci():
            pytest.skip(ENABLE_HINT)
        problem = f"CI=true needs PostgreSQL: {exc}"
    except PostgresStartFailed as exc:
        problem = f"the test PostgreSQL server did not start: {exc}"
    pytest.fail(problem, pytrace=False)
