"""The LanceDB tables on S3 (RAG_LANCEDB_URI=s3://...): moto's server on loopback behind the counting proxy.

LanceDB commits a table version on an object store with a conditional PUT of the next manifest
(`If-None-Match: *`); of two writers committing at once, the store answers one with 412 and LanceDB retries
that commit on the newer version. These tests sync into s3://, search, run maintenance, sync several partitions
from separate processes at once, and make two processes commit to one table in a tight loop, checking through
the proxy that 412s were really answered and that no write was lost.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import botocore.exceptions
import dagster as dg
import pytest

from rag_sync_pipeline.settings import ConfigurationError, load_settings
from rag_sync_pipeline.store import open_store, schemas
from rag_sync_pipeline.store.lance import LanceStore, partition_filter
from rag_sync_pipeline.store.maintenance import maintain
from rag_sync_pipeline_tests.conftest import paragraph
from rag_sync_pipeline_tests.dagster_support import materialize_partition, stage_metadata
from rag_sync_pipeline_tests.s3_support import TEST_CREDENTIALS, CountingProxy, MotoServer

pytestmark = pytest.mark.timeout(600)

BUCKET = "rag-lancedb"
PREFIX = "prod/knowledge"
WRITERS = 3
COMMITS_PER_WRITER = 12


@pytest.fixture
def s3_store(clean_env: pytest.MonkeyPatch) -> Iterator[tuple[MotoServer, CountingProxy]]:
    """An empty bucket on moto behind the counting proxy; RAG_LANCEDB_URI and the AWS variables point at it."""
    moto = MotoServer()
    proxy = CountingProxy(moto.port)
    try:
        moto.client().create_bucket(Bucket=BUCKET)
        clean_env.setenv("RAG_LANCEDB_URI", f"s3://{BUCKET}/{PREFIX}")
        clean_env.setenv("RAG_LANCEDB_STORAGE_OPTIONS", json.dumps({"aws_endpoint": proxy.url, "allow_http": True,
                                                                    "aws_region": "us-east-1"}))
        clean_env.setenv("AWS_ACCESS_KEY_ID", TEST_CREDENTIALS["aws_access_key_id"])
        clean_env.setenv("AWS_SECRET_ACCESS_KEY", TEST_CREDENTIALS["aws_secret_access_key"])
        yield moto, proxy
    finally:
        proxy.close()
        moto.close()


def conditional_put_answers(proxy: CountingProxy) -> tuple[int, int]:
    """(commits accepted, commits refused with 412) among the conditional PUTs the proxy saw."""
    return (proxy.answered("PUT object", "If-None-Match", 200), proxy.answered("PUT object", "If-None-Match", 412))


def test_test_server_answers_concurrent_conditional_puts_atomically():
    """Eight clients PUT one key with If-None-Match: * at once: exactly one wins, the others get 412.

    Plain `moto.server` (threaded) fails this with large bodies; `MotoServer()` serves one request at a time."""
    moto = MotoServer()
    try:
        client = moto.client()
        client.create_bucket(Bucket=BUCKET)
        body = b"x" * 4_000_000  # large enough that hashing it lets other threads run between check and write

        def put(key: str) -> int:
            try:
                client.put_object(Bucket=BUCKET, Key=key, Body=body, IfNoneMatch="*")
                return 200
            except botocore.exceptions.ClientError as error:
                return error.response["ResponseMetadata"]["HTTPStatusCode"]

        with ThreadPoolExecutor(8) as pool:
            for round_ in range(8):
                answers = sorted(pool.map(put, [f"manifest-{round_}"] * 8))
                assert answers == [200] + [412] * 7, f"round {round_}: {answers}"
    finally:
        moto.close()


def test_storage_options_setting_refuses_credentials(clean_env):
    clean_env.setenv("RAG_LANCEDB_STORAGE_OPTIONS", json.dumps({"aws_endpoint": "http://minio:9000",
                                                                "aws_secret_access_key": "s3cr3t"}))
    with pytest.raises(ConfigurationError, match="aws_secret_access_key") as raised:
        load_settings()
    assert "s3cr3t" not in str(raised.value)
    clean_env.setenv("RAG_LANCEDB_STORAGE_OPTIONS", json.dumps({"aws_endpoint": "http://minio:9000",
                                                                "allow_http": True}))
    assert dict(load_settings().lancedb_storage_options) == {"aws_endpoint": "http://minio:9000",
                                                            "allow_http": "true"}


def test_sync_search_and_maintain_on_s3(s3_store, local_env, instance, embedder):
    moto, proxy = s3_store
    local_env.setenv("RAG_LANCEDB_URI", f"s3://{BUCKET}/{PREFIX}")  # local_env pointed it at a folder
    for partition in ("eng", "hr"):
        result = materialize_partition(instance, partition)
        assert result.success
    meta = stage_metadata(result)
    assert meta["embeddings"]["documents_total"] == 2 and meta["embeddings"]["rows_total"] >= 2

    keys = [o["Key"] for page in moto.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
            for o in page.get("Contents", [])]
    assert keys and all(k.startswith(PREFIX + "/") for k in keys)
    assert {k.split("/")[2] for k in keys} >= {f"{t}.lance" for t in ("raw_documents", "markdown", "chunks",
                                                                     "embeddings", "doc_ledger", "partition_state")}
    accepted, _ = conditional_put_answers(proxy)
    assert accepted > 0, f"LanceDB committed without conditional PUTs: {proxy.answers}"

    store = open_store(load_settings())
    hits = store.search(embedder.encode(["How many days of paid annual leave?"])[0].tolist(), k=1)
    assert hits[0]["doc_id"] == "leave.txt" and hits[0]["partition"] == "hr"
    versions_before = len(store.table(schemas.EMBEDDINGS_TABLE).list_versions())

    report = maintain(store.db, retention=timedelta(0))
    assert report.ok, [t.error for t in report.tables if t.error]
    embeddings = next(t for t in report.tables if t.table == schemas.EMBEDDINGS_TABLE)
    assert embeddings.after.versions < versions_before and embeddings.after.rows == embeddings.before.rows
    assert embeddings.after.indices >= 1  # the full-text index on `text`, written to S3 too
    # A run after maintenance still finds its tables and changes nothing.
    rerun = stage_metadata(materialize_partition(instance, "eng"))
    assert rerun["embeddings"]["documents_unchanged"] == 3 and rerun["embeddings"]["chunks_embedded"] == 0
    hits = open_store(load_settings()).search(embedder.encode(["freeze deploys on Fridays"])[0].tolist(), k=1)
    assert hits[0]["doc_id"] == "notes.txt"


def _partition_corpus(root: Path, partitions: list[str], documents: int) -> dict[str, set[str]]:
    expected = {}
    for partition in partitions:
        (root / partition).mkdir(parents=True)
        for i in range(documents):
            topic = f"{partition} topic {i}"
            (root / partition / f"doc{i}.md").write_text(f"# {topic}\n\n{paragraph(topic, 3)}\n", encoding="utf-8")
        expected[partition] = {f"doc{i}.md" for i in range(documents)}
    return expected


def test_concurrent_partition_syncs_share_the_tables_on_s3(s3_store, clean_env, tmp_path):
    """Three `rag-sync sync` processes, one partition each, write the same s3:// tables at once."""
    _, proxy = s3_store
    expected = _partition_corpus(tmp_path / "corpus", [f"team{i}" for i in range(3)], documents=3)
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.DagsterInstance.from_config(str(home)) as instance:  # created once: four processes racing to
        instance.get_runs(limit=1)                                # create its SQLite schema would collide
    env = {**os.environ, "RAG_LOCAL_ROOT": str(tmp_path / "corpus"), "DAGSTER_HOME": str(home),
           "RAG_DOCUMENTS_PER_COMMIT": "1"}  # one commit per document: many commits to collide
    started = time.monotonic()
    processes = {p: subprocess.Popen([str(Path(sys.executable).parent / "rag-sync"), "sync", "--source", "local",
                                      "--partition", p, "--json"], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True) for p in expected}
    outputs = {p: proc.communicate(timeout=500) for p, proc in processes.items()}
    elapsed = time.monotonic() - started
    for partition, proc in processes.items():
        assert proc.returncode == 0, f"{partition}: {outputs[partition][1][-3000:]}"
        assert json.loads(outputs[partition][0])["documents_total"] == 3

    store = open_store(load_settings())
    for partition, docs in expected.items():
        scope = partition_filter("local", partition)
        for table in ("raw_documents", "markdown", "chunks", "embeddings"):
            assert set(store.read(table, scope, ["doc_id"]).column("doc_id").to_pylist()) == docs, (table, partition)
        chunk_ids = store.read("chunks", scope, ["id"]).column("id").to_pylist()
        vector_ids = store.read("embeddings", scope, ["id"]).column("id").to_pylist()
        assert len(vector_ids) == len(set(vector_ids)) and set(vector_ids) == set(chunk_ids)
        assert set(store.read_partition_state("local", partition)) == {"raw_documents", "markdown", "chunks",
                                                                       "embeddings"}
    ledger_keys = store.read(schemas.LEDGER_TABLE, None, ["key"]).column("key").to_pylist()
    assert len(ledger_keys) == len(set(ledger_keys)) == 4 * 3 * 3  # stages x partitions x documents
    accepted, refused = conditional_put_answers(proxy)
    print(f"3 concurrent syncs in {elapsed:.1f}s: {accepted} commits accepted, {refused} refused with 412 and "
          "retried")
    assert accepted > 0


def _commit_loop(uri: str, storage_options: dict[str, str], writer: int, start_at: float) -> None:
    """Replace one document per commit in a shared table, starting at the same moment as the other writers."""
    store = LanceStore(uri, storage_options)
    time.sleep(max(0.0, start_at - time.time()))
    for i in range(COMMITS_PER_WRITER):
        doc_id = f"w{writer}-{i}"
        row = {"key": doc_id, "stage": "test", "source": "conflict", "partition": f"w{writer}", "doc_id": doc_id,
               "upstream_hash": str(i), "doc_hash": str(i), "updated_at": None}
        store.replace_documents(schemas.LEDGER_TABLE, schemas.LEDGER_SCHEMA, "key",
                                partition_filter("conflict", f"w{writer}"), [doc_id], [row])


def test_concurrent_commits_to_one_table_retry_on_412(s3_store):
    """Three processes commit to one table in a tight loop: S3 refuses colliding commits with 412, LanceDB
    retries them, and every write lands exactly once."""
    _, proxy = s3_store
    settings = load_settings()
    open_store(settings).table(schemas.LEDGER_TABLE)  # create it first: the writers race on commits, not creation
    proxy.reset()
    context = multiprocessing.get_context("spawn")  # LanceDB's runtime is not fork-safe
    start_at = time.time() + 8  # after every spawned interpreter has imported lancedb
    writers = [context.Process(target=_commit_loop, args=(settings.lancedb_uri, dict(settings.lancedb_storage_options),
                                                         w, start_at)) for w in range(WRITERS)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=300)
    assert [p.exitcode for p in writers] == [0] * WRITERS

    rows = open_store(settings).read(schemas.LEDGER_TABLE, "source = 'conflict'", ["key"]).column("key").to_pylist()
    assert sorted(rows) == sorted(f"w{w}-{i}" for w in range(WRITERS) for i in range(COMMITS_PER_WRITER))
    accepted, refused = conditional_put_answers(proxy)
    print(f"{WRITERS} writers x {COMMITS_PER_WRITER} commits: {accepted} conditional PUTs accepted, "
          f"{refused} refused with 412")
    assert refused > 0, f"no commit collided, the conflict path was not exercised: {proxy.answers}"
    assert accepted >= WRITERS * COMMITS_PER_WRITER
    assert open_store(settings).version(schemas.LEDGER_TABLE) >= WRITERS * COMMITS_PER_WRITER + 1
