"""Faults at the Confluence API, injected by the simulator, against the four stages.

Each case: index a space, change it (edits and a new page; a deletion where the listing is complete), inject
the fault, run. The run must complete or fail with a message naming the space and the cause; the index must
hold every document whole (old or new revision, never mixed, rows matching the ledgers); the committed mark
must not move unless every change is indexed. Then the fault is cleared and the next run must index every
change (none lost).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import pytest

from rag_sync_pipeline.sources import PartitionError
from rag_sync_pipeline.sources.confluence import ConfluenceSource
from rag_sync_pipeline.store import LanceStore
from rag_sync_pipeline_tests.dagster_support import materialize_partition, stage_metadata
from rag_sync_pipeline_tests.fakes.confluence import Fault, confluence_simulator
from rag_sync_pipeline_tests.fault_support import (
    attempt_sync,
    audit,
    check_index_after_fault,
    committed_mark,
    fault_figures,
    sync_all,
)
from rag_sync_pipeline_tests.test_confluence_dagster import tick

NAME, SPACE = "confluence", "OPS"
MAX_RETRIES = 4
FETCH, LISTING = "/api/v2/pages/", "/rest/api/search"  # the probe is search 1; the incremental listing follows
GATEWAY_401 = {"code": 401, "message": "Unauthorized; scope does not match"}


def body(i: int, revision: int) -> str:
    return (f"<h2>Setup</h2><p>Service {i} rev{revision}: install the agent on every host.</p>"
            f"<h2>Checks</h2><p>Service {i} rev{revision}: the health endpoint answers within a second.</p>")


def make_source(sim, strategy: str = "weekly_reconciliation", timeout: float = 10.0) -> ConfluenceSource:
    options = {"url": sim.url, "username": sim.username, "spaces": [SPACE], "retry_backoff_seconds": 0.01,
               "max_retries": MAX_RETRIES, "timeout_seconds": timeout, "deletion_strategy": strategy}
    return ConfluenceSource.from_options(NAME, options, {"CONFLUENCE_API_TOKEN": sim.token})


class Space:
    """The simulator's space and the revision every live page should be indexed at."""

    def __init__(self, sim, pages: int = 5) -> None:
        self.sim = sim
        sim.add_space(SPACE)
        self.revisions: dict[str, int] = {}
        self.pages = [self.add(i) for i in range(pages)]

    def add(self, i: int, short: bool = False) -> str:
        self.sim.advance(seconds=1)
        text = f"<p>Service {i} rev1.</p>" if short else body(i, 1)
        page = self.sim.add_page(SPACE, f"Service {i}", text)
        self.revisions[page.id] = 1
        return page.id

    def edit(self, page_id: str) -> None:
        self.sim.advance(seconds=1)
        self.revisions[page_id] += 1
        self.sim.edit_page(page_id, body=body(int(self.sim.pages[page_id].title.split()[-1]), self.revisions[page_id]))

    def delete(self, page_id: str) -> None:
        del self.sim.pages[page_id]
        del self.revisions[page_id]


@dataclass
class Case:
    name: str
    faults: list[Fault]
    outcome: str  # "completes", "document fails" (the run goes on, one page recorded) or "fails"
    cause: str = ""
    strategy: str = "weekly_reconciliation"
    per_commit: int = 200
    timeout: float = 10.0


def times(count: int, **fault) -> list[Fault]:
    return [Fault(**fault) for _ in range(count)]


CASES = [
    Case("429 with Retry-After", times(2, status=429, body={"message": "Rate limit exceeded"},
                                       headers={"Retry-After": "1"}, path_contains=FETCH), "completes"),
    Case("429 without Retry-After", times(4, status=429, body={"code": 429, "message": "Too Many Requests"},
                                          path_contains=FETCH), "completes"),
    Case("500", times(2, status=500, body={"statusCode": 500, "message": "Internal error"}, path_contains=FETCH),
         "completes"),
    Case("502 on the complete listing", times(2, status=502, body={"message": "Bad gateway"},
                                              path_contains="/pages"), "completes", strategy="every_sync"),
    Case("503 on the listing", [Fault(503, {"message": "busy"}, path_contains=LISTING, skip=1),
                                Fault(503, {"message": "busy"}, path_contains=LISTING)], "completes"),
    Case("timeout", [Fault(path_contains=LISTING, action="hang", seconds=2.5, skip=1),
                     *times(2, path_contains=FETCH, action="hang", seconds=2.5)], "completes", timeout=1.0),
    Case("connection reset", [Fault(path_contains=LISTING, action="reset", skip=1),
                              *times(2, path_contains=FETCH, action="reset")], "completes"),
    Case("truncated JSON", [Fault(path_contains=LISTING, action="truncate", skip=1),
                            *times(2, path_contains=FETCH, action="truncate")], "completes"),
    Case("503 on one page past every retry", [], "document fails", cause="503 busy"),
    Case("500 on the listing past every retry",
         [Fault(500, {"message": "search is down"}, path_contains=LISTING, skip=1),
          *times(MAX_RETRIES, status=500, body={"message": "search is down"}, path_contains=LISTING)],
         "fails", cause=f"gave up after {MAX_RETRIES + 1} attempts"),
    Case("token expires mid-run", [Fault(401, GATEWAY_401, path_contains=FETCH, skip=2)], "fails",
         cause="refused", per_commit=1),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fault(case: Case, embedder, lancedb_uri):
    with confluence_simulator() as sim:
        space = Space(sim)
        store = LanceStore(lancedb_uri)
        sync_all(store, make_source(sim, case.strategy), NAME, SPACE, embedder)
        before_mark, before = committed_mark(store, NAME, SPACE), dict(space.revisions)

        sim.advance(minutes=5)
        space.edit(space.pages[1])
        space.edit(space.pages[2])
        space.add(5)
        if case.strategy == "every_sync":
            space.delete(space.pages[3])
        faults = [replace(f) for f in case.faults] or times(MAX_RETRIES + 1, status=503, body={"message": "busy"},
                                      path_contains=f"{FETCH}{space.pages[2]}")
        sim.faults.extend(faults)

        outcome, message = attempt_sync(store, make_source(sim, case.strategy, case.timeout), NAME, SPACE,
                                        embedder, case.per_commit)
        assert sim.calls["fault"] == len(faults) and not sim.faults  # every injected fault was met
        assert outcome == case.outcome, message
        assert f"space {SPACE}" in message if outcome != "completes" else message == ""
        assert case.cause in message
        assert sim.token not in message

        allowed = {doc_id: {before.get(doc_id, revision), revision} for doc_id, revision in space.revisions.items()}
        allowed.update({doc_id: {revision} for doc_id, revision in before.items() if doc_id not in allowed})
        during, mark = check_index_after_fault(store, NAME, SPACE, outcome, allowed, space.revisions, before_mark)

        reports = sync_all(store, make_source(sim, case.strategy), NAME, SPACE, embedder)  # the fault is gone
        after = audit(store, NAME, SPACE, expected=space.revisions)
        assert reports["raw_documents"].documents_failed == 0
        assert committed_mark(store, NAME, SPACE) == make_source(sim).probe(SPACE, None)
        print(fault_figures(f"confluence/{case.name}", outcome, during, after, mark, before_mark))
        assert after.lost_changes == [] and after.partial_docs == [] and after.duplicate_chunks == 0


def test_a_listing_that_fails_on_page_7_changes_nothing_and_the_next_run_gets_every_page(embedder, lancedb_uri):
    with confluence_simulator() as sim:
        space = Space(sim, pages=3)
        store = LanceStore(lancedb_uri)
        sync_all(store, make_source(sim), NAME, SPACE, embedder)
        before_mark, before_version = committed_mark(store, NAME, SPACE), store.version("raw_documents")

        sim.advance(minutes=5)
        space.edit(space.pages[0])
        for i in range(3, 653):  # 651 changed pages: seven pages of 100 search results
            space.add(i, short=True)
        # Page 7 of the incremental listing (results 600-699) fails on every try.
        sim.faults += times(MAX_RETRIES + 1, status=500, body={"statusCode": 500, "message": "search node lost"},
                            path_contains="start=600")
        with pytest.raises(PartitionError, match=f"space {SPACE}: .*search node lost") as failed:
            sync_all(store, make_source(sim), NAME, SPACE, embedder)
        pages_read = {m.group(1) for r in sim.requests if r.startswith(f"/wiki{LISTING}")
                      for m in [re.search(r"[?&]start=(\d+)", r)] if m}
        assert pages_read == {"100", "200", "300", "400", "500", "600"} and sim.calls["fault"] == MAX_RETRIES + 1
        assert store.version("raw_documents") == before_version  # nothing written
        assert committed_mark(store, NAME, SPACE) == before_mark

        sync_all(store, make_source(sim), NAME, SPACE, embedder)
        after = audit(store, NAME, SPACE, expected=space.revisions)
        print(f"\nFAULT confluence/page 7 of the listing: outcome=failed ({str(failed.value)[:80]}...), "
              f"lost_changes={len(after.lost_changes)}, partial_docs={len(after.partial_docs)}")
        assert after.lost_changes == [] and after.partial_docs == [] and after.duplicate_chunks == 0
        assert len(space.revisions) == 653


def test_through_dagster_a_failed_fetch_keeps_the_sensor_asking_until_the_change_is_indexed(
        clean_env, instance, lancedb_uri):
    with confluence_simulator() as sim:
        for name, value in {"RAG_LOCAL_ENABLED": "false", "RAG_LANCEDB_URI": lancedb_uri, "CONFLUENCE_URL": sim.url,
                            "CONFLUENCE_USERNAME": sim.username, "CONFLUENCE_API_TOKEN": sim.token,
                            "CONFLUENCE_SPACES": SPACE, "CONFLUENCE_RETRY_BACKOFF_SECONDS": "0.01",
                            "CONFLUENCE_MAX_RETRIES": str(MAX_RETRIES)}.items():
            clean_env.setenv(name, value)
        space = Space(sim, pages=3)
        assert materialize_partition(instance, SPACE, source=NAME).success
        assert tick(instance).run_requests == []

        sim.advance(minutes=5)
        space.edit(space.pages[1])
        sim.faults += times(MAX_RETRIES + 1, status=503, body={"message": "busy"},
                            path_contains=f"{FETCH}{space.pages[1]}")
        metadata = stage_metadata(materialize_partition(instance, SPACE, source=NAME))
        assert metadata["raw_documents"]["documents_failed"] == 1
        assert f"confluence page {space.pages[1]}" in metadata["raw_documents"]["failures"]
        [request] = tick(instance).run_requests  # the mark stayed behind the failed page: the sensor asks again
        assert request.partition_key == SPACE

        metadata = stage_metadata(materialize_partition(instance, SPACE, source=NAME))
        raw = metadata["raw_documents"]
        assert raw["documents_updated"] == 1 and raw["documents_failed"] == 0
        assert audit(LanceStore(lancedb_uri), NAME, SPACE, expected=space.revisions).lost_changes == []
        assert tick(instance).run_requests == []


def test_a_page_that_cannot_be_read_is_recorded_once_and_does_not_keep_the_sensor_asking(
        clean_env, instance, lancedb_uri):
    """A 404 (the page restricted or deleted after the listing) heals only when the page changes: the mark
    moves on, so the sensor does not request a run on every tick for it; its old rows stay indexed."""
    with confluence_simulator() as sim:
        for name, value in {"RAG_LOCAL_ENABLED": "false", "RAG_LANCEDB_URI": lancedb_uri, "CONFLUENCE_URL": sim.url,
                            "CONFLUENCE_USERNAME": sim.username, "CONFLUENCE_API_TOKEN": sim.token,
                            "CONFLUENCE_SPACES": SPACE, "CONFLUENCE_RETRY_BACKOFF_SECONDS": "0.01"}.items():
            clean_env.setenv(name, value)
        space = Space(sim, pages=3)
        assert materialize_partition(instance, SPACE, source=NAME).success

        sim.advance(minutes=5)
        restricted, edited = space.pages[1], space.pages[2]
        sim.edit_page(restricted, body=body(1, 2))
        space.edit(edited)
        sim.faults += times(20, status=404, body={"message": "No content found with id"},
                            path_contains=f"{FETCH}{restricted}")
        metadata = stage_metadata(materialize_partition(instance, SPACE, source=NAME))
        assert metadata["raw_documents"]["documents_failed"] == 1
        assert "404 not found" in metadata["raw_documents"]["failures"]
        assert tick(instance).run_requests == []  # a permanent failure does not hold the mark back

        expected = dict(space.revisions)  # the restricted page keeps its indexed revision 1, the edit is in
        result = audit(LanceStore(lancedb_uri), NAME, SPACE, expected=expected)
        assert result.lost_changes == [] and result.partial_docs == []
