"""Workspaces (a LanceDB folder, a DAGSTER_HOME, the environment of one configured source) and `rag-sync`
runs in a child process, timed as a user sees them, with the child's own peak memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import psutil

RAG_SYNC = str(Path(sys.executable).parent / "rag-sync")
CONFIG_PREFIXES = ("RAG_", "SYNC_", "EXTERNAL_SYNC", "LOCAL_", "CONFLUENCE_", "NOTION_", "S3_SYNC", "AWS_")


@dataclass
class Workspace:
    root: Path
    source_env: dict[str, str]
    env: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        home = self.root / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        base = {k: v for k, v in os.environ.items() if not k.startswith(CONFIG_PREFIXES)}
        self.env = {**base, "DAGSTER_HOME": str(home), "RAG_LANCEDB_URI": str(self.root / "lancedb"),
                    "RAG_LOCAL_ENABLED": "false", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                    **self.source_env}

    @property
    def lancedb_uri(self) -> str:
        return self.env["RAG_LANCEDB_URI"]

    def activate(self) -> None:
        """Make this workspace the bench process's own configuration (sensor ticks, reading the tables)."""
        for name in [n for n in os.environ if n.startswith(CONFIG_PREFIXES)]:
            del os.environ[name]
        os.environ.update(self.env)

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(self.env["DAGSTER_HOME"])


@dataclass
class CommandResult:
    wall_s: float
    returncode: int
    stdout: str
    stderr: str
    peak_rss_bytes: int
    cpu_s: float  # user + system time of the child: what the work cost, whatever else shares the machine

    def summary(self) -> dict:
        if self.returncode != 0:
            raise RuntimeError(f"rag-sync failed ({self.returncode}): {self.stderr[-3000:]}")
        return json.loads(self.stdout)


def _peak_rss_of(process: psutil.Process) -> int:
    """The kernel's own high-water mark of the process's resident set (VmHWM: exact between samples, and reset
    at exec, unlike wait4's ru_maxrss, which Linux carries over from the parent this child was forked from);
    the current RSS where /proc has no VmHWM."""
    try:
        with open(f"/proc/{process.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return process.memory_info().rss


def _tree_peak_rss(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += _peak_rss_of(member)
        except psutil.Error:  # it ended meanwhile
            pass
    return total


def _sample_peak_rss(pid: int, peak: list[int], done: threading.Event) -> None:
    """Peak RSS of the child's process tree. Each process's peak is the kernel's, so sampling every half second
    misses only a peak reached in a process's last half second. Listing the tree costs ~2 ms of CPU: at the 20
    samples a second this once took, 2% of the machine was taken from the sync being measured."""
    try:
        process = psutil.Process(pid)
        while not done.is_set():
            peak[0] = max(peak[0], _tree_peak_rss(process))
            done.wait(0.5)
    except psutil.Error:
        pass


def run_rag_sync(workspace: Workspace, *args: str) -> CommandResult:
    """`rag-sync ARGS` as a user runs it, with the peak RSS of its own processes (never the simulators')."""
    out, err = workspace.root / "cmd.out", workspace.root / "cmd.err"
    peak, done = [0], threading.Event()
    with out.open("w") as stdout, err.open("w") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen([RAG_SYNC, *args], env=workspace.env, stdout=stdout, stderr=stderr)
        sampler = threading.Thread(target=_sample_peak_rss, args=(process.pid, peak, done), daemon=True)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        done.set()
        sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    return CommandResult(wall, process.returncode, out.read_text(), err.read_text(), peak[0],
                         usage.ru_utime + usage.ru_stime)


def stage_durations(workspace: Workspace, run_id: str, field: str = "duration_s") -> dict[str, float]:
    """Each stage's own duration, or another of its numbers (`cpu_s`), from its materialization metadata,
    to show where a run's time went."""
    durations: dict[str, float] = {}
    with workspace.instance() as instance:
        for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
            materialization = record.dagster_event.event_specific_data.materialization
            value = materialization.metadata.get(field)
            durations[materialization.asset_key.path[-1]] = float(getattr(value, "value", value) or 0.0)
    return durations
