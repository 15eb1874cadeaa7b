"""Faults between the S3 source and a real S3 endpoint (moto), injected by the loopback proxy in front of it.

Each case: index a bucket, change it (two edits, one new object, one deletion), inject the fault, run. The
run must complete or fail with a message naming the bucket and the cause; every document must stay whole
(old or new, rows matching the ledgers); the committed mark must not move unless every change is indexed.
Then the fault is cleared and the next run must index every change.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace

import boto3
import pytest
from botocore.config import Config

from rag_sync_pipeline.sources.s3 import S3Source
from rag_sync_pipeline.store import LanceStore
from rag_sync_pipeline_tests.fault_support import (
    attempt_sync,
    audit,
    check_index_after_fault,
    committed_mark,
    fault_figures,
    sync_all,
)
from rag_sync_pipeline_tests.s3_support import TEST_CREDENTIALS, CountingProxy, MotoServer, ProxyFault

LIST, GET = "ListObjectsV2", "GetObject"
RETRIES = 3
ATTEMPTS = RETRIES + 1  # botocore's `max_attempts` counts the retries, not the first try


@pytest.fixture(scope="module")
def endpoint() -> Iterator[tuple[MotoServer, CountingProxy]]:
    moto = MotoServer()
    proxy = CountingProxy(moto.port)
    try:
        yield moto, proxy
    finally:
        proxy.close()
        moto.close()


def body(i: int, revision: int) -> bytes:
    return (f"## Setup\n\nService {i} rev{revision}: install the agent on every host.\n\n"
            f"## Checks\n\nService {i} rev{revision}: the health endpoint answers within a second.\n").encode()


def make_source(proxy: CountingProxy, bucket: str) -> S3Source:
    """boto3's default (legacy) retry rules, as the S3Resource gives, but a short read timeout."""
    client = boto3.client("s3", endpoint_url=proxy.url, region_name="us-east-1", **TEST_CREDENTIALS,
                          config=Config(read_timeout=2, connect_timeout=2,
                                        retries={"max_attempts": RETRIES, "mode": "legacy"}))
    return S3Source.from_options("s3", {"buckets": [bucket]}, {}, client=client)


@dataclass
class Case:
    name: str
    faults: list[ProxyFault]
    outcomes: set[str]  # "completes", "document fails" (recorded, the run goes on), "fails"
    cause: str = ""


def times(count: int, **fault) -> list[ProxyFault]:
    return [ProxyFault(**fault) for _ in range(count)]


CASES = [
    Case("503 SlowDown", times(2, operation=GET, status=503, code="SlowDown"), {"completes"}),
    Case("500 on the listing", times(2, operation=LIST, status=500, code="InternalError"), {"completes"}),
    Case("502 and 429 with Retry-After", [ProxyFault(GET, status=502, code="BadGateway"),
                                          ProxyFault(GET, status=429, code="TooManyRequests",
                                                     headers={"Retry-After": "1"})], {"completes"}),
    Case("connection reset", [*times(2, operation=GET, action="reset"), ProxyFault(LIST, action="reset")],
         {"completes"}),
    Case("timeout", [ProxyFault(LIST, action="hang", seconds=3), ProxyFault(GET, action="hang", seconds=3)],
         {"completes"}),
    Case("truncated body", [ProxyFault(LIST, action="truncate"), ProxyFault(GET, action="truncate")],
         {"completes", "document fails"}),
    Case("503 on one object past every retry",  # one key: the raw stage fetches several objects at once
         times(ATTEMPTS, operation=GET, status=503, code="SlowDown", key="doc2.md"),
         {"document fails"}, cause="503"),
    Case("500 on the listing past every retry", times(ATTEMPTS, operation=LIST, status=500, code="InternalError"),
         {"fails"}, cause="InternalError"),
    Case("credentials expire mid-run", [ProxyFault(GET, status=400, code="ExpiredToken", skip=1)],
         {"fails", "document fails"}, cause="ExpiredToken"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fault(case: Case, endpoint, embedder, lancedb_uri):
    moto, proxy = endpoint
    admin, bucket = moto.client(), f"docs-{uuid.uuid4().hex[:10]}"
    admin.create_bucket(Bucket=bucket)
    revisions = {f"doc{i}.md": 1 for i in range(5)}
    for i in range(5):
        admin.put_object(Bucket=bucket, Key=f"doc{i}.md", Body=body(i, 1))
    store = LanceStore(lancedb_uri)
    partition = make_source(proxy, bucket).partitions()[0]
    sync_all(store, make_source(proxy, bucket), "s3", partition, embedder)
    before_mark, before = committed_mark(store, "s3", partition), dict(revisions)

    for i in (1, 2):
        revisions[f"doc{i}.md"] = 2
        admin.put_object(Bucket=bucket, Key=f"doc{i}.md", Body=body(i, 2))
    revisions["doc5.md"] = 1
    admin.put_object(Bucket=bucket, Key="doc5.md", Body=body(5, 1))
    admin.delete_object(Bucket=bucket, Key="doc4.md")
    del revisions["doc4.md"]
    proxy.faults[:] = [replace(f) for f in case.faults]  # the proxy counts their skips down
    met_before = proxy.faults_met

    outcome, message = attempt_sync(store, make_source(proxy, bucket), "s3", partition, embedder)
    assert proxy.faults_met - met_before == len(case.faults) and not proxy.faults
    assert outcome in case.outcomes, message
    if outcome != "completes":
        assert bucket in message and case.cause in message, message
    assert TEST_CREDENTIALS["aws_secret_access_key"] not in message

    allowed = {doc_id: {before.get(doc_id, revision), revision} for doc_id, revision in revisions.items()}
    allowed["doc4.md"] = {1}
    during, mark = check_index_after_fault(store, "s3", partition, outcome, allowed, revisions, before_mark)

    reports = sync_all(store, make_source(proxy, bucket), "s3", partition, embedder)
    after = audit(store, "s3", partition, expected=revisions)
    print(fault_figures(f"s3/{case.name}", outcome, during, after, mark, before_mark))
    assert reports["raw_documents"].documents_failed == 0
    assert after.lost_changes == [] and after.partial_docs == [] and after.duplicate_chunks == 0
    assert committed_mark(store, "s3", partition) == make_source(proxy, bucket).probe(partition, None)
