"""Which model the final table's vectors come from, kept with the rows, and search that honours it.

The `embeddings` table's schema metadata names the model (`rag_sync.model_id`, the path or name to load it,
`rag_sync.model`) and the vector size. Schema and rows change in the same commit, so a reader that reads the
metadata and then searches sees one consistent pair, or, if a rebuild swapped the table in between, gets an
error or a changed declaration and retries (`search_query`). Tables written before this existed declare
nothing; their model is read from the rows' `model_id` column.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from rag_sync_pipeline.store import schemas

MODEL_ID_KEY = b"rag_sync.model_id"
MODEL_REF_KEY = b"rag_sync.model"
DIMENSION_KEY = b"rag_sync.dimension"
SEARCH_ATTEMPTS = 5


@dataclass(frozen=True)
class DeclaredModel:
    model_id: str | None
    model_ref: str | None  # what to load it with (a name or a local path), when known
    dimension: int


def embeddings_schema(dimension: int, model_id: str, model_ref: str | None) -> pa.Schema:
    metadata = {MODEL_ID_KEY: model_id.encode(), DIMENSION_KEY: str(dimension).encode()}
    if model_ref:
        metadata[MODEL_REF_KEY] = model_ref.encode()
    return schemas.embeddings_schema(dimension).with_metadata(metadata)


def declared_model(table) -> DeclaredModel | None:
    if table is None:
        return None
    schema = table.schema
    dimension = schema.field("vector").type.list_size
    metadata = schema.metadata or {}
    if MODEL_ID_KEY in metadata:
        ref = metadata.get(MODEL_REF_KEY)
        return DeclaredModel(metadata[MODEL_ID_KEY].decode(), ref.decode() if ref else None, dimension)
    rows = table.search().select(["model_id"]).limit(1).to_list()
    return DeclaredModel(rows[0]["model_id"] if rows else None, None, dimension)


def search_query(store, query: str, encoder_for: Callable[[DeclaredModel | None], Callable[[str], Sequence[float]]],
                 k: int = 5, source: str | None = None, partition: str | None = None) -> list[dict[str, Any]]:
    """Embed `query` with the model the table declares and search; retry if the table was swapped meanwhile."""
    error: Exception | None = None
    for _ in range(SEARCH_ATTEMPTS):
        table = store.table(schemas.EMBEDDINGS_TABLE)
        if table is None:
            return []
        declared = declared_model(table)
        vector = encoder_for(declared)(query)
        if declared and len(vector) != declared.dimension:
            continue
        try:
            hits = store.search(vector, k, source, partition)
        except Exception as failure:  # the table changed shape under us: read the declaration again
            error = failure
            continue
        if declared_model(table) == declared:
            return hits
    raise RuntimeError(f"search kept racing a rebuild of {schemas.EMBEDDINGS_TABLE}: {error}")
