"""The `confluence` source: one partition per space key.

Probe: one CQL search per space, `space = "KEY" AND type = page ... order by lastmodified desc` with limit 1.
Its answer gives the newest modification (time, page id, version) and `totalSize`, the space's page count, so
the mark moves on every edit, creation, deletion or archiving, for one call. The key -> id lookup that v2 needs
is not part of the probe (CQL takes keys), and the Cloud/Server detection is cached per process.

Listing:
- incremental (`since_mark` given): CQL `lastmodified >= "yyyy-MM-dd HH:mm"` in the searching user's time zone
  (from `/rest/api/user/current`; a day earlier when the zone is unknown), less an overlap window, newest
  first, read until the first result whose exact time is older than the mark, deduped by page id keeping the
  highest version. `complete=False`: nothing is deleted.
- complete (`since_mark` None: first sync, every_sync, the weekly reconciliation, `--reconcile`): every live
  page (v2 space pages on Cloud, v1 content on Server/DC; a CQL search when a `cql_filter` narrows the space),
  `complete=True`, so pages deleted or archived (when archived pages are excluded) leave every stage.
The mark is probed before the listing, so an edit made during a sync is found by the next probe.

Version token: the page's version number plus a short hash of its ancestor titles and labels, computed the
same way from either listing, so label changes, moves and ancestor renames (which do not bump the version)
are refreshed by the next complete listing, and the overlap window never refetches an unchanged page.

Known limit: CQL reads a search index that can lag an edit by seconds; an edit indexed after a newer one was
already probed is found by the next complete listing (the deletion strategy's cadence), not by the probe.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx

from rag_sync_pipeline.settings import TRUE_VALUES
from rag_sync_pipeline.sources.base import DocumentError, DocumentRef, Listing, PartitionError, RawDocument, Source
from rag_sync_pipeline.sources.confluence.client import ConfluenceClient, PageInfo, Space, detect_cloud
from rag_sync_pipeline.sources.http import (
    ApiClient,
    ApiError,
    AuthError,
    NotFoundError,
    RetryPolicy,
    build_http_client,
    check_url_security,
    insecure_http_allowed,
)
from rag_sync_pipeline.transform.confluence_storage import STORAGE_CONTENT_TYPE, extract_references

MARK_PREFIX = "cql1"
FALSE_VALUES = {"0", "false", "no", "off"}
ATTACHMENT_TYPES = {
    "application/pdf", "text/plain", "text/markdown", "text/html", "text/csv",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}
_CLOUD_BY_SITE: dict[str, bool] = {}
_SPACE_IDS: dict[tuple[str, str], Space] = {}
_CACHE_LOCK = threading.Lock()


def _flag(value: Any, default: bool | None) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value or "").strip().lower()
    if text in TRUE_VALUES:
        return True
    if text in FALSE_VALUES:
        return False
    return default


def _cql_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _utc(timestamp: str) -> datetime | None:
    if not timestamp:
        return None
    try:
        moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def _iso(timestamp: str) -> str:
    moment = _utc(timestamp)
    return moment.isoformat() if moment else timestamp


def version_token(info: PageInfo) -> str:
    """The page's version, plus what changes without a new version (ancestor titles, labels)."""
    if info.kind == "attachment":
        return f"{info.version}"
    structure = json.dumps([info.ancestors or [], sorted(info.labels or [])], ensure_ascii=False)
    return f"{info.version}.{hashlib.sha256(structure.encode()).hexdigest()[:12]}"


class ConfluenceSource(Source):
    type = "confluence"
    default_interval_seconds = 60

    def __init__(self, name: str, api: ApiClient, *, url: str, is_cloud: bool | None = None,
                 spaces: list[str] | None = None, credential: str = "the configured credentials",
                 include_archived: bool = False, include_attachments: bool = False,
                 attachment_max_bytes: int = 10_000_000, cql_filter: str = "", max_pages: int | None = None,
                 deletion_strategy: str = "weekly_reconciliation", overlap_minutes: int = 15,
                 max_concurrent_requests: int = 4) -> None:
        super().__init__(name, deletion_strategy)
        self.api = api
        parsed = httpx.URL(url.rstrip("/"))
        self.site = f"{parsed.scheme}://{parsed.netloc.decode('ascii')}"
        self.path = parsed.path.rstrip("/")
        self.is_cloud = is_cloud
        self.spaces = spaces or []
        self.credential = credential
        self.include_archived = include_archived
        self.include_attachments = include_attachments
        self.attachment_max_bytes = attachment_max_bytes
        self.cql_filter = cql_filter.strip()
        self.max_pages = max_pages
        self.overlap = timedelta(minutes=overlap_minutes)
        self.max_concurrent_requests = max_concurrent_requests
        self._client: ConfluenceClient | None = None
        self._zone: str | None | bool = False
        self._infos: dict[tuple[str, str], PageInfo] = {}

    # -- configuration -----------------------------------------------------------------------------------

    secret_options = {"api_token_env": "CONFLUENCE_API_TOKEN", "pat_env": "CONFLUENCE_PAT"}

    @classmethod
    def options_from_environment(cls, environ: Mapping[str, str]) -> dict[str, Any] | None:
        url = environ.get("CONFLUENCE_URL", "").strip()
        if not url:
            return None
        options: dict[str, Any] = {
            "url": url,
            "username": environ.get("CONFLUENCE_USERNAME", "").strip(),
            "api_token_env": "CONFLUENCE_API_TOKEN",
            "pat_env": "CONFLUENCE_PAT",
            "spaces": [s.strip() for s in environ.get("CONFLUENCE_SPACES", "").split(",") if s.strip()],
        }
        optional = {
            "is_cloud": "CONFLUENCE_IS_CLOUD", "include_archived": "CONFLUENCE_INCLUDE_ARCHIVED",
            "include_attachments": "CONFLUENCE_INCLUDE_ATTACHMENTS",
            "attachment_max_bytes": "CONFLUENCE_ATTACHMENT_MAX_BYTES", "cql_filter": "CONFLUENCE_CQL_FILTER",
            "max_pages": "CONFLUENCE_MAX_PAGES", "deletion_strategy": "CONFLUENCE_DELETION_STRATEGY",
            "requests_per_second": "CONFLUENCE_REQUESTS_PER_SECOND",
            "max_concurrent_requests": "CONFLUENCE_MAX_CONCURRENT_REQUESTS",
            "retry_backoff_seconds": "CONFLUENCE_RETRY_BACKOFF_SECONDS", "max_retries": "CONFLUENCE_MAX_RETRIES",
            "overlap_minutes": "CONFLUENCE_OVERLAP_MINUTES", "allow_insecure_http": "CONFLUENCE_ALLOW_INSECURE_HTTP",
        }
        for option, variable in optional.items():
            value = environ.get(variable, "").strip()
            if value:
                options[option] = value
        return options

    @classmethod
    def from_options(cls, name: str, options: Mapping[str, Any], environ: Mapping[str, str],
                     client: Any = None) -> ConfluenceSource:
        url = str(options.get("url") or "").strip()
        if not url:
            raise PartitionError(f"confluence source {name!r}: no url configured (CONFLUENCE_URL)")
        check_url_security(url, allow_insecure_http=insecure_http_allowed(options, environ),
                           setting=f"confluence source {name!r} url")
        username = str(options.get("username") or "").strip()
        token_env = str(options.get("api_token_env") or "CONFLUENCE_API_TOKEN")
        pat_env = str(options.get("pat_env") or "CONFLUENCE_PAT")
        token, pat = environ.get(token_env, "").strip(), environ.get(pat_env, "").strip()
        headers = {"Accept": "application/json"}
        auth: tuple[str, str] | None = None
        if username and token:
            auth, credential = (username, token), f"user {username} with the API token in {token_env}"
        elif pat or token:
            headers["Authorization"] = f"Bearer {pat or token}"
            credential = f"the personal access token in {pat_env if pat else token_env}"
        else:
            raise PartitionError(f"confluence source {name!r}: no credentials: set CONFLUENCE_USERNAME and "
                                 f"{token_env} (Cloud) or {pat_env} (Server/Data Center)")
        http = build_http_client(_site_root(url), auth=auth, headers=headers,
                                 timeout_seconds=float(options.get("timeout_seconds", 30)))
        rate = options.get("requests_per_second")
        retry = RetryPolicy(backoff_base_seconds=float(options.get("retry_backoff_seconds", 0.5)),
                            max_retries=int(options.get("max_retries", 10)))
        api = ApiClient(http, service="confluence", retry=retry, requests_per_second=float(rate) if rate else None)
        spaces = options.get("spaces") or []
        if isinstance(spaces, str):
            spaces = [s.strip() for s in spaces.split(",") if s.strip()]
        max_pages = options.get("max_pages")
        return cls(name, api, url=url, is_cloud=_flag(options.get("is_cloud"), None), spaces=list(spaces),
                   credential=credential,
                   include_archived=bool(_flag(options.get("include_archived"), False)),
                   include_attachments=bool(_flag(options.get("include_attachments"), False)),
                   attachment_max_bytes=int(options.get("attachment_max_bytes", 10_000_000)),
                   cql_filter=str(options.get("cql_filter") or ""),
                   max_pages=int(max_pages) if max_pages else None,
                   deletion_strategy=str(options.get("deletion_strategy") or "weekly_reconciliation"),
                   overlap_minutes=int(options.get("overlap_minutes", 15)),
                   max_concurrent_requests=int(options.get("max_concurrent_requests", 4)))

    @property
    def api_calls(self) -> int:  # type: ignore[override]
        """Counted by the shared ApiClient, retries included."""
        return self.api.calls if hasattr(self, "api") else 0

    @api_calls.setter
    def api_calls(self, value: int) -> None:
        """The base class resets the counter; the ApiClient's own count is authoritative."""

    def close(self) -> None:
        self.api.close()

    # -- errors ------------------------------------------------------------------------------------------

    @contextmanager
    def _space_errors(self, partition: str) -> Iterator[None]:
        where = f"confluence source {self.name!r}, space {partition}"
        try:
            yield
        except AuthError as error:
            problem = "were refused" if error.status == 401 else "lack permission"
            raise PartitionError(f"{where}: {self.credential} {problem}: {error}") from None
        except NotFoundError as error:
            raise PartitionError(f"{where}: not found or not readable with {self.credential}: {error}") from None
        except ApiError as error:
            raise PartitionError(f"{where}: {error}") from None

    # -- client, spaces ----------------------------------------------------------------------------------

    def client(self) -> ConfluenceClient:
        if self._client is None:
            is_cloud = self.is_cloud
            if is_cloud is None:
                host = httpx.URL(self.site).host
                with _CACHE_LOCK:
                    cached = _CLOUD_BY_SITE.get(self.site + self.path)
                if cached is None:
                    cached = host.endswith(".atlassian.net") or detect_cloud(self.api, self._cloud_context())
                    with _CACHE_LOCK:
                        _CLOUD_BY_SITE[self.site + self.path] = cached
                is_cloud = cached
            context = self._cloud_context() if is_cloud else self.path
            self._client = ConfluenceClient(self.api, context_path=context, is_cloud=is_cloud,
                                            max_concurrent_requests=self.max_concurrent_requests)
        return self._client

    def _cloud_context(self) -> str:
        return self.path if self.path.endswith("/wiki") else self.path + "/wiki"

    def _api_root(self) -> str:
        return self.site + self.client().context

    def partitions(self) -> list[str]:
        if self.spaces:
            return list(self.spaces)
        with self._space_errors("(listing spaces)"):
            return sorted(space.key for space in self.client().spaces())

    def _space(self, key: str) -> Space:
        client = self.client()
        if not client.is_cloud:
            return Space(key, "")
        cache_key = (self._api_root(), key)
        with _CACHE_LOCK:
            cached = _SPACE_IDS.get(cache_key)
        if cached:
            return cached
        found = [s for s in client.spaces([key]) if s.key == key]
        if not found:
            raise PartitionError(f"confluence source {self.name!r}, space {key}: not found or not readable with "
                                 f"{self.credential}")
        with _CACHE_LOCK:
            _SPACE_IDS[cache_key] = found[0]
        return found[0]

    # -- probe and listings ------------------------------------------------------------------------------

    def _cql(self, key: str, *, attachments: bool | None = None) -> str:
        with_attachments = self.include_attachments if attachments is None else attachments
        kind = "type in (page, attachment)" if with_attachments else "type = page"
        cql = f"space = {_cql_string(key)} AND {kind}"
        return f"{cql} AND ({self.cql_filter})" if self.cql_filter else cql

    def check_partition(self, partition: str) -> None:
        with self._space_errors(partition):
            self._space(partition)  # Cloud: the key -> id lookup fails for a missing space
            self.probe(partition, None)

    def probe(self, partition: str, committed_mark: str | None) -> str:
        with self._space_errors(partition):
            found = self.client().search(self._cql(partition) + " order by lastmodified desc", limit=1)
        if not found.results:
            return f"{MARK_PREFIX}|||{found.total}"
        newest = found.results[0]
        content = newest.get("content") or {}
        version = (content.get("version") or {}).get("number", "")
        modified = _iso(newest.get("lastModified") or (content.get("version") or {}).get("when") or "")
        return f"{MARK_PREFIX}|{modified}|{content.get('id', '')}.{version}|{found.total}"

    @staticmethod
    def _mark_time(mark: str | None) -> datetime | None:
        parts = (mark or "").split("|")
        return _utc(parts[1]) if len(parts) == 4 and parts[0] == MARK_PREFIX else None

    def _cql_time(self, moment: datetime) -> str:
        """A `lastmodified` bound the search reads in the user's zone, less the overlap."""
        if self._zone is False:
            try:
                self._zone = self.client().time_zone()
            except ApiError:
                self._zone = None
        local: datetime | None = None
        if isinstance(self._zone, str):
            try:
                local = moment.astimezone(ZoneInfo(self._zone)) - self.overlap
            except (ZoneInfoNotFoundError, ValueError):
                local = None
        if local is None:  # unknown zone: a day earlier covers every offset
            local = moment - self.overlap - timedelta(days=1)
        return local.strftime("%Y-%m-%d %H:%M")

    def list_documents(self, partition: str, since_mark: str | None) -> Listing:
        with self._space_errors(partition):
            mark = self.probe(partition, since_mark)
            since = self._mark_time(since_mark)
            if since is None:
                infos, complete = self._complete_listing(partition), True
            else:
                cql = (f"{self._cql(partition)} AND lastmodified >= {_cql_string(self._cql_time(since))}"
                       " order by lastmodified desc")
                infos, complete = self._keep(self._modified_since(cql, since)), False
        refs = []
        for info in infos:
            doc_id = self._doc_id(info)
            self._infos[(partition, doc_id)] = info
            refs.append(DocumentRef(doc_id, version_token(info)))
        return Listing(refs=refs, complete=complete, mark=mark)

    def _modified_since(self, cql: str, since: datetime) -> Iterator[PageInfo]:
        """Newest first; stops at the first result older than the mark (its exact time, not the minute).

        The CQL bound is coarse (minutes, time zone, overlap); results carry exact times, and what is older
        than the committed mark was listed by the run that committed it, so paging ends there.
        """
        for info in self.client().search_all(cql):
            moment = _utc(info.last_modified)
            if moment is not None and moment < since:
                return
            yield info

    @staticmethod
    def _doc_id(info: PageInfo) -> str:
        return info.id if info.kind == "page" or info.id.startswith("att") else f"att{info.id}"

    def _keep(self, infos: Iterator[PageInfo] | list[PageInfo]) -> list[PageInfo]:
        """Dedupe by id (highest version wins), drop unwanted statuses and attachments, cap pages per space."""
        newest: dict[str, PageInfo] = {}
        for info in infos:
            if info.status == "archived" and not self.include_archived:
                continue
            if info.status not in ("current", "archived"):
                continue
            if info.kind == "attachment" and not self._wanted_attachment(info):
                continue
            known = newest.get(info.id)
            if known is None or info.version > known.version:
                newest[info.id] = info
        pages = [i for i in newest.values() if i.kind == "page"]
        if self.max_pages is not None:
            pages = pages[:self.max_pages]
        kept_pages = {p.id for p in pages}
        attachments = [i for i in newest.values() if i.kind == "attachment"
                       and (i.container_id is None or i.container_id in kept_pages or not self.max_pages)]
        return pages + attachments

    def _wanted_attachment(self, info: PageInfo) -> bool:
        media_type = info.media_type.split(";")[0].strip().lower()
        size_ok = info.file_size is None or info.file_size <= self.attachment_max_bytes
        return self.include_attachments and media_type in ATTACHMENT_TYPES and size_ok

    def _complete_listing(self, partition: str) -> list[PageInfo]:
        client = self.client()
        if self.cql_filter:  # only the search can apply the filter
            return self._keep(client.search_all(self._cql(partition)))
        space = self._space(partition)
        statuses = ("current", "archived") if self.include_archived else ("current",)
        pages = list(client.list_pages(space, statuses))
        if client.is_cloud:
            by_id = {p.id: p for p in pages}
            labels = client.page_labels(space)
            for page in pages:
                page.ancestors = _ancestor_titles(page, by_id)
                page.labels = labels.get(page.id, [])
        found: list[PageInfo] = pages
        if self.include_attachments:
            found = pages + list(client.search_all(f"space = {_cql_string(partition)} AND type = attachment"))
        return self._keep(found)

    # -- fetch -------------------------------------------------------------------------------------------

    def describe(self, partition: str, doc_id: str) -> str:
        info = self._infos.get((partition, doc_id))
        kind = "attachment" if info and info.kind == "attachment" else "page"
        title = f' "{info.title}"' if info and info.title else ""
        return f"confluence {kind} {doc_id}{title} in space {partition}"

    def fetch(self, partition: str, ref: DocumentRef) -> RawDocument:
        info = self._infos.get((partition, ref.doc_id)) or PageInfo(id=ref.doc_id, title="", version=0)
        try:
            if info.kind == "attachment":
                return self._fetch_attachment(partition, ref, info)
            return self._fetch_page(partition, ref, info)
        except AuthError as error:
            problem = "were refused" if error.status == 401 else "lack permission"
            raise PartitionError(f"confluence source {self.name!r}, space {partition}: {self.credential} "
                                 f"{problem} while fetching {self.describe(partition, ref.doc_id)}: {error}") from None
        except NotFoundError as error:
            raise DocumentError(f"{self.describe(partition, ref.doc_id)}: 404 not found (deleted, or not readable "
                                f"with {self.credential}): {error}", permanent=True) from None
        except ApiError as error:
            raise DocumentError(f"{self.describe(partition, ref.doc_id)}: {error}") from None

    def _web_url(self, web_path: str, page_id: str) -> str:
        if web_path:
            return self._api_root() + web_path
        return f"{self._api_root()}/pages/viewpage.action?pageId={page_id}"

    def _fetch_page(self, partition: str, ref: DocumentRef, info: PageInfo) -> RawDocument:
        client = self.client()
        page = client.page(info.id, partition)
        ancestors = page.ancestors if page.ancestors is not None else info.ancestors
        if ancestors is None:
            ancestors = client.ancestor_titles(info.id)
        references = extract_references(page.storage)
        url = self._web_url(page.web_path, page.id)
        metadata = {
            "kind": "page", "page_id": page.id, "space": partition, "title": page.title, "url": url,
            "version": page.version, "status": page.status, "author": page.author, "created": _iso(page.created),
            "last_modified": _iso(page.last_modified), "labels": page.labels, "ancestors": ancestors,
            **references.as_dict(),
        }
        return RawDocument(doc_id=ref.doc_id, version=ref.version, content=page.storage.encode("utf-8"),
                           content_type=STORAGE_CONTENT_TYPE, title=page.title, url=url,
                           path=[partition, *ancestors], last_modified=_iso(page.last_modified), metadata=metadata)

    def _fetch_attachment(self, partition: str, ref: DocumentRef, info: PageInfo) -> RawDocument:
        client = self.client()
        details = info if info.download else client.attachment(info.id)
        if details.file_size is not None and details.file_size > self.attachment_max_bytes:
            raise DocumentError(f"{self.describe(partition, ref.doc_id)}: {details.file_size} bytes is over the "
                                f"{self.attachment_max_bytes}-byte attachment limit", permanent=True)
        content = client.get_bytes(details.download)
        if len(content) > self.attachment_max_bytes:
            raise DocumentError(f"{self.describe(partition, ref.doc_id)}: {len(content)} bytes is over the "
                                f"{self.attachment_max_bytes}-byte attachment limit", permanent=True)
        page = self._infos.get((partition, details.container_id or ""))
        page_path = [*(page.ancestors or []), page.title] if page else []
        url = self.site + client.context + details.download.split("?")[0] if details.download else ""
        metadata = {"kind": "attachment", "attachment_id": info.id, "page_id": details.container_id,
                    "page_title": page.title if page else "", "space": partition, "title": details.title,
                    "version": details.version, "media_type": details.media_type, "file_size": len(content),
                    "last_modified": _iso(details.last_modified or info.last_modified)}
        return RawDocument(doc_id=ref.doc_id, version=ref.version, content=content,
                           content_type=details.media_type or "application/octet-stream", title=details.title,
                           url=url, path=[partition, *page_path],
                           last_modified=_iso(details.last_modified or info.last_modified), metadata=metadata)


def _site_root(url: str) -> str:
    parsed = httpx.URL(url.strip())
    return f"{parsed.scheme}://{parsed.netloc.decode('ascii')}"


def _ancestor_titles(page: PageInfo, by_id: Mapping[str, PageInfo]) -> list[str]:
    titles: list[str] = []
    seen = {page.id}
    parent = page.parent_id
    while parent and parent in by_id and parent not in seen:
        seen.add(parent)
        titles.append(by_id[parent].title)
        parent = by_id[parent].parent_id
    return titles[::-1]
