"""Sync health at a glance and the freshness check: red when a partition's last sync is older than its bound."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pyarrow as pa

from rag_sync_pipeline.defs.checks import PARTITIONS_FRESH
from rag_sync_pipeline.defs.jobs import FRESHNESS_JOB
from rag_sync_pipeline.settings import load_settings
from rag_sync_pipeline.store import open_store, schemas
from rag_sync_pipeline.sync.freshness import partition_health
from rag_sync_pipeline_tests.dagster_support import local_definitions, materialize_partition, stage_metadata
from rag_sync_pipeline_tests.test_sensors import add_partitions, tick


def backdate_last_sync(partition: str, age: timedelta) -> datetime:
    """Make the partition's last sync `age` old, as if no run had succeeded since then."""
    store = open_store(load_settings())
    state = store.read_partition_state("local", partition)["embeddings"]
    state["updated_at"] = datetime.now(UTC) - age
    table = store.table(schemas.PARTITION_STATE_TABLE)
    (table.merge_insert("key").when_matched_update_all().when_not_matched_insert_all()
        .execute(pa.Table.from_pylist([state], schema=table.schema)))
    return state["updated_at"]


def run_freshness_check(instance: dg.DagsterInstance):
    result = local_definitions().resolve_job_def(FRESHNESS_JOB).execute_in_process(instance=instance)
    assert result.success
    [evaluation] = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert evaluation.check_name == PARTITIONS_FRESH and evaluation.asset_key == dg.AssetKey(["local", "embeddings"])
    return evaluation


def test_partition_health_against_an_injected_clock(local_env, instance):
    assert materialize_partition(instance, "eng").success
    store = open_store(load_settings())
    synced = store.read_partition_state("local", "eng")["embeddings"]["updated_at"]
    bound = timedelta(hours=1)
    [fresh] = partition_health(store, "local", ["eng"], bound, synced + timedelta(minutes=59))
    assert not fresh.stale and fresh.documents == 3 and fresh.chunks >= 3 and fresh.failures == 0
    [stale, never] = partition_health(store, "local", ["eng", "hr"], bound, synced + timedelta(hours=2, minutes=5))
    assert stale.stale and stale.describe(bound) == "eng: last synced 2h 5m ago (bound 1h)"
    assert never.stale and never.describe(bound) == "hr: never synced"


def test_final_stage_metadata_shows_sync_health(local_env, instance, corpus):
    (corpus / "eng" / "broken.txt").write_bytes(b"caf\xe9 au lait")  # not UTF-8: markdown fails on it
    result = materialize_partition(instance, "eng")
    assert materialize_partition(instance, "hr").success
    before = datetime.now(UTC)
    meta = stage_metadata(result)["embeddings"]
    assert meta["documents"] == 3 and meta["chunks"] == meta["rows_total"] > 3
    assert meta["open_failures"] == 1  # the text file that cannot be converted
    assert meta["api_calls"] == stage_metadata(result)["raw_documents"]["api_calls"]
    assert before - timedelta(minutes=2) < datetime.fromtimestamp(meta["last_synced_at"], UTC) <= before
    table = meta["sync_health"]
    assert "| eng |" in table and "| 3 |" in table and "| 1 | yes |" in table
    # The last materialization of hr lists both partitions.
    hr_meta = stage_metadata(materialize_partition(instance, "hr"))["embeddings"]
    assert "| eng |" in hr_meta["sync_health"] and "| hr |" in hr_meta["sync_health"]


def test_freshness_check_turns_red_for_a_stale_partition_and_the_sensor_confirms_it(local_env, instance):
    local_env.setenv("LOCAL_FRESHNESS_MINUTES", "60")
    add_partitions(instance, tick(instance))
    for partition in ("eng", "hr"):
        assert materialize_partition(instance, partition).success

    fresh = run_freshness_check(instance)
    assert fresh.passed, fresh.description
    assert fresh.metadata["stale_partitions"].value == 0

    backdate_last_sync("hr", timedelta(hours=3))
    stale = run_freshness_check(instance)
    assert not stale.passed and stale.severity == dg.AssetCheckSeverity.ERROR
    assert stale.description == "hr: last synced 3h ago (bound 1h)"
    assert stale.metadata["stale_partitions"].value == 1
    assert "| hr |" in stale.metadata["sync_health"].value and "| no |" in stale.metadata["sync_health"].value

    # Nothing changed in hr, but its last sync is older than half the bound: the sensor asks for a run that
    # confirms it is current, and that run makes the check green again.
    requests = tick(instance).run_requests
    assert [(r.partition_key, r.tags.get("rag_sync/confirm_fresh")) for r in requests] == [("hr", "true")]
    confirm = stage_metadata(materialize_partition(instance, "hr", tags=requests[0].tags))
    assert confirm["embeddings"]["chunks_embedded"] == 0 and confirm["raw_documents"]["documents_unchanged"] == 2
    assert run_freshness_check(instance).passed
