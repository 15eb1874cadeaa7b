"""rag-sync: sync, search and status for people and scripts.

`sync` runs a source's job through Dagster in this process, against the instance in DAGSTER_HOME, so its runs
and materializations appear in the UI exactly like sensor-triggered ones.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path

import click

from rag_sync_pipeline.settings import ConfigurationError, load_settings

SUMMARY_KEYS = ("documents_added", "documents_updated", "documents_deleted", "documents_unchanged",
                "documents_failed", "chunks_embedded", "chunks_reused")


def _instance():
    from dagster import DagsterInstance

    if not os.environ.get("DAGSTER_HOME"):
        home = Path.cwd() / ".dagster_home"
        home.mkdir(exist_ok=True)
        os.environ["DAGSTER_HOME"] = str(home)
    return DagsterInstance.get()


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def _stage_metadata(result) -> dict[str, dict]:
    stages = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        stage = materialization.asset_key.path[-1]
        stages[stage] = {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
    return stages


def _failure_message(result) -> str:
    """Why a run failed: the step's own message (e.g. "bucket 'x' does not exist"), not "step failed"."""
    for event in result.all_events:
        if event.is_step_failure:
            data = event.event_specific_data
            if data.user_failure_data and data.user_failure_data.description:
                return data.user_failure_data.description
            if data.error:
                return data.error.message.strip()
    failure = next((e for e in result.all_events if e.is_failure), None)
    return failure.message if failure else "run failed"


def summarize(source: str, partition: str, run_id: str, success: bool, stages: dict[str, dict]) -> dict:
    raw, final = stages.get("raw_documents", {}), stages.get("embeddings", {})
    summary = {"source": source, "partition": partition, "run_id": run_id, "success": success}
    for key in SUMMARY_KEYS[:4]:
        summary[key] = int(raw.get(key, 0))
    summary["documents_failed"] = sum(int(s.get("documents_failed", 0)) for s in stages.values())
    summary["documents_skipped"] = int(raw.get("documents_skipped", 0))
    summary["chunks_embedded"] = int(final.get("chunks_embedded", 0))
    summary["chunks_reused"] = int(final.get("chunks_reused", 0))
    summary["documents_total"] = int(final.get("documents_total", 0))
    summary["chunks_total"] = int(final.get("rows_total", 0))
    return summary


@click.group()
def main() -> None:
    """Keep a RAG knowledge base in LanceDB in sync with its sources."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


@main.command()
@click.option("--source", "source_name", help="Only this source (default: every configured source).")
@click.option("--partition", help="Only this partition (space, bucket, database, folder).")
@click.option("--full-refresh", is_flag=True, help="Reprocess every document (vectors are still reused).")
@click.option("--reconcile", is_flag=True, help="List every document now to find deletions, whatever the "
                                                 "source's deletion strategy.")
@click.option("--wait", "wait_s", default=1800, show_default=True, type=click.IntRange(min=0),
              help="Seconds to wait for a run of the same partition that is already in flight (queued or running) "
                   "before giving up on that partition.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def sync(source_name: str | None, partition: str | None, full_refresh: bool, reconcile: bool, wait_s: int,
         as_json: bool) -> None:
    """Sync partitions now, through Dagster, recorded in the instance.

    One run per partition at a time, as for runs launched by Dagster: a partition with a run in flight is
    synced once that run has finished (see `rag_sync_pipeline.defs.exclusive`)."""
    try:
        settings = load_settings()
        configs = [settings.source(source_name)] if source_name else list(settings.sources)
    except ConfigurationError as error:
        _fail(str(error))
    if partition and not source_name and len(configs) > 1:
        _fail("--partition needs --source when several sources are configured")
    current: set[tuple[str, str]] = set()
    checked: set[tuple[str, str]] = set()
    if not (full_refresh or reconcile):
        # Before Dagster is even imported: the common case, nothing changed, answers in about two seconds.
        all_current = _probe_partitions(settings, configs, partition, current, checked)
        if all_current and checked:
            _print_unchanged(settings, sorted(checked), as_json)
            sys.exit(0)
    from rag_sync_pipeline.definitions import build_definitions
    from rag_sync_pipeline.defs.assets import FULL_REFRESH_TAG, RECONCILE_TAG, partitions_def_for
    from rag_sync_pipeline.defs.clients import source_for
    from rag_sync_pipeline.defs.exclusive import PartitionBusy, wait_until_idle
    from rag_sync_pipeline.defs.jobs import sync_job_name
    from rag_sync_pipeline.sources import SourceError

    definitions = build_definitions(settings)
    instance = _instance()
    summaries = []
    for config in configs:
        partitions_name = partitions_def_for(config).name
        source = source_for(config)
        try:
            available = source.partitions()
            target_partition = source.normalize_partition(partition) if partition else None
        except SourceError as error:
            _fail(str(error))
        finally:
            source.close()
        known = set(instance.get_dynamic_partitions(partitions_name))
        if target_partition and target_partition not in available and target_partition not in known:
            choices = ", ".join(available) or "none"
            _fail(f"source {config.name!r} has no partition {partition!r} (available: {choices})")
        targets = [target_partition] if target_partition else sorted(set(available) | known)
        new = [p for p in targets if p not in known]
        if new:
            instance.add_dynamic_partitions(partitions_name, new)
        job = definitions.resolve_job_def(sync_job_name(config.name))
        for target in targets:
            tags = {"rag_sync/trigger": "cli", **({FULL_REFRESH_TAG: "true"} if full_refresh else {}),
                    **({RECONCILE_TAG: "true"} if reconcile else {})}
            try:
                wait_until_idle(instance, config.name, target, wait_s, log=lambda line: click.echo(line, err=True))
            except PartitionBusy as error:
                summaries.append({**summarize(config.name, target, "", False, {}), "error": str(error)})
                click.echo(f"{config.name}/{target}: SKIPPED: {error}", err=True)
                continue
            if not (full_refresh or reconcile) and ((config.name, target) in current or (
                    (config.name, target) not in checked and _probe_partitions(settings, [config], target))):
                summaries.append(_unchanged_summary(settings, config.name, target))
                if not as_json:
                    click.echo(f"{config.name}/{target}: unchanged since the last sync; no run started")
                continue
            result = job.execute_in_process(partition_key=target, instance=instance, tags=tags, raise_on_error=False)
            summary = summarize(config.name, target, result.run_id, result.success, _stage_metadata(result))
            if not result.success:
                summary["error"] = _failure_message(result)
            summaries.append(summary)
            if not as_json:
                state = "ok" if result.success else f"FAILED: {summary['error']}"
                click.echo(f"{config.name}/{target}: {state} | " + ", ".join(f"{k}={summary[k]}" for k in SUMMARY_KEYS)
                           + f" | run {result.run_id}")
    if as_json:
        click.echo(json.dumps(summaries if len(summaries) != 1 else summaries[0], indent=2))
    sys.exit(0 if all(s["success"] for s in summaries) else 1)


def _probe_partitions(settings, configs, partition: str | None, current: set | None = None,
                      checked: set | None = None) -> bool:
    """Whether every partition asked for (`partition`, or each that the sources list) is up to date: every
    stage indexed what the source's cheap probe still answers. Then no run is needed and none is started
    (importing Dagster, starting a run and loading the model cost seconds). Stops at the first that is not;
    `current` and `checked` collect (source, partition) pairs. Any error is left for the run to report."""
    from rag_sync_pipeline.defs.clients import source_for
    from rag_sync_pipeline.sources import SourceError
    from rag_sync_pipeline.store import open_store
    from rag_sync_pipeline.sync.up_to_date import partition_is_current

    current = set() if current is None else current
    checked = set() if checked is None else checked
    store = open_store(settings)
    for config in configs:
        try:
            source = source_for(config)
        except (SourceError, ConfigurationError):
            return False
        try:
            for name in [source.normalize_partition(partition)] if partition else source.partitions():
                checked.add((config.name, name))
                if not partition_is_current(store, source, config.name, name):
                    return False
                current.add((config.name, name))
        except SourceError:
            return False
        finally:
            source.close()
    return True


def _print_unchanged(settings, partitions: list[tuple[str, str]], as_json: bool) -> None:
    summaries = [_unchanged_summary(settings, source, partition) for source, partition in partitions]
    if as_json:
        click.echo(json.dumps(summaries if len(summaries) != 1 else summaries[0], indent=2))
    for source, partition in [] if as_json else partitions:
        click.echo(f"{source}/{partition}: unchanged since the last sync; no run started")


def _unchanged_summary(settings, source_name: str, partition: str) -> dict:
    from rag_sync_pipeline.store import open_store

    final = open_store(settings).read_partition_state(source_name, partition).get("embeddings", {})
    summary = summarize(source_name, partition, "", True, {})
    summary.update(unchanged=True, documents_total=int(final.get("documents") or 0),
                   chunks_total=int(final.get("rows") or 0))
    return summary


@main.command()
@click.argument("query")
@click.option("--source", "source_name", help="Only chunks of this source.")
@click.option("--partition", help="Only chunks of this partition.")
@click.option("-k", "k", default=5, show_default=True, help="How many chunks to return.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def search(query: str, source_name: str | None, partition: str | None, k: int, as_json: bool) -> None:
    """Find the chunks closest to QUERY."""
    from rag_sync_pipeline.store import open_store

    try:
        settings = load_settings()
    except ConfigurationError as error:
        _fail(str(error))
    from rag_sync_pipeline.store.index_settings import search_query
    from rag_sync_pipeline.transform.embedding import query_encoder

    results = search_query(open_store(settings), query,
                           lambda declared: query_encoder(declared, settings.embedding_model,
                                                          settings.embedding_device, settings.embedding_backend),
                           k, source_name, partition)
    if as_json:
        click.echo(json.dumps(results, indent=2, ensure_ascii=False))
        return
    if not results:
        click.echo("no results (has anything been synced into " + settings.lancedb_uri + "?)")
    for rank, row in enumerate(results, 1):
        click.echo(f"{rank}. [{row['score']:.3f}] {row['source']}/{row['partition']} · {row['title']}"
                   + (f" › {row['heading_path']}" if row["heading_path"] else ""))
        click.echo(f"   {row['url']}")
        snippet = " ".join(row["text"].split())
        click.echo(f"   {snippet[:300]}{'…' if len(snippet) > 300 else ''}")


@main.command()
@click.option("--source", "source_name", help="Only this source (default: every configured source).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def check(source_name: str | None, as_json: bool) -> None:
    """Reach each source with its credentials and report what works, without syncing anything."""
    from dataclasses import asdict

    from rag_sync_pipeline.defs.clients import source_for
    from rag_sync_pipeline.sources.health import check_source

    try:
        settings = load_settings()
        configs = [settings.source(source_name)] if source_name else list(settings.sources)
    except ConfigurationError as error:
        _fail(str(error))
    results = []
    for config in configs:
        try:
            source = source_for(config)
        except Exception as error:  # a source that cannot even be built is reported like any other problem
            from rag_sync_pipeline.sources.health import SourceHealth

            results.append(SourceHealth(config.name, False, f"cannot be configured: {error}"))
            continue
        try:
            results.append(check_source(source))
        finally:
            source.close()
    if as_json:
        click.echo(json.dumps([{**asdict(r), "usable": r.usable} for r in results], indent=2))
    else:
        for result in results:
            click.echo(f"{result.source}: {'OK' if result.ok else 'FAILED'} - {result.detail}")
            for partition in result.partitions:
                click.echo(f"  {result.source}/{partition.partition}: {'OK' if partition.ok else 'FAILED'}"
                           f" - {partition.detail}")
    sys.exit(0 if results and all(r.usable for r in results) else 1)


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--source", "source_name", help="Only this source.")
@click.option("--partition", help="Only this partition.")
def export(directory: Path, source_name: str | None, partition: str | None) -> None:
    """Mirror the markdown stage into DIRECTORY as one Markdown file per document, incrementally."""
    from rag_sync_pipeline.mirror import mirror_partition
    from rag_sync_pipeline.store import open_store

    try:
        settings = load_settings()
    except ConfigurationError as error:
        _fail(str(error))
    store = open_store(settings)
    targets = sorted({(r["source"], r["partition"]) for r in store.all_partition_states()
                      if r["stage"] == "markdown"
                      and (not source_name or r["source"] == source_name)
                      and (not partition or r["partition"] == partition)})
    if not targets:
        _fail("nothing to export: no synced partition matches")
    for source, target in targets:
        report = mirror_partition(store, directory, source, target)
        click.echo(f"{source}/{target}: {report.written} written, {report.unchanged} unchanged, "
                   f"{report.removed} removed")


@main.command()
@click.option("--dry-run", is_flag=True, help="List what would be removed and change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def cleanup(dry_run: bool, as_json: bool) -> None:
    """Remove rows that no longer belong, then compact, prune and index every table (like maintain_tables)."""
    from datetime import timedelta

    from rag_sync_pipeline.defs.maintenance import busy_partitions, in_flight_since, live_partitions
    from rag_sync_pipeline.store import open_store
    from rag_sync_pipeline.store.maintenance import maintain, table_stats
    from rag_sync_pipeline.store.orphans import find_orphans, remove_orphans

    try:
        settings = load_settings()
    except ConfigurationError as error:
        _fail(str(error))
    if not os.environ.get("DAGSTER_HOME") and not (Path.cwd() / ".dagster_home").is_dir():
        _fail("cleanup needs the Dagster instance that knows the dynamic partitions: set DAGSTER_HOME")
    instance = _instance()
    store = open_store(settings)
    live = live_partitions(settings, instance)
    orphans = find_orphans(store, live, busy_partitions(settings, instance))
    result: dict = {"dry_run": dry_run, "orphans": [g.as_dict() for g in orphans],
                    "orphan_rows": sum(g.rows for g in orphans),
                    "unknown_sources": sorted(name for name, parts in live.items() if parts is None)}
    if dry_run:
        result["tables"] = {name: vars(table_stats(store.table(name))) for name in sorted(store.db.table_names())}
    else:
        result["removed_rows"] = remove_orphans(store, orphans)
        report = maintain(store.db, retention=timedelta(minutes=settings.maintenance_retention_minutes),
                          in_flight_since=in_flight_since(instance, settings),
                          vector_index_min_rows=settings.vector_index_min_rows)
        result["tables"] = {t.table: {"before": vars(t.before), "after": vars(t.after),
                                      "indexes_created": t.indexes_created, "error": t.error} for t in report.tables}
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
    else:
        verb = "would remove" if dry_run else "removed"
        for group in orphans:
            click.echo(f"{verb} {group.rows:>6} rows  {group.kind:<18} {group.table:<16} {group.source}/"
                       f"{group.partition}" + (f"  ({', '.join(group.doc_ids[:5])})" if group.doc_ids else ""))
        if not orphans:
            click.echo("no orphaned rows")
        for name in result["unknown_sources"]:
            click.echo(f"skipped source {name}: its partitions could not be listed")
        for name, stats in result["tables"].items():
            if not dry_run:
                click.echo(f"{name}: versions {stats['before']['versions']} -> {stats['after']['versions']}, "
                           f"fragments {stats['before']['fragments']} -> {stats['after']['fragments']}"
                           + (f", FAILED: {stats['error']}" if stats["error"] else ""))
    sys.exit(0 if dry_run or all(t.get("error") is None for t in result["tables"].values()) else 1)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(as_json: bool) -> None:
    """Each partition's documents, chunks, last sync, freshness and table version."""
    from datetime import timedelta

    from rag_sync_pipeline.store import open_store
    from rag_sync_pipeline.store.lance import now

    try:
        settings = load_settings()
    except ConfigurationError as error:
        _fail(str(error))
    store = open_store(settings)
    by_partition: dict[tuple[str, str], dict] = {}
    for row in store.all_partition_states():
        by_partition.setdefault((row["source"], row["partition"]), {})[row["stage"]] = row
    failures = Counter((failure["source"], failure["partition"]) for failure in store.failures())
    version = store.version("embeddings")
    bounds = {c.name: timedelta(minutes=c.freshness_minutes) for c in settings.sources}
    rows = []
    for (source, partition), stages in sorted(by_partition.items()):
        raw, final = stages.get("raw_documents", {}), stages.get("embeddings", {})
        synced_at = final.get("updated_at")
        fresh = (None if source not in bounds  # a source no longer configured has no bound
                 else synced_at is not None and now() - synced_at <= bounds[source])
        rows.append({
            "source": source, "partition": partition, "documents": raw.get("documents", 0),
            "chunks": final.get("rows", 0), "last_sync": str(final.get("updated_at") or raw.get("updated_at") or ""),
            "in_sync": bool(raw) and raw.get("mark") == final.get("mark"),
            "failures": failures.get((source, partition), 0), "fresh": fresh, "table_version": version,
        })
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("nothing synced yet")
        return
    click.echo(f"{'source':<14}{'partition':<22}{'documents':>10}{'chunks':>8}{'failures':>9}  "
               f"{'in sync':<8}{'fresh':<6}{'last sync':<34}version")
    for r in rows:
        fresh = "-" if r["fresh"] is None else "yes" if r["fresh"] else "NO"
        click.echo(f"{r['source']:<14}{r['partition']:<22}{r['documents']:>10}{r['chunks']:>8}{r['failures']:>9}  "
                   f"{'yes' if r['in_sync'] else 'no':<8}{fresh:<6}{r['last_sync']:<34}{r['table_version']}")


if __name__ == "__main__":
    main()
