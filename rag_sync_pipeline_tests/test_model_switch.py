"""Changing the embedding model to one of another vector size: a blue/green rebuild under a live reader."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from rag_sync_pipeline.settings import default_model_path
from rag_sync_pipeline.store import LanceStore, schemas
from rag_sync_pipeline.store.index_settings import declared_model, search_query
from rag_sync_pipeline.transform.embedding import load_embedder, model_id_for, query_encoder
from rag_sync_pipeline_tests.lifecycle_support import sync_partition

QUERIES = ["failover procedure", "annual leave days", "which vector database", "meal expenses"]


@pytest.fixture(scope="module")
def smaller_model(tmp_path_factory) -> str:
    """The bundled model with a Dense layer to 128 dimensions appended, saved locally."""
    from sentence_transformers import SentenceTransformer, models

    model = SentenceTransformer(default_model_path(), device="cpu")
    model.append(models.Dense(in_features=384, out_features=128))
    path = tmp_path_factory.mktemp("models") / "minilm-dense-128"
    model.save(str(path))
    return str(path)


def test_switching_to_a_model_of_another_size_keeps_search_answering(corpus, lancedb_uri, embedder,
                                                                      smaller_model):
    store = LanceStore(lancedb_uri)
    for partition in ("eng", "hr"):
        sync_partition(store, corpus, partition, embedder)
    assert declared_model(store.table(schemas.EMBEDDINGS_TABLE)).dimension == 384
    rows = store.count_rows(schemas.EMBEDDINGS_TABLE)
    new = load_embedder(smaller_model)
    assert new.dimension == 128 and new.model_id == model_id_for(smaller_model) != embedder.model_id

    failures, empties, searches, models_seen, stop = [], [0], [0], set(), threading.Event()

    def reader():
        reader_store = LanceStore(lancedb_uri)  # its own connection, like another process

        def encoder_for(declared):
            models_seen.add(declared.model_id)
            return query_encoder(declared, default_model_path())

        while not stop.is_set():
            for query in QUERIES:
                try:
                    hits = search_query(reader_store, query, encoder_for, k=3)
                except Exception as error:  # any failure is what this test is about
                    failures.append(repr(error))
                    continue
                searches[0] += 1
                if not hits:
                    empties[0] += 1

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        reports = sync_partition(store, corpus, "eng", new)  # the first run with the new model rebuilds it all
        sync_partition(store, corpus, "hr", new)
        for _ in range(10):  # and keep searching after the swap
            if searches[0] > 40:
                break
            threading.Event().wait(0.5)
    finally:
        stop.set()
        thread.join()

    print(f"searches during the switch: {searches[0]}, failed: {len(failures)}, empty: {empties[0]}, "
          f"models seen: {sorted(models_seen)}")
    assert failures == [] and empties[0] == 0 and searches[0] > 20
    assert models_seen == {embedder.model_id, new.model_id}
    assert reports["embeddings"].chunks_embedded >= 1
    table = LanceStore(lancedb_uri).table(schemas.EMBEDDINGS_TABLE)
    declared = declared_model(table)
    assert (declared.model_id, declared.dimension, declared.model_ref) == (new.model_id, 128, smaller_model)
    data = table.search().limit(None).to_arrow().to_pylist()
    assert len(data) == rows
    assert all(r["model_id"] == new.model_id and len(r["vector"]) == 128 for r in data)
    assert "embeddings_rebuild" not in LanceStore(lancedb_uri).db.table_names()
    # The new vectors are the new model's: a chunk's own text finds it first.
    hit = search_query(LanceStore(lancedb_uri), "Meals are reimbursed up to EUR 45 per day.",
                       lambda d: query_encoder(d, str(Path(smaller_model))), k=1)[0]
    assert hit["doc_id"] == "expenses.md"
    # And syncing goes on with the new model, reusing its vectors.
    assert sync_partition(store, corpus, "eng", new)["embeddings"].chunks_embedded == 0
