"""The asset graph as users see it in the UI, and the commands that load it."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from rag_sync_pipeline.definitions import build_definitions
from rag_sync_pipeline.settings import load_settings
from rag_sync_pipeline_tests.conftest import REPO_ROOT

BIN = Path(sys.executable).parent


def test_asset_graph_snapshot(local_env):
    definitions = build_definitions(load_settings())
    graph = definitions.resolve_asset_graph()
    snapshot = {}
    for key in sorted(graph.get_all_asset_keys()):
        node = graph.get(key)
        snapshot[key.to_user_string()] = (sorted(k.to_user_string() for k in node.parent_keys), node.group_name,
                                          node.partitions_def.name, sorted(node.kinds))
    assert snapshot == {
        "local/chunks": (["local/markdown"], "local", "local_partitions", ["lancedb", "python"]),
        "local/embeddings": (["local/chunks"], "local", "local_partitions", ["lancedb", "python"]),
        "local/markdown": (["local/raw_documents"], "local", "local_partitions", ["lancedb", "python"]),
        "local/raw_documents": ([], "local", "local_partitions", ["lancedb", "python"]),
    }
    assert sorted(c.to_user_string() for c in graph.asset_check_keys) == [
        "local/chunks:chunks_within_token_window", "local/embeddings:every_chunk_has_a_vector",
        "local/embeddings:no_chunks_of_deleted_documents",
        "local/embeddings:partitions_synced_within_freshness_bound", "local/markdown:no_document_failures",
        "local/raw_documents:no_document_failures", "local/raw_documents:source_reachable"]
    assert definitions.resolve_job_def("check_sources")
    schedule = definitions.resolve_schedule_def("check_freshness_schedule")
    assert schedule.job_name == "check_freshness" and schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    # The sync job runs the invariant checks, not the scheduled ones (source reachability, freshness).
    sync_checks = definitions.resolve_job_def("local_sync").asset_layer.asset_graph.asset_check_keys
    assert {c.name for c in sync_checks} == {"chunks_within_token_window", "every_chunk_has_a_vector",
                                             "no_chunks_of_deleted_documents", "no_document_failures"}
    assert definitions.resolve_job_def("local_sync").partitions_def.name == "local_partitions"
    sensor = definitions.resolve_sensor_def("local_sync_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING and sensor.minimum_interval_seconds == 30


def test_two_instances_of_one_source_type_get_their_own_assets_jobs_and_sensors(clean_env, tmp_path):
    sources = tmp_path / "sources.yaml"
    sources.write_text(f"sources:\n  - {{name: handbook, type: local, root: {tmp_path}}}\n"
                       f"  - {{name: wiki_export, type: local, root: {tmp_path}}}\n")
    clean_env.setenv("RAG_SOURCES_FILE", str(sources))
    definitions = build_definitions(load_settings())
    keys = {k.to_user_string() for k in definitions.resolve_asset_graph().get_all_asset_keys()}
    assert {"handbook/embeddings", "wiki_export/embeddings", "local/embeddings"} <= keys
    assert definitions.resolve_job_def("wiki_export_sync") and definitions.resolve_sensor_def("handbook_sync_sensor")


def test_resources_hold_plain_settings_only(local_env, lancedb_uri):
    """Source clients are built inside a run; the Definitions carry no credential, only EnvVar names."""
    resources = build_definitions(load_settings()).resources
    assert dict(resources["lancedb"]) == {"uri": lancedb_uri, "storage_options": {}}
    assert set(dict(resources["embedding_model"])) == {"model", "device", "batch_size", "max_tokens", "backend"}
    assert dict(resources["source_secrets"]) == {"values": {}}  # the local source needs no credential


def test_dagster_definitions_validate_and_dg_check_defs(local_env, tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    (tmp_path / "dagster.yaml").write_text((REPO_ROOT / "dagster.yaml").read_text())
    validate = subprocess.run([str(BIN / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
                              cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert validate.returncode == 0, validate.stderr[-2000:]
    assert "All code locations passed validation" in validate.stderr + validate.stdout
    check = subprocess.run([str(BIN / "dg"), "check", "defs"], cwd=REPO_ROOT, env=env, capture_output=True,
                           text=True, timeout=300)
    assert check.returncode == 0, check.stderr[-2000:]
    assert "All definitions loaded successfully" in check.stdout + check.stderr
