"""Helpers for end-to-end tests against a real `dagster dev` (webserver + daemon) started by the test.

`DagsterDev` owns one `dagster dev` process group: it starts it with its output in a log file, waits until the
webserver answers, and stops the whole group (SIGTERM, then SIGKILL: `dagster dev` does not always exit on
SIGTERM). `graphql` posts one query to the webserver and fails loudly on GraphQL errors.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
# Variables that would change which sources are configured or how; the tests set what they need explicitly.
CONFIG_VARIABLES = ("RAG_SOURCES_FILE", "SYNC_SOURCES", "EXTERNAL_SYNC_ENABLED", "RAG_LOCAL_ENABLED",
                    "RAG_EMBEDDING_MODEL", "RAG_EMBEDDING_DEVICE", "RAG_EMBEDDING_BATCH_SIZE",
                    "RAG_CHUNK_MAX_TOKENS", "RAG_DOCUMENTS_PER_COMMIT")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_environment(**overrides: str) -> dict[str, str]:
    """This process's environment without the pipeline's configuration variables, plus `overrides`."""
    env = {k: v for k, v in os.environ.items()
           if k not in CONFIG_VARIABLES and not k.endswith(("_SYNC_INTERVAL_SECONDS", "_SYNC_INTERVAL_MINUTES"))}
    env.update(overrides)
    return env


def log_tail(path: Path, lines: int = 80) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        return f"(log {path} unreadable: {error})"
    return "\n".join(text.splitlines()[-lines:])


class DagsterDev:
    """One `dagster dev -w workspace.yaml` on a loopback port, in its own process group."""

    def __init__(self, env: dict[str, str], log_path: Path, port: int | None = None,
                 workspace: Path = REPO_ROOT / "workspace.yaml") -> None:
        self.env = env
        self.log_path = log_path
        self.port = port or free_port()
        self.workspace = workspace
        self.process: subprocess.Popen | None = None
        self._log_file = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 80) -> str:
        return log_tail(self.log_path, lines)

    def describe(self, lines: int = 80) -> str:
        """A paragraph for assertion messages: the process state and the end of its log."""
        state = "not started" if self.process is None else (
            "running" if self.process.poll() is None else f"exited with {self.process.returncode}")
        return f"dagster dev ({state}, log {self.log_path}), last {lines} log lines:\n{self.log_tail(lines)}"

    def start(self) -> None:
        self._log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [str(VENV_BIN / "dagster"), "dev", "-w", str(self.workspace), "-h", "127.0.0.1", "-p", str(self.port)],
            cwd=REPO_ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=self._log_file,
            stderr=subprocess.STDOUT, start_new_session=True,
        )

    def assert_running(self) -> None:
        assert self.process is not None and self.process.poll() is None, \
            f"dagster dev is not running.\n{self.describe()}"

    def wait_until_ready(self, timeout_s: float = 180.0) -> float:
        """Wait until /server_info answers 200; return how long that took."""
        started = time.monotonic()
        last_error = "no answer yet"
        while time.monotonic() - started < timeout_s:
            self.assert_running()
            try:
                response = httpx.get(f"{self.url}/server_info", timeout=5)
                if response.status_code == 200:
                    return time.monotonic() - started
                last_error = f"HTTP {response.status_code}"
            except httpx.HTTPError as error:
                last_error = repr(error)
            time.sleep(1)
        raise AssertionError(f"dagster dev did not answer /server_info within {timeout_s:.0f}s "
                             f"(last: {last_error}).\n{self.describe()}")

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM to the whole group (webserver, daemon, code servers, run workers), SIGKILL after `grace_s`."""
        if self.process is not None and not self._signal_group(signal.SIGTERM):
            if not self._wait_group_gone(grace_s):
                self._signal_group(signal.SIGKILL)
                self._wait_group_gone(10.0)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _signal_group(self, sig: int) -> bool:
        """Send `sig` to the process group; True if the group no longer exists."""
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            self.process.poll()
            return True
        return False

    def _wait_group_gone(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.process.poll()  # reap the parent, or it lingers as a zombie of the group
            if not _group_alive(self.process.pid):
                return True
            time.sleep(0.2)
        return False

    def __enter__(self) -> DagsterDev:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def graphql(base_url: str, query: str, variables: dict[str, Any] | None = None, timeout_s: float = 30.0) -> dict:
    """The `data` of one GraphQL request to the webserver; GraphQL errors raise AssertionError."""
    response = httpx.post(f"{base_url}/graphql", json={"query": query, "variables": variables or {}},
                          timeout=timeout_s)
    response.raise_for_status()
    body = response.json()
    assert not body.get("errors"), f"GraphQL errors: {body['errors']}"
    return body["data"]


def metadata_values(entries: list[dict]) -> dict[str, Any]:
    """GraphQL metadataEntries (queried with METADATA_FIELDS) as label -> plain value."""
    values = {}
    for entry in entries:
        for key in ("intValue", "floatValue", "text", "boolValue", "mdStr", "jsonString"):
            if key in entry:
                values[entry["label"]] = entry[key]
                break
    return values


METADATA_FIELDS = """
    label
    ... on IntMetadataEntry { intValue }
    ... on FloatMetadataEntry { floatValue }
    ... on TextMetadataEntry { text }
    ... on BoolMetadataEntry { boolValue }
    ... on MarkdownMetadataEntry { mdStr }
    ... on JsonMetadataEntry { jsonString }
"""
