"""Resources: where the tables live and which model embeds. Both are plain configuration, no secrets."""

from __future__ import annotations

import dagster as dg

from rag_sync_pipeline.store import LanceStore
from rag_sync_pipeline.transform.chunking import MarkdownChunker
from rag_sync_pipeline.transform.embedding import Embedder, load_embedder


class LanceDBResource(dg.ConfigurableResource):
    """The LanceDB database all stages write to (a local folder or an object-store URI)."""

    uri: str

    def get_store(self) -> LanceStore:
        return LanceStore(self.uri)


class EmbeddingModelResource(dg.ConfigurableResource):
    """The sentence-transformers model; its tokenizer also bounds the chunks."""

    model: str
    device: str = "auto"
    batch_size: int = 64
    max_tokens: int | None = None

    def get_embedder(self) -> Embedder:
        return load_embedder(self.model, self.device, self.batch_size)

    def get_chunker(self) -> MarkdownChunker:
        embedder = self.get_embedder()
        limit = min(self.max_tokens or embedder.max_seq_length, embedder.max_seq_length)
        return MarkdownChunker(embedder.tokenizer, limit)
