"""The Notion client against the loopback simulator: paging everywhere, errors, rate limits, pacing."""

import time

import pytest

from rag_sync_pipeline.sources.http import ApiClient, AuthError, NotFoundError, RetryPolicy, build_http_client
from rag_sync_pipeline.sources.notion import NotionClient, build_notion_client, dashed_id
from rag_sync_pipeline.sources.notion.client import NOTION_VERSION
from rag_sync_pipeline_tests.fakes.notion import Fault, block, notion_simulator

QUERY = "POST /v1/data_sources/{id}/query"
CHILDREN = "GET /v1/blocks/{id}/children"


@pytest.fixture
def notion():
    with notion_simulator() as simulator:
        yield simulator


def client_for(simulator, *, token=None, requests_per_second=None, sleeps=None) -> NotionClient:
    def sleep(seconds):
        if sleeps is not None:
            sleeps.append(seconds)
        time.sleep(seconds)

    http = build_http_client(simulator.base_url, headers={"Authorization": f"Bearer {token or simulator.token}",
                                                          "Notion-Version": NOTION_VERSION})
    return NotionClient(ApiClient(http, service="Notion", requests_per_second=requests_per_second, sleep=sleep,
                                  retry=RetryPolicy(backoff_base_seconds=0.01)))


def test_ids_are_dashed_from_any_form():
    expected = "c37a2c66-e3aa-4a0d-a447-73de3b80c253"
    assert dashed_id("c37a2c66e3aa4a0da44773de3b80c253") == expected
    assert dashed_id(expected.upper()) == expected
    assert dashed_id("https://www.notion.so/team/Sample-table-c37a2c66e3aa4a0da44773de3b80c253?v=1f2e") == expected
    with pytest.raises(ValueError, match="not a Notion id"):
        dashed_id("Sample table")


def test_query_pages_through_every_row_100_at_a_time(notion):
    _, [source] = notion.add_database("Runbooks")
    created = [notion.add_row(source, f"Row {i}") for i in range(250)]
    client = client_for(notion)
    rows = list(client.query(source))
    assert [r["id"] for r in rows] == created
    assert notion.calls[QUERY] == 3 and client.calls == 3
    bodies = [body for method, _, body in notion.request_log if method == "POST"]
    assert [b.get("start_cursor") for b in bodies] == [None, created[100], created[200]]
    assert all(b["page_size"] == 100 for b in bodies)


def test_query_filter_and_sort_on_last_edited_time(notion):
    _, [source] = notion.add_database("Runbooks")
    old = notion.add_row(source, "Old", edited="2025-01-01T10:00:00.000Z")
    new = notion.add_row(source, "New", edited="2025-03-01T10:00:00.000Z")
    client = client_for(notion)
    edited = {"timestamp": "last_edited_time", "last_edited_time": {"on_or_after": "2025-02-01T00:00:00.000Z"}}
    assert [r["id"] for r in client.query(source, filter=edited)] == [new]
    newest_first = [{"timestamp": "last_edited_time", "direction": "descending"}]
    answer = client.query_page(source, sorts=newest_first, page_size=1)
    assert [r["id"] for r in answer["results"]] == [new] and answer["has_more"] and answer["next_cursor"] == old


def test_block_children_page_through_and_stay_one_level(notion):
    _, [source] = notion.add_database("Runbooks")
    nested = {**block("toggle", "Toggle", has_children=True), "children": [block("paragraph", "deep")]}
    page = notion.add_row(source, "Long page", [block("paragraph", f"p{i}") for i in range(149)] + [nested])
    children = list(client_for(notion).block_children(page))
    assert len(children) == 150 and notion.calls[CHILDREN] == 2
    assert children[-1]["type"] == "toggle" and children[-1]["has_children"] and "children" not in children[-1]


def test_property_items_page_through_relations(notion):
    _, [source] = notion.add_database("Runbooks")
    related = [f"00000000-0000-4000-8000-{i:012d}" for i in range(130)]
    page = notion.add_row(source, "Hub", relations=related)
    row = notion.pages[page]
    assert row["properties"]["RelationTitle"]["has_more"] is True
    items = list(client_for(notion).property_items(page, row["properties"]["RelationTitle"]["id"]))
    assert [i["relation"]["id"] for i in items] == related
    assert notion.calls["GET /v1/pages/{id}/properties/{property_id}"] == 2


def test_unshared_page_is_not_found_with_notions_message(notion):
    _, [source] = notion.add_database("Runbooks")
    page = notion.add_row(source, "Secret")
    notion.unshared.add(page)
    with pytest.raises(NotFoundError) as raised:
        list(client_for(notion).block_children(page))
    message = str(raised.value)
    assert "404" in message and "shared with your integration" in message and page in message


def test_refused_token_is_an_auth_error_and_never_echoed(notion):
    notion.add_database("Runbooks")
    with pytest.raises(AuthError) as raised:
        client_for(notion, token="ntn_wrong_token_12345").retrieve_database("c37a2c66e3aa4a0da44773de3b80c253")
    assert "401" in str(raised.value) and "ntn_wrong_token_12345" not in str(raised.value)


@pytest.mark.parametrize("status", [429, 529])
def test_rate_limits_honour_retry_after(notion, status):
    _, [source] = notion.add_database("Runbooks")
    notion.add_row(source, "Row")
    notion.faults.append(Fault(status, retry_after="0.3", route=QUERY, times=2))
    sleeps = []
    client = client_for(notion, sleeps=sleeps)
    started = time.monotonic()
    assert len(list(client.query(source))) == 1
    assert sleeps == [pytest.approx(0.3, abs=0.05)] * 2 and time.monotonic() - started >= 0.6
    assert notion.calls[QUERY] == 3 and client.api.retries == 2


def test_client_side_pace_spaces_requests(notion):
    database, _ = notion.add_database("Runbooks")
    client = client_for(notion, requests_per_second=20)
    started = time.monotonic()
    for _ in range(6):
        client.retrieve_database(database)
    assert time.monotonic() - started >= 0.25  # five gaps of 50 ms


def test_built_client_sends_bearer_auth_and_the_pinned_version(notion):
    database, _ = notion.add_database("Runbooks")
    client = build_notion_client(notion.token, base_url=notion.base_url + "/", requests_per_second=None)
    assert client.retrieve_database(database.replace("-", ""))["id"] == database
