"""`shopsense serve` as a child process for the tests that drive a real server over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx

START_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """`shopsense serve` on a free port, kept across restarts, in its own process group (so uvicorn's
    workers stop and die with it), with the given environment and extra options."""

    def __init__(self, env: dict[str, str], *extra: str) -> None:
        self.env, self.extra = env, extra
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def launch(self) -> ServerProcess:
        """Start the process without waiting for it (several servers start side by side)."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "shopsense", "serve", "--port", str(self.port), *self.extra],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        return self

    def wait_up(self) -> ServerProcess:
        """Until ``/health`` answers; a server that exits or takes too long fails the test with its stderr."""
        assert self.process is not None, "launch() first"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited: {self.process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError(f"server did not start within {START_TIMEOUT_S} s")

    def start(self) -> ServerProcess:
        return self.launch().wait_up()

    def kill(self) -> None:
        """SIGKILL to the group, as a crash would."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        """SIGTERM to the group and wait; SIGKILL if it does not end in time."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
