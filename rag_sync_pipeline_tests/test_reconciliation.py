"""Deletion strategies for sources whose cheap listing is incremental (Confluence CQL, Notion queries)."""

from datetime import UTC, datetime, timedelta

import pytest

from rag_sync_pipeline.sources import DocumentError, DocumentRef, Listing, RawDocument, Source
from rag_sync_pipeline.store import LanceStore
from rag_sync_pipeline.sync.stages import StageRun, sync_raw
from rag_sync_pipeline.sync.up_to_date import reconciliation_due


class InMemoryIncrementalSource(Source):
    """The protocol over a dict: listings since a mark name only documents edited after it."""

    type = "memory"

    def __init__(self, strategy: str) -> None:
        super().__init__("memory", deletion_strategy=strategy)
        self.documents: dict[str, int] = {}  # doc id -> edit time
        self.listings: list[bool] = []

    @classmethod
    def options_from_environment(cls, environ):
        return None

    @classmethod
    def from_options(cls, name, options, environ, client=None):
        raise NotImplementedError

    def partitions(self):
        return ["p"]

    def probe(self, partition, committed_mark):
        return str(max(self.documents.values(), default=0))

    def list_documents(self, partition, since_mark):
        since = int(since_mark) if since_mark is not None else -1
        refs = [DocumentRef(d, str(t)) for d, t in self.documents.items() if t > since]
        self.listings.append(since_mark is None)
        return Listing(refs=refs, complete=since_mark is None, mark=self.probe(partition, since_mark))

    def fetch(self, partition, ref):
        return RawDocument(ref.doc_id, ref.version, f"{ref.doc_id} v{ref.version}".encode(), "text/plain")


def test_reconciliation_due_by_strategy():
    now = datetime(2026, 11, 23, tzinfo=UTC)
    assert reconciliation_due("every_sync", now, now)
    assert reconciliation_due("weekly_reconciliation", None, now)
    assert not reconciliation_due("weekly_reconciliation", now - timedelta(days=6), now)
    assert reconciliation_due("weekly_reconciliation", now - timedelta(days=7), now)
    assert not reconciliation_due("on_demand", now - timedelta(days=365), now)


@pytest.mark.parametrize("strategy", ["weekly_reconciliation", "on_demand"])
def test_incremental_listing_keeps_deleted_documents_until_reconciliation(lancedb_uri, strategy):
    store = LanceStore(lancedb_uri)
    source = InMemoryIncrementalSource(strategy)
    source.documents = {"a": 1, "b": 1}
    run = StageRun(store, "memory", "p", log=lambda _: None)
    assert sync_raw(run, source).documents_added == 2 and source.listings == [True]

    del source.documents["b"]
    source.documents["a"] = 2
    report = sync_raw(run, source)
    assert source.listings[-1] is False  # only what moved was listed
    assert report.documents_updated == 1 and report.documents_deleted == 0
    assert set(store.read_ledger("raw_documents", "memory", "p")) == {"a", "b"}

    report = sync_raw(run, source, reconcile=True)
    assert source.listings[-1] is True and report.documents_deleted == 1
    assert set(store.read_ledger("raw_documents", "memory", "p")) == {"a"}
    state = store.read_partition_state("memory", "p")["raw_documents"]
    assert state["reconciled_at"] > datetime.now(UTC) - timedelta(minutes=1)


def test_every_sync_strategy_lists_everything_each_time(lancedb_uri):
    store = LanceStore(lancedb_uri)
    source = InMemoryIncrementalSource("every_sync")
    source.documents = {"a": 1, "b": 1}
    run = StageRun(store, "memory", "p", log=lambda _: None)
    sync_raw(run, source)
    del source.documents["b"]
    assert sync_raw(run, source).documents_deleted == 1
    assert source.listings == [True, True]


def test_unknown_strategy_is_rejected():
    with pytest.raises(ValueError, match="deletion_strategy must be one of"):
        InMemoryIncrementalSource("sometimes")


class FlakySource(InMemoryIncrementalSource):
    """Fetches of the documents in `refused` fail, as a page not shared with the integration does."""

    def __init__(self) -> None:
        super().__init__("every_sync")
        self.refused: set[str] = set()
        self.fetched: list[str] = []

    def fetch(self, partition, ref):
        self.fetched.append(ref.doc_id)
        if ref.doc_id in self.refused:
            raise DocumentError(f"memory document {ref.doc_id}: not shared")
        return super().fetch(partition, ref)


def test_failed_fetch_is_retried_by_the_next_run_though_its_version_did_not_move(lancedb_uri):
    store = LanceStore(lancedb_uri)
    source = FlakySource()
    source.documents = {"a": 1, "b": 1}
    source.refused = {"b"}
    run = StageRun(store, "memory", "p", log=lambda _: None)
    first = sync_raw(run, source)
    assert first.documents_added == 1 and first.documents_failed == 1
    assert [f["doc_id"] for f in store.failures("memory", "p")] == ["b"]

    source.refused.clear()
    source.fetched.clear()
    second = sync_raw(run, source)
    assert source.fetched == ["b"] and second.documents_failed == 0 and second.documents_unchanged == 1
    assert store.read_ledger("raw_documents", "memory", "p")["b"].doc_hash is not None
    assert store.failures("memory", "p") == []
    assert sync_raw(run, source).documents_unchanged == 2 and source.fetched == ["b"]
