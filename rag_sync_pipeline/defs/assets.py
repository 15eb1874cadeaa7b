"""The asset factory: four partitioned stage assets per source, one DynamicPartitionsDefinition each.

    <source>/raw_documents -> <source>/markdown -> <source>/chunks -> <source>/embeddings

Everything a run needs comes from its partition key, its tags and the resources, so a sensor-triggered run,
a backfill from the UI and `rag-sync sync` do exactly the same work. The source client is built inside the
run from the configuration and the environment, so no secret is part of the definitions or of run config.
"""


from datetime import timedelta

import dagster as dg

from rag_sync_pipeline.defs import checks, exclusive
from rag_sync_pipeline.defs.clients import source_for
from rag_sync_pipeline.defs.resources import EmbeddingModelResource, LanceDBResource, SourceSecretsResource
from rag_sync_pipeline.settings import Settings, SourceConfig
from rag_sync_pipeline.sources import PartitionError
from rag_sync_pipeline.store import LanceStore
from rag_sync_pipeline.store.lance import now
from rag_sync_pipeline.sync import lookahead
from rag_sync_pipeline.sync.freshness import health_markdown, partition_health
from rag_sync_pipeline.sync.report import StageReport
from rag_sync_pipeline.sync.stages import (
    StageRun,
    cached_vectors,
    markdown_of,
    sync_chunks,
    sync_embeddings,
    sync_markdown,
    sync_raw,
)

FULL_REFRESH_TAG = "rag_sync/full_refresh"
RECONCILE_TAG = "rag_sync/reconcile"
STAGE_DESCRIPTIONS = {
    "raw_documents": "Documents as the source serves them, fetched only when their version token moved.",
    "markdown": "Each document converted to Markdown, with its title, url and hierarchy path.",
    "chunks": "Structure-aware chunks bounded by the embedding model's token window, with heading paths.",
    "embeddings": "The table RAG applications query: id, vector, text, metadata, plus filter columns.",
}


def partitions_def_for(config: SourceConfig) -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(name=f"{config.name}_partitions")


def stage_key(config: SourceConfig, stage: str) -> dg.AssetKey:
    return dg.AssetKey([config.name, stage])


def _stage_run(context: dg.AssetExecutionContext, store: LanceStore, config: SourceConfig,
               settings: Settings) -> StageRun:
    try:
        exclusive.wait_for_earlier_runs(context.instance, context.run.run_id, config.name, context.partition_key,
                                        log=context.log.info)
    except exclusive.PartitionBusy as error:
        raise dg.Failure(description=str(error)) from None
    return StageRun(
        store=store,
        source=config.name,
        partition=context.partition_key,
        run_id=context.run.run_id,
        full_refresh=context.run.tags.get(FULL_REFRESH_TAG, "").lower() == "true",
        documents_per_commit=settings.documents_per_commit,
        max_markdown_bytes=settings.max_markdown_bytes,
        fetch_concurrency=settings.fetch_concurrency,
        log=context.log.info,
    )


def _run_embeds(context: dg.AssetExecutionContext, config: SourceConfig) -> bool:
    selection = context.run.asset_selection  # None or empty: the whole job
    return not selection or stage_key(config, "embeddings") in selection


def _look_ahead_key(context: dg.AssetExecutionContext, config: SourceConfig) -> tuple[str, str, str]:
    return context.run.run_id, config.name, context.partition_key


def _start_look_ahead(context: dg.AssetExecutionContext, config: SourceConfig, run: StageRun,
                      embedding_model: EmbeddingModelResource) -> lookahead.LookAhead | None:
    """Load the model and encode while documents are fetched (the stages share this process:
    in_process_executor); the embeddings step of the same run takes the vectors."""
    embedder = embedding_model.get_embedder()
    run.warm_up = embedder.warm_up
    ahead = lookahead.start(_look_ahead_key(context, config), embedder, embedding_model.get_chunker,
                            lambda row: markdown_of(run, row)[0],
                            lambda hashes: cached_vectors(run, embedder.model_id, hashes, ("text_hash",)))
    run.look_ahead = ahead.submit if ahead is not None else None
    return ahead


def _metadata(report: StageReport, store: LanceStore, table: str) -> dict:
    metadata = {k: v for k, v in report.as_dict().items() if k not in {"stage", "failures", "mark", "skipped"}}
    metadata["table_version"] = store.version(table) or 0
    metadata["mark"] = report.mark or ""
    if report.failures:
        metadata["failures"] = dg.MetadataValue.md("\n".join(f"- {f}" for f in report.failures))
    if report.skipped:
        metadata["skipped_reasons"] = dg.MetadataValue.json(dict(sorted(report.skipped.items())))
    return metadata


def _api_calls_of_run(context: dg.AssetExecutionContext, config: SourceConfig) -> int:
    """The API calls the raw stage made in this run (0 when this run did not include it)."""
    records = context.instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=stage_key(config, "raw_documents"), asset_partitions=[context.partition_key]), limit=1).records
    if not records or records[0].run_id != context.run.run_id:
        return 0
    value = records[0].asset_materialization.metadata.get("api_calls")
    return int(value.value) if value is not None else 0


def _sync_health(context: dg.AssetExecutionContext, store: LanceStore, config: SourceConfig,
                 partitions: dg.DynamicPartitionsDefinition) -> dict:
    """The final stage's at-a-glance health: this partition's last sync and totals, and a table of all the
    source's partitions (last sync, documents, chunks, failures, fresh or not)."""
    bound = timedelta(minutes=config.freshness_minutes)
    rows = partition_health(store, config.name, context.instance.get_dynamic_partitions(partitions.name), bound,
                            now())
    mine = next(row for row in rows if row.partition == context.partition_key)
    return {
        "last_synced_at": dg.MetadataValue.timestamp(mine.synced_at) if mine.synced_at else "never",
        "documents": mine.documents,
        "chunks": mine.chunks,
        "open_failures": mine.failures,
        "api_calls": _api_calls_of_run(context, config),
        "sync_health": dg.MetadataValue.md(health_markdown(rows, bound)),
    }


def build_source_assets(config: SourceConfig, settings: Settings) -> list[dg.AssetsDefinition]:
    partitions = partitions_def_for(config)
    common = dict(partitions_def=partitions, group_name=config.name, kinds={"lancedb", "python"})

    @dg.asset(key=stage_key(config, "raw_documents"), description=STAGE_DESCRIPTIONS["raw_documents"],
              check_specs=checks.specs_for("raw_documents", stage_key(config, "raw_documents"), partitions),
              pool=config.api_pool, **common)
    def raw_documents(context: dg.AssetExecutionContext, lancedb: LanceDBResource,
                      source_secrets: SourceSecretsResource,
                      embedding_model: EmbeddingModelResource) -> dg.MaterializeResult:
        store = lancedb.get_store()
        source = source_for(config, source_secrets.values)
        ahead = None
        try:
            run = _stage_run(context, store, config, settings)
            if _run_embeds(context, config):
                ahead = _start_look_ahead(context, config, run, embedding_model)
            reconcile = context.run.tags.get(RECONCILE_TAG, "").lower() == "true"
            report = sync_raw(run, source, reconcile=reconcile)
        except PartitionError as error:
            raise dg.Failure(description=str(error)) from None
        finally:
            source.close()
            if ahead is not None:
                ahead.stop()  # encoding beside the CPU-bound markdown and chunks stages slowed them more than it saved
        return dg.MaterializeResult(metadata=_metadata(report, store, "raw_documents"),
                                    check_results=[checks.failures_check(report)])

    @dg.asset(key=stage_key(config, "markdown"), deps=[raw_documents], description=STAGE_DESCRIPTIONS["markdown"],
              check_specs=checks.specs_for("markdown", stage_key(config, "markdown"), partitions), **common)
    def markdown(context: dg.AssetExecutionContext, lancedb: LanceDBResource) -> dg.MaterializeResult:
        store = lancedb.get_store()
        report = sync_markdown(_stage_run(context, store, config, settings))
        return dg.MaterializeResult(metadata=_metadata(report, store, "markdown"),
                                    check_results=[checks.failures_check(report)])

    @dg.asset(key=stage_key(config, "chunks"), deps=[markdown], description=STAGE_DESCRIPTIONS["chunks"],
              check_specs=checks.specs_for("chunks", stage_key(config, "chunks"), partitions), **common)
    def chunks(context: dg.AssetExecutionContext, lancedb: LanceDBResource,
               embedding_model: EmbeddingModelResource) -> dg.MaterializeResult:
        store = lancedb.get_store()
        chunker = embedding_model.get_chunker()
        run = _stage_run(context, store, config, settings)
        report = sync_chunks(run, chunker, embedding_model.get_embedder().model_id)
        return dg.MaterializeResult(
            metadata=_metadata(report, store, "chunks"),
            check_results=[checks.token_window_check(store, config.name, run.partition, chunker.max_tokens)])

    @dg.asset(key=stage_key(config, "embeddings"), deps=[chunks], description=STAGE_DESCRIPTIONS["embeddings"],
              check_specs=checks.specs_for("embeddings", stage_key(config, "embeddings"), partitions), **common)
    def embeddings(context: dg.AssetExecutionContext, lancedb: LanceDBResource,
                   embedding_model: EmbeddingModelResource) -> dg.MaterializeResult:
        store = lancedb.get_store()
        embedder = embedding_model.get_embedder()
        run = _stage_run(context, store, config, settings)
        report = sync_embeddings(run, embedder, lookahead.finish(_look_ahead_key(context, config)))
        metadata = {**_metadata(report, store, "embeddings"), "model": embedder.model_id,
                    **_sync_health(context, store, config, partitions)}
        return dg.MaterializeResult(metadata=metadata, check_results=[
            checks.vectors_check(store, config.name, run.partition, embedder.dimension),
            checks.orphans_check(store, config.name, run.partition),
        ])

    return [raw_documents, markdown, chunks, embeddings]
