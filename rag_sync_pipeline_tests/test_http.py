"""The shared HTTP helper against a real loopback server that misbehaves on cue."""

import pytest

from rag_sync_pipeline.sources.http import ApiClient, ApiError, AuthError, NotFoundError, RetryPolicy, build_http_client
from rag_sync_pipeline_tests.scripted_server import Answer, scripted_server


@pytest.fixture
def server():
    with scripted_server() as (state, url):
        yield state, url


def client_for(url: str, delays: list[float], **kwargs) -> ApiClient:
    http = build_http_client(url, auth=("me@example.com", "s3cr3t-token"), timeout_seconds=2)
    return ApiClient(http, service="wiki", sleep=delays.append, **kwargs)


def test_429_with_retry_after_waits_what_the_service_asked(server):
    state, url = server
    state.script = [Answer(429, {"message": "slow down"}, {"Retry-After": "7"}), Answer(200, {"value": 1})]
    delays = []
    assert client_for(url, delays).get_json("/x") == {"value": 1}
    assert delays == [pytest.approx(7.0, abs=0.1)] and len(state.requests) == 2


def test_429_without_retry_after_and_5xx_back_off_with_growing_jitter(server):
    state, url = server
    state.script = [Answer(429), Answer(500), Answer(502), Answer(503), Answer(529), Answer(200, {"v": 2})]
    delays = []
    client = client_for(url, delays, retry=RetryPolicy(backoff_base_seconds=1, backoff_max_seconds=60))
    assert client.get_json("/x") == {"v": 2}
    assert len(delays) == 5 and all(0 <= d <= 2 ** i for i, d in enumerate(delays))
    assert client.calls == 6 and client.retries == 5


def test_rate_limit_reset_timestamp_and_server_dc_403_with_headers_are_rate_limits(server):
    state, url = server
    state.script = [Answer(403, {"message": "rate"}, {"X-RateLimit-Reset": "2000-01-01T00:00:00Z"}),
                    Answer(200, {"v": 3})]
    delays = []
    assert client_for(url, delays).get_json("/x") == {"v": 3}
    assert delays == [] and len(state.requests) == 2  # the reset time has passed: retried at once


def test_a_rate_limit_pauses_every_request_of_the_client_not_only_the_one_refused(server):
    state, url = server
    state.script = [Answer(429, {"message": "slow down"}, {"Retry-After": "30"}), Answer(200, {"v": 5})]
    delays = []
    client = client_for(url, delays)
    assert client.get_json("/x") == {"v": 5}
    # The sleeps are recorded, not slept: a request sent now (another fetch thread's) still waits out the pause.
    assert client.get_json("/y") == {"ok": True}
    assert delays == [pytest.approx(30, abs=0.5), pytest.approx(30, abs=0.5)] and len(state.requests) == 3


def test_truncated_json_and_connection_reset_are_retried(server):
    state, url = server
    state.script = [Answer(raw=b'{"results": [1, 2'), Answer(reset=True), Answer(200, {"v": 4})]
    delays = []
    assert client_for(url, delays).get_json("/x") == {"v": 4}
    assert len(delays) == 2


def test_timeouts_are_retried_then_give_up_with_a_clear_message(server):
    state, url = server
    state.script = [Answer(503)] * 3
    delays = []
    with pytest.raises(ApiError, match=r"wiki: gave up after 3 attempts .* 503"):
        client_for(url, delays, retry=RetryPolicy(max_retries=2)).get_json("/x?token=abc")


def test_401_fails_at_once_naming_the_cause_without_the_credential(server):
    state, url = server
    state.script = [Answer(401, {"statusCode": 401, "message": "Basic auth failed"})]
    with pytest.raises(AuthError) as raised:
        client_for(url, []).get_json("/wiki/rest/api/space", {"spaceKey": "OPS"})
    message = str(raised.value)
    assert "wiki refused the credentials (401 Basic auth failed)" in message and "/wiki/rest/api/space" in message
    assert "s3cr3t" not in message and "spaceKey" not in message
    assert len(state.requests) == 1


@pytest.mark.parametrize("answer, error, text", [
    (Answer(403, {"errors": [{"status": 403, "code": "FORBIDDEN", "title": "No", "detail": "Not permitted"}]}),
     AuthError, "denied permission (403 Not permitted)"),
    (Answer(404, {"object": "error", "status": 404, "code": "object_not_found", "message": "Could not find page"}),
     NotFoundError, "not shared with these credentials (404 Could not find page)"),
    (Answer(400, {"code": 400, "message": "bad cql"}), ApiError, "400 bad cql"),
])
def test_error_shapes_map_to_errors_with_the_services_explanation(server, answer, error, text):
    state, url = server
    state.script = [answer]
    with pytest.raises(error, match=text.replace("(", r"\(").replace(")", r"\)")):
        client_for(url, []).get_json("/x")


def test_pace_spaces_requests(server):
    _, url = server
    delays = []
    client = client_for(url, delays, requests_per_second=2)
    for _ in range(3):
        client.get_json("/x")
    # The sleeps are recorded, not slept, so the slots add up: 0.5 s apart each.
    assert len(delays) == 2 and 0.3 < delays[0] <= 0.5 and 0.8 < delays[1] <= 1.0


def test_post_sends_json(server):
    state, url = server
    assert client_for(url, []).post_json("/v1/data_sources/abc/query", {"page_size": 100}) == {"ok": True}
    method, path, headers = state.requests[0]
    assert (method, path) == ("POST", "/v1/data_sources/abc/query") and headers["content-type"] == "application/json"
    assert headers["authorization"].startswith("Basic ")
