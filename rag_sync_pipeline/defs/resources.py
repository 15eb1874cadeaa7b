"""Resources: where the tables live, which model embeds, and each source's credentials (as EnvVars)."""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from rag_sync_pipeline.settings import DEFAULT_EMBEDDING_BATCH_SIZE
from rag_sync_pipeline.store import LanceStore
from rag_sync_pipeline.transform.chunking import MarkdownChunker
from rag_sync_pipeline.transform.embedding import Embedder, load_embedder


class LanceDBResource(dg.ConfigurableResource):
    """The LanceDB database all stages write to (a local folder or an object-store URI)."""

    uri: str
    storage_options: dict[str, str] = {}  # Lance storage options (endpoint, region); credentials come from env

    def get_store(self) -> LanceStore:
        return LanceStore(self.uri, self.storage_options or None)


class EmbeddingModelResource(dg.ConfigurableResource):
    """The sentence-transformers model; its tokenizer also bounds the chunks."""

    model: str
    device: str = "auto"
    batch_size: int = DEFAULT_EMBEDDING_BATCH_SIZE
    max_tokens: int | None = None
    backend: str = "torch"

    def get_embedder(self) -> Embedder:
        """Cheap: the model itself loads on the first encode (a sync with nothing to embed never loads it)."""
        return load_embedder(self.model, self.device, self.batch_size, self.backend)

    def get_chunker(self) -> MarkdownChunker:
        embedder = self.get_embedder()
        limit = min(self.max_tokens or embedder.max_seq_length, embedder.max_seq_length)
        return MarkdownChunker(embedder.tokenizer, limit)


class SourceSecretsResource(dg.ConfigurableResource):
    """The sources' credentials, each a Dagster EnvVar: Dagster reads the value from the environment when a
    run or a sensor tick starts, and the UI and run records show the variable's name, never its value."""

    values: dict[str, str] = {}


def secrets_resource(variables: list[str], environ: Mapping[str, str]) -> SourceSecretsResource:
    """EnvVars for the variables that are set; an unset one is left out, so the source reports it missing
    with its own message (a Confluence site needs an API token or a PAT, not both)."""
    return SourceSecretsResource(values={name: dg.EnvVar(name) for name in variables if environ.get(name)})
