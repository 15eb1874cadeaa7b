"""Helpers to materialize a source's stages for one partition, as the Dagster tests do."""

from __future__ import annotations

import dagster as dg

from rag_sync_pipeline.definitions import build_definitions
from rag_sync_pipeline.defs.assets import partitions_def_for
from rag_sync_pipeline.defs.jobs import sync_job_name
from rag_sync_pipeline.settings import load_settings


def local_definitions() -> dg.Definitions:
    return build_definitions(load_settings())


def materialize_partition(instance: dg.DagsterInstance, partition: str, *, stages: tuple[str, ...] | None = None,
                          tags: dict[str, str] | None = None, source: str = "local",
                          raise_on_error: bool = True) -> dg.ExecuteInJobResult:
    settings = load_settings()
    definitions = build_definitions(settings)
    config = settings.source(source)
    partitions_name = partitions_def_for(config).name
    if partition not in instance.get_dynamic_partitions(partitions_name):
        instance.add_dynamic_partitions(partitions_name, [partition])
    job = definitions.resolve_job_def(sync_job_name(source))
    selection = None if stages is None else [dg.AssetKey([source, stage]) for stage in stages]
    return job.execute_in_process(partition_key=partition, instance=instance, tags=tags or {},
                                  asset_selection=selection, raise_on_error=raise_on_error)


def stage_metadata(result) -> dict[str, dict]:
    """Materialization metadata per stage name, values unwrapped."""
    stages = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        stages[materialization.asset_key.path[-1]] = {k: getattr(v, "value", v) for k, v in
                                                      materialization.metadata.items()}
    return stages


def check_results(result) -> dict[str, bool]:
    """Check outcomes keyed `stage/check_name`."""
    evaluations = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    return {f"{e.asset_key.path[-1]}/{e.check_name}": e.passed for e in evaluations}
