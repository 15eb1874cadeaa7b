import threading
from datetime import UTC

import pyarrow as pa

from rag_sync_pipeline.store import LanceStore, LedgerEntry
from rag_sync_pipeline.store.lance import partition_filter

SCHEMA = pa.schema([("id", pa.string()), ("source", pa.string()), ("partition", pa.string()),
                    ("doc_id", pa.string()), ("text", pa.string())])


def rows(doc_id: str, version: str, count: int, partition: str = "p") -> list[dict]:
    return [{"id": f"{doc_id}-{version}-{i}", "source": "s", "partition": partition, "doc_id": doc_id,
             "text": version} for i in range(count)]


def test_replace_documents_swaps_a_documents_rows_in_one_commit(lancedb_uri):
    store = LanceStore(lancedb_uri)
    scope = partition_filter("s", "p")
    store.replace_documents("t", SCHEMA, "id", scope, ["a", "b"], rows("a", "v1", 3) + rows("b", "v1", 2))
    before = store.version("t")
    store.replace_documents("t", SCHEMA, "id", scope, ["a"], rows("a", "v2", 1))
    assert store.version("t") == before + 1
    table = store.read("t", None).to_pylist()
    assert sorted(r["id"] for r in table) == ["a-v2-0", "b-v1-0", "b-v1-1"]


def test_replace_is_scoped_to_partition_and_documents(lancedb_uri):
    store = LanceStore(lancedb_uri)
    store.replace_documents("t", SCHEMA, "id", partition_filter("s", "p"), ["a"], rows("a", "v1", 2))
    store.replace_documents("t", SCHEMA, "id", partition_filter("s", "q"), ["a"], rows("a", "v1", 2, "q")[:0] + [
        {"id": "q-a", "source": "s", "partition": "q", "doc_id": "a", "text": "x"}])
    store.replace_documents("t", SCHEMA, "id", partition_filter("s", "q"), ["a"], [])
    assert store.count_rows("t", partition_filter("s", "p")) == 2
    assert store.count_rows("t", partition_filter("s", "q")) == 0


def test_concurrent_reader_never_sees_a_document_missing_or_mixed(lancedb_uri):
    store = LanceStore(lancedb_uri)
    scope = partition_filter("s", "p")
    store.replace_documents("t", SCHEMA, "id", scope, ["a"], rows("a", "v0", 4))
    violations, reads, stop = [], [0], threading.Event()

    def reader():
        reader_store = LanceStore(lancedb_uri)
        while not stop.is_set():
            versions = reader_store.read("t", "doc_id = 'a'", ["text"]).column("text").to_pylist()
            reads[0] += 1
            if not versions or len(set(versions)) != 1:
                violations.append(versions)

    thread = threading.Thread(target=reader)
    thread.start()
    for n in range(1, 21):
        store.replace_documents("t", SCHEMA, "id", scope, ["a"], rows("a", f"v{n}", 2 + n % 3))
    stop.set()
    thread.join()
    assert reads[0] > 20
    assert violations == []


def test_ledger_failures_and_partition_state_round_trip(lancedb_uri):
    store = LanceStore(lancedb_uri)
    store.write_ledger("chunks", "s", "p", ["a", "b"], {"a": LedgerEntry("u1", "d1"), "b": LedgerEntry("u2", None)})
    assert store.read_ledger("chunks", "s", "p") == {"a": LedgerEntry("u1", "d1"), "b": LedgerEntry("u2", None)}
    assert store.read_ledger("markdown", "s", "p") == {}
    store.write_ledger("chunks", "s", "p", ["b"], {})
    assert list(store.read_ledger("chunks", "s", "p")) == ["a"]

    store.record_failures("markdown", "s", "p", ["x"], {"x": ("u", "local file p/x: invalid UTF-8")}, "run1")
    assert [f["error"] for f in store.failures("s", "p")] == ["local file p/x: invalid UTF-8"]
    store.record_failures("markdown", "s", "p", ["x"], {}, "run2")  # fixed: the failure is resolved
    assert store.failures("s", "p") == []

    store.write_partition_state("s", "p", "raw_documents", "mark-1", 3, 3, "run1")
    store.write_partition_state("s", "p", "raw_documents", "mark-2", 4, 4, "run2")
    state = store.read_partition_state("s", "p")
    assert state["raw_documents"]["mark"] == "mark-2" and state["raw_documents"]["documents"] == 4
    assert len(store.all_partition_states()) == 1


def test_search_on_empty_database_returns_nothing(lancedb_uri):
    assert LanceStore(lancedb_uri).search([0.0] * 384, 5) == []


def test_tables_from_an_older_release_gain_new_columns(lancedb_uri):
    import lancedb

    from rag_sync_pipeline.store import schemas

    old_schema = pa.schema([f for f in schemas.PARTITION_STATE_SCHEMA if f.name != "reconciled_at"])
    lancedb.connect(lancedb_uri).create_table(schemas.PARTITION_STATE_TABLE, schema=old_schema)
    store = LanceStore(lancedb_uri)
    store.write_partition_state("s", "p", "raw_documents", "m", 1, 1, "run", reconciled_at=None)
    from datetime import datetime

    stamp = datetime(2026, 11, 1, tzinfo=UTC)
    store.write_partition_state("s", "p", "raw_documents", "m", 1, 1, "run", reconciled_at=stamp)
    assert store.read_partition_state("s", "p")["raw_documents"]["reconciled_at"] == stamp


def test_hybrid_search_finds_an_exact_identifier_that_vector_search_ranks_low(lancedb_uri, embedder):
    from rag_sync_pipeline.store import schemas
    from rag_sync_pipeline.store.index_settings import embeddings_schema
    from rag_sync_pipeline.store.maintenance import ensure_indexes

    texts = [f"The {topic} runbook explains how the on-call engineer restarts the {topic} service safely."
             for topic in ("billing", "search", "ingest", "auth", "gateway", "scheduler")]
    texts.append("Quarterly invoice archive, reference ZX-88213, kept for seven years.")
    vectors = embedder.encode(texts)
    rows = [{"id": f"c{i}", "vector": vector.tolist(), "text": text, "metadata": None, "source": "s",
             "partition": "p", "doc_id": f"d{i}", "title": f"Doc {i}", "url": None, "path": None,
             "last_modified": None, "heading_path": "", "chunk_index": 0, "text_hash": str(i), "model_id": "m"}
            for i, (text, vector) in enumerate(zip(texts, vectors, strict=True))]
    store = LanceStore(lancedb_uri)
    table = store.table(schemas.EMBEDDINGS_TABLE, embeddings_schema(384, "m", None))
    table.add(pa.Table.from_pylist(rows, schema=table.schema))
    assert ensure_indexes(table, schemas.EMBEDDINGS_TABLE, vector_index_min_rows=1_000) == ["fts:text"]

    question = "how do I restart a service? ZX-88213"
    vector = embedder.encode([question])[0]
    assert "c6" not in [hit["id"] for hit in store.search(vector, 3)]
    hybrid = store.hybrid_search(vector, question, 3)
    assert "c6" in [hit["id"] for hit in hybrid]  # first in the full-text ranking, fused into the top 3
    assert all(hit["score"] > 0 for hit in hybrid) and {"title", "url", "partition"} <= hybrid[0].keys()
    assert [h["id"] for h in store.hybrid_search(vector, question, 3, source="s", partition="other")] == []
