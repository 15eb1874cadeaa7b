"""One sync job per source, so its runs read well in the UI and the CLI can launch it by name."""

from __future__ import annotations

import dagster as dg

from rag_sync_pipeline.settings import SourceConfig


def sync_job_name(source_name: str) -> str:
    return f"{source_name}_sync"


def build_sync_job(config: SourceConfig, partitions: dg.PartitionsDefinition,
                   *scheduled_checks: dg.AssetChecksDefinition) -> dg.UnresolvedAssetJobDefinition:
    """The four stages with their invariant checks. The source health check runs in `check_sources` and the
    freshness check in `check_freshness` only, so a sync does not spend API calls or time on them."""
    return dg.define_asset_job(
        name=sync_job_name(config.name),
        selection=dg.AssetSelection.groups(config.name) - dg.AssetSelection.checks(*scheduled_checks),
        partitions_def=partitions,
        description=f"Sync one partition of {config.name} through all four stages.",
        tags={"rag_sync/source": config.name},
    )


FRESHNESS_JOB = "check_freshness"
FRESHNESS_SCHEDULE = "check_freshness_schedule"


def build_freshness_job(freshness_checks: list[dg.AssetChecksDefinition]) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(FRESHNESS_JOB, selection=dg.AssetSelection.checks(*freshness_checks),
                               description="Turn a source's freshness check red when one of its partitions has "
                                           "not synced within the source's freshness bound.")


def build_freshness_schedule(cron: str, job) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(name=FRESHNESS_SCHEDULE, job=job, cron_schedule=cron,
                                 default_status=dg.DefaultScheduleStatus.RUNNING,
                                 description="Evaluates every source's freshness check (RAG_FRESHNESS_CHECK_CRON).")
