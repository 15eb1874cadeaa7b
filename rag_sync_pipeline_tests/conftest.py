"""Shared fixtures: a real model, a temporary LanceDB, a temporary Dagster instance, a corpus on disk."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rag_sync_pipeline.settings import SAMPLE_CORPUS_DIR, default_model_path  # noqa: E402
from rag_sync_pipeline.transform.embedding import Embedder, load_embedder  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_PREFIXES = ("RAG_", "SYNC_", "EXTERNAL_SYNC", "LOCAL_", "CONFLUENCE_", "NOTION_", "S3_SYNC")


def paragraph(topic: str, sentences: int = 6) -> str:
    """A distinct paragraph of roughly 20 tokens per sentence."""
    return " ".join(f"The {topic} procedure step {i} requires checking the {topic} dashboard, confirming "
                    f"the {topic} owner and writing the outcome into the log." for i in range(sentences))


# What passing tests print on stdout is their figures (violations, lost rows, leaked secrets, calls made):
# collected here and printed together at the end of the run, where CI's log keeps them.
_FIGURES: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.passed:
        for line in report.capstdout.splitlines():
            if line.strip():
                _FIGURES.append((report.nodeid.split("::", 1)[-1], line.strip()))


def pytest_terminal_summary(terminalreporter) -> None:
    if _FIGURES:
        terminalreporter.section("figures printed by passing tests")
        for test, line in _FIGURES:
            terminalreporter.write_line(f"{test}: {line}")


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return load_embedder(default_model_path())


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No configuration leaks in from the machine running the tests."""
    for name in list(os.environ):
        if name.startswith(CONFIG_PREFIXES):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """Two partitions: `eng` (Markdown, HTML and a nested folder) and `hr` (plain text)."""
    root = tmp_path / "corpus"
    (root / "eng" / "runbooks").mkdir(parents=True)
    (root / "hr").mkdir()
    names = ("Failover", "Backup", "Restore", "Upgrade")
    sections = "\n\n".join(f"## {name}\n\n{paragraph(name.lower())}" for name in names)
    (root / "eng" / "runbooks" / "database.md").write_text(f"# Database runbook\n\n{sections}\n", encoding="utf-8")
    (root / "eng" / "adr.html").write_text(
        "<html><head><title>ADR 7: Use LanceDB</title></head><body><h1>ADR 7</h1>"
        "<p>We store vectors in <a href='https://lancedb.com'>LanceDB</a> because it runs embedded.</p>"
        "<pre><code class='language-python'>db = lancedb.connect(uri)\n</code></pre></body></html>", encoding="utf-8")
    (root / "eng" / "notes.txt").write_text("Deploys freeze on Fridays after 14:00 CET.\n", encoding="utf-8")
    (root / "hr" / "leave.txt").write_text("Full-time employees get 28 days of paid annual leave.\n", encoding="utf-8")
    (root / "hr" / "expenses.md").write_text("# Expenses\n\nMeals are reimbursed up to EUR 45 per day.\n",
                                             encoding="utf-8")
    return root


@pytest.fixture
def sample_corpus(tmp_path: Path) -> Path:
    target = tmp_path / "sample_corpus"
    shutil.copytree(SAMPLE_CORPUS_DIR, target)
    return target


@pytest.fixture
def lancedb_uri(tmp_path: Path) -> str:
    return str(tmp_path / "lancedb")


@pytest.fixture
def local_env(clean_env: pytest.MonkeyPatch, corpus: Path, lancedb_uri: str) -> pytest.MonkeyPatch:
    clean_env.setenv("RAG_LOCAL_ROOT", str(corpus))
    clean_env.setenv("RAG_LANCEDB_URI", lancedb_uri)
    return clean_env


@pytest.fixture
def cli_env(local_env: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """The environment for running `rag-sync` as a subprocess against a fresh DAGSTER_HOME."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    local_env.setenv("DAGSTER_HOME", str(home))
    return dict(os.environ)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        yield test_instance
