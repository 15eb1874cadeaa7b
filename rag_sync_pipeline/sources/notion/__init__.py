"""The Notion source: databases (containers of data sources, API version 2025-09-03) as partitions."""

from rag_sync_pipeline.sources.notion.client import NotionClient, build_notion_client, dashed_id
from rag_sync_pipeline.sources.notion.source import NotionSource

__all__ = ["NotionClient", "NotionSource", "build_notion_client", "dashed_id"]
