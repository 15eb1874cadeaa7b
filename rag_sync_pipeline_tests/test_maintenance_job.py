"""The maintenance job and schedule as Dagster runs them."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster._core.test_utils import create_run_for_test

from rag_sync_pipeline.defs.maintenance import MAINTENANCE_JOB, MAINTENANCE_SCHEDULE, in_flight_since
from rag_sync_pipeline.settings import load_settings
from rag_sync_pipeline.store import LanceStore
from rag_sync_pipeline_tests.dagster_support import local_definitions, materialize_partition


def test_maintenance_job_reports_before_and_after_and_the_schedule_is_on(local_env, instance, lancedb_uri):
    local_env.setenv("RAG_MAINTENANCE_RETENTION_MINUTES", "0")
    assert materialize_partition(instance, "hr").success
    assert materialize_partition(instance, "eng").success
    versions_before = LanceStore(lancedb_uri).table("doc_ledger").list_versions()
    definitions = local_definitions()
    schedule = definitions.resolve_schedule_def(MAINTENANCE_SCHEDULE)
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING and schedule.cron_schedule == "15 3 * * *"

    result = definitions.resolve_job_def(MAINTENANCE_JOB).execute_in_process(instance=instance)
    assert result.success
    [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = {k: getattr(v, "value", v) for k, v in output.event_specific_data.metadata.items()}
    assert metadata["versions_before"] > metadata["versions_after"] and metadata["retention_minutes"] == 0
    assert metadata["fragments_after"] <= metadata["fragments_before"]
    assert metadata["tables"]["embeddings"]["indexes_created"] == ["fts:text"]
    assert LanceStore(lancedb_uri).table("doc_ledger").list_versions()[-1]["version"] > len(versions_before) - 1
    assert len(LanceStore(lancedb_uri).table("doc_ledger").list_versions()) <= 3


def test_versions_a_running_sync_may_read_are_kept(local_env, instance, lancedb_uri):
    local_env.setenv("RAG_MAINTENANCE_RETENTION_MINUTES", "0")
    assert materialize_partition(instance, "hr").success
    settings = load_settings()
    assert in_flight_since(instance, settings) is None
    run = create_run_for_test(instance, job_name="local_sync", status=dg.DagsterRunStatus.STARTED,
                              tags={"dagster/partition": "eng"})
    started = in_flight_since(instance, settings)
    assert started is not None and abs((datetime.now(UTC) - started).total_seconds()) < 120
    versions = len(LanceStore(lancedb_uri).table("embeddings").list_versions())
    time.sleep(0.1)
    result = local_definitions().resolve_job_def(MAINTENANCE_JOB).execute_in_process(instance=instance)
    assert result.success
    # Retention zero, but every version since the running sync started is still there.
    assert len(LanceStore(lancedb_uri).table("embeddings").list_versions()) >= versions
    instance.report_run_canceled(instance.get_run_by_id(run.run_id))
    assert in_flight_since(instance, settings) is None
    assert timedelta(0) <= datetime.now(UTC) - started
