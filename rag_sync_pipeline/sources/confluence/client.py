"""The Confluence API calls the source needs, for Cloud (REST v2 + v1 CQL) and Server/Data Center (REST v1).

Every request goes through the shared `ApiClient` (retries, Retry-After, backoff, error mapping, counting).
This module only knows paths, parameters, paging and response shapes:

- Paging follows `_links.next` or the `Link` header by taking the query (cursor, start, limit) out of the link
  and re-sending it to the path we called, so `/wiki/wiki/...` joins and links to another host cannot happen.
  A page shorter than the limit is never taken as the last one (CQL with a body expand returns at most 50); a
  listing ends only when there is no next link and `start + size` has reached `totalSize`.
- Cloud addresses spaces by numeric id in v2 (looked up from the key once per process) and has no search in
  v2, so the probe and the incremental listing use v1 CQL there too.
- Server/Data Center has no v2: spaces and pages come from `/rest/api/space` and `/rest/api/content` with
  start/limit paging and expands that carry version, ancestors and labels in one listing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from rag_sync_pipeline.sources.http import ApiClient, ApiError, AuthError, NotFoundError

V2_PAGE_LIMIT = 250
V1_PAGE_LIMIT = 100
SEARCH_LIMIT = 100
SEARCH_EXPAND = "content.version,content.ancestors,content.metadata.labels,content.container,content.extensions"


@dataclass(frozen=True)
class Space:
    key: str
    id: str
    name: str = ""


@dataclass
class PageInfo:
    """What a listing says about a page or attachment, enough for a version token and for citing."""

    id: str
    title: str
    version: int
    kind: str = "page"
    """"page" or "attachment"."""
    status: str = "current"
    parent_id: str | None = None
    ancestors: list[str] | None = None
    """Ancestor titles from the space root down to the parent; None when the listing did not carry them."""
    labels: list[str] | None = None
    last_modified: str = ""
    container_id: str | None = None
    """For attachments: the page they belong to."""
    media_type: str = ""
    file_size: int | None = None
    download: str = ""


@dataclass
class PageContent:
    id: str
    title: str
    space_key: str
    version: int
    storage: str
    status: str = "current"
    author: str = ""
    created: str = ""
    last_modified: str = ""
    labels: list[str] = field(default_factory=list)
    ancestors: list[str] | None = None
    web_path: str = ""
    """The page's web UI path relative to the API root (`/spaces/OPS/pages/123/Title`)."""


@dataclass(frozen=True)
class SearchPage:
    total: int
    results: list[dict[str, Any]]


def _labels(container: Any) -> list[str] | None:
    if not isinstance(container, Mapping):
        return None
    results = container.get("results")
    if not isinstance(results, list):
        return None
    return sorted({str(label.get("name")) for label in results if isinstance(label, Mapping) and label.get("name")})


class ConfluenceClient:
    """Cloud or Server/Data Center, chosen by `is_cloud`; paths are relative to the site root."""

    def __init__(self, api: ApiClient, *, context_path: str, is_cloud: bool, max_concurrent_requests: int = 4) -> None:
        self.api = api
        self.context = context_path.rstrip("/")
        self.is_cloud = is_cloud
        self._slots = threading.BoundedSemaphore(max(1, max_concurrent_requests))
        self._host = httpx.URL(str(api.client.base_url)).host

    @property
    def calls(self) -> int:
        return self.api.calls

    def _get(self, path: str, params: Mapping[str, Any] | None = None) -> httpx.Response:
        with self._slots:
            return self.api.request("GET", self.context + path, params=params)

    def get_bytes(self, path: str) -> bytes:
        """A download link (relative to the API root, query included)."""
        url = httpx.URL(path)
        if url.host and url.host != self._host:
            raise ApiError(f"{self.api.service}: refusing to follow a link to another host ({url.host})")
        target = url.raw_path.decode("ascii")
        if not self.context or not target.startswith(self.context + "/"):
            target = self.context + target
        with self._slots:
            return self.api.request("GET", target, expect_json=False).content

    # -- paging ------------------------------------------------------------------------------------------

    def _next_params(self, response: httpx.Response, body: Mapping[str, Any],
                     params: dict[str, Any]) -> dict[str, Any] | None:
        link = (body.get("_links") or {}).get("next") if isinstance(body.get("_links"), Mapping) else None
        if not link and "next" in response.links:
            link = response.links["next"].get("url")
        if link:
            url = httpx.URL(link)
            if url.host and url.host != self._host:
                raise ApiError(f"{self.api.service}: refusing to follow a next link to another host ({url.host})")
            following = dict(params)
            following.update(dict(url.params.multi_items()))
            return following
        size, total, start = body.get("size"), body.get("totalSize"), body.get("start")
        if isinstance(size, int) and isinstance(total, int) and isinstance(start, int) and size and \
                start + size < total:
            return {**params, "start": start + size}
        return None

    def _paged(self, path: str, params: Mapping[str, Any]) -> Iterator[tuple[dict[str, Any], Mapping[str, Any]]]:
        """Every result of a listing, each with the body of the page it came in."""
        current: dict[str, Any] | None = dict(params)
        seen: set[str] = set()
        while current is not None:
            response = self._get(path, current)
            body = response.json()
            for result in body.get("results") or []:
                yield result, body
            current = self._next_params(response, body, current)
            if current is not None:
                fingerprint = repr(sorted(current.items()))
                if fingerprint in seen:
                    raise ApiError(f"{self.api.service}: the listing of {path} repeats its next link")
                seen.add(fingerprint)

    # -- spaces ------------------------------------------------------------------------------------------

    def spaces(self, keys: list[str] | None = None) -> list[Space]:
        found = []
        if self.is_cloud:
            params: dict[str, Any] = {"limit": V2_PAGE_LIMIT}
            if keys:
                params["keys"] = ",".join(keys)
            for space, _ in self._paged("/api/v2/spaces", params):
                found.append(Space(str(space["key"]), str(space["id"]), space.get("name") or ""))
        else:
            params = {"limit": V1_PAGE_LIMIT}
            if keys:
                params["spaceKey"] = keys
            for space, _ in self._paged("/rest/api/space", params):
                found.append(Space(str(space["key"]), str(space.get("id", "")), space.get("name") or ""))
        return found

    def time_zone(self) -> str | None:
        """The searching user's time zone, in which CQL reads dates (Cloud reports it; Server may not)."""
        body = self._get("/rest/api/user/current").json()
        zone = body.get("timeZone") if isinstance(body, Mapping) else None
        return str(zone) if zone else None

    # -- listings ----------------------------------------------------------------------------------------

    def list_pages(self, space: Space, statuses: tuple[str, ...]) -> Iterator[PageInfo]:
        """Every page of a space with version and parent; on Server also ancestors and labels."""
        if self.is_cloud:
            params = {"limit": V2_PAGE_LIMIT, "status": list(statuses)}
            for page, _ in self._paged(f"/api/v2/spaces/{space.id}/pages", params):
                version = page.get("version") or {}
                yield PageInfo(id=str(page["id"]), title=page.get("title") or "", version=int(version.get("number", 0)),
                               status=page.get("status") or "current",
                               parent_id=str(page["parentId"]) if page.get("parentId") else None,
                               last_modified=version.get("createdAt") or "")
            return
        for status in statuses:
            params = {"spaceKey": space.key, "type": "page", "status": status, "limit": V1_PAGE_LIMIT,
                      "expand": "version,ancestors,metadata.labels"}
            for page, _ in self._paged("/rest/api/content", params):
                yield self._v1_info(page)

    def page_labels(self, space: Space) -> dict[str, list[str]]:
        """Cloud: page id -> label names, from the space's label index (one call per label in use)."""
        by_page: dict[str, set[str]] = {}
        labels = [label for label, _ in self._paged(f"/api/v2/spaces/{space.id}/content/labels",
                                                    {"limit": V2_PAGE_LIMIT})]
        for label in labels:
            for page, _ in self._paged(f"/api/v2/labels/{label['id']}/pages",
                                       {"space-id": space.id, "limit": V2_PAGE_LIMIT}):
                by_page.setdefault(str(page["id"]), set()).add(str(label["name"]))
        return {page_id: sorted(names) for page_id, names in by_page.items()}

    @staticmethod
    def _v1_info(content: Mapping[str, Any], last_modified: str = "") -> PageInfo:
        version = content.get("version") or {}
        ancestors = content.get("ancestors")
        container = content.get("container") or {}
        extensions = content.get("extensions") or {}
        links = content.get("_links") or {}
        return PageInfo(
            id=str(content["id"]), title=content.get("title") or "", version=int(version.get("number", 0)),
            kind="attachment" if content.get("type") == "attachment" else "page",
            status=content.get("status") or "current",
            parent_id=str(ancestors[-1]["id"]) if isinstance(ancestors, list) and ancestors else None,
            ancestors=[a.get("title") or "" for a in ancestors] if isinstance(ancestors, list) else None,
            labels=_labels((content.get("metadata") or {}).get("labels")),
            last_modified=last_modified or version.get("when") or "",
            container_id=str(container["id"]) if container.get("id") else None,
            media_type=extensions.get("mediaType") or "", file_size=extensions.get("fileSize"),
            download=links.get("download") or "",
        )

    def search(self, cql: str, *, limit: int = SEARCH_LIMIT, expand: str = "content.version") -> SearchPage:
        """One page of a CQL search: its results and totalSize (the probe asks for limit=1)."""
        body = self._get("/rest/api/search", {"cql": cql, "limit": limit, "expand": expand}).json()
        return SearchPage(total=int(body.get("totalSize") or body.get("size") or 0), results=body.get("results") or [])

    def search_all(self, cql: str) -> Iterator[PageInfo]:
        """Every result of a CQL search, with version, ancestors, labels and (for attachments) container."""
        params = {"cql": cql, "limit": SEARCH_LIMIT, "expand": SEARCH_EXPAND}
        for result, _ in self._paged("/rest/api/search", params):
            content = result.get("content")
            if isinstance(content, Mapping) and content.get("id"):
                yield self._v1_info(content, result.get("lastModified") or "")

    # -- single documents --------------------------------------------------------------------------------

    def page(self, page_id: str, space_key: str) -> PageContent:
        if self.is_cloud:
            body = self._get(f"/api/v2/pages/{page_id}", {"body-format": "storage", "include-labels": "true"}).json()
            version = body.get("version") or {}
            storage = ((body.get("body") or {}).get("storage") or {}).get("value")
            if storage is None:
                raise ApiError(f"{self.api.service}: page {page_id} came without its storage body")
            return PageContent(
                id=str(body["id"]), title=body.get("title") or "", space_key=space_key,
                version=int(version.get("number", 0)), storage=storage, status=body.get("status") or "current",
                author=str(body.get("authorId") or ""), created=body.get("createdAt") or "",
                last_modified=version.get("createdAt") or "", labels=_labels(body.get("labels")) or [],
                web_path=(body.get("_links") or {}).get("webui") or "")
        expand = "body.storage,version,ancestors,metadata.labels,space,history"
        body = self._get(f"/rest/api/content/{page_id}", {"expand": expand}).json()
        history = body.get("history") or {}
        created_by = history.get("createdBy") or {}
        version = body.get("version") or {}
        return PageContent(
            id=str(body["id"]), title=body.get("title") or "", space_key=(body.get("space") or {}).get("key") or
            space_key, version=int(version.get("number", 0)),
            storage=((body.get("body") or {}).get("storage") or {}).get("value") or "",
            status=body.get("status") or "current",
            author=str(created_by.get("username") or created_by.get("userKey") or created_by.get("accountId") or ""),
            created=history.get("createdDate") or "", last_modified=version.get("when") or "",
            labels=_labels((body.get("metadata") or {}).get("labels")) or [],
            ancestors=[a.get("title") or "" for a in body.get("ancestors") or []],
            web_path=(body.get("_links") or {}).get("webui") or "")

    def ancestor_titles(self, page_id: str) -> list[str]:
        """Cloud fallback when no listing carried the ancestors: ids from v2, titles in one bulk call."""
        ids = [str(a["id"]) for a, _ in self._paged(f"/api/v2/pages/{page_id}/ancestors", {"limit": 250})]
        if not ids:
            return []
        titles = {str(p["id"]): p.get("title") or "" for p, _ in self._paged("/api/v2/pages",
                                                                             {"id": ",".join(ids), "limit": 250})}
        return [titles.get(i, "") for i in ids]

    def attachment(self, attachment_id: str) -> PageInfo:
        if self.is_cloud:
            body = self._get(f"/api/v2/attachments/{attachment_id}").json()
            return PageInfo(id=str(body["id"]), title=body.get("title") or "",
                            version=int((body.get("version") or {}).get("number", 0)), kind="attachment",
                            container_id=str(body.get("pageId") or "") or None,
                            media_type=body.get("mediaType") or "", file_size=body.get("fileSize"),
                            download=body.get("downloadLink") or (body.get("_links") or {}).get("download") or "",
                            last_modified=(body.get("version") or {}).get("createdAt") or "")
        body = self._get(f"/rest/api/content/{attachment_id}", {"expand": "version,container"}).json()
        return self._v1_info(body)


def detect_cloud(api: ApiClient, context_path: str) -> bool:
    """Cloud answers REST v2 under the site's /wiki; Server/Data Center has no v2 at all."""
    try:
        api.request("GET", context_path.rstrip("/") + "/api/v2/spaces", params={"limit": 1})
    except NotFoundError:
        return False
    except AuthError:
        raise
    except ApiError as error:
        if error.status in (400, 405, 410):
            return False
        raise
    return True
