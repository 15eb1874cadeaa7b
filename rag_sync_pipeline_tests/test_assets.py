"""The four stages materialized through Dagster for one partition into a temporary LanceDB."""

import pytest

from rag_sync_pipeline.store import LanceStore
from rag_sync_pipeline.store.lance import partition_filter
from rag_sync_pipeline.sync import lookahead
from rag_sync_pipeline_tests.conftest import paragraph
from rag_sync_pipeline_tests.dagster_support import check_results, materialize_partition, stage_metadata

TABLES = ("raw_documents", "markdown", "chunks", "embeddings")


def doc_ids(store: LanceStore, table: str, partition: str) -> set[str]:
    return set(store.read(table, partition_filter("local", partition), ["doc_id"]).column("doc_id").to_pylist())


def assert_consistent(store: LanceStore, partition: str, expected_docs: set[str]) -> None:
    """Every stage holds exactly the expected documents, chunks and vectors match one to one, no duplicates."""
    for table in TABLES[:3]:
        assert doc_ids(store, table, partition) == expected_docs, table
    chunk_ids = store.read("chunks", partition_filter("local", partition), ["id"]).column("id").to_pylist()
    vector_ids = store.read("embeddings", partition_filter("local", partition), ["id"]).column("id").to_pylist()
    assert len(chunk_ids) == len(set(chunk_ids)) and len(vector_ids) == len(set(vector_ids))
    assert set(chunk_ids) == set(vector_ids)
    assert doc_ids(store, "embeddings", partition) == expected_docs


def test_materialize_all_four_stages_for_one_partition(local_env, instance, lancedb_uri):
    result = materialize_partition(instance, "eng")
    assert result.success
    meta = stage_metadata(result)
    assert set(meta) == set(TABLES)
    assert meta["raw_documents"]["documents_added"] == 3
    assert meta["embeddings"]["chunks_embedded"] == meta["embeddings"]["rows_total"] > 3
    # Some of them may have been encoded while documents were fetched; the step took that look-ahead's vectors.
    assert 0 <= meta["embeddings"]["chunks_embedded_ahead"] <= meta["embeddings"]["chunks_embedded"]
    assert lookahead._active == {}
    assert meta["embeddings"]["cpu_s"] > 0
    assert all(check_results(result).values()) and len(check_results(result)) == 5
    evaluations = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert {e.partition for e in evaluations} == {"eng"}  # one partition's result never hides another's

    store = LanceStore(lancedb_uri)
    assert_consistent(store, "eng", {"adr.html", "notes.txt", "runbooks/database.md"})
    assert doc_ids(store, "raw_documents", "hr") == set()  # only the requested partition
    row = store.read("embeddings", "doc_id = 'adr.html'", None).to_pylist()[0]
    assert row["title"] == "ADR 7: Use LanceDB" and len(row["vector"]) == 384
    assert row["metadata"]["doc_id"] == "adr.html" and row["metadata"]["source"] == "local"
    assert "```python" in row["text"]


def test_unchanged_rerun_embeds_nothing(local_env, instance):
    assert materialize_partition(instance, "eng").success
    meta = stage_metadata(materialize_partition(instance, "eng"))
    for stage in TABLES:
        assert meta[stage]["documents_added"] == meta[stage]["documents_updated"] == 0
        assert meta[stage]["documents_unchanged"] == 3
    assert meta["embeddings"]["chunks_embedded"] == 0


def test_editing_one_paragraph_reembeds_only_that_chunk(local_env, instance, corpus, lancedb_uri):
    assert materialize_partition(instance, "eng").success
    store = LanceStore(lancedb_uri)
    before = store.count_rows("embeddings", "doc_id = 'runbooks/database.md'")
    assert before >= 4  # one chunk per section

    runbook = corpus / "eng" / "runbooks" / "database.md"
    runbook.write_text(runbook.read_text().replace(paragraph("restore"), paragraph("restore") + " Verify checksums."))
    meta = stage_metadata(materialize_partition(instance, "eng"))
    assert meta["raw_documents"]["documents_updated"] == 1 and meta["raw_documents"]["documents_unchanged"] == 2
    assert meta["embeddings"]["chunks_embedded"] == 1
    assert meta["embeddings"]["chunks_reused"] == before - 1
    texts = store.read("embeddings", "doc_id = 'runbooks/database.md'", ["text"]).column("text").to_pylist()
    assert len(texts) == before and sum("Verify checksums." in t for t in texts) == 1


def test_touching_a_file_without_changing_it_redoes_nothing_downstream(local_env, instance, corpus):
    assert materialize_partition(instance, "eng").success
    notes = corpus / "eng" / "notes.txt"
    notes.write_text(notes.read_text())  # new mtime, same content
    meta = stage_metadata(materialize_partition(instance, "eng"))
    assert meta["raw_documents"]["documents_unchanged"] == 3
    assert meta["markdown"]["documents_unchanged"] == 3 and meta["embeddings"]["chunks_embedded"] == 0


def test_deleted_file_leaves_every_stage(local_env, instance, corpus, lancedb_uri):
    assert materialize_partition(instance, "eng").success
    (corpus / "eng" / "adr.html").unlink()
    meta = stage_metadata(materialize_partition(instance, "eng"))
    assert all(meta[stage]["documents_deleted"] == 1 for stage in TABLES)
    store = LanceStore(lancedb_uri)
    assert_consistent(store, "eng", {"notes.txt", "runbooks/database.md"})
    assert store.read_ledger("embeddings", "local", "eng").keys() == {"notes.txt", "runbooks/database.md"}


def test_bad_document_is_recorded_and_the_rest_of_the_run_goes_on(local_env, instance, corpus, lancedb_uri):
    assert materialize_partition(instance, "hr").success
    store = LanceStore(lancedb_uri)
    indexed = store.count_rows("embeddings", "doc_id = 'leave.txt'")
    (corpus / "hr" / "leave.txt").write_bytes(b"Full-time employees get 30 days\xff of leave.\n")
    (corpus / "hr" / "new.md").write_text("# New\n\nA new policy.\n")
    result = materialize_partition(instance, "hr")
    assert result.success
    meta = stage_metadata(result)
    assert meta["markdown"]["documents_failed"] == 1 and meta["markdown"]["documents_added"] == 1
    assert "local document 'leave.txt' in hr: invalid UTF-8" in meta["markdown"]["failures"]
    assert check_results(result)["markdown/no_document_failures"] is False
    # What was indexed stays searchable; the new document arrived.
    assert store.count_rows("embeddings", "doc_id = 'leave.txt'") == indexed
    assert store.count_rows("embeddings", "doc_id = 'new.md'") == 1
    assert [f["doc_id"] for f in store.failures("local", "hr")] == ["leave.txt"]

    (corpus / "hr" / "leave.txt").write_text("Full-time employees get 30 days of leave.\n")
    assert stage_metadata(materialize_partition(instance, "hr"))["markdown"]["documents_updated"] == 1
    assert store.failures("local", "hr") == []
    assert "30 days" in store.read("embeddings", "doc_id = 'leave.txt'", ["text"]).column("text")[0].as_py()


def test_run_stopped_between_stages_is_completed_by_the_next_run(local_env, instance, corpus, lancedb_uri):
    assert materialize_partition(instance, "eng").success
    (corpus / "eng" / "notes.txt").write_text("Deploys freeze on Thursdays.\n")
    (corpus / "eng" / "adr.html").unlink()
    (corpus / "eng" / "new.txt").write_text("A brand new note.\n")
    # The run got through raw_documents and markdown, then died.
    assert materialize_partition(instance, "eng", stages=("raw_documents", "markdown")).success
    store = LanceStore(lancedb_uri)
    state = store.read_partition_state("local", "eng")
    assert state["markdown"]["mark"] == state["raw_documents"]["mark"] != state["embeddings"]["mark"]

    meta = stage_metadata(materialize_partition(instance, "eng"))
    assert meta["raw_documents"]["documents_unchanged"] == 3  # nothing fetched twice
    assert meta["chunks"]["documents_added"] == 1 and meta["chunks"]["documents_deleted"] == 1
    assert_consistent(store, "eng", {"notes.txt", "runbooks/database.md", "new.txt"})
    texts = store.read("embeddings", "doc_id = 'notes.txt'", ["text"]).column("text").to_pylist()
    assert texts == ["Deploys freeze on Thursdays."]
    state = store.read_partition_state("local", "eng")
    assert state["embeddings"]["mark"] == state["raw_documents"]["mark"]


def test_run_dying_inside_a_stage_leaves_old_rows_and_the_next_run_finishes(local_env, instance, corpus,
                                                                             lancedb_uri, monkeypatch):
    local_env.setenv("RAG_DOCUMENTS_PER_COMMIT", "1")
    for name in ("a", "b", "c"):
        (corpus / "hr" / f"{name}.md").write_text(f"# {name}\n\n{paragraph(name)}\n")
    from rag_sync_pipeline.store.lance import LanceStore as Store

    real_write_ledger, calls = Store.write_ledger, []

    def dies_on_third_ledger_write_of_embeddings(self, stage, *args, **kwargs):
        if stage == "embeddings":
            calls.append(stage)
            if len(calls) == 3:
                raise RuntimeError("killed")
        return real_write_ledger(self, stage, *args, **kwargs)

    monkeypatch.setattr(Store, "write_ledger", dies_on_third_ledger_write_of_embeddings)
    with pytest.raises(RuntimeError, match="killed"):
        materialize_partition(instance, "hr")
    monkeypatch.setattr(Store, "write_ledger", real_write_ledger)

    store = LanceStore(lancedb_uri)
    meta = stage_metadata(materialize_partition(instance, "hr"))
    # Two documents were finished before the crash; the third's rows were written but not its ledger entry.
    assert meta["embeddings"]["documents_unchanged"] == 2
    assert meta["embeddings"]["chunks_reused"] >= 1  # its vectors were already there
    assert_consistent(store, "hr", {"leave.txt", "expenses.md", "a.md", "b.md", "c.md"})


def test_full_refresh_reprocesses_everything_but_reuses_every_vector(local_env, instance):
    assert materialize_partition(instance, "eng").success
    meta = stage_metadata(materialize_partition(instance, "eng", tags={"rag_sync/full_refresh": "true"}))
    assert meta["raw_documents"]["documents_updated"] == 3
    assert meta["embeddings"]["chunks_embedded"] == 0
    assert meta["embeddings"]["chunks_reused"] == meta["embeddings"]["rows_total"]


def test_changing_the_chunk_size_rechunks_every_document(local_env, instance, lancedb_uri):
    assert materialize_partition(instance, "eng").success
    store = LanceStore(lancedb_uri)
    before = store.count_rows("chunks", partition_filter("local", "eng"))
    local_env.setenv("RAG_CHUNK_MAX_TOKENS", "64")
    meta = stage_metadata(materialize_partition(instance, "eng"))
    assert meta["markdown"]["documents_unchanged"] == 3  # nothing upstream moved
    assert meta["chunks"]["documents_updated"] >= 1 and meta["chunks"]["documents_unchanged"] == 0
    chunks = store.read("chunks", partition_filter("local", "eng"), ["id", "token_count"]).to_pylist()
    assert len(chunks) > before and max(c["token_count"] for c in chunks) <= 64
    vector_ids = store.read("embeddings", partition_filter("local", "eng"), ["id"]).column("id").to_pylist()
    assert sorted(vector_ids) == sorted(c["id"] for c in chunks)
