"""The Confluence source through Dagster against the simulator: the acceptance lines of the issue."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from rag_sync_pipeline.definitions import build_definitions
from rag_sync_pipeline.settings import load_settings
from rag_sync_pipeline.store import LanceStore
from rag_sync_pipeline.store.lance import partition_filter
from rag_sync_pipeline_tests.dagster_support import materialize_partition, stage_metadata
from rag_sync_pipeline_tests.fakes.confluence import Fault, confluence_simulator

TOKEN = "tok-secret-123"
RAG_SYNC = str(Path(sys.executable).parent / "rag-sync")


@pytest.fixture
def sim():
    with confluence_simulator() as simulator:
        simulator.add_space("OPS")
        yield simulator


@pytest.fixture
def confluence_env(clean_env, sim, lancedb_uri):
    for name, value in {"RAG_LOCAL_ENABLED": "false", "RAG_LANCEDB_URI": lancedb_uri, "CONFLUENCE_URL": sim.url,
                        "CONFLUENCE_USERNAME": sim.username, "CONFLUENCE_API_TOKEN": TOKEN,
                        "CONFLUENCE_SPACES": "OPS", "CONFLUENCE_RETRY_BACKOFF_SECONDS": "0.01"}.items():
        clean_env.setenv(name, value)
    return clean_env


def add_pages(sim, count: int) -> list:
    """A home page and its children, created a second apart."""
    pages = [sim.add_page("OPS", "Operations", "<p>The operations space home.</p>")]
    for i in range(count - 1):
        sim.advance(seconds=1)
        pages.append(sim.add_page("OPS", f"Runbook {i}", f"<p>Service {i} restarts with systemctl restart svc{i}.</p>",
                                  parent_id=pages[0].id))
    return pages


def sync(instance, tags=None):
    result = materialize_partition(instance, "OPS", source="confluence", tags=tags)
    assert result.success
    return stage_metadata(result)


def tick(instance):
    definitions = build_definitions(load_settings())
    sensor = definitions.resolve_sensor_def("confluence_sync_sensor")
    context = dg.build_sensor_context(instance=instance, resources=definitions.resources)
    return sensor(context)


def indexed(lancedb_uri) -> set[str]:
    store = LanceStore(lancedb_uri)
    return set(store.read("embeddings", partition_filter("confluence", "OPS"), ["doc_id"]).column("doc_id").to_pylist())


def test_4000_page_space_syncs_then_40_edits_fetch_40_bodies_and_an_idle_tick_costs_one_call(
        confluence_env, sim, instance, lancedb_uri, capsys):
    pages = add_pages(sim, 4000)
    started = time.monotonic()
    first = sync(instance)
    first_seconds = time.monotonic() - started
    assert first["raw_documents"]["documents_added"] == 4000 and first["raw_documents"]["documents_failed"] == 0
    assert sim.calls["page"] == 4000 and sim.calls["space_pages"] == 16  # 250 a page
    assert len(indexed(lancedb_uri)) == 4000

    sim.advance(hours=2)
    for page in pages[100:140]:
        sim.edit_page(page.id, body=f"<p>{page.title} now restarts with the deploy tool.</p>")
    sim.reset_counts()
    second = sync(instance)
    assert sim.calls["page"] == 40
    assert second["raw_documents"]["documents_updated"] == 40 and second["embeddings"]["chunks_embedded"] == 40
    # probe + time zone + one search page (newest first, ends at the mark) + 40 bodies
    assert second["raw_documents"]["api_calls"] == sum(sim.calls.values()) == 43

    sim.reset_counts()
    result = tick(instance)
    assert result.run_requests == [] and "OPS: unchanged" in str(result.skip_reason)
    assert sum(sim.calls.values()) <= 2
    with capsys.disabled():
        print(f"\n4000-page first sync: {first_seconds:.1f}s; 40 edits -> {second['raw_documents']['api_calls']} "
              f"API calls; idle tick -> {sum(sim.calls.values())} call(s)")


def test_deleted_page_is_gone_after_one_sync_with_every_sync(confluence_env, sim, instance, lancedb_uri):
    confluence_env.setenv("CONFLUENCE_DELETION_STRATEGY", "every_sync")
    pages = add_pages(sim, 5)
    sync(instance)
    del sim.pages[pages[3].id]
    [request] = tick(instance).run_requests  # the page count in the probe reveals the deletion
    assert request.partition_key == "OPS"
    metadata = sync(instance)
    assert metadata["raw_documents"]["documents_deleted"] == 1 and metadata["embeddings"]["documents_deleted"] == 1
    assert pages[3].id not in indexed(lancedb_uri) and len(indexed(lancedb_uri)) == 4


def test_deleted_and_archived_pages_leave_at_the_weekly_reconciliation(confluence_env, sim, instance, lancedb_uri):
    pages = add_pages(sim, 5)
    sync(instance)
    sim.advance(minutes=30)
    del sim.pages[pages[3].id]
    sim.pages[pages[4].id].status = "archived"
    sim.edit_page(pages[1].id, body="<p>Edited.</p>")
    incremental = sync(instance)  # not due yet: incremental, nothing deleted
    assert incremental["raw_documents"]["documents_updated"] == 1
    assert incremental["raw_documents"]["documents_deleted"] == 0 and pages[3].id in indexed(lancedb_uri)
    reconciled = sync(instance, tags={"rag_sync/reconcile": "true"})
    assert reconciled["raw_documents"]["documents_deleted"] == 2
    assert indexed(lancedb_uri) == {pages[0].id, pages[1].id, pages[2].id}


def test_label_and_ancestor_rename_are_refreshed_by_reconciliation(confluence_env, sim, instance, lancedb_uri):
    pages = add_pages(sim, 3)
    sync(instance)
    sim.advance(hours=2)
    sim.edit_page(pages[0].id, body="<p>New home text.</p>")  # moves the mark past the others
    sync(instance)
    sim.pages[pages[0].id].title = "Ops home"  # no version bump for the children
    sim.pages[pages[2].id].labels.append("critical")
    # No lastmodified moved, so the incremental window does not reach these pages.
    assert sync(instance)["raw_documents"]["documents_updated"] == 0
    assert sync(instance, tags={"rag_sync/reconcile": "true"})["raw_documents"]["documents_updated"] == 2
    store = LanceStore(lancedb_uri)
    rows = {r["doc_id"]: r for r in store.read("markdown", partition_filter("confluence", "OPS"),
                                               ["doc_id", "path", "metadata_json"]).to_pylist()}
    assert rows[pages[2].id]["path"] == "OPS / Ops home"
    assert json.loads(rows[pages[2].id]["metadata_json"])["labels"] == ["critical"]


def test_a_burst_of_429s_slows_the_sync_down_and_it_completes(confluence_env, sim, instance, lancedb_uri):
    add_pages(sim, 30)
    sim.faults += [Fault(429, {"code": 429, "message": "Rate limit exceeded"}, {"Retry-After": "1"},
                         path_contains="/api/v2/pages/") for _ in range(3)]
    sim.faults += [Fault(429, {"message": "Too Many Requests"}, path_contains="/api/v2/pages/") for _ in range(5)]
    started = time.monotonic()
    metadata = sync(instance)
    # The fetch threads share one client, and a rate limit pauses all of them: at least one Retry-After waited.
    assert time.monotonic() - started >= 1
    assert sim.calls["fault"] == 8 and metadata["raw_documents"]["documents_added"] == 30
    assert len(indexed(lancedb_uri)) == 30


def test_401_fails_the_run_naming_the_credential_and_the_space(confluence_env, sim, instance):
    add_pages(sim, 2)
    confluence_env.setenv("CONFLUENCE_API_TOKEN", "wrong-token")
    result = materialize_partition_no_raise(instance)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = str(failure.event_specific_data.error)
    assert "space OPS" in message and "CONFLUENCE_API_TOKEN" in message and sim.username in message
    assert "wrong-token" not in message


def materialize_partition_no_raise(instance):
    settings = load_settings()
    definitions = build_definitions(settings)
    instance.add_dynamic_partitions("confluence_partitions", ["OPS"])
    job = definitions.resolve_job_def("confluence_sync")
    return job.execute_in_process(partition_key="OPS", instance=instance, raise_on_error=False)


def test_404_on_one_page_is_recorded_and_the_run_goes_on(confluence_env, sim, instance, lancedb_uri):
    pages = add_pages(sim, 4)
    sim.missing_pages.add(pages[2].id)
    metadata = sync(instance)
    raw = metadata["raw_documents"]
    assert raw["documents_added"] == 3 and raw["documents_failed"] == 1
    assert f'confluence page {pages[2].id} "Runbook 1" in space OPS: 404' in raw["failures"]
    [failure] = LanceStore(lancedb_uri).failures("confluence", "OPS")
    assert failure["doc_id"] == pages[2].id and "404" in failure["error"]


def test_the_token_never_reaches_logs_metadata_or_tables(confluence_env, sim, instance, lancedb_uri):
    add_pages(sim, 3)
    sync(instance)
    events = instance.all_logs(instance.get_runs()[0].run_id)
    assert TOKEN not in "".join(str(e) for e in events)
    assert TOKEN not in str(instance.get_runs()[0])
    for path in Path(lancedb_uri).rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_cli_backfills_the_confluence_partition_alone(confluence_env, sim, tmp_path, lancedb_uri):
    add_pages(sim, 3)
    home = tmp_path / "dagster_home"
    home.mkdir()
    confluence_env.setenv("DAGSTER_HOME", str(home))
    result = subprocess.run([RAG_SYNC, "sync", "--source", "confluence", "--partition", "OPS", "--json"],
                            env=dict(os.environ), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["success"] and summary["partition"] == "OPS" and summary["documents_added"] == 3
    assert TOKEN not in result.stdout + result.stderr
    assert len(indexed(lancedb_uri)) == 3


def docx_bytes(heading: str, text: str) -> bytes:
    """A real Word document, as Word writes it (python-docx), with a heading and a paragraph."""
    import io

    import docx

    document = docx.Document()
    document.add_heading(heading, level=1)
    document.add_paragraph(text)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def pdf_bytes(text: str) -> bytes:
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_attachments_are_documents_of_their_own_linked_to_their_page(confluence_env, sim, instance, lancedb_uri):
    confluence_env.setenv("CONFLUENCE_INCLUDE_ATTACHMENTS", "true")
    confluence_env.setenv("CONFLUENCE_ATTACHMENT_MAX_BYTES", "100000")  # a real DOCX is ~36 KB
    pages = add_pages(sim, 2)
    sim.add_attachment(pages[1].id, "failover.txt", "text/plain", b"Failover takes four minutes.")
    sim.add_attachment(pages[1].id, "policy.docx", "application/vnd.openxmlformats-officedocument."
                       "wordprocessingml.document", docx_bytes("Backup policy", "Backups are kept 35 days."))
    sim.add_attachment(pages[1].id, "audit.pdf", "application/pdf", pdf_bytes("Audit passed in March."))
    sim.add_attachment(pages[1].id, "huge.txt", "text/plain", b"x" * 120_000)  # over the cap: not listed
    metadata = sync(instance)
    assert metadata["raw_documents"]["documents_added"] == 5 and metadata["markdown"]["documents_failed"] == 0
    rows = LanceStore(lancedb_uri).read("markdown", partition_filter("confluence", "OPS"),
                                        ["doc_id", "title", "markdown", "path", "metadata_json"]).to_pylist()
    by_title = {r["title"]: r for r in rows}
    assert "Backups are kept 35 days." in by_title["policy.docx"]["markdown"]
    assert "# Backup policy" in by_title["policy.docx"]["markdown"]
    assert "Audit passed in March." in by_title["audit.pdf"]["markdown"]
    assert by_title["failover.txt"]["path"] == "OPS / Operations / Runbook 0"
    assert json.loads(by_title["failover.txt"]["metadata_json"])["page_id"] == pages[1].id
    assert "huge.txt" not in by_title
