"""Real ``siyu`` processes for the deployment tests: spawn, wait until ready, stop.

Each process gets its settings as ``SIYU_<SECTION>_<KEY>`` variables (the way a container
or a systemd unit gives them), its own web port, and runs in ``cwd`` so no developer
config file is picked up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import httpx

from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent


class SiyuProcess:
    """One ``python -m bot.app.cli run --role ROLE`` child process."""

    def __init__(self, role: str, env: dict[str, str], cwd: Path, name: str = "") -> None:
        self.role = role
        self.name = name or role
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = cwd / f"{self.name}.log"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("SIYU_")}
        environ.update(env)
        environ.update(
            SIYU_WEB_PORT=str(self.port),
            SIYU_WEB_HOST="127.0.0.1",
            PYTHONPATH=str(ROOT),
            LANG="en_US.UTF-8",
        )
        self._terminated = False
        self._out = open(self.log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot.app.cli", "run", "--role", role],
            cwd=cwd,
            env=environ,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Wait until ``/readyz`` answers 200 (the process started and is migrated); the
        bound allows for a machine busy with parallel tests."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited early:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.name} not ready in {timeout}s:\n{self.output()}")

    def output(self) -> str:
        self._out.flush()
        return self.log.read_text()

    def kill(self) -> None:
        """SIGKILL: a crash (no clean shutdown, locks released only by the OS/server)."""
        self.proc.kill()
        self.proc.wait(10)

    def terminate(self) -> None:
        """SIGTERM, once (a second one would ask the server to exit at once)."""
        if self.proc.poll() is None and not self._terminated:
            self.proc.send_signal(signal.SIGTERM)
            self._terminated = True

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait: the clean shutdown of a rolling restart."""
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._out.close()
        return self.proc.returncode


def stop_all(processes: Iterable[SiyuProcess], timeout: float = 20.0) -> list[int]:
    """SIGTERM to every process at once, then wait for each (a whole deployment stopping):
    the shutdowns overlap instead of adding up. Returns the exit codes, in order."""
    processes = list(processes)
    for process in processes:
        process.terminate()
    return [process.stop(timeout) for process in processes]
