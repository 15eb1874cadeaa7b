"""The Notion source through Dagster and the stages, against the loopback simulator."""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from rag_sync_pipeline.definitions import build_definitions
from rag_sync_pipeline.settings import load_settings
from rag_sync_pipeline.sources.notion import NotionSource, build_notion_client
from rag_sync_pipeline.store import LanceStore
from rag_sync_pipeline.store.lance import partition_filter
from rag_sync_pipeline.sync.stages import StageRun, sync_raw
from rag_sync_pipeline_tests.dagster_support import check_results, materialize_partition, stage_metadata
from rag_sync_pipeline_tests.fakes.notion import Fault, block, iso, notion_simulator

QUERY = "POST /v1/data_sources/{id}/query"
DATABASE = "GET /v1/databases/{id}"
CHILDREN = "GET /v1/blocks/{id}/children"
STAGE_TABLES = ("raw_documents", "markdown", "chunks", "embeddings")
TOPICS = ("failover", "backup", "restore", "upgrade", "rollback", "scaling", "rotation", "audit")


@pytest.fixture
def notion():
    with notion_simulator() as simulator:
        yield simulator


@pytest.fixture
def notion_env(clean_env, notion, lancedb_uri):
    clean_env.setenv("RAG_LOCAL_ENABLED", "false")
    clean_env.setenv("RAG_LANCEDB_URI", lancedb_uri)
    clean_env.setenv("NOTION_API_KEY", notion.token)
    clean_env.setenv("NOTION_BASE_URL", notion.base_url)
    clean_env.setenv("NOTION_REQUESTS_PER_SECOND", "2000")  # the simulator sends the 429s; no need to crawl
    return clean_env


def nested_blocks(i: int) -> list[dict]:
    """A row body three levels deep: paragraph, toggle > bullet > paragraph."""
    topic = TOPICS[i % len(TOPICS)]
    deep = {**block("bulleted_list_item", f"Check the {topic} dashboard for service {i}", has_children=True),
            "children": [block("paragraph", f"Deep note {i}: page the {topic} owner if the check fails")]}
    return [block("paragraph", f"Runbook {i} explains the {topic} procedure for service {i}."),
            {**block("toggle", "Details", has_children=True), "children": [deep]}]


def doc_ids(store: LanceStore, table: str, partition: str) -> set[str]:
    return set(store.read(table, partition_filter("notion", partition), ["doc_id"]).column("doc_id").to_pylist())


def sensor_tick(instance: dg.DagsterInstance) -> dg.SensorResult:
    definitions = build_definitions(load_settings())
    sensor = definitions.resolve_sensor_def("notion_sync_sensor")
    context = dg.build_sensor_context(instance=instance, resources=definitions.resources)
    return sensor(context)


def test_500_rows_with_nested_blocks_sync_completely_and_5_edits_fetch_exactly_5_pages(
        notion_env, notion, instance, lancedb_uri):
    database, [source] = notion.add_database("Runbooks")
    rows = [notion.add_row(source, f"Runbook {i}", nested_blocks(i), tags=("ops",)) for i in range(500)]
    notion_env.setenv("NOTION_DATABASE_IDS", database.replace("-", ""))  # undashed in, dashed partitions out

    result = materialize_partition(instance, database, source="notion")
    assert result.success
    stages = stage_metadata(result)
    raw = stages["raw_documents"]
    assert raw["documents_added"] == 500 and raw["documents_failed"] == 0
    # 1 database read + 5 queries of 100 rows + 3 block-children calls per row (page, toggle, bullet).
    assert raw["api_calls"] == 1 + 5 + 500 * 3 == notion.calls[DATABASE] + notion.calls[QUERY] + notion.calls[CHILDREN]
    assert stages["embeddings"]["documents_total"] == 500
    store = LanceStore(lancedb_uri)
    assert all(doc_ids(store, table, database) == set(rows) for table in STAGE_TABLES)
    [row] = store.read("markdown", f"doc_id = '{rows[7]}'").to_pylist()
    assert row["title"] == "Runbook 7" and row["path"] == "Runbooks" and row["url"].startswith("https://www.notion.so/")
    assert row["markdown"].index("- Details") < row["markdown"].index("Check the audit dashboard for service 7") \
        < row["markdown"].index("Deep note 7")
    metadata = json.loads(row["metadata_json"])
    assert metadata["properties"]["Title"] == "Runbook 7" and metadata["properties"]["MultiSelectTitle"] == ["ops"]
    assert metadata["properties"]["SelectTitle"] == "Select 3" and metadata["properties"]["DateTitle"] == "2022-03-14"
    assert metadata["properties"]["UserTitle"] == ["Hiroyuki KOBAYASHI"]
    assert metadata["properties"]["RelationTitle"] == ["860753bb-6d1f-48de-9621-1fa6e0e31f82"]
    assert metadata["database_id"] == database and metadata["blocks"] == 4

    edited = rows[10:15]
    for page_id in edited:
        notion.edit_row(page_id, f"Edited: {page_id} now needs a second approver")
    notion.reset_counters()
    again = stage_metadata(materialize_partition(instance, database, source="notion"))
    assert notion.pages_with_blocks_fetched() == set(edited)
    assert again["raw_documents"]["documents_updated"] == 5 and again["raw_documents"]["documents_unchanged"] == 495
    assert again["raw_documents"]["api_calls"] == 1 + 5 + 5 * 3
    assert again["embeddings"]["chunks_embedded"] >= 5 and again["embeddings"]["documents_updated"] == 5
    [edited_row] = store.read("markdown", f"doc_id = '{edited[0]}'").to_pylist()
    assert "now needs a second approver" in edited_row["markdown"]


def test_database_with_two_data_sources_syncs_both_through_rate_limits(notion_env, notion, instance, lancedb_uri):
    database, [tasks, notes] = notion.add_database("Team space", data_sources=("Tasks", "Notes"))
    task_rows = [notion.add_row(tasks, f"Task {i}", nested_blocks(i)) for i in range(3)]
    note_rows = [notion.add_row(notes, f"Note {i}", nested_blocks(i + 3)) for i in range(2)]
    notion_env.setenv("NOTION_DATABASE_IDS", database)
    notion.faults += [Fault(429, retry_after="0.2", route=CHILDREN, times=2),
                      Fault(529, retry_after="0.1", route=QUERY, times=1)]

    result = materialize_partition(instance, database, source="notion", stages=("raw_documents", "markdown"))
    assert result.success
    raw = stage_metadata(result)["raw_documents"]
    assert raw["documents_added"] == 5
    assert raw["api_calls"] == 1 + 2 + 5 * 3 + 3  # every data source queried; three answers were retried
    store = LanceStore(lancedb_uri)
    paths = {r["doc_id"]: r["path"] for r in store.read("markdown", partition_filter("notion", database)).to_pylist()}
    assert {paths[r] for r in task_rows} == {"Team space / Tasks"}
    assert {paths[r] for r in note_rows} == {"Team space / Notes"}


def test_archived_row_leaves_every_stage(notion_env, notion, instance, lancedb_uri):
    database, [source] = notion.add_database("Runbooks")
    rows = [notion.add_row(source, f"Runbook {i}", nested_blocks(i)) for i in range(4)]
    notion_env.setenv("NOTION_DATABASE_IDS", database)
    assert materialize_partition(instance, database, source="notion").success
    store = LanceStore(lancedb_uri)
    assert all(doc_ids(store, table, database) == set(rows) for table in STAGE_TABLES)

    notion.archive_row(rows[1])
    stages = stage_metadata(materialize_partition(instance, database, source="notion"))
    assert stages["raw_documents"]["documents_deleted"] == 1
    assert all(doc_ids(store, table, database) == set(rows) - {rows[1]} for table in STAGE_TABLES)
    assert stages["embeddings"]["documents_total"] == 3


def test_no_change_tick_requests_no_run_and_costs_one_query_per_data_source(notion_env, notion, instance):
    database, [tasks, notes] = notion.add_database("Team space", data_sources=("Tasks", "Notes"))
    rows = [notion.add_row(tasks, f"Task {i}", nested_blocks(i)) for i in range(3)]
    notion.add_row(notes, "Note", nested_blocks(9))
    notion_env.setenv("NOTION_DATABASE_IDS", database)

    first = sensor_tick(instance)
    assert [r.partition_key for r in first.run_requests] == [database]
    instance.add_dynamic_partitions("notion_partitions", [database])
    assert materialize_partition(instance, database, source="notion").success

    notion.reset_counters()
    quiet = sensor_tick(instance)
    assert quiet.run_requests == [] and f"{database}: unchanged" in str(quiet.skip_reason)
    # The data source ids come from the committed mark: no database read, one query per data source.
    assert dict(notion.calls) == {QUERY: 2}
    probes = [body for _, _, body in notion.request_log if body]
    assert all(b["page_size"] == 1 and b["filter"]["timestamp"] == "last_edited_time" for b in probes)

    notion.edit_row(rows[2], "A new step")
    assert [r.partition_key for r in sensor_tick(instance).run_requests] == [database]


def test_a_data_source_removed_from_the_database_is_noticed_by_the_next_tick(notion_env, notion, instance):
    database, [tasks, notes] = notion.add_database("Team space", data_sources=("Tasks", "Notes"))
    notion.add_row(tasks, "Task", nested_blocks(1))
    notion.add_row(notes, "Note", nested_blocks(2))
    notion_env.setenv("NOTION_DATABASE_IDS", database)
    instance.add_dynamic_partitions("notion_partitions", [database])
    assert materialize_partition(instance, database, source="notion").success

    del notion.data_sources[notes]  # the cached id now answers 404, so the probe reads the database again
    notion.databases[database]["data_sources"] = [s for s in notion.databases[database]["data_sources"]
                                                  if s["id"] != notes]
    notion.reset_counters()
    tick = sensor_tick(instance)
    assert [r.partition_key for r in tick.run_requests] == [database]
    assert notion.calls[DATABASE] == 1


def test_unshared_page_is_recorded_with_a_message_that_says_so_and_the_run_goes_on(
        notion_env, notion, instance, lancedb_uri):
    database, [source] = notion.add_database("Runbooks")
    rows = [notion.add_row(source, f"Runbook {i}", nested_blocks(i)) for i in range(3)]
    notion.unshared.add(rows[1])
    notion_env.setenv("NOTION_DATABASE_IDS", database)

    result = materialize_partition(instance, database, source="notion")
    assert result.success
    raw = stage_metadata(result)["raw_documents"]
    assert raw["documents_added"] == 2 and raw["documents_failed"] == 1
    assert check_results(result)["raw_documents/no_document_failures"] is False
    store = LanceStore(lancedb_uri)
    [failure] = store.failures("notion", database)
    assert failure["doc_id"] == rows[1]
    assert f'notion page {rows[1]} "Runbook 1" in database {database}' in failure["error"]
    assert "not shared with the integration" in failure["error"] and "404" in failure["error"]
    assert doc_ids(store, "embeddings", database) == {rows[0], rows[2]}

    notion.unshared.clear()  # shared again, its last_edited_time unchanged: the next run still fetches it
    notion.reset_counters()
    again = stage_metadata(materialize_partition(instance, database, source="notion"))
    assert notion.pages_with_blocks_fetched() == {rows[1]}
    assert again["raw_documents"]["documents_failed"] == 0 and again["embeddings"]["documents_added"] == 1
    assert store.failures("notion", database) == []
    assert doc_ids(store, "embeddings", database) == set(rows)


def test_unshared_database_fails_the_run_with_a_message_that_says_so(notion_env, notion, instance):
    database, _ = notion.add_database("Hidden")
    notion.unshared.add(database)
    notion_env.setenv("NOTION_DATABASE_IDS", database)
    with pytest.raises(dg.Failure, match=f"notion database {database} is not shared with the integration"):
        materialize_partition(instance, database, source="notion", stages=("raw_documents",))


def test_api_key_never_reaches_tables_metadata_logs_or_run_config(notion_env, notion, instance, lancedb_uri):
    database, [source] = notion.add_database("Runbooks")
    notion.add_row(source, "Runbook", nested_blocks(1))
    notion.unshared.add(notion.add_row(source, "Hidden"))  # a failure message, too
    notion_env.setenv("NOTION_DATABASE_IDS", database)
    result = materialize_partition(instance, database, source="notion")
    assert result.success
    store = LanceStore(lancedb_uri)
    for table in (*STAGE_TABLES, "failures", "partition_state", "doc_ledger"):
        assert notion.token not in str(store.read(table, None).to_pylist())
    run = instance.get_run_by_id(result.run_id)
    assert notion.token not in str(run.run_config) and notion.token not in str(run.tags)
    assert notion.token not in str(instance.all_logs(result.run_id))
    assert notion.token not in str(load_settings().source("notion"))


def test_child_pages_become_documents_with_their_parent_path_down_to_max_depth(
        notion_env, notion, instance, lancedb_uri):
    database, [source] = notion.add_database("Handbook")
    visas = block("child_page", None, title="Visas")
    travel = {**block("child_page", None, title="Travel"), "children": [
        block("paragraph", "Book trains for trips under six hours."),
        {**block("toggle", "Abroad", has_children=True), "children": [visas]}]}
    row = notion.add_row(source, "Policies", [block("paragraph", "Company policies."), travel])
    notion.set_blocks(visas["id"], [block("paragraph", "Apply for visas four weeks ahead.")])
    notion_env.setenv("NOTION_DATABASE_IDS", database)
    notion_env.setenv("NOTION_INCLUDE_CHILD_PAGES", "true")
    notion_env.setenv("NOTION_MAX_DEPTH", "1")

    assert materialize_partition(instance, database, source="notion", stages=("raw_documents", "markdown")).success
    store = LanceStore(lancedb_uri)
    documents = {r["doc_id"]: r for r in store.read("markdown", partition_filter("notion", database)).to_pylist()}
    assert set(documents) == {row, travel["id"]}
    assert documents[travel["id"]]["path"] == "Handbook / Policies" and documents[travel["id"]]["title"] == "Travel"
    assert "Book trains" in documents[travel["id"]]["markdown"]
    assert "[Visas](https://www.notion.so/" in documents[travel["id"]]["markdown"]
    assert "[Travel](https://www.notion.so/" in documents[row]["markdown"]

    notion_env.setenv("NOTION_MAX_DEPTH", "2")  # a setting that changes what is fetched refetches once
    stages = stage_metadata(materialize_partition(instance, database, source="notion",
                                                  stages=("raw_documents", "markdown")))
    raw = stages["raw_documents"]
    assert raw["documents_added"] == 1 and raw["documents_updated"] + raw["documents_unchanged"] == 2
    [visas_doc] = store.read("markdown", f"doc_id = '{visas['id']}'").to_pylist()
    assert visas_doc["path"] == "Handbook / Policies / Travel" and "four weeks ahead" in visas_doc["markdown"]


def test_edit_within_the_same_minute_is_fetched_once_the_minute_has_settled(notion, lancedb_uri):
    """Notion rounds last_edited_time to the minute: a second edit in that minute leaves it unchanged."""
    database, [source_id] = notion.add_database("Runbooks")
    page = notion.add_row(source_id, "Runbook", [block("paragraph", "First draft.")])
    edited_at = datetime.fromisoformat(notion.pages[page]["last_edited_time"].replace("Z", "+00:00"))
    clock = [edited_at + timedelta(seconds=30)]
    source = NotionSource("notion", build_notion_client(notion.token, base_url=notion.base_url,
                                                        requests_per_second=None), [database],
                          clock=lambda: clock[0])
    run = StageRun(LanceStore(lancedb_uri), "notion", database, log=lambda _: None)
    first = sync_raw(run, source)
    assert first.documents_added == 1 and first.mark.endswith("~settling")
    assert source.probe(database, first.mark) == first.mark  # nothing new to see yet

    notion.set_blocks(page, [block("paragraph", "Final text, same minute.")])  # last_edited_time unchanged
    clock[0] = edited_at + timedelta(minutes=5)
    settled = source.probe(database, first.mark)
    assert settled != first.mark and not settled.endswith("~settling")  # the sensor requests a run
    second = sync_raw(run, source)
    assert second.documents_updated == 1 and second.mark == settled
    [row] = run.store.read("raw_documents", None).to_pylist()
    assert b"Final text, same minute." in row["content"]
    assert sync_raw(run, source).documents_unchanged == 1 and source.probe(database, settled) == settled


def test_deleted_newest_row_moves_the_probe_and_the_next_listing_settles_it(notion, lancedb_uri):
    database, [source_id] = notion.add_database("Runbooks")
    keep = notion.add_row(source_id, "Old", edited="2025-01-01T10:00:00.000Z")
    newest = notion.add_row(source_id, "New", edited="2025-05-01T10:00:00.000Z")
    source = NotionSource("notion", build_notion_client(notion.token, base_url=notion.base_url,
                                                        requests_per_second=None), [database])
    run = StageRun(LanceStore(lancedb_uri), "notion", database, log=lambda _: None)
    mark = sync_raw(run, source).mark
    assert mark.startswith("2025-05-01T10:00:00.000Z|")
    notion.archive_row(newest)
    notion.pages[newest]["last_edited_time"] = iso(datetime(2025, 5, 1, 10, tzinfo=UTC))
    moved = source.probe(database, mark)
    assert moved != mark
    report = sync_raw(run, source)
    assert report.documents_deleted == 1 and set(run.store.read_ledger("raw_documents", "notion", database)) == {keep}
    assert source.probe(database, report.mark) == report.mark


@pytest.fixture
def cli_env(notion_env, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    notion_env.setenv("DAGSTER_HOME", str(home))
    return notion_env


def test_rag_sync_backfills_one_database_partition_by_its_undashed_id(cli_env, notion):
    database, [source] = notion.add_database("Runbooks")
    [notion.add_row(source, f"Runbook {i}", nested_blocks(i)) for i in range(3)]
    other, _ = notion.add_database("Other")
    cli_env.setenv("NOTION_DATABASE_IDS", f"{database},{other}")
    rag_sync = str(Path(sys.executable).parent / "rag-sync")
    completed = subprocess.run([rag_sync, "sync", "--source", "notion", "--partition", database.replace("-", ""),
                                "--json"], env=dict(os.environ), capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads(completed.stdout)
    assert summary["success"] and summary["partition"] == database
    assert summary["documents_added"] == 3 and summary["chunks_total"] == 3 and summary["documents_failed"] == 0
    assert notion.calls_by_id[(QUERY, notion.databases[other]["data_sources"][0]["id"])] == 0  # only that one
    with dg.DagsterInstance.from_config(os.environ["DAGSTER_HOME"]) as instance:
        assert instance.get_dynamic_partitions("notion_partitions") == [database]
        [run] = instance.get_runs(filters=dg.RunsFilter(job_name="notion_sync"))
        assert run.status == dg.DagsterRunStatus.SUCCESS and run.tags["dagster/partition"] == database


def direct_source(notion, database, **options) -> NotionSource:
    client = build_notion_client(notion.token, base_url=notion.base_url, requests_per_second=None)
    return NotionSource("notion", client, [database], **options)


def test_real_sample_page_served_by_the_simulator_converts_with_every_block(notion, lancedb_uri):
    from rag_sync_pipeline.sync.stages import sync_markdown
    from rag_sync_pipeline_tests.fakes.notion import SAMPLE_PAGE_ID, sample_page_children

    database, [source_id] = notion.add_database("Samples")
    page = notion.add_row(source_id, "Block test page")
    for parent, children in sample_page_children().items():
        notion.children[page if parent == SAMPLE_PAGE_ID else parent] = children
    run = StageRun(LanceStore(lancedb_uri), "notion", database, log=lambda _: None)
    assert sync_raw(run, direct_source(notion, database)).documents_added == 1
    assert sync_markdown(run).documents_added == 1
    [row] = run.store.read("markdown", None).to_pylist()
    metadata = json.loads(row["metadata_json"])
    assert metadata["unsupported_blocks"] == 1 and metadata["blocks"] == 36 + 2 + 3 + 3 + 2 + 1 + 1 + 1 + 1 + 3 + 1
    markdown = row["markdown"]
    assert markdown.startswith("# Block test page\n") and markdown.count("Synced original text") == 2
    assert "| Title | Contents |" in markdown and "Column 3 text" in markdown and "X-Amz-" not in markdown
    [raw] = run.store.read("raw_documents", None).to_pylist()
    assert b"X-Amz-Signature" not in raw["content"]  # pre-signed URLs expire, and carry credentials


def test_block_walk_stops_at_the_safety_cap_and_unreadable_synced_originals_are_counted(notion):
    database, [source_id] = notion.add_database("Big")
    synced = block("synced_block", None, has_children=True,
                   synced_from={"type": "block_id", "block_id": "0c940186-ab70-4351-bb34-2d16f0635d49"})
    notion.unshared.add("0c940186-ab70-4351-bb34-2d16f0635d49")  # the original lives on an unshared page
    page = notion.add_row(source_id, "Long", [synced] + [block("paragraph", f"p{i}") for i in range(20)])
    source = direct_source(notion, database, max_blocks=8)
    [ref] = source.list_documents(database, None).refs
    document = source.fetch(database, ref)
    assert document.metadata["blocks"] == 8 and "stopped at 8 blocks" in document.metadata["truncated"]
    assert document.metadata["unreadable_synced_blocks"] == 1
    assert [b["type"] for b in json.loads(document.content)["blocks"]] == ["synced_block"] + ["paragraph"] * 7
    assert document.doc_id == page
