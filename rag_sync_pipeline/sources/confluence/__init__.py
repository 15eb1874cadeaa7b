"""Confluence Cloud (REST v2 + v1 CQL) and Server/Data Center (REST v1): client, source."""

from rag_sync_pipeline.sources.confluence.source import ConfluenceSource

__all__ = ["ConfluenceSource"]
