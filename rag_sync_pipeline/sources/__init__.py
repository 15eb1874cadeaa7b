"""Source registry: adding a source means one module here and one entry in SOURCE_TYPES."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from rag_sync_pipeline.sources.base import (
    DocumentError,
    DocumentRef,
    Listing,
    PartitionError,
    RawDocument,
    Source,
    SourceError,
)
from rag_sync_pipeline.sources.confluence import ConfluenceSource
from rag_sync_pipeline.sources.local import LocalFolderSource
from rag_sync_pipeline.sources.notion import NotionSource
from rag_sync_pipeline.sources.s3 import S3Source

SOURCE_TYPES: dict[str, type[Source]] = {
    LocalFolderSource.type: LocalFolderSource,
    ConfluenceSource.type: ConfluenceSource,
    S3Source.type: S3Source,
    NotionSource.type: NotionSource,
}


def build_source(config, environ: Mapping[str, str] | None = None, client: Any = None) -> Source:
    """A ready source for a `SourceConfig`, its secrets read from the environment now."""
    environ = os.environ if environ is None else environ
    return SOURCE_TYPES[config.type].from_options(config.name, config.options, environ, client)


__all__ = ["SOURCE_TYPES", "build_source", "DocumentError", "DocumentRef", "Listing", "PartitionError",
           "RawDocument", "Source", "SourceError"]
