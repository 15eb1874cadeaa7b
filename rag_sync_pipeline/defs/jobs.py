"""One sync job per source, so its runs read well in the UI and the CLI can launch it by name."""

from __future__ import annotations

import dagster as dg

from rag_sync_pipeline.settings import SourceConfig


def sync_job_name(source_name: str) -> str:
    return f"{source_name}_sync"


def build_sync_job(config: SourceConfig, partitions: dg.PartitionsDefinition,
                   health_check: dg.AssetChecksDefinition) -> dg.UnresolvedAssetJobDefinition:
    """The four stages with their invariant checks; the source health check runs in `check_sources` only,
    so a sync does not spend API calls on it."""
    return dg.define_asset_job(
        name=sync_job_name(config.name),
        selection=dg.AssetSelection.groups(config.name) - dg.AssetSelection.checks(health_check),
        partitions_def=partitions,
        description=f"Sync one partition of {config.name} through all four stages.",
        tags={"rag_sync/source": config.name},
    )
