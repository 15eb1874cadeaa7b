"""Security: secrets never leave the environment, requests stay on the configured host, plain http is refused
off loopback, and no path built from a document id leaves its folder."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from dagster._serdes import serialize_value

from rag_sync_pipeline.defs.clients import s3_client
from rag_sync_pipeline.mirror import mirror_partition
from rag_sync_pipeline.settings import SourceConfig
from rag_sync_pipeline.sources import DocumentError, DocumentRef
from rag_sync_pipeline.sources.confluence import ConfluenceSource
from rag_sync_pipeline.sources.http import ApiError, InsecureURLError, check_url_security
from rag_sync_pipeline.sources.local import LocalFolderSource
from rag_sync_pipeline.sources.notion import NotionSource, build_notion_client
from rag_sync_pipeline.store import LanceStore, schemas
from rag_sync_pipeline_tests.dagster_support import materialize_partition
from rag_sync_pipeline_tests.fakes.confluence import Fault, confluence_simulator
from rag_sync_pipeline_tests.fakes.notion import NotionSimulator, block, notion_simulator
from rag_sync_pipeline_tests.s3_support import MotoServer
from rag_sync_pipeline_tests.scripted_server import Answer, scripted_server

CONFLUENCE_TOKEN = "cf-LEAKCHECK-7d1e9a40"
WRONG_CONFLUENCE_TOKEN = "cf-WRONG-LEAKCHECK-31c5"
NOTION_TOKEN = "ntn_LEAKCHECK_5b2c77e1"
WRONG_NOTION_TOKEN = "ntn_WRONG_LEAKCHECK_90ad"
S3_SECRET = "s3-LEAKCHECK-secret-9f0a2b"


def _forms(secret: str, username: str = "") -> list[bytes]:
    """The secret as it could appear: plain, base64 alone, and inside a Basic auth header."""
    forms = [secret.encode(), base64.b64encode(secret.encode())]
    if username:
        forms.append(base64.b64encode(f"{username}:{secret}".encode()))
    return forms


def _hits(data: bytes, needles: list[bytes]) -> int:
    return sum(data.count(needle) for needle in needles)


def test_secrets_never_reach_logs_run_config_metadata_errors_or_tables(clean_env, tmp_path, lancedb_uri,
                                                                         instance, capfd):
    moto = MotoServer()
    try:
        with confluence_simulator(token=CONFLUENCE_TOKEN) as confluence, \
                notion_simulator(NotionSimulator(token=NOTION_TOKEN)) as notion:
            confluence.add_space("SEC")
            confluence.add_page("SEC", "Runbook", "<p>Rotate the keys every quarter.</p>")
            confluence.add_page("SEC", "Empty", "")  # a per-document error message
            database, [data_source] = notion.add_database("Security")
            notion.add_row(data_source, "Policy", [block("paragraph", "Tokens live in the environment only.")])
            admin = moto.client()
            admin.create_bucket(Bucket="sec-docs")
            admin.put_object(Bucket="sec-docs", Key="guide.md", Body=b"# Guide\n\nSecrets come from the environment.")
            admin.put_object(Bucket="sec-docs", Key="broken.json", Body=b"{not json")
            for name in list(os.environ):
                if name.startswith("AWS_"):
                    clean_env.delenv(name)
            environment = {
                "RAG_LOCAL_ENABLED": "false", "RAG_LANCEDB_URI": lancedb_uri,
                "CONFLUENCE_URL": confluence.url, "CONFLUENCE_USERNAME": confluence.username,
                "CONFLUENCE_API_TOKEN": CONFLUENCE_TOKEN, "CONFLUENCE_SPACES": "SEC",
                "CONFLUENCE_RETRY_BACKOFF_SECONDS": "0.01",
                "NOTION_API_KEY": NOTION_TOKEN, "NOTION_BASE_URL": notion.base_url, "NOTION_DATABASE_IDS": database,
                "NOTION_REQUESTS_PER_SECOND": "2000",
                "S3_SYNC_BUCKET": "sec-docs", "S3_ENDPOINT_URL": moto.url, "AWS_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": "AKIALEAKCHECK", "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            }
            for name, value in environment.items():
                clean_env.setenv(name, value)
            outcomes = {}
            for source, partition in (("confluence", "SEC"), ("notion", database), ("s3", "sec-docs")):
                outcomes[source] = materialize_partition(instance, partition, source=source).success
            # Refused credentials: the runs fail, with messages that name the variable, never the value.
            clean_env.setenv("CONFLUENCE_API_TOKEN", WRONG_CONFLUENCE_TOKEN)
            clean_env.setenv("NOTION_API_KEY", WRONG_NOTION_TOKEN)
            for source, partition in (("confluence", "SEC"), ("notion", database)):
                result = materialize_partition(instance, partition, source=source, raise_on_error=False)
                outcomes[f"{source} (wrong token)"] = result.success
            username = confluence.username
    finally:
        moto.close()
    assert outcomes == {"confluence": True, "notion": True, "s3": True,
                        "confluence (wrong token)": False, "notion (wrong token)": False}

    needles = [*_forms(CONFLUENCE_TOKEN, username), *_forms(WRONG_CONFLUENCE_TOKEN, username),
               *_forms(NOTION_TOKEN), *_forms(WRONG_NOTION_TOKEN), *_forms(S3_SECRET)]
    hits: dict[str, int] = {}
    runs = instance.get_runs()
    hits["run config and tags"] = sum(_hits(serialize_value(run).encode(), needles) for run in runs)
    records = [record for run in runs for record in instance.all_logs(run.run_id)]
    hits["event log (logs, metadata, check results, errors)"] = sum(
        _hits(serialize_value(record).encode(), needles) for record in records)
    failure_messages = [r.dagster_event.event_specific_data.error.message for r in records
                        if r.dagster_event and r.dagster_event.is_step_failure]
    assert any("CONFLUENCE_API_TOKEN" in m for m in failure_messages)  # the error names the variable
    assert any("NOTION_API_KEY" in m or "Notion" in m for m in failure_messages)
    hits["instance files on disk"] = sum(_hits(path.read_bytes(), needles)
                                         for path in Path(instance.root_directory).rglob("*") if path.is_file())
    store = LanceStore(lancedb_uri)
    tables = store.db.table_names()
    hits["LanceDB tables, every column"] = sum(
        _hits(repr(store.db.open_table(name).to_arrow().to_pylist()).encode(), needles) for name in tables)
    lance_files = [path for path in Path(lancedb_uri).rglob("*") if path.is_file()]
    hits["LanceDB files on disk"] = sum(_hits(path.read_bytes(), needles) for path in lance_files)
    captured = capfd.readouterr()
    hits["stdout and stderr"] = _hits((captured.out + captured.err).encode(), needles)

    # Controls: the same scans find what is meant to be there, so a leak would be found too.
    controls = {
        "variable name in the event log": sum(_hits(serialize_value(r).encode(), [b"CONFLUENCE_API_TOKEN"])
                                               for r in records),
        "variable name in instance files": sum(_hits(p.read_bytes(), [b"CONFLUENCE_API_TOKEN"])
                                               for p in Path(instance.root_directory).rglob("*") if p.is_file()),
        "document text in tables": sum(_hits(repr(store.db.open_table(n).to_arrow().to_pylist()).encode(),
                                             [b"Rotate the keys every quarter"]) for n in tables),
    }
    assert all(controls.values()), controls
    print(f"\nsecret scan: {len(runs)} runs, {len(records)} event records, {len(tables)} tables, "
          f"{len(lance_files)} LanceDB files; hits per place {hits}; leaked secrets {sum(hits.values())}")
    assert len(runs) == 5 and schemas.FAILURES_TABLE in tables and len(records) > 100
    assert sum(hits.values()) == 0, hits


# -- host pinning ------------------------------------------------------------------------------------------

def test_redirects_to_another_host_are_refused_and_the_credential_never_travels(clean_env, lancedb_uri, instance):
    with scripted_server() as (elsewhere, elsewhere_url), scripted_server() as (notion, notion_url):
        client = build_notion_client(NOTION_TOKEN, base_url=notion_url, requests_per_second=None)
        notion.script = [Answer(307, headers={"location": f"{elsewhere_url}/v1/pages/x"})]
        with pytest.raises(ApiError, match=r"refusing to follow a redirect to another host \(127\.0\.0\.1:\d+\)"):
            client.retrieve_page("x")
        # On the configured host a redirect is followed, with the credential.
        notion.script = [Answer(301, headers={"location": "/v1/pages/moved"}), Answer(200, {"id": "moved"})]
        assert client.retrieve_page("x") == {"id": "moved"}
        assert [(m, p) for m, p, _ in notion.requests[-2:]] == [("GET", "/v1/pages/x"), ("GET", "/v1/pages/moved")]
        assert notion.requests[-1][2]["authorization"] == f"Bearer {NOTION_TOKEN}"
        client.close()

        # Through a Confluence sync in Dagster: the page whose fetch redirects elsewhere fails alone.
        with confluence_simulator(token=CONFLUENCE_TOKEN) as confluence:
            confluence.add_space("OPS")
            kept = confluence.add_page("OPS", "Kept", "<p>This page stays on the configured host.</p>")
            moved = confluence.add_page("OPS", "Moved", "<p>This page redirects.</p>")
            confluence.faults.append(Fault(302, {}, {"Location": f"{elsewhere_url}/wiki/api/v2/pages/{moved.id}"},
                                           path_contains=f"/api/v2/pages/{moved.id}"))
            for name, value in {"RAG_LOCAL_ENABLED": "false", "RAG_LANCEDB_URI": lancedb_uri,
                                "CONFLUENCE_URL": confluence.url, "CONFLUENCE_USERNAME": confluence.username,
                                "CONFLUENCE_API_TOKEN": CONFLUENCE_TOKEN, "CONFLUENCE_SPACES": "OPS"}.items():
                clean_env.setenv(name, value)
            result = materialize_partition(instance, "OPS", source="confluence")
    assert result.success
    failures = LanceStore(lancedb_uri).read(schemas.FAILURES_TABLE, None, ["doc_id", "error"]).to_pylist()
    assert [f["doc_id"] for f in failures] == [moved.id] and kept.id != moved.id
    assert "refusing to follow a redirect to another host" in failures[0]["error"]
    print(f"\nrequests that reached the other host: {len(elsewhere.requests)}")
    assert elsewhere.requests == []


# -- plain http --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://localhost:9000/wiki", "http://[::1]:80",
                                 "https://example.atlassian.net/wiki", "https://api.notion.com"])
def test_https_and_loopback_http_are_accepted(url):
    check_url_security(url, allow_insecure_http=False, setting="url")


def test_plain_http_to_a_remote_host_is_refused_for_every_source_unless_allowed(clean_env):
    environ = {"CONFLUENCE_API_TOKEN": "t", "NOTION_API_KEY": "k"}
    notion_id = "0123456789abcdef0123456789abcdef"
    attempts = {
        "confluence": lambda allow: ConfluenceSource.from_options(
            "confluence", {"url": "http://wiki.example.com", "username": "u", **allow}, environ),
        "notion": lambda allow: NotionSource.from_options(
            "notion", {"base_url": "http://notion.example.com", "database_ids": [notion_id], **allow}, environ),
        "s3": lambda allow: s3_client(SourceConfig("s3", "s3", {"buckets": ["b"], "region": "us-east-1",
                                                                 "endpoint_url": "http://minio.example.com:9000",
                                                                 **allow}), environ),
    }
    refused = 0
    for attempt in attempts.values():
        with pytest.raises(InsecureURLError, match="refusing plain http to .*example.com"):
            attempt({})
        refused += 1
        attempt({"allow_insecure_http": True})  # explicitly allowed: builds
    clean_env.setenv("RAG_ALLOW_INSECURE_HTTP", "true")  # the deployment-wide switch
    ConfluenceSource.from_options("c", {"url": "http://wiki.example.com", "username": "u"}, dict(os.environ, **environ))
    with pytest.raises(InsecureURLError, match="not an http"):
        check_url_security("ftp://files.example.com", allow_insecure_http=True, setting="url")
    print(f"\nplain http to a remote host refused for {refused} of {len(attempts)} source types")
    assert refused == 3


# -- paths built from ids ----------------------------------------------------------------------------------

@pytest.mark.parametrize("doc_id", ["../outside.md", "sub/../../outside.md", "/etc/passwd", "..", "."])
def test_local_ids_that_leave_the_partition_folder_are_refused(tmp_path, doc_id):
    (tmp_path / "root" / "docs").mkdir(parents=True)
    (tmp_path / "root" / "outside.md").write_text("not in the partition")
    source = LocalFolderSource("local", (tmp_path / "root").resolve())
    with pytest.raises(DocumentError, match="leads outside the partition folder"):
        source.fetch("docs", DocumentRef(doc_id, "v"))


def test_export_keeps_every_file_inside_its_folder_whatever_the_ids_titles_and_paths(tmp_path):
    store = LanceStore(str(tmp_path / "lancedb"))
    hostile = ["../../../escape", "..\\..\\escape", "/etc/cron.d/x", "a/../../../b", "con\x00trol\x1b", ".hidden",
               "~/home", "C:\\Windows\\x"]
    rows = [{"key": f"k{i}", "source": "s3", "partition": "bucket", "doc_id": value, "title": value,
             "url": "", "path": " / ".join(["bucket", value, value]), "last_modified": "", "doc_hash": f"h{i}",
             "markdown": f"document {i}\n", "metadata_json": "{}", "synced_at": None}
            for i, value in enumerate(hostile)]
    store.replace_documents(schemas.MARKDOWN_TABLE, schemas.MARKDOWN_SCHEMA, "key", "source = 's3'",
                            [r["doc_id"] for r in rows], rows)
    export = tmp_path / "one" / "two" / "three" / "export"
    report = mirror_partition(store, export, "s3", "bucket")
    files = [p for p in tmp_path.rglob("*") if p.is_file() and "lancedb" not in p.parts]
    outside = [p for p in files if not p.resolve().is_relative_to(export.resolve())]
    print(f"\nexport of {len(hostile)} hostile ids: {report.written} files written, {len(outside)} outside")
    assert report.written == len(hostile) and outside == []


def test_credentials_reach_runs_and_sensors_only_as_dagster_env_vars(clean_env, lancedb_uri, instance):
    """The definitions hold each source's credentials as EnvVars (names, never values); Dagster reads the
    values when a run starts, and the source sees no other copy of them."""
    import dagster as dg

    from rag_sync_pipeline.definitions import build_definitions
    from rag_sync_pipeline.settings import load_settings

    with confluence_simulator(token=CONFLUENCE_TOKEN) as confluence:
        confluence.add_space("SEC")
        confluence.add_page("SEC", "Runbook", "<p>Rotate the keys every quarter.</p>")
        for name, value in {"RAG_LOCAL_ENABLED": "false", "RAG_LANCEDB_URI": lancedb_uri,
                            "CONFLUENCE_URL": confluence.url, "CONFLUENCE_USERNAME": confluence.username,
                            "CONFLUENCE_API_TOKEN": WRONG_CONFLUENCE_TOKEN, "CONFLUENCE_SPACES": "SEC",
                            "CONFLUENCE_RETRY_BACKOFF_SECONDS": "0.01"}.items():
            clean_env.setenv(name, value)
        definitions = build_definitions(load_settings())
        secrets = definitions.resources["source_secrets"].values
        assert list(secrets) == ["CONFLUENCE_API_TOKEN"]
        assert isinstance(secrets["CONFLUENCE_API_TOKEN"], dg.EnvVar)
        assert secrets["CONFLUENCE_API_TOKEN"] == "CONFLUENCE_API_TOKEN"  # the name; the value is not captured

        instance.add_dynamic_partitions("confluence_partitions", ["SEC"])
        job = definitions.resolve_job_def("confluence_sync")
        refused = job.execute_in_process(partition_key="SEC", instance=instance, raise_on_error=False)
        assert not refused.success  # read at run start: the wrong token set when the code loaded is refused

        clean_env.setenv("CONFLUENCE_API_TOKEN", CONFLUENCE_TOKEN)  # rotated, without reloading the code
        assert job.execute_in_process(partition_key="SEC", instance=instance).success

        clean_env.delenv("CONFLUENCE_API_TOKEN")  # gone from the environment: Dagster names the variable
        with pytest.raises(Exception, match="CONFLUENCE_API_TOKEN"):
            job.execute_in_process(partition_key="SEC", instance=instance)
        text = serialize_value([record.dagster_run for record in instance.get_run_records()])
        assert CONFLUENCE_TOKEN not in text and WRONG_CONFLUENCE_TOKEN not in text
