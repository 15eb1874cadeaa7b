"""A Confluence simulator: a loopback HTTP server speaking the real wire format, for Cloud or Server/DC.

Cloud mode (`cloud=True`) serves under /wiki: REST v2 (`/api/v2/spaces`, `/spaces/{id}/pages`, `/pages/{id}`,
`/pages/{id}/ancestors`, `/pages?id=`, `/spaces/{id}/content/labels`, `/labels/{id}/pages`,
`/attachments/{id}`), v1 `/rest/api/search` (CQL) and `/rest/api/user/current`, and downloads, with basic auth.
Server mode serves v1 only at the root (`/rest/api/space`, `/rest/api/content`, `/rest/api/content/{id}`,
search, user) with a bearer token, and answers 404 to anything under v2.

What the real service does and naive clients get wrong, reproduced: ids are strings; `_links.next` starts with
/wiki in v2 (while `_links.base` also ends in /wiki) and is mirrored in the `Link` header; `body: {}` unless
`body-format=storage`; v1 search pages are capped (50 with a body expand) whatever the limit; CQL dates are
minute precision in the searching user's time zone; the three error shapes (v2 `errors`, v1
`statusCode/message`, the gateway's `code/message`); 429 with or without `Retry-After`.

Counters (`calls[endpoint]`) tell tests how many calls a sync made; `faults` injects answers.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlencode, urlsplit
from zoneinfo import ZoneInfo

START = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)


@dataclass
class FakePage:
    id: str
    space_key: str
    title: str
    body: str
    parent_id: str | None = None
    version: int = 1
    status: str = "current"
    labels: list[str] = field(default_factory=list)
    created: datetime = START
    modified: datetime = START
    author: str = "557058:author-1"


@dataclass
class FakeAttachment:
    id: str
    page_id: str
    title: str
    media_type: str
    data: bytes
    version: int = 1
    modified: datetime = START


@dataclass
class Fault:
    """One injected answer for the next request whose path (with its query) contains `path_contains`.

    `action`: "answer" sends `status`, `body` and `headers`; "reset" drops the connection without an answer
    (a TCP reset); "truncate" sends the real answer cut in half, with a Content-Length that matches the cut
    (so only the JSON is broken); "hang" waits `seconds` before the real answer (a client timeout).
    `skip`: that many matching requests are served normally first (a failure on page 7 of a listing)."""

    status: int = 200
    body: dict = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    path_contains: str = ""
    action: str = "answer"
    skip: int = 0
    seconds: float = 0.0


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class ConfluenceSimulator:
    def __init__(self, *, cloud: bool = True, username: str = "bot@example.com", token: str = "tok-secret-123",
                 time_zone: str = "Australia/Sydney", next_link_style: str = "both", latency: float = 0.0) -> None:
        self.cloud = cloud
        self.username, self.token = username, token
        self.time_zone = time_zone
        self.next_link_style = next_link_style
        self.spaces: dict[str, str] = {}  # key -> id
        self.pages: dict[str, FakePage] = {}
        self.attachments: dict[str, FakeAttachment] = {}
        self.now = START
        self.calls: Counter[str] = Counter()
        self.requests: list[str] = []
        self.faults: list[Fault] = []
        self.missing_pages: set[str] = set()
        """Pages that still list but answer 404 when fetched."""
        self.url = ""
        self.latency = latency
        """Seconds each request takes before it is answered (requests overlap while they wait)."""
        self._lock = threading.Lock()
        self._next_id = 100000

    # -- content -----------------------------------------------------------------------------------------

    def _id(self) -> str:
        self._next_id += 1
        return str(self._next_id)

    def add_space(self, key: str) -> str:
        self.spaces[key] = str(len(self.spaces) * 1000 + 98304)
        return self.spaces[key]

    def add_page(self, space: str, title: str, body: str, parent_id: str | None = None,
                 labels: list[str] | None = None) -> FakePage:
        page = FakePage(self._id(), space, title, body, parent_id, labels=list(labels or []), created=self.now,
                        modified=self.now)
        self.pages[page.id] = page
        return page

    def edit_page(self, page_id: str, body: str | None = None, title: str | None = None) -> None:
        page = self.pages[page_id]
        page.version += 1
        page.modified = self.now
        if body is not None:
            page.body = body
        if title is not None:
            page.title = title

    def add_attachment(self, page_id: str, title: str, media_type: str, data: bytes) -> FakeAttachment:
        attachment = FakeAttachment(f"att{self._id()}", page_id, title, media_type, data, modified=self.now)
        self.attachments[attachment.id] = attachment
        return attachment

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)

    def reset_counts(self) -> None:
        self.calls.clear()
        self.requests.clear()

    # -- helpers -----------------------------------------------------------------------------------------

    @property
    def context(self) -> str:
        return "/wiki" if self.cloud else ""

    def ancestors(self, page: FakePage) -> list[FakePage]:
        chain, parent = [], page.parent_id
        while parent and parent in self.pages:
            chain.append(self.pages[parent])
            parent = self.pages[parent].parent_id
        return chain[::-1]

    def v2_page(self, page: FakePage, body_format: str | None, include_labels: bool) -> dict:
        answer = {
            "id": page.id, "status": page.status, "title": page.title, "spaceId": self.spaces[page.space_key],
            "parentId": page.parent_id, "parentType": "page" if page.parent_id else None, "position": 0,
            "authorId": page.author, "ownerId": page.author, "createdAt": _iso(page.created),
            "version": {"createdAt": _iso(page.modified), "message": "", "number": page.version, "minorEdit": False,
                        "authorId": page.author},
            "body": {"storage": {"representation": "storage", "value": page.body}} if body_format == "storage" else {},
            "_links": {"webui": f"/spaces/{page.space_key}/pages/{page.id}/{quote(page.title).replace('%20', '+')}",
                       "editui": f"/pages/resumedraft.action?draftId={page.id}", "tinyui": f"/x/{page.id}"},
        }
        if include_labels:
            answer["labels"] = {"results": [{"id": str(abs(hash(n)) % 10**8), "name": n, "prefix": "global"}
                                            for n in page.labels], "meta": {"hasMore": False}, "_links": {}}
        return answer

    def v1_content(self, page: FakePage, expand: set[str]) -> dict:
        answer: dict = {"id": page.id, "type": "page", "status": page.status, "title": page.title,
                        "_links": {"webui": f"/display/{page.space_key}/{quote(page.title).replace('%20', '+')}",
                                   "self": f"{self.url}{self.context}/rest/api/content/{page.id}"},
                        "_expandable": {"children": "", "history": ""}}
        if "version" in expand:
            answer["version"] = {"number": page.version, "when": _iso(page.modified),
                                 "by": {"type": "known", "accountId": page.author}}
        if "ancestors" in expand:
            answer["ancestors"] = [{"id": a.id, "type": "page", "status": a.status, "title": a.title}
                                   for a in self.ancestors(page)]
        if "metadata.labels" in expand:
            answer["metadata"] = {"labels": {"results": [{"prefix": "global", "name": n, "id": str(i), "label": n}
                                                         for i, n in enumerate(page.labels)],
                                             "start": 0, "limit": 200, "size": len(page.labels)}}
        if "body.storage" in expand:
            answer["body"] = {"storage": {"value": page.body, "representation": "storage"}}
        if "space" in expand:
            answer["space"] = {"id": int(self.spaces[page.space_key]), "key": page.space_key}
        if "history" in expand:
            answer["history"] = {"createdDate": _iso(page.created), "createdBy": {"username": "author1",
                                                                                  "userKey": "ff80"}}
        return answer

    def v1_attachment(self, attachment: FakeAttachment, expand: set[str]) -> dict:
        return {"id": attachment.id, "type": "attachment", "status": "current", "title": attachment.title,
                "version": {"number": attachment.version, "when": _iso(attachment.modified)},
                "container": {"id": attachment.page_id, "type": "page"},
                "extensions": {"mediaType": attachment.media_type, "fileSize": len(attachment.data)},
                "_links": {"download": self.download_path(attachment)}}

    def download_path(self, attachment: FakeAttachment) -> str:
        return (f"/download/attachments/{attachment.page_id}/{quote(attachment.title)}"
                f"?version={attachment.version}&modificationDate=1&api=v2")

    # -- CQL subset --------------------------------------------------------------------------------------

    def cql(self, query: str) -> list[FakePage | FakeAttachment]:
        order = None
        match = re.search(r"\s+order\s+by\s+lastmodified\s+(asc|desc)\s*$", query, re.I)
        if match:
            order = match.group(1).lower()
            query = query[:match.start()]
        predicates = []
        for clause in _split_and(query):
            predicates.append(self._clause(clause))
        found: list[FakePage | FakeAttachment] = []
        for item in [*self.pages.values(), *self.attachments.values()]:
            if isinstance(item, FakePage) and item.status != "current":
                continue
            if all(p(item) for p in predicates):
                found.append(item)
        found.sort(key=lambda i: (i.modified, i.id), reverse=order != "asc")
        return found

    def _clause(self, clause: str):
        clause = clause.strip()
        while clause.startswith("(") and clause.endswith(")"):
            clause = clause[1:-1].strip()
        if m := re.fullmatch(r'space\s*=\s*"?([^"\s]+)"?', clause):
            key = m.group(1)
            return lambda i: self._space_of(i) == key
        if m := re.fullmatch(r"type\s*=\s*(\w+)", clause):
            kind = m.group(1)
            return lambda i: self._type_of(i) == kind
        if m := re.fullmatch(r"type\s+in\s*\(([^)]*)\)", clause):
            kinds = {k.strip() for k in m.group(1).split(",")}
            return lambda i: self._type_of(i) in kinds
        if m := re.fullmatch(r'label\s*=\s*"?([^"\s]+)"?', clause):
            label = m.group(1)
            return lambda i: isinstance(i, FakePage) and label in i.labels
        if m := re.fullmatch(r'lastmodified\s*>=\s*"(\d{4}-\d{2}-\d{2} \d{2}:\d{2})"', clause):
            local = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M").replace(tzinfo=ZoneInfo(self.time_zone))
            return lambda i: i.modified.replace(second=0, microsecond=0) >= local
        raise ValueError(f"Could not parse cql : {clause}")

    def _space_of(self, item) -> str:
        return item.space_key if isinstance(item, FakePage) else self.pages[item.page_id].space_key

    @staticmethod
    def _type_of(item) -> str:
        return "page" if isinstance(item, FakePage) else "attachment"


def _split_and(query: str) -> list[str]:
    parts, depth, quoted, current = [], 0, False, ""
    tokens = re.split(r"(\s+AND\s+)", query, flags=re.I)
    for token in tokens:
        if re.fullmatch(r"\s+AND\s+", token, re.I) and depth == 0 and not quoted:
            parts.append(current)
            current = ""
            continue
        current += token
        depth += token.count("(") - token.count(")")
        quoted = (current.count('"') % 2) == 1
    if current.strip():
        parts.append(current)
    return parts


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")


def _offset(cursor: str | None) -> int:
    if not cursor:
        return 0
    padded = cursor + "=" * (-len(cursor) % 4)
    return int(base64.urlsafe_b64decode(padded).decode().split(":")[1])


class _Handler(BaseHTTPRequestHandler):
    sim: ConfluenceSimulator
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle's algorithm the body waited for the client's delayed
    # ACK, 40 ms of stall per response that no Confluence server adds (a page took 11 ms at 4 requests at once).
    disable_nagle_algorithm = True

    def log_message(self, *args) -> None:
        pass

    truncate = False

    def _send(self, status: int, body: object, headers: dict[str, str] | None = None, raw: bytes | None = None,
              content_type: str = "application/json") -> None:
        data = raw if raw is not None else json.dumps(body).encode()
        if self.truncate:
            data = data[:len(data) // 2]
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (an injected "hang")

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        sim = self.sim
        if sim.cloud:
            expected = "Basic " + base64.b64encode(f"{sim.username}:{sim.token}".encode()).decode()
        else:
            expected = f"Bearer {sim.token}"
        return header == expected

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.sim.latency:
            time.sleep(self.sim.latency)  # outside the lock: a slow site still serves requests side by side
        self._answer_get()

    def _answer_get(self) -> None:
        sim = self.sim
        parts = urlsplit(self.path)
        query = {k: v for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        one = {k: v[-1] for k, v in query.items()}
        path = parts.path
        with sim._lock:
            sim.requests.append(self.path)
            fault = next((f for f in sim.faults if f.path_contains in self.path), None)  # query included
            if fault is not None and fault.skip:
                fault.skip -= 1
                fault = None
            if fault is not None:
                sim.faults.remove(fault)
                sim.calls["fault"] += 1
        if fault is not None and fault.action == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return None
        if fault is not None and fault.action == "hang":
            time.sleep(fault.seconds)
        self.truncate = fault is not None and fault.action == "truncate"
        with sim._lock:
            if fault is not None and fault.action == "answer":
                return self._send(fault.status, fault.body, fault.headers)
            if not self._authorized():
                sim.calls["unauthorized"] += 1
                if sim.cloud:  # the API gateway's shape
                    return self._send(401, {"code": 401, "message": "Unauthorized; scope does not match"})
                return self._send(401, {"statusCode": 401, "message": "This request requires authentication",
                                        "data": {"authorized": False, "valid": True}})
            if not path.startswith(sim.context + "/"):
                return self._send(404, {"statusCode": 404, "message": "No such path"})
            route = path[len(sim.context):]
            try:
                return self._route(route, query, one)
            except KeyError as error:
                return self._not_found(route, f"No content found with id: {error.args[0]}")
            except ValueError as error:
                sim.calls["bad_request"] += 1
                return self._send(400, {"statusCode": 400, "message": str(error),
                                        "data": {"authorized": True, "valid": False}})

    def _not_found(self, route: str, message: str) -> None:
        self.sim.calls["not_found"] += 1
        if route.startswith("/api/v2/"):
            return self._send(404, {"errors": [{"status": 404, "code": "NOT_FOUND", "title": "Not Found",
                                                "detail": message}]})
        return self._send(404, {"statusCode": 404, "message": message})

    def _v2_list(self, route: str, items: list[dict], one: dict[str, str], extra: dict[str, str] | None = None) -> None:
        limit = min(int(one.get("limit", 25)), 250)
        offset = _offset(one.get("cursor"))
        chunk = items[offset:offset + limit]
        links: dict[str, str] = {"base": f"{self.sim.url}/wiki"}
        headers = {}
        if offset + limit < len(items):
            params = {**(extra or {}), "limit": str(limit), "cursor": _cursor(offset + limit)}
            next_link = f"/wiki{route}?{urlencode(params, doseq=True)}"
            if self.sim.next_link_style in ("both", "body"):
                links["next"] = next_link
            if self.sim.next_link_style in ("both", "header"):
                headers["Link"] = f'<{next_link}>; rel="next", <{self.sim.url}/wiki>; rel="base"'
        return self._send(200, {"results": chunk, "_links": links}, headers)

    def _v1_list(self, route: str, items: list, query: dict[str, list[str]], one: dict[str, str],
                 cap: int = 100, extra: dict | None = None, render=None) -> None:
        limit = min(int(one.get("limit", 25)), cap)
        start = int(one.get("start", 0))
        chunk = items[start:start + limit]
        chunk = [render(item) for item in chunk] if render else chunk
        body: dict = {"results": chunk, "start": start, "limit": limit, "size": len(chunk),
                      "_links": {"base": f"{self.sim.url}{self.sim.context}", "context": self.sim.context}}
        body.update(extra or {})
        if start + len(chunk) < len(items):
            params = {k: v for k, v in query.items() if k not in ("start", "cursor")}
            params.update(start=[str(start + len(chunk))], limit=[str(limit)])
            body["_links"]["next"] = f"{route}?{urlencode(params, doseq=True)}"
        return self._send(200, body)

    def _route(self, route: str, query: dict[str, list[str]], one: dict[str, str]) -> None:
        sim = self.sim
        if route.startswith("/api/v2/") and not sim.cloud:
            raise KeyError(route)
        if route == "/rest/api/user/current":
            sim.calls["user"] += 1
            user = {"type": "known", "accountId": "557058:bot", "displayName": "Sync bot"}
            if sim.cloud:
                user["timeZone"] = sim.time_zone
            return self._send(200, user)
        if route == "/api/v2/spaces":
            sim.calls["spaces"] += 1
            keys = set(one.get("keys", "").split(",")) - {""}
            items = [{"id": sid, "key": key, "name": f"{key} space", "type": "global", "status": "current",
                      "homepageId": None, "_links": {"webui": f"/spaces/{key}"}}
                     for key, sid in sim.spaces.items() if not keys or key in keys]
            return self._v2_list(route, items, one, {"keys": one["keys"]} if keys else None)
        if m := re.fullmatch(r"/api/v2/spaces/(\d+)/pages", route):
            sim.calls["space_pages"] += 1
            key = next(k for k, sid in sim.spaces.items() if sid == m.group(1))
            statuses = set(query.get("status") or ["current"])
            pages = [sim.v2_page(p, one.get("body-format"), False) for p in sim.pages.values()
                     if p.space_key == key and p.status in statuses]
            return self._v2_list(route, pages, one, {"status": sorted(statuses)})
        if m := re.fullmatch(r"/api/v2/spaces/(\d+)/content/labels", route):
            sim.calls["space_labels"] += 1
            key = next(k for k, sid in sim.spaces.items() if sid == m.group(1))
            names = sorted({n for p in sim.pages.values() if p.space_key == key for n in p.labels})
            return self._v2_list(route, [{"id": f"77{i}", "name": n, "prefix": "global"}
                                         for i, n in enumerate(names)], one)
        if m := re.fullmatch(r"/api/v2/labels/(\d+)/pages", route):
            sim.calls["label_pages"] += 1
            names = sorted({n for p in sim.pages.values() for n in p.labels})
            name = names[int(m.group(1)[2:])] if int(m.group(1)[2:]) < len(names) else ""
            space_id = one.get("space-id")
            pages = [sim.v2_page(p, None, False) for p in sim.pages.values() if name in p.labels
                     and (not space_id or sim.spaces[p.space_key] == space_id) and p.status == "current"]
            return self._v2_list(route, pages, one, {"space-id": space_id} if space_id else None)
        if m := re.fullmatch(r"/api/v2/pages/(\d+)/ancestors", route):
            sim.calls["ancestors"] += 1
            page = sim.pages[m.group(1)]
            return self._send(200, {"results": [{"id": a.id, "type": "page"} for a in sim.ancestors(page)],
                                    "_links": {"base": f"{sim.url}/wiki"}})
        if route == "/api/v2/pages":
            sim.calls["pages_bulk"] += 1
            ids = set(one.get("id", "").split(","))
            return self._v2_list(route, [sim.v2_page(sim.pages[i], None, False) for i in ids if i in sim.pages], one)
        if m := re.fullmatch(r"/api/v2/pages/(\d+)", route):
            sim.calls["page"] += 1
            page_id = m.group(1)
            if page_id in sim.missing_pages or page_id not in sim.pages:
                return self._not_found(route, f"Page {page_id} not found")
            return self._send(200, sim.v2_page(sim.pages[page_id], one.get("body-format"),
                                               one.get("include-labels") == "true"))
        if m := re.fullmatch(r"/api/v2/attachments/(att\d+)", route):
            sim.calls["attachment"] += 1
            attachment = sim.attachments[m.group(1)]
            version = {"number": attachment.version, "createdAt": _iso(attachment.modified)}
            return self._send(200, {"id": attachment.id, "status": "current", "title": attachment.title,
                                    "pageId": attachment.page_id, "mediaType": attachment.media_type,
                                    "fileSize": len(attachment.data), "version": version,
                                    "downloadLink": sim.download_path(attachment)})
        if m := re.fullmatch(r"/download/attachments/(\d+)/(.+)", route):
            sim.calls["download"] += 1
            attachment = next(a for a in sim.attachments.values() if a.page_id == m.group(1)
                              and quote(a.title) == m.group(2))
            return self._send(200, None, raw=attachment.data, content_type=attachment.media_type)
        if route == "/rest/api/search":
            sim.calls["search"] += 1
            expand = set(one.get("expand", "").split(","))
            content_expand = {e[len("content."):] for e in expand if e.startswith("content.")}
            found = sim.cql(one.get("cql", ""))

            def result(item: FakePage | FakeAttachment) -> dict:
                if isinstance(item, FakePage):
                    content = sim.v1_content(item, content_expand)
                else:
                    content = sim.v1_attachment(item, content_expand)
                return {"content": content, "title": item.title, "excerpt": "", "url": content["_links"].get(
                    "webui", ""), "entityType": "content", "lastModified": _iso(item.modified),
                    "friendlyLastModified": "moments ago"}

            cap = 50 if any("body" in e for e in expand) else 100
            # Only the page of results asked for is rendered, as an indexed search would: a limit=1 probe of
            # a 4,000-page space must not cost the simulator 4,000 renderings.
            return self._v1_list(route, found, query, one, cap=cap, render=result,
                                 extra={"totalSize": len(found), "cqlQuery": one.get("cql", "")})
        if route == "/rest/api/space":
            sim.calls["spaces"] += 1
            keys = set(query.get("spaceKey") or [])
            items = [{"id": int(sid), "key": key, "name": f"{key} space", "type": "global"}
                     for key, sid in sim.spaces.items() if not keys or key in keys]
            return self._v1_list(route, items, query, one)
        if route == "/rest/api/content":
            sim.calls["content_list"] += 1
            expand = set(one.get("expand", "").split(","))
            status = one.get("status", "current")
            pages = [sim.v1_content(p, expand) for p in sim.pages.values()
                     if p.space_key == one.get("spaceKey") and p.status == status]
            return self._v1_list(route, pages, query, one, cap=25 if "body.storage" in expand else 100)
        if m := re.fullmatch(r"/rest/api/content/(att\d+)", route):
            sim.calls["attachment"] += 1
            return self._send(200, sim.v1_attachment(sim.attachments[m.group(1)], set()))
        if m := re.fullmatch(r"/rest/api/content/(\d+)", route):
            sim.calls["page"] += 1
            page_id = m.group(1)
            if page_id in sim.missing_pages or page_id not in sim.pages:
                return self._not_found(route, f"No content found with id: ContentId{{id={page_id}}}")
            return self._send(200, sim.v1_content(sim.pages[page_id], set(one.get("expand", "").split(","))))
        raise KeyError(route)


@contextmanager
def confluence_simulator(**kwargs) -> Iterator[ConfluenceSimulator]:
    sim = ConfluenceSimulator(**kwargs)
    handler = type("Handler", (_Handler,), {"sim": sim})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    sim.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sim
    finally:
        server.shutdown()
        server.server_close()
