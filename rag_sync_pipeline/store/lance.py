"""The LanceDB store: every write that replaces documents is one commit.

`replace_documents` is a `merge_insert` keyed on the row id whose `when_not_matched_by_source_delete` is scoped
to the batch's documents: a document's old rows that are not among its new rows are deleted, new ones inserted
and the rest updated, all in one table version. A reader therefore sees either the old or the new rows of a
document, never a mix and never none; a batch can carry hundreds of documents for the cost of one commit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import lancedb
import pyarrow as pa

from rag_sync_pipeline.store import schemas

IDS_PER_FILTER = 500
PRUNED_RETRIES = 3
CREATE_RETRIES = 5  # a lost race to create a table: open the winner's
T = TypeVar("T")


def _pruned_under_us(error: Exception) -> bool:
    """A manifest or data file of the version a handle was on is gone: maintenance pruned it."""
    message = str(error)
    return "not found" in message.lower() and (".manifest" in message or ".lance" in message)


def quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def in_list(column: str, values: Iterable[str]) -> str:
    return f"{column} IN ({', '.join(quote(v) for v in values)})"


def partition_filter(source: str, partition: str | None = None) -> str:
    condition = f"source = {quote(source)}"
    return condition if partition is None else f"{condition} AND partition = {quote(partition)}"


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class LedgerEntry:
    """What one stage last did with one document."""

    upstream_hash: str | None
    doc_hash: str | None


class LanceStore:
    """The tables at `uri`: a folder, or an object store (s3://, gs://, az://) with Lance `storage_options`.

    On an object store every commit is a conditional PUT of the next manifest (If-None-Match: *): of two
    writers committing at once, one gets 412 and LanceDB retries its commit on the newer version, so runs of
    different partitions can write the shared tables at the same time.
    """

    def __init__(self, uri: str, storage_options: dict[str, str] | None = None) -> None:
        self.uri = uri
        # Always read the latest committed version: sensors and runs in other processes write these tables.
        self.db = lancedb.connect(uri, read_consistency_interval=timedelta(0), storage_options=storage_options)
        self._tables: dict[str, Any] = {}

    # -- tables ---------------------------------------------------------------------------------------------

    def table(self, name: str, schema: pa.Schema | None = None):
        """The table, created with `schema` if it does not exist yet; None if it does not and no schema given."""
        if name in self._tables:
            return self._tables[name]
        schema = schema or schemas.FIXED_SCHEMAS.get(name)
        try:
            table = self.db.open_table(name)
        except (FileNotFoundError, ValueError):
            if schema is None:
                return None
            table = self._create(name, schema)
        if schema is not None:
            self._add_missing_columns(table, schema)
        self._tables[name] = table
        return table

    def _create(self, name: str, schema: pa.Schema):
        """Create the table; if another process creates it at the same moment, open theirs.

        On an object store two first writers race to commit version 1: the loser's create fails (even with
        exist_ok, which only checks before committing), and the table it lost to is the one to use.
        """
        for attempt in range(CREATE_RETRIES + 1):
            try:
                return self.db.create_table(name, schema=schema, exist_ok=True)
            except (RuntimeError, OSError, ValueError):
                time.sleep(0.2 * (attempt + 1))
                try:
                    return self.db.open_table(name)
                except (FileNotFoundError, ValueError):
                    if attempt == CREATE_RETRIES:
                        raise
        raise AssertionError("unreachable")

    @staticmethod
    def _add_missing_columns(table, schema: pa.Schema) -> None:
        """Tables written by an older release get the columns added since, empty (one commit, no rewrite)."""
        present = set(table.schema.names)
        missing = [f for f in schema if f.name not in present and f.nullable]
        if missing:
            table.add_columns(missing)

    def _with_table(self, name: str, action: Callable[[Any], T], schema: pa.Schema | None = None) -> T:
        """Run `action(table)`, reopening the table if maintenance pruned the version this handle was on.

        Pruning (`optimize(cleanup_older_than=...)`) deletes old manifests and data files; a handle opened
        before it can fail on them once. The operation is retried on a fresh handle at the latest version,
        which is always safe: every write here is an idempotent merge keyed on row ids.
        """
        for attempt in range(PRUNED_RETRIES + 1):
            table = self.table(name, schema)
            try:
                return action(table)
            except (RuntimeError, OSError, ValueError) as error:
                if attempt == PRUNED_RETRIES or not _pruned_under_us(error):
                    raise
                self._tables.pop(name, None)
        raise AssertionError("unreachable")

    def version(self, name: str) -> int | None:
        return self._with_table(name, lambda table: None if table is None else table.version)

    def count_rows(self, name: str, where: str | None = None) -> int:
        return self._with_table(name, lambda table: 0 if table is None else table.count_rows(where))

    def read(self, name: str, where: str | None, columns: Sequence[str] | None = None) -> pa.Table:
        def query(table) -> pa.Table:
            if table is None:
                return pa.table({c: pa.array([], pa.string()) for c in columns or []})
            builder = table.search()
            if where:
                builder = builder.where(where)
            if columns:
                builder = builder.select(list(columns))
            return builder.limit(None).to_arrow()

        return self._with_table(name, query)

    def read_documents(self, name: str, source: str, partition: str, doc_ids: Sequence[str],
                       columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for start in range(0, len(doc_ids), IDS_PER_FILTER):
            ids = doc_ids[start:start + IDS_PER_FILTER]
            where = f"{partition_filter(source, partition)} AND {in_list('doc_id', ids)}"
            rows.extend(self.read(name, where, columns).to_pylist())
        return rows

    def replace_documents(self, name: str, schema: pa.Schema, key: str, scope: str, doc_ids: Sequence[str],
                          rows: list[dict[str, Any]]) -> None:
        """Make the rows of `doc_ids` (within `scope`) exactly `rows`, in one commit."""
        if not doc_ids:
            return

        def merge(table) -> None:
            data = pa.Table.from_pylist(rows, schema=table.schema)
            (table.merge_insert(key)
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .when_not_matched_by_source_delete(f"{scope} AND {in_list('doc_id', doc_ids)}")
                .execute(data))

        self._with_table(name, merge, schema)

    def delete(self, name: str, where: str) -> None:
        self._with_table(name, lambda table: None if table is None else table.delete(where))

    # -- the ledger: what each stage did with each document ---------------------------------------------

    @staticmethod
    def _stage_scope(stage: str, source: str, partition: str) -> str:
        return f"stage = {quote(stage)} AND {partition_filter(source, partition)}"

    def read_ledger(self, stage: str, source: str, partition: str) -> dict[str, LedgerEntry]:
        rows = self.read(schemas.LEDGER_TABLE, self._stage_scope(stage, source, partition),
                         ["doc_id", "upstream_hash", "doc_hash"])
        return {r["doc_id"]: LedgerEntry(r["upstream_hash"], r["doc_hash"]) for r in rows.to_pylist()}

    def write_ledger(self, stage: str, source: str, partition: str, doc_ids: Sequence[str],
                     entries: dict[str, LedgerEntry]) -> None:
        """Set the entries of `doc_ids`: those in `entries` are written, the others removed."""
        stamp = now()
        rows = [{"key": f"{stage}|{source}|{partition}|{doc_id}", "stage": stage, "source": source,
                 "partition": partition, "doc_id": doc_id, "upstream_hash": entry.upstream_hash,
                 "doc_hash": entry.doc_hash, "updated_at": stamp} for doc_id, entry in entries.items()]
        self.replace_documents(schemas.LEDGER_TABLE, schemas.LEDGER_SCHEMA, "key",
                               self._stage_scope(stage, source, partition), doc_ids, rows)

    # -- failures ---------------------------------------------------------------------------------------

    def record_failures(self, stage: str, source: str, partition: str, doc_ids: Sequence[str],
                        failures: dict[str, tuple[str | None, str]], run_id: str) -> None:
        """Record the batch's failures; documents of the batch that succeeded lose their old failure."""
        stamp = now()
        rows = [{"key": f"{stage}|{source}|{partition}|{doc_id}", "stage": stage, "source": source,
                 "partition": partition, "doc_id": doc_id, "upstream_hash": upstream, "error": error,
                 "run_id": run_id, "failed_at": stamp} for doc_id, (upstream, error) in failures.items()]
        if not rows and self.table(schemas.FAILURES_TABLE) is None:
            return
        self.replace_documents(schemas.FAILURES_TABLE, schemas.FAILURES_SCHEMA, "key",
                               self._stage_scope(stage, source, partition), doc_ids, rows)

    def failures(self, source: str | None = None, partition: str | None = None) -> list[dict[str, Any]]:
        where = None if source is None else partition_filter(source, partition)
        return self.read(schemas.FAILURES_TABLE, where).to_pylist()

    # -- partition state: the marks each stage committed ----------------------------------------------

    def read_partition_state(self, source: str, partition: str) -> dict[str, dict[str, Any]]:
        rows = self.read(schemas.PARTITION_STATE_TABLE, partition_filter(source, partition))
        return {r["stage"]: r for r in rows.to_pylist()}

    def all_partition_states(self) -> list[dict[str, Any]]:
        return self.read(schemas.PARTITION_STATE_TABLE, None).to_pylist()

    def write_partition_state(self, source: str, partition: str, stage: str, mark: str | None,
                              documents: int, rows: int, run_id: str, reconciled_at: datetime | None = None) -> None:
        row = {
            "key": f"{source}|{partition}|{stage}", "source": source, "partition": partition, "stage": stage,
            "mark": mark, "documents": documents, "rows": rows, "run_id": run_id, "updated_at": now(),
            "reconciled_at": reconciled_at,
        }

        def upsert(table) -> None:
            data = pa.Table.from_pylist([row], schema=table.schema)
            table.merge_insert("key").when_matched_update_all().when_not_matched_insert_all().execute(data)

        self._with_table(schemas.PARTITION_STATE_TABLE, upsert)

    # -- search ---------------------------------------------------------------------------------------

    SEARCH_COLUMNS = ["id", "text", "doc_id", "source", "partition", "title", "url", "heading_path", "path"]

    @staticmethod
    def _scoped(query, source: str | None, partition: str | None):
        if source:
            return query.where(partition_filter(source, partition), prefilter=True)
        if partition:
            return query.where(f"partition = {quote(partition)}", prefilter=True)
        return query

    def search(self, vector: Sequence[float], k: int = 5, source: str | None = None,
               partition: str | None = None) -> list[dict[str, Any]]:
        table = self.table(schemas.EMBEDDINGS_TABLE)
        if table is None:
            return []
        query = self._scoped(table.search(list(vector)).distance_type("cosine").limit(k), source, partition)
        rows = query.select([*self.SEARCH_COLUMNS, "_distance"]).to_arrow().to_pylist()
        for row in rows:
            row["score"] = 1.0 - float(row.pop("_distance"))
        return rows

    def hybrid_search(self, vector: Sequence[float], text: str, k: int = 5, source: str | None = None,
                      partition: str | None = None) -> list[dict[str, Any]]:
        """Vector and full-text search fused by reciprocal rank (needs the full-text index that maintenance
        builds on `text`); `score` is the fused relevance."""
        table = self.table(schemas.EMBEDDINGS_TABLE)
        if table is None:
            return []
        query = table.search(query_type="hybrid").vector(list(vector)).text(text).distance_type("cosine").limit(k)
        rows = self._scoped(query, source, partition).select(self.SEARCH_COLUMNS).to_arrow().to_pylist()
        for row in rows:
            row["score"] = float(row.pop("_relevance_score"))
            row.pop("_distance", None)
            row.pop("_score", None)
        return rows


def open_store(settings) -> LanceStore:
    """The store the settings name (`RAG_LANCEDB_URI`, `RAG_LANCEDB_STORAGE_OPTIONS`)."""
    return LanceStore(settings.lancedb_uri, dict(settings.lancedb_storage_options) or None)
