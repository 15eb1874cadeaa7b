"""Whether a partition is up to date, answered without Dagster, the model or the stage code.

The sensor asks it on every tick and `rag-sync sync` before starting a run: it must stay cheap to import and
to run (the LanceDB ledger and one probe call), so this module imports nothing else of the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from rag_sync_pipeline.sources.base import Source
from rag_sync_pipeline.store.lance import LanceStore, now

RECONCILE_EVERY = timedelta(days=7)


@dataclass(frozen=True)
class PartitionMarks:
    """What the ledger says of a partition, before anyone asks the source."""

    committed: str | None  # the mark the raw stage committed
    indexed: str | None  # the mark the final stage has indexed
    reconcile_due: bool  # a complete listing (for deletions) is due by the source's strategy
    synced_at: datetime | None  # when the final stage last finished


def read_marks(store: LanceStore, source: Source, source_name: str, partition: str) -> PartitionMarks:
    state = store.read_partition_state(source_name, partition)
    raw, final = state.get("raw_documents", {}), state.get("embeddings", {})
    # Deletions never show in a "modified since" probe: the strategy's cadence asks on its own.
    reconcile = bool(raw) and source.deletion_strategy == "weekly_reconciliation" and reconciliation_due(
        source.deletion_strategy, raw.get("reconciled_at"))
    return PartitionMarks(raw.get("mark"), final.get("mark"), reconcile, final.get("updated_at"))


def partition_is_current(store: LanceStore, source: Source, source_name: str, partition: str) -> bool:
    """The sensor's test, for callers outside Dagster: every stage has indexed the mark the source's cheap
    probe still answers, and no complete listing (for deletions) is due. A sync would change nothing."""
    marks = read_marks(store, source, source_name, partition)
    if marks.committed is None or marks.indexed != marks.committed or marks.reconcile_due:
        return False
    return source.probe(partition, marks.committed) == marks.committed


def reconciliation_due(strategy: str, reconciled_at: datetime | None, at: datetime | None = None) -> bool:
    """Whether a complete listing (the only way to see deletions in an incremental API) is due."""
    if strategy == "every_sync" or reconciled_at is None:
        return True
    if strategy == "weekly_reconciliation":
        return (at or now()) - reconciled_at >= RECONCILE_EVERY
    return False  # on_demand: only when a run asks for it
