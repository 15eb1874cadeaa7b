"""The maintenance job and its daily schedule: compact, prune and index every table, and report orphans.

Pruning must never delete a version that a running sync started from. The job asks the instance for the
sync runs still in progress and passes the earliest start time to `store.maintenance.maintain`, which keeps
every version committed since then (plus a margin) whatever the retention age says. `rag-sync cleanup` does
the same through `DagsterInstance.get()`.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg

from rag_sync_pipeline.defs.jobs import sync_job_name
from rag_sync_pipeline.defs.resources import LanceDBResource
from rag_sync_pipeline.settings import Settings
from rag_sync_pipeline.store.maintenance import MaintenanceReport, maintain

MAINTENANCE_JOB = "maintain_tables"
MAINTENANCE_SCHEDULE = "maintain_tables_daily"
RUNNING_STATUSES = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def in_flight_since(instance: dg.DagsterInstance, settings: Settings) -> datetime | None:
    """When the oldest sync run that is still running started (None if none is running)."""
    earliest = None
    for config in settings.sources:
        records = instance.get_run_records(filters=dg.RunsFilter(job_name=sync_job_name(config.name),
                                                                 statuses=RUNNING_STATUSES))
        for record in records:
            started = (datetime.fromtimestamp(record.start_time, tz=UTC) if record.start_time
                       else record.create_timestamp)
            if started.tzinfo is None:
                started = started.replace(tzinfo=UTC)
            earliest = started if earliest is None else min(earliest, started)
    return earliest


def report_metadata(report: MaintenanceReport) -> dict:
    before, after = report.totals("before"), report.totals("after")
    metadata: dict = {f"{key}_{when}": value for when, totals in (("before", before), ("after", after))
                      for key, value in totals.items()}
    metadata["retention_minutes"] = report.retention.total_seconds() / 60
    metadata["versions_kept_since"] = report.kept_since.isoformat()
    metadata["tables"] = dg.MetadataValue.json({t.table: {
        "versions": [t.before.versions, t.after.versions], "fragments": [t.before.fragments, t.after.fragments],
        "bytes": [t.before.bytes, t.after.bytes], "rows": t.after.rows, "indexes_created": t.indexes_created,
        "error": t.error} for t in report.tables})
    return metadata


def build_maintenance_job(settings: Settings) -> dg.JobDefinition:
    @dg.op(description="Compact small fragments, prune versions older than the retention age (never one a "
                       "running sync may read), create or optimise the vector and full-text indexes.")
    def optimize_tables(context: dg.OpExecutionContext, lancedb: LanceDBResource) -> dg.Output[dict]:
        store = lancedb.get_store()
        floor = in_flight_since(context.instance, settings)
        if floor:
            context.log.info(f"a sync has been running since {floor.isoformat()}: its versions are kept")
        report = maintain(store.db, retention=timedelta(minutes=settings.maintenance_retention_minutes),
                          in_flight_since=floor, vector_index_min_rows=settings.vector_index_min_rows,
                          log=context.log.info)
        if not report.ok:
            raise dg.Failure(description="; ".join(t.error for t in report.tables if t.error),
                             metadata=report_metadata(report))
        return dg.Output({t.table: t.as_dict() for t in report.tables}, metadata=report_metadata(report))

    @dg.job(name=MAINTENANCE_JOB, description="Daily upkeep of every LanceDB table: compaction, version "
                                              "pruning, indexes; reports what changed.",
            tags={"rag_sync/maintenance": "true"})
    def maintain_tables():
        optimize_tables()

    return maintain_tables


def build_maintenance_schedule(settings: Settings, job: dg.JobDefinition) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(name=MAINTENANCE_SCHEDULE, job=job, cron_schedule=settings.maintenance_cron,
                                 default_status=dg.DefaultScheduleStatus.RUNNING,
                                 description="Runs the table maintenance once a day.")


def live_partitions(settings: Settings, instance: dg.DagsterInstance) -> dict[str, set[str] | None]:
    """Per configured source, the partitions that exist: configured ones plus the instance's dynamic ones.

    A source whose partitions cannot be listed right now maps to None, so cleanup leaves all its rows alone.
    """
    from rag_sync_pipeline.defs.assets import partitions_def_for
    from rag_sync_pipeline.defs.clients import source_for

    live: dict[str, set[str] | None] = {}
    for config in settings.sources:
        try:
            source = source_for(config)
            try:
                configured = set(source.partitions())
            finally:
                source.close()
        except Exception:  # unreachable or misconfigured: we cannot tell what is gone, so nothing is
            live[config.name] = None
            continue
        live[config.name] = configured | set(instance.get_dynamic_partitions(partitions_def_for(config).name))
    return live


def busy_partitions(settings: Settings, instance: dg.DagsterInstance) -> set[tuple[str, str]]:
    """(source, partition) pairs with a sync run queued or in flight."""
    from dagster._core.storage.dagster_run import NOT_FINISHED_STATUSES

    busy = set()
    for config in settings.sources:
        for record in instance.get_run_records(filters=dg.RunsFilter(job_name=sync_job_name(config.name),
                                                                     statuses=list(NOT_FINISHED_STATUSES))):
            partition = record.dagster_run.tags.get("dagster/partition")
            if partition:
                busy.add((config.name, partition))
    return busy
