"""One HTTP helper for every SaaS client: retries, rate limits, pacing, error mapping, call counting.

Clients of Confluence, Notion and the sources after them send every request through `ApiClient.request`, so
the rules live in one place:
- 429, 529 and 5xx answers are retried; `Retry-After` (seconds or an HTTP date) and `X-RateLimit-Reset` (an ISO
  timestamp) are honoured, otherwise exponential backoff with full jitter. A wait the service asked for
  pauses the whole client (fetches run on several threads), so the others do not keep hitting the limit.
  A 403 that carries rate-limit headers (Server/Data Center does this) is a rate limit, not a refusal.
- Timeouts, connection resets and bodies that are not the JSON they claim to be are retried the same way.
- 401 and other 403s raise `AuthError` at once, 404 raises `NotFoundError`; other 4xx raise `ApiError`. The
  message carries the service's own explanation (any of the common error shapes) and the URL without its
  query string, never a credential.
- An optional pace (requests per second) keeps a sync under a service's budget instead of bouncing off it.
- Redirects are followed only to the configured scheme, host and port; a `Location` anywhere else is refused,
  so a credential never travels to another host. `check_url_security` refuses plain http to any host but
  loopback unless the source's `allow_insecure_http` option (or RAG_ALLOW_INSECURE_HTTP) says otherwise.
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from rag_sync_pipeline.settings import TRUE_VALUES
from rag_sync_pipeline.sources.base import SourceError

RETRY_STATUSES = {429, 500, 502, 503, 504, 529}
RATE_LIMIT_HEADERS = ("retry-after", "x-ratelimit-reset", "x-ratelimit-remaining")
MAX_REDIRECTS = 5
DEFAULT_PORTS = {"http": 80, "https": 443}


class ApiError(SourceError):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AuthError(ApiError):
    """The credentials were refused (401) or lack permission (403)."""


class NotFoundError(ApiError):
    """404: missing, or (for several services) not shared with these credentials."""


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 6
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    max_wait_seconds: float = 300.0
    """A Retry-After longer than this is waited only this long: a sync should slow down, not hang."""


class InsecureURLError(SourceError, ValueError):
    """A URL the configuration must not use: plain http to a remote host, or not http at all."""


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def insecure_http_allowed(options: Mapping[str, Any], environ: Mapping[str, str]) -> bool:
    """The source's `allow_insecure_http` option, else RAG_ALLOW_INSECURE_HTTP."""
    value = options.get("allow_insecure_http")
    if value is None or str(value).strip() == "":
        value = environ.get("RAG_ALLOW_INSECURE_HTTP", "")
    return str(value).strip().lower() in TRUE_VALUES


def check_url_security(url: str, *, allow_insecure_http: bool, setting: str) -> None:
    """https anywhere; plain http only to loopback (local simulators, sidecars) or when explicitly allowed."""
    parsed = httpx.URL(url)
    if parsed.scheme == "https":
        return
    if parsed.scheme != "http" or not parsed.host:
        raise InsecureURLError(f"{setting}: {url!r} is not an http(s) URL")
    if not (is_loopback(parsed.host) or allow_insecure_http):
        raise InsecureURLError(f"{setting}: refusing plain http to {parsed.host}: credentials and documents would "
                               "travel unencrypted; use https, or set allow_insecure_http: true on the source "
                               "(RAG_ALLOW_INSECURE_HTTP=true) if the network is trusted")


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port or DEFAULT_PORTS.get(url.scheme)


def build_http_client(base_url: str, *, auth: httpx.Auth | tuple[str, str] | None = None,
                      headers: Mapping[str, str] | None = None, timeout_seconds: float = 30.0,
                      transport: httpx.BaseTransport | None = None) -> httpx.Client:
    """An httpx client with explicit timeouts; tests pass a base URL on loopback, never a patch."""
    return httpx.Client(base_url=base_url, auth=auth, headers=dict(headers or {}), transport=transport,
                        timeout=httpx.Timeout(timeout_seconds, connect=min(10.0, timeout_seconds)),
                        follow_redirects=False)


def error_detail(response: httpx.Response) -> str:
    """The service's own explanation, from whichever of the common error shapes it used."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip() or response.reason_phrase
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):  # Confluence v2
            first = errors[0]
            return str(first.get("detail") or first.get("title") or first.get("code") or first)
        for key in ("message", "detail", "error_description", "error", "title"):  # v1, gateway, Notion, ...
            if body.get(key):
                return str(body[key])
    return json.dumps(body)[:200]


def _seconds_until(value: str) -> float | None:
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def retry_delay(response: httpx.Response) -> float | None:
    """What the service asked us to wait, if it said."""
    for header in ("retry-after", "x-ratelimit-reset"):
        if header in response.headers:
            delay = _seconds_until(response.headers[header])
            if delay is not None:
                return delay
    return None


class ApiClient:
    """Sends requests for one source through the shared rules; counts the calls it made."""

    def __init__(self, client: httpx.Client, *, service: str, retry: RetryPolicy | None = None,
                 requests_per_second: float | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.service = service
        self.retry = retry or RetryPolicy()
        self.min_interval = 1.0 / requests_per_second if requests_per_second else 0.0
        self.calls = 0
        self.retries = 0
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_slot = 0.0
        self._paused_until = 0.0

    def close(self) -> None:
        self.client.close()

    def _pace(self) -> None:
        """Wait for this request's slot: the configured rate, and any pause the service asked for."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_slot, self._paused_until)
            if self.min_interval:
                self._next_slot = start + self.min_interval
        if start > now:
            self._sleep(start - now)

    def _pause(self, seconds: float) -> None:
        """A rate limit throttles the client, not one request: every thread waits before its next call."""
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.retry.backoff_max_seconds, self.retry.backoff_base_seconds * 2 ** attempt)
        return random.uniform(0, ceiling)

    def _where(self, request: httpx.Request) -> str:
        return f"{request.method} {request.url.copy_with(query=None)}"

    def _send(self, request: httpx.Request, headers: Mapping[str, str] | None, json_body: Any) -> httpx.Response:
        """Send, following redirects that stay on the configured origin; any other Location is refused."""
        origin = _origin(self.client.base_url)
        for _ in range(MAX_REDIRECTS + 1):
            response = self.client.send(request)
            if not response.is_redirect:
                return response
            response.close()
            target = request.url.join(response.headers["location"])
            if _origin(target) != origin:
                elsewhere = target.netloc.decode()
                raise ApiError(f"{self.service}: refusing to follow a redirect to another host ({elsewhere}) "
                               f"from {self._where(request)}", response.status_code)
            keep = response.status_code in (307, 308)  # these repeat the method and body; the others GET
            request = self.client.build_request(request.method if keep else "GET", target, headers=headers,
                                                json=json_body if keep else None)
        raise ApiError(f"{self.service}: more than {MAX_REDIRECTS} redirects from {self._where(request)}")

    def request(self, method: str, url: str, *, params: Mapping[str, Any] | None = None, json_body: Any = None,
                headers: Mapping[str, str] | None = None, expect_json: bool = True) -> httpx.Response:
        """Send one request, retrying what is transient; the answer is a 2xx (with valid JSON if expected)."""
        last_problem = ""
        for attempt in range(self.retry.max_retries + 1):
            if attempt:
                self.retries += 1
            self._pace()
            request = self.client.build_request(method, url, params=params, json=json_body, headers=headers)
            with self._lock:  # fetches run on several threads
                self.calls += 1
            try:
                response = self._send(request, headers, json_body)
                if expect_json and response.is_success:
                    response.read()
                    response.json()
            except (httpx.TimeoutException, httpx.TransportError) as error:
                last_problem = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
                self._sleep(self._backoff(attempt))
                continue
            except ValueError:
                last_problem = f"invalid or truncated JSON in a {response.status_code} answer"
                self._sleep(self._backoff(attempt))
                continue

            status = response.status_code
            rate_limited_403 = status == 403 and any(h in response.headers for h in RATE_LIMIT_HEADERS[:2])
            if status in RETRY_STATUSES or rate_limited_403:
                last_problem = f"{status} {error_detail(response)}"
                delay = retry_delay(response)
                if delay is not None:  # the service said how long: every request of this client waits
                    self._pause(min(self.retry.max_wait_seconds, delay))
                else:
                    self._sleep(self._backoff(attempt))
                continue
            if response.is_success:
                return response
            detail = error_detail(response)
            where = self._where(request)
            if status in (401, 403):
                refused = "refused the credentials" if status == 401 else "denied permission"
                raise AuthError(f"{self.service} {refused} ({status} {detail}) for {where}", status)
            if status == 404:
                raise NotFoundError(f"{self.service}: not found or not shared with these credentials "
                                    f"(404 {detail}) for {where}", status)
            raise ApiError(f"{self.service}: {status} {detail} for {where}", status)
        raise ApiError(f"{self.service}: gave up after {self.retry.max_retries + 1} attempts for "
                       f"{method} {httpx.URL(str(self.client.base_url)).join(url).copy_with(query=None)}: "
                       f"{last_problem}")

    def get_json(self, url: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", url, params=params).json()

    def post_json(self, url: str, body: Any, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("POST", url, params=params, json_body=body).json()
