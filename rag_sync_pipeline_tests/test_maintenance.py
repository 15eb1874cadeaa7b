"""Maintenance: compaction, version pruning and indexes, measured on real LanceDB tables."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from rag_sync_pipeline.store import LanceStore, schemas
from rag_sync_pipeline.store.maintenance import maintain, prune_cutoff, table_stats
from rag_sync_pipeline_tests.conftest import paragraph
from rag_sync_pipeline_tests.lifecycle_support import search_ids, sync_partition

QUERIES = ["failover procedure", "how many days of annual leave", "which vector database", "deploy freeze",
           "restore checksums", "meal expenses"]


def test_fifty_small_syncs_then_maintenance_leaves_a_handful_of_versions_and_same_results(corpus, lancedb_uri,
                                                                                         embedder):
    store = LanceStore(lancedb_uri)
    notes, runbook = corpus / "eng" / "notes.txt", corpus / "eng" / "runbooks" / "database.md"
    original = runbook.read_text()
    for n in range(50):
        # Small edits: one line of one file, or one section of the runbook (its other chunks stay put, so their
        # old fragments survive beside the new ones).
        if n % 2:
            notes.write_text(f"Deploys freeze on Fridays after 14:00 CET. Revision {n}.\n")
        else:
            runbook.write_text(original.replace(paragraph("backup"), paragraph("backup") + f" Revision {n}."))
        sync_partition(store, corpus, "eng", embedder)
    sync_partition(store, corpus, "hr", embedder)
    before = {name: table_stats(store.table(name)) for name in (schemas.EMBEDDINGS_TABLE, schemas.CHUNKS_TABLE,
                                                                schemas.LEDGER_TABLE)}
    results_before = search_ids(store, embedder, QUERIES)
    rows_before = store.count_rows(schemas.EMBEDDINGS_TABLE)

    report = maintain(store.db, retention=timedelta(0))

    assert report.ok, [t.error for t in report.tables]
    final = next(t for t in report.tables if t.table == schemas.EMBEDDINGS_TABLE)
    print(f"embeddings: versions {final.before.versions} -> {final.after.versions}, fragments "
          f"{final.before.fragments} -> {final.after.fragments}, bytes {final.before.bytes} -> {final.after.bytes}")
    print("all tables:", report.totals("before"), "->", report.totals("after"))
    assert final.before.versions == before[schemas.EMBEDDINGS_TABLE].versions >= 50
    assert final.before.fragments > final.after.fragments
    assert final.after.versions <= 4 and final.after.fragments <= 2
    for name in (schemas.CHUNKS_TABLE, schemas.LEDGER_TABLE):
        after = next(t for t in report.tables if t.table == name).after
        assert after.versions <= 4 and after.fragments <= 2 and before[name].versions >= 50
    assert "fts:text" in final.indexes_created
    assert store.count_rows(schemas.EMBEDDINGS_TABLE) == rows_before
    assert search_ids(LanceStore(lancedb_uri), embedder, QUERIES) == results_before
    # A full-text query works on the new index (hybrid search).
    hits = store.table(schemas.EMBEDDINGS_TABLE).search("reimbursed", query_type="fts").limit(3).to_list()
    assert hits and "EUR 45" in hits[0]["text"]
    # Syncing goes on normally afterwards.
    notes.write_text("Deploys freeze on Thursdays.\n")
    assert sync_partition(store, corpus, "eng", embedder)["embeddings"].documents_updated == 1


def test_pruning_keeps_versions_a_running_sync_may_still_read():
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert prune_cutoff(timedelta(hours=1), None, now) == timedelta(hours=1)
    assert prune_cutoff(timedelta(0), None, now) == timedelta(0)
    # A sync running for three hours: nothing it may have started from is pruned.
    cutoff = prune_cutoff(timedelta(hours=1), now - timedelta(hours=3), now)
    assert cutoff > timedelta(hours=3)
    assert prune_cutoff(timedelta(hours=1), now - timedelta(minutes=1), now) == timedelta(hours=1)


def test_maintenance_while_a_partition_syncs_loses_nothing(corpus, lancedb_uri, embedder):
    store = LanceStore(lancedb_uri)
    sync_partition(store, corpus, "hr", embedder)
    for i in range(30):
        (corpus / "eng" / f"page{i}.md").write_text(f"# Page {i}\n\n{paragraph(f'topic{i}', 2)}\n")
    errors, passes, done = [], [0], threading.Event()

    def maintenance_loop():
        maintenance_store = LanceStore(lancedb_uri)
        while not done.is_set():
            report = maintain(maintenance_store.db, retention=timedelta(0))
            errors.extend(t.error for t in report.tables if t.error)
            passes[0] += 1

    thread = threading.Thread(target=maintenance_loop)
    thread.start()
    try:
        for n in range(4):
            for i in range(0, 30, 3):
                (corpus / "eng" / f"page{i}.md").write_text(f"# Page {i}\n\n{paragraph(f'topic{i}r{n}', 2)}\n")
            sync_partition(store, corpus, "eng", embedder, run_id=f"run{n}")
    finally:
        done.set()
        thread.join()
    assert passes[0] >= 2
    # Whatever maintenance ran into, the sync's documents are all there, once each, with their last text.
    fresh = LanceStore(lancedb_uri)
    expected = {f"page{i}.md" for i in range(30)} | {"adr.html", "notes.txt", "runbooks/database.md"}
    for table in (schemas.RAW_TABLE, schemas.MARKDOWN_TABLE, schemas.CHUNKS_TABLE, schemas.EMBEDDINGS_TABLE):
        docs = fresh.read(table, "partition = 'eng'", ["doc_id"]).column("doc_id").to_pylist()
        assert set(docs) == expected, table
    ids = fresh.read(schemas.EMBEDDINGS_TABLE, None, ["id"]).column("id").to_pylist()
    assert len(ids) == len(set(ids))
    chunk_ids = set(fresh.read(schemas.CHUNKS_TABLE, None, ["id"]).column("id").to_pylist())
    assert set(ids) == chunk_ids
    text = fresh.read(schemas.EMBEDDINGS_TABLE, "doc_id = 'page0.md'", ["text"]).column("text").to_pylist()
    assert any("topic0r3" in t for t in text)
    assert fresh.count_rows(schemas.EMBEDDINGS_TABLE, "partition = 'hr'") == 2
    print(f"maintenance passes during the sync: {passes[0]}, table errors: {errors}")
