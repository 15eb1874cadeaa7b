"""Crashes: a sync killed with SIGKILL inside each stage, then run again.

The sync runs in a fresh interpreter (spawned, not forked: LanceDB is not fork-safe) committing one document
per batch; the test watches the stage's table and kills the process the moment that table gains a version,
that is right after a batch's rows were committed and before (or while) its ledger entry is written. The next
run must leave no duplicate chunk, lose no change, and leave every stage's rows matching its ledger.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rag_sync_pipeline.sources.local import LocalFolderSource
from rag_sync_pipeline.store import LanceStore
from rag_sync_pipeline_tests.conftest import REPO_ROOT
from rag_sync_pipeline_tests.fault_support import audit, sync_all

PARTITION, DOCS = "p", 12
SYNC_SCRIPT = """
import sys
from rag_sync_pipeline.settings import default_model_path
from rag_sync_pipeline.sources.local import LocalFolderSource
from rag_sync_pipeline.store import LanceStore
from rag_sync_pipeline.transform.embedding import load_embedder
from rag_sync_pipeline_tests.fault_support import sync_all

root, uri = sys.argv[1:3]
embedder = load_embedder(default_model_path())
print("ready", flush=True)
sync_all(LanceStore(uri), LocalFolderSource.from_options("local", {"root": root}, {}), "local", "p", embedder,
         documents_per_commit=1)
print("done", flush=True)
"""


def write(root: Path, i: int, revision: int) -> None:
    (root / PARTITION / f"doc{i}.md").write_text(
        f"## Setup\n\nService {i} rev{revision}: install the agent on every host.\n\n"
        f"## Checks\n\nService {i} rev{revision}: the health endpoint answers within a second.\n", encoding="utf-8")


def versions(lancedb_uri: str, table: str) -> int:
    folder = Path(lancedb_uri) / f"{table}.lance" / "_versions"
    return len(os.listdir(folder)) if folder.is_dir() else 0


def kill_inside(stage: str, root: Path, lancedb_uri: str) -> None:
    """Run the sync in its own interpreter and SIGKILL it as soon as `stage`'s table commits a batch."""
    baseline = versions(lancedb_uri, stage)
    process = subprocess.Popen([sys.executable, "-c", SYNC_SCRIPT, str(root), lancedb_uri], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        assert process.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 120
        while versions(lancedb_uri, stage) == baseline and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL, "the sync ended before it could be killed"


@pytest.mark.parametrize("stage", ["raw_documents", "markdown", "chunks", "embeddings"])
def test_sigkill_inside_a_stage_then_rerun_loses_nothing_and_duplicates_nothing(stage, tmp_path, embedder,
                                                                                 lancedb_uri):
    root = tmp_path / "corpus"
    (root / PARTITION).mkdir(parents=True)
    revisions = {f"doc{i}.md": 1 for i in range(DOCS)}
    for i in range(DOCS):
        write(root, i, 1)
    store = LanceStore(lancedb_uri)
    source = LocalFolderSource.from_options("local", {"root": str(root)}, {})
    sync_all(store, source, "local", PARTITION, embedder)

    for i in range(8):  # eight edits, three new documents, one deletion: work in every stage
        revisions[f"doc{i}.md"] = 2
        write(root, i, 2)
    for i in range(DOCS, DOCS + 3):
        revisions[f"doc{i}.md"] = 1
        write(root, i, 1)
    (root / PARTITION / "doc11.md").unlink()
    old = dict(revisions, **{"doc11.md": 1})
    del revisions["doc11.md"]

    kill_inside(stage, root, lancedb_uri)
    killed = audit(store, "local", PARTITION,
                   allowed={d: {1, revisions.get(d, 1)} for d in old})
    mixed = [p for p in killed.partial_docs if "mixed" in p]
    assert mixed == [] and killed.lost_changes == [] and killed.duplicate_chunks == 0

    reports = sync_all(store, source, "local", PARTITION, embedder)
    after = audit(store, "local", PARTITION, expected=revisions)
    print(f"\nCRASH in {stage}: killed after {stage} committed a batch; re-run: lost_changes="
          f"{len(after.lost_changes)}, duplicate_chunks={after.duplicate_chunks}, "
          f"inconsistent_docs={len(after.partial_docs)}, mixed_while_killed={len(mixed)}")
    assert after.lost_changes == [] and after.partial_docs == [] and after.duplicate_chunks == 0
    assert all(report.documents_failed == 0 for report in reports.values())
    marks = {s["stage"]: s["mark"] for s in store.all_partition_states()}
    assert len(set(marks.values())) == 1  # every stage caught up with the same source mark
