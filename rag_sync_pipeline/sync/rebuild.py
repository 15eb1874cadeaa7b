"""Blue/green rebuild of the final table when the embedding model changes (even to another vector size).

The embeddings stage calls `rebuild_embeddings` when the table declares another model than the run's, or
holds rows of another model. The new vectors are built beside the old ones: every distinct chunk text is
embedded once into the staging table `embeddings_rebuild` (which doubles as a resumable cache, so a killed
rebuild goes on where it stopped), while searches keep answering from the old table. Then the whole table is
replaced in ONE commit (`create_table(mode="overwrite")`, a new version of the same dataset whose schema
declares the new model), so a reader sees either every old vector or every new one.

A sync that still runs with the old model may commit between our snapshot and the swap. Versions are
sequential, so that is detected exactly: before the swap the snapshot is retaken until the table did not move;
if a commit slipped in between that check and the swap (the new version is not snapshot + 1), the documents
it changed are read from the version just before the swap and re-applied, converted to the new model, with
the usual per-document atomic writes. After the swap, an old-model run fails on the vector size (or, for a
model of the same size, its rows carry the old model_id and the next sync converts them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa

from rag_sync_pipeline.store import LanceStore, schemas
from rag_sync_pipeline.store.index_settings import declared_model, embeddings_schema
from rag_sync_pipeline.store.lance import in_list, partition_filter, quote
from rag_sync_pipeline.sync.plan import batched
from rag_sync_pipeline.transform.embedding import Embedder

STAGING_TABLE = "embeddings_rebuild"
EMBED_BATCH = 256
MAX_CATCH_UPS = 20


def needs_rebuild(store: LanceStore, embedder: Embedder) -> bool:
    table = store.table(schemas.EMBEDDINGS_TABLE)
    if table is None:
        return False
    declared = declared_model(table)
    if declared.dimension != embedder.dimension or (declared.model_id not in (None, embedder.model_id)):
        return True
    return table.count_rows(f"model_id IS NULL OR model_id != {quote(embedder.model_id)}") > 0


def _staging(store: LanceStore, embedder: Embedder):
    schema = pa.schema([pa.field("text_hash", pa.string(), nullable=False),
                        pa.field("model_id", pa.string(), nullable=False),
                        pa.field("vector", pa.list_(pa.float32(), embedder.dimension))])
    table = store.table(STAGING_TABLE, schema)
    if table.schema.field("vector").type != schema.field("vector").type:
        store.db.drop_table(STAGING_TABLE)
        store._tables.pop(STAGING_TABLE, None)
        table = store.table(STAGING_TABLE, schema)
    return table


def _vectors_for(store: LanceStore, embedder: Embedder, rows: list[dict[str, Any]],
                 cache: dict[str, list[float]], log: Callable[[str], None]) -> int:
    """Fill `cache` (text_hash -> vector of the new model) for every row; returns how many were embedded."""
    for row in rows:
        if row["model_id"] == embedder.model_id and row["vector"] is not None:
            cache.setdefault(row["text_hash"], row["vector"])
    texts = {r["text_hash"]: r["text"] for r in rows if r["text_hash"] not in cache}
    if not texts:
        return 0
    staging = _staging(store, embedder)
    for group in batched(sorted(texts), 500):
        where = f"model_id = {quote(embedder.model_id)} AND {in_list('text_hash', group)}"
        for hit in staging.search().where(where).select(["text_hash", "vector"]).limit(None).to_list():
            cache[hit["text_hash"]] = hit["vector"]
    missing = [h for h in texts if h not in cache]
    for group in batched(missing, EMBED_BATCH):
        vectors = embedder.encode([texts[h] for h in group])
        staging.add(pa.Table.from_pylist([{"text_hash": h, "model_id": embedder.model_id, "vector": v.tolist()}
                                          for h, v in zip(group, vectors, strict=True)], schema=staging.schema))
        cache.update({h: v.tolist() for h, v in zip(group, vectors, strict=True)})
        log(f"rebuild: embedded {len(group)} chunk texts with {embedder.model_id}")
    return len(missing)


def _converted(rows: list[dict[str, Any]], embedder: Embedder, cache: dict[str, list[float]]) -> list[dict]:
    return [{**row, "vector": cache[row["text_hash"]], "model_id": embedder.model_id} for row in rows]


def _snapshot(table) -> tuple[int, list[dict[str, Any]]]:
    while True:
        version = table.version
        rows = table.search().limit(None).to_arrow().to_pylist()
        if table.version == version:
            return version, rows


def _documents(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], set[tuple[str, str]]]:
    docs: dict[tuple[str, str, str], set[tuple[str, str]]] = {}
    for row in rows:
        docs.setdefault((row["source"], row["partition"], row["doc_id"]), set()).add((row["id"], row["text_hash"]))
    return docs


def rebuild_embeddings(store: LanceStore, embedder: Embedder, model_ref: str | None = None,
                       log: Callable[[str], None] = print) -> dict[str, int]:
    """Re-embed every row of the final table with `embedder` and swap the table in one commit."""
    table = store.table(schemas.EMBEDDINGS_TABLE)
    schema = embeddings_schema(embedder.dimension, embedder.model_id, model_ref)
    cache: dict[str, list[float]] = {}
    embedded = 0
    for _ in range(MAX_CATCH_UPS):
        if not needs_rebuild(store, embedder):
            return {"embedded": embedded, "rows": table.count_rows(), "reapplied": 0}  # someone else did it
        version, rows = _snapshot(table)
        embedded += _vectors_for(store, embedder, rows, cache, log)
        if table.version != version:
            continue  # a sync committed meanwhile: take a new snapshot (the cache makes it cheap)
        data = pa.Table.from_pylist(_converted(rows, embedder, cache), schema=schema)
        store.db.create_table(schemas.EMBEDDINGS_TABLE, data, mode="overwrite")
        store._tables.pop(schemas.EMBEDDINGS_TABLE, None)
        swapped = store.table(schemas.EMBEDDINGS_TABLE).version
        reapplied = 0
        if swapped != version + 1:
            reapplied, extra = _reapply_slipped(store, embedder, rows, swapped - 1, cache, log)
            embedded += extra
        log(f"rebuild: swapped {schemas.EMBEDDINGS_TABLE} to {embedder.model_id} ({embedder.dimension} dims, "
            f"{len(rows)} rows, version {swapped})")
        _drop_staging(store)
        return {"embedded": embedded, "rows": len(rows), "reapplied": reapplied}
    raise RuntimeError(f"{schemas.EMBEDDINGS_TABLE} kept changing during the rebuild; it will be retried")


def _reapply_slipped(store: LanceStore, embedder: Embedder, snapshot: list[dict[str, Any]], before_swap: int,
                     cache: dict[str, list[float]], log: Callable[[str], None]) -> tuple[int, int]:
    """Commits between our last check and the swap: re-apply the documents they changed, in the new model."""
    old = store.db.open_table(schemas.EMBEDDINGS_TABLE)
    old.checkout(before_swap)
    latest = old.search().limit(None).to_arrow().to_pylist()
    ours, theirs = _documents(snapshot), _documents(latest)
    changed = [doc for doc in set(ours) | set(theirs) if ours.get(doc) != theirs.get(doc)]
    embedded = _vectors_for(store, embedder, [r for r in latest if (r["source"], r["partition"], r["doc_id"])
                                              in set(changed)], cache, log)
    schema = store.table(schemas.EMBEDDINGS_TABLE).schema
    for source, partition, doc_id in changed:
        rows = [r for r in latest if (r["source"], r["partition"], r["doc_id"]) == (source, partition, doc_id)]
        store.replace_documents(schemas.EMBEDDINGS_TABLE, schema, "id", partition_filter(source, partition),
                                [doc_id], _converted(rows, embedder, cache))
    log(f"rebuild: re-applied {len(changed)} documents committed during the swap")
    return len(changed), embedded


def _drop_staging(store: LanceStore) -> None:
    try:
        store.db.drop_table(STAGING_TABLE)
    except (FileNotFoundError, ValueError):
        pass
    store._tables.pop(STAGING_TABLE, None)
