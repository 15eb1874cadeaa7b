"""A real S3 endpoint on loopback for the S3 tests: moto's server in its own process, behind a counting proxy.

boto3 talks HTTP to these exactly as it talks to AWS; nothing in-process is patched. moto's server cannot say
how many requests of each kind it served, so the source's client goes through `CountingProxy`, a small HTTP
proxy that forwards every request to moto unchanged and counts them by S3 operation and key. The tests' own
set-up client talks to moto directly, so only the sync's requests are counted.
"""

from __future__ import annotations

import http.client
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
from botocore.config import Config

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}
TEST_CREDENTIALS = {"aws_access_key_id": "AKIATESTKEY", "aws_secret_access_key": "test-secret-do-not-leak"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MotoServer:
    """moto's S3 server on a free loopback port, in its own process; stopped by `close()`.

    `atomic` (the default) serves one request at a time (`moto_atomic`), so conditional PUTs are atomic as on
    S3; `atomic=False` is plain `python -m moto.server`, threaded.
    """

    def __init__(self, extra_env: dict[str, str] | None = None, atomic: bool = True) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, **(extra_env or {})}
        module = "rag_sync_pipeline_tests.moto_atomic" if atomic else "moto.server"
        self.process = subprocess.Popen([sys.executable, "-m", module, "-H", "127.0.0.1", "-p", str(self.port)],
                                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self._wait_until_serving()
        except BaseException:
            self.close()
            raise

    def _wait_until_serving(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.process.returncode}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                connection.request("GET", "/moto-api/reset-auth")  # any path: we only need an HTTP answer
                connection.getresponse().read()
                connection.close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"moto server did not answer on port {self.port} within {timeout}s")

    def client(self, **credentials: str):
        """A boto3 client straight to moto, for the tests' own set-up (not counted)."""
        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            config=Config(max_pool_connections=16), **(credentials or TEST_CREDENTIALS))

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def s3_operation(method: str, target: str) -> tuple[str, str]:
    """(S3 operation, object key or '') of a path-style request, as S3 itself would name it."""
    url = urlsplit(target)
    query = parse_qs(url.query, keep_blank_values=True)
    bucket, _, key = url.path.lstrip("/").partition("/")
    key = unquote(key)
    if method == "GET" and not key and query.get("list-type") == ["2"]:
        return "ListObjectsV2", ""
    if method == "GET" and key and not set(query) & {"uploadId", "tagging", "acl", "attributes"}:
        return "GetObject", key
    if method == "HEAD" and key:
        return "HeadObject", key
    return f"{method} {'object' if key else 'bucket'}", key


@dataclass
class ProxyFault:
    """One injected failure for the next request of `operation` (ListObjectsV2, GetObject, ...).

    `action`: "status" answers `status` with S3's XML error shape (`code`) and `headers` (Retry-After, ...);
    "reset" drops the connection unanswered (a TCP reset); "hang" waits `seconds` before forwarding (a client
    timeout); "truncate" forwards, then sends the headers and only half the body and closes (a body cut off).
    `skip`: that many matching requests pass first. `key`: only requests for this object key, or any."""

    operation: str
    action: str = "status"
    status: int = 503
    code: str = "SlowDown"
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    skip: int = 0
    key: str | None = None


class CountingProxy:
    """Forwards HTTP requests to `upstream_port` on loopback and counts them per S3 operation and key.

    S3 itself does not misbehave on request, so faults are injected here: append `ProxyFault`s to `faults`."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.faults: list[ProxyFault] = []
        self.faults_met = 0
        self.operations: Counter[str] = Counter()
        self.keys: Counter[tuple[str, str]] = Counter()
        # (operation, precondition header or '', HTTP status): shows conditional writes and their answers.
        self.answers: Counter[tuple[str, str, int]] = Counter()
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="s3-counting-proxy", daemon=True)
        self._thread.start()

    def record(self, method: str, target: str, precondition: str = "", status: int = 0) -> None:
        operation, key = s3_operation(method, target)
        with self._lock:
            self.operations[operation] += 1
            self.answers[(operation, precondition, status)] += 1
            if key:
                self.keys[(operation, key)] += 1

    def count(self, operation: str) -> int:
        with self._lock:
            return self.operations[operation]

    def answered(self, operation: str, precondition: str, status: int) -> int:
        """How many `operation` requests carrying the `precondition` header got `status`."""
        with self._lock:
            return self.answers[(operation, precondition, status)]

    def keys_of(self, operation: str) -> Counter[str]:
        with self._lock:
            return Counter({key: n for (op, key), n in self.keys.items() if op == operation})

    def take_fault(self, method: str, target: str) -> ProxyFault | None:
        operation, key = s3_operation(method, target)
        with self._lock:
            fault = next((f for f in self.faults if f.operation == operation and f.key in (None, key)), None)
            if fault is not None and fault.skip:
                fault.skip -= 1
                return None
            if fault is not None:
                self.faults.remove(fault)
                self.faults_met += 1
            return fault

    def reset(self) -> None:
        with self._lock:
            self.operations.clear()
            self.keys.clear()
            self.answers.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes; don't wait for delayed ACKs

            def fail(self, fault: ProxyFault) -> bool:
                """Act out `fault`; True when nothing more is to be sent."""
                if fault.action == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                    return True
                if fault.action == "status":
                    error = (f"<?xml version='1.0' encoding='UTF-8'?>\n<Error><Code>{fault.code}</Code><Message>"
                             f"injected {fault.status}</Message><RequestId>fault</RequestId></Error>").encode()
                    self.send_response_only(fault.status)
                    for name, value in {"Content-Type": "application/xml", **fault.headers}.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(error)))
                    self.end_headers()
                    self.wfile.write(error)
                    return True
                if fault.action == "hang":
                    time.sleep(fault.seconds)
                return False

            def forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                fault = proxy.take_fault(self.command, self.path)
                if fault is not None and self.fail(fault):
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=120)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                finally:
                    upstream.close()
                precondition = next((h for h in ("If-None-Match", "If-Match") if h in self.headers), "")
                proxy.record(self.command, self.path, precondition, response.status)
                self.send_response_only(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in HOP_BY_HOP and (name.lower() != "content-length" or self.command == "HEAD"):
                        self.send_header(name, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    if fault is not None and fault.action == "truncate":
                        self.wfile.write(data[:len(data) // 2])
                        self.close_connection = True
                    elif self.command != "HEAD":
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (an injected "hang")

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = forward

            def log_message(self, *args) -> None:
                pass  # quiet: the counts are the record

        return Handler


def upload_many(client, bucket: str, objects: Iterable[tuple[str, bytes]], threads: int = 8) -> None:
    """PUT many small objects concurrently (boto3 clients are thread-safe)."""
    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(client.put_object, Bucket=bucket, Key=k, Body=b) for k, b in objects]:
            future.result()


def multipart_upload(client, bucket: str, key: str, content: bytes, part_size: int) -> str:
    """Upload `content` in parts of `part_size` bytes (S3 and moto want at least 5 MiB but for the last);
    returns the object's ETag, which ends in `-<number of parts>`."""
    upload = client.create_multipart_upload(Bucket=bucket, Key=key, ContentType="text/markdown")
    parts = []
    for number, start in enumerate(range(0, len(content), part_size), start=1):
        part = client.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=number,
                                  Body=content[start:start + part_size])
        parts.append({"PartNumber": number, "ETag": part["ETag"]})
    done = client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"],
                                            MultipartUpload={"Parts": parts})
    return done["ETag"]
