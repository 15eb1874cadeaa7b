"""Zero downtime: a reader searching the final table while its partition re-syncs never sees a document with
no chunks, with too few or too many, or with old and new chunks mixed.

Ten documents of two sections each; every section carries the document's revision marker. At least 50
re-syncs (more if the reader has not yet searched 1,000 times) each edit three documents (a new revision in
both sections, so every chunk id changes) while a reader thread, on a connection of its own, searches the
partition without pause and checks every answer.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

from rag_sync_pipeline.sources.local import LocalFolderSource
from rag_sync_pipeline.store import LanceStore
from rag_sync_pipeline_tests.fault_support import MARKER, audit, sync_all

DOCS, CHUNKS_PER_DOC, RESYNCS, MIN_SEARCHES = 10, 2, 50, 1000
PARTITION = "live"


def write(root, i: int, revision: int) -> None:
    (root / PARTITION / f"doc{i}.md").write_text(
        f"## Setup\n\nService {i} rev{revision}: install the agent on every host.\n\n"
        f"## Checks\n\nService {i} rev{revision}: the health endpoint answers within a second.\n", encoding="utf-8")


def violations_in(rows: list[dict]) -> list[str]:
    """What a reader must never see: a document missing, short of or over its chunks, or mixing revisions."""
    chunks = Counter(row["doc_id"] for row in rows)
    revisions: dict[str, set[str]] = {}
    for row in rows:
        revisions.setdefault(row["doc_id"], set()).update(MARKER.findall(row["text"]))
    problems = [f"doc{i}.md missing" for i in range(DOCS) if f"doc{i}.md" not in chunks]
    problems += [f"{d}: {n} chunks" for d, n in chunks.items() if n != CHUNKS_PER_DOC]
    problems += [f"{d}: revisions {sorted(r)} mixed" for d, r in revisions.items() if len(r) != 1]
    return problems


def test_50_resyncs_under_continuous_search_show_no_missing_or_mixed_document(tmp_path, embedder, lancedb_uri):
    root = tmp_path / "corpus"
    (root / PARTITION).mkdir(parents=True)
    revisions = dict.fromkeys(range(DOCS), 1)
    for i in range(DOCS):
        write(root, i, 1)
    source = LocalFolderSource.from_options("local", {"root": str(root)}, {})
    store = LanceStore(lancedb_uri)
    sync_all(store, source, "local", PARTITION, embedder)
    query = embedder.encode(["health endpoint of the service"])[0].tolist()

    stop, searches, violations, errors = threading.Event(), Counter(), [], []

    def reader() -> None:
        mine = LanceStore(lancedb_uri)  # a connection of its own, as a RAG application has
        try:
            while not stop.is_set():
                rows = mine.search(query, k=DOCS * CHUNKS_PER_DOC * 2, source="local", partition=PARTITION)
                searches["done"] += 1
                violations.extend(violations_in(rows))
                time.sleep(0.01)  # leave the syncing thread some of the interpreter
        except Exception as error:  # noqa: BLE001 - reported below; a failing reader is a failed test
            errors.append(repr(error))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    started = time.monotonic()
    resyncs = 0
    while resyncs < RESYNCS or (searches["done"] < MIN_SEARCHES and resyncs < 4 * RESYNCS):
        resync, resyncs = resyncs, resyncs + 1
        for i in ((resync * 3 + k) % DOCS for k in range(3)):
            revisions[i] += 1
            write(root, i, revisions[i])
        report = sync_all(store, source, "local", PARTITION, embedder)["embeddings"]
        assert report.documents_updated == 3 and report.documents_failed == 0
    during = searches["done"]
    stop.set()
    thread.join(timeout=30)

    final = audit(store, "local", PARTITION, expected={f"doc{i}.md": r for i, r in revisions.items()})
    print(f"\nZERO-DOWNTIME: resyncs={resyncs}, searches={during}, violations={len(violations)}, "
          f"lost_changes={len(final.lost_changes)}, seconds={time.monotonic() - started:.1f}")
    assert errors == []
    assert resyncs >= RESYNCS and during >= MIN_SEARCHES
    assert violations == [], violations[:10]
    assert final.lost_changes == [] and final.partial_docs == [] and final.duplicate_chunks == 0
