"""The S3 source against a real S3 endpoint on loopback: moto's server in its own process, behind a counting proxy.

Requests are counted at the server side of the wire (see s3_support.py), so "fetched exactly those 30" means
30 GetObject requests reached the endpoint, whatever the client did.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from rag_sync_pipeline.definitions import build_definitions
from rag_sync_pipeline.defs.clients import source_for
from rag_sync_pipeline.settings import ConfigurationError, load_settings
from rag_sync_pipeline.sources import DocumentError, PartitionError
from rag_sync_pipeline.store import LanceStore
from rag_sync_pipeline.store.lance import partition_filter
from rag_sync_pipeline_tests.dagster_support import check_results, materialize_partition, stage_metadata
from rag_sync_pipeline_tests.documents_support import docx_bytes, pdf_bytes
from rag_sync_pipeline_tests.s3_support import (
    TEST_CREDENTIALS,
    CountingProxy,
    MotoServer,
    multipart_upload,
    upload_many,
)

STAGES = ("raw_documents", "markdown", "chunks", "embeddings")
MIB = 1024 * 1024
RAG_SYNC = str(Path(sys.executable).parent / "rag-sync")


@dataclass
class S3Endpoint:
    moto: MotoServer
    proxy: CountingProxy

    @property
    def admin(self):
        """A client straight to moto, for set-up: its requests are not counted."""
        return self.moto.client()


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Endpoint]:
    moto = MotoServer()
    proxy = CountingProxy(moto.port)
    try:
        yield S3Endpoint(moto, proxy)
    finally:
        proxy.close()
        moto.close()


def new_bucket(s3: S3Endpoint, stem: str = "docs") -> str:
    bucket = f"{stem}-{uuid.uuid4().hex[:10]}"
    s3.admin.create_bucket(Bucket=bucket)
    return bucket


def configure(env: pytest.MonkeyPatch, s3: S3Endpoint, buckets: str, lancedb_uri: str, **extra: str) -> None:
    """The environment a deployment would set: buckets, endpoint, region, credentials; the local source off."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "S3_")):
            env.delenv(name)
    env.setenv("S3_SYNC_BUCKET", buckets)
    env.setenv("S3_ENDPOINT_URL", s3.proxy.url)
    env.setenv("AWS_REGION", "us-east-1")
    env.setenv("AWS_ACCESS_KEY_ID", TEST_CREDENTIALS["aws_access_key_id"])
    env.setenv("AWS_SECRET_ACCESS_KEY", TEST_CREDENTIALS["aws_secret_access_key"])
    env.setenv("RAG_LOCAL_ENABLED", "false")
    env.setenv("RAG_LANCEDB_URI", lancedb_uri)
    for name, value in extra.items():
        env.setenv(name, value)


def sync(instance: dg.DagsterInstance, partition: str, **kwargs) -> dg.ExecuteInJobResult:
    return materialize_partition(instance, partition, source="s3", **kwargs)


def tick(instance: dg.DagsterInstance) -> dg.SensorResult:
    definitions = build_definitions(load_settings())
    sensor = definitions.resolve_sensor_def("s3_sync_sensor")
    return sensor(dg.build_sensor_context(instance=instance, resources=definitions.resources))


def doc_ids(store: LanceStore, table: str, partition: str) -> set[str]:
    return set(store.read(table, partition_filter("s3", partition), ["doc_id"]).column("doc_id").to_pylist())


def listed_keys(s3: S3Endpoint, bucket: str) -> set[str]:
    paginator = s3.admin.get_paginator("list_objects_v2")
    return {item["Key"] for page in paginator.paginate(Bucket=bucket) for item in page.get("Contents", [])}


def assert_every_stage_holds(store: LanceStore, partition: str, expected: set[str]) -> None:
    """Every stage has exactly the expected documents, and chunks and vectors match one to one, no duplicates."""
    for table in STAGES:
        assert doc_ids(store, table, partition) == expected, table
    scope = partition_filter("s3", partition)
    chunk_ids = store.read("chunks", scope, ["id"]).column("id").to_pylist()
    vector_ids = store.read("embeddings", scope, ["id"]).column("id").to_pylist()
    assert len(chunk_ids) == len(set(chunk_ids)) == len(vector_ids) == len(set(vector_ids))
    assert set(chunk_ids) == set(vector_ids)


# -- a bucket of 3,000 objects: complete first sync, then only the changes -----------------------------------

BIG_OBJECTS = 3000
BIG_SETTINGS = {"RAG_DOCUMENTS_PER_COMMIT": "1000", "RAG_EMBEDDING_BATCH_SIZE": "256"}  # few commits, full batches


@dataclass
class BigBucket:
    bucket: str
    lancedb_uri: str
    instance: dg.DagsterInstance
    first_sync: dict[str, dict]
    first_sync_gets: int
    first_sync_lists: int
    first_sync_seconds: float


def sentence(i: int, variant: str = "") -> bytes:
    return f"Record {i}{variant}: the shipment to depot {i % 97} left on schedule.\n".encode()


@pytest.fixture(scope="module")
def big_bucket(s3: S3Endpoint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigBucket]:
    """3,000 one-sentence objects in nested folders, synced once through Dagster; shared by the tests below."""
    bucket = new_bucket(s3, "big")
    upload_many(s3.admin, bucket, [(f"batch-{i // 500}/record {i:04d}.txt", sentence(i)) for i in range(BIG_OBJECTS)])
    lancedb_uri = str(tmp_path_factory.mktemp("big") / "lancedb")
    with dg.instance_for_test() as instance:
        with pytest.MonkeyPatch.context() as env:
            configure(env, s3, bucket, lancedb_uri, **BIG_SETTINGS)
            s3.proxy.reset()
            started = time.monotonic()
            result = sync(instance, bucket)
            seconds = time.monotonic() - started
        assert result.success
        yield BigBucket(bucket, lancedb_uri, instance, stage_metadata(result), s3.proxy.count("GetObject"),
                        s3.proxy.count("ListObjectsV2"), seconds)


@pytest.fixture
def big_env(clean_env: pytest.MonkeyPatch, s3: S3Endpoint, big_bucket: BigBucket) -> BigBucket:
    configure(clean_env, s3, big_bucket.bucket, big_bucket.lancedb_uri, **BIG_SETTINGS)
    s3.proxy.reset()
    return big_bucket


def test_bucket_of_3000_objects_syncs_completely(big_env: BigBucket, s3: S3Endpoint):
    raw = big_env.first_sync["raw_documents"]
    assert raw["documents_added"] == BIG_OBJECTS and raw["documents_failed"] == 0
    assert big_env.first_sync_gets == BIG_OBJECTS  # each object fetched once
    assert big_env.first_sync_lists == math.ceil(BIG_OBJECTS / 1000)  # ListObjectsV2 pages of 1,000 keys
    assert big_env.first_sync["embeddings"]["chunks_embedded"] == BIG_OBJECTS  # one sentence, one chunk
    durations = {stage: meta["duration_s"] for stage, meta in big_env.first_sync.items()}
    print(f"\nfirst sync of {BIG_OBJECTS} objects: {big_env.first_sync_seconds:.1f}s {durations}")
    # Whatever the other tests did to the bucket since, every stage mirrors it now.
    assert_every_stage_holds(LanceStore(big_env.lancedb_uri), big_env.bucket, listed_keys(s3, big_env.bucket))


def test_tick_without_change_requests_no_run_and_lists_once_per_1000_keys(big_env: BigBucket, s3: S3Endpoint):
    result = tick(big_env.instance)
    assert result.run_requests == [] and not result.dynamic_partitions_requests
    assert f"{big_env.bucket}: unchanged" in str(result.skip_reason)
    assert s3.proxy.count("ListObjectsV2") == math.ceil(len(listed_keys(s3, big_env.bucket)) / 1000) == 3
    assert s3.proxy.count("GetObject") == 0


def test_overwriting_30_fetches_exactly_those_30_and_deleting_10_removes_them_from_every_stage(
        big_env: BigBucket, s3: S3Endpoint):
    keys = sorted(listed_keys(s3, big_env.bucket))
    overwritten, deleted = keys[100:3000:97][:30], keys[5:3000:301][:10]
    assert len(overwritten) == 30 and len(deleted) == 10 and not set(overwritten) & set(deleted)
    upload_many(s3.admin, big_env.bucket, [(k, sentence(int(k[-8:-4]), " (amended)")) for k in overwritten])

    # The sensor sees the (key, ETag) set move and asks for a run of that bucket.
    assert [r.partition_key for r in tick(big_env.instance).run_requests] == [big_env.bucket]
    s3.proxy.reset()
    meta = stage_metadata(sync(big_env.instance, big_env.bucket))
    assert s3.proxy.keys_of("GetObject") == {k: 1 for k in overwritten}  # exactly those 30, once each
    assert meta["raw_documents"]["documents_updated"] == 30
    assert meta["raw_documents"]["documents_unchanged"] == len(keys) - 30
    assert meta["embeddings"]["chunks_embedded"] == 30
    store = LanceStore(big_env.lancedb_uri)
    amended = store.read("embeddings", partition_filter("s3", big_env.bucket) + " AND text LIKE '%amended%'",
                         ["doc_id"]).column("doc_id").to_pylist()
    assert sorted(amended) == overwritten

    for key in deleted:
        s3.admin.delete_object(Bucket=big_env.bucket, Key=key)
    s3.proxy.reset()
    meta = stage_metadata(sync(big_env.instance, big_env.bucket))
    assert s3.proxy.count("GetObject") == 0
    assert all(meta[stage]["documents_deleted"] == 10 for stage in STAGES)
    assert_every_stage_holds(store, big_env.bucket, set(keys) - set(deleted))
    assert tick(big_env.instance).run_requests == []  # caught up


# -- one fresh bucket per test ---------------------------------------------------------------------------------

@pytest.fixture
def bucket(clean_env: pytest.MonkeyPatch, s3: S3Endpoint, lancedb_uri: str) -> str:
    """A new empty bucket, configured as the only one; the proxy's counts start from zero."""
    name = new_bucket(s3)
    configure(clean_env, s3, name, lancedb_uri)
    s3.proxy.reset()
    return name


def raw_rows(store: LanceStore, partition: str) -> dict[str, dict]:
    rows = store.read("raw_documents", partition_filter("s3", partition), None).to_pylist()
    return {row["doc_id"]: row for row in rows}


def test_multipart_object_syncs_and_same_bytes_reuploaded_with_new_etag_adds_no_chunks(bucket, s3, instance,
                                                                                       lancedb_uri):
    # moto, like S3, wants parts of at least 5 MiB; blank lines pad the first part without adding text to embed.
    content = (b"# Employee handbook\n\nEveryone gets 28 days of paid leave per year.\n" + b"\n" * (5 * MIB)
               + b"## Travel\n\nBook trains for trips under six hours.\n")
    etag = multipart_upload(s3.admin, bucket, "handbook.md", content, part_size=5 * MIB)
    assert etag.startswith('"') and etag.endswith('-2"')  # not an MD5 of the content
    first = stage_metadata(sync(instance, bucket))
    assert first["raw_documents"]["documents_added"] == 1 and first["embeddings"]["chunks_embedded"] >= 1
    store = LanceStore(lancedb_uri)
    assert raw_rows(store, bucket)["handbook.md"]["version"] == etag  # compared as listed, quotes and -2 kept
    chunk_ids = sorted(store.read("embeddings", partition_filter("s3", bucket), ["id"]).column("id").to_pylist())

    single = s3.admin.put_object(Bucket=bucket, Key="handbook.md", Body=content, ContentType="text/markdown")["ETag"]
    assert single != etag and "-" not in single
    assert [r.partition_key for r in tick(instance).run_requests] == [bucket]  # the (key, ETag) set moved
    s3.proxy.reset()
    again = stage_metadata(sync(instance, bucket))
    assert s3.proxy.keys_of("GetObject") == {"handbook.md": 1}  # an ETag says nothing of content: fetch once
    assert again["raw_documents"]["documents_updated"] == 0 and again["raw_documents"]["documents_unchanged"] == 1
    for stage in STAGES[1:]:
        assert (again[stage]["documents_added"], again[stage]["documents_updated"]) == (0, 0), stage
        assert again[stage]["documents_unchanged"] == 1, stage
    assert again["embeddings"]["chunks_embedded"] == 0
    assert sorted(store.read("embeddings", partition_filter("s3", bucket), ["id"]).column("id").to_pylist()) \
        == chunk_ids
    assert raw_rows(store, bucket)["handbook.md"]["version"] == single
    assert tick(instance).run_requests == []


UNICODE_DOCS = {
    "Team Handbook/Zürich office.md": "# Zürich office\n\nThe office opens at 08:00 and closes at 18:00.\n",
    "notes/日本語 メモ.txt": "東京オフィスの会議室は三階にあります。\n",
    "specs/100% done + final (v2).md": "# Final spec\n\nPercent signs and plus signs stay in the key.\n",
    "a=b&c/ spaced  out .txt": "Leading, doubled and trailing spaces are part of this key.\n",
}


def test_keys_with_spaces_and_unicode_round_trip_as_document_ids(bucket, s3, instance, lancedb_uri):
    upload_many(s3.admin, bucket, [(k, v.encode()) for k, v in UNICODE_DOCS.items()])
    assert sync(instance, bucket).success
    assert s3.proxy.keys_of("GetObject") == {k: 1 for k in UNICODE_DOCS}
    store = LanceStore(lancedb_uri)
    assert_every_stage_holds(store, bucket, set(UNICODE_DOCS))
    rows = raw_rows(store, bucket)
    zurich = rows["Team Handbook/Zürich office.md"]
    assert zurich["url"] == f"s3://{bucket}/Team Handbook/Zürich office.md"
    assert zurich["path"] == f"{bucket} / Team Handbook" and zurich["content_type"] == "text/markdown"
    assert json.loads(zurich["metadata_json"]) == {"bucket": bucket, "key": "Team Handbook/Zürich office.md",
                                                   "size": len(UNICODE_DOCS["Team Handbook/Zürich office.md"]
                                                               .encode()), "content_type": "text/markdown"}
    assert zurich["version"] == s3.admin.head_object(Bucket=bucket, Key="Team Handbook/Zürich office.md")["ETag"]
    assert zurich["last_modified"].endswith("+00:00")
    title = store.read("markdown", "doc_id = 'specs/100% done + final (v2).md'", ["title"]).column("title")
    assert title.to_pylist() == ["Final spec"]

    s3.admin.delete_object(Bucket=bucket, Key="notes/日本語 メモ.txt")
    s3.admin.put_object(Bucket=bucket, Key="a=b&c/ spaced  out .txt", Body=b"Now with new text.\n")
    s3.proxy.reset()
    meta = stage_metadata(sync(instance, bucket))
    assert s3.proxy.keys_of("GetObject") == {"a=b&c/ spaced  out .txt": 1}
    assert meta["embeddings"]["documents_deleted"] == 1 and meta["embeddings"]["documents_updated"] == 1
    assert_every_stage_holds(store, bucket, set(UNICODE_DOCS) - {"notes/日本語 メモ.txt"})


def test_skipped_objects_are_counted_by_reason_and_never_fetched(bucket, s3, instance, clean_env):
    clean_env.setenv("S3_SYNC_MAX_OBJECT_BYTES", "1000")
    admin = s3.admin
    admin.put_object(Bucket=bucket, Key="guides/", Body=b"")  # what the console's "Create folder" makes
    admin.put_object(Bucket=bucket, Key="guides/empty.md", Body=b"")
    admin.put_object(Bucket=bucket, Key="guides/huge.txt", Body=b"x" * 1001)
    admin.put_object(Bucket=bucket, Key="guides/diagram.png", Body=b"\x89PNG\r\n")
    admin.put_object(Bucket=bucket, Key="guides/export.zip", Body=b"PK\x03\x04")
    admin.put_object(Bucket=bucket, Key="guides/Makefile", Body=b"all:\n")
    admin.put_object(Bucket=bucket, Key="guides/2019.md", Body=b"# 2019\n\nOld.\n", StorageClass="GLACIER")
    admin.put_object(Bucket=bucket, Key="guides/setup.md", Body=b"# Setup\n\nInstall the agent first.\n")

    result = sync(instance, bucket)
    assert s3.proxy.keys_of("GetObject") == {"guides/setup.md": 1}
    raw = stage_metadata(result)["raw_documents"]
    assert raw["documents_added"] == 1 and raw["documents_failed"] == 0 and raw["documents_skipped"] == 7
    assert raw["skipped_reasons"] == {"folder key": 1, "empty object": 1, "larger than 1000 bytes": 1,
                                      "unsupported type (.png)": 1, "unsupported type (.zip)": 1,
                                      "unsupported type (no extension)": 1, "archived (GLACIER)": 1}
    assert all(check_results(result).values())  # skipping is not failing

    admin.put_object(Bucket=bucket, Key="guides/diagram.png", Body=b"\x89PNG\r\n another picture")
    assert tick(instance).run_requests == []  # a skipped object's change is no reason to sync


def test_pdf_docx_json_csv_convert_and_a_corrupt_pdf_fails_alone(bucket, s3, instance, lancedb_uri):
    admin = s3.admin
    admin.put_object(Bucket=bucket, Key="reports/q3.pdf", ContentType="application/pdf",
                     Body=pdf_bytes([["Q3 revenue grew 12 percent."], ["Churn fell to 2 percent."]], title="Q3 report"))
    admin.put_object(Bucket=bucket, Key="reviews/incident.docx", Body=docx_bytes(title="Ingest incident"))
    admin.put_object(Bucket=bucket, Key="config/oncall.json", Body=b'{"primary": "ana", "secondary": "bo"}')
    admin.put_object(Bucket=bucket, Key="data/owners.csv", Body=b"service,owner\ningest,ana\nbilling,bo\n")
    admin.put_object(Bucket=bucket, Key="reports/broken.pdf", Body=b"%PDF-1.7\n1 0 obj << /Type /Catalog")
    # The object's own Content-Type wins when it names a supported format; else the extension decides.
    admin.put_object(Bucket=bucket, Key="notes/status.txt", ContentType="text/html; charset=utf-8",
                     Body=b"<html><head><title>Status</title></head><body><h1>All green</h1></body></html>")

    result = sync(instance, bucket)
    assert result.success  # one bad document does not fail the run
    meta = stage_metadata(result)
    assert meta["raw_documents"]["documents_added"] == 6
    assert meta["markdown"]["documents_added"] == 5 and meta["markdown"]["documents_failed"] == 1
    assert "s3 document 'reports/broken.pdf'" in meta["markdown"]["failures"]
    assert "unreadable PDF" in meta["markdown"]["failures"]
    assert check_results(result)["markdown/no_document_failures"] is False
    store = LanceStore(lancedb_uri)
    assert [(f["doc_id"], f["stage"]) for f in store.failures("s3", bucket)] == [("reports/broken.pdf", "markdown")]

    rows = {r["doc_id"]: r for r in store.read("markdown", partition_filter("s3", bucket), None).to_pylist()}
    assert rows["reports/q3.pdf"]["title"] == "Q3 report" and "Churn fell to 2 percent." in rows["reports/q3.pdf"][
        "markdown"]
    assert rows["reviews/incident.docx"]["title"] == "Ingest incident"
    assert "## Timeline" in rows["reviews/incident.docx"]["markdown"]
    assert "| Ingest | Ana \\| Bo |" in rows["reviews/incident.docx"]["markdown"]
    assert rows["config/oncall.json"]["markdown"].startswith('```json\n{\n  "primary": "ana"')
    assert "| ingest | ana |" in rows["data/owners.csv"]["markdown"]
    assert rows["notes/status.txt"]["title"] == "Status" and "# All green" in rows["notes/status.txt"]["markdown"]
    types = {doc_id: row["content_type"] for doc_id, row in raw_rows(store, bucket).items()}
    assert types["reviews/incident.docx"] == ("application/vnd.openxmlformats-officedocument"
                                              ".wordprocessingml.document")
    assert types["config/oncall.json"] == "application/json" and types["notes/status.txt"].startswith("text/html")


def test_prefix_partition_is_bucket_slash_prefix_with_ids_relative_to_it(bucket, s3, clean_env):
    clean_env.setenv("S3_SYNC_PREFIX", "/handbook/")
    upload_many(s3.admin, bucket, [("handbook/leave.md", b"# Leave\n\n28 days.\n"),
                                   ("handbook/travel/visa.txt", b"Visa letters come from HR.\n"),
                                   ("handbook-old/leave.md", b"# Leave\n\n25 days.\n"),
                                   ("other/secret.md", b"# Not part of the handbook\n")])
    source = source_for(load_settings().source("s3"))
    try:
        assert source.partitions() == [f"{bucket}/handbook"]
        listing = source.list_documents(f"{bucket}/handbook", None)
        assert listing.complete and {r.doc_id for r in listing.refs} == {"leave.md", "travel/visa.txt"}
        visa = source.fetch(f"{bucket}/handbook", next(r for r in listing.refs if r.doc_id == "travel/visa.txt"))
    finally:
        source.close()
    assert visa.url == f"s3://{bucket}/handbook/travel/visa.txt" and visa.path == [bucket, "handbook", "travel"]
    assert visa.content == b"Visa letters come from HR.\n" and visa.metadata["key"] == "handbook/travel/visa.txt"


def test_object_deleted_or_grown_after_the_listing_fails_alone(bucket, s3, clean_env):
    clean_env.setenv("S3_SYNC_MAX_OBJECT_BYTES", "100")
    upload_many(s3.admin, bucket, [("gone.md", b"# Gone\n"), ("grows.txt", b"small\n"), ("stays.txt", b"here\n")])
    source = source_for(load_settings().source("s3"))
    try:
        refs = {ref.doc_id: ref for ref in source.list_documents(bucket, None).refs}
        s3.admin.delete_object(Bucket=bucket, Key="gone.md")
        s3.admin.put_object(Bucket=bucket, Key="grows.txt", Body=b"x" * 101)
        with pytest.raises(DocumentError, match=f"s3 object s3://{bucket}/gone.md: deleted while syncing"):
            source.fetch(bucket, refs["gone.md"])
        with pytest.raises(DocumentError, match="grows.txt: 101 bytes is over the 100-byte limit"):
            source.fetch(bucket, refs["grows.txt"])
        assert source.fetch(bucket, refs["stays.txt"]).content == b"here\n"
    finally:
        source.close()


def test_missing_bucket_fails_the_run_and_the_probe_with_a_message_naming_it(clean_env, s3, instance, lancedb_uri):
    configure(clean_env, s3, "no-such-bucket-here", lancedb_uri)
    source = source_for(load_settings().source("s3"))
    with pytest.raises(PartitionError, match="bucket 'no-such-bucket-here' at http://127.0.0.1:[0-9]+ does not exist"):
        source.probe("no-such-bucket-here", None)
    source.close()

    result = tick(instance)
    assert result.run_requests == []
    assert "no-such-bucket-here: probe failed" in str(result.skip_reason)
    with pytest.raises(dg.Failure, match="bucket 'no-such-bucket-here' .* does not exist"):
        sync(instance, "no-such-bucket-here")


def test_refused_credentials_fail_with_a_clear_message_that_leaks_no_secret(clean_env, s3, instance, lancedb_uri):
    strict = MotoServer(extra_env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"})  # checks keys like AWS does
    try:
        configure(clean_env, s3, "private-docs", lancedb_uri, S3_ENDPOINT_URL=strict.url)
        source = source_for(load_settings().source("s3"))
        with pytest.raises(PartitionError) as refused:
            source.list_documents("private-docs", None)
        source.close()
        message = str(refused.value)
        assert "bucket 'private-docs'" in message and "credentials refused (InvalidAccessKeyId" in message
        result = materialize_partition_quietly(instance, "private-docs")
    finally:
        strict.close()
    assert not result.success
    logged = " ".join(str(event.message) + repr(event.event_specific_data) for event in result.all_events)
    assert "credentials refused" in logged
    assert TEST_CREDENTIALS["aws_secret_access_key"] not in message + logged


def materialize_partition_quietly(instance: dg.DagsterInstance, partition: str) -> dg.ExecuteInJobResult:
    """Like `sync`, but a failed run is returned for inspection instead of raised."""
    settings = load_settings()
    instance.add_dynamic_partitions("s3_partitions", [partition])
    job = build_definitions(settings).resolve_job_def("s3_sync")
    return job.execute_in_process(partition_key=partition, instance=instance, raise_on_error=False)


# -- one bucket alone: from the UI (a run of one partition) and from the command line ------------------------

@pytest.fixture
def two_buckets(clean_env, s3, lancedb_uri) -> tuple[str, str]:
    first, second = new_bucket(s3, "alpha"), new_bucket(s3, "beta")
    s3.admin.put_object(Bucket=first, Key="a.md", Body=b"# Alpha\n\nOnly in the first bucket.\n")
    upload_many(s3.admin, second, [("runbooks/restart.md", b"# Restart\n\nDrain the node, then restart it.\n"),
                                   ("faq.txt", b"The VPN uses WireGuard.\n")])
    configure(clean_env, s3, f"{first}, {second}", lancedb_uri)
    return first, second


def test_sensor_adds_each_bucket_and_one_bucket_syncs_alone(two_buckets, instance, lancedb_uri):
    first, second = two_buckets
    result = tick(instance)
    [added] = result.dynamic_partitions_requests
    assert added.partitions_def_name == "s3_partitions" and sorted(added.partition_keys) == sorted(two_buckets)
    assert sorted(r.partition_key for r in result.run_requests) == sorted(two_buckets)

    # What a backfill of the one partition from the UI launches: the job for that partition key.
    assert sync(instance, second).success
    store = LanceStore(lancedb_uri)
    assert doc_ids(store, "embeddings", second) == {"runbooks/restart.md", "faq.txt"}
    assert doc_ids(store, "raw_documents", first) == set()


def rag_sync(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([RAG_SYNC, *args], env=env, capture_output=True, text=True, timeout=600)


def test_rag_sync_cli_syncs_one_bucket_partition_and_names_a_missing_bucket(two_buckets, clean_env, tmp_path,
                                                                             lancedb_uri):
    first, second = two_buckets
    clean_env.setenv("S3_SYNC_BUCKET", f"{first},{second},ghost-bucket")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    Path(env["DAGSTER_HOME"]).mkdir()
    done = rag_sync(env, "sync", "--source", "s3", "--partition", second, "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert (summary["source"], summary["partition"], summary["success"]) == ("s3", second, True)
    assert summary["documents_added"] == 2 and summary["documents_failed"] == 0
    assert summary["chunks_embedded"] == summary["chunks_total"] == 2
    store = LanceStore(lancedb_uri)
    assert doc_ids(store, "embeddings", second) == {"runbooks/restart.md", "faq.txt"}
    assert doc_ids(store, "raw_documents", first) == set()
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs(filters=dg.RunsFilter(job_name="s3_sync", tags={"dagster/partition": second}))
        assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS]

    ghost = rag_sync(env, "sync", "--source", "s3", "--partition", "ghost-bucket", "--json")
    assert ghost.returncode == 1
    failed = json.loads(ghost.stdout)
    assert failed["success"] is False and "bucket 'ghost-bucket'" in failed["error"]
    assert "does not exist" in failed["error"]


# -- configuration -------------------------------------------------------------------------------------------

def test_environment_configures_buckets_prefix_endpoint_region_size_cap_and_interval(clean_env):
    for name in ("S3_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION"):
        clean_env.delenv(name, raising=False)
    assert [c.type for c in load_settings().sources] == ["local"]  # no bucket, no s3 source
    clean_env.setenv("S3_SYNC_BUCKET", " manuals , policies ")
    clean_env.setenv("S3_SYNC_PREFIX", "exports/2025")
    clean_env.setenv("S3_ENDPOINT_URL", "http://minio.internal:9000")
    clean_env.setenv("RAG_ALLOW_INSECURE_HTTP", "true")  # plain http off loopback must be allowed explicitly
    clean_env.setenv("AWS_REGION", "eu-central-1")
    clean_env.setenv("S3_SYNC_MAX_OBJECT_BYTES", "1048576")
    clean_env.setenv("S3_SYNC_INTERVAL_SECONDS", "120")
    config = load_settings().source("s3")
    assert config.options == {"buckets": ["manuals", "policies"], "prefix": "exports/2025",
                              "endpoint_url": "http://minio.internal:9000", "region": "eu-central-1",
                              "max_object_bytes": "1048576"}
    assert config.sensor_interval_seconds == 120
    source = source_for(config)
    assert source.partitions() == ["manuals/exports/2025", "policies/exports/2025"]
    assert source.client.meta.endpoint_url == "http://minio.internal:9000"
    assert source.client.meta.region_name == "eu-central-1" and source.max_object_bytes == 1048576
    source.close()

    definitions = build_definitions(load_settings())
    sensor = definitions.resolve_sensor_def("s3_sync_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED  # external: on with EXTERNAL_SYNC_ENABLED
    assert definitions.resolve_job_def("s3_sync").partitions_def.name == "s3_partitions"
    raw = definitions.resolve_assets_def(dg.AssetKey(["s3", "raw_documents"]))
    assert raw.group_names_by_key[dg.AssetKey(["s3", "raw_documents"])] == "s3"


@pytest.mark.parametrize("variable, value, message", [
    ("S3_SYNC_MAX_OBJECT_BYTES", "50MB", "S3_SYNC_MAX_OBJECT_BYTES must be a whole number of bytes"),
    ("S3_SYNC_MAX_OBJECT_BYTES", "0", "S3_SYNC_MAX_OBJECT_BYTES must be positive"),
    ("S3_SYNC_BUCKET", "manuals/exports", "a bucket name has no '/'"),
])
def test_bad_s3_settings_name_the_variable(clean_env, variable, value, message):
    clean_env.setenv("S3_SYNC_BUCKET", "manuals")
    clean_env.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=message):
        load_settings()


def test_sources_file_names_credential_variables_and_refuses_secrets(clean_env, tmp_path):
    sources = tmp_path / "sources.yaml"
    sources.write_text("sources:\n  - {name: archive, type: s3, buckets: [old-docs], region: eu-west-1,\n"
                       "     access_key_id_env: ARCHIVE_KEY_ID, secret_access_key_env: ARCHIVE_SECRET}\n")
    clean_env.setenv("RAG_SOURCES_FILE", str(sources))
    config = load_settings().source("archive")
    with pytest.raises(ConfigurationError, match="access_key_id_env names ARCHIVE_KEY_ID, which is not set"):
        source_for(config)
    clean_env.setenv("ARCHIVE_KEY_ID", "AKIAARCHIVE")
    clean_env.setenv("ARCHIVE_SECRET", "archive-secret")
    source = source_for(config)
    assert source.client._request_signer._credentials.access_key == "AKIAARCHIVE"
    assert source.partitions() == ["old-docs"]
    source.close()

    sources.write_text("sources:\n  - {name: leaky, type: s3, buckets: [x], aws_secret_access_key: abc}\n")
    with pytest.raises(ConfigurationError, match="name the environment variable"):
        load_settings()


def test_a_process_reuses_its_s3_client_until_the_configuration_or_credentials_change():
    """Building a boto3 client costs ~170 ms of every sensor tick; it is reused while nothing it was built from
    changed, and rebuilt when the credentials in the environment do (rotated keys)."""
    from rag_sync_pipeline.defs.clients import s3_client
    from rag_sync_pipeline.settings import SourceConfig

    config = SourceConfig("docs", "s3", {"buckets": ["reuse-bucket"], "region": "us-east-1",
                                         "endpoint_url": "http://127.0.0.1:9", "allow_insecure_http": True})
    environ = {"AWS_ACCESS_KEY_ID": "first-key", "AWS_SECRET_ACCESS_KEY": "first-secret"}
    first = s3_client(config, environ)
    assert s3_client(config, dict(environ)) is first
    assert s3_client(config, {**environ, "AWS_SECRET_ACCESS_KEY": "rotated-secret"}) is not first
    other_region = SourceConfig("docs", "s3", {**config.options, "region": "eu-west-1"})
    assert s3_client(other_region, environ) is not first
