"""The Definitions, built from the configuration when Dagster loads the code, never at import time."""

from __future__ import annotations

import os

import dagster as dg

from rag_sync_pipeline.defs.assets import build_source_assets, partitions_def_for, stage_key
from rag_sync_pipeline.defs.checks import build_freshness_check, build_source_health_check
from rag_sync_pipeline.defs.clients import secret_variables
from rag_sync_pipeline.defs.jobs import build_freshness_job, build_freshness_schedule, build_sync_job
from rag_sync_pipeline.defs.maintenance import build_maintenance_job, build_maintenance_schedule
from rag_sync_pipeline.defs.resources import EmbeddingModelResource, LanceDBResource, secrets_resource
from rag_sync_pipeline.defs.sensors import build_sync_sensor
from rag_sync_pipeline.settings import Settings, load_settings
from rag_sync_pipeline.sources import SOURCE_TYPES


def build_definitions(settings: Settings) -> dg.Definitions:
    assets, checks, freshness_checks, jobs, sensors = [], [], [], [], []
    for config in settings.sources:
        partitions = partitions_def_for(config)
        assets.extend(build_source_assets(config, settings))
        health_check = build_source_health_check(config, stage_key(config, "raw_documents"))
        freshness_check = build_freshness_check(config, stage_key(config, "embeddings"), partitions)
        checks.append(health_check)
        freshness_checks.append(freshness_check)
        job = build_sync_job(config, partitions, health_check, freshness_check)
        jobs.append(job)
        sensors.append(build_sync_sensor(config, settings, job, partitions, SOURCE_TYPES[config.type].external))
    schedules = []
    if checks:
        jobs.append(dg.define_asset_job("check_sources", selection=dg.AssetSelection.checks(*checks),
                                        description="Reach every source with its credentials; sync nothing."))
        freshness = build_freshness_job(freshness_checks)
        jobs.append(freshness)
        schedules.append(build_freshness_schedule(settings.freshness_check_cron, freshness))
    maintenance = build_maintenance_job(settings)
    jobs.append(maintenance)
    schedules.append(build_maintenance_schedule(settings, maintenance))
    return dg.Definitions(
        assets=assets,
        asset_checks=checks + freshness_checks,
        jobs=jobs,
        sensors=sensors,
        schedules=schedules,
        resources={
            "lancedb": LanceDBResource(uri=settings.lancedb_uri,
                                       storage_options=dict(settings.lancedb_storage_options)),
            "embedding_model": EmbeddingModelResource(
                model=settings.embedding_model, device=settings.embedding_device,
                batch_size=settings.embedding_batch_size, max_tokens=settings.chunk_max_tokens,
                backend=settings.embedding_backend),
            "source_secrets": secrets_resource(
                sorted({name for config in settings.sources for name in secret_variables(config)}), os.environ),
        },
        # One process per run: the model loads once, and LanceDB's runtime is never forked.
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return build_definitions(load_settings())
