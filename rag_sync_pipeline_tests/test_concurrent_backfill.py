"""Concurrency: four partitions of four sources (local folder, S3 on moto, the Confluence and Notion simulators)
backfilled at the same time into one fresh LanceDB, so that they race to create and commit to the shared
tables (the four stage tables, the ledger, the failures and partition-state tables).

Each sync runs on a thread of its own with its own LanceDB connection, as separate runs do; LanceDB commits
release the interpreter, so the commits really interleave. Afterwards every document of every partition must
be present in every stage, whole, once.
"""

from __future__ import annotations

import threading
import uuid

from rag_sync_pipeline.sources.confluence import ConfluenceSource
from rag_sync_pipeline.sources.local import LocalFolderSource
from rag_sync_pipeline.sources.notion import NotionSource, build_notion_client
from rag_sync_pipeline.sources.s3 import S3Source
from rag_sync_pipeline.store import LanceStore, schemas
from rag_sync_pipeline_tests.fakes.confluence import confluence_simulator
from rag_sync_pipeline_tests.fakes.notion import block, notion_simulator
from rag_sync_pipeline_tests.fault_support import STAGE_TABLES, audit, sync_all
from rag_sync_pipeline_tests.s3_support import MotoServer

DOCS = 8


def text(source: str, i: int) -> str:
    return f"{source} service {i} rev1: the health endpoint answers within a second."


def test_four_sources_backfilled_at_once_keep_every_row_of_every_partition(tmp_path, embedder, lancedb_uri):
    moto = MotoServer()
    try:
        with confluence_simulator() as confluence, notion_simulator() as notion:
            root = tmp_path / "corpus"
            (root / "docs").mkdir(parents=True)
            local_ids = []
            for i in range(DOCS):
                (root / "docs" / f"doc{i}.md").write_text(f"## Health\n\n{text('local', i)}\n", encoding="utf-8")
                local_ids.append(f"doc{i}.md")

            bucket = f"docs-{uuid.uuid4().hex[:8]}"
            admin = moto.client()
            admin.create_bucket(Bucket=bucket)
            for i in range(DOCS):
                admin.put_object(Bucket=bucket, Key=f"doc{i}.md", Body=f"## Health\n\n{text('s3', i)}\n".encode())

            confluence.add_space("OPS")
            page_ids = [confluence.add_page("OPS", f"Service {i}", f"<p>{text('confluence', i)}</p>").id
                        for i in range(DOCS)]

            database, [data_source] = notion.add_database("Runbooks")
            row_ids = [notion.add_row(data_source, f"Service {i}", [block("paragraph", text("notion", i))])
                       for i in range(DOCS)]

            s3 = S3Source.from_options("s3", {"buckets": [bucket]}, {}, client=moto.client())
            syncs = {
                ("local", "docs"): (LocalFolderSource.from_options("local", {"root": str(root)}, {}), local_ids),
                ("s3", s3.partitions()[0]): (s3, [f"doc{i}.md" for i in range(DOCS)]),
                ("confluence", "OPS"): (ConfluenceSource.from_options(
                    "confluence", {"url": confluence.url, "username": confluence.username, "spaces": ["OPS"]},
                    {"CONFLUENCE_API_TOKEN": confluence.token}), page_ids),
                ("notion", database): (NotionSource("notion", build_notion_client(
                    notion.token, base_url=notion.base_url, requests_per_second=None), [database]), row_ids),
            }

            start, errors = threading.Barrier(len(syncs)), []

            def backfill(name: str, partition: str, source) -> None:
                try:
                    store = LanceStore(lancedb_uri)  # a connection of its own, as a separate run has
                    start.wait()
                    sync_all(store, source, name, partition, embedder, documents_per_commit=2)
                except Exception as error:  # noqa: BLE001 - collected and asserted below
                    errors.append(f"{name}/{partition}: {error!r}")

            threads = [threading.Thread(target=backfill, args=(name, partition, source))
                       for (name, partition), (source, _) in syncs.items()]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=300)
            assert errors == []

            store = LanceStore(lancedb_uri)
            lost = partial = 0
            for (name, partition), (_, ids) in syncs.items():
                result = audit(store, name, partition, expected=dict.fromkeys(ids, 1))
                lost += len(result.lost_changes)
                partial += len(result.partial_docs) + result.duplicate_chunks
            expected_rows = len(syncs) * DOCS
            rows = {stage: store.count_rows(table) for stage, table in STAGE_TABLES.items()}
            states = store.count_rows(schemas.PARTITION_STATE_TABLE)
            print(f"\nCONCURRENT: partitions={len(syncs)}, documents={expected_rows}, lost_rows={lost}, "
                  f"partial_or_duplicate={partial}, rows per stage={rows}")
            assert lost == 0 and partial == 0
            assert rows["raw_documents"] == rows["markdown"] == expected_rows
            assert rows["chunks"] == rows["embeddings"] >= expected_rows
            assert states == len(syncs) * len(STAGE_TABLES)
    finally:
        moto.close()
