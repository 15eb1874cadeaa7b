"""The Confluence client and source against the loopback simulator: paging, shapes, errors, rate limits."""

import json

import pytest

from rag_sync_pipeline.sources import DocumentError, PartitionError
from rag_sync_pipeline.sources.confluence import ConfluenceSource
from rag_sync_pipeline.transform.confluence_storage import STORAGE_CONTENT_TYPE
from rag_sync_pipeline_tests.fakes.confluence import Fault, confluence_simulator

TOKEN = "tok-secret-123"


def source_for(sim, **options) -> ConfluenceSource:
    base = {"url": sim.url + ("/wiki" if sim.cloud else ""), "username": sim.username if sim.cloud else "",
            "api_token_env": "CONFLUENCE_API_TOKEN", "pat_env": "CONFLUENCE_PAT", "spaces": ["OPS"],
            "retry_backoff_seconds": 0.01}
    environ = {"CONFLUENCE_API_TOKEN": TOKEN} if sim.cloud else {"CONFLUENCE_PAT": TOKEN}
    return ConfluenceSource.from_options("confluence", {**base, **options}, environ)


def populate(sim, count: int) -> list:
    sim.add_space("OPS")
    root = sim.add_page("OPS", "Operations", "<p>Home of the operations space.</p>", labels=["home"])
    pages = [root]
    for i in range(count - 1):
        pages.append(sim.add_page("OPS", f"Runbook {i}", f"<p>Runbook {i} restarts service {i}.</p>",
                                  parent_id=root.id, labels=["runbook"] if i % 2 else []))
    return pages


@pytest.mark.parametrize("style", ["both", "body", "header"])
def test_cloud_complete_listing_follows_next_links_that_start_with_wiki(style):
    with confluence_simulator(next_link_style=style) as sim:
        pages = populate(sim, 620)
        source = source_for(sim)
        listing = source.list_documents("OPS", None)
        assert listing.complete and len(listing.refs) == 620
        assert {r.doc_id for r in listing.refs} == {p.id for p in pages}
        assert sim.calls["space_pages"] == 3  # 250 + 250 + 120
        assert not any(r.startswith("/wiki/wiki") for r in sim.requests)
        assert all(isinstance(r.doc_id, str) for r in listing.refs)


def test_fetch_asks_for_the_storage_body_and_carries_metadata_for_citing():
    with confluence_simulator() as sim:
        pages = populate(sim, 3)
        sim.pages[pages[1].id].body = ('<p>See OPS-12 and <ac:link><ri:user ri:account-id="557058:abc" />'
                                       '</ac:link>, <a href="https://grafana.example.com">dashboards</a>.</p>')
        source = source_for(sim)
        refs = {r.doc_id: r for r in source.list_documents("OPS", None).refs}
        document = source.fetch("OPS", refs[pages[1].id])
        assert document.content_type == STORAGE_CONTENT_TYPE and b"OPS-12" in document.content
        assert any("body-format=storage" in r for r in sim.requests)
        assert document.title == "Runbook 0" and document.path == ["OPS", "Operations"]
        assert document.url == f"{sim.url}/wiki/spaces/OPS/pages/{pages[1].id}/Runbook+0"
        meta = document.metadata
        assert meta["page_id"] == pages[1].id and meta["space"] == "OPS" and meta["version"] == 1
        assert meta["ancestors"] == ["Operations"] and meta["author"] == "557058:author-1"
        assert meta["jira_keys"] == ["OPS-12"] and meta["mentions"] == ["557058:abc"]
        assert meta["links"] == ["https://grafana.example.com"]
        assert meta["created"].startswith("2025-01-06T09:00") and meta["last_modified"]


def test_probe_is_one_cql_call_and_moves_on_edit_and_delete():
    with confluence_simulator() as sim:
        pages = populate(sim, 5)
        source = source_for(sim)
        source.client()  # detection happens once per process, not per probe
        sim.reset_counts()
        first = source.probe("OPS", None)
        assert sum(sim.calls.values()) == 1 and sim.calls["search"] == 1
        assert source.probe("OPS", first) == first
        sim.advance(minutes=5)
        sim.edit_page(pages[2].id, body="<p>edited</p>")
        edited = source.probe("OPS", first)
        assert edited != first
        del sim.pages[pages[3].id]
        assert source.probe("OPS", edited) != edited  # totalSize reveals the deletion


def test_incremental_listing_reads_dates_in_the_users_time_zone_and_dedupes_versions():
    with confluence_simulator(time_zone="Pacific/Kiritimati") as sim:  # UTC+14: a UTC date would miss edits
        pages = populate(sim, 200)
        source = source_for(sim)
        full = source.list_documents("OPS", None)
        tokens = {r.doc_id: r.version for r in full.refs}
        sim.advance(hours=3)
        for page in pages[10:160]:  # more than one capped search page
            sim.edit_page(page.id, body="<p>new</p>")
        listing = source.list_documents("OPS", full.mark)
        assert not listing.complete
        moved = {r.doc_id for r in listing.refs if tokens[r.doc_id] != r.version}
        assert moved == {p.id for p in pages[10:160]}
        assert len(listing.refs) == len({r.doc_id for r in listing.refs})
        assert sim.calls["user"] == 1


def test_labels_and_ancestor_renames_change_the_token_of_a_complete_listing_only_for_affected_pages():
    with confluence_simulator() as sim:
        pages = populate(sim, 4)
        child = sim.add_page("OPS", "Child", "<p>c</p>", parent_id=pages[1].id)
        source = source_for(sim)
        before = {r.doc_id: r.version for r in source.list_documents("OPS", None).refs}
        sim.pages[pages[1].id].title = "Renamed"  # a rename without a version bump, as seen by children
        sim.pages[pages[2].id].labels.append("critical")
        after = {r.doc_id: r.version for r in source_for(sim).list_documents("OPS", None).refs}
        assert {d for d in before if before[d] != after[d]} == {child.id, pages[2].id}


def test_server_data_center_uses_v1_with_bearer_token_and_start_limit_paging():
    with confluence_simulator(cloud=False) as sim:
        pages = populate(sim, 230)
        sim.pages[pages[5].id].parent_id = pages[4].id
        source = source_for(sim)
        assert not source.client().is_cloud
        listing = source.list_documents("OPS", None)
        assert listing.complete and len(listing.refs) == 230 and sim.calls["content_list"] == 3
        assert not any("/api/v2/" in r for r in sim.requests[1:])
        refs = {r.doc_id: r for r in listing.refs}
        document = source.fetch("OPS", refs[pages[5].id])
        assert document.path == ["OPS", "Operations", "Runbook 3"] and document.metadata["author"] == "author1"
        assert document.url.endswith("/display/OPS/Runbook+4")
        sim.advance(hours=1)
        sim.edit_page(pages[7].id, body="<p>x</p>")
        incremental = source.list_documents("OPS", listing.mark)
        assert pages[7].id in {r.doc_id for r in incremental.refs} and not incremental.complete


def test_401_fails_the_partition_naming_credential_and_space_without_the_token():
    with confluence_simulator() as sim:
        populate(sim, 2)
        sim.token = "a-different-token"
        source = source_for(sim, is_cloud=True)
        with pytest.raises(PartitionError) as raised:
            source.list_documents("OPS", None)
        message = str(raised.value)
        assert "space OPS" in message and "bot@example.com" in message and "CONFLUENCE_API_TOKEN" in message
        assert "were refused" in message and "Unauthorized; scope does not match" in message
        assert TOKEN not in message and sim.calls["unauthorized"] == 1


def test_403_without_rate_limit_headers_fails_at_once_and_unknown_space_says_so():
    with confluence_simulator() as sim:
        populate(sim, 2)
        sim.faults.append(Fault(403, {"errors": [{"status": 403, "code": "FORBIDDEN", "title": "Forbidden",
                                                  "detail": "No permission to view space"}]}))
        with pytest.raises(PartitionError, match=r"space OPS: .* lack permission.*No permission to view space"):
            source_for(sim, is_cloud=True).list_documents("OPS", None)
        with pytest.raises(PartitionError, match="space NOPE: not found or not readable"):
            source_for(sim, is_cloud=True).list_documents("NOPE", None)


def test_404_on_one_page_is_a_document_error_naming_the_page():
    for cloud in (True, False):
        with confluence_simulator(cloud=cloud) as sim:
            pages = populate(sim, 3)
            source = source_for(sim)
            refs = {r.doc_id: r for r in source.list_documents("OPS", None).refs}
            sim.missing_pages.add(pages[2].id)
            with pytest.raises(DocumentError) as raised:
                source.fetch("OPS", refs[pages[2].id])
            assert f'confluence page {pages[2].id} "Runbook 1" in space OPS: 404' in str(raised.value)


def test_429_with_and_without_retry_after_and_403_with_rate_headers_are_waited_out():
    with confluence_simulator(cloud=False) as sim:
        populate(sim, 3)
        sim.faults += [Fault(429, {"message": "Rate limited"}, {"Retry-After": "0"}),
                       Fault(429, {"statusCode": 429, "message": "Too many"}),
                       Fault(403, {"message": "rate"}, {"X-RateLimit-Reset": "2000-01-01T00:00:00Z"}),
                       Fault(503, {"message": "busy"}, {"Retry-After": "0"})]
        source = source_for(sim)
        listing = source.list_documents("OPS", None)
        assert len(listing.refs) == 3 and sim.calls["fault"] == 4 and source.api.retries == 4


def test_next_link_to_another_host_is_refused():
    with confluence_simulator() as sim:
        populate(sim, 2)
        sim.faults.append(Fault(200, {"results": [{"id": "1", "key": "OPS", "name": "x"}],
                                      "_links": {"next": "https://evil.example.com/wiki/api/v2/spaces?cursor=x"}},
                                path_contains="/api/v2/spaces"))
        with pytest.raises(PartitionError, match="another host"):
            source_for(sim, is_cloud=True, spaces=[]).partitions()


def test_empty_spaces_setting_lists_every_readable_space_and_attachments_list_with_their_page():
    with confluence_simulator() as sim:
        pages = populate(sim, 2)
        sim.add_space("HR")
        sim.add_attachment(pages[1].id, "notes.txt", "text/plain", b"Attachment text about failover.")
        sim.add_attachment(pages[1].id, "photo.png", "image/png", b"\x89PNG")
        source = source_for(sim, spaces=[], include_attachments=True)
        assert source.partitions() == ["HR", "OPS"]
        refs = {r.doc_id: r for r in source.list_documents("OPS", None).refs}
        [attachment_id] = [d for d in refs if d.startswith("att")]
        document = source.fetch("OPS", refs[attachment_id])
        assert document.content == b"Attachment text about failover." and document.content_type == "text/plain"
        assert document.metadata["page_id"] == pages[1].id and document.path == ["OPS", "Operations", "Runbook 0"]
        assert json.dumps(document.metadata).find(TOKEN) == -1


def test_sources_file_names_the_token_variable_and_environment_names_are_the_usual_ones(clean_env, tmp_path):
    from rag_sync_pipeline.settings import load_settings
    from rag_sync_pipeline.sources import build_source

    with confluence_simulator() as sim:
        populate(sim, 2)
        sources_file = tmp_path / "sources.yaml"
        sources_file.write_text(f"sources:\n  - name: wiki\n    type: confluence\n    url: {sim.url}/wiki\n"
                                f"    username: {sim.username}\n    api_token_env: WIKI_TOKEN\n    spaces: [OPS]\n"
                                "    deletion_strategy: every_sync\n")
        clean_env.setenv("RAG_SOURCES_FILE", str(sources_file))
        clean_env.setenv("WIKI_TOKEN", TOKEN)
        clean_env.setenv("CONFLUENCE_URL", sim.url)
        clean_env.setenv("CONFLUENCE_SPACES", "OPS, HR")
        clean_env.setenv("CONFLUENCE_INCLUDE_ARCHIVED", "true")
        settings = load_settings()
        env_config, file_config = settings.source("confluence"), settings.source("wiki")
        assert env_config.options["spaces"] == ["OPS", "HR"] and env_config.options["include_archived"] == "true"
        assert env_config.sensor_interval_seconds == 60
        assert TOKEN not in str(settings)
        source = build_source(file_config)
        assert source.deletion_strategy == "every_sync" and source.partitions() == ["OPS"]
        assert len(source.list_documents("OPS", None).refs) == 2
