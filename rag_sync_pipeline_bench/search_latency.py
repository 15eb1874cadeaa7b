"""Figure 7: search latency on a final table of 100k chunks, with the indexes maintenance builds.

The rows are the pipeline's own chunks, repeated until the table is large enough; their vectors are the real
ones plus a little noise (so copies are not identical), which is all an index cares about.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from rag_sync_pipeline.store import LanceStore, schemas
from rag_sync_pipeline.store.maintenance import ensure_indexes


def build_table(source: LanceStore, target_uri: Path, rows_wanted: int, seed: int = 3):
    real = source.read(schemas.EMBEDDINGS_TABLE, None).to_pylist()
    declared = source.table(schemas.EMBEDDINGS_TABLE).schema
    store = LanceStore(str(target_uri))
    table = store.table(schemas.EMBEDDINGS_TABLE, declared)
    rng = np.random.default_rng(seed)
    copy, written = 0, 0
    while written < rows_wanted:
        batch = real[: rows_wanted - written]
        vectors = np.array([row["vector"] for row in batch], dtype=np.float32)
        if copy:
            vectors += rng.normal(0, 0.03, vectors.shape).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        rows = [{**row, "id": f"{row['id']}#{copy}", "vector": vector.tolist(),
                 "partition": f"{row['partition']}-{copy % 8}"} for row, vector in zip(batch, vectors, strict=True)]
        table.add(pa.Table.from_pylist(rows, schema=table.schema))
        written += len(rows)
        copy += 1
    return store


def percentile_ms(samples: list[float], q: float) -> float:
    return round(float(np.percentile(np.array(samples) * 1000, q)), 1)


def measure(source: LanceStore, target_uri: Path, query_texts: list[str], query_vectors: np.ndarray,
            rows_wanted: int = 100_000, rounds: int = 2) -> dict:
    started = time.perf_counter()
    store = build_table(source, target_uri, rows_wanted)
    table = store.table(schemas.EMBEDDINGS_TABLE)
    figures = {"rows": table.count_rows(), "build_table_s": round(time.perf_counter() - started, 1)}
    started = time.perf_counter()
    figures["indexes_created"] = ensure_indexes(table, schemas.EMBEDDINGS_TABLE, 50_000)
    figures["index_build_s"] = round(time.perf_counter() - started, 1)
    store = LanceStore(str(target_uri))  # a fresh reader, as a RAG application would open it
    store.search(query_vectors[0], 10)
    store.hybrid_search(query_vectors[0], query_texts[0], 10)
    for kind in ("vector", "hybrid"):
        samples = []
        for _ in range(rounds):
            for text, vector in zip(query_texts, query_vectors, strict=True):
                began = time.perf_counter()
                hits = (store.search(vector, 10) if kind == "vector" else store.hybrid_search(vector, text, 10))
                samples.append(time.perf_counter() - began)
                assert hits, f"{kind} search found nothing"
        figures[f"{kind}_p50_ms"] = percentile_ms(samples, 50)
        figures[f"{kind}_p95_ms"] = percentile_ms(samples, 95)
    return figures
