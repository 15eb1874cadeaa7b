"""A loopback HTTP server that answers from a script, for testing clients against real sockets."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Answer:
    status: int = 200
    body: object = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # sent as is, e.g. truncated JSON
    reset: bool = False  # drop the connection without answering


class ScriptedServer:
    def __init__(self) -> None:
        self.script: list[Answer] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []

    def next_answer(self) -> Answer:
        return self.script.pop(0) if self.script else Answer(200, {"ok": True})


@contextmanager
def scripted_server() -> Iterator[tuple[ScriptedServer, str]]:
    state = ScriptedServer()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            state.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
            answer = state.next_answer()
            if answer.reset:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                self.connection.close()
                return
            payload = answer.raw if answer.raw is not None else json.dumps(answer.body).encode()
            self.send_response(answer.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload) + (20 if answer.raw is not None else 0)))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
            if answer.raw is not None:
                self.close_connection = True

        do_GET = do_POST = _answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
