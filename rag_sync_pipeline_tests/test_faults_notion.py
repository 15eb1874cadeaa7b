"""Faults at the Notion API, injected by the simulator, against the four stages.

Each case: index a database, edit two rows and add one, inject the fault, run. The run must complete or fail
with a message naming the database and the cause; every document must stay whole (old or new revision, rows
matching the ledgers); the committed mark must not move unless every change is indexed. Then the fault is
cleared and the next run (an incremental listing from the committed mark) must index every change.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from rag_sync_pipeline.sources.http import RetryPolicy
from rag_sync_pipeline.sources.notion import NotionSource, build_notion_client
from rag_sync_pipeline.store import LanceStore
from rag_sync_pipeline_tests.fakes.notion import Fault, block, notion_simulator
from rag_sync_pipeline_tests.fault_support import (
    attempt_sync,
    audit,
    check_index_after_fault,
    committed_mark,
    fault_figures,
    sync_all,
)

QUERY, CHILDREN = "POST /v1/data_sources/{id}/query", "GET /v1/blocks/{id}/children"
MAX_RETRIES = 3


def blocks(i: int, revision: int) -> list[dict]:
    return [block("heading_2", "Setup"), block("paragraph", f"Service {i} rev{revision}: install the agent."),
            block("heading_2", "Checks"), block("paragraph", f"Service {i} rev{revision}: the health endpoint.")]


def make_source(notion, database: str) -> NotionSource:
    client = build_notion_client(notion.token, base_url=notion.base_url, requests_per_second=None,
                                 timeout_seconds=1.5, retry=RetryPolicy(max_retries=MAX_RETRIES,
                                                                        backoff_base_seconds=0.01))
    return NotionSource("notion", client, [database])


@dataclass
class Case:
    name: str
    faults: list[Fault]
    outcome: str  # "completes", "document fails" (recorded, the run goes on) or "fails"
    cause: str = ""
    row: int | None = None  # the faults hit only this row's requests (fetches run in parallel)


CASES = [
    Case("429 with Retry-After", [Fault(429, retry_after="1", route=CHILDREN, times=2)], "completes"),
    Case("429 without Retry-After", [Fault(429, route=QUERY, times=3)], "completes"),
    Case("500, 502 and 503", [Fault(500, route=CHILDREN), Fault(502, route=CHILDREN), Fault(503, route=QUERY)],
         "completes"),
    Case("reset, truncated JSON and timeout", [Fault(action="reset", route=QUERY),
                                               Fault(action="truncate", route=CHILDREN),
                                               Fault(action="hang", seconds=3, route=CHILDREN)], "completes"),
    Case("503 on one row past every retry", [Fault(503, route=CHILDREN, times=MAX_RETRIES + 1)],
         "document fails", cause="503", row=2),
    Case("500 on the query past every retry", [Fault(500, route=QUERY, times=MAX_RETRIES + 1)], "fails",
         cause=f"gave up after {MAX_RETRIES + 1} attempts"),
    Case("token expires mid-run", [Fault(401, route=CHILDREN, skip=1)], "fails", cause="401"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fault(case: Case, embedder, lancedb_uri):
    with notion_simulator() as notion:
        database, [data_source] = notion.add_database("Runbooks")
        rows = [notion.add_row(data_source, f"Service {i}", blocks(i, 1)) for i in range(4)]
        revisions = dict.fromkeys(rows, 1)
        store = LanceStore(lancedb_uri)
        sync_all(store, make_source(notion, database), "notion", database, embedder)
        before_mark, before = committed_mark(store, "notion", database), dict(revisions)

        notion.tick(minutes=10)
        for i in (1, 2):
            notion.set_blocks(rows[i], blocks(i, 2))
            notion.pages[rows[i]]["last_edited_time"] = notion.tick()
            revisions[rows[i]] = 2
        notion.tick()
        revisions[notion.add_row(data_source, "Service 4", blocks(4, 1))] = 1
        target = None if case.row is None else rows[case.row]
        notion.faults[:] = [replace(f, object_id=target) for f in case.faults]  # the simulator counts them down
        notion.calls["fault"] = 0

        message = ""
        outcome, message = attempt_sync(store, make_source(notion, database), "notion", database, embedder)
        assert notion.calls["fault"] == sum(f.times for f in case.faults)  # every injected fault was met
        assert outcome == case.outcome, message
        if outcome != "completes":
            assert database in message and case.cause in message, message
        assert notion.token not in message

        allowed = {doc_id: {before.get(doc_id, revision), revision} for doc_id, revision in revisions.items()}
        during, mark = check_index_after_fault(store, "notion", database, outcome, allowed, revisions, before_mark)

        notion.faults.clear()
        reports = sync_all(store, make_source(notion, database), "notion", database, embedder)
        after = audit(store, "notion", database, expected=revisions)
        print(fault_figures(f"notion/{case.name}", outcome, during, after, mark, before_mark))
        assert reports["raw_documents"].documents_failed == 0
        assert after.lost_changes == [] and after.partial_docs == [] and after.duplicate_chunks == 0
        assert committed_mark(store, "notion", database) == make_source(notion, database).probe(database, None)
