"""Table maintenance: compact small fragments, prune old versions, keep the search indexes current.

Every sync commits new versions (one per batch of documents and per ledger write), so a deployment that syncs
every few minutes accumulates thousands of small fragments and old versions. `maintain` runs LanceDB's
`optimize` on every table: compaction merges small fragments, pruning deletes the files of versions older than
the retention age, and index optimisation adds new rows to existing indexes. On the final table it also makes
sure the indexes exist: a full-text index on `text` (for hybrid search) always, a vector index only once the
table holds enough rows for an approximate index to help (IVF needs rows to train on, and below a few tens of
thousands of rows an exact scan is fast and exact).

Pruning never removes a version that a running sync may still rely on. A writer or reader that opened a table
at version V reads V's files; deleting them under it makes it fail. So the caller passes `in_flight_since`, the
start time of the oldest sync that is still running, and versions newer than that (minus a margin) are kept
whatever the retention age says. Compaction itself is safe alongside writers: LanceDB commits it as a rewrite
that concurrent writers rebase onto (or retry), so no document is lost.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from rag_sync_pipeline.store import schemas

DEFAULT_RETENTION = timedelta(hours=1)
DEFAULT_VECTOR_INDEX_MIN_ROWS = 50_000
IN_FLIGHT_MARGIN = timedelta(minutes=5)
FTS_COLUMN = "text"


@dataclass
class TableStats:
    versions: int
    fragments: int
    small_fragments: int
    rows: int
    bytes: int
    indices: int


@dataclass
class TableMaintenance:
    table: str
    before: TableStats
    after: TableStats
    indexes_created: list[str] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MaintenanceReport:
    retention: timedelta
    kept_since: datetime  # versions committed after this were kept
    tables: list[TableMaintenance] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(t.error is None for t in self.tables)

    def totals(self, when: str) -> dict[str, int]:
        stats = [getattr(t, when) for t in self.tables]
        return {key: sum(getattr(s, key) for s in stats) for key in ("versions", "fragments", "bytes")}


def table_stats(table) -> TableStats:
    stats = table.stats()
    fragments = stats.get("fragment_stats") or {}
    return TableStats(
        versions=len(table.list_versions()),
        fragments=int(fragments.get("num_fragments") or 0),
        small_fragments=int(fragments.get("num_small_fragments") or 0),
        rows=int(stats.get("num_rows") or 0),
        bytes=int(stats.get("total_bytes") or 0),
        indices=int(stats.get("num_indices") or 0),
    )


def prune_cutoff(retention: timedelta, in_flight_since: datetime | None, at: datetime | None = None) -> timedelta:
    """How old a version must be to be pruned: the retention age, stretched to cover the oldest running sync."""
    at = at or datetime.now(UTC)
    if in_flight_since is None:
        return retention
    if in_flight_since.tzinfo is None:
        in_flight_since = in_flight_since.replace(tzinfo=UTC)
    return max(retention, at - in_flight_since + IN_FLIGHT_MARGIN)


def _index_columns(table) -> set[str]:
    return {column for index in table.list_indices() for column in index.columns}


def ensure_indexes(table, name: str, vector_index_min_rows: int) -> list[str]:
    """Create the search indexes the final table lacks; returns what was created."""
    if name != schemas.EMBEDDINGS_TABLE:
        return []
    created = []
    indexed = _index_columns(table)
    names = set(table.schema.names)
    if FTS_COLUMN in names and FTS_COLUMN not in indexed and table.count_rows() > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table.create_fts_index(FTS_COLUMN, replace=True)
        created.append(f"fts:{FTS_COLUMN}")
    rows = table.count_rows()
    if "vector" in names and "vector" not in indexed and rows >= vector_index_min_rows:
        dimension = table.schema.field("vector").type.list_size
        sub_vectors = next((n for n in (dimension // 8, dimension // 4, dimension // 2, 1) if n and
                            dimension % n == 0), 1)
        table.create_index(metric="cosine", vector_column_name="vector", index_type="IVF_PQ",
                           num_partitions=max(1, int(rows ** 0.5)), num_sub_vectors=sub_vectors)
        created.append("vector:IVF_PQ")
    return created


def maintain_table(table, name: str, cutoff: timedelta,
                   vector_index_min_rows: int = DEFAULT_VECTOR_INDEX_MIN_ROWS) -> TableMaintenance:
    before = table_stats(table)
    result = TableMaintenance(name, before, before)
    try:
        result.indexes_created = ensure_indexes(table, name, vector_index_min_rows)
        with warnings.catch_warnings():
            # Zero retention is refused by the callers unless nothing else runs (the tests); see prune_cutoff.
            warnings.simplefilter("ignore", UserWarning)
            table.optimize(cleanup_older_than=cutoff)
    except Exception as error:  # one table's trouble must not stop the others; it is reported
        result.error = f"{name}: {type(error).__name__}: {error}"
    result.after = table_stats(table)
    return result


def maintain(db, retention: timedelta = DEFAULT_RETENTION, in_flight_since: datetime | None = None,
             tables: Iterable[str] | None = None, vector_index_min_rows: int = DEFAULT_VECTOR_INDEX_MIN_ROWS,
             log: Callable[[str], None] = lambda _: None) -> MaintenanceReport:
    """Compact, prune and index every table of the LanceDB connection `db` (or just `tables`)."""
    at = datetime.now(UTC)
    cutoff = prune_cutoff(retention, in_flight_since, at)
    report = MaintenanceReport(retention=retention, kept_since=at - cutoff)
    names = list(tables) if tables is not None else sorted(_table_names(db))
    for name in names:
        try:
            table = db.open_table(name)
        except (FileNotFoundError, ValueError):
            continue
        result = maintain_table(table, name, cutoff, vector_index_min_rows)
        log(f"{name}: versions {result.before.versions} -> {result.after.versions}, fragments "
            f"{result.before.fragments} -> {result.after.fragments}, bytes {result.before.bytes} -> "
            f"{result.after.bytes}" + (f", created {', '.join(result.indexes_created)}" if result.indexes_created
                                      else "") + (f", FAILED: {result.error}" if result.error else ""))
        report.tables.append(result)
    return report


def _table_names(db) -> list[str]:
    if hasattr(db, "list_tables"):
        try:
            listing = db.list_tables()
            return list(getattr(listing, "tables", listing))
        except Exception:
            pass
    return list(db.table_names())
