"""The production instance (deploy/postgres/dagster.yaml) on the real PostgreSQL server.

One `dagster dev` runs with a DAGSTER_HOME holding that file, unchanged, and DAGSTER_PG_* naming a fresh database.
The local source's sensor (every 5 s) must add two tiny partitions and sync each in its own run; then the test
reads PostgreSQL directly: the runs, the dynamic partitions, the sensor's state and ticks (which name the runs
they requested) and the asset materializations are all there, and nothing was written to SQLite.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.scheduler.instigation import InstigatorState, TickData, TickStatus
from dagster._serdes import deserialize_value

from rag_sync_pipeline_tests.e2e_runs import wait_for_successful_partitions
from rag_sync_pipeline_tests.e2e_support import DagsterDev, clean_environment
from rag_sync_pipeline_tests.postgres_support import fresh_database, instance_environment, postgres_home, query

pytestmark = pytest.mark.timeout(900)

JOB = "local_sync"
SENSOR = "local_sync_sensor"
PARTITIONS = {"eng", "hr"}
STAGES = ("raw_documents", "markdown", "chunks", "embeddings")


def write_tiny_corpus(root: Path) -> Path:
    (root / "eng").mkdir(parents=True)
    (root / "hr").mkdir()
    (root / "eng" / "deploys.md").write_text("# Deploys\n\nDeploys freeze on Fridays after 14:00 CET.\n")
    (root / "eng" / "oncall.txt").write_text("The on-call engineer answers pages within 15 minutes.\n")
    (root / "hr" / "leave.txt").write_text("Full-time employees get 28 days of paid annual leave.\n")
    return root


@pytest.fixture(scope="module")
def database():
    with fresh_database("rag_sync_pg_instance") as name:
        yield name


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, database):
    base = tmp_path_factory.mktemp("postgres_instance")
    home = postgres_home(base / "dagster_home")
    env = clean_environment(
        RAG_LOCAL_ROOT=str(write_tiny_corpus(base / "corpus")),
        RAG_LANCEDB_URI=str(base / "lancedb"),
        DAGSTER_HOME=str(home),
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        LOCAL_SYNC_INTERVAL_SECONDS="5",
        **instance_environment(database),
    )
    dev = DagsterDev(env, base / "dagster_dev.log")
    dev.start()
    try:
        dev.wait_until_ready(timeout_s=180)
        yield dev
    finally:
        dev.stop()


@pytest.fixture(scope="module")
def synced(deployment):
    return wait_for_successful_partitions(deployment, {JOB: PARTITIONS}, timeout_s=420)


def test_instance_configuration_is_postgres(deployment, database, monkeypatch):
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    for name, value in instance_environment(database).items():
        monkeypatch.setenv(name, value)
    home = deployment.env["DAGSTER_HOME"]
    with dg.DagsterInstance.from_config(home) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert instance.run_monitoring_enabled
    assert not list(Path(home).rglob("*.db")), "a SQLite file was written beside the Postgres instance"


def test_runs_and_dynamic_partitions_are_stored_in_postgres(synced, database):
    runs = query(database, "SELECT run_id, pipeline_name, status FROM runs")
    tags = query(database, "SELECT run_id, key, value FROM run_tags")
    partition_of = {t["run_id"]: t["value"] for t in tags if t["key"] == "dagster/partition"}
    sensor_of = {t["run_id"]: t["value"] for t in tags if t["key"] == "dagster/sensor_name"}
    successful = {partition_of[r["run_id"]] for r in runs
                  if r["pipeline_name"] == JOB and r["status"] == "SUCCESS"}
    assert successful == PARTITIONS, runs
    for (_, partition), run in synced.items():
        assert sensor_of.get(run["runId"]) == SENSOR, (partition, run["runId"], sensor_of)

    stored = query(database, "SELECT partitions_def_name, partition FROM dynamic_partitions")
    assert {(r["partitions_def_name"], r["partition"]) for r in stored} == {("local_partitions", p)
                                                                          for p in PARTITIONS}


def test_sensor_state_and_ticks_are_stored_in_postgres(synced, database):
    states = [deserialize_value(r["instigator_body"], InstigatorState)
              for r in query(database, "SELECT instigator_body FROM instigators WHERE instigator_type = 'SENSOR'")]
    [sensor] = [s for s in states if s.instigator_name == SENSOR]
    # The daemon's own record of the sensor: when it last ticked (and the cursor, which ours leaves empty:
    # the marks live with the data), in Postgres.
    assert sensor.instigator_data.last_tick_timestamp > 0, sensor
    assert sensor.instigator_data.cursor is None, sensor.instigator_data

    ticks = [deserialize_value(r["tick_body"], TickData)
             for r in query(database, "SELECT tick_body FROM job_ticks WHERE type = 'SENSOR'")]
    ticks = [t for t in ticks if t.instigator_name == SENSOR]
    requested = {run_id for tick in ticks for run_id in tick.run_ids}
    # The ticks that requested the runs are stored with the ids of the runs they launched, and the runs
    # those ids name are the ones that succeeded: a sensor tick followed by a run, end to end.
    assert {run["runId"] for run in synced.values()} <= requested, (requested, synced)
    assert any(t.status == TickStatus.SKIPPED for t in ticks), "no later tick found the partitions unchanged"
    added = {p for t in ticks for request in t.dynamic_partitions_request_results
             for p in request.added_partitions or []}
    assert added == PARTITIONS, added


def test_asset_materializations_are_stored_in_postgres(synced, database):
    events = query(database, "SELECT run_id, asset_key, partition FROM event_logs "
                             "WHERE dagster_event_type = 'ASSET_MATERIALIZATION'")
    by_run = {}
    for event in events:
        by_run.setdefault(event["run_id"], set()).add((tuple(json.loads(event["asset_key"])), event["partition"]))
    for (_, partition), run in synced.items():
        assert by_run.get(run["runId"]) == {(("local", stage), partition) for stage in STAGES}, by_run

    asset_keys = {tuple(json.loads(r["asset_key"])) for r in query(database, "SELECT asset_key FROM asset_keys")}
    assert {("local", stage) for stage in STAGES} <= asset_keys, asset_keys
