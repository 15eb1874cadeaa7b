"""Rows that no longer belong: what `rag-sync cleanup` lists (and removes unless --dry-run).

Four kinds, each reported per table, source and partition:

- `removed_partition`: every row of a partition that no longer exists. The caller says which partitions are
  live per source (the source's configured partitions plus the instance's dynamic partitions); a source that
  is not configured at all has all its rows orphaned, and a source whose partitions could not be listed
  (`None`) is left alone. A configured partition's rows are therefore never touched.
- `upstream_gone`: rows of a stage whose document its upstream stage no longer has (a run that died between
  stages, a document removed by hand). Their ledger entries go too, so a later sync redoes the document if its
  upstream comes back.
- `unused_vector`: rows of the final table (which is also the vector cache, keyed by model and text hash)
  whose chunk no longer exists.
- `resolved_failure`: failures of a document its stage no longer tracks.

Downstream rows are read before upstream ones, so a document a sync adds meanwhile is never mistaken for an
orphan; partitions with a run in flight (`busy`) are skipped for the stage-level kinds, since a sync between
two stages legitimately leaves such rows for a moment.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

from rag_sync_pipeline.store import LanceStore, schemas
from rag_sync_pipeline.store.lance import IDS_PER_FILTER, in_list, partition_filter, quote

PARTITIONED_TABLES = (schemas.RAW_TABLE, schemas.MARKDOWN_TABLE, schemas.CHUNKS_TABLE, schemas.EMBEDDINGS_TABLE,
                      schemas.LEDGER_TABLE, schemas.PARTITION_STATE_TABLE, schemas.FAILURES_TABLE)
STAGE_UPSTREAM = {  # stage table -> (ledger stage name, upstream table)
    schemas.MARKDOWN_TABLE: ("markdown", schemas.RAW_TABLE),
    schemas.CHUNKS_TABLE: ("chunks", schemas.MARKDOWN_TABLE),
    schemas.EMBEDDINGS_TABLE: ("embeddings", schemas.CHUNKS_TABLE),
}
EXAMPLES = 20


@dataclass
class OrphanGroup:
    kind: str
    table: str
    source: str
    partition: str
    rows: int
    doc_ids: list[str] = field(default_factory=list)  # for stage-level kinds: the documents concerned
    keys: list[str] = field(default_factory=list)  # row keys (ids / ledger keys) for exact removal

    def as_dict(self) -> dict:
        data = asdict(self)
        data.pop("keys")
        data["doc_ids"] = data["doc_ids"][:EXAMPLES]
        return data


def _pairs(store: LanceStore, table: str) -> Counter:
    rows = store.read(table, None, ["source", "partition"])
    return Counter(zip(rows.column("source").to_pylist(), rows.column("partition").to_pylist(), strict=True))


def _column(store: LanceStore, table: str, where: str, column: str) -> list[str]:
    return store.read(table, where, [column]).column(column).to_pylist()


def find_orphans(store: LanceStore, live: Mapping[str, set[str] | None],
                 busy: Iterable[tuple[str, str]] = ()) -> list[OrphanGroup]:
    """Everything that no longer belongs. `live`: per configured source its live partitions (None: unknown)."""
    busy = set(busy)
    groups: list[OrphanGroup] = []
    present: set[tuple[str, str]] = set()
    for table in PARTITIONED_TABLES:
        if store.table(table) is None:
            continue
        for (source, partition), count in sorted(_pairs(store, table).items()):
            present.add((source, partition))
            if source in live and (live[source] is None or partition in live[source]):
                continue
            if (source, partition) in busy:
                continue
            groups.append(OrphanGroup("removed_partition", table, source, partition, count))
    removed = {(g.source, g.partition) for g in groups}
    for source, partition in sorted(present - removed - busy):
        if source not in live or live[source] is None or partition not in live[source]:
            continue
        groups.extend(_stage_orphans(store, source, partition))
    return groups


def _stage_orphans(store: LanceStore, source: str, partition: str) -> list[OrphanGroup]:
    scope = partition_filter(source, partition)
    groups = []
    gone_from_final: set[str] = set()
    gone_upstream: set[str] = set()  # an orphan of one stage is gone for every stage after it
    for table, (_, upstream) in STAGE_UPSTREAM.items():
        if store.table(table) is None:
            continue
        downstream = Counter(_column(store, table, scope, "doc_id"))  # read first: see the module docstring
        upstream_docs = set(_column(store, upstream, scope, "doc_id")) - gone_upstream
        gone = sorted(set(downstream) - upstream_docs)
        gone_upstream |= set(gone)
        if gone:
            groups.append(OrphanGroup("upstream_gone", table, source, partition,
                                      sum(downstream[d] for d in gone), doc_ids=gone))
            if table == schemas.EMBEDDINGS_TABLE:
                gone_from_final = set(gone)
    if store.table(schemas.EMBEDDINGS_TABLE) is not None:
        vectors = store.read(schemas.EMBEDDINGS_TABLE, scope, ["id", "doc_id"]).to_pylist()
        chunk_ids = set(_column(store, schemas.CHUNKS_TABLE, scope, "id"))
        unused = [r for r in vectors if r["id"] not in chunk_ids and r["doc_id"] not in gone_from_final]
        if unused:
            groups.append(OrphanGroup("unused_vector", schemas.EMBEDDINGS_TABLE, source, partition, len(unused),
                                      doc_ids=sorted({r["doc_id"] for r in unused}),
                                      keys=sorted(r["id"] for r in unused)))
    if store.table(schemas.FAILURES_TABLE) is not None:
        failures = store.read(schemas.FAILURES_TABLE, scope, ["key", "stage", "doc_id"]).to_pylist()
        tracked = set(_column(store, schemas.LEDGER_TABLE, scope, "key"))
        resolved = [f for f in failures if f["key"] not in tracked]
        if resolved:
            groups.append(OrphanGroup("resolved_failure", schemas.FAILURES_TABLE, source, partition, len(resolved),
                                      doc_ids=sorted({f["doc_id"] for f in resolved}),
                                      keys=sorted(f["key"] for f in resolved)))
    return groups


def remove_orphans(store: LanceStore, groups: Iterable[OrphanGroup]) -> int:
    """Delete what `find_orphans` found; returns the number of rows it named."""
    removed = 0
    for group in groups:
        scope = partition_filter(group.source, group.partition)
        if group.kind == "removed_partition":
            store.delete(group.table, scope)
        elif group.kind == "upstream_gone":
            stage = STAGE_UPSTREAM[group.table][0]
            for start in range(0, len(group.doc_ids), IDS_PER_FILTER):
                ids = group.doc_ids[start:start + IDS_PER_FILTER]
                store.delete(group.table, f"{scope} AND {in_list('doc_id', ids)}")
                store.delete(schemas.LEDGER_TABLE, f"stage = {quote(stage)} AND {scope} AND {in_list('doc_id', ids)}")
        else:
            column = "id" if group.kind == "unused_vector" else "key"
            for start in range(0, len(group.keys), IDS_PER_FILTER):
                store.delete(group.table, f"{scope} AND {in_list(column, group.keys[start:start + IDS_PER_FILTER])}")
        removed += group.rows
    return removed
