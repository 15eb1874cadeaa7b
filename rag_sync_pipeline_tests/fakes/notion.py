"""A Notion API simulator on loopback, answering with the real shapes of API version 2025-09-03.

Databases, data sources, rows and blocks live in memory; every object is built from a response captured from
the live API (rag_sync_pipeline_tests/data/notion, copied from shared/real_api/notion), so what the client parses
is what Notion sends: `{object: "list", results, next_cursor, has_more, type, <type>: {}}` lists, rows whose
parent carries both the data source and the database id, 404 `object_not_found` with Notion's own message for
objects not shared with the integration, 400 `validation_error` for a page_size over 100, 429 `rate_limited` and
529 `service_overload` with `Retry-After` when a test asks for them.

Queries honour what the Notion source sends: a `last_edited_time` timestamp filter (`on_or_after`, `after`),
sorts on `last_edited_time`, `start_cursor` (a page id, as Notion's cursors are) and `page_size`; trashed rows
are never returned, as in the real API. Counters record calls per route and per object id.
"""

from __future__ import annotations

import copy
import functools
import json
import socket
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

DATA = Path(__file__).resolve().parent.parent / "data" / "notion"
NOTION_VERSION = "2025-09-03"
SAMPLE_PAGE_ID = "67cf059c-e746-46a0-b72d-481c9ff5d386"


@functools.cache
def _read(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


def load(name: str) -> Any:
    """A fresh copy of a captured response."""
    return json.loads(_read(name))


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:00.000Z")  # Notion rounds to the minute


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def text_segment(content: str, *, bold: bool = False, link: str | None = None) -> dict[str, Any]:
    return {"type": "text", "text": {"content": content, "link": {"url": link} if link else None},
            "annotations": {"bold": bold, "italic": False, "strikethrough": False, "underline": False,
                            "code": False, "color": "default"},
            "plain_text": content, "href": link}


def block(kind: str, text: str | None = None, *, has_children: bool = False, **payload: Any) -> dict[str, Any]:
    """A block in the real shape (that of the captured paragraph), of any type."""
    shaped = copy.deepcopy(load("retrieve_block_paragraph.json"))
    shaped.pop("request_id", None)
    del shaped["paragraph"]
    body: dict[str, Any] = {"rich_text": [text_segment(text)], "color": "default"} if text is not None else {}
    body.update(payload)
    shaped.update({"id": str(uuid.uuid4()), "type": kind, kind: body, "has_children": has_children,
                   "archived": False, "in_trash": False})
    return shaped


def sample_page_children() -> dict[str, list[dict[str, Any]]]:
    """The real 36-block test page: the captured children, and made-up ones where the capture stopped.

    Only the table's and the column list's children were captured; the toggle, callout, template, synced
    block, toggle headings and the three columns get one or two blocks each, so every container has content.
    """
    page = load("retrieve_block_children_block_test_page.json")["results"]
    children: dict[str, list[dict[str, Any]]] = {SAMPLE_PAGE_ID: page}
    children["ba612e8b-c858-4569-9822-ccca7ab4c709"] = load("retrieve_block_children_table.json")["results"]
    columns = load("retrieve_block_children_column_list.json")["results"]
    children["93195eab-21f7-4419-bf44-0e4c07092573"] = columns
    for index, column in enumerate(columns, 1):
        children[column["id"]] = [block("paragraph", f"Column {index} text")]
    made_up = {
        "005923da-b39f-4af6-bbd1-1be98150d2b2": [block("paragraph", "Inside the toggle"),
                                                 block("bulleted_list_item", "Toggle bullet")],
        "715a6550-c737-444f-ac99-4be7822c88d3": [block("paragraph", "Inside the callout")],
        "12fe0347-f8c4-4da0-ace9-9c8992b5827f": [block("to_do", "Template to-do", checked=False)],
        "4815032e-6f24-43e4-bc8c-9bdc6299b090": [block("paragraph", "Synced original text")],
        "82daa282-435d-4f9f-8f3b-b8c0328a963f": [block("paragraph", "Under toggle heading 1")],
        "e5f16356-8adc-49c5-9f17-228589d071ac": [block("paragraph", "Under toggle heading 2")],
        "115fb937-ab6d-4a2e-9079-921b03e50756": [block("paragraph", "Under toggle heading 3")],
    }
    children.update(made_up)
    # The copy's children are the original's, which is what the live API serves for a synced copy.
    children["ea7b5183-eea2-4d30-b019-010921e93b2c"] = made_up["4815032e-6f24-43e4-bc8c-9bdc6299b090"]
    return children


def sample_page_tree() -> list[dict[str, Any]]:
    """The sample page as a tree (children under `children`), as the Notion source stores a page."""
    children = sample_page_children()

    def attach(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**b, "children": attach(children.get(b["id"], []))} if b.get("has_children") else b
                for b in blocks]

    return attach(children[SAMPLE_PAGE_ID])


@dataclass
class Fault:
    status: int = 503
    retry_after: str | None = None
    route: str | None = None
    """Only requests of this route ("POST /v1/data_sources/{id}/query"), or any when None."""
    object_id: str | None = None
    """Only requests for this object (the `{id}` in the route), or any when None."""
    times: int = 1
    action: str = "answer"
    """"answer" sends `status` with Notion's error shape; "reset" drops the connection unanswered (a TCP
    reset); "truncate" sends the real answer cut in half, with a Content-Length that matches the cut (only
    the JSON is broken); "hang" waits `seconds` before the real answer (a client timeout)."""
    skip: int = 0
    """That many matching requests are served normally first."""
    seconds: float = 0.0


def _error(status: int, code: str, message: str) -> dict[str, Any]:
    return {"object": "error", "status": status, "code": code, "message": message,
            "request_id": str(uuid.uuid4())}


def _not_found(kind: str, object_id: str) -> tuple[int, dict[str, Any]]:
    """The captured 404 for a page not shared with the integration, naming this object instead.

    Notion's answer for a missing object and for one the integration cannot see is the same."""
    error = load("retrieve_page_unpermitted_page.json")
    captured_id = "2600ce2a-6520-801c-86cb-fd0b73eb91de"
    error["message"] = error["message"].replace("page", kind, 1).replace(captured_id, object_id)
    error["request_id"] = str(uuid.uuid4())
    return 404, error


def dashed(value: str) -> str:
    return str(uuid.UUID(value.replace("-", "")))


class NotionSimulator:
    def __init__(self, token: str = "ntn_test_token_not_a_real_secret") -> None:
        self.token = token
        self.lock = threading.Lock()
        self.databases: dict[str, dict[str, Any]] = {}
        self.data_sources: dict[str, dict[str, Any]] = {}
        self.rows: dict[str, list[str]] = {}  # data source id -> page ids in creation order
        self.pages: dict[str, dict[str, Any]] = {}
        self.children: dict[str, list[dict[str, Any]]] = {}
        self.property_items: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.unshared: set[str] = set()
        self.faults: list[Fault] = []
        self.calls: Counter[str] = Counter()
        self.calls_by_id: Counter[tuple[str, str]] = Counter()
        self.request_log: list[tuple[str, str, Any]] = []
        self.now = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
        self.base_url = ""

    # -- building the workspace ----------------------------------------------------------------------------

    def tick(self, minutes: int = 1) -> str:
        """Advance the simulated clock; edits are stamped with it (rounded to the minute, as Notion does)."""
        self.now += timedelta(minutes=minutes)
        return iso(self.now)

    def add_database(self, title: str, data_sources: tuple[str, ...] = ("",)) -> tuple[str, list[str]]:
        database = copy.deepcopy(load("retrieve_database_database.json"))
        database.pop("request_id", None)
        database_id = str(uuid.uuid4())
        ds_ids = [str(uuid.uuid4()) for _ in data_sources]
        database.update({"id": database_id, "title": [text_segment(title)],
                         "url": f"https://www.notion.so/{database_id.replace('-', '')}", "public_url": None,
                         "data_sources": [{"id": d, "name": n or title} for d, n in zip(ds_ids, data_sources,
                                                                                          strict=True)]})
        self.databases[database_id] = database
        for ds_id, name in zip(ds_ids, data_sources, strict=True):
            source = copy.deepcopy(load("retrieve_data_source_data_source.json"))
            source.pop("request_id", None)
            source.update({"id": ds_id, "title": [text_segment(name or title)],
                           "parent": {"type": "database_id", "database_id": database_id},
                           "database_parent": {"type": "page_id", "page_id": str(uuid.uuid4())}})
            self.data_sources[ds_id] = source
            self.rows[ds_id] = []
        return database_id, ds_ids

    def add_row(self, data_source_id: str, title: str, blocks: list[dict[str, Any]] | None = None, *,
                tags: tuple[str, ...] = (), relations: list[str] | None = None,
                edited: str | None = None) -> str:
        """A row with the real row's properties (select, multi-select, date, people, relation, ...)."""
        row = copy.deepcopy(load("query_data_source_limit_2.json")["results"][1])
        page_id = str(uuid.uuid4())
        stamp = edited or iso(self.now)
        database_id = self.data_sources[data_source_id]["parent"]["database_id"]
        row.update({"id": page_id, "created_time": stamp, "last_edited_time": stamp,
                    "parent": {"type": "data_source_id", "data_source_id": data_source_id,
                               "database_id": database_id},
                    "url": f"https://www.notion.so/{title.replace(' ', '-')}-{page_id.replace('-', '')}",
                    "public_url": None})
        properties = row["properties"]
        properties["Title"]["title"] = [text_segment(title)]
        properties["MultiSelectTitle"]["multi_select"] = [
            {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, t)), "name": t, "color": "default"} for t in tags]
        if relations is not None:
            shown = relations[:25]
            properties["RelationTitle"].update({"relation": [{"id": r} for r in shown],
                                                "has_more": len(relations) > 25})
            item = load("retrieve_property_relation_with_many_relations.json")["results"][0]
            self.property_items[(page_id, properties["RelationTitle"]["id"])] = [
                {**item, "id": properties["RelationTitle"]["id"], "relation": {"id": r}} for r in relations]
        self.pages[page_id] = row
        self.rows[data_source_id].append(page_id)
        self.set_blocks(page_id, blocks or [])
        return page_id

    def set_blocks(self, parent_id: str, blocks: list[dict[str, Any]]) -> None:
        """Children of a page or block; a block's own `children` key becomes its children."""
        flat = []
        for item in blocks:
            item = dict(item)
            nested = item.pop("children", None)
            if nested is not None:
                item["has_children"] = bool(nested)
                self.set_blocks(item["id"], nested)
            item["parent"] = ({"type": "page_id", "page_id": parent_id} if parent_id in self.pages
                              else {"type": "block_id", "block_id": parent_id})
            flat.append(item)
        self.children[parent_id] = flat

    def edit_row(self, page_id: str, text: str) -> str:
        """Append a paragraph to a row, as an edit in the app does: the row's last_edited_time moves."""
        self.children[page_id] = [*self.children.get(page_id, []), block("paragraph", text)]
        self.pages[page_id]["last_edited_time"] = self.tick()
        return self.pages[page_id]["last_edited_time"]

    def archive_row(self, page_id: str) -> None:
        page = self.pages[page_id]
        page.update({"archived": True, "in_trash": True, "last_edited_time": self.tick()})

    # -- the HTTP side -------------------------------------------------------------------------------------

    def _take_fault(self, route: str, object_id: str | None, transport: bool = False) -> Fault | None:
        for fault in self.faults:
            if (fault.times > 0 and (fault.route is None or fault.route == route)
                    and (fault.object_id is None or fault.object_id == object_id)
                    and (fault.action != "answer") == transport):
                if fault.skip:
                    fault.skip -= 1
                    return None
                fault.times -= 1
                self.calls["fault"] += 1
                return fault
        return None

    def take_transport_fault(self, method: str, target: str) -> Fault | None:
        """A reset, truncation or hang due for this request; answers with a status are `handle`'s."""
        route, object_id = self._route(method, [s for s in urlsplit(target).path.split("/") if s])
        with self.lock:
            return self._take_fault(route, object_id, transport=True)

    def handle(self, method: str, target: str, headers: dict[str, str], body: Any
               ) -> tuple[int, dict[str, Any], dict[str, str]]:
        parts = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        segments = [s for s in parts.path.split("/") if s]
        route, object_id = self._route(method, segments)
        with self.lock:
            self.calls[route] += 1
            if object_id:
                self.calls_by_id[(route, object_id)] += 1
            self.request_log.append((method, target, body))
            fault = self._take_fault(route, object_id)
        if fault:
            code, message = {
                429: ("rate_limited", "You have been rate limited. Please try again in a few minutes."),
                401: ("unauthorized", "API token is invalid."),
            }.get(fault.status, ("service_overload", "Notion is overloaded, please try again later."))
            extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            return fault.status, _error(fault.status, code, message), extra
        if headers.get("authorization") != f"Bearer {self.token}":
            return 401, _error(401, "unauthorized", "API token is invalid."), {}
        if headers.get("notion-version") != NOTION_VERSION:
            return 400, _error(400, "missing_version", "Notion-Version header failed validation."), {}
        page_size = int(query.get("page_size") or (body or {}).get("page_size") or 100)
        if page_size > 100 or page_size < 1:
            return 400, _error(400, "validation_error", "body failed validation: body.page_size should be "
                                                        f"less than or equal to `100`, instead was `{page_size}`."), {}
        with self.lock:
            status, payload = self._answer(route, segments, query, body or {}, page_size)
        return status, payload, {}

    @staticmethod
    def _route(method: str, segments: list[str]) -> tuple[str, str]:
        if len(segments) >= 3 and segments[0] == "v1":
            kind, object_id = segments[1], segments[2]
            rest = "/".join(segments[3:])
            template = f"{method} /v1/{kind}/{{id}}" + (f"/{rest}" if rest else "")
            if kind == "pages" and len(segments) == 5 and segments[3] == "properties":
                template = f"{method} /v1/pages/{{id}}/properties/{{property_id}}"
            return template, object_id
        return f"{method} /" + "/".join(segments), ""

    def _list(self, items: list[dict[str, Any]], start: str | None, page_size: int, kind: str
              ) -> tuple[int, dict[str, Any]]:
        """One page of a list. Cursors are the next item's id (rows, blocks), as in the real API, or an
        opaque token for property items, which all share their property's id."""
        if kind == "property_item":
            cursors = [f"PI{index:06d}" for index in range(len(items))]
        else:
            cursors = [i["id"] for i in items]
        if start and start not in cursors:
            return 400, _error(400, "validation_error", f"start_cursor provided is invalid: {start}")
        offset = cursors.index(start) if start else 0
        window = items[offset:offset + page_size]
        has_more = offset + page_size < len(items)
        return 200, {"object": "list", "results": window,
                     "next_cursor": cursors[offset + page_size] if has_more else None,
                     "has_more": has_more, "type": kind, kind: {}, "request_id": str(uuid.uuid4())}

    def _visible(self, object_id: str) -> bool:
        return object_id not in self.unshared

    def _answer(self, route: str, segments: list[str], query: dict[str, str], body: dict[str, Any],
                page_size: int) -> tuple[int, dict[str, Any]]:
        try:
            object_id = dashed(segments[2]) if len(segments) >= 3 else ""
        except ValueError:
            return 400, _error(400, "validation_error", f"path failed validation: path.id should be a valid "
                                                        f"uuid, instead was `\"{segments[2]}\"`.")
        if route == "GET /v1/databases/{id}":
            if object_id not in self.databases or not self._visible(object_id):
                return _not_found("database", object_id)
            return 200, {**self.databases[object_id], "request_id": str(uuid.uuid4())}
        if route == "GET /v1/data_sources/{id}":
            if object_id not in self.data_sources:
                return _not_found("data_source", object_id)
            return 200, self.data_sources[object_id]
        if route == "POST /v1/data_sources/{id}/query":
            if object_id not in self.data_sources or not self._visible(object_id):
                return _not_found("database", object_id)
            rows = [self.pages[p] for p in self.rows[object_id]]
            rows = [r for r in rows if not r["in_trash"] and not r["archived"]]
            rows = [r for r in rows if self._matches(r, body.get("filter"))]
            for sort in reversed(body.get("sorts") or []):
                key = sort.get("timestamp") or sort.get("property")
                rows.sort(key=lambda r, key=key: r.get(key) or "", reverse=sort.get("direction") == "descending")
            return self._list(rows, body.get("start_cursor"), page_size, "page_or_data_source")
        if route == "GET /v1/pages/{id}":
            if object_id not in self.pages or not self._visible(object_id):
                return _not_found("page", object_id)
            return 200, self.pages[object_id]
        if route == "GET /v1/pages/{id}/properties/{property_id}":
            if object_id not in self.pages or not self._visible(object_id):
                return _not_found("page", object_id)
            items = self.property_items.get((object_id, segments[4]), [])
            status, payload = self._list(items, query.get("start_cursor"), page_size, "property_item")
            payload["property_item"] = {"id": segments[4], "next_url": None, "type": "relation", "relation": {}}
            return status, payload
        if route == "GET /v1/blocks/{id}/children":
            if not self._visible(object_id) or (object_id not in self.children and object_id not in self.pages):
                return _not_found("block", object_id)
            items = self.children.get(object_id, [])
            return self._list(items, query.get("start_cursor"), page_size, "block")
        return 400, _error(400, "invalid_request_url", "Invalid request URL.")

    @staticmethod
    def _matches(row: dict[str, Any], condition: dict[str, Any] | None) -> bool:
        if not condition:
            return True
        if "and" in condition:
            return all(NotionSimulator._matches(row, c) for c in condition["and"])
        if "or" in condition:
            return any(NotionSimulator._matches(row, c) for c in condition["or"])
        field = condition.get("timestamp")
        if field not in {"last_edited_time", "created_time"}:
            raise ValueError(f"the simulator does not filter on {condition}")
        test = condition[field]
        value = parse_time(row[field])
        if "on_or_after" in test:
            return value >= parse_time(test["on_or_after"])
        if "after" in test:
            return value > parse_time(test["after"])
        if "before" in test:
            return value < parse_time(test["before"])
        raise ValueError(f"the simulator does not filter on {condition}")

    # -- counters ------------------------------------------------------------------------------------------

    def pages_with_blocks_fetched(self) -> set[str]:
        """Row ids whose own block children were requested."""
        return {i for (route, i), _ in self.calls_by_id.items()
                if route == "GET /v1/blocks/{id}/children" and i in self.pages}

    def reset_counters(self) -> None:
        with self.lock:
            self.calls.clear()
            self.calls_by_id.clear()
            self.request_log.clear()


@contextmanager
def notion_simulator(simulator: NotionSimulator | None = None) -> Iterator[NotionSimulator]:
    simulator = simulator or NotionSimulator()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in two writes; don't wait for delayed ACKs

        def log_message(self, *args) -> None:
            pass

        def setup(self) -> None:
            super().setup()
            # Headers and body go out in two writes: without TCP_NODELAY, Nagle's algorithm and the
            # client's delayed ACK would add 40 ms to every keep-alive request.
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            headers = {k.lower(): v for k, v in self.headers.items()}
            fault = simulator.take_transport_fault(self.command, self.path)
            if fault is not None and fault.action == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()
                return
            if fault is not None and fault.action == "hang":
                time.sleep(fault.seconds)
            status, payload, extra = simulator.handle(self.command, self.path, headers, body)
            data = json.dumps(payload).encode()
            if fault is not None and fault.action == "truncate":
                data = data[:len(data) // 2]
            self.send_response(status)
            self.send_header("content-type", "application/json; charset=utf-8")
            self.send_header("content-length", str(len(data)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (an injected "hang")

        do_GET = do_POST = do_PATCH = do_DELETE = _serve

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    simulator.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield simulator
    finally:
        server.shutdown()
        server.server_close()

