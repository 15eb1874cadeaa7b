"""The sensor factory: one sensor per source that adds partitions and requests runs for changed ones.

The marks live with the data (the `partition_state` table), not in the sensor's cursor: a cursor is saved when
the tick ends, before the run even starts, so it would lose a failed run's changes. A partition needs a run
when the source's current mark differs from the mark its raw stage committed, or when the last stage has not
caught up with the raw stage (a run that died half-way). The run key names the marks and the partition's last
run, so repeated ticks do not launch the same work twice, and a failed run can be retried. A partition whose
last sync is older than half its source's freshness bound gets a run even when unchanged (cheap: nothing is
fetched), so "last synced" always means "last confirmed current" (see `sync.freshness`).
"""


import time
from datetime import timedelta

import dagster as dg
from dagster._core.storage.dagster_run import NOT_FINISHED_STATUSES

from rag_sync_pipeline.defs.assets import RECONCILE_TAG
from rag_sync_pipeline.defs.clients import source_for
from rag_sync_pipeline.defs.resources import LanceDBResource, SourceSecretsResource
from rag_sync_pipeline.settings import Settings, SourceConfig
from rag_sync_pipeline.sources import SourceError
from rag_sync_pipeline.store.lance import now
from rag_sync_pipeline.sync.up_to_date import read_marks

RETRY_FAILED_AFTER_SECONDS = 300
MAX_RUNS_PER_TICK = 25


def _last_run(instance: dg.DagsterInstance, job_name: str, partition: str):
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=job_name, tags={"dagster/partition": partition}), limit=1)
    return records[0] if records else None


def build_sync_sensor(config: SourceConfig, settings: Settings, job, partitions: dg.DynamicPartitionsDefinition,
                      source_is_external: bool) -> dg.SensorDefinition:
    running = not source_is_external or settings.external_sync_enabled
    default_status = dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED
    confirm_after = timedelta(minutes=config.freshness_minutes) / 2

    @dg.sensor(name=f"{config.name}_sync_sensor", job=job, minimum_interval_seconds=config.sensor_interval_seconds,
               default_status=default_status,
               description=f"Probes each {config.name} partition cheaply and syncs those that changed.")
    def sync_sensor(context: dg.SensorEvaluationContext, lancedb: LanceDBResource,
                    source_secrets: SourceSecretsResource) -> dg.SensorResult:
        store = lancedb.get_store()
        source = source_for(config, source_secrets.values)
        try:
            configured = source.partitions()
            known = set(context.instance.get_dynamic_partitions(partitions.name))
            new = [p for p in configured if p not in known]
            requests, reasons = [], []
            for partition in sorted(set(configured) | known):
                if len(requests) >= MAX_RUNS_PER_TICK:
                    reasons.append(f"{partition}: waits for a later tick ({MAX_RUNS_PER_TICK} runs per tick)")
                    continue
                last = _last_run(context.instance, job.name, partition)
                if last and last.dagster_run.status in NOT_FINISHED_STATUSES:
                    reasons.append(f"{partition}: run {last.dagster_run.run_id[:8]} in flight")
                    continue
                if (last and last.dagster_run.status == dg.DagsterRunStatus.FAILURE and last.end_time
                        and time.time() - last.end_time < RETRY_FAILED_AFTER_SECONDS):
                    reasons.append(f"{partition}: last run failed, retrying after {RETRY_FAILED_AFTER_SECONDS}s")
                    continue
                marks = read_marks(store, source, config.name, partition)
                committed, indexed, reconcile = marks.committed, marks.indexed, marks.reconcile_due
                try:
                    current = source.probe(partition, committed)
                except SourceError as error:
                    reasons.append(f"{partition}: probe failed: {error}")
                    context.log.warning(f"{config.name} partition {partition}: probe failed: {error}")
                    continue
                confirm = marks.synced_at is not None and now() - marks.synced_at >= confirm_after
                if current == committed and indexed == committed and not reconcile and not confirm:
                    reasons.append(f"{partition}: unchanged")
                    continue
                last_id = last.dagster_run.run_id if last else "none"
                requests.append(dg.RunRequest(
                    partition_key=partition,
                    run_key=f"{partition}|{committed}|{indexed}|{current}|{last_id}",
                    tags={"rag_sync/trigger": "sensor", **({RECONCILE_TAG: "true"} if reconcile else {}),
                          **({"rag_sync/confirm_fresh": "true"} if confirm else {})},
                ))
        finally:
            source.close()
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[partitions.build_add_request(new)] if new else [],
            skip_reason=None if requests else "; ".join(reasons) or "no partitions",
        )

    return sync_sensor
