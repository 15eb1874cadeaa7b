"""The `notion` source: each configured database is a partition covering all of its data sources.

Change token: a row's `last_edited_time`, which Notion rounds to the minute. Two consequences shape the marks:
- Listings and probes ask for rows edited on or after (committed mark - OVERLAP); rows seen again in the
  overlap carry the version the index already has, so the raw stage skips them.
- An edit in the same minute as the last sync leaves `last_edited_time` unchanged, so no timestamp can show
  it. A row edited less than OVERLAP ago is therefore "settling": its version and the mark carry a
  `~settling` suffix, which disappears once the minute is safely past. The sensor then sees the mark move and
  the raw stage fetches those rows once more, so a late edit in the same minute is never lost; the cost is
  one extra fetch of recently edited rows.

The mark is `<latest last_edited_time>|<data source set>;<data source ids>[~settling]`: a data source added
to or removed from the database moves it too. A probe costs one query per data source (page_size 1, newest
first), with the data source ids read from the committed mark; without a mark, or when a cached id answers
404, it reads the database first. So a data source added to a database is noticed by the next complete
listing (which always reads the database), not by the probe.

Deletions: Notion's queries never return trashed rows, so a complete listing (every live row id, 100 rows a
call) is what finds archived and deleted rows; it is cheap enough to take on every sync, which is the
default deletion strategy (NOTION_DELETION_STRATEGY). Trashed rows are filtered out of every listing.

Blocks are fetched one level at a time, following `has_children` to the end, up to MAX_BLOCKS blocks and
MAX_BLOCK_DEPTH levels per page (a safety cap, recorded in the metadata when hit). Synced copies are resolved
to their original's children. With include_child_pages, child pages become documents of their own, listed
with the row they belong to (found by walking the row's blocks, down to max_depth levels of child pages), with
the row's title in their path.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from rag_sync_pipeline.identity import sha256_hex
from rag_sync_pipeline.settings import TRUE_VALUES
from rag_sync_pipeline.sources.base import (
    DELETION_STRATEGIES,
    DocumentError,
    DocumentRef,
    Listing,
    PartitionError,
    RawDocument,
    Source,
)
from rag_sync_pipeline.sources.http import (
    ApiError,
    AuthError,
    NotFoundError,
    check_url_security,
    insecure_http_allowed,
)
from rag_sync_pipeline.sources.notion.client import DEFAULT_BASE_URL, NotionClient, build_notion_client, dashed_id
from rag_sync_pipeline.transform.notion_blocks import NOTION_BLOCKS_TYPE, notion_url, plain_text

OVERLAP = timedelta(minutes=2)
SETTLING = "~settling"
MAX_BLOCKS = 2000
MAX_BLOCK_DEPTH = 30
DEFAULT_REQUESTS_PER_SECOND = 3.0
BLOCK_KEYS = ("id", "type", "has_children", "last_edited_time")


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _without_signatures(value: Any) -> Any:
    """Drop pre-signed URL queries (they expire within the hour and carry credentials) from a block payload."""
    if isinstance(value, list):
        return [_without_signatures(v) for v in value]
    if not isinstance(value, dict):
        return value
    cleaned = {k: _without_signatures(v) for k, v in value.items() if k != "expiry_time"}
    if "expiry_time" in value and isinstance(value.get("url"), str):
        cleaned["url"] = urlunsplit(urlsplit(value["url"])._replace(query="", fragment=""))
    return cleaned


@dataclass
class _Walk:
    """One page's block walk: the budget and what it found."""

    blocks: int = 0
    truncated: bool = False
    unsupported: int = 0
    unreadable_synced: int = 0
    child_pages: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Page:
    """What a listing learnt about a page, so that fetching it costs only its blocks."""

    page_id: str
    title: str
    url: str
    last_edited_time: str
    path: list[str]
    database_id: str
    data_source_id: str = ""
    row: dict[str, Any] | None = None
    parent_page_id: str = ""
    depth: int = 0


def _row_title(row: dict[str, Any]) -> str:
    for value in (row.get("properties") or {}).values():
        if value.get("type") == "title":
            return plain_text(value.get("title")).strip()
    return ""


class NotionSource(Source):
    type = "notion"
    default_interval_seconds = 300

    def __init__(self, name: str, client: NotionClient, database_ids: list[str], *,
                 include_child_pages: bool = False, max_depth: int = 3, deletion_strategy: str = "every_sync",
                 max_blocks: int = MAX_BLOCKS, max_block_depth: int = MAX_BLOCK_DEPTH,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.client = client
        super().__init__(name, deletion_strategy=deletion_strategy)
        self.database_ids = [dashed_id(d) for d in database_ids]
        self.include_child_pages = include_child_pages
        self.max_depth = max_depth
        self.max_blocks = max_blocks
        self.max_block_depth = max_block_depth
        self.clock = clock
        self._pages: dict[str, _Page] = {}
        self._trees: dict[str, tuple[list[dict[str, Any]], _Walk]] = {}

    # -- configuration ---------------------------------------------------------------------------------------

    @property
    def api_calls(self) -> int:
        """Requests sent, retries included; the shared client keeps the count."""
        return self.client.calls

    @api_calls.setter
    def api_calls(self, value: int) -> None:
        """The base class initialises a counter of its own; the client's is the one that counts."""

    secret_options = {"api_key_env": "NOTION_API_KEY"}

    @classmethod
    def options_from_environment(cls, environ: Mapping[str, str]) -> dict[str, Any] | None:
        from rag_sync_pipeline.settings import ConfigurationError

        raw_ids = [v.strip() for v in environ.get("NOTION_DATABASE_IDS", "").split(",") if v.strip()]
        if not raw_ids:
            return None
        try:
            database_ids = [dashed_id(v) for v in raw_ids]
        except ValueError as error:
            raise ConfigurationError(f"NOTION_DATABASE_IDS: {error}") from None
        strategy = environ.get("NOTION_DELETION_STRATEGY", "").strip() or "every_sync"
        if strategy not in DELETION_STRATEGIES:
            raise ConfigurationError(f"NOTION_DELETION_STRATEGY must be one of {', '.join(DELETION_STRATEGIES)}, "
                                     f"got {strategy!r}")
        options: dict[str, Any] = {
            "database_ids": database_ids,
            "base_url": environ.get("NOTION_BASE_URL", "").strip() or DEFAULT_BASE_URL,
            "include_child_pages": environ.get("NOTION_INCLUDE_CHILD_PAGES", "").strip().lower() in TRUE_VALUES,
            "deletion_strategy": strategy,
            "api_key_env": "NOTION_API_KEY",
        }
        for name, key, kind in (("NOTION_MAX_DEPTH", "max_depth", int),
                                ("NOTION_REQUESTS_PER_SECOND", "requests_per_second", float)):
            value = environ.get(name, "").strip()
            if value:
                try:
                    number = kind(value)
                except ValueError:
                    raise ConfigurationError(f"{name} must be a number, got {value!r}") from None
                if number < 0 or (key == "requests_per_second" and number == 0):
                    raise ConfigurationError(f"{name} must be positive, got {value}")
                options[key] = number
        return options

    @classmethod
    def from_options(cls, name: str, options: Mapping[str, Any], environ: Mapping[str, str],
                     client: Any = None) -> NotionSource:
        if client is None:
            check_url_security(str(options.get("base_url") or DEFAULT_BASE_URL),
                               allow_insecure_http=insecure_http_allowed(options, environ),
                               setting=f"notion source {name!r} base_url")
            key_env = str(options.get("api_key_env") or "NOTION_API_KEY")
            api_key = environ.get(key_env, "").strip()
            if not api_key:
                raise PartitionError(f"notion source {name!r}: the environment variable {key_env} (the "
                                     f"integration's API key) is not set")
            client = build_notion_client(
                api_key, base_url=str(options.get("base_url") or DEFAULT_BASE_URL),
                requests_per_second=float(options.get("requests_per_second", DEFAULT_REQUESTS_PER_SECOND)))
        database_ids = options.get("database_ids") or []
        if isinstance(database_ids, str):
            database_ids = [v for v in database_ids.split(",") if v.strip()]
        return cls(name, client, list(database_ids),
                   include_child_pages=str(options.get("include_child_pages", False)).lower() in TRUE_VALUES,
                   max_depth=int(options.get("max_depth", 3)),
                   deletion_strategy=str(options.get("deletion_strategy") or "every_sync"))

    def close(self) -> None:
        self.client.close()

    def normalize_partition(self, partition: str) -> str:
        try:
            return dashed_id(partition)
        except ValueError:
            return partition

    def partitions(self) -> list[str]:
        return list(self.database_ids)

    def describe(self, partition: str, doc_id: str) -> str:
        page = self._pages.get(doc_id)
        title = f' "{page.title}"' if page and page.title else ""
        return f"notion page {doc_id}{title} in database {partition}"

    # -- marks and versions ----------------------------------------------------------------------------------

    def _settling(self, last_edited: str) -> bool:
        return bool(last_edited) and self.clock() - _parse_time(last_edited) < OVERLAP

    def _version(self, last_edited: str) -> str:
        version = last_edited + (SETTLING if self._settling(last_edited) else "")
        return version + (f"|children-d{self.max_depth}" if self.include_child_pages else "")

    @staticmethod
    def _sources_tag(data_source_ids: list[str]) -> str:
        return sha256_hex(*sorted(data_source_ids))[:12]

    def _mark(self, latest: str, data_source_ids: list[str]) -> str:
        settling = SETTLING if self._settling(latest) else ""
        return f"{latest}|{self._sources_tag(data_source_ids)};{','.join(data_source_ids)}{settling}"

    def _since(self, mark: str | None, data_source_ids: list[str]) -> str | None:
        """The filter start for a committed mark, or None when everything must be read again."""
        if not mark:
            return None
        latest, _, tag = mark.removesuffix(SETTLING).partition(";")[0].partition("|")
        if not latest or tag != self._sources_tag(data_source_ids):
            return None
        return (_parse_time(latest) - OVERLAP).strftime("%Y-%m-%dT%H:%M:%S.000Z")

    def _ids_in_mark(self, mark: str | None) -> list[str]:
        """The data source ids a committed mark was made from (none for an older mark without them)."""
        listed = (mark or "").removesuffix(SETTLING).partition(";")[2]
        ids = listed.split(",") if listed else []
        return ids if ids and self._since(mark, ids) is not None else []

    @staticmethod
    def _edited_filter(since: str | None) -> dict[str, Any] | None:
        return {"timestamp": "last_edited_time", "last_edited_time": {"on_or_after": since}} if since else None

    # -- the protocol ----------------------------------------------------------------------------------------

    def _database(self, partition: str) -> tuple[str, str, list[dict[str, Any]]]:
        try:
            database_id = dashed_id(partition)
        except ValueError:
            raise PartitionError(f"notion partition {partition!r} is not a database id") from None
        try:
            database = self.client.retrieve_database(database_id)
        except NotFoundError as error:
            raise PartitionError(f"notion database {database_id} is not shared with the integration or does not "
                                 f"exist: share it with the integration in Notion (... > Connections): {error}"
                                 ) from None
        except AuthError as error:
            raise PartitionError(f"notion source {self.name!r}: {error}") from None
        except ApiError as error:
            raise PartitionError(f"notion database {database_id} cannot be read: {error}") from None
        title = plain_text(database.get("title")).strip() or "Untitled database"
        return database_id, title, list(database.get("data_sources") or [])

    def probe(self, partition: str, committed_mark: str | None) -> str:
        ids = self._ids_in_mark(committed_mark)
        if ids:
            try:
                return self._probe_sources(partition, ids, committed_mark)
            except NotFoundError:
                pass  # a data source was removed or unshared: read the database for its current ones
        _, _, sources = self._database(partition)
        try:
            return self._probe_sources(partition, [s["id"] for s in sources], committed_mark)
        except NotFoundError as error:
            raise PartitionError(f"notion database {partition}: {error}") from None

    def _probe_sources(self, partition: str, ids: list[str], committed_mark: str | None) -> str:
        since = self._since(committed_mark, ids)
        latest = ""
        for source_id in ids:
            try:
                answer = self.client.query_page(source_id, filter=self._edited_filter(since), page_size=1, sorts=[
                    {"timestamp": "last_edited_time", "direction": "descending"}])
            except NotFoundError:
                raise  # an id from the committed mark may be gone: probe() reads the database then
            except ApiError as error:
                raise PartitionError(f"notion data source {source_id} of database {partition}: {error}") from None
            for row in answer.get("results") or []:
                if not (row.get("archived") or row.get("in_trash")):
                    latest = max(latest, row.get("last_edited_time") or "")
        return self._mark(latest, ids)

    def list_documents(self, partition: str, since_mark: str | None) -> Listing:
        database_id, title, sources = self._database(partition)
        ids = [s["id"] for s in sources]
        since = self._since(since_mark, ids)
        refs: dict[str, DocumentRef] = {}
        latest = ""
        for source in sources:
            path = [title] + ([source.get("name") or "Untitled"] if len(sources) > 1 else [])
            try:
                rows = list(self.client.query(source["id"], filter=self._edited_filter(since)))
            except ApiError as error:
                raise PartitionError(f"notion data source {source['id']} of database {database_id}: {error}"
                                     ) from None
            for row in rows:
                if row.get("archived") or row.get("in_trash"):
                    continue  # trashed rows leave the index: a complete listing no longer names them
                edited = row.get("last_edited_time") or ""
                latest = max(latest, edited)
                page = _Page(dashed_id(row["id"]), _row_title(row) or "Untitled", row.get("url") or "", edited,
                             path, database_id, source["id"], row=row)
                self._pages[page.page_id] = page
                refs[page.page_id] = DocumentRef(page.page_id, self._version(edited))
                if self.include_child_pages:
                    for child in self._child_pages(page, partition):
                        refs.setdefault(child.page_id, DocumentRef(child.page_id,
                                                                   self._version(child.last_edited_time)))
        return Listing(refs=list(refs.values()), complete=since is None, mark=self._mark(latest, ids))

    def _child_pages(self, parent: _Page, partition: str) -> list[_Page]:
        """The child pages under a row, down to max_depth levels, each registered for fetching."""
        found: list[_Page] = []
        pending = [parent]
        while pending:
            page = pending.pop(0)
            if page.depth >= self.max_depth:
                continue
            try:
                _, walk = self._tree(page.page_id)
            except (DocumentError, NotFoundError):
                continue  # the parent's own fetch reports it
            for block in walk.child_pages:
                child = _Page(block["id"], (block.get("child_page") or {}).get("title") or "Untitled",
                              notion_url(block["id"]), block.get("last_edited_time") or "",
                              [*page.path, page.title], page.database_id, page.data_source_id,
                              parent_page_id=page.page_id, depth=page.depth + 1)
                self._pages.setdefault(child.page_id, child)
                found.append(child)
                pending.append(child)
        return found

    def _tree(self, page_id: str) -> tuple[list[dict[str, Any]], _Walk]:
        if page_id not in self._trees:
            walk = _Walk()
            self._trees[page_id] = (self._children(page_id, walk, 1), walk)
        return self._trees[page_id]

    def _children(self, block_id: str, walk: _Walk, depth: int) -> list[dict[str, Any]]:
        blocks = []
        for child in self.client.block_children(block_id):
            if walk.blocks >= self.max_blocks:
                walk.truncated = True
                break
            walk.blocks += 1
            kind = child.get("type") or ""
            slim = {k: child[k] for k in BLOCK_KEYS if k in child}
            slim[kind] = _without_signatures(child.get(kind) or {})
            if kind == "unsupported":
                walk.unsupported += 1
            elif kind == "child_page":
                walk.child_pages.append(child)
            if child.get("has_children") and kind not in {"child_page", "child_database"}:
                if depth >= self.max_block_depth:
                    walk.truncated = True
                else:
                    slim["children"] = self._nested(child, kind, walk, depth)
            blocks.append(slim)
        return blocks

    def _nested(self, block: dict[str, Any], kind: str, walk: _Walk, depth: int) -> list[dict[str, Any]]:
        source = ((block.get("synced_block") or {}).get("synced_from") or {}) if kind == "synced_block" else {}
        if not source.get("block_id"):
            return self._children(block["id"], walk, depth + 1)
        try:  # a synced copy shows its original's children; the original may live on an unshared page
            return self._children(source["block_id"], walk, depth + 1)
        except NotFoundError:
            walk.unreadable_synced += 1
            return []

    def fetch(self, partition: str, ref: DocumentRef) -> RawDocument:
        page = self._pages.get(ref.doc_id)
        where = self.describe(partition, ref.doc_id)
        try:
            if page is None:  # not listed by this source object: read the row itself
                row = self.client.retrieve_page(ref.doc_id)
                page = _Page(ref.doc_id, _row_title(row) or "Untitled", row.get("url") or "",
                             row.get("last_edited_time") or "", [], dashed_id(partition), row=row)
            blocks, walk = self._tree(ref.doc_id)
            properties = self._properties(page) if page.row else {}
        except NotFoundError as error:
            raise DocumentError(f"{where}: not shared with the integration or deleted; share the page with the "
                                f"integration in Notion ({error})", permanent=True) from None
        except AuthError as error:  # the key was revoked or expired mid-run: nothing more can be read
            raise PartitionError(f"notion source {self.name!r}, database {partition}, while fetching {where}: "
                                 f"{error}") from None
        except ApiError as error:
            raise DocumentError(f"{where}: {error}") from None
        finally:
            self._trees.pop(ref.doc_id, None)  # a tree is fetched for one document and not kept
        metadata: dict[str, Any] = {"notion_page_id": page.page_id, "database_id": page.database_id,
                                    "blocks": walk.blocks, "unsupported_blocks": walk.unsupported}
        if page.data_source_id:
            metadata["data_source_id"] = page.data_source_id
        if page.parent_page_id:
            metadata["parent_page_id"] = page.parent_page_id
        if properties:
            metadata["properties"] = properties
        if walk.truncated:
            metadata["truncated"] = f"stopped at {self.max_blocks} blocks or {self.max_block_depth} levels"
        if walk.unreadable_synced:
            metadata["unreadable_synced_blocks"] = walk.unreadable_synced
        content = json.dumps({"page": {"id": page.page_id, "title": page.title, "url": page.url},
                              "blocks": blocks}, ensure_ascii=False, sort_keys=True).encode("utf-8")
        return RawDocument(doc_id=ref.doc_id, version=ref.version, content=content, content_type=NOTION_BLOCKS_TYPE,
                           title=page.title, url=page.url, path=list(page.path),
                           last_modified=page.last_edited_time, metadata=metadata)

    # -- database properties as metadata ---------------------------------------------------------------------

    def _properties(self, page: _Page) -> dict[str, Any]:
        values = {}
        for name, prop in sorted(((page.row or {}).get("properties") or {}).items()):
            value = self._property_value(page.page_id, prop)
            if value not in (None, "", []):
                values[name] = value
        return values

    def _property_value(self, page_id: str, prop: dict[str, Any]) -> Any:
        kind = prop.get("type") or ""
        value = prop.get(kind)
        if kind in {"title", "rich_text"}:
            return plain_text(value).strip()
        if kind in {"select", "status"}:
            return (value or {}).get("name")
        if kind == "multi_select":
            return [o.get("name") for o in value or []]
        if kind == "date":
            return _date(value)
        if kind == "people":
            return [p.get("name") or p.get("id") for p in value or []]
        if kind in {"created_by", "last_edited_by"}:
            return (value or {}).get("name") or (value or {}).get("id")
        if kind == "relation":
            ids = [r.get("id") for r in value or []]
            if prop.get("has_more"):  # the row shows 25 at most; the property endpoint pages through the rest
                ids = [(item.get("relation") or {}).get("id")
                       for item in self.client.property_items(page_id, prop["id"])]
            return ids
        if kind == "unique_id":
            value = value or {}
            return f"{value['prefix']}-{value.get('number')}" if value.get("prefix") else value.get("number")
        if kind == "formula":
            inner = (value or {}).get((value or {}).get("type") or "")
            return _date(inner) if isinstance(inner, dict) else inner
        if kind == "files":
            return [f.get("name") for f in value or []]
        if kind in {"number", "checkbox", "url", "email", "phone_number", "created_time", "last_edited_time"}:
            return value
        return None  # rollups, buttons, verification: derived or not content


def _date(value: dict[str, Any] | None) -> str | None:
    if not value or not value.get("start"):
        return None
    return f"{value['start']}/{value['end']}" if value.get("end") else value["start"]
