"""Helpers for the index-lifecycle tests: a whole partition synced in-process, without Dagster's overhead."""

from __future__ import annotations

from pathlib import Path

from rag_sync_pipeline.sources.local import LocalFolderSource
from rag_sync_pipeline.store import LanceStore
from rag_sync_pipeline.sync.stages import StageRun, sync_chunks, sync_embeddings, sync_markdown, sync_raw
from rag_sync_pipeline.transform.chunking import MarkdownChunker
from rag_sync_pipeline.transform.embedding import Embedder


def sync_partition(store: LanceStore, root: Path, partition: str, embedder: Embedder, source: str = "local",
                   run_id: str = "test") -> dict[str, object]:
    """raw_documents -> markdown -> chunks -> embeddings for one partition, as one run does."""
    run = StageRun(store=store, source=source, partition=partition, run_id=run_id, log=lambda _: None)
    folder = LocalFolderSource(source, root)
    reports = {"raw_documents": sync_raw(run, folder), "markdown": sync_markdown(run)}
    chunker = MarkdownChunker(embedder.tokenizer, embedder.max_seq_length)
    reports["chunks"] = sync_chunks(run, chunker, embedder.model_id)
    reports["embeddings"] = sync_embeddings(run, embedder)
    return reports


def search_ids(store: LanceStore, embedder: Embedder, queries: list[str], k: int = 5) -> list[list[tuple[str, str]]]:
    """For each query, the (id, text) of its top k hits, in rank order."""
    return [[(hit["id"], hit["text"]) for hit in store.search(embedder.encode([q])[0], k)] for q in queries]
