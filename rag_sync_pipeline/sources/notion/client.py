"""Notion API calls over the shared `ApiClient` (retries, Retry-After, pacing, error mapping, call counts).

API version 2025-09-03: a database is a container of data sources, rows are pages queried with
`POST /v1/data_sources/{id}/query`. Every list endpoint pages the same way (`page_size` at most 100,
`start_cursor` <- `next_cursor` while `has_more`), so one generator serves queries, block children and
property items. This module only talks to the API; it converts and stores nothing.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx

from rag_sync_pipeline.sources.http import ApiClient, RetryPolicy, build_http_client

NOTION_VERSION = "2025-09-03"
DEFAULT_BASE_URL = "https://api.notion.com"
PAGE_SIZE = 100
HEX_ID = re.compile(r"[0-9a-fA-F]{32}")


def dashed_id(value: str) -> str:
    """A Notion id in its dashed form, from a dashed or undashed id or a notion.so URL."""
    text = value.strip()
    if "://" in text:
        text = urlsplit(text).path
    candidate = text.rstrip("/").rsplit("/", 1)[-1].replace("-", "")[-32:]
    if not HEX_ID.fullmatch(candidate):
        raise ValueError(f"not a Notion id or URL: {value!r}")
    return str(uuid.UUID(candidate))


class NotionClient:
    """The few Notion endpoints a sync needs."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api

    @property
    def calls(self) -> int:
        return self.api.calls

    def close(self) -> None:
        self.api.close()

    def _paginate(self, fetch_page: Callable[[str | None], dict[str, Any]]) -> Iterator[dict[str, Any]]:
        cursor: str | None = None
        while True:
            page = fetch_page(cursor)
            yield from page.get("results") or []
            cursor = page.get("next_cursor")
            if not page.get("has_more") or not cursor:
                return

    def retrieve_database(self, database_id: str) -> dict[str, Any]:
        return self.api.get_json(f"/v1/databases/{database_id}")

    def retrieve_page(self, page_id: str) -> dict[str, Any]:
        return self.api.get_json(f"/v1/pages/{page_id}")

    def query_page(self, data_source_id: str, *, filter: dict[str, Any] | None = None,
                   sorts: list[dict[str, Any]] | None = None, page_size: int = PAGE_SIZE,
                   start_cursor: str | None = None) -> dict[str, Any]:
        """One page of a data source query, as Notion answers it."""
        body: dict[str, Any] = {"page_size": page_size}
        if filter:
            body["filter"] = filter
        if sorts:
            body["sorts"] = sorts
        if start_cursor:
            body["start_cursor"] = start_cursor
        return self.api.post_json(f"/v1/data_sources/{data_source_id}/query", body)

    def query(self, data_source_id: str, *, filter: dict[str, Any] | None = None,
              sorts: list[dict[str, Any]] | None = None) -> Iterator[dict[str, Any]]:
        """Every row (page) of a data source that matches, 100 a call."""
        return self._paginate(lambda cursor: self.query_page(data_source_id, filter=filter, sorts=sorts,
                                                             start_cursor=cursor))

    def block_children(self, block_id: str) -> Iterator[dict[str, Any]]:
        """The direct children of a page or block (one level: nested children need their own calls)."""
        def fetch(cursor: str | None) -> dict[str, Any]:
            params = {"page_size": PAGE_SIZE, **({"start_cursor": cursor} if cursor else {})}
            return self.api.get_json(f"/v1/blocks/{block_id}/children", params)

        return self._paginate(fetch)

    def property_items(self, page_id: str, property_id: str) -> Iterator[dict[str, Any]]:
        """Every item of a paginated page property (relations, people, rich text over 25 items)."""
        def fetch(cursor: str | None) -> dict[str, Any]:
            params = {"page_size": PAGE_SIZE, **({"start_cursor": cursor} if cursor else {})}
            return self.api.get_json(f"/v1/pages/{page_id}/properties/{property_id}", params)

        return self._paginate(fetch)


def build_notion_client(api_key: str, *, base_url: str = DEFAULT_BASE_URL, requests_per_second: float | None = 3.0,
                        timeout_seconds: float = 30.0, retry: RetryPolicy | None = None,
                        transport: httpx.BaseTransport | None = None) -> NotionClient:
    """A client with Bearer auth and the pinned Notion-Version; the key lives only in the httpx headers."""
    http = build_http_client(base_url.rstrip("/"), headers={"Authorization": f"Bearer {api_key}",
                                                           "Notion-Version": NOTION_VERSION},
                             timeout_seconds=timeout_seconds, transport=transport)
    return NotionClient(ApiClient(http, service="Notion", retry=retry, requests_per_second=requests_per_second))
