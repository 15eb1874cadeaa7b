"""rag-sync check and export, and the per-source sensor interval."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rag_sync_pipeline.mirror import mirror_partition, safe_name
from rag_sync_pipeline.settings import load_settings
from rag_sync_pipeline.store import LanceStore, schemas
from rag_sync_pipeline.store.lance import partition_filter
from rag_sync_pipeline_tests.dagster_support import local_definitions

RAG_SYNC = str(Path(sys.executable).parent / "rag-sync")


def rag_sync(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([RAG_SYNC, *args], env=env, capture_output=True, text=True, timeout=600)


def test_check_reports_each_source_and_partition_and_exits_zero_when_usable(cli_env):
    result = rag_sync(cli_env, "check")
    assert result.returncode == 0, result.stderr
    assert "local: OK - reachable, 2 partition(s) configured" in result.stdout
    assert "local/eng: OK - readable" in result.stdout and "local/hr: OK - readable" in result.stdout


def test_check_names_the_source_that_cannot_be_used(cli_env, tmp_path):
    sources = tmp_path / "sources.yaml"
    sources.write_text(f"sources:\n  - {{name: archive, type: local, root: {tmp_path / 'gone'}}}\n")
    env = {**cli_env, "RAG_SOURCES_FILE": str(sources)}
    result = rag_sync(env, "check", "--json")
    assert result.returncode == 1
    by_source = {r["source"]: r for r in json.loads(result.stdout)}
    assert by_source["local"]["usable"] is True
    assert by_source["archive"]["usable"] is False and "does not exist" in by_source["archive"]["detail"]
    assert rag_sync(env, "check", "--source", "local").returncode == 0


def test_source_checks_run_in_dagster_too(local_env, instance, corpus):
    job = local_definitions().resolve_job_def("check_sources")
    result = job.execute_in_process(instance=instance)
    [evaluation] = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert evaluation.check_name == "source_reachable" and evaluation.passed
    (corpus / "hr").rename(corpus.parent / "moved_away")
    local_env.setenv("RAG_LOCAL_ROOT", str(corpus / "missing"))
    result = local_definitions().resolve_job_def("check_sources").execute_in_process(instance=instance)
    [evaluation] = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert evaluation.passed is False
    assert "does not exist" in evaluation.metadata["source"].value


def test_export_is_incremental(cli_env, corpus, tmp_path):
    assert rag_sync(cli_env, "sync", "--source", "local", "--partition", "eng").returncode == 0
    out = tmp_path / "mirror"
    first = rag_sync(cli_env, "export", str(out))
    assert first.returncode == 0, first.stderr
    assert "local/eng: 3 written, 0 unchanged, 0 removed" in first.stdout
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.md"))
    assert files == ["local/eng/ADR 7- Use LanceDB.md", "local/eng/notes.md", "local/eng/runbooks/Database runbook.md"]
    runbook = out / "local/eng/runbooks/Database runbook.md"
    head = runbook.read_text().split("---\n")[1]
    assert "title: Database runbook" in head and "doc_id: runbooks/database.md" in head and "url: file://" in head
    assert "last_modified:" in head
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.md")}

    (corpus / "eng" / "notes.txt").write_text("Deploys freeze on Thursdays.\n")
    (corpus / "eng" / "adr.html").unlink()
    assert rag_sync(cli_env, "sync", "--source", "local", "--partition", "eng").returncode == 0
    second = rag_sync(cli_env, "export", str(out), "--source", "local", "--partition", "eng")
    assert "local/eng: 1 written, 1 unchanged, 1 removed" in second.stdout
    assert not (out / "local/eng/ADR 7- Use LanceDB.md").exists()
    assert "Thursdays" in (out / "local/eng/notes.md").read_text()
    assert runbook.stat().st_mtime_ns == mtimes[runbook]


def markdown_row(doc_id: str, title: str, path: str, text: str = "Body.\n") -> dict:
    return {"key": f"wiki|OPS|{doc_id}", "source": "wiki", "partition": "OPS", "doc_id": doc_id, "title": title,
            "url": f"https://wiki.example.com/{doc_id}", "path": path, "last_modified": "2026-11-01T10:00:00+00:00",
            "doc_hash": f"hash-{doc_id}-{title}-{path}-{text}", "markdown": text, "metadata_json": "{}",
            "synced_at": None}


def put(store: LanceStore, rows: list[dict], doc_ids: list[str]) -> None:
    store.replace_documents(schemas.MARKDOWN_TABLE, schemas.MARKDOWN_SCHEMA, "key", partition_filter("wiki", "OPS"),
                            doc_ids, rows)


def test_hostile_titles_stay_inside_the_mirror_and_duplicates_get_their_id(lancedb_uri, tmp_path):
    store = LanceStore(lancedb_uri)
    put(store, [markdown_row("1", "../../../etc/passwd", "Ops / ../.. / Runbooks"),
                markdown_row("2", "Runbook", "Ops"), markdown_row("3", "Runbook", "Ops"),
                markdown_row("4", "a/b\\c\x07d", "")], ["1", "2", "3", "4"])
    out = tmp_path / "mirror"
    assert mirror_partition(store, out, "wiki", "OPS").written == 4
    written = sorted(p.relative_to(out.resolve()).as_posix() for p in out.resolve().rglob("*.md"))
    assert all(p.startswith("wiki/OPS/") for p in written)
    assert "wiki/OPS/Ops/Runbook.md" in written and "wiki/OPS/Ops/Runbook (3).md" in written
    assert "wiki/OPS/a-b-c-d.md" in written
    assert not any(".." in part for p in written for part in p.split("/"))
    assert not (tmp_path / "etc").exists()
    assert safe_name("..") == "untitled" and safe_name(".hidden") == "hidden"


def test_moved_or_renamed_document_leaves_no_old_file(lancedb_uri, tmp_path):
    store = LanceStore(lancedb_uri)
    put(store, [markdown_row("1", "Failover", "Ops / Databases"), markdown_row("2", "Backups", "Ops")], ["1", "2"])
    out = tmp_path / "mirror"
    mirror_partition(store, out, "wiki", "OPS")
    put(store, [markdown_row("1", "Failover v2", "Ops / Platform")], ["1"])
    report = mirror_partition(store, out, "wiki", "OPS")
    assert (report.written, report.unchanged, report.removed) == (1, 1, 1)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.md"))
    assert files == ["wiki/OPS/Ops/Backups.md", "wiki/OPS/Ops/Platform/Failover v2.md"]
    assert not (out / "wiki/OPS/Ops/Databases").exists()  # emptied folders go too


def test_each_sources_sensor_interval_is_configuration(clean_env, corpus):
    clean_env.setenv("RAG_LOCAL_ROOT", str(corpus))
    assert load_settings().source("local").sensor_interval_seconds == 30
    clean_env.setenv("LOCAL_SYNC_INTERVAL_MINUTES", "2")
    assert load_settings().source("local").sensor_interval_seconds == 120
    sensor = local_definitions().resolve_sensor_def("local_sync_sensor")
    assert sensor.minimum_interval_seconds == 120


@pytest.fixture
def confluence_check_env(clean_env, tmp_path):
    from rag_sync_pipeline_tests.fakes.confluence import confluence_simulator

    with confluence_simulator() as simulator:
        simulator.add_space("OPS")
        simulator.add_page("OPS", "Operations", "<p>Home.</p>")
        for name, value in {"RAG_LOCAL_ENABLED": "false", "RAG_LANCEDB_URI": str(tmp_path / "lancedb"),
                            "DAGSTER_HOME": str(tmp_path), "CONFLUENCE_URL": simulator.url,
                            "CONFLUENCE_USERNAME": simulator.username, "CONFLUENCE_API_TOKEN": simulator.token,
                            "CONFLUENCE_SPACES": "OPS", "CONFLUENCE_MAX_RETRIES": "1",
                            "CONFLUENCE_RETRY_BACKOFF_SECONDS": "0.01"}.items():
            clean_env.setenv(name, value)
        yield simulator, dict(os.environ)


def test_check_against_confluence_with_a_good_token(confluence_check_env):
    _, env = confluence_check_env
    result = rag_sync(env, "check", "--source", "confluence")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "confluence: OK" in result.stdout and "confluence/OPS: OK - readable" in result.stdout


def test_check_against_confluence_with_a_bad_token_says_the_credential_was_refused(confluence_check_env):
    simulator, env = confluence_check_env
    result = rag_sync({**env, "CONFLUENCE_API_TOKEN": "wrong-token-value"}, "check", "--json")
    assert result.returncode == 1
    [confluence] = json.loads(result.stdout)
    assert confluence["source"] == "confluence" and confluence["usable"] is False
    problems = confluence["detail"] + " ".join(p["detail"] for p in confluence["partitions"])
    assert "credential was refused" in problems
    assert "wrong-token-value" not in result.stdout + result.stderr


def test_check_against_confluence_names_a_missing_space(confluence_check_env):
    _, env = confluence_check_env
    result = rag_sync({**env, "CONFLUENCE_SPACES": "OPS,GHOST"}, "check")
    assert result.returncode == 1
    assert "confluence/OPS: OK" in result.stdout
    ghost = next(line for line in result.stdout.splitlines() if "confluence/GHOST" in line)
    assert "FAILED" in ghost and "GHOST" in ghost
