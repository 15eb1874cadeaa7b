"""Sync health per partition: when it was last synced, what it holds, how many documents failed, and whether
its last sync is older than the source's freshness bound.

"Last synced" is when the last successful run finished the final stage (`partition_state`, stage
`embeddings`), whether or not anything had changed: the sensor launches a run for a partition whose last sync
is older than half the bound even when its probe sees no change, so a quiet partition stays fresh, and only a
partition whose runs stop succeeding (source unreachable, sensor stopped, runs failing) goes stale.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from rag_sync_pipeline.store import LanceStore

FINAL_STAGE = "embeddings"


@dataclass(frozen=True)
class PartitionHealth:
    partition: str
    synced_at: datetime | None  # None: never synced through the final stage
    documents: int
    chunks: int
    failures: int  # documents whose last attempt failed, in any stage
    age: timedelta | None
    stale: bool

    def describe(self, bound: timedelta) -> str:
        if self.synced_at is None:
            return f"{self.partition}: never synced"
        return f"{self.partition}: last synced {format_age(self.age)} ago (bound {format_age(bound)})"


def format_age(age: timedelta | None) -> str:
    if age is None:
        return "never"
    minutes = int(age.total_seconds() // 60)
    if minutes < 1:
        return f"{int(age.total_seconds())}s"
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    return " ".join(f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n) or "0m"


def partition_health(store: LanceStore, source: str, partitions: Iterable[str], bound: timedelta,
                     now: datetime) -> list[PartitionHealth]:
    """Health of `partitions` (the source's partitions as the instance knows them), sorted by partition.

    Rows the store still holds for a partition that no longer exists are left to `rag-sync cleanup`: they do
    not make the source stale."""
    finals = {r["partition"]: r for r in store.all_partition_states()
              if r["source"] == source and r["stage"] == FINAL_STAGE}
    failures = Counter(r["partition"] for r in store.failures(source))
    rows = []
    for partition in sorted(set(partitions)):
        state = finals.get(partition)
        synced_at = state["updated_at"] if state else None
        age = now - synced_at if synced_at else None
        rows.append(PartitionHealth(partition, synced_at, int(state["documents"] or 0) if state else 0,
                                    int(state["rows"] or 0) if state else 0, failures[partition], age,
                                    stale=age is None or age > bound))
    return rows


def health_markdown(rows: list[PartitionHealth], bound: timedelta) -> str:
    """The table the UI shows: one line per partition."""
    lines = ["| partition | last synced (UTC) | age | documents | chunks | failures | fresh |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        synced = row.synced_at.strftime("%Y-%m-%d %H:%M:%S") if row.synced_at else "never"
        lines.append(f"| {row.partition} | {synced} | {format_age(row.age)} | {row.documents} | {row.chunks} | "
                     f"{row.failures} | {'no' if row.stale else 'yes'} |")
    lines.append(f"\nFreshness bound: {format_age(bound)}.")
    return "\n".join(lines)
