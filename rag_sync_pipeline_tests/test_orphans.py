"""Orphans of each kind, found and removed; configured partitions are never touched."""

from __future__ import annotations

import json

import pyarrow as pa

from rag_sync_pipeline.store import LanceStore, schemas
from rag_sync_pipeline.store.orphans import PARTITIONED_TABLES, find_orphans, remove_orphans
from rag_sync_pipeline_tests.lifecycle_support import sync_partition
from rag_sync_pipeline_tests.test_cli import rag_sync


def kinds(groups) -> set[tuple[str, str, str]]:
    return {(g.kind, g.table, g.partition) for g in groups}


def test_each_kind_of_orphan_is_found_and_removed(corpus, lancedb_uri, embedder):
    store = LanceStore(lancedb_uri)
    sync_partition(store, corpus, "eng", embedder)
    sync_partition(store, corpus, "hr", embedder)
    live = {"local": {"eng", "hr"}}
    assert find_orphans(store, live) == []

    # A document whose markdown row vanished (say, removed by hand): its chunks have no upstream.
    store.delete(schemas.MARKDOWN_TABLE, "partition = 'eng' AND doc_id = 'notes.txt'")
    # A vector whose chunk is gone, and a failure of a document its stage no longer tracks.
    row = store.read(schemas.EMBEDDINGS_TABLE, "doc_id = 'adr.html'", None).to_pylist()[0]
    table = store.table(schemas.EMBEDDINGS_TABLE)
    table.add(pa.Table.from_pylist([{**row, "id": "stale-vector"}], schema=table.schema))
    store.record_failures("markdown", "local", "eng", ["ghost.md"], {"ghost.md": ("u", "gone")}, "run")

    found = find_orphans(store, {"local": {"eng"}})  # `hr` was removed from the configuration
    assert kinds(found) >= {("upstream_gone", "chunks", "eng"), ("unused_vector", "embeddings", "eng"),
                            ("resolved_failure", "failures", "eng"), ("removed_partition", "embeddings", "hr"),
                            ("removed_partition", "doc_ledger", "hr")}
    assert all(g.partition == "hr" for g in found if g.kind == "removed_partition")
    gone = next(g for g in found if g.kind == "upstream_gone")
    assert gone.doc_ids == ["notes.txt"] and gone.rows == 1
    assert next(g for g in found if g.kind == "unused_vector").rows == 1

    # A partition with a run in flight is left alone for now.
    assert not any(g.partition == "hr" for g in find_orphans(store, {"local": {"eng"}}, busy={("local", "hr")}))
    # A source whose partitions cannot be listed right now is left alone entirely.
    assert find_orphans(store, {"local": None}) == []

    eng_docs_before = store.count_rows(schemas.EMBEDDINGS_TABLE, "partition = 'eng'")
    assert remove_orphans(store, found) == sum(g.rows for g in found)
    assert find_orphans(store, {"local": {"eng"}}) == []
    for name in PARTITIONED_TABLES:
        assert store.count_rows(name, "partition = 'hr'") == 0, name
    # notes.txt's one chunk and the stale vector are gone
    assert store.count_rows(schemas.EMBEDDINGS_TABLE, "partition = 'eng'") == eng_docs_before - 2
    assert store.count_rows(schemas.CHUNKS_TABLE, "doc_id = 'notes.txt'") == 0
    assert "notes.txt" not in store.read_ledger("chunks", "local", "eng")


def test_cleanup_dry_run_lists_a_removed_sources_rows_and_cleanup_removes_them(cli_env, tmp_path, corpus):
    sources = tmp_path / "sources.yaml"
    sources.write_text(f"sources:\n  - {{name: handbook, type: local, root: {corpus}}}\n"
                       f"  - {{name: wiki, type: local, root: {corpus}}}\n")
    env = {**cli_env, "RAG_SOURCES_FILE": str(sources), "RAG_LOCAL_ENABLED": "false",
           "RAG_MAINTENANCE_RETENTION_MINUTES": "0"}
    rag_sync(env, "sync")
    store = LanceStore(env["RAG_LANCEDB_URI"])
    counts = {name: store.count_rows(name, "source = 'wiki'") for name in PARTITIONED_TABLES}
    handbook = {name: store.count_rows(name, "source = 'handbook'") for name in PARTITIONED_TABLES}
    assert counts["embeddings"] > 0 and counts == handbook
    nothing = json.loads(rag_sync(env, "cleanup", "--dry-run", "--json").stdout)
    assert nothing["orphans"] == [] and nothing["orphan_rows"] == 0

    # `wiki` leaves the configuration.
    sources.write_text(f"sources:\n  - {{name: handbook, type: local, root: {corpus}}}\n")
    versions = store.version("embeddings")
    listed = json.loads(rag_sync(env, "cleanup", "--dry-run", "--json").stdout)
    assert listed["dry_run"] is True
    listed_counts = {}
    for group in listed["orphans"]:
        assert group["kind"] == "removed_partition" and group["source"] == "wiki"
        listed_counts[group["table"]] = listed_counts.get(group["table"], 0) + group["rows"]
    assert listed_counts == {name: n for name, n in counts.items() if n}
    assert {g["partition"] for g in listed["orphans"]} == {"eng", "hr"}
    assert store.version("embeddings") == versions  # nothing changed
    assert {name: store.count_rows(name, "source = 'wiki'") for name in PARTITIONED_TABLES} == counts
    assert "would remove" in rag_sync(env, "cleanup", "--dry-run").stdout

    done = json.loads(rag_sync(env, "cleanup", "--json").stdout)
    assert done["removed_rows"] == sum(counts.values())
    assert all(store.count_rows(name, "source = 'wiki'") == 0 for name in PARTITIONED_TABLES)
    assert {name: store.count_rows(name, "source = 'handbook'") for name in PARTITIONED_TABLES} == handbook
    assert done["tables"]["embeddings"]["after"]["versions"] <= 3
    hits = json.loads(rag_sync(env, "search", "how much is reimbursed for meals", "--json", "-k", "1").stdout)
    assert hits[0]["source"] == "handbook"


def test_a_partition_is_orphaned_only_once_its_folder_and_its_dynamic_partition_are_gone(cli_env, corpus):
    import shutil

    import dagster as dg

    rag_sync(cli_env, "sync")
    shutil.rmtree(corpus / "hr")
    # Still a dynamic partition of the instance: cleanup keeps its rows (partitions added by hand stay).
    assert json.loads(rag_sync(cli_env, "cleanup", "--dry-run", "--json").stdout)["orphans"] == []
    with dg.DagsterInstance.from_config(cli_env["DAGSTER_HOME"]) as instance:
        instance.delete_dynamic_partition("local_partitions", "hr")
    listed = json.loads(rag_sync(cli_env, "cleanup", "--dry-run", "--json").stdout)["orphans"]
    assert listed and {(g["source"], g["partition"]) for g in listed} == {("local", "hr")}
